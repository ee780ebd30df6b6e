//! Traffic metering (SPEC "Usage metering and the ledger": every request through the gateway
//! is metered, bytes in and out, no exemptions; off the hot path, never silently dropped).
//!
//! The [`meter`] middleware wraps the whole app, so ops endpoints, 404s, 401s, 413s and 429s
//! are metered like proxied calls. After the response is built it hands a
//! [`TrafficRecord`] to a bounded channel with `try_send` and never waits. A flusher task
//! drains the channel in batches into the usage ledger
//! ([`tollgate_storage::traffic::append_traffic`]); a failed write keeps its batch and is
//! retried with capped exponential backoff. When the buffer is full the record is dropped,
//! counted in `tollgate_traffic_dropped_total{reason="buffer_full"}` and logged (at most once
//! a second). On shutdown ([`MeterFlusher::shutdown`], after the HTTP server has drained) the
//! channel is closed and everything left is written, within a deadline; what cannot be
//! written by then is counted (`reason="shutdown"`) and logged.
//!
//! What is counted, in bytes:
//! * in: the request body bytes the proxy read (including those read before a 413), or, when
//!   the body was not read (401, ops endpoints, 404), the `Content-Length` the client declared
//!   (0 without one, e.g. a chunked body that was never read);
//! * out: the response body's declared size (`BodySize::Sized`), 0 when the size is not known
//!   up front (a streamed body without a length) or there is no body. Headers are not counted.
//!
//! Requests the HTTP server refuses before routing (malformed request line, oversized
//! headers) never reach the app and are not metered.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use chrono::Utc;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollgate_storage::traffic::{append_traffic, truncate_path, TrafficRecord};
use tollgate_storage::PgPool;

use crate::auth::Principal;
use crate::config::MeteringConfig;

/// First wait before a failed batch is written again; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to write a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest one write attempt may take before it counts as failed (and is retried).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Least time between two "buffer full" warnings, milliseconds.
const WARN_EVERY_MS: u64 = 1_000;

/// The request body bytes the proxy actually read, in bytes; `proxy.rs` puts it in the
/// request's extensions and [`meter`] prefers it over the declared `Content-Length`.
#[derive(Debug, Clone, Copy)]
pub struct BodyBytesRead(pub u64);

/// The metering metrics, in the gateway's registry.
#[derive(Clone)]
pub struct TrafficMetrics {
    /// `tollgate_traffic_dropped_total{reason}`: records lost (`buffer_full`, `shutdown`).
    dropped: IntCounterVec,
    /// `tollgate_traffic_recorded_total`: records written to the ledger.
    recorded: IntCounter,
    /// `tollgate_traffic_write_failures_total`: failed attempts to write a batch (each is
    /// retried; nothing is lost by a failure alone).
    write_failures: IntCounter,
}

impl TrafficMetrics {
    /// Registers `tollgate_traffic_dropped_total{reason}`, `tollgate_traffic_recorded_total`
    /// and `tollgate_traffic_write_failures_total` in `registry`. Errors: a metric is already
    /// registered.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let dropped = IntCounterVec::new(
            Opts::new(
                "tollgate_traffic_dropped_total",
                "Gateway request records lost before reaching the usage ledger",
            ),
            &["reason"],
        )?;
        let recorded = IntCounter::new(
            "tollgate_traffic_recorded_total",
            "Gateway request records written to the usage ledger",
        )?;
        let write_failures = IntCounter::new(
            "tollgate_traffic_write_failures_total",
            "Failed attempts to write a batch of gateway request records (retried)",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(recorded.clone()))?;
        registry.register(Box::new(write_failures.clone()))?;
        Ok(Self {
            dropped,
            recorded,
            write_failures,
        })
    }
}

/// The sending side: what the [`meter`] middleware finds in the app data
/// (`web::Data<TrafficMeter>`).
pub struct TrafficMeter {
    tx: mpsc::Sender<TrafficRecord>,
    metrics: TrafficMetrics,
    /// Records accepted and neither written nor counted as lost yet (buffered or in the
    /// flusher's hands).
    pending: Arc<AtomicI64>,
    started: Instant,
    /// Milliseconds since `started` before which no new "buffer full" warning is logged.
    next_warn_ms: AtomicU64,
    /// Records dropped since the last warning.
    dropped_unreported: AtomicU64,
    /// Records per ledger write; once this many are buffered, [`Self::record`] wakes the
    /// flusher before its interval ends.
    batch_size: usize,
    /// The flusher's "a batch is buffered" signal.
    full: Arc<Notify>,
}

