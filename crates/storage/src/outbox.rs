//! The transactional outbox's read side, used by the relay inside its own transaction:
//! claim a batch with `FOR UPDATE SKIP LOCKED` (so several relays never take the same rows),
//! publish them, stamp them, commit.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::models::OutboxRow;
use crate::schema::outbox;
use crate::StorageError;

/// Locks and returns up to `limit` unpublished messages, oldest first, skipping rows another
/// relay holds. Call inside a transaction; the locks last until it ends.
pub async fn claim_batch(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<OutboxRow>, StorageError> {
    Ok(outbox::table
        .filter(outbox::published_at.is_null())
        .order(outbox::id.asc())
        .limit(limit)
        .for_update()
        .skip_locked()
        .select(OutboxRow::as_select())
        .load(conn)
        .await?)
}

/// Stamps messages as published.
pub async fn mark_published(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<(), StorageError> {
    diesel::update(outbox::table)
        .filter(outbox::id.eq_any(ids))
        .set(outbox::published_at.eq(Utc::now()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes published messages older than `older_than_secs` seconds; returns how many.
pub async fn purge_published(
    conn: &mut AsyncPgConnection,
    older_than_secs: i64,
) -> Result<usize, StorageError> {
    let cutoff = Utc::now() - chrono::Duration::seconds(older_than_secs);
    Ok(diesel::delete(outbox::table)
        .filter(outbox::published_at.lt(cutoff))
        .execute(conn)
        .await?)
}

/// Number of messages not yet published (a readiness/metrics figure).
pub async fn pending_count(conn: &mut AsyncPgConnection) -> Result<i64, StorageError> {
    Ok(outbox::table
        .filter(outbox::published_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

/// Appends a message to the outbox, in the caller's transaction; the relay publishes it after
/// the commit (SPEC "Messaging": state change and message commit together).
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    message: &crate::models::NewOutboxMessage,
) -> Result<(), StorageError> {
    diesel::insert_into(outbox::table)
        .values(message)
        .execute(conn)
        .await?;
    Ok(())
}
