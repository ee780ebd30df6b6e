//! Queue and exchange names for one deployment (or one test: every name carries the prefix),
//! and their declaration.
//!
//! ```text
//! {p}.jobs (direct) --execute--> {p}.jobs.execute --(rejected)--> {p}.dlx (fanout) --> {p}.dead-letter
//! {p}.events (topic) <--billing.*, usage.*-- (outbox relay)
//! {p}.jobs.retry (direct) --retry.N--> {p}.jobs.retry.N  --(per-message TTL expires)--> {p}.jobs / execute
//! ```
//! Retries wait in a delay queue per attempt number, so messages in one queue have similar
//! TTLs and RabbitMQ's expire-at-head behaviour delays a message by at most the jitter spread.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::broker::QueueType;

/// The names of every exchange and queue of one deployment.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    /// Number of delay queues (attempts 1..=retry_tiers can be retried; later ones reuse the last).
    pub retry_tiers: u32,
}

impl Topology {
    /// Routing key of the execute queue on the jobs exchange.
    pub const EXECUTE_KEY: &'static str = "execute";

    /// Names under `prefix` (e.g. `tollgate`).
    pub fn new(prefix: &str, retry_tiers: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            retry_tiers: retry_tiers.max(1),
        }
    }

    /// The jobs exchange (direct).
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// The queue workers consume.
    pub fn execute_queue(&self) -> String {
        format!("{}.jobs.execute", self.prefix)
    }

    /// Whether messages to `exchange` with `routing_key` may be batches of envelopes
    /// ([`crate::batch`]): only job commands for the execute queue, whose consumer (the
    /// worker) unpacks them. Domain events go out one per message.
    pub fn accepts_batches(&self, exchange: &str, routing_key: &str) -> bool {
        routing_key == Self::EXECUTE_KEY && exchange == self.jobs_exchange()
    }

    /// The exchange retries are published to (direct).
    pub fn retry_exchange(&self) -> String {
        format!("{}.jobs.retry", self.prefix)
    }

    /// Routing key (and queue suffix) of the delay queue used after failed attempt `attempt`.
    pub fn retry_key(&self, attempt: u32) -> String {
        format!("retry.{}", attempt.clamp(1, self.retry_tiers))
    }

    /// The domain-events exchange (topic): billing and usage news, routed by event type
    /// (`subscription.updated`, `invoice.finalized`, `payment.requested`,
    /// `usage.threshold_reached`). Consumers (the webhook service) bind their own queues.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The dead-letter exchange (fanout) for messages a consumer rejects.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// The queue holding rejected (undecodable) messages for operators.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// Every queue name this topology declares.
    pub fn queues(&self) -> Vec<String> {
        let mut names = vec![self.execute_queue(), self.dead_letter_queue()];
        names.extend(
            (1..=self.retry_tiers).map(|n| format!("{}.jobs.{}", self.prefix, self.retry_key(n))),
        );
        names
    }

    /// Declares everything (idempotent; durable exchanges and queues).
    pub async fn declare(
        &self,
        channel: &Channel,
        queue_type: QueueType,
        queue_expires_ms: Option<u32>,
    ) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (self.jobs_exchange(), ExchangeKind::Direct),
            (self.retry_exchange(), ExchangeKind::Direct),
            (self.dead_letter_exchange(), ExchangeKind::Fanout),
            (self.events_exchange(), ExchangeKind::Topic),
        ] {
            channel
                .exchange_declare(name.into(), kind, durable, FieldTable::default())
                .await?;
        }

        let base_args = |extra: &[(&str, AMQPValue)]| {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), long_string(queue_type.as_str()));
            if let Some(ms) = queue_expires_ms {
                args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
            }
            for (k, v) in extra {
                args.insert(ShortString::from(*k), v.clone());
            }
            args
        };

        let execute = self.execute_queue();
        self.declare_queue(
            channel,
            &execute,
            base_args(&[(
                "x-dead-letter-exchange",
                long_string(&self.dead_letter_exchange()),
            )]),
        )
        .await?;
        channel
            .queue_bind(
                execute.into(),
                self.jobs_exchange().into(),
                Self::EXECUTE_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        let dead = self.dead_letter_queue();
        self.declare_queue(channel, &dead, base_args(&[])).await?;
        channel
            .queue_bind(
                dead.into(),
                self.dead_letter_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        for tier in 1..=self.retry_tiers {
            let key = self.retry_key(tier);
            let name = format!("{}.jobs.{}", self.prefix, key);
            let mut extra = vec![
                ("x-dead-letter-exchange", long_string(&self.jobs_exchange())),
                ("x-dead-letter-routing-key", long_string(Self::EXECUTE_KEY)),
            ];
            if queue_type == QueueType::Quorum {
                // Quorum queues dead-letter at-most-once unless asked otherwise; a retry that
                // expires must reach the execute queue (RabbitMQ 3.10+).
                extra.push(("x-dead-letter-strategy", long_string("at-least-once")));
                extra.push(("x-overflow", long_string("reject-publish")));
            }
            self.declare_queue(channel, &name, base_args(&extra))
                .await?;
            channel
                .queue_bind(
                    name.into(),
                    self.retry_exchange().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declares a service's own durable queue on the events exchange (billing's
    /// `{p}.billing.psp`, the webhook service's `{p}.webhook.fanout`): of `queue_type`, expiring
    /// after `queue_expires_ms` unused when set, dead-lettering rejected messages to `{p}.dlx`,
    /// and bound to `{p}.events` with each of `bindings` (topic patterns such as `psp.#`).
    /// Idempotent, like [`Topology::declare`].
    pub async fn declare_event_queue(
        &self,
        channel: &Channel,
        name: &str,
        bindings: &[&str],
        queue_type: QueueType,
        queue_expires_ms: Option<u32>,
    ) -> Result<(), lapin::Error> {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string(queue_type.as_str()));
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.dead_letter_exchange()),
        );
        if let Some(ms) = queue_expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        self.declare_queue(channel, name, args).await?;
        let exchange = self.events_exchange();
        for binding in bindings {
            channel
                .queue_bind(
                    name.into(),
                    exchange.as_str().into(),
                    (*binding).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        name: &str,
        args: FieldTable,
    ) -> Result<(), lapin::Error> {
        channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .map(|_| ())
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_retry_keys_clamp() {
        let t = Topology::new("t42", 3);
        assert_eq!(t.execute_queue(), "t42.jobs.execute");
        assert!(t.accepts_batches("t42.jobs", Topology::EXECUTE_KEY));
        assert!(!t.accepts_batches("t42.events", Topology::EXECUTE_KEY));
        assert!(!t.accepts_batches("t42.jobs.retry", "retry.1"));
        assert_eq!(t.retry_key(1), "retry.1");
        assert_eq!(t.retry_key(9), "retry.3");
        assert_eq!(t.queues().len(), 5);
        assert!(t.queues().iter().all(|q| q.starts_with("t42.")));
    }
}
