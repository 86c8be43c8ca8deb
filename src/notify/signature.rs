//! A webhook's signature, as Stripe signs its webhooks: HMAC-SHA256 over the timestamp and the
//! body, so that a receiver knows the sender holds the secret and can refuse a replay.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Valhalla-Signature";

/// The header's value for `body` sent at `timestamp` (Unix seconds): `t=<timestamp>,v1=<hex
/// HMAC-SHA256 with secret of "<timestamp>.<body>">`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value Python's `hmac` gives for the same secret and signed text
    /// (`hmac.new(b"secret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()`).
    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_and_the_body() {
        assert_eq!(
            signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn the_header_names_the_timestamp_and_changes_with_the_body() {
        let a = signature(b"secret", 1_700_000_000, b"{}");
        let b = signature(b"secret", 1_700_000_000, b"{ }");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, b);
        assert_ne!(a, signature(b"other", 1_700_000_000, b"{}"));
    }
}
