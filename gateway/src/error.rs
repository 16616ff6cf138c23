//! The gateway's errors, and the one place they become gRPC statuses.

use tonic::Status;

use crate::store::StoreError;

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
    /// The database failed; nothing was committed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl From<haven_sharing::delivery::StatusError> for Error {
    fn from(e: haven_sharing::delivery::StatusError) -> Self {
        use haven_sharing::delivery::StatusError as E;
        match e {
            E::NotApplicable { .. } | E::BadCode | E::CodeRequired => Error::InvalidArgument(e.to_string()),
            E::WrongParty { .. } => Error::PermissionDenied(e.to_string()),
            E::IllegalTransition { .. } => Error::FailedPrecondition(e.to_string()),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        // A message built from a caller's input is bounded where it was built; this is the last bound
        // for all of them, under what a client accepts in its headers.
        let bounded = haven_trust::untrusted::bounded;
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(bounded(m)),
            Error::PermissionDenied(m) => Status::permission_denied(bounded(m)),
            Error::NotFound(m) => Status::not_found(bounded(m)),
            Error::AlreadyExists(m) => Status::already_exists(bounded(m)),
            Error::FailedPrecondition(m) => Status::failed_precondition(bounded(m)),
            Error::OutOfRange(m) => Status::out_of_range(bounded(m)),
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal(bounded(m))
            }
            Error::Store(e @ StoreError::Unsynced(_)) => {
                tracing::error!(error = %e, "storage failure");
                Status::unavailable(
                    "the change was committed but the gateway could not sync it to disk, so a power failure could still undo it; the gateway's operator must check its disk; retry later (the change may already be applied)",
                )
            }
            Error::Store(e @ StoreError::DiskFull(_)) => {
                tracing::error!(error = %e, "storage failure: the database's disk is full; free space on it");
                Status::resource_exhausted(
                    "the gateway's database disk is full; nothing was committed. The gateway's operator must free space on the disk that holds its database; retry later",
                )
            }
            Error::Store(e @ StoreError::Unreadable(_)) => {
                tracing::error!(error = %e, "stored data cannot be read: a bug or damaged data");
                Status::internal(
                    "the gateway holds data it cannot read back (a bug or damaged data, not a passing failure); nothing was committed. The gateway's operator must check its log",
                )
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "storage failure");
                Status::unavailable("the gateway's database is unavailable; nothing was committed, retry later")
            }
        }
    }
}
