//! Dunning (issue 5 "Dunning"; SPEC "Billing": on failed payment retry on a schedule, notify,
//! suspend after the last failure, resume on payment). One case per invoice, stored with its
//! scheduled retries, so a schedule survives restarts: it is rows, not timers, and [`run`]
//! executes whatever is due at its clock.
//!
//! ```text
//! first failed payment ──► open: retries at first_failed_at + each `dunning.retry_schedule_secs`
//!                               offset (default 1 h, 24 h, 72 h); subscription → past_due
//! open ── a retry fails, retries left ──► open
//! open ── the last retry fails ──────────► exhausted; subscription → suspended
//! open | exhausted ── a payment succeeds ─► recovered; retries not yet run are canceled;
//!                                           subscription → active (when no other case holds it)
//! open | exhausted ── the invoice is voided ► canceled (likewise)
//! ```
//! A subscription's status follows its cases ([`status_for_cases`]): any exhausted case →
//! `suspended`, else any open case → `past_due`, else `active` again. A subscription that
//! mirrors a PSP subscription (`psp_subscription_id`) follows that subscription's events
//! instead (`psp_events`): there the PSP runs the dunning.
//!
//! Every step writes its events (`payment.failed`, `subscription.updated`, …) through the
//! outbox in the transaction of the change, and records each as a notification
//! (`dunning_notifications`): the tenant receives them as webhooks and tells its customer.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use tollgate_domain::BillingEvent;
use tollgate_storage::invoices::InvoiceRow;
use tollgate_storage::payments::{
    self as store, DunningAttemptRow, DunningCaseRow, NewDunningNotification, PaymentRow,
};
use tollgate_storage::subscriptions::{self, NewSubscriptionChange};
use tollgate_storage::{AsyncPgConnection, StorageError};
use uuid::Uuid;

use crate::run::PlanCache;
use crate::{BillingContext, BillingError};

/// The retry instants of a case whose first failure was at `first_failed_at`: one per offset
/// of `schedule` (offsets count from the first failure, not from the previous retry).
pub fn retry_times(first_failed_at: DateTime<Utc>, schedule: &[Duration]) -> Vec<DateTime<Utc>> {
    schedule.iter().map(|d| first_failed_at + *d).collect()
}

/// The status a subscription in `current` status should have given the statuses of its cases
/// still in force (`open`, `exhausted`); None when it should stay as it is. A canceled
/// subscription never changes; a trialing one only leaves its trial through a case.
pub fn status_for_cases(current: &str, live_cases: &[String]) -> Option<&'static str> {
    let target = if live_cases.iter().any(|s| s == "exhausted") {
        "suspended"
    } else if live_cases.iter().any(|s| s == "open") {
        "past_due"
    } else {
        "active"
    };
    match current {
        "canceled" => None,
        "trialing" | "active" if target == "active" => None,
        c if c == target => None,
        _ => Some(target),
    }
}

/// The notification kinds recorded in `dunning_notifications`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    PaymentFailed,
    RetryFailed,
    Suspended,
    Recovered,
}

impl Notice {
    fn as_str(self) -> &'static str {
        match self {
            Self::PaymentFailed => "payment_failed",
            Self::RetryFailed => "retry_failed",
            Self::Suspended => "suspended",
            Self::Recovered => "recovered",
        }
    }
}

fn notification(
    case: &DunningCaseRow,
    kind: Notice,
    event_type: &str,
    message_id: Uuid,
    attempt: Option<i32>,
) -> NewDunningNotification {
    NewDunningNotification {
        case_id: case.id,
        tenant_id: case.tenant_id,
        kind: kind.as_str().to_owned(),
        event_type: event_type.to_owned(),
        message_id,
        attempt,
    }
}

