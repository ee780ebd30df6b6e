//! Applying verified PSP events (issue 5 "Applying PSP events"; SPEC "Webhooks": apply
//! asynchronously and idempotently, tolerate out-of-order delivery). The webhook service
//! verifies, stores and publishes each event (`Envelope<PspEvent>`, routing key
//! `psp.{psp}.{type}`); billing consumes them from its durable queue `{prefix}.billing.psp`
//! (bound to `psp.#`), applies each in one transaction together with its
//! `psp_event_applications (psp, event_id)` row, and acks after the commit. A redelivered or
//! re-sent event finds its row and changes nothing; a type billing does not act on is recorded
//! as `ignored` and acked.
//!
//! Objects are found by the metadata Tollgate puts on everything it creates at Stripe
//! (`tollgate_tenant`, `tollgate_account`, `tollgate_invoice`, `tollgate_subscription`,
//! `tollgate_payment`), then by stored PSP ids (customer, subscription, PaymentIntent, charge).
//!
//! | event | effect |
//! |---|---|
//! | `checkout.session.completed` | links the customer (and the setup intent's payment method, when expanded) to the account; charges its uncollected invoices |
//! | `customer.subscription.created/updated/deleted` | the PSP subscription's status onto the linked subscription (active → active, trialing → trialing, past_due → past_due, unpaid/paused → suspended, canceled → canceled), only when newer than `psp_state_at` |
//! | `invoice.payment_succeeded/failed`, `payment_intent.succeeded/payment_failed` | the invoice's payment outcome (`payments::apply_result`, ordering by `payments::decide`) |
//! | `charge.refunded` | the payment's refunded total (Stripe's running `amount_refunded`), `payment.refunded` |
//!
//! Ambiguity (a success not newer than a recorded failure; two subscription events in the same
//! second) is settled by asking Stripe for the object's current state
//! (`retrieve_payment_intent`, `retrieve_subscription`) and applying that.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tollgate_domain::{Envelope, PspEvent};
use tollgate_messaging::{Broker, QueueType};
use tollgate_psp::stripe::{PaymentIntent, Subscription};
use tollgate_storage::payments::{
    self as store, PaymentRow, PspCustomerRow, PspEventApplicationRow,
};
use tollgate_storage::subscriptions::{self, NewSubscriptionChange};
use tollgate_storage::{AsyncPgConnection, StorageError};
use tracing::Instrument;
use uuid::Uuid;

use crate::payments::{self, Applied, Outcome, PaymentResult, STRIPE};
use crate::run::PlanCache;
use crate::{BillingContext, BillingError};

/// A verified PSP event, as the webhook service published it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// `stripe` | `razorpay`.
    pub psp: String,
    /// The PSP's event id (`evt_…`).
    pub event_id: String,
    pub event_type: String,
    /// The PSP's own time of the event (Stripe `created`).
    pub created: DateTime<Utc>,
    pub livemode: bool,
    /// The whole event as the PSP sent it.
    pub payload: Value,
}

impl From<PspEvent> for ReceivedEvent {
    fn from(event: PspEvent) -> Self {
        match event {
            PspEvent::ReceivedV1 {
                psp,
                event_id,
                event_type,
                created,
                livemode,
                payload,
            } => Self {
                psp,
                event_id,
                event_type,
                created,
                livemode,
                payload,
            },
        }
    }
}

/// What applying an event did (`outcome` is what `psp_event_applications` records, or
/// `duplicate` for an event applied before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// `applied`, `stale`, `ignored`, `unmatched` or `duplicate`.
    pub outcome: &'static str,
    pub tenant: Option<Uuid>,
    pub detail: Option<String>,
}

impl ApplyReport {
    fn applied(tenant: Uuid, detail: impl Into<String>) -> Self {
        Self {
            outcome: "applied",
            tenant: Some(tenant),
            detail: Some(detail.into()),
        }
    }

    fn stale(tenant: Uuid, detail: impl Into<String>) -> Self {
        Self {
            outcome: "stale",
            tenant: Some(tenant),
            detail: Some(detail.into()),
        }
    }

