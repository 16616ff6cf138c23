//! `haven-gateway keylog verify`: checks a key-log export (`haven-node keys log`) offline, with the
//! gateway's signing certificate and the network CA's certificate, and says which keys each
//! organization published and withdrew. The verification itself is `haven_trust::keylog`.

use std::path::PathBuf;
use std::process::ExitCode;

/// The `keylog` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeyLogCommand {
    /// Verify a key-log export: every entry in order, every statement signed with a certificate the
    /// network CA issued to its organization, every checkpoint's signature and root. Exits non-zero
    /// naming the first bad line.
    Verify {
        /// The export (JSON lines, as `haven-node keys log` writes it).
        export: PathBuf,
        /// The gateway's signing certificate (CERTS_DIR/gateway/signing.crt), PEM or DER.
        #[arg(long)]
        key: PathBuf,
        /// The network CA's certificate (CERTS_DIR/ca.pem), PEM or DER.
        #[arg(long)]
        ca: PathBuf,
    },
}

/// Runs a `keylog` subcommand.
pub fn run(cmd: KeyLogCommand) -> ExitCode {
    match cmd {
        KeyLogCommand::Verify { export, key, ca } => match haven_trust::keylog::verify_files(&export, &key, &ca) {
            Ok(summary) => {
                println!("{}", summary.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("haven-gateway: key-log verification FAILED: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