/// A payment of `invoice` failed at `at` (the caller holds the invoice and payment locks and
/// has recorded the failure on the payment): opens the invoice's case with its retries, or
/// counts a failed retry (exhausting the case after the last), announces `payment.failed`
/// and moves the subscription.
pub(crate) async fn on_failure(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
    payment: &PaymentRow,
    at: DateTime<Utc>,
) -> Result<(), BillingError> {
    let now = Utc::now();
    let (case, next_retry_at, kind) = match store::case_of_invoice(conn, invoice.id, true).await? {
        None => {
            let times = retry_times(at, &ctx.payments.retry_schedule);
            let case = DunningCaseRow {
                id: Uuid::now_v7(),
                tenant_id: invoice.tenant_id,
                invoice_id: invoice.id,
                account_id: invoice.account_id,
                subscription_id: invoice.subscription_id,
                status: if times.is_empty() {
                    "exhausted"
                } else {
                    "open"
                }
                .into(),
                first_failed_at: at,
                failures: 1,
                last_failure_code: payment.failure_code.clone(),
                closed_at: None,
                created_at: now,
                updated_at: now,
            };
            let attempts: Vec<DunningAttemptRow> = times
                .iter()
                .enumerate()
                .map(|(i, t)| DunningAttemptRow {
                    id: Uuid::now_v7(),
                    case_id: case.id,
                    seq: i as i32 + 1,
                    scheduled_at: *t,
                    status: "scheduled".into(),
                    payment_id: None,
                    executed_at: None,
                    error: None,
                    created_at: now,
                    updated_at: now,
                })
                .collect();
            store::open_case(conn, &case, &attempts).await?;
            let kind = if times.is_empty() {
                Notice::Suspended
            } else {
                Notice::PaymentFailed
            };
            (case, <[_]>::first(&times).copied(), kind)
        }
        Some(mut case) => {
            let live = matches!(case.status.as_str(), "open" | "exhausted");
            if live {
                case.failures += 1;
                case.last_failure_code = payment.failure_code.clone();
            }
            if let Some(mut attempt) = store::attempt_of_payment(conn, payment.id, true).await? {
                attempt.status = "failed".into();
                attempt.executed_at = attempt.executed_at.or(Some(at));
                attempt.error = payment
                    .failure_code
                    .clone()
                    .or_else(|| payment.failure_message.clone());
                store::save_attempt(conn, &mut attempt).await?;
            }
            let mut kind = Notice::RetryFailed;
            if case.status == "open" {
                let counts = store::attempt_counts(conn, case.id).await?;
                if counts.scheduled == 0 && counts.running == 0 {
                    case.status = "exhausted".into();
                    kind = Notice::Suspended;
                }
            }
            if live {
                store::save_case(conn, &mut case).await?;
            }
            let next = store::attempts_of_case(conn, case.id)
                .await?
                .into_iter()
                .find(|a| a.status == "scheduled")
                .map(|a| a.scheduled_at);
            (case, next, kind)
        }
    };
    let final_failure = case.status == "exhausted";
    let message = crate::events::enqueue_with_id(
        ctx,
        conn,
        invoice.tenant_id,
        BillingEvent::PaymentFailedV1 {
            payment_id: payment.id,
            invoice_id: invoice.id,
            account_id: invoice.account_id,
            subscription_id: invoice.subscription_id,
            currency: payment.currency.clone(),
            amount_minor: payment.amount_minor,
            attempt: payment.attempt,
            failure_code: payment.failure_code.clone(),
            failure_message: payment.failure_message.clone(),
            failed_at: at,
            next_retry_at,
            final_failure,
        },
    )
    .await?;
    let mut notes = vec![notification(
        &case,
        kind,
        "payment.failed",
        message,
        Some(payment.attempt),
    )];
    if let Some(sub) = invoice.subscription_id {
        if let Some(message) = sync_subscription(ctx, conn, invoice.tenant_id, sub, at).await? {
            notes.push(notification(
                &case,
                kind,
                "subscription.updated",
                message,
                Some(payment.attempt),
            ));
        }
    }
    store::record_notifications(conn, &notes).await?;
    Ok(())
}

