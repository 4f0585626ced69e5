//! IAM instance profiles: the container for (at most) one role that EC2 attaches to
//! instances.

use serde::{Deserialize, Serialize};

use super::roles;
use super::{check_name, check_path, error, name_key, new_unique_id, page};
use crate::api::Ctx;
use crate::error::ApiError;
use crate::model::iam::{
    AddRoleToInstanceProfileRequest, CreateInstanceProfileRequest, CreateInstanceProfileResponse,
    DeleteInstanceProfileRequest, GetInstanceProfileRequest, GetInstanceProfileResponse,
    InstanceProfile, ListInstanceProfilesForRoleRequest, ListInstanceProfilesForRoleResponse,
    ListInstanceProfilesRequest, ListInstanceProfilesResponse,
    RemoveRoleFromInstanceProfileRequest, Role,
};
use crate::protocol::types::Timestamp;
use crate::store::{GLOBAL, Tx};

pub const KIND: &str = "iam-instance-profile";

/// An instance profile as stored: the model shape without its roles, which are shown as they
/// are now rather than as they were when added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub profile: InstanceProfile,
    /// The key (lower-case name) of the role in the profile; IAM allows one.
    pub role: Option<String>,
}

impl ProfileRecord {
    /// The profile with its role, as IAM shows it.
    pub fn shown(&self, tx: &Tx<'_>) -> Result<InstanceProfile, ApiError> {
        let mut p = self.profile.clone();
        p.roles = self.role(tx)?.map(roles::listed).into_iter().collect();
        Ok(p)
    }

    /// The role in the profile, if it has one (and it still exists).
    pub fn role(&self, tx: &Tx<'_>) -> Result<Option<Role>, ApiError> {
        match &self.role {
            Some(key) => tx.get_in(GLOBAL, roles::KIND, key),
            None => Ok(None),
        }
    }
}

/// A profile by name (any case).
pub fn find(tx: &Tx<'_>, name: &str) -> Result<Option<ProfileRecord>, ApiError> {
    tx.get_in(GLOBAL, KIND, &name_key(name))
}

/// A profile by its ARN.
pub fn find_by_arn(tx: &Tx<'_>, arn: &str) -> Result<Option<ProfileRecord>, ApiError> {
    Ok(tx
        .list_in::<ProfileRecord>(GLOBAL, KIND)?
        .into_iter()
        .find(|p| p.profile.arn == arn))
}

fn load(tx: &Tx<'_>, name: &str) -> Result<ProfileRecord, ApiError> {
    find(tx, name)?.ok_or_else(|| {
        error(
            "NoSuchEntity",
            format!("Instance Profile {name} cannot be found."),
        )
    })
}

/// The profiles holding the role with this key.
pub fn holding(
    tx: &Tx<'_>,
    role_key: &str,
) -> Result<impl Iterator<Item = ProfileRecord>, ApiError> {
    let key = role_key.to_string();
    Ok(tx
        .list_in::<ProfileRecord>(GLOBAL, KIND)?
        .into_iter()
        .filter(move |p| p.role.as_deref() == Some(key.as_str())))
}

fn save(tx: &Tx<'_>, rec: &ProfileRecord) -> Result<(), ApiError> {
    let key = name_key(&rec.profile.instance_profile_name);
    tx.update_in(GLOBAL, KIND, &key, rec)
}

pub fn create_instance_profile(
    ctx: &Ctx,
    input: CreateInstanceProfileRequest,
) -> Result<CreateInstanceProfileResponse, ApiError> {
    let name = input.instance_profile_name;
    check_name(&name, "InstanceProfileName")?;
    let path = input.path.unwrap_or_else(|| "/".to_string());
    check_path(&path)?;
    if find(ctx.tx, &name)?.is_some() {
        return Err(error(
            "EntityAlreadyExists",
            format!("Instance Profile {name} already exists."),
        ));
    }
    let profile = InstanceProfile {
        arn: format!(
            "arn:aws:iam::{}:instance-profile{path}{name}",
            ctx.account()
        ),
        instance_profile_id: new_unique_id("AIPA"),
        path,
        create_date: Timestamp::now(),
        roles: Vec::new(),
        tags: input.tags.filter(|t| !t.is_empty()),
        instance_profile_name: name.clone(),
    };
    let rec = ProfileRecord {
        profile: profile.clone(),
        role: None,
    };
    ctx.tx.insert_in(GLOBAL, KIND, &name_key(&name), &rec)?;
    Ok(CreateInstanceProfileResponse {
        instance_profile: profile,
    })
}

