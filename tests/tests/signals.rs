//! The gateway and a node as processes: SIGHUP after `haven-certs revoke` makes the gateway refuse the
//! revoked certificate and close its open stream; a node imports its users file once, on its first
//! start, and from then on `haven-node users`, run beside it on its database, changes its people at
//! once, with no signal (SIGHUP reads no file); SIGTERM shuts down gracefully.

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_node::link::{GatewayLink, LinkConfig};
use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::node_client::NodeClient;
use haven_proto::v1::{InboxRequest, NodeFrame};
use haven_tests::fixtures::stream_end;
use haven_tests::net::{fresh_database, policies_dir};
use haven_tests::procs::{Proc, node_users};
use haven_trust::clock::SystemClock;
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::pki::CertsDir;
use tonic::Code;

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

#[tokio::test]
async fn sighup_after_revoke_closes_the_stream_and_sigterm_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    haven_certs::init(&policies_dir().join("orgs.toml"), &certs, false).unwrap();
    let database = fresh_database(dir.path()).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_haven-demo"))
        .arg("gateway")
        .arg(dir.path())
        .arg(policies_dir())
        .arg("--database")
        .arg(&database)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr =
        haven_tests::procs::ready_addr(&mut child, Duration::from_secs(60)).expect("gateway reports its address");

    let harbor = OrgId::parse("harbor").unwrap();
    let link = GatewayLink::new(
        &LinkConfig::from_certs_dir(
            format!("https://localhost:{}", addr.port()),
            &CertsDir(certs.clone()),
            harbor.clone(),
        ),
        Arc::new(SystemClock),
    )
    .unwrap();
    let (_frames, rx) = tokio::sync::mpsc::channel::<NodeFrame>(4);
    let req = link.request(&PersonId::node(), Role::Node, tokio_stream::wrappers::ReceiverStream::new(rx)).unwrap();
    let mut stream = GatewayClient::new(link.channel()).deliveries(req).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some(), "welcome");

    haven_certs::revoke(&certs, &harbor, haven_certs::CertKind::Tls).unwrap();
    signal(child.id(), "HUP");
    let status = stream_end(&mut stream, Duration::from_secs(10), "after SIGHUP").await.expect("with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{}", status.message());

    signal(child.id(), "TERM");
    let exited = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exited.success(), "graceful shutdown exits 0: {exited:?}");
}

