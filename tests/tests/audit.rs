//! The tamper-evident audit trail over real mTLS, on SQLite and PostgreSQL alike: entries for every
//! action built so far, the auditor API and who may use it, exports that verify offline and every way
//! of tampering with them, proofs, bad input, and a witnessing node that catches a forked log.

use std::path::PathBuf;
use std::time::Duration;

use haven_gateway::audit;
use haven_gateway::store::Dialect;
use haven_node::link::GatewayLink;
use haven_node::witness::WitnessState;
use haven_proto::v1::audit_client::AuditClient;
use haven_proto::v1::*;
use haven_tests::net::{TestNet, TestNode};
use haven_trust::audit::{AuditEntry, Checkpoint, CheckpointSigner, Encoding};
use haven_trust::clock::{Clock, SystemClock};
use haven_trust::export::{Kind, Summary, VerifyError, verify_files};
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::merkle;
use sqlx::Row;
use tonic::Code;
use tonic::transport::Channel;

/// A person at an organization, calling the gateway through that organization's link.
struct As {
    link: GatewayLink,
    person: PersonId,
    role: Role,
}

impl As {
    fn new(net: &TestNet, org: &str, person: &str, role: Role) -> As {
        As { link: net.link(org), person: PersonId::parse(person).unwrap(), role }
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        self.link.request(&self.person, self.role, msg).unwrap()
    }

    fn client(&self) -> AuditClient<Channel> {
        AuditClient::new(self.link.channel())
    }

    async fn query(
        &self,
        filter: AuditFilter,
        page_size: u32,
        cursor: u64,
    ) -> Result<AuditQueryResponse, tonic::Status> {
        let r = AuditQueryRequest { filter: Some(filter), page_size, cursor };
        self.client().query(self.req(r)).await.map(|r| r.into_inner())
    }

    async fn export(&self, filter: AuditFilter) -> Result<Vec<u8>, tonic::Status> {
        let mut stream =
            self.client().export(self.req(AuditExportRequest { filter: Some(filter) })).await?.into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    async fn report(&self, subject: &str) -> Result<SubjectAccessResponse, tonic::Status> {
        self.report_for(subject, "").await
    }

    async fn report_for(&self, subject: &str, controller: &str) -> Result<SubjectAccessResponse, tonic::Status> {
        let r = SubjectAccessRequest { subject_pseudonym: subject.into(), controller: controller.into() };
        self.client().subject_access_report(self.req(r)).await.map(|r| r.into_inner())
    }

    async fn checkpoint(&self, refresh: bool) -> Result<SignedCheckpoint, tonic::Status> {
        self.client().get_checkpoint(self.req(GetCheckpointRequest { refresh })).await.map(|r| r.into_inner())
    }
}

fn auditor(net: &TestNet) -> As {
    As::new(net, "audit-office", "ada", Role::Auditor)
}

fn officer(net: &TestNet, org: &str) -> As {
    As::new(net, org, "pat", Role::PrivacyOfficer)
}

fn all() -> AuditFilter {
    AuditFilter::default()
}

fn signing_cert(net: &TestNet) -> PathBuf {
    net.certs.gateway_signing_cert()
}

fn cert_der(net: &TestNet) -> Vec<u8> {
    haven_trust::pki::load_certs(&signing_cert(net)).unwrap()[0].as_ref().to_vec()
}

/// Writes bytes to a fresh file in the test directory and verifies it as the CLIs do.
fn verify(net: &TestNet, bytes: &[u8], checkpoints: &[PathBuf]) -> Result<Summary, VerifyError> {
    let path = net.dir.path().join(format!("export-{}.jsonl", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, bytes).unwrap();
    verify_files(&path, &signing_cert(net), checkpoints)
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec()).unwrap().split_inclusive('\n').map(str::to_owned).collect()
}

fn entry_line(lines: &[String], seq: u64) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with("{\"type\":\"entry\"") && l.contains(&format!("\"seq\":{seq},")))
        .unwrap_or_else(|| panic!("no entry line for seq {seq}"))
}

fn edit(line: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    f(&mut v);
    format!("{v}\n")
}

/// A disclosure as routing writes it: `actor` sent data about `subject` to `counterparty`, who knows
/// the subject as `recipient_subject`.
fn disclosure(actor: &str, counterparty: &str, subject: &str, action: &str, outcome: &str) -> AuditEntry {
    AuditEntry {
        time_micros: SystemClock.now_micros(),
        actor_org: actor.into(),
        actor_person: "casey".into(),
        actor_role: "caseworker".into(),
        action: action.into(),
        object_id: uuid::Uuid::now_v7().to_string(),
        counterparty: counterparty.into(),
        subject: subject.into(),
        purpose: "housing".into(),
        consent_id: "c-0001".into(),
        rule_ids: vec!["ngo-to-shelter-housing".into()],
        bundle_version: "sha256:test".into(),
        decision: "allow".into(),
        released_fields: vec!["first_name".into(), "needs".into()],
        withheld_fields: vec!["date_of_birth".into()],
        outcome: outcome.into(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        source_node: actor.into(),
        ..Default::default()
    }
}

const SUBJECT: &str = "subj-5f1c0a3e9b7d4e2a8c6b1d0f3a5e7c9b";
const RECIPIENT_SUBJECT: &str = "rcpt-0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// Commits entries in one transaction, as a state change would.
async fn append(net: &TestNet, entries: Vec<(AuditEntry, String)>) -> u64 {
    let mut entries = entries;
    let store = &net.gateway.store();
    let mut tx = store.begin().await.unwrap();
    let first = audit::append(&mut tx, &mut entries).await.unwrap();
    tx.commit().await.unwrap();
    first
}

/// A few dozen entries of the kinds routing writes, so exports have something to show.
async fn some_traffic(net: &TestNet) {
    let mut entries = Vec::new();
    for i in 0..20 {
        entries
            .push((disclosure("harbor", "maple-house", SUBJECT, "submitted", "queued"), RECIPIENT_SUBJECT.to_owned()));
        if i % 4 == 0 {
            entries
                .push((disclosure("northstar", "riverside-clinic", "subj-other", "delivered", "ok"), "rcpt-x".into()));
        }
    }
    append(net, entries).await;
}

async fn actions(net: &TestNet) -> Vec<String> {
    let pool = net.gateway.store().pool();
    let size = audit::size(pool).await.unwrap();
    audit::read_range(pool, 0, size).await.unwrap().into_iter().map(|e| e.action).collect()
}

#[tokio::test]
async fn every_action_built_so_far_writes_its_entry() {
    let net = TestNet::start().await;
    assert_eq!(actions(&net).await.first().map(String::as_str), Some("gateway_started"));

    // A refused call, aggregated.
    let ch = net
        .channel_with(
            &net.certs.ca_cert(),
            Some((
                &net.certs.org_tls_cert(&OrgId::parse("harbor").unwrap()),
                &net.certs.org_tls_key(&OrgId::parse("harbor").unwrap()),
            )),
        )
        .await
        .unwrap();
    let mut req = tonic::Request::new(GetCheckpointRequest { refresh: false });
    req.metadata_mut().insert("authorization", "Bearer garbage".parse().unwrap());
    assert_eq!(AuditClient::new(ch).get_checkpoint(req).await.unwrap_err().code(), Code::Unauthenticated);
    net.gateway.rejections().flush(net.gateway.commits(), SystemClock.now_micros()).await.unwrap();

    // A policy reload.
    net.gateway.reload(None).await.unwrap();

    // Every read of the log.
    let ada = auditor(&net);
    ada.query(all(), 10, 0).await.unwrap();
    ada.export(all()).await.unwrap();
    ada.client()
        .subject_access_report(
            ada.req(SubjectAccessRequest { subject_pseudonym: SUBJECT.into(), controller: "harbor".into() }),
        )
        .await
        .unwrap();

    let seen = actions(&net).await;
    for action in
        ["gateway_started", "auth_rejected", "policy_reloaded", "audit_queried", "audit_exported", "subject_report"]
    {
        assert!(seen.iter().any(|a| a == action), "no `{action}` entry in {seen:?}");
    }
    // The reads name who read.
    let pool = net.gateway.store().pool();
    let size = audit::size(pool).await.unwrap();
    let report =
        audit::read_range(pool, 0, size).await.unwrap().into_iter().find(|e| e.action == "subject_report").unwrap();
    assert_eq!(
        (report.actor_org.as_str(), report.actor_person.as_str(), report.actor_role.as_str()),
        ("audit-office", "ada", "auditor")
    );
    assert_eq!(report.subject, SUBJECT);
    net.stop().await;
}

#[tokio::test]
async fn a_full_export_verifies_offline_and_catches_every_kind_of_tampering() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let ada = auditor(&net);
    let bytes = ada.export(all()).await.unwrap();
    let ok = verify(&net, &bytes, &[]).unwrap();
    assert_eq!(ok.kind, Kind::Full);
    assert!(ok.entries >= 26, "{ok:?}");
    assert_eq!(ok.covering.tree_size, ok.entries);
    let original = lines(&bytes);

    // An edited entry.
    let mut t = original.clone();
    let i = entry_line(&t, 5);
    t[i] = edit(&t[i], |v| v["entry"]["released_fields"] = serde_json::json!(["first_name", "needs", "address"]));
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::EditedEntry { seq: 5, .. }), "{e}");

    // An edited entry whose leaf was recomputed too: the signed root no longer matches.
    let mut t = original.clone();
    let i = entry_line(&t, 5);
    let mut forged: AuditEntry =
        serde_json::from_value(serde_json::from_str::<serde_json::Value>(&t[i]).unwrap()["entry"].clone()).unwrap();
    forged.purpose = "investigation".into();
    t[i] = edit(&t[i], |v| {
        v["entry"]["purpose"] = "investigation".into();
        v["leaf"] = hex::encode(forged.leaf_hash()).into();
    });
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::RootMismatch { .. }), "{e}");

    // A deleted entry.
    let mut t = original.clone();
    t.remove(entry_line(&t, 7));
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::MissingEntry { expected: 7, found: 8, .. }), "{e}");

    // Reordered entries.
    let mut t = original.clone();
    let (a, b) = (entry_line(&t, 10), entry_line(&t, 11));
    t.swap(a, b);
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::MissingEntry { expected: 10, found: 11, .. }), "{e}");

    // A truncated tail: the last entries, the covering checkpoint and the end line cut off.
    let last = ok.entries - 1;
    let t = &original[..entry_line(&original, last)];
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::Uncovered { .. } | VerifyError::Truncated { .. }), "{e}");

    // An entry inserted later, after the covering checkpoint.
    let mut t = original.clone();
    let end = t.pop().unwrap();
    let extra = edit(&t[entry_line(&t, last)], |v| v["entry"]["seq"] = (last + 1).into());
    t.push(extra);
    t.push(edit(&end, |v| v["entries"] = (ok.entries + 1).into()));
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::EditedEntry { .. } | VerifyError::Uncovered { .. }), "{e}");

    // A bad checkpoint signature.
    let mut t = original.clone();
    let i = t.iter().rposition(|l| l.starts_with("{\"type\":\"checkpoint\"")).unwrap();
    t[i] = edit(&t[i], |v| v["timestamp_micros"] = 1.into());
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");

    // Malformed, truncated mid-line, not UTF-8: the line number, never a panic.
    let mut t = original.clone();
    t[3] = "{\"type\":\"entry\",\n".into();
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::Malformed { line: 4, .. }), "{e}");
    let e = verify(&net, &bytes[..bytes.len() - 3], &[]).unwrap_err();
    assert!(matches!(e, VerifyError::TruncatedLine { .. }), "{e}");
    let mut t = bytes.clone();
    let at = t.windows(5).position(|w| w == b"casey").unwrap();
    t[at] = 0xfe;
    let e = verify(&net, &t, &[]).unwrap_err();
    assert!(matches!(e, VerifyError::NotUtf8 { .. }), "{e}");
    net.stop().await;
}

