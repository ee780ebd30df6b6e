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
use tollgate_messaging::batch::{encode_batch, BATCH_CONTENT_TYPE, JSON_CONTENT_TYPE};
use tollgate_messaging::{Broker, MessagingError, OutgoingMessage, Topology};
use tollgate_storage::models::OutboxRow;
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
    /// Most job commands packed into one AMQP message ([`tollgate_messaging::batch`]); 1
    /// publishes every command as a message of its own. Only commands for the execute queue
    /// are packed. A worker holds up to its prefetch × this many commands unacknowledged.
    #[serde(default = "default_commands_per_message")]
    pub commands_per_message: usize,
    /// How long the relay waits after a wake-up before it claims, milliseconds, so that the
    /// commits of that time share its transaction and their commands share messages; 0 (the
    /// default) claims at once. Every row waits up to this long more before it is published.
    #[serde(default)]
    pub linger_ms: u64,
}

fn default_commands_per_message() -> usize {
    16
}

impl Default for RelayConfig {
    /// 500 rows per batch, a 250 ms poll, published rows kept one day, up to 16 job
    /// commands per message, no linger.
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval_ms: 250,
            purge_after_secs: 86_400,
            commands_per_message: default_commands_per_message(),
            linger_ms: 0,
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
            if self.config.linger_ms > 0 {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(self.config.linger_ms)) => {}
                }
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
        let per_message = self.config.commands_per_message;
        let n = conn
            .transaction(async |conn| {
                let rows = outbox::claim_batch(conn, limit).await?;
                if rows.is_empty() {
                    return Ok::<usize, RelayError>(0);
                }
                let messages = messages_for(&rows, broker.topology(), per_message);
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

/// The AMQP messages for a claimed batch of outbox rows. Rows bound for a destination that
/// accepts batches ([`Topology::accepts_batches`]: job commands) are packed in claim order,
/// at most `per_message` to a message; every other row is a message of its own. Commands
/// must reach their queue (mandatory); domain events may have no subscriber yet.
fn messages_for(
    rows: &[OutboxRow],
    topology: &Topology,
    per_message: usize,
) -> Vec<OutgoingMessage> {
    let events_exchange = topology.events_exchange();
    let single = |row: &OutboxRow| OutgoingMessage {
        message_id: row.message_id,
        exchange: row.exchange.clone(),
        routing_key: row.routing_key.clone(),
        payload: row.payload.clone(),
        content_type: JSON_CONTENT_TYPE,
        expiration_ms: None,
        mandatory: row.exchange != events_exchange,
    };
    let mut messages = Vec::new();
    // Packable rows by destination, in claim order.
    let mut packs: Vec<Vec<&OutboxRow>> = Vec::new();
    for row in rows {
        if per_message <= 1 || !topology.accepts_batches(&row.exchange, &row.routing_key) {
            messages.push(single(row));
            continue;
        }
        match packs
            .iter_mut()
            .find(|pack| pack[0].exchange == row.exchange && pack[0].routing_key == row.routing_key)
        {
            Some(pack) => pack.push(row),
            None => packs.push(vec![row]),
        }
    }
    for pack in &packs {
        for chunk in pack.chunks(per_message) {
            let [first, ..] = chunk else { continue };
            if chunk.len() == 1 {
                messages.push(single(first));
                continue;
            }
            messages.push(OutgoingMessage {
                message_id: uuid::Uuid::now_v7(),
                exchange: first.exchange.clone(),
                routing_key: first.routing_key.clone(),
                payload: encode_batch(chunk.iter().map(|row| row.payload.as_slice())),
                content_type: BATCH_CONTENT_TYPE,
                expiration_ms: None,
                mandatory: true,
            });
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, exchange: &str, routing_key: &str) -> OutboxRow {
        OutboxRow {
            id,
            message_id: uuid::Uuid::new_v4(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            payload: format!(r#"{{"row":{id}}}"#).into_bytes(),
            created_at: chrono::Utc::now(),
            published_at: None,
        }
    }

    fn rows_in(message: &OutgoingMessage) -> Vec<i64> {
        let value: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
        match value {
            serde_json::Value::Array(items) => {
                items.iter().map(|v| v["row"].as_i64().unwrap()).collect()
            }
            one => vec![one["row"].as_i64().unwrap()],
        }
    }

    #[test]
    fn commands_are_packed_in_order_and_events_go_alone() {
        let t = Topology::new("p", 3);
        let execute = Topology::EXECUTE_KEY;
        let rows = vec![
            row(1, "p.jobs", execute),
            row(2, "p.events", "invoice.paid"),
            row(3, "p.jobs", execute),
            row(4, "p.jobs", execute),
            row(5, "p.jobs", execute),
            row(6, "p.events", "invoice.paid"),
        ];
        let messages = messages_for(&rows, &t, 3);
        let summary: Vec<(&str, Vec<i64>)> = messages
            .iter()
            .map(|m| (m.content_type, rows_in(m)))
            .collect();
        assert_eq!(
            summary,
            vec![
                (JSON_CONTENT_TYPE, vec![2]),
                (JSON_CONTENT_TYPE, vec![6]),
                (BATCH_CONTENT_TYPE, vec![1, 3, 4]),
                (JSON_CONTENT_TYPE, vec![5]),
            ]
        );
        // A lone row keeps its envelope id as the message id; commands are mandatory, events not.
        assert_eq!(messages[3].message_id, rows[4].message_id);
        assert!(messages[2].mandatory && messages[3].mandatory);
        assert!(!messages[0].mandatory);
    }

    #[test]
    fn one_command_per_message_turns_packing_off() {
        let t = Topology::new("p", 3);
        let rows: Vec<OutboxRow> = (1..=4)
            .map(|i| row(i, "p.jobs", Topology::EXECUTE_KEY))
            .collect();
        let messages = messages_for(&rows, &t, 1);
        assert_eq!(messages.len(), 4);
        assert!(messages.iter().all(|m| m.content_type == JSON_CONTENT_TYPE));
    }
}
