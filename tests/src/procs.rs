//! Gateway and node processes for the fault tests: the `haven-demo` binary started with a hidden role
//! (`gateway` or `node`), waited for until it prints its address, and stopped or killed by its own
//! process id. The binary's path comes from the test (`env!("CARGO_BIN_EXE_haven-demo")`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::Duration;

use haven_node::users::Users;
use haven_trust::ids::{PersonId, Role};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The heartbeat of a [`Proc::gateway`]'s delivery streams, in seconds: a stream's lease lives twice
/// as long, which is how long a node waits for its stream after the gateway holding it was killed.
pub const GATEWAY_HEARTBEAT_SECS: u64 = 1;

/// What a role prints once it listens: this, then its address.
pub const READY: &str = "HAVEN_READY ";

/// Waits (at most `within`) for a child's first line on stdout, which must be [`READY`] and its
/// address, and drains the rest in the background so the child never blocks on a full pipe. The
/// child's stdout must be piped. On failure the caller kills the child; the error says what happened.
pub fn ready_addr(child: &mut Child, within: Duration) -> Result<SocketAddr, String> {
    let stdout = child.stdout.take().ok_or("its stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line =
        rx.recv_timeout(within).map_err(|_| format!("did not report its address within {} s", within.as_secs()))?;
    line.strip_prefix(READY)
        .and_then(|a| SocketAddr::from_str(a).ok())
        .ok_or_else(|| format!("said `{line}` instead of its address"))
}

/// A running child process. Dropping it kills it (SIGKILL) and reaps it.
pub struct Proc {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    name: String,
}

impl Proc {
    /// Starts `exe args...`, sends its stderr to `log`, and waits (at most 60 s) for its ready line.
    pub fn spawn(exe: &Path, name: &str, args: &[&std::ffi::OsStr], log: &Path) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{name}: log {}: {e}", log.display()));
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", exe.display()));
        let addr = ready_addr(&mut child, Duration::from_secs(60)).unwrap_or_else(|e| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {e}")
        });
        Proc { child: Some(child), addr, name: name.to_owned() }
    }

    /// A gateway process: certificates in `dir/certs`, the bundle in `policies`, the database at
    /// `database`; its log goes to `dir/<name>.log`. Its streams beat every [`GATEWAY_HEARTBEAT_SECS`],
    /// so the stream leases of a gateway that is killed lapse within twice that.
    pub fn gateway(exe: &Path, name: &str, dir: &Path, policies: &Path, database: &str) -> Proc {
        let heartbeat = GATEWAY_HEARTBEAT_SECS.to_string();
        let args = [
            "gateway".as_ref(),
            dir.as_os_str(),
            policies.as_os_str(),
            "--database".as_ref(),
            database.as_ref(),
            "--heartbeat-secs".as_ref(),
            heartbeat.as_ref(),
        ];
        Proc::spawn(exe, name, &args, &dir.join(format!("{name}.log")))
    }

    /// A node process of `org` against `gateway_url`: certificates in `dir/certs`, its users file and
    /// SQLite database in `dir/nodes/<org>` (see [`node_users`]); its log goes to `dir/node-<org>.log`.
    pub fn node(exe: &Path, dir: &Path, org: &str, gateway_url: &str) -> Proc {
        let args = ["node".as_ref(), dir.as_os_str(), org.as_ref(), gateway_url.as_ref()];
        Proc::spawn(exe, &format!("node {org}"), &args, &dir.join(format!("node-{org}.log")))
    }

    /// The URL a node or link uses to reach this process (the dev gateway certificate names
    /// `localhost`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL, then reap: no shutdown path runs.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {} ({})", child.id(), self.name);
        child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Writes `dir/nodes/<org>/users.toml` with these people and returns each person's token.
pub fn node_users(dir: &Path, org: &str, people: &[(&str, Role)]) -> std::collections::HashMap<String, String> {
    let node_dir = dir.join("nodes").join(org);
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let mut users = Users::default();
    let tokens = people
        .iter()
        .map(|(name, role)| ((*name).to_owned(), users.add(PersonId::parse(name).expect("person"), *role)))
        .collect();
    users.save(&node_dir.join("users.toml")).expect("users file");
    tokens
}

/// Opens a node's SQLite database (`dir/nodes/<org>/node.db`) from outside the node, for reading
/// while the node runs or after it died. `None` while the node has not created it yet.
pub async fn open_node_db(dir: &Path, org: &str) -> Option<SqlitePool> {
    let path = dir.join("nodes").join(org).join("node.db");
    if !path.exists() {
        return None;
    }
    let opts = SqliteConnectOptions::new().filename(&path).busy_timeout(Duration::from_secs(15));
    SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.ok()
}
