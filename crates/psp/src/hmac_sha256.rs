//! HMAC-SHA256 (RFC 2104 with SHA-256) and the constant-time comparison every verifier uses.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Length of an HMAC-SHA256 tag, bytes (64 hex characters).
pub(crate) const TAG_LEN: usize = 32;

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub(crate) fn sign(key: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length (longer ones are hashed first), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Compares two tags in time that does not depend on where they differ (`subtle`), so a
/// forger learns nothing from response times. Lengths are public (always [`TAG_LEN`]).
pub(crate) fn tags_equal(expected: &[u8; TAG_LEN], candidate: &[u8; TAG_LEN]) -> bool {
    expected.ct_eq(candidate).into()
}

/// Decodes a hex signature into a tag: `Err` with a reason when it is not hex or not
/// [`TAG_LEN`] bytes long.
pub(crate) fn decode_tag(hex_sig: &str) -> Result<[u8; TAG_LEN], &'static str> {
    let bytes = hex::decode(hex_sig).map_err(|_| "is not hex")?;
    <[u8; TAG_LEN]>::try_from(bytes.as_slice()).map_err(|_| "is not a 64-character hex HMAC-SHA256")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (key "Jefe").
    #[test]
    fn rfc4231_case_2() {
        let tag = sign(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn decode_rejects_bad_hex() {
        assert_eq!(decode_tag("zz"), Err("is not hex"));
        assert_eq!(decode_tag("abc"), Err("is not hex"));
        assert_eq!(
            decode_tag("abcd"),
            Err("is not a 64-character hex HMAC-SHA256")
        );
        assert!(decode_tag(&"ab".repeat(32)).is_ok());
    }

    #[test]
    fn compare() {
        let a = sign(b"k", &[b"m"]);
        let mut b = a;
        assert!(tags_equal(&a, &b));
        b[31] ^= 1;
        assert!(!tags_equal(&a, &b));
    }
}
