//! Reconciliation (issue 4, "Reconciliation"): for a tenant and a period, compares what the
//! ledger holds with what final invoices billed, and every invoice's totals with its lines.
//! Every discrepancy is written to `reconciliation_discrepancies` under one
//! `reconciliation_runs` row, and returned for the CLI's table. PSP records join in with the
//! payments issue.
//!
//! Kinds:
//! * `invoice_totals_mismatch`: subtotal, discount or total differ from the sum of the lines;
//! * `usage_not_billed`: the ledger holds more of a metric for an invoiced period than the
//!   invoice and its adjustments billed (late usage awaiting its adjustment line);
//! * `billed_without_usage`: more was billed than the ledger holds (e.g. after a reversal);
//! * `missing_invoice`: a paid period closed (history `renew`) with no invoice.
//!
//! PSP records (issue 5, [`reconcile_psp`]): a tenant's invoices paid in a period against
//! Stripe's PaymentIntents (metadata `tollgate_invoice`, amount and currency) and the balance
//! transactions of Stripe's payouts in the period:
//! * `missing_in_psp`: an invoice is paid in Tollgate but Stripe has no succeeded payment
//!   for it;
//! * `missing_in_tollgate`: Stripe holds a succeeded payment of the tenant that Tollgate has no
//!   invoice or payment row for;
//! * `amount_mismatch`: amounts or currencies differ (PaymentIntent vs invoice, or a payout's
//!   balance transaction vs the payment);
//! * `status_mismatch`: Stripe says succeeded and Tollgate does not (or the reverse).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_storage::invoices::{self, InvoiceFilter};
use tollgate_storage::period_usage::{self, UsageWindow};
use tollgate_storage::schema::{reconciliation_discrepancies, reconciliation_runs};
use tollgate_storage::{AsyncPgConnection, StorageError};
use uuid::Uuid;

use tollgate_psp::stripe::{PaymentIntent, StripeError};
use tollgate_storage::invoices::InvoiceRow;

use crate::run::{aggregation_of, aggregations, parse_decimal, PlanCache, UsageBook};
use crate::{BillingContext, BillingError};

/// One discrepancy.
#[derive(Debug, Clone, Serialize)]
pub struct Discrepancy {
    pub kind: String,
    pub subscription_id: Option<Uuid>,
    pub invoice_id: Option<Uuid>,
    pub invoice_number: Option<String>,
    pub metric: Option<String>,
    pub expected: String,
    pub actual: String,
}

/// A reconciliation run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub run_id: Uuid,
    /// Invoices checked.
    pub checked: usize,
    pub discrepancies: Vec<Discrepancy>,
}

