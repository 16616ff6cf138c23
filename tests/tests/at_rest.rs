//! What Haven leaves on disk: database files only their owner may read, and key files that others may
//! read reported when a server starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haven_tests::net::{Db, TestNet, TestNode, db, policies_dir};
use haven_trust::clock::SystemClock;
use haven_trust::ids::Role;

const RECIPIENT: &str = "maple-house";
const BOUND: Duration = Duration::from_secs(60);

/// A SQLite file and the `-wal` and `-shm` files beside it.
fn database_files(db: &str) -> Vec<PathBuf> {
    ["", "-wal", "-shm"].iter().map(|suffix| PathBuf::from(format!("{db}{suffix}"))).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// A gateway and a node started on fresh files create their databases, with the write-ahead log and
/// the shared-memory index beside each, readable and writable by their owner alone, whatever the
/// process's umask.
#[tokio::test]
async fn database_files_are_created_owner_only() {
    if db() != Db::Sqlite {
        println!("SKIPPED: the gateway's files are SQLite's; run with HAVEN_TEST_DB=sqlite");
        return;
    }
    let net = TestNet::start().await;
    let node = net.node(RECIPIENT, &[("sam", Role::Caseworker)]).await;
    let mut stream = node.state.stream.clone();
    tokio::time::timeout(BOUND, stream.wait_for(|s| s.connected)).await.expect("stream opens").unwrap();
    let node_db = net.dir.path().join("nodes").join(RECIPIENT).join("node.db");
    let mut files = database_files(&net.database);
    files.extend(database_files(&node_db.display().to_string()));
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    node.stop().await;
    net.stop().await;
}

/// Captures what the current thread logs, for a test on a current-thread runtime.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines that warn about `file`.
    fn warnings_naming(&self, file: &Path) -> Vec<String> {
        let name = file.display().to_string();
        self.text().lines().filter(|l| l.contains("WARN") && l.contains(&name)).map(str::to_owned).collect()
    }
}

/// A gateway and a node started with a key file that its group and other users may read warn, naming
/// the file, and start; the keys left owner-only are not named.
#[tokio::test]
async fn key_files_others_may_read_are_reported_at_start() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let certs = haven_trust::pki::CertsDir(dir.path().join("certs"));
    haven_certs::init_with_gateway_names(&policies_dir().join("orgs.toml"), &certs.0, false, &[]).unwrap();
    let harbor = haven_trust::ids::OrgId::parse("harbor").unwrap();
    let loose = [certs.gateway_tls_key(), certs.pseudonym_key(), certs.org_signing_key(&harbor)];
    for key in &loose {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let database = haven_tests::net::fresh_database(dir.path()).await;
    let mut config = haven_gateway::config::Config::new(certs.0.clone(), policies_dir(), database.clone());
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let gateway = haven_gateway::app::Gateway::open(config, Arc::new(SystemClock)).await.expect("gateway starts");
    let node = TestNode::start_at(
        dir.path(),
        &certs,
        "https://localhost:1".into(),
        "harbor",
        &[("casey", Role::Caseworker)],
        Arc::new(SystemClock),
    )
    .await;

    for key in &loose {
        assert_eq!(captured.warnings_naming(key).len(), 1, "one warning names {}:\n{}", key.display(), captured.text());
    }
    for key in [certs.gateway_signing_key(), certs.org_tls_key(&harbor)] {
        assert!(captured.warnings_naming(&key).is_empty(), "{} is owner-only:\n{}", key.display(), captured.text());
    }
    node.stop().await;
    gateway.0.store.close().await;
}
