//! The invoice as the PDF sees it: plain, preformatted strings.
//!
//! The caller (the billing service) owns every rule about money and time: it formats amounts
//! with the currency's exponent and timestamps in the tenant's chosen style before they get
//! here. This crate only lays the strings out, so the PDF can never disagree with the JSON
//! invoice it was made from.

use serde::{Deserialize, Serialize};

/// One invoice, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceDocument {
    /// The tenant issuing the invoice; printed top left.
    pub issuer_name: String,
    /// The invoice number, e.g. `"INV-000042"`. `None` for a draft, which is titled `DRAFT`.
    pub number: Option<String>,
    /// `"draft"`, `"finalized"`, `"void"` or `"paid"`; printed as given.
    pub status: String,
    pub customer_name: String,
    /// The account's external id.
    pub customer_reference: String,
    /// ISO 4217 code, e.g. `"USD"`; printed next to every total.
    pub currency: String,
    /// Preformatted, e.g. `"2026-10-01 00:00 UTC"`.
    pub period_start: String,
    /// Preformatted, like `period_start`.
    pub period_end: String,
    /// Preformatted; omitted from the PDF when `None`.
    pub issued_at: Option<String>,
    pub lines: Vec<InvoiceLineDoc>,
    /// Preformatted money, e.g. `"49.00"`.
    pub subtotal: String,
    /// Preformatted money, printed as given (sign included, if the caller writes one).
    pub discount: String,
    /// Preformatted money.
    pub total: String,
}

/// One charge on the invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLineDoc {
    /// Wrapped onto at most three lines; the rest is cut with an ellipsis.
    pub description: String,
    pub quantity: String,
    /// Empty for lines without a unit price (flat fees, package pricing).
    #[serde(default)]
    pub unit_price: String,
    pub amount: String,
    /// Optional breakdown (graduated or volume tiers), printed indented under the line.
    #[serde(default)]
    pub tiers: Vec<TierLineDoc>,
}

/// One row of a line's tier breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLineDoc {
    /// E.g. `"1 – 1,000"` or `"First 1,000 units"`.
    pub label: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
}
