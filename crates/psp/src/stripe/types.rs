//! Request parameters and response objects of the Stripe API calls Tollgate makes, with the
//! fields Stripe documents for API version [`super::DEFAULT_API_VERSION`]
//! (<https://docs.stripe.com/api>). Amounts are `i64` minor units (cents, yen …); currencies are
//! lower-case ISO 4217 on Stripe's wire (`"usd"`); timestamps are unix seconds.
//!
//! Objects derive `Serialize` too, so a fake Stripe in tests can answer with them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::form::Form;

/// `POST /v1/customers` (<https://docs.stripe.com/api/customers/create>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerParams {
    pub email: Option<String>,
    pub name: Option<String>,
    /// Sent as `metadata[key]=value`; Tollgate puts `tollgate_tenant`, `tollgate_account`.
    pub metadata: BTreeMap<String, String>,
}

impl CustomerParams {
    pub(crate) fn to_form(&self) -> Form {
        let mut form = Form::new();
        form.opt("email", self.email.as_deref())
            .opt("name", self.name.as_deref())
            .map("metadata", &self.metadata);
        form
    }
}

/// A Stripe customer (<https://docs.stripe.com/api/customers/object>), `cus_…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/checkout/sessions` (<https://docs.stripe.com/api/checkout/sessions/create>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckoutSessionParams {
    /// The Stripe customer (`cus_…`) the session is for.
    pub customer: String,
    /// `setup` to collect a payment method for later off-session charges (Tollgate's use);
    /// `payment` or `subscription` are Stripe's other modes.
    pub mode: String,
    /// Lower-case ISO 4217. Stripe requires it in `setup` mode unless payment method types
    /// are listed (<https://docs.stripe.com/payments/save-and-reuse?platform=checkout>).
    pub currency: Option<String>,
    /// Where Stripe sends the customer afterwards; may contain `{CHECKOUT_SESSION_ID}`.
    pub success_url: String,
    pub cancel_url: String,
    /// Echoed back on the session and its `checkout.session.completed` event.
    pub client_reference_id: Option<String>,
    /// Sent as `metadata[key]=value` on the session and, in `setup` mode, on the SetupIntent
    /// it creates (`setup_intent_data[metadata][key]`).
    pub metadata: BTreeMap<String, String>,
}

impl CheckoutSessionParams {
    pub(crate) fn to_form(&self) -> Form {
        let mut form = Form::new();
        form.push("customer", &self.customer)
            .push("mode", &self.mode)
            .opt("currency", self.currency.as_deref())
            .push("success_url", &self.success_url)
            .push("cancel_url", &self.cancel_url)
            .opt("client_reference_id", self.client_reference_id.as_deref())
            .map("metadata", &self.metadata);
        if self.mode == "setup" {
            form.map("setup_intent_data[metadata]", &self.metadata);
        }
        form
    }
}

/// A Checkout Session (<https://docs.stripe.com/api/checkout/sessions/object>), `cs_…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    /// The page to send the customer to; `None` once the session is complete or expired.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub customer: Option<String>,
    /// `seti_…` in `setup` mode.
    #[serde(default)]
    pub setup_intent: Option<String>,
    /// `sub_…` in `subscription` mode.
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
}

/// A customer-portal session (<https://docs.stripe.com/api/customer_portal/sessions/object>),
/// `bps_…`: `url` is the short-lived "manage subscription" link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalSession {
    pub id: String,
    pub url: String,
}

