//! Faults Haven must survive, on whichever database `HAVEN_TEST_DB` selects:
//!
//! - a consent revocation racing the delivery of a copy that depends on it, hundreds of times;
//! - the gateway process killed (SIGKILL) in the middle of a stream of submissions and deliveries, and
//!   restarted on the same database;
//! - the recipient's node process killed (SIGKILL) while it receives, and restarted;
//! - a node offline while messages are sent to it;
//! - the gateway's database disk full, and space freed again;
//! - two gateway replicas sharing one PostgreSQL, one of them killed (PostgreSQL only);
//! - two running copies of one organization's node, on one gateway, on two replicas in one process,
//!   and on two gateway processes sharing one database (PostgreSQL, or one SQLite file), one of which
//!   is killed; a stream that lost its lease and still acknowledges.
//!
//! A killed gateway leaves its streams' leases behind; the gateway processes here beat every second,
//! so those leases lapse within two seconds, and the nodes that reconnect elsewhere wait that long.
//!
//! Every wait is on something observable (a reply, a row in a database, a stream state) with a
//! deadline; nothing sleeps and hopes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haven_gateway::store::Store;
use haven_node::link::{GatewayLink, LinkConfig};
use haven_proto::v1::audit_client::AuditClient;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::*;
use haven_tests::fixtures::{self, stream_end, text, wait_for};
use haven_tests::net::{Db, TestNet, TestNode, db, fresh_database, policies_dir};
use haven_tests::procs::{Proc, node_users, open_node_db};
use haven_trust::audit::AuditEntry;
use haven_trust::clock::SystemClock;
use haven_trust::export::{Kind, verify_files};
use haven_trust::ids::{OrgId, OrgType, PersonId, Role};
use haven_trust::pki::CertsDir;
use haven_trust::receipt::{CollectionMethod, ConsentReceipt, RECEIPT_VERSION};
use prost::Message as _;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

const RECIPIENT: &str = "maple-house";

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_haven-demo"))
}

/// A housing referral from harbor to the shelter under `consent`.
fn referral(message_id: &str, subject: &str, consent: &str) -> Envelope {
    Envelope { message_id: message_id.into(), ..fixtures::referral(RECIPIENT, "housing", subject, consent) }
}

/// The same with a field the schema does not know: refused as a whole with INVALID_ARGUMENT.
fn bad_referral(message_id: &str, subject: &str, consent: &str) -> Envelope {
    let mut e = referral(message_id, subject, consent);
    e.fields.insert("favourite_colour".into(), text("blue"));
    e
}

fn link_to(url: &str, certs: &CertsDir, org: &str) -> GatewayLink {
    let config = LinkConfig::from_certs_dir(url.to_owned(), certs, OrgId::parse(org).unwrap());
    GatewayLink::new(&config, Arc::new(SystemClock)).unwrap()
}

/// A person at an organization calling the gateway directly, as their node would.
#[derive(Clone)]
struct Caller {
    link: GatewayLink,
    person: PersonId,
    role: Role,
    sealed: haven_tests::sender::SealOnce,
}

impl Caller {
    fn casey(link: GatewayLink) -> Caller {
        Caller { link, person: PersonId::parse("casey").unwrap(), role: Role::Caseworker, sealed: Default::default() }
    }

    /// The same person, with what it sealed so far, calling through `link` (a gateway at a new address).
    fn relinked(&self, link: GatewayLink) -> Caller {
        Caller { link, ..self.clone() }
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        self.link.request(&self.person, self.role, msg).unwrap()
    }

    fn gateway(&self) -> GatewayClient<Channel> {
        GatewayClient::new(self.link.channel())
    }

    /// Signs and registers a fresh consent for housing with shelters; returns (consent id, subject).
    async fn consent(&self) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        let receipt = ConsentReceipt {
            version: RECEIPT_VERSION,
            consent_id: Uuid::new_v4().to_string(),
            subject: haven_node::consent::mint_pseudonym(),
            controller: self.link.signer().org().clone(),
            purposes: vec!["housing".into()],
            recipient_orgs: vec![],
            recipient_types: vec![OrgType::parse("shelter").unwrap()],
            labels: vec!["identifying".into(), "contact".into(), "operational".into()],
            fields: vec![],
            valid_from: now - time::Duration::minutes(5),
            valid_until: now + time::Duration::days(30),
            method: CollectionMethod::Written,
            evidence_sha256: "ef".repeat(32),
            language: "en".into(),
            recorded_by: self.person.clone(),
            issued_at: now,
            supersedes: None,
        };
        let jws = self.link.signer().sign(&receipt).unwrap();
        let record =
            self.gateway().register_consent(self.req(RegisterConsentRequest { receipt_jws: jws })).await.unwrap();
        (record.into_inner().consent_id, receipt.subject)
    }

    /// Seals `env` as harbor's node would (once: a resubmission sends the same bytes) and submits it.
    async fn submit(&self, env: Envelope) -> Result<SubmitResponse, tonic::Status> {
        self.sealed.submit(&self.link, &self.person, self.role, &env).await
    }

    async fn decide(&self, env: Envelope) -> Result<DecideResponse, tonic::Status> {
        let envelope = Some(haven_tests::sender::names_only(&env));
        self.gateway().decide(self.req(DecideRequest { envelope })).await.map(|r| r.into_inner())
    }

    async fn revoke(&self, consent_id: &str, reason: &str) -> Result<ConsentRecord, tonic::Status> {
        let r = RevokeConsentRequest { consent_id: consent_id.into(), reason: reason.into() };
        self.gateway().revoke_consent(self.req(r)).await.map(|r| r.into_inner())
    }
}

fn queued(resp: &SubmitResponse) -> bool {
    resp.outcomes.len() == 1 && resp.outcomes[0].outcome == recipient_outcome::Outcome::Queued as i32
}

/// Waits until an in-process node's delivery stream is open.
async fn connected(node: &TestNode) {
    let mut s = node.state.stream.clone();
    tokio::time::timeout(Duration::from_secs(20), s.wait_for(|s| s.connected))
        .await
        .expect("the node's stream opens within 20 s")
        .expect("stream state");
}

/// What a node's inbox holds.
#[derive(Default)]
struct Inbox {
    /// Delivery rows by message id: (item id, withdrawn).
    deliveries: HashMap<String, Vec<(String, bool)>>,
    /// Message ids named by a consent-withdrawal notice.
    withdrawn: HashSet<String>,
}

impl Inbox {
    async fn read(pool: &SqlitePool) -> Result<Inbox, sqlx::Error> {
        let rows =
            sqlx::query("SELECT item_id, item_kind, message_id, body, withdrawn FROM inbox").fetch_all(pool).await?;
        let mut inbox = Inbox::default();
        for r in rows {
            let kind: String = r.try_get("item_kind")?;
            if kind == "delivery" {
                let withdrawn: i64 = r.try_get("withdrawn")?;
                inbox
                    .deliveries
                    .entry(r.try_get("message_id")?)
                    .or_default()
                    .push((r.try_get("item_id")?, withdrawn != 0));
            } else if kind == "consent_withdrawn" {
                let body: Vec<u8> = r.try_get("body")?;
                if let Some(item::Body::ConsentWithdrawn(w)) = Item::decode(body.as_slice()).unwrap().body {
                    inbox.withdrawn.extend(w.message_ids);
                }
            }
        }
        Ok(inbox)
    }

    /// Message ids delivered more than once.
    fn duplicates(&self) -> Vec<(&String, usize)> {
        self.deliveries.iter().filter(|(_, v)| v.len() > 1).map(|(m, v)| (m, v.len())).collect()
    }
}

/// Waits until a node's inbox holds a delivery of every message in `want`, then checks that it holds
/// each exactly once and nothing from `never`.
async fn all_delivered_once(
    what: &str,
    pool: impl Fn() -> Option<SqlitePool>,
    want: &HashSet<String>,
    never: &HashSet<String>,
) -> Inbox {
    let inbox = wait_for(what, Duration::from_secs(60), move || {
        let pool = pool();
        async move {
            let inbox = Inbox::read(&pool?).await.ok()?;
            want.iter().all(|m| inbox.deliveries.contains_key(m)).then_some(inbox)
        }
    })
    .await;
    assert!(inbox.duplicates().is_empty(), "{what}: delivered more than once: {:?}", inbox.duplicates());
    let extra: Vec<&String> = inbox.deliveries.keys().filter(|m| !want.contains(*m)).collect();
    assert!(extra.is_empty(), "{what}: delivered but never accepted: {extra:?}");
    let refused: Vec<&String> = never.iter().filter(|m| inbox.deliveries.contains_key(*m)).collect();
    assert!(refused.is_empty(), "{what}: a refused submission was delivered: {refused:?}");
    inbox
}

/// Waits until nothing is pending for `org` at the gateway, so every item was acknowledged.
async fn drained(pool: &sqlx::AnyPool, org: &str) {
    wait_for(&format!("the gateway's queue for {org} to drain"), Duration::from_secs(60), move || async move {
        let r = sqlx::query("SELECT COUNT(*) FROM outbox WHERE org = $1 AND state = 'pending'")
            .bind(org)
            .fetch_one(pool)
            .await
            .ok()?;
        (r.get::<i64, _>(0) == 0).then_some(())
    })
    .await
}

