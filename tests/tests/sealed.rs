//! Sealed payloads: the gateway routes field values it cannot read. Canary values are searched for
//! in everything the gateway holds; a malicious sender, written here with the real crates, is refused
//! at the gateway or rejected at the recipient; a gateway that re-seals, replays or serves a forged
//! key is caught by the nodes; copies sealed to a rotated key still open; a split view of the key
//! log is caught when a copy passes. Runs on SQLite or PostgreSQL (`HAVEN_TEST_DB`), with real mTLS
//! on loopback. Every survivor, value and organization here is fictional.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aho_corasick::AhoCorasick;
use base64::Engine;
use haven_node::link::GatewayLink;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::*;
use haven_tests::fixtures::{DAY, consent_request, record_consent, referral, send, text, wait_for};
use haven_tests::net::{Db, TestNet, TestNode, db, fresh_database, policies_dir, provision_sealing_keys};
use haven_tests::procs::Proc;
use haven_tests::sender;
use haven_trust::audit::AuditEntry;
use haven_trust::clock::{Clock, SystemClock};
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::pki::CertsDir;
use haven_trust::sealed::{self, Manifest, ManifestBody};
use haven_trust::token::OrgSigner;
use prost::Message as _;
use sqlx::Row;
use uuid::Uuid;

const BOUND: Duration = Duration::from_secs(60);
const SHELTER: &str = "maple-house";

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_haven-demo"))
}

/// A housing consent recorded at `node`, for shelters; (consent id, subject).
async fn housing_consent(node: &TestNode) -> (String, String) {
    let labels = ["identifying", "contact", "operational"];
    record_consent(node, consent_request(&["housing"], &["shelter"], &labels, SystemClock.now_micros() + 30 * DAY))
        .await
}

/// Deliveries in `node`'s inbox, by message id, with their values (people see only these).
async fn inbox(node: &TestNode, person: &str) -> HashMap<String, Delivery> {
    let items = node
        .client()
        .await
        .inbox(node.as_person(person, InboxRequest { kind: String::new(), limit: 1000 }))
        .await
        .unwrap()
        .into_inner()
        .items;
    items
        .into_iter()
        .filter_map(|i| match i.item.and_then(|i| i.body) {
            Some(item::Body::Delivery(d)) => Some((d.message_id.clone(), d)),
            _ => None,
        })
        .collect()
}

/// The audit entries of `action` by `org`.
async fn entries_of(pool: &sqlx::AnyPool, action: &str, org: &str) -> Vec<AuditEntry> {
    let size = haven_gateway::audit::size(pool).await.unwrap();
    let entries = haven_gateway::audit::read_range(pool, 0, size).await.unwrap();
    entries.into_iter().filter(|e| e.action == action && e.actor_org == org).collect()
}

/// Waits until nothing is pending for `org` in the gateway's queue (every item acknowledged).
async fn drained(pool: &sqlx::AnyPool, org: &str) {
    wait_for(&format!("{org}'s queue to drain"), BOUND, || async {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE org = $1 AND state = 'pending'")
            .bind(org)
            .fetch_one(pool)
            .await
            .ok()?
            .get(0);
        (n == 0).then_some(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Canaries

/// Every way `canary` could sit in bytes: raw, and base64 (standard and URL-safe) at each of the three
/// alignments, as the part of the encoding that depends on the canary alone.
fn encodings(canary: &str) -> Vec<String> {
    let mut out = vec![canary.to_owned()];
    for engine in [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE] {
        for offset in 0..3 {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(canary.as_bytes());
            let encoded = engine.encode(&bytes);
            out.push(encoded[4..encoded.len() - 4].to_owned());
        }
    }
    out
}

/// Which of `needles` occur in `haystack`.
fn found(needles: &AhoCorasick, names: &[String], haystack: &[u8]) -> Vec<String> {
    let mut hits: Vec<String> =
        needles.find_overlapping_iter(haystack).map(|m| names[m.pattern().as_usize()].clone()).collect();
    hits.sort();
    hits.dedup();
    hits
}

/// The gateway process's readable memory, region by region, read through procfs.
fn process_memory(pid: u32) -> Vec<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the gateway's memory map");
    let mut mem =
        std::fs::File::open(format!("/proc/{pid}/mem")).expect("the gateway's memory (same user, its parent)");
    let mut regions = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((from, to)) = range.split_once('-') else { continue };
        let (Ok(from), Ok(to)) = (u64::from_str_radix(from, 16), u64::from_str_radix(to, 16)) else { continue };
        let mut buf = vec![0u8; usize::try_from(to - from).unwrap_or(0)];
        if mem.seek(SeekFrom::Start(from)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            regions.push(buf);
        }
    }
    assert!(!regions.is_empty(), "no memory of the gateway could be read");
    regions
}

/// What the gateway's database holds: its SQLite files, or a `pg_dump` of its PostgreSQL database.
fn database_bytes(database: &str) -> Vec<(String, Vec<u8>)> {
    match db() {
        Db::Sqlite => ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let path = format!("{database}{suffix}");
                std::fs::read(&path).ok().map(|b| (path, b))
            })
            .collect(),
        Db::Postgres => {
            let out = std::process::Command::new("pg_dump")
                .args(["--no-owner", "--dbname", database])
                .output()
                .expect("pg_dump runs");
            assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout.len() > 1000, "a dump of the gateway's database");
            vec![("pg_dump".into(), out.stdout)]
        }
    }
}

