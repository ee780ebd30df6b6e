//! Subscriptions (issue 4, "Subscriptions"): one row per billing entity's subscription, the
//! source of truth for its plan, status and current period, plus the history of every change.
//! The rules (what may change when, proration) live in the billing service; this module reads
//! and writes rows.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::{subscription_changes, subscriptions};
use crate::StorageError;

/// A subscription. Periods are `[current_period_start, current_period_end)`.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(table_name = subscriptions, treat_none_as_null = true)]
pub struct SubscriptionRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub account_id: Uuid,
    pub plan_version_id: Uuid,
    /// `trialing`, `active`, `past_due`, `suspended` or `canceled`.
    pub status: String,
    /// Start of the first paid period; period k starts at anchor + k intervals.
    pub anchor_at: DateTime<Utc>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    /// Paid periods closed so far (coupon durations count these).
    pub period_index: i32,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    /// A plan change scheduled for the end of the current period.
    pub pending_plan_version_id: Option<Uuid>,
    /// After a downgrade, the previous version's entitlements apply until `grace_until`.
    pub grace_plan_version_id: Option<Uuid>,
    pub grace_until: Option<DateTime<Utc>>,
    pub coupon_code: Option<String>,
    /// The `period_index` of the first period the coupon applies to.
    pub coupon_first_period: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a subscription's history. Proration amounts are minor units.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = subscription_changes)]
pub struct SubscriptionChangeRow {
    pub id: i64,
    pub subscription_id: Uuid,
    pub kind: String,
    pub from_plan_version_id: Option<Uuid>,
    pub to_plan_version_id: Option<Uuid>,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub effective_at: DateTime<Utc>,
    pub period_start: Option<DateTime<Utc>>,
    pub proration_credit_minor: Option<i64>,
    pub proration_charge_minor: Option<i64>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A history entry to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = subscription_changes)]
pub struct NewSubscriptionChange {
    pub subscription_id: Uuid,
    pub kind: String,
    pub from_plan_version_id: Option<Uuid>,
    pub to_plan_version_id: Option<Uuid>,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub effective_at: DateTime<Utc>,
    pub period_start: Option<DateTime<Utc>>,
    pub proration_credit_minor: Option<i64>,
    pub proration_charge_minor: Option<i64>,
    pub reason: Option<String>,
}

impl NewSubscriptionChange {
    /// A change of `kind` at `effective_at` with nothing else recorded.
    pub fn new(subscription_id: Uuid, kind: &str, effective_at: DateTime<Utc>) -> Self {
        Self {
            subscription_id,
            kind: kind.to_owned(),
            from_plan_version_id: None,
            to_plan_version_id: None,
            from_status: None,
            to_status: None,
            effective_at,
            period_start: None,
            proration_credit_minor: None,
            proration_charge_minor: None,
            reason: None,
        }
    }
}

