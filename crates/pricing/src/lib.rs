//! Tollgate's pricing engine: turns a period's metered quantities, plan fees, plan changes and
//! coupons into invoice-line amounts. Pure functions, no I/O.
//!
//! # Money and rounding
//! Money is integer minor units plus an ISO 4217 currency ([`Money`], [`Currency`]): cents for
//! USD, yen for JPY, fils for KWD. Prices inside a [`Charge`] are [`Decimal`]s in MAJOR units
//! and may be fractional (`"0.0004"` USD per call), as the spec's Billing section asks:
//! "unit prices may be fractional, rounded once per invoice line, half-even".
//!
//! So every amount is computed exactly and rounded to minor units exactly once per invoice
//! line, half-even (banker's rounding: a tie goes to the even neighbour, USD 0.125 → 12 cents,
//! 0.135 → 14 cents), by [`to_minor_units`]:
//! - a usage line: [`rate`] rounds the charge's exact amount once, then clamps it to the
//!   charge's per-period minimum/maximum (already whole minor units);
//! - a proration line: [`prorate`] rounds `amount × seconds / seconds` once;
//! - a discount line: [`apply_discounts`] rounds each percentage discount once;
//! - [`totals`] adds rounded lines and rounds nothing.
//!
//! # Proration
//! By exact whole seconds:
//!
//! `prorated = round_half_even(amount_minor × used_seconds / period_seconds)`
//!
//! where `used = [from, to) ∩ [period_start, period_end)`. A plan change at `at`
//! ([`plan_change_proration`]) credits the old fee for `[at, period_end)` and charges the new
//! fee for the same span; upgrades net positive, downgrades negative.
//!
//! # Discount order
//! All percentage coupons first, each on the running amount left by the discounts before it,
//! in the order given; then all fixed-amount coupons, in the order given. No discount takes the
//! amount below zero.
//!
//! # Example
//! ```
//! use rust_decimal::Decimal;
//! use tollgate_pricing::{rate, Charge, ChargeModel, Currency};
//!
//! // 1000 calls included, then USD 0.0004 per call.
//! let mut charge = Charge::new(ChargeModel::PerUnit { unit_price: "0.0004".parse()? });
//! charge.included_units = Decimal::from(1000);
//! let rated = rate(&charge, Decimal::from(51_250), Currency::USD)?;
//! assert_eq!(rated.exact_amount, "20.1000".parse()?); // 50 250 × 0.0004
//! assert_eq!(rated.amount_minor, 2010);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod charge;
mod currency;
mod discount;
mod error;
mod invoice;
mod money;
mod proration;
mod tiers;

pub use charge::{rate, Charge, ChargeModel, MinMaxAdjustment, RatedCharge, Tier, TierBreakdown};
pub use currency::Currency;
pub use discount::{apply_discounts, Coupon, CouponDuration, DiscountKind, DiscountLine};
pub use error::PricingError;
pub use invoice::{totals, Totals};
pub use money::{format_money, to_major_units, to_minor_units, Money};
pub use proration::{plan_change_proration, prorate, PlanChangeProration};
/// Re-exported so callers build prices with the same `Decimal` this crate uses.
pub use rust_decimal::Decimal;
