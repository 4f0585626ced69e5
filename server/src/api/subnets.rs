//! Subnets.

use ipnet::Ipv4Net;

use crate::api::common::{
    apply_tag_specs, bool_str, ids_or_pages, load, matches, new_id, paginate, tag_set,
    validate_filters,
};
use crate::api::vpcs::{self, parse_cidr};
use crate::api::{Ctx, route_tables};
use crate::error::ApiError;
use crate::model::{
    AttributeBooleanValue, CreateSubnetRequest, CreateSubnetResult, DeleteSubnetRequest,
    DescribeSubnetsRequest, DescribeSubnetsResult, ModifySubnetAttributeRequest,
    PrivateDnsNameOptionsOnLaunch, Subnet,
};
use crate::regions::{self, Zone};

pub const KIND: &str = "subnet";
/// ENIs live under this kind once instances exist; a subnet with any is in use.
pub const ENI_KIND: &str = "network-interface";

pub fn load_subnet(ctx: &Ctx, id: &str) -> Result<Subnet, ApiError> {
    load(ctx.tx, KIND, "subnet", "Subnet", "subnet", id)
}

/// EC2 reserves five addresses in every subnet.
fn usable(cidr: Ipv4Net) -> i32 {
    let size = 1i64 << (32 - u32::from(cidr.prefix_len()));
    i32::try_from(size - 5).unwrap_or(i32::MAX)
}

pub fn insert_subnet(
    ctx: &Ctx,
    vpc_id: &str,
    cidr: Ipv4Net,
    zone: &Zone,
    default_for_az: bool,
) -> Result<Subnet, ApiError> {
    let id = new_id("subnet");
    let subnet = Subnet {
        availability_zone_id: Some(zone.id.clone()),
        availability_zone: Some(zone.name.clone()),
        map_customer_owned_ip_on_launch: Some(false),
        owner_id: Some(ctx.account().to_string()),
        assign_ipv6_address_on_creation: Some(false),
        ipv6_cidr_block_association_set: Some(Vec::new()),
        subnet_arn: Some(format!(
            "arn:aws:ec2:{}:{}:subnet/{id}",
            ctx.region(),
            ctx.account()
        )),
        enable_dns64: Some(false),
        ipv6_native: Some(false),
        private_dns_name_options_on_launch: Some(PrivateDnsNameOptionsOnLaunch {
            hostname_type: Some("ip-name".into()),
            enable_resource_name_dns_a_record: Some(false),
            enable_resource_name_dns_aaaa_record: Some(false),
        }),
        subnet_id: Some(id.clone()),
        state: Some("available".into()),
        vpc_id: Some(vpc_id.to_string()),
        cidr_block: Some(cidr.to_string()),
        available_ip_address_count: Some(usable(cidr)),
        default_for_az: Some(default_for_az),
        map_public_ip_on_launch: Some(default_for_az),
        ..Default::default()
    };
    ctx.tx.insert(KIND, &id, &subnet)?;
    Ok(subnet)
}

pub fn count_in_vpc(ctx: &Ctx, vpc_id: &str) -> Result<usize, ApiError> {
    Ok(ctx
        .tx
        .list::<Subnet>(KIND)?
        .iter()
        .filter(|s| s.vpc_id.as_deref() == Some(vpc_id))
        .count())
}

