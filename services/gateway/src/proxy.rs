//! The proxied API. Every `/v1/…` path is served by job-intake (jobs, usage events, usage,
//! accounts, workspaces, artifacts), billing (catalog, plans, subscriptions, invoices,
//! billing) or the webhook service (webhook-endpoints, webhook-deliveries): it is
//! authenticated, rate limited, bounded and forwarded with the tenant and the request id, and
//! the upstream status and body are passed back.
//!
//! The exception is `/v1/downloads/…`: signed artifact-download URLs. They are forwarded
//! without authentication and without a tenant (job-intake verifies the signature, carried in
//! the query string) and the body is streamed back with its length.
//!
//! Headers: `accept` goes upstream on every route (the usage API exports CSV for
//! `Accept: text/csv`); `content-type` and `content-disposition` come back on every route.
//! Upstream failures become 503 (unreachable), 504 (timeout) or 502.

use std::io;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};

/// job-intake's soft-limit warning header, passed back to the client.
const QUOTA_WARNING: &str = "tollgate-quota-warning";
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder};
use futures_util::{Stream, StreamExt};
use tollgate_runtime::http::{RequestId, INTERNAL_TOKEN_HEADER, REQUEST_ID, TENANT_HEADER};

use crate::error::GatewayError;
use crate::metering::BodyBytesRead;
use crate::GatewayState;

/// The `/v1/` resources job-intake serves, mounted by name so that metrics and the traffic
/// ledger see a precise route; any other `/v1/…` path is forwarded to job-intake the same way.
const RESOURCES: [&str; 6] = [
    "jobs",
    "events",
    "usage",
    "accounts",
    "workspaces",
    "artifacts",
];

/// The `/v1/` resources the billing service serves.
const BILLING_RESOURCES: [&str; 5] = ["catalog", "plans", "subscriptions", "invoices", "billing"];

/// The `/v1/` resources the webhook service serves (tenants' endpoints and delivery log).
const WEBHOOK_RESOURCES: [&str; 2] = ["webhook-endpoints", "webhook-deliveries"];

/// The upstream base URL of an authenticated `/v1/…` path.
fn upstream_base<'a>(state: &'a GatewayState, path: &str) -> &'a str {
    let resource = path
        .strip_prefix("/v1/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    if BILLING_RESOURCES.contains(&resource) {
        &state.billing_url
    } else if WEBHOOK_RESOURCES.contains(&resource) {
        &state.webhook_url
    } else {
        &state.intake_url
    }
}

/// Mounts the proxied routes: `/v1/downloads/…` unauthenticated, every other `/v1/…`
/// authenticated.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/downloads/{tail:.*}", web::route().to(download));
    for resource in RESOURCES
        .iter()
        .chain(BILLING_RESOURCES.iter())
        .chain(WEBHOOK_RESOURCES.iter())
    {
        cfg.route(&format!("/v1/{resource}"), web::route().to(forward))
            .route(
                &format!("/v1/{resource}/{{tail:.*}}"),
                web::route().to(forward),
            );
    }
    cfg.route("/v1/{tail:.*}", web::route().to(forward));
}

fn presented_key(req: &HttpRequest) -> Option<&str> {
    if let Some(value) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value.strip_prefix("Bearer ").map(str::trim);
    }
    req.headers().get("x-api-key").and_then(|v| v.to_str().ok())
}

/// Reads the body up to `limit` bytes, and leaves the number of bytes received (also when
/// it fails) in the request's extensions for traffic metering.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, GatewayError> {
    let mut body = web::BytesMut::new();
    let mut received: u64 = 0;
    let outcome = loop {
        match payload.next().await {
            None => break Ok(()),
            Some(Err(_)) => break Err(GatewayError::BadBody),
            Some(Ok(chunk)) => {
                received += chunk.len() as u64;
                if body.len() + chunk.len() > limit {
                    break Err(GatewayError::BodyTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
        }
    };
    req.extensions_mut().insert(BodyBytesRead(received));
    outcome.map(|()| body.freeze())
}

/// The job-intake URL for this request (path and query as received). The URL parser resolves
/// dot segments (`/v1/downloads/../jobs` becomes `/v1/jobs`), so the resolved path must still
/// be under `prefix`, the one the request was routed by; otherwise 404, or an unauthenticated
/// route could reach an authenticated one.
fn upstream_url(base_url: &str, req: &HttpRequest, prefix: &str) -> Result<url::Url, GatewayError> {
    let base = url::Url::parse(base_url).map_err(|_| GatewayError::BadGateway)?;
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{}?{}", req.path(), q),
        None => req.path().to_owned(),
    };
    let url = url::Url::parse(&format!(
        "{}{}",
        base_url.trim_end_matches('/'),
        path_and_query
    ))
    .map_err(|_| GatewayError::NotFound)?;
    let under_prefix = url
        .path()
        .strip_prefix(base.path().trim_end_matches('/'))
        .is_some_and(|rest| rest.starts_with(prefix));
    if !under_prefix {
        return Err(GatewayError::NotFound);
    }
    Ok(url)
}

/// A request to `url` with the method, the internal token, the request id and `accept`.
fn upstream_request(
    state: &GatewayState,
    req: &HttpRequest,
    url: url::Url,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| GatewayError::BadBody)?;
    let mut upstream = state.client.request(method, url);
    if !state.internal_token.is_empty() {
        upstream = upstream.header(INTERNAL_TOKEN_HEADER, state.internal_token.as_str());
    }
    if let Some(request_id) = req.extensions().get::<RequestId>() {
        upstream = upstream.header(REQUEST_ID, request_id.0.as_str());
    }
    if let Some(value) = req.headers().get(ACCEPT) {
        upstream = upstream.header(ACCEPT.as_str(), value.as_bytes());
    }
    Ok(upstream)
}

