//! Payment collection (issue 5 "Stripe API client", "Applying PSP events"; SPEC "Billing":
//! invoices are collected through the PSP). Owns the `payments` rows: one per attempt to
//! collect an invoice, and the rule that turns a PSP result (an API answer or a verified
//! event) into invoice, dunning and subscription changes.
//!
//! * Finalizing an invoice with a positive total whose account has a PSP customer writes
//!   payment attempt 1 (`pending`, idempotency key `tollgate-inv-{invoice}-attempt-1`); so does
//!   linking a customer later (`checkout.session.completed`) for invoices not yet collected.
//! * The collector claims pending payments (`SKIP LOCKED`, with a lease) and creates a Stripe
//!   PaymentIntent for each (amount in minor units, lower-case currency, the customer,
//!   `confirm` + `off_session` with the customer's default payment method when one is known,
//!   metadata `tollgate_tenant`/`tollgate_account`/`tollgate_invoice`/
//!   `tollgate_subscription`/`tollgate_payment`). The idempotency key makes a repeated call
//!   (after a crash or a lease expiry) return the same PaymentIntent
//!   (https://docs.stripe.com/api/idempotent_requests). A 402 card error is a failure at once
//!   (https://docs.stripe.com/declines); anything undecided comes later by event.
//! * Stripe keeps an idempotency key for 24 hours at least, not forever: a payment still
//!   pending [`IDEMPOTENCY_KEY_WINDOW`] after its first send (Stripe unreachable, or answering
//!   500, all that time) is not sent again with its key. The collector lists the customer's
//!   PaymentIntents: one an earlier call created decides the payment; if there is none the
//!   payment gets a new key and is sent as new. So a lost answer never becomes a second charge.
//! * [`apply_result`] applies an outcome with the ordering rules of [`decide`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use diesel_async::AsyncConnection;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tollgate_domain::{BillingEvent, InvoiceId};
use tollgate_psp::stripe::{PaymentIntent, PaymentIntentParams, StripeClient, StripeError};
use tollgate_storage::invoices::InvoiceRow;
use tollgate_storage::payments::{self as store, PaymentRow, RefundRow};
use tollgate_storage::AsyncPgConnection;
use uuid::Uuid;

use crate::config::BillingConfig;
use crate::{BillingContext, BillingError};

/// The PSP name on payment rows and PSP events.
pub const STRIPE: &str = "stripe";

/// The idempotency key of payment attempt `attempt` of an invoice.
pub fn idempotency_key(invoice_id: Uuid, attempt: i32) -> String {
    format!("tollgate-inv-{invoice_id}-attempt-{attempt}")
}

/// What collection needs: the PSP client (None: collection, checkout, portal and refunds are
/// off; PSP events are still applied), the dunning schedule and the collector's doorbell.
#[derive(Clone)]
pub struct PaymentsContext {
    pub stripe: Option<StripeClient>,
    /// Offsets of the retries from an invoice's first failed payment.
    pub retry_schedule: Vec<Duration>,
    /// Rung after pending payments are written (the collector also polls).
    pub collector_wake: Arc<Notify>,
    /// Seconds a claimed payment stays leased to its collector.
    pub collector_lease_secs: i64,
}

impl Default for PaymentsContext {
    /// No PSP; the default schedule (1 h, 24 h, 72 h).
    fn default() -> Self {
        Self {
            stripe: None,
            retry_schedule: vec![Duration::hours(1), Duration::hours(24), Duration::hours(72)],
            collector_wake: Arc::new(Notify::new()),
            collector_lease_secs: 120,
        }
    }
}

impl PaymentsContext {
    /// The context a configuration describes (builds the Stripe client when `psp.enabled`).
    pub fn from_config(config: &BillingConfig) -> anyhow::Result<Self> {
        let stripe = if config.psp.enabled {
            Some(
                StripeClient::new(config.psp.stripe.clone())
                    .map_err(|e| anyhow::anyhow!("building the Stripe client: {e}"))?,
            )
        } else {
            None
        };
        Ok(Self {
            stripe,
            retry_schedule: config
                .dunning
                .retry_schedule_secs
                .iter()
                .map(|s| Duration::seconds(*s as i64))
                .collect(),
            collector_wake: Arc::new(Notify::new()),
            collector_lease_secs: config.collector.lease_secs,
        })
    }

    /// The Stripe client. Errors: 503 PSP_NOT_CONFIGURED.
    pub fn stripe(&self) -> Result<&StripeClient, BillingError> {
        self.stripe.as_ref().ok_or(BillingError::PspNotConfigured)
    }
}

/// A payment result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What to do with a payment result for an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Apply it.
    Apply,
    /// Older than the state applied, or a failure after the invoice was paid: record, change
    /// nothing.
    Stale,
    /// A success not newer than a recorded failure: ask the PSP for the payment's current
    /// status and use that.
    Ambiguous,
}

