//! The public key log: sealing-key statements registered by organizations' nodes, verified against the
//! registry's signing pins before anything is stored, appended in order, and covered by signed key-log
//! checkpoints that anyone can recompute from the entries. Runs on SQLite or PostgreSQL
//! (`HAVEN_TEST_DB`), with real mTLS on loopback.

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::*;
use haven_tests::net::{TestNet, TestNode};
use haven_trust::audit::{Checkpoint, CheckpointKey};
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::keylog::{self, KEY_LOG_ORIGIN};
use haven_trust::merkle::MemoryTree;
use haven_trust::sealing::{self, STATEMENT_TYP, SealingKeyStatement};
use tonic::Code;

const YEAR_SECS: i64 = 365 * 86_400;

fn now_secs(net: &TestNet) -> i64 {
    net.clock.now_micros() / 1_000_000
}

/// A statement publishing `key` for `org`, valid for a year from now.
fn publish(net: &TestNet, org: &str, key: [u8; 32]) -> SealingKeyStatement {
    let now = now_secs(net);
    SealingKeyStatement::publish(OrgId::parse(org).unwrap(), &key, now, now + YEAR_SECS, now)
}

/// `node`'s statement, signed with its organization's signing key.
fn signed(node: &TestNode, statement: &SealingKeyStatement) -> String {
    node.state.link.signer().sign_typed(STATEMENT_TYP, statement).unwrap()
}

/// Registers a statement as `node`'s node.
async fn register(node: &TestNode, jws: String) -> Result<RegisterSealingKeyResponse, tonic::Status> {
    register_as(node, Role::Node, jws).await
}

async fn register_as(node: &TestNode, role: Role, jws: String) -> Result<RegisterSealingKeyResponse, tonic::Status> {
    let mut gw = GatewayClient::new(node.state.link.channel());
    let request = node.state.link.request(&PersonId::node(), role, RegisterSealingKeyRequest { statement: jws })?;
    gw.register_sealing_key(request).await.map(tonic::Response::into_inner)
}

async fn read_log(node: &TestNode) -> KeyLogResponse {
    let mut gw = GatewayClient::new(node.state.link.channel());
    let request = node.state.link.request(&PersonId::node(), Role::Node, KeyLogRequest::default()).unwrap();
    gw.key_log(request).await.unwrap().into_inner()
}

/// Recomputes the tree from the entries and checks the checkpoint's signature and root against it.
fn check_log(net: &TestNet, log: &KeyLogResponse) {
    let mut tree = MemoryTree::new();
    for (i, e) in log.entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "gap-free positions");
        tree.push(keylog::leaf_hash(e.seq, e.registered_at_micros, &sealing::statement_sha256(&e.statement))).unwrap();
    }
    let cp = log.checkpoint.as_ref().expect("a checkpoint");
    let checkpoint = Checkpoint {
        tree_size: cp.tree_size,
        root_hash: hex::encode(&cp.root_hash),
        timestamp_micros: cp.timestamp_micros,
        signature: hex::encode(&cp.signature),
        key_id: cp.key_id.clone(),
    };
    let der = haven_trust::pki::load_certs(&net.certs.gateway_signing_cert()).unwrap()[0].to_vec();
    let key = CheckpointKey::new(&der).unwrap();
    key.verify_of(KEY_LOG_ORIGIN, &checkpoint).expect("the key-log checkpoint verifies");
    assert!(key.verify(&checkpoint).is_err(), "a key-log checkpoint never passes for an audit one");
    assert_eq!(cp.tree_size, tree.size());
    assert_eq!(cp.root_hash, tree.root().to_vec(), "the signed root is the entries' root");
    assert!(cp.signed_body.starts_with(b"haven.keylog.checkpoint/v1\n"));
}

