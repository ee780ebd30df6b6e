//! billing: turns the ledger into money (issue 4; SPEC "Billing"): the versioned plan catalog,
//! subscriptions, billing runs that rate each period into an invoice, finalization with a
//! gapless number and a PDF, credit notes and voiding, and reconciliation. Issue 5 adds
//! collection through the PSP (`payments`: payment intents for finalized invoices, refunds;
//! `checkout`: checkout and portal sessions), verified PSP events applied idempotently and
//! out-of-order-safely (`psp_events`, from the queue `{prefix}.billing.psp`), dunning with
//! stored retry schedules (`dunning`) and PSP reconciliation (`reconcile::reconcile_psp`).
//! Its events (`subscription.updated`, `invoice.finalized`, `payment.requested`,
//! `usage.threshold_reached`, `invoice.paid`, `payment.succeeded`, `payment.failed`,
//! `payment.refunded`) leave through the transactional outbox, which billing's own relay
//! publishes.
//!
//! Internal like job-intake: the gateway authenticates callers and forwards the tenant.

pub mod api;
pub mod catalog;
pub mod checkout;
pub mod config;
pub mod dunning;
pub mod events;
pub mod invoicing;
pub mod payments;
pub mod periods;
pub mod psp_events;
pub mod rating;
pub mod reconcile;
pub mod run;
pub mod subscriptions;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{middleware, web, App, HttpResponse, HttpServer, ResponseError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_messaging::{Broker, Topology};
use tollgate_psp::stripe::StripeError;
use tollgate_runtime::http::{error_response, observe, Ops, Readiness};
use tollgate_runtime::relay::Relay;
use tollgate_storage::{PgPool, StorageError};

pub use config::BillingConfig;
pub use payments::PaymentsContext;

/// What billing's operations share: the pool, where events go, where PDFs are stored, how
/// payments are collected.
#[derive(Clone)]
pub struct BillingContext {
    pub pool: PgPool,
    /// `<prefix>.events`.
    pub events_exchange: String,
    /// Invoice PDF storage; None runs without PDFs (finalization still works).
    pub objects: Option<Arc<tollgate_objects::Objects>>,
    /// How long drafts stay open after their period ends.
    pub grace: chrono::Duration,
    /// The PSP client and the dunning schedule (`PaymentsContext::default()`: no PSP).
    pub payments: PaymentsContext,
}

impl BillingContext {
    /// The context a configuration describes (opens the object store).
    pub fn from_config(config: &BillingConfig, pool: PgPool) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            events_exchange: Topology::new(&config.amqp.prefix, 1).events_exchange(),
            objects: Some(Arc::new(tollgate_objects::Objects::open(
                &config.documents,
            )?)),
            grace: chrono::Duration::seconds(config.scheduler.grace_secs),
            payments: PaymentsContext::from_config(config)?,
        })
    }
}

/// Billing's errors: each has a stable code, an HTTP status and a message.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("missing or invalid tenant identity")]
    Unauthenticated,
    #[error("{0}")]
    Invalid(String),
    /// A request that moves money back to a customer came without an `Idempotency-Key`: a
    /// retried request could then not be told from a second one (IETF
    /// draft-ietf-httpapi-idempotency-key-header, "Error Scenarios": 400 when the key is
    /// required and missing).
    #[error("this request moves money: send an Idempotency-Key header (1 to 200 characters, the same on every retry)")]
    IdempotencyKeyRequired,
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error("unknown plan `{0}`")]
    UnknownPlan(String),
    #[error("unknown coupon `{0}`")]
    UnknownCoupon(String),
    #[error("unknown account `{0}`")]
    UnknownAccount(String),
    #[error("subscription not found")]
    SubscriptionNotFound,
    #[error("the account already has a live subscription")]
    SubscriptionExists,
    #[error("the subscription is canceled")]
    SubscriptionCanceled,
    #[error("plan change not allowed: {0}")]
    PlanChangeNotAllowed(String),
    #[error("invoice not found")]
    InvoiceNotFound,
    #[error("invoice {0}")]
    InvoiceState(String),
    /// The invoice has a payment the PSP has not decided yet; voiding it now could leave a
    /// charge on a void invoice.
    #[error("invoice has a payment in flight (pending or processing at the payment service provider); void it once the payment is decided")]
    PaymentInFlight,
    #[error("the period is finalized (invoice {invoice}); late usage goes to the next invoice as an adjustment")]
    PeriodLocked { invoice: String },
    #[error("payments are not configured (psp.enabled with a Stripe secret key)")]
    PspNotConfigured,
    #[error("the payment service provider: {0}")]
    Psp(#[source] StripeError),
    #[error("stored billing data is inconsistent: {0}")]
    Corrupt(String),
    #[error("service temporarily unavailable")]
    Storage(#[source] StorageError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl BillingError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Invalid(_) => "INVALID_REQUEST",
            Self::IdempotencyKeyRequired => "IDEMPOTENCY_KEY_REQUIRED",
            Self::Catalog(catalog::CatalogError::Invalid(_)) => "INVALID_CATALOG",
            Self::Catalog(catalog::CatalogError::Storage(_)) => "SERVICE_UNAVAILABLE",
            Self::UnknownPlan(_) => "UNKNOWN_PLAN",
            Self::UnknownCoupon(_) => "UNKNOWN_COUPON",
            Self::UnknownAccount(_) => "UNKNOWN_ACCOUNT",
            Self::SubscriptionNotFound => "SUBSCRIPTION_NOT_FOUND",
            Self::SubscriptionExists => "SUBSCRIPTION_EXISTS",
            Self::SubscriptionCanceled => "SUBSCRIPTION_CANCELED",
            Self::PlanChangeNotAllowed(_) => "PLAN_CHANGE_NOT_ALLOWED",
            Self::InvoiceNotFound => "INVOICE_NOT_FOUND",
            Self::InvoiceState(_) => "INVOICE_STATE",
            Self::PaymentInFlight => "PAYMENT_IN_FLIGHT",
            Self::PeriodLocked { .. } => "BILLING_PERIOD_LOCKED",
            Self::PspNotConfigured => "PSP_NOT_CONFIGURED",
            Self::Psp(StripeError::Card(_)) => "PAYMENT_DECLINED",
            Self::Psp(StripeError::InvalidRequest { .. }) => "PSP_REJECTED",
            Self::Psp(StripeError::Unavailable(_)) => "PSP_UNAVAILABLE",
            Self::Psp(_) => "PSP_ERROR",
            Self::Corrupt(_) | Self::Internal(_) => "INTERNAL",
            Self::Storage(StorageError::Unavailable(_)) => "SERVICE_UNAVAILABLE",
            Self::Storage(_) => "INTERNAL",
        }
    }
}

