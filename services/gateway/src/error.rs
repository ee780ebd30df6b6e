//! The gateway's API errors: stable code, status and message, in the standard body.

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use tollgate_runtime::http::error_response;

/// Errors the gateway itself answers with (upstream errors pass through unchanged).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    MissingApiKey,
    #[error("invalid or revoked API key")]
    InvalidApiKey,
    #[error("rate limit of {limit} requests per minute exceeded")]
    RateLimited { limit: u32, retry_after_secs: u64 },
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body")]
    BadBody,
    #[error("upstream service unavailable")]
    UpstreamUnavailable,
    #[error("upstream service timed out")]
    UpstreamTimeout,
    #[error("upstream service failed")]
    BadGateway,
    #[error("authentication backend unavailable")]
    AuthUnavailable,
    #[error("no such route")]
    NotFound,
}

impl GatewayError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingApiKey => "MISSING_API_KEY",
            Self::InvalidApiKey => "INVALID_API_KEY",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::BodyTooLarge { .. } => "BODY_TOO_LARGE",
            Self::BadBody => "BAD_REQUEST_BODY",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::BadGateway => "BAD_GATEWAY",
            Self::AuthUnavailable => "SERVICE_UNAVAILABLE",
            Self::NotFound => "NOT_FOUND",
        }
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingApiKey | Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody => StatusCode::BAD_REQUEST,
            Self::UpstreamUnavailable | Self::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::NotFound => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let details = match self {
            Self::RateLimited {
                limit,
                retry_after_secs,
            } => Some(
                serde_json::json!({ "limit_per_minute": limit, "retry_after_secs": retry_after_secs }),
            ),
            Self::BodyTooLarge { limit } => Some(serde_json::json!({ "limit": limit })),
            _ => None,
        };
        let mut response =
            error_response(self.status_code(), self.code(), &self.to_string(), details);
        if let Self::RateLimited {
            retry_after_secs, ..
        } = self
        {
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
        }
        response
    }
}
