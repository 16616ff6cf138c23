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
    let net = TestNet::start_without_keys().await;
    let harbor = net.node_without_sealing_key("harbor", &[]).await;
    let maple = net.node_without_sealing_key("maple-house", &[]).await;
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
    // (Another statement, not the one registered again: each differs from it in `issued_at`.)
    let again = SealingKeyStatement { issued_at: withdrawal.issued_at - 1, ..withdrawal.clone() };
    let err = register(&harbor, signed(&harbor, &again)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already withdrawn"), "{}", err.message());
    let republish = SealingKeyStatement { issued_at: first.issued_at - 1, ..first.clone() };
    let err = register(&harbor, signed(&harbor, &republish)).await.unwrap_err();
    assert!(err.message().contains("was published before"), "{}", err.message());
    let never = SealingKeyStatement::withdrawal(&publish(&net, "harbor", [9; 32]), now_secs(&net));
    let err = register(&harbor, signed(&harbor, &never)).await.unwrap_err();
    assert!(err.message().contains("was never published"), "{}", err.message());
    assert_eq!(read_log(&harbor).await.entries.len(), 4, "nothing refused was stored");
}

#[tokio::test]
async fn bad_statements_are_refused_with_their_reason_and_nothing_is_stored() {
    let net = TestNet::start_without_keys().await;
    let harbor = net.node_without_sealing_key("harbor", &[]).await;
    let maple = net.node_without_sealing_key("maple-house", &[]).await;
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

/// Makes a key at `node` as its admin `ada`.
async fn make_key(node: &TestNode, only_if_none: bool) -> Result<SealingKeyResponse, tonic::Status> {
    node.client()
        .await
        .make_sealing_key(node.as_person("ada", MakeSealingKeyRequest { only_if_none }))
        .await
        .map(tonic::Response::into_inner)
}

fn verified(round: haven_node::keylog::Round) -> (u64, u64) {
    match round {
        haven_node::keylog::Round::Verified { size, new } => (size, new),
        other => panic!("the key log should verify: {other:?}"),
    }
}

#[tokio::test]
async fn keys_made_at_the_node_are_published_rotated_and_withdrawn_and_every_node_witnesses_them() {
    let net = TestNet::start_without_keys().await;
    let harbor = net.node_without_sealing_key("harbor", &[("ada", Role::Admin), ("casey", Role::Caseworker)]).await;
    let maple = net.node_without_sealing_key("maple-house", &[("ada", Role::Admin)]).await;
    let harbor_org = OrgId::parse("harbor").unwrap();

    // `keys init`: the private half in a 0600 file beside the signing key, the statement in the log.
    let first = make_key(&harbor, true).await.unwrap();
    assert_eq!(first.pending_reason, "", "the gateway took it at once");
    let first = first.key.unwrap();
    assert_eq!((first.state.as_str(), first.published_seq), ("published", 0));
    let file = net.certs.org_dir(&harbor_org).join("sealing").join(format!("{}.key", first.kid.replace(':', "-")));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let err = make_key(&harbor, true).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "init twice: {err:?}");
    let err = harbor
        .client()
        .await
        .make_sealing_key(harbor.as_person("casey", MakeSealingKeyRequest { only_if_none: false }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "keys are an admin's: {err:?}");

    // Another node reads the log, verifies it by the CA, and may seal to harbor's key.
    assert_eq!(
        verified(maple.state.key_log.check_now().await).0,
        1,
        "the size this node holds (the background round may have read some first)"
    );
    let key = haven_node::keylog::recipient_key(&maple.state.store, &harbor_org, now_secs(&net)).await.unwrap();
    assert_eq!(key.map(|k| k.kid), Some(first.kid.clone()));

    // Rotation, then the old key withdrawn: within one round every node seals to the new one.
    let second = make_key(&harbor, false).await.unwrap().key.unwrap();
    let withdrawn = harbor
        .client()
        .await
        .withdraw_sealing_key(harbor.as_person("ada", WithdrawSealingKeyRequest { kid: first.kid.clone() }))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!((withdrawn.state.as_str(), withdrawn.withdrawn_seq), ("withdrawn", 2));
    assert_eq!(
        verified(maple.state.key_log.check_now().await).0,
        3,
        "the size this node holds (the background round may have read some first)"
    );
    let key = haven_node::keylog::recipient_key(&maple.state.store, &harbor_org, now_secs(&net)).await.unwrap();
    assert_eq!(key.map(|k| k.kid), Some(second.kid.clone()), "the withdrawn key is never sealed to");
    let listed = harbor.client().await.sealing_keys(harbor.as_person("ada", SealingKeysRequest {})).await.unwrap();
    let states: Vec<String> = listed.into_inner().keys.iter().map(|k| k.state.clone()).collect();
    assert_eq!(states, ["published", "withdrawn"]);

    // Harbor's own node recognizes every statement as its own: no alarm.
    assert_eq!(
        verified(harbor.state.key_log.check_now().await).0,
        3,
        "the size this node holds (the background round may have read some first)"
    );
    assert!(!harbor.state.witness.report().state.is_alarm(), "{:?}", harbor.state.witness.report());
    let err = harbor
        .client()
        .await
        .withdraw_sealing_key(harbor.as_person("ada", WithdrawSealingKeyRequest { kid: "x25519:nope".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A log that is not the one this node holds (here the node's copy of entry 0 differs, as it would
    // if the gateway had rewritten it, or showed this node another log) is a fork, and nothing more
    // of that round is kept.
    sqlx::query("UPDATE key_log_entry SET registered_at_micros = registered_at_micros + 1 WHERE seq = 0")
        .execute(maple.state.store.pool())
        .await
        .unwrap();
    make_key(&harbor, false).await.unwrap();
    let round = maple.state.key_log.check_now().await;
    assert!(
        matches!(&round, haven_node::keylog::Round::Alarm(haven_node::witness::WitnessState::Fork, d) if d.contains("is not the log this node holds")),
        "{round:?}"
    );
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM key_log_entry").fetch_one(maple.state.store.pool()).await.unwrap();
    assert_eq!(held, 3);
    assert_eq!(maple.state.witness.report().state, haven_node::witness::WitnessState::Fork);
}

#[tokio::test]
async fn a_key_registered_behind_an_organizations_back_with_a_ca_issued_certificate_raises_its_alarm() {
    let net = TestNet::start_without_keys().await;
    let harbor = net.node_without_sealing_key("harbor", &[("ada", Role::Admin)]).await;
    let maple = net.node_without_sealing_key("maple-house", &[]).await;
    make_key(&harbor, true).await.unwrap();
    assert_eq!(
        verified(harbor.state.key_log.check_now().await).0,
        1,
        "the size this node holds (the background round may have read some first)"
    );

    // The CA's key issues the attacker a signing certificate in harbor's name.
    let harbor_org = OrgId::parse("harbor").unwrap();
    let attacker = tempfile::tempdir().unwrap();
    let (key, csr, cert) =
        (attacker.path().join("k.pem"), attacker.path().join("r.csr"), attacker.path().join("c.pem"));
    haven_certs::make_csr(&harbor_org, haven_certs::CertKind::Signing, &key, &csr).unwrap();
    haven_certs::sign_csr(&net.certs.0, &harbor_org, &csr, haven_certs::CertKind::Signing, &cert).unwrap();
    let signing_der = haven_trust::pki::load_certs(&cert).unwrap()[0].to_vec();
    let tls_der = haven_trust::pki::load_certs(&net.certs.org_tls_cert(&harbor_org)).unwrap()[0].to_vec();
    let forger =
        haven_trust::token::OrgSigner::new(harbor_org.clone(), &std::fs::read(&key).unwrap(), &signing_der, &tls_der)
            .unwrap();
    let jws = forger.sign_typed(STATEMENT_TYP, &publish(&net, "harbor", [6; 32])).unwrap();
    net.append_to_key_log_behind_its_checks(&jws).await;

    // The statement verifies by the CA, so another node takes it...
    assert_eq!(
        verified(maple.state.key_log.check_now().await).0,
        2,
        "the size this node holds (the background round may have read some first)"
    );
    // ...but harbor's own node sees a key in its name that it did not make, and says so until an
    // auditor has looked into it.
    // (The round this test asks for raises it, unless the node's own background round got there first.)
    harbor.state.key_log.check_now().await;
    let report = harbor.state.witness.report();
    assert_eq!(report.state, haven_node::witness::WitnessState::ForeignKey, "{report:?}");
    assert!(report.detail.contains("which this node did not make"), "{}", report.detail);
    let fingerprint = haven_trust::registry::Fingerprint::of_der(&signing_der).to_hex();
    assert!(report.detail.contains(&fingerprint), "{}", report.detail);
    // Raised once: the next round finds nothing new to say.
    assert_eq!(verified(harbor.state.key_log.check_now().await), (2, 0));
    let alarms: i64 = sqlx::query_scalar("SELECT count(*) FROM witness_alarm WHERE state = 'foreign_sealing_key'")
        .fetch_one(harbor.state.store.pool())
        .await
        .unwrap();
    assert_eq!(alarms, 1);

    // A gateway that says it took this node's statement at a position where the log it signs holds
    // another statement is caught on the next round.
    sqlx::query("UPDATE sealing_key SET published_seq = 1").execute(harbor.state.store.pool()).await.unwrap();
    let round = harbor.state.key_log.check_now().await;
    assert!(
        matches!(&round, haven_node::keylog::Round::Alarm(haven_node::witness::WitnessState::Fork, d) if d.contains("holds another statement there")),
        "{round:?}"
    );
}

#[tokio::test]
async fn a_forged_statement_or_a_rewritten_log_is_refused_by_the_reader_and_nothing_is_kept() {
    let net = TestNet::start_without_keys().await;
    let harbor = net.node_without_sealing_key("harbor", &[("ada", Role::Admin)]).await;
    let maple = net.node_without_sealing_key("maple-house", &[]).await;
    make_key(&harbor, true).await.unwrap();
    assert_eq!(
        verified(maple.state.key_log.check_now().await).0,
        1,
        "the size this node holds (the background round may have read some first)"
    );

    // A statement whose signature does not verify (its payload changed after signing).
    let good = signed(&harbor, &publish(&net, "harbor", [7; 32]));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let other = signed(&harbor, &publish(&net, "harbor", [8; 32]));
    parts[1] = other.split('.').nth(1).unwrap().to_owned();
    net.append_to_key_log_behind_its_checks(&parts.join(".")).await;
    let round = maple.state.key_log.check_now().await;
    assert!(
        matches!(&round, haven_node::keylog::Round::Alarm(haven_node::witness::WitnessState::BadSignature, d) if d.contains("does not verify by the network CA")),
        "{round:?}"
    );
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM key_log_entry").fetch_one(maple.state.store.pool()).await.unwrap();
    assert_eq!(held, 1, "nothing of a refused round is kept");
    let key = haven_node::keylog::recipient_key(&maple.state.store, &OrgId::parse("harbor").unwrap(), now_secs(&net))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(key.public_key, publish(&net, "harbor", [8; 32]).public_key, "the forged key is never sealed to");
}

/// A node makes its next sealing key 30 days before its keys end, so senders always have one to seal
/// to; while a key has longer to live, nothing is made.
#[tokio::test]
async fn a_key_due_to_end_is_rotated_by_the_node_itself() {
    let net = TestNet::start_without_keys().await;
    let dir = tempfile::tempdir().unwrap();
    let store = haven_node::store::NodeStore::open(&dir.path().join("node.db").display().to_string()).await.unwrap();
    let clock = haven_trust::clock::ManualClock::starting_now();
    let shared: haven_trust::clock::SharedClock = std::sync::Arc::new(clock.clone());
    let harbor = OrgId::parse("harbor").unwrap();
    let config = haven_node::link::LinkConfig::from_certs_dir(net.url(), &net.certs, harbor.clone());
    let link = haven_node::link::GatewayLink::new(&config, shared.clone()).unwrap();
    let folder = haven_node::sealing::KeyFolder(dir.path().join("sealing"));
    let rotate = || haven_node::sealing::rotate_if_due(&store, &link, &shared, &folder);
    assert_eq!(rotate().await.unwrap(), None, "no key was ever made: the admin's to make");
    let (first, _) = haven_node::sealing::make(&store, &link, &shared, &folder, "ada", true).await.unwrap();
    assert_eq!(rotate().await.unwrap(), None, "a year to live");
    clock.advance_secs(340 * 86_400);
    let next = rotate().await.unwrap().expect("rotated 25 days before the end");
    assert_ne!(next.kid, first.kid);
    assert_eq!(rotate().await.unwrap(), None, "once");
    let err = haven_node::sealing::make(&store, &link, &shared, &folder, "ada", true).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "`keys init` finds the live key: {err:?}");
    net.stop().await;
}
