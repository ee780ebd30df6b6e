//! The usage API's queries: ledger entries aggregated per metric, period, billing entity and
//! workspace with the metric's own aggregation, computed in SQL; and raw entries, paginated.
//!
//! Reversals (see [`crate::ledger::reverse`]) carry negated units at the original entry's
//! timestamp, entity and workspace, so `count`, `sum`, `unique_count` and `weighted_sum`
//! cancel arithmetically; `max` and `latest` skip reversed entries and reversals.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tollgate_domain::usage::Aggregation;
use uuid::Uuid;

use crate::models::LedgerEntryRow;
use crate::schema::ledger_entries;
use crate::StorageError;

/// Period length of a usage bucket. Hours, days and months start at the boundary in the
/// request's time zone (IANA name; DST-aware through PostgreSQL's `date_trunc(…, zone)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Month,
    /// One bucket: the whole `[from, to)` range.
    Total,
}

impl Granularity {
    fn unit(self) -> Option<&'static str> {
        match self {
            Self::Hour => Some("hour"),
            Self::Day => Some("day"),
            Self::Month => Some("month"),
            Self::Total => None,
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            "total" => Ok(Self::Total),
            other => Err(format!(
                "unknown period `{other}` (hour, day, month, total)"
            )),
        }
    }
}

/// What to aggregate: one metric of one tenant over `[from, to)`.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub tenant_id: Uuid,
    pub metric: String,
    pub aggregation: Aggregation,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
    /// IANA time zone name, already checked with [`is_time_zone`].
    pub time_zone: String,
    pub account_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
}

/// One aggregated bucket.
#[derive(Debug, Clone, QueryableByName)]
pub struct UsageBucket {
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub period_end: DateTime<Utc>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub account_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub workspace_id: Option<Uuid>,
    /// The aggregation over raw units, as a decimal string (integral except for
    /// `weighted_sum`, rounded to 6 places).
    #[diesel(sql_type = Nullable<Text>)]
    pub raw_value: Option<String>,
    /// The aggregation over weighted units: the billable quantity.
    #[diesel(sql_type = Nullable<Text>)]
    pub value: Option<String>,
    /// Ledger entries that went into the bucket (reversals included).
    #[diesel(sql_type = Int8)]
    pub entries: i64,
}

/// Whether PostgreSQL knows `name` as a time zone.
pub async fn is_time_zone(conn: &mut AsyncPgConnection, name: &str) -> Result<bool, StorageError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let row: Found = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1) AS found",
    )
    .bind::<Text, _>(name)
    .get_result(conn)
    .await?;
    Ok(row.found)
}

/// The metrics a tenant has ledger entries for (a loose index scan over
/// `(tenant_id, metric, occurred_at)`: one probe per distinct metric).
pub async fn metrics_in_use(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Vec<String>, StorageError> {
    #[derive(QueryableByName)]
    struct M {
        #[diesel(sql_type = Text)]
        metric: String,
    }
    let rows: Vec<M> = diesel::sql_query(
        "WITH RECURSIVE m AS ( \
             SELECT min(metric) AS metric FROM ledger_entries WHERE tenant_id = $1 \
             UNION ALL \
             SELECT (SELECT min(metric) FROM ledger_entries WHERE tenant_id = $1 AND metric > m.metric) \
             FROM m WHERE m.metric IS NOT NULL) \
         SELECT metric FROM m WHERE metric IS NOT NULL",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|m| m.metric).collect())
}

const FILTER: &str = "e.tenant_id = $1 AND e.metric = $2 \
    AND ($5::uuid IS NULL OR e.account_id = $5) AND ($6::uuid IS NULL OR e.workspace_id = $6)";
const IN_RANGE: &str = "e.occurred_at >= $3 AND e.occurred_at < $4";
/// Excludes reversals and the entries they reversed (for max and latest).
const LIVE: &str = "e.reverses_id IS NULL \
    AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_id = e.id)";