/// How many deliveries the node has stored whose items are still pending at the gateway: stored but
/// not (yet) acknowledged, so they will be delivered again and must be stored once.
async fn stored_unacknowledged(gateway: &sqlx::AnyPool, node: &SqlitePool) -> usize {
    let pending: HashSet<String> =
        sqlx::query("SELECT item_id FROM outbox WHERE org = $1 AND state = 'pending' AND item_kind = 'delivery'")
            .bind(RECIPIENT)
            .fetch_all(gateway)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    let inbox = Inbox::read(node).await.unwrap();
    inbox.deliveries.values().flatten().filter(|(item, _)| pending.contains(item)).count()
}

/// Checks the gateway's state after a stream of referrals from harbor to the shelter: one copy per
/// accepted message, each delivered, each item acknowledged with its payload gone, nothing queued for
/// a refused one.
async fn gateway_delivered_each_once(pool: &sqlx::AnyPool, accepted: &HashSet<String>, refused: &HashSet<String>) {
    let rows = sqlx::query("SELECT d.message_id, d.status, o.state, CAST(length(o.payload) AS BIGINT) AS len FROM deliveries d JOIN outbox o ON o.delivery_id = d.delivery_id WHERE d.sender = 'harbor' AND d.recipient = $1 AND o.item_kind = 'delivery'")
        .bind(RECIPIENT)
        .fetch_all(pool)
        .await
        .unwrap();
    let mut copies: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        let (m, status, state, len): (String, String, String, i64) =
            (r.get(0), r.get(1), r.get(2), r.get::<Option<i64>, _>(3).unwrap_or(0));
        assert_eq!((status.as_str(), state.as_str(), len), ("delivered", "acked", 0), "copy of {m}");
        *copies.entry(m).or_default() += 1;
    }
    assert_eq!(copies.len(), accepted.len(), "one copy per accepted message");
    for m in accepted {
        assert_eq!(copies.get(m), Some(&1), "exactly one copy of {m}");
    }
    for m in refused {
        assert!(!copies.contains_key(m), "a refused message was queued: {m}");
    }
}

/// The whole log: `seq` gap-free from 0, every stored leaf hash recomputed from its entry, and a full
/// export through the gateway at `url` verified offline with the gateway's signing certificate.
async fn audit_verifies(pool: &sqlx::AnyPool, url: &str, certs: &CertsDir, dir: &Path) -> Vec<AuditEntry> {
    let size = haven_gateway::audit::size(pool).await.unwrap();
    let entries = haven_gateway::audit::read_range(pool, 0, size).await.unwrap();
    assert_eq!(entries.len() as u64, size, "entries 0..{size} are all there");
    let leaves = sqlx::query("SELECT seq, leaf_hash FROM audit_log ORDER BY seq").fetch_all(pool).await.unwrap();
    assert_eq!(leaves.len() as u64, size, "no entry beyond the head");
    for (i, (e, row)) in entries.iter().zip(&leaves).enumerate() {
        assert_eq!(e.seq, i as u64, "seq is gap-free");
        let stored: Vec<u8> = row.get(1);
        assert_eq!(stored, haven_trust::merkle::leaf_hash(&e.canonical()).to_vec(), "leaf hash of seq {i}");
    }

    let ada = link_to(url, certs, "audit-office");
    let req = ada
        .request(
            &PersonId::parse("ada").unwrap(),
            Role::Auditor,
            AuditExportRequest { filter: Some(AuditFilter::default()) },
        )
        .unwrap();
    let mut stream = AuditClient::new(ada.channel()).export(req).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&chunk.data);
    }
    let path = dir.join(format!("export-{}.jsonl", Uuid::new_v4().simple()));
    std::fs::write(&path, &bytes).unwrap();
    let summary = verify_files(&path, &certs.gateway_signing_cert(), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.kind, Kind::Full);
    assert!(summary.entries >= size, "the export covers the log: {summary:?}");
    entries
}

fn count(entries: &[AuditEntry], action: &str, object: &str) -> usize {
    entries.iter().filter(|e| e.action == action && e.object_id == object).count()
}

/// One round of the race.
struct Round {
    consent: String,
    message: String,
    delivery: String,
}

/// A revocation racing a delivery never lets the delivery through after the revocation commits.
///
/// Each of 200 rounds registers a fresh consent, submits a referral under it to the shelter, whose
/// node is running and receives it at once, and revokes the consent concurrently with that delivery
/// (four workers run rounds side by side, so the timing varies). Afterwards, per round, from the
/// gateway's database and audit log and the node's inbox: either the copy was delivered, its
/// `delivered` entry precedes the `consent_revoked` entry, and the shelter got a withdrawal notice
/// naming it; or the copy is `revoked`, its queued item cancelled (never acknowledged) with the
/// payload deleted, and the shelter either never stored it or got a withdrawal notice for it. A later
/// Decide or Submit under the consent is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_racing_a_delivery_never_lets_it_through_after_the_revocation() {
    const ROUNDS: usize = 200;
    const WORKERS: usize = 4;
    let started = Instant::now();
    let net = TestNet::start().await;
    let maple = net.node(RECIPIENT, &[("sam", Role::Caseworker)]).await;
    connected(&maple).await;
    let harbor = Caller::casey(net.link("harbor"));

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let harbor = harbor.clone();
        workers.push(tokio::spawn(async move {
            let mut rounds = Vec::new();
            for i in 0..ROUNDS / WORKERS {
                let (consent, subject) = harbor.consent().await;
                let message = Uuid::now_v7().to_string();
                let sent = harbor.submit(referral(&message, &subject, &consent)).await.unwrap();
                assert!(queued(&sent), "{sent:?}");
                // The node is already receiving the copy; the revocation races it.
                let (reason, code) = if (w + i) % 2 == 0 {
                    ("withdrawn_by_subject", "consent_withdrawn")
                } else {
                    ("revoked_by_org", "consent_revoked")
                };
                // Not a wait for anything: a head start of 0 to 11 ms for the delivery, varied from
                // round to round, so the revocation lands at every stage of it (before the copy is
                // sent, while the node stores it, while its acknowledgement commits, after).
                let head_start = (w * 3 + i) % 12;
                if head_start > 0 {
                    tokio::time::sleep(Duration::from_millis(head_start as u64)).await;
                }
                harbor.revoke(&consent, reason).await.unwrap_or_else(|s| panic!("revocation failed: {s:?}"));
                // From the revocation's commit on, nothing is sent under the consent.
                let late = Uuid::now_v7().to_string();
                let d = harbor.decide(referral(&late, &subject, &consent)).await.unwrap();
                let decision = d.outcomes[0].decision.as_ref().unwrap();
                assert!(!decision.allowed && decision.reason_code == code, "late decide: {decision:?}");
                let s = harbor.submit(referral(&late, &subject, &consent)).await.unwrap();
                assert_eq!(s.outcomes[0].outcome, recipient_outcome::Outcome::Denied as i32, "late submit: {s:?}");
                assert!(s.outcomes[0].delivery_id.is_empty());
                rounds.push(Round { consent, message, delivery: sent.outcomes[0].delivery_id.clone() });
            }
            rounds
        }));
    }
    let mut rounds = Vec::new();
    for w in workers {
        rounds.extend(w.await.unwrap());
    }
    let raced = started.elapsed();

    let pool = net.gateway.store().pool().clone();
    drained(&pool, RECIPIENT).await;
    let inbox = Inbox::read(maple.state.store.pool()).await.unwrap();
    let size = haven_gateway::audit::size(&pool).await.unwrap();
    let entries = haven_gateway::audit::read_range(&pool, 0, size).await.unwrap();
    let revoked_at: HashMap<&str, u64> =
        entries.iter().filter(|e| e.action == "consent_revoked").map(|e| (e.object_id.as_str(), e.seq)).collect();
    let (mut delivered, mut never_stored, mut in_flight) = (0, 0, 0);
    for r in &rounds {
        let revoked = *revoked_at.get(r.consent.as_str()).expect("the revocation is audited");
        let status: String = sqlx::query("SELECT status FROM deliveries WHERE delivery_id = $1")
            .bind(r.delivery.as_str())
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        let item = sqlx::query("SELECT state, CAST(length(payload) AS BIGINT) FROM outbox WHERE delivery_id = $1 AND item_kind = 'delivery'")
            .bind(r.delivery.as_str())
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(item.len(), 1, "one queued item per copy");
        let (state, len): (String, i64) = (item[0].get(0), item[0].get::<Option<i64>, _>(1).unwrap_or(0));
        assert_eq!(len, 0, "no payload is left at the gateway for {}", r.message);
        let acks: Vec<u64> =
            entries.iter().filter(|e| e.action == "delivered" && e.object_id == r.message).map(|e| e.seq).collect();
        let cancels: Vec<u64> =
            entries.iter().filter(|e| e.action == "cancelled" && e.object_id == r.message).map(|e| e.seq).collect();
        let stored = inbox.deliveries.get(&r.message).map(Vec::as_slice).unwrap_or_default();
        assert!(stored.len() <= 1, "{} stored {} times", r.message, stored.len());
        match status.as_str() {
            "delivered" => {
                delivered += 1;
                assert_eq!(state, "acked");
                assert_eq!(acks.len(), 1, "one acknowledgement of {}", r.message);
                assert!(
                    acks[0] < revoked,
                    "{} delivered at seq {} after its revocation at {revoked}",
                    r.message,
                    acks[0]
                );
                assert!(cancels.is_empty(), "a delivered copy is not also cancelled");
                assert_eq!(stored.len(), 1, "a delivered copy is in the inbox");
                assert!(inbox.withdrawn.contains(&r.message), "the holder of {} was told of the withdrawal", r.message);
                assert!(stored[0].1, "the withdrawn record is marked");
            }
            "revoked" => {
                assert_eq!(state, "cancelled", "a revoked copy's item was cancelled, never acknowledged");
                assert!(acks.is_empty(), "{} was revoked but acknowledged at {acks:?}", r.message);
                assert_eq!(cancels.len(), 1);
                assert!(cancels[0] > revoked, "the cancellation follows the revocation");
                if stored.is_empty() {
                    never_stored += 1;
                } else {
                    in_flight += 1;
                    assert!(inbox.withdrawn.contains(&r.message), "in flight, so its holder is told: {}", r.message);
                    assert!(stored[0].1, "the withdrawn record is marked");
                }
            }
            other => panic!("{}: status {other}", r.message),
        }
    }
    // Across the whole log: no acknowledgement under a consent after that consent's revocation.
    for e in entries.iter().filter(|e| e.action == "delivered" && !e.consent_id.is_empty()) {
        if let Some(revoked) = revoked_at.get(e.consent_id.as_str()) {
            assert!(e.seq < *revoked, "delivered entry {} follows its consent's revocation at {revoked}", e.seq);
        }
    }
    audit_verifies(&pool, &net.url(), &net.certs, net.dir.path()).await;
    println!(
        "race: {} rounds in {:.1?} ({:.1?} in all): {delivered} delivered before the revocation, {never_stored} cancelled before sending, {in_flight} cancelled in flight (stored, then withdrawn)",
        rounds.len(),
        raced,
        started.elapsed()
    );
    maple.stop().await;
    net.stop().await;
}

