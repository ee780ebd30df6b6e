//! `/v1/usage`: usage read back from the ledger (SPEC "Usage metering and the ledger").
//!
//! * `GET /v1/usage` — aggregated per metric, period, billing entity and workspace with each
//!   metric's own aggregation (computed in SQL, `tollgate_storage::usage`). Query:
//!   `metric` (default: every metric with entries), `from`/`to` (RFC 3339, `[from, to)`,
//!   default: the current UTC month up to now), `period` = hour|day|month|total (default
//!   day), `tz` (IANA name; default the tenant's zone, UTC unless set), `account`,
//!   `workspace` (external ids), `format=csv` (or `Accept: text/csv`).
//! * `GET /v1/usage/events` — raw ledger entries, newest first, cursor-paginated: `metric`,
//!   `from`, `to`, `account`, `workspace`, `source` (job|event|traffic|storage|reversal),
//!   `event_id`, `cursor`, `limit` (≤ 1,000; ≤ 100,000 for CSV, whose next cursor is in the
//!   `x-next-cursor` header).

use std::collections::HashMap;

use actix_web::http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tollgate_domain::usage::builtin_aggregation;
use tollgate_domain::{AccountId, WorkspaceId};
use tollgate_storage::models::LedgerEntryRow;
use tollgate_storage::usage::{self, EntryFilter, Granularity, UsageQuery};
use tollgate_storage::{accounts, AsyncPgConnection};
use uuid::Uuid;

use crate::error::{AccountError, ApiError};
use crate::jobs::tenant;
use crate::AppState;

/// Mounts the usage routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/usage", web::get().to(aggregate))
        .route("/v1/usage/events", web::get().to(entries));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageParams {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    period: Option<String>,
    tz: Option<String>,
    account: Option<String>,
    workspace: Option<String>,
    format: Option<String>,
}

/// One aggregated row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageRow {
    pub metric: String,
    pub aggregation: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Billing entity (`acc_…`) and its external id; null for tenant-level usage.
    pub account_id: Option<String>,
    pub account: Option<String>,
    pub workspace_id: Option<String>,
    pub workspace: Option<String>,
    /// The aggregation over weighted units: the billable quantity, in the metric's unit.
    pub value: serde_json::Value,
    /// The same aggregation over raw (unweighted) units.
    pub raw_value: serde_json::Value,
    /// Ledger entries in the bucket, reversals included.
    pub entries: i64,
}

/// `GET /v1/usage` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageResponse {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub period: String,
    pub time_zone: String,
    pub data: Vec<UsageRow>,
}

fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::Invalid(format!("`{field}` is not an RFC 3339 timestamp: {e}")))
}

fn wants_csv(req: &HttpRequest, format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "unknown format `{other}` (json, csv)"
            )))
        }
        None => {}
    }
    Ok(req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv")))
}

/// Resolves `account` / `workspace` external ids. Errors: 404 for an unknown one.
async fn resolve_subject(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    account: Option<&str>,
    workspace: Option<&str>,
) -> Result<(Option<Uuid>, Option<Uuid>), ApiError> {
    let account_id = match account {
        Some(ext) => Some(
            accounts::find_account(conn, tenant, ext)
                .await?
                .ok_or(ApiError::Account(AccountError::NotFound))?
                .id,
        ),
        None => None,
    };
    let workspace_id = match workspace {
        Some(ext) => Some(
            accounts::find_workspace(conn, tenant, ext)
                .await?
                .ok_or(ApiError::Account(AccountError::WorkspaceNotFound))?
                .id,
        ),
        None => None,
    };
    Ok((account_id, workspace_id))
}

/// External ids of the accounts and workspaces named in a result.
async fn external_ids(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    account_ids: Vec<Uuid>,
    workspace_ids: Vec<Uuid>,
) -> Result<(HashMap<Uuid, String>, HashMap<Uuid, String>), ApiError> {
    let accounts_by_id = accounts::accounts_by_id(conn, tenant, &account_ids)
        .await?
        .into_iter()
        .map(|a| (a.id, a.external_id))
        .collect();
    let workspaces_by_id = accounts::workspaces_by_id(conn, tenant, &workspace_ids)
        .await?
        .into_iter()
        .map(|w| (w.id, w.external_id))
        .collect();
    Ok((accounts_by_id, workspaces_by_id))
}

/// A decimal string from SQL as a JSON number (integers exactly; `weighted_sum` averages as
/// floating point), or null.
fn number(value: Option<String>) -> serde_json::Value {
    match value {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str::<serde_json::Number>(&text)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::String(text)),
    }
}

/// Longest range one request may aggregate over, days (hourly buckets: 400 days).
const MAX_RANGE_DAYS: i64 = 3 * 366;

