//! API keys: `tg_<prefix>_<secret>` where the prefix (8 lowercase hex characters) is public and
//! indexed, and the secret is 32 characters of base62. Only the SHA-256 of the whole key is
//! stored; the key is shown once, at creation.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated key: the text to hand to the user once, and what to store.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The whole key; never stored or logged.
    pub secret_text: String,
    /// The public lookup prefix.
    pub prefix: String,
    /// SHA-256 of `secret_text`.
    pub hash: [u8; 32],
}

/// Generates a key from the thread's cryptographically secure RNG.
pub fn generate() -> GeneratedKey {
    let mut rng = rand::rng();
    let prefix: String = (0..8)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect();
    let secret: String = (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    let secret_text = format!("tg_{prefix}_{secret}");
    let hash = hash(&secret_text);
    GeneratedKey {
        secret_text,
        prefix,
        hash,
    }
}

/// SHA-256 of a presented key.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The public prefix of a presented key, or `None` when it is not shaped like a Tollgate key.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("tg_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok = prefix.len() == 8
        && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 32
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(prefix)
}

/// Constant-time check of a presented key against a stored hash.
pub fn verify(key: &str, stored_hash: &[u8]) -> bool {
    bool::from(hash(key).as_slice().ct_eq(stored_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let key = generate();
        assert_eq!(prefix_of(&key.secret_text), Some(key.prefix.as_str()));
        assert!(verify(&key.secret_text, &key.hash));
        let mut tampered = key.secret_text.clone();
        tampered.pop();
        tampered.push('!');
        assert!(!verify(&tampered, &key.hash));
        assert_eq!(prefix_of(&tampered), None);
        assert_eq!(prefix_of("Bearer nonsense"), None);
        assert_ne!(generate().secret_text, key.secret_text);
    }
}
