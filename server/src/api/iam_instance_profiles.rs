//! Instance profiles on instances (EC2 side): RunInstances' `IamInstanceProfile`,
//! Associate/Describe/Disassociate/ReplaceIamInstanceProfileAssociation, and the role
//! credentials an instance's metadata service hands out.
//!
//! An instance has at most one active association (`iip-assoc-…`), stored in the instance's
//! region; the profile and role it names live in IAM's global scope (`api::iam`). The
//! instance record carries the profile's ARN and id too, as DescribeInstances shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::common::{matches, new_id, paginate, validate_filters};
use crate::api::iam::credentials::{self, Subject};
use crate::api::iam::instance_profiles::{self, ProfileRecord};
use crate::api::{Ctx, instances};
use crate::error::ApiError;
use crate::imds::IamView;
use crate::model::{
    AssociateIamInstanceProfileRequest, AssociateIamInstanceProfileResult,
    DescribeIamInstanceProfileAssociationsRequest, DescribeIamInstanceProfileAssociationsResult,
    DisassociateIamInstanceProfileRequest, DisassociateIamInstanceProfileResult,
    IamInstanceProfile, IamInstanceProfileAssociation, IamInstanceProfileSpecification,
    ReplaceIamInstanceProfileAssociationRequest, ReplaceIamInstanceProfileAssociationResult,
};
use crate::protocol::types::Timestamp;
use crate::store::{Store, Tx};

pub const KIND: &str = "iip-assoc";

/// An association as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssociationRecord {
    pub association: IamInstanceProfileAssociation,
    /// The access key of the credentials currently served to the instance, once issued.
    pub credentials: Option<String>,
}

impl AssociationRecord {
    fn id(&self) -> String {
        self.association.association_id.clone().unwrap_or_default()
    }

    fn instance_id(&self) -> &str {
        self.association.instance_id.as_deref().unwrap_or_default()
    }

    fn profile_arn(&self) -> &str {
        self.association
            .iam_instance_profile
            .as_ref()
            .and_then(|p| p.arn.as_deref())
            .unwrap_or_default()
    }
}

/// A profile named by a request, found in IAM.
pub struct Resolved(ProfileRecord);

impl Resolved {
    /// `{Arn, Id}`, as instances and associations show a profile.
    pub fn shown(&self) -> IamInstanceProfile {
        IamInstanceProfile {
            arn: Some(self.0.profile.arn.clone()),
            id: Some(self.0.profile.instance_profile_id.clone()),
        }
    }
}

/// The profile an `IamInstanceProfile` specification names, with EC2's errors.
pub fn resolve(tx: &Tx<'_>, spec: &IamInstanceProfileSpecification) -> Result<Resolved, ApiError> {
    let by_name = |name: &str| {
        instance_profiles::find(tx, name)?.ok_or_else(|| {
            ApiError::invalid_value(format!(
                "Value ({name}) for parameter iamInstanceProfile.name is invalid. \
                 Invalid IAM Instance Profile name"
            ))
        })
    };
    let found = match (&spec.arn, &spec.name) {
        (Some(arn), name) => {
            let p = instance_profiles::find_by_arn(tx, arn)?.ok_or_else(|| {
                ApiError::invalid_value(format!(
                    "Value ({arn}) for parameter iamInstanceProfile.arn is invalid. \
                     Invalid IAM Instance Profile ARN"
                ))
            })?;
            if let Some(n) = name
                && !n.eq_ignore_ascii_case(&p.profile.instance_profile_name)
            {
                return Err(ApiError::combination(format!(
                    "The instance profile ARN {arn} and name {n} refer to different instance profiles."
                )));
            }
            p
        }
        (None, Some(name)) => by_name(name)?,
        (None, None) => {
            return Err(ApiError::missing(
                "iamInstanceProfile.arn or iamInstanceProfile.name",
            ));
        }
    };
    Ok(Resolved(found))
}

/// RunInstances: the profile to launch with, checked before anything is created.
pub fn resolve_for_launch(
    ctx: &Ctx,
    spec: Option<&IamInstanceProfileSpecification>,
) -> Result<Option<Resolved>, ApiError> {
    spec.map(|s| resolve(ctx.tx, s)).transpose()
}

