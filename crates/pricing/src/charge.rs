//! Charge models (how a plan prices one billable metric) and [`rate`], which turns a period's
//! quantity of that metric into one rounded invoice-line amount.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{tiers, to_minor_units, Currency, PricingError};

/// How a charge turns a billable quantity into an exact amount in MAJOR units.
///
/// JSON is internally tagged by `model`, decimals are strings:
/// `{"model": "per_unit", "unit_price": "0.0004"}`,
/// `{"model": "graduated", "tiers": [{"up_to": "1000", "unit_price": "0"}, {"up_to": null, "unit_price": "0.01"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChargeModel {
    /// `quantity × unit_price`; the price is in major units per unit and may be fractional
    /// (`"0.0004"`).
    PerUnit {
        /// Major units per unit, >= 0.
        unit_price: Decimal,
    },
    /// Each unit is priced by the tier it falls in; a tier's flat fee is charged once when any
    /// unit falls in it. Zero quantity costs zero.
    Graduated {
        /// Ascending, contiguous, the last one unbounded.
        tiers: Vec<Tier>,
    },
    /// All units are priced at the tier the whole quantity falls in, plus that tier's flat fee.
    /// Zero quantity costs zero (no flat fee).
    Volume {
        /// Ascending, contiguous, the last one unbounded.
        tiers: Vec<Tier>,
    },
    /// `ceil(quantity / package_size)` packages at `package_price` each: with 100-unit
    /// packages, 100 units are 1 package and 101 units are 2.
    Package {
        /// Units per package, > 0.
        package_size: u64,
        /// Major units per started package, >= 0.
        package_price: Decimal,
    },
    /// The quantity is itself an amount in MAJOR units (e.g. payment volume):
    /// `quantity × rate / 100`, plus `fixed_fee` when the quantity is above zero.
    Percentage {
        /// Percent, 0..=100 (`"2.9"` is 2.9 %).
        rate: Decimal,
        /// Major units added once per period when the quantity is above zero, >= 0.
        #[serde(default)]
        fixed_fee: Option<Decimal>,
    },
}

/// One tier of a graduated or volume model. Tier `i` covers `(up_to[i-1], up_to[i]]` (the
/// first one starts at 0): a quantity equal to `up_to` is still in the tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Inclusive upper bound in units; `None` is infinity and only the last tier has it.
    pub up_to: Option<Decimal>,
    /// Major units per unit in this tier, >= 0.
    pub unit_price: Decimal,
    /// Major units charged once when the tier is used, >= 0; defaults to 0.
    #[serde(default)]
    pub flat_fee: Decimal,
}

/// A charge on one billable metric in a plan: a model, an allowance of free units, and an
/// optional per-period floor and ceiling.
///
/// JSON is flat: the model's fields sit beside the charge's own,
/// `{"model": "per_unit", "unit_price": "0.002", "included_units": "1000", "minimum_minor": 500}`.
/// Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// How billable units are priced.
    #[serde(flatten)]
    pub model: ChargeModel,
    /// Free units per period, subtracted from the quantity before the model applies (the plan
    /// allowance; what is above it is the overage). >= 0, defaults to 0.
    #[serde(default)]
    pub included_units: Decimal,
    /// Per-period floor in minor units of the invoice currency, >= 0. Applies at zero usage too.
    #[serde(default)]
    pub minimum_minor: Option<i64>,
    /// Per-period ceiling in minor units of the invoice currency, >= `minimum_minor`.
    #[serde(default)]
    pub maximum_minor: Option<i64>,
}

impl Charge {
    /// A charge on `model` with no included units, minimum or maximum.
    pub fn new(model: ChargeModel) -> Charge {
        Charge {
            model,
            included_units: Decimal::ZERO,
            minimum_minor: None,
            maximum_minor: None,
        }
    }

