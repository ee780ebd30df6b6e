//! The gateway: Tollgate's only public HTTP entry. Authenticates API keys, resolves the
//! tenant, enforces per-tenant rate limits and body limits, assigns request ids, and proxies
//! `/v1/jobs…` to job-intake (SPEC "Security", STYLE "Telemetry").

pub mod auth;
pub mod config;
pub mod error;
pub mod proxy;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use tollgate_runtime::http::{observe, Ops, Readiness};

pub use config::GatewayConfig;

/// State shared by the gateway's handlers.
pub struct GatewayState {
    pub auth: auth::Authenticator,
    pub rate_limits: auth::RateLimits,
    pub client: reqwest::Client,
    pub intake_url: String,
    pub internal_token: String,
    pub max_body_bytes: usize,
    pub upstream_timeout: Duration,
}

/// A running gateway.
pub struct RunningGateway {
    pub addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
}

impl RunningGateway {
    /// Stops accepting connections and drains in-flight requests.
    pub async fn stop(self) {
        self.server.stop(true).await;
    }
}

/// Starts the gateway's HTTP server.
pub async fn start(config: GatewayConfig) -> anyhow::Result<RunningGateway> {
    let pool = config.database.pool()?;
    let registry = tollgate_runtime::metrics::registry("gateway");
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(256)
        .build()?;
    let state = web::Data::new(GatewayState {
        auth: auth::Authenticator::new(
            pool.clone(),
            Duration::from_millis(config.key_cache_ttl_ms),
        ),
        rate_limits: auth::RateLimits::default(),
        client,
        intake_url: config.intake_url.clone(),
        internal_token: config.internal_token.clone(),
        max_body_bytes: config.max_body_bytes,
        upstream_timeout: Duration::from_millis(config.upstream_timeout_ms),
    });
    let ops = Ops::new(
        Readiness {
            database: Some(pool),
            broker: None,
        },
        registry,
    )?;
    let listener = TcpListener::bind((config.http.host.as_str(), config.http.port))?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(observe))
            .configure(|cfg| ops.configure(cfg))
            .configure(proxy::routes)
            .default_service(web::to(tollgate_runtime::http::not_found))
    })
    .workers(config.http.workers)
    .disable_signals()
    .shutdown_timeout(25)
    .listen(listener)?
    .run();
    let handle = tollgate_runtime::http::spawn_server("gateway", server);
    tracing::info!(%addr, "gateway listening");
    Ok(RunningGateway {
        addr,
        server: handle,
    })
}
