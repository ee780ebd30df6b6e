//! The one error type of the pricing engine.

/// Why a pricing computation was refused. Nothing here is retryable: every variant names
/// input that has to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The code is not an ISO 4217 currency with minor units (funds and metals such as `XAU`
    /// are refused too). Carries the code as given.
    #[error("unknown currency code `{0}`")]
    UnknownCurrency(String),
    /// A [`Charge`](crate::Charge) breaks a rule listed on
    /// [`Charge::validate`](crate::Charge::validate); the text names the rule.
    #[error("invalid charge: {0}")]
    InvalidCharge(String),
    /// A [`Coupon`](crate::Coupon) breaks a rule listed on
    /// [`Coupon::validate`](crate::Coupon::validate), or a discount amount handed to
    /// [`totals`](crate::totals) is positive; the text names the rule.
    #[error("invalid discount: {0}")]
    InvalidDiscount(String),
    /// A quantity to rate was below zero.
    #[error("quantity must not be negative")]
    NegativeQuantity,
    /// A fee to prorate was below zero (credits are computed, never passed in).
    #[error("fee must not be negative")]
    NegativeAmount,
    /// The period is empty or reversed (`end <= start`, in whole seconds), an interval ends
    /// before it starts, or a plan change falls outside `[period_start, period_end)`.
    #[error("invalid billing period or interval")]
    InvalidPeriod,
    /// An amount left the range of `i64` minor units or of `Decimal`.
    #[error("amount overflow")]
    Overflow,
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch")]
    CurrencyMismatch,
}
