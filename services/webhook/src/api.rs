//! The tenant API of outbound webhooks (behind the gateway, tenant from
//! `x-tollgate-tenant`):
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/webhook-endpoints` | `{url, event_types, description?}` → 201, the endpoint with its `secret` (shown only here and on rotation) |
//! | `GET /v1/webhook-endpoints` | `{data: [endpoint]}` |
//! | `GET /v1/webhook-endpoints/{id}` | the endpoint |
//! | `PATCH /v1/webhook-endpoints/{id}` | `{url?, event_types?, description?}` |
//! | `DELETE /v1/webhook-endpoints/{id}` | 204; its deliveries and their log go too |
//! | `POST /v1/webhook-endpoints/{id}/rotate-secret` | `{overlap_secs?}` (default `delivery.secret_overlap_secs`) → the endpoint with its new `secret` |
//! | `POST /v1/webhook-endpoints/{id}/enable` | enable a disabled endpoint |
//! | `GET /v1/webhook-endpoints/{id}/deliveries[?status=&cursor=&limit=]` | `{data: [delivery], next_cursor}`, newest first |
//! | `GET /v1/webhook-deliveries/{id}` | the delivery, its `message` and `attempt_log` |
//! | `POST /v1/webhook-deliveries/{id}/redeliver` | 202: a new attempt now, also for a failed or succeeded delivery |

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use crate::deliveries;
use crate::endpoints::{self, EndpointUrl, EndpointView, EventTypes};
use crate::error::{or_not_found, WebhookError};
use crate::AppState;
use tollgate_domain::{DeliveryId, EndpointId};

/// Mounts the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/webhook-endpoints", web::post().to(create_endpoint))
        .route("/v1/webhook-endpoints", web::get().to(list_endpoints))
        .route("/v1/webhook-endpoints/{id}", web::get().to(get_endpoint))
        .route("/v1/webhook-endpoints/{id}", web::patch().to(edit_endpoint))
        .route(
            "/v1/webhook-endpoints/{id}",
            web::delete().to(delete_endpoint),
        )
        .route(
            "/v1/webhook-endpoints/{id}/rotate-secret",
            web::post().to(rotate_secret),
        )
        .route(
            "/v1/webhook-endpoints/{id}/enable",
            web::post().to(enable_endpoint),
        )
        .route(
            "/v1/webhook-endpoints/{id}/deliveries",
            web::get().to(list_deliveries),
        )
        .route("/v1/webhook-deliveries/{id}", web::get().to(get_delivery))
        .route(
            "/v1/webhook-deliveries/{id}/redeliver",
            web::post().to(redeliver),
        );
}

/// The tenant the gateway authenticated, after checking the internal token (401 otherwise).
fn tenant(req: &HttpRequest, state: &AppState) -> Result<Uuid, WebhookError> {
    tollgate_runtime::http::forwarded_tenant(req, &state.internal_token)
        .map(|t| t.as_uuid())
        .ok_or(WebhookError::Unauthenticated)
}

async fn conn(state: &AppState) -> Result<tollgate_storage::PooledConn, WebhookError> {
    Ok(tollgate_storage::pool::get(&state.pool).await?)
}

fn endpoint_id(raw: &str) -> Result<EndpointId, WebhookError> {
    raw.parse().map_err(|_| WebhookError::EndpointNotFound)
}

fn delivery_id(raw: &str) -> Result<DeliveryId, WebhookError> {
    raw.parse().map_err(|_| WebhookError::DeliveryNotFound)
}

/// `POST /v1/webhook-endpoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    url: String,
    event_types: Vec<String>,
    description: Option<String>,
}

/// `PATCH /v1/webhook-endpoints/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditEndpoint {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
}

/// `POST /v1/webhook-endpoints/{id}/rotate-secret`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    /// Seconds the previous secret keeps signing.
    overlap_secs: Option<i64>,
}

/// `GET /v1/webhook-endpoints/{id}/deliveries`.
#[derive(Debug, Deserialize)]
struct DeliveryQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[tracing::instrument(skip_all)]
async fn create_endpoint(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CreateEndpoint>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let body = body.into_inner();
    let url = EndpointUrl::parse(&body.url)?;
    let types = EventTypes::parse(&body.event_types)?;
    let mut conn = conn(&state).await?;
    let row = endpoints::create(&mut conn, tenant, url, body.description, types).await?;
    Ok(HttpResponse::Created().json(EndpointView::with_secret(&row)))
}

