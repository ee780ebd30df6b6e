//! Jobs: type names, the state machine's states, idempotency keys and the request hash that
//! tells a repeated submission from a conflicting one (SPEC "Jobs").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A value that failed to parse into a domain type; the message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A configured job type's name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct JobTypeName(String);

impl JobTypeName {
    /// Parses a job type name; see the type's doc for the accepted shape.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError(format!(
                "job type must be 1-64 characters of a-z, 0-9, '_', '-', '.'; got {:?}",
                s.chars().take(70).collect::<String>()
            )))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for JobTypeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for JobTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's idempotency key (`Idempotency-Key` header): 1 to 255 visible ASCII characters.
/// When the client sends none, intake derives one from the request hash (`hash:<hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a client-supplied key.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError(
                "Idempotency-Key must be 1-255 visible ASCII characters".to_owned(),
            ))
        }
    }

    /// The key used when the client sends none: derived from the request hash, so the same
    /// (type, input) submitted twice is one job.
    pub fn from_request_hash(hash: &[u8; 32]) -> Self {
        Self(format!("hash:{}", hex::encode(hash)))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 over the job type and the canonical JSON of the input (object keys sorted, no
/// insignificant white space), so two requests with the same meaning hash the same.
pub fn request_hash(job_type: &JobTypeName, input: &serde_json::Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(job_type.as_str().as_bytes());
    hasher.update([0u8]);
    // serde_json's Map is a BTreeMap (no `preserve_order` feature), so keys serialize sorted.
    hasher.update(serde_json::to_vec(input).unwrap_or_default());
    hasher.finalize().into()
}

/// A job's state. `queued → processing → succeeded | failed`, and on a retryable failure
/// `processing → retrying → processing …` until the attempts run out: `dead`.
/// `succeeded`, `failed` and `dead` are terminal (a dead job may be replayed by an operator,
/// which puts it back to `queued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Processing,
    Retrying,
    Succeeded,
    Failed,
    Dead,
}

impl JobStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        Self::Queued,
        Self::Processing,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
    ];

    /// The state's name as stored and shown (`snake_case`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    /// True for the states a job never leaves on its own.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Dead)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseError(format!("unknown job status {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_ignores_key_order_but_not_values() {
        let t = JobTypeName::parse("wordcount").expect("valid");
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).expect("json");
        let b: serde_json::Value = serde_json::from_str(r#"{ "b":[1,2], "a":1 }"#).expect("json");
        let c: serde_json::Value = serde_json::from_str(r#"{"a":2,"b":[1,2]}"#).expect("json");
        assert_eq!(request_hash(&t, &a), request_hash(&t, &b));
        assert_ne!(request_hash(&t, &a), request_hash(&t, &c));
        let other = JobTypeName::parse("other").expect("valid");
        assert_ne!(request_hash(&t, &a), request_hash(&other, &a));
    }

    #[test]
    fn names_and_keys_are_bounded() {
        assert!(JobTypeName::parse("resize-image.v2").is_ok());
        assert!(JobTypeName::parse("Resize").is_err());
        assert!(JobTypeName::parse("").is_err());
        assert!(JobTypeName::parse(&"a".repeat(65)).is_err());
        assert!(IdempotencyKey::parse("order-42").is_ok());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn status_text_round_trips() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }
}
