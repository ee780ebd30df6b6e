//! Rating one subscription period into invoice lines (issue 4, "Billing runs"). Pure: the
//! billing run gathers the inputs (plans, plan changes, aggregated usage, what earlier invoices
//! billed) and this module turns them into lines and totals with the pricing engine.
//!
//! The invoice of period `[start, end)` holds, in order:
//! 1. **base fee** of the plan in force at the period's start (billed in arrears, full period);
//! 2. **proration** for every plan change inside the period (pricing engine formula: a credit
//!    for the old plan's unused seconds, a charge for the new plan's remaining seconds), and a
//!    credit for the unused seconds after an immediate cancellation;
//! 3. **usage**: one line per charge of the plan in force at the period's end, quantity = the
//!    metric's aggregated weighted units in the period, rated once (half-even);
//! 4. **adjustments**: for earlier, finalized periods, usage that arrived after they were
//!    finalized: rate(current quantity) − what was billed, with that period's plan;
//! 5. **discount**: the subscription's coupon when it applies in this period (percentage
//!    before fixed amounts, never below zero), on the sum of lines 1–4 when positive.
//!
//! Usage during a trial is not billed (a trial period closes without an invoice).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use tollgate_pricing::{
    apply_discounts, rate, totals, Charge, Coupon, Currency, PricingError, Totals,
};
use tollgate_storage::invoices::InvoiceLineRow;
use tollgate_storage::plans::PlanVersion;

/// A plan change inside the period, with the proration it recorded (minor units).
#[derive(Debug, Clone)]
pub struct ProrationInput {
    pub at: DateTime<Utc>,
    pub from_plan: String,
    pub to_plan: String,
    pub credit_minor: i64,
    pub charge_minor: i64,
}

/// Late usage of an earlier, finalized period of the same subscription.
#[derive(Debug, Clone)]
pub struct AdjustmentInput {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub metric: String,
    pub description: String,
    /// The charge of that period's plan.
    pub charge: Charge,
    pub billed_quantity: Decimal,
    pub billed_amount_minor: i64,
    pub current_quantity: Decimal,
}

/// Everything one invoice is computed from.
#[derive(Debug, Clone)]
pub struct PeriodInput<'a> {
    pub currency: Currency,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// The plan in force at the period's start (its base fee is billed).
    pub base_plan: &'a PlanVersion,
    /// The plan in force at the period's end (its charges rate the usage).
    pub end_plan: &'a PlanVersion,
    pub prorations: Vec<ProrationInput>,
    /// An immediate cancellation: the instant and the credit for the unused seconds (<= 0).
    pub cancellation: Option<(DateTime<Utc>, i64)>,
    /// Quantity per charge of `end_plan`, in charge order (weighted units).
    pub quantities: Vec<Decimal>,
    pub adjustments: Vec<AdjustmentInput>,
    /// The coupon, when it applies in this period.
    pub coupon: Option<Coupon>,
}

/// Lines and totals of one invoice (minor units).
#[derive(Debug, Clone)]
pub struct RatedInvoice {
    pub lines: Vec<InvoiceLineRow>,
    pub totals: Totals,
}

fn line(position: usize, kind: &str, description: String, amount_minor: i64) -> InvoiceLineRow {
    InvoiceLineRow {
        position: position as i32,
        kind: kind.to_owned(),
        description,
        metric: None,
        period_start: None,
        period_end: None,
        quantity: None,
        unit_price: None,
        amount_minor,
        detail: json!({}),
    }
}

