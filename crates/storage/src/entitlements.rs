//! Reads for job-intake's in-memory entitlement projection (issue 4, "Entitlements at
//! intake"; SPEC "Billing": entitlements and quotas enforced server-side at intake). Every
//! function returns plain rows; the projection, its rules and its refresh loop live in
//! `services/job-intake/src/entitlements.rs`.
//!
//! Two kinds of read:
//! * full: everything gating needs now — enforced tenants, live subscriptions, their plan
//!   versions, their current-period quota counters and the names (external ids) that
//!   resolve to their accounts;
//! * changes: rows changed after an instant `since`, so a refresh every few hundred
//!   milliseconds reads only what moved.
//!
//! Change windows and why they overlap: `updated_at` (and `valid_from`, `converted_at`) is
//! stamped when a transaction writes the row, but the row becomes visible when that
//! transaction commits, which may be later and out of stamp order. A reader that asked for
//! `updated_at > last_read` would miss a row stamped before `last_read` but committed after
//! it. Callers therefore pass `since = (database time of the previous read) - overlap`
//! (job-intake's `entitlements.overlap_ms`, 5 s by default) and re-read the rows of the
//! overlap on every refresh; a row whose transaction stayed open longer than the overlap is
//! picked up by the next full read. Re-reading is harmless because every row carries
//! absolute values (a status, a counter's `used`), never increments: applying a row twice
//! gives the same projection. Writers must stamp `updated_at` on every change of a tenant's
//! `billing_enforced` or of a subscription; `quota_counters.updated_at` is stamped by the
//! ledger trigger with `clock_timestamp()`.
//!
//! Workspaces have no `updated_at`. Their owner changes only through `workspace_owners`
//! (creation and personal→organization conversion both open a span with `valid_from`), so the
//! open spans that started after `since` are the workspaces that are new or moved.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::JobRow;
use crate::schema::{
    accounts, jobs, ledger_entries, plan_quotas, plan_versions, quota_counters, subscriptions,
    tenants, workspace_owners, workspaces,
};
use crate::StorageError;

/// Subscription statuses that keep a billing entity's entitlements (`past_due` is the dunning
/// grace). `suspended` and `canceled` do not; a suspended subscription is still "live" in
/// the sense of the one-per-account index, so reads of live subscriptions return it too.
pub const ENTITLED_STATUSES: [&str; 3] = ["trialing", "active", "past_due"];

/// A tenant's gating switch as of `updated_at`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct TenantFlagRow {
    pub tenant_id: Uuid,
    /// When true, intake refuses jobs and events of entities without a live subscription.
    pub billing_enforced: bool,
    pub updated_at: DateTime<Utc>,
}

/// A subscription with what gating needs of it and of its account.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct SubscriptionGateRow {
    pub subscription_id: Uuid,
    pub tenant_id: Uuid,
    /// The billing entity.
    pub account_id: Uuid,
    pub account_external_id: String,
    /// `trialing`, `active`, `past_due`, `suspended` or `canceled`.
    pub status: String,
    /// The current period is `[current_period_start, current_period_end)`.
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub plan_version_id: Uuid,
    /// After a downgrade: the previous plan version, whose features and quotas apply until
    /// `grace_until`.
    pub grace_plan_version_id: Option<Uuid>,
    pub grace_until: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// One quota of a plan version: `quantity` units of `metric` per period; past `soft_pct` %
/// of it usage is flagged, past `hard_pct` % (when set) it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct QuotaRow {
    pub plan_version_id: Uuid,
    /// A metric code (`api_calls`, `job.render`) or a prefix pattern ending in `.*`
    /// (`job.*`).
    pub metric: String,
    pub quantity: i64,
    pub soft_pct: i32,
    pub hard_pct: Option<i32>,
}

/// A plan version's entitlements: its feature flags and its quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntitlementsRow {
    pub plan_version_id: Uuid,
    pub plan_code: String,
    pub version: i32,
    pub features: Vec<String>,
    pub quotas: Vec<QuotaRow>,
    /// The plan's `requests_per_minute` limit (job submissions per minute per
    /// subscription), if it has one.
    pub requests_per_minute: Option<i32>,
}

/// A quota counter: the weighted units of the subscription's ledger entries matching
/// `metric` (the quota's code or pattern) in the period starting at `period_start`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct QuotaCounterRow {
    pub subscription_id: Uuid,
    pub metric: String,
    pub period_start: DateTime<Utc>,
    pub used: i64,
    pub updated_at: DateTime<Utc>,
}

/// An account name (external id) and the entity its usage is billed to: the account itself,
/// or, from `converted_at` on, the organization it was converted to.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct AccountNameRow {
    pub tenant_id: Uuid,
    pub external_id: String,
    pub account_id: Uuid,
    pub converted_to: Option<Uuid>,
    pub converted_at: Option<DateTime<Utc>>,
}

