//! Graduated and volume tier arithmetic, exact in major units.
//!
//! Tiers are contiguous: tier `i` covers `(up_to[i-1], up_to[i]]`, the first one starts at 0,
//! and the last one is unbounded. [`Charge::validate`](crate::Charge::validate) guarantees
//! that shape before anything here runs.

use rust_decimal::Decimal;

use crate::{PricingError, Tier, TierBreakdown};

/// Graduated pricing: each unit is priced by the tier it falls in, and a tier's flat fee is
/// charged once when at least one unit falls in it. Returns the exact amount and one row per
/// tier touched; zero quantity touches no tier and costs zero.
pub(crate) fn graduated(
    tiers: &[Tier],
    quantity: Decimal,
) -> Result<(Decimal, Vec<TierBreakdown>), PricingError> {
    let mut rows = Vec::new();
    let mut total = Decimal::ZERO;
    let mut from = Decimal::ZERO;
    for tier in tiers {
        if quantity <= from {
            break;
        }
        let upper = tier.up_to.map_or(quantity, |up_to| up_to.min(quantity));
        let in_tier = upper - from;
        let row = breakdown(from, tier, in_tier)?;
        total = total
            .checked_add(row.amount)
            .ok_or(PricingError::Overflow)?;
        rows.push(row);
        match tier.up_to {
            Some(up_to) => from = up_to,
            None => break,
        }
    }
    Ok((total, rows))
}

/// Volume pricing: the single tier containing `quantity` prices every unit, plus its flat fee.
/// Returns the exact amount and that tier's row; zero quantity costs zero (no flat fee) and
/// has no row.
pub(crate) fn volume(
    tiers: &[Tier],
    quantity: Decimal,
) -> Result<(Decimal, Vec<TierBreakdown>), PricingError> {
    if quantity.is_zero() {
        return Ok((Decimal::ZERO, Vec::new()));
    }
    let mut from = Decimal::ZERO;
    for tier in tiers {
        match tier.up_to {
            Some(up_to) if quantity > up_to => from = up_to,
            _ => {
                let row = breakdown(from, tier, quantity)?;
                return Ok((row.amount, vec![row]));
            }
        }
    }
    Err(PricingError::InvalidCharge(
        "the last tier must be unbounded".to_owned(),
    ))
}

fn breakdown(from: Decimal, tier: &Tier, quantity: Decimal) -> Result<TierBreakdown, PricingError> {
    let amount = quantity
        .checked_mul(tier.unit_price)
        .and_then(|usage| usage.checked_add(tier.flat_fee))
        .ok_or(PricingError::Overflow)?;
    Ok(TierBreakdown {
        from,
        up_to: tier.up_to,
        quantity,
        unit_price: tier.unit_price,
        flat_fee: tier.flat_fee,
        amount,
    })
}
