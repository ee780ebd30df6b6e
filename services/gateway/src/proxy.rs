//! The authenticated API: every `/v1/jobs…` request is authenticated, rate limited, bounded
//! and forwarded to job-intake with the tenant and the request id; the upstream answer is
//! passed back as is. Upstream failures become 503 (unreachable), 504 (timeout) or 502.

use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use tollgate_runtime::http::{RequestId, INTERNAL_TOKEN_HEADER, REQUEST_ID, TENANT_HEADER};

use crate::error::GatewayError;
use crate::GatewayState;

/// Mounts the proxied routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/jobs", web::route().to(forward))
        .route("/v1/jobs/{tail:.*}", web::route().to(forward));
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

async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, GatewayError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| GatewayError::BadBody)?;
        if body.len() + chunk.len() > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<GatewayState>,
) -> Result<HttpResponse, GatewayError> {
    let principal = state.auth.authenticate(presented_key(&req)).await?;
    tracing::Span::current().record("tenant_id", tracing::field::display(&principal.tenant));
    state.rate_limits.check(&principal)?;
    let body = read_body(payload, state.max_body_bytes).await?;

    let path_and_query = match req.uri().query() {
        Some(q) => format!("{}?{}", req.path(), q),
        None => req.path().to_owned(),
    };
    let url = format!(
        "{}{}",
        state.intake_url.trim_end_matches('/'),
        path_and_query
    );
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| GatewayError::BadBody)?;
    let mut upstream = state
        .client
        .request(method, url)
        .timeout(state.upstream_timeout)
        .header(TENANT_HEADER, principal.tenant.to_string())
        .body(body);
    if !state.internal_token.is_empty() {
        upstream = upstream.header(INTERNAL_TOKEN_HEADER, state.internal_token.as_str());
    }
    if let Some(request_id) = req.extensions().get::<RequestId>() {
        upstream = upstream.header(REQUEST_ID, request_id.0.as_str());
    }
    for name in [CONTENT_TYPE.as_str(), "idempotency-key"] {
        if let Some(value) = req.headers().get(name) {
            upstream = upstream.header(name, value.as_bytes());
        }
    }
    let response = upstream.send().await.map_err(|err| {
        tracing::warn!(error = %err, "upstream request failed");
        if err.is_timeout() {
            GatewayError::UpstreamTimeout
        } else if err.is_connect() {
            GatewayError::UpstreamUnavailable
        } else {
            GatewayError::BadGateway
        }
    })?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).map_err(|_| GatewayError::BadGateway)?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .cloned();
    let bytes = response
        .bytes()
        .await
        .map_err(|_| GatewayError::BadGateway)?;
    let mut out = HttpResponse::build(status);
    if let Some(ct) = content_type {
        out.insert_header((CONTENT_TYPE, ct.as_bytes()));
    }
    Ok(out.body(bytes))
}