impl TrafficMeter {
    /// Queues `record` for the ledger without waiting; when the buffer is full (or the meter
    /// is shut down) the record is dropped, counted and logged.
    pub fn record(&self, record: TrafficRecord) {
        match self.tx.try_send(record) {
            // The flusher may write it before this runs: `pending` can be -1 for a moment.
            Ok(()) => {
                self.pending.fetch_add(1, Ordering::Relaxed);
                if self.tx.max_capacity() - self.tx.capacity() >= self.batch_size {
                    self.full.notify_one();
                }
            }
            Err(TrySendError::Full(_)) => self.dropped("buffer_full"),
            Err(TrySendError::Closed(_)) => self.dropped("shutdown"),
        }
    }

    /// Records accepted and not yet written (or counted as lost).
    pub fn pending(&self) -> u64 {
        u64::try_from(self.pending.load(Ordering::Relaxed)).unwrap_or(0)
    }

    fn dropped(&self, reason: &'static str) {
        self.metrics.dropped.with_label_values(&[reason]).inc();
        self.dropped_unreported.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_warn_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_warn_ms
                .compare_exchange(
                    next,
                    now.saturating_add(WARN_EVERY_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let dropped = self.dropped_unreported.swap(0, Ordering::Relaxed);
            tracing::warn!(
                dropped,
                reason,
                buffer = self.tx.max_capacity(),
                "traffic records dropped: metering buffer unavailable (tollgate_traffic_dropped_total)"
            );
        }
    }
}

/// The flusher task's handle, for shutdown.
pub struct MeterFlusher {
    meter: web::Data<TrafficMeter>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    shutdown_timeout: Duration,
}

impl MeterFlusher {
    /// Closes the buffer and waits until everything in it is written, or until the shutdown
    /// deadline (`metering.shutdown_timeout_ms`) passes; what is left then is counted in
    /// `tollgate_traffic_dropped_total{reason="shutdown"}` and logged. Call it after the HTTP
    /// server has stopped, so that no request is still being metered.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        // The flusher keeps its own deadline; the margin only covers a write it could not
        // interrupt.
        let grace = self.shutdown_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
            let lost = u64::try_from(self.meter.pending.swap(0, Ordering::Relaxed)).unwrap_or(0);
            self.meter
                .metrics
                .dropped
                .with_label_values(&["shutdown"])
                .inc_by(lost);
            tracing::error!(
                lost,
                "traffic flusher did not finish in time; buffered records were lost"
            );
        }
    }
}

/// Starts the flusher on the current tokio runtime, writing through `pool`. Returns the app
/// data for [`meter`] and the flusher's handle.
pub fn start(
    pool: PgPool,
    config: &MeteringConfig,
    metrics: TrafficMetrics,
) -> (web::Data<TrafficMeter>, MeterFlusher) {
    let (tx, rx) = mpsc::channel(config.buffer.max(1));
    let pending = Arc::new(AtomicI64::new(0));
    let full = Arc::new(Notify::new());
    let meter = web::Data::new(TrafficMeter {
        tx,
        metrics: metrics.clone(),
        pending: pending.clone(),
        started: Instant::now(),
        next_warn_ms: AtomicU64::new(0),
        dropped_unreported: AtomicU64::new(0),
        batch_size: config.batch_size.max(1),
        full: full.clone(),
    });
    let cancel = CancellationToken::new();
    let shutdown_timeout = Duration::from_millis(config.shutdown_timeout_ms);
    let flusher = Flusher {
        rx,
        pool,
        batch_size: config.batch_size.max(1),
        flush_interval: Duration::from_millis(config.flush_interval_ms),
        shutdown_timeout,
        metrics,
        pending,
        cancel: cancel.clone(),
        deadline: None,
        full,
    };
    let task = tokio::spawn(flusher.run());
    (
        meter.clone(),
        MeterFlusher {
            meter,
            cancel,
            task,
            shutdown_timeout,
        },
    )
}

