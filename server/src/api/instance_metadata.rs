//! ModifyInstanceMetadataOptions: the IMDS settings RunInstances' `MetadataOptions` set, kept
//! in the instance record, where DescribeInstances and the IMDS read them.

use crate::api::Ctx;
use crate::api::instances::{self, InstanceRecord};
use crate::error::ApiError;
use crate::model::{
    InstanceMetadataOptionsResponse, ModifyInstanceMetadataOptionsRequest,
    ModifyInstanceMetadataOptionsResult,
};

/// EC2's bounds on `HttpPutResponseHopLimit`.
const HOP_LIMIT: std::ops::RangeInclusive<i32> = 1..=64;

/// Applies the options given, keeping the others (EC2: "If no parameter is specified, the
/// existing state is maintained").
fn apply(
    current: &InstanceMetadataOptionsResponse,
    input: &ModifyInstanceMetadataOptionsRequest,
) -> Result<InstanceMetadataOptionsResponse, ApiError> {
    if let Some(h) = input.http_put_response_hop_limit
        && !HOP_LIMIT.contains(&h)
    {
        return Err(ApiError::invalid_value(format!(
            "The HttpPutResponseHopLimit value {h} is not valid. Specify a value between 1 and 64."
        )));
    }
    let pick = |new: &Option<String>, old: &Option<String>| new.clone().or_else(|| old.clone());
    Ok(InstanceMetadataOptionsResponse {
        state: current.state.clone(),
        http_tokens: pick(&input.http_tokens, &current.http_tokens),
        http_put_response_hop_limit: input
            .http_put_response_hop_limit
            .or(current.http_put_response_hop_limit),
        http_endpoint: pick(&input.http_endpoint, &current.http_endpoint),
        http_protocol_ipv6: pick(&input.http_protocol_ipv6, &current.http_protocol_ipv6),
        instance_metadata_tags: pick(
            &input.instance_metadata_tags,
            &current.instance_metadata_tags,
        ),
    })
}

pub fn modify_instance_metadata_options(
    ctx: &Ctx,
    input: ModifyInstanceMetadataOptionsRequest,
) -> Result<ModifyInstanceMetadataOptionsResult, ApiError> {
    let mut rec: InstanceRecord = instances::load(ctx, &input.instance_id)?;
    if matches!(rec.state_name().as_str(), "terminated" | "shutting-down") {
        return Err(ApiError::new(
            "IncorrectInstanceState",
            format!(
                "The instance '{}' is not in a state from which its metadata options can be modified.",
                input.instance_id
            ),
        ));
    }
    let current = rec.instance.metadata_options.clone().unwrap_or_default();
    let mut options = apply(&current, &input)?;
    // ec2d applies the change at once, so DescribeInstances shows it applied; the answer says
    // `pending`, as EC2's does, so that callers written against EC2 wait the same way.
    options.state = Some("applied".into());
    rec.instance.metadata_options = Some(options.clone());
    ctx.tx.update(instances::KIND, &input.instance_id, &rec)?;
    ctx.network_changed();
    options.state = Some("pending".into());
    Ok(ModifyInstanceMetadataOptionsResult {
        instance_id: Some(input.instance_id),
        instance_metadata_options: Some(options),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> InstanceMetadataOptionsResponse {
        InstanceMetadataOptionsResponse {
            state: Some("applied".into()),
            http_tokens: Some("optional".into()),
            http_put_response_hop_limit: Some(1),
            http_endpoint: Some("enabled".into()),
            http_protocol_ipv6: Some("disabled".into()),
            instance_metadata_tags: Some("disabled".into()),
        }
    }

    #[test]
    fn keeps_what_is_not_given() {
        let input = ModifyInstanceMetadataOptionsRequest {
            instance_id: "i-0123456789abcdef0".into(),
            http_tokens: Some("required".into()),
            http_put_response_hop_limit: Some(3),
            ..Default::default()
        };
        let out = apply(&current(), &input).unwrap();
        assert_eq!(out.http_tokens.as_deref(), Some("required"));
        assert_eq!(out.http_put_response_hop_limit, Some(3));
        assert_eq!(out.http_endpoint.as_deref(), Some("enabled"));
        assert_eq!(out.instance_metadata_tags.as_deref(), Some("disabled"));
    }

    #[test]
    fn hop_limit_bounds() {
        for (h, ok) in [(0, false), (1, true), (64, true), (65, false), (-1, false)] {
            let input = ModifyInstanceMetadataOptionsRequest {
                http_put_response_hop_limit: Some(h),
                ..Default::default()
            };
            assert_eq!(apply(&current(), &input).is_ok(), ok, "{h}");
        }
    }
}
