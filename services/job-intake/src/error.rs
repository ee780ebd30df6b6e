//! job-intake's API errors: each variant has a stable code, a status and a message.

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use tollgate_objects::LinkError;
use tollgate_runtime::http::error_response;
use tollgate_storage::StorageError;

use crate::entitlements::GateRefusal;

/// Errors a client of `/v1/jobs`, `/v1/events`, `/v1/artifacts` and `/v1/downloads` can get.
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
    #[error("artifact not found")]
    ArtifactNotFound,
    #[error("invalid artifact key: {0}")]
    InvalidArtifactKey(String),
    #[error("unknown workspace `{0}`")]
    UnknownWorkspace(String),
    #[error("artifact is larger than {limit} bytes")]
    ArtifactTooLarge { limit: usize },
    #[error("download link has expired; ask for a new one")]
    DownloadLinkExpired,
    #[error("download link is invalid")]
    DownloadLinkInvalid,
    #[error("artifact storage temporarily unavailable")]
    ArtifactStoreUnavailable(#[source] object_store::Error),
    #[error("{0}")]
    Event(tollgate_domain::usage::EventRejection),
    #[error("a batch holds at most {limit} events; this one has {count}")]
    BatchTooLarge { count: usize, limit: usize },
    #[error("unknown metric `{0}`")]
    UnknownMetric(String),
    #[error("unknown time zone `{0}` (use an IANA name such as Europe/Paris)")]
    InvalidTimeZone(String),
    #[error("{0}")]
    Account(AccountError),
    /// Refused by the entitlement gate (issue 4, "Entitlements at intake"):
    /// BILLING_ENTITY_REQUIRED 422, SUBSCRIPTION_REQUIRED 402, SUBSCRIPTION_SUSPENDED 402,
    /// FEATURE_NOT_IN_PLAN 403, PLAN_RATE_LIMITED 429 (with `Retry-After`; details `{plan,
    /// limit, retry_after_secs}`), QUOTA_EXCEEDED 402 (details `{metric, usage, requested,
    /// limit, period_end}`), ENTITLEMENTS_UNAVAILABLE 503 (with `Retry-After: 1`).
    #[error("{0}")]
    Entitlement(GateRefusal),
    #[error("service temporarily unavailable")]
    Unavailable(#[source] StorageError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The stable machine code.
    pub fn code(&self) -> &str {
        match self {
            Self::Event(rejection) => &rejection.code,
            Self::BatchTooLarge { .. } => "BATCH_TOO_LARGE",
            Self::UnknownMetric(_) => "UNKNOWN_METRIC",
            Self::InvalidTimeZone(_) => "INVALID_TIME_ZONE",
            Self::Account(err) => err.code(),
            Self::Entitlement(refusal) => refusal.code(),
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::MalformedJson(_) => "MALFORMED_JSON",
            Self::Invalid(_) => "INVALID_REQUEST",
            Self::UnknownJobType(_) => "UNKNOWN_JOB_TYPE",
            Self::InputTooLarge { .. } => "INPUT_TOO_LARGE",
            Self::IdempotencyConflict { .. } => "IDEMPOTENCY_KEY_REUSED",
            Self::NotFound => "JOB_NOT_FOUND",
            Self::ArtifactNotFound => "ARTIFACT_NOT_FOUND",
            Self::InvalidArtifactKey(_) => "INVALID_ARTIFACT_KEY",
            Self::UnknownWorkspace(_) => "UNKNOWN_WORKSPACE",
            Self::ArtifactTooLarge { .. } => "ARTIFACT_TOO_LARGE",
            Self::DownloadLinkExpired => "DOWNLOAD_LINK_EXPIRED",
            Self::DownloadLinkInvalid => "DOWNLOAD_LINK_INVALID",
            Self::ArtifactStoreUnavailable(_) => "ARTIFACT_STORE_UNAVAILABLE",
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

/// A refused download link: 403 `DOWNLOAD_LINK_INVALID` or 410 `DOWNLOAD_LINK_EXPIRED`.
impl From<LinkError> for ApiError {
    fn from(err: LinkError) -> Self {
        match err {
            LinkError::Invalid => Self::DownloadLinkInvalid,
            LinkError::Expired => Self::DownloadLinkExpired,
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
            Self::NotFound | Self::ArtifactNotFound => StatusCode::NOT_FOUND,
            Self::InvalidArtifactKey(_) | Self::UnknownWorkspace(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::ArtifactTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::DownloadLinkExpired => StatusCode::GONE,
            Self::DownloadLinkInvalid => StatusCode::FORBIDDEN,
            Self::ArtifactStoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Event(_) | Self::UnknownMetric(_) | Self::InvalidTimeZone(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Account(err) => err.status(),
            Self::Entitlement(refusal) => refusal_status(refusal),
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
            Self::ArtifactTooLarge { limit } => Some(serde_json::json!({ "limit": limit })),
            Self::BatchTooLarge { count, limit } => {
                Some(serde_json::json!({ "count": count, "limit": limit }))
            }
            Self::Entitlement(refusal) => refusal.details(),
            _ => None,
        };
        if matches!(
            self,
            Self::Internal(_) | Self::Unavailable(_) | Self::ArtifactStoreUnavailable(_)
        ) {
            // The cause chain goes to the log (with the request span); the body says nothing internal.
            tracing::error!(error = ?self, "request failed");
        }
        let mut response =
            error_response(self.status_code(), self.code(), &self.to_string(), details);
        match self {
            Self::Entitlement(GateRefusal::Unavailable) => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Entitlement(GateRefusal::RateLimited {
                retry_after_secs, ..
            }) => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// The HTTP status of an entitlement refusal: 402 Payment Required for what a subscription
/// or payment fixes, 403 for a feature the plan lacks, 422 for a request that names no
/// billing entity, 503 before the projection is loaded (SPEC "Jobs").
pub fn refusal_status(refusal: &GateRefusal) -> StatusCode {
    match refusal {
        GateRefusal::EntityRequired => StatusCode::UNPROCESSABLE_ENTITY,
        GateRefusal::SubscriptionRequired
        | GateRefusal::SubscriptionSuspended
        | GateRefusal::QuotaExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
        GateRefusal::FeatureNotInPlan { .. } => StatusCode::FORBIDDEN,
        GateRefusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        GateRefusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<GateRefusal> for ApiError {
    fn from(refusal: GateRefusal) -> Self {
        Self::Entitlement(refusal)
    }
}

/// Refusals of the account rules (SPEC "Security": a personal account has one workspace;
/// conversion to an organization is all-or-nothing).
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("account not found")]
    NotFound,
    #[error("workspace not found")]
    WorkspaceNotFound,
    #[error(
        "a personal account owns at most one workspace; convert it to an organization to add more"
    )]
    PersonalWorkspaceLimit,
    #[error("the account was converted to an organization; use the organization")]
    Converted,
    #[error("only a personal account can be converted to an organization")]
    NotPersonal,
    #[error("the external id is already used by another record of this tenant")]
    ExternalIdTaken,
}

impl AccountError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "ACCOUNT_NOT_FOUND",
            Self::WorkspaceNotFound => "WORKSPACE_NOT_FOUND",
            Self::PersonalWorkspaceLimit => "PERSONAL_ACCOUNT_WORKSPACE_LIMIT",
            Self::Converted => "ACCOUNT_CONVERTED",
            Self::NotPersonal => "ACCOUNT_NOT_PERSONAL",
            Self::ExternalIdTaken => "EXTERNAL_ID_TAKEN",
        }
    }

    /// 404 for a missing record, 403 for the workspace limit, 409 for state conflicts.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::WorkspaceNotFound => StatusCode::NOT_FOUND,
            Self::PersonalWorkspaceLimit => StatusCode::FORBIDDEN,
            Self::Converted | Self::NotPersonal | Self::ExternalIdTaken => StatusCode::CONFLICT,
        }
    }
}

impl From<tollgate_storage::accounts::Refusal> for ApiError {
    fn from(refusal: tollgate_storage::accounts::Refusal) -> Self {
        use tollgate_storage::accounts::Refusal;
        Self::Account(match refusal {
            Refusal::AccountNotFound => AccountError::NotFound,
            Refusal::PersonalWorkspaceLimit => AccountError::PersonalWorkspaceLimit,
            Refusal::AccountConverted => AccountError::Converted,
            Refusal::NotPersonal => AccountError::NotPersonal,
            Refusal::ExternalIdTaken => AccountError::ExternalIdTaken,
        })
    }
}

/// Parses a JSON request body: malformed JSON → 400 MALFORMED_JSON, well-formed JSON of the
/// wrong shape → 422 INVALID_REQUEST (serde's message names the field).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(e.to_string()),
        _ => ApiError::MalformedJson(e.to_string()),
    })
}
