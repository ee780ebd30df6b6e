//! Inbound PSP events on the bus (issue 5, "Inbound"): the webhook service verifies a PSP's
//! webhook, stores it once and publishes it through the outbox on the events exchange with
//! routing key `psp.{psp}.{event_type}` (e.g. `psp.stripe.invoice.payment_failed`); billing
//! applies it. PSP events are platform-level: the envelope's tenant is the nil UUID and
//! consumers resolve the tenant from the object's metadata or stored PSP ids.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::ids::TenantId;

/// A verified PSP event. One tagged, versioned enum for the `psp.#` routing keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum PspEvent {
    /// A PSP event the webhook service verified and stored (`psp_events`).
    #[serde(rename = "psp.event.v1")]
    ReceivedV1 {
        /// `stripe` | `razorpay`.
        psp: String,
        /// The PSP's event id (`evt_…`), unique per PSP.
        event_id: String,
        /// The PSP's event type, e.g. `invoice.payment_failed`.
        event_type: String,
        /// The PSP's own event timestamp (Stripe `created`, seconds → UTC).
        created: DateTime<Utc>,
        livemode: bool,
        /// The whole event JSON as the PSP sent it (already verified).
        payload: serde_json::Value,
    },
}

impl PspEvent {
    /// The envelope type (`psp.event`).
    pub fn envelope_type(&self) -> &'static str {
        match self {
            Self::ReceivedV1 { .. } => "psp.event",
        }
    }

    /// The routing key on the events exchange: `psp.{psp}.{event_type}`.
    pub fn routing_key(&self) -> String {
        match self {
            Self::ReceivedV1 {
                psp, event_type, ..
            } => format!("psp.{psp}.{event_type}"),
        }
    }
}

impl Envelope<PspEvent> {
    /// Wraps a PSP event: `id` is the `psp_events` row id (also the outbox message id),
    /// `source` is `webhook` and the tenant is the nil UUID (platform-level).
    pub fn psp(id: Uuid, event: PspEvent) -> Self {
        Self {
            id,
            event_type: event.envelope_type().to_owned(),
            source: "webhook".to_owned(),
            time: Utc::now(),
            tenant: TenantId::from_uuid(Uuid::nil()),
            schema_version: 1,
            data: event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psp_event_json_is_tagged_and_routed_by_psp_and_type() {
        let event = PspEvent::ReceivedV1 {
            psp: "stripe".into(),
            event_id: "evt_1".into(),
            event_type: "invoice.payment_failed".into(),
            created: DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
            livemode: false,
            payload: serde_json::json!({"id": "evt_1"}),
        };
        assert_eq!(event.routing_key(), "psp.stripe.invoice.payment_failed");
        let env = Envelope::psp(Uuid::now_v7(), event);
        let json = serde_json::to_value(&env).expect("serialize");
        assert_eq!(json["data"]["kind"], "psp.event.v1");
        assert_eq!(json["type"], "psp.event");
        assert_eq!(json["source"], "webhook");
        assert_eq!(json["data"]["created"], "2023-11-14T22:13:20Z");
        let back: Envelope<PspEvent> = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, env);
    }
}
