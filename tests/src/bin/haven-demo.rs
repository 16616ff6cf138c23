#![forbid(unsafe_code)]
//! `haven-demo`: brings up the sample network on loopback — development certificates, the gateway on
//! SQLite and one node per organization, each a separate process — checks that every node reaches the
//! gateway as its organization, and prints how to talk to them.
//!
//! The processes are this same binary started with a hidden role (`gateway` or `node`), so one
//! `cargo run --bin haven-demo` needs nothing else built.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use haven_node::users::Users;
use haven_proto::v1::WhoAmIRequest;
use haven_proto::v1::node_client::NodeClient;
use haven_trust::clock::SystemClock;
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::pki::CertsDir;
use haven_trust::registry::Registry;

#[derive(Parser)]
#[command(name = "haven-demo", about = "Run Haven's sample network on this machine")]
struct Cli {
    /// Leave the network running and print the commands to explore it.
    #[arg(long)]
    keep_running: bool,
    /// Where certificates, databases and users files go (git-ignored).
    #[arg(long, default_value = ".haven-dev")]
    dir: PathBuf,
    /// The policy bundle.
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    #[command(subcommand)]
    role: Option<RoleCmd>,
}

#[derive(Subcommand)]
enum RoleCmd {
    #[command(hide = true)]
    Gateway {
        dir: PathBuf,
        policies: PathBuf,
        /// Defaults to DIR/gateway.db.
        #[arg(long)]
        database: Option<String>,
    },
    #[command(hide = true)]
    Node { dir: PathBuf, org: OrgId, gateway: String },
}

const READY: &str = "HAVEN_READY ";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haven-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.role {
        Some(RoleCmd::Gateway { dir, policies, database }) => rt.block_on(run_gateway(&dir, &policies, database)),
        Some(RoleCmd::Node { dir, org, gateway }) => rt.block_on(run_node(&dir, org, gateway)),
        None => rt.block_on(story(&cli.dir, &cli.policies, cli.keep_running)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haven-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn quiet_logs(name: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    tracing::debug!(process = name, "starting");
}

async fn run_gateway(dir: &Path, policies: &Path, database: Option<String>) -> anyhow::Result<()> {
    quiet_logs("gateway");
    let database = database.unwrap_or_else(|| dir.join("gateway.db").display().to_string());
    let mut config = haven_gateway::config::Config::new(dir.join("certs"), policies.to_owned(), database);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let gateway = haven_gateway::app::Gateway::open(config, Arc::new(SystemClock)).await?;
    let listener = gateway.bind().await?;
    println!("{READY}{}", listener.local_addr()?);
    gateway.serve_until_signal(listener).await?;
    Ok(())
}

async fn run_node(dir: &Path, org: OrgId, gateway: String) -> anyhow::Result<()> {
    quiet_logs("node");
    let node_dir = dir.join("nodes").join(org.as_str());
    let link = haven_node::link::LinkConfig::from_certs_dir(gateway, &CertsDir(dir.join("certs")), org);
    let config = haven_node::app::NodeConfig {
        link,
        database: node_dir.join("node.db").display().to_string(),
        users: node_dir.join("users.toml"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        api_tls: None,
    };
    let node = haven_node::app::Node::open(config, Arc::new(SystemClock)).await?;
    let listener = node.bind().await?;
    println!("{READY}{}", listener.local_addr()?);
    node.serve_until_signal(listener).await?;
    Ok(())
}

/// A child process that is stopped with SIGTERM when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, args: &[&str]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            bail!("{name} did not start within 60 s");
        }
    };
    let addr = line.strip_prefix(READY).with_context(|| format!("{name} said `{line}`"))?.parse()?;
    Ok(Proc { child, addr })
}

/// The people of each demo organization: (person, role).
fn people(org_type: &str) -> Vec<(&'static str, Role)> {
    match org_type {
        "law_enforcement" => vec![("lee-liaison", Role::Liaison), ("pat-privacy", Role::PrivacyOfficer)],
        "auditor" => vec![("avery-auditor", Role::Auditor)],
        "operator" => vec![("omar-admin", Role::Admin)],
        _ => vec![("casey-caseworker", Role::Caseworker), ("pat-privacy", Role::PrivacyOfficer)],
    }
}

