//! Why a command failed, and the exit code that tells a script so.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (a send whose recipients were all denied is still a success: the reply says why) |
//! | 1 | anything else |
//! | 2 | usage error: the command line is wrong |
//! | 3 | refused as invalid by the node or the gateway (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `ALREADY_EXISTS`, `NOT_FOUND`) |
//! | 4 | not signed in or not permitted (`UNAUTHENTICATED`, `PERMISSION_DENIED`) |
//! | 5 | unavailable: the node or the gateway behind it cannot be reached (`UNAVAILABLE`, `DEADLINE_EXCEEDED`) |

use tonic::Code;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a failure none of the other codes describes.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the command line is wrong (clap uses the same code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the node or the gateway refused the request as invalid.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: not signed in, or not permitted.
pub const EXIT_DENIED: u8 = 4;
/// Exit code: the node or the gateway cannot be reached.
pub const EXIT_UNAVAILABLE: u8 = 5;

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (a send whose recipients were denied still succeeds; the output says why)
  2  usage error
  3  refused as invalid by the node or gateway (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, NOT_FOUND)
  4  not signed in or not permitted (UNAUTHENTICATED, PERMISSION_DENIED)
  5  unavailable: the node or the gateway cannot be reached
  1  anything else";

/// Why a people-facing command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line parsed but cannot be used: a field given twice, a token that cannot travel in a
    /// header, an https node without `--ca`.
    #[error("{0}")]
    Usage(String),
    /// No connection to the node could be made at all.
    #[error(
        "cannot reach the node at {node}: {detail} (is `haven-node serve` running there? check --node or HAVEN_NODE)"
    )]
    Unreachable { node: String, detail: String },
    /// The node, or the gateway behind it, answered with an error status.
    #[error("{what} ({code}): {message}", what = meaning(.0.code()), code = code_name(.0.code()), message = .0.message())]
    Status(tonic::Status),
    /// The node closed an inbox watch.
    #[error("the node ended the watch (it may be shutting down); run the command again to resume watching")]
    WatchEnded,
    /// The node sent something this command cannot read (a version mismatch or a damaged record).
    #[error("the node sent an answer this command cannot read: {0}")]
    Answer(String),
    /// The output could not be written (a closed pipe, a full disk).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Status(s)
    }
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unreachable { .. } | CliError::WatchEnded => EXIT_UNAVAILABLE,
            CliError::Status(s) => match s.code() {
                Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::NotFound => EXIT_REFUSED,
                Code::Unauthenticated | Code::PermissionDenied => EXIT_DENIED,
                Code::Unavailable | Code::DeadlineExceeded => EXIT_UNAVAILABLE,
                _ => EXIT_FAILED,
            },
            CliError::Answer(_) | CliError::Output(_) => EXIT_FAILED,
        }
    }
}

/// What a status code means for the person who ran the command.
fn meaning(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::NotFound => "refused",
        Code::Unauthenticated => "not signed in",
        Code::PermissionDenied => "not permitted",
        Code::Unavailable | Code::DeadlineExceeded => "unavailable",
        _ => "failed",
    }
}

/// The canonical gRPC name of a status code, as `grpcurl` and the gRPC docs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error and every cause under it, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_class_has_its_exit_code() {
        let code = |c| CliError::Status(tonic::Status::new(c, "x")).exit_code();
        assert_eq!(code(Code::NotFound), EXIT_REFUSED);
        assert_eq!(code(Code::FailedPrecondition), EXIT_REFUSED);
        assert_eq!(code(Code::Unauthenticated), EXIT_DENIED);
        assert_eq!(code(Code::PermissionDenied), EXIT_DENIED);
        assert_eq!(code(Code::Unavailable), EXIT_UNAVAILABLE);
        assert_eq!(code(Code::Internal), EXIT_FAILED);
    }

    #[test]
    fn a_status_message_names_the_code_and_the_cause() {
        let e = CliError::Status(tonic::Status::not_found("no message `x` on this node"));
        assert_eq!(e.to_string(), "refused (NOT_FOUND): no message `x` on this node");
    }
}
