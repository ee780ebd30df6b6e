//! The usage ledger's queries. The table itself refuses UPDATE, DELETE and TRUNCATE (trigger in
//! the migration); this module only appends and reads.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::{LedgerEntryRow, NewLedgerEntry};
use crate::schema::ledger_entries;
use crate::StorageError;

/// Appends an entry; returns false when an entry with the same (tenant, idempotency key)
/// already exists (nothing is written).
pub async fn append(
    conn: &mut AsyncPgConnection,
    entry: &NewLedgerEntry,
) -> Result<bool, StorageError> {
    let n = diesel::insert_into(ledger_entries::table)
        .values(entry)
        .on_conflict((ledger_entries::tenant_id, ledger_entries::idempotency_key))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Why a reversal was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReverseRefusal {
    /// No entry with this id (for this tenant, when one is given).
    NotFound,
    /// The entry is itself a reversal; correct it by writing a new entry instead.
    IsReversal,
    /// The entry was reversed already (one reversal per entry).
    AlreadyReversed,
}

/// Appends the reversing entry of entry `id`: the same metric, billing entity, workspace,
/// dimension and timestamp with negated raw units, weighted units and cost, so the pair
/// nets to zero in every period (SPEC: "corrections are reversing entries"). `reason` is
/// kept in the entry's context. `tenant_id` scopes the lookup when given (operators may
/// reverse any entry, including unauthenticated traffic).
pub async fn reverse(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    id: i64,
    reason: &str,
) -> Result<Result<LedgerEntryRow, ReverseRefusal>, StorageError> {
    let mut query = ledger_entries::table
        .filter(ledger_entries::id.eq(id))
        .select(LedgerEntryRow::as_select())
        .into_boxed();
    if let Some(tenant) = tenant_id {
        query = query.filter(ledger_entries::tenant_id.eq(tenant));
    }
    let Some(original) = query.first(conn).await.optional()? else {
        return Ok(Err(ReverseRefusal::NotFound));
    };
    if original.reverses_id.is_some() {
        return Ok(Err(ReverseRefusal::IsReversal));
    }
    let reversal = NewLedgerEntry {
        tenant_id: original.tenant_id,
        idempotency_key: format!("reversal:{}", original.id),
        metric: original.metric.clone(),
        raw_units: -original.raw_units,
        weighted_units: -original.weighted_units,
        cost: -original.cost,
        source_kind: "reversal".to_owned(),
        source_id: original.id.to_string(),
        context: serde_json::json!({
            "reason": reason,
            "reverses": original.idempotency_key,
        }),
        occurred_at: original.occurred_at,
        account_id: original.account_id,
        workspace_id: original.workspace_id,
        dimension: original.dimension.clone(),
        reverses_id: Some(original.id),
    };
    let written: Option<LedgerEntryRow> = diesel::insert_into(ledger_entries::table)
        .values(&reversal)
        .on_conflict_do_nothing()
        .returning(LedgerEntryRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    Ok(written.ok_or(ReverseRefusal::AlreadyReversed))
}