/// The ordering rule for payment results of one invoice (issue 5: out-of-order delivery never
/// lets an older event overwrite newer state). `current` is the last outcome applied and the
/// PSP's time of it; `paid` whether the invoice is paid.
///
/// * A paid invoice stays paid: a failure of any time is stale; a success is applied (it is
///   recorded on its payment: a second payment of one invoice is money to give back).
/// * Nothing applied yet: apply.
/// * After a failure at `t`: a failure at or after `t` applies (each payment's own failure is
///   counted once, by its payment row), an older one is stale. A success after `t` applies; a
///   success at or before `t` is ambiguous (same second, or delivered out of order): the PSP is
///   asked for the payment's status (Stripe's `created` has one-second resolution).
/// * After a success on an invoice that is not paid (a void invoice): failures are stale.
pub fn decide(
    paid: bool,
    current: Option<(Outcome, DateTime<Utc>)>,
    incoming: Outcome,
    at: DateTime<Utc>,
) -> Decision {
    if paid {
        return match incoming {
            Outcome::Succeeded => Decision::Apply,
            Outcome::Failed => Decision::Stale,
        };
    }
    match (current, incoming) {
        (None, _) => Decision::Apply,
        (Some((Outcome::Failed, t)), Outcome::Failed) => {
            if at >= t {
                Decision::Apply
            } else {
                Decision::Stale
            }
        }
        (Some((Outcome::Failed, t)), Outcome::Succeeded) => {
            if at > t {
                Decision::Apply
            } else {
                Decision::Ambiguous
            }
        }
        (Some((Outcome::Succeeded, _)), Outcome::Failed) => Decision::Stale,
        (Some((Outcome::Succeeded, _)), Outcome::Succeeded) => Decision::Apply,
    }
}

/// Whether a payment in `status` takes the outcome `incoming`: an undecided payment (pending,
/// processing, errored) takes any outcome; `succeeded` is final (Stripe: a PaymentIntent
/// that succeeded never changes status) as is `canceled`; a failure is not counted twice, but
/// a success can follow a failure of the same PaymentIntent (the customer retried it). Time
/// plays no part here: the order of outcomes of one payment is fixed by these rules, and the
/// ordering of results across an invoice's payments is [`decide`]'s.
pub fn payment_takes(status: &str, incoming: Outcome) -> bool {
    !matches!(
        (status, incoming),
        ("succeeded", _) | ("canceled", _) | ("failed", Outcome::Failed)
    )
}

/// The outcome a PaymentIntent's status means (https://docs.stripe.com/payments/paymentintents/lifecycle):
/// `succeeded` → success; `canceled`, or `requires_payment_method` after an attempt (it was
/// confirmed or carries `last_payment_error`) → failure; anything else is undecided.
pub fn intent_outcome(intent: &PaymentIntent, confirmed: bool) -> Option<Outcome> {
    match intent.status.as_str() {
        "succeeded" => Some(Outcome::Succeeded),
        "canceled" => Some(Outcome::Failed),
        "requires_payment_method" if confirmed || intent.last_payment_error.is_some() => {
            Some(Outcome::Failed)
        }
        _ => None,
    }
}

/// A payment result to apply, from an API answer or a verified event.
#[derive(Debug, Clone)]
pub struct PaymentResult {
    pub outcome: Outcome,
    /// The PSP's time of it (the event's `created`, or the clock of the call).
    pub at: DateTime<Utc>,
    pub psp_payment_id: Option<String>,
    pub charge_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
}

/// What applying a result did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The invoice's payment state changed (paid, or a failure counted).
    Changed,
    /// Nothing new: this payment's outcome was recorded before.
    Unchanged,
    /// Older than what is applied; only the payment row took it, if it was newer for it.
    Stale,
    /// Ambiguous: re-fetch this PaymentIntent and apply again with its status confirmed.
    Refetch(String),
}

/// Applies `result` to `payment` of `invoice` (both locked by the caller, in its transaction):
/// the payment row takes it when [`payment_takes`]; the invoice when [`decide`] says so
/// (`confirmed` skips the ordering check: the PSP was just asked). A success marks the invoice
/// paid and announces `invoice.paid` and `payment.succeeded`, recovering its dunning case; a
/// failure opens or advances dunning (see `dunning`).
pub async fn apply_result(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
    payment: &mut PaymentRow,
    result: &PaymentResult,
    confirmed: bool,
) -> Result<Applied, BillingError> {
    if payment.psp_payment_id.is_none() {
        payment.psp_payment_id = result.psp_payment_id.clone();
    }
    if result.charge_id.is_some() {
        payment.psp_charge_id = result.charge_id.clone();
    }
    let state = store::invoice_payment_state(conn, invoice.id).await?;
    let current = match (state.state.as_deref().and_then(Outcome::parse), state.at) {
        (Some(o), Some(t)) => Some((o, t)),
        _ => None,
    };
    let paid = invoice.status == "paid";
    let decision = if confirmed {
        Decision::Apply
    } else {
        decide(paid, current, result.outcome, result.at)
    };
    if decision == Decision::Ambiguous {
        if let (Some(pi), Some(_)) = (&payment.psp_payment_id, &ctx.payments.stripe) {
            return Ok(Applied::Refetch(pi.clone()));
        }
        // No PaymentIntent to ask about: a verified success stands (a payment that succeeded
        // never un-succeeds).
    }
    let takes = payment_takes(&payment.status, result.outcome);
    if takes {
        payment.status = result.outcome.as_str().into();
        payment.status_at = Some(result.at);
        if result.outcome == Outcome::Failed {
            payment.failure_code = result.failure_code.clone();
            payment.failure_message = result.failure_message.clone();
        }
    }
    store::save_payment(conn, payment).await?;
    if decision == Decision::Stale {
        return Ok(Applied::Stale);
    }
    if !takes {
        return Ok(Applied::Unchanged);
    }
    match result.outcome {
        Outcome::Succeeded => succeeded(ctx, conn, invoice, payment, result.at).await?,
        Outcome::Failed => failed(ctx, conn, invoice, payment, result.at).await?,
    }
    Ok(Applied::Changed)
}