/// Searches the gateway's database, log and memory for every encoding of every canary; returns what
/// was found where.
fn search_gateway(gw: &Proc, database: &str, log: &Path, canaries: &[String]) -> Vec<(String, String)> {
    let names: Vec<String> = canaries.iter().flat_map(|c| encodings(c)).collect();
    let needles = AhoCorasick::new(&names).unwrap();
    let mut hits = Vec::new();
    for (place, bytes) in database_bytes(database) {
        hits.extend(found(&needles, &names, &bytes).into_iter().map(|n| (n, place.clone())));
    }
    let log_bytes = std::fs::read(log).expect("the gateway's log");
    hits.extend(found(&needles, &names, &log_bytes).into_iter().map(|n| (n, "log".to_owned())));
    for region in process_memory(gw.pid()) {
        hits.extend(found(&needles, &names, &region).into_iter().map(|n| (n, "memory".to_owned())));
    }
    hits
}

/// The demo's story with canary values: referrals to a shelter and an alert to the liaisons, whose
/// nodes are offline so the sealed copies rest in the queue. No canary, raw or base64, is in the
/// gateway's database (SQLite files with their log and index, or a `pg_dump`), its log or its process
/// memory; once the recipients are back, every canary is in their nodes' databases and inboxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_are_nowhere_at_the_gateway_and_all_at_the_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertsDir(dir.path().join("certs"));
    haven_certs::init(&policies_dir().join("orgs.toml"), &certs.0, false).unwrap();
    let database = fresh_database(dir.path()).await;
    let gw = Proc::gateway(exe(), "gateway", dir.path(), &policies_dir(), &database);
    let log = dir.path().join("gateway.log");
    let clock: haven_trust::clock::SharedClock = Arc::new(SystemClock);
    provision_sealing_keys(dir.path(), &certs, &gw.url(), clock.clone()).await;
    let harbor =
        TestNode::start_at(dir.path(), &certs, gw.url(), "harbor", &[("casey", Role::Caseworker)], clock.clone()).await;

    let (consent, subject) = housing_consent(&harbor).await;
    let mut canaries = Vec::new();
    let mut referrals = Vec::new();
    for _ in 0..5 {
        let canary = format!("Canary{}", Uuid::new_v4().simple());
        let mut env = referral(SHELTER, "housing", &subject, &consent);
        env.fields.insert("survivor_first_name".into(), text(&canary));
        let sent = send(&harbor, "casey", env).await.unwrap();
        assert_eq!(sent.outcomes[0].outcome, recipient_outcome::Outcome::Queued as i32, "{sent:?}");
        referrals.push((sent.message_id, canary.clone()));
        canaries.push(canary);
    }
    let place = format!("Canary{}", Uuid::new_v4().simple());
    let alert = Envelope {
        kind: "alert".into(),
        all_permitted_recipients: true,
        purpose: "safety_alert".into(),
        fields: HashMap::from([
            ("incident_type".into(), text("suspicious_recruitment")),
            ("location_area".into(), text(&place)),
        ]),
        ..Default::default()
    };
    let sent = send(&harbor, "casey", alert).await.unwrap();
    let liaisons: Vec<String> = sent
        .outcomes
        .iter()
        .filter(|o| o.outcome == recipient_outcome::Outcome::Queued as i32)
        .map(|o| o.recipient.clone())
        .collect();
    assert_eq!(liaisons.len(), 2, "{sent:?}");
    canaries.push(place.clone());

    let hits = search_gateway(&gw, &database, &log, &canaries);
    assert!(hits.is_empty(), "canaries at the gateway while their copies are queued: {hits:?}");

    // The recipients come back: every canary reaches them, where the same search finds it.
    let maple =
        TestNode::start_at(dir.path(), &certs, gw.url(), SHELTER, &[("sam", Role::Caseworker)], clock.clone()).await;
    let metro =
        TestNode::start_at(dir.path(), &certs, gw.url(), "metro-police", &[("lee", Role::Liaison)], clock.clone())
            .await;
    let store = haven_gateway::store::Store::open(&database).await.unwrap();
    drained(store.pool(), SHELTER).await;
    drained(store.pool(), "metro-police").await;
    let got = inbox(&maple, "sam").await;
    for (message_id, canary) in &referrals {
        assert_eq!(got[message_id].fields.get("survivor_first_name"), Some(&text(canary)), "{message_id}");
    }
    let alerts = inbox(&metro, "lee").await;
    assert!(alerts.values().any(|d| d.fields.get("location_area") == Some(&text(&place))));
    let node_files: Vec<PathBuf> = [SHELTER, "metro-police"]
        .iter()
        .flat_map(|o| ["", "-wal"].map(|s| dir.path().join("nodes").join(o).join(format!("node.db{s}"))))
        .collect();
    let needles = AhoCorasick::new(&canaries).unwrap();
    let mut at_recipients: Vec<String> =
        node_files.iter().filter_map(|f| std::fs::read(f).ok()).flat_map(|b| found(&needles, &canaries, &b)).collect();
    at_recipients.sort();
    at_recipients.dedup();
    assert_eq!(at_recipients.len(), canaries.len(), "the search finds every canary where it is");

    let hits = search_gateway(&gw, &database, &log, &canaries);
    assert!(hits.is_empty(), "canaries at the gateway after delivery: {hits:?}");
    maple.stop().await;
    metro.stop().await;
    harbor.stop().await;
    store.close().await;
    drop(gw);
}

