//! The outbox relay (SPEC "Messaging"): claims unpublished rows with `FOR UPDATE SKIP LOCKED` (so intake replicas
//! never publish the same row twice in normal operation), publishes them with publisher
//! confirms, stamps them published and commits. A crash between the broker's confirm and the
//! commit republishes the batch; consumers are idempotent, so that is harmless.
//!
//! Every service that writes outbox rows runs one (job-intake, billing, webhook): the table is
//! shared, so any relay publishes any row, and `SKIP LOCKED` keeps them out of each other's
//! way. A relay wakes when its process commits a row ([`Relay::wake`]), and polls as a
//! fallback (rows written by other processes or the operator CLI). While the broker is down it
//! waits; rows stay in the outbox, so work accepted meanwhile is published when it returns.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncConnection;
use prometheus::IntCounter;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tollgate_messaging::{Broker, MessagingError, OutgoingMessage};
use tollgate_storage::{outbox, PgPool, StorageError};

/// Outbox relay settings (the `[relay]` section of a service's configuration).
#[derive(Debug, Clone, Deserialize)]
pub struct RelayConfig {
    /// Messages claimed and published per transaction.
    pub batch_size: i64,
    /// Fallback polling period when nothing wakes the relay, milliseconds.
    pub poll_interval_ms: u64,
    /// Published rows older than this are deleted, seconds.
    pub purge_after_secs: i64,
}

impl Default for RelayConfig {
    /// 500 rows per batch, a 250 ms poll, published rows kept one day.
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval_ms: 250,
            purge_after_secs: 86_400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Publish(#[from] MessagingError),
}

impl From<diesel::result::Error> for RelayError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Storage(err.into())
    }
}

/// The relay task's inputs. `published` counts confirmed messages
/// (`tollgate_outbox_published_total`; see [`Relay::counter`]).
pub struct Relay {
    pub pool: PgPool,
    pub broker: Broker,
    pub config: RelayConfig,
    pub wake: Arc<Notify>,
    pub published: IntCounter,
}

impl Relay {
    /// The `tollgate_outbox_published_total` counter, registered in `registry`.
    pub fn counter(registry: &prometheus::Registry) -> Result<IntCounter, prometheus::Error> {
        let published = IntCounter::new(
            "tollgate_outbox_published_total",
            "Outbox messages published and confirmed",
        )?;
        registry.register(Box::new(published.clone()))?;
        Ok(published)
    }

    /// Runs until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_interval_ms.max(10));
        let mut last_purge = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            if !self.broker.is_ready() {
                continue;
            }
            loop {
                match self.relay_batch().await {
                    Ok(n) if n as i64 >= self.config.batch_size => continue,
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, "outbox relay batch failed; will retry");
                        break;
                    }
                }
            }
            if last_purge.elapsed() > Duration::from_secs(60) {
                last_purge = tokio::time::Instant::now();
                if let Err(err) = self.purge().await {
                    tracing::warn!(error = %err, "outbox purge failed");
                }
            }
        }
    }

    /// Publishes one batch; returns how many rows it published.
    async fn relay_batch(&self) -> Result<usize, RelayError> {
        let mut conn = tollgate_storage::pool::get(&self.pool).await?;
        let limit = self.config.batch_size;
        let broker = &self.broker;
        // Domain events may have no subscriber yet; commands must reach their queue.
        let events_exchange = broker.topology().events_exchange();
        let n = conn
            .transaction(async |conn| {
                let rows = outbox::claim_batch(conn, limit).await?;
                if rows.is_empty() {
                    return Ok::<usize, RelayError>(0);
                }
                let messages: Vec<OutgoingMessage> = rows
                    .iter()
                    .map(|row| OutgoingMessage {
                        message_id: row.message_id,
                        exchange: row.exchange.clone(),
                        routing_key: row.routing_key.clone(),
                        payload: row.payload.clone(),
                        expiration_ms: None,
                        mandatory: row.exchange != events_exchange,
                    })
                    .collect();
                broker.publish_batch(&messages).await?;
                let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
                outbox::mark_published(conn, &ids).await?;
                Ok(rows.len())
            })
            .await?;
        self.published.inc_by(n as u64);
        Ok(n)
    }

    async fn purge(&self) -> Result<(), StorageError> {
        let mut conn = tollgate_storage::pool::get(&self.pool).await?;
        let purged = outbox::purge_published(&mut conn, self.config.purge_after_secs).await?;
        if purged > 0 {
            tracing::debug!(purged, "purged published outbox rows");
        }
        Ok(())
    }
}
