//! `tollgate-loadgen`: submits N jobs through the gateway (as fast as possible or at a fixed
//! rate), reports submit latency p50/p99 and end-to-end jobs/s, then checks in PostgreSQL that
//! the ledger holds exactly one entry per succeeded job of the run.
//!
//! Every job of a run carries `{"run": <run id>, "i": <n>, "text": …}` as input, so the run's
//! jobs are found again in the database without keeping their ids.
//!
//! While waiting for completion it polls only the jobs still unfinished (by id, every
//! 100 ms), so the measurement costs the co-located database little; the end-to-end time is
//! the last job's `finished_at` minus the first submission, so it does not depend on the poll
//! period either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use diesel::sql_types::{Int8, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate-loadgen",
    about = "Load-test the job pipeline end to end"
)]
struct Args {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    gateway_url: String,
    /// API key of the tenant to submit as.
    #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
    api_key: String,
    /// PostgreSQL URL, to watch completion and check the ledger.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Job type to submit.
    #[arg(long, default_value = "wordcount")]
    job_type: String,
    /// Number of jobs.
    #[arg(long, default_value_t = 5000)]
    jobs: u64,
    /// Submissions per second; 0 submits as fast as the concurrency allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to wait for every job to finish, seconds.
    #[arg(long, default_value_t = 300)]
    wait_secs: u64,
    /// Submit only; do not wait for completion or check the ledger.
    #[arg(long)]
    no_wait: bool,
    /// Run id (default: random); reuse it with --check-only to check an earlier run.
    #[arg(long)]
    run_id: Option<String>,
    /// Skip submitting; wait for and check the jobs of --run-id.
    #[arg(long)]
    check_only: bool,
    /// Submit the jobs for this workspace (billing entity): with billing enforced, each
    /// submission goes through intake's entitlement check.
    #[arg(long)]
    workspace: Option<String>,
}

#[derive(QueryableByName)]
struct Unfinished {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: uuid::Uuid,
}

