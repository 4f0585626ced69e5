//! VPCs, and the default VPC every region of a new account has.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::api::common::{
    apply_tag_specs, bool_str, ids_or_pages, load, matches, new_id, paginate, tag_set,
    validate_filters,
};
use crate::api::{Ctx, internet_gateways, route_tables, security_groups, subnets};
use crate::error::ApiError;
use crate::model::{
    AttributeBooleanValue, CreateVpcRequest, CreateVpcResult, DeleteVpcRequest,
    DescribeVpcAttributeRequest, DescribeVpcAttributeResult, DescribeVpcsRequest,
    DescribeVpcsResult, ModifyVpcAttributeRequest, Vpc, VpcCidrBlockAssociation, VpcCidrBlockState,
};
use crate::regions;

pub const KIND: &str = "vpc";

/// A VPC as stored: the model shape plus the attributes EC2 keeps beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpcRecord {
    pub vpc: Vpc,
    pub dns_support: bool,
    pub dns_hostnames: bool,
    pub network_address_usage_metrics: bool,
}

pub fn load_vpc(ctx: &Ctx, id: &str) -> Result<VpcRecord, ApiError> {
    load(ctx.tx, KIND, "vpc", "Vpc", "vpc", id)
}

/// Parses an IPv4 CIDR the way EC2 validates `CidrBlock`.
pub fn parse_cidr(s: &str, param: &str) -> Result<Ipv4Net, ApiError> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        ApiError::invalid_value(format!(
            "Value ({s}) for parameter {param} is invalid. This is not a valid CIDR block."
        ))
    })?;
    if net.trunc() != net {
        return Err(ApiError::invalid_value(format!(
            "Value ({s}) for parameter {param} is invalid. This is not a valid CIDR block."
        )));
    }
    Ok(net)
}

fn new_vpc_record(ctx: &Ctx, cidr: Ipv4Net, is_default: bool, tenancy: &str) -> VpcRecord {
    VpcRecord {
        vpc: Vpc {
            owner_id: Some(ctx.account().to_string()),
            instance_tenancy: Some(tenancy.to_string()),
            cidr_block_association_set: Some(vec![VpcCidrBlockAssociation {
                association_id: Some(new_id("vpc-cidr-assoc")),
                cidr_block: Some(cidr.to_string()),
                cidr_block_state: Some(VpcCidrBlockState {
                    state: Some("associated".into()),
                    status_message: None,
                }),
            }]),
            is_default: Some(is_default),
            vpc_id: Some(new_id("vpc")),
            state: Some("available".into()),
            cidr_block: Some(cidr.to_string()),
            dhcp_options_id: Some(new_id("dopt")),
            ..Default::default()
        },
        dns_support: true,
        dns_hostnames: is_default,
        network_address_usage_metrics: false,
    }
}

/// What every VPC gets with it: a default security group and a main route table.
fn create_vpc_companions(ctx: &Ctx, vpc_id: &str, cidr: &str) -> Result<(), ApiError> {
    security_groups::create_default_group(ctx, vpc_id)?;
    route_tables::create_main_table(ctx, vpc_id, cidr)?;
    Ok(())
}

/// The default VPC of a new account: 172.31.0.0/16, a /20 default subnet per zone, an
/// attached internet gateway and a default route to it.
pub fn create_default_vpc(ctx: &Ctx) -> Result<(), ApiError> {
    let cidr: Ipv4Net = "172.31.0.0/16"
        .parse()
        .map_err(|_| ApiError::internal("default VPC CIDR"))?;
    let rec = new_vpc_record(ctx, cidr, true, "default");
    let vpc_id = rec.vpc.vpc_id.clone().unwrap_or_default();
    ctx.tx.insert(KIND, &vpc_id, &rec)?;
    create_vpc_companions(ctx, &vpc_id, &cidr.to_string())?;
    let igw = internet_gateways::create_attached(ctx, &vpc_id)?;
    route_tables::add_default_route(ctx, &vpc_id, &igw)?;
    let region = regions::find(ctx.region()).ok_or_else(|| ApiError::internal("region"))?;
    let blocks = cidr
        .subnets(20)
        .map_err(|_| ApiError::internal("default subnets"))?;
    for (zone, block) in region.zones().iter().zip(blocks) {
        subnets::insert_subnet(ctx, &vpc_id, block, zone, true)?;
    }
    Ok(())
}