/// Aggregates one metric. Buckets with no entries are absent, except for `weighted_sum`,
/// whose level persists: every bucket in which a non-zero level is held appears.
pub async fn aggregate(
    conn: &mut AsyncPgConnection,
    q: &UsageQuery,
) -> Result<Vec<UsageBucket>, StorageError> {
    let bucket = match q.granularity.unit() {
        Some(unit) => format!("date_trunc('{unit}', e.occurred_at, $7)"),
        None => "$3::timestamptz".to_owned(),
    };
    let end = match q.granularity.unit() {
        Some(unit) => {
            format!("((q.period_start AT TIME ZONE $7) + interval '1 {unit}') AT TIME ZONE $7")
        }
        None => "$4::timestamptz".to_owned(),
    };
    let inner = match q.aggregation {
        Aggregation::Count | Aggregation::Sum => format!(
            "SELECT {bucket} AS period_start, e.account_id, e.workspace_id, \
                 SUM(e.raw_units)::text AS raw_value, SUM(e.weighted_units)::text AS value, \
                 COUNT(*) AS entries \
             FROM ledger_entries e WHERE {FILTER} AND {IN_RANGE} GROUP BY 1, 2, 3"
        ),
        Aggregation::Max => format!(
            "SELECT {bucket} AS period_start, e.account_id, e.workspace_id, \
                 MAX(e.raw_units)::text AS raw_value, MAX(e.weighted_units)::text AS value, \
                 COUNT(*) AS entries \
             FROM ledger_entries e WHERE {FILTER} AND {IN_RANGE} AND {LIVE} GROUP BY 1, 2, 3"
        ),
        Aggregation::Latest => format!(
            "SELECT {bucket} AS period_start, e.account_id, e.workspace_id, \
                 ((array_agg(e.raw_units ORDER BY e.occurred_at DESC, e.id DESC))[1])::text AS raw_value, \
                 ((array_agg(e.weighted_units ORDER BY e.occurred_at DESC, e.id DESC))[1])::text AS value, \
                 COUNT(*) AS entries \
             FROM ledger_entries e WHERE {FILTER} AND {IN_RANGE} AND {LIVE} GROUP BY 1, 2, 3"
        ),
        Aggregation::UniqueCount => format!(
            "SELECT period_start, account_id, workspace_id, \
                 (COUNT(*) FILTER (WHERE net > 0))::text AS raw_value, \
                 (COUNT(*) FILTER (WHERE net > 0))::text AS value, \
                 SUM(n)::int8 AS entries \
             FROM (SELECT {bucket} AS period_start, e.account_id, e.workspace_id, e.dimension, \
                          SUM(e.raw_units) AS net, COUNT(*) AS n \
                   FROM ledger_entries e WHERE {FILTER} AND {IN_RANGE} GROUP BY 1, 2, 3, 4) d \
             GROUP BY 1, 2, 3"
        ),
        Aggregation::WeightedSum => weighted_sum_sql(q.granularity),
    };
    let sql = format!(
        "SELECT q.period_start, {end} AS period_end, q.account_id, q.workspace_id, \
             q.raw_value, q.value, q.entries \
         FROM ({inner}) q ORDER BY q.period_start, q.account_id NULLS FIRST, q.workspace_id NULLS FIRST"
    );
    Ok(diesel::sql_query(sql)
        .bind::<SqlUuid, _>(q.tenant_id)
        .bind::<Text, _>(&q.metric)
        .bind::<Timestamptz, _>(q.from)
        .bind::<Timestamptz, _>(q.to)
        .bind::<Nullable<SqlUuid>, _>(q.account_id)
        .bind::<Nullable<SqlUuid>, _>(q.workspace_id)
        .bind::<Text, _>(&q.time_zone)
        .load(conn)
        .await?)
}