async fn succeeded(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
    payment: &PaymentRow,
    at: DateTime<Utc>,
) -> Result<(), BillingError> {
    match invoice.status.as_str() {
        "finalized" | "uncollectible" => {
            store::mark_invoice_paid(conn, invoice.id, at).await?;
            crate::events::enqueue(
                ctx,
                conn,
                invoice.tenant_id,
                BillingEvent::InvoicePaidV1 {
                    invoice_id: invoice.id,
                    number: invoice.number_text.clone().unwrap_or_default(),
                    account_id: invoice.account_id,
                    subscription_id: invoice.subscription_id,
                    currency: invoice.currency.clone(),
                    total_minor: invoice.total_minor,
                    paid_at: at,
                },
            )
            .await?;
        }
        other => tracing::warn!(
            invoice = %invoice.id,
            payment = %payment.id,
            status = other,
            "a payment succeeded for an invoice that is not open; it may need a refund"
        ),
    }
    let announced = crate::events::enqueue_with_id(
        ctx,
        conn,
        invoice.tenant_id,
        BillingEvent::PaymentSucceededV1 {
            payment_id: payment.id,
            invoice_id: invoice.id,
            account_id: invoice.account_id,
            currency: payment.currency.clone(),
            amount_minor: payment.amount_minor,
            attempt: payment.attempt,
            psp: payment.psp.clone(),
            psp_payment_id: payment.psp_payment_id.clone(),
            succeeded_at: at,
        },
    )
    .await?;
    crate::dunning::on_success(ctx, conn, invoice, payment, at, announced).await
}

async fn failed(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
    payment: &PaymentRow,
    at: DateTime<Utc>,
) -> Result<(), BillingError> {
    if !matches!(invoice.status.as_str(), "finalized" | "uncollectible") {
        // Paid or void: nothing left to chase.
        return Ok(());
    }
    let state = store::invoice_payment_state(conn, invoice.id).await?;
    if state.at.is_none_or(|t| at >= t) {
        store::set_invoice_failed(conn, invoice.id, at).await?;
    }
    crate::dunning::on_failure(ctx, conn, invoice, payment, at).await
}

/// Writes the first payment of a just-finalized invoice (caller's transaction) when the PSP
/// is on, the total is positive and the account has a PSP customer; returns whether it did.
pub(crate) async fn request_first_payment(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
) -> Result<bool, BillingError> {
    if ctx.payments.stripe.is_none() || invoice.total_minor <= 0 {
        return Ok(false);
    }
    if store::find_customer(conn, invoice.account_id, STRIPE)
        .await?
        .is_none()
    {
        return Ok(false);
    }
    let amount = crate::invoicing::amount_due(conn, invoice).await?;
    if amount <= 0 {
        return Ok(false);
    }
    let n = store::next_attempt(conn, invoice.id).await?;
    let inserted = store::insert_payment(conn, &new_pending(invoice, n, amount)).await?;
    if inserted {
        ctx.payments.collector_wake.notify_one();
    }
    Ok(inserted)
}

/// A pending payment of `amount_minor` for attempt `attempt` of `invoice`, due now.
pub(crate) fn new_pending(invoice: &InvoiceRow, attempt: i32, amount_minor: i64) -> PaymentRow {
    let now = Utc::now();
    PaymentRow {
        id: Uuid::now_v7(),
        tenant_id: invoice.tenant_id,
        invoice_id: invoice.id,
        account_id: invoice.account_id,
        attempt,
        psp: STRIPE.into(),
        status: "pending".into(),
        amount_minor,
        currency: invoice.currency.clone(),
        idempotency_key: idempotency_key(invoice.id, attempt),
        origin: "tollgate".into(),
        psp_payment_id: None,
        psp_charge_id: None,
        failure_code: None,
        failure_message: None,
        refunded_minor: 0,
        next_attempt_at: now,
        status_at: None,
        created_at: now,
        updated_at: now,
        first_sent_at: None,
    }
}

/// What sending one payment to the PSP came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    Succeeded,
    Failed,
    /// Undecided (the outcome comes by event) or the PSP was unreachable (sent again later).
    Pending,
    /// Not sent: no longer pending, or its invoice is no longer open.
    Skipped,
}

