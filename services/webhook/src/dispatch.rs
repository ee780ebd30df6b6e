//! The dispatcher: claims due deliveries, POSTs each message signed per Standard Webhooks,
//! logs the attempt and schedules the next one (issue 5, Build 5).
//!
//! - **Claiming.** Pending deliveries due now are claimed with `FOR UPDATE SKIP LOCKED` and
//!   leased by pushing `next_attempt_at` past the attempt's timeout, so replicas never take
//!   the same delivery and a dispatcher that dies mid-attempt only delays it by the lease.
//! - **Success** is any 2xx answer within `delivery.timeout_ms`; redirects are not followed
//!   (a 3xx is a failure: the endpoint should be registered with its final URL).
//! - **Retries.** After failed attempt n the next is due `retry_schedule_secs[n-1]` later,
//!   spread by ±`jitter_pct` % so a receiver coming back is not hit by every retry at once;
//!   a `Retry-After` answer (seconds or an HTTP date, RFC 9110 §10.2.3) is a lower bound, up
//!   to `max_retry_after_secs`. After the last wait's attempt the delivery is `failed`.
//! - **Disabling.** An endpoint's `failing_since` marks its first failure since the last
//!   success; a failure later than `disable_after_secs` after it disables the endpoint,
//!   fails its pending deliveries and announces `webhook_endpoint.disabled` through the
//!   outbox, in the attempt's transaction.
//! - **Manual redelivery** (API/CLI) makes a delivery due now; its attempt is logged with
//!   trigger `manual` and counts like any other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_storage::webhooks::{self as store, DeliveryOutcome, DueDelivery, NewAttempt};
use tollgate_storage::{PgPool, StorageError};

use crate::config::DeliveryConfig;
use crate::events::{self, EndpointEvent};
use crate::metrics::WebhookMetrics;
use crate::signing::{secrets_in_force, signature_header, Payload};
use tollgate_domain::{EndpointId, MessageId};

/// Longest response body kept in the attempt log, bytes.
pub const SNIPPET_BYTES: usize = 1024;
/// Most deliveries claimed per query.
const CLAIM_BATCH: usize = 100;

/// What one HTTP attempt gave.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptReport {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// None when no response came.
    pub status_code: Option<u16>,
    /// Why the attempt failed without a response, or the non-2xx status.
    pub error: Option<String>,
    pub snippet: Option<String>,
    /// The receiver's `Retry-After`, seconds (negative values clamp to 0).
    pub retry_after_secs: Option<i64>,
}

impl AttemptReport {
    /// A 2xx answer.
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The wait before the retry that follows failed attempt `attempts_made` (1-based), or None
/// when the schedule is exhausted: `schedule[attempts_made - 1]` seconds ± `jitter_pct` %.
pub fn retry_delay(
    schedule: &[u64],
    attempts_made: i32,
    jitter_pct: u32,
    rng: &mut impl Rng,
) -> Option<chrono::Duration> {
    let index = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
    let base_ms = schedule.get(index)?.saturating_mul(1000) as f64;
    let spread = f64::from(jitter_pct.min(100)) / 100.0;
    let factor = if spread > 0.0 {
        1.0 + rng.random_range(-spread..=spread)
    } else {
        1.0
    };
    Some(chrono::Duration::milliseconds(
        (base_ms * factor).round() as i64
    ))
}

/// A `Retry-After` value in seconds from now: delay-seconds or an HTTP date (RFC 9110
/// §10.2.3). None when it is neither.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<i64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<i64>() {
        return Some(secs.max(0));
    }
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|at| (at.with_timezone(&Utc) - now).num_seconds().max(0))
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    /// `pending`, `succeeded` or `failed`.
    pub status: &'static str,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Decides what follows attempt `attempts_made` that gave `report`, at `now`.
pub fn decide(
    report: &AttemptReport,
    attempts_made: i32,
    config: &DeliveryConfig,
    now: DateTime<Utc>,
    rng: &mut impl Rng,
) -> Next {
    if report.succeeded() {
        return Next {
            status: "succeeded",
            next_attempt_at: None,
        };
    }
    match retry_delay(
        &config.retry_schedule_secs,
        attempts_made,
        config.jitter_pct,
        rng,
    ) {
        Some(delay) => {
            let floor = report
                .retry_after_secs
                .map(|s| chrono::Duration::seconds(s.min(config.max_retry_after_secs)))
                .unwrap_or_else(chrono::Duration::zero);
            Next {
                status: "pending",
                next_attempt_at: Some(now + delay.max(floor)),
            }
        }
        None => Next {
            status: "failed",
            next_attempt_at: None,
        },
    }
}

