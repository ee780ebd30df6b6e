//! The events tenants can subscribe to, and the one the webhook service announces itself.
//!
//! Every event type below is published on the events exchange (routing key = type, envelope
//! tenant = the tenant that gets it) by its owner: the worker (`job.*`), billing
//! (`invoice.*`, `payment.*`, `subscription.*`, `usage.*`) and this service
//! (`webhook_endpoint.disabled`, when an endpoint failing for days is disabled: a tenant's
//! other endpoints subscribed to it are notified).

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::{Deserialize, Serialize};
use tollgate_domain::{Envelope, TenantId};
use tollgate_storage::models::NewOutboxMessage;
use tollgate_storage::StorageError;
use uuid::Uuid;

use tollgate_domain::EndpointId;

/// The event types an endpoint may subscribe to (besides `*`, all of them), issue 5.
pub const EVENT_TYPES: &[&str] = &[
    "job.succeeded",
    "job.failed",
    "job.dead",
    "invoice.finalized",
    "invoice.paid",
    "payment.requested",
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "subscription.updated",
    "usage.threshold_reached",
    "webhook_endpoint.disabled",
];

/// The binding keys of the fan-out queue on the events exchange: every family above.
pub const FANOUT_BINDINGS: &[&str] = &[
    "job.*",
    "invoice.*",
    "payment.*",
    "subscription.*",
    "usage.*",
    "webhook_endpoint.*",
];

/// An event the webhook service publishes about endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum EndpointEvent {
    /// An endpoint was disabled after failing for longer than `delivery.disable_after_secs`;
    /// its pending deliveries were failed. `POST /v1/webhook-endpoints/{id}/enable` turns it
    /// back on.
    #[serde(rename = "webhook_endpoint.disabled.v1")]
    DisabledV1 {
        endpoint_id: EndpointId,
        url: String,
        failing_since: DateTime<Utc>,
        disabled_at: DateTime<Utc>,
        reason: String,
    },
}

impl EndpointEvent {
    /// The envelope type and routing key.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::DisabledV1 { .. } => "webhook_endpoint.disabled",
        }
    }
}

/// Writes `event` for `tenant` to the outbox (caller's transaction) addressed to
/// `events_exchange`.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    events_exchange: &str,
    tenant: Uuid,
    event: EndpointEvent,
) -> Result<(), StorageError> {
    let envelope = Envelope {
        id: Uuid::now_v7(),
        event_type: event.event_type().to_owned(),
        source: "webhook".to_owned(),
        time: Utc::now(),
        tenant: TenantId::from_uuid(tenant),
        schema_version: 1,
        data: event,
    };
    let payload = serde_json::to_vec(&envelope)
        .map_err(|e| StorageError::Unavailable(format!("serializing an event: {e}")))?;
    tollgate_storage::outbox::enqueue(
        conn,
        &NewOutboxMessage {
            message_id: envelope.id,
            exchange: events_exchange.to_owned(),
            routing_key: envelope.event_type.clone(),
            payload,
        },
    )
    .await
}