/// Drops an append-only trigger, as an attacker with the database owner's rights would.
async fn drop_trigger(net: &TestNet, table: &str, trigger: &str) {
    let sql = match net.gateway.store().dialect() {
        Dialect::Sqlite => format!("DROP TRIGGER {trigger}"),
        Dialect::Postgres => format!("DROP TRIGGER {trigger} ON {table}"),
    };
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(net.gateway.store().pool()).await.unwrap();
}

#[tokio::test]
async fn an_entry_edited_in_the_database_is_named_by_the_verifier() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    // Integrated and checkpointed before the attack.
    auditor(&net).checkpoint(true).await.unwrap();
    drop_trigger(&net, "audit_log", "audit_log_no_update").await;
    let pool = net.gateway.store().pool();
    let edited = sqlx::query("UPDATE audit_log SET released_fields = '[\"first_name\"]', withheld_fields = '[\"needs\",\"date_of_birth\"]' WHERE seq = 4")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    let bytes = auditor(&net).export(all()).await.unwrap();
    let e = verify(&net, &bytes, &[]).unwrap_err();
    assert!(matches!(e, VerifyError::EditedEntry { seq: 4, .. }), "{e}");
    net.stop().await;
}

#[tokio::test]
async fn an_entry_deleted_from_the_database_is_named_by_the_verifier() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    auditor(&net).checkpoint(true).await.unwrap();
    match net.gateway.store().dialect() {
        Dialect::Sqlite => drop_trigger(&net, "audit_log", "audit_log_no_delete").await,
        Dialect::Postgres => drop_trigger(&net, "audit_log", "audit_log_no_update").await,
    }
    sqlx::query("DELETE FROM audit_log WHERE seq = 9").execute(net.gateway.store().pool()).await.unwrap();
    let bytes = auditor(&net).export(all()).await.unwrap();
    let e = verify(&net, &bytes, &[]).unwrap_err();
    assert!(matches!(e, VerifyError::MissingEntry { expected: 9, .. }), "{e}");
    net.stop().await;
}

#[tokio::test]
async fn the_tree_and_checkpoint_tables_are_append_only() {
    let net = TestNet::start().await;
    auditor(&net).checkpoint(true).await.unwrap();
    let pool = net.gateway.store().pool();
    for sql in [
        "UPDATE merkle_node SET hash = hash",
        "DELETE FROM merkle_node",
        "UPDATE audit_checkpoint SET key_id = 'x'",
        "DELETE FROM audit_checkpoint",
        "UPDATE merkle_head SET size = 0",
        "DELETE FROM merkle_head",
    ] {
        let e = sqlx::query(sql).execute(pool).await.expect_err(sql).to_string();
        assert!(e.contains("append-only") || e.contains("only moves forward"), "{sql}: {e}");
    }
    if net.gateway.store().dialect() == Dialect::Postgres {
        for table in ["merkle_node", "audit_checkpoint", "merkle_head"] {
            let e = sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {table}"))).execute(pool).await.unwrap_err();
            assert!(e.to_string().contains("append-only"), "{table}: {e}");
        }
    }
    net.stop().await;
}

#[tokio::test]
async fn a_forked_checkpoint_collected_by_a_node_is_caught_against_an_export() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let ada = auditor(&net);
    let early = ada.checkpoint(true).await.unwrap();
    some_traffic(&net).await;
    let bytes = ada.export(all()).await.unwrap();

    // An honest older checkpoint, as a node kept it, is consistent with the export.
    let file = |name: &str, cp: &Checkpoint| {
        let path = net.dir.path().join(name);
        std::fs::write(&path, haven_trust::export::Line::Checkpoint(cp).to_json_line()).unwrap();
        path
    };
    let honest = file("honest.json", &haven_trust::audit::Checkpoint::from(&early));
    assert_eq!(verify(&net, &bytes, std::slice::from_ref(&honest)).unwrap().independent, 1);

    // The gateway's key signed, for some node, a different history of the same size: a fork.
    let signer =
        CheckpointSigner::new(&std::fs::read_to_string(net.certs.gateway_signing_key()).unwrap(), &cert_der(&net))
            .unwrap();
    let forked = signer.sign(early.tree_size, &[0x42; 32], early.timestamp_micros + 1);
    let forked = file("forked.json", &forked);
    let e = verify(&net, &bytes, std::slice::from_ref(&forked)).unwrap_err();
    assert!(matches!(e, VerifyError::Fork { .. }), "{e}");
    assert!(e.to_string().contains("forked.json"), "{e}");
    let e = verify(&net, &bytes, &[honest, forked]).unwrap_err();
    assert!(matches!(e, VerifyError::Fork { .. }), "{e}");
    net.stop().await;
}

