//! Invoice totals over lines that are already rounded: nothing is rounded here.

use serde::{Deserialize, Serialize};

use crate::PricingError;

/// An invoice's three totals, in minor units of its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Totals {
    /// Sum of the charge lines (subscription fee, usage, prorations, credits).
    pub subtotal_minor: i64,
    /// Sum of the discount lines, <= 0.
    pub discount_minor: i64,
    /// `subtotal_minor + discount_minor`.
    pub total_minor: i64,
}

/// Adds up an invoice: `subtotal` = sum of `line_amounts_minor`, `discount` = sum of
/// `discount_amounts_minor`, `total = subtotal + discount`.
///
/// Lines are rounded already (one rounding per line), so the totals are exact sums. Discount
/// lines from [`apply_discounts`](crate::apply_discounts) never take the total below zero, but
/// charge lines may include credits (a downgrade's proration credit): then the subtotal, and so
/// the total, can be negative, and it is reported as it is (a credit balance), not clamped.
///
/// Errors: [`PricingError::InvalidDiscount`] when a discount amount is positive,
/// [`PricingError::Overflow`] when a sum leaves `i64`.
pub fn totals(
    line_amounts_minor: &[i64],
    discount_amounts_minor: &[i64],
) -> Result<Totals, PricingError> {
    if let Some(positive) = discount_amounts_minor.iter().find(|&&amount| amount > 0) {
        return Err(PricingError::InvalidDiscount(format!(
            "discount amount {positive} must not be positive"
        )));
    }
    let subtotal_minor = checked_sum(line_amounts_minor)?;
    let discount_minor = checked_sum(discount_amounts_minor)?;
    let total_minor = subtotal_minor
        .checked_add(discount_minor)
        .ok_or(PricingError::Overflow)?;
    Ok(Totals {
        subtotal_minor,
        discount_minor,
        total_minor,
    })
}

fn checked_sum(amounts: &[i64]) -> Result<i64, PricingError> {
    amounts
        .iter()
        .try_fold(0_i64, |sum, &amount| sum.checked_add(amount))
        .ok_or(PricingError::Overflow)
}
