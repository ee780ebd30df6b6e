//! Stored artifacts (`artifacts`) and their storage metering (SPEC "Jobs" → Results, "Usage
//! metering and the ledger"): every stored version is one row, and every write or delete of a
//! version appends its ±bytes ledger entry (`storage.bytes`) in the same transaction, so the
//! ledger's sum for a tenant is always the bytes it has live.
//!
//! The object bytes live in object storage; this module only records them. Writers of one
//! (tenant, key) are serialized by a transaction-scoped advisory lock, so concurrent puts of a
//! key leave exactly one live row and a ledger that nets to its size.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::NewLedgerEntry;
use crate::schema::artifacts;
use crate::StorageError;

/// The ledger metric of stored bytes: raw and weighted units are bytes, +size when a version is
/// written, −size when it is deleted or replaced.
pub const STORAGE_METRIC: &str = "storage.bytes";
/// `source_kind` of storage entries (the ledger's CHECK constraint lists it).
pub const STORAGE_SOURCE_KIND: &str = "storage";

/// One stored version of an artifact.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = artifacts)]
pub struct ArtifactRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The tenant's name for it (1–512 characters).
    pub key: String,
    /// Where the bytes are in the object store (`<tenant uuid>/<artifact uuid>`).
    pub object_path: String,
    pub size_bytes: i64,
    pub content_type: String,
    /// SHA-256 of the bytes (32 bytes).
    pub sha256: Vec<u8>,
    pub workspace_id: Option<Uuid>,
    /// The billing entity the bytes are metered to.
    pub account_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// Set when the version was deleted or replaced; `None` while it is live.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A version to record, after its bytes were written to `object_path`.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = artifacts)]
pub struct NewArtifact {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub key: String,
    pub object_path: String,
    /// Bytes; must be ≥ 0.
    pub size_bytes: i64,
    pub content_type: String,
    /// SHA-256 of the bytes (32 bytes).
    pub sha256: Vec<u8>,
    pub workspace_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
}

/// What [`record_put`] did.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    /// The new live version.
    pub artifact: ArtifactRow,
    /// The version it replaced (now deleted and metered −size); its object may be removed.
    pub replaced: Option<ArtifactRow>,
}

/// Records a written version in one transaction: inserts its row and a +size ledger entry
/// (idempotency key `artifact:<id>:put`); if the key had a live version, marks it deleted and
/// appends its −size entry (`artifact:<old id>:delete`; ids are `art_…`), so an overwrite nets to the new size.
/// Errors: a database failure (nothing is recorded; the caller removes the written object).
pub async fn record_put(
    conn: &mut AsyncPgConnection,
    new: NewArtifact,
) -> Result<PutOutcome, StorageError> {
    conn.transaction(async |conn| {
        lock_key(conn, new.tenant_id, &new.key).await?;
        let now = Utc::now();
        let replaced = match live_version(conn, new.tenant_id, &new.key).await? {
            Some(old) => Some(mark_deleted(conn, old, now).await?),
            None => None,
        };
        let artifact: ArtifactRow = diesel::insert_into(artifacts::table)
            .values((&new, artifacts::created_at.eq(now)))
            .returning(ArtifactRow::as_returning())
            .get_result(conn)
            .await?;
        crate::ledger::append(conn, &storage_entry(&artifact, Change::Put, now)).await?;
        Ok(PutOutcome { artifact, replaced })
    })
    .await
}

/// Deletes the live version of `key` in one transaction: marks the row deleted and appends its
/// −size ledger entry (`artifact:<id>:delete`). Returns the deleted version (whose object the
/// caller then removes), or `None` when the key has no live version.
pub async fn record_delete(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    key: &str,
) -> Result<Option<ArtifactRow>, StorageError> {
    conn.transaction(async |conn| {
        lock_key(conn, tenant_id, key).await?;
        match live_version(conn, tenant_id, key).await? {
            Some(row) => Ok(Some(mark_deleted(conn, row, Utc::now()).await?)),
            None => Ok(None),
        }
    })
    .await
}

/// The live version of a tenant's `key`, if any.
pub async fn find_live(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    key: &str,
) -> Result<Option<ArtifactRow>, StorageError> {
    live_version(conn, tenant_id, key).await
}

