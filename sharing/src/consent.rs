//! Consent in force: the one definition of whether a consent lets a message go now.
//!
//! Two places apply it. A decision at submission asks [`effective_state`]. A delivery stream's read of
//! what it may send next applies [`releases_queued_copy`] in SQL, for speed (the gateway's
//! `queue::SENDABLE_SQLITE` and `SENDABLE_POSTGRES`); a property test in `tests/tests/consent.rs`
//! runs both on the same random consents and times, on both databases, and proves that they agree.

use haven_trust::receipt::ConsentState;

/// A subject pseudonym that is not of the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject pseudonym must be 22-64 characters of A-Z, a-z, 0-9, `_` or `-` (a random value of 128 bits or more)")]
pub struct PseudonymError;

/// A subject pseudonym: random, minted by the controller (128 bits or more), never derived from
/// personal data. Accepted form: 22 to 64 characters of `A-Z a-z 0-9 _ -`.
pub fn check_pseudonym(p: &str) -> Result<(), PseudonymError> {
    let ok = (22..=64).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(PseudonymError) }
}

/// The consent's state as a decision must see it: a given consent past its window is expired even
/// before the expiry sweep records it. `valid_until_micros` is the end of its window (exclusive).
pub fn effective_state(state: ConsentState, valid_until_micros: i64, now_micros: i64) -> ConsentState {
    if state == ConsentState::Given && now_micros >= valid_until_micros { ConsentState::Expired } else { state }
}

/// The consent a queued copy was sent under, as the gateway finds it when the copy is about to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedUnder {
    /// The copy named no consent (a notice, or a send whose rule needs none).
    NoConsent,
    /// The copy named a consent that does not exist for its sender: none by that id, or one whose
    /// controller is another organization. No organization's consent holds back or releases
    /// another's sends.
    Unknown,
    /// The sender's own consent, as stored.
    Consent { state: ConsentState, valid_until_micros: i64 },
}

/// Whether a copy already queued may go out at `now_micros`: when it named no consent, or its consent
/// is given and within its window, or superseded by a renewal (which keeps it in force for the copies
/// queued under it). Anything else waits for the expiry sweep or the revocation cascade to end it.
pub fn releases_queued_copy(under: QueuedUnder, now_micros: i64) -> bool {
    match under {
        QueuedUnder::NoConsent => true,
        QueuedUnder::Unknown => false,
        QueuedUnder::Consent { state, valid_until_micros } => matches!(
            effective_state(state, valid_until_micros, now_micros),
            ConsentState::Given | ConsentState::Superseded
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ConsentState; 5] = [
        ConsentState::Given,
        ConsentState::Withdrawn,
        ConsentState::Revoked,
        ConsentState::Expired,
        ConsentState::Superseded,
    ];

    #[test]
    fn a_given_consent_expires_at_the_end_of_its_window_exactly() {
        assert_eq!(effective_state(ConsentState::Given, 100, 99), ConsentState::Given);
        assert_eq!(effective_state(ConsentState::Given, 100, 100), ConsentState::Expired);
        assert_eq!(effective_state(ConsentState::Given, i64::MAX, i64::MAX - 1), ConsentState::Given);
        for state in ALL.into_iter().filter(|s| *s != ConsentState::Given) {
            assert_eq!(effective_state(state, 100, 1_000), state, "only a given consent changes with time");
            assert_eq!(effective_state(state, 100, 0), state);
        }
    }

    #[test]
    fn a_queued_copy_goes_only_under_a_consent_in_force_or_renewed() {
        assert!(releases_queued_copy(QueuedUnder::NoConsent, i64::MAX));
        assert!(!releases_queued_copy(QueuedUnder::Unknown, 0));
        let under = |state, until| QueuedUnder::Consent { state, valid_until_micros: until };
        assert!(releases_queued_copy(under(ConsentState::Given, 100), 99));
        assert!(!releases_queued_copy(under(ConsentState::Given, 100), 100));
        assert!(releases_queued_copy(under(ConsentState::Superseded, 100), 1_000), "a renewal keeps queued copies");
        for state in [ConsentState::Withdrawn, ConsentState::Revoked, ConsentState::Expired] {
            assert!(!releases_queued_copy(under(state, i64::MAX), 0), "{state:?}");
        }
    }
}
