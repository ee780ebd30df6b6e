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
    /// An invoice was paid in full (issue 5): the PSP reported a succeeded payment for it.
    #[serde(rename = "invoice.paid.v1")]
    InvoicePaidV1 {
        invoice_id: Uuid,
        number: String,
        account_id: Uuid,
        subscription_id: Option<Uuid>,
        currency: String,
        total_minor: i64,
        /// The PSP's time of the payment.
        paid_at: DateTime<Utc>,
    },
    /// A payment of an invoice succeeded at the PSP.
    #[serde(rename = "payment.succeeded.v1")]
    PaymentSucceededV1 {
        payment_id: Uuid,
        invoice_id: Uuid,
        account_id: Uuid,
        currency: String,
        amount_minor: i64,
        /// 1 for the first attempt, then one per retry.
        attempt: i32,
        /// `stripe` | `razorpay`.
        psp: String,
        /// The PSP's payment id (`pi_…`).
        psp_payment_id: Option<String>,
        succeeded_at: DateTime<Utc>,
    },
    /// A payment of an invoice failed (declined card, failed debit). Dunning retries at
    /// `next_retry_at`; `final_failure` means there is no retry left and the subscription is
    /// suspended.
    #[serde(rename = "payment.failed.v1")]
    PaymentFailedV1 {
        payment_id: Uuid,
        invoice_id: Uuid,
        account_id: Uuid,
        subscription_id: Option<Uuid>,
        currency: String,
        amount_minor: i64,
        attempt: i32,
        /// The PSP's code (`card_declined`, `insufficient_funds`, …).
        failure_code: Option<String>,
        failure_message: Option<String>,
        failed_at: DateTime<Utc>,
        next_retry_at: Option<DateTime<Utc>>,
        final_failure: bool,
    },
    /// Money of a payment went back to the customer. `refunded_minor` is the payment's
    /// refunded total so far, `amount_minor` what this refund added.
    #[serde(rename = "payment.refunded.v1")]
    PaymentRefundedV1 {
        payment_id: Uuid,
        invoice_id: Uuid,
        account_id: Uuid,
        currency: String,
        amount_minor: i64,
        refunded_minor: i64,
        psp_payment_id: Option<String>,
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
            Self::InvoicePaidV1 { .. } => "invoice.paid",
            Self::PaymentSucceededV1 { .. } => "payment.succeeded",
            Self::PaymentFailedV1 { .. } => "payment.failed",
            Self::PaymentRefundedV1 { .. } => "payment.refunded",
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