/// Sends a pending payment to Stripe (creating its PaymentIntent with the payment's
/// idempotency key) and applies the answer at `at`. A retry (attempt > 1) of an account
/// without a default payment method fails at once (`no_payment_method`): nothing could charge
/// it off-session. Errors only when the database fails; PSP trouble leaves the payment pending
/// for the collector (`Collected::Pending`).
pub async fn collect(
    ctx: &BillingContext,
    payment: PaymentRow,
    at: DateTime<Utc>,
) -> Result<Collected, BillingError> {
    let stripe = ctx.payments.stripe()?;
    // No connection is held across the PSP call.
    let (invoice, customer) = {
        let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
        let Some(invoice) = store::invoice_by_id(&mut conn, payment.invoice_id, false).await?
        else {
            return Ok(Collected::Skipped);
        };
        let customer = store::find_customer(&mut conn, payment.account_id, STRIPE).await?;
        (invoice, customer)
    };
    if !matches!(invoice.status.as_str(), "finalized" | "uncollectible") {
        let why = format!("invoice is {}", invoice.status);
        return finish(ctx, payment.id, Finish::Cancel(why), at).await;
    }
    let Some(customer) = customer else {
        let why = "the account has no PSP customer".to_owned();
        return finish(ctx, payment.id, error_step(&payment, why, at), at).await;
    };
    let method = customer.default_payment_method.clone();
    if method.is_none() && payment.attempt > 1 {
        let result = PaymentResult {
            outcome: Outcome::Failed,
            at,
            psp_payment_id: None,
            charge_id: None,
            failure_code: Some("no_payment_method".into()),
            failure_message: Some("no payment method on file to charge off-session".into()),
        };
        return finish(ctx, payment.id, Finish::Result(result, true), at).await;
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("tollgate_tenant".into(), invoice.tenant_id.to_string());
    metadata.insert("tollgate_account".into(), invoice.account_id.to_string());
    metadata.insert("tollgate_invoice".into(), invoice.id.to_string());
    metadata.insert("tollgate_payment".into(), payment.id.to_string());
    if let Some(sub) = invoice.subscription_id {
        metadata.insert("tollgate_subscription".into(), sub.to_string());
    }
    let confirm = method.is_some();
    let params = PaymentIntentParams {
        amount: payment.amount_minor,
        currency: payment.currency.to_lowercase(),
        customer: Some(customer.customer_id.clone()),
        payment_method: method,
        confirm,
        off_session: confirm,
        description: Some(format!(
            "Invoice {}",
            invoice
                .number_text
                .clone()
                .unwrap_or_else(|| InvoiceId::from_uuid(invoice.id).to_string())
        )),
        metadata,
    };
    // Last check before money moves, on the row itself: the payment must still be pending and
    // still ours (the lease we hold is renewed, so a slow earlier call cannot let another
    // collector send it meanwhile), and its amount must not exceed what is still owed.
    let lease = {
        let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
        let Some(lease) = store::renew_lease(
            &mut conn,
            payment.id,
            payment.next_attempt_at,
            Utc::now(),
            ctx.payments.collector_lease_secs,
        )
        .await?
        else {
            return Ok(Collected::Skipped);
        };
        let due = crate::invoicing::amount_due(&mut conn, &invoice).await?;
        if payment.amount_minor > due {
            let why = format!(
                "credit notes lowered the amount due to {due} minor units after this payment of {} was requested",
                payment.amount_minor
            );
            let cancelled = finish(ctx, payment.id, Finish::Cancel(why), at).await?;
            if due > 0 {
                let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
                let n = store::next_attempt(&mut conn, invoice.id).await?;
                store::insert_payment(&mut conn, &new_pending(&invoice, n, due)).await?;
                ctx.payments.collector_wake.notify_one();
            }
            return Ok(cancelled);
        }
        lease
    };
    let mut key = payment.idempotency_key.clone();
    if Utc::now() - lease.first_sent_at >= IDEMPOTENCY_KEY_WINDOW {
        match after_key_window(ctx, stripe, &payment, &customer.customer_id, &lease).await? {
            KeyWindow::Created(intent) => {
                tracing::warn!(payment = %payment.id, intent = %intent.id, "a PaymentIntent created by an earlier call with the payment's expired idempotency key was found; it decides the payment");
                return finish(ctx, payment.id, intent_step(&intent, confirm, at), at).await;
            }
            KeyWindow::Rekeyed(new_key) => {
                tracing::warn!(payment = %payment.id, old_key = %key, new_key = %new_key, "no PaymentIntent was created with the payment's expired idempotency key; sending it with a new key");
                key = new_key;
            }
            KeyWindow::Undecided => return Ok(Collected::Pending),
            KeyWindow::LeaseLost => return Ok(Collected::Skipped),
        }
    }
    let answer = stripe.create_payment_intent(&key, &params).await;
    let step = match answer {
        Ok(intent) => intent_step(&intent, confirm, at),
        Err(StripeError::Card(body)) => Finish::Result(
            PaymentResult {
                outcome: Outcome::Failed,
                at,
                psp_payment_id: body.payment_intent.as_ref().map(|pi| pi.id.clone()),
                charge_id: body
                    .payment_intent
                    .as_ref()
                    .and_then(|pi| pi.latest_charge.clone()),
                failure_code: body.decline_code.clone().or_else(|| body.code.clone()),
                failure_message: body.message.clone(),
            },
            true,
        ),
        Err(StripeError::InvalidRequest { status, error })
            if status == 409 || error.r#type == "idempotency_error" =>
        {
            // The same key is in flight elsewhere (409), or was used with other parameters: the
            // charge may exist. Undecided, not a failure: the payment stays pending and its
            // PaymentIntent's events (or the next send with the same key) decide it.
            tracing::warn!(payment = %payment.id, status, message = ?error.message, "Stripe reports the idempotency key in use; the payment stays pending");
            return Ok(Collected::Pending);
        }
        Err(StripeError::InvalidRequest { status, error }) => {
            tracing::warn!(payment = %payment.id, status, code = ?error.code, message = ?error.message, "Stripe refused the payment intent");
            Finish::Result(
                PaymentResult {
                    outcome: Outcome::Failed,
                    at,
                    psp_payment_id: error.payment_intent.as_ref().map(|pi| pi.id.clone()),
                    charge_id: None,
                    failure_code: error.code.clone().or(Some("invalid_request".into())),
                    failure_message: error.message.clone(),
                },
                true,
            )
        }
        Err(StripeError::Decode(msg)) => {
            // Stripe answered 2xx, so the charge may exist: never count this as a failure (a
            // dunning retry would charge again). The payment stays pending: a resend with the
            // same key replays Stripe's answer, and the PaymentIntent's events decide it.
            tracing::error!(payment = %payment.id, error = %msg, "Stripe's answer could not be read; the payment stays pending");
            return Ok(Collected::Pending);
        }
        Err(err) => {
            // Unavailable or authentication trouble: not the customer's failure. The payment
            // stays pending and is sent again (same idempotency key) after its lease.
            tracing::warn!(payment = %payment.id, error = %err, "Stripe call failed; the payment stays pending");
            return Ok(Collected::Pending);
        }
    };
    finish(ctx, payment.id, step, at).await
}

/// How long after a payment's first send with an idempotency key the collector still sends it
/// again with that key: 20 hours. Stripe keeps a key for at least 24 hours and may prune it
/// after that (<https://docs.stripe.com/api/idempotent_requests>), and a request with a pruned
/// key is carried out as new: a PaymentIntent the first call created (its answer lost, Stripe
/// unreachable since) would be charged a second time. The 4 hours of margin cover clock skew
/// and a lease. Past the window, [`collect`] asks Stripe first ([`after_key_window`]).
pub const IDEMPOTENCY_KEY_WINDOW: Duration = Duration::hours(20);

/// What Stripe's list said about a payment past [`IDEMPOTENCY_KEY_WINDOW`].
enum KeyWindow {
    /// An earlier call created this PaymentIntent for the payment: it decides the payment.
    Created(Box<PaymentIntent>),
    /// None was created; the payment now has this new key (its window starts now).
    Rekeyed(String),
    /// Stripe could not be asked; the payment stays pending for the next round.
    Undecided,
    /// Another collector took the payment meanwhile.
    LeaseLost,
}

/// Looks for a PaymentIntent the payment's earlier calls created: every PaymentIntent of the
/// customer created since 10 minutes before the first send (Stripe's clock may differ from
/// ours) whose `metadata.tollgate_payment` is the payment. Stripe's list endpoint answers from
/// its records (unlike the Search API it does not lag), and no earlier call can still be in
/// flight: the lease this collector holds was taken after the last one's had run out. When
/// none exists the payment gets a new idempotency key `…-k<unix seconds>` and is sent as new.
/// Errors only when the database fails.
async fn after_key_window(
    ctx: &BillingContext,
    stripe: &StripeClient,
    payment: &PaymentRow,
    customer: &str,
    lease: &store::SendLease,
) -> Result<KeyWindow, BillingError> {
    let now = Utc::now();
    let listed = stripe
        .list_customer_payment_intents(
            customer,
            lease.first_sent_at - Duration::minutes(10),
            now + Duration::minutes(10),
        )
        .await;
    let intents = match listed {
        Ok(intents) => intents,
        Err(err) => {
            tracing::warn!(payment = %payment.id, error = %err, "could not list the customer's PaymentIntents for a payment past its idempotency window; it stays pending");
            return Ok(KeyWindow::Undecided);
        }
    };
    let ours = payment.id.to_string();
    let mut created: Vec<PaymentIntent> = intents
        .into_iter()
        .filter(|pi| pi.metadata.get("tollgate_payment") == Some(&ours))
        .collect();
    // One call creates at most one; should there be more, money taken decides.
    created.sort_by_key(|pi| pi.status != "succeeded");
    if let Some(intent) = created.into_iter().next() {
        return Ok(KeyWindow::Created(Box::new(intent)));
    }
    let key = format!(
        "{}-k{}",
        idempotency_key(payment.invoice_id, payment.attempt),
        now.timestamp()
    );
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    Ok(
        if store::rekey_payment(&mut conn, payment.id, lease, &key, now).await? {
            KeyWindow::Rekeyed(key)
        } else {
            KeyWindow::LeaseLost
        },
    )
}

/// The step a PaymentIntent Stripe returned calls for: its outcome when it has one
/// ([`intent_outcome`]), else `processing` (the outcome comes by event).
fn intent_step(intent: &PaymentIntent, confirmed: bool, at: DateTime<Utc>) -> Finish {
    match intent_outcome(intent, confirmed) {
        Some(outcome) => Finish::Result(
            PaymentResult {
                outcome,
                at,
                psp_payment_id: Some(intent.id.clone()),
                charge_id: intent.latest_charge.clone(),
                failure_code: intent
                    .last_payment_error
                    .as_ref()
                    .and_then(|e| e.decline_code.clone().or_else(|| e.code.clone())),
                failure_message: intent
                    .last_payment_error
                    .as_ref()
                    .and_then(|e| e.message.clone()),
            },
            true,
        ),
        None => Finish::Processing(intent.id.clone()),
    }
}

/// A payment that cannot be sent: a first attempt is kept `errored` for operators; a dunning
/// retry counts as a failed retry (`collection_error`), so the schedule still runs its course.
fn error_step(payment: &PaymentRow, message: String, at: DateTime<Utc>) -> Finish {
    if payment.attempt > 1 {
        Finish::Result(
            PaymentResult {
                outcome: Outcome::Failed,
                at,
                psp_payment_id: None,
                charge_id: None,
                failure_code: Some("collection_error".into()),
                failure_message: Some(message),
            },
            true,
        )
    } else {
        Finish::Error(message)
    }
}

enum Finish {
    /// An outcome (`true`: the PSP just said so, no ordering check).
    Result(PaymentResult, bool),
    /// The PSP has it (PaymentIntent id), the outcome comes by event.
    Processing(String),
    /// Not sent: the PSP cannot be used for it (kept for operators).
    Error(String),
    /// Not sent: nothing to collect.
    Cancel(String),
}

async fn finish(
    ctx: &BillingContext,
    payment_id: Uuid,
    step: Finish,
    at: DateTime<Utc>,
) -> Result<Collected, BillingError> {
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    conn.transaction(async move |conn| {
        let Some(peek) = store::find_payment(conn, payment_id, false).await? else {
            return Ok(Collected::Skipped);
        };
        // Lock order everywhere: invoice, then payment, then dunning rows, then subscription.
        let Some(invoice) = store::invoice_by_id(conn, peek.invoice_id, true).await? else {
            return Ok(Collected::Skipped);
        };
        let Some(mut payment) = store::find_payment(conn, payment_id, true).await? else {
            return Ok(Collected::Skipped);
        };
        match step {
            Finish::Result(result, confirmed) => {
                // A success Stripe confirmed is money taken: it replaces a failure recorded
                // meanwhile (the same rule as for events, `payment_takes`).
                let success_over_failure =
                    result.outcome == Outcome::Succeeded && payment.status == "failed";
                if !success_over_failure
                    && !matches!(
                        payment.status.as_str(),
                        "pending" | "processing" | "errored"
                    )
                {
                    // An event decided it first.
                    return Ok(outcome_of(&payment.status));
                }
                match apply_result(ctx, conn, &invoice, &mut payment, &result, confirmed).await? {
                    Applied::Refetch(_) => {
                        // Not reached with `confirmed`; keep the answer as reported.
                        Ok(Collected::Pending)
                    }
                    _ => Ok(outcome_of(&payment.status)),
                }
            }
            Finish::Processing(intent) => {
                if payment.status == "pending" {
                    payment.status = "processing".into();
                    payment.status_at = Some(at);
                    payment.psp_payment_id = payment.psp_payment_id.or(Some(intent));
                    store::save_payment(conn, &mut payment).await?;
                }
                Ok(Collected::Pending)
            }
            Finish::Error(message) => {
                if payment.status == "pending" {
                    payment.status = "errored".into();
                    payment.status_at = Some(at);
                    payment.failure_message = Some(message);
                    store::save_payment(conn, &mut payment).await?;
                }
                Ok(Collected::Skipped)
            }
            Finish::Cancel(message) => {
                if payment.status == "pending" {
                    payment.status = "canceled".into();
                    payment.status_at = Some(at);
                    payment.failure_message = Some(message);
                    store::save_payment(conn, &mut payment).await?;
                    if let Some(mut attempt) =
                        store::attempt_of_payment(conn, payment.id, true).await?
                    {
                        attempt.status = "canceled".into();
                        store::save_attempt(conn, &mut attempt).await?;
                    }
                }
                Ok(Collected::Skipped)
            }
        }
    })
    .await
}

fn outcome_of(status: &str) -> Collected {
    match status {
        "succeeded" => Collected::Succeeded,
        "failed" => Collected::Failed,
        "pending" | "processing" => Collected::Pending,
        _ => Collected::Skipped,
    }
}

/// Sends every pending payment due at `now` (a batch of at most `batch`); returns how many
/// were taken.
pub async fn collect_due(
    ctx: &BillingContext,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<usize, BillingError> {
    let claimed = {
        let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
        store::claim_pending(&mut conn, now, batch, ctx.payments.collector_lease_secs).await?
    };
    let n = claimed.len();
    for payment in claimed {
        let id = payment.id;
        if let Err(err) = collect(ctx, payment, Utc::now()).await {
            tracing::warn!(payment = %id, error = %err, "collecting a payment failed; it is retried after its lease");
        }
    }
    Ok(n)
}

/// The collector loop: sends pending payments every `interval` and whenever one is written.
pub(crate) async fn collector(
    ctx: BillingContext,
    interval: std::time::Duration,
    batch: i64,
    cancel: CancellationToken,
) {
    let wake = ctx.payments.collector_wake.clone();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        loop {
            match collect_due(&ctx, Utc::now(), batch).await {
                Ok(n) if n as i64 >= batch => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::debug!(error = %err, "payment collector pass failed; retrying");
                    break;
                }
            }
        }
    }
}