// ---------------------------------------------------------------------------------------------------
// A malicious sender

/// One copy for `recipient`, sealed by hand: `values` sealed, the manifest made from the envelope and
/// then changed by `tweak`, and signed by `signer` (harbor's own, or another organization's).
async fn forged(
    link: &GatewayLink,
    signer: &OrgSigner,
    env: &Envelope,
    recipient: &str,
    values: &HashMap<String, FieldValue>,
    tweak: impl FnOnce(&mut ManifestBody),
) -> SealedCopy {
    let bundle = sender::bundle(link).await.unwrap();
    let now = link.clock().now_secs();
    let (keys, key_log) = sender::keys(link, now).await.unwrap();
    let key = &keys[&OrgId::parse(recipient).unwrap()];
    let mut fields: Vec<String> = values.keys().cloned().collect();
    fields.sort();
    let mut body = ManifestBody {
        v: sealed::MANIFEST_VERSION,
        message_id: env.message_id.clone(),
        sender: OrgId::parse("harbor").unwrap(),
        sender_person: "casey".into(),
        recipient: OrgId::parse(recipient).unwrap(),
        kind: env.kind.clone(),
        purpose: env.purpose.clone(),
        consent_id: env.consent_id.clone(),
        correlation_id: env.correlation_id.clone(),
        bundle_version: bundle.version_id().to_owned(),
        fields,
        recipient_kid: key.kid.clone(),
        created_at: now,
        not_after: now + 86_400,
        key_log,
    };
    tweak(&mut body);
    let plaintext = SealedFields { fields: values.clone() }.encode_to_vec();
    let copy = sealed::seal(signer, body, &key.key_bytes().unwrap(), &plaintext).unwrap();
    SealedCopy { recipient: recipient.into(), manifest: copy.manifest, enc: copy.enc, ciphertext: copy.ciphertext }
}

/// Submits `env` (names only) with `copies`, as harbor's caseworker.
async fn submit_copies(link: &GatewayLink, env: &Envelope, copies: Vec<SealedCopy>) -> SubmitResponse {
    let bundle = sender::bundle(link).await.unwrap();
    let request = SubmitRequest {
        envelope: Some(sender::names_only(env)),
        bundle_version: bundle.version_id().to_owned(),
        copies,
    };
    let casey = PersonId::parse("casey").unwrap();
    GatewayClient::new(link.channel())
        .submit(link.request(&casey, Role::Caseworker, request).unwrap())
        .await
        .unwrap()
        .into_inner()
}

fn reason(resp: &SubmitResponse, recipient: &str) -> (String, String) {
    let o = resp.outcomes.iter().find(|o| o.recipient == recipient).unwrap();
    let d = o.decision.clone().unwrap_or_default();
    (d.reason_code, d.reason_detail)
}

/// A safety alert to the metropolitan police, naming a (fictional) victim the rules withhold.
fn alert_to_metro() -> (Envelope, HashMap<String, FieldValue>) {
    let values = HashMap::from([
        ("incident_type".to_owned(), text("suspicious_recruitment")),
        ("location_area".to_owned(), text("Fictional Quay, dock 4")),
        ("victim_name".to_owned(), text("Nobody Real")),
    ]);
    let env = Envelope {
        message_id: Uuid::now_v7().to_string(),
        kind: "alert".into(),
        recipients: vec!["metro-police".into()],
        purpose: "safety_alert".into(),
        fields: values.clone(),
        ..Default::default()
    };
    (env, values)
}

