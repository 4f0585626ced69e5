//! Internet gateways: the records setup scripts create and attach. Packet routing is the
//! fabric's business.

use crate::api::common::{
    apply_tag_specs, ids_or_pages, load, matches, new_id, paginate, tag_set, validate_filters,
};
use crate::api::{Ctx, vpcs};
use crate::error::ApiError;
use crate::model::{
    AttachInternetGatewayRequest, CreateInternetGatewayRequest, CreateInternetGatewayResult,
    DeleteInternetGatewayRequest, DescribeInternetGatewaysRequest, DescribeInternetGatewaysResult,
    DetachInternetGatewayRequest, InternetGateway, InternetGatewayAttachment,
};

pub const KIND: &str = "internet-gateway";

fn load_igw(ctx: &Ctx, id: &str) -> Result<InternetGateway, ApiError> {
    load(
        ctx.tx,
        KIND,
        "igw",
        "InternetGateway",
        "internetGateway",
        id,
    )
}

fn new_igw(ctx: &Ctx) -> InternetGateway {
    InternetGateway {
        attachments: Some(Vec::new()),
        internet_gateway_id: Some(new_id("igw")),
        owner_id: Some(ctx.account().to_string()),
        tags: None,
    }
}

fn attached_vpc(igw: &InternetGateway) -> Option<&str> {
    igw.attachments
        .iter()
        .flatten()
        .find_map(|a| a.vpc_id.as_deref())
}

/// An internet gateway already attached to a VPC (for the default VPC).
pub fn create_attached(ctx: &Ctx, vpc_id: &str) -> Result<String, ApiError> {
    let mut igw = new_igw(ctx);
    igw.attachments = Some(vec![InternetGatewayAttachment {
        state: Some("available".into()),
        vpc_id: Some(vpc_id.to_string()),
    }]);
    let id = igw.internet_gateway_id.clone().unwrap_or_default();
    ctx.tx.insert(KIND, &id, &igw)?;
    Ok(id)
}

pub fn count_attached(ctx: &Ctx, vpc_id: &str) -> Result<usize, ApiError> {
    Ok(ctx
        .tx
        .list::<InternetGateway>(KIND)?
        .iter()
        .filter(|g| attached_vpc(g) == Some(vpc_id))
        .count())
}

/// True when the gateway exists and is attached to this VPC.
pub fn is_attached_to(ctx: &Ctx, igw_id: &str, vpc_id: &str) -> Result<bool, ApiError> {
    Ok(load_igw(ctx, igw_id)
        .ok()
        .is_some_and(|g| attached_vpc(&g) == Some(vpc_id)))
}

pub fn create_internet_gateway(
    ctx: &Ctx,
    input: CreateInternetGatewayRequest,
) -> Result<CreateInternetGatewayResult, ApiError> {
    let mut igw = new_igw(ctx);
    let id = igw.internet_gateway_id.clone().unwrap_or_default();
    ctx.tx.insert(KIND, &id, &igw)?;
    apply_tag_specs(
        ctx.tx,
        &id,
        "internet-gateway",
        input.tag_specifications.as_ref(),
    )?;
    igw.tags = tag_set(ctx.tx, &id)?;
    Ok(CreateInternetGatewayResult {
        internet_gateway: Some(igw),
    })
}

pub fn attach_internet_gateway(
    ctx: &Ctx,
    input: AttachInternetGatewayRequest,
) -> Result<(), ApiError> {
    let mut igw = load_igw(ctx, &input.internet_gateway_id)?;
    vpcs::load_vpc(ctx, &input.vpc_id)?;
    if let Some(vpc) = attached_vpc(&igw) {
        return Err(ApiError::new(
            "Resource.AlreadyAssociated",
            format!(
                "resource {} is already attached to network {vpc}",
                input.internet_gateway_id
            ),
        ));
    }
    if count_attached(ctx, &input.vpc_id)? > 0 {
        return Err(ApiError::new(
            "Resource.AlreadyAssociated",
            format!(
                "Network {} already has an internet gateway attached",
                input.vpc_id
            ),
        ));
    }
    igw.attachments = Some(vec![InternetGatewayAttachment {
        state: Some("available".into()),
        vpc_id: Some(input.vpc_id.clone()),
    }]);
    ctx.tx.update(KIND, &input.internet_gateway_id, &igw)?;
    Ok(())
}

pub fn detach_internet_gateway(
    ctx: &Ctx,
    input: DetachInternetGatewayRequest,
) -> Result<(), ApiError> {
    let mut igw = load_igw(ctx, &input.internet_gateway_id)?;
    vpcs::load_vpc(ctx, &input.vpc_id)?;
    if attached_vpc(&igw) != Some(input.vpc_id.as_str()) {
        return Err(ApiError::new(
            "Gateway.NotAttached",
            format!(
                "resource {} is not attached to network {}",
                input.internet_gateway_id, input.vpc_id
            ),
        ));
    }
    igw.attachments = Some(Vec::new());
    ctx.tx.update(KIND, &input.internet_gateway_id, &igw)?;
    Ok(())
}

pub fn delete_internet_gateway(
    ctx: &Ctx,
    input: DeleteInternetGatewayRequest,
) -> Result<(), ApiError> {
    let igw = load_igw(ctx, &input.internet_gateway_id)?;
    if attached_vpc(&igw).is_some() {
        return Err(ApiError::dependency(format!(
            "The internetGateway '{}' has dependencies and cannot be deleted.",
            input.internet_gateway_id
        )));
    }
    ctx.tx.delete(KIND, &input.internet_gateway_id)?;
    Ok(())
}

const FILTERS: &[&str] = &[
    "attachment.state",
    "attachment.vpc-id",
    "internet-gateway-id",
    "owner-id",
];

pub fn describe_internet_gateways(
    ctx: &Ctx,
    input: DescribeInternetGatewaysRequest,
) -> Result<DescribeInternetGatewaysResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    ids_or_pages(
        &input.internet_gateway_ids,
        input.max_results,
        "internetGatewayIds",
    )?;
    let igws = match &input.internet_gateway_ids {
        Some(ids) if !ids.is_empty() => ids
            .iter()
            .map(|id| load_igw(ctx, id))
            .collect::<Result<Vec<_>, _>>()?,
        _ => ctx.tx.list::<InternetGateway>(KIND)?,
    };
    let mut out = Vec::new();
    for mut g in igws {
        let id = g.internet_gateway_id.clone().unwrap_or_default();
        let tags = ctx.tx.tags(&id)?;
        let atts = g.attachments.clone().unwrap_or_default();
        let values = |f: &str| {
            Some(match f {
                "attachment.state" => atts.iter().filter_map(|a| a.state.clone()).collect(),
                "attachment.vpc-id" => atts.iter().filter_map(|a| a.vpc_id.clone()).collect(),
                "internet-gateway-id" => vec![id.clone()],
                "owner-id" => g.owner_id.iter().cloned().collect(),
                _ => Vec::new(),
            })
        };
        if matches(&filters, &tags, &values) {
            g.tags = (!tags.is_empty()).then_some(tags);
            out.push(g);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeInternetGatewaysResult {
        internet_gateways: Some(page),
        next_token: next,
    })
}