/// Submissions from several tasks, each retried with the same message id after an error that may
/// have lost the reply (as the node's outbox retries), until the gateway answers.
struct Stream {
    accepted: Mutex<HashSet<String>>,
    refused: Mutex<HashSet<String>>,
    /// Attempts whose reply was lost (transport errors), retried later.
    interrupted: AtomicUsize,
    /// Retries the gateway answered as replays: the first attempt had committed, its reply was lost.
    replayed: AtomicUsize,
}

impl Stream {
    fn start(
        total: usize,
        tasks: usize,
        subject: String,
        consent: String,
        mut callers: impl FnMut(usize) -> watch::Receiver<Caller>,
    ) -> (Arc<Stream>, Vec<tokio::task::JoinHandle<()>>) {
        let stream = Arc::new(Stream {
            accepted: Mutex::default(),
            refused: Mutex::default(),
            interrupted: AtomicUsize::new(0),
            replayed: AtomicUsize::new(0),
        });
        let handles = (0..tasks)
            .map(|t| {
                let (stream, subject, consent) = (stream.clone(), subject.clone(), consent.clone());
                let mut caller = callers(t);
                tokio::spawn(async move {
                    for i in (t..total).step_by(tasks) {
                        let id = Uuid::now_v7().to_string();
                        let env = if i % 10 == 7 {
                            bad_referral(&id, &subject, &consent)
                        } else {
                            referral(&id, &subject, &consent)
                        };
                        loop {
                            let c = caller.borrow_and_update().clone();
                            match c.submit(env.clone()).await {
                                Ok(r) => {
                                    assert!(queued(&r), "{r:?}");
                                    if r.replayed {
                                        stream.replayed.fetch_add(1, Ordering::Relaxed);
                                    }
                                    stream.accepted.lock().unwrap().insert(id.clone());
                                    break;
                                }
                                Err(s) if s.code() == Code::InvalidArgument => {
                                    stream.refused.lock().unwrap().insert(id.clone());
                                    break;
                                }
                                Err(s) => {
                                    assert_ne!(s.code(), Code::AlreadyExists, "a retry is the same message: {s:?}");
                                    stream.interrupted.fetch_add(1, Ordering::Relaxed);
                                    // Retry when the gateway is back (a new address), or after a pause.
                                    let pause = Duration::from_millis(200);
                                    if let Ok(Err(_)) = tokio::time::timeout(pause, caller.changed()).await {
                                        tokio::time::sleep(pause).await;
                                    }
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        (stream, handles)
    }

    fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    async fn finish(self: &Arc<Self>, handles: Vec<tokio::task::JoinHandle<()>>) -> (HashSet<String>, HashSet<String>) {
        for h in handles {
            tokio::time::timeout(Duration::from_secs(90), h).await.expect("submitters finish").unwrap();
        }
        (self.accepted.lock().unwrap().clone(), self.refused.lock().unwrap().clone())
    }
}

/// The gateway process is killed (SIGKILL) in the middle of a stream of 600 submissions (one in ten
/// refused as bad input) from eight concurrent tasks and their deliveries to a running node, and
/// restarted on the same database and certificates. A submission whose reply was lost is resubmitted
/// with the same message id, as the node's outbox does. The node's stream comes back once the killed
/// gateway's lease on it lapses. Then every accepted submission is in the
/// node's inbox exactly once, nothing refused is, the gateway holds one delivered, acknowledged,
/// payload-free copy of each, and the audit log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_mid_stream_loses_nothing_and_delivers_nothing_twice() {
    const TOTAL: usize = 600;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let certs = CertsDir(dir.path().join("certs"));
    haven_certs::init(&policies_dir().join("orgs.toml"), &certs.0, false).unwrap();
    let database = fresh_database(dir.path()).await;
    let gw = Proc::gateway(exe(), "gateway-1", dir.path(), &policies_dir(), &database);
    let people = [("sam", Role::Caseworker)];
    let (d, c, p) = (dir.path(), &certs, &people[..]);
    let start_node = move |url: String| TestNode::start_at(d, c, url, RECIPIENT, p, Arc::new(SystemClock));
    let maple = start_node(gw.url()).await;
    connected(&maple).await;
    let harbor = Caller::casey(link_to(&gw.url(), &certs, "harbor"));
    let (consent, subject) = harbor.consent().await;
    let (current, callers) = watch::channel(harbor);

    let (stream, handles) = Stream::start(TOTAL, 8, subject, consent, |_| callers.clone());
    // Kill it when a good part of the stream is through and deliveries are flowing.
    let pool = maple.state.store.pool().clone();
    let (p, s) = (&pool, &stream);
    let received_at_kill =
        wait_for("submissions and deliveries under way", Duration::from_secs(60), move || async move {
            let delivered = Inbox::read(p).await.ok()?.deliveries.len();
            (s.accepted() >= 200 && delivered >= 20).then_some(delivered)
        })
        .await;
    let accepted_at_kill = stream.accepted();
    gw.kill();
    let killed = Instant::now();
    let store = Store::open(&database).await.unwrap();
    let stored_unacked = stored_unacknowledged(store.pool(), &pool).await;

    let gw = Proc::gateway(exe(), "gateway-2", dir.path(), &policies_dir(), &database);
    let restarted = killed.elapsed();
    // The same sender at the new address: what it sealed before the kill it sends again byte for byte.
    let relinked = current.borrow().relinked(link_to(&gw.url(), &certs, "harbor"));
    current.send_replace(relinked);
    // The node, pointed at the gateway's new address, reconnects on its own database.
    maple.stop().await;
    let maple = start_node(gw.url()).await;
    // Its stream comes back once the killed gateway's lease on it lapses (two one-second heartbeats).
    connected(&maple).await;
    let reconnected = killed.elapsed();

    let (accepted, refused) = stream.finish(handles).await;
    assert_eq!(accepted.len() + refused.len(), TOTAL);
    assert_eq!(refused.len(), TOTAL / 10, "every bad submission, and only those, is refused");
    assert!(accepted_at_kill < accepted.len(), "the kill came in the middle of the stream");
    let node_pool = maple.state.store.pool().clone();
    all_delivered_once("every accepted submission at the node", || Some(node_pool.clone()), &accepted, &refused).await;

    drained(store.pool(), RECIPIENT).await;
    gateway_delivered_each_once(store.pool(), &accepted, &refused).await;
    let entries = audit_verifies(store.pool(), &gw.url(), &certs, dir.path()).await;
    for m in &accepted {
        assert_eq!(count(&entries, "submitted", m), 1, "{m} was queued once");
        assert_eq!(count(&entries, "delivered", m), 1, "{m} was delivered once");
    }
    for m in &refused {
        assert_eq!(count(&entries, "delivered", m), 0, "refused {m} was never delivered");
    }
    println!(
        "gateway kill: {} accepted ({accepted_at_kill} before the kill, when the node held {received_at_kill}, {stored_unacked} of them stored but unacknowledged), {} refused, {} attempts failed and retried, {} of the retries replays of a committed submission; restart took {restarted:.1?}, the node's stream was back {reconnected:.1?} after the kill; {:.1?} in all",
        accepted.len(),
        refused.len(),
        stream.interrupted.load(Ordering::Relaxed),
        stream.replayed.load(Ordering::Relaxed),
        started.elapsed()
    );
    maple.stop().await;
    drop(gw);
}

/// The recipient's node process is killed (SIGKILL) while it receives a stream of 400 submissions,
/// and restarted on the same database; its stream opens again within the lease's time to live. Then
/// every accepted submission is in its inbox exactly once (items it had stored but not yet
/// acknowledged are delivered again and stored once), and the gateway holds one delivered,
/// acknowledged, payload-free copy of each; the audit log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_receiving_gets_everything_exactly_once() {
    const TOTAL: usize = 400;
    let started = Instant::now();
    let net = TestNet::start().await;
    let dir = net.dir.path().to_owned();
    node_users(&dir, RECIPIENT, &[("sam", Role::Caseworker)]);
    let node = Proc::node(exe(), &dir, RECIPIENT, &net.url());
    let harbor = Caller::casey(net.link("harbor"));
    let (consent, subject) = harbor.consent().await;
    let (_current, callers) = watch::channel(harbor);

    let (stream, handles) = Stream::start(TOTAL, 4, subject, consent, |_| callers.clone());
    let node_db = open_node_db(&dir, RECIPIENT).await.expect("the node made its database");
    let p = &node_db;
    let received_at_kill = wait_for("the node to be receiving", Duration::from_secs(60), move || async move {
        let n = Inbox::read(p).await.ok()?.deliveries.len();
        (n >= 100).then_some(n)
    })
    .await;
    node.kill();
    // What the node had stored but the gateway had not yet seen acknowledged when it died.
    let pool = net.gateway.store().pool().clone();
    let stored_unacked = stored_unacknowledged(&pool, &node_db).await;
    let restarted = Instant::now();
    let node = Proc::node(exe(), &dir, RECIPIENT, &net.url());
    // The killed node's connection was reset, so its stream ended and released the lease: the
    // restarted node's stream opens well within the lease's time to live.
    let ttl = haven_gateway::stream::lease_ttl(net.gateway.config().heartbeat);
    let p = &pool;
    wait_for("the restarted node's stream", ttl, move || async move {
        (entries_of(p, "stream_opened", RECIPIENT).await.len() >= 2).then_some(())
    })
    .await;
    let reopened = restarted.elapsed();

    let (accepted, refused) = stream.finish(handles).await;
    assert_eq!(accepted.len() + refused.len(), TOTAL);
    assert!(received_at_kill < accepted.len(), "the node was killed while receiving");
    all_delivered_once("every accepted submission at the node", || Some(node_db.clone()), &accepted, &refused).await;
    drained(&pool, RECIPIENT).await;
    gateway_delivered_each_once(&pool, &accepted, &refused).await;
    audit_verifies(&pool, &net.url(), &net.certs, &dir).await;
    println!(
        "node kill: {} accepted, {received_at_kill} received before the kill, {stored_unacked} of them stored but unacknowledged, {} attempts retried; the restarted node's stream opened {reopened:.1?} after its start; {:.1?} in all",
        accepted.len(),
        stream.interrupted.load(Ordering::Relaxed),
        started.elapsed()
    );
    let status = node.terminate();
    assert!(status.success(), "the restarted node shuts down cleanly: {status:?}");
    net.stop().await;
}

/// Submissions that arrive together share one commit: one that is refused inside the shared
/// transaction (a message id reused for different content) loses only itself, every other is queued once with its audit entry, and the quota count kept beside the queue
/// agrees with the queue.
#[tokio::test]
async fn submissions_sharing_a_commit_fail_alone() {
    let net = TestNet::start().await;
    let harbor = Arc::new(Caller::casey(net.link("harbor")));
    let (consent, subject) = harbor.consent().await;
    let taken = Uuid::now_v7().to_string();
    assert!(queued(&harbor.submit(referral(&taken, &subject, &consent)).await.unwrap()));
    let mut reused = referral(&taken, &subject, &consent);
    reused.fields.insert("urgency".into(), text("low"));

    let ids: Vec<String> = (0..40).map(|_| Uuid::now_v7().to_string()).collect();
    let mut envelopes: Vec<Envelope> = ids.iter().map(|id| referral(id, &subject, &consent)).collect();
    envelopes.insert(20, reused);
    let replies = futures::future::join_all(envelopes.into_iter().map(|env| {
        let harbor = harbor.clone();
        async move { harbor.submit(env).await }
    }))
    .await;
    let refused: Vec<_> = replies.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "only the reused id is refused: {refused:?}");
    assert_eq!(refused[0].code(), Code::AlreadyExists, "{:?}", refused[0]);
    assert!(replies.iter().filter_map(|r| r.as_ref().ok()).all(|r| queued(r) && !r.replayed));

    let gw = net.gateway.store().pool().clone();
    let count = |sql: &'static str| {
        let gw = gw.clone();
        async move { sqlx::query(sql).bind(RECIPIENT).fetch_one(&gw).await.unwrap().get::<i64, _>(0) }
    };
    let copies = count("SELECT COUNT(*) FROM deliveries WHERE recipient = $1").await;
    assert_eq!(copies, 41, "the first message and the 40 new ones, each once");
    let audited = count("SELECT COUNT(*) FROM audit_log WHERE action = 'submitted' AND counterparty = $1").await;
    assert_eq!(audited, 41, "one entry per queued copy, none for the refused submission");
    let waiting =
        count("SELECT COUNT(*) FROM outbox WHERE org = $1 AND state = 'pending' AND item_kind = 'delivery'").await;
    let counted = count("SELECT CAST(COALESCE(SUM(pending), 0) AS BIGINT) FROM queue_counts WHERE org = $1").await;
    assert_eq!((waiting, counted), (41, 41), "the quota count agrees with the queue");

    // Delivered and acknowledged, the count goes back to zero with the queue.
    let maple = net.node(RECIPIENT, &[("sam", Role::Caseworker)]).await;
    drained(&gw, RECIPIENT).await;
    let counted = count("SELECT CAST(COALESCE(SUM(pending), 0) AS BIGINT) FROM queue_counts WHERE org = $1").await;
    assert_eq!(counted, 0, "acknowledged copies leave the quota count");
    maple.stop().await;
    net.stop().await;
}

/// Waits until a session of the test's PostgreSQL database waits for a lock.
async fn a_lock_is_awaited(pool: &sqlx::AnyPool) {
    wait_for("a transaction to wait for a held row", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let waiting: i64 = sqlx::query(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
            (waiting > 0).then_some(())
        }
    })
    .await;
}

/// A gateway with two of harbor's consents, one of whose rows an open transaction holds, as a stuck
/// revocation on another replica would; `None` (and a note) on SQLite, where there are no row locks.
struct HeldConsent {
    net: TestNet,
    harbor: Arc<Caller>,
    held: String,
    held_subject: String,
    free: String,
    free_subject: String,
    gw: sqlx::AnyPool,
    holder: sqlx::Transaction<'static, sqlx::Any>,
}

impl HeldConsent {
    async fn start() -> Option<HeldConsent> {
        if db() != Db::Postgres {
            println!("SKIPPED: row locks between transactions are PostgreSQL's; run with HAVEN_TEST_DB=postgres");
            return None;
        }
        let net = TestNet::start().await;
        let harbor = Arc::new(Caller::casey(net.link("harbor")));
        let (held, held_subject) = harbor.consent().await;
        let (free, free_subject) = harbor.consent().await;
        let gw = net.gateway.store().pool().clone();
        let mut holder = gw.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM consents WHERE consent_id = $1 FOR NO KEY UPDATE")
            .bind(held.as_str())
            .fetch_one(&mut *holder)
            .await
            .unwrap();
        Some(HeldConsent { net, harbor, held, held_subject, free, free_subject, gw, holder })
    }
}

/// On PostgreSQL a shared commit locks its submissions' consent rows together, skipping any another
/// transaction holds; a submission whose consent row stays held (here by an open transaction, as a
/// stuck revocation on another replica would hold it) waits for it alone, in a savepoint, at most the
/// lock timeout, then fails alone with UNAVAILABLE: the submissions under other consents, in the same
/// shared commit or the next, are queued, and a retry once the row is free is queued too.
#[tokio::test]
async fn a_submission_whose_consent_row_is_held_fails_alone() {
    let Some(HeldConsent { net, harbor, held, held_subject, free, free_subject, gw, holder }) =
        HeldConsent::start().await
    else {
        return;
    };

    let blocked = referral(&Uuid::now_v7().to_string(), &held_subject, &held);
    let mut envelopes: Vec<Envelope> =
        (0..10).map(|_| referral(&Uuid::now_v7().to_string(), &free_subject, &free)).collect();
    envelopes.insert(5, blocked.clone());
    let replies = futures::future::join_all(envelopes.into_iter().map(|env| {
        let harbor = harbor.clone();
        async move { harbor.submit(env).await }
    }));
    let replies = tokio::time::timeout(Duration::from_secs(30), replies).await.expect("every submission is answered");
    let (refused, ok): (Vec<_>, Vec<_>) = replies.into_iter().partition(|r| r.is_err());
    assert_eq!(refused.len(), 1, "only the submission under the held consent fails: {refused:?}");
    let status = refused.into_iter().next().and_then(|r| r.err()).unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(ok.iter().all(|r| r.as_ref().is_ok_and(queued)), "{ok:?}");

    holder.rollback().await.unwrap();
    let retried = harbor.submit(blocked).await.unwrap();
    assert!(queued(&retried) && !retried.replayed, "the retry is queued, not a replay of a failure");
    let count = |consent: String| {
        let gw = gw.clone();
        async move {
            sqlx::query("SELECT COUNT(*) FROM deliveries WHERE consent_id = $1")
                .bind(consent)
                .fetch_one(&gw)
                .await
                .unwrap()
                .get::<i64, _>(0)
        }
    };
    assert_eq!((count(held).await, count(free).await), (1, 10));
    net.stop().await;
}

/// A submission that waits for a consent row another transaction holds waits beside the shared
/// committer, not in it: while it waits, other submissions and the audit entries that stand alone (a
/// dry run's) are committed and answered, and once the row is free the waiting one is queued.
#[tokio::test]
async fn a_submission_waiting_for_a_held_consent_row_holds_up_nobody_else() {
    let Some(HeldConsent { net, harbor, held, held_subject, free, free_subject, gw, holder }) =
        HeldConsent::start().await
    else {
        return;
    };

    let blocked = {
        let harbor = harbor.clone();
        let env = referral(&Uuid::now_v7().to_string(), &held_subject, &held);
        tokio::spawn(async move { harbor.submit(env).await })
    };
    // The blocked submission is waiting for the row lock in the database.
    a_lock_is_awaited(&gw).await;

    let others = futures::future::join_all((0..10).map(|_| {
        let harbor = harbor.clone();
        let env = referral(&Uuid::now_v7().to_string(), &free_subject, &free);
        async move { harbor.submit(env).await }
    }));
    let others = tokio::time::timeout(Duration::from_secs(30), others).await.expect("the others are answered");
    assert!(others.iter().all(|r| r.as_ref().is_ok_and(queued)), "{others:?}");
    let dry_run = harbor.decide(referral("", &free_subject, &free)).await;
    assert!(dry_run.is_ok(), "a dry run's audit entries are committed meanwhile: {dry_run:?}");
    assert!(!blocked.is_finished(), "the blocked submission still waits for the row");

    holder.rollback().await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), blocked).await.expect("answered once the row is free");
    let reply = reply.unwrap().unwrap();
    assert!(queued(&reply) && !reply.replayed, "{reply:?}");
    net.stop().await;
}

/// Messages sent while the recipient's node is offline wait in the gateway's queue and are delivered,
/// each exactly once, when it comes back.
#[tokio::test]
async fn messages_sent_to_an_offline_node_are_delivered_when_it_returns() {
    let net = TestNet::start().await;
    let harbor = Caller::casey(net.link("harbor"));
    let (consent, subject) = harbor.consent().await;
    let people = [("sam", Role::Caseworker)];
    let maple = net.node(RECIPIENT, &people).await;
    let first = Uuid::now_v7().to_string();
    assert!(queued(&harbor.submit(referral(&first, &subject, &consent)).await.unwrap()));
    let pool = maple.state.store.pool().clone();
    all_delivered_once("the first referral", || Some(pool.clone()), &HashSet::from([first.clone()]), &HashSet::new())
        .await;
    // Stored at the node is not yet acknowledged at the gateway: wait for the acknowledgement's commit.
    let gw = net.gateway.store().pool().clone();
    drained(&gw, RECIPIENT).await;
    maple.stop().await;

    let mut accepted = HashSet::from([first]);
    for _ in 0..50 {
        let id = Uuid::now_v7().to_string();
        assert!(queued(&harbor.submit(referral(&id, &subject, &consent)).await.unwrap()));
        accepted.insert(id);
    }
    let waiting: i64 =
        sqlx::query("SELECT COUNT(*) FROM outbox WHERE org = $1 AND state = 'pending' AND item_kind = 'delivery'")
            .bind(RECIPIENT)
            .fetch_one(&gw)
            .await
            .unwrap()
            .get(0);
    assert_eq!(waiting, 50, "the copies wait at the gateway while the node is offline");

    let maple = net.node(RECIPIENT, &people).await;
    let pool = maple.state.store.pool().clone();
    all_delivered_once("the referrals sent while offline", || Some(pool.clone()), &accepted, &HashSet::new()).await;
    drained(&gw, RECIPIENT).await;
    gateway_delivered_each_once(&gw, &accepted, &HashSet::new()).await;
    maple.stop().await;
    net.stop().await;
}

/// PostgreSQL only (on SQLite there is a single gateway process, and this test returns at once saying
/// so): two gateway replicas share one database. A message submitted on replica A is delivered through
/// replica B, where the node is connected, woken by LISTEN/NOTIFY rather than the slow safety poll.
/// Then B is killed (SIGKILL) in the middle of a stream of submissions to both; submissions whose
/// reply was lost go again through A with the same message id, the node fails over to A (once B's lease
/// on its stream lapses), and every accepted submission is delivered exactly once; the audit log
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_deliver_across_and_survive_one_killed() {
    if db() != Db::Postgres {
        println!("SKIPPED: gateway replicas need a shared PostgreSQL; run with HAVEN_TEST_DB=postgres");
        return;
    }
    const TOTAL: usize = 300;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let certs = CertsDir(dir.path().join("certs"));
    haven_certs::init(&policies_dir().join("orgs.toml"), &certs.0, false).unwrap();
    let database = fresh_database(dir.path()).await;
    let a = Proc::gateway(exe(), "replica-a", dir.path(), &policies_dir(), &database);
    let b = Proc::gateway(exe(), "replica-b", dir.path(), &policies_dir(), &database);
    let people = [("sam", Role::Caseworker)];
    let (d, c, p) = (dir.path(), &certs, &people[..]);
    let start_node = move |url: String| TestNode::start_at(d, c, url, RECIPIENT, p, Arc::new(SystemClock));
    let maple = start_node(b.url()).await;
    connected(&maple).await;
    let on_a = Caller::casey(link_to(&a.url(), &certs, "harbor"));
    // One sender through either replica: what it sealed it sends again byte for byte, wherever.
    let on_b = on_a.relinked(link_to(&b.url(), &certs, "harbor"));
    let (to_b, callers_b) = watch::channel(on_b.clone());
    let (consent, subject) = on_a.consent().await;
    // Each replica opens its LISTEN connection once it serves; a notification sent before that is
    // caught only by the safety poll. Wait for both.
    let store = Store::open(&database).await.unwrap();
    let st = &store;
    wait_for("both replicas to LISTEN", Duration::from_secs(20), move || async move {
        let r = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(st.pool())
        .await
        .ok()?;
        (r.get::<i64, _>(0) >= 2).then_some(())
    })
    .await;

    // Submitted on A, delivered through B, in turn with submissions on B itself (woken in process),
    // each awaited. Were B's stream woken only by its 2-second safety poll, the ten across replicas
    // would take about ten seconds more than the ten on B; with LISTEN/NOTIFY they are about as quick.
    let pool = maple.state.store.pool().clone();
    let (mut across, mut local) = (Duration::ZERO, Duration::ZERO);
    let mut accepted = HashSet::new();
    for i in 0..20 {
        let id = Uuid::now_v7().to_string();
        let t = Instant::now();
        let on = if i % 2 == 0 { &on_a } else { &on_b };
        assert!(queued(&on.submit(referral(&id, &subject, &consent)).await.unwrap()));
        accepted.insert(id);
        all_delivered_once("a referral, through B", || Some(pool.clone()), &accepted, &HashSet::new()).await;
        *(if i % 2 == 0 { &mut across } else { &mut local }) += t.elapsed();
    }
    assert!(
        across < local + Duration::from_secs(2),
        "deliveries across replicas waited for safety polls: {across:?} for ten, against {local:?} for ten on B"
    );

    // A stream to both replicas; B dies in the middle of it.
    let (to_a, callers_a) = watch::channel(on_a.clone());
    let (stream, handles) =
        Stream::start(TOTAL, 6, subject, consent, |t| if t % 2 == 0 { callers_a.clone() } else { callers_b.clone() });
    let (p, s) = (&pool, &stream);
    let received_at_kill =
        wait_for("submissions and deliveries under way", Duration::from_secs(60), move || async move {
            let delivered = Inbox::read(p).await.ok()?.deliveries.len();
            (s.accepted() >= 100 && delivered >= 30).then_some(delivered)
        })
        .await;
    let accepted_at_kill = stream.accepted();
    b.kill();
    let killed = Instant::now();
    // Clients of B go to A from now on, and so does the node, whose stream A opens once B's lease on
    // it lapses (two one-second heartbeats).
    to_b.send_replace(on_a.clone());
    maple.stop().await;
    let maple = start_node(a.url()).await;
    connected(&maple).await;
    let failed_over = killed.elapsed();

    let (more, refused) = stream.finish(handles).await;
    assert!(accepted_at_kill < more.len(), "B was killed in the middle of the stream");
    accepted.extend(more);
    let pool = maple.state.store.pool().clone();
    all_delivered_once("every accepted submission, through A", || Some(pool.clone()), &accepted, &refused).await;
    drained(store.pool(), RECIPIENT).await;
    gateway_delivered_each_once(store.pool(), &accepted, &refused).await;
    audit_verifies(store.pool(), &a.url(), &certs, dir.path()).await;
    println!(
        "replicas: 10 across in {across:.1?} (10 on B in {local:.1?}); {} accepted ({accepted_at_kill} before B was killed, when the node held {received_at_kill}), {} attempts failed and retried, {} of the retries replays; the node's stream was on A {failed_over:.1?} after the kill; {:.1?} in all",
        accepted.len(),
        stream.interrupted.load(Ordering::Relaxed),
        stream.replayed.load(Ordering::Relaxed),
        started.elapsed()
    );
    drop(to_a);
    maple.stop().await;
    drop(a);
}

/// Units of shared commits that fail after writing leave nothing behind, while the units that shared
/// their commits keep everything. Each unit writes a message row, an audit entry and a queue count
/// change through the batch's buffers, on the facts the batch read for it where it settled them
/// (always on SQLite), or on facts read for the unit alone, under its own locks, in a savepoint of a
/// transaction of its own where it did not (on PostgreSQL, an item whose row another transaction
/// held when the batch read it). Every third unit then fails.
#[tokio::test]
async fn units_that_fail_after_writing_leave_nothing_and_their_batch_mates_keep_everything() {
    use haven_gateway::commit::Reads;
    use haven_gateway::error::Error;
    use haven_gateway::routing::rows::MessageRow;

    let net = TestNet::start().await;
    let pool = net.gateway.store().pool().clone();
    // A queued notice (no consent), whose row another transaction holds on PostgreSQL: a unit that
    // names it is not settled by its batch.
    sqlx::query("INSERT INTO outbox (item_id, org, item_kind, payload, queued_at_micros, expires_at_micros, state) VALUES ('unit-notice', 'harbor', 'sender_notice', $1, 0, 9223372036854775807, 'pending')")
        .bind(vec![1u8, 2, 3])
        .execute(&pool)
        .await
        .unwrap();
    let holder = match db() {
        Db::Postgres => {
            let mut holder = pool.begin().await.unwrap();
            sqlx::query("SELECT 1 FROM outbox WHERE item_id = 'unit-notice' FOR UPDATE")
                .fetch_one(&mut *holder)
                .await
                .unwrap();
            Some(holder)
        }
        Db::Sqlite => None,
    };
    let reads = |i: usize| Reads {
        items: if i.is_multiple_of(2) { vec!["unit-notice".to_owned()] } else { Vec::new() },
        ..Default::default()
    };

    let units = (0..24usize).map(|i| {
        let commits = net.gateway.commits().clone();
        async move {
            let result = commits
                .run(reads(i), move |seen, fx| {
                    // Whether settled by the batch or read for the unit alone, the facts it named are there.
                    if i.is_multiple_of(2) {
                        assert!(seen.item("unit-notice").is_some_and(|found| found.is_some()), "unit {i}");
                        assert!(seen.settled(&reads(i)), "unit {i} runs on settled facts");
                    }
                    let id = format!("unit-m{i}");
                    fx.rows.messages.push(MessageRow {
                        sender: "unit-sender".into(),
                        message_id: id.clone(),
                        kind: "referral".into(),
                        content_sha256: "00".into(),
                        response: vec![7],
                        created_at_micros: 1,
                    });
                    let entry = AuditEntry {
                        action: "submitted".into(),
                        object_id: id.clone(),
                        actor_org: "unit-sender".into(),
                        outcome: "queued".into(),
                        ..Default::default()
                    };
                    fx.audit.push((entry, String::new()));
                    fx.counts.push(("unit-sender".into(), "unit-org".into(), 1));
                    if i.is_multiple_of(3) {
                        return Err(Error::InvalidArgument(format!("unit {i} fails after writing")));
                    }
                    Ok(i)
                })
                .await;
            (i, result)
        }
    });
    let results = tokio::spawn(futures::future::join_all(units));
    if let Some(holder) = holder {
        // The units that name the notice wait for its row, in a transaction of their own; the row is
        // let go once one does.
        a_lock_is_awaited(&pool).await;
        holder.rollback().await.unwrap();
    }
    let results =
        tokio::time::timeout(Duration::from_secs(30), results).await.expect("every unit is answered").unwrap();
    let mut kept = HashSet::new();
    for (i, result) in results {
        match result {
            Ok(n) => {
                assert_eq!(n, i);
                assert_ne!(i % 3, 0, "unit {i} should have failed");
                kept.insert(format!("unit-m{i}"));
            }
            Err(e) => {
                assert_eq!(i % 3, 0, "unit {i} failed: {e}");
                assert!(e.to_string().contains(&format!("unit {i} fails after writing")), "its own error: {e}");
            }
        }
    }
    assert_eq!(kept.len(), 16);

    let column = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query(sql).fetch_all(&pool).await.unwrap().iter().map(|r| r.get(0)).collect::<Vec<String>>() }
    };
    let messages = column("SELECT message_id FROM messages WHERE sender = 'unit-sender'").await;
    assert_eq!(
        messages.into_iter().collect::<HashSet<_>>(),
        kept,
        "the failed units' rows are gone, written through buffers or the transaction"
    );
    let audited = column("SELECT object_id FROM audit_log WHERE actor_org = 'unit-sender' ORDER BY seq").await;
    assert_eq!(audited.iter().cloned().collect::<HashSet<_>>(), kept);
    assert_eq!(audited.len(), kept.len(), "one entry each, none for a failed unit");
    let pending: i64 =
        sqlx::query("SELECT pending FROM queue_counts WHERE sender = 'unit-sender' AND org = 'unit-org'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(pending, 16, "only the kept units' count changes applied");
    // No failed unit took a position in the log: positions stay gap-free (read in one statement).
    let r = sqlx::query(
        "SELECT (SELECT next_seq FROM audit_head WHERE id = 1), COUNT(*), MIN(seq), MAX(seq) FROM audit_log",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (next, count, min, max): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!((count, min, max), (next, 0, next - 1));
    net.stop().await;
}

/// Fills the gateway's database "disk": on SQLite the writer connection may not grow the file
/// (`max_page_count`, set to the pages it has); on PostgreSQL every commit that records a submission
/// fails as a full disk does (SQLSTATE 53100 `disk_full`, raised at COMMIT by a deferred trigger).
async fn fill_disk(store: &Store) {
    match db() {
        Db::Sqlite => {
            let mut writer = store.writer().await.unwrap();
            let pages: i64 = sqlx::query("PRAGMA page_count").fetch_one(&mut *writer).await.unwrap().get(0);
            sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))
                .execute(&mut *writer)
                .await
                .unwrap();
        }
        Db::Postgres => {
            sqlx::raw_sql(
                "CREATE OR REPLACE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$; \
                 DROP TRIGGER IF EXISTS test_disk_full ON messages; \
                 CREATE CONSTRAINT TRIGGER test_disk_full AFTER INSERT ON messages DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_disk_full()",
            )
            .execute(store.pool())
            .await
            .unwrap();
        }
    }
}

