//! Why a command failed, and the exit code that tells a script so.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (a send whose recipients were all denied is still a success: the reply says why) |
//! | 1 | anything else (an export that fails `audit verify`, a file that cannot be read or written) |
//! | 2 | usage error: the command line is wrong |
//! | 3 | refused as invalid by the node or the gateway (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `ALREADY_EXISTS`, `NOT_FOUND`), what the command names does not exist (`users remove` of a person the node does not hold), or a password refused (`users passwd`) |
//! | 4 | not signed in or not permitted (`UNAUTHENTICATED`, `PERMISSION_DENIED`) |
//! | 5 | unavailable: the node or the gateway behind it cannot be reached, or answers UNAVAILABLE (`UNAVAILABLE`, `DEADLINE_EXCEEDED`) |
//! | 6 | the audit witness reports an alarm (`audit witness`, and `audit witness ack` when the problem persists) |

use tonic::Code;

use crate::failure::{self, code_name};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a failure none of the other codes describes.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the command line is wrong (clap uses the same code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the node or the gateway refused the request as invalid, what the command names does not
/// exist, or a password was refused.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: not signed in, or not permitted.
pub const EXIT_DENIED: u8 = 4;
/// Exit code: the node or the gateway cannot be reached.
pub const EXIT_UNAVAILABLE: u8 = 5;
/// Exit code: the node's audit witness reports an alarm.
pub const EXIT_WITNESS_ALARM: u8 = 6;

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (a send whose recipients were denied still succeeds; the output says why)
  2  usage error
  3  refused as invalid by the node or gateway (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, NOT_FOUND),
     not found (a person the node does not hold), or a password refused (users add, users passwd)
  4  not signed in or not permitted (UNAUTHENTICATED, PERMISSION_DENIED)
  5  unavailable: the node or the gateway cannot be reached
  6  the audit witness reports an alarm (audit witness)
  1  anything else (an export that fails `audit verify`, a file that cannot be read or written)";

/// Why a people-facing command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line parsed but cannot be used: a field given twice, a token that cannot travel in a
    /// header, an https node without `--ca`.
    #[error("{0}")]
    Usage(String),
    /// What the command names does not exist (a person the node's database does not hold).
    #[error("not found: {0}")]
    NotFound(String),
    /// What the command was given is refused (a password that is empty, too short or too long).
    #[error("refused: {0}")]
    Refused(String),
    /// A local file could not be read, parsed or written (the node's database, the users file, an
    /// export's output).
    #[error("{0}")]
    File(String),
    /// An audit export did not verify (`audit verify`), or could not be read to be verified.
    #[error("verification FAILED: {0}")]
    Verification(String),
    /// No connection to the node could be made at all.
    #[error(
        "cannot reach the node at {node}: {detail} (is `haven-node serve` running there? check --node or HAVEN_NODE)"
    )]
    Unreachable { node: String, detail: String },
    /// The connection to the node failed during the call: the node never answered it.
    #[error("the node did not answer: {0} (is `haven-node serve` still running? check its log)")]
    NodeLost(String),
    /// The node, or the gateway behind it, answered with an error status.
    #[error("{what} ({code}): {message}", what = meaning(.0.code()), code = code_name(.0.code()), message = .0.message())]
    Status(tonic::Status),
    /// The node closed an inbox watch.
    #[error("the node ended the watch (it may be shutting down); run the command again to resume watching")]
    WatchEnded,
    /// The node sent something this command cannot read (a version mismatch or a damaged record).
    #[error("the node sent an answer this command cannot read: {0}")]
    Answer(String),
    /// The node's audit witness reports an alarm: its report is printed, and the command fails.
    #[error(
        "the audit witness is in alarm ({state}): {detail}; once an auditor has looked into it: `haven-node audit witness ack --note \"...\"` (an `unpinned` alarm also clears itself when the registry pins this organization's own certificates, and no other, again)"
    )]
    WitnessAlarm { state: String, detail: String },
    /// The output could not be written (a closed pipe, a full disk).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        // A status made on this side from a transport failure is not the node's answer.
        match failure::transport_failure(&s) {
            Some(cause) => CliError::NodeLost(failure::chain(cause)),
            None => CliError::Status(s),
        }
    }
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::NotFound(_) | CliError::Refused(_) => EXIT_REFUSED,
            CliError::Unreachable { .. } | CliError::NodeLost(_) | CliError::WatchEnded => EXIT_UNAVAILABLE,
            CliError::Status(s) => match s.code() {
                Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::NotFound => EXIT_REFUSED,
                Code::Unauthenticated | Code::PermissionDenied => EXIT_DENIED,
                Code::Unavailable | Code::DeadlineExceeded => EXIT_UNAVAILABLE,
                _ => EXIT_FAILED,
            },
            CliError::WitnessAlarm { .. } => EXIT_WITNESS_ALARM,
            CliError::Answer(_) | CliError::Output(_) | CliError::File(_) | CliError::Verification(_) => EXIT_FAILED,
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
    fn a_status_made_from_a_lost_connection_is_not_the_nodes_answer() {
        let lost = tonic::Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        let e = CliError::from(lost);
        assert!(matches!(e, CliError::NodeLost(_)), "{e:?}");
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE);
        assert_eq!(CliError::from(tonic::Status::unknown("x")).exit_code(), EXIT_FAILED);
    }

    #[test]
    fn a_status_message_names_the_code_and_the_cause() {
        let e = CliError::Status(tonic::Status::not_found("no message `x` on this node"));
        assert_eq!(e.to_string(), "refused (NOT_FOUND): no message `x` on this node");
    }
}