/// A payment of `invoice` succeeded at `at` (the caller marked the invoice paid): the case, if
/// one is in force, is recovered, its retries not yet run are canceled, and the subscription
/// moves back (to `active` when no other case holds it). `announced` is the message id of the
/// `payment.succeeded` event (recorded as the recovery notification).
pub(crate) async fn on_success(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
    payment: &PaymentRow,
    at: DateTime<Utc>,
    announced: Uuid,
) -> Result<(), BillingError> {
    if let Some(mut attempt) = store::attempt_of_payment(conn, payment.id, true).await? {
        attempt.status = "succeeded".into();
        attempt.executed_at = attempt.executed_at.or(Some(at));
        store::save_attempt(conn, &mut attempt).await?;
    }
    let Some(mut case) = store::case_of_invoice(conn, invoice.id, true).await? else {
        return Ok(());
    };
    if !matches!(case.status.as_str(), "open" | "exhausted") {
        return Ok(());
    }
    case.status = "recovered".into();
    case.closed_at = Some(at);
    store::save_case(conn, &mut case).await?;
    let canceled = store::cancel_scheduled(conn, case.id).await?;
    tracing::info!(invoice = %invoice.id, canceled, "dunning case recovered");
    let mut notes = vec![notification(
        &case,
        Notice::Recovered,
        "payment.succeeded",
        announced,
        Some(payment.attempt),
    )];
    if let Some(sub) = invoice.subscription_id {
        if let Some(message) = sync_subscription(ctx, conn, invoice.tenant_id, sub, at).await? {
            notes.push(notification(
                &case,
                Notice::Recovered,
                "subscription.updated",
                message,
                Some(payment.attempt),
            ));
        }
    }
    store::record_notifications(conn, &notes).await?;
    Ok(())
}

/// The invoice was voided: its case (if in force) is canceled with its scheduled retries, and
/// the subscription moves accordingly.
pub(crate) async fn on_void(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
    at: DateTime<Utc>,
) -> Result<(), BillingError> {
    let Some(mut case) = store::case_of_invoice(conn, invoice.id, true).await? else {
        return Ok(());
    };
    if !matches!(case.status.as_str(), "open" | "exhausted") {
        return Ok(());
    }
    case.status = "canceled".into();
    case.closed_at = Some(at);
    store::save_case(conn, &mut case).await?;
    store::cancel_scheduled(conn, case.id).await?;
    if let Some(sub) = invoice.subscription_id {
        sync_subscription(ctx, conn, invoice.tenant_id, sub, at).await?;
    }
    Ok(())
}

/// Moves the subscription to the status its cases call for ([`status_for_cases`]), stamping
/// `updated_at` (intake's entitlement projection reads changes by it) with a history entry
/// and a `subscription.updated` event (`change` = the new status); returns the event's message
/// id when it changed. Subscriptions that mirror a PSP subscription are left to its events.
pub(crate) async fn sync_subscription(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    subscription_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<Uuid>, BillingError> {
    let Some(mut sub) = subscriptions::find(conn, tenant_id, subscription_id, true).await? else {
        return Ok(None);
    };
    let linked = store::subscription_psp(conn, sub.id)
        .await?
        .is_some_and(|l| l.psp_subscription_id.is_some());
    if linked {
        return Ok(None);
    }
    let live = store::live_case_statuses(conn, sub.id).await?;
    let Some(next) = status_for_cases(&sub.status, &live) else {
        return Ok(None);
    };
    let from = std::mem::replace(&mut sub.status, next.to_owned());
    subscriptions::save(conn, &mut sub).await?;
    subscriptions::record_changes(
        conn,
        &[NewSubscriptionChange {
            from_status: Some(from),
            to_status: Some(next.to_owned()),
            reason: Some("dunning".into()),
            ..NewSubscriptionChange::new(sub.id, "status", at)
        }],
    )
    .await?;
    let message =
        crate::events::subscription_updated(ctx, conn, &sub, &mut PlanCache::default(), next)
            .await?;
    Ok(Some(message))
}

/// What one dunning run does.
#[derive(Debug, Clone)]
pub struct DunningRunOptions {
    /// One tenant, or all.
    pub tenant: Option<Uuid>,
    /// The run's clock: retries scheduled at or before it run, and their outcomes are
    /// recorded at it (a test clock in tests and `tollgatectl dunning run --as-of`).
    pub as_of: DateTime<Utc>,
    /// Most retries taken per run.
    pub batch: i64,
}

/// What a dunning run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DunningReport {
    /// Retries that were due.
    pub due: usize,
    /// Retries sent to the PSP (or failed at once for want of a payment method).
    pub attempted: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Sent but not decided yet (the outcome comes by event), or the PSP was unreachable (the
    /// collector sends it again with the same idempotency key).
    pub pending: usize,
    /// Left for a later run: a payment of the invoice is still in flight.
    pub deferred: usize,
    /// Dropped: the invoice is paid or void, or nothing is left to collect.
    pub canceled: usize,
}

#[derive(QueryableByName)]
struct DueRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    attempt_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    invoice_id: Uuid,
}

