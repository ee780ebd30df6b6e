//! Payments (issue 5): the PSP customer of each account, payment attempts per invoice,
//! refunds, the record of PSP events billing applied (once each), dunning cases with their
//! scheduled retries and notifications, and the payment columns of subscriptions and invoices.
//! The rules (ordering, dunning, what an event means) live in the billing service; this module
//! reads and writes rows. Money is integer minor units of the row's currency.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int4, Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::invoices::InvoiceRow;
use crate::models::AccountRow;
use crate::schema::{accounts, invoices};
use crate::schema_payments::{
    dunning_attempts, dunning_cases, dunning_notifications, invoice_payment_state, payment_refunds,
    payments, psp_customers, psp_event_applications, subscription_psp,
};
use crate::StorageError;

// ---------------------------------------------------------------------------------------------
// PSP customers

/// The PSP customer of an account.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = psp_customers)]
pub struct PspCustomerRow {
    pub account_id: Uuid,
    /// `stripe` or `razorpay`.
    pub psp: String,
    pub tenant_id: Uuid,
    /// The PSP's customer id (`cus_…`).
    pub customer_id: String,
    /// The payment method off-session payments are confirmed with (`pm_…`), when known.
    pub default_payment_method: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The account's customer at `psp`, if any.
pub async fn find_customer(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
    psp: &str,
) -> Result<Option<PspCustomerRow>, StorageError> {
    Ok(psp_customers::table
        .find((account_id, psp))
        .select(PspCustomerRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The customer row of a PSP customer id, if Tollgate knows it.
pub async fn customer_by_psp_id(
    conn: &mut AsyncPgConnection,
    psp: &str,
    customer_id: &str,
) -> Result<Option<PspCustomerRow>, StorageError> {
    Ok(psp_customers::table
        .filter(psp_customers::psp.eq(psp))
        .filter(psp_customers::customer_id.eq(customer_id))
        .select(PspCustomerRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Inserts the row unless the account already has a customer at that PSP; returns the row
/// in force afterwards (the existing one when there was one).
pub async fn insert_customer_if_absent(
    conn: &mut AsyncPgConnection,
    row: &PspCustomerRow,
) -> Result<PspCustomerRow, StorageError> {
    diesel::insert_into(psp_customers::table)
        .values(row)
        .on_conflict((psp_customers::account_id, psp_customers::psp))
        .do_nothing()
        .execute(conn)
        .await?;
    find_customer(conn, row.account_id, &row.psp)
        .await?
        .ok_or(StorageError::NotFound)
}

/// Links `row.customer_id` to the account (replacing an earlier customer) and sets the
/// default payment method when `row` has one (keeping the earlier one otherwise). Errors:
/// [`StorageError::UniqueViolation`] when that customer id belongs to another account.
pub async fn link_customer(
    conn: &mut AsyncPgConnection,
    row: &PspCustomerRow,
) -> Result<PspCustomerRow, StorageError> {
    use diesel::upsert::excluded;
    Ok(diesel::insert_into(psp_customers::table)
        .values(row)
        .on_conflict((psp_customers::account_id, psp_customers::psp))
        .do_update()
        .set((
            psp_customers::customer_id.eq(excluded(psp_customers::customer_id)),
            psp_customers::default_payment_method.eq(diesel::dsl::sql::<Nullable<Text>>(
                "COALESCE(excluded.default_payment_method, psp_customers.default_payment_method)",
            )),
            psp_customers::updated_at.eq(Utc::now()),
        ))
        .returning(PspCustomerRow::as_returning())
        .get_result(conn)
        .await?)
}

/// An account by id, whatever its tenant (PSP events name accounts by id).
pub async fn account_by_id(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<AccountRow>, StorageError> {
    Ok(accounts::table
        .find(id)
        .select(AccountRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

// ---------------------------------------------------------------------------------------------
// Payments

/// One attempt to collect an invoice.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(table_name = payments, treat_none_as_null = true)]
pub struct PaymentRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub invoice_id: Uuid,
    pub account_id: Uuid,
    /// 1 for the first attempt, then one more per retry (or payment the PSP reported).
    pub attempt: i32,
    pub psp: String,
    /// `pending`, `processing`, `succeeded`, `failed`, `canceled` or `errored`.
    pub status: String,
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// Sent as the PSP's `Idempotency-Key` (`tollgate-inv-{invoice}-attempt-{n}`, with a
    /// `-k<unix seconds>` suffix once [`rekey_payment`] replaced an expired one). Written on
    /// insert and by [`rekey_payment`] only, never by [`save_payment`].
    #[diesel(skip_update)]
    pub idempotency_key: String,
    /// `tollgate` or `psp`.
    pub origin: String,
    /// The PSP's payment id (`pi_…`).
    pub psp_payment_id: Option<String>,
    /// The PSP's charge id (`ch_…`), matched against payout balance transactions.
    pub psp_charge_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// Refunded so far (the PSP's running total), at most `amount_minor`.
    pub refunded_minor: i64,
    pub next_attempt_at: DateTime<Utc>,
    /// When the PSP reported the current status.
    pub status_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the payment was first sent to the PSP with its current idempotency key (NULL
    /// before). Written by [`renew_lease`] and [`rekey_payment`] only, never by
    /// [`save_payment`].
    #[diesel(skip_update)]
    pub first_sent_at: Option<DateTime<Utc>>,
}

/// Inserts a payment unless one with its idempotency key or (invoice, attempt) exists;
/// returns whether it was inserted.
pub async fn insert_payment(
    conn: &mut AsyncPgConnection,
    row: &PaymentRow,
) -> Result<bool, StorageError> {
    let n = diesel::insert_into(payments::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Writes every field of `row` (stamping `updated_at`).
pub async fn save_payment(
    conn: &mut AsyncPgConnection,
    row: &mut PaymentRow,
) -> Result<(), StorageError> {
    row.updated_at = Utc::now();
    diesel::update(payments::table.find(row.id))
        .set(&*row)
        .execute(conn)
        .await?;
    Ok(())
}

/// A payment by id; `lock` takes a row lock (inside a transaction).
pub async fn find_payment(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<PaymentRow>, StorageError> {
    let query = payments::table.find(id).select(PaymentRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    })
}

/// The payment with this PSP payment id (`pi_…`), locked when `lock`.
pub async fn payment_by_psp_id(
    conn: &mut AsyncPgConnection,
    psp: &str,
    psp_payment_id: &str,
    lock: bool,
) -> Result<Option<PaymentRow>, StorageError> {
    let query = payments::table
        .filter(payments::psp.eq(psp))
        .filter(payments::psp_payment_id.eq(psp_payment_id))
        .select(PaymentRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    })
}

/// The payments whose charge ids are among `charge_ids`.
pub async fn payments_by_charge(
    conn: &mut AsyncPgConnection,
    charge_ids: &[String],
) -> Result<Vec<PaymentRow>, StorageError> {
    Ok(payments::table
        .filter(payments::psp_charge_id.eq_any(charge_ids))
        .select(PaymentRow::as_select())
        .load(conn)
        .await?)
}

/// An invoice's payments, first attempt first.
pub async fn payments_of_invoice(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
) -> Result<Vec<PaymentRow>, StorageError> {
    Ok(payments::table
        .filter(payments::invoice_id.eq(invoice_id))
        .order(payments::attempt.asc())
        .select(PaymentRow::as_select())
        .load(conn)
        .await?)
}

/// The next attempt number of an invoice (1 when it has no payment yet).
pub async fn next_attempt(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
) -> Result<i32, StorageError> {
    let max: Option<i32> = payments::table
        .filter(payments::invoice_id.eq(invoice_id))
        .select(diesel::dsl::max(payments::attempt))
        .first(conn)
        .await?;
    Ok(max.unwrap_or(0) + 1)
}

/// Claims up to `limit` pending payments due at `now` (any tenant) and leases them: their
/// `next_attempt_at` moves to `now + lease_secs`, so a collector that dies mid-call leaves
/// them to be claimed again after the lease. One statement (its own transaction); `SKIP
/// LOCKED` keeps concurrent collectors apart.
pub async fn claim_pending(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    limit: i64,
    lease_secs: i64,
) -> Result<Vec<PaymentRow>, StorageError> {
    Ok(diesel::sql_query(
        "UPDATE payments p SET next_attempt_at = $1 + make_interval(secs => $3), updated_at = now() \
         WHERE p.id IN (SELECT id FROM payments WHERE status = 'pending' AND next_attempt_at <= $1 \
                        ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING p.*",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Int8, _>(limit)
    .bind::<diesel::sql_types::Double, _>(lease_secs as f64)
    .load(conn)
    .await?)
}

/// A lease [`renew_lease`] renewed: the payment is the caller's to send until
/// `next_attempt_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendLease {
    /// The lease's end (also what [`rekey_payment`] checks the lease with).
    pub next_attempt_at: DateTime<Utc>,
    /// When the payment was first sent with its current idempotency key: this send's `now`
    /// when it is the first.
    pub first_sent_at: DateTime<Utc>,
}

/// Renews the lease on a pending payment just before it is sent to the PSP, if the caller
/// still holds it: the row must be `pending` with the `next_attempt_at` the caller claimed it
/// with (`held`). Moves it to `now + lease_secs` and stamps `first_sent_at` (= `now`) when
/// this is the key's first send; returns `None` (nothing written) when the payment was decided
/// or taken by another collector meanwhile.
pub async fn renew_lease(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    held: DateTime<Utc>,
    now: DateTime<Utc>,
    lease_secs: i64,
) -> Result<Option<SendLease>, StorageError> {
    let renewed: Option<(DateTime<Utc>, Option<DateTime<Utc>>)> =
        diesel::update(payments::table)
            .filter(payments::id.eq(id))
            .filter(payments::status.eq("pending"))
            .filter(payments::next_attempt_at.eq(held))
            .set((
                payments::next_attempt_at.eq(now + chrono::Duration::seconds(lease_secs)),
                payments::updated_at.eq(now),
                payments::first_sent_at.eq(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<Timestamptz>,
                >("coalesce(first_sent_at, ")
                .bind::<Timestamptz, _>(now)
                .sql(")")),
            ))
            .returning((payments::next_attempt_at, payments::first_sent_at))
            .get_result(conn)
            .await
            .optional()?;
    Ok(renewed.map(|(next_attempt_at, first_sent_at)| SendLease {
        next_attempt_at,
        first_sent_at: first_sent_at.unwrap_or(now),
    }))
}

/// Gives a pending payment a new idempotency key (`key`) whose first send is `now`, if the
/// caller still holds `lease` on it; returns whether it did. For a payment whose old key
/// Stripe may have forgotten and which, Stripe's list shows, never created a PaymentIntent
/// (billing's `payments::collect`). Errors: the key is taken ([`StorageError::Query`]).
pub async fn rekey_payment(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    lease: &SendLease,
    key: &str,
    now: DateTime<Utc>,
) -> Result<bool, StorageError> {
    let n = diesel::update(payments::table)
        .filter(payments::id.eq(id))
        .filter(payments::status.eq("pending"))
        .filter(payments::next_attempt_at.eq(lease.next_attempt_at))
        .set((
            payments::idempotency_key.eq(key),
            payments::first_sent_at.eq(now),
            payments::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Whether an invoice has a payment the PSP has not decided yet (pending or processing).
pub async fn has_payment_in_flight(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
) -> Result<bool, StorageError> {
    let n: i64 = payments::table
        .filter(payments::invoice_id.eq(invoice_id))
        .filter(payments::status.eq_any(["pending", "processing"]))
        .count()
        .get_result(conn)
        .await?;
    Ok(n > 0)
}

/// A tenant's payments, newest first, optionally of one invoice.
pub async fn list_payments(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    invoice_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<PaymentRow>, StorageError> {
    let mut query = payments::table
        .filter(payments::tenant_id.eq(tenant_id))
        .select(PaymentRow::as_select())
        .order(payments::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(invoice) = invoice_id {
        query = query.filter(payments::invoice_id.eq(invoice));
    }
    Ok(query.load(conn).await?)
}

/// A tenant's succeeded payments with PSP ids created in `[from, to)`.
pub async fn succeeded_payments_between(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    psp: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<PaymentRow>, StorageError> {
    Ok(payments::table
        .filter(payments::tenant_id.eq(tenant_id))
        .filter(payments::psp.eq(psp))
        .filter(payments::status.eq("succeeded"))
        .filter(payments::status_at.ge(from))
        .filter(payments::status_at.lt(to))
        .select(PaymentRow::as_select())
        .load(conn)
        .await?)
}

// ---------------------------------------------------------------------------------------------
// Invoices and subscriptions: payment columns

/// An invoice by id, whatever its tenant; `lock` takes a row lock.
pub async fn invoice_by_id(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<InvoiceRow>, StorageError> {
    let query = invoices::table.find(id).select(InvoiceRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    })
}

/// The outcome (`failed` or `succeeded`) of the last payment result applied to an invoice and
/// the PSP's time of it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct InvoicePaymentState {
    pub state: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// The invoice's payment state.
pub async fn invoice_payment_state(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
) -> Result<InvoicePaymentState, StorageError> {
    Ok(invoice_payment_state::table
        .find(invoice_id)
        .select((
            invoice_payment_state::payment_state,
            invoice_payment_state::payment_state_at,
        ))
        .first(conn)
        .await?)
}

/// Records a failed payment result at `at` on the invoice.
pub async fn set_invoice_failed(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), StorageError> {
    diesel::update(invoice_payment_state::table.find(invoice_id))
        .set((
            invoice_payment_state::payment_state.eq("failed"),
            invoice_payment_state::payment_state_at.eq(at),
            invoice_payment_state::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks a final invoice paid at `at` (finalized or uncollectible → paid; the database's
/// guard allows exactly that). Returns false when the invoice was in no such state.
pub async fn mark_invoice_paid(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
    at: DateTime<Utc>,
) -> Result<bool, StorageError> {
    let n = diesel::update(invoice_payment_state::table.find(invoice_id))
        .filter(invoice_payment_state::status.eq_any(["finalized", "uncollectible"]))
        .set((
            invoice_payment_state::status.eq("paid"),
            invoice_payment_state::paid_at.eq(at),
            invoice_payment_state::payment_state.eq("succeeded"),
            invoice_payment_state::payment_state_at.eq(at),
            invoice_payment_state::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// An account's final, unpaid invoices with a positive total and no payment yet (what a
/// newly linked PSP customer should be charged for).
pub async fn uncollected_invoices(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
) -> Result<Vec<InvoiceRow>, StorageError> {
    Ok(diesel::sql_query(
        "SELECT * FROM invoices i WHERE i.account_id = $1 AND i.status = 'finalized' \
           AND i.total_minor > 0 AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = i.id) \
         ORDER BY i.id",
    )
    .bind::<SqlUuid, _>(account_id)
    .load(conn)
    .await?)
}

/// A tenant's invoices paid in `[from, to)` (by `paid_at`).
pub async fn paid_invoices_between(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<InvoiceRow>, StorageError> {
    Ok(invoices::table
        .filter(invoices::tenant_id.eq(tenant_id))
        .filter(invoices::status.eq("paid"))
        .filter(invoices::paid_at.ge(from))
        .filter(invoices::paid_at.lt(to))
        .order(invoices::id.asc())
        .select(InvoiceRow::as_select())
        .load(conn)
        .await?)
}

/// A subscription's link to its PSP subscription.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = subscription_psp)]
pub struct SubscriptionPspRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub account_id: Uuid,
    pub status: String,
    /// The PSP's subscription id (`sub_…` at Stripe).
    pub psp_subscription_id: Option<String>,
    /// The PSP's time of the last status applied from it.
    pub psp_state_at: Option<DateTime<Utc>>,
}

/// The PSP link of a subscription.
pub async fn subscription_psp(
    conn: &mut AsyncPgConnection,
    subscription_id: Uuid,
) -> Result<Option<SubscriptionPspRow>, StorageError> {
    Ok(subscription_psp::table
        .find(subscription_id)
        .select(SubscriptionPspRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The subscription linked to a PSP subscription id.
pub async fn subscription_by_psp_id(
    conn: &mut AsyncPgConnection,
    psp_subscription_id: &str,
) -> Result<Option<SubscriptionPspRow>, StorageError> {
    Ok(subscription_psp::table
        .filter(subscription_psp::psp_subscription_id.eq(psp_subscription_id))
        .select(SubscriptionPspRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Links a subscription to its PSP subscription id (stamping `updated_at`).
pub async fn link_subscription(
    conn: &mut AsyncPgConnection,
    subscription_id: Uuid,
    psp_subscription_id: &str,
) -> Result<(), StorageError> {
    diesel::update(subscription_psp::table.find(subscription_id))
        .set((
            subscription_psp::psp_subscription_id.eq(psp_subscription_id),
            subscription_psp::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records the PSP time of the status just applied to a subscription.
pub async fn set_psp_state_at(
    conn: &mut AsyncPgConnection,
    subscription_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), StorageError> {
    diesel::update(subscription_psp::table.find(subscription_id))
        .set((
            subscription_psp::psp_state_at.eq(at),
            subscription_psp::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Refunds

/// A refund asked for through the API.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = payment_refunds, treat_none_as_null = true)]
pub struct RefundRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub payment_id: Uuid,
    pub amount_minor: i64,
    pub reason: String,
    /// `pending`, `succeeded`, `failed`, `canceled`, `requires_action` or `errored`.
    pub status: String,
    pub idempotency_key: String,
    /// The PSP's refund id (`re_…`).
    pub psp_refund_id: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Inserts a refund unless its idempotency key exists; returns the row in force.
pub async fn insert_refund(
    conn: &mut AsyncPgConnection,
    row: &RefundRow,
) -> Result<(RefundRow, bool), StorageError> {
    let n = diesel::insert_into(payment_refunds::table)
        .values(row)
        .on_conflict(payment_refunds::idempotency_key)
        .do_nothing()
        .execute(conn)
        .await?;
    let stored = payment_refunds::table
        .filter(payment_refunds::idempotency_key.eq(&row.idempotency_key))
        .select(RefundRow::as_select())
        .first(conn)
        .await?;
    Ok((stored, n == 1))
}

/// Writes every field of `row` (stamping `updated_at`).
pub async fn save_refund(
    conn: &mut AsyncPgConnection,
    row: &mut RefundRow,
) -> Result<(), StorageError> {
    row.updated_at = Utc::now();
    diesel::update(payment_refunds::table.find(row.id))
        .set(&*row)
        .execute(conn)
        .await?;
    Ok(())
}

/// The refunds of a payment, oldest first.
pub async fn refunds_of(
    conn: &mut AsyncPgConnection,
    payment_id: Uuid,
) -> Result<Vec<RefundRow>, StorageError> {
    Ok(payment_refunds::table
        .filter(payment_refunds::payment_id.eq(payment_id))
        .order(payment_refunds::created_at.asc())
        .select(RefundRow::as_select())
        .load(conn)
        .await?)
}

/// Sets the status of the refund with this PSP id; returns whether one matched.
pub async fn set_refund_status_by_psp_id(
    conn: &mut AsyncPgConnection,
    psp_refund_id: &str,
    status: &str,
) -> Result<bool, StorageError> {
    let n = diesel::update(payment_refunds::table)
        .filter(payment_refunds::psp_refund_id.eq(psp_refund_id))
        .set((
            payment_refunds::status.eq(status),
            payment_refunds::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

// ---------------------------------------------------------------------------------------------
// Applied PSP events

/// What became of a PSP event.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = psp_event_applications)]
pub struct PspEventApplicationRow {
    pub psp: String,
    pub event_id: String,
    pub event_type: String,
    pub created_at_psp: DateTime<Utc>,
    /// `applied`, `stale`, `ignored` or `unmatched`.
    pub outcome: String,
    pub tenant_id: Option<Uuid>,
    pub detail: Option<String>,
    pub applied_at: DateTime<Utc>,
}

/// Claims an event for application: inserts its row, or returns false when the event was
/// applied before (the caller then changes nothing). Call inside the transaction that applies
/// it, so the claim commits with the changes or not at all; a concurrent duplicate waits on the
/// primary key until this transaction ends.
pub async fn claim_event(
    conn: &mut AsyncPgConnection,
    row: &PspEventApplicationRow,
) -> Result<bool, StorageError> {
    let n = diesel::insert_into(psp_event_applications::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Records what applying a claimed event did.
pub async fn finish_event(
    conn: &mut AsyncPgConnection,
    psp: &str,
    event_id: &str,
    outcome: &str,
    tenant_id: Option<Uuid>,
    detail: Option<&str>,
) -> Result<(), StorageError> {
    diesel::update(psp_event_applications::table.find((psp, event_id)))
        .set((
            psp_event_applications::outcome.eq(outcome),
            psp_event_applications::tenant_id.eq(tenant_id),
            psp_event_applications::detail.eq(detail),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The record of one event, if applied.
pub async fn find_event_application(
    conn: &mut AsyncPgConnection,
    psp: &str,
    event_id: &str,
) -> Result<Option<PspEventApplicationRow>, StorageError> {
    Ok(psp_event_applications::table
        .find((psp, event_id))
        .select(PspEventApplicationRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

// ---------------------------------------------------------------------------------------------
// Dunning

/// A dunning case: one per invoice, opened by its first failed payment.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(table_name = dunning_cases, treat_none_as_null = true)]
pub struct DunningCaseRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub invoice_id: Uuid,
    pub account_id: Uuid,
    pub subscription_id: Option<Uuid>,
    /// `open`, `exhausted`, `recovered` or `canceled`.
    pub status: String,
    /// The failure the retry schedule counts from.
    pub first_failed_at: DateTime<Utc>,
    /// Failed payments of the invoice so far.
    pub failures: i32,
    pub last_failure_code: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A scheduled retry of a case.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(table_name = dunning_attempts, treat_none_as_null = true)]
pub struct DunningAttemptRow {
    pub id: Uuid,
    pub case_id: Uuid,
    /// 1 for the first retry.
    pub seq: i32,
    pub scheduled_at: DateTime<Utc>,
    /// `scheduled`, `running`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    pub payment_id: Option<Uuid>,
    pub executed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A notification dunning sent (the event that carried it).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = dunning_notifications)]
pub struct DunningNotificationRow {
    pub id: i64,
    pub case_id: Uuid,
    pub tenant_id: Uuid,
    /// `payment_failed`, `retry_failed`, `suspended` or `recovered`.
    pub kind: String,
    pub event_type: String,
    pub message_id: Uuid,
    pub attempt: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// A notification to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = dunning_notifications)]
pub struct NewDunningNotification {
    pub case_id: Uuid,
    pub tenant_id: Uuid,
    pub kind: String,
    pub event_type: String,
    pub message_id: Uuid,
    pub attempt: Option<i32>,
}

/// Opens a case with its scheduled retries unless the invoice has one; returns whether it was
/// opened.
pub async fn open_case(
    conn: &mut AsyncPgConnection,
    case: &DunningCaseRow,
    attempts: &[DunningAttemptRow],
) -> Result<bool, StorageError> {
    let n = diesel::insert_into(dunning_cases::table)
        .values(case)
        .on_conflict(dunning_cases::invoice_id)
        .do_nothing()
        .execute(conn)
        .await?;
    if n == 0 {
        return Ok(false);
    }
    if !attempts.is_empty() {
        diesel::insert_into(dunning_attempts::table)
            .values(attempts)
            .execute(conn)
            .await?;
    }
    Ok(true)
}

/// The invoice's case, locked when `lock`.
pub async fn case_of_invoice(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
    lock: bool,
) -> Result<Option<DunningCaseRow>, StorageError> {
    let query = dunning_cases::table
        .filter(dunning_cases::invoice_id.eq(invoice_id))
        .select(DunningCaseRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    })
}

/// A case by id, locked when `lock`.
pub async fn find_case(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<DunningCaseRow>, StorageError> {
    let query = dunning_cases::table
        .find(id)
        .select(DunningCaseRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    })
}

/// Writes every field of `row` (stamping `updated_at`).
pub async fn save_case(
    conn: &mut AsyncPgConnection,
    row: &mut DunningCaseRow,
) -> Result<(), StorageError> {
    row.updated_at = Utc::now();
    diesel::update(dunning_cases::table.find(row.id))
        .set(&*row)
        .execute(conn)
        .await?;
    Ok(())
}

/// The statuses of a subscription's cases that are still in force (`open`, `exhausted`).
pub async fn live_case_statuses(
    conn: &mut AsyncPgConnection,
    subscription_id: Uuid,
) -> Result<Vec<String>, StorageError> {
    Ok(dunning_cases::table
        .filter(dunning_cases::subscription_id.eq(subscription_id))
        .filter(dunning_cases::status.eq_any(["open", "exhausted"]))
        .select(dunning_cases::status)
        .load(conn)
        .await?)
}

/// A tenant's cases, newest first, optionally of one status.
pub async fn list_cases(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<DunningCaseRow>, StorageError> {
    let mut query = dunning_cases::table
        .filter(dunning_cases::tenant_id.eq(tenant_id))
        .select(DunningCaseRow::as_select())
        .order(dunning_cases::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(dunning_cases::status.eq(status.to_owned()));
    }
    Ok(query.load(conn).await?)
}

/// A case's retries in order.
pub async fn attempts_of_case(
    conn: &mut AsyncPgConnection,
    case_id: Uuid,
) -> Result<Vec<DunningAttemptRow>, StorageError> {
    Ok(dunning_attempts::table
        .filter(dunning_attempts::case_id.eq(case_id))
        .order(dunning_attempts::seq.asc())
        .select(DunningAttemptRow::as_select())
        .load(conn)
        .await?)
}

/// The retry that created `payment_id`, locked when `lock`.
pub async fn attempt_of_payment(
    conn: &mut AsyncPgConnection,
    payment_id: Uuid,
    lock: bool,
) -> Result<Option<DunningAttemptRow>, StorageError> {
    let query = dunning_attempts::table
        .filter(dunning_attempts::payment_id.eq(payment_id))
        .select(DunningAttemptRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    })
}

/// Writes every field of `row` (stamping `updated_at`).
pub async fn save_attempt(
    conn: &mut AsyncPgConnection,
    row: &mut DunningAttemptRow,
) -> Result<(), StorageError> {
    row.updated_at = Utc::now();
    diesel::update(dunning_attempts::table.find(row.id))
        .set(&*row)
        .execute(conn)
        .await?;
    Ok(())
}

/// Cancels a case's retries that have not run; returns how many.
pub async fn cancel_scheduled(
    conn: &mut AsyncPgConnection,
    case_id: Uuid,
) -> Result<usize, StorageError> {
    Ok(diesel::update(dunning_attempts::table)
        .filter(dunning_attempts::case_id.eq(case_id))
        .filter(dunning_attempts::status.eq("scheduled"))
        .set((
            dunning_attempts::status.eq("canceled"),
            dunning_attempts::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?)
}

/// Claims up to `limit` scheduled retries due at `as_of` (any tenant, or one) of open cases,
/// earliest first, locked with `SKIP LOCKED` so concurrent runs split them. Call inside a
/// transaction.
pub async fn claim_due_attempts(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    as_of: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DunningAttemptRow>, StorageError> {
    Ok(diesel::sql_query(
        "SELECT a.* FROM dunning_attempts a JOIN dunning_cases c ON c.id = a.case_id \
         WHERE a.status = 'scheduled' AND a.scheduled_at <= $2 AND c.status = 'open' \
           AND ($1::uuid IS NULL OR c.tenant_id = $1) \
         ORDER BY a.scheduled_at, a.id LIMIT $3 FOR UPDATE OF a SKIP LOCKED",
    )
    .bind::<Nullable<SqlUuid>, _>(tenant_id)
    .bind::<Timestamptz, _>(as_of)
    .bind::<Int8, _>(limit)
    .load(conn)
    .await?)
}

/// Records notifications.
pub async fn record_notifications(
    conn: &mut AsyncPgConnection,
    rows: &[NewDunningNotification],
) -> Result<(), StorageError> {
    if rows.is_empty() {
        return Ok(());
    }
    diesel::insert_into(dunning_notifications::table)
        .values(rows)
        .execute(conn)
        .await?;
    Ok(())
}

/// A case's notifications, oldest first.
pub async fn notifications_of_case(
    conn: &mut AsyncPgConnection,
    case_id: Uuid,
) -> Result<Vec<DunningNotificationRow>, StorageError> {
    Ok(dunning_notifications::table
        .filter(dunning_notifications::case_id.eq(case_id))
        .order(dunning_notifications::id.asc())
        .select(DunningNotificationRow::as_select())
        .load(conn)
        .await?)
}

/// The number of a case's retries in each status: (scheduled, running, failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, QueryableByName)]
pub struct AttemptCounts {
    #[diesel(sql_type = Int4)]
    pub scheduled: i32,
    #[diesel(sql_type = Int4)]
    pub running: i32,
    #[diesel(sql_type = Int4)]
    pub failed: i32,
}

/// Counts a case's retries by status.
pub async fn attempt_counts(
    conn: &mut AsyncPgConnection,
    case_id: Uuid,
) -> Result<AttemptCounts, StorageError> {
    Ok(diesel::sql_query(
        "SELECT count(*) FILTER (WHERE status = 'scheduled')::int4 AS scheduled, \
                count(*) FILTER (WHERE status = 'running')::int4 AS running, \
                count(*) FILTER (WHERE status = 'failed')::int4 AS failed \
         FROM dunning_attempts WHERE case_id = $1",
    )
    .bind::<SqlUuid, _>(case_id)
    .get_result(conn)
    .await?)
}