    fn unmatched(detail: impl Into<String>) -> Self {
        Self {
            outcome: "unmatched",
            tenant: None,
            detail: Some(detail.into()),
        }
    }
}

/// What must be asked of the PSP before an event can be applied.
#[derive(Debug, Clone)]
enum Refetch {
    Intent(String),
    Subscription(String),
    /// The SetupIntent of a setup-mode Checkout Session: its saved card.
    SetupIntent(String),
}

/// The PSP's answer to a [`Refetch`].
#[derive(Debug, Clone)]
enum Resolved {
    Intent(PaymentIntent),
    Subscription(Subscription),
    SetupIntent(tollgate_psp::stripe::SetupIntent),
}

/// Errors inside the applying transaction: a [`Refetch`] rolls it back (nothing, not even the
/// claim, is kept), the PSP is asked outside of it, and the event is applied again.
enum TxError {
    Billing(BillingError),
    Refetch(Refetch),
}

impl From<BillingError> for TxError {
    fn from(err: BillingError) -> Self {
        Self::Billing(err)
    }
}

impl From<StorageError> for TxError {
    fn from(err: StorageError) -> Self {
        Self::Billing(err.into())
    }
}

impl From<diesel::result::Error> for TxError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Billing(err.into())
    }
}

/// Applies one event (idempotent: an event applied before changes nothing). Errors when the
/// database or, for an ambiguous event, the PSP cannot be reached: the caller retries later.
pub async fn apply(
    ctx: &BillingContext,
    event: &ReceivedEvent,
) -> Result<ApplyReport, BillingError> {
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    let mut resolved = None;
    for _ in 0..3 {
        match apply_once(ctx, &mut conn, event, resolved.as_ref()).await {
            Ok(report) => return Ok(report),
            Err(TxError::Billing(err)) => return Err(err),
            Err(TxError::Refetch(what)) => {
                let stripe = ctx.payments.stripe()?;
                resolved = Some(match what {
                    Refetch::Intent(id) => Resolved::Intent(
                        stripe
                            .retrieve_payment_intent(&id)
                            .await
                            .map_err(BillingError::Psp)?,
                    ),
                    Refetch::Subscription(id) => Resolved::Subscription(
                        stripe
                            .retrieve_subscription(&id)
                            .await
                            .map_err(BillingError::Psp)?,
                    ),
                    Refetch::SetupIntent(id) => Resolved::SetupIntent(
                        stripe
                            .retrieve_setup_intent(&id)
                            .await
                            .map_err(BillingError::Psp)?,
                    ),
                });
            }
        }
    }
    Err(BillingError::Corrupt(format!(
        "event {} stayed ambiguous after asking the PSP",
        event.event_id
    )))
}

async fn apply_once(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    event: &ReceivedEvent,
    resolved: Option<&Resolved>,
) -> Result<ApplyReport, TxError> {
    conn.transaction(async move |conn| {
        let claim = PspEventApplicationRow {
            psp: event.psp.clone(),
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            created_at_psp: event.created,
            outcome: "applied".into(),
            tenant_id: None,
            detail: None,
            applied_at: Utc::now(),
        };
        if !store::claim_event(conn, &claim).await? {
            return Ok(ApplyReport {
                outcome: "duplicate",
                tenant: None,
                detail: None,
            });
        }
        let report = if event.psp != STRIPE {
            ApplyReport {
                outcome: "ignored",
                tenant: None,
                detail: Some(format!("billing does not collect through {}", event.psp)),
            }
        } else {
            match event.event_type.as_str() {
                "checkout.session.completed" => {
                    checkout_completed(ctx, conn, event, resolved).await?
                }
                "customer.subscription.created"
                | "customer.subscription.updated"
                | "customer.subscription.deleted" => {
                    subscription_changed(ctx, conn, event, resolved).await?
                }
                "invoice.payment_succeeded"
                | "invoice.payment_failed"
                | "payment_intent.succeeded"
                | "payment_intent.payment_failed" => {
                    payment_reported(ctx, conn, event, resolved).await?
                }
                "charge.refunded" => charge_refunded(ctx, conn, event).await?,
                other => ApplyReport {
                    outcome: "ignored",
                    tenant: None,
                    detail: Some(format!("billing does not act on {other}")),
                },
            }
        };
        store::finish_event(
            conn,
            &event.psp,
            &event.event_id,
            report.outcome,
            report.tenant,
            report.detail.as_deref(),
        )
        .await?;
        Ok(report)
    })
    .await
}