/// A version by id, live or deleted, of any tenant: for signed download links, which carry no
/// tenant (the signature is the credential). The caller checks `deleted_at`.
pub async fn find_by_id(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<ArtifactRow>, StorageError> {
    Ok(artifacts::table
        .find(id)
        .select(ArtifactRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A tenant's live artifacts ordered by key, at most `limit` (1..=100 enforced by the caller),
/// starting after the key `after` (the cursor: the last key of the previous page).
pub async fn list_live(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ArtifactRow>, StorageError> {
    let mut query = artifacts::table
        .filter(artifacts::tenant_id.eq(tenant_id))
        .filter(artifacts::deleted_at.is_null())
        .select(ArtifactRow::as_select())
        .order(artifacts::key.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(artifacts::key.gt(after.to_owned()));
    }
    Ok(query.load(conn).await?)
}

/// Serializes the writers of one (tenant, key) until the transaction ends. A row lock cannot do
/// it alone: when the key has no live row there is nothing to lock, and two first puts would
/// race into the `artifacts_live_key` unique index.
async fn lock_key(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    key: &str,
) -> Result<(), StorageError> {
    // 64 bits of md5 of the pair: a collision only serializes two unrelated keys.
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(('x' || substr(md5($1), 1, 16))::bit(64)::bigint)",
    )
    .bind::<Text, _>(format!("artifact:{tenant_id}:{key}"))
    .execute(conn)
    .await?;
    Ok(())
}

async fn live_version(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    key: &str,
) -> Result<Option<ArtifactRow>, StorageError> {
    Ok(artifacts::table
        .filter(artifacts::tenant_id.eq(tenant_id))
        .filter(artifacts::key.eq(key))
        .filter(artifacts::deleted_at.is_null())
        .select(ArtifactRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Marks a live version deleted at `now` and appends its −size entry; inside the caller's
/// transaction, under the key's lock.
async fn mark_deleted(
    conn: &mut AsyncPgConnection,
    row: ArtifactRow,
    now: DateTime<Utc>,
) -> Result<ArtifactRow, StorageError> {
    let row: ArtifactRow = diesel::update(artifacts::table.find(row.id))
        .filter(artifacts::deleted_at.is_null())
        .set(artifacts::deleted_at.eq(now))
        .returning(ArtifactRow::as_returning())
        .get_result(conn)
        .await?;
    crate::ledger::append(conn, &storage_entry(&row, Change::Delete, now)).await?;
    Ok(row)
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Put,
    Delete,
}

/// The ledger entry of writing or deleting `row`: ±size bytes at no cost (storage is priced by
/// the catalog when it is rated, not here), attributed to the row's workspace and account.
fn storage_entry(row: &ArtifactRow, change: Change, now: DateTime<Utc>) -> NewLedgerEntry {
    let (units, suffix) = match change {
        Change::Put => (row.size_bytes, "put"),
        Change::Delete => (-row.size_bytes, "delete"),
    };
    let id = tollgate_domain::ArtifactId::from_uuid(row.id);
    NewLedgerEntry {
        tenant_id: Some(row.tenant_id),
        idempotency_key: format!("artifact:{id}:{suffix}"),
        metric: STORAGE_METRIC.to_owned(),
        raw_units: units,
        weighted_units: units,
        cost: 0,
        source_kind: STORAGE_SOURCE_KIND.to_owned(),
        source_id: id.to_string(),
        context: serde_json::json!({ "key": row.key, "change": suffix }),
        occurred_at: now,
        account_id: row.account_id,
        workspace_id: row.workspace_id,
        dimension: None,
        reverses_id: None,
    }
}

/// Records a system document (an invoice PDF) as an artifact row, in the caller's
/// transaction. Unlike [`record_put`] it writes no storage ledger entry: documents Tollgate
/// produces for itself are not the tenant's metered usage. Errors:
/// [`StorageError::UniqueViolation`] when the key already has a live version.
pub async fn insert_document(
    conn: &mut AsyncPgConnection,
    new: &NewArtifact,
) -> Result<(), StorageError> {
    diesel::insert_into(artifacts::table)
        .values(new)
        .execute(conn)
        .await?;
    Ok(())
}