/// Time-weighted level: the level (running sum of deltas, carried in from before `from`) held
/// over each piece of time, Σ(level × seconds) / bucket seconds, where a bucket is its period
/// clipped to `[from, to)`.
fn weighted_sum_sql(granularity: Granularity) -> String {
    let buckets = match granularity.unit() {
        Some(unit) => format!(
            "SELECT ls AT TIME ZONE $7 AS period_start, \
                    GREATEST(ls AT TIME ZONE $7, $3) AS bs, \
                    LEAST((ls + interval '1 {unit}') AT TIME ZONE $7, $4) AS be \
             FROM generate_series(date_trunc('{unit}', $3::timestamptz, $7) AT TIME ZONE $7, \
                                  $4::timestamptz AT TIME ZONE $7, interval '1 {unit}') AS ls \
             WHERE ls AT TIME ZONE $7 < $4"
        ),
        None => {
            "SELECT $3::timestamptz AS period_start, $3::timestamptz AS bs, $4::timestamptz AS be"
                .to_owned()
        }
    };
    format!(
        "WITH pts AS ( \
             SELECT e.account_id, e.workspace_id, $3::timestamptz AS at, \
                    SUM(e.raw_units) AS r, SUM(e.weighted_units) AS w \
             FROM ledger_entries e WHERE {FILTER} AND e.occurred_at < $3 GROUP BY 1, 2 \
             UNION ALL \
             SELECT e.account_id, e.workspace_id, e.occurred_at, e.raw_units, e.weighted_units \
             FROM ledger_entries e WHERE {FILTER} AND {IN_RANGE}), \
         levels AS ( \
             SELECT account_id, workspace_id, at, \
                    SUM(r) OVER run AS lr, SUM(w) OVER run AS lw, \
                    LEAD(at, 1, $4::timestamptz) OVER (PARTITION BY account_id, workspace_id ORDER BY at) AS until \
             FROM pts \
             WINDOW run AS (PARTITION BY account_id, workspace_id ORDER BY at ROWS UNBOUNDED PRECEDING)), \
         buckets AS ({buckets}) \
         SELECT b.period_start, l.account_id, l.workspace_id, \
             trim_scale(round(SUM(l.lr * EXTRACT(EPOCH FROM LEAST(l.until, b.be) - GREATEST(l.at, b.bs))) \
                 / NULLIF(EXTRACT(EPOCH FROM b.be - b.bs), 0), 6))::text AS raw_value, \
             trim_scale(round(SUM(l.lw * EXTRACT(EPOCH FROM LEAST(l.until, b.be) - GREATEST(l.at, b.bs))) \
                 / NULLIF(EXTRACT(EPOCH FROM b.be - b.bs), 0), 6))::text AS value, \
             COUNT(*) AS entries \
         FROM levels l JOIN buckets b ON l.at < b.be AND l.until > b.bs \
         GROUP BY b.period_start, b.bs, b.be, l.account_id, l.workspace_id \
         HAVING SUM(abs(l.lw)) > 0 OR SUM(abs(l.lr)) > 0"
    )
}

/// Filters for raw ledger entries.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub metric: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub account_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub source_kind: Option<String>,
    /// A client event id: the entry of that event.
    pub event_id: Option<String>,
    /// Entries with a smaller id than this (the previous page's last id).
    pub before_id: Option<i64>,
}

/// A page of the tenant's ledger entries, newest (highest id) first.
pub async fn entries(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    filter: &EntryFilter,
    limit: i64,
) -> Result<Vec<LedgerEntryRow>, StorageError> {
    let mut query = ledger_entries::table
        .filter(ledger_entries::tenant_id.eq(tenant_id))
        .select(LedgerEntryRow::as_select())
        .order(ledger_entries::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(metric) = &filter.metric {
        query = query.filter(ledger_entries::metric.eq(metric.clone()));
    }
    if let Some(from) = filter.from {
        query = query.filter(ledger_entries::occurred_at.ge(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(ledger_entries::occurred_at.lt(to));
    }
    if let Some(account) = filter.account_id {
        query = query.filter(ledger_entries::account_id.eq(account));
    }
    if let Some(workspace) = filter.workspace_id {
        query = query.filter(ledger_entries::workspace_id.eq(workspace));
    }
    if let Some(kind) = &filter.source_kind {
        query = query.filter(ledger_entries::source_kind.eq(kind.clone()));
    }
    if let Some(event_id) = &filter.event_id {
        query =
            query.filter(ledger_entries::idempotency_key.eq(crate::events::ledger_key(event_id)));
    }
    if let Some(before) = filter.before_id {
        query = query.filter(ledger_entries::id.lt(before));
    }
    Ok(query.load(conn).await?)
}
