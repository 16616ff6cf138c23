//! The foundation over real mTLS on loopback: who may connect, which tokens are refused and why,
//! storage migrations, and the same-commit audit rule.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use haven_gateway::audit;
use haven_gateway::store::Store;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::{GetPinsRequest, NodeFrame, WhoAmIRequest};
use haven_tests::fixtures::stream_end;
use haven_tests::net::{GATEWAY_NAME, TestNet, fresh_database};
use haven_trust::audit::AuditEntry;
use haven_trust::clock::{Clock, SystemClock};
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::registry::Fingerprint;
use haven_trust::token::{AUDIENCE, Claims, Confirmation, OrgSigner, thumbprint};
use tonic::Code;

fn org(id: &str) -> OrgId {
    OrgId::parse(id).unwrap()
}

fn signer(net: &TestNet, signing_org: &str, tls_org: &str) -> OrgSigner {
    let der = |p: std::path::PathBuf| haven_trust::pki::load_certs(&p).unwrap()[0].as_ref().to_vec();
    OrgSigner::new(
        org(signing_org),
        &std::fs::read(net.certs.org_signing_key(&org(signing_org))).unwrap(),
        &der(net.certs.org_signing_cert(&org(signing_org))),
        &der(net.certs.org_tls_cert(&org(tls_org))),
    )
    .unwrap()
}

fn tls_thumbprint(net: &TestNet, o: &str) -> String {
    let der = haven_trust::pki::load_certs(&net.certs.org_tls_cert(&org(o))).unwrap()[0].as_ref().to_vec();
    thumbprint(&Fingerprint::of_der(&der))
}

fn claims(net: &TestNet, o: &str) -> Claims {
    let now = SystemClock.now_secs();
    Claims {
        sub: "casey".into(),
        org: o.into(),
        role: "caseworker".into(),
        aud: AUDIENCE.into(),
        iat: now,
        exp: now + 120,
        jti: uuid::Uuid::new_v4().to_string(),
        cnf: Confirmation { x5t_s256: tls_thumbprint(net, o) },
    }
}

/// Calls WhoAmI over harbor's real certificate with the given authorization header.
async fn whoami_with(net: &TestNet, auth: Option<String>) -> Result<haven_proto::v1::WhoAmIResponse, tonic::Status> {
    let ch = net
        .channel_with(
            &net.certs.ca_cert(),
            Some((&net.certs.org_tls_cert(&org("harbor")), &net.certs.org_tls_key(&org("harbor")))),
        )
        .await
        .expect("connect");
    let mut req = tonic::Request::new(WhoAmIRequest {});
    if let Some(a) = auth {
        req.metadata_mut().insert("authorization", a.parse().unwrap());
    }
    GatewayClient::new(ch).who_am_i(req).await.map(|r| r.into_inner())
}

