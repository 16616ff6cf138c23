//! What the CLI calls the messages people send, and their statuses.

use haven_proto::v1::InboxRequest;

/// The two kinds of message people send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Referral,
    Alert,
}

impl Kind {
    /// The wire name (`policies/schema.toml`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Referral => "referral",
            Kind::Alert => "alert",
        }
    }
}

/// The lowercase name of a status. The sender's node stores a denied recipient without a lifecycle
/// status, only with its reason, so that shows as `denied`.
pub fn status_name(status: i32, reason: &str) -> String {
    crate::mailbox::recipient_status(status, reason)
}

/// The inbox request for one kind.
pub fn inbox_request(kind: Option<Kind>, limit: u32) -> InboxRequest {
    InboxRequest { kind: kind.map(|k| k.as_str().to_owned()).unwrap_or_default(), limit }
}