impl ResponseError for BillingError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::IdempotencyKeyRequired => StatusCode::BAD_REQUEST,
            Self::Invalid(_)
            | Self::Catalog(catalog::CatalogError::Invalid(_))
            | Self::UnknownCoupon(_)
            | Self::UnknownAccount(_)
            | Self::PlanChangeNotAllowed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnknownPlan(_) | Self::SubscriptionNotFound | Self::InvoiceNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::SubscriptionExists
            | Self::SubscriptionCanceled
            | Self::InvoiceState(_)
            | Self::PaymentInFlight
            | Self::PeriodLocked { .. } => StatusCode::CONFLICT,
            Self::Psp(StripeError::Card(_)) => StatusCode::PAYMENT_REQUIRED,
            Self::Psp(StripeError::Unavailable(_)) | Self::PspNotConfigured => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Psp(_) => StatusCode::BAD_GATEWAY,
            Self::Storage(StorageError::Unavailable(_))
            | Self::Catalog(catalog::CatalogError::Storage(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(_) | Self::Corrupt(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let message = match self {
            // Says nothing internal: which setting is missing, or that the PSP is the cause.
            Self::PspNotConfigured => self.to_string(),
            Self::Psp(_) => "the payment service provider refused or failed the request".to_owned(),
            _ if self.status_code().is_server_error() => "internal error".to_owned(),
            _ => self.to_string(),
        };
        error_response(self.status_code(), self.code(), &message, None)
    }
}

impl From<StorageError> for BillingError {
    fn from(err: StorageError) -> Self {
        Self::Storage(err)
    }
}

impl From<diesel::result::Error> for BillingError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Storage(err.into())
    }
}

/// A running billing service.
pub struct RunningBilling {
    pub addr: SocketAddr,
    pub context: BillingContext,
    pub broker: Broker,
    server: actix_web::dev::ServerHandle,
    tasks: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
    broker_cancel: CancellationToken,
}

impl RunningBilling {
    /// Stops the HTTP server (finishing in-flight requests), the consumer (finishing the
    /// event it holds), the collector, the scheduler and the relay, then the broker.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.server.stop(true).await;
        for task in self.tasks {
            let _ = task.await;
        }
        self.broker_cancel.cancel();
    }
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub context: BillingContext,
    pub internal_token: String,
    /// Rows per dunning run started through the API.
    pub dunning_batch: i64,
}