fn vpc_cidrs(rec: &vpcs::VpcRecord) -> Vec<Ipv4Net> {
    rec.vpc
        .cidr_block_association_set
        .iter()
        .flatten()
        .filter_map(|a| a.cidr_block.as_deref()?.parse().ok())
        .collect()
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub fn create_subnet(
    ctx: &Ctx,
    input: CreateSubnetRequest,
) -> Result<CreateSubnetResult, ApiError> {
    let vpc = vpcs::load_vpc(ctx, &input.vpc_id)?;
    let cidr_s = input
        .cidr_block
        .as_deref()
        .ok_or_else(|| ApiError::missing("CidrBlock"))?;
    let cidr = parse_cidr(cidr_s, "cidrBlock")?;
    let inside = vpc_cidrs(&vpc).iter().any(|v| v.contains(&cidr));
    if !inside || !(16..=28).contains(&cidr.prefix_len()) {
        return Err(ApiError::new(
            "InvalidSubnet.Range",
            format!("The CIDR '{cidr_s}' is invalid."),
        ));
    }
    let existing = ctx.tx.list::<Subnet>(KIND)?;
    for s in existing
        .iter()
        .filter(|s| s.vpc_id.as_deref() == Some(input.vpc_id.as_str()))
    {
        if let Some(other) = s.cidr_block.as_deref().and_then(|c| c.parse().ok())
            && overlaps(cidr, other)
        {
            return Err(ApiError::new(
                "InvalidSubnet.Conflict",
                format!("The CIDR '{cidr_s}' conflicts with another subnet"),
            ));
        }
    }
    let region = regions::find(ctx.region()).ok_or_else(|| ApiError::internal("region"))?;
    let zones = region.zones();
    let zone = match (&input.availability_zone, &input.availability_zone_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::combination(
                "Only one of AvailabilityZone or AvailabilityZoneId may be given.",
            ));
        }
        (Some(name), None) => zones.iter().find(|z| &z.name == name).ok_or_else(|| {
            let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
            ApiError::invalid_value(format!(
                "Value ({name}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {}.",
                names.join(", ")
            ))
        })?,
        (None, Some(id)) => zones.iter().find(|z| &z.id == id).ok_or_else(|| {
            ApiError::invalid_value(format!(
                "Value ({id}) for parameter availabilityZoneId is invalid."
            ))
        })?,
        (None, None) => {
            // Spread subnets over zones as EC2 appears to.
            let n = existing.len() % zones.len().max(1);
            zones.get(n).ok_or_else(|| ApiError::internal("no zones"))?
        }
    };
    let mut subnet = insert_subnet(ctx, &input.vpc_id, cidr, zone, false)?;
    let id = subnet.subnet_id.clone().unwrap_or_default();
    apply_tag_specs(ctx.tx, &id, "subnet", input.tag_specifications.as_ref())?;
    subnet.tags = tag_set(ctx.tx, &id)?;
    subnet.state = Some("available".into());
    Ok(CreateSubnetResult {
        subnet: Some(subnet),
    })
}

const FILTERS: &[&str] = &[
    "availability-zone",
    "availability-zone-id",
    "available-ip-address-count",
    "cidr",
    "cidr-block",
    "cidrBlock",
    "default-for-az",
    "defaultForAz",
    "ipv6-cidr-block-association.ipv6-cidr-block",
    "ipv6-cidr-block-association.association-id",
    "ipv6-cidr-block-association.state",
    "ipv6-native",
    "map-customer-owned-ip-on-launch",
    "map-public-ip-on-launch",
    "outpost-arn",
    "owner-id",
    "private-dns-name-options-on-launch.hostname-type",
    "state",
    "subnet-arn",
    "subnet-id",
    "vpc-id",
];

pub fn describe_subnets(
    ctx: &Ctx,
    input: DescribeSubnetsRequest,
) -> Result<DescribeSubnetsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    ids_or_pages(&input.subnet_ids, input.max_results, "subnetIds")?;
    let subnets = match &input.subnet_ids {
        Some(ids) if !ids.is_empty() => ids
            .iter()
            .map(|id| load_subnet(ctx, id))
            .collect::<Result<Vec<_>, _>>()?,
        _ => ctx.tx.list::<Subnet>(KIND)?,
    };
    let mut out = Vec::new();
    for mut s in subnets {
        let id = s.subnet_id.clone().unwrap_or_default();
        let tags = ctx.tx.tags(&id)?;
        let values = |f: &str| {
            let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
            Some(match f {
                "availability-zone" => one(&s.availability_zone),
                "availability-zone-id" => one(&s.availability_zone_id),
                "available-ip-address-count" => s
                    .available_ip_address_count
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
                "cidr" | "cidr-block" | "cidrBlock" => one(&s.cidr_block),
                "default-for-az" | "defaultForAz" => vec![bool_str(s.default_for_az)],
                "ipv6-native" => vec![bool_str(s.ipv6_native)],
                "map-customer-owned-ip-on-launch" => {
                    vec![bool_str(s.map_customer_owned_ip_on_launch)]
                }
                "map-public-ip-on-launch" => vec![bool_str(s.map_public_ip_on_launch)],
                "outpost-arn" => one(&s.outpost_arn),
                "owner-id" => one(&s.owner_id),
                "private-dns-name-options-on-launch.hostname-type" => s
                    .private_dns_name_options_on_launch
                    .as_ref()
                    .and_then(|p| p.hostname_type.clone())
                    .into_iter()
                    .collect(),
                "state" => one(&s.state),
                "subnet-arn" => one(&s.subnet_arn),
                "subnet-id" => vec![id.clone()],
                "vpc-id" => one(&s.vpc_id),
                _ => Vec::new(),
            })
        };
        if matches(&filters, &tags, &values) {
            s.tags = (!tags.is_empty()).then_some(tags);
            out.push(s);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeSubnetsResult {
        subnets: Some(page),
        next_token: next,
    })
}

