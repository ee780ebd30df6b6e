//! Razorpay webhook signatures, per Razorpay's "Validate and Test Webhooks"
//! (<https://razorpay.com/docs/webhooks/validate-test/>): the `X-Razorpay-Signature` header is
//! `hex(HMAC-SHA256(webhook secret, raw body))`; the event id for deduplication is the
//! `X-Razorpay-Event-Id` header; the body is
//! `{"entity":"event","account_id":…,"event":"payment.captured","contains":["payment"],
//! "payload":{"payment":{"entity":{"id":"pay_…",…}}},"created_at":<unix seconds>}`
//! (<https://razorpay.com/docs/webhooks/payloads/>).
//!
//! Razorpay's signature carries no timestamp, so there is no replay window to check: replays
//! of a genuine event are absorbed by deduplication on the event id. Razorpay retries failed
//! deliveries for up to 24 hours, so `created_at` is not compared with now either.

use chrono::{DateTime, Utc};

use crate::hmac_sha256;
use crate::{InboundEvent, PspKind, SecretString, VerifyError, WebhookVerifier};

/// The header Razorpay signs webhooks in.
pub const SIGNATURE_HEADER: &str = "X-Razorpay-Signature";

/// The header carrying Razorpay's unique event id.
pub const EVENT_ID_HEADER: &str = "X-Razorpay-Event-Id";

/// Verifies Razorpay webhooks for one account.
///
/// Checks, in this order: `X-Razorpay-Signature` present ([`VerifyError::MissingHeader`]);
/// it is 64 hex characters ([`VerifyError::MalformedHeader`]); it equals the HMAC of the
/// body under one of the secrets, compared in constant time
/// ([`VerifyError::NoValidSignature`]); `X-Razorpay-Event-Id` present and the body a JSON
/// object with a string `event` and integer `created_at` ([`VerifyError::InvalidPayload`]).
///
/// Razorpay webhook bodies do not say whether they are live or test; a webhook secret belongs
/// to one mode's dashboard, so the verifier is told ([`RazorpayVerifier::with_livemode`],
/// default live).
#[derive(Debug, Clone)]
pub struct RazorpayVerifier {
    secrets: Vec<SecretString>,
    livemode: bool,
}

impl RazorpayVerifier {
    /// `secrets`: the webhook secrets accepted (several during a change of secret); empty
    /// strings are dropped. With none left every request fails with
    /// [`VerifyError::NoValidSignature`].
    pub fn new(secrets: Vec<SecretString>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
            livemode: true,
        }
    }

    /// Sets the [`InboundEvent::livemode`] reported for this account's events.
    pub fn with_livemode(mut self, livemode: bool) -> Self {
        self.livemode = livemode;
        self
    }
}

/// `hex(HMAC-SHA256(secret, body))`: the `X-Razorpay-Signature` Razorpay would send for
/// `body`. For tests and benchmarks that play Razorpay.
pub fn signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256::sign(secret.as_bytes(), &[body]))
}

impl WebhookVerifier for RazorpayVerifier {
    fn psp(&self) -> PspKind {
        PspKind::Razorpay
    }

    fn verify(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        _now: DateTime<Utc>,
    ) -> Result<InboundEvent, VerifyError> {
        let raw = header(SIGNATURE_HEADER).ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
        let candidate = hmac_sha256::decode_tag(raw.trim())
            .map_err(|why| VerifyError::MalformedHeader(format!("{SIGNATURE_HEADER} {why}")))?;
        let mut valid = false;
        for secret in &self.secrets {
            let expected = hmac_sha256::sign(secret.expose().as_bytes(), &[body]);
            valid |= hmac_sha256::tags_equal(&expected, &candidate);
        }
        if !valid {
            return Err(VerifyError::NoValidSignature);
        }

        let event_id = header(EVENT_ID_HEADER)
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| VerifyError::InvalidPayload(format!("no `{EVENT_ID_HEADER}` header")))?;
        let payload = crate::parse_object(body)?;
        let event_type = crate::required_str(&payload, "event")?;
        let created = crate::required_unix_secs(&payload, "created_at")?;
        let object_id = object_id(&payload, &event_type);
        Ok(InboundEvent {
            psp: PspKind::Razorpay,
            event_id,
            event_type,
            created,
            livemode: self.livemode,
            object_id,
            payload,
        })
    }
}

