//! What an organization's people run: `haven-node referral|alert|inbox|consent|whoami|audit`, each a client
//! of their own running node's API (`--node`, default http://127.0.0.1:7600, or HAVEN_NODE), signed
//! in with their node token (`--token` or HAVEN_TOKEN); and what its administrator runs beside the
//! node: `haven-node users` ([`users`]), which changes the people in the node's database.
//!
//! - [`referral`], [`alert`]: sending and answering messages, over the shared [`messages`] code;
//! - [`inbox`]: what arrived, and `--watch`; [`consent`]: recording, renewing and revoking consent;
//! - [`audit`]: the audit log, subject access reports, checkpoints and the witness;
//! - [`client`]: connecting and signing in; [`error`]: failures and their exit codes;
//! - [`fields`], [`dates`]: command-line syntax for field values and dates; [`output`]: tables and
//!   JSON lines.
//!
//! Every command writes to the writers it is given, and reads a password from the reader it is given,
//! so tests run it in process with [`run`] or [`run_with_input`] exactly as the binary does.

pub mod alert;
pub mod audit;
pub mod client;
pub mod consent;
pub mod dates;
pub mod error;
pub mod fields;
pub mod inbox;
pub mod keys;
pub mod kind;
pub mod messages;
pub mod output;
pub mod referral;
pub mod users;
pub mod whoami;

use std::ffi::OsString;

use error::{CliError, EXIT_CODES_HELP, EXIT_OK};
use output::Out;

/// Every subcommand but `serve`: the people-facing ones, `audit`, and `users` for the node's
/// administrator.
/// `haven-node`'s own parser flattens these in beside `serve`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Send, follow and answer referrals.
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Referral(referral::ReferralCommand),
    /// Send, follow and acknowledge safety alerts.
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Alert(alert::AlertCommand),
    /// What arrived for your organization, newest first; --watch follows new arrivals.
    #[command(after_help = EXIT_CODES_HELP)]
    Inbox(inbox::InboxArgs),
    /// Record, show, list, renew and revoke survivors' consent.
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Consent(consent::ConsentCommand),
    /// Show who you are signed in as, as the gateway sees it.
    #[command(after_help = EXIT_CODES_HELP)]
    Whoami(client::ClientArgs),
    /// Manage the people who may use this node (in its database).
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Users(users::UsersCommand),
    /// Query, export and verify the audit log; subject access reports; checkpoints and the witness.
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Audit(audit::AuditCommand),
    /// The organization's sealing keys: make, rotate, withdraw and list them.
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Keys(keys::KeysCommand),
}

/// The same commands as a parser of their own, for [`run`].
#[derive(Debug, clap::Parser)]
#[command(name = "haven-node", about = "An organization's Haven node: what its people run")]
struct PeopleCli {
    #[command(subcommand)]
    command: Command,
}

/// Parses `args` (the program name first) and runs the command, writing what it prints to `out` and
/// errors to `err`, with nothing on standard input. Returns the exit code: a usage error is 2, as in
/// the binary.
pub async fn run<I, T>(args: I, out: Out<'_>, err: Out<'_>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with_input(args, &mut std::io::empty(), out, err).await
}

/// [`run`], with `input` as standard input (where `users passwd` reads a password).
pub async fn run_with_input<I, T>(args: I, input: users::In<'_>, out: Out<'_>, err: Out<'_>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match <PeopleCli as clap::Parser>::try_parse_from(args) {
        Ok(cli) => execute(&cli.command, input, out, err).await,
        Err(e) => {
            // Help and --version are not errors: they go to `out`, like clap's own `parse`.
            let _ = if e.use_stderr() { write!(err, "{}", e.render()) } else { write!(out, "{}", e.render()) };
            u8::try_from(e.exit_code()).unwrap_or(error::EXIT_USAGE)
        }
    }
}

/// Runs a parsed command, reading standard input from `input`. Errors go to `err` as
/// `haven-node: <what failed> (<gRPC code>): <why>`.
pub async fn execute(cmd: &Command, input: users::In<'_>, out: Out<'_>, err: Out<'_>) -> u8 {
    let result = match cmd {
        Command::Referral(c) => referral::run(c, out).await,
        Command::Alert(c) => alert::run(c, out).await,
        Command::Inbox(a) => inbox::run(a, out, err).await,
        Command::Consent(c) => consent::run(c, out).await,
        Command::Whoami(a) => whoami::run(a, out).await,
        Command::Users(c) => users::run(c, input, out, err).await,
        Command::Audit(c) => audit::run(c, out, err).await,
        Command::Keys(c) => keys::run(c, out).await,
    };
    let _ = out.flush();
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => report(err, &e),
    }
}

fn report(err: Out<'_>, e: &CliError) -> u8 {
    let _ = writeln!(err, "haven-node: {e}");
    let _ = err.flush();
    e.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        <PeopleCli as clap::CommandFactory>::command().debug_assert();
    }
}