/// The dispatcher's inputs.
pub struct Dispatcher {
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub config: DeliveryConfig,
    /// `<prefix>.events`, for `webhook_endpoint.disabled`.
    pub events_exchange: String,
    /// Woken when deliveries become due (fan-out, redelivery, a finished attempt).
    pub wake: Arc<Notify>,
    /// Woken when an attempt wrote an outbox row.
    pub relay_wake: Arc<Notify>,
    pub metrics: WebhookMetrics,
}

impl Dispatcher {
    /// Claims and attempts deliveries until `cancel` fires, then waits for the attempts in
    /// flight (each bounded by `delivery.timeout_ms`) to be recorded.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let tracker = TaskTracker::new();
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let lease_secs = i64::try_from(self.config.timeout_ms / 1000).unwrap_or(120) + 30;
        loop {
            // Wait for a free slot (the loop is the only acquirer, so what is free stays free).
            let first = tokio::select! {
                _ = cancel.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let free = slots.available_permits() + 1;
            let limit = free.min(CLAIM_BATCH);
            let claimed = match self.claim(limit, lease_secs).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming due webhook deliveries failed; retrying");
                    Vec::new()
                }
            };
            let full = claimed.len() == limit;
            let mut first = Some(first);
            for due in claimed {
                let permit = match first.take() {
                    Some(permit) => permit,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                let this = self.clone();
                tracker.spawn(async move {
                    this.attempt(due).await;
                    drop(permit);
                    this.wake.notify_one();
                });
            }
            drop(first);
            if full {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn claim(&self, limit: usize, lease_secs: i64) -> Result<Vec<DueDelivery>, StorageError> {
        let mut conn = tollgate_storage::pool::get(&self.pool).await?;
        store::claim_due(&mut conn, Utc::now(), limit as i64, lease_secs).await
    }

    /// Makes one attempt and records it; a failure to record leaves the delivery leased, so
    /// it is attempted again after the lease (receivers dedupe on `webhook-id`).
    async fn attempt(&self, due: DueDelivery) {
        let refused = (!self.config.allow_private_networks)
            .then(|| crate::egress::refuse_literal(&due.url))
            .flatten();
        let report = match refused {
            Some(reason) => AttemptReport {
                started_at: Utc::now(),
                duration_ms: 0,
                status_code: None,
                error: Some(reason),
                snippet: None,
                retry_after_secs: None,
            },
            None => {
                send(
                    &self.client,
                    &due,
                    Duration::from_millis(self.config.timeout_ms),
                )
                .await
            }
        };
        self.metrics
            .attempt_seconds
            .observe(f64::from(report.duration_ms) / 1000.0);
        match self.record(&due, &report).await {
            Ok(outcome) => {
                self.metrics.attempts.with_label_values(&[outcome]).inc();
            }
            Err(err) => {
                tracing::warn!(delivery = %due.id, error = %err, "recording a webhook attempt failed; it will be retried after the lease");
            }
        }
    }

    /// Writes the attempt, the delivery's next state and the endpoint's health in one
    /// transaction; returns the metric outcome.
    async fn record(
        &self,
        due: &DueDelivery,
        report: &AttemptReport,
    ) -> Result<&'static str, StorageError> {
        let mut conn = tollgate_storage::pool::get(&self.pool).await?;
        let config = &self.config;
        let events_exchange = self.events_exchange.as_str();
        let (outcome, disabled) = conn
            .transaction(async |conn| {
                record_attempt(conn, config, events_exchange, due, report).await
            })
            .await?;
        if disabled {
            self.metrics.disabled.inc();
            self.relay_wake.notify_one();
        }
        Ok(outcome)
    }
}

/// The transaction of [`Dispatcher::record`]: returns the metric outcome and whether the
/// endpoint was disabled.
async fn record_attempt(
    conn: &mut AsyncPgConnection,
    config: &DeliveryConfig,
    events_exchange: &str,
    due: &DueDelivery,
    report: &AttemptReport,
) -> Result<(&'static str, bool), StorageError> {
    let delivery = match store::lock_delivery(conn, due.id).await {
        Ok(delivery) => delivery,
        // The endpoint (and its deliveries) was deleted during the attempt.
        Err(StorageError::NotFound) => return Ok(("failed", false)),
        Err(err) => return Err(err),
    };
    let now = Utc::now();
    let attempt = delivery.attempts + 1;
    let mut next = decide(report, attempt, config, now, &mut rand::rng());
    // A redelivery asked for while this attempt ran still gets its attempt (the claim reset
    // `manual`, so a set flag is a new request).
    let redelivery_waiting = delivery.manual;
    if redelivery_waiting {
        next = Next {
            status: "pending",
            next_attempt_at: Some(now),
        };
    } else if delivery.status != "pending" {
        // Failed meanwhile (the endpoint was disabled): keep that.
        next = Next {
            status: if report.succeeded() {
                "succeeded"
            } else {
                "failed"
            },
            next_attempt_at: None,
        };
    }
    let mut disabled = false;
    if report.succeeded() {
        store::mark_endpoint_healthy(conn, due.endpoint_id).await?;
    } else {
        let endpoint = store::mark_endpoint_failing(conn, due.endpoint_id, now).await?;
        let failing_since = endpoint.failing_since.unwrap_or(now);
        let limit = chrono::Duration::seconds(config.disable_after_secs);
        if endpoint.disabled_at.is_none() && now - failing_since > limit {
            let reason = format!(
                "every attempt failed for more than {} s (since {})",
                config.disable_after_secs,
                failing_since.to_rfc3339()
            );
            if store::disable_endpoint(conn, due.endpoint_id, &reason, now).await? {
                disabled = true;
                if !redelivery_waiting {
                    next = Next {
                        status: "failed",
                        next_attempt_at: None,
                    };
                }
                events::enqueue(
                    conn,
                    events_exchange,
                    endpoint.tenant_id,
                    EndpointEvent::DisabledV1 {
                        endpoint_id: EndpointId::from_uuid(endpoint.id),
                        url: endpoint.url.clone(),
                        failing_since,
                        disabled_at: now,
                        reason,
                    },
                )
                .await?;
                tracing::warn!(endpoint = %EndpointId::from_uuid(endpoint.id), "webhook endpoint disabled after failing for too long");
            }
        }
    }
    let trigger = if due.manual { "manual" } else { "scheduled" };
    store::insert_attempt(
        conn,
        &NewAttempt {
            delivery_id: due.id,
            attempt,
            trigger: trigger.to_owned(),
            started_at: report.started_at,
            duration_ms: report.duration_ms,
            status_code: report.status_code.map(i32::from),
            error: report.error.clone(),
            response_snippet: report.snippet.clone(),
            retry_after_secs: report
                .retry_after_secs
                .map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
            next_attempt_at: next.next_attempt_at,
        },
    )
    .await?;
    store::set_delivery_outcome(
        conn,
        due.id,
        &DeliveryOutcome {
            status: next.status.to_owned(),
            attempts: attempt,
            next_attempt_at: next.next_attempt_at,
            manual: redelivery_waiting,
            last_status_code: report.status_code.map(i32::from),
            last_error: report.error.clone(),
            updated_at: now,
        },
    )
    .await?;
    let outcome = match next.status {
        "succeeded" => "succeeded",
        "pending" => "retrying",
        _ => "failed",
    };
    Ok((outcome, disabled))
}

/// POSTs the message to the endpoint, signed with every secret in force, and reports what
/// happened (never fails: a transport error is a failed attempt).
pub async fn send(client: &reqwest::Client, due: &DueDelivery, timeout: Duration) -> AttemptReport {
    let started_at = Utc::now();
    let clock = Instant::now();
    let elapsed_ms =
        |clock: Instant| i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);
    let failed = |error: String, clock: Instant| AttemptReport {
        started_at,
        duration_ms: elapsed_ms(clock),
        status_code: None,
        error: Some(error),
        snippet: None,
        retry_after_secs: None,
    };
    let msg_id = MessageId::from_uuid(due.message_id).to_string();
    let body = match serde_json::to_vec(&Payload {
        event_type: &due.event_type,
        timestamp: due.occurred_at,
        data: &due.payload,
    }) {
        Ok(body) => body,
        Err(err) => return failed(format!("serializing the payload: {err}"), clock),
    };
    let timestamp = started_at.timestamp();
    let secrets = secrets_in_force(
        &due.secret,
        due.previous_secret.as_deref(),
        due.previous_secret_expires_at,
        started_at,
    );
    let signature = match signature_header(&secrets, &msg_id, timestamp, &body) {
        Ok(signature) => signature,
        Err(err) => return failed(err.to_string(), clock),
    };
    let response = client
        .post(&due.url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "Tollgate-Webhooks/1.0")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let mut response = match response {
        Ok(response) => response,
        Err(err) => return failed(describe(&err), clock),
    };
    let status = response.status();
    let retry_after_secs = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    let mut snippet = Vec::new();
    // The body is read only up to the snippet size; the rest is dropped with the connection.
    while snippet.len() < SNIPPET_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => snippet.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    snippet.truncate(SNIPPET_BYTES);
    let snippet = String::from_utf8_lossy(&snippet).replace('\0', "");
    AttemptReport {
        started_at,
        duration_ms: elapsed_ms(clock),
        status_code: Some(status.as_u16()),
        error: (!status.is_success()).then(|| format!("HTTP {}", status.as_u16())),
        snippet: (!snippet.is_empty()).then_some(snippet),
        retry_after_secs,
    }
}

