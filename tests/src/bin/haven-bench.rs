#![forbid(unsafe_code)]
//! `haven-bench`: a load generator for the gateway, with an in-run baseline.
//!
//! ```sh
//! cargo run --release --bin haven-bench -- [scenario...] [--database URL] [--json FILE] \
//!     [--duration SECS] [--concurrency N]
//! ```
//!
//! It makes a bench network (the sample bundle plus the organizations the scenarios need, with
//! development certificates) in a temporary directory, then runs each scenario against a real gateway
//! started as its own process (this binary with the hidden role `gateway`), on a fresh SQLite file or,
//! with `--database postgres://...`, a fresh PostgreSQL database on that server (the database the URL
//! names is created first if it does not exist, and the run says so). Clients are real node
//! clients over mTLS on loopback. `baseline` is a bare tonic echo over the same mTLS stack (the hidden
//! role `echo`), measured in the same run; every other throughput is also given as a ratio to it.
//!
//! Each scenario runs a warm-up and then a fixed window; the table (stdout) and the JSON file give
//! throughput, latency percentiles from an HDR histogram, the gateway's CPU seconds over the window
//! (`utime + stime` from `/proc`) and its peak RSS (`VmHWM`). It is a benchmark, not a test: nothing
//! here asserts a timing, and the targets of issue 7 are only reported.

#[path = "../bench/mod.rs"]
mod bench;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bench::load::Window;
use bench::network::{self, Db, READY};
use bench::report::{self, Figures};
use bench::scenarios::{self, Bench, Settings};
use clap::{Parser, Subcommand, ValueEnum};
use haven_trust::clock::SystemClock;

#[derive(Parser)]
#[command(
    name = "haven-bench",
    about = "Load-test a Haven gateway on this machine, against an echo baseline measured in the same run",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Scenarios to run, in this order (default: all). `baseline` runs first in any case, since every
    /// other throughput is also reported as a ratio to it.
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// `sqlite` (a fresh file per scenario, the default) or a PostgreSQL URL: each scenario then gets a
    /// fresh database on that server, dropped afterwards. The database the URL names is created (and
    /// kept) if it does not exist.
    #[arg(long)]
    database: Option<String>,
    /// Also write the figures to this file as JSON, keyed by scenario name.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The measured window of each scenario, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The warm-up before each window, in seconds (default: the duration, at most 2).
    #[arg(long)]
    warmup: Option<f64>,
    /// Operations in flight at once (client workers).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Organizations `many-orgs` connects (each with its own certificate and stream).
    #[arg(long, default_value_t = 1000)]
    orgs: usize,
    /// Deliveries `many-orgs` queues for offline organizations before it measures.
    #[arg(long, default_value_t = 100_000)]
    queued: usize,
    /// The policy bundle to start from.
    #[arg(long, default_value_os_t = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"))]
    policies: PathBuf,
    /// Keep the bench directory (certificates, databases, logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
    #[command(subcommand)]
    role: Option<Hidden>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Baseline,
    Submit,
    E2e,
    Fanout,
    ManyOrgs,
}

impl Scenario {
    /// The name on the command line.
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
    }
}

