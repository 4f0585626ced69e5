//! What IMDS serves about an instance, read from its records for each request, so changes
//! (metadata options, tags, an Elastic IP) show at once.

use base64::Engine as _;

use super::Owner;
use crate::api::instances::{self, InstanceRecord};
use crate::api::{iam_instance_profiles, subnets, vpcs};
use crate::error::ApiError;
use crate::imds::{HttpTokens, InstanceView, MetadataOptions, Switch};
use crate::model::{KeyPairInfo, Subnet};
use crate::store::Store;

const KEY_PAIR_KIND: &str = "key-pair";

/// The instance's view, or `None` when it no longer exists.
pub(super) fn instance_view(
    store: &Store,
    owner: &Owner,
) -> Result<Option<InstanceView>, ApiError> {
    store.transaction(&owner.account, &owner.region, |tx| {
        let Some(rec) = tx.get::<InstanceRecord>(instances::KIND, &owner.instance_id)? else {
            return Ok(None);
        };
        let i = &rec.instance;
        let subnet: Option<Subnet> = match i.subnet_id.as_deref() {
            Some(s) => tx.get(subnets::KIND, s)?,
            None => None,
        };
        let vpc: Option<vpcs::VpcRecord> = match i.vpc_id.as_deref() {
            Some(v) => tx.get(vpcs::KIND, v)?,
            None => None,
        };
        let public_keys = match i.key_name.as_deref() {
            Some(name) => tx
                .list::<KeyPairInfo>(KEY_PAIR_KIND)?
                .into_iter()
                .filter(|k| k.key_name.as_deref() == Some(name))
                .filter_map(|k| Some((name.to_string(), k.public_key?)))
                .collect(),
            None => Vec::new(),
        };
        let tags = tx
            .tags(&owner.instance_id)?
            .into_iter()
            .filter_map(|t| Some((t.key?, t.value.unwrap_or_default())))
            .collect();
        let mut view = build(owner, &rec, subnet, vpc, public_keys, tags);
        view.iam = iam_instance_profiles::instance_role_credentials_in(tx, &owner.instance_id)?;
        Ok(Some(view))
    })
}