/// Frees the space [`fill_disk`] took.
async fn free_disk(store: &Store) {
    match db() {
        Db::Sqlite => {
            let mut writer = store.writer().await.unwrap();
            sqlx::query("PRAGMA max_page_count = 1073741823").execute(&mut *writer).await.unwrap();
        }
        Db::Postgres => {
            sqlx::query("DROP TRIGGER test_disk_full ON messages").execute(store.pool()).await.unwrap();
        }
    }
}

/// Submits fresh referrals until one is refused (at most 2,000); returns the refusal and its
/// envelope.
async fn submit_until_refused(harbor: &Caller, subject: &str, consent: &str) -> (tonic::Status, Envelope) {
    for _ in 0..2000 {
        let env = referral(&Uuid::now_v7().to_string(), subject, consent);
        if let Err(status) = harbor.submit(env.clone()).await {
            return (status, env);
        }
    }
    panic!("2,000 submissions fitted on a full disk");
}

fn says_disk_full(status: &tonic::Status) -> bool {
    status.code() == Code::ResourceExhausted
        && status.message().contains("database disk is full")
        && status.message().contains("free space")
}

/// A full database disk refuses submissions with RESOURCE_EXHAUSTED saying so (not as an unavailable
/// database), for as long as it stays full, and nothing of them is committed; once space is freed the
/// gateway recovers by itself: the refused submission, sent again, and the next ones are queued. On
/// SQLite the writer connection whose transaction SQLite rolled back on `disk is full` is not reused
/// as though still in it (each later transaction would fail to begin); it is replaced, and the test
/// fills the new one's disk again.
#[tokio::test]
async fn a_full_database_disk_is_reported_as_such_and_the_gateway_recovers_once_space_returns() {
    let net = TestNet::start().await;
    let harbor = Caller::casey(net.link("harbor"));
    let (consent, subject) = harbor.consent().await;
    assert!(queued(&harbor.submit(referral(&Uuid::now_v7().to_string(), &subject, &consent)).await.unwrap()));
    let store = net.gateway.store().clone();
    let copies = || async {
        sqlx::query("SELECT COUNT(*) FROM deliveries WHERE recipient = $1")
            .bind(RECIPIENT)
            .fetch_one(store.pool())
            .await
            .unwrap()
            .get::<i64, _>(0)
    };

    fill_disk(&store).await;
    let (refused, first) = submit_until_refused(&harbor, &subject, &consent).await;
    assert!(says_disk_full(&refused), "{refused:?}");
    let before = copies().await;
    // Still full: refused the same way again.
    fill_disk(&store).await;
    let again = harbor.submit(first.clone()).await.unwrap_err();
    assert!(says_disk_full(&again), "{again:?}");
    assert_eq!(copies().await, before, "nothing of a refused submission was committed");

    free_disk(&store).await;
    let resent = harbor.submit(first).await.unwrap();
    assert!(queued(&resent) && !resent.replayed, "the refused submission is queued once space returns: {resent:?}");
    for _ in 0..5 {
        assert!(queued(&harbor.submit(referral(&Uuid::now_v7().to_string(), &subject, &consent)).await.unwrap()));
    }
    assert_eq!(copies().await, before + 6);
    net.stop().await;
}

