//! Amounts of money: integer minor units of one currency, and the single rounding step that
//! turns an exact major-unit [`Decimal`] into them.

use std::fmt;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::{Currency, PricingError};

/// An amount in integer minor units of one currency: cents for USD, yen for JPY, fils for KWD.
/// May be negative (credits). Serializes as `{"amount_minor": 1250, "currency": "USD"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// The amount in minor units of `currency`.
    pub amount_minor: i64,
    /// The currency `amount_minor` counts in.
    pub currency: Currency,
}

impl Money {
    /// `amount_minor` minor units of `currency`.
    pub fn new(amount_minor: i64, currency: Currency) -> Money {
        Money {
            amount_minor,
            currency,
        }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money::new(0, currency)
    }

    /// `self + other`. Errors: [`PricingError::CurrencyMismatch`] when the currencies differ,
    /// [`PricingError::Overflow`] when the sum leaves `i64`.
    pub fn checked_add(self, other: Money) -> Result<Money, PricingError> {
        self.combine(other, i64::checked_add)
    }

    /// `self - other`. Errors: [`PricingError::CurrencyMismatch`] when the currencies differ,
    /// [`PricingError::Overflow`] when the difference leaves `i64`.
    pub fn checked_sub(self, other: Money) -> Result<Money, PricingError> {
        self.combine(other, i64::checked_sub)
    }

    /// The exact amount in major units, e.g. USD 1250 minor → `12.50`.
    pub fn to_major(&self) -> Decimal {
        to_major_units(self.amount_minor, self.currency)
    }

    fn combine(self, other: Money, op: fn(i64, i64) -> Option<i64>) -> Result<Money, PricingError> {
        if self.currency != other.currency {
            return Err(PricingError::CurrencyMismatch);
        }
        let amount_minor =
            op(self.amount_minor, other.amount_minor).ok_or(PricingError::Overflow)?;
        Ok(Money::new(amount_minor, self.currency))
    }
}

impl fmt::Display for Money {
    /// Same text as [`format_money`]: `USD 12.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_money(self.amount_minor, self.currency))
    }
}

/// Rounds an exact amount in MAJOR units to integer minor units of `currency`, half-even
/// (banker's rounding: a tie goes to the even neighbour, so USD 0.125 → 12, 0.135 → 14,
/// -0.125 → -12). This is the one rounding of an invoice line; see the crate docs.
///
/// Errors: [`PricingError::Overflow`] when the result does not fit in `i64`.
pub fn to_minor_units(major: Decimal, currency: Currency) -> Result<i64, PricingError> {
    let scale = Decimal::from(10_i64.pow(currency.exponent()));
    major
        .checked_mul(scale)
        .ok_or(PricingError::Overflow)?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .ok_or(PricingError::Overflow)
}

/// The exact major-unit value of `minor` minor units of `currency`, carrying the currency's
/// number of decimals: USD 1250 → `12.50`, JPY 1200 → `1200`, KWD 1250 → `1.250`. Never
/// loses precision; [`to_minor_units`] turns it back into the same `minor`.
pub fn to_major_units(minor: i64, currency: Currency) -> Decimal {
    // Exponents are at most 4, far below Decimal's maximum scale of 28.
    Decimal::new(minor, currency.exponent())
}

/// Formats an amount for people as `CODE amount` with exactly the currency's decimals:
/// `"USD 12.50"`, `"JPY 1200"`, `"KWD 1.250"`, `"USD -0.05"`. No thousands separators.
pub fn format_money(minor: i64, currency: Currency) -> String {
    format!("{} {}", currency.code(), to_major_units(minor, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn rounds_half_even_once() {
        let cases = [
            ("0.125", Currency::USD, 12),
            ("0.135", Currency::USD, 14),
            ("0.1250001", Currency::USD, 13),
            ("-0.125", Currency::USD, -12),
            ("-0.135", Currency::USD, -14),
            ("12.5", Currency::JPY, 12),
            ("13.5", Currency::JPY, 14),
            ("1.2345", Currency::KWD, 1234),
            ("1.2355", Currency::KWD, 1236),
            ("0.0004", Currency::USD, 0),
            ("12.50", Currency::USD, 1250),
        ];
        for (major, currency, minor) in cases {
            assert_eq!(
                to_minor_units(d(major), currency),
                Ok(minor),
                "{major} {currency}"
            );
        }
    }

    #[test]
    fn too_large_amounts_overflow() {
        assert_eq!(
            to_minor_units(d("100000000000000000"), Currency::USD),
            Err(PricingError::Overflow)
        );
        assert_eq!(
            to_minor_units(Decimal::MAX, Currency::KWD),
            Err(PricingError::Overflow)
        );
        assert_eq!(
            to_minor_units(d("92233720368547758.07"), Currency::USD),
            Ok(i64::MAX)
        );
    }

    #[test]
    fn formats_with_the_currency_decimals() {
        assert_eq!(format_money(1250, Currency::USD), "USD 12.50");
        assert_eq!(format_money(1200, Currency::JPY), "JPY 1200");
        assert_eq!(format_money(1250, Currency::KWD), "KWD 1.250");
        assert_eq!(format_money(-5, Currency::USD), "USD -0.05");
        assert_eq!(format_money(0, Currency::EUR), "EUR 0.00");
        assert_eq!(Money::new(7, Currency::KWD).to_string(), "KWD 0.007");
    }

    #[test]
    fn checked_arithmetic_refuses_mixed_currencies_and_overflow() {
        let usd = Money::new(1000, Currency::USD);
        assert_eq!(
            usd.checked_add(Money::new(250, Currency::USD)),
            Ok(Money::new(1250, Currency::USD))
        );
        assert_eq!(
            usd.checked_sub(Money::new(1250, Currency::USD)),
            Ok(Money::new(-250, Currency::USD))
        );
        assert_eq!(
            usd.checked_add(Money::new(1, Currency::EUR)),
            Err(PricingError::CurrencyMismatch)
        );
        assert_eq!(
            Money::new(i64::MAX, Currency::USD).checked_add(Money::new(1, Currency::USD)),
            Err(PricingError::Overflow)
        );
        assert_eq!(
            Money::new(i64::MIN, Currency::USD).checked_sub(Money::new(1, Currency::USD)),
            Err(PricingError::Overflow)
        );
    }

    #[test]
    fn money_serializes_with_the_code() {
        let money = Money::new(1250, Currency::USD);
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(json, r#"{"amount_minor":1250,"currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
    }
}