async fn refused(net: &TestNet, token: String, expect: &str) {
    let err = whoami_with(net, Some(format!("Bearer {token}"))).await.expect_err("token must be refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains(expect), "expected `{expect}` in `{}`", err.message());
}

#[tokio::test]
async fn a_pinned_certificate_and_valid_token_reach_whoami() {
    let net = TestNet::start().await;
    let link = net.link("harbor");
    let req = link.request(&PersonId::parse("casey").unwrap(), Role::Caseworker, WhoAmIRequest {}).unwrap();
    let resp = GatewayClient::new(link.channel()).who_am_i(req).await.unwrap().into_inner();
    let caller = resp.caller.unwrap();
    assert_eq!(caller.org_id, "harbor");
    assert_eq!(caller.org_type, "ngo");
    assert_eq!(caller.person, "casey");
    assert_eq!(caller.role, "caseworker");
    net.stop().await;
}

/// A node that checks the gateway by the DNS name it dials (`haven-node serve --gateway-name`) connects
/// when the gateway's certificate carries that name (`haven-certs init --gateway-name`), and refuses a
/// gateway whose certificate does not, before any call is made.
#[tokio::test]
async fn a_node_checks_the_gateway_by_the_dns_name_its_certificate_carries() {
    let net = TestNet::start().await;
    let whoami = |name: &str| {
        let link = net.link_named("harbor", name);
        async move {
            let req = link.request(&PersonId::parse("casey").unwrap(), Role::Caseworker, WhoAmIRequest {}).unwrap();
            GatewayClient::new(link.channel()).who_am_i(req).await
        }
    };
    let caller = whoami(GATEWAY_NAME).await.unwrap().into_inner().caller.unwrap();
    assert_eq!(caller.org_id, "harbor");
    let err = whoami("elsewhere.haven.test").await.expect_err("a certificate without the name is refused");
    assert_eq!(err.code(), Code::Unavailable, "refused at the handshake: {err:?}");
    let said = net.link_named("harbor", "elsewhere.haven.test").tls_failure(&err).expect("explained");
    assert!(said.contains("does not carry the name `elsewhere.haven.test` (--gateway-name)"), "{said}");
    net.stop().await;
}

/// A node set up for another network (its ca.pem and certificates from another `haven-certs init`)
/// that dials this network's gateway is told that its CA did not issue the gateway's certificate, on
/// its delivery stream, for `whoami`, and for a direct call; it is not left with a bare `BadSignature`.
/// Every network CA has a subject of its own, so the handshake fails on an unknown issuer.
#[tokio::test]
async fn a_node_of_another_network_is_told_the_gateway_certificate_is_not_from_its_ca() {
    let net = TestNet::start().await;
    let other = net.dir.path().join("other-network");
    haven_certs::init(&haven_tests::net::policies_dir().join("orgs.toml"), &other, false).unwrap();
    let certs = haven_trust::pki::CertsDir(other);
    let config = haven_node::link::LinkConfig::from_certs_dir(net.url(), &certs, org("harbor"));
    let link = haven_node::link::GatewayLink::new(&config, net.clock.clone()).unwrap();
    let req = link.request(&PersonId::parse("casey").unwrap(), Role::Caseworker, WhoAmIRequest {}).unwrap();
    let err = GatewayClient::new(link.channel()).who_am_i(req).await.expect_err("another network's gateway");
    let said = link.tls_failure(&err).unwrap_or_else(|| panic!("not explained: {err:?}"));
    let ca = certs.ca_cert();
    assert!(
        said.starts_with(&format!(
            "the gateway at {} presented a certificate that the network CA in {} (CN=Haven network CA ",
            net.url(),
            ca.display()
        )),
        "{said}"
    );
    assert!(
        said.contains("did not issue: either") && said.ends_with("(TLS: invalid peer certificate: UnknownIssuer)"),
        "{said}"
    );

    // The same words on the node's stream and for `whoami` through its API.
    let node = haven_tests::net::TestNode::start_at(
        net.dir.path(),
        &certs,
        net.url(),
        "harbor",
        &[("casey", Role::Caseworker)],
        net.clock.clone(),
    )
    .await;
    let mut stream = node.state.stream.clone();
    let ended = tokio::time::timeout(Duration::from_secs(20), stream.wait_for(|s| !s.last_error.is_empty()))
        .await
        .expect("the stream reports within 20 s")
        .unwrap()
        .last_error
        .clone();
    assert!(ended.contains(&format!("the network CA in {}", ca.display())), "{ended}");
    let whoami = node.client().await.who_am_i(node.as_person("casey", WhoAmIRequest {})).await.unwrap_err();
    assert!(whoami.message().contains("did not issue: either"), "{whoami:?}");
    node.stop().await;
    net.stop().await;
}

/// A refused handshake shows up at connect time or on the first call, never as a successful call.
async fn handshake_refused(
    net: &TestNet,
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) {
    match net.channel_with(ca, identity).await {
        Err(_) => {}
        Ok(ch) => {
            let token = signer(net, "harbor", "harbor")
                .mint(&PersonId::parse("casey").unwrap(), Role::Caseworker, SystemClock.now_secs(), 60)
                .unwrap();
            let mut req = tonic::Request::new(WhoAmIRequest {});
            req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            let err = GatewayClient::new(ch).who_am_i(req).await.expect_err("handshake must be refused");
            assert_ne!(err.code(), Code::Ok);
            assert_ne!(err.code(), Code::Unauthenticated, "refused at the handshake, not by the token check: {err:?}");
        }
    }
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let net = TestNet::start().await;
    let bad = net.dir.path().join("foreign");
    haven_certs::foreign_ca_org_cert(&org("harbor"), &bad).unwrap();
    handshake_refused(&net, &net.certs.ca_cert(), Some((&bad.join("tls.crt"), &bad.join("tls.key")))).await;
    net.stop().await;
}

#[tokio::test]
async fn a_connection_without_a_client_certificate_is_refused_at_the_handshake() {
    let net = TestNet::start().await;
    handshake_refused(&net, &net.certs.ca_cert(), None).await;
    net.stop().await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_at_the_handshake() {
    let net = TestNet::start().await;
    let bad = net.dir.path().join("expired");
    haven_certs::issue_expired_org_cert(net.certs.0.as_path(), &org("harbor"), &bad).unwrap();
    handshake_refused(&net, &net.certs.ca_cert(), Some((&bad.join("tls.crt"), &bad.join("tls.key")))).await;
    net.stop().await;
}

#[tokio::test]
async fn a_signing_certificate_is_refused_at_the_handshake() {
    // A signing certificate chains to the network CA but lists no clientAuth usage: it must not
    // complete a handshake, whatever the pins would say later.
    let net = TestNet::start().await;
    let harbor = org("harbor");
    handshake_refused(
        &net,
        &net.certs.ca_cert(),
        Some((&net.certs.org_signing_cert(&harbor), &net.certs.org_signing_key(&harbor))),
    )
    .await;
    net.stop().await;
}

#[tokio::test]
async fn a_token_whose_lifetime_wraps_around_is_unauthenticated() {
    // Signed with harbor's real key: only the arithmetic of the lifetime check stands in the way.
    let net = TestNet::start().await;
    let mut c = claims(&net, "harbor");
    c.iat = -4611686018427388904;
    c.exp = 4611686018427387904;
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "lifetime").await;
    let mut c = claims(&net, "harbor");
    c.exp = i64::MAX;
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "lifetime").await;
    net.stop().await;
}