enum Start {
    Payment(Box<PaymentRow>),
    Deferred,
    Canceled,
    Skipped,
}

/// Runs the retries due at `opts.as_of`: each gets a new payment (attempt n, idempotency key
/// `tollgate-inv-{invoice}-attempt-{n}`) sent to the PSP at once; its outcome moves the case
/// (see the module docs). A retry whose invoice still has a payment in flight waits for a
/// later run, so an invoice is never charged twice at once. Safe to run concurrently: each
/// retry is taken under its invoice's and its own row lock.
pub async fn run(
    ctx: &BillingContext,
    opts: &DunningRunOptions,
) -> Result<DunningReport, BillingError> {
    let mut report = DunningReport::default();
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    // Connections are held per step, never across a PSP call.
    let due: Vec<DueRow> = diesel::sql_query(
        "SELECT a.id AS attempt_id, c.invoice_id FROM dunning_attempts a \
         JOIN dunning_cases c ON c.id = a.case_id \
         WHERE a.status = 'scheduled' AND a.scheduled_at <= $2 AND c.status = 'open' \
           AND ($1::uuid IS NULL OR c.tenant_id = $1) \
         ORDER BY a.scheduled_at, a.id LIMIT $3",
    )
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Uuid>, _>(opts.tenant)
    .bind::<diesel::sql_types::Timestamptz, _>(opts.as_of)
    .bind::<diesel::sql_types::Int8, _>(opts.batch)
    .load(&mut conn)
    .await
    .map_err(StorageError::from)?;
    drop(conn);
    report.due = due.len();
    for row in due {
        let started = {
            let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
            start_retry(ctx, &mut conn, row.attempt_id, row.invoice_id, opts.as_of).await?
        };
        match started {
            Start::Payment(payment) => {
                report.attempted += 1;
                match crate::payments::collect(ctx, *payment, opts.as_of).await? {
                    crate::payments::Collected::Succeeded => report.succeeded += 1,
                    crate::payments::Collected::Failed => report.failed += 1,
                    crate::payments::Collected::Pending => report.pending += 1,
                    crate::payments::Collected::Skipped => report.canceled += 1,
                }
            }
            Start::Deferred => report.deferred += 1,
            Start::Canceled => report.canceled += 1,
            Start::Skipped => {}
        }
    }
    Ok(report)
}