/// Middleware: meters the request once the inner service has answered (see the module docs
/// for what is counted). Wrap it around the whole app, outside every other middleware, with
/// `web::Data<TrafficMeter>` in the app data; without it requests pass unmetered.
pub async fn meter(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(meter) = req.app_data::<web::Data<TrafficMeter>>().cloned() else {
        return next.call(req).await;
    };
    let occurred_at = Utc::now();
    let method = req.method().as_str().to_owned();
    let path = truncate_path(req.path()).to_owned();
    let declared_in = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let result = next.call(req).await;
    let record = match &result {
        Ok(res) => {
            let request = res.request();
            let extensions = request.extensions();
            TrafficRecord {
                id: uuid::Uuid::now_v7(),
                tenant_id: extensions.get::<Principal>().map(|p| p.tenant.as_uuid()),
                method,
                route: request
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".to_owned()),
                path,
                status: res.status().as_u16(),
                bytes_in: to_i64(
                    extensions
                        .get::<BodyBytesRead>()
                        .map_or(declared_in, |read| read.0),
                ),
                bytes_out: to_i64(sized(res.response().body().size())),
                occurred_at,
            }
        }
        // An error escaping the app takes the request with it: the tenant and the route are
        // no longer known. The server answers with the error's own response.
        Err(err) => {
            let response = err.error_response();
            TrafficRecord {
                id: uuid::Uuid::now_v7(),
                tenant_id: None,
                method,
                route: "unmatched".to_owned(),
                path,
                status: response.status().as_u16(),
                bytes_in: to_i64(declared_in),
                bytes_out: to_i64(sized(response.body().size())),
                occurred_at,
            }
        }
    };
    meter.record(record);
    result
}

