//! `/v1/events`: usage-event ingestion, one event or a batch (SPEC "Usage metering and the
//! ledger"). Each event is validated and measured on its own — one bad event never sinks the
//! others — then the batch is written to the ledger in one transaction, deduplicated on
//! (tenant, event id) with no time window (see `tollgate_storage::events`).
//!
//! Answers:
//! * `POST /v1/events` (one event): 202 `{id, status: "accepted"}`, 200 `{…"duplicate"}`, or
//!   422 with the event's rejection code (UNKNOWN_METRIC, INVALID_VALUE, …).
//! * `POST /v1/events/batch` `{events: [...]}` (at most `events.max_batch`): 200 with
//!   counts and one result per event, in order: `accepted`, `duplicate`, or `rejected` with
//!   `{code, message}`.
//! * 503 when the database is unavailable: nothing of the request was written; retry it
//!   whole (accepted events then come back as duplicates).

use std::collections::HashSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tollgate_domain::usage::{EventLimits, EventRejection, UsageEvent};
use tollgate_domain::TenantId;
use tollgate_storage::events::{EventWrite, PendingEvent};

use crate::error::{parse_json, ApiError};
use crate::jobs::tenant;
use crate::AppState;

/// Mounts the event routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/events", web::post().to(ingest_one))
        .route("/v1/events/batch", web::post().to(ingest_batch));
}

/// One event's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Accepted,
    Duplicate,
    Rejected,
}

/// One event's answer in a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventResult {
    /// Position in the request's `events` array.
    pub index: usize,
    /// The client's event id, when the event had one.
    pub id: Option<String>,
    pub status: EventStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<EventRejection>,
}

/// `POST /v1/events/batch` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResponse {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub results: Vec<EventResult>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    events: Vec<serde_json::Value>,
}

/// Validates, measures and writes `events` for `tenant`; one result per event, in order.
/// Errors: database unavailable (503; nothing written).
pub async fn ingest(
    state: &AppState,
    tenant: TenantId,
    events: &[serde_json::Value],
) -> Result<Vec<EventResult>, ApiError> {
    let now = Utc::now();
    let limits = EventLimits {
        max_future: chrono::Duration::seconds(state.events.max_future_secs),
        max_properties_bytes: state.events.max_properties_bytes,
    };
    let mut results: Vec<EventResult> = Vec::with_capacity(events.len());
    let mut pending: Vec<PendingEvent> = Vec::with_capacity(events.len());
    let mut pending_index: Vec<usize> = Vec::with_capacity(events.len());
    let mut seen: HashSet<String> = HashSet::with_capacity(events.len());
    for (index, raw) in events.iter().enumerate() {
        let id = raw.get("id").and_then(|v| v.as_str()).map(str::to_owned);
        let measured = measure(state, tenant, raw, now, &limits).await?;
        let status = match measured {
            Err(rejection) => EventResult {
                index,
                id,
                status: EventStatus::Rejected,
                error: Some(rejection),
            },
            Ok(event) if !seen.insert(event.event_id.clone()) => EventResult {
                index,
                id,
                status: EventStatus::Duplicate,
                error: None,
            },
            Ok(event) => {
                pending.push(event);
                pending_index.push(index);
                EventResult {
                    index,
                    id,
                    status: EventStatus::Accepted,
                    error: None,
                }
            }
        };
        results.push(status);
    }
    if !pending.is_empty() {
        let writes = state.event_writes.submit(pending).await?;
        for (index, write) in pending_index.into_iter().zip(writes) {
            let result = &mut results[index];
            match write {
                EventWrite::Accepted => {}
                EventWrite::Duplicate => result.status = EventStatus::Duplicate,
                EventWrite::Refused(rejection) => {
                    result.status = EventStatus::Rejected;
                    result.error = Some(rejection);
                }
            }
        }
    }
    for r in &results {
        let outcome = match r.status {
            EventStatus::Accepted => "accepted",
            EventStatus::Duplicate => "duplicate",
            EventStatus::Rejected => "rejected",
        };
        state.events_ingested.with_label_values(&[outcome]).inc();
    }
    Ok(results)
}

/// Parses and measures one event against the tenant's metric catalog. The outer error is
/// infrastructure (catalog unreadable); the inner one the event's rejection.
async fn measure(
    state: &AppState,
    tenant: TenantId,
    raw: &serde_json::Value,
    now: chrono::DateTime<Utc>,
    limits: &EventLimits,
) -> Result<Result<PendingEvent, EventRejection>, ApiError> {
    let event = match UsageEvent::parse(raw, now, limits) {
        Ok(event) => event,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let Some(metric) = state
        .metrics
        .metric(&state.pool, tenant.as_uuid(), &event.metric)
        .await?
    else {
        return Ok(Err(EventRejection::new(
            "UNKNOWN_METRIC",
            format!("metric `{}` is not in the catalog", event.metric),
        )));
    };
    let measure = match metric.measure(&event.properties) {
        Ok(m) => m,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let mut context = serde_json::json!({ "properties": event.properties });
    if let Some(op) = &measure.operation {
        context["operation"] = serde_json::json!(op);
        context["weight"] = serde_json::json!(measure.weight);
    }
    Ok(Ok(PendingEvent {
        tenant_id: tenant.as_uuid(),
        event_id: event.id,
        metric: event.metric,
        raw_units: measure.raw_units,
        weighted_units: measure.weighted_units,
        dimension: measure.dimension,
        subject: event.subject,
        occurred_at: event.timestamp,
        context,
    }))
}

async fn ingest_one(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let event: serde_json::Value = parse_json(&body)?;
    let mut results = ingest(&state, tenant, std::slice::from_ref(&event)).await?;
    let result = results
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no result for the event")))?;
    match result.status {
        EventStatus::Rejected => {
            Err(ApiError::Event(result.error.unwrap_or_else(|| {
                EventRejection::new("INVALID_EVENT", "the event was rejected")
            })))
        }
        EventStatus::Accepted => Ok(HttpResponse::build(StatusCode::ACCEPTED).json(result)),
        EventStatus::Duplicate => Ok(HttpResponse::Ok().json(result)),
    }
}

async fn ingest_batch(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let batch: BatchRequest = parse_json(&body)?;
    if batch.events.len() > state.events.max_batch {
        return Err(ApiError::BatchTooLarge {
            count: batch.events.len(),
            limit: state.events.max_batch,
        });
    }
    let results = ingest(&state, tenant, &batch.events).await?;
    let count = |s: EventStatus| results.iter().filter(|r| r.status == s).count();
    Ok(HttpResponse::Ok().json(BatchResponse {
        accepted: count(EventStatus::Accepted),
        duplicates: count(EventStatus::Duplicate),
        rejected: count(EventStatus::Rejected),
        results,
    }))
}
