//! `haven-gateway audit verify`: checks an export offline with nothing but the gateway's signing
//! certificate (and, optionally, checkpoints collected independently, for example from nodes).
//!
//! The verification itself is `haven_trust::export`, which `haven-node audit verify` runs too.

use std::path::PathBuf;
use std::process::ExitCode;

/// The `audit` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify an export: every entry, every checkpoint signature, and consistency with independent
    /// checkpoints. Exits non-zero naming the first bad line, seq or checkpoint.
    Verify {
        /// The export (JSON lines, as `haven-node audit export` writes it).
        export: PathBuf,
        /// The gateway's signing certificate (CERTS_DIR/gateway/signing.crt), PEM or DER.
        #[arg(long)]
        key: PathBuf,
        /// Checkpoints collected independently (`haven-node audit checkpoint --json`), one file each;
        /// each must be consistent with the export.
        #[arg(long = "checkpoint", num_args = 1..)]
        checkpoints: Vec<PathBuf>,
    },
}

/// Runs an `audit` subcommand.
pub fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { export, key, checkpoints } => {
            match haven_trust::export::verify_files(&export, &key, &checkpoints) {
                Ok(summary) => {
                    println!("{}", summary.describe());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("haven-gateway: verification FAILED: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
