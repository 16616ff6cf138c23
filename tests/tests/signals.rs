//! The gateway and a node as processes: SIGHUP after `haven-certs revoke` makes the gateway refuse the
//! revoked certificate and close its open stream; SIGHUP after a person is removed from, or disabled in,
//! the users file makes a node put it in force (and refuse a broken one); SIGTERM shuts down gracefully.

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_node::link::{GatewayLink, LinkConfig};
use haven_node::users::Users;
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

/// Changes the users file in place, as `haven-node users add` writes it.
fn change_users(path: &Path, change: impl FnOnce(&mut Users)) {
    let mut users = Users::load(path).unwrap();
    change(&mut users);
    users.save(path).unwrap();
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

#[tokio::test]
async fn sighup_puts_the_users_file_in_force_at_once_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    haven_certs::init(&policies_dir().join("orgs.toml"), &dir.path().join("certs"), false).unwrap();
    let database = fresh_database(dir.path()).await;
    let exe = Path::new(env!("CARGO_BIN_EXE_haven-demo"));
    let gateway = Proc::gateway(exe, "gateway", dir.path(), &policies_dir(), &database);
    let people = [("casey", Role::Caseworker), ("sam", Role::Caseworker), ("lee", Role::Liaison)];
    let tokens = node_users(dir.path(), "harbor", &people);
    let node = Proc::node(exe, dir.path(), "harbor", &gateway.url());
    let url = format!("http://{}", node.addr);
    let users_file = dir.path().join("nodes").join("harbor").join("users.toml");
    let inbox = |person: &str| {
        let (url, token) = (url.clone(), tokens[person].clone());
        async move { haven_node(&["inbox", "--node", &url, "--token", &token]).await }
    };
    for (person, _) in people {
        assert_eq!(inbox(person).await.0, 0, "{person} signs in");
    }
    // sam keeps an inbox watch open: a reload that removes sam ends it.
    let mut watch_req = tonic::Request::new(InboxRequest::default());
    watch_req.metadata_mut().insert("authorization", format!("Bearer {}", tokens["sam"]).parse().unwrap());
    let mut watch = NodeClient::connect(url.clone()).await.unwrap().watch_inbox(watch_req).await.unwrap().into_inner();

    change_users(&users_file, |u| assert!(u.remove(&PersonId::parse("sam").unwrap()).is_some()));
    change_users(&users_file, |u| assert_eq!(u.set_disabled(&PersonId::parse("casey").unwrap(), true), Some(true)));
    assert_eq!(inbox("sam").await.0, 0, "the file is in force only once the node reloads it");

    signal(node.pid(), "HUP");
    let (_, _, err) = within_20s("sam's token refused", || async {
        let r = inbox("sam").await;
        (r.0 == 4).then_some(r)
    })
    .await;
    assert!(err.contains("unknown node token"), "{err}");
    let (code, _, err) = inbox("casey").await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("`casey` is disabled"), "{err}");
    assert_eq!(inbox("lee").await.0, 0, "lee was not changed");
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the removed person's watch ends within 10 s")
        .expect_err("with a status");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");

    // A broken file is refused and logged; the people in force stay as they were.
    let good = std::fs::read(&users_file).unwrap();
    std::fs::write(&users_file, "[[user]]\nname = 3\n").unwrap();
    signal(node.pid(), "HUP");
    let log = dir.path().join("node-harbor.log");
    let logged = within_20s("the refusal in the node's log", || async {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("users file refused"))
    })
    .await;
    assert!(logged.contains("users.toml:2"), "the log names the file and the line: {logged}");
    assert_eq!(inbox("lee").await.0, 0, "the old users stay");
    assert_eq!(inbox("casey").await.0, 4, "and so do their refusals");

    // Fixed, and casey enabled again: in force at the next SIGHUP, with casey's own token.
    std::fs::write(&users_file, good).unwrap();
    change_users(&users_file, |u| assert_eq!(u.set_disabled(&PersonId::parse("casey").unwrap(), false), Some(true)));
    signal(node.pid(), "HUP");
    within_20s("casey signed in again", || async { (inbox("casey").await.0 == 0).then_some(()) }).await;
    assert_eq!(inbox("sam").await.0, 4);

    // Waited for off the runtime, which keeps serving this test's connections as the node closes them.
    let status = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
    assert!(status.success(), "a node reloaded three times still shuts down cleanly: {status:?}");
    drop(gateway);
}