fn without(values: &HashMap<String, FieldValue>, field: &str) -> HashMap<String, FieldValue> {
    values.iter().filter(|(k, _)| *k != field).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A sender that lists a withheld field, names another recipient, signs as another organization or
/// replays a copy under a new message id is refused at the gateway, each with its reason, and nothing
/// is queued; one that seals more fields than its manifest lists gets past the gateway (which cannot
/// see them) and is rejected at the recipient: never shown, reported, audited, and the sender is told.
#[tokio::test]
async fn a_malicious_sender_is_refused_at_the_gateway_or_rejected_at_the_recipient() {
    let net = TestNet::start().await;
    let link = net.link("harbor");
    let harbor = link.signer().clone();
    let metro = net.node("metro-police", &[("lee", Role::Liaison)]).await;
    let queued = recipient_outcome::Outcome::Queued as i32;

    // The field the rules withhold, listed and sealed.
    let (env, values) = alert_to_metro();
    let copy = forged(&link, &harbor, &env, "metro-police", &values, |_| {}).await;
    let resp = submit_copies(&link, &env, vec![copy]).await;
    let (code, detail) = reason(&resp, "metro-police");
    assert_eq!(code, "manifest_exceeds_grant");
    assert!(detail.contains("victim_name"), "{detail}");

    // A manifest naming another recipient.
    let (env, values) = alert_to_metro();
    let honest = without(&values, "victim_name");
    let copy = forged(&link, &harbor, &env, "metro-police", &honest, |b| {
        b.recipient = OrgId::parse("county-sheriff").unwrap();
    })
    .await;
    let (code, detail) = reason(&submit_copies(&link, &env, vec![copy]).await, "metro-police");
    assert_eq!(code, "manifest_mismatch");
    assert!(detail.contains("recipient"), "{detail}");

    // A manifest naming another person than the one who sends.
    let (env, values) = alert_to_metro();
    let copy = forged(&link, &harbor, &env, "metro-police", &without(&values, "victim_name"), |b| {
        b.sender_person = "mallory".into();
    })
    .await;
    let (code, detail) = reason(&submit_copies(&link, &env, vec![copy]).await, "metro-police");
    assert_eq!(code, "manifest_mismatch");
    assert!(detail.contains("sender person"), "{detail}");

    // Signed by another organization (a real signing key of the network, not harbor's).
    let (env, values) = alert_to_metro();
    let northstar = net.link("northstar").signer().clone();
    let copy = forged(&link, &northstar, &env, "metro-police", &without(&values, "victim_name"), |_| {}).await;
    let (code, detail) = reason(&submit_copies(&link, &env, vec![copy]).await, "metro-police");
    assert_eq!(code, "manifest_mismatch");
    assert!(detail.contains("northstar"), "{detail}");

    // A real copy of one message replayed under a new message id.
    let (first, values) = alert_to_metro();
    let copy = forged(&link, &harbor, &first, "metro-police", &without(&values, "victim_name"), |_| {}).await;
    let sent = submit_copies(&link, &first, vec![copy.clone()]).await;
    assert_eq!(sent.outcomes[0].outcome, queued, "{sent:?}");
    let (again, _) = alert_to_metro();
    let (code, detail) = reason(&submit_copies(&link, &again, vec![copy.clone()]).await, "metro-police");
    assert_eq!(code, "manifest_mismatch");
    assert!(detail.contains("message id"), "{detail}");
    // ... and under the same one: the same bytes replay the first answer, queuing nothing.
    let replay = submit_copies(&link, &first, vec![copy]).await;
    assert!(replay.replayed);
    assert_eq!(replay.outcomes[0].delivery_id, sent.outcomes[0].delivery_id);

    // More fields sealed than the manifest lists: the gateway queues it; the recipient rejects it.
    let (sneaky, values) = alert_to_metro();
    let copy = forged(&link, &harbor, &sneaky, "metro-police", &values, |b| {
        b.fields.retain(|f| f != "victim_name");
    })
    .await;
    let resp = submit_copies(&link, &sneaky, vec![copy]).await;
    assert_eq!(resp.outcomes[0].outcome, queued, "the gateway cannot see inside: {resp:?}");
    let pool = net.gateway.store().pool().clone();
    drained(&pool, "metro-police").await;
    let failures = wait_for("the recipient's integrity report", BOUND, || async {
        let e = entries_of(&pool, "integrity_failure", "metro-police").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        (failures[0].object_id.as_str(), failures[0].reason.as_str()),
        (sneaky.message_id.as_str(), "fields_mismatch")
    );
    assert_eq!(failures[0].counterparty, "harbor");
    let got = inbox(&metro, "lee").await;
    assert!(got.contains_key(&first.message_id), "the honest copy is shown");
    assert!(!got.contains_key(&sneaky.message_id), "the rejected copy is shown to no one");
    // The sender is told: a notice queued for harbor, `rejected`, with the reason.
    let notices = sqlx::query("SELECT payload FROM outbox WHERE org = 'harbor' AND item_kind = 'sender_notice'")
        .fetch_all(&pool)
        .await
        .unwrap();
    let rejected: Vec<SenderNotice> = notices
        .iter()
        .filter_map(|r| match Item::decode(r.get::<Vec<u8>, _>(0).as_slice()).ok()?.body? {
            item::Body::SenderNotice(n) if n.kind == sender_notice::Kind::Rejected as i32 => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].reason.starts_with("integrity: fields_mismatch: "), "{}", rejected[0].reason);
    metro.stop().await;
    net.stop().await;
}

// ---------------------------------------------------------------------------------------------------
// A malicious gateway

/// The queued deliveries for `org`, as the gateway stores them: (item id, item).
async fn queued_items(pool: &sqlx::AnyPool, org: &str) -> Vec<(String, Item)> {
    let rows = sqlx::query("SELECT item_id, payload FROM outbox WHERE org = $1 AND item_kind = 'delivery' AND state = 'pending' ORDER BY item_id")
        .bind(org)
        .fetch_all(pool)
        .await
        .unwrap();
    rows.iter().map(|r| (r.get::<String, _>(0), Item::decode(r.get::<Vec<u8>, _>(1).as_slice()).unwrap())).collect()
}

async fn store_payload(pool: &sqlx::AnyPool, item_id: &str, item: &Item) {
    sqlx::query("UPDATE outbox SET payload = $1 WHERE item_id = $2")
        .bind(item.encode_to_vec())
        .bind(item_id)
        .execute(pool)
        .await
        .unwrap();
}

/// A manifest's payload, read without checking its signature (the gateway holds it as bytes).
fn manifest_of(jws: &str) -> Manifest {
    let payload = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A compromised gateway holds the recipient's public key and the real manifest; it seals its own
/// values under the manifest's `aad` and swaps them in. The recipient's node refuses the copy (the
/// signed hash of `enc` and ciphertext no longer matches), shows it to no one, reports it, and the
/// sender's node records `rejected`. The same gateway queueing a second copy of a real delivery under
/// a new item id gets it shown once.
#[tokio::test]
async fn a_copy_resealed_by_the_gateway_is_rejected_reported_and_never_shown() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let mut resealed = referral(SHELTER, "housing", &subject, &consent);
    resealed.fields.insert("survivor_first_name".into(), text("Rosa (fictional)"));
    let resealed = send(&harbor, "casey", resealed).await.unwrap();
    let honest = send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.unwrap();
    let pool = net.gateway.store().pool().clone();

    let items = queued_items(&pool, SHELTER).await;
    assert_eq!(items.len(), 2);
    for (item_id, mut item) in items {
        let Some(item::Body::Delivery(d)) = &mut item.body else { panic!("a delivery") };
        if d.message_id == resealed.message_id {
            let copy = d.sealed.as_mut().unwrap();
            let m = manifest_of(&copy.manifest);
            let key = haven_tests::sender::keys(&net.link("harbor"), SystemClock.now_secs()).await.unwrap().0;
            let public = key[&OrgId::parse(SHELTER).unwrap()].key_bytes().unwrap();
            let forged =
                SealedFields { fields: HashMap::from([("survivor_first_name".into(), text("Someone Else (forged)"))]) };
            let (enc, ct) = haven_trust::hpke::seal(
                &public,
                &sealed::info(&m.body.message_id),
                &m.body.canonical(),
                &forged.encode_to_vec(),
            )
            .unwrap();
            copy.enc = enc;
            copy.ciphertext = ct;
            store_payload(&pool, &item_id, &item).await;
        } else {
            // The same delivery queued again, under a new item id.
            item.item_id = Uuid::now_v7().to_string();
            sqlx::query("INSERT INTO outbox (item_id, org, item_kind, delivery_id, consent_id, sender, payload, queued_at_micros, expires_at_micros, state) SELECT $1, org, item_kind, delivery_id, consent_id, sender, $2, queued_at_micros, expires_at_micros, state FROM outbox WHERE item_id = $3")
                .bind(&item.item_id)
                .bind(item.encode_to_vec())
                .bind(&item_id)
                .execute(&pool)
                .await
                .unwrap();
        }
    }

    let maple = net.node(SHELTER, &[("sam", Role::Caseworker)]).await;
    drained(&pool, SHELTER).await;
    let got = inbox(&maple, "sam").await;
    assert!(!got.contains_key(&resealed.message_id), "the re-sealed copy is shown to no one");
    assert_eq!(got.len(), 1, "the honest copy, once: {:?}", got.keys());
    assert!(got.contains_key(&honest.message_id));
    let failures = wait_for("the integrity report", BOUND, || async {
        let e = entries_of(&pool, "integrity_failure", SHELTER).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(failures.len(), 1, "the duplicate is not an integrity failure: {failures:?}");
    assert_eq!(
        (failures[0].object_id.as_str(), failures[0].reason.as_str()),
        (resealed.message_id.as_str(), "manifest_mismatch")
    );
    // The sender's node learns it: the recipient's status is `rejected`, with the reason.
    let view = wait_for("the sender's node to record the rejection", BOUND, || async {
        let v = harbor
            .client()
            .await
            .get_message(harbor.as_person("casey", GetMessageRequest { message_id: resealed.message_id.clone() }))
            .await
            .ok()?
            .into_inner();
        v.timeline.iter().any(|s| s.step == "rejected").then_some(v)
    })
    .await;
    let step = view.timeline.iter().find(|s| s.step == "rejected").unwrap();
    assert_eq!(step.counterparty, SHELTER);
    assert!(step.code.starts_with("integrity: manifest_mismatch"), "{}", step.code);
    maple.stop().await;
    harbor.stop().await;
    net.stop().await;
}

/// A gateway serving a key-log entry for the shelter that no organization signed: the sender's node
/// refuses the log (its witness raises the alarm) and seals nothing to that key; the shelter's copy
/// is refused as `no_sealed_copy`, so nothing goes to a key the gateway could hold.
#[tokio::test]
async fn a_forged_sealing_key_is_never_sealed_to() {
    let net = TestNet::start().await;
    // A statement for the shelter's name with a key the gateway made, signed by nobody it could be.
    let public = haven_trust::hpke::public_of(&[5u8; 32]).unwrap();
    let now = SystemClock.now_secs();
    let statement = haven_trust::sealing::SealingKeyStatement::publish(
        OrgId::parse(SHELTER).unwrap(),
        &public,
        now,
        now + 86_400,
        now,
    );
    let northstar = net.link("northstar");
    let jws = northstar.signer().sign_typed(haven_trust::sealing::STATEMENT_TYP, &statement).unwrap();
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    parts[2] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64]);
    net.append_to_key_log_behind_its_checks(&parts.join(".")).await;

    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let sent = send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.unwrap();
    let o = &sent.outcomes[0];
    assert_eq!(o.outcome, recipient_outcome::Outcome::Denied as i32, "{sent:?}");
    assert_eq!(o.decision.as_ref().unwrap().reason_code, "no_sealed_copy");
    assert!(harbor.state.witness.report().state.is_alarm(), "{:?}", harbor.state.witness.report());
    harbor.stop().await;
    net.stop().await;
}

/// Copies queued under the shelter's first key, then the key rotated and withdrawn while its node is
/// offline: the queued copies still open (the node keeps the retired key), and new ones go to the new
/// key.
#[tokio::test]
async fn copies_queued_under_a_rotated_key_are_opened_after_rotation() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let before = send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.unwrap();

    // `haven-node keys rotate`, then `keys withdraw` of the old key, at the shelter's node database.
    let dir = net.dir.path().join("nodes").join(SHELTER);
    let store = haven_node::store::NodeStore::open(&dir.join("node.db").display().to_string()).await.unwrap();
    let link = net.link(SHELTER);
    let clock: haven_trust::clock::SharedClock = Arc::new(SystemClock);
    let folder = haven_node::sealing::KeyFolder::beside(&net.certs.org_signing_key(&OrgId::parse(SHELTER).unwrap()));
    let old = haven_node::sealing::list(&store).await.unwrap()[0].kid.clone();
    let (new, pending) = haven_node::sealing::make(&store, &link, &clock, &folder, "ada", false).await.unwrap();
    assert!(pending.is_none(), "{pending:?}");
    haven_node::sealing::withdraw(&store, &link, &clock, &old).await.unwrap();
    store.pool().close().await;

    let after = send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.unwrap();
    let pool = net.gateway.store().pool().clone();
    let kids: HashMap<String, String> = queued_items(&pool, SHELTER)
        .await
        .into_iter()
        .filter_map(|(_, i)| match i.body? {
            item::Body::Delivery(d) => {
                Some((d.message_id.clone(), manifest_of(&d.sealed?.manifest).body.recipient_kid))
            }
            _ => None,
        })
        .collect();
    assert_eq!(kids[&before.message_id], old);
    assert_eq!(kids[&after.message_id], new.kid, "after the rotation the sender seals to the new key");

    let maple = net.node(SHELTER, &[("sam", Role::Caseworker)]).await;
    drained(&pool, SHELTER).await;
    let got = inbox(&maple, "sam").await;
    for m in [&before.message_id, &after.message_id] {
        assert_eq!(got[m].fields.get("urgency"), Some(&text("high")), "{m} opened");
    }
    assert!(entries_of(&pool, "integrity_failure", SHELTER).await.is_empty());
    maple.stop().await;
    harbor.stop().await;
    net.stop().await;
}

/// A gateway showing the shelter another key log than the sender's (here the shelter's copy of an
/// entry differs) is caught as soon as a copy passes: the copy carries the sender's checkpoint, the
/// shelter's tree at that size has another root, the copy is rejected (`key_log_split`) and the
/// shelter's witness raises the alarm.
#[tokio::test]
async fn a_split_view_of_the_key_log_is_caught_when_a_copy_passes() {
    let net = TestNet::start().await;
    let maple = net.node(SHELTER, &[("sam", Role::Caseworker)]).await;
    maple.state.key_log.check_now().await;
    maple.stop().await;
    let node_db = net.dir.path().join("nodes").join(SHELTER).join("node.db");
    let store = haven_node::store::NodeStore::open(&node_db.display().to_string()).await.unwrap();
    let changed = sqlx::query("UPDATE key_log_entry SET registered_at_micros = registered_at_micros + 1 WHERE seq = 0")
        .execute(store.pool())
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1, "the shelter held the log");
    // The checkpoints it was shown are of that other log too.
    let shown: Vec<(i64, String)> =
        sqlx::query_as("SELECT tree_size, checkpoint FROM key_log_checkpoint").fetch_all(store.pool()).await.unwrap();
    for (size, json) in shown {
        let mut cp: haven_trust::audit::Checkpoint = serde_json::from_str(&json).unwrap();
        cp.root_hash = "00".repeat(32);
        sqlx::query("UPDATE key_log_checkpoint SET checkpoint = $1 WHERE tree_size = $2")
            .bind(serde_json::to_string(&cp).unwrap())
            .bind(size)
            .execute(store.pool())
            .await
            .unwrap();
    }
    store.pool().close().await;

    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let sent = send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.unwrap();
    let maple = net.node(SHELTER, &[("sam", Role::Caseworker)]).await;
    let pool = net.gateway.store().pool().clone();
    drained(&pool, SHELTER).await;
    let failures = wait_for("the integrity report", BOUND, || async {
        let e = entries_of(&pool, "integrity_failure", SHELTER).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(
        (failures[0].object_id.as_str(), failures[0].reason.as_str()),
        (sent.message_id.as_str(), "key_log_split")
    );
    assert!(inbox(&maple, "sam").await.is_empty());
    assert_eq!(maple.state.witness.report().state, haven_node::witness::WitnessState::Fork);
    maple.stop().await;
    harbor.stop().await;
    net.stop().await;
}

/// A copy sealed under one bundle, then the policy reloaded before its recipient's node (which never
/// had the first bundle) comes back: the node fetches the first bundle by version from the gateway,
/// checks its files hash to it, and opens the copy against its schema.
#[tokio::test]
async fn a_copy_sealed_under_an_earlier_bundle_is_checked_against_that_bundle() {
    let (policies, net) = TestNet::start_with_own_policies().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let sent = send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.unwrap();
    let first = sent.bundle_version.clone();

    let network = policies.path().join("network.toml");
    let mut changed = std::fs::read_to_string(&network).unwrap();
    changed.push_str("\n# Reloaded while a copy waited.\n");
    std::fs::write(&network, changed).unwrap();
    net.gateway.reload(None).await.unwrap();
    assert_ne!(net.gateway.bundle().version_id(), first, "a new bundle is in force");

    let maple = net.node(SHELTER, &[("sam", Role::Caseworker)]).await;
    drained(net.gateway.store().pool(), SHELTER).await;
    let got = inbox(&maple, "sam").await;
    assert_eq!(got[&sent.message_id].bundle_version, first);
    assert_eq!(got[&sent.message_id].fields.get("urgency"), Some(&text("high")));
    assert!(entries_of(net.gateway.store().pool(), "integrity_failure", SHELTER).await.is_empty());
    maple.stop().await;
    harbor.stop().await;
    net.stop().await;
}

/// Copies sealed under a bundle that is no longer in force: a new submission is refused whole
/// (`bundle_changed`, nothing stored) and the sender's node seals again under the new one, with the
/// same message id; a submission stored before the change, sent again, gets its first reply.
#[tokio::test]
async fn copies_sealed_under_a_replaced_bundle_are_refused_whole_and_sealed_again() {
    let (policies, net) = TestNet::start_with_own_policies().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let link = net.link("harbor");
    let casey = PersonId::parse("casey").unwrap();
    let mut stored = referral(SHELTER, "housing", &subject, &consent);
    stored.message_id = Uuid::now_v7().to_string();
    let (stored_request, _) = sender::seal(&link, &casey, Role::Caseworker, &stored).await.unwrap();
    let gw = || GatewayClient::new(link.channel());
    let first = gw().submit(link.request(&casey, Role::Caseworker, stored_request.clone()).unwrap()).await.unwrap();
    let mut fresh = referral(SHELTER, "housing", &subject, &consent);
    fresh.message_id = Uuid::now_v7().to_string();
    let (fresh_request, _) = sender::seal(&link, &casey, Role::Caseworker, &fresh).await.unwrap();

    let network = policies.path().join("network.toml");
    let mut changed = std::fs::read_to_string(&network).unwrap();
    changed.push_str("\n# A new bundle.\n");
    std::fs::write(&network, changed).unwrap();
    net.gateway.reload(None).await.unwrap();

    let err = gw().submit(link.request(&casey, Role::Caseworker, fresh_request).unwrap()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("bundle_changed: "), "{err:?}");
    let kept: i64 = sqlx::query("SELECT COUNT(*) FROM messages WHERE message_id = $1")
        .bind(&fresh.message_id)
        .fetch_one(net.gateway.store().pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0, "nothing stored");
    let again =
        gw().submit(link.request(&casey, Role::Caseworker, stored_request).unwrap()).await.unwrap().into_inner();
    assert!(again.replayed, "a retry of what was stored before the change is answered, not refused");
    assert_eq!(again.outcomes, first.into_inner().outcomes);

    // The node: its kept bundle is the old one; the gateway's refusal makes it fetch the new one and
    // seal again, and the send goes through.
    let sent = send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.unwrap();
    assert_eq!(sent.state, "submitted", "{sent:?}");
    assert_eq!(sent.bundle_version, net.gateway.bundle().version_id());
    assert_eq!(sent.outcomes[0].outcome, recipient_outcome::Outcome::Queued as i32);
    harbor.stop().await;
    net.stop().await;
}

/// A gateway that serves a policy the audit trail does not record as put in force is not decided on:
/// files changed under the version in force fail their hash, and a bundle under its own version with
/// no `policy_reloaded` entry for it fails the audit check. The sender's node seals nothing on either.
#[tokio::test]
async fn a_gateway_serving_a_policy_the_audit_trail_does_not_record_is_not_decided_on() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let pool = net.gateway.store().pool().clone();
    let version = net.gateway.bundle().version_id().to_owned();
    let widened = |files: &mut std::collections::BTreeMap<String, String>| {
        let rules = files.keys().find(|k| k.starts_with("rules/")).unwrap().clone();
        files.get_mut(&rules).unwrap().push_str("\n# widened behind the audit trail's back\n");
    };

    // 1. Other files under the version in force (what a gateway whose database was edited serves).
    let json: String = sqlx::query("SELECT files FROM policy_bundle WHERE version = $1")
        .bind(&version)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    let mut files: std::collections::BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
    widened(&mut files);
    sqlx::query("UPDATE policy_bundle SET files = $1 WHERE version = $2")
        .bind(serde_json::to_string(&files).unwrap())
        .bind(&version)
        .execute(&pool)
        .await
        .unwrap();
    let err = send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("this node does not decide on them"), "{err:?}");

    // 2. A bundle under its own version, with no audit entry that put it in force.
    let dir = tempfile::tempdir().unwrap();
    let list: Vec<(String, String)> = files.into_iter().collect();
    haven_sharing::policy::Bundle::write_files(&list, dir.path()).unwrap();
    let other = haven_sharing::policy::Bundle::load(dir.path(), None).unwrap();
    let other_files: std::collections::BTreeMap<&str, &str> =
        list.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    sqlx::query("INSERT INTO policy_bundle (version, files, in_force_seq, in_force_at_micros) VALUES ($1, $2, 0, 0)")
        .bind(other.version_id())
        .bind(serde_json::to_string(&other_files).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    let s = &harbor.state;
    let err = s.bundles.by_version(&s.store, &s.link, other.version_id()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("without proof that the audit trail records it as put in force"), "{err:?}");
    assert!(err.message().contains("is `gateway_started` (ok) for bundle"), "{err:?}");
    harbor.stop().await;
    net.stop().await;
}

/// A rollback of the policy: a reload back to earlier files is a new `policy_reloaded` entry, and the
/// sender's node decides on it; a gateway that serves an earlier bundle as in force under the audit
/// entry that first put it in force, after this node accepted one put in force later, rolls the policy
/// back without recording it, and the node refuses to decide on it.
#[tokio::test]
async fn a_rollback_the_audit_trail_does_not_record_is_not_decided_on() {
    let (policies, net) = TestNet::start_with_own_policies().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let pool = net.gateway.store().pool().clone();
    let in_force_seq = |version: String| {
        let pool = pool.clone();
        async move {
            let seq: i64 = sqlx::query_scalar("SELECT in_force_seq FROM policy_bundle WHERE version = $1")
                .bind(version)
                .fetch_one(&pool)
                .await
                .unwrap();
            seq
        }
    };
    let first = net.gateway.bundle().version_id().to_owned();
    let first_seq = in_force_seq(first.clone()).await;
    send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent))
        .await
        .expect("sent under the first bundle");

    // A second bundle, put in force by a recorded reload; the node's next send fetches it.
    let rules = policies.path().join("rules/referrals.toml");
    let original = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, format!("{original}\n# the second bundle\n")).unwrap();
    let (_, second) = net.gateway.reload(None).await.expect("reload");
    assert_ne!(second, first);
    send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.expect("sent under the second");

    // Back to the first files: the trail records it, so the node decides on it again.
    std::fs::write(&rules, &original).unwrap();
    let (_, again) = net.gateway.reload(None).await.expect("reload");
    assert_eq!(again, first, "the same files are the same version");
    let recorded = in_force_seq(first.clone()).await;
    assert!(recorded > first_seq, "put in force again by a later entry ({recorded} after {first_seq})");
    send(&harbor, "casey", referral(SHELTER, "housing", &subject, &consent)).await.expect("a recorded rollback");

    // The gateway now claims the first bundle's in force under the entry that first put it in force.
    sqlx::query("UPDATE policy_bundle SET in_force_seq = $1 WHERE version = $2")
        .bind(first_seq)
        .bind(&first)
        .execute(&pool)
        .await
        .unwrap();
    let s = &harbor.state;
    let err = s.bundles.refresh(&s.store, &s.link).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("a rollback the audit trail does not record"), "{err:?}");
    assert!(err.message().contains(&format!("put in force at audit entry {first_seq},")), "{err:?}");
    harbor.stop().await;
    net.stop().await;
}