#[tokio::test]
async fn a_ca_signed_certificate_that_is_not_pinned_is_unauthenticated() {
    let net = TestNet::start().await;
    let bad = net.dir.path().join("unpinned");
    haven_certs::issue_unpinned_org_cert(net.certs.0.as_path(), &org("harbor"), &bad).unwrap();
    let ch = net.channel_with(&net.certs.ca_cert(), Some((&bad.join("tls.crt"), &bad.join("tls.key")))).await.unwrap();
    let token = signer(&net, "harbor", "harbor")
        .mint(&PersonId::parse("casey").unwrap(), Role::Caseworker, SystemClock.now_secs(), 60)
        .unwrap();
    let mut req = tonic::Request::new(WhoAmIRequest {});
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let err = GatewayClient::new(ch).who_am_i(req).await.expect_err("unpinned");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("does not match the pins"), "{}", err.message());
    net.stop().await;
}

#[tokio::test]
async fn revocation_and_reload_refuse_new_handshakes_and_close_open_streams() {
    let net = TestNet::start().await;
    let link = net.link("harbor");
    let (tx, rx) = tokio::sync::mpsc::channel::<NodeFrame>(4);
    let req = link.request(&PersonId::node(), Role::Node, tokio_stream::wrappers::ReceiverStream::new(rx)).unwrap();
    let mut stream = GatewayClient::new(link.channel()).deliveries(req).await.unwrap().into_inner();
    let welcome = stream.message().await.unwrap().unwrap();
    assert!(matches!(welcome.frame, Some(haven_proto::v1::gateway_frame::Frame::Welcome(_))));

    haven_certs::revoke(net.certs.0.as_path(), &org("harbor"), haven_certs::CertKind::Tls).unwrap();
    net.gateway.reload(None).await.unwrap();

    let status =
        stream_end(&mut stream, Duration::from_secs(10), "after the revocation").await.expect("closed with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    drop(tx);
    handshake_refused(
        &net,
        &net.certs.ca_cert(),
        Some((&net.certs.org_tls_cert(&org("harbor")), &net.certs.org_tls_key(&org("harbor")))),
    )
    .await;
    net.stop().await;
}

#[tokio::test]
async fn the_delivery_stream_requires_role_node() {
    let net = TestNet::start().await;
    let link = net.link("harbor");
    let (_tx, rx) = tokio::sync::mpsc::channel::<NodeFrame>(4);
    let req = link
        .request(&PersonId::parse("casey").unwrap(), Role::Caseworker, tokio_stream::wrappers::ReceiverStream::new(rx))
        .unwrap();
    let err = GatewayClient::new(link.channel()).deliveries(req).await.expect_err("caseworker cannot open the stream");
    assert_eq!(err.code(), Code::PermissionDenied);
    net.stop().await;
}

#[tokio::test]
async fn a_missing_token_is_unauthenticated() {
    let net = TestNet::start().await;
    let err = whoami_with(&net, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("missing bearer token"), "{}", err.message());
    net.stop().await;
}

#[tokio::test]
async fn a_garbled_token_is_unauthenticated() {
    let net = TestNet::start().await;
    refused(&net, "not.a.jwt".into(), "garbled").await;
    net.stop().await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_unauthenticated() {
    let net = TestNet::start().await;
    let s = signer(&net, "harbor", "harbor");
    let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": s.header().kid});
    let token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims(&net, "harbor")).unwrap())
    );
    refused(&net, token, "not allowed").await;
    net.stop().await;
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_public_key_is_unauthenticated() {
    let net = TestNet::start().await;
    let s = signer(&net, "harbor", "harbor");
    let mut header = s.header();
    header.alg = jsonwebtoken::Algorithm::HS256;
    let public = std::fs::read(net.certs.org_signing_cert(&org("harbor"))).unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &claims(&net, "harbor"),
        &jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    refused(&net, token, "not allowed").await;
    net.stop().await;
}