#[derive(QueryableByName)]
struct LastFinished {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(QueryableByName)]
struct RunState {
    #[diesel(sql_type = Int8)]
    total: i64,
    #[diesel(sql_type = Int8)]
    succeeded: i64,
    #[diesel(sql_type = Int8)]
    terminal: i64,
    #[diesel(sql_type = Int8)]
    ledger_entries: i64,
    #[diesel(sql_type = Int8)]
    jobs_billed_twice: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    println!(
        "run {run_id}: {} jobs of type {} via {}",
        args.jobs, args.job_type, args.gateway_url
    );
    let started_wall = chrono::Utc::now();
    let mut pending = Vec::new();
    if !args.check_only {
        pending = submit_all(&args, &run_id).await?;
    }
    if args.no_wait {
        return Ok(());
    }
    let mut conn = AsyncPgConnection::establish(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    // Cheap polling: only the submitted jobs not yet seen finished, by primary key.
    while !pending.is_empty() && Instant::now() < deadline {
        let unfinished: Vec<Unfinished> = diesel::sql_query(
            "SELECT id FROM jobs WHERE id = ANY($1) \
             AND status NOT IN ('succeeded', 'failed', 'dead')",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&pending)
        .load(&mut conn)
        .await?;
        pending = unfinished.into_iter().map(|row| row.id).collect();
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let state = loop {
        let state = run_state(&mut conn, &run_id).await?;
        if state.total > 0
            && state.terminal == state.total
            && (args.check_only || state.total as u64 == args.jobs)
        {
            break state;
        }
        if Instant::now() > deadline {
            bail!(
                "timed out: {} of {} jobs finished",
                state.terminal,
                state.total
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !args.check_only {
        let last: LastFinished =
            diesel::sql_query("SELECT max(finished_at) AS at FROM jobs WHERE input->>'run' = $1")
                .bind::<Text, _>(&run_id)
                .get_result(&mut conn)
                .await?;
        let end = last.at.context("no finished job in the run")?;
        let elapsed = (end - started_wall)
            .to_std()
            .context("the last job finished before the first submission")?;
        println!(
            "end to end: {} jobs finished in {:.2} s (first submission → last job's finished_at) = {:.0} jobs/s",
            state.total,
            elapsed.as_secs_f64(),
            state.total as f64 / elapsed.as_secs_f64()
        );
    }
    println!(
        "ledger check: {} succeeded jobs, {} ledger entries, {} jobs billed more than once",
        state.succeeded, state.ledger_entries, state.jobs_billed_twice
    );
    if state.ledger_entries != state.succeeded || state.jobs_billed_twice != 0 {
        bail!("LEDGER MISMATCH");
    }
    println!("ledger check: OK (exactly one entry per succeeded job)");
    Ok(())
}

/// Submits the run's jobs; returns the ids the gateway answered with.
async fn submit_all(args: &Args, run_id: &str) -> anyhow::Result<Vec<uuid::Uuid>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        usize::try_from(args.jobs).unwrap_or(0),
    )));
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(4);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let client = client.clone();
        let histogram = histogram.clone();
        let next = next.clone();
        let failures = failures.clone();
        let ids = ids.clone();
        let url = format!("{}/v1/jobs", args.gateway_url.trim_end_matches('/'));
        let key = args.api_key.clone();
        let job_type = args.job_type.clone();
        let workspace = args.workspace.clone();
        let run_id = run_id.to_owned();
        let text = text.clone();
        let (total, rate) = (args.jobs, args.rate);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if rate > 0 {
                    // Open-loop schedule: job i is due at i / rate seconds.
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let mut body = serde_json::json!({
                    "type": job_type,
                    "input": { "run": run_id, "i": i, "text": text },
                });
                if let Some(workspace) = &workspace {
                    body["workspace"] = serde_json::Value::String(workspace.clone());
                }
                let sent = Instant::now();
                let result = client.post(&url).bearer_auth(&key).json(&body).send().await;
                let micros = sent.elapsed().as_micros() as u64;
                match result {
                    Ok(res) if res.status().as_u16() == 202 || res.status().as_u16() == 200 => {
                        histogram.lock().await.saturating_record(micros.max(1));
                        let job: serde_json::Value = res.json().await.unwrap_or_default();
                        match job["id"].as_str().and_then(job_uuid) {
                            Some(id) => ids.lock().unwrap_or_else(|p| p.into_inner()).push(id),
                            None => {
                                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                eprintln!("job {i}: answer without a job id: {job}");
                            }
                        }
                    }
                    Ok(res) => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        eprintln!(
                            "job {i}: HTTP {}: {}",
                            res.status(),
                            res.text().await.unwrap_or_default()
                        );
                    }
                    Err(err) => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        eprintln!("job {i}: {err}");
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let h = histogram.lock().await;
    println!(
        "submitted {} jobs in {:.2} s = {:.0} submits/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        h.len(),
        elapsed.as_secs_f64(),
        h.len() as f64 / elapsed.as_secs_f64(),
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    let failed =
        std::sync::atomic::AtomicU64::load(&failures, std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} submissions failed");
    }
    let ids = std::mem::take(&mut *ids.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(ids)
}

/// The UUID inside a job id as the API shows it (`job_<32 hex>`).
fn job_uuid(id: &str) -> Option<uuid::Uuid> {
    uuid::Uuid::parse_str(id.strip_prefix("job_")?).ok()
}

async fn run_state(conn: &mut AsyncPgConnection, run_id: &str) -> anyhow::Result<RunState> {
    let state = diesel::sql_query(
        "WITH run AS (SELECT id, status FROM jobs WHERE input->>'run' = $1), \
              billed AS (SELECT l.source_id, count(*) AS n FROM ledger_entries l \
                         JOIN run ON l.source_id = 'job_' || replace(run.id::text, '-', '') \
                         WHERE l.source_kind = 'job' GROUP BY l.source_id) \
         SELECT (SELECT count(*) FROM run) AS total, \
                (SELECT count(*) FROM run WHERE status = 'succeeded') AS succeeded, \
                (SELECT count(*) FROM run WHERE status IN ('succeeded', 'failed', 'dead')) AS terminal, \
                (SELECT coalesce(sum(n), 0)::int8 FROM billed) AS ledger_entries, \
                (SELECT count(*) FROM billed WHERE n > 1) AS jobs_billed_twice",
    )
    .bind::<Text, _>(run_id)
    .get_result::<RunState>(conn)
    .await?;
    Ok(state)
}
