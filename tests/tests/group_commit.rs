//! `tollgate_storage::group_commit` against the real PostgreSQL: what a linger changes about
//! which callers share a batch.

use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tollgate_storage::group_commit::{BatchWriter, GroupCommit};
use tollgate_storage::StorageError;

/// Writes nothing but a `SELECT 1` per batch and answers every item with the batch's size.
struct BatchSize;

impl BatchWriter for BatchSize {
    type Item = ();
    type Output = usize;

    async fn write(
        &self,
        conn: &mut AsyncPgConnection,
        items: Vec<()>,
    ) -> Result<Vec<usize>, StorageError> {
        diesel::sql_query("SELECT 1")
            .execute(conn)
            .await
            .map_err(StorageError::from)?;
        Ok(vec![items.len(); items.len()])
    }
}

/// A one-writer group commit of [`BatchSize`] on a fresh database.
async fn batch_sizes(max_batch: usize, linger: Duration) -> GroupCommit<BatchSize> {
    let url = tollgate_e2e::fresh_database().await;
    let pool = tollgate_storage::pool::build_pool(&url, 2, Duration::from_secs(5)).expect("pool");
    GroupCommit::start(pool, BatchSize, 1, max_batch, linger)
}

/// The batch sizes two callers see when the second submits 50 ms after the first.
async fn sizes_fifty_ms_apart(linger: Duration) -> (usize, usize) {
    let commit = batch_sizes(16, linger).await;
    let first = tokio::spawn({
        let commit = commit.clone();
        async move { commit.submit(()).await.expect("first") }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = commit.submit(()).await.expect("second");
    (first.await.expect("task"), second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_linger_a_lone_item_is_written_at_once() {
    assert_eq!(sizes_fifty_ms_apart(Duration::ZERO).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linger_gathers_items_arriving_within_it_into_one_batch() {
    assert_eq!(sizes_fifty_ms_apart(Duration::from_secs(1)).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_does_not_wait_out_the_linger() {
    let commit = batch_sizes(2, Duration::from_secs(60)).await;
    let both = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join(commit.submit(()), commit.submit(())),
    )
    .await
    .expect("a batch of max_batch items is written without waiting out the linger");
    assert_eq!((both.0.expect("first"), both.1.expect("second")), (2, 2));
}