/// `POST /v1/payment_intents` (<https://docs.stripe.com/api/payment_intents/create>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentIntentParams {
    /// Minor units of `currency`, > 0.
    pub amount: i64,
    /// Lower-case ISO 4217 (`"usd"`).
    pub currency: String,
    pub customer: Option<String>,
    /// `pm_…` to charge; with `confirm` the charge is attempted at once.
    pub payment_method: Option<String>,
    /// Confirm on creation (`confirm=true`). Sent as `true`/`false` always.
    pub confirm: bool,
    /// The customer is not present (`off_session=true`, a saved card charged by Tollgate).
    /// Stripe only accepts it with `confirm`, so it is sent only then
    /// (<https://docs.stripe.com/api/payment_intents/create#create_payment_intent-off_session>).
    pub off_session: bool,
    pub description: Option<String>,
    /// Sent as `metadata[key]=value`; Tollgate puts `tollgate_tenant`, `tollgate_account`,
    /// `tollgate_invoice`.
    pub metadata: BTreeMap<String, String>,
}

impl PaymentIntentParams {
    pub(crate) fn to_form(&self) -> Form {
        let mut form = Form::new();
        form.push("amount", self.amount.to_string())
            .push("currency", &self.currency)
            .opt("customer", self.customer.as_deref())
            .opt("payment_method", self.payment_method.as_deref())
            .push("confirm", bool_str(self.confirm))
            .opt("description", self.description.as_deref())
            .map("metadata", &self.metadata)
            // Dynamic payment methods; a server-side confirmation has no page to redirect to,
            // so methods needing a redirect are excluded (no `return_url` required).
            .push("automatic_payment_methods[enabled]", "true");
        if self.confirm {
            form.push("automatic_payment_methods[allow_redirects]", "never");
            if self.off_session {
                form.push("off_session", "true");
            }
        }
        form
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// A PaymentIntent (<https://docs.stripe.com/api/payment_intents/object>), `pi_…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    /// `requires_payment_method` | `requires_confirmation` | `requires_action` | `processing` |
    /// `requires_capture` | `canceled` | `succeeded`.
    pub status: String,
    /// Minor units.
    pub amount: i64,
    /// Minor units actually collected.
    #[serde(default)]
    pub amount_received: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Why the last attempt failed (a card decline …), if it did.
    #[serde(default)]
    pub last_payment_error: Option<ApiErrorBody>,
    /// `ch_…` of the latest charge.
    #[serde(default)]
    pub latest_charge: Option<String>,
}

/// A subscription (<https://docs.stripe.com/api/subscriptions/object>), `sub_…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    /// `incomplete` | `incomplete_expired` | `trialing` | `active` | `past_due` | `canceled` |
    /// `unpaid` | `paused`.
    pub status: String,
    pub customer: String,
    /// Unix seconds (on the subscription up to API version 2025-02-24).
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
}

/// A refund (<https://docs.stripe.com/api/refunds/object>), `re_…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    /// `pending` | `requires_action` | `succeeded` | `failed` | `canceled`.
    pub status: String,
    /// Minor units.
    pub amount: i64,
    #[serde(default)]
    pub payment_intent: Option<String>,
}

/// A SetupIntent (<https://docs.stripe.com/api/setup_intents/object>), `seti_…`: what a
/// Checkout Session in `setup` mode leaves behind; `payment_method` is the saved card to charge
/// off-session later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupIntent {
    pub id: String,
    /// `succeeded` once the payment method is saved.
    pub status: String,
    #[serde(default)]
    pub customer: Option<String>,
    /// `pm_…`.
    #[serde(default)]
    pub payment_method: Option<String>,
}

/// A payout to the platform's bank account (<https://docs.stripe.com/api/payouts/object>),
/// `po_…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub id: String,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// `paid` | `pending` | `in_transit` | `canceled` | `failed`.
    pub status: String,
    /// Unix seconds: when the money is expected in the bank.
    pub arrival_date: i64,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
}

/// A balance transaction (<https://docs.stripe.com/api/balance_transactions/object>),
/// `txn_…`: one movement of the Stripe balance, e.g. a charge inside a payout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceTransaction {
    pub id: String,
    /// Gross, minor units (negative for money leaving the balance).
    pub amount: i64,
    /// Stripe's fees, minor units.
    #[serde(default)]
    pub fee: i64,
    /// `amount - fee`, minor units.
    #[serde(default)]
    pub net: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// `charge` | `refund` | `payout` | `stripe_fee` | `adjustment` | ….
    #[serde(rename = "type")]
    pub r#type: String,
    /// The object that caused it (`ch_…`, `re_…`, `po_…`).
    #[serde(default)]
    pub source: Option<String>,
}

