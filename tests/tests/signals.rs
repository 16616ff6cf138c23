//! The gateway as a process: SIGHUP after `haven-certs revoke` refuses the revoked certificate and
//! closes its open stream; SIGTERM shuts down gracefully.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use haven_node::link::{GatewayLink, LinkConfig};
use haven_proto::v1::NodeFrame;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_tests::net::{fresh_database, policies_dir};
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
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => break None,
                Err(s) => break Some(s),
            }
        }
    })
    .await
    .expect("the stream closes within 10 s of SIGHUP")
    .expect("with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{}", status.message());

    signal(child.id(), "TERM");
    let exited = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exited.success(), "graceful shutdown exits 0: {exited:?}");
}