#[tokio::test]
async fn a_token_signed_with_another_organizations_key_is_unauthenticated() {
    let net = TestNet::start().await;
    let token = signer(&net, "maple-house", "harbor").sign(&claims(&net, "harbor")).unwrap();
    refused(&net, token, "pinned to organization `maple-house`").await;
    net.stop().await;
}

#[tokio::test]
async fn a_token_naming_another_organization_is_unauthenticated() {
    let net = TestNet::start().await;
    let mut c = claims(&net, "harbor");
    c.org = "maple-house".into();
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "names organization `maple-house`").await;
    net.stop().await;
}

#[tokio::test]
async fn a_token_bound_to_another_certificate_is_unauthenticated() {
    let net = TestNet::start().await;
    let mut c = claims(&net, "harbor");
    c.cnf.x5t_s256 = tls_thumbprint(&net, "maple-house");
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "bound to another TLS certificate").await;
    net.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_unauthenticated() {
    let net = TestNet::start().await;
    let mut c = claims(&net, "harbor");
    c.iat -= 400;
    c.exp = c.iat + 300;
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "expired").await;
    net.stop().await;
}

#[tokio::test]
async fn a_token_from_the_future_is_unauthenticated() {
    let net = TestNet::start().await;
    let mut c = claims(&net, "harbor");
    c.iat += 120;
    c.exp = c.iat + 60;
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "not yet valid").await;
    net.stop().await;
}

#[tokio::test]
async fn a_token_that_runs_longer_than_five_minutes_is_unauthenticated() {
    let net = TestNet::start().await;
    let mut c = claims(&net, "harbor");
    c.exp = c.iat + 3600;
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "longer than the 300s").await;
    net.stop().await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_unauthenticated() {
    let net = TestNet::start().await;
    let mut c = claims(&net, "harbor");
    c.aud = "some-other-service".into();
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "audience").await;
    net.stop().await;
}

#[tokio::test]
async fn a_token_without_jti_is_unauthenticated() {
    let net = TestNet::start().await;
    let mut c = claims(&net, "harbor");
    c.jti = String::new();
    refused(&net, signer(&net, "harbor", "harbor").sign(&c).unwrap(), "no `jti`").await;
    net.stop().await;
}