/// The `error` object of a Stripe error response (<https://docs.stripe.com/api/errors>):
/// `{"error": {"type", "code", "decline_code", "message", "param", "payment_intent"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// `api_error` | `card_error` | `idempotency_error` | `invalid_request_error`.
    #[serde(rename = "type", default)]
    pub r#type: String,
    /// E.g. `card_declined`, `resource_missing` (<https://docs.stripe.com/error-codes>).
    #[serde(default)]
    pub code: Option<String>,
    /// For card errors, the issuer's reason, e.g. `insufficient_funds`
    /// (<https://docs.stripe.com/declines/codes>).
    #[serde(default)]
    pub decline_code: Option<String>,
    /// Human-readable; may be shown to the customer for card errors.
    #[serde(default)]
    pub message: Option<String>,
    /// The parameter the error is about.
    #[serde(default)]
    pub param: Option<String>,
    /// The PaymentIntent a failed confirmation left behind (card errors on
    /// `POST /v1/payment_intents`), boxed because a PaymentIntent holds an error in turn.
    #[serde(default)]
    pub payment_intent: Option<Box<PaymentIntent>>,
}

/// A page of a list endpoint (<https://docs.stripe.com/api/pagination>).
#[derive(Debug, Deserialize)]
pub(crate) struct ListPage<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(form: &Form) -> Vec<(String, String)> {
        form.pairs().to_vec()
    }

    #[test]
    fn payment_intent_form() {
        let p = PaymentIntentParams {
            amount: 1999,
            currency: "usd".into(),
            customer: Some("cus_1".into()),
            payment_method: Some("pm_1".into()),
            confirm: true,
            off_session: true,
            description: None,
            metadata: BTreeMap::from([("tollgate_invoice".into(), "inv-1".into())]),
        };
        let pairs = pairs(&p.to_form());
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("amount"), Some("1999"));
        assert_eq!(get("currency"), Some("usd"));
        assert_eq!(get("customer"), Some("cus_1"));
        assert_eq!(get("payment_method"), Some("pm_1"));
        assert_eq!(get("confirm"), Some("true"));
        assert_eq!(get("off_session"), Some("true"));
        assert_eq!(get("metadata[tollgate_invoice]"), Some("inv-1"));
        assert_eq!(get("description"), None);

        let unconfirmed = PaymentIntentParams {
            confirm: false,
            off_session: true,
            ..p
        };
        let pairs = super::super::form::tests::keys(&unconfirmed.to_form());
        assert!(pairs.contains(&"confirm".to_owned()));
        assert!(!pairs.contains(&"off_session".to_owned()));
    }

    #[test]
    fn error_body_with_payment_intent_parses() {
        let raw = r#"{"error":{"type":"card_error","code":"card_declined",
            "decline_code":"insufficient_funds","message":"Your card has insufficient funds.",
            "payment_intent":{"id":"pi_1","object":"payment_intent","status":"requires_payment_method",
              "amount":1999,"currency":"usd","created":1700000000,
              "last_payment_error":{"type":"card_error","code":"card_declined"},
              "extra_field_we_ignore":{"nested":true}}}}"#;
        #[derive(Deserialize)]
        struct Wrapper {
            error: ApiErrorBody,
        }
        let w: Wrapper = serde_json::from_str(raw).unwrap();
        let pi = w.error.payment_intent.unwrap();
        assert_eq!(pi.id, "pi_1");
        assert_eq!(
            pi.last_payment_error.unwrap().code.as_deref(),
            Some("card_declined")
        );
        assert_eq!(w.error.decline_code.as_deref(), Some("insufficient_funds"));
    }
}