#[tokio::test]
async fn statements_are_published_withdrawn_and_covered_by_signed_checkpoints_anyone_can_recompute() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[]).await;
    let maple = net.node("maple-house", &[]).await;
    assert!(read_log(&harbor).await.entries.is_empty() && read_log(&harbor).await.checkpoint.is_none());

    let first = publish(&net, "harbor", [1; 32]);
    let jws = signed(&harbor, &first);
    let r = register(&harbor, jws.clone()).await.unwrap();
    assert_eq!((r.seq, r.replayed), (0, false));
    assert_eq!(r.statement_sha256, hex::encode(sealing::statement_sha256(&jws)));
    assert_eq!(r.checkpoint.as_ref().map(|c| c.tree_size), Some(1));
    let again = register(&harbor, jws).await.unwrap();
    assert_eq!((again.seq, again.replayed), (0, true), "the same statement is stored once");

    // Rotation: a new key, then the old one withdrawn; another organization's key beside them.
    register(&harbor, signed(&harbor, &publish(&net, "harbor", [2; 32]))).await.unwrap();
    register(&maple, signed(&maple, &publish(&net, "maple-house", [3; 32]))).await.unwrap();
    let withdrawal = SealingKeyStatement::withdrawal(&first, now_secs(&net));
    let w = register(&harbor, signed(&harbor, &withdrawal)).await.unwrap();
    assert_eq!(w.seq, 3);
    let log = read_log(&maple).await;
    assert_eq!(log.entries.len(), 4, "every node reads every organization's statements");
    check_log(&net, &log);

    // What the log already says decides: a key is published once and withdrawn once.
    let err = register(&harbor, signed(&harbor, &withdrawal_later(&first, &net))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already withdrawn"), "{}", err.message());
    let republish = SealingKeyStatement { issued_at: now_secs(&net) - 1, ..first.clone() };
    let err = register(&harbor, signed(&harbor, &republish)).await.unwrap_err();
    assert!(err.message().contains("was published before"), "{}", err.message());
    let never = SealingKeyStatement::withdrawal(&publish(&net, "harbor", [9; 32]), now_secs(&net));
    let err = register(&harbor, signed(&harbor, &never)).await.unwrap_err();
    assert!(err.message().contains("was never published"), "{}", err.message());
    assert_eq!(read_log(&harbor).await.entries.len(), 4, "nothing refused was stored");
}

fn withdrawal_later(published: &SealingKeyStatement, net: &TestNet) -> SealingKeyStatement {
    SealingKeyStatement::withdrawal(published, now_secs(net) - 2)
}

#[tokio::test]
async fn bad_statements_are_refused_with_their_reason_and_nothing_is_stored() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[]).await;
    let maple = net.node("maple-house", &[]).await;
    let now = now_secs(&net);
    let good = publish(&net, "harbor", [4; 32]);

    let cases: Vec<(&str, String, Code, &str)> = vec![
        (
            "another organization's statement, sent by harbor",
            signed(&maple, &publish(&net, "maple-house", [5; 32])),
            Code::PermissionDenied,
            "may register only its own keys",
        ),
        (
            "a statement for harbor signed with maple-house's key",
            signed(&maple, &good),
            Code::PermissionDenied,
            "signed by `maple-house` but speaks for `harbor`",
        ),
        (
            "an expired statement",
            signed(&harbor, &SealingKeyStatement { not_before: now - YEAR_SECS, not_after: now - 60, ..good.clone() }),
            Code::InvalidArgument,
            "window ended",
        ),
        (
            "an unknown suite",
            signed(
                &harbor,
                &SealingKeyStatement {
                    suite: "DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM".into(),
                    ..good.clone()
                },
            ),
            Code::InvalidArgument,
            "unknown HPKE suite",
        ),
        ("a garbage JWS", "not.a.jws".into(), Code::InvalidArgument, "statement"),
        ("an oversize JWS", "a".repeat(sealing::MAX_STATEMENT_BYTES + 1), Code::InvalidArgument, "at most 16384"),
        (
            "a JWS of another type (a plain JWT)",
            harbor.state.link.signer().sign(&good).unwrap(),
            Code::InvalidArgument,
            "`typ` is `JWT`",
        ),
        (
            "a key id that is not the key's",
            signed(&harbor, &SealingKeyStatement { kid: "x25519:00".into(), ..good.clone() }),
            Code::InvalidArgument,
            "key id",
        ),
    ];
    for (what, jws, code, says) in cases {
        let err = register(&harbor, jws).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(says), "{what}: {}", err.message());
    }
    let err = register_as(&harbor, Role::Admin, signed(&harbor, &good)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "a person does not register keys: {err:?}");
    let log = read_log(&harbor).await;
    assert!(log.entries.is_empty() && log.checkpoint.is_none(), "nothing was stored: {log:?}");
}
