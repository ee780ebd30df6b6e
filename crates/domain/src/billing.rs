//! Billing's domain events (issue 4): what the billing service announces on the events
//! exchange through the transactional outbox. One tagged, versioned enum (STYLE "one
//! versioned, serde-tagged enum per queue"); the routing key is [`BillingEvent::event_type`].
//! Money is integer minor units of `currency` (ISO 4217).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::ids::TenantId;

/// An event the billing service publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum BillingEvent {
    /// A subscription started, changed plan or status, or was scheduled to change.
    #[serde(rename = "subscription.updated.v1")]
    SubscriptionUpdatedV1 {
        subscription_id: Uuid,
        account_id: Uuid,
        plan: String,
        plan_version: i32,
        status: String,
        current_period_start: DateTime<Utc>,
        current_period_end: DateTime<Utc>,
        cancel_at_period_end: bool,
        /// What happened: `start`, `upgrade`, `downgrade`, `cancel`, `resume`, …
        change: String,
    },
    /// An invoice was finalized: its number and totals are frozen.
    #[serde(rename = "invoice.finalized.v1")]
    InvoiceFinalizedV1 {
        invoice_id: Uuid,
        number: String,
        account_id: Uuid,
        subscription_id: Option<Uuid>,
        currency: String,
        total_minor: i64,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    },
    /// Payment is requested for a finalized invoice (the PSP integration collects it).
    #[serde(rename = "payment.requested.v1")]
    PaymentRequestedV1 {
        invoice_id: Uuid,
        number: String,
        account_id: Uuid,
        currency: String,
        amount_minor: i64,
    },
    /// A quota crossed 80, 90 or 100 % in a period (once per threshold and period).
    #[serde(rename = "usage.threshold_reached.v1")]
    UsageThresholdReachedV1 {
        subscription_id: Uuid,
        account_id: Uuid,
        metric: String,
        period_start: DateTime<Utc>,
        threshold_pct: i32,
        used: i64,
        quantity: i64,
    },
}

impl BillingEvent {
    /// The envelope type and routing key, e.g. `invoice.finalized`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::SubscriptionUpdatedV1 { .. } => "subscription.updated",
            Self::InvoiceFinalizedV1 { .. } => "invoice.finalized",
            Self::PaymentRequestedV1 { .. } => "payment.requested",
            Self::UsageThresholdReachedV1 { .. } => "usage.threshold_reached",
        }
    }
}

impl Envelope<BillingEvent> {
    /// Wraps a billing event for `tenant`, produced by `source`; `id` is the message id (a
    /// deterministic id makes a repeated announcement of the same fact dedupe downstream).
    pub fn billing(source: &str, tenant: TenantId, id: Uuid, event: BillingEvent) -> Self {
        Self {
            id,
            event_type: event.event_type().to_owned(),
            source: source.to_owned(),
            time: Utc::now(),
            tenant,
            schema_version: 1,
            data: event,
        }
    }
}