/// A transport error in a few words (the log keeps no URL: it is the tenant's own).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    // The innermost cause, not the top error, whose text repeats the URL.
    let mut cause = None;
    let mut source = std::error::Error::source(err);
    while let Some(err) = source {
        cause = Some(err.to_string());
        source = err.source();
    }
    format!("{kind}: {}", cause.as_deref().unwrap_or("no detail"))
        .chars()
        .take(500)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn config(schedule: &[u64], jitter_pct: u32) -> DeliveryConfig {
        let mut cfg = crate::WebhookConfig::defaults().expect("defaults").delivery;
        cfg.retry_schedule_secs = schedule.to_vec();
        cfg.jitter_pct = jitter_pct;
        cfg
    }

    fn report(status: Option<u16>, retry_after: Option<i64>) -> AttemptReport {
        AttemptReport {
            started_at: Utc::now(),
            duration_ms: 3,
            status_code: status,
            error: None,
            snippet: None,
            retry_after_secs: retry_after,
        }
    }

    #[test]
    fn the_schedule_is_followed_then_the_delivery_fails() {
        let cfg = config(&[5, 300, 1800], 0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let now = Utc::now();
        let failure = report(Some(500), None);
        for (attempt, wait) in [(1, 5), (2, 300), (3, 1800)] {
            assert_eq!(
                decide(&failure, attempt, &cfg, now, &mut rng),
                Next {
                    status: "pending",
                    next_attempt_at: Some(now + chrono::Duration::seconds(wait))
                },
                "after attempt {attempt}"
            );
        }
        assert_eq!(decide(&failure, 4, &cfg, now, &mut rng).status, "failed");
        assert_eq!(
            decide(&report(None, None), 4, &cfg, now, &mut rng).status,
            "failed"
        );
        for ok in [200, 201, 204, 299] {
            assert_eq!(
                decide(&report(Some(ok), None), 4, &cfg, now, &mut rng).status,
                "succeeded"
            );
        }
        for not_ok in [199, 301, 302, 400, 410, 503] {
            assert!(!report(Some(not_ok), None).succeeded());
        }
    }

    #[test]
    fn jitter_stays_within_its_percentage_and_varies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let delays: Vec<i64> = (0..200)
            .map(|_| {
                retry_delay(&[100], 1, 20, &mut rng)
                    .expect("scheduled")
                    .num_milliseconds()
            })
            .collect();
        assert!(delays.iter().all(|d| (80_000..=120_000).contains(d)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads retries");
        assert_eq!(retry_delay(&[100], 0, 20, &mut rng), None);
        assert_eq!(retry_delay(&[], 1, 20, &mut rng), None);
    }

    #[test]
    fn retry_after_is_a_lower_bound_capped_by_configuration() {
        let mut cfg = config(&[5], 0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let now = Utc::now();
        let next = |cfg: &DeliveryConfig, secs, rng: &mut rand::rngs::StdRng| {
            decide(&report(Some(503), Some(secs)), 1, cfg, now, rng)
                .next_attempt_at
                .map(|at| (at - now).num_seconds())
        };
        assert_eq!(next(&cfg, 120, &mut rng), Some(120));
        assert_eq!(
            next(&cfg, 1, &mut rng),
            Some(5),
            "never earlier than the schedule"
        );
        cfg.max_retry_after_secs = 60;
        assert_eq!(next(&cfg, 3600, &mut rng), Some(60));
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(parse_retry_after(" 0 ", now), Some(0));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(120)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