/// `data.object` of an event.
fn object(event: &ReceivedEvent) -> &Value {
    &event.payload["data"]["object"]
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// An expandable field: the id string, or the expanded object's `id`.
fn id_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// A UUID from metadata: plain, or a Tollgate id with its prefix (`inv_…`, `acc_…`).
fn meta_uuid(obj: &Value, key: &str) -> Option<Uuid> {
    let raw = obj.get("metadata")?.get(key)?.as_str()?;
    parse_uuid(raw)
}

fn parse_uuid(raw: &str) -> Option<Uuid> {
    if let Ok(id) = Uuid::parse_str(raw) {
        return Some(id);
    }
    let (_, hex) = raw.split_once('_')?;
    (hex.len() == 32)
        .then(|| Uuid::parse_str(hex).ok())
        .flatten()
}

async fn checkout_completed(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    event: &ReceivedEvent,
    resolved: Option<&Resolved>,
) -> Result<ApplyReport, TxError> {
    let session = object(event);
    let Some(customer) = id_of(session, "customer") else {
        return Ok(ApplyReport::unmatched("the session has no customer"));
    };
    let by_meta = meta_uuid(session, "tollgate_account")
        .or_else(|| text(session, "client_reference_id").and_then(parse_uuid));
    let account = match by_meta {
        Some(id) => store::account_by_id(conn, id).await?,
        None => match store::customer_by_psp_id(conn, STRIPE, customer).await? {
            Some(c) => store::account_by_id(conn, c.account_id).await?,
            None => None,
        },
    };
    let Some(account) = account else {
        return Ok(ApplyReport::unmatched(
            "no Tollgate account for the session",
        ));
    };
    if meta_uuid(session, "tollgate_tenant").is_some_and(|t| t != account.tenant_id) {
        return Ok(ApplyReport::unmatched(
            "tollgate_tenant does not own the account",
        ));
    }
    // The saved card is the session's SetupIntent's `payment_method`. Webhook events carry
    // only the SetupIntent's id (`seti_…`), so it is fetched from Stripe (outside this
    // transaction, then the event is applied again); an expanded object is read as is. With
    // the PSP off, the customer is linked without a card.
    let method = match (session.get("setup_intent"), resolved) {
        (Some(expanded), _) if expanded.is_object() => {
            id_of(expanded, "payment_method").map(str::to_owned)
        }
        (_, Some(Resolved::SetupIntent(intent))) => intent.payment_method.clone(),
        (Some(serde_json::Value::String(id)), _) if ctx.payments.stripe.is_some() => {
            return Err(TxError::Refetch(Refetch::SetupIntent(id.clone())));
        }
        _ => None,
    };
    let now = Utc::now();
    let linked = store::link_customer(
        conn,
        &PspCustomerRow {
            account_id: account.id,
            psp: STRIPE.into(),
            tenant_id: account.tenant_id,
            customer_id: customer.to_owned(),
            default_payment_method: method.clone(),
            created_at: now,
            updated_at: now,
        },
    )
    .await;
    match linked {
        Ok(_) => {}
        Err(StorageError::UniqueViolation(_)) => {
            return Ok(ApplyReport::unmatched(format!(
                "customer {customer} belongs to another account"
            )));
        }
        Err(err) => return Err(err.into()),
    }
    if let Some(psp_sub) = id_of(session, "subscription") {
        if let Some(sub) = subscriptions::live_for_account(conn, account.id).await? {
            let link = store::subscription_psp(conn, sub.id).await?;
            if link.is_some_and(|l| l.psp_subscription_id.is_none()) {
                store::link_subscription(conn, sub.id, psp_sub).await?;
            }
        }
    }
    let mut requested = 0;
    if ctx.payments.stripe.is_some() {
        for invoice in store::uncollected_invoices(conn, account.id).await? {
            if payments::request_first_payment(ctx, conn, &invoice).await? {
                requested += 1;
            }
        }
    }
    Ok(ApplyReport::applied(
        account.tenant_id,
        format!(
            "customer {customer} linked to account {}{}; {requested} invoice(s) sent for payment",
            account.id,
            if method.is_some() {
                " with a payment method"
            } else {
                ""
            }
        ),
    ))
}

/// The Tollgate status of a Stripe subscription status
/// (https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses); None for
/// statuses that do not change a Tollgate subscription (`incomplete`, `incomplete_expired`).
pub fn tollgate_status(stripe_status: &str) -> Option<&'static str> {
    match stripe_status {
        "active" => Some("active"),
        "trialing" => Some("trialing"),
        "past_due" => Some("past_due"),
        "unpaid" | "paused" => Some("suspended"),
        "canceled" => Some("canceled"),
        _ => None,
    }
}

