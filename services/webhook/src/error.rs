//! The webhook service's errors: each has a stable code, an HTTP status and a message; the
//! body is the standard `{"error":{"code","message","details"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use tollgate_psp::VerifyError;
use tollgate_runtime::http::error_response;
use tollgate_storage::StorageError;

/// What a webhook-service request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 401 `UNAUTHENTICATED`: the tenant API was called without the gateway's identity.
    #[error("missing or invalid tenant identity")]
    Unauthenticated,
    /// 422 `INVALID_REQUEST`: a field is missing, malformed or out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// 422 `UNKNOWN_EVENT_TYPE`: an endpoint subscribed to a type Tollgate never sends.
    #[error("unknown event type `{0}`; see the documented event types or use `*`")]
    UnknownEventType(String),
    /// 409 `ENDPOINT_LIMIT`: the tenant has the most endpoints allowed.
    #[error("a tenant may have at most {0} webhook endpoints")]
    EndpointLimit(i64),
    /// 404 `ENDPOINT_NOT_FOUND`.
    #[error("webhook endpoint not found")]
    EndpointNotFound,
    /// 404 `DELIVERY_NOT_FOUND`.
    #[error("webhook delivery not found")]
    DeliveryNotFound,
    /// 409 `ENDPOINT_DISABLED`: redelivery to a disabled endpoint (enable it first).
    #[error("the endpoint is disabled; enable it before redelivering")]
    EndpointDisabled,
    /// 404 `PSP_NOT_CONFIGURED`: no secrets configured for this PSP (or no such PSP).
    #[error("webhooks from `{0}` are not accepted here")]
    PspNotConfigured(String),
    /// 413 `PAYLOAD_TOO_LARGE`.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 400 `BAD_REQUEST_BODY`: the body could not be read.
    #[error("the request body could not be read")]
    BadBody,
    /// The PSP signature check failed: 400/401 with the verifier's code.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// 503 `SERVICE_UNAVAILABLE` (database down) or 500.
    #[error("service temporarily unavailable")]
    Storage(#[source] StorageError),
    /// 500 `INTERNAL`.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl WebhookError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Invalid(_) => "INVALID_REQUEST",
            Self::UnknownEventType(_) => "UNKNOWN_EVENT_TYPE",
            Self::EndpointLimit(_) => "ENDPOINT_LIMIT",
            Self::EndpointNotFound => "ENDPOINT_NOT_FOUND",
            Self::DeliveryNotFound => "DELIVERY_NOT_FOUND",
            Self::EndpointDisabled => "ENDPOINT_DISABLED",
            Self::PspNotConfigured(_) => "PSP_NOT_CONFIGURED",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::BadBody => "BAD_REQUEST_BODY",
            Self::Verify(err) => err.code(),
            Self::Storage(StorageError::Unavailable(_)) => "SERVICE_UNAVAILABLE",
            Self::Storage(_) | Self::Internal(_) => "INTERNAL",
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) | Self::UnknownEventType(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::EndpointLimit(_) | Self::EndpointDisabled => StatusCode::CONFLICT,
            Self::EndpointNotFound | Self::DeliveryNotFound | Self::PspNotConfigured(_) => {
                StatusCode::NOT_FOUND
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody => StatusCode::BAD_REQUEST,
            Self::Verify(err) => {
                StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Self::Storage(StorageError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let message = if status.is_server_error() {
            status
                .canonical_reason()
                .unwrap_or("internal error")
                .to_lowercase()
        } else {
            self.to_string()
        };
        error_response(status, self.code(), &message, None)
    }
}

impl From<StorageError> for WebhookError {
    fn from(err: StorageError) -> Self {
        Self::Storage(err)
    }
}

impl From<diesel::result::Error> for WebhookError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Storage(err.into())
    }
}

/// Maps `NotFound` to `not_found`, anything else to [`WebhookError::Storage`].
pub(crate) fn or_not_found(err: StorageError, not_found: WebhookError) -> WebhookError {
    match err {
        StorageError::NotFound => not_found,
        other => WebhookError::Storage(other),
    }
}
