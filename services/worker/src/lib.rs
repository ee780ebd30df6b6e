//! The worker: consumes execute messages from RabbitMQ, runs each job through its type's
//! executor, retries retryable failures through delay queues, dead-letters exhausted jobs,
//! and commits success, cost and the ledger entry in one transaction (SPEC "Jobs").

pub mod config;
pub mod consume;
pub mod executor;
pub mod job_events;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_messaging::Broker;
use tollgate_runtime::http::{observe, Ops, Readiness};
use tollgate_runtime::relay::Relay;

pub use config::WorkerConfig;
use consume::{Consumer, WorkerMetrics};
use tollgate_storage::group_commit::GroupCommit;
use tollgate_storage::jobs::{AttemptFinisher, AttemptStarter};

/// A running worker.
pub struct RunningWorker {
    /// The ops HTTP server's address.
    pub addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    consumer: JoinHandle<()>,
    /// The outbox relay and the job-event subscription refresh; stopped last.
    background: Vec<JoinHandle<()>>,
    background_cancel: CancellationToken,
    stop: CancellationToken,
    kill: CancellationToken,
    broker_cancel: CancellationToken,
}

impl RunningWorker {
    /// Graceful stop (SIGTERM): stop consuming, finish in-flight jobs, ack, close.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.consumer.await;
        self.background_cancel.cancel();
        for task in self.background {
            let _ = task.await;
        }
        self.broker_cancel.cancel();
        self.server.stop(true).await;
    }

    /// Abrupt stop, as a crash: in-flight jobs are abandoned unacked and the connection is
    /// dropped, so RabbitMQ redelivers them to another worker.
    pub async fn kill(self) {
        self.kill.cancel();
        let _ = self.consumer.await;
        self.background_cancel.cancel();
        for task in self.background {
            task.abort();
        }
        self.broker_cancel.cancel();
        self.server.stop(false).await;
    }
}

/// Starts the worker. A database or broker that is down is not an error: it waits,
/// reports not ready, and reconnects.
pub async fn start(config: WorkerConfig) -> anyhow::Result<RunningWorker> {
    let pool = config.database.pool()?;
    let broker_cancel = CancellationToken::new();
    let broker = Broker::start("worker", config.amqp.clone(), broker_cancel.clone());

    let registry = tollgate_runtime::metrics::registry("worker");
    let attempts = IntCounterVec::new(
        Opts::new("tollgate_job_attempts_total", "Job attempts by outcome"),
        &["outcome"],
    )?;
    let execution = HistogramVec::new(
        HistogramOpts::new(
            "tollgate_job_execution_seconds",
            "Executor time per attempt, seconds",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(attempts.clone()))?;
    registry.register(Box::new(execution.clone()))?;

    // Job events leave through the outbox; this relay publishes them (any service's relay
    // would: the table is shared).
    let background_cancel = CancellationToken::new();
    let relay_wake = Arc::new(tokio::sync::Notify::new());
    let relay = Relay {
        pool: pool.clone(),
        broker: broker.clone(),
        config: config.relay.clone(),
        wake: relay_wake.clone(),
        published: Relay::counter(&registry)?,
    };
    let job_events = job_events::JobEventSubscribers::default();
    let background = vec![
        tokio::spawn(relay.run(background_cancel.child_token())),
        tokio::spawn(job_events.clone().run(
            pool.clone(),
            Duration::from_millis(config.job_events_refresh_ms),
            background_cancel.child_token(),
        )),
    ];

    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(usize::from(config.prefetch))
        .build()?;
    let consumer = Arc::new(Consumer {
        pool: pool.clone(),
        broker: broker.clone(),
        http,
        starts: GroupCommit::start(
            pool.clone(),
            AttemptStarter,
            config.group_commit.writers,
            config.group_commit.max_batch,
            config.group_commit.linger(),
        ),
        finishes: GroupCommit::start(
            pool.clone(),
            AttemptFinisher,
            config.group_commit.writers,
            config.group_commit.max_batch,
            config.group_commit.linger(),
        ),
        catalog: tollgate_storage::catalog::Catalog::new(Duration::from_millis(
            config.catalog_cache_ttl_ms,
        )),
        retry: config.retry.clone(),
        prefetch: config.prefetch,
        in_flight: tokio::sync::Semaphore::new(usize::from(config.prefetch.max(1))),
        metrics: WorkerMetrics {
            attempts,
            execution,
        },
        job_events,
        relay_wake,
    });
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let consumer_task = tokio::spawn(consumer.run(stop.clone(), kill.clone()));

    let ops = Ops::new(
        Readiness {
            database: Some(pool),
            broker: Some(broker),
        },
        registry,
    )?;
    let listener = TcpListener::bind((config.http.host.as_str(), config.http.port))?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(middleware::from_fn(observe))
            .configure(|cfg| ops.configure(cfg))
            .default_service(web::to(tollgate_runtime::http::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = tollgate_runtime::http::spawn_server("worker", server);
    tracing::info!(%addr, "worker started");
    Ok(RunningWorker {
        addr,
        server: handle,
        consumer: consumer_task,
        background,
        background_cancel,
        stop,
        kill,
        broker_cancel,
    })
}