#[tokio::test]
async fn rejections_are_aggregated_into_the_audit_log() {
    let net = TestNet::start().await;
    for _ in 0..5 {
        let _ = whoami_with(&net, Some("Bearer garbage".into())).await;
    }
    let store = &net.gateway.store();
    let written = net.gateway.rejections().flush(net.gateway.commits(), SystemClock.now_micros()).await.unwrap();
    assert_eq!(written, 1, "five identical rejections make one entry");
    let size = audit::size(store.pool()).await.unwrap();
    let entries = audit::read_range(store.pool(), 0, size).await.unwrap();
    let rejected: Vec<_> = entries.iter().filter(|e| e.action == "auth_rejected").collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].outcome, "refused:5");
    assert_eq!(rejected[0].reason, "token_garbled");
    assert_eq!(rejected[0].actor_org, "harbor");
    net.stop().await;
}

#[tokio::test]
async fn pins_are_readable_by_any_organization() {
    let net = TestNet::start().await;
    let link = net.link("maple-house");
    let req = link
        .request(&PersonId::parse("sam").unwrap(), Role::Caseworker, GetPinsRequest { org_id: "maple-house".into() })
        .unwrap();
    let pins = GatewayClient::new(link.channel()).get_pins(req).await.unwrap().into_inner();
    let own = haven_trust::pki::load_certs(&net.certs.org_tls_cert(&org("maple-house"))).unwrap();
    assert_eq!(pins.orgs.len(), 1);
    assert!(pins.orgs[0].tls_pins.contains(&Fingerprint::of_der(own[0].as_ref()).to_hex()));
    net.stop().await;
}

#[tokio::test]
async fn migrations_run_on_a_fresh_database_and_twice_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(dir.path()).await;
    let first = Store::open(&url).await.unwrap();
    assert_eq!(audit::size(first.pool()).await.unwrap(), 0);
    first.close().await;
    let again = Store::open(&url).await.unwrap();
    assert_eq!(audit::size(again.pool()).await.unwrap(), 0);
    again.close().await;
}

#[tokio::test]
async fn a_rolled_back_change_leaves_no_audit_entry_and_a_committed_one_always_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database(dir.path()).await).await.unwrap();
    let entry = || AuditEntry {
        time_micros: 1,
        action: "consent_registered".into(),
        outcome: "ok".into(),
        ..Default::default()
    };

    let mut tx = store.begin().await.unwrap();
    audit::append_one(&mut tx, entry()).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(audit::size(store.pool()).await.unwrap(), 0, "rollback leaves no entry and no position");

    let mut tx = store.begin().await.unwrap();
    let seq = audit::append_one(&mut tx, entry()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(seq, 0, "positions stay gap-free after a rollback");
    let entries = audit::read_range(store.pool(), 0, 1).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, "consent_registered");
}

#[tokio::test]
async fn the_audit_log_refuses_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database(dir.path()).await).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    audit::append_one(&mut tx, AuditEntry { time_micros: 1, action: "decided".into(), ..Default::default() })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let upd = sqlx::query("UPDATE audit_log SET outcome = 'forged'").execute(store.pool()).await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::query("DELETE FROM audit_log").execute(store.pool()).await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
    assert_eq!(audit::read_range(store.pool(), 0, 1).await.unwrap().len(), 1);
}

/// A gateway that starts shutting down while no delivery stream is open (its nodes are between two
/// attempts) still records that it is closing, so a stream a node opens while the server drains its
/// connections sees it and ends at once, instead of holding the shutdown up forever.
#[tokio::test]
async fn a_gateway_shutting_down_with_no_stream_open_still_closes_the_streams_opened_after() {
    let mut net = TestNet::start().await;
    let gateway = net.gateway.clone();
    assert_eq!(gateway.closing().receiver_count(), 0, "no stream is open");
    tokio::time::timeout(Duration::from_secs(20), net.stop_keeping_files()).await.expect("stops within 20 s");
    assert!(*gateway.closing().subscribe().borrow(), "a stream subscribing now sees the gateway closing");
}
