//! Standard Webhooks signing (https://www.standardwebhooks.com/, "Signature scheme"):
//! secrets are `whsec_` + base64 of random bytes; each delivery carries `webhook-id`,
//! `webhook-timestamp` (unix seconds) and `webhook-signature`, a space-separated list of
//! `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret in force (during a
//! rotation the previous secret signs too, so receivers holding either one verify). The HMAC
//! itself is the reference `standardwebhooks` crate's.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;

/// Random bytes in a new secret (Svix uses 24).
const SECRET_BYTES: usize = 24;

/// A new endpoint secret: `whsec_` + base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A secret that is not `whsec_<base64>`.
#[derive(Debug, thiserror::Error)]
#[error("invalid webhook secret: {0}")]
pub struct SigningError(String);

/// The `webhook-signature` value: one `v1,<sig>` per secret, space-separated, over
/// `{msg_id}.{timestamp}.{body}`. `body` must be UTF-8 (it is JSON).
pub fn signature_header(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let webhook =
            standardwebhooks::Webhook::new(secret).map_err(|e| SigningError(e.to_string()))?;
        signatures.push(
            webhook
                .sign(msg_id, timestamp, body)
                .map_err(|e| SigningError(e.to_string()))?,
        );
    }
    Ok(signatures.join(" "))
}

/// The secrets that sign at `now`: the current one, and the previous one while its overlap
/// lasts.
pub fn secrets_in_force<'a>(
    current: &'a str,
    previous: Option<&'a str>,
    previous_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<&'a str> {
    let mut secrets = vec![current];
    if let (Some(previous), Some(until)) = (previous, previous_expires_at) {
        if until > now {
            secrets.push(previous);
        }
    }
    secrets
}

/// The body of every delivery (Standard Webhooks' recommended payload shape): the event
/// type, when it happened (RFC 3339) and its data.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub timestamp: DateTime<Utc>,
    pub data: &'a serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example (also the reference libraries' test).
    #[test]
    fn signs_the_specification_example() {
        let header = signature_header(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .expect("signs");
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn one_signature_per_secret_in_force() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.starts_with("whsec_") && a != b);
        let now = Utc::now();
        let later = now + chrono::Duration::hours(1);
        assert_eq!(secrets_in_force(&a, Some(&b), Some(later), now), [&a, &b]);
        assert_eq!(secrets_in_force(&a, Some(&b), Some(now), now), [&a]);
        assert_eq!(secrets_in_force(&a, None, None, now), [&a]);
        let header = signature_header(&[&a, &b], "msg_1", 1, b"{}").expect("signs");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
        assert!(signature_header(&["whsec_***"], "msg_1", 1, b"{}").is_err());
    }
}