pub fn default_vpc_id(ctx: &Ctx) -> Result<Option<String>, ApiError> {
    Ok(ctx
        .tx
        .list::<VpcRecord>(KIND)?
        .into_iter()
        .find(|r| r.vpc.is_default == Some(true))
        .and_then(|r| r.vpc.vpc_id))
}

pub fn create_vpc(ctx: &Ctx, input: CreateVpcRequest) -> Result<CreateVpcResult, ApiError> {
    let cidr_s = input
        .cidr_block
        .as_deref()
        .ok_or_else(|| ApiError::missing("CidrBlock"))?;
    let cidr = parse_cidr(cidr_s, "cidrBlock")?;
    if !(16..=28).contains(&cidr.prefix_len()) {
        return Err(ApiError::new(
            "InvalidVpc.Range",
            format!("The CIDR '{cidr_s}' is invalid."),
        ));
    }
    let tenancy = input.instance_tenancy.as_deref().unwrap_or("default");
    if tenancy == "host" {
        return Err(ApiError::invalid_value(
            "Value (host) for parameter instanceTenancy is invalid.",
        ));
    }
    let rec = new_vpc_record(ctx, cidr, false, tenancy);
    let vpc_id = rec.vpc.vpc_id.clone().unwrap_or_default();
    ctx.tx.insert(KIND, &vpc_id, &rec)?;
    apply_tag_specs(ctx.tx, &vpc_id, "vpc", input.tag_specifications.as_ref())?;
    create_vpc_companions(ctx, &vpc_id, &cidr.to_string())?;
    let mut vpc = rec.vpc;
    vpc.state = Some("pending".into());
    vpc.tags = tag_set(ctx.tx, &vpc_id)?;
    Ok(CreateVpcResult { vpc: Some(vpc) })
}

const FILTERS: &[&str] = &[
    "cidr",
    "cidr-block-association.cidr-block",
    "cidr-block-association.association-id",
    "cidr-block-association.state",
    "dhcp-options-id",
    "ipv6-cidr-block-association.ipv6-cidr-block",
    "ipv6-cidr-block-association.ipv6-pool",
    "ipv6-cidr-block-association.association-id",
    "ipv6-cidr-block-association.state",
    "is-default",
    "owner-id",
    "state",
    "vpc-id",
];

pub fn describe_vpcs(
    ctx: &Ctx,
    input: DescribeVpcsRequest,
) -> Result<DescribeVpcsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    ids_or_pages(&input.vpc_ids, input.max_results, "vpcIds")?;
    let mut vpcs = Vec::new();
    match &input.vpc_ids {
        Some(ids) if !ids.is_empty() => {
            for id in ids {
                vpcs.push(load_vpc(ctx, id)?.vpc);
            }
        }
        _ => {
            vpcs = ctx
                .tx
                .list::<VpcRecord>(KIND)?
                .into_iter()
                .map(|r| r.vpc)
                .collect()
        }
    }
    let mut out = Vec::new();
    for mut v in vpcs {
        let id = v.vpc_id.clone().unwrap_or_default();
        let tags = ctx.tx.tags(&id)?;
        let assoc = v.cidr_block_association_set.clone().unwrap_or_default();
        let values = |f: &str| {
            Some(match f {
                "cidr" => v.cidr_block.iter().cloned().collect(),
                "cidr-block-association.cidr-block" => {
                    assoc.iter().filter_map(|a| a.cidr_block.clone()).collect()
                }
                "cidr-block-association.association-id" => assoc
                    .iter()
                    .filter_map(|a| a.association_id.clone())
                    .collect(),
                "cidr-block-association.state" => assoc
                    .iter()
                    .filter_map(|a| a.cidr_block_state.as_ref()?.state.clone())
                    .collect(),
                "dhcp-options-id" => v.dhcp_options_id.iter().cloned().collect(),
                "is-default" => vec![bool_str(v.is_default)],
                "owner-id" => v.owner_id.iter().cloned().collect(),
                "state" => v.state.iter().cloned().collect(),
                "vpc-id" => vec![id.clone()],
                _ => Vec::new(),
            })
        };
        if matches(&filters, &tags, &values) {
            v.tags = (!tags.is_empty()).then_some(tags);
            out.push(v);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeVpcsResult {
        vpcs: Some(page),
        next_token: next,
    })
}

