//! `/v1/jobs`: submit, read, list. Handlers parse, call the core function, map the result.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_domain::{
    request_hash, Envelope, IdempotencyKey, JobCommand, JobId, JobStatus, JobTypeName, TenantId,
};
use tollgate_messaging::Topology;
use tollgate_runtime::http::{INTERNAL_TOKEN_HEADER, TENANT_HEADER};
use tollgate_storage::jobs::{InsertOutcome, JobFilter};
use tollgate_storage::models::{JobRow, NewJob, NewOutboxMessage};
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// Mounts the job routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/jobs", web::post().to(submit))
        .route("/v1/jobs", web::get().to(list))
        .route("/v1/jobs/{id}", web::get().to(get));
}

/// `POST /v1/jobs` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJobRequest {
    /// A job type of the tenant's catalog.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Any JSON value; its serialized size is capped per type.
    pub input: serde_json::Value,
    /// The workspace (external id) the job is for: its ledger entry is billed to the
    /// workspace's owner at completion. Not part of the idempotency hash.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobResponse {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub input: Option<serde_json::Value>,
    pub output: Option<serde_json::Value>,
    /// Units the executor reported.
    pub units: Option<i64>,
    /// units × the type's weight, integer cost units.
    pub cost: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The workspace (`ws_…`) the job is billed through, if any.
    #[serde(default)]
    pub workspace_id: Option<String>,
}

impl JobResponse {
    fn from_row(row: JobRow, with_input: bool) -> Self {
        Self {
            id: JobId::from_uuid(row.id).to_string(),
            job_type: row.job_type,
            // The column has a CHECK constraint listing exactly these states.
            status: row.status.parse().unwrap_or(JobStatus::Queued),
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            input: with_input.then_some(row.input),
            output: row.output,
            units: row.units,
            cost: row.cost,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
            workspace_id: row
                .workspace_id
                .map(|id| tollgate_domain::WorkspaceId::from_uuid(id).to_string()),
        }
    }
}

/// A page of jobs.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobListResponse {
    pub data: Vec<JobResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The tenant the gateway authenticated, after checking the internal token.
pub(crate) fn tenant(req: &HttpRequest, state: &AppState) -> Result<TenantId, ApiError> {
    if !state.internal_token.is_empty() {
        let presented = req
            .headers()
            .get(INTERNAL_TOKEN_HEADER)
            .map(|v| v.as_bytes());
        let expected = state.internal_token.as_bytes();
        let ok = presented.is_some_and(|p| subtle_eq(p, expected));
        if !ok {
            return Err(ApiError::Unauthenticated);
        }
    }
    let tenant = req
        .headers()
        .get(TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TenantId>().ok())
        .ok_or(ApiError::Unauthenticated)?;
    tracing::Span::current().record("tenant_id", tracing::field::display(&tenant));
    Ok(tenant)
}

/// Constant-time byte comparison (length is not secret).
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the core submission function was asked to do.
pub struct Submission {
    pub tenant: TenantId,
    pub job_type: JobTypeName,
    pub input: serde_json::Value,
    /// Serialized input size, bytes.
    pub input_size: usize,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Workspace external id; unknown → 422 UNKNOWN_WORKSPACE.
    pub workspace: Option<String>,
}

