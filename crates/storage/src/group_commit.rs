//! Group commit: many concurrent callers' writes go to the database in one transaction.
//!
//! Callers [`GroupCommit::submit`] an item and await its result; a few writer tasks each take
//! whatever items are waiting (up to `max_batch`), write them with one [`BatchWriter::write`]
//! call (one transaction, one commit), and answer every caller. Under load this trades a
//! commit and several round trips per item for one per batch; at low load a batch is one item
//! and nothing waits.

use std::future::Future;
use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{PgPool, StorageError};

/// Writes one batch. `write` returns one output per item, in order; an error fails the whole
/// batch (every caller gets it), so item-level problems belong in `Output`.
pub trait BatchWriter: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<Self::Output>, StorageError>> + Send + 'c;
}

type Request<W> = (
    <W as BatchWriter>::Item,
    oneshot::Sender<Result<<W as BatchWriter>::Output, Arc<StorageError>>>,
);

/// A handle to the writer tasks. Cheap to clone; the tasks stop when every handle is dropped.
pub struct GroupCommit<W: BatchWriter> {
    tx: mpsc::Sender<Request<W>>,
}

impl<W: BatchWriter> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<W: BatchWriter> GroupCommit<W> {
    /// Starts `writers` writer tasks taking batches of at most `max_batch` items.
    pub fn start(pool: PgPool, writer: W, writers: usize, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Request<W>>(max_batch.max(1) * writers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let writer = Arc::new(writer);
        for _ in 0..writers.max(1) {
            tokio::spawn(run_writer(
                pool.clone(),
                writer.clone(),
                rx.clone(),
                max_batch.max(1),
            ));
        }
        Self { tx }
    }

    /// Writes `item` in the next batch and returns its output.
    pub async fn submit(&self, item: W::Item) -> Result<W::Output, Arc<StorageError>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| Arc::new(StorageError::Unavailable("group commit stopped".into())))?;
        answer.await.map_err(|_| {
            Arc::new(StorageError::Unavailable(
                "group commit writer dropped the item".into(),
            ))
        })?
    }
}

async fn run_writer<W: BatchWriter>(
    pool: PgPool,
    writer: Arc<W>,
    rx: Arc<Mutex<mpsc::Receiver<Request<W>>>>,
    max_batch: usize,
) {
    loop {
        let mut batch = Vec::with_capacity(max_batch);
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let result = match crate::pool::get(&pool).await {
            Ok(mut conn) => writer.write(&mut conn, items).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(outputs) if outputs.len() == replies.len() => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Ok(outputs) => {
                let err = Arc::new(StorageError::Unavailable(format!(
                    "batch writer returned {} outputs for {} items",
                    outputs.len(),
                    replies.len()
                )));
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