/// A body's size in bytes when known up front, else 0.
fn sized(size: BodySize) -> u64 {
    match size {
        BodySize::Sized(n) => n,
        BodySize::None | BodySize::Stream => 0,
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The receiving side: batches records and writes them; owns the shutdown deadline.
struct Flusher {
    rx: mpsc::Receiver<TrafficRecord>,
    pool: PgPool,
    batch_size: usize,
    flush_interval: Duration,
    shutdown_timeout: Duration,
    metrics: TrafficMetrics,
    /// Shared with [`TrafficMeter::pending`].
    pending: Arc<AtomicI64>,
    cancel: CancellationToken,
    /// Set when shutdown is first noticed: the buffer is closed then, and records not written
    /// by this instant are given up.
    deadline: Option<Instant>,
    /// Signalled by [`TrafficMeter::record`] once a batch is buffered.
    full: Arc<Notify>,
}

impl Flusher {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            self.fill(&mut batch).await;
            if batch.is_empty() {
                break;
            }
            if !self.write(&batch).await {
                let lost = u64::try_from(self.pending.swap(0, Ordering::Relaxed)).unwrap_or(0);
                self.metrics
                    .dropped
                    .with_label_values(&["shutdown"])
                    .inc_by(lost);
                tracing::error!(
                    lost,
                    "shutdown deadline passed before the traffic records could be written; \
                     they are lost (tollgate_traffic_dropped_total)"
                );
                return;
            }
            batch.clear();
        }
        tracing::info!("traffic meter stopped; every buffered record was written");
    }

    /// Notices shutdown: closes the buffer (senders fail from now on, buffered records stay
    /// readable) and starts the deadline. True once shutting down.
    fn shutting_down(&mut self) -> bool {
        if self.deadline.is_none() && self.cancel.is_cancelled() {
            self.deadline = Some(Instant::now() + self.shutdown_timeout);
            self.rx.close();
        }
        self.deadline.is_some()
    }

    /// Fills `batch` (empty on entry) with the next records: waits for the first one, then up
    /// to `flush_interval` for the batch to fill. While shutting down it takes what is
    /// buffered without waiting. Leaves `batch` empty only when the buffer is closed and
    /// drained.
    async fn fill(&mut self, batch: &mut Vec<TrafficRecord>) {
        let cancel = self.cancel.clone();
        loop {
            if self.shutting_down() {
                // Closed: returns at once with what is buffered (0 when nothing is).
                self.rx.recv_many(batch, self.batch_size).await;
                return;
            }
            tokio::select! {
                n = self.rx.recv_many(batch, self.batch_size) => {
                    if n == 0 {
                        return;
                    }
                    break;
                }
                () = cancel.cancelled() => {}
            }
        }
        // Then gather until the flush interval ends or a batch is buffered, without waking per
        // record: waiting on the channel here woke this task (and a runtime thread) for every
        // request, about one context switch per request at 1,000 requests/s (docs/BENCHMARKS.md).
        // `TrafficMeter::record` signals `full` once a batch is buffered.
        let flush_at = Instant::now() + self.flush_interval;
        loop {
            if self.shutting_down() {
                let room = self.batch_size.saturating_sub(batch.len());
                if room > 0 {
                    // Closed: returns at once with what is buffered.
                    self.rx.recv_many(batch, room).await;
                }
                return;
            }
            self.take_buffered(batch);
            if batch.len() >= self.batch_size {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(flush_at) => {
                    self.take_buffered(batch);
                    return;
                }
                () = self.full.notified() => {}
                () = cancel.cancelled() => {}
            }
        }
    }

    /// Moves what the channel holds into `batch` without waiting, up to the batch size.
    fn take_buffered(&mut self, batch: &mut Vec<TrafficRecord>) {
        while batch.len() < self.batch_size {
            match self.rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
    }

    /// Writes `batch`, retrying with capped exponential backoff until it is written (true),
    /// or, while shutting down, until the deadline passes (false). While shutting down the
    /// retries come every [`INITIAL_BACKOFF`], so the last one is close to the deadline.
    async fn write(&mut self, batch: &[TrafficRecord]) -> bool {
        let cancel = self.cancel.clone();
        let mut backoff = INITIAL_BACKOFF;
        loop {
            self.shutting_down();
            let now = Instant::now();
            let attempt_until = match self.deadline {
                Some(deadline) if now >= deadline => return false,
                Some(deadline) => deadline.min(now + ATTEMPT_TIMEOUT),
                None => now + ATTEMPT_TIMEOUT,
            };
            let attempt = async {
                let mut conn = tollgate_storage::pool::get(&self.pool).await?;
                append_traffic(&mut conn, batch).await
            };
            let error = match tokio::time::timeout_at(attempt_until, attempt).await {
                Ok(Ok(_)) => {
                    self.metrics.recorded.inc_by(batch.len() as u64);
                    self.pending.fetch_sub(
                        i64::try_from(batch.len()).unwrap_or(i64::MAX),
                        Ordering::Relaxed,
                    );
                    return true;
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => "write timed out".to_owned(),
            };
            self.metrics.write_failures.inc();
            if self.deadline.is_some() {
                tracing::warn!(%error, records = batch.len(), "writing traffic records failed");
                tokio::time::sleep(INITIAL_BACKOFF).await;
                continue;
            }
            tracing::warn!(
                %error,
                records = batch.len(),
                retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                "writing traffic records failed; the batch is kept and retried"
            );
            // Shutdown cuts the wait short: the deadline bounds the retries from then on.
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = cancel.cancelled() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u16) -> TrafficRecord {
        TrafficRecord {
            id: uuid::Uuid::now_v7(),
            tenant_id: None,
            method: "GET".into(),
            route: "/healthz".into(),
            path: "/healthz".into(),
            status: 200 + n % 2,
            bytes_in: 0,
            bytes_out: 15,
            occurred_at: Utc::now(),
        }
    }

    /// With the database unreachable, nothing is lost silently: every record is either
    /// dropped for a full buffer or given up at the shutdown deadline, and both are counted.
    #[tokio::test]
    async fn every_record_is_written_or_counted_as_dropped() -> anyhow::Result<()> {
        // Nothing listens on port 1: every write fails at once.
        let pool = tollgate_storage::pool::build_pool(
            "postgres://postgres@127.0.0.1:1/none",
            1,
            Duration::from_millis(100),
        )?;
        let registry = Registry::new();
        let metrics = TrafficMetrics::register(&registry)?;
        let config = MeteringConfig {
            enabled: true,
            buffer: 4,
            batch_size: 2,
            flush_interval_ms: 10,
            shutdown_timeout_ms: 300,
        };
        let (meter, flusher) = start(pool, &config, metrics.clone());
        let sent = 20u16;
        for n in 0..sent {
            meter.record(record(n));
        }
        // At most a batch in the flusher's hands plus a full buffer were accepted.
        let full = metrics.dropped.with_label_values(&["buffer_full"]).get();
        assert!(
            full >= u64::from(sent) - 6,
            "dropped for a full buffer: {full}"
        );

        flusher.shutdown().await;
        let at_shutdown = metrics.dropped.with_label_values(&["shutdown"]).get();
        assert_eq!(metrics.recorded.get(), 0);
        assert_eq!(full + at_shutdown, u64::from(sent));
        assert!(metrics.write_failures.get() >= 1);

        // After shutdown the buffer is closed: a late record is counted, not queued.
        meter.record(record(0));
        assert_eq!(
            metrics.dropped.with_label_values(&["shutdown"]).get(),
            at_shutdown + 1
        );
        Ok(())
    }
}
