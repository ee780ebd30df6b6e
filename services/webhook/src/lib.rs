//! webhook: the system's webhook boundary in both directions (issue 5; SPEC "Webhooks").
//!
//! - **Inbound** ([`inbound`]): PSPs post signed events to `/webhooks/{psp}`; each verified
//!   event is stored once with its raw body and published through the transactional outbox
//!   as `psp.{psp}.{event_type}` for billing to apply.
//! - **Outbound** ([`fanout`], [`dispatch`]): tenants' domain events from the events exchange
//!   become deliveries to their registered endpoints, signed per Standard Webhooks, retried
//!   with backoff and jitter, logged per attempt, redeliverable, and an endpoint failing for
//!   days is disabled with a `webhook_endpoint.disabled` notification.
//! - **Tenant API** ([`api`]): endpoints and the delivery log, behind the gateway.
//! - **Egress** ([`egress`]): deliveries go only to public addresses unless
//!   `delivery.allow_private_networks` is on (endpoint URLs are tenants' input).
//!
//! The service also runs an outbox relay (`tollgate_runtime::relay`), so its own rows are
//! published without waiting for another service's.

pub mod api;
pub mod config;
pub mod deliveries;
pub mod dispatch;
pub mod egress;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod fanout;
pub mod inbound;
pub mod metrics;
pub mod signing;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_messaging::Broker;
use tollgate_psp::WebhookVerifier;
use tollgate_runtime::http::{observe, Ops, Readiness};
use tollgate_runtime::relay::Relay;
use tollgate_storage::group_commit::GroupCommit;
use tollgate_storage::PgPool;

pub use config::WebhookConfig;
pub use error::WebhookError;

/// Shared state of the tenant API's handlers.
pub struct AppState {
    pub pool: PgPool,
    pub internal_token: String,
    pub delivery: config::DeliveryConfig,
    /// Wakes the dispatcher (a redelivery is due now).
    pub dispatch_wake: Arc<Notify>,
}

/// A running webhook service.
pub struct RunningWebhook {
    pub addr: SocketAddr,
    pub pool: PgPool,
    server: actix_web::dev::ServerHandle,
    tasks: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
    broker_cancel: CancellationToken,
    consuming: Arc<AtomicBool>,
}

