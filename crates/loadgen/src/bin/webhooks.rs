//! `tollgate-loadgen-webhooks`: the inbound PSP webhook benchmark (issue 5).
//!
//! Sends `--events` distinct Stripe events (`payment_intent.succeeded`, about 1.4 KB each,
//! shaped like Stripe's) to the webhook service's `POST /webhooks/stripe`, each signed with
//! `Stripe-Signature` exactly as Stripe does (`t=…,v1=hex(HMAC-SHA256(secret, "{t}.{body}"))`),
//! `--concurrency` requests in flight (or paced to `--rate` events/s). Every
//! `--duplicate-every`-th event is delivered twice, as Stripe does on a lost acknowledgement.
//! Reports verified events acknowledged per second and acknowledgement latency p50/p99/max
//! (request sent → 2xx received), then checks in PostgreSQL that `psp_events` holds exactly
//! one row per distinct event of the run, and waits (up to `--apply-wait-secs`) until billing
//! has applied every one of them (`psp_event_applications`), reporting the rate at which it
//! did. Exits non-zero on any non-2xx answer, a count mismatch or events left unapplied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use diesel::sql_types::{Int8, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate-loadgen-webhooks",
    about = "Load-test inbound Stripe webhooks"
)]
struct Args {
    /// The webhook service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:18084")]
    webhook_url: String,
    /// A Stripe endpoint secret the service accepts (`whsec_…`).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// PostgreSQL URL, for the stored-once check.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Events per second; 0 sends as fast as the concurrency allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Deliver every n-th event twice (0: never).
    #[arg(long, default_value_t = 10)]
    duplicate_every: u64,
    /// How long to wait for billing to apply every event, seconds (0: do not wait).
    #[arg(long, default_value_t = 300)]
    apply_wait_secs: u64,
}

/// A `payment_intent.succeeded` event as Stripe sends it (API version 2024-06-20), not
/// linked to any Tollgate invoice: billing records it as not applicable.
fn event(run: &str, i: u64, now: i64) -> Vec<u8> {
    json!({
        "id": format!("evt_bench_{run}_{i}"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": format!("pi_bench_{run}_{i}"),
                "object": "payment_intent",
                "amount": 14880,
                "amount_capturable": 0,
                "amount_received": 14880,
                "capture_method": "automatic",
                "confirmation_method": "automatic",
                "created": now,
                "currency": "usd",
                "customer": "cus_bench",
                "description": "Load test payment",
                "latest_charge": format!("ch_bench_{run}_{i}"),
                "livemode": false,
                "metadata": { "source": "tollgate-loadgen-webhooks" },
                "payment_method": "pm_card_visa",
                "payment_method_types": ["card"],
                "status": "succeeded"
            }
        }
    })
    .to_string()
    .into_bytes()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Int8)]
    n: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/webhooks/stripe", args.webhook_url.trim_end_matches('/'));
    println!(
        "run {run}: {} events to {url} ({} in flight{}), every {}th delivered twice",
        args.events,
        args.concurrency,
        if args.rate > 0 {
            format!(", paced to {} events/s", args.rate)
        } else {
            String::new()
        },
        args.duplicate_every
    );
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, args, run, next, acked, latency, url) = (
            client.clone(),
            args.clone(),
            run.clone(),
            next.clone(),
            acked.clone(),
            latency.clone(),
            url.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.events {
                    return Ok::<_, anyhow::Error>(());
                }
                if args.rate > 0 {
                    let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let now = chrono::Utc::now().timestamp();
                let body = event(&run, i, now);
                let sends = if args.duplicate_every > 0 && i % args.duplicate_every == 0 {
                    2
                } else {
                    1
                };
                for _ in 0..sends {
                    let t = chrono::Utc::now().timestamp();
                    let header = tollgate_psp::stripe::signature_header(&args.secret, t, &body);
                    let t0 = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("stripe-signature", header)
                        .body(body.clone())
                        .send()
                        .await
                        .context("sending an event")?;
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if !status.is_success() {
                        bail!("event {i}: {status}: {text}");
                    }
                    latency
                        .lock()
                        .await
                        .record(t0.elapsed().as_micros() as u64)?;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let elapsed = started.elapsed();
    let acked = AtomicU64::load(&acked, Ordering::Relaxed);
    let h = latency.lock().await;
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "acknowledged {acked} deliveries ({} distinct events) in {:.2} s: {:.0} verified events/s",
        args.events,
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64()
    );
    println!(
        "acknowledgement latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );

    let mut conn = AsyncPgConnection::establish(&args.database_url).await?;
    let stored: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM psp_events WHERE psp = 'stripe' AND event_id LIKE $1",
    )
    .bind::<Text, _>(format!("evt_bench_{run}_%"))
    .get_result(&mut conn)
    .await?;
    println!(
        "stored-once check: {} psp_events rows for {} distinct events",
        stored.n, args.events
    );
    if u64::try_from(stored.n).ok() != Some(args.events) {
        bail!("expected exactly one stored row per distinct event");
    }
    if args.apply_wait_secs == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(args.apply_wait_secs);
    let applied = loop {
        let applied: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM psp_event_applications \
             WHERE psp = 'stripe' AND event_id LIKE $1",
        )
        .bind::<Text, _>(format!("evt_bench_{run}_%"))
        .get_result(&mut conn)
        .await?;
        if u64::try_from(applied.n).ok() == Some(args.events) || Instant::now() > deadline {
            break applied.n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let applied_in = started.elapsed();
    println!(
        "billing applied {applied} of {} events {:.2} s after the first delivery: {:.0} events/s applied",
        args.events,
        applied_in.as_secs_f64(),
        applied as f64 / applied_in.as_secs_f64()
    );
    if u64::try_from(applied).ok() != Some(args.events) {
        bail!(
            "billing left events unapplied after {} s",
            args.apply_wait_secs
        );
    }
    Ok(())
}