/// Reconciles the tenant's final invoices whose period starts in `[from, to)`.
pub async fn reconcile(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<ReconcileReport, BillingError> {
    let filter = InvoiceFilter {
        period_from: Some(from),
        period_to: Some(to),
        ..Default::default()
    };
    let all = invoices::list(conn, tenant_id, &filter, None, i64::MAX).await?;
    let finals: Vec<_> = all
        .into_iter()
        .filter(|i| matches!(i.status.as_str(), "finalized" | "paid" | "uncollectible"))
        .collect();
    let mut found = Vec::new();

    // Totals against lines.
    let mut line_sets = Vec::with_capacity(finals.len());
    for inv in &finals {
        let lines = invoices::lines(conn, inv.id).await?;
        let discount: i64 = lines
            .iter()
            .filter(|l| l.kind == "discount")
            .map(|l| l.amount_minor)
            .sum();
        let subtotal: i64 = lines
            .iter()
            .filter(|l| l.kind != "discount")
            .map(|l| l.amount_minor)
            .sum();
        for (what, expected, actual) in [
            ("subtotal", subtotal, inv.subtotal_minor),
            ("discount", discount, inv.discount_minor),
            ("total", subtotal + discount, inv.total_minor),
        ] {
            if expected != actual {
                found.push(Discrepancy {
                    kind: "invoice_totals_mismatch".into(),
                    subscription_id: inv.subscription_id,
                    invoice_id: Some(inv.id),
                    invoice_number: inv.number_text.clone(),
                    metric: Some(what.into()),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        line_sets.push(lines);
    }

    // Ledger against billed quantities (usage lines + later adjustments).
    let windows: Vec<UsageWindow> = finals
        .iter()
        .enumerate()
        .map(|(i, inv)| UsageWindow {
            key: i as i32,
            account_id: inv.account_id,
            period_start: inv.period_start,
            period_end: inv.period_end,
        })
        .collect();
    let metrics = aggregations(conn, tenant_id).await?;
    let mut book = UsageBook::default();
    for row in period_usage::sums(conn, tenant_id, &windows).await? {
        book.sums.insert(
            (row.key, row.metric),
            parse_decimal(row.quantity.as_deref())?,
        );
    }
    let mut plans = PlanCache::default();
    let sub_ids: Vec<Uuid> = finals.iter().filter_map(|i| i.subscription_id).collect();
    let befores = vec![DateTime::<Utc>::MAX_UTC; sub_ids.len()];
    let billed = invoices::billed_usage(conn, &sub_ids, &befores, from).await?;
    let mut billed_map: HashMap<(Uuid, DateTime<Utc>, String), Decimal> = HashMap::new();
    for b in billed {
        billed_map.insert(
            (b.subscription_id, b.period_start, b.metric.clone()),
            parse_decimal(Some(&b.quantity))?,
        );
    }
    for (i, inv) in finals.iter().enumerate() {
        let (Some(sub), Some(plan_id)) = (inv.subscription_id, inv.plan_version_id) else {
            continue;
        };
        let plan = plans.get(conn, plan_id).await?.clone();
        for charge in &plan.charges {
            let agg = aggregation_of(&metrics, &charge.metric);
            let ledger = if matches!(
                agg,
                tollgate_domain::usage::Aggregation::Count
                    | tollgate_domain::usage::Aggregation::Sum
            ) {
                book.quantity(i as i32, &charge.metric, agg)
            } else {
                let rows =
                    period_usage::aggregate(conn, tenant_id, &charge.metric, agg, &windows[i..=i])
                        .await?;
                parse_decimal(rows.into_iter().next().and_then(|r| r.quantity).as_deref())?
            };
            let billed = billed_map
                .get(&(sub, inv.period_start, charge.metric.clone()))
                .copied()
                .unwrap_or_default();
            if ledger != billed {
                found.push(Discrepancy {
                    kind: if ledger > billed {
                        "usage_not_billed"
                    } else {
                        "billed_without_usage"
                    }
                    .into(),
                    subscription_id: Some(sub),
                    invoice_id: Some(inv.id),
                    invoice_number: inv.number_text.clone(),
                    metric: Some(charge.metric.clone()),
                    expected: ledger.normalize().to_string(),
                    actual: billed.normalize().to_string(),
                });
            }
        }
    }

    // Closed paid periods without an invoice.
    let missing: Vec<(Uuid, DateTime<Utc>)> = diesel::sql_query(
        "SELECT c.subscription_id, c.period_start FROM subscription_changes c \
         JOIN subscriptions s ON s.id = c.subscription_id \
         WHERE s.tenant_id = $1 AND c.kind = 'renew' AND c.period_start >= $2 AND c.period_start < $3 \
           AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.subscription_id = c.subscription_id \
                           AND i.period_start = c.period_start)",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant_id)
    .bind::<diesel::sql_types::Timestamptz, _>(from)
    .bind::<diesel::sql_types::Timestamptz, _>(to)
    .load::<MissingRow>(conn)
    .await
    .map_err(StorageError::from)?
    .into_iter()
    .map(|r| (r.subscription_id, r.period_start))
    .collect();
    for (sub, start) in missing {
        found.push(Discrepancy {
            kind: "missing_invoice".into(),
            subscription_id: Some(sub),
            invoice_id: None,
            invoice_number: None,
            metric: None,
            expected: format!("an invoice for the period starting {start}"),
            actual: "none".into(),
        });
    }

    let run_id = record(conn, tenant_id, from, to, finals.len(), &found).await?;
    Ok(ReconcileReport {
        run_id,
        checked: finals.len(),
        discrepancies: found,
    })
}

/// Writes a run and its discrepancies; returns the run id.
async fn record(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    checked: usize,
    found: &[Discrepancy],
) -> Result<Uuid, BillingError> {
    let run_id = Uuid::now_v7();
    diesel::insert_into(reconciliation_runs::table)
        .values((
            reconciliation_runs::id.eq(run_id),
            reconciliation_runs::tenant_id.eq(tenant_id),
            reconciliation_runs::period_start.eq(from),
            reconciliation_runs::period_end.eq(to),
            reconciliation_runs::checked.eq(checked as i32),
            reconciliation_runs::discrepancies.eq(found.len() as i32),
            reconciliation_runs::finished_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
        .map_err(StorageError::from)?;
    let rows: Vec<_> = found
        .iter()
        .map(|d| {
            (
                reconciliation_discrepancies::run_id.eq(run_id),
                reconciliation_discrepancies::tenant_id.eq(tenant_id),
                reconciliation_discrepancies::subscription_id.eq(d.subscription_id),
                reconciliation_discrepancies::invoice_id.eq(d.invoice_id),
                reconciliation_discrepancies::metric.eq(&d.metric),
                reconciliation_discrepancies::kind.eq(&d.kind),
                reconciliation_discrepancies::expected.eq(&d.expected),
                reconciliation_discrepancies::actual.eq(&d.actual),
            )
        })
        .collect();
    if !rows.is_empty() {
        diesel::insert_into(reconciliation_discrepancies::table)
            .values(rows)
            .execute(conn)
            .await
            .map_err(StorageError::from)?;
    }
    Ok(run_id)
}

/// The scheduled reconciliation: the calendar month (UTC) before `now`, for every tenant with
/// invoices in it. Returns the reports; a tenant's failure is logged and the others go on.
pub async fn reconcile_last_month(
    pool: &tollgate_storage::PgPool,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, ReconcileReport)>, BillingError> {
    let (from, this_month) = previous_month(now)?;
    let mut conn = tollgate_storage::pool::get(pool).await?;
    let tenants: Vec<Uuid> = tollgate_storage::schema::invoices::table
        .filter(tollgate_storage::schema::invoices::period_start.ge(from))
        .filter(tollgate_storage::schema::invoices::period_start.lt(this_month))
        .select(tollgate_storage::schema::invoices::tenant_id)
        .distinct()
        .load(&mut conn)
        .await
        .map_err(StorageError::from)?;
    let mut out = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        match reconcile(&mut conn, tenant, from, this_month).await {
            Ok(report) => {
                if !report.discrepancies.is_empty() {
                    tracing::warn!(%tenant, run = %report.run_id, discrepancies = report.discrepancies.len(), "reconciliation found discrepancies");
                }
                out.push((tenant, report));
            }
            Err(err) => tracing::error!(%tenant, error = %err, "reconciliation failed"),
        }
    }
    Ok(out)
}

#[derive(QueryableByName)]
struct MissingRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    subscription_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    period_start: DateTime<Utc>,
}

/// Reconciles a tenant's PSP records for `[from, to)`: invoices paid in the period (by
/// `paid_at`) and Stripe PaymentIntents created in it (those whose metadata names the tenant),
/// and the balance transactions of Stripe payouts created in it that belong to the tenant's
/// payments (by charge id). Every discrepancy (see the module docs) is recorded under one
/// `reconciliation_runs` row. Errors: PSP off (503), PSP unreachable (502/503), database.
pub async fn reconcile_psp(
    ctx: &BillingContext,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<ReconcileReport, BillingError> {
    use tollgate_storage::payments as store;
    let stripe = ctx.payments.stripe()?;
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    let mut found = Vec::new();
    let intents: Vec<PaymentIntent> = stripe
        .list_payment_intents(from, to)
        .await
        .map_err(BillingError::Psp)?
        .into_iter()
        .filter(|pi| {
            pi.metadata
                .get("tollgate_tenant")
                .and_then(|t| Uuid::parse_str(t).ok())
                == Some(tenant_id)
        })
        .collect();
    let mut checked = 0;
    let discrepancy =
        |kind: &str, invoice: Option<&InvoiceRow>, what: &str, expected: String, actual: String| {
            Discrepancy {
                kind: kind.into(),
                subscription_id: invoice.and_then(|i| i.subscription_id),
                invoice_id: invoice.map(|i| i.id),
                invoice_number: invoice.and_then(|i| i.number_text.clone()),
                metric: Some(what.into()),
                expected,
                actual,
            }
        };

    // Stripe's succeeded payments against Tollgate.
    let mut seen = std::collections::HashSet::new();
    for pi in intents.iter().filter(|pi| pi.status == "succeeded") {
        checked += 1;
        seen.insert(pi.id.clone());
        let invoice = match pi
            .metadata
            .get("tollgate_invoice")
            .and_then(|i| Uuid::parse_str(i).ok())
        {
            Some(id) => store::invoice_by_id(&mut conn, id, false)
                .await?
                .filter(|i| i.tenant_id == tenant_id),
            None => None,
        };
        let Some(invoice) = invoice else {
            found.push(discrepancy(
                "missing_in_tollgate",
                None,
                "invoice",
                format!(
                    "an invoice for Stripe payment {} ({} {})",
                    pi.id, pi.amount_received, pi.currency
                ),
                "none".into(),
            ));
            continue;
        };
        let payment =
            store::payment_by_psp_id(&mut conn, crate::payments::STRIPE, &pi.id, false).await?;
        // What this payment was to collect: the payment's amount (a retry after a credit note
        // asks for less than the total), else the invoice total.
        let (want, currency) = match &payment {
            Some(p) => (p.amount_minor, p.currency.clone()),
            None => (invoice.total_minor, invoice.currency.clone()),
        };
        if pi.amount_received != want || !pi.currency.eq_ignore_ascii_case(&currency) {
            found.push(discrepancy(
                "amount_mismatch",
                Some(&invoice),
                "payment_intent",
                format!("{want} {currency}"),
                format!(
                    "{} {} ({})",
                    pi.amount_received,
                    pi.currency.to_uppercase(),
                    pi.id
                ),
            ));
        }
        if invoice.status != "paid" {
            found.push(discrepancy(
                "status_mismatch",
                Some(&invoice),
                "invoice",
                format!("paid (Stripe payment {} succeeded)", pi.id),
                invoice.status.clone(),
            ));
        }
        match payment {
            None => found.push(discrepancy(
                "missing_in_tollgate",
                Some(&invoice),
                "payment",
                format!("a payment row for {}", pi.id),
                "none".into(),
            )),
            Some(p) if p.status != "succeeded" => found.push(discrepancy(
                "status_mismatch",
                Some(&invoice),
                "payment",
                format!("succeeded ({})", pi.id),
                p.status,
            )),
            Some(_) => {}
        }
    }

    // Tollgate's paid invoices against Stripe.
    for invoice in store::paid_invoices_between(&mut conn, tenant_id, from, to).await? {
        checked += 1;
        let paid_by: Vec<_> = store::payments_of_invoice(&mut conn, invoice.id)
            .await?
            .into_iter()
            .filter(|p| p.status == "succeeded")
            .collect();
        let Some(payment) = paid_by.iter().find(|p| p.psp_payment_id.is_some()) else {
            found.push(discrepancy(
                "missing_in_psp",
                Some(&invoice),
                "payment",
                "a succeeded Stripe payment".into(),
                "none recorded".into(),
            ));
            continue;
        };
        let id = payment.psp_payment_id.clone().unwrap_or_default();
        if seen.contains(&id) {
            continue;
        }
        // Created before the period (an asynchronous payment): ask for it.
        match stripe.retrieve_payment_intent(&id).await {
            Ok(pi) if pi.status == "succeeded" => {
                if pi.amount_received != payment.amount_minor {
                    found.push(discrepancy(
                        "amount_mismatch",
                        Some(&invoice),
                        "payment_intent",
                        format!("{} {}", payment.amount_minor, payment.currency),
                        format!(
                            "{} {} ({})",
                            pi.amount_received,
                            pi.currency.to_uppercase(),
                            pi.id
                        ),
                    ));
                }
            }
            Ok(pi) => found.push(discrepancy(
                "status_mismatch",
                Some(&invoice),
                "payment_intent",
                format!("succeeded ({id})"),
                pi.status,
            )),
            Err(StripeError::InvalidRequest { status: 404, .. }) => found.push(discrepancy(
                "missing_in_psp",
                Some(&invoice),
                "payment_intent",
                id.clone(),
                "not found at Stripe".into(),
            )),
            Err(err) => return Err(BillingError::Psp(err)),
        }
    }

    // Payouts: each balance transaction of a tenant's charge matches its payment.
    for payout in stripe
        .list_payouts(from, to)
        .await
        .map_err(BillingError::Psp)?
    {
        let txns = stripe
            .list_balance_transactions(&payout.id)
            .await
            .map_err(BillingError::Psp)?;
        let charges: Vec<String> = txns
            .iter()
            .filter(|t| matches!(t.r#type.as_str(), "charge" | "payment"))
            .filter_map(|t| t.source.clone())
            .collect();
        let payments: std::collections::HashMap<String, _> =
            store::payments_by_charge(&mut conn, &charges)
                .await?
                .into_iter()
                .filter(|p| p.tenant_id == tenant_id)
                .filter_map(|p| p.psp_charge_id.clone().map(|c| (c, p)))
                .collect();
        for txn in &txns {
            let Some(payment) = txn.source.as_ref().and_then(|s| payments.get(s)) else {
                continue;
            };
            checked += 1;
            let invoice = store::invoice_by_id(&mut conn, payment.invoice_id, false).await?;
            if txn.amount != payment.amount_minor
                || !txn.currency.eq_ignore_ascii_case(&payment.currency)
            {
                found.push(discrepancy(
                    "amount_mismatch",
                    invoice.as_ref(),
                    "payout",
                    format!("{} {}", payment.amount_minor, payment.currency),
                    format!(
                        "{} {} (payout {}, {})",
                        txn.amount,
                        txn.currency.to_uppercase(),
                        payout.id,
                        txn.id
                    ),
                ));
            }
            if payment.status != "succeeded" {
                found.push(discrepancy(
                    "status_mismatch",
                    invoice.as_ref(),
                    "payout",
                    format!("succeeded (paid out in {})", payout.id),
                    payment.status.clone(),
                ));
            }
        }
    }

    let run_id = record(&mut conn, tenant_id, from, to, checked, &found).await?;
    if !found.is_empty() {
        tracing::warn!(tenant = %tenant_id, run = %run_id, discrepancies = found.len(), "PSP reconciliation found discrepancies");
    }
    Ok(ReconcileReport {
        run_id,
        checked,
        discrepancies: found,
    })
}

/// The scheduled PSP reconciliation: the calendar month (UTC) before `now`, for every tenant
/// with a payment in it. A tenant's failure is logged and the others go on.
pub async fn reconcile_psp_last_month(
    ctx: &BillingContext,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, ReconcileReport)>, BillingError> {
    let (from, to) = previous_month(now)?;
    let tenants: Vec<Uuid> = {
        use tollgate_storage::schema_payments::payments;
        let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
        payments::table
            .filter(payments::created_at.ge(from))
            .filter(payments::created_at.lt(to))
            .select(payments::tenant_id)
            .distinct()
            .load(&mut conn)
            .await
            .map_err(StorageError::from)?
    };
    let mut out = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        match reconcile_psp(ctx, tenant, from, to).await {
            Ok(report) => out.push((tenant, report)),
            Err(err) => tracing::error!(%tenant, error = %err, "PSP reconciliation failed"),
        }
    }
    Ok(out)
}

/// `[first instant of the previous month, first instant of this month)`, UTC.
fn previous_month(now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), BillingError> {
    use chrono::{Datelike, TimeZone};
    let this_month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .ok_or_else(|| BillingError::Corrupt("month start".into()))?;
    let from = this_month
        .checked_sub_months(chrono::Months::new(1))
        .ok_or_else(|| BillingError::Corrupt("month start".into()))?;
    Ok((from, this_month))
}
