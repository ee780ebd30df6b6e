//! job-intake's API errors: each variant has a stable code, a status and a message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use tollgate_runtime::http::error_response;
use tollgate_storage::StorageError;

/// Errors a client of `/v1/jobs` can get.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid tenant identity")]
    Unauthenticated,
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    Invalid(String),
    #[error("unknown job type `{0}`")]
    UnknownJobType(String),
    #[error("input is {size} bytes; job type `{job_type}` accepts at most {limit}")]
    InputTooLarge {
        job_type: String,
        size: usize,
        limit: usize,
    },
    #[error("Idempotency-Key was already used with a different request")]
    IdempotencyConflict { job_id: String },
    #[error("job not found")]
    NotFound,
    #[error("service temporarily unavailable")]
    Unavailable(#[source] StorageError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::MalformedJson(_) => "MALFORMED_JSON",
            Self::Invalid(_) => "INVALID_REQUEST",
            Self::UnknownJobType(_) => "UNKNOWN_JOB_TYPE",
            Self::InputTooLarge { .. } => "INPUT_TOO_LARGE",
            Self::IdempotencyConflict { .. } => "IDEMPOTENCY_KEY_REUSED",
            Self::NotFound => "JOB_NOT_FOUND",
            Self::Unavailable(_) => "SERVICE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound => Self::NotFound,
            StorageError::Unavailable(_) => Self::Unavailable(err),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<std::sync::Arc<StorageError>> for ApiError {
    fn from(err: std::sync::Arc<StorageError>) -> Self {
        match &*err {
            StorageError::Unavailable(message) => {
                Self::Unavailable(StorageError::Unavailable(message.clone()))
            }
            other => Self::Internal(anyhow::anyhow!("batched insert failed: {other}")),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) | Self::UnknownJobType(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InputTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::IdempotencyConflict { .. } => StatusCode::CONFLICT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let details = match self {
            Self::InputTooLarge { size, limit, .. } => {
                Some(serde_json::json!({ "size": size, "limit": limit }))
            }
            Self::IdempotencyConflict { job_id } => Some(serde_json::json!({ "job_id": job_id })),
            _ => None,
        };
        if matches!(self, Self::Internal(_) | Self::Unavailable(_)) {
            // The cause chain goes to the log (with the request span); the body says nothing internal.
            tracing::error!(error = ?self, "request failed");
        }
        error_response(self.status_code(), self.code(), &self.to_string(), details)
    }
}
