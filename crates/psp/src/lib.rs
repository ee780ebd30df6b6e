//! Tollgate's payment-service-provider (PSP) boundary: verifying the webhooks a PSP sends
//! and calling the PSP's API.
//!
//! - [`WebhookVerifier`] is the PSP-neutral contract the webhook service runs every inbound
//!   request through: it checks the signature over the raw body and returns an
//!   [`InboundEvent`] or a [`VerifyError`] (stable code + HTTP status). Nothing is stored
//!   before it says yes.
//! - [`stripe`] implements it for Stripe (`Stripe-Signature`, timestamped HMAC-SHA256) and
//!   holds the Stripe API client ([`stripe::StripeClient`]).
//! - [`razorpay`] implements it for Razorpay (`X-Razorpay-Signature`, HMAC-SHA256 of the
//!   body), showing a second PSP is a new module, not a rewrite (issue 5, Build 1).
//!
//! Money is always `i64` minor units plus a currency; timestamps on the PSPs' wires are unix
//! seconds and become [`chrono::DateTime<Utc>`] here.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod razorpay;
pub mod stripe;

mod hmac_sha256;

/// A secret (webhook signing secret, API key). `Debug` and `Display` print `[redacted]` so it
/// never reaches a log by accident; [`SecretString::expose`] hands out the value where it is
/// needed. Deserializes from a plain string (config files, environment variables).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `true` when no secret is set (an empty string).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Compares in constant time (for equal lengths), so comparing secrets leaks nothing.
impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for SecretString {}

impl From<String> for SecretString {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl From<&str> for SecretString {
    fn from(secret: &str) -> Self {
        Self(secret.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The PSPs Tollgate speaks to. On the wire (routing keys `psp.{psp}.{event_type}`, the
/// `psp_events.psp` column, URLs `/webhooks/{psp}`) it is [`PspKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PspKind {
    Stripe,
    Razorpay,
}

impl PspKind {
    /// `"stripe"` | `"razorpay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Razorpay => "razorpay",
        }
    }
}

impl fmt::Display for PspKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`PspKind::from_str`]: the name is not a PSP Tollgate knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown PSP `{0}` (expected `stripe` or `razorpay`)")]
pub struct UnknownPsp(pub String);

impl FromStr for PspKind {
    type Err = UnknownPsp;

    /// Accepts exactly `stripe` or `razorpay` (lower-case, as on the wire).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stripe" => Ok(Self::Stripe),
            "razorpay" => Ok(Self::Razorpay),
            other => Err(UnknownPsp(other.to_owned())),
        }
    }
}

/// A webhook event whose signature checked out, with the fields every PSP event has pulled
/// out of the body.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    pub psp: PspKind,
    /// The PSP's event id: Stripe `id` (`evt_…`), Razorpay header `X-Razorpay-Event-Id`.
    /// Unique per PSP; the webhook service deduplicates on `(psp, event_id)`.
    pub event_id: String,
    /// The PSP's event type: Stripe `type` (`invoice.payment_failed`), Razorpay `event`
    /// (`payment.captured`).
    pub event_type: String,
    /// When the PSP created the event: Stripe `created`, Razorpay `created_at` (unix seconds
    /// on the wire).
    pub created: DateTime<Utc>,
    /// Stripe `livemode`; Razorpay events do not say, see [`razorpay::RazorpayVerifier`].
    pub livemode: bool,
    /// The object the event is about, when the body names it: Stripe `data.object.id`,
    /// Razorpay `payload.<entity>.entity.id`.
    pub object_id: Option<String>,
    /// The whole body, parsed.
    pub payload: serde_json::Value,
}

/// Checks one PSP's webhook signatures. Implementations are cheap to share (`Arc<dyn
/// WebhookVerifier>`) and do no I/O.
pub trait WebhookVerifier: Send + Sync {
    /// The PSP this verifier is for.
    fn psp(&self) -> PspKind;

