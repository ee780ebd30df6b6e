//! Which committed transactions a read saw: PostgreSQL's transaction ids (`xid8`) and MVCC
//! snapshots (`pg_current_xact_id`, `pg_current_snapshot`; PostgreSQL docs, "Transaction ID
//! and Snapshot Information Functions").
//!
//! job-intake holds the quota units of events it accepted until its entitlement projection
//! reads a counter that includes them. A time rule ("the read began after the caller saw the
//! commit") cannot tell whether a read that began in between, after the commit but before
//! the caller heard of it, counted the event, so the units were counted twice for one refresh;
//! comparing the writing transaction's id with the read's snapshot tells exactly.

use diesel::sql_types::{Array, Int8};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StorageError;

/// A transaction's 64-bit id (`xid8`, epoch and 32-bit xid; never wraps around).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionId(pub i64);

/// What a read's snapshot saw: a transaction that has committed is visible to it when its id
/// is below `xmax` and not among `in_progress` (ids below `xmin` are all finished).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Snapshot {
    /// Lowest id still running when the snapshot was taken.
    #[diesel(sql_type = Int8)]
    pub xmin: i64,
    /// First id not yet assigned then: this and later transactions are not visible.
    #[diesel(sql_type = Int8)]
    pub xmax: i64,
    /// Ids between `xmin` and `xmax` still running then: not visible.
    #[diesel(sql_type = Array<Int8>)]
    pub in_progress: Vec<i64>,
}

impl Snapshot {
    /// Whether `transaction`, known to have committed, is visible to this snapshot.
    pub fn sees(&self, transaction: TransactionId) -> bool {
        let id = transaction.0;
        id < self.xmin || (id < self.xmax && !self.in_progress.contains(&id))
    }
}

/// The snapshot of the current transaction's reads (in `REPEATABLE READ`, the one every
/// statement of the transaction sees). Errors: the query failed.
pub async fn current_snapshot(conn: &mut AsyncPgConnection) -> Result<Snapshot, StorageError> {
    Ok(diesel::sql_query(
        "SELECT pg_snapshot_xmin(s)::text::int8 AS xmin, pg_snapshot_xmax(s)::text::int8 AS xmax, \
                ARRAY(SELECT x::text::int8 FROM pg_snapshot_xip(s) AS x) AS in_progress \
         FROM pg_current_snapshot() AS s",
    )
    .get_result(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_transactions_below_xmax_and_not_running_are_seen() {
        let snapshot = Snapshot {
            xmin: 100,
            xmax: 110,
            in_progress: vec![100, 104],
        };
        assert!(snapshot.sees(TransactionId(99)));
        assert!(!snapshot.sees(TransactionId(100)));
        assert!(snapshot.sees(TransactionId(101)));
        assert!(!snapshot.sees(TransactionId(104)));
        assert!(snapshot.sees(TransactionId(109)));
        assert!(!snapshot.sees(TransactionId(110)));
        assert!(!snapshot.sees(TransactionId(500)));
    }
}