/// Rates one period. Errors: a pricing error (overflow, a charge the catalog let through but
/// the engine refuses), which fails this invoice only.
pub fn rate_period(input: &PeriodInput<'_>) -> Result<RatedInvoice, PricingError> {
    let currency = input.currency;
    let mut lines = Vec::new();
    let base = &input.base_plan.version;
    let mut base_line = line(
        lines.len(),
        "base_fee",
        format!("{} plan ({})", base.name, base.billing_interval),
        base.base_fee_minor,
    );
    base_line.quantity = Some("1".to_owned());
    base_line.unit_price =
        Some(tollgate_pricing::to_major_units(base.base_fee_minor, currency).to_string());
    base_line.period_start = Some(input.period_start);
    base_line.period_end = Some(input.period_end);
    lines.push(base_line);

    for p in &input.prorations {
        let at = p.at.format("%Y-%m-%d %H:%M:%S UTC");
        let mut credit = line(
            lines.len(),
            "proration",
            format!("Unused time on {} after {at}", p.from_plan),
            p.credit_minor,
        );
        credit.detail = json!({ "at": p.at, "plan": p.from_plan });
        lines.push(credit);
        let mut charge = line(
            lines.len(),
            "proration",
            format!("Remaining time on {} from {at}", p.to_plan),
            p.charge_minor,
        );
        charge.detail = json!({ "at": p.at, "plan": p.to_plan });
        lines.push(charge);
    }
    if let Some((at, credit_minor)) = input.cancellation {
        let mut credit = line(
            lines.len(),
            "proration",
            format!(
                "Unused time after cancellation at {}",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            credit_minor,
        );
        credit.detail = json!({ "at": at, "cancellation": true });
        lines.push(credit);
    }

    for (charge_row, quantity) in input.end_plan.charges.iter().zip(&input.quantities) {
        let charge: Charge = serde_json::from_value(charge_row.charge.clone())
            .map_err(|e| PricingError::InvalidCharge(e.to_string()))?;
        let rated = rate(&charge, *quantity, currency)?;
        let mut l = line(
            lines.len(),
            "usage",
            charge_row.description.clone(),
            rated.amount_minor,
        );
        l.metric = Some(charge_row.metric.clone());
        l.period_start = Some(input.period_start);
        l.period_end = Some(input.period_end);
        l.quantity = Some(quantity.normalize().to_string());
        l.unit_price = rated.unit_price.map(|p| p.normalize().to_string());
        l.detail = json!({
            "included_units": charge.included_units,
            "billable_quantity": rated.billable_quantity,
            "exact_amount": rated.exact_amount,
            "tiers": rated.tiers,
            "adjustment": rated.adjustment,
        });
        lines.push(l);
    }

    for adj in &input.adjustments {
        let delta_quantity = adj.current_quantity - adj.billed_quantity;
        if delta_quantity.is_zero() {
            continue;
        }
        let rated = rate(&adj.charge, adj.current_quantity, currency)?;
        let amount = rated
            .amount_minor
            .checked_sub(adj.billed_amount_minor)
            .ok_or(PricingError::Overflow)?;
        let mut l = line(
            lines.len(),
            "adjustment",
            format!(
                "{} — late usage for {} to {}",
                adj.description,
                adj.period_start.format("%Y-%m-%d"),
                adj.period_end.format("%Y-%m-%d")
            ),
            amount,
        );
        l.metric = Some(adj.metric.clone());
        l.period_start = Some(adj.period_start);
        l.period_end = Some(adj.period_end);
        l.quantity = Some(delta_quantity.normalize().to_string());
        l.detail = json!({
            "billed_quantity": adj.billed_quantity,
            "current_quantity": adj.current_quantity,
            "billed_amount_minor": adj.billed_amount_minor,
            "rated_amount_minor": rated.amount_minor,
        });
        lines.push(l);
    }

    let amounts: Vec<i64> = lines.iter().map(|l| l.amount_minor).collect();
    let pre = totals(&amounts, &[])?;
    let mut discounts = Vec::new();
    if let Some(coupon) = &input.coupon {
        for d in apply_discounts(pre.subtotal_minor, &[coupon], currency)? {
            if d.amount_minor == 0 {
                continue;
            }
            let mut l = line(lines.len(), "discount", d.description, d.amount_minor);
            l.detail = json!({ "coupon": d.code });
            discounts.push(d.amount_minor);
            lines.push(l);
        }
    }
    let totals = totals(&amounts, &discounts)?;
    Ok(RatedInvoice { lines, totals })
}

/// `minor` formatted as a plain decimal in major units ("49.00", "1200", "1.250").
pub fn major(minor: i64, currency: Currency) -> String {
    tollgate_pricing::to_major_units(minor, currency).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_storage::plans::{PlanChargeRow, PlanVersionRow};
    use uuid::Uuid;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn plan(name: &str, fee: i64, charges: Vec<(&str, serde_json::Value)>) -> PlanVersion {
        let id = Uuid::now_v7();
        PlanVersion {
            version: PlanVersionRow {
                id,
                tenant_id: Uuid::nil(),
                plan_code: name.to_lowercase(),
                version: 1,
                name: name.to_owned(),
                billing_interval: "month".into(),
                currency: "USD".into(),
                base_fee_minor: fee,
                trial_days: 0,
                features: vec![],
                concurrency: None,
                requests_per_minute: None,
                downgrade_grace_days: 0,
                definition: json!({}),
                created_at: Utc::now(),
            },
            quotas: vec![],
            charges: charges
                .into_iter()
                .enumerate()
                .map(|(i, (metric, charge))| PlanChargeRow {
                    plan_version_id: id,
                    metric: metric.into(),
                    position: i as i32,
                    description: metric.into(),
                    charge,
                })
                .collect(),
        }
    }

    #[test]
    fn base_fee_usage_adjustment_and_discount() {
        let pro = plan(
            "Pro",
            4900,
            vec![(
                "job.*",
                json!({"model": "per_unit", "unit_price": "0.01", "included_units": "100"}),
            )],
        );
        let charge: Charge = serde_json::from_value(pro.charges[0].charge.clone()).expect("charge");
        let coupon: Coupon = serde_json::from_value(json!({
            "code": "TEN", "kind": {"type": "percentage", "percent": "10"}, "duration": {"type": "forever"}
        }))
        .expect("coupon");
        let input = PeriodInput {
            currency: Currency::USD,
            period_start: at("2026-11-01T00:00:00Z"),
            period_end: at("2026-12-01T00:00:00Z"),
            base_plan: &pro,
            end_plan: &pro,
            prorations: vec![],
            cancellation: None,
            quantities: vec![Decimal::new(350, 0)],
            adjustments: vec![AdjustmentInput {
                period_start: at("2026-10-01T00:00:00Z"),
                period_end: at("2026-11-01T00:00:00Z"),
                metric: "job.*".into(),
                description: "Jobs".into(),
                charge,
                billed_quantity: Decimal::new(150, 0),
                billed_amount_minor: 50,
                current_quantity: Decimal::new(170, 0),
            }],
            coupon: Some(coupon),
        };
        let rated = rate_period(&input).expect("rates");
        let kinds: Vec<_> = rated.lines.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["base_fee", "usage", "adjustment", "discount"]);
        // 250 billable × 0.01 = 2.50; late 20 units = 0.20; subtotal 49 + 2.50 + 0.20 = 51.70.
        assert_eq!(rated.lines[1].amount_minor, 250);
        assert_eq!(rated.lines[2].amount_minor, 20);
        assert_eq!(rated.lines[2].quantity.as_deref(), Some("20"));
        assert_eq!(rated.totals.subtotal_minor, 5170);
        assert_eq!(rated.totals.discount_minor, -517);
        assert_eq!(rated.totals.total_minor, 4653);
    }

    #[test]
    fn prorations_and_cancellation_are_lines() {
        let basic = plan("Basic", 3000, vec![]);
        let pro = plan("Pro", 6000, vec![]);
        let input = PeriodInput {
            currency: Currency::USD,
            period_start: at("2026-11-01T00:00:00Z"),
            period_end: at("2026-12-01T00:00:00Z"),
            base_plan: &basic,
            end_plan: &pro,
            prorations: vec![ProrationInput {
                at: at("2026-11-11T00:00:00Z"),
                from_plan: "Basic".into(),
                to_plan: "Pro".into(),
                credit_minor: -2000,
                charge_minor: 4000,
            }],
            cancellation: None,
            quantities: vec![],
            adjustments: vec![],
            coupon: None,
        };
        let rated = rate_period(&input).expect("rates");
        assert_eq!(rated.totals.total_minor, 3000 - 2000 + 4000);
        assert_eq!(major(rated.totals.total_minor, Currency::USD), "50.00");
    }
}