impl RunningWebhook {
    /// Waits until the fan-out queue is declared, bound and consumed, at most `timeout`;
    /// returns whether it is. Tenants' events published before that are not delivered (the
    /// queue is durable, so this matters only at the very first start, and in tests).
    pub async fn wait_consuming(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.consuming.load(Ordering::Acquire) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Graceful stop: the HTTP server drains, the fan-out stops taking events and settles
    /// the ones it holds, attempts in flight are recorded, then the broker connection closes.
    pub async fn stop(self) {
        self.server.stop(true).await;
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.broker_cancel.cancel();
    }
}

/// A PSP's verifier, when the configuration enables it.
type Verifier = Option<Arc<dyn WebhookVerifier>>;

/// The verifiers the configuration enables, Stripe's and Razorpay's (a PSP without secrets
/// has none).
fn verifiers(config: &WebhookConfig) -> (Verifier, Verifier) {
    let stripe: Verifier = (!config.stripe.endpoint_secrets.is_empty()).then(|| {
        Arc::new(tollgate_psp::stripe::StripeVerifier::new(
            config.stripe.endpoint_secrets.clone(),
            config.stripe.tolerance_secs,
        )) as Arc<dyn WebhookVerifier>
    });
    let razorpay: Verifier = (!config.razorpay.secrets.is_empty()).then(|| {
        Arc::new(
            tollgate_psp::razorpay::RazorpayVerifier::new(config.razorpay.secrets.clone())
                .with_livemode(config.razorpay.livemode),
        ) as Arc<dyn WebhookVerifier>
    });
    (stripe, razorpay)
}

/// Starts the service: the HTTP server (inbound webhooks, tenant API, ops endpoints), the
/// outbox relay, the fan-out consumer and the dispatcher. A database or broker that is down
/// is not an error: the service starts, reports not ready and reconnects.
pub async fn start(
    config: WebhookConfig,
    cancel: CancellationToken,
) -> anyhow::Result<RunningWebhook> {
    let pool = config.database.pool()?;
    let broker_cancel = CancellationToken::new();
    let broker = Broker::start("webhook", config.amqp.clone(), broker_cancel.clone());
    let events_exchange = broker.topology().events_exchange();
    let registry = tollgate_runtime::metrics::registry("webhook");
    let metrics = metrics::WebhookMetrics::register(&registry)?;
    let relay_wake = Arc::new(Notify::new());
    let dispatch_wake = Arc::new(Notify::new());
    let mut tasks = Vec::new();

    let relay = Relay {
        pool: pool.clone(),
        broker: broker.clone(),
        config: config.relay.clone(),
        wake: relay_wake.clone(),
        published: Relay::counter(&registry)?,
    };
    tasks.push(tokio::spawn(relay.run(cancel.child_token())));

    let consuming = Arc::new(AtomicBool::new(false));
    let fanout = Arc::new(fanout::Fanout {
        pool: pool.clone(),
        broker: broker.clone(),
        prefetch: config.fanout.prefetch,
        queue_type: config.amqp.queue_type,
        queue_expires_ms: config.amqp.queue_expires_ms,
        dispatch_wake: dispatch_wake.clone(),
        metrics: metrics.clone(),
        consuming: consuming.clone(),
    });
    tasks.push(tokio::spawn(fanout.run(cancel.child_token())));

    let mut client = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.delivery.timeout_ms.min(5_000)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(config.delivery.concurrency);
    if !config.delivery.allow_private_networks {
        client = client.dns_resolver(Arc::new(egress::PublicOnlyResolver));
    }
    let client = client.build()?;
    let dispatcher = Arc::new(dispatch::Dispatcher {
        pool: pool.clone(),
        client,
        config: config.delivery.clone(),
        events_exchange: events_exchange.clone(),
        wake: dispatch_wake.clone(),
        relay_wake: relay_wake.clone(),
        metrics: metrics.clone(),
    });
    tasks.push(tokio::spawn(dispatcher.run(cancel.child_token())));

    let (stripe, razorpay) = verifiers(&config);
    if stripe.is_none() {
        tracing::warn!("no Stripe endpoint secret configured (stripe.endpoint_secrets): /webhooks/stripe refuses every request");
    }
    let inbound = web::Data::new(inbound::Inbound {
        stripe,
        razorpay,
        writer: GroupCommit::start(
            pool.clone(),
            inbound::PspEventWriter,
            config.inbound.writers,
            config.inbound.max_batch,
            Duration::ZERO,
        ),
        max_body_bytes: config.max_body_bytes,
        events_exchange,
        relay_wake,
        metrics,
    });
    let state = web::Data::new(AppState {
        pool: pool.clone(),
        internal_token: config.internal_token.clone(),
        delivery: config.delivery.clone(),
        dispatch_wake,
    });
    let ops = Ops::new(
        Readiness {
            database: Some(pool.clone()),
            broker: Some(broker),
        },
        registry,
    )?;
    let listener = TcpListener::bind((config.http.host.as_str(), config.http.port))?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(inbound.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|err, _| {
                        WebhookError::Invalid(format!("request body: {err}")).into()
                    }),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| WebhookError::Invalid(format!("query: {err}")).into()),
            )
            .wrap(middleware::from_fn(observe))
            .configure(|cfg| ops.configure(cfg))
            .configure(inbound::routes)
            .configure(api::routes)
            .default_service(web::to(tollgate_runtime::http::not_found))
    })
    .workers(config.http.workers)
    .disable_signals()
    .shutdown_timeout(25)
    .listen(listener)?
    .run();
    let server = tollgate_runtime::http::spawn_server("webhook", server);
    tracing::info!(%addr, "webhook service listening");
    Ok(RunningWebhook {
        addr,
        pool,
        server,
        tasks,
        cancel,
        broker_cancel,
        consuming,
    })
}
