//! The one error type every request path returns: an EC2 error code, message and HTTP status.

use std::borrow::Cow;

use crate::protocol::query::DecodeError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: Cow<'static, str>,
    pub message: String,
    pub status: u16,
}

impl ApiError {
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError {
            code: code.into(),
            message: message.into(),
            status: 400,
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterValue", message)
    }

    pub fn missing(param: &str) -> Self {
        Self::new(
            "MissingParameter",
            format!("The request must contain the parameter {param}"),
        )
    }

    pub fn combination(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterCombination", message)
    }

    pub fn dependency(message: impl Into<String>) -> Self {
        Self::new("DependencyViolation", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("InternalError", message).with_status(500)
    }

    pub fn auth(code: &'static str, message: impl Into<String>) -> Self {
        let status = match code {
            "MissingAuthenticationToken" | "AuthFailure" | "SignatureDoesNotMatch" => 401,
            _ => 400,
        };
        Self::new(code, message).with_status(status)
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        let code = match e {
            DecodeError::UnknownParameter(_) => "UnknownParameter",
            DecodeError::MissingParameter(_) => "MissingParameter",
            DecodeError::InvalidParameterValue(_) => "InvalidParameterValue",
            DecodeError::ValidationError(_) => "ValidationError",
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::internal("An internal error has occurred")
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        tracing::error!(error = %e, "stored record does not decode");
        ApiError::internal("An internal error has occurred")
    }
}