pub fn get_instance_profile(
    ctx: &Ctx,
    input: GetInstanceProfileRequest,
) -> Result<GetInstanceProfileResponse, ApiError> {
    let rec = load(ctx.tx, &input.instance_profile_name)?;
    Ok(GetInstanceProfileResponse {
        instance_profile: rec.shown(ctx.tx)?,
    })
}

/// Listings leave out the profile's tags, as IAM's do.
fn listed(tx: &Tx<'_>, rec: &ProfileRecord) -> Result<(String, InstanceProfile), ApiError> {
    let mut p = rec.shown(tx)?;
    p.tags = None;
    Ok((name_key(&p.instance_profile_name), p))
}

pub fn list_instance_profiles(
    ctx: &Ctx,
    input: ListInstanceProfilesRequest,
) -> Result<ListInstanceProfilesResponse, ApiError> {
    let prefix = input.path_prefix.unwrap_or_else(|| "/".to_string());
    let mut all = Vec::new();
    for rec in ctx.tx.list_in::<ProfileRecord>(GLOBAL, KIND)? {
        if rec.profile.path.starts_with(&prefix) {
            all.push(listed(ctx.tx, &rec)?);
        }
    }
    let (instance_profiles, truncated, marker) =
        page(all, input.marker.as_deref(), input.max_items)?;
    Ok(ListInstanceProfilesResponse {
        instance_profiles,
        is_truncated: Some(truncated),
        marker,
    })
}

pub fn list_instance_profiles_for_role(
    ctx: &Ctx,
    input: ListInstanceProfilesForRoleRequest,
) -> Result<ListInstanceProfilesForRoleResponse, ApiError> {
    let role = roles::load(ctx.tx, &input.role_name)?;
    let mut all = Vec::new();
    for rec in holding(ctx.tx, &name_key(&role.role_name))? {
        all.push(listed(ctx.tx, &rec)?);
    }
    let (instance_profiles, truncated, marker) =
        page(all, input.marker.as_deref(), input.max_items)?;
    Ok(ListInstanceProfilesForRoleResponse {
        instance_profiles,
        is_truncated: Some(truncated),
        marker,
    })
}

pub fn delete_instance_profile(
    ctx: &Ctx,
    input: DeleteInstanceProfileRequest,
) -> Result<(), ApiError> {
    let rec = load(ctx.tx, &input.instance_profile_name)?;
    if rec.role.is_some() {
        return Err(error(
            "DeleteConflict",
            "Cannot delete entity, must remove roles from instance profile first.",
        ));
    }
    // Instances keep an association to a deleted profile, as on EC2; they simply get no
    // credentials from it any more.
    ctx.tx
        .delete_in(GLOBAL, KIND, &name_key(&rec.profile.instance_profile_name))
}

pub fn add_role_to_instance_profile(
    ctx: &Ctx,
    input: AddRoleToInstanceProfileRequest,
) -> Result<(), ApiError> {
    let mut rec = load(ctx.tx, &input.instance_profile_name)?;
    let role = roles::load(ctx.tx, &input.role_name)?;
    if rec.role.is_some() {
        return Err(error(
            "LimitExceeded",
            "Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1",
        ));
    }
    rec.role = Some(name_key(&role.role_name));
    save(ctx.tx, &rec)
}

pub fn remove_role_from_instance_profile(
    ctx: &Ctx,
    input: RemoveRoleFromInstanceProfileRequest,
) -> Result<(), ApiError> {
    let mut rec = load(ctx.tx, &input.instance_profile_name)?;
    let role = roles::load(ctx.tx, &input.role_name)?;
    if rec.role.as_deref() != Some(name_key(&role.role_name).as_str()) {
        return Err(error(
            "NoSuchEntity",
            format!(
                "The role with name {} cannot be found in instance profile {}.",
                role.role_name, rec.profile.instance_profile_name
            ),
        ));
    }
    // Credentials already issued for the role stay valid until they expire, as STS
    // sessions do; instances get no new ones from this profile.
    rec.role = None;
    save(ctx.tx, &rec)
}
