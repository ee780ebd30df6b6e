//! The consumer: takes execute messages (one job command each, or a batch of them packed by
//! the outbox relay) with manual acks and a bounded prefetch, runs each attempt (at most
//! `prefetch` executor calls at once), commits its outcome, and only then acks. Retries go to the delay
//! queue for the attempt (TTL + dead-letter back to the execute queue), never by sleeping on
//! a message.
//!
//! Exactly-once billing rests on two walls: the job's state guard (a terminal job is never
//! completed again) and the ledger's unique idempotency key `job:<job id>`. A message can be
//! delivered more than once (a crash before the ack, a republished outbox batch); the
//! executor may then run more than once, but the job is billed once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use prometheus::{HistogramVec, IntCounterVec};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_domain::{Envelope, JobCommand, JobEvent, JobId, TenantId};
use tollgate_messaging::{batch, Broker, OutgoingMessage};
use tollgate_storage::catalog::Catalog;
use tollgate_storage::group_commit::GroupCommit;
use tollgate_storage::jobs::{
    AttemptFinisher, AttemptStarter, Failure, FailureNext, Finished, Success,
};
use tollgate_storage::models::{NewLedgerEntry, NewOutboxMessage};
use tollgate_storage::{PgPool, StorageError};
use tracing::Instrument;

use crate::config::RetryConfig;
use crate::executor::{execute_http, Outcome};
use crate::job_events::JobEventSubscribers;

/// Worker metrics.
#[derive(Clone)]
pub struct WorkerMetrics {
    /// `tollgate_job_attempts_total{outcome}`: succeeded, retried, dead, failed, duplicate.
    pub attempts: IntCounterVec,
    /// `tollgate_job_execution_seconds{outcome}`.
    pub execution: HistogramVec,
}

/// Everything a message handler needs.
pub struct Consumer {
    pub pool: PgPool,
    pub broker: Broker,
    pub http: reqwest::Client,
    pub catalog: Catalog,
    /// Batches attempt starts (`processing`) into shared statements.
    pub starts: GroupCommit<AttemptStarter>,
    /// Batches finished attempts (job state, cost, attempt record, ledger entry) into shared
    /// transactions.
    pub finishes: GroupCommit<AttemptFinisher>,
    pub retry: RetryConfig,
    pub prefetch: u16,
    /// Executor calls at once (`prefetch` permits): a batch message carries several
    /// commands, and only the executor call holds a permit, not the waits for the start and
    /// the completion to commit.
    pub in_flight: tokio::sync::Semaphore,
    pub metrics: WorkerMetrics,
    /// Tenants whose webhook endpoints want job events.
    pub job_events: JobEventSubscribers,
    /// Wakes the worker's outbox relay after a commit that wrote job events.
    pub relay_wake: Arc<tokio::sync::Notify>,
}

/// What to do with the delivery once the handler is done.
enum Settle {
    Ack,
    /// Put it back (a transient failure of our own: database or broker).
    Requeue,
    /// Dead-letter it (undecodable).
    Reject,
}

