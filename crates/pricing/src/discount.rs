//! Coupons and the order in which they discount an invoice subtotal.
//!
//! Order (documented once, in the crate docs too): every percentage coupon first, each on the
//! amount left by the discounts before it, in the order given; then every fixed-amount coupon
//! in the order given. No discount takes the amount below zero, and each discount line is
//! rounded half-even once.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::{format_money, Currency, PricingError};

/// What a coupon takes off. JSON is internally tagged by `type`:
/// `{"type": "percentage", "percent": "20"}`, `{"type": "fixed_amount", "amount_minor": 500}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DiscountKind {
    /// A share of the running amount.
    Percentage {
        /// Percent, 0..=100 (`"12.5"` is 12.5 %).
        percent: Decimal,
    },
    /// A fixed amount off.
    FixedAmount {
        /// Minor units of the invoice's currency, >= 0; the caller applies a coupon only to
        /// invoices in the currency it was issued in.
        amount_minor: i64,
    },
}

/// For how many billing periods after redemption a coupon applies. JSON is internally tagged
/// by `type`: `{"type": "once"}`, `{"type": "repeating", "periods": 3}`, `{"type": "forever"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CouponDuration {
    /// The first period only.
    Once,
    /// The first `periods` periods (>= 1).
    Repeating {
        /// Number of periods, >= 1.
        periods: u32,
    },
    /// Every period.
    Forever,
}

/// A redeemable discount: a code, what it takes off and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coupon {
    /// The code customers type, shown on the discount line; not empty.
    pub code: String,
    /// What it takes off.
    pub kind: DiscountKind,
    /// For how many periods.
    pub duration: CouponDuration,
}

impl Coupon {
    /// Whether the coupon discounts the period `period_index`, counted from 0 for the first
    /// period after redemption: `Once` → only 0, `Repeating { periods: n }` → 0..n,
    /// `Forever` → all.
    pub fn applies_in_period(&self, period_index: u32) -> bool {
        match self.duration {
            CouponDuration::Once => period_index == 0,
            CouponDuration::Repeating { periods } => period_index < periods,
            CouponDuration::Forever => true,
        }
    }

    /// Checks the code is not blank, a percentage is within 0..=100, a fixed amount is >= 0
    /// and a repeating duration lasts at least one period.
    ///
    /// Errors: [`PricingError::InvalidDiscount`] naming the coupon and the rule.
    pub fn validate(&self) -> Result<(), PricingError> {
        let invalid =
            |rule: &str| PricingError::InvalidDiscount(format!("coupon `{}`: {rule}", self.code));
        if self.code.trim().is_empty() {
            return Err(invalid("code must not be blank"));
        }
        match self.kind {
            DiscountKind::Percentage { percent }
                if percent < Decimal::ZERO || percent > Decimal::ONE_HUNDRED =>
            {
                return Err(invalid("percent must be within 0..=100"));
            }
            DiscountKind::FixedAmount { amount_minor } if amount_minor < 0 => {
                return Err(invalid("amount_minor must not be negative"));
            }
            _ => {}
        }
        if self.duration == (CouponDuration::Repeating { periods: 0 }) {
            return Err(invalid("a repeating coupon lasts at least one period"));
        }
        Ok(())
    }
}

/// One discount on an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscountLine {
    /// The coupon's code.
    pub code: String,
    /// The discount in minor units, <= 0 (0 when nothing was left to discount).
    pub amount_minor: i64,
    /// What the coupon promises, for people: `"20% off"`, `"USD 5.00 off"`.
    pub description: String,
}

/// Applies `coupons` to `subtotal_minor` (minor units of `currency`) and returns one line per
/// coupon, in the order they were applied: percentage coupons first (each on the running
/// amount after the previous discounts, in the given order), then fixed amounts (in the given
/// order). Each percentage discount is rounded half-even once; a discount never takes the
/// running amount below zero, and a subtotal at or below zero gets zero-amount lines.
///
/// Whether a coupon still applies this period ([`Coupon::applies_in_period`]) is for the
/// caller to decide before calling.
///
/// Errors: [`PricingError::InvalidDiscount`] (see [`Coupon::validate`]),
/// [`PricingError::Overflow`].
pub fn apply_discounts(
    subtotal_minor: i64,
    coupons: &[&Coupon],
    currency: Currency,
) -> Result<Vec<DiscountLine>, PricingError> {
    for coupon in coupons {
        coupon.validate()?;
    }
    let is_percentage = |coupon: &&&Coupon| matches!(coupon.kind, DiscountKind::Percentage { .. });
    let percentages = coupons.iter().filter(is_percentage);
    let fixed_amounts = coupons.iter().filter(|coupon| !is_percentage(coupon));

    let mut remaining = subtotal_minor.max(0);
    let mut lines = Vec::with_capacity(coupons.len());
    for coupon in percentages.chain(fixed_amounts) {
        let (discount, description) = match coupon.kind {
            DiscountKind::Percentage { percent } => (
                percent_of(remaining, percent)?,
                format!("{}% off", percent.normalize()),
            ),
            DiscountKind::FixedAmount { amount_minor } => (
                amount_minor.min(remaining),
                format!("{} off", format_money(amount_minor, currency)),
            ),
        };
        remaining = remaining
            .checked_sub(discount)
            .ok_or(PricingError::Overflow)?;
        lines.push(DiscountLine {
            code: coupon.code.clone(),
            amount_minor: -discount,
            description,
        });
    }
    Ok(lines)
}

/// `round_half_even(amount_minor × percent / 100)`, for `amount_minor >= 0` and
/// `percent` in 0..=100, so the result is within `0..=amount_minor`.
fn percent_of(amount_minor: i64, percent: Decimal) -> Result<i64, PricingError> {
    Decimal::from(amount_minor)
        .checked_mul(percent)
        .and_then(|scaled| scaled.checked_div(Decimal::ONE_HUNDRED))
        .ok_or(PricingError::Overflow)?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .ok_or(PricingError::Overflow)
}
