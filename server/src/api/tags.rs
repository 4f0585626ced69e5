//! CreateTags, DeleteTags and DescribeTags, for every resource family.

use crate::api::Ctx;
use crate::api::common::{apply_tags, is_valid_id, matches, paginate, validate_filters};
use crate::error::ApiError;
use crate::model::{
    CreateTagsRequest, DeleteTagsRequest, DescribeTagsRequest, DescribeTagsResult, Tag,
    TagDescription,
};

/// Id prefix → (EC2 resource type, name used in error codes).
const TYPES: &[(&str, &str, &str)] = &[
    ("vpc", "vpc", "Vpc"),
    ("subnet", "subnet", "Subnet"),
    ("sg", "security-group", "Group"),
    ("sgr", "security-group-rule", "SecurityGroupRule"),
    ("igw", "internet-gateway", "InternetGateway"),
    ("rtb", "route-table", "RouteTable"),
    ("key", "key-pair", "KeyPair"),
    ("i", "instance", "Instance"),
    ("vol", "volume", "Volume"),
    ("snap", "snapshot", "Snapshot"),
    ("ami", "image", "AMI"),
    ("eni", "network-interface", "NetworkInterface"),
    ("eipalloc", "elastic-ip", "Allocation"),
    ("dopt", "dhcp-options", "DhcpOptions"),
];

fn type_of(id: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    let prefix = id.rsplit_once('-').map(|(p, _)| p)?;
    TYPES.iter().find(|(p, _, _)| *p == prefix)
}

/// Checks that every id names an existing resource of this account and region.
fn check_resources(ctx: &Ctx, ids: &[String]) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Err(ApiError::missing("ResourceId"));
    }
    for id in ids {
        let Some((prefix, _, name)) = type_of(id).filter(|(p, _, _)| is_valid_id(p, id)) else {
            return Err(ApiError::new(
                "InvalidID",
                format!("The ID '{id}' is not valid"),
            ));
        };
        let _ = prefix;
        if ctx.tx.kind_of(id)?.is_none() {
            return Err(ApiError::new(
                format!("Invalid{name}ID.NotFound"),
                format!("The ID '{id}' does not exist"),
            ));
        }
    }
    Ok(())
}

pub fn create_tags(ctx: &Ctx, input: CreateTagsRequest) -> Result<(), ApiError> {
    check_resources(ctx, &input.resources)?;
    if input.tags.is_empty() {
        return Err(ApiError::missing("Tag"));
    }
    for id in &input.resources {
        apply_tags(ctx.tx, id, &input.tags)?;
    }
    Ok(())
}

pub fn delete_tags(ctx: &Ctx, input: DeleteTagsRequest) -> Result<(), ApiError> {
    check_resources(ctx, &input.resources)?;
    for id in &input.resources {
        match &input.tags {
            // No tags named: delete them all, as EC2 does.
            None => {
                for t in ctx.tx.tags(id)? {
                    ctx.tx
                        .delete_tag(id, t.key.as_deref().unwrap_or_default(), None)?;
                }
            }
            Some(tags) => {
                for t in tags {
                    let key = t
                        .key
                        .as_deref()
                        .ok_or_else(|| ApiError::missing("Tag.Key"))?;
                    ctx.tx.delete_tag(id, key, t.value.as_deref())?;
                }
            }
        }
    }
    Ok(())
}

const FILTERS: &[&str] = &["key", "resource-id", "resource-type", "value"];

pub fn describe_tags(
    ctx: &Ctx,
    input: DescribeTagsRequest,
) -> Result<DescribeTagsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    let mut out = Vec::new();
    for (id, tag) in ctx.tx.all_tags()? {
        let ty = type_of(&id)
            .map(|(_, t, _)| t.to_string())
            .unwrap_or_default();
        let key = tag.key.clone().unwrap_or_default();
        let value = tag.value.clone().unwrap_or_default();
        let own = [tag.clone()];
        let own_tags: &[Tag] = &own;
        let values = |f: &str| {
            Some(match f {
                "key" => vec![key.clone()],
                "value" => vec![value.clone()],
                "resource-id" => vec![id.clone()],
                "resource-type" => vec![ty.clone()],
                _ => Vec::new(),
            })
        };
        if matches(&filters, own_tags, &values) {
            out.push(TagDescription {
                key: Some(key),
                resource_id: Some(id.clone()),
                resource_type: Some(ty),
                value: Some(value),
            });
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeTagsResult {
        tags: Some(page),
        next_token: next,
    })
}