/// `payload.<entity>.entity.id`, the entity being the first of `contains` or else the event
/// type's first segment (`payment.captured` → `payment`).
fn object_id(payload: &serde_json::Value, event_type: &str) -> Option<String> {
    let entity = payload
        .get("contains")
        .and_then(|c| c.get(0))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| event_type.split('.').next().unwrap_or(event_type));
    payload
        .get("payload")?
        .get(entity)?
        .get("entity")?
        .get("id")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "rzp_webhook_secret";
    const OTHER: &str = "rzp_other_secret";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn body() -> Vec<u8> {
        serde_json::json!({
            "entity": "event",
            "account_id": "acc_BFQ7uQEaa7j2z7",
            "event": "payment.captured",
            "contains": ["payment"],
            "payload": {"payment": {"entity": {
                "id": "pay_DESlfW9H8K9uqM", "entity": "payment", "amount": 100,
                "currency": "INR", "status": "captured",
                "notes": {"tollgate_invoice": "8c6f0f7e-0000-4000-8000-000000000001"}}}},
            "created_at": 1_567_674_606
        })
        .to_string()
        .into_bytes()
    }

    fn verify_with(
        v: &RazorpayVerifier,
        sig: Option<&str>,
        event_id: Option<&str>,
        body: &[u8],
    ) -> Result<InboundEvent, VerifyError> {
        let sig = sig.map(str::to_owned);
        let event_id = event_id.map(str::to_owned);
        v.verify(
            &|name: &str| {
                if name.eq_ignore_ascii_case(SIGNATURE_HEADER) {
                    sig.clone()
                } else if name.eq_ignore_ascii_case(EVENT_ID_HEADER) {
                    event_id.clone()
                } else {
                    None
                }
            },
            body,
            now(),
        )
    }

    fn verifier(secrets: &[&str]) -> RazorpayVerifier {
        RazorpayVerifier::new(secrets.iter().map(|s| SecretString::new(*s)).collect())
    }

    #[test]
    fn signature_is_hmac_of_the_raw_body() {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(b"{}");
        assert_eq!(
            signature(SECRET, b"{}"),
            hex::encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn valid_event_is_accepted_and_parsed() {
        let body = body();
        let sig = signature(SECRET, &body);
        let event = verify_with(
            &verifier(&[SECRET]),
            Some(&sig),
            Some("KEg7zDbVUvfBFh"),
            &body,
        )
        .unwrap();
        assert_eq!(event.psp, PspKind::Razorpay);
        assert_eq!(event.event_id, "KEg7zDbVUvfBFh");
        assert_eq!(event.event_type, "payment.captured");
        assert_eq!(event.created.timestamp(), 1_567_674_606);
        assert!(event.livemode);
        assert_eq!(event.object_id.as_deref(), Some("pay_DESlfW9H8K9uqM"));
        let test_mode = verifier(&[SECRET]).with_livemode(false);
        let event = verify_with(&test_mode, Some(&sig), Some("KEg7zDbVUvfBFh"), &body).unwrap();
        assert!(!event.livemode);
    }

    #[test]
    fn object_id_falls_back_to_the_event_type() {
        let body = br#"{"entity":"event","event":"refund.processed","created_at":1,
            "payload":{"refund":{"entity":{"id":"rfnd_1"}}}}"#;
        let sig = signature(SECRET, body);
        let event = verify_with(&verifier(&[SECRET]), Some(&sig), Some("e1"), body).unwrap();
        assert_eq!(event.object_id.as_deref(), Some("rfnd_1"));
    }

    #[test]
    fn forgeries_are_rejected() {
        let body = body();
        let v = verifier(&[SECRET]);
        let wrong = signature(OTHER, &body);
        assert_eq!(
            verify_with(&v, Some(&wrong), Some("e1"), &body),
            Err(VerifyError::NoValidSignature)
        );
        let sig = signature(SECRET, &body);
        let mut altered = body.clone();
        altered.push(b' ');
        assert_eq!(
            verify_with(&v, Some(&sig), Some("e1"), &altered),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn rotation_accepts_either_secret() {
        let body = body();
        let v = verifier(&[SECRET, OTHER]);
        for secret in [SECRET, OTHER] {
            let sig = signature(secret, &body);
            assert!(verify_with(&v, Some(&sig), Some("e1"), &body).is_ok());
        }
    }

    #[test]
    fn header_problems() {
        let body = body();
        let v = verifier(&[SECRET]);
        assert_eq!(
            verify_with(&v, None, Some("e1"), &body),
            Err(VerifyError::MissingHeader("X-Razorpay-Signature"))
        );
        let good = signature(SECRET, &body);
        for bad in ["", "xyz", &good[..63], &good[..62], &format!("{good}00")] {
            let err = verify_with(&v, Some(bad), Some("e1"), &body).unwrap_err();
            assert!(
                matches!(err, VerifyError::MalformedHeader(_)),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn payload_problems() {
        let v = verifier(&[SECRET]);
        let body = body();
        let sig = signature(SECRET, &body);
        for id in [None, Some(""), Some("  ")] {
            assert!(matches!(
                verify_with(&v, Some(&sig), id, &body),
                Err(VerifyError::InvalidPayload(_))
            ));
        }
        for body in [
            &b"nope"[..],
            br#"{"entity":"event","created_at":1}"#,
            br#"{"entity":"event","event":"payment.captured"}"#,
        ] {
            let sig = signature(SECRET, body);
            assert!(matches!(
                verify_with(&v, Some(&sig), Some("e1"), body),
                Err(VerifyError::InvalidPayload(_))
            ));
        }
    }
}
