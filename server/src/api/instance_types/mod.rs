//! Instance types: a static catalogue of real EC2 facts.

use crate::api::Ctx;
use crate::error::ApiError;
use crate::model::{
    DescribeInstanceTypeOfferingsRequest, DescribeInstanceTypeOfferingsResult,
    DescribeInstanceTypesRequest, DescribeInstanceTypesResult,
};

pub fn describe_instance_types(
    _ctx: &Ctx,
    _input: DescribeInstanceTypesRequest,
) -> Result<DescribeInstanceTypesResult, ApiError> {
    Err(ApiError::new(
        "UnsupportedOperation",
        "DescribeInstanceTypes is not ready",
    ))
}

pub fn describe_instance_type_offerings(
    _ctx: &Ctx,
    _input: DescribeInstanceTypeOfferingsRequest,
) -> Result<DescribeInstanceTypeOfferingsResult, ApiError> {
    Err(ApiError::new(
        "UnsupportedOperation",
        "DescribeInstanceTypeOfferings is not ready",
    ))
}
