//! `tollgate-loadgen-events`: the usage-event ingestion benchmark (issue 3).
//!
//! 1. Throughput: `--events` events in batches of `--batch-size` through
//!    `POST /v1/events/batch`, `--concurrency` requests in flight (or paced to `--rate`
//!    events/s), a `--duplicate-every`-th batch sent twice to exercise dedupe. Reports events
//!    accepted per second, request latency p50/p99, then checks in PostgreSQL that the ledger
//!    holds exactly one entry per distinct event of the run.
//! 2. Visibility (with `--probe`): while the load runs, a probe sends one event every 100 ms
//!    with `POST /v1/events` and polls `GET /v1/usage/events?event_id=…` until the entry is
//!    visible; reports event → visible p50/p99.
//! 3. Traffic-metering overhead (with `--compare-gateway-url`, a second gateway on the same
//!    services with metering off): `GET /healthz` alternately on both gateways, latency
//!    p50/p99 of each, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use diesel::sql_types::Int8;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate-loadgen-events",
    about = "Load-test usage-event ingestion"
)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    gateway_url: String,
    #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
    api_key: String,
    /// PostgreSQL URL, for the ledger check.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// A `sum` metric of the tenant's catalog with field `value`.
    #[arg(long, default_value = "bench_units")]
    metric: String,
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    #[arg(long, default_value_t = 1000)]
    batch_size: u64,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Events per second; 0 sends as fast as the concurrency allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Send every n-th batch twice (0: never).
    #[arg(long, default_value_t = 10)]
    duplicate_every: u64,
    /// Measure event → visible in the usage API while the load runs.
    #[arg(long)]
    probe: bool,
    /// A second gateway (metering off) to compare /healthz latency with.
    #[arg(long)]
    compare_gateway_url: Option<String>,
    /// Requests per gateway for the comparison.
    #[arg(long, default_value_t = 5000)]
    compare_requests: u64,
    /// Bill the events to this account (external id): with a subscription whose plan has a
    /// quota on the metric, every write also updates the quota counter.
    #[arg(long)]
    account: Option<String>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 120_000_000, 3)?)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()?;

    if let Some(other) = &args.compare_gateway_url {
        compare(&client, &args.gateway_url, other, args.compare_requests).await?;
    }
    if args.events == 0 {
        return Ok(());
    }

    let batches = args.events.div_ceil(args.batch_size);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(histogram()?));
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let duplicates = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = if args.probe {
        Some(tokio::spawn(probe_loop(
            client.clone(),
            args.clone(),
            run.clone(),
            stop_probe.clone(),
        )))
    } else {
        None
    };

    println!(
        "run {run}: {} events in batches of {} ({} in flight{})",
        args.events,
        args.batch_size,
        args.concurrency,
        if args.rate > 0 {
            format!(", paced to {} events/s", args.rate)
        } else {
            String::new()
        }
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, args, run, next, latency, accepted, duplicates) = (
            client.clone(),
            args.clone(),
            run.clone(),
            next.clone(),
            latency.clone(),
            accepted.clone(),
            duplicates.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(());
                }
                if args.rate > 0 {
                    // Batch b is due when b × batch_size events have been offered at `rate`.
                    let due = started
                        + Duration::from_secs_f64((b * args.batch_size) as f64 / args.rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let first = b * args.batch_size;
                let last = (first + args.batch_size).min(args.events);
                let events: Vec<serde_json::Value> = (first..last)
                    .map(|i| {
                        let mut event = json!({
                            "id": format!("{run}-{i}"),
                            "metric": args.metric,
                            "properties": { "value": 1 + i % 7 }
                        });
                        if let Some(account) = &args.account {
                            event["account"] = json!(account);
                        }
                        event
                    })
                    .collect();
                let body = json!({ "events": events });
                let sends = if args.duplicate_every > 0 && b % args.duplicate_every == 0 {
                    2
                } else {
                    1
                };
                for _ in 0..sends {
                    let t0 = Instant::now();
                    let answer = send(&client, &args, &body).await?;
                    latency
                        .lock()
                        .await
                        .record(t0.elapsed().as_micros() as u64)?;
                    accepted.fetch_add(answer.0, std::sync::atomic::Ordering::Relaxed);
                    duplicates.fetch_add(answer.1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed();
    stop_probe.store(true, std::sync::atomic::Ordering::Relaxed);
    let accepted = accepted.load(std::sync::atomic::Ordering::Relaxed);
    let duplicates = duplicates.load(std::sync::atomic::Ordering::Relaxed);
    let h = latency.lock().await;
    println!(
        "accepted {accepted} events ({duplicates} duplicates answered) in {:.2} s: {:.0} events/s accepted durably",
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64()
    );
    println!(
        "batch request latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests)",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len()
    );
    if let Some(probe) = probe {
        probe.await??;
    }

    // Ledger check: one entry per distinct event of the run.
    let entries = ledger_entries_of_run(&args.database_url, &run).await?;
    println!(
        "ledger: {entries} entries for {} distinct events of the run{}",
        args.events,
        if entries == args.events && accepted == args.events {
            " — exact"
        } else {
            " — MISMATCH"
        }
    );
    if entries != args.events || accepted != args.events {
        bail!("ledger mismatch");
    }
    Ok(())
}

/// Ledger entries written for the run's events.
async fn ledger_entries_of_run(database_url: &str, run: &str) -> anyhow::Result<u64> {
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = Int8)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let n: N = diesel::sql_query(
        "SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'event' AND source_id LIKE $1",
    )
    .bind::<diesel::sql_types::Text, _>(format!("{run}-%"))
    .get_result(&mut conn)
    .await?;
    Ok(u64::try_from(n.n).unwrap_or(0))
}

/// Sends one batch, retrying 429/5xx and transport errors; returns (accepted, duplicates).
async fn send(
    client: &reqwest::Client,
    args: &Args,
    body: &serde_json::Value,
) -> anyhow::Result<(u64, u64)> {
    let url = format!("{}/v1/events/batch", args.gateway_url);
    for _ in 0..10 {
        match client
            .post(&url)
            .bearer_auth(&args.api_key)
            .json(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await?;
                if v["rejected"].as_u64().unwrap_or(0) > 0 {
                    bail!("events rejected: {}", v["results"]);
                }
                return Ok((
                    v["accepted"].as_u64().unwrap_or(0),
                    v["duplicates"].as_u64().unwrap_or(0),
                ));
            }
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {}
            Ok(r) => bail!("batch refused: {} {}", r.status(), r.text().await?),
            Err(e) => eprintln!("send failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("a batch failed 10 times")
}

/// Every 100 ms: one event, then poll the usage API until it is there.
async fn probe_loop(
    client: reqwest::Client,
    args: Arc<Args>,
    run: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let mut h = histogram()?;
    let mut k = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let id = format!("probe-{run}-{k}");
        k += 1;
        let t0 = Instant::now();
        let r = client
            .post(format!("{}/v1/events", args.gateway_url))
            .bearer_auth(&args.api_key)
            .json(&json!({ "id": id, "metric": args.metric, "properties": { "value": 1 } }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("probe event refused: {}", r.status());
        }
        loop {
            let page: serde_json::Value = client
                .get(format!(
                    "{}/v1/usage/events?event_id={id}",
                    args.gateway_url
                ))
                .bearer_auth(&args.api_key)
                .send()
                .await?
                .json()
                .await?;
            if page["data"].as_array().is_some_and(|d| !d.is_empty()) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("probe event {id} not visible after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.record(t0.elapsed().as_micros() as u64)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "event → visible in GET /v1/usage/events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} probes)",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len()
    );
    Ok(())
}

/// `GET /healthz` alternately through both gateways, one request at a time.
async fn compare(
    client: &reqwest::Client,
    metered: &str,
    unmetered: &str,
    requests: u64,
) -> anyhow::Result<()> {
    let (mut with, mut without) = (histogram()?, histogram()?);
    for i in 0..requests * 2 {
        let (url, h) = if i % 2 == 0 {
            (metered, &mut with)
        } else {
            (unmetered, &mut without)
        };
        let t0 = Instant::now();
        let r = client.get(format!("{url}/healthz")).send().await?;
        r.bytes().await?;
        h.record(t0.elapsed().as_micros() as u64)?;
    }
    println!(
        "gateway GET /healthz, {requests} each, interleaved: metering on p50 {:.3} ms p99 {:.3} ms; metering off p50 {:.3} ms p99 {:.3} ms",
        ms(with.value_at_quantile(0.5)),
        ms(with.value_at_quantile(0.99)),
        ms(without.value_at_quantile(0.5)),
        ms(without.value_at_quantile(0.99)),
    );
    Ok(())
}
