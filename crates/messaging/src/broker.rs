//! The broker handle: one supervised AMQP connection per process. A background task connects
//! with exponential backoff and jitter, declares the topology, opens a publisher-confirm
//! channel, and watches the connection; while it is down [`Broker::is_ready`] is false and
//! publishing fails fast with [`MessagingError::NotConnected`] (callers keep their work in the
//! outbox or unacked, so nothing is lost).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use rand::Rng;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::topology::Topology;

/// Queue flavour. Quorum queues are replicated and the production default; classic queues
/// suit single-node development and tests (they accept `x-expires`, so test queues vanish).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

impl QueueType {
    /// The `x-queue-type` argument value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::Classic => "classic",
        }
    }
}

/// Broker settings (the `amqp` section of each service's configuration).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct BrokerConfig {
    /// `amqp://user:pass@host:port/vhost`. A secret: never logged.
    pub url: String,
    /// Prefix of every exchange and queue name.
    pub prefix: String,
    /// Queue flavour for every declared queue.
    pub queue_type: QueueType,
    /// When set, queues are declared with `x-expires` (milliseconds unused before deletion).
    pub queue_expires_ms: Option<u32>,
    /// Number of retry delay queues.
    pub retry_tiers: u32,
    /// Longest wait between reconnection attempts, milliseconds.
    pub max_reconnect_backoff_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            prefix: "tollgate".to_owned(),
            queue_type: QueueType::Quorum,
            queue_expires_ms: None,
            retry_tiers: 8,
            max_reconnect_backoff_ms: 5_000,
        }
    }
}

/// Messaging failures.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The broker is not connected right now; try again later.
    #[error("broker not connected")]
    NotConnected,
    /// The broker answered a publish with a nack.
    #[error("broker refused (nack) message {0}")]
    Nacked(Uuid),
    /// A mandatory message matched no queue.
    #[error("message {0} was unroutable")]
    Unroutable(Uuid),
    /// A protocol or connection error.
    #[error("amqp error: {0}")]
    Amqp(#[from] lapin::Error),
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Becomes the AMQP `message_id` (the envelope id).
    pub message_id: Uuid,
    pub exchange: String,
    pub routing_key: String,
    /// JSON bytes: one envelope, or a batch of them ([`crate::batch`]).
    pub payload: Vec<u8>,
    /// [`crate::batch::JSON_CONTENT_TYPE`] for one envelope,
    /// [`crate::batch::BATCH_CONTENT_TYPE`] for a JSON array of envelopes.
    pub content_type: &'static str,
    /// Per-message TTL in milliseconds (delay queues).
    pub expiration_ms: Option<u64>,
    /// Must reach a queue: an unroutable message fails the publish ([`MessagingError::Unroutable`]).
    /// True for commands (jobs, retries), whose loss would lose work; false for domain events
    /// on the events exchange, which may have no subscriber yet.
    pub mandatory: bool,
}

struct Live {
    connection: Connection,
    publisher: Channel,
}

struct Inner {
    config: BrokerConfig,
    topology: Topology,
    live: RwLock<Option<Live>>,
    ready: AtomicBool,
    name: String,
}

