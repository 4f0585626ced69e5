//! DescribeNetworkInterfaces, for the ENIs instances hold.
//!
//! An ENI is stored as the model's `InstanceNetworkInterface` (kind [`ENI_KIND`]), the shape
//! DescribeInstances shows; the `NetworkInterface` shape adds what lives elsewhere: the
//! instance it is attached to, its zone, and the ids of an Elastic IP bound to it.

use std::collections::HashMap;

use crate::api::Ctx;
use crate::api::addresses;
use crate::api::common::{check_id, ids_or_pages, matches, paginate, validate_filters};
use crate::api::instances::{self, InstanceRecord};
use crate::api::subnets::{self, ENI_KIND};
use crate::error::ApiError;
use crate::model::{
    DescribeNetworkInterfacesRequest, DescribeNetworkInterfacesResult, InstanceNetworkInterface,
    InstanceNetworkInterfaceAssociation, NetworkInterface, NetworkInterfaceAssociation,
    NetworkInterfaceAttachment, NetworkInterfacePrivateIpAddress, Subnet,
};

/// Every filter EC2 documents; those about features ec2d lacks (IPv6, operators) match
/// nothing rather than being refused.
const FILTERS: &[&str] = &[
    "association.allocation-id",
    "association.association-id",
    "addresses.association.owner-id",
    "addresses.association.public-ip",
    "addresses.primary",
    "addresses.private-ip-address",
    "association.ip-owner-id",
    "association.public-ip",
    "association.public-dns-name",
    "attachment.attach-time",
    "attachment.attachment-id",
    "attachment.delete-on-termination",
    "attachment.device-index",
    "attachment.instance-id",
    "attachment.instance-owner-id",
    "attachment.status",
    "availability-zone",
    "availability-zone-id",
    "description",
    "group-id",
    "group-name",
    "ipv6-addresses.ipv6-address",
    "interface-type",
    "mac-address",
    "network-interface-id",
    "operator.managed",
    "operator.principal",
    "owner-id",
    "private-dns-name",
    "private-ip-address",
    "requester-id",
    "requester-managed",
    "source-dest-check",
    "status",
    "subnet-id",
    "vpc-id",
];

/// The `NetworkInterface` shape of a stored ENI.
fn describe_one(
    eni: &InstanceNetworkInterface,
    owner: Option<&InstanceRecord>,
    account: &str,
    subnets: &HashMap<String, Subnet>,
    eips: &HashMap<String, (String, String)>,
) -> NetworkInterface {
    let association = |a: &InstanceNetworkInterfaceAssociation| {
        let ids = a.public_ip.as_ref().and_then(|ip| eips.get(ip));
        NetworkInterfaceAssociation {
            allocation_id: ids.map(|(alloc, _)| alloc.clone()),
            association_id: ids.map(|(_, assoc)| assoc.clone()),
            carrier_ip: a.carrier_ip.clone(),
            customer_owned_ip: a.customer_owned_ip.clone(),
            ip_owner_id: a.ip_owner_id.clone(),
            public_dns_name: a.public_dns_name.clone(),
            public_ip: a.public_ip.clone(),
        }
    };
    let subnet = eni.subnet_id.as_ref().and_then(|s| subnets.get(s));
    let placement = owner.and_then(|r| r.instance.placement.as_ref());
    let attachment = eni.attachment.as_ref().map(|a| NetworkInterfaceAttachment {
        attach_time: a.attach_time,
        attachment_id: a.attachment_id.clone(),
        delete_on_termination: a.delete_on_termination,
        device_index: a.device_index,
        network_card_index: a.network_card_index,
        status: a.status.clone(),
        instance_id: owner.and_then(|r| r.instance.instance_id.clone()),
        instance_owner_id: owner.map(|_| account.to_string()),
        ..Default::default()
    });
    NetworkInterface {
        association: eni.association.as_ref().map(association),
        attachment,
        availability_zone: placement
            .and_then(|p| p.availability_zone.clone())
            .or_else(|| subnet.and_then(|s| s.availability_zone.clone())),
        availability_zone_id: placement
            .and_then(|p| p.availability_zone_id.clone())
            .or_else(|| subnet.and_then(|s| s.availability_zone_id.clone())),
        description: Some(eni.description.clone().unwrap_or_default()),
        groups: Some(eni.groups.clone().unwrap_or_default()),
        interface_type: Some(
            eni.interface_type
                .clone()
                .unwrap_or_else(|| "interface".into()),
        ),
        ipv6_addresses: Some(Vec::new()),
        mac_address: eni.mac_address.clone(),
        network_interface_id: eni.network_interface_id.clone(),
        owner_id: Some(eni.owner_id.clone().unwrap_or_else(|| account.to_string())),
        private_dns_name: eni.private_dns_name.clone(),
        private_ip_address: eni.private_ip_address.clone(),
        private_ip_addresses: Some(
            eni.private_ip_addresses
                .iter()
                .flatten()
                .map(|p| NetworkInterfacePrivateIpAddress {
                    association: p.association.as_ref().map(association),
                    primary: p.primary,
                    private_dns_name: p.private_dns_name.clone(),
                    private_ip_address: p.private_ip_address.clone(),
                })
                .collect(),
        ),
        requester_id: None,
        requester_managed: Some(false),
        source_dest_check: Some(eni.source_dest_check.unwrap_or(true)),
        status: Some(eni.status.clone().unwrap_or_else(|| "in-use".into())),
        subnet_id: eni.subnet_id.clone(),
        vpc_id: eni.vpc_id.clone(),
        ipv6_native: Some(false),
        ..Default::default()
    }
}