/// Accepts a job: checks the catalog and the size cap, then inserts the job and its execute
/// message in one transaction. Returns the job and whether it is new (false: the same request
/// was already accepted under this idempotency key).
/// Errors: unknown type (422), input over the type's cap (413), the key reused with another
/// request (409), database unavailable (503).
pub async fn submit_job(
    state: &AppState,
    submission: Submission,
) -> Result<(JobRow, bool), ApiError> {
    let tenant_uuid = submission.tenant.as_uuid();
    let job_type = state
        .catalog
        .job_type(&state.pool, tenant_uuid, submission.job_type.as_str())
        .await?
        .ok_or_else(|| ApiError::UnknownJobType(submission.job_type.to_string()))?;
    let limit = usize::try_from(job_type.max_input_bytes).unwrap_or(0);
    if submission.input_size > limit {
        return Err(ApiError::InputTooLarge {
            job_type: job_type.name,
            size: submission.input_size,
            limit,
        });
    }
    let workspace_id =
        crate::accounts::named_workspace(state, tenant_uuid, submission.workspace.as_deref())
            .await?
            .map(|w| w.id);
    let hash = request_hash(&submission.job_type, &submission.input);
    let key = submission
        .idempotency_key
        .unwrap_or_else(|| IdempotencyKey::from_request_hash(&hash));

    let job_id = JobId::new();
    let envelope = Envelope::job_command(
        "job-intake",
        submission.tenant,
        JobCommand::ExecuteV1 { job_id, attempt: 1 },
    );
    let message = NewOutboxMessage {
        message_id: envelope.id,
        exchange: state.broker.topology().jobs_exchange(),
        routing_key: Topology::EXECUTE_KEY.to_owned(),
        payload: serde_json::to_vec(&envelope).map_err(|e| ApiError::Internal(e.into()))?,
    };
    let job = NewJob {
        id: job_id.as_uuid(),
        tenant_id: tenant_uuid,
        job_type: job_type.name.clone(),
        idempotency_key: key.as_str().to_owned(),
        request_hash: hash.to_vec(),
        input: submission.input,
        status: JobStatus::Queued.as_str().to_owned(),
        max_attempts: job_type.max_attempts,
        workspace_id,
    };
    match state.inserts.submit((job, message)).await? {
        InsertOutcome::Created(row) => {
            state.relay_wake.notify_one();
            Ok((row, true))
        }
        InsertOutcome::Existing(row) if row.request_hash == hash => Ok((row, false)),
        InsertOutcome::Existing(row) => Err(ApiError::IdempotencyConflict {
            job_id: JobId::from_uuid(row.id).to_string(),
        }),
    }
}

async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let request: SubmitJobRequest = crate::error::parse_json(&body)?;
    let job_type =
        JobTypeName::parse(&request.job_type).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let idempotency_key = match req.headers().get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| IdempotencyKey::parse(v).ok())
                .ok_or_else(|| {
                    ApiError::Invalid(
                        "Idempotency-Key must be 1-255 visible ASCII characters".into(),
                    )
                })?,
        ),
        None => None,
    };
    let input_size = serde_json::to_vec(&request.input)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    let result = submit_job(
        &state,
        Submission {
            tenant,
            job_type,
            input: request.input,
            input_size,
            idempotency_key,
            workspace: request.workspace,
        },
    )
    .await;
    let outcome = match &result {
        Ok((_, true)) => "created",
        Ok((_, false)) => "repeat",
        Err(_) => "rejected",
    };
    state.submitted.with_label_values(&[outcome]).inc();
    let (row, created) = result?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(JobResponse::from_row(row, false)))
}

async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let job_id: JobId = path.parse().map_err(|_| ApiError::NotFound)?;
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let row = tollgate_storage::jobs::find_job(&mut conn, tenant.as_uuid(), job_id.as_uuid())
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(JobResponse::from_row(row, true)))
}

/// `GET /v1/jobs` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1..=100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub job_type: Option<String>,
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Invalid(e.to_string()))?
        .into_inner();
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 100".into()));
    }
    let status = match query.status.as_deref() {
        Some(s) => Some(
            s.parse::<JobStatus>()
                .map_err(|e| ApiError::Invalid(e.to_string()))?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let job_type = match query.job_type.as_deref() {
        Some(t) => Some(
            JobTypeName::parse(t)
                .map_err(|e| ApiError::Invalid(e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let before: Option<Uuid> = match query.cursor.as_deref() {
        Some(c) => Some(
            c.parse::<JobId>()
                .map_err(|_| ApiError::Invalid("invalid cursor".into()))?
                .as_uuid(),
        ),
        None => None,
    };
    let filter = JobFilter {
        status,
        job_type,
        before,
    };
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let rows =
        tollgate_storage::jobs::list_jobs(&mut conn, tenant.as_uuid(), &filter, limit).await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| JobId::from_uuid(r.id).to_string()))
        .flatten();
    let data = rows
        .into_iter()
        .map(|r| JobResponse::from_row(r, false))
        .collect();
    Ok(HttpResponse::Ok().json(JobListResponse { data, next_cursor }))
}
