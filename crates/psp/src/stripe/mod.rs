//! Stripe: webhook verification ([`StripeVerifier`], [`signature_header`]) and the API
//! client ([`StripeClient`]) with its parameter and object types.

mod client;
mod error;
mod form;
mod types;
mod webhook;

pub use client::{StripeClient, StripeConfig, DEFAULT_API_BASE, DEFAULT_API_VERSION};
pub use error::StripeError;
pub use types::{
    ApiErrorBody, BalanceTransaction, CheckoutSession, CheckoutSessionParams, Customer,
    CustomerParams, PaymentIntent, PaymentIntentParams, Payout, PortalSession, Refund, SetupIntent,
    Subscription,
};
pub use webhook::{signature_header, StripeVerifier, DEFAULT_TOLERANCE_SECS, SIGNATURE_HEADER};