/// Starts billing: the HTTP API, the broker connection with the outbox relay and the PSP
/// event consumer, the payment collector (when the PSP is on), the scheduler (billing runs,
/// dunning runs, reconciliation; when enabled) and the threshold publisher. A database or
/// broker that is down is not an error: the service starts and reports not ready.
pub async fn start(
    config: BillingConfig,
    cancel: CancellationToken,
) -> anyhow::Result<RunningBilling> {
    let pool = config.database.pool()?;
    let context = BillingContext::from_config(&config, pool.clone())?;
    let registry = tollgate_runtime::metrics::registry("billing");
    let broker_cancel = CancellationToken::new();
    let broker = Broker::start("billing", config.amqp.clone(), broker_cancel.clone());
    let mut tasks = Vec::new();
    let relay = Relay {
        pool: pool.clone(),
        broker: broker.clone(),
        config: config.relay.clone(),
        wake: Arc::new(Notify::new()),
        published: Relay::counter(&registry)?,
    };
    tasks.push(tokio::spawn(relay.run(cancel.child_token())));
    tasks.push(tokio::spawn(psp_events::consume(
        context.clone(),
        broker.clone(),
        psp_events::ConsumerSettings {
            queue: format!("{}.billing.psp", config.amqp.prefix),
            queue_type: config.amqp.queue_type,
            queue_expires_ms: config.amqp.queue_expires_ms,
            prefetch: config.psp.consumer.prefetch,
            retry_delay: Duration::from_millis(config.psp.consumer.retry_delay_ms),
        },
        cancel.child_token(),
    )));
    if context.payments.stripe.is_some() {
        tasks.push(tokio::spawn(payments::collector(
            context.clone(),
            Duration::from_millis(config.collector.interval_ms),
            config.collector.batch,
            cancel.child_token(),
        )));
    }
    if config.scheduler.enabled {
        tasks.push(tokio::spawn(scheduler(
            context.clone(),
            config.scheduler.clone(),
            cancel.child_token(),
        )));
        tasks.push(tokio::spawn(reconciler(
            context.clone(),
            Duration::from_secs(config.scheduler.reconcile_interval_secs),
            cancel.child_token(),
        )));
        tasks.push(tokio::spawn(dunning_scheduler(
            context.clone(),
            config.dunning.clone(),
            cancel.child_token(),
        )));
    }
    tasks.push(tokio::spawn(threshold_publisher(
        context.clone(),
        Duration::from_millis(config.scheduler.thresholds_interval_ms),
        cancel.child_token(),
    )));
    let state = web::Data::new(AppState {
        context: context.clone(),
        internal_token: config.internal_token.clone(),
        dunning_batch: config.dunning.batch,
    });
    let ops = Ops::new(
        Readiness {
            database: Some(pool),
            broker: Some(broker.clone()),
        },
        registry,
    )?;
    let listener = TcpListener::bind((config.http.host.as_str(), config.http.port))?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(1 << 20)
                    .error_handler(|err, _| {
                        BillingError::Invalid(format!("request body: {err}")).into()
                    }),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| BillingError::Invalid(format!("query: {err}")).into()),
            )
            .wrap(middleware::from_fn(observe))
            .configure(|cfg| ops.configure(cfg))
            .configure(api::routes)
            .default_service(web::to(tollgate_runtime::http::not_found))
    })
    .workers(config.http.workers)
    .disable_signals()
    .shutdown_timeout(25)
    .listen(listener)?
    .run();
    let server = tollgate_runtime::http::spawn_server("billing", server);
    tracing::info!(%addr, "billing listening");
    Ok(RunningBilling {
        addr,
        context,
        broker,
        server,
        tasks,
        cancel,
        broker_cancel,
    })
}

/// Runs the dunning retries due now, every `interval_secs` (all tenants, the wall clock).
async fn dunning_scheduler(
    ctx: BillingContext,
    config: config::DunningConfig,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.interval_secs));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let opts = dunning::DunningRunOptions {
            tenant: None,
            as_of: chrono::Utc::now(),
            batch: config.batch,
        };
        match dunning::run(&ctx, &opts).await {
            Ok(report) if report.due > 0 => tracing::info!(?report, "dunning run done"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "dunning run failed; retrying next tick"),
        }
    }
}

/// Runs a billing pass every `interval_secs` (all tenants, the wall clock).
async fn scheduler(
    ctx: BillingContext,
    config: config::SchedulerConfig,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.interval_secs));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let opts = run::RunOptions {
            tenant: None,
            as_of: chrono::Utc::now(),
            batch: config.batch,
            max_close_batches: None,
        };
        match run::run(&ctx, &opts).await {
            Ok(report) => tracing::info!(?report, "billing pass done"),
            Err(err) => tracing::warn!(error = %err, "billing pass failed; retrying next tick"),
        }
    }
}

/// Reconciles the previous calendar month (UTC) of every tenant with invoices in it, every
/// `interval` (and, with the PSP on, their payments against Stripe's); each run and its
/// discrepancies are recorded in the audit tables.
async fn reconciler(ctx: BillingContext, interval: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = chrono::Utc::now();
        if let Err(err) = reconcile::reconcile_last_month(&ctx.pool, now).await {
            tracing::warn!(error = %err, "scheduled reconciliation failed; retrying next tick");
        }
        if ctx.payments.stripe.is_some() {
            if let Err(err) = reconcile::reconcile_psp_last_month(&ctx, now).await {
                tracing::warn!(error = %err, "scheduled PSP reconciliation failed; retrying next tick");
            }
        }
    }
}

/// Publishes recorded quota thresholds as events, every `interval`.
async fn threshold_publisher(ctx: BillingContext, interval: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = async {
            let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
            events::publish_thresholds(&ctx, &mut conn, 500).await
        }
        .await;
        if let Err(err) = result {
            tracing::debug!(error = %err, "publishing quota thresholds failed; retrying");
        }
    }
}