fn build(
    owner: &Owner,
    rec: &InstanceRecord,
    subnet: Option<Subnet>,
    vpc: Option<vpcs::VpcRecord>,
    public_keys: Vec<(String, String)>,
    tags: Vec<(String, String)>,
) -> InstanceView {
    let i = &rec.instance;
    let eni = i.network_interfaces.iter().flatten().next();
    let zone = i
        .placement
        .as_ref()
        .and_then(|p| p.availability_zone.clone())
        .unwrap_or_default();
    let zone_id = crate::regions::find(&owner.region)
        .map(|r| r.zones())
        .unwrap_or_default()
        .into_iter()
        .find(|z| z.name == zone)
        .map(|z| z.id)
        .unwrap_or_default();
    let root = i
        .root_device_name
        .clone()
        .unwrap_or_else(|| "/dev/xvda".into());
    let mut block_devices = vec![("ami".to_string(), root.clone())];
    let mut ebs = 0;
    for m in i.block_device_mappings.iter().flatten() {
        let Some(device) = m.device_name.clone() else {
            continue;
        };
        if device == root {
            block_devices.push(("root".to_string(), device));
        } else {
            ebs += 1;
            let short = device.strip_prefix("/dev/").unwrap_or(&device).to_string();
            block_devices.push((format!("ebs{ebs}"), short));
        }
    }
    let user_data = rec
        .user_data
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let o = i.metadata_options.clone().unwrap_or_default();
    let switch = |v: Option<&str>, default: Switch| match v {
        Some("enabled") => Switch::Enabled,
        Some("disabled") => Switch::Disabled,
        _ => default,
    };
    let options = MetadataOptions {
        http_tokens: match o.http_tokens.as_deref() {
            Some("required") => HttpTokens::Required,
            _ => HttpTokens::Optional,
        },
        http_endpoint: switch(o.http_endpoint.as_deref(), Switch::Enabled),
        hop_limit: o
            .http_put_response_hop_limit
            .and_then(|h| u8::try_from(h).ok())
            .unwrap_or(1),
        instance_metadata_tags: switch(o.instance_metadata_tags.as_deref(), Switch::Disabled),
        http_protocol_ipv6: switch(o.http_protocol_ipv6.as_deref(), Switch::Disabled),
    };
    let vpc_cidrs = vpc
        .as_ref()
        .map(|v| {
            let assoc: Vec<String> = v
                .vpc
                .cidr_block_association_set
                .iter()
                .flatten()
                .filter_map(|a| a.cidr_block.clone())
                .collect();
            if assoc.is_empty() {
                v.vpc.cidr_block.iter().cloned().collect()
            } else {
                assoc
            }
        })
        .unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    InstanceView {
        instance_id: owner.instance_id.clone(),
        account_id: owner.account.clone(),
        region: owner.region.clone(),
        availability_zone: zone,
        availability_zone_id: zone_id,
        ami_id: i.image_id.clone().unwrap_or_default(),
        ami_launch_index: i
            .ami_launch_index
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        instance_type: i.instance_type.clone().unwrap_or_default(),
        architecture: i.architecture.clone().unwrap_or_else(|| "x86_64".into()),
        private_ip: i.private_ip_address.clone().unwrap_or_default(),
        private_dns: i.private_dns_name.clone().unwrap_or_default(),
        public_ip: non_empty(i.public_ip_address.clone()),
        public_dns: non_empty(i.public_dns_name.clone()),
        mac: eni.and_then(|e| e.mac_address.clone()).unwrap_or_default(),
        interface_id: eni
            .and_then(|e| e.network_interface_id.clone())
            .unwrap_or_default(),
        subnet_id: i.subnet_id.clone().unwrap_or_default(),
        subnet_cidr: subnet.and_then(|s| s.cidr_block).unwrap_or_default(),
        vpc_id: i.vpc_id.clone().unwrap_or_default(),
        vpc_cidrs,
        security_groups: i
            .security_groups
            .iter()
            .flatten()
            .map(|g| {
                (
                    g.group_id.clone().unwrap_or_default(),
                    g.group_name.clone().unwrap_or_default(),
                )
            })
            .collect(),
        reservation_id: rec.reservation_id.clone(),
        block_devices,
        public_keys,
        user_data,
        tags,
        pending_time: i
            .launch_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(chrono::Utc::now),
        // Filled by `instance_view`, in the same transaction.
        iam: None,
        identity_credentials: None,
        spot_action: None,
        rebalance_notice: None,
        options,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::api::iam_instance_profiles::tests::{ACCOUNT, INSTANCE, seed};
    use crate::imds::{Imds, Request};

    #[test]
    fn the_view_carries_the_instance_role_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        seed(&store, true);
        // From JSON, so fields other families add (with serde defaults) need no change here.
        let rec: InstanceRecord = serde_json::from_value(serde_json::json!({
            "instance": {"InstanceId": INSTANCE},
            "reservation_id": "r-0123456789abcdef0",
            "user_data": null,
            "shutdown_behavior": "stop",
            "disable_api_termination": false,
            "disable_api_stop": false,
            "smbios_uuid": "",
            "vcpus": 1,
            "memory_mib": 512,
            "terminated_at": null,
        }))
        .unwrap();
        store
            .transaction(ACCOUNT, "eu-west-1", |tx| {
                tx.insert(instances::KIND, INSTANCE, &rec)
            })
            .unwrap();
        let owner = Owner {
            account: ACCOUNT.into(),
            region: "eu-west-1".into(),
            instance_id: INSTANCE.into(),
        };
        let view = instance_view(&store, &owner).unwrap().unwrap();
        let iam = view.iam.clone().expect("role credentials in the view");
        assert_eq!(iam.role_name, "Web");
        // What the guest reads from its metadata service.
        let req = Request {
            method: "GET".into(),
            path: "/latest/meta-data/iam/security-credentials/Web".into(),
            headers: Vec::new(),
        };
        let resp = Imds::new().handle(&view, &req, Instant::now());
        assert_eq!(resp.status, 200);
        let doc: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(doc["AccessKeyId"], iam.credentials.access_key_id.as_str());
        assert_eq!(doc["Token"], iam.credentials.token.as_str());
        // The next request is served the same set.
        let again = instance_view(&store, &owner).unwrap().unwrap();
        assert_eq!(again.iam, Some(iam));
    }
}