    /// Checks the rules [`rate`] relies on:
    /// - prices, flat fees, fixed fees and `included_units` are >= 0;
    /// - tiers: at least one, `up_to` > 0 and strictly ascending, only the last unbounded;
    /// - `package_size` > 0; percentage `rate` within 0..=100;
    /// - `minimum_minor` and `maximum_minor` >= 0, and minimum <= maximum.
    ///
    /// Errors: [`PricingError::InvalidCharge`] naming the first rule broken.
    pub fn validate(&self) -> Result<(), PricingError> {
        non_negative("included_units", self.included_units)?;
        for (name, bound) in [
            ("minimum_minor", self.minimum_minor),
            ("maximum_minor", self.maximum_minor),
        ] {
            if bound.is_some_and(|minor| minor < 0) {
                return Err(invalid(format!("{name} must not be negative")));
            }
        }
        if let (Some(minimum), Some(maximum)) = (self.minimum_minor, self.maximum_minor) {
            if minimum > maximum {
                return Err(invalid(format!(
                    "minimum_minor {minimum} is above maximum_minor {maximum}"
                )));
            }
        }
        match &self.model {
            ChargeModel::PerUnit { unit_price } => non_negative("unit_price", *unit_price),
            ChargeModel::Graduated { tiers } | ChargeModel::Volume { tiers } => {
                validate_tiers(tiers)
            }
            ChargeModel::Package {
                package_size,
                package_price,
            } => {
                if *package_size == 0 {
                    return Err(invalid("package_size must be above zero"));
                }
                non_negative("package_price", *package_price)
            }
            ChargeModel::Percentage { rate, fixed_fee } => {
                if *rate < Decimal::ZERO || *rate > Decimal::ONE_HUNDRED {
                    return Err(invalid(format!("rate {rate} is outside 0..=100")));
                }
                fixed_fee.map_or(Ok(()), |fee| non_negative("fixed_fee", fee))
            }
        }
    }
}

fn validate_tiers(tiers: &[Tier]) -> Result<(), PricingError> {
    let Some((last, bounded)) = tiers.split_last() else {
        return Err(invalid("at least one tier is required"));
    };
    if last.up_to.is_some() {
        return Err(invalid("the last tier must be unbounded (up_to: null)"));
    }
    let mut previous = Decimal::ZERO;
    for (index, tier) in tiers.iter().enumerate() {
        non_negative("tier unit_price", tier.unit_price)?;
        non_negative("tier flat_fee", tier.flat_fee)?;
        if index < bounded.len() {
            let Some(up_to) = tier.up_to else {
                return Err(invalid(format!(
                    "tier {index} is unbounded but is not the last"
                )));
            };
            if up_to <= previous {
                return Err(invalid(format!(
                    "tier {index} up_to {up_to} must be above {previous}"
                )));
            }
            previous = up_to;
        }
    }
    Ok(())
}

fn non_negative(name: &str, value: Decimal) -> Result<(), PricingError> {
    if value < Decimal::ZERO {
        return Err(invalid(format!("{name} {value} must not be negative")));
    }
    Ok(())
}

fn invalid(rule: impl Into<String>) -> PricingError {
    PricingError::InvalidCharge(rule.into())
}

/// The outcome of [`rate`]: one invoice line's quantities, exact amount and rounded amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatedCharge {
    /// The quantity as given.
    pub quantity: Decimal,
    /// `max(quantity - included_units, 0)`: what the model priced.
    pub billable_quantity: Decimal,
    /// Exact amount in major units, before rounding and before minimum/maximum.
    pub exact_amount: Decimal,
    /// `exact_amount` rounded half-even to minor units, before minimum/maximum.
    pub rounded_minor: i64,
    /// The line amount in minor units: `rounded_minor` clamped to
    /// `[minimum_minor, maximum_minor]`.
    pub amount_minor: i64,
    /// Per unit: the unit price. Volume: the price of the tier applied. Graduated: the tier's
    /// price when exactly one tier was used. `None` otherwise (mixed prices, package,
    /// percentage, or nothing priced).
    pub unit_price: Option<Decimal>,
    /// Graduated and volume: one row per tier used, in tier order; empty for other models and
    /// at zero billable quantity.
    pub tiers: Vec<TierBreakdown>,
    /// Which bound changed `rounded_minor`, if one did.
    pub adjustment: Option<MinMaxAdjustment>,
}

