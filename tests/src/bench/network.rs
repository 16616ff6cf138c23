//! The bench network: a copy of the sample policy bundle with the organizations the scenarios need,
//! development certificates for all of them, a fresh database for each scenario, and the gateway and
//! echo processes.
//!
//! The bundle differs from `policies/` in two ways, both printed at the start of a run:
//! - `orgs.toml` gains 48 law-enforcement liaisons (`bench-le-NN`, so an alert fans out to 50) and the
//!   `many-orgs` organizations (`bench-org-NNNN`: the first five NGOs, the rest shelters);
//! - `network.toml` raises `queue_quota` so that a scenario in which nothing consumes (`submit`,
//!   `fanout`, the queue `many-orgs` fills) measures queueing rather than the quota refusal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use haven_gateway::store::reported::reported;
use haven_trust::ids::OrgId;
use haven_trust::pki::CertsDir;
use sqlx::Connection;
use tempfile::TempDir;

pub use haven_tests::procs::READY;
use haven_tests::procs::ready_addr;

/// Law-enforcement liaisons added so that an alert has 50 recipients (the sample has two).
pub const EXTRA_LIAISONS: usize = 48;

/// How many of the `many-orgs` organizations are NGOs (senders); the rest are shelters.
pub const MANY_SENDERS: usize = 5;

/// The bench's `queue_quota`: high enough that no scenario meets it, and the most `network.toml`
/// accepts.
pub const BENCH_QUEUE_QUOTA: u32 = 1_000_000;

/// Certificates and the bench bundle, in a temporary directory.
pub struct BenchNet {
    pub dir: TempDir,
    pub certs: CertsDir,
    pub policies: PathBuf,
    /// The `many-orgs` organizations, senders first.
    pub many: Vec<OrgId>,
    /// How long making the certificates took.
    pub certs_took: Duration,
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("mkdir {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()))?;
        } else {
            std::fs::copy(&p, to.join(e.file_name())).with_context(|| format!("copy {}", p.display()))?;
        }
    }
    Ok(())
}

/// Makes the bench bundle from `source` (the repository's `policies/`) and certificates for every
/// organization in it, with `many_orgs` extra organizations for the `many-orgs` scenario.
pub fn build(source: &Path, many_orgs: usize) -> anyhow::Result<BenchNet> {
    let dir = tempfile::Builder::new().prefix("haven-bench-").tempdir()?;
    let policies = dir.path().join("policies");
    copy_dir(source, &policies)?;

    let network = policies.join("network.toml");
    let text = std::fs::read_to_string(&network)?;
    let Some(line) = text.lines().find(|l| l.trim_start().starts_with("queue_quota")) else {
        bail!("{} has no queue_quota line to raise", network.display());
    };
    std::fs::write(&network, text.replace(line, &format!("queue_quota = {BENCH_QUEUE_QUOTA}")))?;

    let mut orgs = std::fs::read_to_string(policies.join("orgs.toml"))?;
    orgs.push_str("\n# Added by haven-bench.\n");
    for i in 1..=EXTRA_LIAISONS {
        orgs.push_str(&format!(
            "\n[[org]]\nid = \"bench-le-{i:02}\"\nname = \"Bench Liaison {i:02} (fictional)\"\ntype = \"law_enforcement\"\n"
        ));
    }
    let mut many = Vec::with_capacity(many_orgs);
    for i in 1..=many_orgs {
        let id = format!("bench-org-{i:04}");
        let kind = if i <= MANY_SENDERS { "ngo" } else { "shelter" };
        orgs.push_str(&format!(
            "\n[[org]]\nid = \"{id}\"\nname = \"Bench Organization {i:04} (fictional)\"\ntype = \"{kind}\"\n"
        ));
        many.push(OrgId::parse(&id)?);
    }
    std::fs::write(policies.join("orgs.toml"), orgs)?;

    let certs = dir.path().join("certs");
    let started = Instant::now();
    haven_certs::init(&policies.join("orgs.toml"), &certs, false).context("making development certificates")?;
    Ok(BenchNet { certs: CertsDir(certs), policies, many, certs_took: started.elapsed(), dir })
}

/// Where each scenario's gateway keeps its data.
#[derive(Debug, Clone)]
pub enum Db {
    /// A new SQLite file in the bench directory.
    Sqlite,
    /// A new database on this server, created next to the one the URL names and dropped afterwards.
    Postgres { admin: String },
}

impl Db {
    /// `sqlite` (or nothing) or a `postgres://` URL.
    pub fn parse(s: Option<&str>) -> anyhow::Result<Db> {
        match s {
            None | Some("sqlite") => Ok(Db::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Db::Postgres { admin: url.to_owned() })
            }
            Some(other) => bail!("--database must be `sqlite` or a postgres:// URL, not `{other}`"),
        }
    }

    /// On PostgreSQL, makes sure the database the URL names exists, creating it (through the server's
    /// `postgres` database) if it does not, since each scenario's database is made next to it. Returns
    /// what it did, for the operator.
    pub async fn prepare(&self) -> anyhow::Result<Option<String>> {
        let Db::Postgres { admin } = self else { return Ok(None) };
        let missing = match sqlx::PgConnection::connect(admin).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(None);
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNKNOWN_DATABASE) => e,
            Err(e) => bail!("cannot reach PostgreSQL at {}: {}", redact(admin), reported(&e)),
        };
        let Some(name) = database_of(admin).filter(|n| !n.is_empty()) else {
            bail!("cannot reach PostgreSQL at {}: {}", redact(admin), missing.message());
        };
        let server = with_database(admin, "postgres");
        let mut conn = sqlx::PgConnection::connect(&server).await.map_err(|e| {
            anyhow::anyhow!(
                "database {name} does not exist at {}, and its server's `postgres` database cannot be reached to create it: {}",
                redact(admin),
                reported(&e)
            )
        })?;
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create database {name} at {}: {}", redact(admin), reported(&e)))?;
        let _ = conn.close().await;
        Ok(Some(format!("created database {name} at {}: it did not exist", redact(admin))))
    }

    /// `sqlite` or `postgres`.
    pub fn name(&self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres { .. } => "postgres",
        }
    }

    /// A fresh, empty database for one scenario.
    pub async fn fresh(&self, dir: &Path, label: &str) -> anyhow::Result<FreshDb> {
        match self {
            Db::Sqlite => {
                let path = dir.join(format!("gateway-{label}.db"));
                Ok(FreshDb { url: path.display().to_string(), created: None })
            }
            Db::Postgres { admin } => {
                let name = format!("haven_bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(admin)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL at {}: {}", redact(admin), reported(&e)))?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot create database {name}: {}", reported(&e)))?;
                Ok(FreshDb { url: with_database(admin, &name), created: Some((admin.clone(), name)) })
            }
        }
    }
}