/// Opens `org`'s delivery stream by hand through `link`, as a node does; the gateway's answer.
async fn open_stream(
    link: &GatewayLink,
) -> Result<(tokio::sync::mpsc::Sender<NodeFrame>, tonic::Streaming<GatewayFrame>), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel::<NodeFrame>(8);
    let hello = NodeFrame { frame: Some(node_frame::Frame::Hello(Hello { witnessed_tree_size: 0 })) };
    tx.send(hello).await.unwrap();
    let req = link.request(&PersonId::node(), Role::Node, tokio_stream::wrappers::ReceiverStream::new(rx)).unwrap();
    let inbound = GatewayClient::new(link.channel()).deliveries(req).await?.into_inner();
    Ok((tx, inbound))
}

/// The next frame of a stream that matches `pick` (others are passed over), within 20 s.
async fn next_frame<T>(
    stream: &mut tonic::Streaming<GatewayFrame>,
    mut pick: impl FnMut(gateway_frame::Frame) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.message().await {
                Ok(Some(GatewayFrame { frame: Some(f) })) => {
                    if let Some(v) = pick(f) {
                        return v;
                    }
                }
                Ok(_) => panic!("the stream ended"),
                Err(s) => panic!("the stream closed: {s:?}"),
            }
        }
    })
    .await
    .expect("the frame arrives within 20 s")
}