/// A cheap-to-clone handle on the supervised connection.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// Starts the supervisor task. `name` labels the connection in RabbitMQ's management UI.
    /// The task stops, closing the connection, when `cancel` fires.
    pub fn start(name: &str, config: BrokerConfig, cancel: CancellationToken) -> Self {
        let topology = Topology::new(&config.prefix, config.retry_tiers);
        let broker = Self {
            inner: Arc::new(Inner {
                config,
                topology,
                live: RwLock::new(None),
                ready: AtomicBool::new(false),
                name: name.to_owned(),
            }),
        };
        tokio::spawn(broker.clone().supervise(cancel));
        broker
    }

    /// The names this broker declared.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// True while connected with the topology declared.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Waits until ready, at most `timeout`; returns readiness.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Opens a new channel on the live connection (for a consumer).
    pub async fn open_channel(&self) -> Result<Channel, MessagingError> {
        let live = self.inner.live.read().await;
        let live = live.as_ref().ok_or(MessagingError::NotConnected)?;
        Ok(live.connection.create_channel().await?)
    }

    /// Publishes every message (persistent; mandatory when the message says so) and waits for
    /// the broker's confirms. Succeeds only when every message was acked and every mandatory
    /// one routed; on any error some of them may
    /// still have been delivered, so a caller that retries publishes duplicates, which
    /// Tollgate's consumers tolerate by design.
    pub async fn publish_batch(&self, messages: &[OutgoingMessage]) -> Result<(), MessagingError> {
        if messages.is_empty() {
            return Ok(());
        }
        let channel = {
            let live = self.inner.live.read().await;
            live.as_ref()
                .ok_or(MessagingError::NotConnected)?
                .publisher
                .clone()
        };
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let mut properties = BasicProperties::default()
                .with_message_id(message.message_id.to_string().into())
                .with_content_type(message.content_type.into())
                .with_delivery_mode(2);
            if let Some(ms) = message.expiration_ms {
                properties = properties.with_expiration(ms.to_string().into());
            }
            let confirm = channel
                .basic_publish(
                    message.exchange.as_str().into(),
                    message.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: message.mandatory,
                        ..Default::default()
                    },
                    &message.payload,
                    properties,
                )
                .await?;
            pending.push((message.message_id, confirm));
        }
        for (id, confirm) in pending {
            match confirm.await? {
                lapin::Confirmation::Ack(None) => {}
                lapin::Confirmation::Ack(Some(_)) => return Err(MessagingError::Unroutable(id)),
                // NotRequested cannot happen on a confirm-mode channel; treat it as unconfirmed.
                lapin::Confirmation::Nack(_) | lapin::Confirmation::NotRequested => {
                    return Err(MessagingError::Nacked(id))
                }
            }
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Live, MessagingError> {
        let properties =
            ConnectionProperties::default().with_connection_name(self.inner.name.clone().into());
        let connection = Connection::connect(&self.inner.config.url, properties).await?;
        let setup = connection.create_channel().await?;
        self.inner
            .topology
            .declare(
                &setup,
                self.inner.config.queue_type,
                self.inner.config.queue_expires_ms,
            )
            .await?;
        let _ = setup.close(200, "topology declared".into()).await;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Live {
            connection,
            publisher,
        })
    }

    async fn supervise(self, cancel: CancellationToken) {
        let max_backoff =
            Duration::from_millis(self.inner.config.max_reconnect_backoff_ms.max(100));
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = tokio::select! {
                _ = cancel.cancelled() => break,
                attempt = self.connect() => attempt,
            };
            match attempt {
                Ok(live) => {
                    backoff = Duration::from_millis(100);
                    *self.inner.live.write().await = Some(live);
                    self.inner.ready.store(true, Ordering::Release);
                    tracing::info!(broker = %self.inner.name, "connected to RabbitMQ, topology declared");
                    self.watch(&cancel).await;
                    self.inner.ready.store(false, Ordering::Release);
                    if let Some(live) = self.inner.live.write().await.take() {
                        let _ = live.connection.close(200, "reconnecting".into()).await;
                    }
                    if cancel.is_cancelled() {
                        break;
                    }
                    tracing::warn!(broker = %self.inner.name, "lost RabbitMQ connection; reconnecting");
                }
                Err(err) => {
                    tracing::warn!(broker = %self.inner.name, error = %err, backoff_ms = backoff.as_millis() as u64, "RabbitMQ connect failed; retrying");
                    let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 4);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
        self.inner.ready.store(false, Ordering::Release);
        if let Some(live) = self.inner.live.write().await.take() {
            let _ = live.connection.close(200, "shutting down".into()).await;
        }
    }

    /// Returns when the connection or the publisher channel is no longer usable, or on cancel.
    async fn watch(&self, cancel: &CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let live = self.inner.live.read().await;
            let healthy = live.as_ref().is_some_and(|l| {
                l.connection.status().connected() && l.publisher.status().connected()
            });
            if !healthy {
                return;
            }
        }
    }
}
