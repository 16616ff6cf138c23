//! How fast the audit log is: durable appends, offline verification and proofs.
//!
//! `cargo bench -p haven-gateway --bench audit` prints:
//!
//! - **durable appends per second** on SQLite (a temporary file, WAL, `synchronous=FULL`) and on
//!   PostgreSQL (`HAVEN_BENCH_PG`, default `postgres://postgres@127.0.0.1:5432/test`; the bench creates
//!   and drops its own database) at concurrency 1, 16 and 64, for three ways of writing one row per
//!   caller, all answered only after their commit is durable:
//!   - `plain insert`: the baseline, one ordinary row per transaction into the same database;
//!   - `append, own tx`: one audit entry per transaction through `audit::append`;
//!   - `group commit`: `AuditLog::record`, concurrent callers sharing a transaction and its fsync
//!     (units of the gateway's shared committer, `commit::Committer`);
//!
//!   with the background integrator running, as in a real gateway;
//! - the **offline verify rate** of a full export of 1,000,000 entries held in memory;
//! - the **proof time** at 1,000,000 entries: inclusion and consistency proofs read from the stored
//!   subtrees, on SQLite and PostgreSQL.
//!
//! `HAVEN_BENCH_QUICK=1` shortens every phase (for a smoke run); `HAVEN_BENCH_SKIP_PG=1` skips
//! PostgreSQL; `HAVEN_BENCH_VERIFY_ONLY=1` stops after the verify rate (for profiling the verifier).

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use haven_gateway::audit::{self, AuditLog, Cadence};
use haven_gateway::commit::Committer;
use haven_gateway::store::Store;
use haven_trust::audit::{AuditEntry, CheckpointSigner};
use haven_trust::clock::{SharedClock, SystemClock};
use haven_trust::export::{self, FORMAT, Header, Independent, Kind, Line};
use haven_trust::merkle::{self, CompactTree};
use sqlx::Connection;

fn quick() -> bool {
    std::env::var_os("HAVEN_BENCH_QUICK").is_some()
}

/// A throwaway gateway signing key and its certificate.
fn signer() -> (CheckpointSigner, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert =
        rcgen::CertificateParams::new(vec!["gateway.bench".into()]).expect("params").self_signed(&key).expect("cert");
    let der = cert.der().to_vec();
    (CheckpointSigner::new(&key.serialize_pem(), &der).expect("signer"), der)
}

/// An entry the size and shape of a submission's.
fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        seq: i,
        time_micros: 1_750_000_000_000_000 + i as i64,
        actor_org: "harbor".into(),
        actor_person: "casey".into(),
        actor_role: "caseworker".into(),
        action: "submitted".into(),
        object_id: format!("0197a0c4-1111-7000-8000-{i:012x}"),
        counterparty: "maple-house".into(),
        subject: format!("subj-{:032x}", i % 5000),
        purpose: "housing".into(),
        consent_id: format!("c-{:08x}", i % 5000),
        rule_ids: vec!["ngo-to-shelter-housing".into()],
        bundle_version: "sha256:4f2a9c0e1b7d3a5c8e6f0b2d4a6c8e0f2b4d6a8c0e2f4b6d8a0c2e4f6b8d0a2c".into(),
        decision: "allow".into(),
        reason: String::new(),
        released_fields: vec!["first_name".into(), "needs".into(), "language".into()],
        withheld_fields: vec!["date_of_birth".into()],
        outcome: "queued".into(),
        correlation_id: format!("0197a0c4-2222-7000-8000-{i:012x}"),
        source_node: "harbor".into(),
        counterparty_subject: format!("r_{:032x}", i % 5000),
        encoding_version: Default::default(),
    }
}