async fn story(dir: &Path, policies: &Path, keep_running: bool) -> anyhow::Result<()> {
    let dir_s = dir.display().to_string();
    let pol_s = policies.display().to_string();
    println!("Haven demo: a fictional anti-trafficking network on this machine\n");
    let report = haven_certs::init(&policies.join("orgs.toml"), &dir.join("certs"), false)
        .context("making development certificates")?;
    println!("1. Development PKI in {}/certs ({} new certificates)", dir_s, report.issued.len());
    let registry = Registry::load(&policies.join("orgs.toml"), Some(&dir.join("certs/pins.toml")))
        .map_err(|e| anyhow::anyhow!(e.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n")))?;

    let mut tokens = Vec::new();
    for org in registry.iter() {
        let node_dir = dir.join("nodes").join(org.id.as_str());
        std::fs::create_dir_all(&node_dir)?;
        let mut users = Users::default();
        for (person, role) in people(org.org_type.as_str()) {
            let token = users.add(PersonId::parse(person)?, role);
            tokens.push((org.id.clone(), person, role, token));
        }
        users.save(&node_dir.join("users.toml"))?;
    }

    let gateway = spawn("gateway", &["gateway", &dir_s, &pol_s])?;
    println!("2. Gateway on https://{} (mTLS, SQLite at {}/gateway.db)", gateway.addr, dir_s);
    let url = format!("https://localhost:{}", gateway.addr.port());
    let mut nodes = Vec::new();
    for org in registry.iter() {
        nodes.push((org.id.clone(), spawn(&format!("node {}", org.id), &["node", &dir_s, org.id.as_str(), &url])?));
    }
    println!("3. {} nodes, one per organization, each its own process:\n", nodes.len());
    println!("   {:<18} {:<16} {:<22} {:<18} role", "organization", "type", "node API", "person");
    let mut failures = 0;
    for (org_id, proc_) in &nodes {
        let entry = registry.get(org_id).context("org")?;
        let (_, person, role, token) = tokens.iter().find(|t| &t.0 == org_id).context("token")?;
        let seen = whoami(proc_.addr, token).await;
        let ok = seen.as_ref().is_ok_and(|c| c.org_id == org_id.as_str() && c.person == *person);
        if !ok {
            failures += 1;
        }
        println!(
            "   {:<18} {:<16} http://{:<15} {:<18} {} {}",
            org_id,
            entry.org_type,
            proc_.addr,
            person,
            role,
            match &seen {
                Ok(_) if ok => "✓ gateway confirms identity".to_owned(),
                Ok(c) => format!("✗ gateway saw {}/{}", c.org_id, c.person),
                Err(e) => format!("✗ {e}"),
            }
        );
    }
    if failures > 0 {
        bail!("{failures} node(s) could not reach the gateway as their organization");
    }
    println!("\nEvery node reached the gateway over mutual TLS and signed a person token the gateway verified.");
    if keep_running {
        let tokens_file = dir.join("tokens.txt");
        let text: String = tokens.iter().map(|(o, p, r, t)| format!("{o}\t{p}\t{r}\t{t}\n")).collect();
        std::fs::write(&tokens_file, text)?;
        let (org, _, _, token) = &tokens[0];
        let node = nodes.iter().find(|(o, _)| o == org).map(|(_, p)| p.addr).context("node")?;
        println!("\nThe network keeps running. People's node tokens are in {}.", tokens_file.display());
        println!("Try:\n  cargo run -q --bin haven-node -- whoami --node http://{node} --token {token}");
        println!("Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(nodes);
    drop(gateway);
    println!("\nDemo finished: all steps behaved as expected.");
    Ok(())
}

async fn whoami(addr: SocketAddr, token: &str) -> anyhow::Result<haven_proto::v1::Caller> {
    let mut client = NodeClient::connect(format!("http://{addr}")).await?;
    // The node's own stream may still be connecting; the call itself goes straight to the gateway.
    let mut last = None;
    for _ in 0..50 {
        let mut req = tonic::Request::new(WhoAmIRequest {});
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
        match client.who_am_i(req).await {
            Ok(r) => return r.into_inner().caller.context("no caller"),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => bail!("{:?}: {}", s.code(), s.message()),
        }
    }
    bail!("gateway unavailable: {:?}", last.map(|s| s.message().to_owned()))
}
