//! `/v1/jobs`: submit, read, list. Handlers parse, call the core function, map the result.
//! Submissions of tenants that enforce billing pass the entitlement gate first
//! (`crate::entitlements`); a submission past a soft quota limit is accepted with a
//! `tollgate-quota-warning: <metric> soft limit exceeded (<used>/<limit>)` header.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_domain::{
    request_hash, Envelope, IdempotencyKey, JobCommand, JobId, JobStatus, JobTypeName, TenantId,
};
use tollgate_messaging::Topology;
use tollgate_storage::jobs::{InsertOutcome, JobFilter};
use tollgate_storage::models::{JobRow, NewJob, NewOutboxMessage};
use uuid::Uuid;

use crate::entitlements::{GateRefusal, QuotaWarning, QUOTA_WARNING_HEADER};
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
    /// workspace's owner at completion. Not part of the idempotency hash. Required when the
    /// tenant enforces billing (422 BILLING_ENTITY_REQUIRED otherwise).
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

/// The tenant the gateway authenticated, after checking the internal token (401 otherwise).
pub(crate) fn tenant(req: &HttpRequest, state: &AppState) -> Result<TenantId, ApiError> {
    tollgate_runtime::http::forwarded_tenant(req, &state.internal_token)
        .ok_or(ApiError::Unauthenticated)
}

/// What the core submission function was asked to do.
pub struct Submission {
    pub tenant: TenantId,
    pub job_type: JobTypeName,
    pub input: serde_json::Value,
    /// Serialized input size, bytes.
    pub input_size: usize,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Workspace external id; unknown → 422 UNKNOWN_WORKSPACE. Its current owner is the
    /// billing entity the entitlement gate checks.
    pub workspace: Option<String>,
}

/// A job accepted by [`submit_job`].
#[derive(Debug)]
pub struct AcceptedJob {
    pub job: JobRow,
    /// False: the same request was already accepted under this idempotency key (this is
    /// that job).
    pub created: bool,
    /// Soft quota limits the submission passes (`tollgate-quota-warning` headers).
    pub warnings: Vec<QuotaWarning>,
}

/// Accepts a job: checks the catalog and the size cap, resolves the workspace, passes the
/// entitlement gate (issue 4, "Entitlements at intake": from memory, no database round trip),
/// then inserts the job and its execute message in one transaction.
/// Errors: unknown type (422), input over the type's cap (413), unknown workspace (422), an
/// entitlement refusal (402/403/422, nothing written; a repeat of an already accepted job
/// gets that job instead), the key reused with another request (409), database unavailable
/// (503).
pub async fn submit_job(state: &AppState, submission: Submission) -> Result<AcceptedJob, ApiError> {
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
    let workspace =
        crate::accounts::named_workspace(state, tenant_uuid, submission.workspace.as_deref())
            .await?;
    let gate = state.entitlements.check_job(
        tenant_uuid,
        workspace.as_ref().map(|w| w.account_id),
        &job_type.name,
        job_type.required_feature.as_deref(),
    );
    let hash = request_hash(&submission.job_type, &submission.input);
    let key = submission
        .idempotency_key
        .unwrap_or_else(|| IdempotencyKey::from_request_hash(&hash));
    let gate = match gate {
        Ok(gate) => gate,
        Err(refusal) => return repeat_or_refuse(state, tenant_uuid, &key, &hash, refusal).await,
    };

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
        workspace_id: workspace.map(|w| w.id),
    };
    let (job, created) = match state.inserts.submit((job, message)).await? {
        InsertOutcome::Created(row) => {
            state.relay_wake.notify_one();
            (row, true)
        }
        InsertOutcome::Existing(row) if row.request_hash == hash => (row, false),
        InsertOutcome::Existing(row) => {
            return Err(ApiError::IdempotencyConflict {
                job_id: JobId::from_uuid(row.id).to_string(),
            })
        }
    };
    Ok(AcceptedJob {
        job,
        created,
        warnings: gate.commit(None),
    })
}

/// The answer to a submission the gate refused: the job already accepted under the same
/// idempotency key if there is one (a repeat gets its first answer, SPEC "Jobs"), else the
/// refusal. The lookup is the only database read of the refusal path; when it fails the
/// refusal stands.
async fn repeat_or_refuse(
    state: &AppState,
    tenant: Uuid,
    key: &IdempotencyKey,
    hash: &[u8],
    refusal: GateRefusal,
) -> Result<AcceptedJob, ApiError> {
    if refusal == GateRefusal::Unavailable {
        return Err(refusal.into());
    }
    let existing = async {
        let mut conn = tollgate_storage::pool::get(&state.pool).await?;
        tollgate_storage::entitlements::job_by_idempotency_key(&mut conn, tenant, key.as_str())
            .await
    }
    .await;
    match existing {
        Ok(Some(row)) if row.request_hash == hash => Ok(AcceptedJob {
            job: row,
            created: false,
            warnings: Vec::new(),
        }),
        Ok(Some(row)) => Err(ApiError::IdempotencyConflict {
            job_id: JobId::from_uuid(row.id).to_string(),
        }),
        Ok(None) => Err(refusal.into()),
        Err(error) => {
            tracing::warn!(%error, "could not look for an earlier job under the idempotency key");
            Err(refusal.into())
        }
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
        Ok(accepted) if accepted.created => "created",
        Ok(_) => "repeat",
        Err(_) => "rejected",
    };
    state.submitted.with_label_values(&[outcome]).inc();
    let accepted = result?;
    let status = if accepted.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut response = HttpResponse::build(status);
    for warning in &accepted.warnings {
        response.append_header((QUOTA_WARNING_HEADER, warning.to_string()));
    }
    Ok(response.json(JobResponse::from_row(accepted.job, false)))
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