impl Consumer {
    /// Consumes until `stop` fires (graceful: stop taking messages, finish and ack what is
    /// held) or `kill` fires (abrupt, as a crash: drop what is held unacked, so RabbitMQ
    /// redelivers it).
    pub async fn run(self: Arc<Self>, stop: CancellationToken, kill: CancellationToken) {
        let tracker = TaskTracker::new();
        'connection: while !stop.is_cancelled() && !kill.is_cancelled() {
            if !self.broker.is_ready() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = kill.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
            let channel = match self.broker.open_channel().await {
                Ok(channel) => channel,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot open consumer channel; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let queue = self.broker.topology().execute_queue();
            let consumer = async {
                channel
                    .basic_qos(self.prefetch, BasicQosOptions::default())
                    .await?;
                channel
                    .basic_consume(
                        queue.as_str().into(),
                        format!("worker-{}", uuid::Uuid::new_v4().simple()).into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            }
            .await;
            let mut consumer = match consumer {
                Ok(consumer) => consumer,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start consuming; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            tracing::info!(queue = %queue, prefetch = self.prefetch, "consuming");
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break 'connection,
                    _ = kill.cancelled() => break 'connection,
                    next = consumer.next() => next,
                };
                match next {
                    Some(Ok(delivery)) => {
                        let this = self.clone();
                        let kill = kill.clone();
                        tracker.spawn(async move {
                            tokio::select! {
                                _ = kill.cancelled() => {}
                                _ = this.handle(delivery) => {}
                            }
                        });
                    }
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "consumer error; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("consumer stream ended; reconnecting");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracker.close();
        if kill.is_cancelled() {
            tracker.wait().await;
            return;
        }
        // Graceful: the loop above stopped taking messages; finish and ack what we hold.
        tracing::info!(in_flight = tracker.len(), "draining in-flight jobs");
        tracker.wait().await;
    }

    /// Runs the commands a delivery carries (one envelope, or a batch of them from the outbox
    /// relay, [`tollgate_messaging::batch`]) and settles it: ack when every command is
    /// committed, requeue the whole message when any failed on our side (the commands
    /// already committed are no-ops on redelivery), dead-letter what does not decode.
    async fn handle(&self, delivery: Delivery) {
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|t| t.as_str());
        let commands = if batch::is_batch(content_type) {
            serde_json::from_slice::<Vec<Envelope<JobCommand>>>(&delivery.data)
        } else {
            serde_json::from_slice::<Envelope<JobCommand>>(&delivery.data).map(|one| vec![one])
        };
        let settle = match commands {
            Ok(commands) => {
                let done = join_all(commands.into_iter().map(|c| self.run_command(c))).await;
                if done.into_iter().all(|ok| ok) {
                    Settle::Ack
                } else {
                    // Requeue after a pause so a database outage does not spin.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Settle::Requeue
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "undecodable job message; dead-lettering");
                Settle::Reject
            }
        };
        let result = match settle {
            Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
            Settle::Requeue => {
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            }
            Settle::Reject => delivery.reject(BasicRejectOptions { requeue: false }).await,
        };
        if let Err(err) = result {
            // The channel is gone: RabbitMQ redelivers the message, which is safe.
            tracing::warn!(error = %err, "could not settle delivery");
        }
    }

    /// Runs one command; false when it failed on our side (database, broker) and the message
    /// must be requeued.
    async fn run_command(&self, envelope: Envelope<JobCommand>) -> bool {
        let JobCommand::ExecuteV1 { job_id, attempt } = envelope.data;
        let span =
            tracing::info_span!("job", job_id = %job_id, tenant_id = %envelope.tenant, attempt);
        match self
            .process(envelope.tenant, job_id, attempt.max(1))
            .instrument(span)
            .await
        {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(job_id = %job_id, error = %err, "job handling failed; requeueing");
                false
            }
        }
    }

    /// Runs attempt `attempt` of a job and commits its outcome. Errors are our own transient
    /// failures (database, broker); the caller requeues the message.
    async fn process(
        &self,
        tenant: TenantId,
        job_id: JobId,
        attempt: u32,
    ) -> Result<(), ProcessError> {
        let attempt_i32 = i32::try_from(attempt).unwrap_or(i32::MAX);
        let Some(job) = self.starts.submit((job_id.as_uuid(), attempt_i32)).await? else {
            self.metrics
                .attempts
                .with_label_values(&["duplicate"])
                .inc();
            tracing::debug!(job_id = %job_id, "job already finished or unknown; acking duplicate");
            return Ok(());
        };
        let started = Instant::now();
        let job_type = self
            .catalog
            .job_type(&self.pool, job.tenant_id, &job.job_type)
            .await?;
        let (outcome, weight) = match &job_type {
            Some(t) => {
                let timeout = Duration::from_millis(u64::try_from(t.timeout_ms).unwrap_or(30_000));
                // A slot of the worker's concurrency for the executor call only: commands
                // waiting for their start or completion to commit hold none. The semaphore is
                // never closed; a closed one would mean "retry later".
                let _slot = self
                    .in_flight
                    .acquire()
                    .await
                    .map_err(|_| ProcessError::Stopping)?;
                let outcome = execute_http(
                    &self.http,
                    &t.endpoint,
                    timeout,
                    job_id,
                    &job.job_type,
                    attempt,
                    &job.input,
                )
                .await;
                (outcome, t.weight)
            }
            None => (
                Outcome::Permanent {
                    error: format!("job type `{}` is no longer in the catalog", job.job_type),
                    http_status: None,
                },
                0,
            ),
        };
        let duration = started.elapsed();
        let duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let label = match outcome {
            Outcome::Success { output, units } => {
                let Some(cost) = units.checked_mul(weight) else {
                    let error = format!("cost overflow: {units} units × weight {weight}");
                    let failure = Failure {
                        job_id: job_id.as_uuid(),
                        attempt: attempt_i32,
                        next: FailureNext::Failed,
                        event: self.failure_event(
                            tenant,
                            job_id,
                            &job.job_type,
                            attempt_i32,
                            FailureNext::Failed,
                            &error,
                            None,
                        )?,
                        error,
                        http_status: None,
                        duration_ms,
                    };
                    self.finish(Finished::Failure(failure)).await?;
                    self.metrics.attempts.with_label_values(&["failed"]).inc();
                    return Ok(());
                };
                let success = Success {
                    job_id: job_id.as_uuid(),
                    attempt: attempt_i32,
                    output,
                    units,
                    cost,
                    duration_ms,
                    ledger_entry: NewLedgerEntry {
                        tenant_id: Some(tenant.as_uuid()),
                        idempotency_key: format!("job:{job_id}"),
                        metric: format!("job.{}", job.job_type),
                        raw_units: units,
                        weighted_units: cost,
                        cost,
                        source_kind: "job".to_owned(),
                        source_id: job_id.to_string(),
                        context: serde_json::json!({ "job_type": job.job_type, "attempt": attempt, "weight": weight }),
                        occurred_at: chrono::Utc::now(),
                        // Resolved to the owner in force when the completion commits.
                        account_id: None,
                        workspace_id: job.workspace_id,
                        dimension: None,
                        reverses_id: None,
                    },
                    event: self.success_event(
                        tenant,
                        job_id,
                        &job.job_type,
                        attempt_i32,
                        units,
                        cost,
                    )?,
                };
                if self.finish(Finished::Success(Box::new(success))).await? {
                    "succeeded"
                } else {
                    "duplicate"
                }
            }
            Outcome::Retryable { error, http_status } => {
                let next = if attempt_i32 < job.max_attempts {
                    FailureNext::Retry
                } else {
                    FailureNext::Dead
                };
                let http_status = http_status.map(i32::from);
                let failure = Failure {
                    job_id: job_id.as_uuid(),
                    attempt: attempt_i32,
                    next,
                    event: self.failure_event(
                        tenant,
                        job_id,
                        &job.job_type,
                        attempt_i32,
                        next,
                        &error,
                        http_status,
                    )?,
                    error,
                    http_status,
                    duration_ms,
                };
                let recorded = self.finish(Finished::Failure(failure)).await?;
                match (recorded, next) {
                    (false, _) => "duplicate",
                    (true, FailureNext::Retry) => {
                        // Committed as `retrying`; if this publish fails, the message is
                        // requeued and the next delivery retries the attempt.
                        self.publish_retry(tenant, job_id, attempt).await?;
                        "retried"
                    }
                    (true, _) => "dead",
                }
            }
            Outcome::Permanent { error, http_status } => {
                let http_status = http_status.map(i32::from);
                let failure = Failure {
                    job_id: job_id.as_uuid(),
                    attempt: attempt_i32,
                    next: FailureNext::Failed,
                    event: self.failure_event(
                        tenant,
                        job_id,
                        &job.job_type,
                        attempt_i32,
                        FailureNext::Failed,
                        &error,
                        http_status,
                    )?,
                    error,
                    http_status,
                    duration_ms,
                };
                if self.finish(Finished::Failure(failure)).await? {
                    "failed"
                } else {
                    "duplicate"
                }
            }
        };
        self.metrics.attempts.with_label_values(&[label]).inc();
        self.metrics
            .execution
            .with_label_values(&[label])
            .observe(duration.as_secs_f64());
        tracing::info!(job_id = %job_id, attempt, outcome = label, duration_ms, "attempt finished");
        Ok(())
    }

    /// Commits a finished attempt (group commit); wakes the relay when the commit wrote a job
    /// event. Returns whether the attempt moved the job.
    async fn finish(&self, finished: Finished) -> Result<bool, ProcessError> {
        let has_event = match &finished {
            Finished::Success(success) => success.event.is_some(),
            Finished::Failure(failure) => failure.event.is_some(),
        };
        let moved = self.finishes.submit(finished).await?;
        if moved && has_event {
            self.relay_wake.notify_one();
        }
        Ok(moved)
    }

    /// `job.succeeded` for the outbox when the tenant has an endpoint for it.
    fn success_event(
        &self,
        tenant: TenantId,
        job_id: JobId,
        job_type: &str,
        attempts: i32,
        units: i64,
        cost: i64,
    ) -> Result<Option<NewOutboxMessage>, ProcessError> {
        self.job_event(tenant, "job.succeeded", || JobEvent::SucceededV1 {
            job_id,
            job_type: job_type.to_owned(),
            attempts,
            units,
            cost,
            finished_at: chrono::Utc::now(),
        })
    }

    /// `job.dead` (retries exhausted) or `job.failed` (permanent) for the outbox when the
    /// tenant has an endpoint for it; nothing for a failure that will be retried.
    #[allow(clippy::too_many_arguments)]
    fn failure_event(
        &self,
        tenant: TenantId,
        job_id: JobId,
        job_type: &str,
        attempts: i32,
        next: FailureNext,
        error: &str,
        http_status: Option<i32>,
    ) -> Result<Option<NewOutboxMessage>, ProcessError> {
        let event_type = match next {
            FailureNext::Retry => return Ok(None),
            FailureNext::Dead => "job.dead",
            FailureNext::Failed => "job.failed",
        };
        self.job_event(tenant, event_type, || {
            let (job_type, error, finished_at) =
                (job_type.to_owned(), error.to_owned(), chrono::Utc::now());
            if next == FailureNext::Dead {
                JobEvent::DeadV1 {
                    job_id,
                    job_type,
                    attempts,
                    error,
                    http_status,
                    finished_at,
                }
            } else {
                JobEvent::FailedV1 {
                    job_id,
                    job_type,
                    attempts,
                    error,
                    http_status,
                    finished_at,
                }
            }
        })
    }

    /// The outbox row announcing `event_type` when the tenant has an endpoint for it; the
    /// event is built (and encoded) only then, so other tenants' jobs pay one map lookup.
    fn job_event(
        &self,
        tenant: TenantId,
        event_type: &str,
        build: impl FnOnce() -> JobEvent,
    ) -> Result<Option<NewOutboxMessage>, ProcessError> {
        if !self.job_events.wants(tenant.as_uuid(), event_type) {
            return Ok(None);
        }
        let envelope = Envelope::job_event("worker", tenant, build());
        debug_assert_eq!(envelope.event_type, event_type);
        Ok(Some(NewOutboxMessage {
            message_id: envelope.id,
            exchange: self.broker.topology().events_exchange(),
            routing_key: envelope.event_type.clone(),
            payload: serde_json::to_vec(&envelope)
                .map_err(|e| ProcessError::Encode(e.to_string()))?,
        }))
    }

    /// Publishes attempt `failed_attempt + 1` to the delay queue for `failed_attempt`.
    async fn publish_retry(
        &self,
        tenant: TenantId,
        job_id: JobId,
        failed_attempt: u32,
    ) -> Result<(), ProcessError> {
        let envelope = Envelope::job_command(
            "worker",
            tenant,
            JobCommand::ExecuteV1 {
                job_id,
                attempt: failed_attempt + 1,
            },
        );
        let topology = self.broker.topology();
        let message = OutgoingMessage {
            message_id: envelope.id,
            exchange: topology.retry_exchange(),
            routing_key: topology.retry_key(failed_attempt),
            payload: serde_json::to_vec(&envelope)
                .map_err(|e| ProcessError::Encode(e.to_string()))?,
            content_type: batch::JSON_CONTENT_TYPE,
            expiration_ms: Some(backoff_ms(
                &self.retry,
                failed_attempt,
                rand::rng().random(),
            )),
            mandatory: true,
        };
        self.broker
            .publish_batch(std::slice::from_ref(&message))
            .await?;
        Ok(())
    }
}

/// The delay before the attempt after `failed_attempt` (1-based), milliseconds:
/// `min(base × 2^(failed_attempt-1), max) × (1 + jitter × r)` for `r` in `[0, 1)`.
pub fn backoff_ms(retry: &RetryConfig, failed_attempt: u32, r: f64) -> u64 {
    let exp = failed_attempt.saturating_sub(1).min(30);
    let delay = retry
        .base_delay_ms
        .saturating_mul(1u64 << exp)
        .min(retry.max_delay_ms);
    let jitter = (delay as f64 * retry.jitter * r.clamp(0.0, 1.0)) as u64;
    delay.saturating_add(jitter)
}

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Batch(#[from] std::sync::Arc<StorageError>),
    #[error(transparent)]
    Messaging(#[from] tollgate_messaging::MessagingError),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("the worker's concurrency limit is closed")]
    Stopping,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        let retry = RetryConfig {
            base_delay_ms: 1000,
            max_delay_ms: 5000,
            jitter: 0.2,
        };
        assert_eq!(backoff_ms(&retry, 1, 0.0), 1000);
        assert_eq!(backoff_ms(&retry, 2, 0.0), 2000);
        assert_eq!(backoff_ms(&retry, 3, 0.0), 4000);
        assert_eq!(backoff_ms(&retry, 4, 0.0), 5000);
        assert_eq!(backoff_ms(&retry, 40, 0.0), 5000);
        assert_eq!(backoff_ms(&retry, 1, 0.999_999), 1199);
    }
}
