//! `Stripe-Signature` headers made by the official Stripe SDK (npm `stripe`,
//! `webhooks.generateTestHeaderString`, pinned in `tests/js/package.json`) must verify with
//! [`StripeVerifier`], and ours must be byte-for-byte the SDK's (issue 5, Show: "headers
//! produced by an official Stripe SDK's test-header helper").
//!
//! Needs node and `npm ci --prefix tests/js`; without them these tests fail and say so, they
//! never skip.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use serde_json::json;
use tollgate_psp::stripe::{signature_header, StripeVerifier, DEFAULT_TOLERANCE_SECS};
use tollgate_psp::{InboundEvent, PspKind, SecretString, VerifyError, WebhookVerifier};

const NOW: i64 = 1_750_000_000;

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

/// One SDK call: what `generateTestHeaderString` gets.
#[derive(Clone)]
struct SdkArgs {
    payload: String,
    secret: String,
    timestamp: i64,
    scheme: Option<&'static str>,
}

/// Runs `node tests/js/stripe-header.js` once for all `args` and returns the headers in order.
fn sdk_headers(args: &[SdkArgs]) -> Vec<String> {
    let dir = js_dir();
    assert!(
        dir.join("node_modules/stripe/package.json").is_file(),
        "the official Stripe SDK is not installed in {}: run `npm ci --prefix tests/js` \
         from the workspace root (needs node >= 20)",
        dir.display()
    );
    let input = serde_json::Value::Array(
        args.iter()
            .map(|a| {
                let mut v =
                    json!({"payload": a.payload, "secret": a.secret, "timestamp": a.timestamp});
                if let Some(scheme) = a.scheme {
                    v["scheme"] = json!(scheme);
                }
                v
            })
            .collect(),
    );
    let mut child = Command::new("node")
        .arg(dir.join("stripe-header.js"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `node` ({e}): install node >= 20, then `npm ci --prefix tests/js`")
        });
    child
        .stdin
        .take()
        .expect("node's stdin is piped")
        .write_all(input.to_string().as_bytes())
        .expect("write to stripe-header.js");
    let out = child.wait_with_output().expect("wait for stripe-header.js");
    assert!(
        out.status.success(),
        "tests/js/stripe-header.js failed ({}): {}\n(run `npm ci --prefix tests/js` if a \
         module is missing)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("stripe-header.js prints a JSON array");
    assert_eq!(parsed.len(), args.len());
    parsed
        .into_iter()
        .map(|v| v["header"].as_str().expect("{header: string}").to_owned())
        .collect()
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("in range")
}

fn verifier(secrets: &[&str]) -> StripeVerifier {
    StripeVerifier::new(
        secrets.iter().map(|s| SecretString::new(*s)).collect(),
        DEFAULT_TOLERANCE_SECS,
    )
}

fn verify(
    v: &StripeVerifier,
    header: &str,
    body: &[u8],
    now: i64,
) -> Result<InboundEvent, VerifyError> {
    v.verify(
        &|name: &str| {
            name.eq_ignore_ascii_case("stripe-signature")
                .then(|| header.to_owned())
        },
        body,
        at(now),
    )
}

fn event(id: &str, event_type: &str, created: i64, object: serde_json::Value) -> String {
    json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": created,
        "livemode": false, "pending_webhooks": 1, "type": event_type,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object}
    })
    .to_string()
}

/// Realistic bodies: compact and pretty JSON, non-ASCII text, CRLF, a large one.
fn payloads() -> Vec<String> {
    let metadata = json!({"tollgate_tenant": "0b5e1c1e-6f0a-4a53-9d1c-3f4f5a6b7c8d",
                          "tollgate_invoice": "7f1e2d3c-4b5a-4968-8776-655443322110"});
    let pretty = serde_json::to_string_pretty(&json!({
        "id": "evt_pretty", "object": "event", "created": NOW, "livemode": true,
        "type": "customer.subscription.updated",
        "data": {"object": {"id": "sub_1", "object": "subscription", "status": "past_due"}}
    }))
    .expect("serializable");
    let big_lines: Vec<serde_json::Value> = (0..2_000)
        .map(|i| json!({"id": format!("il_{i}"), "amount": i * 7, "description": "Usage — API calls"}))
        .collect();
    vec![
        event(
            "evt_1",
            "invoice.payment_failed",
            NOW - 3,
            json!({"id": "in_1", "object": "invoice", "amount_due": 1999, "currency": "usd", "metadata": metadata}),
        ),
        event(
            "evt_2",
            "payment_intent.succeeded",
            NOW,
            json!({"id": "pi_2", "object": "payment_intent", "amount": 500, "currency": "eur",
                     "description": "Facture n° 42 — 5,00 € 🎉 日本語", "metadata": metadata}),
        ),
        pretty,
        pretty_crlf(),
        event(
            "evt_big",
            "invoice.finalized",
            NOW,
            json!({"id": "in_big", "object": "invoice", "lines": {"data": big_lines}}),
        ),
    ]
}

fn pretty_crlf() -> String {
    format!(
        "{{\r\n  \"id\": \"evt_crlf\",\r\n  \"type\": \"charge.refunded\",\r\n  \"created\": {NOW},\r\n  \"data\": {{\"object\": {{\"id\": \"ch_1\"}}}}\r\n}}\r\n"
    )
}

