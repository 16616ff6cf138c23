//! A real node in front of a real gateway: its people sign in with their node tokens, and it keeps its
//! delivery stream open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use haven_node::app::{Node, NodeConfig};
use haven_node::link::LinkConfig;
use haven_node::users::Users;
use haven_proto::v1::WhoAmIRequest;
use haven_proto::v1::node_client::NodeClient;
use haven_tests::net::TestNet;
use haven_trust::clock::SystemClock;
use haven_trust::ids::{OrgId, PersonId, Role};
use tonic::Code;

#[tokio::test]
async fn a_node_user_reaches_the_gateway_as_themselves_and_the_stream_opens() {
    let net = TestNet::start().await;
    let org = OrgId::parse("harbor").unwrap();
    let users_path = net.dir.path().join("users.toml");
    let mut users = Users::default();
    let token = users.add(PersonId::parse("casey").unwrap(), Role::Caseworker);
    users.save(&users_path).unwrap();
    let config = NodeConfig {
        first_sealing_key: true,
        link: LinkConfig::from_certs_dir(net.url(), &net.certs, org),
        database: net.dir.path().join("node.db").display().to_string(),
        users: users_path,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        api_tls: None,
        console: None,
    };
    let node = Node::open(config, Arc::new(SystemClock)).await.unwrap();
    let mut stream_state = node.state.stream.clone();
    let listener = node.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(node.serve(listener, async move {
        let _ = stopped.await;
    }));

    tokio::time::timeout(Duration::from_secs(10), stream_state.wait_for(|s| s.connected))
        .await
        .expect("stream opens within 10 s")
        .unwrap();

    let mut client = NodeClient::connect(format!("http://{addr}")).await.unwrap();
    let mut req = tonic::Request::new(WhoAmIRequest {});
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let caller = client.who_am_i(req).await.unwrap().into_inner().caller.unwrap();
    assert_eq!(
        (caller.org_id.as_str(), caller.person.as_str(), caller.role.as_str()),
        ("harbor", "casey", "caseworker")
    );

    let mut bad = tonic::Request::new(WhoAmIRequest {});
    bad.metadata_mut().insert("authorization", "Bearer hvn_not-a-real-token".parse().unwrap());
    assert_eq!(client.who_am_i(bad).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(client.who_am_i(WhoAmIRequest {}).await.unwrap_err().code(), Code::Unauthenticated);

    let _ = stop.send(());
    served.await.unwrap().unwrap();
    net.stop().await;
}

#[tokio::test]
async fn a_node_refuses_to_serve_its_api_beyond_loopback_without_tls() {
    let net = TestNet::start().await;
    let config = NodeConfig {
        first_sealing_key: true,
        link: LinkConfig::from_certs_dir(net.url(), &net.certs, OrgId::parse("harbor").unwrap()),
        database: net.dir.path().join("node.db").display().to_string(),
        users: net.dir.path().join("users.toml"),
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        api_tls: None,
        console: None,
    };
    let err = Node::open(config, Arc::new(SystemClock)).await.err().expect("refused");
    assert!(err.to_string().contains("not loopback"), "{err}");
    net.stop().await;
}

#[tokio::test]
async fn new_checkpoints_reach_the_node_over_its_stream_and_are_witnessed() {
    let net = TestNet::start().await;
    let node = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let mut stream_state = node.state.stream.clone();
    tokio::time::timeout(Duration::from_secs(10), stream_state.wait_for(|s| s.connected))
        .await
        .expect("stream opens")
        .unwrap();
    let link = net.link("maple-house");
    let req = link
        .request(
            &PersonId::parse("sam").unwrap(),
            Role::Caseworker,
            haven_proto::v1::GetCheckpointRequest { refresh: true },
        )
        .unwrap();
    let cp =
        haven_proto::v1::audit_client::AuditClient::new(link.channel()).get_checkpoint(req).await.unwrap().into_inner();
    assert!(cp.tree_size > 0);
    let mut reports = node.state.witness.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        reports.wait_for(|_| node.state.witness.witnessed_size() >= cp.tree_size),
    )
    .await
    .expect("the node witnesses the new checkpoint within 20 s")
    .unwrap();
    node.stop().await;
    net.stop().await;
}

/// A node whose TLS certificate was revoked (and the gateway reloaded) is refused at the handshake; the
/// node says so, with the gateway's address, in its stream's error (what it logs) and in what it answers
/// its people: UNAVAILABLE, the gateway refused this node's certificate, check the gateway's log.
#[tokio::test]
async fn a_node_whose_certificate_was_revoked_says_the_gateway_refused_it_at_the_handshake() {
    let net = TestNet::start().await;
    haven_certs::revoke(net.certs.0.as_path(), &OrgId::parse("harbor").unwrap(), haven_certs::CertKind::Tls).unwrap();
    net.gateway.reload(None).await.unwrap();
    let node = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let refused = "the gateway refused this node's certificate during the TLS handshake";
    let mut stream_state = node.state.stream.clone();
    let ended = tokio::time::timeout(Duration::from_secs(20), stream_state.wait_for(|s| !s.last_error.is_empty()))
        .await
        .expect("the stream fails within 20 s")
        .unwrap()
        .last_error
        .clone();
    assert!(ended.contains(refused), "{ended}");
    assert!(ended.contains(&format!("cannot reach the gateway at {}", net.url())), "{ended}");
    assert!(ended.contains("check the gateway's log and this organization's certificate"), "{ended}");

    let err = node.client().await.who_am_i(node.as_person("casey", WhoAmIRequest {})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(refused) && err.message().contains(&net.url()), "{}", err.message());
    node.stop().await;
    net.stop().await;
}