/// The roles this binary plays as a child of itself.
#[derive(Subcommand)]
enum Hidden {
    /// A gateway on a loopback port, until SIGTERM.
    #[command(hide = true)]
    Gateway {
        certs: PathBuf,
        policies: PathBuf,
        #[arg(long)]
        database: String,
    },
    /// The baseline's echo server, until SIGTERM.
    #[command(hide = true)]
    Echo { certs: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haven-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.role {
        Some(Hidden::Gateway { ref certs, ref policies, ref database }) => {
            rt.block_on(run_gateway(certs, policies, database.clone()))
        }
        Some(Hidden::Echo { ref certs }) => {
            quiet_logs();
            rt.block_on(bench::echo::serve(certs, |addr| println!("{READY}{addr}")))
        }
        None => rt.block_on(run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haven-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn quiet_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run_gateway(certs: &Path, policies: &Path, database: String) -> anyhow::Result<()> {
    quiet_logs();
    let mut config = haven_gateway::config::Config::new(certs.to_owned(), policies.to_owned(), database);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let gateway = haven_gateway::app::Gateway::open(config, Arc::new(SystemClock)).await?;
    let listener = gateway.bind().await?;
    println!("{READY}{}", listener.local_addr()?);
    gateway.serve_until_signal(listener).await?;
    Ok(())
}

/// The issue's targets, checked against this run's figures (reported, never asserted).
fn targets(figures: &[Figures]) -> Vec<String> {
    let get = |name: &str| figures.iter().find(|f| f.name == name);
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut out = Vec::new();
    if let Some(r) = get("submit").and_then(|f| f.ratio_to_baseline) {
        out.push(format!("submit throughput {r:.2} × baseline (target ≥ 0.60): {}", mark(r >= 0.6)));
    }
    if let Some(r) = get("e2e").and_then(|f| f.ratio_to_baseline) {
        out.push(format!("e2e throughput {r:.2} × baseline (target ≥ 0.35): {}", mark(r >= 0.35)));
    }
    if let Some(f) = get("e2e@half-rate").filter(|f| !f.latency.is_empty()) {
        let p99 = f.latency.value_at_quantile(0.99) as f64 / 1000.0;
        out.push(format!("e2e p99 at half the maximum rate {p99:.2} ms (target ≤ 10 ms): {}", mark(p99 <= 10.0)));
    }
    if let Some(f) = get("many-orgs") {
        let rss = f.extra.get("rss_mib_all_connected").and_then(|v| v.as_f64());
        let peak = f.server_peak_rss_mib;
        let streams = f.extra.get("streams").and_then(|v| v.as_u64()).unwrap_or(0);
        let queued = f.extra.get("queued_deliveries").and_then(|v| v.as_u64()).unwrap_or(0);
        if let (Some(rss), Some(peak)) = (rss, peak) {
            out.push(format!(
                "gateway RSS with {streams} streams and {queued} queued deliveries {rss:.0} MiB, peak {peak:.0} MiB (target ≤ 128 MiB): {}",
                mark(peak <= 128.0)
            ));
        }
    }
    out
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if !cli.duration.is_finite() || cli.duration <= 0.0 || cli.concurrency == 0 {
        anyhow::bail!("--duration and --concurrency must be positive");
    }
    let db = Db::parse(cli.database.as_deref())?;
    if let Some(done) = db.prepare().await? {
        eprintln!("haven-bench: {done}");
    }
    let mut order = if cli.scenarios.is_empty() {
        vec![Scenario::Baseline, Scenario::Submit, Scenario::E2e, Scenario::Fanout, Scenario::ManyOrgs]
    } else {
        cli.scenarios.clone()
    };
    order.retain(|s| *s != Scenario::Baseline);
    order.dedup();
    order.insert(0, Scenario::Baseline);
    let many_orgs = if order.contains(&Scenario::ManyOrgs) { cli.orgs } else { 0 };

    let measure = Duration::from_secs_f64(cli.duration);
    let warmup = Duration::from_secs_f64(cli.warmup.unwrap_or(cli.duration.min(2.0)).max(0.0));
    eprintln!(
        "haven-bench: {} on {}, {} in flight, {:.1} s warm-up + {:.1} s per scenario",
        order.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
        db.name(),
        cli.concurrency,
        warmup.as_secs_f64(),
        measure.as_secs_f64()
    );
    let net = network::build(&cli.policies, many_orgs)?;
    eprintln!(
        "haven-bench: bench network in {} ({} extra organizations; certificates made in {:.1} s; queue_quota raised to {})",
        net.dir.path().display(),
        network::EXTRA_LIAISONS + many_orgs,
        net.certs_took.as_secs_f64(),
        network::BENCH_QUEUE_QUOTA
    );
    let settings = Settings {
        concurrency: cli.concurrency,
        window: Window { warmup, measure },
        queued: cli.queued,
        e2e_timeout: Duration::from_secs(30),
    };
    let bench = Bench { net, db: db.clone(), settings };

    let mut figures: Vec<Figures> = Vec::new();
    let mut failed = Vec::new();
    for &s in &order {
        let name = s.name();
        eprintln!("haven-bench: {name} ...");
        let r = match s {
            Scenario::Baseline => scenarios::baseline(&bench).await,
            Scenario::Submit => scenarios::submit_only(&bench).await,
            Scenario::E2e => scenarios::e2e(&bench).await,
            Scenario::Fanout => scenarios::fanout(&bench).await,
            Scenario::ManyOrgs => scenarios::many_orgs(&bench).await,
        };
        match r {
            Ok(fs) => {
                for f in &fs {
                    eprintln!("haven-bench:   {}: {:.1} ops/s, {} errors", f.name, f.throughput(), f.errors);
                }
                figures.extend(fs);
            }
            Err(e) => {
                eprintln!("haven-bench: {name} failed: {e:#}");
                failed.push(name);
            }
        }
    }

    let base = figures.iter().find(|f| f.name == "baseline").map(Figures::throughput).filter(|t| *t > 0.0);
    for f in &mut figures {
        f.ratio_to_baseline = base.map(|b| f.throughput() / b);
    }
    println!(
        "\nhaven-bench on {} ({} in flight, {:.1} s window after {:.1} s warm-up; latency in ms)\n",
        db.name(),
        cli.concurrency,
        measure.as_secs_f64(),
        warmup.as_secs_f64()
    );
    print!("{}", report::table(&figures));
    let checks = targets(&figures);
    if !checks.is_empty() {
        println!("\ntargets (issue 7):");
        for c in &checks {
            println!("  {c}");
        }
    }
    if let Some(path) = &cli.json {
        let run = serde_json::json!({
            "database": db.name(),
            "concurrency": cli.concurrency,
            "duration_s": measure.as_secs_f64(),
            "warmup_s": warmup.as_secs_f64(),
        });
        report::write_json(path, &figures, run)?;
    }
    if cli.keep || !failed.is_empty() {
        let kept = bench.net.dir.keep();
        eprintln!("haven-bench: kept {} (logs, databases, certificates)", kept.display());
    }
    if !failed.is_empty() {
        anyhow::bail!("scenario(s) failed: {}", failed.join(", "));
    }
    Ok(())
}
