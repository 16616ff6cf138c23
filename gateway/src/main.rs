#![forbid(unsafe_code)]
//! `haven-gateway`: serve the gateway, and the operator's tools for policy bundles.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use haven_gateway::app::Gateway;
use haven_gateway::config::{Config, FileConfig};
use haven_trust::clock::SystemClock;

#[derive(Parser)]
#[command(
    name = "haven-gateway",
    version,
    about = "Haven's gateway: routes consent-scoped referrals and alerts between nodes"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "human", env = "HAVEN_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve nodes over mutual TLS.
    Serve(ServeArgs),
    /// Check, test and explain a policy bundle.
    #[command(subcommand)]
    Policy(haven_gateway::policy::cli::PolicyCommand),
    /// Verify an audit export offline.
    #[command(subcommand)]
    Audit(haven_gateway::audit::cli::AuditCommand),
    /// Verify the public key log of sealing keys offline.
    #[command(subcommand)]
    Keylog(haven_gateway::keys_cli::KeyLogCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file with any of: listen, certs, policies, database, max_message_bytes,
    /// request_timeout_secs, keepalive_secs, heartbeat_secs. Flags and HAVEN_* variables take precedence.
    #[arg(long, env = "HAVEN_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on for nodes.
    #[arg(long, env = "HAVEN_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Certificate directory (as written by `haven-certs init`).
    #[arg(long, env = "HAVEN_CERTS")]
    certs: Option<PathBuf>,
    /// Policy bundle directory.
    #[arg(long, env = "HAVEN_POLICIES")]
    policies: Option<PathBuf>,
    /// SQLite file path or postgres:// URL.
    #[arg(long, env = "HAVEN_DATABASE")]
    database: Option<String>,
    /// Largest gRPC message, in bytes.
    #[arg(long, env = "HAVEN_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
            None => FileConfig::default(),
        };
        let certs = self
            .certs
            .or(file.certs)
            .ok_or_else(|| anyhow::anyhow!("--certs DIR is required (or HAVEN_CERTS, or `certs` in --config)"))?;
        let policies = self.policies.or(file.policies).ok_or_else(|| {
            anyhow::anyhow!("--policies DIR is required (or HAVEN_POLICIES, or `policies` in --config)")
        })?;
        let database = self.database.or(file.database).unwrap_or_else(|| "haven-gateway.db".into());
        let mut config = Config::new(certs, policies, database);
        if let Some(listen) = self.listen.or(file.listen) {
            config.listen = listen;
        }
        if let Some(max) = self.max_message_bytes.or(file.max_message_bytes) {
            config.max_message_bytes = max;
        }
        if let Some(s) = file.request_timeout_secs {
            config.request_timeout = std::time::Duration::from_secs(s);
        }
        if let Some(s) = file.keepalive_secs {
            config.keepalive = std::time::Duration::from_secs(s);
        }
        if let Some(s) = file.heartbeat_secs {
            config.heartbeat = std::time::Duration::from_secs(s);
        }
        Ok(config)
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(cmd) => haven_gateway::policy::cli::run(cmd),
        Command::Audit(cmd) => haven_gateway::audit::cli::run(cmd),
        Command::Keylog(cmd) => haven_gateway::keys_cli::run(cmd),
        Command::Serve(args) => {
            init_logging(cli.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("haven-gateway: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("haven-gateway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let gateway = Gateway::open(config, Arc::new(SystemClock)).await?;
    let listener = gateway.bind().await?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening (mTLS)");
    gateway.serve_until_signal(listener).await?;
    Ok(())
}