fn values(n: &NetworkInterface, f: &str) -> Vec<String> {
    let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
    let bool_text = |b: Option<bool>| b.map(|b| b.to_string()).into_iter().collect();
    let assoc = n.association.as_ref();
    let att = n.attachment.as_ref();
    let addrs = n.private_ip_addresses.iter().flatten();
    match f {
        "association.allocation-id" => assoc
            .and_then(|a| a.allocation_id.clone())
            .into_iter()
            .collect(),
        "association.association-id" => assoc
            .and_then(|a| a.association_id.clone())
            .into_iter()
            .collect(),
        "association.ip-owner-id" => assoc
            .and_then(|a| a.ip_owner_id.clone())
            .into_iter()
            .collect(),
        "association.public-ip" => assoc
            .and_then(|a| a.public_ip.clone())
            .into_iter()
            .collect(),
        "association.public-dns-name" => assoc
            .and_then(|a| a.public_dns_name.clone())
            .filter(|d| !d.is_empty())
            .into_iter()
            .collect(),
        "addresses.association.owner-id" => addrs
            .filter_map(|p| p.association.as_ref()?.ip_owner_id.clone())
            .collect(),
        "addresses.association.public-ip" => addrs
            .filter_map(|p| p.association.as_ref()?.public_ip.clone())
            .collect(),
        "addresses.primary" => addrs
            .filter_map(|p| p.primary.map(|b| b.to_string()))
            .collect(),
        "addresses.private-ip-address" | "private-ip-address" => {
            addrs.filter_map(|p| p.private_ip_address.clone()).collect()
        }
        "attachment.attach-time" => att
            .and_then(|a| a.attach_time)
            .map(|t| t.to_iso())
            .into_iter()
            .collect(),
        "attachment.attachment-id" => att
            .and_then(|a| a.attachment_id.clone())
            .into_iter()
            .collect(),
        "attachment.delete-on-termination" => bool_text(att.and_then(|a| a.delete_on_termination)),
        "attachment.device-index" => att
            .and_then(|a| a.device_index)
            .map(|i| i.to_string())
            .into_iter()
            .collect(),
        "attachment.instance-id" => att
            .and_then(|a| a.instance_id.clone())
            .into_iter()
            .collect(),
        "attachment.instance-owner-id" => att
            .and_then(|a| a.instance_owner_id.clone())
            .into_iter()
            .collect(),
        "attachment.status" => att.and_then(|a| a.status.clone()).into_iter().collect(),
        "availability-zone" => one(&n.availability_zone),
        "availability-zone-id" => one(&n.availability_zone_id),
        "description" => one(&n.description),
        "group-id" => n
            .groups
            .iter()
            .flatten()
            .filter_map(|g| g.group_id.clone())
            .collect(),
        "group-name" => n
            .groups
            .iter()
            .flatten()
            .filter_map(|g| g.group_name.clone())
            .collect(),
        "interface-type" => one(&n.interface_type),
        "mac-address" => one(&n.mac_address),
        "network-interface-id" => one(&n.network_interface_id),
        "owner-id" => one(&n.owner_id),
        "private-dns-name" => one(&n.private_dns_name),
        "requester-id" => one(&n.requester_id),
        "requester-managed" => bool_text(n.requester_managed),
        "source-dest-check" => bool_text(n.source_dest_check),
        "status" => one(&n.status),
        "subnet-id" => one(&n.subnet_id),
        "vpc-id" => one(&n.vpc_id),
        _ => Vec::new(),
    }
}

pub fn describe_network_interfaces(
    ctx: &Ctx,
    input: DescribeNetworkInterfacesRequest,
) -> Result<DescribeNetworkInterfacesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    ids_or_pages(
        &input.network_interface_ids,
        input.max_results,
        "networkInterfaceIds",
    )?;
    let all: Vec<InstanceNetworkInterface> = ctx.tx.list(ENI_KIND)?;
    let ids = input.network_interface_ids.unwrap_or_default();
    for id in &ids {
        check_id("eni", "NetworkInterface", id)?;
    }
    if let Some(missing) = ids.iter().find(|id| {
        !all.iter()
            .any(|e| e.network_interface_id.as_deref() == Some(id.as_str()))
    }) {
        return Err(addresses::eni_not_found(missing));
    }
    let mut owners: HashMap<String, InstanceRecord> = HashMap::new();
    for rec in ctx.tx.list::<InstanceRecord>(instances::KIND)? {
        for e in rec.instance.network_interfaces.iter().flatten() {
            if let Some(eid) = &e.network_interface_id {
                owners.insert(eid.clone(), rec.clone());
            }
        }
    }
    let subnets: HashMap<String, Subnet> = ctx
        .tx
        .list::<Subnet>(subnets::KIND)?
        .into_iter()
        .filter_map(|s| Some((s.subnet_id.clone()?, s)))
        .collect();
    let eips = addresses::eip_ids_by_ip(ctx.tx)?;
    let mut out = Vec::new();
    for eni in &all {
        let id = eni.network_interface_id.clone().unwrap_or_default();
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        let mut n = describe_one(eni, owners.get(&id), ctx.account(), &subnets, &eips);
        let tags = ctx.tx.tags(&id)?;
        if matches(&filters, &tags, &|f: &str| Some(values(&n, f))) {
            n.tag_set = Some(tags);
            out.push(n);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeNetworkInterfacesResult {
        network_interfaces: Some(page),
        next_token: next,
    })
}
