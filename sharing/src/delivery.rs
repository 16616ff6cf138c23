//! A recipient's copy of a message and the item that carries it: their states, and which party may
//! move a referral or an alert from which state to which.
//!
//! A copy (`deliveries.status`) starts `sent` when it is queued, becomes `delivered` when the
//! recipient's node acknowledges the item, and then follows the closed loop of its kind:
//!
//! ```text
//! referral:  sent|delivered ─accept──► accepted ─close──► closed        (recipient)
//!            sent|delivered ─decline─► declined                          (recipient)
//!            sent|delivered|accepted ─withdraw─► withdrawn               (sender)
//! alert:     sent|delivered ─acknowledge─► acknowledged                  (recipient)
//!            sent|delivered ─withdraw─► withdrawn                        (sender)
//! any kind:  sent ─consent revoked or withdrawn─► revoked;  sent ─past its TTL─► expired
//! ```
//!
//! The item (`outbox.state`) that carries a copy or a notice to a node is `pending` until it is
//! acknowledged (`acked`), cancelled, or expired.

use std::fmt;

/// The state of one recipient's copy of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryStatus {
    /// Queued for the recipient's node.
    Sent,
    /// The recipient's node acknowledged it.
    Delivered,
    /// A referral the recipient took on.
    Accepted,
    /// A referral the recipient turned down (with a reason code).
    Declined,
    /// A referral the recipient closed (with an outcome code).
    Closed,
    /// An alert a person at the recipient acknowledged.
    Acknowledged,
    /// Withdrawn by its sender.
    Withdrawn,
    /// Its consent was revoked or withdrawn before the recipient's node took it.
    Revoked,
    /// Not taken within the network's delivery TTL.
    Expired,
}

impl DeliveryStatus {
    /// Every status, in the wire enum's order.
    pub const ALL: [DeliveryStatus; 9] = [
        Self::Sent,
        Self::Delivered,
        Self::Accepted,
        Self::Declined,
        Self::Closed,
        Self::Withdrawn,
        Self::Revoked,
        Self::Expired,
        Self::Acknowledged,
    ];

    /// The storage name, which is also the wire name in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Closed => "closed",
            Self::Acknowledged => "acknowledged",
            Self::Withdrawn => "withdrawn",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the recipient holds the copy: its node took it (whatever its people did since).
    pub fn recipient_holds_it(self) -> bool {
        matches!(self, Self::Delivered | Self::Accepted | Self::Declined | Self::Closed | Self::Acknowledged)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a queued item (a copy or a notice on its way to a node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemState {
    /// Waiting for the node's acknowledgement.
    Pending,
    /// Acknowledged by the node; its payload is gone.
    Acked,
    /// Cancelled before the node took it (revocation, withdrawal); its payload is gone.
    Cancelled,
    /// Not taken within its TTL; its payload is gone.
    Expired,
}

impl ItemState {
    /// Every state.
    pub const ALL: [ItemState; 4] = [Self::Pending, Self::Acked, Self::Cancelled, Self::Expired];

    /// The storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Acked => "acked",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The party to a copy that asks for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Sender,
    Recipient,
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Party::Sender => "sender",
            Party::Recipient => "recipient",
        })
    }
}