fn upstream_error(err: reqwest::Error) -> GatewayError {
    tracing::warn!(error = %err, "upstream request failed");
    if err.is_timeout() {
        GatewayError::UpstreamTimeout
    } else if err.is_connect() {
        GatewayError::UpstreamUnavailable
    } else {
        GatewayError::BadGateway
    }
}

/// The upstream status with `content-type`, `content-disposition`, `location`, `retry-after`
/// and `tollgate-quota-warning`.
fn response_head(response: &reqwest::Response) -> Result<HttpResponseBuilder, GatewayError> {
    let status =
        StatusCode::from_u16(response.status().as_u16()).map_err(|_| GatewayError::BadGateway)?;
    let mut out = HttpResponse::build(status);
    for name in [CONTENT_TYPE, CONTENT_DISPOSITION, LOCATION, RETRY_AFTER] {
        if let Some(value) = response.headers().get(name.as_str()) {
            out.insert_header((name, value.as_bytes()));
        }
    }
    if let Some(value) = response.headers().get(QUOTA_WARNING) {
        out.insert_header((QUOTA_WARNING, value.as_bytes()));
    }
    Ok(out)
}

/// Authenticated `/v1/…`: forwarded with the tenant; the upstream body is read whole (all of
/// the exchange within `upstream_timeout`).
async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<GatewayState>,
) -> Result<HttpResponse, GatewayError> {
    let principal = state.auth.authenticate(presented_key(&req)).await?;
    tracing::Span::current().record("tenant_id", tracing::field::display(&principal.tenant));
    // For traffic metering, which attributes the request to the tenant from here on.
    req.extensions_mut().insert(principal.clone());
    state.rate_limits.check(&principal)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;

    let url = upstream_url(upstream_base(&state, req.path()), &req, "/v1/")?;
    let mut upstream = upstream_request(&state, &req, url)?
        .timeout(state.upstream_timeout)
        .header(TENANT_HEADER, principal.tenant.to_string())
        .body(body);
    for name in [CONTENT_TYPE.as_str(), "idempotency-key"] {
        if let Some(value) = req.headers().get(name) {
            upstream = upstream.header(name, value.as_bytes());
        }
    }
    let response = upstream.send().await.map_err(upstream_error)?;
    let mut out = response_head(&response)?;
    let bytes = response
        .bytes()
        .await
        .map_err(|_| GatewayError::BadGateway)?;
    Ok(out.body(bytes))
}

/// `/v1/downloads/…`: signed URLs, forwarded without authentication or tenant (job-intake
/// checks the signature); the request body is not forwarded. The response headers must come
/// within `upstream_timeout`; the body is then streamed with its `content-length` when
/// upstream gave one, and fails when upstream sends nothing for `upstream_timeout`.
async fn download(
    req: HttpRequest,
    state: web::Data<GatewayState>,
) -> Result<HttpResponse, GatewayError> {
    let url = upstream_url(&state.intake_url, &req, "/v1/downloads/")?;
    let send = upstream_request(&state, &req, url)?.send();
    let response = tokio::time::timeout(state.upstream_timeout, send)
        .await
        .map_err(|_| GatewayError::UpstreamTimeout)?
        .map_err(upstream_error)?;
    let mut out = response_head(&response)?;
    let length = response.content_length();
    let body = relay(response, state.upstream_timeout);
    Ok(match length {
        Some(length) => out.body(SizedStream::new(length, body)),
        None => out.streaming(body),
    })
}

/// The upstream body as a stream of chunks; ends with an error when upstream fails or sends
/// nothing for `idle`.
fn relay(
    response: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<web::Bytes, io::Error>> + 'static {
    futures_util::stream::unfold(Some(response), move |state| async move {
        let mut response = state?;
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some(response))),
            Ok(Ok(None)) => None,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "upstream download failed mid-body");
                Some((Err(io::Error::other(err)), None))
            }
            Err(_) => {
                tracing::warn!("upstream download stalled");
                Some((
                    Err(io::Error::new(io::ErrorKind::TimedOut, "upstream stalled")),
                    None,
                ))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn resolve(intake: &str, uri: &str, prefix: &str) -> Option<String> {
        let req = TestRequest::get().uri(uri).to_http_request();
        upstream_url(intake, &req, prefix).ok().map(String::from)
    }

    #[test]
    fn upstream_url_keeps_path_and_query() {
        assert_eq!(
            resolve(
                "http://intake:8081",
                "/v1/downloads/a/b.pdf?exp=1&sig=x",
                "/v1/downloads/"
            )
            .as_deref(),
            Some("http://intake:8081/v1/downloads/a/b.pdf?exp=1&sig=x")
        );
        assert_eq!(
            resolve(
                "http://intake:8081/base/",
                "/v1/usage?from=2026-01-01",
                "/v1/"
            )
            .as_deref(),
            Some("http://intake:8081/base/v1/usage?from=2026-01-01")
        );
    }

    #[test]
    fn upstream_url_refuses_paths_that_resolve_out_of_their_prefix() {
        for uri in [
            "/v1/downloads/../jobs",
            "/v1/downloads/%2e%2e/jobs",
            "/v1/downloads/%2E%2E/usage?format=csv",
            "/v1/downloads/./../../internal",
        ] {
            assert_eq!(
                resolve("http://intake:8081", uri, "/v1/downloads/"),
                None,
                "{uri}"
            );
        }
        assert_eq!(
            resolve("http://intake:8081", "/v1/jobs/../../metrics", "/v1/"),
            None
        );
    }
}