#[tracing::instrument(skip_all)]
async fn list_endpoints(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let mut conn = conn(&state).await?;
    let rows = tollgate_storage::webhooks::list_endpoints(&mut conn, tenant).await?;
    let data: Vec<EndpointView> = rows.iter().map(EndpointView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data })))
}

#[tracing::instrument(skip_all)]
async fn get_endpoint(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let id = endpoint_id(&id)?;
    let mut conn = conn(&state).await?;
    let row = tollgate_storage::webhooks::find_endpoint(&mut conn, Some(tenant), id.as_uuid())
        .await
        .map_err(|e| or_not_found(e, WebhookError::EndpointNotFound))?;
    Ok(HttpResponse::Ok().json(EndpointView::from(&row)))
}

#[tracing::instrument(skip_all)]
async fn edit_endpoint(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<EditEndpoint>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let id = endpoint_id(&id)?;
    let body = body.into_inner();
    let url = body.url.as_deref().map(EndpointUrl::parse).transpose()?;
    let types = body
        .event_types
        .as_deref()
        .map(EventTypes::parse)
        .transpose()?;
    let mut conn = conn(&state).await?;
    let row = endpoints::edit(&mut conn, tenant, id, url, body.description, types).await?;
    Ok(HttpResponse::Ok().json(EndpointView::from(&row)))
}

#[tracing::instrument(skip_all)]
async fn delete_endpoint(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let id = endpoint_id(&id)?;
    let mut conn = conn(&state).await?;
    if !tollgate_storage::webhooks::delete_endpoint(&mut conn, tenant, id.as_uuid()).await? {
        return Err(WebhookError::EndpointNotFound);
    }
    Ok(HttpResponse::NoContent().finish())
}

#[tracing::instrument(skip_all)]
async fn rotate_secret(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let id = endpoint_id(&id)?;
    // The body is optional: no body rotates with the default overlap.
    let body: RotateSecret = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSecret::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| WebhookError::Invalid(format!("request body: {e}")))?
    };
    let overlap = body
        .overlap_secs
        .unwrap_or(state.delivery.secret_overlap_secs);
    let mut conn = conn(&state).await?;
    let row = endpoints::rotate_secret(
        &mut conn,
        tenant,
        id,
        overlap,
        state.delivery.max_secret_overlap_secs,
    )
    .await?;
    Ok(HttpResponse::Ok().json(EndpointView::with_secret(&row)))
}

#[tracing::instrument(skip_all)]
async fn enable_endpoint(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let id = endpoint_id(&id)?;
    let mut conn = conn(&state).await?;
    let row = endpoints::enable(&mut conn, tenant, id).await?;
    Ok(HttpResponse::Ok().json(EndpointView::from(&row)))
}

#[tracing::instrument(skip_all)]
async fn list_deliveries(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let id = endpoint_id(&id)?;
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<DeliveryId>()
                .map_err(|_| WebhookError::Invalid("cursor: not a delivery id".into()))
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let mut conn = conn(&state).await?;
    let data = deliveries::list(
        &mut conn,
        Some(tenant),
        id,
        query.status.as_deref(),
        before,
        limit,
    )
    .await?;
    let next = (data.len() as i64 == limit)
        .then(|| data.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data, "next_cursor": next })))
}

#[tracing::instrument(skip_all)]
async fn get_delivery(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let id = delivery_id(&id)?;
    let mut conn = conn(&state).await?;
    let detail = deliveries::detail(&mut conn, Some(tenant), id).await?;
    Ok(HttpResponse::Ok().json(detail))
}

#[tracing::instrument(skip_all)]
async fn redeliver(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebhookError> {
    let tenant = tenant(&req, &state)?;
    let id = delivery_id(&id)?;
    let mut conn = conn(&state).await?;
    let view = deliveries::redeliver(&mut conn, Some(tenant), id).await?;
    state.dispatch_wake.notify_one();
    Ok(HttpResponse::Accepted().json(view))
}
