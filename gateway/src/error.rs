//! The gateway's errors, and the one place they become gRPC statuses.
//!
//! Areas with refusals a caller can act on have an enum of their own, each variant carrying its data:
//! [`SubmitError`], [`ConsentError`] and the closed loop's [`StatusError`]. Their texts are what the
//! caller reads; [`code`] is the one table that gives each its gRPC code. Any value shown in a text
//! that came from a caller's input is bounded where the error is built
//! ([`haven_trust::untrusted::shown`]), and the whole text once more here.

use haven_sharing::delivery::StatusError;
use haven_trust::ids::OrgId;
use haven_trust::receipt::ConsentState;
use tonic::{Code, Status};

use crate::store::StoreError;

/// Why a submission is refused or cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The sender used the message id before, for a message with different content.
    #[error("message_id {id} was already used for a different message; make a new UUIDv7 for a new message")]
    MessageIdReused { id: String },
    /// The reply stored for an earlier submission of the message cannot be decoded: damaged data.
    #[error("the stored reply to message {id} cannot be decoded: {why}")]
    StoredReplyUnreadable { id: String, why: String },
    /// The shared commit did not read a fact the submission named: a bug.
    #[error("the shared commit did not read {what} for a submission that named it")]
    FactsUnread { what: &'static str },
}

/// Why a consent operation is refused. `id`s are as the caller gave them, already bounded for display.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The receipt's signature, form or content is not acceptable; the text says what to fix.
    #[error("{why}")]
    InvalidReceipt { why: String },
    /// The receipt was signed with another organization's key.
    #[error("consent receipt is signed with the key of organization `{key_org}`, but you are `{caller}`")]
    SignedByAnother { key_org: OrgId, caller: OrgId },
    /// The receipt names another organization as controller.
    #[error("consent receipt names controller `{controller}`; only the controller may register it")]
    ControllerIsAnother { controller: OrgId },
    /// No consent has the id.
    #[error("no consent `{id}`")]
    NotFound { id: String },
    /// The consent a renewal supersedes does not exist.
    #[error("consent `{id}` to supersede does not exist")]
    SupersededNotFound { id: String },
    /// The consent is another organization's; only its controller may use, show, renew or revoke it.
    #[error("consent `{id}` belongs to another organization{}", if *.revoking { "; only its controller may revoke it" } else { "" })]
    NotController { id: String, revoking: bool },
    /// The id is registered with different content.
    #[error(
        "consent `{id}` is already registered with different content; a changed consent is a renewal with a new consent_id"
    )]
    ContentChanged { id: String },
    /// A renewal was sent to RegisterConsent.
    #[error("this receipt supersedes another consent: register it with RenewConsent")]
    RenewalRegistered,
    /// A RenewConsent whose receipt names no consent to supersede.
    #[error("a renewal must name the consent it supersedes (`supersedes`)")]
    RenewalWithoutSupersedes,
    /// A renewal about another subject than the consent it supersedes.
    #[error("consent `{id}` is about another subject")]
    OtherSubject { id: String },
    /// Only a given or expired consent can be renewed.
    #[error("consent `{id}` is {}; only a given or expired consent can be renewed", .state.as_str())]
    NotRenewable { id: String, state: ConsentState },
    /// A revocation reason that is not one of the three.
    #[error("revocation reason `{given}` is not one of withdrawn_by_subject, revoked_by_org, recorded_in_error")]
    UnknownReason { given: String },
    /// A list filtered by a state that is not one.
    #[error("unknown consent state `{given}` (known: given, withdrawn, revoked, expired, superseded)")]
    UnknownState { given: String },
}

/// A failure while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The thing named does not exist (or the caller may not know that it does).
    #[error("{0}")]
    NotFound(String),
    /// The id is taken by different content.
    #[error("{0}")]
    AlreadyExists(String),
    /// The state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A position or size past the end (a cursor, a tree size); the message says where the end is.
    #[error("{0}")]
    OutOfRange(String),
    /// An invariant of stored data does not hold (for example a damaged Merkle tree).
    #[error("{0}")]
    Internal(String),
    /// A submission refused or unanswerable.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// A consent operation refused.
    #[error(transparent)]
    Consent(#[from] ConsentError),
    /// A status change the closed loop does not allow.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The database failed; nothing was committed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// The one table of gRPC codes for the gateway's errors (storage failures, which carry advice of their
/// own, aside).
pub fn code(e: &Error) -> Code {
    match e {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::NotFound(_) => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::OutOfRange(_) => Code::OutOfRange,
        Error::Internal(_) => Code::Internal,
        Error::Submit(e) => match e {
            SubmitError::MessageIdReused { .. } => Code::AlreadyExists,
            SubmitError::StoredReplyUnreadable { .. } | SubmitError::FactsUnread { .. } => Code::Internal,
        },
        Error::Consent(e) => match e {
            ConsentError::InvalidReceipt { .. }
            | ConsentError::RenewalRegistered
            | ConsentError::RenewalWithoutSupersedes
            | ConsentError::OtherSubject { .. }
            | ConsentError::UnknownReason { .. }
            | ConsentError::UnknownState { .. } => Code::InvalidArgument,
            ConsentError::SignedByAnother { .. }
            | ConsentError::ControllerIsAnother { .. }
            | ConsentError::NotController { .. } => Code::PermissionDenied,
            ConsentError::NotFound { .. } | ConsentError::SupersededNotFound { .. } => Code::NotFound,
            ConsentError::ContentChanged { .. } => Code::AlreadyExists,
            ConsentError::NotRenewable { .. } => Code::FailedPrecondition,
        },
        Error::Status(e) => match e {
            StatusError::NotApplicable { .. }
            | StatusError::BadCode
            | StatusError::CodeRequired
            | StatusError::UnknownCode { .. } => Code::InvalidArgument,
            StatusError::WrongParty { .. } => Code::PermissionDenied,
            StatusError::IllegalTransition { .. } => Code::FailedPrecondition,
        },
        Error::Store(StoreError::Unreadable(_)) => Code::Internal,
        Error::Store(StoreError::DiskFull(_)) => Code::ResourceExhausted,
        Error::Store(_) => Code::Unavailable,
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = code(&e);
        let Error::Store(e) = e else {
            if code == Code::Internal {
                tracing::error!(error = %e, "internal error");
            }
            // A message built from a caller's input is bounded where it was built; this is the last
            // bound for all of them, under what a client accepts in its headers.
            return Status::new(code, haven_trust::untrusted::bounded(e.to_string()));
        };
        // A storage failure's cause stays in the log; the caller gets what to do about it.
        let advice = match &e {
            StoreError::Unsynced(_) => {
                "the change was committed but the gateway could not sync it to disk, so a power failure could still undo it; the gateway's operator must check its disk; retry later (the change may already be applied)"
            }
            StoreError::DiskFull(_) => {
                "the gateway's database disk is full; nothing was committed. The gateway's operator must free space on the disk that holds its database; retry later"
            }
            StoreError::Unreadable(_) => {
                "the gateway holds data it cannot read back (a bug or damaged data, not a passing failure); nothing was committed. The gateway's operator must check its log"
            }
            _ => "the gateway's database is unavailable; nothing was committed, retry later",
        };
        match &e {
            StoreError::DiskFull(_) => {
                tracing::error!(error = %e, "storage failure: the database's disk is full; free space on it");
            }
            StoreError::Unreadable(_) => {
                tracing::error!(error = %e, "stored data cannot be read: a bug or damaged data")
            }
            _ => tracing::error!(error = %e, "storage failure"),
        }
        Status::new(code, advice)
    }
}
