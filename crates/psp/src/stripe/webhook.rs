//! Stripe webhook signatures: the `Stripe-Signature` header, checked as Stripe's docs
//! "Verify webhook signatures manually" specify
//! (<https://docs.stripe.com/webhooks#verify-manually>).
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`. A `v1` is
//! `hex(HMAC-SHA256(endpoint secret, "{t}.{raw body}"))`. Every `v1` is checked against every
//! configured secret (Stripe sends one `v1` per active secret while a secret is being rolled);
//! `v0` (test-mode legacy scheme) and unknown schemes are ignored; the timestamp must be within
//! the tolerance of now (Stripe's SDKs default to 300 s).

use chrono::{DateTime, Utc};

use crate::hmac_sha256::{self, TAG_LEN};
use crate::{InboundEvent, PspKind, SecretString, VerifyError, WebhookVerifier};

/// The header Stripe signs webhooks in.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

/// Stripe's default tolerance between the signature timestamp and now, seconds (the
/// `DEFAULT_TOLERANCE` of Stripe's SDKs, <https://docs.stripe.com/webhooks#replay-attacks>).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Verifies Stripe webhooks for one endpoint.
///
/// Holds the endpoint's signing secrets (`whsec_…`; several during a rotation, all accepted)
/// and the timestamp tolerance. Checks, in this order:
/// 1. the `Stripe-Signature` header is present ([`VerifyError::MissingHeader`]);
/// 2. it parses: comma-separated `key=value` elements, exactly one `t` of ASCII digits, every
///    `v1` 64 hex characters ([`VerifyError::MalformedHeader`]);
/// 3. some `v1` equals the HMAC of `"{t}.{body}"` under some secret, compared in constant time
///    ([`VerifyError::NoValidSignature`], also when there is no `v1` at all, e.g. `v0` only);
/// 4. `|now - t| <= tolerance` ([`VerifyError::StaleTimestamp`]); future timestamps beyond the
///    tolerance are refused as well as old ones;
/// 5. the body is a Stripe event: a JSON object with string `id` and `type` and integer
///    `created` (unix seconds) ([`VerifyError::InvalidPayload`]). `livemode` defaults to
///    `false` when absent; `object_id` is `data.object.id` when present.
///
/// The signature is checked before the timestamp, as Stripe's SDKs do, so an unauthenticated
/// request learns nothing about the clock.
#[derive(Debug, Clone)]
pub struct StripeVerifier {
    secrets: Vec<SecretString>,
    tolerance_secs: i64,
}

impl StripeVerifier {
    /// `secrets`: the endpoint's signing secrets, current first; empty strings are dropped
    /// (an empty HMAC key is a configuration mistake anyone could sign with). With no secret
    /// left every request fails with [`VerifyError::NoValidSignature`].
    /// `tolerance_secs`: the largest accepted `|now - t|`, seconds
    /// ([`DEFAULT_TOLERANCE_SECS`] in production); negative values count as 0.
    pub fn new(secrets: Vec<SecretString>, tolerance_secs: i64) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
            tolerance_secs: tolerance_secs.max(0),
        }
    }

    /// The tolerance in force, seconds.
    pub fn tolerance_secs(&self) -> i64 {
        self.tolerance_secs
    }
}

/// A `Stripe-Signature` header that parsed.
#[derive(Debug)]
struct ParsedHeader<'a> {
    /// `t` exactly as sent (ASCII digits): the signed payload starts with these bytes.
    t_raw: &'a str,
    t: i64,
    v1: Vec<[u8; TAG_LEN]>,
}

fn malformed(reason: impl Into<String>) -> VerifyError {
    VerifyError::MalformedHeader(reason.into())
}

fn parse_header(value: &str) -> Result<ParsedHeader<'_>, VerifyError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(malformed("Stripe-Signature is empty"));
    }
    let mut timestamp: Option<(&str, i64)> = None;
    let mut v1 = Vec::new();
    for element in value.split(',') {
        let element = element.trim();
        let Some((key, val)) = element.split_once('=') else {
            return Err(malformed(
                "Stripe-Signature elements must be `key=value` pairs",
            ));
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("Stripe-Signature has more than one `t`"));
                }
                // Digits only (no sign, no spaces); 18 digits always fit an i64.
                let t = (!val.is_empty()
                    && val.len() <= 18
                    && val.bytes().all(|b| b.is_ascii_digit()))
                .then(|| val.parse::<i64>().ok())
                .flatten()
                .ok_or_else(|| malformed("`t` in Stripe-Signature is not a unix timestamp"))?;
                timestamp = Some((val, t));
            }
            "v1" => {
                let tag = hmac_sha256::decode_tag(val)
                    .map_err(|why| malformed(format!("`v1` in Stripe-Signature {why}")))?;
                v1.push(tag);
            }
            // `v0` and any scheme Stripe may add later are not ours to check.
            _ => {}
        }
    }
    let (t_raw, t) = timestamp.ok_or_else(|| malformed("Stripe-Signature has no `t` timestamp"))?;
    Ok(ParsedHeader { t_raw, t, v1 })
}

/// Builds a `Stripe-Signature` value `t={timestamp},v1={hex}` for `body` signed with
/// `secret`, exactly as the official SDKs' `generateTestHeaderString` do (stripe-node
/// `webhooks.generateTestHeaderString`, stripe-python `WebhookSignature`). For tests and
/// benchmarks that play Stripe; `timestamp` is unix seconds.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let tag = hmac_sha256::sign(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(tag))
}

impl WebhookVerifier for StripeVerifier {
    fn psp(&self) -> PspKind {
        PspKind::Stripe
    }

    fn verify(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<InboundEvent, VerifyError> {
        let raw = header(SIGNATURE_HEADER).ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
        let parsed = parse_header(&raw)?;

        let mut valid = false;
        for secret in &self.secrets {
            let expected = hmac_sha256::sign(
                secret.expose().as_bytes(),
                &[parsed.t_raw.as_bytes(), b".", body],
            );
            for candidate in &parsed.v1 {
                // No early exit: the work done does not depend on which candidate matched.
                valid |= hmac_sha256::tags_equal(&expected, candidate);
            }
        }
        if !valid {
            return Err(VerifyError::NoValidSignature);
        }

        let age_secs = now.timestamp().saturating_sub(parsed.t);
        if age_secs.unsigned_abs() > self.tolerance_secs.unsigned_abs() {
            return Err(VerifyError::StaleTimestamp { age_secs });
        }

        let payload = crate::parse_object(body)?;
        let event_id = crate::required_str(&payload, "id")?;
        let event_type = crate::required_str(&payload, "type")?;
        let created = crate::required_unix_secs(&payload, "created")?;
        let livemode = payload
            .get("livemode")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let object_id = payload
            .pointer("/data/object/id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Ok(InboundEvent {
            psp: PspKind::Stripe,
            event_id,
            event_type,
            created,
            livemode,
            object_id,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const OTHER: &str = "whsec_other_secret";
    const NOW: i64 = 1_700_000_000;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(NOW, 0).unwrap()
    }

    fn body() -> Vec<u8> {
        serde_json::json!({
            "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
            "object": "event",
            "api_version": "2024-06-20",
            "created": NOW - 5,
            "livemode": false,
            "type": "invoice.payment_failed",
            "data": {"object": {"id": "in_1NG8Dt2eZvKYlo2C", "object": "invoice",
                                "metadata": {"tollgate_invoice": "8c6f0f7e-0000-4000-8000-000000000001"}}}
        })
        .to_string()
        .into_bytes()
    }

    fn verifier(secrets: &[&str]) -> StripeVerifier {
        StripeVerifier::new(
            secrets.iter().map(|s| SecretString::new(*s)).collect(),
            DEFAULT_TOLERANCE_SECS,
        )
    }

    fn verify_with(
        v: &StripeVerifier,
        sig: Option<&str>,
        body: &[u8],
    ) -> Result<InboundEvent, VerifyError> {
        let sig = sig.map(str::to_owned);
        v.verify(
            &|name: &str| {
                name.eq_ignore_ascii_case(SIGNATURE_HEADER)
                    .then(|| sig.clone())
                    .flatten()
            },
            body,
            now(),
        )
    }

    fn v1(secret: &str, t: i64, body: &[u8]) -> String {
        signature_header(secret, t, body)
            .split_once(",v1=")
            .unwrap()
            .1
            .to_owned()
    }

    /// Stripe's docs spell the signed payload out: `{t}.{body}` under the endpoint secret.
    /// Recomputed here independently of `signature_header` with the `hmac` crate directly.
    #[test]
    fn header_matches_documented_construction() {
        use hmac::{Hmac, Mac};
        let body = br#"{"id":"evt_test","object":"event"}"#;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(b"1700000000.");
        mac.update(body);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            signature_header(SECRET, 1_700_000_000, body),
            format!("t=1700000000,v1={expected}")
        );
    }

    #[test]
    fn valid_signature_is_accepted_and_parsed() {
        let body = body();
        let header = signature_header(SECRET, NOW, &body);
        let event = verify_with(&verifier(&[SECRET]), Some(&header), &body).unwrap();
        assert_eq!(event.psp, PspKind::Stripe);
        assert_eq!(event.event_id, "evt_1NG8Du2eZvKYlo2CUI79vXWy");
        assert_eq!(event.event_type, "invoice.payment_failed");
        assert_eq!(event.created.timestamp(), NOW - 5);
        assert!(!event.livemode);
        assert_eq!(event.object_id.as_deref(), Some("in_1NG8Dt2eZvKYlo2C"));
        assert_eq!(
            event.payload["data"]["object"]["metadata"]["tollgate_invoice"],
            "8c6f0f7e-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn livemode_true_is_reported() {
        let body =
            br#"{"id":"evt_1","type":"charge.refunded","created":1700000000,"livemode":true}"#;
        let header = signature_header(SECRET, NOW, body);
        let event = verify_with(&verifier(&[SECRET]), Some(&header), body).unwrap();
        assert!(event.livemode);
        assert_eq!(event.object_id, None);
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let body = body();
        let header = signature_header(OTHER, NOW, &body);
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn altered_body_is_rejected() {
        let body = body();
        let header = signature_header(SECRET, NOW, &body);
        let mut altered = body.clone();
        // "invoice.payment_failed" → "invoice.payment_faileD": one byte.
        let pos = altered.windows(6).position(|w| w == b"failed").unwrap();
        altered[pos + 5] = b'D';
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &altered),
            Err(VerifyError::NoValidSignature)
        );
        // Trailing whitespace is an alteration too: the signature covers the raw bytes.
        let mut padded = body.clone();
        padded.push(b'\n');
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &padded),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn altered_timestamp_is_rejected() {
        let body = body();
        let sig = v1(SECRET, NOW, &body);
        let header = format!("t={},v1={sig}", NOW - 1);
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn timestamp_tolerance_is_inclusive_both_ways() {
        let body = body();
        let v = verifier(&[SECRET]);
        for t in [NOW - 300, NOW + 300, NOW] {
            let header = signature_header(SECRET, t, &body);
            assert!(
                verify_with(&v, Some(&header), &body).is_ok(),
                "t = now{:+}",
                t - NOW
            );
        }
    }

    #[test]
    fn stale_timestamp_is_rejected() {
        let body = body();
        let header = signature_header(SECRET, NOW - 301, &body);
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::StaleTimestamp { age_secs: 301 })
        );
        let header = signature_header(SECRET, 0, &body);
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::StaleTimestamp { age_secs: NOW })
        );
    }

    #[test]
    fn far_future_timestamp_is_rejected() {
        let body = body();
        let header = signature_header(SECRET, NOW + 301, &body);
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::StaleTimestamp { age_secs: -301 })
        );
        let t = 999_999_999_999_999_999;
        let header = signature_header(SECRET, t, &body);
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::StaleTimestamp { age_secs: NOW - t })
        );
    }

    #[test]
    fn stale_and_forged_reports_the_forgery() {
        let body = body();
        let header = signature_header(OTHER, NOW - 10_000, &body);
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn custom_tolerance() {
        let body = body();
        let v = StripeVerifier::new(vec![SecretString::new(SECRET)], 10);
        assert_eq!(v.tolerance_secs(), 10);
        let ok = signature_header(SECRET, NOW - 10, &body);
        assert!(verify_with(&v, Some(&ok), &body).is_ok());
        let late = signature_header(SECRET, NOW - 11, &body);
        assert_eq!(
            verify_with(&v, Some(&late), &body),
            Err(VerifyError::StaleTimestamp { age_secs: 11 })
        );
    }

    #[test]
    fn missing_header_is_rejected() {
        let body = body();
        let err = verify_with(&verifier(&[SECRET]), None, &body).unwrap_err();
        assert_eq!(err, VerifyError::MissingHeader("Stripe-Signature"));
        assert_eq!((err.status(), err.code()), (400, "MISSING_SIGNATURE"));
    }

    #[test]
    fn header_lookup_uses_the_documented_name() {
        let body = body();
        let header = signature_header(SECRET, NOW, &body);
        let v = verifier(&[SECRET]);
        let asked = std::cell::RefCell::new(Vec::new());
        let result = v.verify(
            &|name: &str| {
                asked.borrow_mut().push(name.to_owned());
                Some(header.clone())
            },
            &body,
            now(),
        );
        assert!(result.is_ok());
        assert_eq!(asked.into_inner(), vec!["Stripe-Signature".to_owned()]);
    }

    #[test]
    fn v0_only_is_rejected() {
        let body = body();
        // A v0 carrying a correct HMAC is still not accepted: only v1 is Stripe's live scheme.
        let header = format!("t={NOW},v0={}", v1(SECRET, NOW, &body));
        let err = verify_with(&verifier(&[SECRET]), Some(&header), &body).unwrap_err();
        assert_eq!(err, VerifyError::NoValidSignature);
        assert_eq!((err.status(), err.code()), (401, "INVALID_SIGNATURE"));
    }

    #[test]
    fn v0_and_unknown_schemes_next_to_a_valid_v1_are_ignored() {
        let body = body();
        let header = format!(
            "t={NOW},v1={},v0={},v2=whatever-a-future-scheme-sends",
            v1(SECRET, NOW, &body),
            "00".repeat(32)
        );
        assert!(verify_with(&verifier(&[SECRET]), Some(&header), &body).is_ok());
    }

    #[test]
    fn several_v1_one_valid_is_accepted_in_any_position() {
        let body = body();
        let good = v1(SECRET, NOW, &body);
        let bad1 = v1(OTHER, NOW, &body);
        let bad2 = "ab".repeat(32);
        for header in [
            format!("t={NOW},v1={good},v1={bad1},v1={bad2}"),
            format!("t={NOW},v1={bad1},v1={good},v1={bad2}"),
            format!("t={NOW},v1={bad1},v1={bad2},v1={good}"),
            format!("v1={bad1},v1={good},t={NOW}"),
        ] {
            assert!(
                verify_with(&verifier(&[SECRET]), Some(&header), &body).is_ok(),
                "{header}"
            );
        }
        let header = format!("t={NOW},v1={bad1},v1={bad2}");
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn rotation_with_two_secrets() {
        let body = body();
        let v = verifier(&[SECRET, OTHER]);
        // Signed with either secret alone.
        for secret in [SECRET, OTHER] {
            let header = signature_header(secret, NOW, &body);
            assert!(verify_with(&v, Some(&header), &body).is_ok(), "{secret}");
        }
        // What Stripe sends while a secret is being rolled: one v1 per secret.
        let header = format!(
            "t={NOW},v1={},v1={}",
            v1(OTHER, NOW, &body),
            v1(SECRET, NOW, &body)
        );
        assert!(verify_with(&v, Some(&header), &body).is_ok());
        // After the old secret is dropped, its signatures no longer pass.
        let header = signature_header(OTHER, NOW, &body);
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), &body),
            Err(VerifyError::NoValidSignature)
        );
        // A third, unknown secret is still refused with both configured.
        let header = signature_header("whsec_third", NOW, &body);
        assert_eq!(
            verify_with(&v, Some(&header), &body),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn no_secrets_configured_rejects_everything() {
        let body = body();
        let v = verifier(&[""]);
        // An empty key is dropped, so a header signed with the empty key does not pass.
        let header = signature_header("", NOW, &body);
        assert_eq!(
            verify_with(&v, Some(&header), &body),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn garbage_headers_are_malformed() {
        let body = body();
        let good = v1(SECRET, NOW, &body);
        let cases = [
            String::new(),
            "   ".to_owned(),
            ",".to_owned(),
            "garbage".to_owned(),
            format!("v1={good}"),
            format!("t=abc,v1={good}"),
            format!("t=,v1={good}"),
            format!("t=-{NOW},v1={good}"),
            format!("t=+{NOW},v1={good}"),
            format!("t={NOW}.5,v1={good}"),
            format!("t=1{NOW}{NOW},v1={good}"),
            format!("t={NOW},t={NOW},v1={good}"),
            format!("t={NOW},t={},v1={good}", NOW + 1),
            format!("t={NOW},v1=not-hex-at-all"),
            format!("t={NOW},v1={}", "zz".repeat(32)),
            format!("t={NOW},v1={}", &good[..63]),
            format!("t={NOW},v1={}", &good[..62]),
            format!("t={NOW},v1={good}00"),
            format!("t={NOW},v1="),
            format!("t={NOW},v1={good},v1=xyz"),
            format!("t={NOW},,v1={good}"),
            format!("t={NOW};v1={good}"),
            format!("t={NOW},v1={good},"),
        ];
        for header in cases {
            let err = verify_with(&verifier(&[SECRET]), Some(&header), &body).unwrap_err();
            assert!(
                matches!(err, VerifyError::MalformedHeader(_)),
                "{header:?} gave {err:?}"
            );
            assert_eq!((err.status(), err.code()), (400, "MALFORMED_SIGNATURE"));
        }
    }

    #[test]
    fn header_with_only_t_is_not_signed() {
        let body = body();
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&format!("t={NOW}")), &body),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn spaces_around_elements_and_upper_case_hex_are_tolerated() {
        let body = body();
        let good = v1(SECRET, NOW, &body);
        let header = format!(" t={NOW}, v1={} ", good.to_uppercase());
        assert!(verify_with(&verifier(&[SECRET]), Some(&header), &body).is_ok());
    }

    #[test]
    fn payload_must_be_an_event() {
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "not JSON"),
            (b"", "not JSON"),
            (b"[1,2]", "not a JSON object"),
            (br#""evt_1""#, "not a JSON object"),
            (br#"{"type":"charge.refunded","created":1}"#, "`id`"),
            (br#"{"id":"","type":"charge.refunded","created":1}"#, "`id`"),
            (br#"{"id":"evt_1","created":1}"#, "`type`"),
            (br#"{"id":"evt_1","type":7,"created":1}"#, "`type`"),
            (br#"{"id":"evt_1","type":"charge.refunded"}"#, "`created`"),
        ];
        for (body, reason) in cases {
            let header = signature_header(SECRET, NOW, body);
            let err = verify_with(&verifier(&[SECRET]), Some(&header), body).unwrap_err();
            match &err {
                VerifyError::InvalidPayload(msg) => {
                    assert!(msg.contains(reason), "{msg:?} should mention {reason}")
                }
                other => panic!("{:?}: expected InvalidPayload, got {other:?}", body),
            }
            assert_eq!((err.status(), err.code()), (400, "INVALID_PAYLOAD"));
        }
    }

    #[test]
    fn unsigned_garbage_body_reports_the_signature_first() {
        // A forged request with a junk body is a signature failure, not a payload error.
        let header = signature_header(OTHER, NOW, b"not json");
        assert_eq!(
            verify_with(&verifier(&[SECRET]), Some(&header), b"not json"),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn verifier_is_object_safe_and_shareable() {
        let v: std::sync::Arc<dyn WebhookVerifier> = std::sync::Arc::new(verifier(&[SECRET]));
        assert_eq!(v.psp(), PspKind::Stripe);
        let body = body();
        let header = signature_header(SECRET, NOW, &body);
        let h = move |name: &str| (name == SIGNATURE_HEADER).then(|| header.clone());
        assert!(v.verify(&h, &body, now()).is_ok());
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        let v = verifier(&[SECRET]);
        assert!(!format!("{v:?}").contains(SECRET));
    }
}
