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
//! * 503 when the database is unavailable, or the entitlement projection is not loaded yet
//!   (ENTITLEMENTS_UNAVAILABLE): nothing of the request was written; retry it whole
//!   (accepted events then come back as duplicates).
//!
//! Entitlements (issue 4, "Entitlements at intake"): for a tenant that enforces billing each
//! event passes the gate of `crate::entitlements` after it is measured, from memory. A refused
//! event gets the gate's code like any other rejection (BILLING_ENTITY_REQUIRED,
//! SUBSCRIPTION_REQUIRED, SUBSCRIPTION_SUSPENDED, QUOTA_EXCEEDED with `details`); the other
//! events of a batch are still written. The single endpoint answers a refusal with its HTTP
//! status (402, 422) and an accepted event past a soft limit with a
//! `tollgate-quota-warning` header; batch results carry the same text in `quota_warnings`.
//! A refused event that the ledger already holds (a retry of an accepted one) is answered
//! `duplicate`.

use std::collections::HashSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tollgate_domain::usage::{EventLimits, EventRejection, UsageEvent};
use tollgate_domain::TenantId;
use tollgate_storage::events::{EventWrite, PendingEvent};

use crate::entitlements::{Gate, GateRefusal, QUOTA_WARNING_HEADER};
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
    /// Facts about an entitlement refusal (QUOTA_EXCEEDED: `{metric, usage, requested,
    /// limit, period_end}`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub details: Option<serde_json::Value>,
    /// Soft quota limits an accepted event passed: `<metric> soft limit exceeded
    /// (<used>/<limit>)`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub quota_warnings: Vec<String>,
    /// The gate's refusal, kept for the single endpoint's HTTP status.
    #[serde(skip)]
    pub(crate) refusal: Option<GateRefusal>,
}

impl EventResult {
    fn new(index: usize, id: Option<String>, status: EventStatus) -> Self {
        Self {
            index,
            id,
            status,
            error: None,
            details: None,
            quota_warnings: Vec::new(),
            refusal: None,
        }
    }

    fn rejected(index: usize, id: Option<String>, rejection: EventRejection) -> Self {
        Self {
            error: Some(rejection),
            ..Self::new(index, id, EventStatus::Rejected)
        }
    }

    fn refused(index: usize, id: Option<String>, refusal: GateRefusal) -> Self {
        Self {
            details: refusal.details(),
            refusal: Some(refusal.clone()),
            ..Self::rejected(
                index,
                id,
                EventRejection::new(refusal.code(), refusal.to_string()),
            )
        }
    }
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

/// Validates, measures, gates and writes `events` for `tenant`; one result per event, in
/// order. Errors: database unavailable or entitlements not loaded yet (503; nothing
/// written).
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
    let mut gates: Vec<Gate> = Vec::with_capacity(events.len());
    let mut refused: Vec<(usize, String)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::with_capacity(events.len());
    for (index, raw) in events.iter().enumerate() {
        let id = raw.get("id").and_then(|v| v.as_str()).map(str::to_owned);
        let event = match measure(state, tenant, raw, now, &limits).await? {
            Ok(event) => event,
            Err(rejection) => {
                results.push(EventResult::rejected(index, id, rejection));
                continue;
            }
        };
        // Gated before the in-batch dedupe, so a refused first copy does not turn the next
        // one into a "duplicate" of nothing.
        let gate = match state.entitlements.check_event(
            tenant.as_uuid(),
            &event.subject,
            &event.metric,
            event.weighted_units,
            event.occurred_at,
        ) {
            Ok(gate) => gate,
            // Not a verdict on this event: the whole request is retried, like a database
            // outage (nothing written; the gates taken so far are released on return).
            Err(GateRefusal::Unavailable) => {
                return Err(ApiError::Entitlement(GateRefusal::Unavailable))
            }
            Err(refusal) => {
                refused.push((index, event.event_id));
                results.push(EventResult::refused(index, id, refusal));
                continue;
            }
        };
        if !seen.insert(event.event_id.clone()) {
            results.push(EventResult::new(index, id, EventStatus::Duplicate));
            continue;
        }
        let mut result = EventResult::new(index, id, EventStatus::Accepted);
        result.quota_warnings = gate.warnings().iter().map(ToString::to_string).collect();
        results.push(result);
        pending.push(event);
        pending_index.push(index);
        gates.push(gate);
    }
    answer_repeats(state, tenant, &refused, &mut results).await;
    if !pending.is_empty() {
        let writes = state.event_writes.submit(pending).await?;
        for ((index, write), gate) in pending_index.into_iter().zip(writes).zip(gates) {
            let result = &mut results[index];
            match write {
                EventWrite::Accepted { transaction } => {
                    let _ = gate.commit(Some(transaction));
                }
                EventWrite::Duplicate => {
                    result.status = EventStatus::Duplicate;
                    result.quota_warnings.clear();
                }
                EventWrite::Refused(rejection) => {
                    result.status = EventStatus::Rejected;
                    result.error = Some(rejection);
                    result.quota_warnings.clear();
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

/// Events the gate refused that the ledger already holds were accepted before: they are
/// duplicates, not refusals. One query, only when the gate refused something; if it fails
/// the refusals stand.
async fn answer_repeats(
    state: &AppState,
    tenant: TenantId,
    refused: &[(usize, String)],
    results: &mut [EventResult],
) {
    if refused.is_empty() {
        return;
    }
    let ids: Vec<String> = refused.iter().map(|(_, id)| id.clone()).collect();
    let recorded = async {
        let mut conn = tollgate_storage::pool::get(&state.pool).await?;
        tollgate_storage::entitlements::recorded_event_ids(&mut conn, tenant.as_uuid(), &ids).await
    }
    .await;
    let recorded: HashSet<String> = match recorded {
        Ok(found) => found.into_iter().collect(),
        Err(error) => {
            tracing::warn!(%error, "could not look up refused events in the ledger");
            return;
        }
    };
    for (index, id) in refused {
        if recorded.contains(id) {
            let result = &mut results[*index];
            *result = EventResult::new(result.index, result.id.take(), EventStatus::Duplicate);
        }
    }
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
        EventStatus::Rejected => match result.refusal {
            Some(refusal) => Err(ApiError::Entitlement(refusal)),
            None => Err(ApiError::Event(result.error.unwrap_or_else(|| {
                EventRejection::new("INVALID_EVENT", "the event was rejected")
            }))),
        },
        EventStatus::Accepted => {
            let mut response = HttpResponse::build(StatusCode::ACCEPTED);
            for warning in &result.quota_warnings {
                response.append_header((QUOTA_WARNING_HEADER, warning.as_str()));
            }
            Ok(response.json(result))
        }
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
