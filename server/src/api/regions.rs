//! DescribeRegions, DescribeAvailabilityZones and DescribeAccountAttributes.

use crate::api::Ctx;
use crate::api::common::{matches, validate_filters};
use crate::error::ApiError;
use crate::model::{
    AccountAttribute, AccountAttributeValue, AvailabilityZone, DescribeAccountAttributesRequest,
    DescribeAccountAttributesResult, DescribeAvailabilityZonesRequest,
    DescribeAvailabilityZonesResult, DescribeRegionsRequest, DescribeRegionsResult, Region,
};
use crate::regions::{self, REGIONS};

const REGION_FILTERS: &[&str] = &["endpoint", "region-name", "opt-in-status"];

pub fn describe_regions(
    _ctx: &Ctx,
    input: DescribeRegionsRequest,
) -> Result<DescribeRegionsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, REGION_FILTERS)?;
    let names = input.region_names.unwrap_or_default();
    for n in &names {
        if !regions::is_known(n) {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!("Invalid region names: [{n}]"),
            ));
        }
    }
    let mut out = Vec::new();
    for r in REGIONS {
        if !names.is_empty() && !names.iter().any(|n| n == r.name) {
            continue;
        }
        let opt_in = if r.opt_in {
            "opted-in"
        } else {
            "opt-in-not-required"
        };
        let values = |f: &str| match f {
            "endpoint" => Some(vec![r.endpoint()]),
            "region-name" => Some(vec![r.name.to_string()]),
            "opt-in-status" => Some(vec![opt_in.to_string()]),
            _ => None,
        };
        if !matches(&filters, &[], &values) {
            continue;
        }
        out.push(Region {
            region_name: Some(r.name.to_string()),
            endpoint: Some(r.endpoint()),
            opt_in_status: Some(opt_in.to_string()),
            geography: None,
        });
    }
    Ok(DescribeRegionsResult { regions: Some(out) })
}

const ZONE_FILTERS: &[&str] = &[
    "group-name",
    "message",
    "opt-in-status",
    "parent-zone-id",
    "parent-zone-name",
    "region-name",
    "state",
    "zone-id",
    "zone-name",
    "zone-type",
    "group-long-name",
    "network-border-group",
];

pub fn describe_availability_zones(
    ctx: &Ctx,
    input: DescribeAvailabilityZonesRequest,
) -> Result<DescribeAvailabilityZonesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, ZONE_FILTERS)?;
    let region = regions::find(ctx.region())
        .ok_or_else(|| ApiError::internal("caller region is unknown"))?;
    let zones = region.zones();
    let names = input.zone_names.unwrap_or_default();
    let ids = input.zone_ids.unwrap_or_default();
    for n in &names {
        if !zones.iter().any(|z| &z.name == n) {
            return Err(ApiError::invalid_value(format!(
                "The zone '{n}' does not exist."
            )));
        }
    }
    for id in &ids {
        if !zones.iter().any(|z| &z.id == id) {
            return Err(ApiError::invalid_value(format!(
                "The zone ID '{id}' does not exist."
            )));
        }
    }
    let mut out = Vec::new();
    for z in zones {
        let selected =
            (names.is_empty() && ids.is_empty()) || names.contains(&z.name) || ids.contains(&z.id);
        if !selected {
            continue;
        }
        let values = |f: &str| {
            Some(vec![match f {
                "group-name" | "network-border-group" | "region-name" => region.name.to_string(),
                "group-long-name" => region.name.to_string(),
                "opt-in-status" => "opt-in-not-required".to_string(),
                "state" => "available".to_string(),
                "zone-id" => z.id.clone(),
                "zone-name" => z.name.clone(),
                "zone-type" => "availability-zone".to_string(),
                _ => return None,
            }])
        };
        if !matches(&filters, &[], &values) {
            continue;
        }
        out.push(AvailabilityZone {
            state: Some("available".into()),
            opt_in_status: Some("opt-in-not-required".into()),
            messages: Some(Vec::new()),
            region_name: Some(region.name.into()),
            zone_name: Some(z.name.clone()),
            zone_id: Some(z.id.clone()),
            group_name: Some(region.name.into()),
            network_border_group: Some(region.name.into()),
            zone_type: Some("availability-zone".into()),
            ..Default::default()
        });
    }
    Ok(DescribeAvailabilityZonesResult {
        availability_zones: Some(out),
    })
}

pub fn describe_account_attributes(
    ctx: &Ctx,
    input: DescribeAccountAttributesRequest,
) -> Result<DescribeAccountAttributesResult, ApiError> {
    let default_vpc = crate::api::vpcs::default_vpc_id(ctx)?.unwrap_or_else(|| "none".into());
    // The limits a new AWS account has.
    let all: [(&str, &[&str]); 6] = [
        ("supported-platforms", &["VPC"]),
        ("vpc-max-security-groups-per-interface", &["5"]),
        ("max-elastic-ips", &["5"]),
        ("max-instances", &["20"]),
        ("vpc-max-elastic-ips", &["5"]),
        ("default-vpc", &[default_vpc.as_str()]),
    ];
    let wanted = input.attribute_names.unwrap_or_default();
    let attrs = all
        .iter()
        .filter(|(name, _)| wanted.is_empty() || wanted.iter().any(|w| w == name))
        .map(|(name, values)| AccountAttribute {
            attribute_name: Some(name.to_string()),
            attribute_values: Some(
                values
                    .iter()
                    .map(|v| AccountAttributeValue {
                        attribute_value: Some(v.to_string()),
                    })
                    .collect(),
            ),
        })
        .collect();
    Ok(DescribeAccountAttributesResult {
        account_attributes: Some(attrs),
    })
}