fn welcome(f: gateway_frame::Frame) -> Option<Welcome> {
    if let gateway_frame::Frame::Welcome(w) = f { Some(w) } else { None }
}

fn an_item(f: gateway_frame::Frame) -> Option<Item> {
    if let gateway_frame::Frame::Item(i) = f { Some(i) } else { None }
}

/// The audit entries of `action` whose actor is `org`, in log order.
async fn entries_of(pool: &sqlx::AnyPool, action: &str, org: &str) -> Vec<AuditEntry> {
    let size = haven_gateway::audit::size(pool).await.unwrap();
    let entries = haven_gateway::audit::read_range(pool, 0, size).await.unwrap();
    entries.into_iter().filter(|e| e.action == action && e.actor_org == org).collect()
}

/// Waits until the gateway has refused an in-process node's stream because another stream of its
/// organization holds the lease.
async fn refused_as_held(node: &TestNode) {
    let mut s = node.state.stream.clone();
    tokio::time::timeout(Duration::from_secs(20), s.wait_for(|s| s.held_elsewhere && s.refusals >= 1))
        .await
        .expect("the node's stream is refused within 20 s")
        .expect("stream state");
}

/// A refusal of a second stream: ALREADY_EXISTS naming when the holding stream connected and from
/// where (the `stream_opened` entry of the holder records its source), and when its lease lapses.
fn assert_held_by(refusal: &tonic::Status, holder: &AuditEntry) {
    assert_eq!(refusal.code(), Code::AlreadyExists, "{refusal:?}");
    let m = refusal.message();
    assert!(m.contains(&format!("organization `{RECIPIENT}` already has a delivery stream, connected at ")), "{m}");
    assert!(m.contains(&format!("from {} (stream {})", holder.source_node, holder.object_id)), "{m}");
    assert!(m.contains("another copy of this node is running"), "{m}");
    let retry: u64 = refusal
        .metadata()
        .get("haven-retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("the refusal says when the lease lapses");
    assert!(retry <= 30_000, "at most the lease's time to live: {retry} ms");
}

/// Submits `n` referrals from harbor to the shelter through `harbor` under one fresh consent.
async fn send_referrals(harbor: &Caller, n: usize) -> HashSet<String> {
    let (consent, subject) = harbor.consent().await;
    let mut sent = HashSet::new();
    for _ in 0..n {
        let id = Uuid::now_v7().to_string();
        assert!(queued(&harbor.submit(referral(&id, &subject, &consent)).await.unwrap()));
        sent.insert(id);
    }
    sent
}

/// The shelter's node delivered nothing to its users.
async fn inbox_is_empty(node: &TestNode) {
    let inbox = Inbox::read(node.state.store.pool()).await.unwrap();
    assert!(inbox.deliveries.is_empty(), "a second copy of the node received {:?}", inbox.deliveries.keys());
}

/// Two running copies of one organization's node on one gateway: the first holds the stream's lease,
/// and the second is refused (ALREADY_EXISTS, naming when and from where the first connected) and
/// keeps being refused instead of replacing it; the first receives every delivery, the second none,
/// and the trail records the first's opening and each refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_of_a_node_is_refused_and_the_first_keeps_every_delivery() {
    let net = TestNet::start().await;
    let people = [("sam", Role::Caseworker)];
    let first = net.node(RECIPIENT, &people).await;
    connected(&first).await;
    let gw = net.gateway.store().pool().clone();
    let opened = entries_of(&gw, "stream_opened", RECIPIENT).await;
    assert_eq!(opened.len(), 1, "the first copy's stream opening is recorded: {opened:?}");
    let refusal = open_stream(&net.link(RECIPIENT)).await.expect_err("a second stream is refused");
    assert_held_by(&refusal, &opened[0]);

    let elsewhere = tempfile::tempdir().unwrap();
    let second =
        TestNode::start_at(elsewhere.path(), &net.certs, net.url(), RECIPIENT, &people, Arc::new(SystemClock)).await;
    refused_as_held(&second).await;
    let sent = send_referrals(&Caller::casey(net.link("harbor")), 40).await;
    let pool = first.state.store.pool().clone();
    all_delivered_once("every referral at the first copy", || Some(pool.clone()), &sent, &HashSet::new()).await;
    drained(&gw, RECIPIENT).await;
    inbox_is_empty(&second).await;
    let s = second.state.stream.borrow().clone();
    assert_eq!(s.sessions, 0, "the second copy never held the stream: {s:?}");
    assert!(first.state.stream.borrow().connected && first.state.stream.borrow().sessions == 1, "never replaced");

    let refused = entries_of(&gw, "stream_refused", RECIPIENT).await;
    assert!(refused.len() >= 2, "the hand-made attempt and the second copy's: {refused:?}");
    for e in &refused {
        assert_eq!(
            (e.object_id.as_str(), e.outcome.as_str(), e.reason.as_str()),
            (opened[0].object_id.as_str(), "refused", "stream_held")
        );
    }
    assert_eq!(entries_of(&gw, "stream_opened", RECIPIENT).await.len(), 1, "no second stream opened");
    second.stop().await;
    first.stop().await;
    net.stop().await;
}