fn verify_rate(n: u64) {
    let (signer, cert) = signer();
    let mut tree = CompactTree::new();
    let mut bytes = Vec::with_capacity(n as usize * 700);
    let header = Header {
        format: FORMAT.into(),
        encoding_version: haven_trust::audit::ENCODING_VERSION,
        kind: Kind::Full,
        tree_size: n,
        exported_at_micros: 1,
        exported_by_org: "audit-office".into(),
        exported_by_person: "ada".into(),
        exported_by_role: "auditor".into(),
        filter: Default::default(),
    };
    bytes.extend_from_slice(Line::Header(&header).to_json_line().as_bytes());
    let mut checkpoints = 0;
    for i in 0..n {
        let e = entry(i);
        let leaf = e.leaf_hash();
        tree.push(leaf).expect("push");
        let line = Line::Entry {
            entry: &e,
            leaf: hex::encode(leaf),
            subject_commitment: None,
            counterparty_subject_commitment: None,
            proof: None,
        };
        bytes.extend_from_slice(line.to_json_line().as_bytes());
        if (i + 1) % 1000 == 0 || i + 1 == n {
            let cp = signer.sign(i + 1, &tree.root(), 1);
            bytes.extend_from_slice(Line::Checkpoint(&cp).to_json_line().as_bytes());
            checkpoints += 1;
        }
    }
    bytes.extend_from_slice(Line::End { entries: n, checkpoints }.to_json_line().as_bytes());
    let mut best = f64::MAX;
    let repeat = if std::env::var_os("HAVEN_BENCH_VERIFY_ONLY").is_some() { 10 } else { 3 };
    for _ in 0..repeat {
        let start = Instant::now();
        let s = export::verify("bench", Cursor::new(&bytes), &cert, &Independent::default()).expect("verifies");
        assert_eq!(s.entries, n);
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "offline verify: {n} entries ({} MiB, {checkpoints} signed checkpoints) in {:.3} s = {:.0} entries/s (best of {repeat})",
        bytes.len() >> 20,
        best,
        n as f64 / best
    );
}