/// Why a status change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// The status is not one a party sets on this kind of message (for example `accepted` on an alert,
    /// or `delivered`, which only the transport sets).
    #[error("status {} does not apply to a {kind}", .to.as_str().to_ascii_uppercase())]
    NotApplicable { kind: String, to: DeliveryStatus },
    /// The change is the other party's to make.
    #[error("only the {needs} may set this status")]
    WrongParty { needs: Party },
    /// The copy is in a state this change cannot leave.
    #[error("cannot move a {kind} from `{from}` to `{to}` (allowed from: {})", list(.allowed))]
    IllegalTransition { kind: String, from: DeliveryStatus, to: DeliveryStatus, allowed: &'static [DeliveryStatus] },
    /// A status code is a snake_case code, never free text (it is stored and shown to the other party).
    #[error("code must be a snake_case code of at most 64 characters, never free text")]
    BadCode,
    /// A decline says why, and a close says how it ended.
    #[error("a decline needs a reason code and a close needs an outcome code")]
    CodeRequired,
    /// The kind lists the codes for this status, and the code is not one of them.
    #[error("the network's schema lists the codes for {status}; use one of: {}", .allowed.join(", "))]
    UnknownCode { status: &'static str, allowed: Vec<String> },
}

fn list(statuses: &[DeliveryStatus]) -> String {
    statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// The new status of a copy of a `kind` message now `from`, when `by` asks for `to`; the closed loop
/// drawn in the module documentation. The recipient's own change proves it holds the copy, even if its
/// node's acknowledgement has not committed yet (the node stores an item, then acknowledges it), so
/// `sent` counts as delivered.
pub fn transition(
    kind: &str,
    from: DeliveryStatus,
    to: DeliveryStatus,
    by: Party,
) -> Result<DeliveryStatus, StatusError> {
    use DeliveryStatus as S;
    let (needs, allowed): (Party, &'static [DeliveryStatus]) = match (kind, to) {
        ("referral", S::Accepted) => (Party::Recipient, &[S::Sent, S::Delivered]),
        ("referral", S::Declined) => (Party::Recipient, &[S::Sent, S::Delivered]),
        ("referral", S::Closed) => (Party::Recipient, &[S::Accepted]),
        ("referral", S::Withdrawn) => (Party::Sender, &[S::Sent, S::Delivered, S::Accepted]),
        ("alert", S::Acknowledged) => (Party::Recipient, &[S::Sent, S::Delivered]),
        ("alert", S::Withdrawn) => (Party::Sender, &[S::Sent, S::Delivered]),
        (kind, to) => return Err(StatusError::NotApplicable { kind: kind.to_owned(), to }),
    };
    if needs != by {
        return Err(StatusError::WrongParty { needs });
    }
    if !allowed.contains(&from) {
        return Err(StatusError::IllegalTransition { kind: kind.to_owned(), from, to, allowed });
    }
    Ok(to)
}

/// Checks the code a party gives with a change to `to` (the status asked for, when it is one a copy
/// can have): snake_case, at most 64 characters, never free text; a decline needs its reason and a
/// close its outcome.
pub fn check_code(to: Option<DeliveryStatus>, code: &str) -> Result<(), StatusError> {
    let snake = code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !snake {
        return Err(StatusError::BadCode);
    }
    if matches!(to, Some(DeliveryStatus::Declined | DeliveryStatus::Closed)) && code.is_empty() {
        return Err(StatusError::CodeRequired);
    }
    Ok(())
}

/// What a party's status change does to one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusPlan {
    /// The copy's new status.
    pub to: DeliveryStatus,
    /// End the items still queued for the copy: a withdrawal before the recipient's node took it.
    pub cancel_queued: bool,
    /// Tell the other party (a status notice on its stream). A copy withdrawn before its recipient
    /// took it is simply never delivered, so its recipient hears nothing.
    pub notify_other_party: bool,
}

/// Plans `by`'s change of a `kind` copy now `from` to `to` ([`transition`] decides whether it may).
pub fn plan_status_change(
    kind: &str,
    from: DeliveryStatus,
    to: DeliveryStatus,
    by: Party,
) -> Result<StatusPlan, StatusError> {
    let to = transition(kind, from, to, by)?;
    let withdrawn_unsent = to == DeliveryStatus::Withdrawn && from == DeliveryStatus::Sent;
    Ok(StatusPlan { to, cancel_queued: withdrawn_unsent, notify_other_party: !withdrawn_unsent })
}

/// What the end of a consent (revoked or withdrawn) does to one copy sent under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentEndPlan {
    /// The copy was still queued: its items end, it becomes `revoked`, and its sender is told.
    pub revoke: bool,
    /// The recipient holds the copy, or may (it was on its way): it gets a withdrawal notice.
    pub notify_recipient: bool,
}

