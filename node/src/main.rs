#![forbid(unsafe_code)]
//! `haven-node`: run an organization's node, manage its people, and talk to it as a person.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use haven_node::app::{Node, NodeConfig};
use haven_node::console::ConsoleConfig;
use haven_node::link::LinkConfig;
use haven_trust::clock::SystemClock;
use haven_trust::ids::OrgId;
use haven_trust::pki::CertsDir;

#[derive(Parser)]
#[command(name = "haven-node", version, about = "An organization's Haven node")]
struct Cli {
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
    /// Connect to the gateway and serve the Node API.
    Serve(ServeArgs),
    /// Every other command: referral, alert, inbox, consent, whoami, audit and users (see
    /// `haven_node::cli`).
    #[command(flatten)]
    People(haven_node::cli::Command),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// This organization's id (the haven://org/<id> of its certificate).
    #[arg(long, env = "HAVEN_ORG")]
    org: OrgId,
    /// The gateway, for example https://localhost:7443.
    #[arg(long, env = "HAVEN_GATEWAY")]
    gateway: String,
    /// The name the gateway's certificate must carry.
    #[arg(long, env = "HAVEN_GATEWAY_NAME", default_value = "localhost")]
    gateway_name: String,
    /// Certificate directory laid out as `haven-certs init` writes it (ca.pem, orgs/<id>/...).
    #[arg(long, env = "HAVEN_CERTS")]
    certs: PathBuf,
    /// The node's SQLite file.
    #[arg(long, env = "HAVEN_NODE_DATABASE", default_value = "haven-node.db")]
    database: String,
    /// The users file of earlier versions: imported once, on the first start with a database that
    /// holds nobody, and never read again (people are then managed with `haven-node users`).
    #[arg(long, env = "HAVEN_USERS", default_value = "users.toml")]
    users: PathBuf,
    /// Where people reach this node's API.
    #[arg(long, env = "HAVEN_NODE_LISTEN", default_value = "127.0.0.1:7600")]
    listen: SocketAddr,
    /// TLS certificate for the API (required when --listen is not loopback).
    #[arg(long, requires = "api_key")]
    api_cert: Option<PathBuf>,
    #[arg(long, requires = "api_cert")]
    api_key: Option<PathBuf>,
    /// Serve the web console at this address, for example 127.0.0.1:7680.
    #[arg(long, env = "HAVEN_CONSOLE")]
    console: Option<SocketAddr>,
    /// TLS certificate for the console: it then serves HTTPS.
    #[arg(long, requires_all = ["console_tls_key", "console"])]
    console_tls_cert: Option<PathBuf>,
    #[arg(long, requires_all = ["console_tls_cert", "console"])]
    console_tls_key: Option<PathBuf>,
    /// Serve the console over plain HTTP on an address that is not loopback, for a reverse proxy that
    /// terminates TLS in front of it.
    #[arg(long, requires = "console", conflicts_with = "console_tls_cert")]
    console_insecure_http: bool,
    /// The origin people use to reach the console, for example https://haven.example.org: the Origin
    /// check compares against it, and an https origin makes cookies Secure and __Host- prefixed.
    #[arg(long, env = "HAVEN_CONSOLE_PUBLIC_ORIGIN", requires = "console")]
    console_public_origin: Option<String>,
    /// The phone number a survivor's copy of a consent gives, to ask questions or withdraw (the
    /// discreet copy gives nothing else).
    #[arg(long, env = "HAVEN_CONSOLE_HELP_PHONE", requires = "console")]
    console_help_phone: Option<String>,
    /// Keep the scan of each signed consent form uploaded in the console, in the node's database (an
    /// organization's choice). Without it the node hashes the scan, keeps only the hash (in the
    /// receipt) and discards the scan.
    #[arg(long, requires = "console")]
    console_keep_consent_scans: bool,
    /// Make no sealing key at the first start. By default a node whose organization has no sealing key
    /// makes one and publishes it in the key log, so that senders can seal to it at once; with this, an
    /// admin makes it later with `haven-node keys init`, and nothing can be sent to the organization
    /// until then.
    #[arg(long)]
    no_first_sealing_key: bool,
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("haven-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging(cli.log_format);
            runtime.block_on(serve(args))
        }
        Command::People(cmd) => {
            if let haven_node::cli::Command::Users(users) = &cmd
                && users.reads_password()
                && std::io::stdin().is_terminal()
            {
                // Without this a person at a terminal would face a silent wait.
                eprintln!(
                    "haven-node: type the password and press Enter; it shows as you type (pipe it in, for example from a password manager, to keep it off the screen)"
                );
            }
            let mut stdin = std::io::BufReader::new(std::io::stdin());
            let code = runtime.block_on(haven_node::cli::execute(
                &cmd,
                &mut stdin,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            ));
            return ExitCode::from(code);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haven-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let link = LinkConfig {
        gateway_name: args.gateway_name,
        ..LinkConfig::from_certs_dir(args.gateway, &CertsDir(args.certs), args.org)
    };
    let config = NodeConfig {
        link,
        database: args.database,
        users: args.users,
        listen: args.listen,
        api_tls: args.api_cert.zip(args.api_key),
        first_sealing_key: !args.no_first_sealing_key,
        console: args.console.map(|listen| ConsoleConfig {
            listen,
            tls: args.console_tls_cert.zip(args.console_tls_key),
            insecure_http: args.console_insecure_http,
            public_origin: args.console_public_origin,
            help_phone: args.console_help_phone,
            keep_scans: args.console_keep_consent_scans,
        }),
    };
    let node = Node::open(config, Arc::new(SystemClock)).await?;
    let listener = node.bind().await?;
    tracing::info!(addr = %listener.local_addr()?, "node API listening");
    if let Some((addr, origin)) = node.console() {
        tracing::info!(%addr, origin = %origin.origin, "web console listening");
    }
    node.serve_until_signal(listener).await?;
    Ok(())
}