/// Takes one due retry: under the invoice's lock, writes its payment and marks it running.
async fn start_retry(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    attempt_id: Uuid,
    invoice_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Start, BillingError> {
    let lease = Duration::seconds(ctx.payments.collector_lease_secs);
    conn.transaction(async move |conn| {
        let Some(invoice) = store::invoice_by_id(conn, invoice_id, true).await? else {
            return Ok(Start::Skipped);
        };
        let attempt = tollgate_storage::schema_payments::dunning_attempts::table
            .find(attempt_id)
            .select(DunningAttemptRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()
            .map_err(StorageError::from)?;
        let Some(mut attempt) = attempt.filter(|a| a.status == "scheduled") else {
            return Ok(Start::Skipped);
        };
        let Some(case) = store::find_case(conn, attempt.case_id, true).await? else {
            return Ok(Start::Skipped);
        };
        let collectable = matches!(invoice.status.as_str(), "finalized" | "uncollectible");
        let amount = crate::invoicing::amount_due(conn, &invoice).await?;
        if case.status != "open" || !collectable || amount <= 0 {
            attempt.status = "canceled".into();
            attempt.error = Some(if !collectable {
                format!("invoice is {}", invoice.status)
            } else if amount <= 0 {
                "nothing left to collect".into()
            } else {
                format!("case is {}", case.status)
            });
            store::save_attempt(conn, &mut attempt).await?;
            return Ok(Start::Canceled);
        }
        if store::has_payment_in_flight(conn, invoice.id).await? {
            return Ok(Start::Deferred);
        }
        let n = store::next_attempt(conn, invoice.id).await?;
        let now = Utc::now();
        let payment = PaymentRow {
            id: Uuid::now_v7(),
            tenant_id: invoice.tenant_id,
            invoice_id: invoice.id,
            account_id: invoice.account_id,
            attempt: n,
            psp: crate::payments::STRIPE.into(),
            status: "pending".into(),
            amount_minor: amount,
            currency: invoice.currency.clone(),
            idempotency_key: crate::payments::idempotency_key(invoice.id, n),
            origin: "tollgate".into(),
            psp_payment_id: None,
            psp_charge_id: None,
            failure_code: None,
            failure_message: None,
            refunded_minor: 0,
            // This run sends it now; the collector takes it only if the run dies first.
            next_attempt_at: now + lease,
            status_at: None,
            created_at: now,
            updated_at: now,
            first_sent_at: None,
        };
        store::insert_payment(conn, &payment).await?;
        attempt.status = "running".into();
        attempt.payment_id = Some(payment.id);
        attempt.executed_at = Some(as_of);
        store::save_attempt(conn, &mut attempt).await?;
        Ok(Start::Payment(Box::new(payment)))
    })
    .await
}

/// A case as the API shows it, with its retries and notifications.
#[derive(Debug, Clone, Serialize)]
pub struct CaseView {
    pub id: Uuid,
    pub invoice: String,
    pub subscription: Option<String>,
    pub status: String,
    pub first_failed_at: DateTime<Utc>,
    pub failures: i32,
    pub last_failure_code: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptView>,
    pub notifications: Vec<NotificationView>,
}

/// A scheduled retry.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub seq: i32,
    pub scheduled_at: DateTime<Utc>,
    pub status: String,
    pub payment_id: Option<Uuid>,
    pub executed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// A notification sent.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    pub kind: String,
    pub event_type: String,
    pub message_id: Uuid,
    pub attempt: Option<i32>,
    pub created_at: DateTime<Utc>,
}

impl CaseView {
    /// Reads the case's retries and notifications.
    pub async fn build(
        conn: &mut AsyncPgConnection,
        case: DunningCaseRow,
    ) -> Result<Self, BillingError> {
        let attempts = store::attempts_of_case(conn, case.id).await?;
        let notes = store::notifications_of_case(conn, case.id).await?;
        Ok(Self {
            id: case.id,
            invoice: tollgate_domain::InvoiceId::from_uuid(case.invoice_id).to_string(),
            subscription: case
                .subscription_id
                .map(|s| tollgate_domain::SubscriptionId::from_uuid(s).to_string()),
            status: case.status,
            first_failed_at: case.first_failed_at,
            failures: case.failures,
            last_failure_code: case.last_failure_code,
            closed_at: case.closed_at,
            attempts: attempts
                .into_iter()
                .map(|a| AttemptView {
                    seq: a.seq,
                    scheduled_at: a.scheduled_at,
                    status: a.status,
                    payment_id: a.payment_id,
                    executed_at: a.executed_at,
                    error: a.error,
                })
                .collect(),
            notifications: notes
                .into_iter()
                .map(|n| NotificationView {
                    kind: n.kind,
                    event_type: n.event_type,
                    message_id: n.message_id,
                    attempt: n.attempt,
                    created_at: n.created_at,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).expect("valid")
    }

    #[test]
    fn retries_count_from_the_first_failure() {
        let schedule = [Duration::hours(1), Duration::hours(24), Duration::hours(72)];
        assert_eq!(retry_times(t(0), &schedule), vec![t(1), t(24), t(72)]);
        assert!(retry_times(t(0), &[]).is_empty());
    }

    #[test]
    fn subscription_status_follows_the_cases_in_force() {
        let cases = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let table: &[(&str, &[&str], Option<&str>)] = &[
            // A first failure makes an active or trialing subscription past due.
            ("active", &["open"], Some("past_due")),
            ("trialing", &["open"], Some("past_due")),
            ("past_due", &["open"], None),
            // The last retry failed.
            ("past_due", &["exhausted"], Some("suspended")),
            ("active", &["exhausted"], Some("suspended")),
            // One exhausted case suspends even while another is still open.
            ("past_due", &["open", "exhausted"], Some("suspended")),
            ("suspended", &["exhausted"], None),
            // Paid: back to active, unless another case still holds it.
            ("suspended", &[], Some("active")),
            ("past_due", &[], Some("active")),
            ("suspended", &["open"], Some("past_due")),
            ("active", &[], None),
            ("trialing", &[], None),
            // Canceled is final.
            ("canceled", &["open"], None),
            ("canceled", &[], None),
        ];
        for (current, live, want) in table {
            assert_eq!(
                status_for_cases(current, &cases(live)),
                *want,
                "{current} with {live:?}"
            );
        }
    }
}
