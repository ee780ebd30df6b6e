//! Inbound PSP webhooks (issue 5, Build 1; SPEC "Webhooks"): `POST /webhooks/{psp}`, routed
//! here by the ingress, not through the gateway.
//!
//! 1. The body is read up to `max_body_bytes` (413 `PAYLOAD_TOO_LARGE` beyond).
//! 2. The PSP's [`WebhookVerifier`] checks the signature over the raw bytes (400/401 with its
//!    code otherwise). Nothing is stored for a refused request.
//! 3. One transaction stores the event (`psp_events`, unique per `(psp, event_id)`, raw body
//!    kept) and, only when it is new, the outbox row that publishes `Envelope<PspEvent>` on
//!    the events exchange as `psp.{psp}.{event_type}`. Concurrent requests share transactions
//!    (group commit), so a burst costs one commit per batch, not per event.
//! 4. 200 `{"received":true}` at once — billing applies the event from the queue — or
//!    `{"received":true,"duplicate":true}` for an event stored before (the PSP retried).
//!
//! A database outage answers 503, which PSPs retry.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tollgate_domain::{Envelope, PspEvent};
use tollgate_psp::{InboundEvent, PspKind, WebhookVerifier};
use tollgate_storage::group_commit::{BatchWriter, GroupCommit};
use tollgate_storage::models::NewOutboxMessage;
use tollgate_storage::webhooks::{self as store, NewPspEvent};
use tollgate_storage::StorageError;
use uuid::Uuid;

use crate::error::WebhookError;
use crate::metrics::WebhookMetrics;

/// Writes batches of verified events with their outbox rows, one transaction per batch.
pub struct PspEventWriter;

impl BatchWriter for PspEventWriter {
    type Item = (NewPspEvent, NewOutboxMessage);
    /// Whether the event was new.
    type Output = bool;

    async fn write(
        &self,
        conn: &mut AsyncPgConnection,
        items: Vec<Self::Item>,
    ) -> Result<Vec<bool>, StorageError> {
        conn.transaction(async |conn| store::store_psp_events(conn, &items).await)
            .await
    }
}

/// What the inbound handlers share.
pub struct Inbound {
    pub stripe: Option<Arc<dyn WebhookVerifier>>,
    pub razorpay: Option<Arc<dyn WebhookVerifier>>,
    pub writer: GroupCommit<PspEventWriter>,
    pub max_body_bytes: usize,
    /// `<prefix>.events`.
    pub events_exchange: String,
    pub relay_wake: Arc<Notify>,
    pub metrics: WebhookMetrics,
}

/// The answer to an accepted webhook.
#[derive(Debug, serde::Serialize)]
struct Received {
    received: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// Mounts `POST /webhooks/{psp}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/{psp}", web::post().to(receive));
}

/// Longest event id and type accepted, bytes (a routing key holds at most 255).
const MAX_EVENT_ID_BYTES: usize = 255;
const MAX_EVENT_TYPE_BYTES: usize = 200;

/// Checks the fields that become columns and routing keys: ids and types are short visible
/// ASCII (Stripe's are `evt_…` and `invoice.payment_failed`). Errors: `INVALID_PAYLOAD`.
fn check_fields(event: &InboundEvent) -> Result<(), WebhookError> {
    let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if event.event_id.len() > MAX_EVENT_ID_BYTES || !visible(&event.event_id) {
        return Err(tollgate_psp::VerifyError::InvalidPayload(
            "the event id is not a short visible ASCII string".into(),
        )
        .into());
    }
    let type_ok = event
        .event_type
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if event.event_type.len() > MAX_EVENT_TYPE_BYTES || !type_ok {
        return Err(tollgate_psp::VerifyError::InvalidPayload(
            "the event type must be letters, digits, `.`, `_` or `-` (at most 200)".into(),
        )
        .into());
    }
    Ok(())
}

/// The row and the outbox message of a verified event.
fn rows_for(
    event: InboundEvent,
    raw_body: Vec<u8>,
    exchange: &str,
) -> Result<(NewPspEvent, NewOutboxMessage), WebhookError> {
    let id = Uuid::now_v7();
    let psp = event.psp.as_str().to_owned();
    let object_id = event
        .object_id
        .filter(|o| o.len() <= MAX_EVENT_ID_BYTES && !o.contains('\0'));
    let data = PspEvent::ReceivedV1 {
        psp: psp.clone(),
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        created: event.created,
        livemode: event.livemode,
        payload: event.payload,
    };
    let routing_key = data.routing_key();
    let envelope = Envelope::psp(id, data);
    let payload = serde_json::to_vec(&envelope).map_err(|e| WebhookError::Internal(e.into()))?;
    Ok((
        NewPspEvent {
            id,
            psp,
            event_id: event.event_id,
            event_type: event.event_type,
            created_at_psp: event.created,
            livemode: event.livemode,
            object_id,
            raw_body,
        },
        NewOutboxMessage {
            message_id: id,
            exchange: exchange.to_owned(),
            routing_key,
            payload,
        },
    ))
}

#[tracing::instrument(skip_all, fields(psp = %psp))]
async fn receive(
    req: HttpRequest,
    psp: web::Path<String>,
    payload: web::Payload,
    inbound: web::Data<Inbound>,
) -> Result<HttpResponse, WebhookError> {
    let psp = psp.into_inner();
    let kind: Option<PspKind> = psp.parse().ok();
    let verifier = match kind {
        Some(PspKind::Stripe) => inbound.stripe.clone(),
        Some(PspKind::Razorpay) => inbound.razorpay.clone(),
        None => None,
    };
    let (Some(kind), Some(verifier)) = (kind, verifier) else {
        return Err(WebhookError::PspNotConfigured(
            psp.chars().take(40).collect(),
        ));
    };
    let label = kind.as_str();
    let result = accept(&req, payload, &inbound, verifier.as_ref()).await;
    let outcome = match &result {
        Ok(false) => "accepted".to_owned(),
        Ok(true) => "duplicate".to_owned(),
        Err(err) => err.code().to_lowercase(),
    };
    inbound
        .metrics
        .inbound
        .with_label_values(&[label, outcome.as_str()])
        .inc();
    let duplicate = result?;
    Ok(HttpResponse::Ok().json(Received {
        received: true,
        duplicate,
    }))
}

/// Reads, verifies and stores one request; returns whether the event was a duplicate.
async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    inbound: &Inbound,
    verifier: &dyn WebhookVerifier,
) -> Result<bool, WebhookError> {
    let body = read_body(req, payload, inbound.max_body_bytes).await?;
    let headers = req.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let event = verifier.verify(&header, &body, Utc::now())?;
    check_fields(&event)?;
    tracing::debug!(event_id = %event.event_id, event_type = %event.event_type, "verified PSP event");
    let item = rows_for(event, body.to_vec(), &inbound.events_exchange)?;
    let new = inbound
        .writer
        .submit(item)
        .await
        .map_err(|err| match Arc::try_unwrap(err) {
            Ok(err) => WebhookError::Storage(err),
            Err(shared) => WebhookError::Storage(StorageError::Unavailable(shared.to_string())),
        })?;
    if new {
        inbound.relay_wake.notify_one();
    }
    Ok(!new)
}

/// Reads the body, refusing more than `limit` bytes (by `Content-Length` before reading, or
/// while reading a chunked body).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, WebhookError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(WebhookError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| WebhookError::BadBody)?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
