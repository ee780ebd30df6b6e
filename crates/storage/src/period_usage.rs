//! Usage per billing period for rating (issue 4, "Billing runs"): the ledger aggregated in SQL
//! per (subscription period, metric), many periods per statement, with each metric's
//! aggregation. Quantities are weighted units (the billable quantity), as decimal strings.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tollgate_domain::usage::Aggregation;
use uuid::Uuid;

use crate::StorageError;

/// One billing entity's period to aggregate: `[period_start, period_end)`. `key` is the
/// caller's index for matching results.
#[derive(Debug, Clone)]
pub struct UsageWindow {
    pub key: i32,
    pub account_id: Uuid,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

/// A metric's aggregated quantity in one window.
#[derive(Debug, Clone, QueryableByName)]
pub struct WindowUsage {
    #[diesel(sql_type = Int4)]
    pub key: i32,
    #[diesel(sql_type = Text)]
    pub metric: String,
    /// The aggregated weighted units, a decimal string (integral except `weighted_sum`).
    #[diesel(sql_type = Nullable<Text>)]
    pub quantity: Option<String>,
}

/// Windows as parallel arrays for `unnest`: keys, accounts, starts, ends.
type WindowColumns = (Vec<i32>, Vec<Uuid>, Vec<DateTime<Utc>>, Vec<DateTime<Utc>>);

fn columns(windows: &[UsageWindow]) -> WindowColumns {
    (
        windows.iter().map(|w| w.key).collect(),
        windows.iter().map(|w| w.account_id).collect(),
        windows.iter().map(|w| w.period_start).collect(),
        windows.iter().map(|w| w.period_end).collect(),
    )
}

const WINDOWS: &str = "unnest($1::int4[], $2::uuid[], $3::timestamptz[], $4::timestamptz[]) \
    AS w (key, account_id, ps, pe)";
const JOIN: &str = "JOIN ledger_entries e ON e.account_id = w.account_id AND e.tenant_id = $5 \
    AND e.occurred_at >= w.ps AND e.occurred_at < w.pe";
const LIVE: &str = "e.reverses_id IS NULL \
    AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_id = e.id)";

/// Sums of weighted units per window and metric, for every metric with entries (the `count`
/// and `sum` aggregations and the built-in `job.*` / `gateway.*` metrics). One statement.
pub async fn sums(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    windows: &[UsageWindow],
) -> Result<Vec<WindowUsage>, StorageError> {
    if windows.is_empty() {
        return Ok(Vec::new());
    }
    let (keys, accounts, starts, ends) = columns(windows);
    let sql = format!(
        "SELECT w.key, e.metric, SUM(e.weighted_units)::text AS quantity \
         FROM {WINDOWS} {JOIN} GROUP BY w.key, e.metric"
    );
    Ok(diesel::sql_query(sql)
        .bind::<Array<Int4>, _>(keys)
        .bind::<Array<SqlUuid>, _>(accounts)
        .bind::<Array<Timestamptz>, _>(starts)
        .bind::<Array<Timestamptz>, _>(ends)
        .bind::<SqlUuid, _>(tenant_id)
        .load(conn)
        .await?)
}

/// One metric aggregated with `aggregation` per window (for `max`, `latest`, `unique_count`
/// and `weighted_sum`; `count` and `sum` are [`sums`]). `weighted_sum` is time-weighted: the
/// level built from ±deltas (starting from everything before the window), integrated over the
/// window and divided by its length, to 6 decimal places, as the usage API computes it.
pub async fn aggregate(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    metric: &str,
    aggregation: Aggregation,
    windows: &[UsageWindow],
) -> Result<Vec<WindowUsage>, StorageError> {
    if windows.is_empty() {
        return Ok(Vec::new());
    }
    let (keys, accounts, starts, ends) = columns(windows);
    let sql = match aggregation {
        Aggregation::Count | Aggregation::Sum => format!(
            "SELECT w.key, e.metric, SUM(e.weighted_units)::text AS quantity \
             FROM {WINDOWS} {JOIN} AND e.metric = $6 GROUP BY w.key, e.metric"
        ),
        Aggregation::Max => format!(
            "SELECT w.key, e.metric, MAX(e.weighted_units)::text AS quantity \
             FROM {WINDOWS} {JOIN} AND e.metric = $6 AND {LIVE} GROUP BY w.key, e.metric"
        ),
        Aggregation::Latest => format!(
            "SELECT w.key, e.metric, \
                 ((array_agg(e.weighted_units ORDER BY e.occurred_at DESC, e.id DESC))[1])::text AS quantity \
             FROM {WINDOWS} {JOIN} AND e.metric = $6 AND {LIVE} GROUP BY w.key, e.metric"
        ),
        Aggregation::UniqueCount => format!(
            "SELECT key, metric, (COUNT(*) FILTER (WHERE net > 0))::text AS quantity \
             FROM (SELECT w.key, e.metric, e.dimension, SUM(e.raw_units) AS net \
                   FROM {WINDOWS} {JOIN} AND e.metric = $6 GROUP BY 1, 2, 3) d \
             GROUP BY key, metric"
        ),
        // Level before the window plus the deltas inside it, each held until the next delta
        // (or the window's end); integral / window length.
        Aggregation::WeightedSum => format!(
            "SELECT w.key, $6::text AS metric, \
                 round((COALESCE(( \
                     SELECT SUM(b.weighted_units) FROM ledger_entries b \
                     WHERE b.account_id = w.account_id AND b.tenant_id = $5 AND b.metric = $6 \
                       AND b.occurred_at < w.ps), 0) * extract(epoch FROM w.pe - w.ps) \
                  + COALESCE(( \
                     SELECT SUM(e.weighted_units * extract(epoch FROM w.pe - e.occurred_at)) \
                     FROM ledger_entries e \
                     WHERE e.account_id = w.account_id AND e.tenant_id = $5 AND e.metric = $6 \
                       AND e.occurred_at >= w.ps AND e.occurred_at < w.pe), 0)) \
                 / extract(epoch FROM w.pe - w.ps), 6)::text AS quantity \
             FROM {WINDOWS}"
        ),
    };
    Ok(diesel::sql_query(sql)
        .bind::<Array<Int4>, _>(keys)
        .bind::<Array<SqlUuid>, _>(accounts)
        .bind::<Array<Timestamptz>, _>(starts)
        .bind::<Array<Timestamptz>, _>(ends)
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(metric)
        .load(conn)
        .await?)
}

/// A due subscription's summed usage of one metric in its current period.
#[derive(Debug, Clone, QueryableByName)]
pub struct DueSum {
    #[diesel(sql_type = SqlUuid)]
    pub subscription_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub metric: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub quantity: Option<String>,
}

/// Sums of weighted units per metric for the current period of every subscription (of one
/// tenant, or all) that is due at `as_of` (period ended, not canceled, not trialing): the
/// billing run's bulk aggregation, one statement for all of them. Runs in its own transaction
/// with nested loops disabled: the planner underestimates the range join and would probe the
/// ledger index once per subscription (measured 4× slower at 10,000 × 1,000 entries than one
/// parallel hash join over the ledger).
pub async fn due_sums(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    as_of: DateTime<Utc>,
) -> Result<Vec<DueSum>, StorageError> {
    use diesel_async::AsyncConnection;
    conn.transaction(async |conn| {
        diesel::sql_query("SET LOCAL enable_nestloop = off")
            .execute(conn)
            .await?;
        Ok(diesel::sql_query(
            "SELECT s.id AS subscription_id, s.current_period_start AS period_start, e.metric, \
                    SUM(e.weighted_units)::text AS quantity \
             FROM subscriptions s \
             JOIN ledger_entries e ON e.account_id = s.account_id AND e.tenant_id = s.tenant_id \
              AND e.occurred_at >= s.current_period_start AND e.occurred_at < s.current_period_end \
             WHERE s.status NOT IN ('canceled', 'trialing') AND s.current_period_end <= $2 \
               AND ($1::uuid IS NULL OR s.tenant_id = $1) \
             GROUP BY s.id, s.current_period_start, e.metric",
        )
        .bind::<Nullable<SqlUuid>, _>(tenant_id)
        .bind::<Timestamptz, _>(as_of)
        .load(conn)
        .await?)
    })
    .await
}