fn insert(ctx: &Ctx, instance_id: &str, profile: &Resolved) -> Result<AssociationRecord, ApiError> {
    let rec = AssociationRecord {
        association: IamInstanceProfileAssociation {
            association_id: Some(new_id("iip-assoc")),
            instance_id: Some(instance_id.to_string()),
            iam_instance_profile: Some(profile.shown()),
            // The association takes effect at once here; the responses that create one say
            // `associating`, as EC2's do.
            state: Some("associated".into()),
            timestamp: Some(Timestamp::now()),
        },
        credentials: None,
    };
    ctx.tx.insert(KIND, &rec.id(), &rec)?;
    Ok(rec)
}

/// RunInstances: records the launch-time association of a new instance.
pub fn associate_at_launch(
    ctx: &Ctx,
    instance_id: &str,
    profile: &Resolved,
) -> Result<(), ApiError> {
    insert(ctx, instance_id, profile).map(|_| ())
}

fn active_for(tx: &Tx<'_>, instance_id: &str) -> Result<Option<AssociationRecord>, ApiError> {
    Ok(tx
        .list::<AssociationRecord>(KIND)?
        .into_iter()
        .find(|a| a.instance_id() == instance_id))
}

/// Ends an association: its credentials stop working and the record goes.
fn end(tx: &Tx<'_>, rec: &AssociationRecord) -> Result<(), ApiError> {
    credentials::revoke_association(tx, &rec.id())?;
    tx.delete(KIND, &rec.id())
}

/// A terminated instance loses its association, and its credentials stop working.
pub fn release_instance(tx: &Tx<'_>, instance_id: &str) -> Result<(), ApiError> {
    for rec in tx.list::<AssociationRecord>(KIND)? {
        if rec.instance_id() == instance_id {
            end(tx, &rec)?;
        }
    }
    Ok(())
}

fn set_instance_profile(
    ctx: &Ctx,
    instance_id: &str,
    profile: Option<IamInstanceProfile>,
) -> Result<(), ApiError> {
    let mut rec = instances::load(ctx, instance_id)?;
    rec.instance.iam_instance_profile = profile;
    ctx.tx.update(instances::KIND, instance_id, &rec)
}

fn load(ctx: &Ctx, id: &str) -> Result<AssociationRecord, ApiError> {
    if !crate::api::common::is_valid_id("iip-assoc", id) {
        // EC2's words, which do not repeat the value.
        return Err(ApiError::invalid_value("Invalid value for associationId."));
    }
    ctx.tx.get(KIND, id)?.ok_or_else(|| {
        ApiError::new(
            "InvalidAssociationID.NotFound",
            format!("The association ID '{id}' does not exist"),
        )
    })
}

fn with_state(rec: &AssociationRecord, state: &str) -> IamInstanceProfileAssociation {
    let mut a = rec.association.clone();
    a.state = Some(state.to_string());
    a
}

pub fn associate_iam_instance_profile(
    ctx: &Ctx,
    input: AssociateIamInstanceProfileRequest,
) -> Result<AssociateIamInstanceProfileResult, ApiError> {
    let instance = instances::load(ctx, &input.instance_id)?;
    let state = instance.state_name();
    if state != "running" && state != "stopped" {
        return Err(ApiError::new(
            "IncorrectInstanceState",
            format!(
                "The instance '{}' is not in the 'running' or 'stopped' states.",
                input.instance_id
            ),
        ));
    }
    if active_for(ctx.tx, &input.instance_id)?.is_some() {
        return Err(ApiError::new(
            "IncorrectState",
            format!(
                "There is an existing association for instance {}",
                input.instance_id
            ),
        ));
    }
    let profile = resolve(ctx.tx, &input.iam_instance_profile)?;
    let rec = insert(ctx, &input.instance_id, &profile)?;
    set_instance_profile(ctx, &input.instance_id, Some(profile.shown()))?;
    ctx.network_changed();
    Ok(AssociateIamInstanceProfileResult {
        iam_instance_profile_association: Some(with_state(&rec, "associating")),
    })
}

const FILTERS: &[&str] = &["instance-id", "state"];