/// Bad input to the sealed contract, each refused with its reason and nothing stored: values sent to
/// the gateway, a copy for a recipient the envelope does not name, two copies for one recipient, an
/// unknown bundle version, and integrity reports from a person, with an unknown reason, a malformed id,
/// or about a message the reporter never received.
#[tokio::test]
async fn bad_sealed_input_is_refused_with_its_reason() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent, subject) = housing_consent(&harbor).await;
    let link = net.link("harbor");
    let casey = PersonId::parse("casey").unwrap();
    let gw = || GatewayClient::new(link.channel());
    let mut env = referral(SHELTER, "housing", &subject, &consent);
    env.message_id = Uuid::now_v7().to_string();
    let (sealed, _) = sender::seal(&link, &casey, Role::Caseworker, &env).await.unwrap();
    let refused = |r: Result<tonic::Response<SubmitResponse>, tonic::Status>| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        e.message().to_owned()
    };

    let with_values = SubmitRequest { envelope: Some(env.clone()), ..sealed.clone() };
    let m = refused(gw().submit(link.request(&casey, Role::Caseworker, with_values).unwrap()).await);
    assert!(m.starts_with("the gateway takes no field values"), "{m}");
    let decide = gw()
        .decide(link.request(&casey, Role::Caseworker, DecideRequest { envelope: Some(env.clone()) }).unwrap())
        .await;
    assert_eq!(decide.unwrap_err().code(), tonic::Code::InvalidArgument);

    let mut elsewhere = sealed.clone();
    elsewhere.copies[0].recipient = "lantern-legal".into();
    let m = refused(gw().submit(link.request(&casey, Role::Caseworker, elsewhere).unwrap()).await);
    assert!(m.contains("which the envelope does not name"), "{m}");
    let mut twice = sealed.clone();
    twice.copies.push(twice.copies[0].clone());
    let m = refused(gw().submit(link.request(&casey, Role::Caseworker, twice).unwrap()).await);
    assert!(m.contains("two sealed copies for `maple-house`"), "{m}");
    let stored: i64 = sqlx::query("SELECT COUNT(*) FROM messages WHERE message_id = $1")
        .bind(&env.message_id)
        .fetch_one(net.gateway.store().pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "nothing stored");

    let node = PersonId::node();
    let unknown = PolicyBundleRequest { version: format!("sha256:{}", "0".repeat(64)) };
    let e = gw().policy_bundle(link.request(&node, Role::Node, unknown).unwrap()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    let report = |reason: &str, message_id: &str| ReportIntegrityFailureRequest {
        item_id: Uuid::now_v7().to_string(),
        message_id: message_id.into(),
        sender: "harbor".into(),
        reason: reason.into(),
        detail: "x".repeat(10_000),
    };
    let maple = net.link(SHELTER);
    let integrity = |who: &PersonId, role: Role, r: ReportIntegrityFailureRequest| {
        let req = maple.request(who, role, r).unwrap();
        let mut client = GatewayClient::new(maple.channel());
        async move { client.report_integrity_failure(req).await }
    };
    let sam = PersonId::parse("sam").unwrap();
    let e = integrity(&sam, Role::Caseworker, report("fields_mismatch", &env.message_id)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = integrity(&node, Role::Node, report("looked_odd", &env.message_id)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = integrity(&node, Role::Node, report("fields_mismatch", "not-a-uuid")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = integrity(&node, Role::Node, report("fields_mismatch", &env.message_id)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "never received: {e:?}");
    assert!(entries_of(net.gateway.store().pool(), "integrity_failure", SHELTER).await.is_empty());
    harbor.stop().await;
    net.stop().await;
}