async fn aggregate(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<UsageParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?.as_uuid();
    let params = params.into_inner();
    let csv = wants_csv(&req, params.format.as_deref())?;
    let granularity: Granularity = params
        .period
        .as_deref()
        .unwrap_or("day")
        .parse()
        .map_err(ApiError::Invalid)?;
    let now = Utc::now();
    let to = match &params.to {
        Some(t) => parse_time("to", t)?,
        None => now,
    };
    let from = match &params.from {
        Some(f) => parse_time("from", f)?,
        None => Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .unwrap_or(now),
    };
    if from >= to {
        return Err(ApiError::Invalid("`from` must be before `to`".into()));
    }
    let max_days = if granularity == Granularity::Hour {
        400
    } else {
        MAX_RANGE_DAYS
    };
    if (to - from).num_days() > max_days {
        return Err(ApiError::Invalid(format!(
            "the range is longer than {max_days} days for this period"
        )));
    }

    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let time_zone = match &params.tz {
        Some(tz) => tz.clone(),
        None => tollgate_storage::tenants::find_tenant(&mut conn, tenant)
            .await?
            .map(|t| t.time_zone)
            .unwrap_or_else(|| "UTC".to_owned()),
    };
    if time_zone != "UTC" && !usage::is_time_zone(&mut conn, &time_zone).await? {
        return Err(ApiError::InvalidTimeZone(time_zone));
    }
    let (account_id, workspace_id) = resolve_subject(
        &mut conn,
        tenant,
        params.account.as_deref(),
        params.workspace.as_deref(),
    )
    .await?;

    let metrics = match &params.metric {
        Some(m) => vec![m.clone()],
        None => usage::metrics_in_use(&mut conn, tenant).await?,
    };
    let mut buckets = Vec::new();
    for metric in metrics {
        let aggregation = match builtin_aggregation(&metric) {
            Some(a) => a,
            None => state
                .metrics
                .metric(&state.pool, tenant, &metric)
                .await?
                .map(|m| m.aggregation)
                .ok_or_else(|| ApiError::UnknownMetric(metric.clone()))?,
        };
        let query = UsageQuery {
            tenant_id: tenant,
            metric: metric.clone(),
            aggregation,
            from,
            to,
            granularity,
            time_zone: time_zone.clone(),
            account_id,
            workspace_id,
        };
        for bucket in usage::aggregate(&mut conn, &query).await? {
            buckets.push((metric.clone(), aggregation, bucket));
        }
    }
    let (account_names, workspace_names) = external_ids(
        &mut conn,
        tenant,
        buckets.iter().filter_map(|b| b.2.account_id).collect(),
        buckets.iter().filter_map(|b| b.2.workspace_id).collect(),
    )
    .await?;
    let data: Vec<UsageRow> = buckets
        .into_iter()
        .map(|(metric, aggregation, b)| UsageRow {
            metric,
            aggregation: aggregation.to_string(),
            period_start: b.period_start,
            period_end: b.period_end,
            account_id: b.account_id.map(|id| AccountId::from_uuid(id).to_string()),
            account: b.account_id.and_then(|id| account_names.get(&id).cloned()),
            workspace_id: b
                .workspace_id
                .map(|id| WorkspaceId::from_uuid(id).to_string()),
            workspace: b
                .workspace_id
                .and_then(|id| workspace_names.get(&id).cloned()),
            value: number(b.value),
            raw_value: number(b.raw_value),
            entries: b.entries,
        })
        .collect();
    if csv {
        return csv_response("usage.csv", usage_csv(&data)?, None);
    }
    let period = params.period.unwrap_or_else(|| "day".to_owned());
    Ok(HttpResponse::Ok().json(UsageResponse {
        from,
        to,
        period,
        time_zone,
        data,
    }))
}

fn csv_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes a header and rows as CSV (quoting per RFC 4180, by the `csv` crate).
fn to_csv<const N: usize>(
    header: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let internal = |e: csv::Error| ApiError::Internal(e.into());
    w.write_record(header).map_err(internal)?;
    for row in rows {
        w.write_record(row).map_err(internal)?;
    }
    w.into_inner()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("csv: {e}")))
}

fn usage_csv(rows: &[UsageRow]) -> Result<Vec<u8>, ApiError> {
    to_csv(
        [
            "metric",
            "aggregation",
            "period_start",
            "period_end",
            "account_id",
            "account",
            "workspace_id",
            "workspace",
            "value",
            "raw_value",
            "entries",
        ],
        rows.iter().map(|r| {
            [
                r.metric.clone(),
                r.aggregation.clone(),
                r.period_start.to_rfc3339(),
                r.period_end.to_rfc3339(),
                r.account_id.clone().unwrap_or_default(),
                r.account.clone().unwrap_or_default(),
                r.workspace_id.clone().unwrap_or_default(),
                r.workspace.clone().unwrap_or_default(),
                csv_text(&r.value),
                csv_text(&r.raw_value),
                r.entries.to_string(),
            ]
        }),
    )
}