/// Two gateway replicas on one database: a stream on one holds the organization's lease for both, so
/// a second copy of the node on the other replica is refused, and what is submitted through the other
/// replica goes to the first copy alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_refuse_a_second_stream_of_an_organization() {
    let net = TestNet::start().await;
    let replica = net.replica().await;
    let people = [("sam", Role::Caseworker)];
    let first = net.node(RECIPIENT, &people).await;
    connected(&first).await;
    let gw = net.gateway.store().pool().clone();
    let opened = entries_of(&gw, "stream_opened", RECIPIENT).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let refusal = open_stream(&replica.link(RECIPIENT)).await.expect_err("the other replica refuses a second stream");
    assert_held_by(&refusal, &opened[0]);

    let elsewhere = tempfile::tempdir().unwrap();
    let second =
        TestNode::start_at(elsewhere.path(), &net.certs, replica.url(), RECIPIENT, &people, Arc::new(SystemClock))
            .await;
    refused_as_held(&second).await;
    let sent = send_referrals(&Caller::casey(replica.link("harbor")), 30).await;
    let pool = first.state.store.pool().clone();
    all_delivered_once("every referral at the first copy", || Some(pool.clone()), &sent, &HashSet::new()).await;
    drained(&gw, RECIPIENT).await;
    inbox_is_empty(&second).await;
    assert_eq!(second.state.stream.borrow().sessions, 0, "the second copy never held the stream");
    second.stop().await;
    first.stop().await;
    replica.stop().await;
    net.stop().await;
}