/// Inserts a subscription. Errors: [`StorageError::UniqueViolation`]
/// (`subscriptions_one_live_per_account`) when the account already has a live one.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    row: &SubscriptionRow,
) -> Result<(), StorageError> {
    diesel::insert_into(subscriptions::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes every field of `row` (stamping `updated_at`).
pub async fn save(
    conn: &mut AsyncPgConnection,
    row: &mut SubscriptionRow,
) -> Result<(), StorageError> {
    row.updated_at = Utc::now();
    diesel::update(subscriptions::table.find(row.id))
        .set(&*row)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes the period fields of many subscriptions in one statement (the billing run's period
/// advance): status, plan, pending plan, period index and bounds, cancellation instant and
/// downgrade grace; stamps `updated_at`.
pub async fn save_advances(
    conn: &mut AsyncPgConnection,
    rows: &[SubscriptionRow],
) -> Result<(), StorageError> {
    use diesel::sql_types::{Array, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
    if rows.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "UPDATE subscriptions s SET status = u.status, plan_version_id = u.plan, \
             pending_plan_version_id = u.pending, period_index = u.idx, \
             current_period_start = u.ps, current_period_end = u.pe, canceled_at = u.canceled, \
             grace_plan_version_id = u.grace_plan, grace_until = u.grace_until, updated_at = now() \
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int4[], \
                     $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::uuid[], \
                     $10::timestamptz[]) \
              AS u (id, status, plan, pending, idx, ps, pe, canceled, grace_plan, grace_until) \
         WHERE s.id = u.id",
    )
    .bind::<Array<SqlUuid>, _>(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.status.clone()).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(rows.iter().map(|r| r.plan_version_id).collect::<Vec<_>>())
    .bind::<Array<Nullable<SqlUuid>>, _>(
        rows.iter()
            .map(|r| r.pending_plan_version_id)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Int4>, _>(rows.iter().map(|r| r.period_index).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(
        rows.iter()
            .map(|r| r.current_period_start)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(
        rows.iter()
            .map(|r| r.current_period_end)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Timestamptz>>, _>(rows.iter().map(|r| r.canceled_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<SqlUuid>>, _>(
        rows.iter()
            .map(|r| r.grace_plan_version_id)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Timestamptz>>, _>(rows.iter().map(|r| r.grace_until).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// One subscription of a tenant, locked for update when `lock` (inside a transaction).
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<SubscriptionRow>, StorageError> {
    let query = subscriptions::table
        .filter(subscriptions::tenant_id.eq(tenant_id))
        .filter(subscriptions::id.eq(id))
        .select(SubscriptionRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    })
}

/// The subscriptions with these ids (any order; missing ids are skipped).
pub async fn by_ids(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> Result<Vec<SubscriptionRow>, StorageError> {
    Ok(subscriptions::table
        .filter(subscriptions::id.eq_any(ids))
        .select(SubscriptionRow::as_select())
        .load(conn)
        .await?)
}

/// The account's subscription that is not canceled, if any.
pub async fn live_for_account(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
) -> Result<Option<SubscriptionRow>, StorageError> {
    Ok(subscriptions::table
        .filter(subscriptions::account_id.eq(account_id))
        .filter(subscriptions::status.ne("canceled"))
        .select(SubscriptionRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A tenant's subscriptions, newest first, after the cursor `before` (an id).
pub async fn list(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    account_id: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SubscriptionRow>, StorageError> {
    let mut query = subscriptions::table
        .filter(subscriptions::tenant_id.eq(tenant_id))
        .select(SubscriptionRow::as_select())
        .order(subscriptions::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(account) = account_id {
        query = query.filter(subscriptions::account_id.eq(account));
    }
    if let Some(before) = before {
        query = query.filter(subscriptions::id.lt(before));
    }
    Ok(query.load(conn).await?)
}

/// Subscriptions (any tenant, or one) whose current period ended at or before `as_of` and
/// that are not canceled, locked with `SKIP LOCKED` so concurrent billing runs split the work.
/// Call inside a transaction.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    as_of: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<SubscriptionRow>, StorageError> {
    Ok(diesel::sql_query(
        "SELECT * FROM subscriptions \
         WHERE status <> 'canceled' AND current_period_end <= $2 \
           AND ($1::uuid IS NULL OR tenant_id = $1) \
         ORDER BY current_period_end, id LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Uuid>, _>(tenant_id)
    .bind::<diesel::sql_types::Timestamptz, _>(as_of)
    .bind::<diesel::sql_types::Int8, _>(limit)
    .load(conn)
    .await?)
}

/// Records history entries.
pub async fn record_changes(
    conn: &mut AsyncPgConnection,
    changes: &[NewSubscriptionChange],
) -> Result<(), StorageError> {
    if changes.is_empty() {
        return Ok(());
    }
    diesel::insert_into(subscription_changes::table)
        .values(changes)
        .execute(conn)
        .await?;
    Ok(())
}

/// A subscription's history, oldest first.
pub async fn changes(
    conn: &mut AsyncPgConnection,
    subscription_id: Uuid,
) -> Result<Vec<SubscriptionChangeRow>, StorageError> {
    Ok(subscription_changes::table
        .filter(subscription_changes::subscription_id.eq(subscription_id))
        .order(subscription_changes::id.asc())
        .select(SubscriptionChangeRow::as_select())
        .load(conn)
        .await?)
}

/// Plan changes and immediate cancellations of these subscriptions, oldest first: they carry
/// the proration billed on the invoice of the period they were made in (`period_start`).
pub async fn prorated_changes(
    conn: &mut AsyncPgConnection,
    subscription_ids: &[Uuid],
) -> Result<Vec<SubscriptionChangeRow>, StorageError> {
    Ok(subscription_changes::table
        .filter(subscription_changes::subscription_id.eq_any(subscription_ids))
        .filter(subscription_changes::kind.eq_any(["upgrade", "downgrade", "cancel"]))
        .order(subscription_changes::id.asc())
        .select(SubscriptionChangeRow::as_select())
        .load(conn)
        .await?)
}