/// A payment as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentView {
    pub id: Uuid,
    pub invoice: String,
    pub attempt: i32,
    pub psp: String,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    pub refunded_minor: i64,
    pub origin: String,
    pub psp_payment_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub status_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<PaymentRow> for PaymentView {
    fn from(p: PaymentRow) -> Self {
        Self {
            id: p.id,
            invoice: InvoiceId::from_uuid(p.invoice_id).to_string(),
            attempt: p.attempt,
            psp: p.psp,
            status: p.status,
            amount_minor: p.amount_minor,
            currency: p.currency,
            refunded_minor: p.refunded_minor,
            origin: p.origin,
            psp_payment_id: p.psp_payment_id,
            failure_code: p.failure_code,
            failure_message: p.failure_message,
            status_at: p.status_at,
            created_at: p.created_at,
        }
    }
}

/// A refund as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RefundView {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub amount_minor: i64,
    pub reason: String,
    pub status: String,
    pub psp_refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<RefundRow> for RefundView {
    fn from(r: RefundRow) -> Self {
        Self {
            id: r.id,
            payment_id: r.payment_id,
            amount_minor: r.amount_minor,
            reason: r.reason,
            status: r.status,
            psp_refund_id: r.psp_refund_id,
            created_at: r.created_at,
        }
    }
}

