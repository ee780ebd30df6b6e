//! Row types: `…Row` is what a SELECT returns, `New…` what an INSERT takes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::{api_keys, job_attempts, job_types, jobs, ledger_entries, outbox, tenants};

/// A tenant.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tenants)]
pub struct TenantRow {
    pub id: Uuid,
    pub name: String,
    /// Requests per minute allowed through the gateway.
    pub rate_limit_per_minute: i32,
    pub created_at: DateTime<Utc>,
    /// IANA zone the usage API buckets days and months in by default.
    pub time_zone: String,
    /// Usage stamped before this instant belongs to finalized periods and is refused.
    pub usage_locked_before: Option<DateTime<Utc>>,
    /// When true, job-intake refuses jobs and events for billing entities without a live
    /// subscription (issue 4, "Entitlements at intake").
    pub billing_enforced: bool,
    /// Invoice numbers read `<prefix>-000001`.
    pub invoice_prefix: String,
    pub updated_at: DateTime<Utc>,
}

/// An API key record; `key_hash` is SHA-256 of the full key text.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub prefix: String,
    pub key_hash: Vec<u8>,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A job type in a tenant's catalog.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = job_types)]
pub struct JobTypeRow {
    pub tenant_id: Uuid,
    pub name: String,
    /// Executor kind; `http` posts the input to `endpoint`.
    pub executor: String,
    pub endpoint: String,
    /// Per-attempt executor timeout, milliseconds.
    pub timeout_ms: i32,
    pub max_attempts: i32,
    /// Cost per unit the executor reports (integer cost units).
    pub weight: i64,
    /// Cap on the JSON input's size, bytes.
    pub max_input_bytes: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The plan feature a subscriber needs to submit jobs of this type (403 otherwise).
    pub required_feature: Option<String>,
}

/// A job.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = jobs)]
pub struct JobRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub job_type: String,
    pub idempotency_key: String,
    pub request_hash: Vec<u8>,
    pub input: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub output: Option<serde_json::Value>,
    pub units: Option<i64>,
    pub cost: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The workspace the job was submitted for; its ledger entry goes to the owner in force
    /// at completion.
    pub workspace_id: Option<Uuid>,
}

/// A job to insert, always `queued`.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = jobs)]
pub struct NewJob {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub job_type: String,
    pub idempotency_key: String,
    pub request_hash: Vec<u8>,
    pub input: serde_json::Value,
    pub status: String,
    pub max_attempts: i32,
    pub workspace_id: Option<Uuid>,
}

/// One attempt's outcome.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = job_attempts)]
pub struct JobAttemptRow {
    pub id: i64,
    pub job_id: Uuid,
    pub attempt: i32,
    /// `succeeded`, `retryable` or `permanent`.
    pub outcome: String,
    pub error: Option<String>,
    pub http_status: Option<i32>,
    pub duration_ms: i64,
    pub created_at: DateTime<Utc>,
}

/// An attempt to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = job_attempts)]
pub struct NewJobAttempt {
    pub job_id: Uuid,
    pub attempt: i32,
    pub outcome: String,
    pub error: Option<String>,
    pub http_status: Option<i32>,
    pub duration_ms: i64,
}

/// An outbox row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub exchange: String,
    pub routing_key: String,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

/// A message to publish once the surrounding transaction commits.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox)]
pub struct NewOutboxMessage {
    pub message_id: Uuid,
    pub exchange: String,
    pub routing_key: String,
    pub payload: Vec<u8>,
}

/// A ledger entry as read back.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ledger_entries)]
pub struct LedgerEntryRow {
    pub id: i64,
    /// `None` only for gateway traffic the gateway could not authenticate.
    pub tenant_id: Option<Uuid>,
    pub idempotency_key: String,
    pub metric: String,
    pub raw_units: i64,
    pub weighted_units: i64,
    pub cost: i64,
    pub source_kind: String,
    pub source_id: String,
    pub context: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// The billing entity in force at `occurred_at`.
    pub account_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    /// The distinct key of a `unique_count` metric.
    pub dimension: Option<String>,
    /// For a reversal: the entry it cancels.
    pub reverses_id: Option<i64>,
}

/// A ledger entry to append. `idempotency_key` is unique per tenant: appending the same fact
/// twice leaves one entry.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = ledger_entries)]
pub struct NewLedgerEntry {
    pub tenant_id: Option<Uuid>,
    pub idempotency_key: String,
    pub metric: String,
    pub raw_units: i64,
    pub weighted_units: i64,
    pub cost: i64,
    pub source_kind: String,
    pub source_id: String,
    pub context: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub account_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub dimension: Option<String>,
    pub reverses_id: Option<i64>,
}

/// A billable metric in a tenant's catalog (`billable_metrics`).
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = crate::schema::billable_metrics)]
pub struct BillableMetricRow {
    pub tenant_id: Uuid,
    pub code: String,
    pub name: String,
    /// The unit raw units are counted in (e.g. `bytes`, `tokens`, `calls`).
    pub unit: String,
    /// One of count, sum, max, unique_count, latest, weighted_sum.
    pub aggregation: String,
    pub field: Option<String>,
    pub weight_property: Option<String>,
    /// `{"operation": weight}`, integer weights.
    pub weights: serde_json::Value,
    pub default_weight: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A billing entity (`accounts`): personal or organization.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::accounts)]
pub struct AccountRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `personal` or `organization`.
    pub kind: String,
    pub external_id: String,
    pub name: String,
    /// On a converted personal account: the organization it became.
    pub converted_to: Option<Uuid>,
    /// The instant of conversion; usage at or after it belongs to `converted_to`.
    pub converted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A workspace and its current owner.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::workspaces)]
pub struct WorkspaceRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub account_id: Uuid,
    pub external_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// One span of a workspace's ownership history: `[valid_from, valid_to)`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::workspace_owners)]
pub struct WorkspaceOwnerRow {
    pub workspace_id: Uuid,
    pub account_id: Uuid,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
}

impl WorkspaceOwnerRow {
    /// Whether this span covers `at`.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.valid_from <= at && self.valid_to.is_none_or(|to| at < to)
    }
}