pub fn describe_iam_instance_profile_associations(
    ctx: &Ctx,
    input: DescribeIamInstanceProfileAssociationsRequest,
) -> Result<DescribeIamInstanceProfileAssociationsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    crate::api::common::ids_or_pages(&input.association_ids, input.max_results, "associationIds")?;
    let ids = input.association_ids.unwrap_or_default();
    for id in &ids {
        load(ctx, id)?;
    }
    let mut out = Vec::new();
    for rec in ctx.tx.list::<AssociationRecord>(KIND)? {
        if !ids.is_empty() && !ids.contains(&rec.id()) {
            continue;
        }
        let a = &rec.association;
        let values = |f: &str| {
            Some(match f {
                "instance-id" => a.instance_id.iter().cloned().collect(),
                "state" => a.state.iter().cloned().collect(),
                _ => Vec::new(),
            })
        };
        if matches(&filters, &[], &values) {
            out.push(rec.association);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeIamInstanceProfileAssociationsResult {
        iam_instance_profile_associations: Some(page),
        next_token: next,
    })
}

pub fn disassociate_iam_instance_profile(
    ctx: &Ctx,
    input: DisassociateIamInstanceProfileRequest,
) -> Result<DisassociateIamInstanceProfileResult, ApiError> {
    let rec = load(ctx, &input.association_id)?;
    end(ctx.tx, &rec)?;
    set_instance_profile(ctx, rec.instance_id(), None)?;
    ctx.network_changed();
    Ok(DisassociateIamInstanceProfileResult {
        iam_instance_profile_association: Some(with_state(&rec, "disassociating")),
    })
}

pub fn replace_iam_instance_profile_association(
    ctx: &Ctx,
    input: ReplaceIamInstanceProfileAssociationRequest,
) -> Result<ReplaceIamInstanceProfileAssociationResult, ApiError> {
    let old = load(ctx, &input.association_id)?;
    let profile = resolve(ctx.tx, &input.iam_instance_profile)?;
    let instance_id = old.instance_id().to_string();
    // A replacement is a new association (a new id), as on EC2; the old one's credentials
    // stop working, and the instance gets the new role's at its next metadata read.
    end(ctx.tx, &old)?;
    let rec = insert(ctx, &instance_id, &profile)?;
    set_instance_profile(ctx, &instance_id, Some(profile.shown()))?;
    ctx.network_changed();
    Ok(ReplaceIamInstanceProfileAssociationResult {
        iam_instance_profile_association: Some(with_state(&rec, "associating")),
    })
}

/// The role credentials of an instance, for its metadata service (`iam/info` and
/// `iam/security-credentials/<role>`): `None` when it has no instance profile, or the profile
/// is gone or holds no role. The same set is returned until it is due for rotation (see
/// `api::iam::credentials`); issuing one is written to the store, so it survives a restart
/// and ec2d accepts it on requests signed with it.
pub fn instance_role_credentials(
    store: &Store,
    account: &str,
    region: &str,
    instance_id: &str,
) -> Result<Option<IamView>, ApiError> {
    store.transaction(account, region, |tx| {
        role_credentials_at(tx, instance_id, Utc::now())
    })
}

/// [`instance_role_credentials`] within a transaction the caller already holds on the
/// instance's (account, region), as the metadata service builds an instance's whole view in
/// one; calling the store-level function there would wait on the store's lock forever.
pub fn instance_role_credentials_in(
    tx: &Tx<'_>,
    instance_id: &str,
) -> Result<Option<IamView>, ApiError> {
    role_credentials_at(tx, instance_id, Utc::now())
}

