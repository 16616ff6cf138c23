//! What Haven leaves on disk: no field value in any of the gateway's SQLite files, queued or delivered
//! (the values travel sealed), a write-ahead log truncated once the gateway is idle, database files
//! only their owner may read, and key files that others may read reported when a server starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haven_tests::fixtures::{DAY, consent_request, record_consent, referral, send, text};
use haven_tests::net::{Db, TestNet, TestNode, db, policies_dir};
use haven_trust::clock::{Clock, SystemClock};
use haven_trust::ids::Role;
use sqlx::Row;
use uuid::Uuid;

const RECIPIENT: &str = "maple-house";
const BOUND: Duration = Duration::from_secs(60);

/// Records a housing consent at `node` for shelters; returns (consent id, subject).
async fn consent(node: &TestNode) -> (String, String) {
    let labels = ["identifying", "contact", "operational"];
    record_consent(node, consent_request(&["housing"], &["shelter"], &labels, SystemClock.now_micros() + 30 * DAY))
        .await
}

/// Sends `count` housing referrals from `harbor` to the shelter, each naming a fictional survivor
/// whose name is unique to this run; returns the names.
async fn send_referrals(harbor: &TestNode, count: usize) -> Vec<String> {
    let (consent_id, subject) = consent(harbor).await;
    let mut names = Vec::new();
    for _ in 0..count {
        let name = format!("Marisol-{}", Uuid::new_v4().simple());
        let mut env = referral(RECIPIENT, "housing", &subject, &consent_id);
        env.fields.insert("survivor_first_name".into(), text(&name));
        let sent = send(harbor, "casey", env).await.unwrap();
        assert_eq!(sent.state, "submitted", "{sent:?}");
        names.push(name);
    }
    names
}

/// Waits until every item queued for the shelter is acknowledged (its payload deleted).
async fn drained(pool: &sqlx::AnyPool) {
    tokio::time::timeout(BOUND, async {
        loop {
            let pending: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE org = $1 AND state = 'pending'")
                .bind(RECIPIENT)
                .fetch_one(pool)
                .await
                .unwrap()
                .get(0);
            if pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the shelter's node acknowledged every item within 60 s")
}

/// A SQLite file and the `-wal` and `-shm` files beside it.
fn database_files(db: &str) -> Vec<PathBuf> {
    ["", "-wal", "-shm"].iter().map(|suffix| PathBuf::from(format!("{db}{suffix}"))).collect()
}

/// Which of `names` occur, as raw bytes, in which of `files` (a missing file holds nothing).
fn found_in(files: &[PathBuf], names: &[String]) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else { continue };
        for name in names {
            if bytes.windows(name.len()).any(|w| w == name.as_bytes()) {
                found.push((name.clone(), file.clone()));
            }
        }
    }
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// The shelter's node, started once so that its sealing key is in the key log, then stopped: copies
/// for it rest in the gateway's queue.
async fn shelter_offline(net: &TestNet) {
    let maple = net.node(RECIPIENT, &[("sam", Role::Caseworker)]).await;
    maple.stop().await;
}

/// Field values never reach the gateway's files: not while their copies rest in its queue, not after
/// they were delivered and the gateway stopped. The same values are in the recipient's database once
/// it is back, so the search would have found them. Searched as raw bytes in the database file, its
/// write-ahead log and its shared-memory index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_values_are_in_none_of_the_gateways_files_queued_or_delivered() {
    if db() != Db::Sqlite {
        println!("SKIPPED: the gateway's files are SQLite's; run with HAVEN_TEST_DB=sqlite");
        return;
    }
    // Never idle long enough to truncate the log on its own: what was written stays in it.
    let net = TestNet::start_configured(policies_dir(), Arc::new(SystemClock), |config| {
        config.wal_idle = Duration::from_secs(3600);
    })
    .await;
    shelter_offline(&net).await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let names = send_referrals(&harbor, 40).await;
    let files = database_files(&net.database);
    let found = found_in(&files, &names);
    assert!(found.is_empty(), "values of queued copies in the gateway's files: {found:?}");

    let maple = net.node(RECIPIENT, &[("sam", Role::Caseworker)]).await;
    drained(net.gateway.store().pool()).await;
    maple.stop().await;
    harbor.stop().await;
    let node_db = net.dir.path().join("nodes").join(RECIPIENT).join("node.db");
    let at_recipient = found_in(&database_files(&node_db.display().to_string()), &names);
    let mut arrived: Vec<&String> = at_recipient.iter().map(|(n, _)| n).collect();
    arrived.sort();
    arrived.dedup();
    assert_eq!(arrived.len(), names.len(), "every value is at the recipient, where the search finds it");
    let mut net = net;
    net.stop_keeping_files().await;
    let left = found_in(&files, &names);
    assert!(left.is_empty(), "values in the gateway's files after it stopped: {left:?}");
}

/// Once no write has begun for a moment, the gateway truncates its write-ahead log, so whatever a
/// deleted row held (a consent's pseudonyms, an acknowledged copy's sealed bytes) leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gateway_truncates_its_write_ahead_log() {
    if db() != Db::Sqlite {
        println!("SKIPPED: the gateway's files are SQLite's; run with HAVEN_TEST_DB=sqlite");
        return;
    }
    let net = TestNet::start().await;
    shelter_offline(&net).await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    send_referrals(&harbor, 40).await;
    let store = net.gateway.store().clone();
    let maple = net.node(RECIPIENT, &[("sam", Role::Caseworker)]).await;
    drained(store.pool()).await;
    // A truncation counted from here began after the last acknowledgement committed (it runs on the
    // writer connection, between write transactions).
    let mut truncations = store.wal_truncations();
    truncations.borrow_and_update();
    tokio::time::timeout(BOUND, truncations.changed())
        .await
        .expect("the idle gateway truncated its write-ahead log within 60 s")
        .unwrap();
    maple.stop().await;
    harbor.stop().await;
    net.stop().await;
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
    gateway.store().close().await;
}