/// PostgreSQL's SQLSTATE for a database that does not exist (`invalid_catalog_name`).
const UNKNOWN_DATABASE: &str = "3D000";

/// The database a PostgreSQL URL names (the last path segment, before any query).
fn database_of(url: &str) -> Option<&str> {
    let base = url.split('?').next().unwrap_or(url);
    let (scheme_end, _) = base.split_once("://")?;
    base[scheme_end.len() + 3..].split_once('/').map(|(_, db)| db)
}

/// The same URL naming another database on the same server, its query (`sslmode`, ...) kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let server = match database_of(base) {
        Some(db) => &base[..base.len() - db.len() - 1],
        None => base,
    };
    format!("{server}/{database}{query}")
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A database made for one scenario.
pub struct FreshDb {
    pub url: String,
    /// The admin URL and name of a PostgreSQL database to drop afterwards.
    created: Option<(String, String)>,
}

impl FreshDb {
    /// The admin URL and name of a PostgreSQL database (`None` on SQLite).
    pub fn postgres(&self) -> Option<(String, String)> {
        self.created.clone()
    }

    /// Drops a PostgreSQL database once its gateway has stopped (a SQLite file goes with the
    /// directory). The server may still be ending the gateway's sessions, so this asks it to end them.
    pub async fn drop_now(self) {
        let Some((admin, name)) = self.created else { return };
        let mut last = String::new();
        for _ in 0..20 {
            match sqlx::PgConnection::connect(&admin).await {
                Ok(mut conn) => {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
                        Ok(_) => return,
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("haven-bench: could not drop database {name}: {last}");
    }
}

/// A child process of this binary running a hidden role. Dropping it kills it.
pub struct Proc {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Starts this binary with `args`, its stderr to `log`, and waits (at most 120 s) for its ready line.
    pub fn spawn(name: &str, args: &[&std::ffi::OsStr], log: &Path) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe()?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("{name}: log {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let addr = match ready_addr(&mut child, Duration::from_secs(120)) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{name} {e}; see {}", log.display());
            }
        };
        Ok(Proc { child: Some(child), addr, name: name.to_owned(), log: log.to_owned() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The URL a client uses (the development gateway certificate names `localhost`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// SIGTERM, then up to 15 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "haven-bench: {} did not stop within 15 s of SIGTERM; killing it (log: {})",
            self.name,
            self.log.display()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundle the bench writes is one the gateway loads: every limit it raises stays within the
    /// ceilings `network.toml` enforces.
    #[test]
    fn the_bench_bundle_loads() {
        let net = build(&haven_tests::net::policies_dir(), 3).unwrap();
        let bundle = haven_gateway::policy::Bundle::load(&net.policies, None).unwrap_or_else(|problems| {
            panic!("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        });
        assert_eq!(bundle.network().queue_quota, BENCH_QUEUE_QUOTA);
        assert_eq!(net.many.len(), 3);
    }

    #[test]
    fn another_database_on_the_same_server_keeps_the_query() {
        let url = "postgres://haven@db.internal:5432/bench?sslmode=verify-full";
        assert_eq!(database_of(url), Some("bench"));
        assert_eq!(with_database(url, "postgres"), "postgres://haven@db.internal:5432/postgres?sslmode=verify-full");
        assert_eq!(with_database("postgres://localhost/x", "y"), "postgres://localhost/y");
        assert_eq!(database_of("postgres://localhost"), None);
        assert_eq!(with_database("postgres://localhost", "y"), "postgres://localhost/y");
    }

    /// `--database URL` naming a database that does not exist yet: it is created, and said so.
    #[tokio::test]
    async fn a_database_the_url_names_is_created_when_missing() {
        if haven_tests::net::db() != haven_tests::net::Db::Postgres {
            println!("SKIPPED: needs PostgreSQL; run with HAVEN_TEST_DB=postgres");
            return;
        }
        let server =
            std::env::var("HAVEN_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("haven_bench_admin_{}", uuid::Uuid::new_v4().simple());
        let db = Db::parse(Some(&with_database(&server, &name))).unwrap();
        let said = db.prepare().await.unwrap().expect("it says it created the database");
        assert!(said.starts_with(&format!("created database {name} at ")), "{said}");
        assert_eq!(db.prepare().await.unwrap(), None, "it exists now");
        let fresh = db.fresh(Path::new("/nonexistent"), "t").await.unwrap();
        assert!(fresh.url.contains("/haven_bench_"), "{}", fresh.url);
        fresh.drop_now().await;
        let mut conn = sqlx::PgConnection::connect(&with_database(&server, "postgres")).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
