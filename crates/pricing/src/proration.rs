//! Proration of a period fee by exact seconds, and the credit/charge pair of a mid-period
//! plan change (spec, Billing: "plan change mid-cycle is prorated").
//!
//! Instants are taken at whole-second resolution (sub-second parts are dropped), so a 30-day
//! period is exactly 2 592 000 s whatever the clock's precision.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::PricingError;

/// The share of `amount_minor` for the time `[from, to)` spends inside the period
/// `[period_start, period_end)`:
///
/// `prorated = round_half_even(amount_minor × used_seconds / period_seconds)`
///
/// computed exactly in `i128` and rounded once. An interval outside the period gives 0;
/// `from = period_start, to = period_end` gives `amount_minor` back. Negative amounts
/// (credits) round symmetrically.
///
/// Errors: [`PricingError::InvalidPeriod`] when `period_end <= period_start` or
/// `to < from` (in whole seconds).
pub fn prorate(
    amount_minor: i64,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, PricingError> {
    let period_seconds = period_seconds(period_start, period_end)?;
    if to.timestamp() < from.timestamp() {
        return Err(PricingError::InvalidPeriod);
    }
    let used_start = from.timestamp().max(period_start.timestamp());
    let used_end = to.timestamp().min(period_end.timestamp());
    let used_seconds = (used_end - used_start).max(0);
    scale(amount_minor, used_seconds, period_seconds)
}

/// A plan change at `at` inside the period `[period_start, period_end)`: the unused rest of
/// the old fee comes back as a credit and the rest of the period is charged at the new fee.
///
/// `credit_minor = -prorate(old_fee_minor, [at, period_end))`,
/// `charge_minor = prorate(new_fee_minor, [at, period_end))`, `net_minor` = their sum:
/// positive for an upgrade, negative for a downgrade. A change at `period_start` credits and
/// charges the full fees.
///
/// Errors: [`PricingError::InvalidPeriod`] when the period is empty or `at` is outside
/// `[period_start, period_end)`; [`PricingError::NegativeAmount`] when a fee is below zero;
/// [`PricingError::Overflow`] when the net leaves `i64`.
pub fn plan_change_proration(
    old_fee_minor: i64,
    new_fee_minor: i64,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<PlanChangeProration, PricingError> {
    let seconds_in_period = period_seconds(period_start, period_end)?;
    if at.timestamp() < period_start.timestamp() || at.timestamp() >= period_end.timestamp() {
        return Err(PricingError::InvalidPeriod);
    }
    if old_fee_minor < 0 || new_fee_minor < 0 {
        return Err(PricingError::NegativeAmount);
    }
    let seconds_remaining = period_end.timestamp() - at.timestamp();
    let credit_minor = -scale(old_fee_minor, seconds_remaining, seconds_in_period)?;
    let charge_minor = scale(new_fee_minor, seconds_remaining, seconds_in_period)?;
    let net_minor = credit_minor
        .checked_add(charge_minor)
        .ok_or(PricingError::Overflow)?;
    Ok(PlanChangeProration {
        credit_minor,
        charge_minor,
        net_minor,
        seconds_remaining,
        seconds_in_period,
    })
}

/// The two invoice lines of a plan change, in minor units, with the seconds they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlanChangeProration {
    /// Unused part of the old fee, as a credit (<= 0).
    pub credit_minor: i64,
    /// Rest of the period at the new fee (>= 0).
    pub charge_minor: i64,
    /// `credit_minor + charge_minor`; negative for a downgrade.
    pub net_minor: i64,
    /// Seconds from the change to the end of the period.
    pub seconds_remaining: i64,
    /// Seconds in the whole period.
    pub seconds_in_period: i64,
}

fn period_seconds(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<i64, PricingError> {
    let seconds = end.timestamp() - start.timestamp();
    if seconds <= 0 {
        return Err(PricingError::InvalidPeriod);
    }
    Ok(seconds)
}

/// `round_half_even(amount × part / whole)` for `0 <= part <= whole`, `whole > 0`, exact in
/// `i128` (|amount × part| < 2^63 × 2^45). The result's magnitude is at most `|amount|`.
fn scale(amount: i64, part: i64, whole: i64) -> Result<i64, PricingError> {
    let rounded = div_round_half_even(i128::from(amount) * i128::from(part), i128::from(whole));
    i64::try_from(rounded).map_err(|_| PricingError::Overflow)
}

/// `numerator / denominator` rounded to the nearest integer, ties to even; `denominator > 0`.
fn div_round_half_even(numerator: i128, denominator: i128) -> i128 {
    let quotient = numerator.div_euclid(denominator);
    let remainder = numerator.rem_euclid(denominator);
    // quotient + remainder/denominator with 0 <= remainder < denominator: compare the
    // fraction to one half without dividing.
    match (2 * remainder).cmp(&denominator) {
        std::cmp::Ordering::Less => quotient,
        std::cmp::Ordering::Greater => quotient + 1,
        std::cmp::Ordering::Equal if quotient % 2 == 0 => quotient,
        std::cmp::Ordering::Equal => quotient + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::div_round_half_even;

    #[test]
    fn integer_division_rounds_half_to_even() {
        let cases = [
            (5, 2, 2),
            (7, 2, 4),
            (-5, 2, -2),
            (-7, 2, -4),
            (1, 3, 0),
            (2, 3, 1),
            (-1, 3, 0),
            (-2, 3, -1),
            (10, 5, 2),
            (0, 7, 0),
            (-3, 2, -2),
            (3, 2, 2),
        ];
        for (numerator, denominator, expected) in cases {
            assert_eq!(
                div_round_half_even(numerator, denominator),
                expected,
                "{numerator}/{denominator}"
            );
        }
    }
}