    /// Verifies a request and parses its body.
    ///
    /// `header(name)` returns a request header's value; names are matched case-insensitively
    /// by the caller (HTTP header names are case-insensitive, RFC 9110 §5.1). `body` is the
    /// raw request body exactly as received: signatures are over bytes, so it must not be
    /// re-serialized. `now` is the verifier's clock (tests pass a fixed instant).
    ///
    /// # Errors
    /// A [`VerifyError`]; the request must then be refused with [`VerifyError::status`] and
    /// nothing stored.
    fn verify(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<InboundEvent, VerifyError>;
}

/// Why a webhook request was refused. Each variant has a stable machine code
/// ([`VerifyError::code`]) and an HTTP status ([`VerifyError::status`]); the `Display` text is
/// safe to return to the caller (it never contains a secret or an expected signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature header is absent. 400 `MISSING_SIGNATURE`.
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    /// The signature header is present but not in the PSP's format (empty, no timestamp,
    /// non-numeric or duplicate timestamp, a signature that is not hex …).
    /// 400 `MALFORMED_SIGNATURE`.
    #[error("malformed signature header: {0}")]
    MalformedHeader(String),
    /// No signature in the header matches the body under any configured secret (also when
    /// the header carries no signature of a scheme Tollgate checks, e.g. Stripe `v0` only).
    /// 401 `INVALID_SIGNATURE`.
    #[error("no valid signature for this body")]
    NoValidSignature,
    /// The signature matches but its timestamp is further than the tolerance from now, in
    /// either direction (replay protection). `age_secs = now - t`, negative when `t` is in
    /// the future. 401 `STALE_SIGNATURE`.
    #[error("signature timestamp is outside the tolerance ({age_secs} s from now)")]
    StaleTimestamp { age_secs: i64 },
    /// The signature matches but the body is not an event: not JSON, or without its id, type
    /// or creation time. 400 `INVALID_PAYLOAD`.
    #[error("invalid event payload: {0}")]
    InvalidPayload(String),
}

impl VerifyError {
    /// The stable machine code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "MISSING_SIGNATURE",
            Self::MalformedHeader(_) => "MALFORMED_SIGNATURE",
            Self::NoValidSignature => "INVALID_SIGNATURE",
            Self::StaleTimestamp { .. } => "STALE_SIGNATURE",
            Self::InvalidPayload(_) => "INVALID_PAYLOAD",
        }
    }

    /// The HTTP status to answer with: 400 for requests that are not well-formed, 401 for
    /// well-formed requests that fail authentication.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingHeader(_) | Self::MalformedHeader(_) | Self::InvalidPayload(_) => 400,
            Self::NoValidSignature | Self::StaleTimestamp { .. } => 401,
        }
    }
}

/// Reads a JSON body as an object; the shared first step of every verifier's payload check.
fn parse_object(body: &[u8]) -> Result<serde_json::Value, VerifyError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| VerifyError::InvalidPayload(format!("body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(VerifyError::InvalidPayload(
            "body is not a JSON object".to_owned(),
        ));
    }
    Ok(value)
}

/// A non-empty string field of `value`, or `InvalidPayload` naming it.
fn required_str(value: &serde_json::Value, field: &str) -> Result<String, VerifyError> {
    match value.get(field).and_then(serde_json::Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(VerifyError::InvalidPayload(format!(
            "no `{field}` string in the event"
        ))),
    }
}

/// A unix-seconds field of `value` as a UTC instant, or `InvalidPayload` naming it.
fn required_unix_secs(
    value: &serde_json::Value,
    field: &str,
) -> Result<DateTime<Utc>, VerifyError> {
    value
        .get(field)
        .and_then(serde_json::Value::as_i64)
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| {
            VerifyError::InvalidPayload(format!("no `{field}` unix timestamp in the event"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_is_redacted() {
        let s = SecretString::new("whsec_topsecret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "whsec_topsecret");
        let parsed: SecretString = serde_json::from_str("\"sk_test_1\"").unwrap();
        assert_eq!(parsed.expose(), "sk_test_1");
        assert_eq!(format!("{:?}", SecretString::default()), "\"\"");
    }

    #[test]
    fn psp_kind_round_trips() {
        for kind in [PspKind::Stripe, PspKind::Razorpay] {
            assert_eq!(kind.as_str().parse::<PspKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
        assert!("Stripe".parse::<PspKind>().is_err());
        assert!("paypal".parse::<PspKind>().is_err());
    }

    #[test]
    fn error_codes_and_statuses() {
        let cases = [
            (
                VerifyError::MissingHeader("Stripe-Signature"),
                "MISSING_SIGNATURE",
                400,
            ),
            (
                VerifyError::MalformedHeader("x".into()),
                "MALFORMED_SIGNATURE",
                400,
            ),
            (VerifyError::NoValidSignature, "INVALID_SIGNATURE", 401),
            (
                VerifyError::StaleTimestamp { age_secs: 301 },
                "STALE_SIGNATURE",
                401,
            ),
            (
                VerifyError::InvalidPayload("x".into()),
                "INVALID_PAYLOAD",
                400,
            ),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.status(), status);
        }
    }
}