/// Runs `haven-node ARGS...` in process: (exit code, stdout, stderr).
async fn haven_node(args: &[&str]) -> (u8, String, String) {
    let argv = std::iter::once("haven-node").chain(args.iter().copied());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = haven_node::cli::run(argv, &mut out, &mut err).await;
    (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

/// A node's log as text: without the colour codes its logger writes.
fn read_log(path: &Path) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let mut plain = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence ends with its first letter: `ESC [ 2 m`.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Polls `check` (every 20 ms) until it yields a value; fails after 20 s, naming `what`.
async fn within_20s<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after 20 s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node process imports its users file on its first start and says so in its log, once: people are
/// then changed with `haven-node users` on its database, beside it, and each change is in force on the
/// next call with no signal. A removed person's token is unknown, and the inbox watch they held ends;
/// a disabled person is refused; enabled again, their old token is refused as revoked until `users
/// add` gives a new one. SIGHUP re-reads nothing: a broken users file changes nothing, and the node
/// says so and keeps serving.
#[tokio::test]
async fn people_changed_beside_a_running_node_are_in_force_at_once_and_sighup_reads_no_file() {
    let dir = tempfile::tempdir().unwrap();
    haven_certs::init(&policies_dir().join("orgs.toml"), &dir.path().join("certs"), false).unwrap();
    let database = fresh_database(dir.path()).await;
    let exe = Path::new(env!("CARGO_BIN_EXE_haven-demo"));
    let gateway = Proc::gateway(exe, "gateway", dir.path(), &policies_dir(), &database);
    let people = [("casey", Role::Caseworker), ("sam", Role::Caseworker), ("lee", Role::Liaison)];
    let tokens = node_users(dir.path(), "harbor", &people);
    let node = Proc::node(exe, dir.path(), "harbor", &gateway.url());
    let url = format!("http://{}", node.addr);
    let node_dir = dir.path().join("nodes").join("harbor");
    let (users_file, db) = (node_dir.join("users.toml"), node_dir.join("node.db").display().to_string());
    let log = dir.path().join("node-harbor.log");
    let logged = read_log(&log);
    assert!(logged.contains("imported the users file into the node database; the file is no longer read"), "{logged}");
    assert!(logged.contains("people=3"), "{logged}");
    let inbox = |token: String| {
        let url = url.clone();
        async move { haven_node(&["inbox", "--node", &url, "--token", &token]).await }
    };
    let users = |args: &[&str]| {
        let all: Vec<String> = std::iter::once("users")
            .chain(args.iter().copied())
            .chain(["--database", &db])
            .map(str::to_owned)
            .collect();
        async move { haven_node(&all.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    for (person, _) in people {
        assert_eq!(inbox(tokens[person].clone()).await.0, 0, "{person} signs in");
    }
    // sam keeps an inbox watch open: removing sam ends it.
    let mut watch_req = tonic::Request::new(InboxRequest::default());
    watch_req.metadata_mut().insert("authorization", format!("Bearer {}", tokens["sam"]).parse().unwrap());
    let mut watch = NodeClient::connect(url.clone()).await.unwrap().watch_inbox(watch_req).await.unwrap().into_inner();

    assert_eq!(users(&["remove", "sam"]).await.0, 0);
    assert_eq!(users(&["disable", "casey"]).await.0, 0);
    let (code, _, err) = inbox(tokens["sam"].clone()).await;
    assert_eq!(code, 4, "in force on the next call: {err}");
    assert!(err.contains("unknown node token"), "{err}");
    let (code, _, err) = inbox(tokens["casey"].clone()).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("`casey` is disabled"), "{err}");
    assert_eq!(inbox(tokens["lee"].clone()).await.0, 0, "lee was not changed");
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the removed person's watch ends within 10 s")
        .expect_err("with a status");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");

    // SIGHUP reads no file: a broken one changes nothing, and the node says there is nothing to re-read.
    std::fs::write(&users_file, "[[user]]\nname = 3\n").unwrap();
    signal(node.pid(), "HUP");
    let logged = within_20s("the node's answer to SIGHUP in its log", || async {
        Some(read_log(&log)).filter(|l| l.contains("SIGHUP: nothing to re-read"))
    })
    .await;
    assert!(!logged.contains("users file refused"), "{logged}");
    assert_eq!(inbox(tokens["lee"].clone()).await.0, 0, "the people stay");
    assert_eq!(inbox(tokens["casey"].clone()).await.0, 4, "and so do their refusals");

    // casey enabled again: their old token stays revoked, and `users add` gives a new one.
    assert_eq!(users(&["enable", "casey"]).await.0, 0);
    let (code, _, err) = inbox(tokens["casey"].clone()).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("this node token of `casey` was revoked"), "{err}");
    let (code, out, err) = users(&["add", "--name", "casey", "--role", "caseworker"]).await;
    assert_eq!(code, 0, "{err}");
    let token = out.lines().find_map(|l| l.strip_prefix("token (shown once): ")).expect("a token").to_owned();
    assert_eq!(inbox(token).await.0, 0, "casey signs in with the new token");
    assert_eq!(inbox(tokens["sam"].clone()).await.0, 4);

    // Waited for off the runtime, which keeps serving this test's connections as the node closes them.
    let status = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
    assert!(status.success(), "a node that got SIGHUP still shuts down cleanly: {status:?}");
    drop(gateway);
}

/// The users file is imported once: the node's second start on the same database reads it no more
/// (a person removed since stays removed, though the file still lists them) and says nothing about it.
#[tokio::test]
async fn a_node_imports_its_users_file_once_and_says_so_only_then() {
    let dir = tempfile::tempdir().unwrap();
    haven_certs::init(&policies_dir().join("orgs.toml"), &dir.path().join("certs"), false).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_haven-demo"));
    // No gateway: the node serves its own people without one.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("https://localhost:{port}");
    let tokens = node_users(dir.path(), "harbor", &[("casey", Role::Caseworker), ("sam", Role::Caseworker)]);
    let db = dir.path().join("nodes").join("harbor").join("node.db").display().to_string();
    let log = dir.path().join("node-harbor.log");
    let inbox = |node: &Proc, person: &str| {
        let (url, token) = (format!("http://{}", node.addr), tokens[person].clone());
        async move { haven_node(&["inbox", "--node", &url, "--token", &token]).await.0 }
    };

    let node = Proc::node(exe, dir.path(), "harbor", &nowhere);
    let first = read_log(&log);
    assert!(first.contains("imported the users file into the node database; the file is no longer read"), "{first}");
    assert!(first.contains("people=2"), "{first}");
    assert_eq!(inbox(&node, "sam").await, 0);
    assert_eq!(haven_node(&["users", "remove", "sam", "--database", &db]).await.0, 0);
    let status = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");

    let node = Proc::node(exe, dir.path(), "harbor", &nowhere);
    let all = read_log(&log);
    let second = &all[first.len()..];
    assert!(!second.contains("users file") && !second.contains("imported"), "the second start says nothing: {second}");
    assert_eq!(inbox(&node, "casey").await, 0, "the imported people stay");
    assert_eq!(inbox(&node, "sam").await, 4, "sam is not imported again");
    let status = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");
}
