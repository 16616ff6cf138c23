//! Recipient-scoped pseudonyms. A recipient never sees the controller's pseudonym for a subject: it
//! sees HMAC-SHA256(gateway secret, recipient ‖ 0 ‖ subject), so two recipients cannot link their
//! records, and only the gateway (whose replicas share the secret) can map one back.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The pseudonym `recipient` sees for `subject`: `r_` and 32 hex characters (128 bits).
pub fn for_recipient(secret: &[u8; 32], recipient: &str, subject: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC accepts keys of any length; this branch cannot be taken.
        return String::new();
    };
    mac.update(recipient.as_bytes());
    mac.update(&[0]);
    mac.update(subject.as_bytes());
    let out = mac.finalize().into_bytes();
    format!("r_{}", hex::encode(&out[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_get_different_stable_pseudonyms() {
        let k = [9u8; 32];
        let a = for_recipient(&k, "maple-house", "subj-0123456789abcdef0123");
        let b = for_recipient(&k, "riverside-clinic", "subj-0123456789abcdef0123");
        assert_ne!(a, b);
        assert_eq!(a, for_recipient(&k, "maple-house", "subj-0123456789abcdef0123"));
        assert_eq!(a.len(), 34);
    }
}