const SECRETS: [&str; 3] = [
    "whsec_test_secret",
    "whsec_5Vq0N3vQkQ9rVxP0uJmE1yXb7wWc2Lh8",
    "whsec_with+special/chars=and spaces",
];

#[test]
fn sdk_headers_verify_and_match_ours() {
    let mut cases = Vec::new();
    for (p, payload) in payloads().into_iter().enumerate() {
        for (s, secret) in SECRETS.iter().enumerate() {
            // Spread timestamps so each verification is checked at a different clock offset.
            let offset = [0, -299, 299, -1, 1][(p + s) % 5];
            cases.push((
                SdkArgs {
                    payload: payload.clone(),
                    secret: (*secret).to_owned(),
                    timestamp: NOW + offset,
                    scheme: None,
                },
                NOW,
            ));
        }
    }
    let args: Vec<SdkArgs> = cases.iter().map(|(a, _)| a.clone()).collect();
    let headers = sdk_headers(&args);
    for ((a, now), header) in cases.iter().zip(&headers) {
        assert!(
            header.starts_with(&format!("t={},v1=", a.timestamp)),
            "unexpected SDK header shape {header}"
        );
        assert_eq!(
            header,
            &signature_header(&a.secret, a.timestamp, a.payload.as_bytes()),
            "our signature_header differs from the SDK's"
        );
        let event = verify(&verifier(&[&a.secret]), header, a.payload.as_bytes(), *now)
            .unwrap_or_else(|e| panic!("SDK header {header} rejected: {e:?}"));
        assert_eq!(event.psp, PspKind::Stripe);
        let body: serde_json::Value = serde_json::from_str(&a.payload).unwrap();
        assert_eq!(event.event_id, body["id"].as_str().unwrap());
        assert_eq!(event.event_type, body["type"].as_str().unwrap());
        assert_eq!(event.payload, body);
    }
}

#[test]
fn sdk_headers_with_the_wrong_secret_or_body_are_rejected() {
    let payload = payloads().remove(0);
    let headers = sdk_headers(&[
        SdkArgs {
            payload: payload.clone(),
            secret: "whsec_attacker".to_owned(),
            timestamp: NOW,
            scheme: None,
        },
        SdkArgs {
            payload: payload.replace("1999", "1"),
            secret: SECRETS[0].to_owned(),
            timestamp: NOW,
            scheme: None,
        },
        SdkArgs {
            payload: payload.clone(),
            secret: SECRETS[0].to_owned(),
            timestamp: NOW,
            scheme: Some("v0"),
        },
    ]);
    let v = verifier(&[SECRETS[0]]);
    // Signed with a secret we do not hold.
    assert_eq!(
        verify(&v, &headers[0], payload.as_bytes(), NOW).unwrap_err(),
        VerifyError::NoValidSignature
    );
    // Signed over another body than the one delivered.
    assert_eq!(
        verify(&v, &headers[1], payload.as_bytes(), NOW).unwrap_err(),
        VerifyError::NoValidSignature
    );
    // The SDK's `v0` scheme is not accepted even with the right secret.
    assert!(headers[2].contains(",v0="), "{}", headers[2]);
    assert_eq!(
        verify(&v, &headers[2], payload.as_bytes(), NOW).unwrap_err(),
        VerifyError::NoValidSignature
    );
}

#[test]
fn sdk_headers_outside_the_tolerance_are_stale() {
    let payload = payloads().remove(1);
    let args: Vec<SdkArgs> = [NOW - 301, NOW + 301, NOW - 86_400]
        .into_iter()
        .map(|timestamp| SdkArgs {
            payload: payload.clone(),
            secret: SECRETS[1].to_owned(),
            timestamp,
            scheme: None,
        })
        .collect();
    let headers = sdk_headers(&args);
    let v = verifier(&[SECRETS[1]]);
    for (a, header) in args.iter().zip(&headers) {
        assert_eq!(
            verify(&v, header, payload.as_bytes(), NOW).unwrap_err(),
            VerifyError::StaleTimestamp {
                age_secs: NOW - a.timestamp
            }
        );
    }
}

#[test]
fn sdk_headers_verify_during_secret_rotation() {
    let payload = payloads().remove(2);
    let args: Vec<SdkArgs> = SECRETS[..2]
        .iter()
        .map(|secret| SdkArgs {
            payload: payload.clone(),
            secret: (*secret).to_owned(),
            timestamp: NOW,
            scheme: None,
        })
        .collect();
    let headers = sdk_headers(&args);
    let rotating = verifier(&[SECRETS[1], SECRETS[0]]);
    for header in &headers {
        assert!(verify(&rotating, header, payload.as_bytes(), NOW).is_ok());
    }
    // Both signatures in one header, as Stripe sends while rolling a secret.
    let combined = format!("{},{}", headers[0], headers[1].split_once(',').unwrap().1);
    assert!(verify(&verifier(&[SECRETS[1]]), &combined, payload.as_bytes(), NOW).is_ok());
    assert!(verify(&verifier(&[SECRETS[0]]), &combined, payload.as_bytes(), NOW).is_ok());
    assert_eq!(
        verify(&verifier(&[SECRETS[2]]), &combined, payload.as_bytes(), NOW).unwrap_err(),
        VerifyError::NoValidSignature
    );
}