/// Raises a payment's refunded total to `total` (the PSP's running total, so reports in any
/// order and any number of times converge) and announces `payment.refunded` with what it
/// added; returns whether it grew. The caller holds the payment's lock.
pub(crate) async fn record_refunded(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    payment: &mut PaymentRow,
    total: i64,
) -> Result<bool, BillingError> {
    let total = total.min(payment.amount_minor);
    if total <= payment.refunded_minor {
        return Ok(false);
    }
    let added = total - payment.refunded_minor;
    payment.refunded_minor = total;
    store::save_payment(conn, payment).await?;
    crate::events::enqueue(
        ctx,
        conn,
        payment.tenant_id,
        BillingEvent::PaymentRefundedV1 {
            payment_id: payment.id,
            invoice_id: payment.invoice_id,
            account_id: payment.account_id,
            currency: payment.currency.clone(),
            amount_minor: added,
            refunded_minor: total,
            psp_payment_id: payment.psp_payment_id.clone(),
        },
    )
    .await?;
    Ok(true)
}

/// Refunds `amount_minor` (default: all that is left) of an invoice's succeeded payment
/// through Stripe, with a reason (1 to 500 characters). `client_key` (the request's
/// `Idempotency-Key`, required: without one a retried request would refund again) makes a
/// repeated request return the first refund instead of refunding twice, and names the
/// refund's Stripe idempotency key (`tollgate-refund-{invoice}-{client_key}`). Errors: not
/// found (404), no succeeded payment or nothing left to refund (409 INVOICE_STATE), a bad
/// amount, reason or key (422), PSP errors (502/503).
pub async fn refund(
    ctx: &BillingContext,
    tenant_id: Uuid,
    invoice_id: Uuid,
    amount_minor: Option<i64>,
    reason: &str,
    client_key: &str,
) -> Result<RefundRow, BillingError> {
    let stripe = ctx.payments.stripe()?.clone();
    let reason = reason.trim().to_owned();
    if reason.is_empty() || reason.len() > 500 {
        return Err(BillingError::Invalid(
            "reason must be 1 to 500 characters".into(),
        ));
    }
    if client_key.is_empty() || client_key.len() > 200 {
        return Err(BillingError::Invalid(
            "Idempotency-Key must be 1 to 200 characters".into(),
        ));
    }
    let key = format!("tollgate-refund-{invoice_id}-{client_key}");
    // No connection is held across the PSP call.
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    let (mut row, payment_intent, fresh) = conn
        .transaction(async move |conn| {
            let invoice = tollgate_storage::invoices::find(conn, tenant_id, invoice_id, true)
                .await?
                .ok_or(BillingError::InvoiceNotFound)?;
            let payments = store::payments_of_invoice(conn, invoice.id).await?;
            let Some(payment) = payments
                .into_iter()
                .filter(|p| p.status == "succeeded" && p.psp_payment_id.is_some())
                .max_by_key(|p| p.attempt)
            else {
                return Err(BillingError::InvoiceState(
                    "has no succeeded payment to refund".into(),
                ));
            };
            let payment = store::find_payment(conn, payment.id, true)
                .await?
                .ok_or(BillingError::InvoiceNotFound)?;
            let mut refunds = store::refunds_of(conn, payment.id).await?;
            if let Some(at) = refunds.iter().position(|r| r.idempotency_key == key) {
                let existing = refunds.swap_remove(at);
                return Ok((existing, payment.psp_payment_id.unwrap_or_default(), false));
            }
            let pending: i64 = refunds
                .iter()
                .filter(|r| matches!(r.status.as_str(), "pending" | "requires_action"))
                .map(|r| r.amount_minor)
                .sum();
            let left = payment.amount_minor - payment.refunded_minor - pending;
            if left <= 0 {
                return Err(BillingError::InvoiceState(
                    "has nothing left to refund".into(),
                ));
            }
            let amount = amount_minor.unwrap_or(left);
            if amount <= 0 || amount > left {
                return Err(BillingError::Invalid(format!(
                    "amount_minor must be between 1 and {left} (what is left to refund)"
                )));
            }
            let now = Utc::now();
            let row = RefundRow {
                id: Uuid::now_v7(),
                tenant_id,
                payment_id: payment.id,
                amount_minor: amount,
                reason: reason.clone(),
                status: "pending".into(),
                idempotency_key: key,
                psp_refund_id: None,
                failure_message: None,
                created_at: now,
                updated_at: now,
            };
            let (row, inserted) = store::insert_refund(conn, &row).await?;
            Ok((row, payment.psp_payment_id.unwrap_or_default(), inserted))
        })
        .await?;
    drop(conn);
    if !fresh && row.status != "pending" {
        return Ok(row);
    }
    let answer = stripe
        .create_refund(
            &row.idempotency_key,
            &payment_intent,
            Some(row.amount_minor),
        )
        .await;
    let refund = match answer {
        Ok(refund) => refund,
        Err(err @ (StripeError::Unavailable(_) | StripeError::Authentication(_))) => {
            // Left pending: the same request (same idempotency key) can be repeated.
            return Err(BillingError::Psp(err));
        }
        Err(err @ StripeError::Decode(_)) => {
            // Stripe answered 2xx: the refund may exist. Left pending (it still counts against
            // what is refundable), so a repeat with the same key replays Stripe's answer and
            // `charge.refunded` settles it; never `errored`, which would free the amount for a
            // second refund.
            return Err(BillingError::Psp(err));
        }
        Err(StripeError::InvalidRequest { status, error })
            if status == 409 || error.r#type == "idempotency_error" =>
        {
            // The same refund request is in flight (or its key was reused): left pending.
            return Err(BillingError::Psp(StripeError::InvalidRequest {
                status,
                error,
            }));
        }
        Err(err) => {
            row.status = "errored".into();
            row.failure_message = Some(err.to_string());
            let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
            store::save_refund(&mut conn, &mut row).await?;
            return Err(BillingError::Psp(err));
        }
    };
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    conn.transaction(async move |conn| {
        let mut payment = store::find_payment(conn, row.payment_id, true)
            .await?
            .ok_or(BillingError::InvoiceNotFound)?;
        row.psp_refund_id = Some(refund.id.clone());
        row.status = match refund.status.as_str() {
            "succeeded" | "pending" | "failed" | "canceled" | "requires_action" => {
                refund.status.clone()
            }
            _ => "pending".into(),
        };
        row.amount_minor = refund.amount;
        store::save_refund(conn, &mut row).await?;
        if row.status == "succeeded" {
            let done: i64 = store::refunds_of(conn, payment.id)
                .await?
                .iter()
                .filter(|r| r.status == "succeeded")
                .map(|r| r.amount_minor)
                .sum();
            record_refunded(ctx, conn, &mut payment, done).await?;
        }
        Ok::<_, BillingError>(row)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use Outcome::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("valid")
    }

    #[test]
    fn ordering_rules_for_an_invoice() {
        // (invoice paid, last result applied (outcome, second), incoming, its second, decision)
        type Row = (bool, Option<(Outcome, i64)>, Outcome, i64, Decision);
        let table: &[Row] = &[
            // First result: applied.
            (false, None, Failed, 10, Apply),
            (false, None, Succeeded, 10, Apply),
            // A newer failure (a retry) applies; an older one is stale.
            (false, Some((Failed, 10)), Failed, 20, Apply),
            (false, Some((Failed, 10)), Failed, 10, Apply),
            (false, Some((Failed, 10)), Failed, 5, Stale),
            // A newer success applies; one at the same second or delivered late is confirmed
            // with the PSP first.
            (false, Some((Failed, 10)), Succeeded, 11, Apply),
            (false, Some((Failed, 10)), Succeeded, 10, Ambiguous),
            (false, Some((Failed, 10)), Succeeded, 3, Ambiguous),
            // A success is never overwritten by a failure, older or not.
            (true, Some((Succeeded, 10)), Failed, 5, Stale),
            (true, Some((Succeeded, 10)), Failed, 10, Stale),
            (true, Some((Succeeded, 10)), Failed, 99, Stale),
            (false, Some((Succeeded, 10)), Failed, 99, Stale),
            // A second success is recorded on its own payment.
            (true, Some((Succeeded, 10)), Succeeded, 12, Apply),
        ];
        for (paid, current, incoming, at, want) in table {
            let current = current.map(|(o, s)| (o, t(s)));
            assert_eq!(
                decide(*paid, current, *incoming, t(*at)),
                *want,
                "paid={paid} current={current:?} incoming={incoming:?}@{at}"
            );
        }
    }

    #[test]
    fn a_payment_row_only_moves_forward() {
        assert!(payment_takes("pending", Failed));
        assert!(payment_takes("processing", Succeeded));
        assert!(payment_takes("processing", Failed));
        assert!(payment_takes("errored", Failed));
        // A failure is counted once per payment; a PaymentIntent may still succeed after one.
        assert!(!payment_takes("failed", Failed));
        assert!(payment_takes("failed", Succeeded));
        // Succeeded and canceled are final.
        assert!(!payment_takes("succeeded", Failed));
        assert!(!payment_takes("succeeded", Succeeded));
        assert!(!payment_takes("canceled", Succeeded));
    }

    #[test]
    fn idempotency_keys_name_the_invoice_and_attempt() {
        let id = Uuid::nil();
        assert_eq!(
            idempotency_key(id, 3),
            "tollgate-inv-00000000-0000-0000-0000-000000000000-attempt-3"
        );
    }
}