/// One tier's share of a graduated or volume charge, for the invoice's tier breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierBreakdown {
    /// Exclusive lower bound of the tier in units (the previous tier's `up_to`, or 0).
    pub from: Decimal,
    /// Inclusive upper bound in units; `None` is infinity.
    pub up_to: Option<Decimal>,
    /// Units priced at this tier: the units inside it (graduated) or the whole billable
    /// quantity (volume).
    pub quantity: Decimal,
    /// Major units per unit.
    pub unit_price: Decimal,
    /// Major units charged once for the tier.
    pub flat_fee: Decimal,
    /// `quantity × unit_price + flat_fee`, exact, in major units.
    pub amount: Decimal,
}

/// The per-period bound that replaced the rounded amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MinMaxAdjustment {
    /// Raised to `minimum_minor`.
    Minimum,
    /// Lowered to `maximum_minor`.
    Maximum,
}

/// Rates `quantity` (>= 0) of the metric for one period in `currency`.
///
/// Steps: validate the charge; subtract `included_units` (not below zero); apply the model
/// exactly in major units; round once, half-even, to minor units of `currency`; clamp to
/// `[minimum_minor, maximum_minor]`.
///
/// Errors: [`PricingError::InvalidCharge`] (see [`Charge::validate`]),
/// [`PricingError::NegativeQuantity`], [`PricingError::Overflow`] when the amount leaves
/// `Decimal` or `i64` minor units.
pub fn rate(
    charge: &Charge,
    quantity: Decimal,
    currency: Currency,
) -> Result<RatedCharge, PricingError> {
    charge.validate()?;
    if quantity < Decimal::ZERO {
        return Err(PricingError::NegativeQuantity);
    }
    let billable = (quantity - charge.included_units).max(Decimal::ZERO);
    let (exact_amount, unit_price, tiers) = apply_model(&charge.model, billable)?;
    let rounded_minor = to_minor_units(exact_amount, currency)?;
    let (amount_minor, adjustment) = match (charge.minimum_minor, charge.maximum_minor) {
        (Some(minimum), _) if rounded_minor < minimum => (minimum, Some(MinMaxAdjustment::Minimum)),
        (_, Some(maximum)) if rounded_minor > maximum => (maximum, Some(MinMaxAdjustment::Maximum)),
        _ => (rounded_minor, None),
    };
    Ok(RatedCharge {
        quantity,
        billable_quantity: billable,
        exact_amount,
        rounded_minor,
        amount_minor,
        unit_price,
        tiers,
        adjustment,
    })
}

type ModelOutcome = (Decimal, Option<Decimal>, Vec<TierBreakdown>);

fn apply_model(model: &ChargeModel, billable: Decimal) -> Result<ModelOutcome, PricingError> {
    match model {
        ChargeModel::PerUnit { unit_price } => {
            let amount = billable
                .checked_mul(*unit_price)
                .ok_or(PricingError::Overflow)?;
            Ok((amount, Some(*unit_price), Vec::new()))
        }
        ChargeModel::Graduated { tiers } => {
            let (amount, rows) = tiers::graduated(tiers, billable)?;
            let unit_price = match rows.as_slice() {
                [only] => Some(only.unit_price),
                _ => None,
            };
            Ok((amount, unit_price, rows))
        }
        ChargeModel::Volume { tiers } => {
            let (amount, rows) = tiers::volume(tiers, billable)?;
            let unit_price = rows.first().map(|row| row.unit_price);
            Ok((amount, unit_price, rows))
        }
        ChargeModel::Package {
            package_size,
            package_price,
        } => {
            let packages = billable
                .checked_div(Decimal::from(*package_size))
                .ok_or(PricingError::Overflow)?
                .ceil();
            let amount = packages
                .checked_mul(*package_price)
                .ok_or(PricingError::Overflow)?;
            Ok((amount, None, Vec::new()))
        }
        ChargeModel::Percentage { rate, fixed_fee } => {
            let mut amount = billable
                .checked_mul(*rate)
                .and_then(|scaled| scaled.checked_div(Decimal::ONE_HUNDRED))
                .ok_or(PricingError::Overflow)?;
            if billable > Decimal::ZERO {
                let fee = fixed_fee.unwrap_or(Decimal::ZERO);
                amount = amount.checked_add(fee).ok_or(PricingError::Overflow)?;
            }
            Ok((amount, None, Vec::new()))
        }
    }
}
