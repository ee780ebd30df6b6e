//! HTTP pieces every service mounts: the one error body shape
//! (`{"error":{"code","message","details"}}`), request ids, per-request metrics and a root
//! span, and the `/healthz`, `/readyz` and `/metrics` endpoints.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use prometheus::Registry;
use serde::Serialize;
use tollgate_messaging::Broker;
use tollgate_storage::PgPool;
use tracing::Instrument;

use crate::metrics::HttpMetrics;

/// The request id header, echoed on every response.
pub const REQUEST_ID: &str = "x-request-id";

/// The request id of the current request (from the client's `x-request-id` when it is 1-128
/// visible ASCII characters, else a new UUID).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The error body every service returns.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`]: a stable machine code, a human message, optional details.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Builds an error response with the standard body.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    details: Option<serde_json::Value>,
) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            details,
        },
    })
}

/// Middleware: assigns the request id, opens the request's root span (its `tenant_id` field
/// is filled by handlers once known), records metrics and echoes `x-request-id`.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "http",
        request_id = %request_id,
        method = %method,
        path = %req.path(),
        tenant_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    span.record("status", status);
    if let Some(metrics) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        metrics
            .requests
            .with_label_values(&[route.as_str(), method.as_str(), &status.to_string()])
            .inc();
        metrics
            .duration
            .with_label_values(&[route.as_str(), method.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(res)
}

/// What `/readyz` checks.
#[derive(Clone, Default)]
pub struct Readiness {
    pub database: Option<PgPool>,
    pub broker: Option<Broker>,
}

#[derive(Serialize)]
struct ReadyReport {
    status: &'static str,
    checks: serde_json::Map<String, serde_json::Value>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    if let Some(pool) = &readiness.database {
        let ok = tokio::time::timeout(Duration::from_secs(2), tollgate_storage::pool::ping(pool))
            .await
            .is_ok_and(|r| r.is_ok());
        ready &= ok;
        checks.insert("database".into(), (if ok { "ok" } else { "down" }).into());
    }
    if let Some(broker) = &readiness.broker {
        let ok = broker.is_ready();
        ready &= ok;
        checks.insert("broker".into(), (if ok { "ok" } else { "down" }).into());
    }
    let report = ReadyReport {
        status: if ready { "ready" } else { "not_ready" },
        checks,
    };
    if ready {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
    }
}

async fn metrics(registry: web::Data<Registry>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render(&registry))
}

/// What every service's HTTP app carries for the ops endpoints and the [`observe`]
/// middleware: readiness checks, the metrics registry and the HTTP metrics.
#[derive(Clone)]
pub struct Ops {
    readiness: web::Data<Readiness>,
    registry: web::Data<Registry>,
    metrics: web::Data<HttpMetrics>,
}

impl Ops {
    /// Registers the HTTP metrics in `registry`. Errors: a metric is already registered.
    pub fn new(readiness: Readiness, registry: Registry) -> Result<Self, prometheus::Error> {
        let metrics = HttpMetrics::register(&registry)?;
        Ok(Self {
            readiness: web::Data::new(readiness),
            registry: web::Data::new(registry),
            metrics: web::Data::new(metrics),
        })
    }

    /// Adds the shared app data and mounts `/healthz`, `/readyz` and `/metrics`; use with
    /// `App::configure` next to `.wrap(middleware::from_fn(observe))`.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.readiness.clone())
            .app_data(self.registry.clone())
            .app_data(self.metrics.clone());
        ops_routes(cfg);
    }
}

/// Runs an actix server on the current tokio runtime, logging its failure; returns the handle
/// that stops it.
pub fn spawn_server(
    name: &'static str,
    server: actix_web::dev::Server,
) -> actix_web::dev::ServerHandle {
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(service = name, error = %err, "HTTP server failed");
        }
    });
    handle
}

/// Mounts `/healthz` (no dependencies touched), `/readyz` (database and broker, 503 naming
/// the one that is down) and `/metrics`. Needs `web::Data<Readiness>` and
/// `web::Data<prometheus::Registry>` in the app ([`Ops::configure`] adds both).
fn ops_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// 404 with the standard body, for `default_service`.
pub async fn not_found() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route", None)
}

/// Header the gateway sets with the authenticated tenant (`ten_…`) on proxied requests.
pub const TENANT_HEADER: &str = "x-tollgate-tenant";
/// Header carrying the shared internal token between the gateway and internal services.
pub const INTERNAL_TOKEN_HEADER: &str = "x-tollgate-internal-token";

/// The tenant the gateway authenticated and forwarded (`x-tollgate-tenant`), for an internal
/// service: when `internal_token` is set, the request must carry it in
/// `x-tollgate-internal-token` (compared in constant time; the length is not secret). Records
/// the tenant on the request's span. None: token missing or wrong, or no valid tenant header
/// (the caller answers 401).
pub fn forwarded_tenant(
    req: &actix_web::HttpRequest,
    internal_token: &str,
) -> Option<tollgate_domain::TenantId> {
    use subtle::ConstantTimeEq;
    if !internal_token.is_empty() {
        let presented = req.headers().get(INTERNAL_TOKEN_HEADER)?.as_bytes();
        if !bool::from(presented.ct_eq(internal_token.as_bytes())) {
            return None;
        }
    }
    let tenant = req
        .headers()
        .get(TENANT_HEADER)?
        .to_str()
        .ok()?
        .parse::<tollgate_domain::TenantId>()
        .ok()?;
    tracing::Span::current().record("tenant_id", tracing::field::display(&tenant));
    Some(tenant)
}
