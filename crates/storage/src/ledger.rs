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

/// A tenant's entries, oldest first.
pub async fn entries_for_tenant(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Vec<LedgerEntryRow>, StorageError> {
    Ok(ledger_entries::table
        .filter(ledger_entries::tenant_id.eq(tenant_id))
        .order(ledger_entries::id.asc())
        .select(LedgerEntryRow::as_select())
        .load(conn)
        .await?)
}