fn role_credentials_at(
    tx: &Tx<'_>,
    instance_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<IamView>, ApiError> {
    let Some(mut assoc) = active_for(tx, instance_id)? else {
        return Ok(None);
    };
    let Some(profile) = instance_profiles::find_by_arn(tx, assoc.profile_arn())? else {
        return Ok(None);
    };
    let Some(role) = profile.role(tx)? else {
        return Ok(None);
    };
    let association_id = assoc.id();
    let subject = Subject {
        region: &tx.region,
        instance_id,
        association_id: &association_id,
        role_name: &role.role_name,
        profile_arn: &profile.profile.arn,
        profile_id: &profile.profile.instance_profile_id,
    };
    let issued = credentials::current_or_new(tx, &subject, assoc.credentials.as_deref(), now)?;
    if assoc.credentials.as_deref() != Some(issued.access_key_id.as_str()) {
        assoc.credentials = Some(issued.access_key_id.clone());
        tx.update(KIND, &association_id, &assoc)?;
    }
    Ok(Some(IamView {
        profile_arn: issued.profile_arn.clone(),
        profile_id: issued.profile_id.clone(),
        role_name: issued.role_name.clone(),
        credentials: issued.to_imds(),
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::iam::instance_profiles::KIND as PROFILE_KIND;
    use crate::api::iam::roles::KIND as ROLE_KIND;
    use crate::model::iam::{InstanceProfile, Role};
    use crate::store::GLOBAL;

    pub(crate) const ACCOUNT: &str = "000000000000";
    pub(crate) const INSTANCE: &str = "i-0123456789abcdef0";

    /// Role `Web` in profile `web-profile`, associated with `INSTANCE` in eu-west-1.
    pub(crate) fn seed(store: &Store, with_role: bool) {
        store
            .transaction(ACCOUNT, GLOBAL, |tx| {
                let role = Role {
                    role_name: "Web".into(),
                    arn: format!("arn:aws:iam::{ACCOUNT}:role/Web"),
                    ..Default::default()
                };
                tx.insert_in(GLOBAL, ROLE_KIND, "web", &role)?;
                let rec = ProfileRecord {
                    profile: InstanceProfile {
                        instance_profile_name: "web-profile".into(),
                        instance_profile_id: "AIPAAAAAAAAAAAAAAAAAA".into(),
                        arn: format!("arn:aws:iam::{ACCOUNT}:instance-profile/web-profile"),
                        path: "/".into(),
                        ..Default::default()
                    },
                    role: with_role.then(|| "web".to_string()),
                };
                tx.insert_in(GLOBAL, PROFILE_KIND, "web-profile", &rec)
            })
            .unwrap();
        store
            .transaction(ACCOUNT, "eu-west-1", |tx| {
                let rec = AssociationRecord {
                    association: IamInstanceProfileAssociation {
                        association_id: Some("iip-assoc-0123456789abcdef0".into()),
                        instance_id: Some(INSTANCE.into()),
                        iam_instance_profile: Some(IamInstanceProfile {
                            arn: Some(format!(
                                "arn:aws:iam::{ACCOUNT}:instance-profile/web-profile"
                            )),
                            id: Some("AIPAAAAAAAAAAAAAAAAAA".into()),
                        }),
                        state: Some("associated".into()),
                        timestamp: None,
                    },
                    credentials: None,
                };
                tx.insert(KIND, "iip-assoc-0123456789abcdef0", &rec)
            })
            .unwrap();
    }

    #[test]
    fn credentials_follow_the_association_and_role() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        assert_eq!(
            instance_role_credentials(&store, ACCOUNT, "eu-west-1", INSTANCE).unwrap(),
            None
        );
        seed(&store, true);
        let view = instance_role_credentials(&store, ACCOUNT, "eu-west-1", INSTANCE)
            .unwrap()
            .expect("credentials");
        assert_eq!(view.role_name, "Web");
        assert_eq!(view.profile_id, "AIPAAAAAAAAAAAAAAAAAA");
        assert!(view.profile_arn.ends_with(":instance-profile/web-profile"));
        let c = &view.credentials;
        assert!(c.access_key_id.starts_with("ASIA") && c.access_key_id.len() == 20);
        assert_eq!(c.secret_access_key.len(), 40);
        assert!(!c.token.is_empty());
        assert_eq!(c.expiration - c.last_updated, credentials::LIFETIME);
        // Served again unchanged.
        let again = instance_role_credentials(&store, ACCOUNT, "eu-west-1", INSTANCE).unwrap();
        assert_eq!(again.as_ref(), Some(&view));
        // Another region does not see the association.
        assert_eq!(
            instance_role_credentials(&store, ACCOUNT, "us-east-1", INSTANCE).unwrap(),
            None
        );
        // Released at termination: the keys stop verifying.
        store
            .transaction(ACCOUNT, "eu-west-1", |tx| release_instance(tx, INSTANCE))
            .unwrap();
        assert_eq!(
            instance_role_credentials(&store, ACCOUNT, "eu-west-1", INSTANCE).unwrap(),
            None
        );
        use crate::auth::SessionKeys;
        let keys = credentials::StoreSessionKeys(&store);
        assert!(keys.lookup(&c.access_key_id).unwrap().is_none());
    }

    #[test]
    fn a_profile_without_a_role_gives_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        seed(&store, false);
        assert_eq!(
            instance_role_credentials(&store, ACCOUNT, "eu-west-1", INSTANCE).unwrap(),
            None
        );
    }
}