/// Two gateway processes on one database (PostgreSQL, or one SQLite file): a second copy of the node
/// on the other process is refused while the first holds the stream, and receives nothing. Then the
/// process holding the stream is killed (SIGKILL): its lease is no longer renewed, and once it lapses
/// (two heartbeats of one second) the second copy takes the stream over and receives what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_gateway_holding_a_stream_dies_its_lease_lapses_and_a_waiting_copy_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertsDir(dir.path().join("certs"));
    haven_certs::init(&policies_dir().join("orgs.toml"), &certs.0, false).unwrap();
    let database = fresh_database(dir.path()).await;
    let one = Proc::gateway(exe(), "gateway-1", dir.path(), &policies_dir(), &database);
    let two = Proc::gateway(exe(), "gateway-2", dir.path(), &policies_dir(), &database);
    let people = [("sam", Role::Caseworker)];
    let first = TestNode::start_at(dir.path(), &certs, one.url(), RECIPIENT, &people, Arc::new(SystemClock)).await;
    connected(&first).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let second =
        TestNode::start_at(elsewhere.path(), &certs, two.url(), RECIPIENT, &people, Arc::new(SystemClock)).await;
    refused_as_held(&second).await;
    let harbor = Caller::casey(link_to(&two.url(), &certs, "harbor"));
    let before = send_referrals(&harbor, 20).await;
    let pool = first.state.store.pool().clone();
    all_delivered_once("every referral at the first copy", || Some(pool.clone()), &before, &HashSet::new()).await;
    let store = Store::open(&database).await.unwrap();
    drained(store.pool(), RECIPIENT).await;
    inbox_is_empty(&second).await;
    assert_eq!(second.state.stream.borrow().sessions, 0, "the second copy never held the stream");

    one.kill();
    let killed = Instant::now();
    let mut s = second.state.stream.clone();
    tokio::time::timeout(Duration::from_secs(30), s.wait_for(|s| s.connected))
        .await
        .expect("the second copy gets the stream once the dead gateway's lease lapses")
        .unwrap();
    let took = killed.elapsed();
    // The lease lives two heartbeats (2 s) after its last renewal; the waiting copy retries no later
    // than just after the lapse the gateway told it.
    assert!(took < Duration::from_secs(10), "took over {took:?} after the kill");
    let after = send_referrals(&harbor, 10).await;
    let pool = second.state.store.pool().clone();
    all_delivered_once("what followed, at the second copy", || Some(pool.clone()), &after, &HashSet::new()).await;
    drained(store.pool(), RECIPIENT).await;
    println!("took over {took:.1?} after the gateway holding the stream was killed");
    second.stop().await;
    first.stop().await;
    drop(two);
}

/// A stream whose lease lapsed (its replica did not renew it in time: the clock moves past the
/// lease's two heartbeats) is fenced once another stream of the organization takes the lease over on
/// another replica. The item that was in flight on the old stream goes to the new one as well; the
/// old stream's acknowledgement of it is audited (`ack_fenced`) but not applied, and the old stream is
/// closed with ABORTED, its `stream_closed` entry listing the item; the new stream's acknowledgement
/// delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_on_a_fenced_stream_is_audited_but_not_applied() {
    let clock = haven_trust::clock::ManualClock::starting_now();
    let net = TestNet::start_with_clock(Arc::new(clock.clone())).await;
    let replica = net.replica().await;
    let gw = net.gateway.store().pool().clone();
    let (old_tx, mut old) = open_stream(&net.link(RECIPIENT)).await.expect("the first stream opens");
    let old_id = next_frame(&mut old, welcome).await.stream_id;
    let sent = send_referrals(&Caller::casey(net.link("harbor")), 1).await;
    let message = sent.iter().next().unwrap().clone();
    let item = next_frame(&mut old, an_item).await;

    // Two heartbeats (30 s) pass without a renewal.
    clock.advance_secs(31);
    let (new_tx, mut new) = open_stream(&replica.link(RECIPIENT)).await.expect("a stream takes the lapsed lease over");
    let new_id = next_frame(&mut new, welcome).await.stream_id;
    let again = next_frame(&mut new, an_item).await;
    assert_eq!(again.item_id, item.item_id, "the item in flight on the fenced stream goes to the new one");

    old_tx
        .send(NodeFrame { frame: Some(node_frame::Frame::Ack(Ack { item_id: item.item_id.clone() })) })
        .await
        .unwrap();
    let status = stream_end(&mut old, Duration::from_secs(20), "the fenced stream")
        .await
        .expect("the fenced stream is closed with a status");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(
        status.message().contains("lease lapsed") && status.message().contains("acknowledgements are refused"),
        "{status:?}"
    );
    let state = |id: String| {
        let gw = gw.clone();
        async move {
            let r = sqlx::query("SELECT o.state, d.status FROM outbox o JOIN deliveries d ON d.delivery_id = o.delivery_id WHERE o.item_id = $1")
                .bind(id)
                .fetch_one(&gw)
                .await
                .unwrap();
            (r.get::<String, _>(0), r.get::<String, _>(1))
        }
    };
    assert_eq!(state(item.item_id.clone()).await, ("pending".to_owned(), "sent".to_owned()), "not applied");
    let fenced = entries_of(&gw, "ack_fenced", RECIPIENT).await;
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert_eq!(
        (
            fenced[0].object_id.as_str(),
            fenced[0].counterparty.as_str(),
            fenced[0].outcome.as_str(),
            fenced[0].reason.as_str()
        ),
        (message.as_str(), "harbor", "refused", "stream_fenced")
    );
    assert!(entries_of(&gw, "delivered", RECIPIENT).await.is_empty(), "nothing delivered yet");
    let closed = entries_of(&gw, "stream_closed", RECIPIENT).await;
    let old_closed = closed.iter().find(|e| e.object_id == old_id).expect("the fenced stream's closing is recorded");
    assert_eq!(old_closed.reason, "fenced");
    assert_eq!(old_closed.released_fields, vec![item.item_id.clone()], "the item that was in flight on it");

    new_tx
        .send(NodeFrame { frame: Some(node_frame::Frame::Ack(Ack { item_id: item.item_id.clone() })) })
        .await
        .unwrap();
    let st = &state;
    let id = item.item_id.clone();
    wait_for("the new stream's acknowledgement", Duration::from_secs(20), move || {
        let id = id.clone();
        async move { (st(id).await == ("acked".to_owned(), "delivered".to_owned())).then_some(()) }
    })
    .await;
    let delivered = entries_of(&gw, "delivered", RECIPIENT).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].object_id, message);
    assert!(entries_of(&gw, "stream_opened", RECIPIENT).await.iter().any(|e| e.object_id == new_id));
    drop((old_tx, new_tx, new));
    replica.stop().await;
    net.stop().await;
}

/// A stream's opening and closing are accesses: `stream_opened` names the stream and where it
/// connected from, and `stream_closed` says why it closed and lists the items it had sent that were
/// not acknowledged. A stream that the node closes releases the lease at once, so the node's next
/// stream opens straight away.
#[tokio::test]
async fn stream_openings_and_closings_are_audited_with_the_source_and_the_items_in_flight() {
    let net = TestNet::start().await;
    let gw = net.gateway.store().pool().clone();
    send_referrals(&Caller::casey(net.link("harbor")), 3).await;
    let link = net.link(RECIPIENT);
    let (tx, mut stream) = open_stream(&link).await.unwrap();
    let id = next_frame(&mut stream, welcome).await.stream_id;
    let mut items = Vec::new();
    for _ in 0..3 {
        items.push(next_frame(&mut stream, an_item).await.item_id);
    }
    tx.send(NodeFrame { frame: Some(node_frame::Frame::Ack(Ack { item_id: items[0].clone() })) }).await.unwrap();
    let first = items[0].clone();
    let g = &gw;
    wait_for("the first acknowledgement", Duration::from_secs(20), move || {
        let first = first.clone();
        async move {
            let r = sqlx::query("SELECT state FROM outbox WHERE item_id = $1").bind(first).fetch_one(g).await.ok()?;
            (r.get::<String, _>(0) == "acked").then_some(())
        }
    })
    .await;
    // The node closes its side: the gateway ends the stream normally.
    drop(tx);
    assert!(stream_end(&mut stream, Duration::from_secs(20), "the stream").await.is_none(), "a normal end");

    let opened = entries_of(&gw, "stream_opened", RECIPIENT).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(
        (opened[0].object_id.as_str(), opened[0].actor_role.as_str(), opened[0].outcome.as_str()),
        (id.as_str(), "node", "ok")
    );
    let source: std::net::SocketAddr = opened[0].source_node.parse().expect("the source is an address and port");
    assert!(source.ip().is_loopback(), "{source}");
    let closed = entries_of(&gw, "stream_closed", RECIPIENT).await;
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!((closed[0].object_id.as_str(), closed[0].reason.as_str()), (id.as_str(), "node_closed"));
    assert_eq!(closed[0].source_node, opened[0].source_node);
    let mut in_flight = items[1..].to_vec();
    in_flight.sort();
    assert_eq!(closed[0].released_fields, in_flight, "the two items sent and not acknowledged");

    // Released at once: the next stream opens, and the items in flight come again.
    let (_tx, mut again) = open_stream(&link).await.expect("the lease was released when the stream closed");
    next_frame(&mut again, welcome).await;
    let mut resent = vec![next_frame(&mut again, an_item).await.item_id, next_frame(&mut again, an_item).await.item_id];
    resent.sort();
    assert_eq!(resent, in_flight);
    net.stop().await;
}
