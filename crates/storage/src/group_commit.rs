//! Group commit: many concurrent callers' writes go to the database in one transaction.
//!
//! Callers [`GroupCommit::submit`] an item and await its result; a few writer tasks each take
//! whatever items are waiting (up to `max_batch`), write them with one [`BatchWriter::write`]
//! call (one transaction, one commit), and answer every caller. Under load this trades a
//! commit and several round trips per item for one per batch; at low load a batch is one item
//! and nothing waits, unless the group commit lingers: then a writer holding fewer than
//! `max_batch` items waits for more until the oldest of them has waited `linger` (for writes
//! no client is timing, such as the worker's, where larger batches at moderate load save a
//! statement's fixed cost per item; under load the oldest item has already waited out the
//! statement before, so a linger shorter than a statement adds nothing there).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;

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

/// An item, where its caller waits for the output, and when it was submitted.
struct Request<W: BatchWriter> {
    item: W::Item,
    reply: oneshot::Sender<Result<W::Output, Arc<StorageError>>>,
    submitted: Instant,
}

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
    /// Starts `writers` writer tasks taking batches of at most `max_batch` items; a writer
    /// that has fewer waits for more until the oldest has waited `linger` since its
    /// submission (`Duration::ZERO`: it writes what is waiting at once).
    pub fn start(
        pool: PgPool,
        writer: W,
        writers: usize,
        max_batch: usize,
        linger: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Request<W>>(max_batch.max(1) * writers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let writer = Arc::new(writer);
        for _ in 0..writers.max(1) {
            tokio::spawn(run_writer(
                pool.clone(),
                writer.clone(),
                rx.clone(),
                max_batch.max(1),
                linger,
            ));
        }
        Self { tx }
    }

    /// Writes `item` in the next batch and returns its output.
    pub async fn submit(&self, item: W::Item) -> Result<W::Output, Arc<StorageError>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                item,
                reply,
                submitted: Instant::now(),
            })
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
    linger: Duration,
) {
    loop {
        let mut batch = Vec::with_capacity(max_batch);
        {
            // The other writers wait for the receiver while this one gathers.
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            // The linger counts from the oldest item's submission: under load it has waited
            // out the statement before, and the batch is written without a further wait.
            let deadline = first.submitted + linger;
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(TryRecvError::Empty) if !linger.is_zero() => {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(request)) => batch.push(request),
                            // The linger is over, or every handle is gone: write what is here.
                            Ok(None) | Err(_) => break,
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|request| (request.item, request.reply))
            .unzip();
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