/// Plans what the end of its consent does to a copy now `status`.
pub fn plan_consent_end(status: DeliveryStatus) -> ConsentEndPlan {
    let revoke = status == DeliveryStatus::Sent;
    // A copy cancelled while queued may already be on its way to the node: count it as received.
    ConsentEndPlan { revoke, notify_recipient: revoke || status.recipient_holds_it() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus as S;

    #[test]
    fn storage_names_round_trip_and_unknown_ones_do_not_parse() {
        for s in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        for s in ItemState::ALL {
            assert_eq!(ItemState::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("Sent"), None);
        assert_eq!(ItemState::parse(""), None);
    }

    #[test]
    fn a_referral_follows_its_closed_loop() {
        assert_eq!(transition("referral", S::Sent, S::Accepted, Party::Recipient), Ok(S::Accepted));
        assert_eq!(transition("referral", S::Delivered, S::Declined, Party::Recipient), Ok(S::Declined));
        assert_eq!(transition("referral", S::Accepted, S::Closed, Party::Recipient), Ok(S::Closed));
        assert_eq!(transition("referral", S::Accepted, S::Withdrawn, Party::Sender), Ok(S::Withdrawn));
        let e = transition("referral", S::Delivered, S::Closed, Party::Recipient).unwrap_err();
        assert_eq!(e.to_string(), "cannot move a referral from `delivered` to `closed` (allowed from: accepted)");
        assert!(matches!(e, StatusError::IllegalTransition { from: S::Delivered, to: S::Closed, .. }));
        let e = transition("referral", S::Declined, S::Withdrawn, Party::Sender).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot move a referral from `declined` to `withdrawn` (allowed from: sent, delivered, accepted)"
        );
    }

    #[test]
    fn each_change_is_one_partys_to_make() {
        let e = transition("referral", S::Sent, S::Accepted, Party::Sender).unwrap_err();
        assert_eq!(e, StatusError::WrongParty { needs: Party::Recipient });
        assert_eq!(e.to_string(), "only the recipient may set this status");
        let e = transition("alert", S::Sent, S::Withdrawn, Party::Recipient).unwrap_err();
        assert_eq!(e.to_string(), "only the sender may set this status");
    }

    #[test]
    fn an_alert_is_acknowledged_not_accepted_and_transport_states_are_never_set_by_a_party() {
        assert_eq!(transition("alert", S::Delivered, S::Acknowledged, Party::Recipient), Ok(S::Acknowledged));
        let e = transition("alert", S::Delivered, S::Accepted, Party::Recipient).unwrap_err();
        assert_eq!(e.to_string(), "status ACCEPTED does not apply to a alert");
        for to in [S::Sent, S::Delivered, S::Revoked, S::Expired] {
            for kind in ["referral", "alert"] {
                assert!(
                    matches!(transition(kind, S::Sent, to, Party::Recipient), Err(StatusError::NotApplicable { .. })),
                    "{kind} to {to}"
                );
            }
        }
        assert!(matches!(
            transition("postcard", S::Sent, S::Accepted, Party::Recipient),
            Err(StatusError::NotApplicable { .. })
        ));
    }

    #[test]
    fn only_a_copy_its_node_took_counts_as_held() {
        let held: Vec<_> = DeliveryStatus::ALL.into_iter().filter(|s| s.recipient_holds_it()).collect();
        assert_eq!(held, [S::Delivered, S::Accepted, S::Declined, S::Closed, S::Acknowledged]);
    }

    #[test]
    fn a_withdrawal_before_delivery_cancels_quietly_and_any_other_change_is_told() {
        let plan = plan_status_change("referral", S::Sent, S::Withdrawn, Party::Sender).unwrap();
        assert_eq!(plan, StatusPlan { to: S::Withdrawn, cancel_queued: true, notify_other_party: false });
        let plan = plan_status_change("referral", S::Delivered, S::Withdrawn, Party::Sender).unwrap();
        assert_eq!(plan, StatusPlan { to: S::Withdrawn, cancel_queued: false, notify_other_party: true });
        let plan = plan_status_change("alert", S::Sent, S::Acknowledged, Party::Recipient).unwrap();
        assert_eq!(plan, StatusPlan { to: S::Acknowledged, cancel_queued: false, notify_other_party: true });
        assert!(plan_status_change("alert", S::Withdrawn, S::Acknowledged, Party::Recipient).is_err());
    }

    #[test]
    fn codes_are_snake_case_and_a_decline_or_close_needs_one() {
        assert_eq!(check_code(Some(S::Accepted), ""), Ok(()));
        assert_eq!(check_code(Some(S::Declined), "no_capacity"), Ok(()));
        assert_eq!(check_code(Some(S::Declined), ""), Err(StatusError::CodeRequired));
        assert_eq!(check_code(Some(S::Closed), ""), Err(StatusError::CodeRequired));
        assert_eq!(check_code(Some(S::Closed), "Housed today"), Err(StatusError::BadCode));
        assert_eq!(check_code(Some(S::Closed), &"a".repeat(65)), Err(StatusError::BadCode));
        assert_eq!(check_code(Some(S::Closed), &"a".repeat(64)), Ok(()));
        assert_eq!(check_code(None, ""), Ok(()), "a status no copy can have is refused later, by the transition");
        assert_eq!(check_code(None, "Free text"), Err(StatusError::BadCode));
    }

    #[test]
    fn the_end_of_a_consent_revokes_queued_copies_and_tells_every_holder() {
        assert_eq!(plan_consent_end(S::Sent), ConsentEndPlan { revoke: true, notify_recipient: true });
        for held in [S::Delivered, S::Accepted, S::Declined, S::Closed, S::Acknowledged] {
            assert_eq!(plan_consent_end(held), ConsentEndPlan { revoke: false, notify_recipient: true }, "{held}");
        }
        for gone in [S::Withdrawn, S::Revoked, S::Expired] {
            assert_eq!(plan_consent_end(gone), ConsentEndPlan { revoke: false, notify_recipient: false }, "{gone}");
        }
    }
}