pub fn delete_vpc(ctx: &Ctx, input: DeleteVpcRequest) -> Result<(), ApiError> {
    let rec = load_vpc(ctx, &input.vpc_id)?;
    let id = input.vpc_id;
    let blockers = [
        (subnets::count_in_vpc(ctx, &id)?, "subnets"),
        (
            security_groups::count_removable_in_vpc(ctx, &id)?,
            "security groups",
        ),
        (
            internet_gateways::count_attached(ctx, &id)?,
            "internet gateways",
        ),
        (route_tables::count_non_main(ctx, &id)?, "route tables"),
    ];
    if let Some((_, what)) = blockers.iter().find(|(n, _)| *n > 0) {
        return Err(ApiError::dependency(format!(
            "The vpc '{id}' has dependencies ({what}) and cannot be deleted."
        )));
    }
    security_groups::delete_default_group(ctx, &id)?;
    route_tables::delete_main_table(ctx, &id)?;
    ctx.tx.delete(KIND, &id)?;
    drop(rec);
    Ok(())
}

pub fn modify_vpc_attribute(ctx: &Ctx, input: ModifyVpcAttributeRequest) -> Result<(), ApiError> {
    ctx.network_changed();
    let mut rec = load_vpc(ctx, &input.vpc_id)?;
    let set = [
        input.enable_dns_support.as_ref(),
        input.enable_dns_hostnames.as_ref(),
        input.enable_network_address_usage_metrics.as_ref(),
    ];
    let given = set.iter().filter(|v| v.is_some()).count();
    if given != 1 {
        return Err(ApiError::combination(
            "Exactly one attribute must be specified per ModifyVpcAttribute request.",
        ));
    }
    let value = |a: &AttributeBooleanValue, name: &str| {
        a.value
            .ok_or_else(|| ApiError::missing(&format!("{name}.Value")))
    };
    if let Some(a) = &input.enable_dns_support {
        rec.dns_support = value(a, "EnableDnsSupport")?;
    }
    if let Some(a) = &input.enable_dns_hostnames {
        let v = value(a, "EnableDnsHostnames")?;
        if v && !rec.dns_support {
            return Err(ApiError::invalid_value(
                "enableDnsHostnames cannot be enabled unless enableDnsSupport is enabled.",
            ));
        }
        rec.dns_hostnames = v;
    }
    if let Some(a) = &input.enable_network_address_usage_metrics {
        rec.network_address_usage_metrics = value(a, "EnableNetworkAddressUsageMetrics")?;
    }
    ctx.tx.update(KIND, &input.vpc_id, &rec)?;
    Ok(())
}

pub fn describe_vpc_attribute(
    ctx: &Ctx,
    input: DescribeVpcAttributeRequest,
) -> Result<DescribeVpcAttributeResult, ApiError> {
    let rec = load_vpc(ctx, &input.vpc_id)?;
    let boxed = |v: bool| Some(AttributeBooleanValue { value: Some(v) });
    let mut out = DescribeVpcAttributeResult {
        vpc_id: Some(input.vpc_id.clone()),
        ..Default::default()
    };
    match input.attribute.as_str() {
        "enableDnsSupport" => out.enable_dns_support = boxed(rec.dns_support),
        "enableDnsHostnames" => out.enable_dns_hostnames = boxed(rec.dns_hostnames),
        "enableNetworkAddressUsageMetrics" => {
            out.enable_network_address_usage_metrics = boxed(rec.network_address_usage_metrics)
        }
        other => {
            return Err(ApiError::invalid_value(format!(
                "Value ({other}) for parameter attribute is invalid."
            )));
        }
    }
    Ok(out)
}