/// Whether a subscription event at `at` may replace the state applied at `applied_at`:
/// Some(true) newer, Some(false) older, None the same second (ask the PSP).
pub fn newer_than(applied_at: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Option<bool> {
    match applied_at {
        None => Some(true),
        Some(t) if at > t => Some(true),
        Some(t) if at < t => Some(false),
        Some(_) => None,
    }
}

async fn subscription_changed(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    event: &ReceivedEvent,
    resolved: Option<&Resolved>,
) -> Result<ApplyReport, TxError> {
    let obj = object(event);
    let Some(psp_id) = text(obj, "id") else {
        return Ok(ApplyReport::unmatched("the subscription has no id"));
    };
    let mut link = match meta_uuid(obj, "tollgate_subscription") {
        Some(id) => store::subscription_psp(conn, id).await?,
        None => None,
    };
    if link.is_none() {
        link = store::subscription_by_psp_id(conn, psp_id).await?;
    }
    // Linked only by our own metadata or a link already stored (a Checkout Session in
    // subscription mode stores one): another Stripe subscription of the same customer (an old
    // one from the dashboard, say) must never take over the account's live subscription.
    let Some(link) = link else {
        return Ok(ApplyReport::unmatched(format!(
            "no Tollgate subscription for {psp_id}"
        )));
    };
    if meta_uuid(obj, "tollgate_tenant").is_some_and(|t| t != link.tenant_id) {
        return Ok(ApplyReport::unmatched(
            "tollgate_tenant does not own the subscription",
        ));
    }
    if link
        .psp_subscription_id
        .as_deref()
        .is_some_and(|linked| linked != psp_id)
    {
        return Ok(ApplyReport::unmatched(format!(
            "the subscription mirrors another PSP subscription, not {psp_id}"
        )));
    }
    let Some(mut sub) = subscriptions::find(conn, link.tenant_id, link.id, true).await? else {
        return Ok(ApplyReport::unmatched("subscription vanished"));
    };
    // Under the row lock: a concurrent event may have linked another PSP subscription.
    let locked = store::subscription_psp(conn, sub.id).await?;
    match locked
        .as_ref()
        .and_then(|l| l.psp_subscription_id.as_deref())
    {
        Some(linked) if linked != psp_id => {
            return Ok(ApplyReport::unmatched(format!(
                "the subscription mirrors another PSP subscription, not {psp_id}"
            )));
        }
        Some(_) => {}
        None => store::link_subscription(conn, sub.id, psp_id).await?,
    }
    // Re-read under the row lock: another event may have moved it meanwhile.
    let applied_at = store::subscription_psp(conn, sub.id)
        .await?
        .and_then(|l| l.psp_state_at);
    let psp_status = match resolved {
        Some(Resolved::Subscription(s)) if s.id == psp_id => s.status.clone(),
        _ => match newer_than(applied_at, event.created) {
            Some(true) => {
                if event.event_type == "customer.subscription.deleted" {
                    "canceled".to_owned()
                } else {
                    text(obj, "status").unwrap_or_default().to_owned()
                }
            }
            Some(false) => {
                return Ok(ApplyReport::stale(
                    sub.tenant_id,
                    format!("older than the state applied at {:?}", applied_at),
                ));
            }
            None => {
                if ctx.payments.stripe.is_some() {
                    return Err(TxError::Refetch(Refetch::Subscription(psp_id.to_owned())));
                }
                // Without API access the later delivery wins a tie.
                text(obj, "status").unwrap_or_default().to_owned()
            }
        },
    };
    store::set_psp_state_at(
        conn,
        sub.id,
        event.created.max(applied_at.unwrap_or(event.created)),
    )
    .await?;
    let Some(next) = tollgate_status(&psp_status) else {
        return Ok(ApplyReport::applied(
            sub.tenant_id,
            format!(
                "PSP status {psp_status} leaves the subscription {}",
                sub.status
            ),
        ));
    };
    if sub.status == next {
        return Ok(ApplyReport::applied(
            sub.tenant_id,
            format!("already {next}"),
        ));
    }
    if sub.status == "canceled" {
        return Ok(ApplyReport::stale(
            sub.tenant_id,
            "the Tollgate subscription is canceled; a canceled subscription never comes back",
        ));
    }
    let from = std::mem::replace(&mut sub.status, next.to_owned());
    let kind = if next == "canceled" {
        sub.canceled_at = Some(event.created);
        "cancel"
    } else {
        "status"
    };
    subscriptions::save(conn, &mut sub).await?;
    subscriptions::record_changes(
        conn,
        &[NewSubscriptionChange {
            from_status: Some(from.clone()),
            to_status: Some(next.to_owned()),
            reason: Some(format!("{} {}", event.event_type, event.event_id)),
            ..NewSubscriptionChange::new(sub.id, kind, event.created)
        }],
    )
    .await?;
    crate::events::subscription_updated(
        ctx,
        conn,
        &sub,
        &mut PlanCache::default(),
        if next == "canceled" { "cancel" } else { next },
    )
    .await?;
    Ok(ApplyReport::applied(
        sub.tenant_id,
        format!("{from} → {next} (PSP {psp_status})"),
    ))
}

async fn payment_reported(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    event: &ReceivedEvent,
    resolved: Option<&Resolved>,
) -> Result<ApplyReport, TxError> {
    let obj = object(event);
    let is_intent = event.event_type.starts_with("payment_intent.");
    let outcome = if event.event_type.ends_with("succeeded") {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    let intent_id = if is_intent {
        text(obj, "id")
    } else {
        id_of(obj, "payment_intent")
    };
    let charge = if is_intent {
        id_of(obj, "latest_charge")
    } else {
        id_of(obj, "charge")
    };
    let amount = if is_intent {
        obj.get(if outcome == Outcome::Succeeded {
            "amount_received"
        } else {
            "amount"
        })
    } else {
        obj.get(if outcome == Outcome::Succeeded {
            "amount_paid"
        } else {
            "amount_due"
        })
    }
    .and_then(Value::as_i64)
    .filter(|a| *a > 0);
    let error = obj.get("last_payment_error");
    let (failure_code, failure_message) = match (outcome, error) {
        (Outcome::Failed, Some(e)) if e.is_object() => (
            text(e, "decline_code")
                .or_else(|| text(e, "code"))
                .map(str::to_owned),
            text(e, "message").map(str::to_owned),
        ),
        (Outcome::Failed, _) => (
            Some("payment_failed".to_owned()),
            Some(format!("{} reported by the PSP", event.event_type)),
        ),
        _ => (None, None),
    };

    // The invoice: metadata, then the stored PaymentIntent.
    let known = match intent_id {
        Some(pi) => store::payment_by_psp_id(conn, STRIPE, pi, false).await?,
        None => None,
    };
    let by_payment = match meta_uuid(obj, "tollgate_payment") {
        Some(id) => store::find_payment(conn, id, false).await?,
        None => None,
    };
    let invoice_id = meta_uuid(obj, "tollgate_invoice")
        .or(known.as_ref().map(|p| p.invoice_id))
        .or(by_payment.as_ref().map(|p| p.invoice_id));
    let Some(invoice_id) = invoice_id else {
        return Ok(ApplyReport::unmatched(
            "no Tollgate invoice for the payment",
        ));
    };
    let Some(invoice) = store::invoice_by_id(conn, invoice_id, true).await? else {
        return Ok(ApplyReport::unmatched(format!(
            "invoice {invoice_id} not found"
        )));
    };
    if meta_uuid(obj, "tollgate_tenant").is_some_and(|t| t != invoice.tenant_id) {
        return Ok(ApplyReport::unmatched(
            "tollgate_tenant does not own the invoice",
        ));
    }
    if invoice.status == "draft" {
        return Ok(ApplyReport::unmatched("the invoice is a draft"));
    }

    // The payment row, locked (after the invoice: the lock order everywhere).
    if known.as_ref().is_some_and(|p| p.invoice_id != invoice.id) {
        return Ok(ApplyReport::unmatched(
            "the PaymentIntent belongs to another invoice than its metadata names",
        ));
    }
    let mut payment = match (&known, &by_payment) {
        (Some(p), _) => store::find_payment(conn, p.id, true).await?,
        (None, Some(p)) if p.invoice_id == invoice.id => {
            store::find_payment(conn, p.id, true).await?
        }
        _ => None,
    };
    if payment.is_none() {
        // A payment Tollgate did not start (the customer paid on a hosted page): recorded so
        // refunds and reconciliation find it.
        let attempt = store::next_attempt(conn, invoice.id).await?;
        let mut row = payments::new_pending(
            &invoice,
            attempt,
            amount.unwrap_or(invoice.total_minor).max(1),
        );
        row.status = "processing".into();
        row.origin = "psp".into();
        row.psp_payment_id = intent_id.map(str::to_owned);
        row.idempotency_key = format!("psp-{}-{}", event.psp, intent_id.unwrap_or(&event.event_id));
        if let Some(currency) = text(obj, "currency") {
            row.currency = currency.to_uppercase();
        }
        store::insert_payment(conn, &row).await?;
        payment = store::find_payment(conn, row.id, true).await?;
    }
    let Some(mut payment) = payment else {
        return Err(BillingError::Corrupt("payment row vanished".into()).into());
    };

    let mut result = PaymentResult {
        outcome,
        at: event.created,
        psp_payment_id: intent_id.map(str::to_owned),
        charge_id: charge.map(str::to_owned),
        failure_code,
        failure_message,
    };
    let mut confirmed = false;
    if let Some(Resolved::Intent(pi)) = resolved {
        if Some(pi.id.as_str()) == payment.psp_payment_id.as_deref() {
            match payments::intent_outcome(pi, true) {
                Some(o) => {
                    result.outcome = o;
                    result.charge_id = pi.latest_charge.clone().or(result.charge_id);
                    confirmed = true;
                }
                None => {
                    store::save_payment(conn, &mut payment).await?;
                    return Ok(ApplyReport::stale(
                        invoice.tenant_id,
                        format!("the PSP says PaymentIntent {} is {}", pi.id, pi.status),
                    ));
                }
            }
        }
    }
    let applied =
        payments::apply_result(ctx, conn, &invoice, &mut payment, &result, confirmed).await?;
    let what = format!(
        "{} of payment {} (attempt {}) for invoice {}",
        result.outcome_name(),
        payment.id,
        payment.attempt,
        invoice.id
    );
    Ok(match applied {
        Applied::Changed => ApplyReport::applied(invoice.tenant_id, what),
        Applied::Unchanged => {
            ApplyReport::applied(invoice.tenant_id, format!("{what}: already recorded"))
        }
        Applied::Stale => ApplyReport::stale(
            invoice.tenant_id,
            format!("{what}: older than the state applied"),
        ),
        Applied::Refetch(id) => return Err(TxError::Refetch(Refetch::Intent(id))),
    })
}

async fn charge_refunded(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    event: &ReceivedEvent,
) -> Result<ApplyReport, TxError> {
    let charge = object(event);
    let mut payment: Option<PaymentRow> = match id_of(charge, "payment_intent") {
        Some(pi) => store::payment_by_psp_id(conn, STRIPE, pi, false).await?,
        None => None,
    };
    if payment.is_none() {
        if let Some(id) = text(charge, "id") {
            payment = store::payments_by_charge(conn, &[id.to_owned()])
                .await?
                .into_iter()
                .next();
        }
    }
    let Some(found) = payment else {
        return Ok(ApplyReport::unmatched("no Tollgate payment for the charge"));
    };
    let Some(mut payment) = store::find_payment(conn, found.id, true).await? else {
        return Ok(ApplyReport::unmatched("payment vanished"));
    };
    if let Some(refunds) = charge
        .get("refunds")
        .and_then(|r| r.get("data"))
        .and_then(Value::as_array)
    {
        for r in refunds {
            if let (Some(id), Some(status)) = (text(r, "id"), text(r, "status")) {
                store::set_refund_status_by_psp_id(conn, id, status).await?;
            }
        }
    }
    let total = charge
        .get("amount_refunded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let grew = payments::record_refunded(ctx, conn, &mut payment, total).await?;
    Ok(ApplyReport::applied(
        payment.tenant_id,
        if grew {
            format!(
                "payment {} refunded {} in total",
                payment.id, payment.refunded_minor
            )
        } else {
            format!("refunded total {total} already recorded")
        },
    ))
}

impl PaymentResult {
    fn outcome_name(&self) -> &'static str {
        match self.outcome {
            Outcome::Succeeded => "success",
            Outcome::Failed => "failure",
        }
    }
}

/// Where the consumer reads from.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// `{prefix}.billing.psp`.
    pub queue: String,
    pub queue_type: QueueType,
    pub queue_expires_ms: Option<u32>,
    pub prefetch: u16,
    /// Pause before requeueing a message that could not be applied.
    pub retry_delay: Duration,
}

/// The consumer: declares its durable queue (bound to `psp.#` on the events exchange,
/// dead-lettering to `{prefix}.dlx`), applies each event and acks after the commit;
/// undecodable messages are rejected to the dead-letter queue; a failure to apply (database
/// or PSP down) requeues the message after `retry_delay`. Up to `prefetch` events are applied
/// at once, each in its own transaction: application tolerates any order (see the module
/// docs), and two events about one object serialize on its row locks; one that fails (a
/// deadlock, say) is requeued and applied again. Reconnects with the broker. On cancel it
/// stops taking messages and finishes the ones it holds.
pub(crate) async fn consume(
    ctx: BillingContext,
    broker: Broker,
    settings: ConsumerSettings,
    cancel: CancellationToken,
) {
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    while !cancel.is_cancelled() {
        if !broker.is_ready() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = pause(200) => continue,
            }
        }
        let subscribed = async {
            let channel = broker.open_channel().await?;
            channel
                .basic_qos(settings.prefetch, BasicQosOptions::default())
                .await?;
            broker
                .topology()
                .declare_event_queue(
                    &channel,
                    &settings.queue,
                    &["psp.#"],
                    settings.queue_type,
                    settings.queue_expires_ms,
                )
                .await?;
            let consumer = channel
                .basic_consume(
                    settings.queue.as_str().into(),
                    format!("billing-psp-{}", Uuid::new_v4().simple()).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, tollgate_messaging::MessagingError>((channel, consumer))
        }
        .await;
        let (channel, mut consumer) = match subscribed {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "cannot consume PSP events; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = pause(500) => continue,
                }
            }
        };
        tracing::info!(queue = %settings.queue, "consuming PSP events");
        // The prefetch bounds how many are in flight: the broker sends no more unacked ones.
        let in_flight = tokio_util::task::TaskTracker::new();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => {
                    let tag = consumer.tag();
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    in_flight.close();
                    in_flight.wait().await;
                    return;
                }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let (ctx, settings, cancel) = (ctx.clone(), settings.clone(), cancel.clone());
                    in_flight
                        .spawn(async move { handle(&ctx, delivery, &settings, &cancel).await });
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "PSP event consumer error; reconnecting");
                    break;
                }
                None => break,
            }
        }
        pause(100).await;
    }
}