#[tokio::test]
async fn privacy_officers_see_their_organizations_entries_with_recipient_scoped_subjects() {
    let net = TestNet::start().await;
    some_traffic(&net).await;

    // The recipient's officer: only entries naming maple-house, with maple-house's pseudonym.
    let maple = officer(&net, "maple-house");
    let page = maple.query(all(), 1000, 0).await.unwrap();
    assert_eq!(page.entries.len(), 20);
    for e in &page.entries {
        assert!(e.actor_org == "maple-house" || e.counterparty == "maple-house", "{e:?}");
        assert_eq!(e.subject, RECIPIENT_SUBJECT);
    }
    // The canonical bytes never carry the controller's pseudonym, and still hash to the integrated leaf.
    let seq = page.entries[0].seq;
    let leaf = merkle::leaf_hash(&page.entries[0].canonical);
    // A query shows what is committed; the tree integrates it shortly after. Wait for that here, so the
    // proof is asked of a tree that holds the entry.
    let covering = net.gateway.audit_log().covering_checkpoint().await.unwrap();
    net.gateway.store().settle(covering).await.unwrap();
    let proof = maple
        .client()
        .get_inclusion_proof(maple.req(InclusionProofRequest { seq, tree_size: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proof.leaf_hash, leaf.to_vec());
    // The subject filter matches what the officer is shown, never the controller's pseudonym.
    let by_own = maple.query(AuditFilter { subject: RECIPIENT_SUBJECT.into(), ..all() }, 1000, 0).await.unwrap();
    assert_eq!(by_own.entries.len(), 20);
    let probe = maple.query(AuditFilter { subject: SUBJECT.into(), ..all() }, 1000, 0).await.unwrap();
    assert!(probe.entries.is_empty(), "the controller's pseudonym must not be probe-able");

    // Their export is filtered, redacted, and verifies by inclusion proofs.
    let bytes = maple.export(all()).await.unwrap();
    // (The officer's own probe above is in it, as their own query: that is the only place the
    // controller's pseudonym may appear, because they typed it.)
    for line in lines(&bytes) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["type"] == "entry" && v["entry"]["actor_org"] != "maple-house" {
            assert!(!line.contains(SUBJECT), "the controller's pseudonym leaked into a recipient's export: {line}");
        }
    }
    let s = verify(&net, &bytes, &[]).unwrap();
    assert_eq!(s.kind, Kind::Filtered);
    assert!(s.entries >= 20, "{s:?}");
    // Tampering with a redacted entry is still caught.
    let mut t = lines(&bytes);
    let i = entry_line(&t, seq);
    t[i] = edit(&t[i], |v| {
        v["entry"]["purpose"] = "investigation".into();
        v.as_object_mut().unwrap().remove("leaf");
    });
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::NotIncluded { .. }), "{e}");

    // The sender's officer sees the controller's pseudonym.
    let harbor = officer(&net, "harbor");
    let page = harbor.query(AuditFilter { action: "submitted".into(), ..all() }, 1000, 0).await.unwrap();
    assert_eq!(page.entries.len(), 20);
    assert!(page.entries.iter().all(|e| e.subject == SUBJECT));
    let s = verify(&net, &harbor.export(AuditFilter { subject: SUBJECT.into(), ..all() }).await.unwrap(), &[]).unwrap();
    assert_eq!(s.entries, 20);

    // An uninvolved organization's officer sees none of it.
    let lantern = officer(&net, "lantern-legal");
    let page = lantern.query(AuditFilter { action: "submitted".into(), ..all() }, 1000, 0).await.unwrap();
    assert!(page.entries.is_empty());
    let e = lantern
        .client()
        .get_inclusion_proof(lantern.req(InclusionProofRequest { seq, tree_size: 0 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    net.stop().await;
}

#[tokio::test]
async fn each_role_gets_exactly_its_access() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let denied = [
        As::new(&net, "harbor", "casey", Role::Caseworker),
        As::new(&net, "metro-police", "lee", Role::Liaison),
        As::new(&net, "operator", "root", Role::Admin),
        // The auditor role counts only in an organization of type `auditor`.
        As::new(&net, "harbor", "ann", Role::Auditor),
    ];
    for who in &denied {
        let e = who.query(all(), 10, 0).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{}: {e:?}", who.role);
        assert_eq!(who.export(all()).await.unwrap_err().code(), Code::PermissionDenied);
        let e = who
            .client()
            .subject_access_report(
                who.req(SubjectAccessRequest { subject_pseudonym: SUBJECT.into(), ..Default::default() }),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = who
            .client()
            .get_inclusion_proof(who.req(InclusionProofRequest { seq: 0, tree_size: 0 }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        // Checkpoints and consistency proofs are open to every authenticated organization.
        let cp = who.checkpoint(true).await.unwrap();
        assert!(cp.tree_size > 0);
        let proof = who
            .client()
            .get_consistency_proof(who.req(ConsistencyProofRequest { first_size: 1, second_size: cp.tree_size }))
            .await
            .unwrap();
        assert_eq!(proof.into_inner().second_size, cp.tree_size);
    }
    // The network auditor sees everything.
    let ada = auditor(&net);
    let page = ada.query(all(), 1000, 0).await.unwrap();
    assert!(
        page.entries.iter().any(|e| e.actor_org == "northstar") && page.entries.iter().any(|e| e.actor_org == "harbor")
    );
    assert!(page.entries.iter().any(|e| e.subject == SUBJECT));
    net.stop().await;
}

#[tokio::test]
async fn subject_access_reports_list_disclosures_for_the_controller_and_auditors_only() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let mut other = disclosure("harbor", "maple-house", SUBJECT, "submitted", "refused");
    other.decision = "deny".into();
    // The recipient's node acknowledges one of the queued messages: routing writes it with the
    // recipient as the actor and no subject.
    let pool = net.gateway.store().pool();
    let delivered_id: String =
        sqlx::query("SELECT object_id FROM audit_log WHERE action = 'submitted' ORDER BY seq LIMIT 1")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
    let delivered = AuditEntry {
        time_micros: SystemClock.now_micros(),
        actor_org: "maple-house".into(),
        actor_person: "node".into(),
        actor_role: "node".into(),
        action: "delivered".into(),
        object_id: delivered_id.clone(),
        counterparty: "harbor".into(),
        purpose: "housing".into(),
        consent_id: "c-0001".into(),
        outcome: "ok".into(),
        source_node: "maple-house".into(),
        ..Default::default()
    };
    append(&net, vec![(other, String::new()), (delivered, String::new())]).await;

    let ada = auditor(&net);
    let report = ada
        .client()
        .subject_access_report(
            ada.req(SubjectAccessRequest { subject_pseudonym: SUBJECT.into(), controller: "harbor".into() }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.disclosures.len(), 21, "20 queued submissions and one delivery; the refusal is no disclosure");
    let d = &report.disclosures[0];
    assert_eq!(
        (d.recipient.as_str(), d.purpose.as_str(), d.consent_id.as_str(), d.action.as_str()),
        ("maple-house", "housing", "c-0001", "queued")
    );
    assert_eq!(d.released_fields, vec!["first_name", "needs"]);
    let last = report.disclosures.last().unwrap();
    assert_eq!((last.action.as_str(), last.recipient.as_str()), ("delivered", "maple-house"));
    assert_eq!(last.message_id, delivered_id);

    // harbor's officer may ask once harbor controls a consent for the subject, maple-house's never.
    let harbor = officer(&net, "harbor");
    assert_eq!(harbor.report(SUBJECT).await.unwrap_err().code(), Code::PermissionDenied);
    let now = SystemClock.now_micros();
    sqlx::query("INSERT INTO consents (consent_id, controller, subject, receipt_jws, receipt_json, content_sha256, valid_from_micros, valid_until_micros, state, registered_at_micros, state_changed_at_micros) VALUES ('c-0001', 'harbor', $1, 'jws', '{}', 'sha', $2, $3, 'given', $2, $2)")
        .bind(SUBJECT)
        .bind(now)
        .bind(now + 86_400_000_000)
        .execute(net.gateway.store().pool())
        .await
        .unwrap();
    assert_eq!(harbor.report(SUBJECT).await.unwrap().disclosures.len(), 21);
    assert_eq!(officer(&net, "maple-house").report(SUBJECT).await.unwrap_err().code(), Code::PermissionDenied);
    let e = ada
        .client()
        .subject_access_report(
            ada.req(SubjectAccessRequest { subject_pseudonym: String::new(), controller: "harbor".into() }),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    net.stop().await;
}

/// Records a consent at `node` for housing at a shelter, for the subject the node knows as `subject`
/// (minted when empty); returns the consent id and the subject.
async fn housing_consent(node: &TestNode, subject: &str) -> (String, String) {
    let req = RecordConsentRequest {
        subject_pseudonym: subject.into(),
        purposes: vec!["housing".into()],
        recipient_types: vec!["shelter".into()],
        labels: vec!["identifying".into(), "contact".into(), "operational".into()],
        valid_until_micros: SystemClock.now_micros() + 30 * 86_400_000_000,
        method: "written".into(),
        evidence_sha256: "ef".repeat(32),
        language: "en".into(),
        ..Default::default()
    };
    let c = node.client().await.record_consent(node.as_person("casey", req)).await.unwrap().into_inner();
    let subject = serde_json::from_str::<haven_trust::receipt::ConsentReceipt>(&c.receipt_json).unwrap().subject;
    (c.consent_id, subject)
}

/// Sends a housing referral to maple-house (whose node is not running, so the copy stays queued);
/// returns its message id.
async fn refer_to_shelter(node: &TestNode, subject: &str, consent_id: &str) -> String {
    let text = |s: &str| FieldValue { value: Some(field_value::Value::Text(s.into())) };
    let env = Envelope {
        kind: "referral".into(),
        recipients: vec!["maple-house".into()],
        purpose: "housing".into(),
        subject_pseudonym: subject.into(),
        consent_id: consent_id.into(),
        fields: std::collections::HashMap::from([
            ("urgency".into(), text("high")),
            ("safe_to_contact_by".into(), text("through_caseworker")),
            ("survivor_first_name".into(), text("Rosa (fictional)")),
        ]),
        ..Default::default()
    };
    let sent = node
        .client()
        .await
        .send(node.as_person("casey", SendRequest { envelope: Some(env) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.outcomes[0].outcome, recipient_outcome::Outcome::Queued as i32, "{:?}", sent.outcomes);
    sent.message_id
}

/// What a report says, without times and positions: (action, recipient, message id).
fn lines_of(r: &SubjectAccessResponse) -> Vec<(String, String, String)> {
    r.disclosures.iter().map(|d| (d.action.clone(), d.recipient.clone(), d.message_id.clone())).collect()
}

/// A pseudonym names a subject only together with its controller. An organization that registers a
/// consent of its own under another organization's pseudonym reports on its own subject: its own
/// disclosures only, the same answer whether or not the other organization uses the pseudonym.
#[tokio::test]
async fn a_privacy_officer_reports_only_on_their_own_organizations_subject() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let northstar = net.node("northstar", &[("casey", Role::Caseworker)]).await;
    let (harbor_consent, s1) = housing_consent(&harbor, "").await;
    let harbor_msg = refer_to_shelter(&harbor, &s1, &harbor_consent).await;
    // northstar takes harbor's pseudonym for a consent of its own; the gateway accepts it.
    let (northstar_consent, same) = housing_consent(&northstar, &s1).await;
    assert_eq!(same, s1);
    let northstar_msg = refer_to_shelter(&northstar, &s1, &northstar_consent).await;
    // And a subject only northstar uses, disclosed the same way.
    let (other_consent, s2) = housing_consent(&northstar, "").await;
    let other_msg = refer_to_shelter(&northstar, &s2, &other_consent).await;

    let queued = |m: &str| vec![("queued".to_owned(), "maple-house".to_owned(), m.to_owned())];
    let harbor_officer = officer(&net, "harbor");
    let northstar_officer = officer(&net, "northstar");
    let mine = northstar_officer.report(&s1).await.unwrap();
    assert_eq!(lines_of(&mine), queued(&northstar_msg), "northstar sees its own disclosure and nothing of harbor's");
    assert_eq!(mine.controller, "northstar");
    // Nothing tells northstar that another organization uses the pseudonym.
    let alone = northstar_officer.report(&s2).await.unwrap();
    assert_eq!(lines_of(&alone), queued(&other_msg));
    assert_eq!(lines_of(&harbor_officer.report(&s1).await.unwrap()), queued(&harbor_msg));
    // An officer reports on their own organization's subjects only, whatever the pseudonym.
    for subject in [&s1, &s2] {
        let e = northstar_officer.report_for(subject, "harbor").await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    assert_eq!(lines_of(&northstar_officer.report_for(&s1, "northstar").await.unwrap()), queued(&northstar_msg));

    // The network auditor names the controller, and gets that controller's subject only.
    let ada = auditor(&net);
    assert_eq!(lines_of(&ada.report_for(&s1, "harbor").await.unwrap()), queued(&harbor_msg));
    assert_eq!(lines_of(&ada.report_for(&s1, "northstar").await.unwrap()), queued(&northstar_msg));
    let e = ada.report(&s1).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("controller is required"), "{}", e.message());
    // A subject filter may name the controller too.
    let f = |controller: &str| AuditFilter {
        subject: s1.clone(),
        subject_controller: controller.into(),
        action: "submitted".into(),
        ..all()
    };
    let by = |page: AuditQueryResponse| page.entries.into_iter().map(|e| e.object_id).collect::<Vec<_>>();
    assert_eq!(by(ada.query(f("harbor"), 100, 0).await.unwrap()), vec![harbor_msg.clone()]);
    assert_eq!(by(ada.query(f("northstar"), 100, 0).await.unwrap()), vec![northstar_msg.clone()]);
    assert_eq!(by(ada.query(f(""), 100, 0).await.unwrap()), vec![harbor_msg.clone(), northstar_msg.clone()]);
    assert_eq!(by(northstar_officer.query(f(""), 100, 0).await.unwrap()), vec![northstar_msg.clone()]);
    let e = ada.query(AuditFilter { subject_controller: "harbor".into(), ..all() }, 10, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // harbor's officer sees, under harbor's pseudonym, that the auditor reported on harbor's subject.
    let reads = harbor_officer.query(AuditFilter { action: "subject_report".into(), ..all() }, 100, 0).await.unwrap();
    assert!(
        reads.entries.iter().any(|e| e.actor_org == "audit-office" && e.counterparty == "harbor" && e.subject == s1),
        "{:?}",
        reads.entries
    );
    assert!(reads.entries.iter().all(|e| e.actor_org != "northstar"), "{:?}", reads.entries);
    harbor.stop().await;
    northstar.stop().await;
    net.stop().await;
}

/// Message ids are the sender's own: another organization may use the same id for a message of its
/// own, and the acknowledgement of that message is no disclosure of the controller's.
#[tokio::test]
async fn a_report_follows_only_the_controllers_own_messages() {
    let net = TestNet::start().await;
    let harbor_sent = disclosure("harbor", "maple-house", SUBJECT, "submitted", "queued");
    let mut northstar_sent = disclosure("northstar", "maple-house", SUBJECT, "submitted", "queued");
    northstar_sent.object_id = harbor_sent.object_id.clone();
    // maple-house's node acknowledges both copies: routing writes each with the recipient as the actor,
    // the sender as the counterparty, and no subject.
    let ack = |sender: &str| AuditEntry {
        time_micros: SystemClock.now_micros(),
        actor_org: "maple-house".into(),
        actor_person: "node".into(),
        actor_role: "node".into(),
        action: "delivered".into(),
        object_id: harbor_sent.object_id.clone(),
        counterparty: sender.into(),
        purpose: "housing".into(),
        outcome: "ok".into(),
        source_node: "maple-house".into(),
        ..Default::default()
    };
    let first = append(
        &net,
        vec![
            (harbor_sent.clone(), RECIPIENT_SUBJECT.into()),
            (northstar_sent, "rcpt-other".into()),
            (ack("harbor"), String::new()),
            (ack("northstar"), String::new()),
        ],
    )
    .await;
    let report = auditor(&net).report_for(SUBJECT, "harbor").await.unwrap();
    let seqs: Vec<(u64, &str)> = report.disclosures.iter().map(|d| (d.seq, d.action.as_str())).collect();
    assert_eq!(seqs, vec![(first, "queued"), (first + 2, "delivered")]);
    let report = auditor(&net).report_for(SUBJECT, "northstar").await.unwrap();
    let seqs: Vec<(u64, &str)> = report.disclosures.iter().map(|d| (d.seq, d.action.as_str())).collect();
    assert_eq!(seqs, vec![(first + 1, "queued"), (first + 3, "delivered")]);
    net.stop().await;
}

/// The recipient-scoped pseudonym a redacted entry shows is bound by the entry's leaf: swapping it for
/// another (or removing it) in a filtered export fails verification, naming the entry.
#[tokio::test]
async fn the_subject_a_redacted_entry_shows_cannot_be_changed_in_a_filtered_export() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let bytes = officer(&net, "maple-house").export(all()).await.unwrap();
    let s = verify(&net, &bytes, &[]).unwrap();
    assert_eq!(s.kind, Kind::Filtered);
    let original = lines(&bytes);
    // harbor's submission, shown to the recipient's officer under the recipient's own pseudonym.
    let i = original
        .iter()
        .position(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["type"] == "entry" && v["entry"]["actor_org"] == "harbor" && v["entry"]["subject"] == RECIPIENT_SUBJECT
        })
        .expect("a redacted entry");
    let seq = serde_json::from_str::<serde_json::Value>(&original[i]).unwrap()["entry"]["seq"].as_u64().unwrap();
    let line = i as u64 + 1;
    for other in ["rcpt-ffffffffffffffffffffffffffffffff", "rcpt-x", ""] {
        let mut t = original.clone();
        t[i] = edit(&t[i], |v| v["entry"]["subject"] = other.into());
        let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
        assert!(matches!(e, VerifyError::EditedEntry { line: l, seq: s } if l == line && s == seq), "{other}: {e}");
        assert!(e.to_string().contains(&format!("seq {seq} was edited")), "{e}");
        // With the stated leaf removed too, the inclusion proof fails.
        t[i] = edit(&t[i], |v| {
            v.as_object_mut().unwrap().remove("leaf");
        });
        let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
        assert!(matches!(e, VerifyError::NotIncluded { seq: s, .. } if s == seq), "{other}: {e}");
    }
    // The actor's officer sees no pseudonym of the recipient's, but it is bound all the same.
    let bytes = officer(&net, "harbor").export(AuditFilter { action: "submitted".into(), ..all() }).await.unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains(RECIPIENT_SUBJECT));
    let mut t = lines(&bytes);
    let i = t.iter().position(|l| l.contains("\"counterparty_subject_commitment\"")).expect("a hidden pseudonym");
    t[i] = edit(&t[i], |v| v["counterparty_subject_commitment"] = hex::encode([7u8; 32]).into());
    assert!(matches!(verify(&net, t.concat().as_bytes(), &[]).unwrap_err(), VerifyError::EditedEntry { .. }));
    net.stop().await;
}

/// Commits an entry as a gateway did before its leaves bound the counterparty's pseudonym (encoding
/// version 2): the pseudonym is stored beside the entry, not in its leaf.
async fn append_version_2(net: &TestNet, entry: AuditEntry, counterparty_subject: &str) -> u64 {
    let mut tx = net.gateway.store().begin().await.unwrap();
    let mut entries = [(entry, counterparty_subject.to_owned())];
    let seq = haven_gateway::store::audit_log::append_encoded(&mut tx, &mut entries, Encoding::V2).await.unwrap();
    tx.commit().await.unwrap();
    seq
}

/// Entries written before the upgrade keep their leaves and still verify. Their leaves do not bind the
/// recipient-scoped pseudonym, so an export shows none for them (a query still does), and showing one
/// there fails verification.
#[tokio::test]
async fn entries_written_before_the_pseudonym_was_bound_still_verify_and_show_none_in_exports() {
    let net = TestNet::start().await;
    let old =
        append_version_2(&net, disclosure("harbor", "maple-house", SUBJECT, "submitted", "queued"), RECIPIENT_SUBJECT)
            .await;
    some_traffic(&net).await;
    let ada = auditor(&net);
    let full = ada.export(all()).await.unwrap();
    assert_eq!(verify(&net, &full, &[]).unwrap().kind, Kind::Full);
    let full = lines(&full);
    let v: serde_json::Value = serde_json::from_str(&full[entry_line(&full, old)]).unwrap();
    assert!(v["entry"].get("encoding_version").is_none() && v["entry"].get("counterparty_subject").is_none(), "{v}");

    let maple = officer(&net, "maple-house");
    let shown = maple.query(AuditFilter { subject: RECIPIENT_SUBJECT.into(), ..all() }, 1000, 0).await.unwrap();
    let first = &shown.entries[0];
    assert_eq!((first.seq, first.subject.as_str(), first.canonical[0]), (old, RECIPIENT_SUBJECT, 2));
    let bytes = maple.export(all()).await.unwrap();
    let s = verify(&net, &bytes, &[]).unwrap();
    assert_eq!(s.unbound_subjects, 0);
    let mut t = lines(&bytes);
    let i = entry_line(&t, old);
    let v: serde_json::Value = serde_json::from_str(&t[i]).unwrap();
    assert_eq!(v["entry"]["subject"], "", "{v}");
    t[i] = edit(&t[i], |v| v["entry"]["subject"] = RECIPIENT_SUBJECT.into());
    let e = verify(&net, t.concat().as_bytes(), &[]).unwrap_err();
    assert!(matches!(e, VerifyError::UnboundSubject { seq, .. } if seq == old), "{e}");
    net.stop().await;
}

#[tokio::test]
async fn proofs_from_the_gateway_verify_against_its_signed_checkpoints() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let ada = auditor(&net);
    let first = ada.checkpoint(true).await.unwrap();
    some_traffic(&net).await;
    let second = ada.checkpoint(true).await.unwrap();
    assert!(second.tree_size > first.tree_size);
    let der = cert_der(&net);
    for cp in [&first, &second] {
        haven_trust::audit::Checkpoint::from(cp).verify(&der).unwrap();
    }
    let r1 = merkle::hash_from_slice(&first.root_hash).unwrap();
    let r2 = merkle::hash_from_slice(&second.root_hash).unwrap();
    let c = ada
        .client()
        .get_consistency_proof(
            ada.req(ConsistencyProofRequest { first_size: first.tree_size, second_size: second.tree_size }),
        )
        .await
        .unwrap()
        .into_inner();
    merkle::verify_consistency(
        first.tree_size,
        second.tree_size,
        &r1,
        &r2,
        &merkle::proof_from_slices(&c.hashes).unwrap(),
    )
    .unwrap();

    let entries = ada.query(all(), 1000, 0).await.unwrap().entries;
    for e in entries.iter().filter(|e| e.seq < second.tree_size) {
        let p = ada
            .client()
            .get_inclusion_proof(ada.req(InclusionProofRequest { seq: e.seq, tree_size: second.tree_size }))
            .await
            .unwrap()
            .into_inner();
        let leaf = merkle::leaf_hash(&e.canonical);
        assert_eq!(p.leaf_hash, leaf.to_vec(), "seq {}", e.seq);
        merkle::verify_inclusion(&leaf, e.seq, second.tree_size, &merkle::proof_from_slices(&p.hashes).unwrap(), &r2)
            .unwrap();
    }
    net.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_precise_status_and_reason() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let ada = auditor(&net);
    let status = |r: Result<AuditQueryResponse, tonic::Status>| r.unwrap_err();

    let e = status(ada.query(AuditFilter { from_micros: 100, until_micros: 50, ..all() }, 10, 0).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("inverted time range"), "{}", e.message());
    let e = status(ada.query(AuditFilter { action: "peeked".into(), ..all() }, 10, 0).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("unknown filter.action `peeked`"), "{}", e.message());
    let e = status(ada.query(AuditFilter { decision: "perhaps".into(), ..all() }, 10, 0).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = status(ada.query(all(), 1001, 0).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("over the maximum of 1000"), "{}", e.message());
    let e = status(ada.query(all(), 10, 1_000_000).await);
    assert_eq!(e.code(), Code::OutOfRange);
    assert!(e.message().contains("beyond the end of the log"), "{}", e.message());

    // Pagination by cursor visits every entry once.
    let (mut cursor, mut seen) = (0, Vec::new());
    loop {
        let page = ada.query(all(), 7, cursor).await.unwrap();
        seen.extend(page.entries.iter().map(|e| e.seq));
        if page.next_cursor == 0 {
            break;
        }
        cursor = page.next_cursor;
    }
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1) && seen[0] == 0, "{seen:?}");

    let cp = ada.checkpoint(true).await.unwrap();
    let mut c = ada.client();
    let e = c.get_inclusion_proof(ada.req(InclusionProofRequest { seq: 0, tree_size: 1_000_000 })).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let e = c.get_inclusion_proof(ada.req(InclusionProofRequest { seq: 1_000_000, tree_size: 0 })).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .get_inclusion_proof(ada.req(InclusionProofRequest { seq: cp.tree_size - 1, tree_size: 1 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e =
        c.get_consistency_proof(ada.req(ConsistencyProofRequest { first_size: 5, second_size: 3 })).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .get_consistency_proof(ada.req(ConsistencyProofRequest { first_size: 1, second_size: 1_000_000 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    net.stop().await;
}

#[tokio::test]
async fn concurrent_standalone_entries_share_commits_and_stay_gap_free() {
    let net = TestNet::start().await;
    let log = net.gateway.audit_log().clone();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..5 {
                let mut e = disclosure("harbor", "maple-house", SUBJECT, "decided", "ok");
                e.correlation_id = format!("task-{i}");
                seqs.push(log.record(vec![(e, String::new())]).await.unwrap());
            }
            seqs
        }));
    }
    let mut seqs: Vec<u64> = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 320, "every caller got its own seq");
    let s = verify(&net, &auditor(&net).export(all()).await.unwrap(), &[]).unwrap();
    assert!(s.entries >= 321);
    net.stop().await;
}

#[tokio::test]
async fn checkpoints_are_signed_on_the_cadence_and_published_to_subscribers() {
    let net = TestNet::start().await;
    let mut sub = net.gateway.audit_log().subscribe();
    // The first checkpoint follows the gateway_started entry without anyone asking.
    let first = tokio::time::timeout(Duration::from_secs(10), sub.wait_for(|c| c.is_some()))
        .await
        .expect("a checkpoint within 10 s")
        .unwrap()
        .clone()
        .unwrap();
    // network.toml: every 1000 entries.
    let batch: Vec<_> =
        (0..1000).map(|_| (disclosure("harbor", "maple-house", SUBJECT, "decided", "ok"), String::new())).collect();
    append(&net, batch).await;
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        sub.wait_for(|c| c.as_ref().is_some_and(|c| c.tree_size >= first.tree_size + 1000)),
    )
    .await
    .expect("a checkpoint after 1000 entries within 10 s")
    .unwrap()
    .clone()
    .unwrap();
    haven_trust::audit::Checkpoint::from(&next).verify(&cert_der(&net)).unwrap();
    assert_eq!(net.gateway.audit_log().latest_signed(), Some(next));
    net.stop().await;
}

#[tokio::test]
async fn a_witnessing_node_accepts_honest_checkpoints_and_detects_a_fork() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let node = net.node("harbor", &[("pat", Role::PrivacyOfficer)]).await;
    let witness = node.state.witness.clone();
    let r = witness.check_now().await;
    assert_eq!(r.state, WitnessState::Ok, "{}", r.detail);
    let kept = r.latest.clone().unwrap();
    some_traffic(&net).await;
    let newer = auditor(&net).checkpoint(true).await.unwrap();
    let r = witness.observe(newer.clone()).await;
    assert_eq!(r.state, WitnessState::Ok, "{}", r.detail);
    assert_eq!(r.latest.as_ref().map(|c| c.tree_size), Some(newer.tree_size));
    assert!(newer.tree_size > kept.tree_size);

    // A checkpoint another key signed.
    let other_key =
        haven_trust::export::read_key(&net.certs.org_signing_cert(&OrgId::parse("harbor").unwrap())).unwrap();
    let impostor = CheckpointSigner::new(
        &std::fs::read_to_string(net.certs.org_signing_key(&OrgId::parse("harbor").unwrap())).unwrap(),
        &other_key,
    )
    .unwrap()
    .sign(newer.tree_size + 1, &[1; 32], 1);
    let node2 = net.node("northstar", &[]).await;
    let r = node2.state.witness.observe(haven_proto::v1::SignedCheckpoint::from(&impostor)).await;
    assert_eq!(r.state, WitnessState::BadSignature, "{}", r.detail);

    // The gateway's own key signs a different history that claims to extend what the node witnessed.
    let signer =
        CheckpointSigner::new(&std::fs::read_to_string(net.certs.gateway_signing_key()).unwrap(), &cert_der(&net))
            .unwrap();
    some_traffic(&net).await;
    let covering = net.gateway.audit_log().covering_checkpoint().await.unwrap();
    net.gateway.store().settle(covering).await.unwrap();
    let size = net.gateway.audit_log().integrated_size().await.unwrap();
    let forked = signer.sign(size, &[0x66; 32], SystemClock.now_micros());
    let r = witness.observe(haven_proto::v1::SignedCheckpoint::from(&forked)).await;
    assert_eq!(r.state, WitnessState::Fork, "{}", r.detail);
    assert!(r.detail.contains("fork"), "{}", r.detail);
    // The kept checkpoint is still an honest one (the stream may have brought a newer honest one
    // meanwhile), and the alarm stands for the node's users.
    let kept_now = r.latest.clone().expect("the node keeps its last good checkpoint");
    assert!(kept_now.tree_size >= newer.tree_size);
    assert_ne!(
        kept_now.root_hash,
        haven_proto::v1::SignedCheckpoint::from(&forked).root_hash,
        "the forked checkpoint was not kept"
    );
    haven_trust::audit::Checkpoint::from(&kept_now).verify(&cert_der(&net)).unwrap();
    let honest = witness.check_now().await;
    assert_eq!(honest.state, WitnessState::Fork, "an alarm stands until an operator clears it");
    let status =
        node.client().await.witness_status(node.as_person("pat", WitnessStatusRequest {})).await.unwrap().into_inner();
    assert_eq!(status.state, "fork");
    // Whether the node had already witnessed the honest checkpoint of that size decides which proof of
    // the fork it names.
    assert!(
        status.detail.contains("does not extend") || status.detail.contains("two different roots"),
        "{}",
        status.detail
    );
    node.stop().await;
    node2.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_witnessing_node_detects_a_foreign_key_pinned_for_its_organization() {
    let net = TestNet::start().await;
    let node = net.node("maple-house", &[]).await;
    assert_eq!(node.state.witness.check_now().await.state, WitnessState::Ok);
    // The operator (or whoever holds the CA) pins a second TLS certificate for maple-house.
    let org = OrgId::parse("maple-house").unwrap();
    let dir = net.dir.path().join("impostor");
    std::fs::create_dir_all(&dir).unwrap();
    haven_certs::make_csr(&org, haven_certs::CertKind::Tls, &dir.join("tls.key"), &dir.join("tls.csr")).unwrap();
    haven_certs::sign_csr(
        net.certs.0.as_path(),
        &org,
        &dir.join("tls.csr"),
        haven_certs::CertKind::Tls,
        &dir.join("tls.crt"),
    )
    .unwrap();
    net.gateway.reload(None).await.unwrap();
    let r = node.state.witness.check_now().await;
    assert_eq!(r.state, WitnessState::Unpinned, "{}", r.detail);
    assert!(r.detail.contains("which is not this node's"), "{}", r.detail);
    node.stop().await;
    net.stop().await;
}

/// Runs `haven-node ARGS...` in process: (exit code, stdout, stderr).
async fn haven_node_cli(args: &[&str]) -> (u8, String, String) {
    let argv = std::iter::once("haven-node").chain(args.iter().copied());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = haven_node::cli::run(argv, &mut out, &mut err).await;
    (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

/// `haven-node audit witness ARGS... --node URL --token TOKEN` as `person` at `node`.
async fn witness_cli(node: &TestNode, person: &str, args: &[&str]) -> (u8, String, String) {
    let url = format!("http://{}", node.addr);
    let all: Vec<&str> = ["audit", "witness"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--node", &url, "--token", node.token(person)])
        .collect();
    haven_node_cli(&all).await
}

/// The witness's alarm rows: (state, cleared_by, cleared_at_micros, acked_by, ack_note).
async fn alarm_rows(node: &TestNode) -> Vec<(String, Option<String>, Option<i64>, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT state, cleared_by, cleared_at_micros, acked_by, ack_note FROM witness_alarm ORDER BY id")
        .fetch_all(node.state.store.pool())
        .await
        .unwrap()
}

/// The rotation the deployment guide describes (a new certificate by request, pinned next to the old
/// one; the node reinstalled on it with `haven-certs install --replace` and restarted; the old one
/// revoked and unpinned) raises `unpinned` while two certificates are pinned, and the alarm clears
/// itself once the pins are this node's alone again: recorded as cleared by the pins, the rows kept.
#[tokio::test]
async fn after_a_certificate_rotation_the_unpinned_alarm_clears_itself_and_stays_as_history() {
    // The node below is the organization's only one, and makes its own sealing key.
    let net = TestNet::start_without_keys().await;
    let org = OrgId::parse("maple-house").unwrap();
    let files = |tls_cert: PathBuf, tls_key: PathBuf| haven_certs::InstallFiles {
        tls_cert,
        tls_key,
        signing_cert: net.certs.org_signing_cert(&org),
        signing_key: net.certs.org_signing_key(&org),
        ca: net.certs.ca_cert(),
        gateway_signing_cert: net.certs.gateway_signing_cert(),
    };
    // The organization's node runs on its own certificate folder, as `haven-certs install` lays it out.
    let own = haven_trust::pki::CertsDir(net.dir.path().join("maple-house-certs"));
    let old_tls = net.certs.org_tls_cert(&org);
    haven_certs::install(&org, &files(old_tls.clone(), net.certs.org_tls_key(&org)), &own.0, false).unwrap();
    let node_dir = net.dir.path().join("maple-house-node");
    let start =
        || TestNode::start_at(&node_dir, &own, net.url(), "maple-house", &[("ada", Role::Auditor)], net.clock.clone());
    let node = start().await;
    assert_eq!(node.state.witness.check_now().await.state, WitnessState::Ok);

    // 1-3: a new request, signed, its pin added next to the old one, and the gateway reloaded.
    let new = net.dir.path().join("rotation");
    std::fs::create_dir_all(&new).unwrap();
    haven_certs::make_csr(&org, haven_certs::CertKind::Tls, &new.join("tls.key"), &new.join("tls.csr")).unwrap();
    let ca_dir = net.certs.0.as_path();
    haven_certs::sign_csr(ca_dir, &org, &new.join("tls.csr"), haven_certs::CertKind::Tls, &new.join("tls.crt"))
        .unwrap();
    net.gateway.reload(None).await.unwrap();
    let r = node.state.witness.check_now().await;
    assert_eq!(r.state, WitnessState::Unpinned, "two certificates pinned: {}", r.detail);

    // 4: installed with --replace; the node restarts on the new certificate. The old one is still
    // pinned, and is not this node's: the alarm stands.
    node.stop().await;
    haven_certs::install(&org, &files(new.join("tls.crt"), new.join("tls.key")), &own.0, true).unwrap();
    let node = start().await;
    let r = node.state.witness.check_now().await;
    assert_eq!(r.state, WitnessState::Unpinned, "{}", r.detail);
    assert_eq!(witness_cli(&node, "ada", &[]).await.0, 6, "`audit witness` exits 6 while the alarm stands");

    // 5: the old certificate revoked (which removes its pin) and the gateway reloaded.
    haven_certs::revoke_cert_file(ca_dir, &old_tls).unwrap();
    net.gateway.reload(None).await.unwrap();
    let r = node.state.witness.check_now().await;
    assert_eq!(r.state, WitnessState::Ok, "the pins are this node's again: {}", r.detail);
    let (code, out, err) = witness_cli(&node, "ada", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("state:      ok"), "{out}");
    let rows = alarm_rows(&node).await;
    assert!(!rows.is_empty(), "the alarms are kept as history");
    for (state, cleared_by, cleared_at, acked_by, _) in &rows {
        assert_eq!(state, "unpinned");
        assert_eq!(cleared_by.as_deref(), Some("pins"), "{rows:?}");
        assert!(cleared_at.is_some_and(|t| t > 0), "{rows:?}");
        assert_eq!(acked_by, &None, "{rows:?}");
    }
    // Still so after a restart.
    node.stop().await;
    let node = start().await;
    assert_ne!(node.state.witness.report().state, WitnessState::Unpinned);
    node.stop().await;
    net.stop().await;
}

/// A fork is a real inconsistency: it stands through later honest checks (which clear an `unpinned`
/// alarm) and across a restart, `audit witness` exits 6 meanwhile, and only an auditor can acknowledge
/// it, with a note; the node records who and when, keeps the row, and reports the witness out of alarm.
#[tokio::test]
async fn a_fork_stands_until_an_auditor_acknowledges_it() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let people = [("ada", Role::Auditor), ("casey", Role::Caseworker), ("pat", Role::PrivacyOfficer)];
    let node = net.node("harbor", &people).await;
    let witness = node.state.witness.clone();
    assert_eq!(witness.check_now().await.state, WitnessState::Ok);
    assert_eq!(witness_cli(&node, "casey", &[]).await.0, 0, "no alarm: exit 0");
    let (code, _, err) = witness_cli(&node, "ada", &["ack", "--note", "nothing to see"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no standing alarm"), "{err}");

    // The gateway's key signs a different root for a size the log has.
    let signer =
        CheckpointSigner::new(&std::fs::read_to_string(net.certs.gateway_signing_key()).unwrap(), &cert_der(&net))
            .unwrap();
    some_traffic(&net).await;
    let covering = net.gateway.audit_log().covering_checkpoint().await.unwrap();
    net.gateway.store().settle(covering).await.unwrap();
    let size = net.gateway.audit_log().integrated_size().await.unwrap();
    let forked = signer.sign(size, &[0x66; 32], SystemClock.now_micros());
    assert_eq!(witness.observe(haven_proto::v1::SignedCheckpoint::from(&forked)).await.state, WitnessState::Fork);
    // An honest check (whose pins are fine) does not clear it.
    assert_eq!(witness.check_now().await.state, WitnessState::Fork);
    let (code, out, err) = witness_cli(&node, "casey", &[]).await;
    assert_eq!(code, 6, "{out}{err}");
    assert!(out.starts_with("state:      fork"), "{out}");
    assert!(err.contains("the audit witness is in alarm (fork)") && err.contains("audit witness ack"), "{err}");

    // Only an auditor may acknowledge it, and must say what they found.
    for person in ["casey", "pat"] {
        let (code, _, err) = witness_cli(&node, person, &["ack", "--note", "looked"]).await;
        assert_eq!(code, 4, "{person}: {err}");
        assert!(err.contains("PERMISSION_DENIED") && err.contains("needs role auditor"), "{err}");
    }
    let (code, _, err) = witness_cli(&node, "ada", &["ack", "--note", "  "]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    assert_eq!(witness_cli(&node, "casey", &[]).await.0, 6, "refused acknowledgements change nothing");

    let before = SystemClock.now_micros();
    let note = "forged checkpoint from a test signer (fictional); reported to the network";
    let (code, out, err) = witness_cli(&node, "ada", &["ack", "--note", note, "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let acked: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(acked["acknowledged"], 1, "{acked}");
    assert_eq!(acked["state"], "ok", "checked again at once: {acked}");
    let rows = alarm_rows(&node).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (state, cleared_by, cleared_at, acked_by, ack_note) = &rows[0];
    assert_eq!(state, "fork");
    assert_eq!(cleared_by.as_deref(), Some("ack"));
    assert!(cleared_at.is_some_and(|t| t >= before), "{rows:?}");
    assert_eq!(acked_by.as_deref(), Some("ada"));
    assert_eq!(ack_note.as_deref(), Some(note));
    assert_eq!(witness_cli(&node, "casey", &[]).await.0, 0, "out of alarm until a new finding");

    // A new finding is a new alarm.
    assert_eq!(witness.observe(haven_proto::v1::SignedCheckpoint::from(&forked)).await.state, WitnessState::Fork);
    assert_eq!(witness_cli(&node, "casey", &[]).await.0, 6);
    assert_eq!(alarm_rows(&node).await.len(), 2);
    node.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn people_reach_the_audit_api_through_their_own_node() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let node = net.node("audit-office", &[("ada", Role::Auditor), ("sam", Role::Caseworker)]).await;
    let ch = Channel::from_shared(format!("http://{}", node.addr)).unwrap().connect().await.unwrap();
    let mut audit = AuditClient::new(ch);
    let page = audit
        .query(node.as_person("ada", AuditQueryRequest { filter: None, page_size: 5, cursor: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 5);
    assert_eq!(page.next_cursor, 5);
    let e = audit.query(node.as_person("sam", AuditQueryRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = audit.query(AuditQueryRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // The export streams through the node and verifies.
    let mut stream = audit.export(node.as_person("ada", AuditExportRequest::default())).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    while let Some(c) = stream.message().await.unwrap() {
        bytes.extend(c.data);
    }
    let s = verify(&net, &bytes, &[]).unwrap();
    assert_eq!(s.kind, Kind::Full);
    // The gateway recorded who read, through the node.
    let pool = net.gateway.store().pool();
    let row = sqlx::query("SELECT actor_org, actor_person FROM audit_log WHERE action = 'audit_exported'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "audit-office");
    assert_eq!(row.get::<String, _>(1), "ada");
    node.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn the_node_cli_queries_exports_and_verifies() {
    let net = TestNet::start().await;
    some_traffic(&net).await;
    let dir = net.dir.path().join("cli-node");
    std::fs::create_dir_all(&dir).unwrap();
    let mut users = haven_node::users::Users::default();
    let token = users.add(PersonId::parse("ada").unwrap(), Role::Auditor);
    users.save(&dir.join("users.toml")).unwrap();
    let config = haven_node::app::NodeConfig {
        first_sealing_key: true,
        link: haven_node::link::LinkConfig::from_certs_dir(
            net.url(),
            &net.certs,
            OrgId::parse("audit-office").unwrap(),
        ),
        database: dir.join("node.db").display().to_string(),
        users: dir.join("users.toml"),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        api_tls: None,
        console: None,
    };
    let node = haven_node::app::Node::open(config, std::sync::Arc::new(SystemClock)).await.unwrap();
    let listener = node.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(node.serve(listener, async move {
        let _ = stopped.await;
    }));
    let node_url = format!("http://{addr}");
    let cli = |args: &[&str]| {
        let argv: Vec<String> = ["haven-node", "audit"]
            .into_iter()
            .chain(args.iter().copied())
            .map(str::to_owned)
            .chain(
                (args[0] != "verify")
                    .then(|| ["--node".to_owned(), node_url.clone(), "--token".to_owned(), token.clone()])
                    .into_iter()
                    .flatten(),
            )
            .collect();
        async move {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = haven_node::cli::run(argv, &mut out, &mut err).await;
            (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
        }
    };

    let (code, out, err) = cli(&["query", "--page-size", "5", "--all"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("SEQ") && out.contains("submitted"), "{out}");
    let (code, out, err) = cli(&["report", "--subject", SUBJECT, "--controller", "harbor", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["controller"], "harbor");
    let (code, out, err) = cli(&["witness"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("state:"), "{out}");
    let export = dir.join("export.jsonl");
    let export_arg = export.display().to_string();
    let (code, _, err) = cli(&["export", "--out", &export_arg]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.starts_with("wrote "), "{err}");
    let key = signing_cert(&net).display().to_string();
    let (code, out, err) = cli(&["verify", &export_arg, "--key", &key]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.is_empty());
    // A bad filter value is refused with the gateway's reason, as invalid (exit 3).
    let (code, _, err) = cli(&["query", "--action", "peeked", "--page-size", "5"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("unknown filter.action"), "{err}");
    // An edited export fails verification.
    let text =
        std::fs::read_to_string(&export).unwrap().replacen("\"outcome\":\"queued\"", "\"outcome\":\"refused\"", 1);
    std::fs::write(&export, text).unwrap();
    let (code, _, err) = cli(&["verify", &export_arg, "--key", &key]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("verification FAILED") && err.contains("was edited"), "{err}");
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    net.stop().await;
}

/// The audit log integrator's read of the entries it has not yet hashed into the tree walks the primary
/// key even before the log has statistics (a new gateway's first minutes): a plan that scanned the
/// whole log and sorted it, as PostgreSQL chose for `seq >= $1 ORDER BY seq LIMIT $2` without
/// statistics, would cost more with every entry.
#[tokio::test]
async fn the_integrators_read_of_new_entries_walks_the_primary_key_whatever_the_statistics_say() {
    use haven_gateway::store::{ENTRY_LEAVES, Store};
    use haven_tests::net::{Db, db, fresh_database};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database(dir.path()).await).await.unwrap();
    let postgres = db() == Db::Postgres;
    let leaf = if postgres { "'\\x00'::bytea" } else { "x'00'" };
    let insert = |from: u32, to: u32| {
        format!(
            "INSERT INTO audit_log (seq, time_micros, actor_org, actor_person, actor_role, action, object_id, \
             counterparty, subject, purpose, consent_id, rule_ids, bundle_version, decision, reason, \
             released_fields, withheld_fields, outcome, correlation_id, source_node, leaf_hash) \
             WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to}) \
             SELECT i, i, 'harbor', 'casey', 'caseworker', 'submitted', '', '', '', '', '', '', '', '', '', \
             '', '', '', '', '', {leaf} FROM n"
        )
    };
    // 20,500 entries, and no statistics taken.
    let mut tx = store.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(insert(0, 20_499))).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    let plan: Vec<String> = if postgres {
        // Prepared and executed as the integrator's session does.
        let mut conn = store.pool().acquire().await.unwrap();
        let prepare = format!("PREPARE leaves(bigint, bigint) AS {ENTRY_LEAVES}");
        sqlx::query(sqlx::AssertSqlSafe(prepare)).execute(&mut *conn).await.unwrap();
        let rows = sqlx::query("EXPLAIN EXECUTE leaves(16000, 20096)").fetch_all(&mut *conn).await.unwrap();
        sqlx::query("DEALLOCATE leaves").execute(&mut *conn).await.unwrap();
        rows.iter().map(|r| r.get::<String, _>(0)).collect()
    } else {
        let explain = format!("EXPLAIN QUERY PLAN {ENTRY_LEAVES}");
        let query = sqlx::query(sqlx::AssertSqlSafe(explain)).bind(16_000_i64).bind(20_096_i64);
        let rows = query.fetch_all(store.pool()).await.unwrap();
        rows.iter().map(|r| r.get::<String, _>("detail")).collect()
    };
    let plan = plan.join("\n");
    // SQLite's primary key on a BIGINT column is an index of its own (not the rowid). PostgreSQL may
    // sort what the index gives (at most one batch), but never reads the whole table.
    let walks = if postgres { "Index Cond: ((seq >= " } else { "SEARCH audit_log USING INDEX" };
    assert!(plan.contains(walks), "the read does not walk the primary key:\n{plan}");
    for whole in ["Seq Scan", "SCAN audit_log"] {
        assert!(!plan.contains(whole), "the read scans the whole log:\n{plan}");
    }

    // And it reads exactly that range, in order.
    let mut tx = store.begin().await.unwrap();
    let rows = sqlx::query(ENTRY_LEAVES).bind(20_400_i64).bind(20_600_i64).fetch_all(&mut *tx).await.unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>("seq")).collect();
    assert_eq!(seqs, (20_400..20_500).collect::<Vec<i64>>());
    tx.commit().await.unwrap();
}