/// A workspace name (external id) and its current owner.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct WorkspaceNameRow {
    pub tenant_id: Uuid,
    pub external_id: String,
    pub workspace_id: Uuid,
    /// The owner now (the billing entity of new usage).
    pub account_id: Uuid,
}

/// The database clock (`now()`: the start of the current transaction). Read it first in a
/// refresh: the next refresh asks for changes after it, minus the overlap.
pub async fn database_now(conn: &mut AsyncPgConnection) -> Result<DateTime<Utc>, StorageError> {
    Ok(
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Timestamptz>("now()"))
            .get_result(conn)
            .await?,
    )
}

/// Ids of the tenants with `billing_enforced` on.
pub async fn enforced_tenants(conn: &mut AsyncPgConnection) -> Result<Vec<Uuid>, StorageError> {
    Ok(tenants::table
        .filter(tenants::billing_enforced.eq(true))
        .select(tenants::id)
        .load(conn)
        .await?)
}

/// Tenants whose row changed after `since` (enforced or not: a switch turned off must be
/// seen too).
pub async fn tenants_changed_since(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<TenantFlagRow>, StorageError> {
    Ok(tenants::table
        .filter(tenants::updated_at.gt(since))
        .select((tenants::id, tenants::billing_enforced, tenants::updated_at))
        .load(conn)
        .await?)
}

type SubscriptionGateColumns = (
    subscriptions::id,
    subscriptions::tenant_id,
    subscriptions::account_id,
    accounts::external_id,
    subscriptions::status,
    subscriptions::current_period_start,
    subscriptions::current_period_end,
    subscriptions::plan_version_id,
    subscriptions::grace_plan_version_id,
    subscriptions::grace_until,
    subscriptions::updated_at,
);

const SUBSCRIPTION_GATE_COLUMNS: SubscriptionGateColumns = (
    subscriptions::id,
    subscriptions::tenant_id,
    subscriptions::account_id,
    accounts::external_id,
    subscriptions::status,
    subscriptions::current_period_start,
    subscriptions::current_period_end,
    subscriptions::plan_version_id,
    subscriptions::grace_plan_version_id,
    subscriptions::grace_until,
    subscriptions::updated_at,
);

/// Every subscription that is not canceled (at most one per account), all tenants.
pub async fn live_subscriptions(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<SubscriptionGateRow>, StorageError> {
    Ok(subscriptions::table
        .inner_join(accounts::table)
        .filter(subscriptions::status.ne("canceled"))
        .select(SUBSCRIPTION_GATE_COLUMNS)
        .load(conn)
        .await?)
}

/// Subscriptions changed after `since`, whatever their status (a cancellation must be seen).
pub async fn subscriptions_changed_since(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<SubscriptionGateRow>, StorageError> {
    Ok(subscriptions::table
        .inner_join(accounts::table)
        .filter(subscriptions::updated_at.gt(since))
        .select(SUBSCRIPTION_GATE_COLUMNS)
        .load(conn)
        .await?)
}

/// The features and quotas of the plan versions `ids` (plan versions are immutable, so a
/// version read once never needs reading again).
pub async fn plan_entitlements(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> Result<Vec<PlanEntitlementsRow>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // (id, plan code, version, features, requests per minute)
    type VersionRow = (Uuid, String, i32, Vec<String>, Option<i32>);
    let versions: Vec<VersionRow> = plan_versions::table
        .filter(plan_versions::id.eq_any(ids))
        .select((
            plan_versions::id,
            plan_versions::plan_code,
            plan_versions::version,
            plan_versions::features,
            plan_versions::requests_per_minute,
        ))
        .load(conn)
        .await?;
    let quotas: Vec<QuotaRow> = plan_quotas::table
        .filter(plan_quotas::plan_version_id.eq_any(ids))
        .order((plan_quotas::plan_version_id, plan_quotas::metric))
        .select((
            plan_quotas::plan_version_id,
            plan_quotas::metric,
            plan_quotas::quantity,
            plan_quotas::soft_pct,
            plan_quotas::hard_pct,
        ))
        .load(conn)
        .await?;
    Ok(versions
        .into_iter()
        .map(
            |(id, plan_code, version, features, requests_per_minute)| PlanEntitlementsRow {
                plan_version_id: id,
                plan_code,
                version,
                features,
                requests_per_minute,
                quotas: quotas
                    .iter()
                    .filter(|q| q.plan_version_id == id)
                    .cloned()
                    .collect(),
            },
        )
        .collect())
}

type CounterColumns = (
    quota_counters::subscription_id,
    quota_counters::metric,
    quota_counters::period_start,
    quota_counters::used,
    quota_counters::updated_at,
);

const COUNTER_COLUMNS: CounterColumns = (
    quota_counters::subscription_id,
    quota_counters::metric,
    quota_counters::period_start,
    quota_counters::used,
    quota_counters::updated_at,
);

/// The counters of every live subscription's current period.
pub async fn current_quota_counters(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<QuotaCounterRow>, StorageError> {
    Ok(quota_counters::table
        .inner_join(
            subscriptions::table.on(subscriptions::id
                .eq(quota_counters::subscription_id)
                .and(subscriptions::current_period_start.eq(quota_counters::period_start))),
        )
        .filter(subscriptions::status.ne("canceled"))
        .select(COUNTER_COLUMNS)
        .load(conn)
        .await?)
}

/// Counters changed after `since` (any period: the reader keeps the newest period).
pub async fn quota_counters_changed_since(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<QuotaCounterRow>, StorageError> {
    Ok(quota_counters::table
        .filter(quota_counters::updated_at.gt(since))
        .select(COUNTER_COLUMNS)
        .load(conn)
        .await?)
}

type AccountNameColumns = (
    accounts::tenant_id,
    accounts::external_id,
    accounts::id,
    accounts::converted_to,
    accounts::converted_at,
);

const ACCOUNT_NAME_COLUMNS: AccountNameColumns = (
    accounts::tenant_id,
    accounts::external_id,
    accounts::id,
    accounts::converted_to,
    accounts::converted_at,
);

/// The account names whose usage may be billed to one of `entities`: the accounts
/// themselves and the personal accounts converted into them.
pub async fn account_names_billed_to(
    conn: &mut AsyncPgConnection,
    entities: &[Uuid],
) -> Result<Vec<AccountNameRow>, StorageError> {
    if entities.is_empty() {
        return Ok(Vec::new());
    }
    Ok(accounts::table
        .filter(
            accounts::id
                .eq_any(entities)
                .or(accounts::converted_to.eq_any(entities)),
        )
        .select(ACCOUNT_NAME_COLUMNS)
        .load(conn)
        .await?)
}

/// Accounts converted to an organization after `since`: their names now bill the
/// organization.
pub async fn accounts_converted_since(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<AccountNameRow>, StorageError> {
    Ok(accounts::table
        .filter(accounts::converted_at.gt(since))
        .select(ACCOUNT_NAME_COLUMNS)
        .load(conn)
        .await?)
}

/// The workspaces `owners` own now.
pub async fn workspace_names_owned_by(
    conn: &mut AsyncPgConnection,
    owners: &[Uuid],
) -> Result<Vec<WorkspaceNameRow>, StorageError> {
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    Ok(workspaces::table
        .filter(workspaces::account_id.eq_any(owners))
        .select((
            workspaces::tenant_id,
            workspaces::external_id,
            workspaces::id,
            workspaces::account_id,
        ))
        .load(conn)
        .await?)
}

/// Workspaces created or moved to another owner after `since` (their open ownership span
/// started then), with their current owner.
pub async fn workspace_owners_changed_since(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<WorkspaceNameRow>, StorageError> {
    Ok(workspace_owners::table
        .inner_join(workspaces::table)
        .filter(workspace_owners::valid_from.gt(since))
        .filter(workspace_owners::valid_to.is_null())
        .select((
            workspaces::tenant_id,
            workspaces::external_id,
            workspaces::id,
            workspace_owners::account_id,
        ))
        .load(conn)
        .await?)
}

/// The tenant's job with this idempotency key, if any. Intake asks only when it refuses a
/// submission, so that a repeat of an accepted job gets the job back instead of a refusal.
pub async fn job_by_idempotency_key(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    idempotency_key: &str,
) -> Result<Option<JobRow>, StorageError> {
    Ok(jobs::table
        .filter(jobs::tenant_id.eq(tenant_id))
        .filter(jobs::idempotency_key.eq(idempotency_key))
        .select(JobRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Which of the client event ids `event_ids` the tenant's ledger already holds. Intake asks
/// only about events it refuses, so that a repeat of an accepted event is answered
/// `duplicate` instead of refused.
pub async fn recorded_event_ids(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    event_ids: &[String],
) -> Result<Vec<String>, StorageError> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = event_ids
        .iter()
        .map(|id| crate::events::ledger_key(id))
        .collect();
    let found: Vec<String> = ledger_entries::table
        .filter(ledger_entries::tenant_id.eq(tenant_id))
        .filter(ledger_entries::idempotency_key.eq_any(&keys))
        .select(ledger_entries::idempotency_key)
        .load(conn)
        .await?;
    Ok(found
        .into_iter()
        .filter_map(|key| key.strip_prefix("event:").map(str::to_owned))
        .collect())
}
