//! job-intake: accepts job submissions (validation against the job-type catalog,
//! idempotency, transactional outbox), serves job reads, and relays the outbox to RabbitMQ
//! with publisher confirms (SPEC "Jobs", "Messaging").
//!
//! Jobs and events of tenants that enforce billing are gated by an in-memory entitlement
//! projection (issue 4, "Entitlements at intake"; see [`entitlements`]).
//!
//! It is internal: the gateway authenticates callers and forwards the tenant in
//! `x-tollgate-tenant`.

pub mod accounts;
pub mod artifacts;
pub mod config;
pub mod entitlements;
pub mod error;
pub mod events;
pub mod jobs;
pub mod usage;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use prometheus::{IntCounterVec, Opts};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_messaging::Broker;
use tollgate_runtime::http::{observe, Ops, Readiness};
use tollgate_runtime::relay::Relay;
use tollgate_storage::group_commit::GroupCommit;
use tollgate_storage::jobs::JobInserter;
use tollgate_storage::PgPool;

pub use config::IntakeConfig;

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub pool: PgPool,
    /// Batches job inserts (with their outbox rows) into shared transactions.
    pub inserts: GroupCommit<JobInserter>,
    pub catalog: tollgate_storage::catalog::Catalog,
    /// Wakes the relay after a commit.
    pub relay_wake: Arc<Notify>,
    pub broker: Broker,
    pub internal_token: String,
    pub submitted: IntCounterVec,
    /// Artifact object storage and download-link signing.
    pub artifacts: artifacts::ArtifactStore,
    /// The billable-metrics catalog, cached.
    pub metrics: tollgate_storage::catalog::MetricCatalog,
    /// Batches usage-event writes into shared transactions.
    pub event_writes: GroupCommit<tollgate_storage::events::EventInserter>,
    pub events: config::EventsConfig,
    pub events_ingested: IntCounterVec,
    /// The entitlement projection every job and event is checked against.
    pub entitlements: Arc<entitlements::Entitlements>,
}

/// A running job-intake: its address and how to stop it.
pub struct RunningIntake {
    pub addr: SocketAddr,
    pub broker: Broker,
    server: actix_web::dev::ServerHandle,
    tasks: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
}

impl RunningIntake {
    /// Stops accepting requests, finishes in-flight ones, stops the relay.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.server.stop(true).await;
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts job-intake: pool, broker supervisor, outbox relay, the entitlement projection and
/// its refresh task, and the HTTP server. Waits up to `entitlements.startup_wait_ms` for the
/// first entitlement load. Errors: the port cannot be bound or the configuration is
/// unusable. A database or broker that is down is not an error: the service starts, reports
/// not ready and reconnects (gated requests get 503 until the first load).
pub async fn start(
    config: IntakeConfig,
    cancel: CancellationToken,
) -> anyhow::Result<RunningIntake> {
    let pool = config.database.pool()?;
    let broker = Broker::start("job-intake", config.amqp.clone(), cancel.child_token());

    let registry = tollgate_runtime::metrics::registry("job-intake");
    let submitted = IntCounterVec::new(
        Opts::new(
            "tollgate_jobs_submitted_total",
            "Job submissions by outcome",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(submitted.clone()))?;
    let published = Relay::counter(&registry)?;

    let relay_wake = Arc::new(Notify::new());
    let relay = Relay {
        pool: pool.clone(),
        broker: broker.clone(),
        config: config.relay.clone(),
        wake: relay_wake.clone(),
        published,
    };
    let relay_task = tokio::spawn(relay.run(cancel.child_token()));

    let inserts = GroupCommit::start(
        pool.clone(),
        JobInserter,
        config.group_commit.writers,
        config.group_commit.max_batch,
        config.group_commit.linger(),
    );
    let event_writes = GroupCommit::start(
        pool.clone(),
        tollgate_storage::events::EventInserter,
        config.events.writers,
        config.events.max_group,
        Duration::ZERO,
    );
    let events_ingested = IntCounterVec::new(
        Opts::new(
            "tollgate_events_ingested_total",
            "Usage events by outcome (accepted, duplicate, rejected)",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(events_ingested.clone()))?;
    let entitlements = entitlements::Entitlements::new(&config.entitlements, &registry)?;
    let first_load = tokio::time::timeout(
        Duration::from_millis(config.entitlements.startup_wait_ms),
        entitlements.refresh(&pool, true),
    )
    .await;
    match first_load {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "entitlements not loaded at start-up; gated requests get 503 until they are")
        }
        Err(_) => tracing::warn!(
            "entitlements not loaded within entitlements.startup_wait_ms; gated requests get 503 until they are"
        ),
    }
    let artifact_store =
        artifacts::ArtifactStore::from_config(&config.artifacts, config.max_body_bytes)?;
    let refresh_pool = pool.clone();
    let entitlements_for_refresh = Arc::clone(&entitlements);
    let state = web::Data::new(AppState {
        pool: pool.clone(),
        inserts,
        catalog: tollgate_storage::catalog::Catalog::new(Duration::from_millis(
            config.catalog_cache_ttl_ms,
        )),
        relay_wake,
        broker: broker.clone(),
        internal_token: config.internal_token.clone(),
        submitted,
        artifacts: artifact_store,
        metrics: tollgate_storage::catalog::MetricCatalog::new(Duration::from_millis(
            config.catalog_cache_ttl_ms,
        )),
        event_writes,
        events: config.events.clone(),
        events_ingested,
        entitlements,
    });
    let ops = Ops::new(
        Readiness {
            database: Some(pool),
            broker: Some(broker.clone()),
        },
        registry,
    )?;
    let max_body = config.max_body_bytes;

    let listener = TcpListener::bind((config.http.host.as_str(), config.http.port))?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(middleware::from_fn(observe))
            .configure(|cfg| ops.configure(cfg))
            .configure(jobs::routes)
            .configure(artifacts::routes)
            .configure(events::routes)
            .configure(accounts::routes)
            .configure(usage::routes)
            .default_service(web::to(tollgate_runtime::http::not_found))
    })
    .workers(config.http.workers)
    .disable_signals()
    .shutdown_timeout(25)
    .listen(listener)?
    .run();
    let handle = tollgate_runtime::http::spawn_server("job-intake", server);
    let entitlements_task =
        entitlements_for_refresh.spawn_refresh(refresh_pool, cancel.child_token());
    let entitlements_events =
        entitlements_for_refresh.spawn_event_listener(broker.clone(), cancel.child_token());
    tracing::info!(%addr, "job-intake listening");
    Ok(RunningIntake {
        addr,
        broker,
        server: handle,
        tasks: vec![relay_task, entitlements_task, entitlements_events],
        cancel,
    })
}
