//! The fan-out consumer: takes tenants' domain events from the events exchange (durable queue
//! `{prefix}.webhook.fanout`, bound to [`FANOUT_BINDINGS`]) and turns each into a message and
//! one pending delivery per enabled endpoint of the tenant subscribed to its type, in one
//! transaction; acks only after the commit (SPEC "Messaging").
//!
//! Idempotent on the envelope id: a redelivered event finds its message stored and writes
//! nothing. An event no endpoint wants is acked without a write. Undecodable messages are
//! rejected to the dead-letter exchange; a database failure requeues the message after a
//! pause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_domain::Envelope;
use tollgate_messaging::{Broker, MessagingError, QueueType};
use tollgate_storage::webhooks::{self as store, DeliveryRow, MessageRow};
use tollgate_storage::{PgPool, StorageError};
use uuid::Uuid;

use crate::events::FANOUT_BINDINGS;
use crate::metrics::WebhookMetrics;

/// What the fan-out did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOut {
    /// A message and this many deliveries were written.
    Delivered(usize),
    /// No enabled endpoint of the tenant wants the type (or the event has no tenant).
    NoEndpoint,
    /// The message was stored already (a redelivered event).
    Duplicate,
}

/// Stores `envelope` for the tenant's subscribed endpoints (see the module docs). The data
/// goes out as the envelope's `data`, its `time` as the payload's `timestamp`.
pub async fn fan_out(
    conn: &mut diesel_async::AsyncPgConnection,
    envelope: &Envelope<serde_json::Value>,
) -> Result<FanOut, StorageError> {
    use diesel_async::AsyncConnection;
    let tenant = envelope.tenant.as_uuid();
    if tenant.is_nil() {
        return Ok(FanOut::NoEndpoint);
    }
    conn.transaction(async |conn| {
        let endpoints = store::subscribed_endpoints(conn, tenant, &envelope.event_type).await?;
        if endpoints.is_empty() {
            return Ok(FanOut::NoEndpoint);
        }
        let now = Utc::now();
        let inserted = store::insert_message(
            conn,
            &MessageRow {
                id: envelope.id,
                tenant_id: tenant,
                event_type: envelope.event_type.clone(),
                payload: envelope.data.clone(),
                occurred_at: envelope.time,
                created_at: now,
            },
        )
        .await?;
        if !inserted {
            return Ok(FanOut::Duplicate);
        }
        let rows: Vec<DeliveryRow> = endpoints
            .iter()
            .map(|endpoint| DeliveryRow {
                id: Uuid::now_v7(),
                message_id: envelope.id,
                endpoint_id: *endpoint,
                tenant_id: tenant,
                status: "pending".into(),
                attempts: 0,
                next_attempt_at: Some(now),
                manual: false,
                last_status_code: None,
                last_error: None,
                created_at: now,
                updated_at: now,
            })
            .collect();
        store::insert_deliveries(conn, &rows).await?;
        Ok(FanOut::Delivered(rows.len()))
    })
    .await
}

/// The consumer's inputs.
pub struct Fanout {
    pub pool: PgPool,
    pub broker: Broker,
    pub prefetch: u16,
    /// The queue's flavour and expiry (the broker's `amqp` settings).
    pub queue_type: QueueType,
    pub queue_expires_ms: Option<u32>,
    /// Woken when deliveries were written.
    pub dispatch_wake: Arc<Notify>,
    pub metrics: WebhookMetrics,
    /// True while the queue is declared, bound and consumed. Events published before the
    /// queue first exists are not routed to it (the events exchange drops unroutable events).
    pub consuming: Arc<AtomicBool>,
}

impl Fanout {
    /// The durable queue: `{prefix}.webhook.fanout`.
    pub fn queue_name(broker: &Broker) -> String {
        // The events exchange is `{prefix}.events`.
        let exchange = broker.topology().events_exchange();
        let prefix = exchange.strip_suffix(".events").unwrap_or(&exchange);
        format!("{prefix}.webhook.fanout")
    }

    /// Consumes until `stop` fires; then stops taking messages and finishes (and acks) the
    /// ones it holds. Reconnects when the channel is lost.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        // The channel of the current consumer, kept open until what it delivered is settled.
        let mut channel = None;
        while !stop.is_cancelled() {
            if !self.broker.is_ready() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
            let mut consumer = match self.subscribe().await {
                Ok((open, consumer)) => {
                    channel = Some(open);
                    self.consuming.store(true, Ordering::Release);
                    consumer
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot consume the webhook fan-out queue; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break,
                    next = consumer.next() => next,
                };
                match next {
                    Some(Ok(delivery)) => {
                        let this = self.clone();
                        tracker.spawn(async move { this.handle(delivery).await });
                    }
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "fan-out consumer error; reconnecting");
                        break;
                    }
                    None => break,
                }
            }
            self.consuming.store(false, Ordering::Release);
        }
        tracker.close();
        tracker.wait().await;
        drop(channel);
    }

    async fn subscribe(&self) -> Result<(lapin::Channel, lapin::Consumer), MessagingError> {
        let channel = self.broker.open_channel().await?;
        let topology = self.broker.topology();
        let queue = Self::queue_name(&self.broker);
        topology
            .declare_event_queue(
                &channel,
                &queue,
                FANOUT_BINDINGS,
                self.queue_type,
                self.queue_expires_ms,
            )
            .await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("webhook-fanout-{}", Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %queue, "consuming domain events for webhooks");
        Ok((channel, consumer))
    }

    async fn handle(&self, delivery: Delivery) {
        let envelope = match serde_json::from_slice::<Envelope<serde_json::Value>>(&delivery.data) {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::error!(error = %err, "undecodable event on the webhook fan-out queue; dead-lettering");
                self.metrics
                    .fanout
                    .with_label_values(&["undecodable"])
                    .inc();
                if let Err(err) = delivery.reject(BasicRejectOptions { requeue: false }).await {
                    tracing::warn!(error = %err, "could not reject a delivery");
                }
                return;
            }
        };
        let result = async {
            let mut conn = tollgate_storage::pool::get(&self.pool).await?;
            fan_out(&mut conn, &envelope).await
        }
        .await;
        let settled = match result {
            Ok(outcome) => {
                let label = match outcome {
                    FanOut::Delivered(_) => "fanned_out",
                    FanOut::NoEndpoint => "no_endpoint",
                    FanOut::Duplicate => "duplicate",
                };
                self.metrics.fanout.with_label_values(&[label]).inc();
                if let FanOut::Delivered(_) = outcome {
                    self.dispatch_wake.notify_one();
                }
                delivery.ack(BasicAckOptions::default()).await
            }
            Err(err) => {
                tracing::warn!(event = %envelope.id, error = %err, "fanning out an event failed; requeueing");
                self.metrics.fanout.with_label_values(&["error"]).inc();
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            }
        };
        if let Err(err) = settled {
            // The channel is gone: RabbitMQ redelivers the message, which is harmless.
            tracing::warn!(error = %err, "could not settle a fan-out delivery");
        }
    }
}
