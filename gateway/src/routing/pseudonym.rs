//! Recipient-scoped pseudonyms. A recipient never sees the controller's pseudonym for a subject: it
//! sees a pseudonym derived, with the gateway's secret, from the recipient, the controller and the
//! controller's pseudonym, so two recipients cannot link their records, two controllers that use the
//! same pseudonym string are two subjects to every recipient, and only the gateway (whose replicas
//! share the secret) can map one back.
//!
//! The derivation is versioned, and each copy records the version it used
//! (`deliveries.pseudonym_version`): a recipient keeps the pseudonym it was given, so copies are never
//! re-pseudonymized.
//!
//! - Version 1 (copies queued before migration 8): HMAC-SHA256(secret, recipient ‖ 0x00 ‖ subject). It
//!   ignored the controller, so an organization that registered a consent under another
//!   organization's pseudonym got the same recipient-scoped pseudonym for its own referrals, and could
//!   link itself to, or pollute, the other's records at the recipient. No longer derived.
//! - Version 2 ([`for_recipient`]): HMAC-SHA256(secret, the tag `haven.pseudonym.recipient/v2`,
//!   recipient, controller, subject), each as a u32 big-endian byte length then its bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The derivation [`for_recipient`] implements, as recorded beside each copy.
pub const VERSION: i64 = 2;

/// The version tag hashed first, so that no later derivation can produce the same pseudonyms.
const TAG: &[u8] = b"haven.pseudonym.recipient/v2";

/// The pseudonym `recipient` sees for the subject `controller` knows as `subject`: `r_` and 32 hex
/// characters (128 bits). Each input is length-delimited, so no two different triples hash the same
/// bytes.
pub fn for_recipient(secret: &[u8; 32], recipient: &str, controller: &str, subject: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC accepts keys of any length; this branch cannot be taken.
        return String::new();
    };
    for part in [TAG, recipient.as_bytes(), controller.as_bytes(), subject.as_bytes()] {
        // Identifiers and pseudonyms are short (at most 64 bytes): the length always fits.
        mac.update(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        mac.update(part);
    }
    let out = mac.finalize().into_bytes();
    format!("r_{}", hex::encode(&out[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 32] = [9u8; 32];
    const S1: &str = "subj-0123456789abcdef0123";

    #[test]
    fn recipients_get_different_stable_pseudonyms() {
        let a = for_recipient(&K, "maple-house", "harbor", S1);
        let b = for_recipient(&K, "riverside-clinic", "harbor", S1);
        assert_ne!(a, b);
        assert_eq!(a, for_recipient(&K, "maple-house", "harbor", S1));
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("r_") && a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    /// Two controllers that use the same pseudonym string are two subjects: a recipient cannot link
    /// one's referrals to the other's.
    #[test]
    fn two_controllers_with_one_pseudonym_give_a_recipient_two_pseudonyms() {
        let harbor = for_recipient(&K, "maple-house", "harbor", S1);
        let northstar = for_recipient(&K, "maple-house", "northstar", S1);
        assert_ne!(harbor, northstar);
    }

    /// Moving bytes between adjacent inputs changes the pseudonym, so one organization cannot choose
    /// its pseudonym to match another's.
    #[test]
    fn inputs_are_length_delimited() {
        let base = for_recipient(&K, "maple-house", "harbor", S1);
        assert_ne!(base, for_recipient(&K, "maple-househ", "arbor", S1));
        assert_ne!(base, for_recipient(&K, "maple-house", "harbors", &S1[1..]));
        assert_ne!(for_recipient(&K, "ab", "c", S1), for_recipient(&K, "a", "bc", S1));
        // Nor is a version 2 pseudonym the version 1 one of the same subject.
        let mut v1 = Hmac::<Sha256>::new_from_slice(&K).unwrap();
        v1.update(b"maple-house\0");
        v1.update(S1.as_bytes());
        assert_ne!(base, format!("r_{}", hex::encode(&v1.finalize().into_bytes()[..16])));
    }

    #[test]
    fn the_secret_matters() {
        assert_ne!(
            for_recipient(&K, "maple-house", "harbor", S1),
            for_recipient(&[8; 32], "maple-house", "harbor", S1)
        );
    }
}