async fn handle(
    ctx: &BillingContext,
    delivery: lapin::message::Delivery,
    settings: &ConsumerSettings,
    cancel: &CancellationToken,
) {
    let settled = match serde_json::from_slice::<Envelope<PspEvent>>(&delivery.data) {
        Err(error) => {
            tracing::error!(%error, "undecodable PSP event message; dead-lettering");
            delivery.reject(BasicRejectOptions { requeue: false }).await
        }
        Ok(envelope) => {
            let event = ReceivedEvent::from(envelope.data);
            let span = tracing::info_span!(
                "psp_event",
                psp = %event.psp,
                event_id = %event.event_id,
                event_type = %event.event_type
            );
            match apply(ctx, &event).instrument(span).await {
                Ok(report) => {
                    tracing::info!(
                        outcome = report.outcome,
                        tenant = ?report.tenant,
                        detail = report.detail.as_deref().unwrap_or(""),
                        "PSP event applied"
                    );
                    delivery.ack(BasicAckOptions::default()).await
                }
                Err(error) => {
                    tracing::warn!(%error, "PSP event not applied; requeueing");
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(settings.retry_delay) => {}
                    }
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await
                }
            }
        }
    };
    if let Err(error) = settled {
        // The channel is gone: RabbitMQ redelivers the message, which is safe.
        tracing::warn!(%error, "could not settle a PSP event delivery");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_statuses_map_onto_tollgate_statuses() {
        for (stripe, tollgate) in [
            ("active", Some("active")),
            ("trialing", Some("trialing")),
            ("past_due", Some("past_due")),
            ("unpaid", Some("suspended")),
            ("paused", Some("suspended")),
            ("canceled", Some("canceled")),
            ("incomplete", None),
            ("incomplete_expired", None),
            ("something_new", None),
        ] {
            assert_eq!(tollgate_status(stripe), tollgate, "{stripe}");
        }
    }

    #[test]
    fn a_subscription_event_applies_only_when_newer() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).expect("valid");
        assert_eq!(newer_than(None, t(0)), Some(true));
        assert_eq!(newer_than(Some(t(5)), t(6)), Some(true));
        assert_eq!(newer_than(Some(t(5)), t(4)), Some(false));
        assert_eq!(newer_than(Some(t(5)), t(5)), None);
    }

    #[test]
    fn metadata_ids_parse_plain_or_prefixed() {
        let id = Uuid::now_v7();
        let obj = serde_json::json!({"metadata": {
            "a": id.to_string(),
            "b": tollgate_domain::InvoiceId::from_uuid(id).to_string(),
            "c": "garbage",
            "d": "inv_123",
        }});
        assert_eq!(meta_uuid(&obj, "a"), Some(id));
        assert_eq!(meta_uuid(&obj, "b"), Some(id));
        assert_eq!(meta_uuid(&obj, "c"), None);
        assert_eq!(meta_uuid(&obj, "d"), None);
        assert_eq!(meta_uuid(&obj, "missing"), None);
    }

    #[test]
    fn expandable_fields_read_as_ids() {
        let v = serde_json::json!({"a": "pi_1", "b": {"id": "pi_2"}, "c": null, "d": ""});
        assert_eq!(id_of(&v, "a"), Some("pi_1"));
        assert_eq!(id_of(&v, "b"), Some("pi_2"));
        assert_eq!(id_of(&v, "c"), None);
        assert_eq!(id_of(&v, "d"), None);
    }
}