pub fn delete_subnet(ctx: &Ctx, input: DeleteSubnetRequest) -> Result<(), ApiError> {
    load_subnet(ctx, &input.subnet_id)?;
    let enis: Vec<serde_json::Value> = ctx.tx.list(ENI_KIND)?;
    let in_use = enis
        .iter()
        .any(|e| e.get("SubnetId").and_then(|v| v.as_str()) == Some(input.subnet_id.as_str()));
    if in_use {
        return Err(ApiError::dependency(format!(
            "The subnet '{}' has dependencies and cannot be deleted.",
            input.subnet_id
        )));
    }
    route_tables::drop_subnet_associations(ctx, &input.subnet_id)?;
    ctx.tx.delete(KIND, &input.subnet_id)?;
    Ok(())
}

pub fn modify_subnet_attribute(
    ctx: &Ctx,
    input: ModifySubnetAttributeRequest,
) -> Result<(), ApiError> {
    let mut s = load_subnet(ctx, &input.subnet_id)?;
    let value = |a: &AttributeBooleanValue, name: &str| {
        a.value
            .ok_or_else(|| ApiError::missing(&format!("{name}.Value")))
    };
    let mut changed = 0;
    if let Some(a) = &input.map_public_ip_on_launch {
        s.map_public_ip_on_launch = Some(value(a, "MapPublicIpOnLaunch")?);
        changed += 1;
    }
    if let Some(a) = &input.assign_ipv6_address_on_creation {
        let v = value(a, "AssignIpv6AddressOnCreation")?;
        if v && s
            .ipv6_cidr_block_association_set
            .as_ref()
            .is_none_or(Vec::is_empty)
        {
            return Err(ApiError::invalid_value(
                "The subnet has no IPv6 CIDR block, so AssignIpv6AddressOnCreation cannot be enabled.",
            ));
        }
        s.assign_ipv6_address_on_creation = Some(v);
        changed += 1;
    }
    if let Some(a) = &input.map_customer_owned_ip_on_launch {
        s.map_customer_owned_ip_on_launch = Some(value(a, "MapCustomerOwnedIpOnLaunch")?);
        changed += 1;
    }
    if let Some(a) = &input.enable_dns64 {
        s.enable_dns64 = Some(value(a, "EnableDns64")?);
        changed += 1;
    }
    let dns = s
        .private_dns_name_options_on_launch
        .get_or_insert_with(Default::default);
    if let Some(t) = &input.private_dns_hostname_type_on_launch {
        dns.hostname_type = Some(t.clone());
        changed += 1;
    }
    if let Some(a) = &input.enable_resource_name_dns_a_record_on_launch {
        dns.enable_resource_name_dns_a_record =
            Some(value(a, "EnableResourceNameDnsARecordOnLaunch")?);
        changed += 1;
    }
    if let Some(a) = &input.enable_resource_name_dns_aaaa_record_on_launch {
        dns.enable_resource_name_dns_aaaa_record =
            Some(value(a, "EnableResourceNameDnsAAAARecordOnLaunch")?);
        changed += 1;
    }
    if changed == 0 {
        return Err(ApiError::missing("attribute"));
    }
    ctx.tx.update(KIND, &input.subnet_id, &s)?;
    Ok(())
}