fn csv_response(
    filename: &str,
    body: Vec<u8>,
    next_cursor: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ));
    if let Some(cursor) = next_cursor {
        response.insert_header(("x-next-cursor", cursor));
    }
    Ok(response.body(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryParams {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    account: Option<String>,
    workspace: Option<String>,
    source: Option<String>,
    event_id: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
    format: Option<String>,
}

/// A raw ledger entry as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryResponse {
    /// The ledger's sequence number (what `tollgatectl ledger reverse` takes).
    pub id: i64,
    pub metric: String,
    /// job, event, traffic, storage or reversal.
    pub source: String,
    pub source_id: String,
    pub idempotency_key: String,
    pub raw_units: i64,
    pub weighted_units: i64,
    /// Job cost (units × type weight); 0 for other sources.
    pub cost: i64,
    pub account_id: Option<String>,
    pub workspace_id: Option<String>,
    pub dimension: Option<String>,
    /// For a reversal: the entry it cancels.
    pub reverses_id: Option<i64>,
    pub context: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

impl EntryResponse {
    fn from_row(row: LedgerEntryRow) -> Self {
        Self {
            id: row.id,
            metric: row.metric,
            source: row.source_kind,
            source_id: row.source_id,
            idempotency_key: row.idempotency_key,
            raw_units: row.raw_units,
            weighted_units: row.weighted_units,
            cost: row.cost,
            account_id: row
                .account_id
                .map(|id| AccountId::from_uuid(id).to_string()),
            workspace_id: row
                .workspace_id
                .map(|id| WorkspaceId::from_uuid(id).to_string()),
            dimension: row.dimension,
            reverses_id: row.reverses_id,
            context: row.context,
            occurred_at: row.occurred_at,
            recorded_at: row.recorded_at,
        }
    }
}

/// A page of entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryPage {
    pub data: Vec<EntryResponse>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

async fn entries(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<EntryParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?.as_uuid();
    let params = params.into_inner();
    let csv = wants_csv(&req, params.format.as_deref())?;
    let max = if csv { 100_000 } else { 1_000 };
    let limit = params.limit.unwrap_or(if csv { max } else { 100 });
    if !(1..=max).contains(&limit) {
        return Err(ApiError::Invalid(format!("`limit` must be 1-{max}")));
    }
    let before_id = match &params.cursor {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::Invalid("`cursor` is not a cursor from this API".into()))?,
        ),
        None => None,
    };
    if let Some(source) = &params.source {
        if !["job", "event", "traffic", "storage", "reversal"].contains(&source.as_str()) {
            return Err(ApiError::Invalid(format!(
                "unknown source `{source}` (job, event, traffic, storage, reversal)"
            )));
        }
    }
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let (account_id, workspace_id) = resolve_subject(
        &mut conn,
        tenant,
        params.account.as_deref(),
        params.workspace.as_deref(),
    )
    .await?;
    let filter = EntryFilter {
        metric: params.metric,
        from: params
            .from
            .as_deref()
            .map(|f| parse_time("from", f))
            .transpose()?,
        to: params
            .to
            .as_deref()
            .map(|t| parse_time("to", t))
            .transpose()?,
        account_id,
        workspace_id,
        source_kind: params.source,
        event_id: params.event_id,
        before_id,
    };
    // One extra row tells whether another page exists.
    let mut rows = usage::entries(&mut conn, tenant, &filter, limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let data: Vec<EntryResponse> = rows.into_iter().map(EntryResponse::from_row).collect();
    if csv {
        return csv_response("usage-events.csv", entries_csv(&data)?, next_cursor);
    }
    Ok(HttpResponse::Ok().json(EntryPage { data, next_cursor }))
}

fn entries_csv(rows: &[EntryResponse]) -> Result<Vec<u8>, ApiError> {
    to_csv(
        [
            "id",
            "occurred_at",
            "recorded_at",
            "metric",
            "source",
            "source_id",
            "raw_units",
            "weighted_units",
            "cost",
            "account_id",
            "workspace_id",
            "dimension",
            "reverses_id",
            "context",
        ],
        rows.iter().map(|r| {
            [
                r.id.to_string(),
                r.occurred_at.to_rfc3339(),
                r.recorded_at.to_rfc3339(),
                r.metric.clone(),
                r.source.clone(),
                r.source_id.clone(),
                r.raw_units.to_string(),
                r.weighted_units.to_string(),
                r.cost.to_string(),
                r.account_id.clone().unwrap_or_default(),
                r.workspace_id.clone().unwrap_or_default(),
                r.dimension.clone().unwrap_or_default(),
                r.reverses_id.map(|id| id.to_string()).unwrap_or_default(),
                r.context.to_string(),
            ]
        }),
    )
}