/// Runs `op` from `concurrency` tasks for `secs`, returning operations per second.
async fn rate<F, Fut>(concurrency: usize, secs: f64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    op(next.fetch_add(1, Ordering::Relaxed)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    next.load(Ordering::Relaxed).saturating_sub(0) as f64 / start.elapsed().as_secs_f64()
}

async fn appends(name: &str, store: Store) {
    let (signer, _) = signer();
    let clock: SharedClock = Arc::new(SystemClock);
    let log = AuditLog::new(store.clone(), Committer::start(store.clone()), signer, clock, Cadence::default());
    let integrator = log.spawn();
    sqlx::query("CREATE TABLE bench_plain (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .expect("baseline table");
    let plain_ids = Arc::new(AtomicU64::new(0));
    let secs = if quick() { 0.5 } else { 3.0 };
    println!("{name}: durable writes/s (each caller answered after its commit is durable), {secs} s per cell");
    println!("  {:<16} {:>12} {:>12} {:>12}", "", "c=1", "c=16", "c=64");
    let mut rows: Vec<(&str, Vec<f64>)> =
        vec![("plain insert", vec![]), ("append, own tx", vec![]), ("group commit", vec![])];
    for c in [1usize, 16, 64] {
        let (s, ids) = (store.clone(), plain_ids.clone());
        rows[0].1.push(
            rate(c, secs, move |_| {
                let (s, ids) = (s.clone(), ids.clone());
                async move {
                    let mut tx = s.begin().await.expect("begin");
                    let id = ids.fetch_add(1, Ordering::Relaxed) as i64;
                    sqlx::query("INSERT INTO bench_plain (id, payload) VALUES ($1, $2)")
                        .bind(id)
                        .bind(format!("{:?}", entry(id as u64)))
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                    tx.commit().await.expect("commit");
                }
            })
            .await,
        );
        let s = store.clone();
        rows[1].1.push(
            rate(c, secs, move |i| {
                let s = s.clone();
                async move {
                    let mut tx = s.begin().await.expect("begin");
                    audit::append(&mut tx, &mut [(entry(i), String::new())]).await.expect("append");
                    tx.commit().await.expect("commit");
                }
            })
            .await,
        );
        let l = log.clone();
        rows[2].1.push(
            rate(c, secs, move |i| {
                let l = l.clone();
                async move {
                    l.record(vec![(entry(i), String::new())]).await.expect("record");
                }
            })
            .await,
        );
    }
    for (label, r) in &rows {
        println!("  {:<16} {:>12.0} {:>12.0} {:>12.0}", label, r[0], r[1], r[2]);
    }
    let size = log.integrate().await.expect("integrate");
    println!("  (integrated {size} entries; the integrator ran throughout)");
    integrator.abort();
}

async fn proofs(name: &str, store: Store, n: u64) {
    let (signer, _) = signer();
    let commits = Committer::start(store.clone());
    let log = AuditLog::new(store.clone(), commits, signer, Arc::new(SystemClock), Cadence::default());
    let have = audit::size(store.pool()).await.expect("size");
    let fill = Instant::now();
    let mut i = have;
    while i < n {
        let k = (n - i).min(10_000);
        let mut batch: Vec<(AuditEntry, String)> = (i..i + k).map(|j| (entry(j), String::new())).collect();
        let mut tx = store.begin().await.expect("begin");
        audit::append(&mut tx, &mut batch).await.expect("append");
        tx.commit().await.expect("commit");
        i += k;
    }
    let filled = fill.elapsed().as_secs_f64();
    let integ = Instant::now();
    let size = log.integrate().await.expect("integrate");
    let integrated = integ.elapsed().as_secs_f64();
    let cp = store.settle(log.covering_checkpoint().await.expect("checkpoint")).await.expect("settled");
    let root = cp.root().expect("root");
    let samples = if quick() { 50 } else { 1000 };
    let mut incl = Vec::with_capacity(samples);
    let mut cons = Vec::with_capacity(samples);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seq = x % size;
        let t = Instant::now();
        let read = log.inclusion_proof(seq, size).await.expect("inclusion");
        let (proof, leaf) = store.settle(read).await.expect("settled");
        incl.push(t.elapsed().as_secs_f64() * 1e6);
        merkle::verify_inclusion(&leaf, seq, size, &proof, &root).expect("verifies");
        let first = seq + 1;
        let t = Instant::now();
        let read = log.consistency_proof(first, size).await.expect("consistency");
        let proof = store.settle(read).await.expect("settled");
        cons.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(proof.len() <= 2 * 64);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let (i50, i99) = stats(&mut incl);
    let (c50, c99) = stats(&mut cons);
    println!(
        "{name}: proofs at {size} entries (filled in {filled:.1} s, integrated in {integrated:.1} s = {:.0} entries/s): inclusion p50 {i50:.0} µs p99 {i99:.0} µs; consistency p50 {c50:.0} µs p99 {c99:.0} µs ({samples} random samples)",
        (size - have) as f64 / integrated
    );
}

async fn sqlite(dir: &std::path::Path, file: &str) -> Store {
    Store::open(&dir.join(file).display().to_string()).await.expect("sqlite store")
}

/// A fresh PostgreSQL database for the bench, or why there is none.
async fn postgres() -> Result<(String, String, String), String> {
    let admin = std::env::var("HAVEN_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("haven_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.map_err(|e| format!("{admin}: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin.clone());
    Ok((format!("{base}/{name}"), admin, name))
}

async fn drop_pg(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await;
    }
}

fn main() {
    let n = if quick() { 20_000 } else { 1_000_000 };
    println!("audit benchmark on {} cores", std::thread::available_parallelism().map_or(1, |n| n.get()));
    verify_rate(n);
    if std::env::var_os("HAVEN_BENCH_VERIFY_ONLY").is_some() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        appends("SQLite", sqlite(dir.path(), "appends.db").await).await;
        proofs("SQLite", sqlite(dir.path(), "proofs.db").await, n).await;
        if std::env::var_os("HAVEN_BENCH_SKIP_PG").is_some() {
            return;
        }
        match postgres().await {
            Err(e) => println!("PostgreSQL: skipped ({e})"),
            Ok((url, admin, name)) => {
                let store = Store::open(&url).await.expect("postgres store");
                appends("PostgreSQL", store.clone()).await;
                store.close().await;
                drop_pg(&admin, &name).await;
                if let Ok((url, admin, name)) = postgres().await {
                    let store = Store::open(&url).await.expect("postgres store");
                    proofs("PostgreSQL", store.clone(), n).await;
                    store.close().await;
                    drop_pg(&admin, &name).await;
                }
            }
        }
    });
}
