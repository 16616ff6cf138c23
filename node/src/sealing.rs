//! The organization's sealing keys, made and kept at its node (`haven-node keys`).
//!
//! A key pair is X25519. The private half is written to its own file, mode 0600, in the folder beside
//! the organization's signing key (`<certs>/orgs/<org>/sealing/`), and never leaves the node. The public half
//! is published in a sealing-key statement signed with the organization's signing key
//! (`haven_trust::sealing`), kept in the node's database (table `sealing_key`) and registered with the
//! gateway's key log. A statement the gateway could not take yet stays pending, and the node registers
//! it on its next key-log round; the statement's bytes never change, so a retry is the same statement.

use std::path::{Path, PathBuf};

use haven_proto::v1::RegisterSealingKeyRequest;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_trust::clock::SharedClock;
use haven_trust::ids::{PersonId, Role};
use haven_trust::sealing::{self, STATEMENT_TYP, SealingKeyStatement};
use rand::RngCore;
use sqlx::Row;
use tonic::Status;

use crate::link::GatewayLink;
use crate::store::NodeStore;

/// How long a new key may be sealed to: a year.
pub const KEY_LIFETIME_SECS: i64 = 365 * 86_400;

/// Where the node keeps its sealing keys' private halves.
#[derive(Debug, Clone)]
pub struct KeyFolder(pub PathBuf);

impl KeyFolder {
    /// The folder beside the organization's signing key.
    pub fn beside(signing_key: &Path) -> KeyFolder {
        KeyFolder(signing_key.parent().unwrap_or(Path::new(".")).join("sealing"))
    }

    /// The private key files in the folder (none when it does not exist yet).
    pub fn files(&self) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(&self.0) else { return Vec::new() };
        dir.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "key")).collect()
    }

    fn file_of(&self, kid: &str) -> PathBuf {
        self.0.join(format!("{}.key", kid.replace(':', "-")))
    }

    /// Writes a private key to its own file, mode 0600 (refusing to overwrite one).
    fn write(&self, kid: &str, secret: &[u8; 32]) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.0)?;
        let path = self.file_of(kid);
        if !haven_trust::owner_only::create(&path)? {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        std::fs::write(&path, format!("{}\n", hex::encode(secret)))?;
        Ok(path)
    }

    /// Destroys a private key: its file is overwritten, then removed. A key already gone is no error.
    fn destroy(&self, kid: &str) -> std::io::Result<()> {
        let path = self.file_of(kid);
        match std::fs::metadata(&path) {
            Ok(_) => {
                std::fs::write(&path, "0".repeat(65))?;
                std::fs::remove_file(&path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The private key `kid`, if this node holds it: `None` for a key id that is not one this node
    /// could have made (the id comes from a sender's manifest, so it never names a path) or whose file
    /// does not exist; `Err` for a file that exists but cannot be read now.
    pub fn read_if_held(&self, kid: &str) -> Result<Option<[u8; 32]>, String> {
        let well_formed = kid
            .strip_prefix("x25519:")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if !well_formed {
            return Ok(None);
        }
        match std::fs::metadata(self.file_of(kid)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => self.read(kid).map(Some),
        }
    }

    /// Reads a private key back (for unsealing).
    pub fn read(&self, kid: &str) -> Result<[u8; 32], String> {
        let path = self.file_of(kid);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes = hex::decode(text.trim()).map_err(|e| format!("{}: not hex: {e}", path.display()))?;
        bytes.try_into().map_err(|_| format!("{}: not a 32-byte key", path.display()))
    }
}

/// One of the organization's keys, as the node keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealingKey {
    pub kid: String,
    pub not_before: i64,
    pub not_after: i64,
    pub created_at_micros: i64,
    pub created_by: String,
    /// The key-log position of its publication, once the gateway took it.
    pub published_seq: Option<i64>,
    /// When it was withdrawn, and the key-log position of the withdrawal once the gateway took it.
    pub withdrawn_at_micros: Option<i64>,
    pub withdrawn_seq: Option<i64>,
    /// When its private half was destroyed (its window and the longest delivery TTL over).
    pub destroyed_at_micros: Option<i64>,
}

impl SealingKey {
    /// `pending`, `published`, `withdrawing` (withdrawn here, not yet in the log), `withdrawn` or
    /// `destroyed`.
    pub fn state(&self) -> &'static str {
        if self.destroyed_at_micros.is_some() {
            return "destroyed";
        }
        match (self.published_seq, self.withdrawn_at_micros, self.withdrawn_seq) {
            (_, Some(_), Some(_)) => "withdrawn",
            (_, Some(_), None) => "withdrawing",
            (Some(_), None, _) => "published",
            (None, None, _) => "pending",
        }
    }
}

fn db(e: sqlx::Error) -> Status {
    Status::unavailable(format!("node database: {e}"))
}

/// Every key, newest first.
pub async fn list(store: &NodeStore) -> Result<Vec<SealingKey>, sqlx::Error> {
    let rows = sqlx::query("SELECT kid, not_before, not_after, created_at_micros, created_by, published_seq, withdrawn_at_micros, withdrawn_seq, destroyed_at_micros FROM sealing_key ORDER BY created_at_micros DESC, kid")
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(SealingKey {
                kid: r.try_get(0)?,
                not_before: r.try_get(1)?,
                not_after: r.try_get(2)?,
                created_at_micros: r.try_get(3)?,
                created_by: r.try_get(4)?,
                published_seq: r.try_get(5)?,
                withdrawn_at_micros: r.try_get(6)?,
                withdrawn_seq: r.try_get(7)?,
                destroyed_at_micros: r.try_get(8)?,
            })
        })
        .collect()
}

/// Whether the key log already publishes keys of this organization that this node (which has none)
/// did not make: another node of the organization, or this one restored without its database. A first
/// key is then not made: senders would seal to it, and the other node could not open their copies. The
/// organization's own witness raises `foreign_sealing_key` for keys it did not make. A gateway that
/// cannot be asked says nothing either way.
pub async fn keyed_elsewhere(link: &GatewayLink) -> bool {
    let own = link.signer().org().clone();
    let mut from = 0;
    loop {
        let Ok(request) = link.request(
            &haven_trust::ids::PersonId::node(),
            haven_trust::ids::Role::Node,
            haven_proto::v1::KeyLogRequest { from_seq: from, limit: 0 },
        ) else {
            return false;
        };
        let Ok(page) = haven_proto::v1::gateway_client::GatewayClient::new(link.channel()).key_log(request).await
        else {
            return false;
        };
        let page = page.into_inner();
        if page.entries.iter().filter_map(|e| sealing::verified_payload(&e.statement)).any(|s| s.org == own) {
            tracing::warn!(
                %own,
                "the key log already publishes sealing keys of this organization that this node did not make (another node of the organization runs, or this one was restored without its database): no first key is made; an admin makes one with `haven-node keys init` once this is understood"
            );
            return true;
        }
        match page.entries.last().and_then(|last| last.seq.checked_add(1)) {
            Some(next) if next > from => from = next,
            _ => return false,
        }
    }
}

/// How long before its newest key expires a node makes the next one.
pub const ROTATE_BEFORE_SECS: i64 = 30 * 86_400;

/// Makes a new key when every key the organization has not withdrawn ends within
/// [`ROTATE_BEFORE_SECS`], so that senders always have a key to seal to. An organization that never
/// made a key, or withdrew all of them, is left to its admin. Returns the new key, if one was made.
pub async fn rotate_if_due(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    folder: &KeyFolder,
) -> Result<Option<SealingKey>, Status> {
    let now = clock.now_micros().div_euclid(1_000_000);
    let keys = list(store).await.map_err(db)?;
    let kept: Vec<&SealingKey> = keys.iter().filter(|k| k.withdrawn_at_micros.is_none()).collect();
    if kept.is_empty() || kept.iter().any(|k| k.not_after > now + ROTATE_BEFORE_SECS) {
        return Ok(None);
    }
    let (key, _) = make(store, link, clock, folder, "node", false).await?;
    tracing::info!(key = %key.kid, "the organization's sealing keys end within 30 days: a new one is made and published");
    Ok(Some(key))
}

/// The longest delivery TTL this node may still receive copies under, in seconds: the longest of the
/// bundles it kept, or the network ceiling (3660 days) when it kept none.
async fn longest_ttl_secs(store: &NodeStore) -> Result<i64, sqlx::Error> {
    let days: Option<i64> =
        sqlx::query_scalar("SELECT MAX(delivery_ttl_days) FROM policy_bundle").fetch_one(store.pool()).await?;
    Ok(days.unwrap_or(3660).saturating_mul(86_400))
}

/// Destroys the private half of every key whose window ended longer ago than the longest delivery TTL
/// (whatever the gateway says: a copy sealed to the key within its window has expired by then), and
/// records when. Returns the keys destroyed.
pub async fn destroy_retired(
    store: &NodeStore,
    folder: &KeyFolder,
    clock: &SharedClock,
) -> Result<Vec<String>, sqlx::Error> {
    let ttl = longest_ttl_secs(store).await?;
    let now = clock.now_micros();
    let cutoff = now.div_euclid(1_000_000).saturating_sub(ttl);
    let kids: Vec<String> =
        sqlx::query_scalar("SELECT kid FROM sealing_key WHERE destroyed_at_micros IS NULL AND not_after <= $1")
            .bind(cutoff)
            .fetch_all(store.pool())
            .await?;
    let mut destroyed = Vec::new();
    for kid in kids {
        if let Err(e) = folder.destroy(&kid) {
            tracing::error!(key = %kid, error = %e, "a retired sealing key could not be destroyed; it is tried again at the next round");
            continue;
        }
        sqlx::query("UPDATE sealing_key SET destroyed_at_micros = $1 WHERE kid = $2")
            .bind(now)
            .bind(&kid)
            .execute(store.pool())
            .await?;
        tracing::info!(key = %kid, "a retired sealing key was destroyed: its window ended and the longest delivery TTL has passed since");
        destroyed.push(kid);
    }
    Ok(destroyed)
}

/// The SHA-256 (hex) of every statement this node made: what its key-log witness recognizes as its
/// own.
pub async fn own_statements(store: &NodeStore) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT statement_sha256 FROM sealing_key UNION SELECT withdrawal_sha256 FROM sealing_key WHERE withdrawal_sha256 IS NOT NULL")
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// Makes a new key pair for `who`'s organization: the private half to its 0600 file, the statement
/// publishing the public half signed and kept, then registered with the gateway (or left pending if
/// the gateway cannot take it now). `only_if_none` refuses when the organization already has a key
/// that is not withdrawn (`keys init`).
pub async fn make(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    folder: &KeyFolder,
    created_by: &str,
    only_if_none: bool,
) -> Result<(SealingKey, Option<Status>), Status> {
    let now_secs = clock.now_micros().div_euclid(1_000_000);
    let live = |k: &SealingKey| k.withdrawn_at_micros.is_none() && k.not_after > now_secs;
    if only_if_none && list(store).await.map_err(db)?.iter().any(live) {
        return Err(Status::already_exists(
            "this organization already has a sealing key; `haven-node keys rotate` makes a new one",
        ));
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    let now_micros = clock.now_micros();
    let now = now_micros.div_euclid(1_000_000);
    let statement =
        SealingKeyStatement::publish(link.signer().org().clone(), &public, now, now + KEY_LIFETIME_SECS, now);
    let jws = link
        .signer()
        .sign_typed(STATEMENT_TYP, &statement)
        .map_err(|e| Status::internal(format!("cannot sign the statement: {e}")))?;
    let path = folder.write(&statement.kid, &secret).map_err(|e| {
        Status::failed_precondition(format!("cannot write the private key in {}: {e}", folder.0.display()))
    })?;
    sqlx::query("INSERT INTO sealing_key (kid, public_key, not_before, not_after, created_at_micros, created_by, statement, statement_sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&statement.kid)
        .bind(&statement.public_key)
        .bind(statement.not_before)
        .bind(statement.not_after)
        .bind(now_micros)
        .bind(created_by)
        .bind(&jws)
        .bind(hex::encode(sealing::statement_sha256(&jws)))
        .execute(store.pool())
        .await
        .map_err(|e| {
            // Nothing refers to the file yet: take it back, so no key exists that no row names.
            let _ = std::fs::remove_file(&path);
            db(e)
        })?;
    tracing::info!(key = %statement.kid, "sealing key made");
    let not_registered = register_pending(store, link, clock).await.err();
    let key = list(store).await.map_err(db)?.into_iter().find(|k| k.kid == statement.kid);
    let key = key.ok_or_else(|| Status::internal("the new key was not stored"))?;
    Ok((key, not_registered))
}

/// Withdraws a key: the withdrawal statement is signed and kept, then registered with the gateway (or
/// left pending). The private half stays, so what was sealed to the key can still be opened.
pub async fn withdraw(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    kid: &str,
) -> Result<(SealingKey, Option<Status>), Status> {
    let row = sqlx::query("SELECT statement, withdrawn_at_micros FROM sealing_key WHERE kid = $1")
        .bind(kid)
        .fetch_optional(store.pool())
        .await
        .map_err(db)?;
    let Some(row) = row else {
        return Err(Status::not_found(format!(
            "this node has no sealing key `{}` (`haven-node keys list` shows its keys)",
            haven_trust::untrusted::shown(kid)
        )));
    };
    if row.try_get::<Option<i64>, _>(1).map_err(db)?.is_some() {
        return Err(Status::failed_precondition(format!("key {kid} is already withdrawn")));
    }
    let published: String = row.try_get(0).map_err(db)?;
    let statement = decode(&published)?;
    let now_micros = clock.now_micros();
    let withdrawal = SealingKeyStatement::withdrawal(&statement, now_micros.div_euclid(1_000_000));
    let jws = link
        .signer()
        .sign_typed(STATEMENT_TYP, &withdrawal)
        .map_err(|e| Status::internal(format!("cannot sign the withdrawal: {e}")))?;
    sqlx::query("UPDATE sealing_key SET withdrawal = $1, withdrawal_sha256 = $2, withdrawn_at_micros = $3 WHERE kid = $4 AND withdrawn_at_micros IS NULL")
        .bind(&jws)
        .bind(hex::encode(sealing::statement_sha256(&jws)))
        .bind(now_micros)
        .bind(kid)
        .execute(store.pool())
        .await
        .map_err(db)?;
    tracing::info!(key = %kid, "sealing key withdrawn");
    let not_registered = register_pending(store, link, clock).await.err();
    let key = list(store).await.map_err(db)?.into_iter().find(|k| k.kid == kid);
    Ok((key.ok_or_else(|| Status::internal("the withdrawn key is gone"))?, not_registered))
}

/// The payload of a statement this node signed (it came from the node's own database).
fn decode(jws: &str) -> Result<SealingKeyStatement, Status> {
    sealing::verified_payload(jws).ok_or_else(|| Status::internal("a statement in the node's database is not one"))
}

/// Marks as registered each statement of this node's that the log it verified holds (a registration
/// whose reply was lost).
pub async fn reconcile(store: &NodeStore) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sealing_key SET published_seq = (SELECT seq FROM key_log_entry WHERE statement_sha256 = sealing_key.statement_sha256) WHERE published_seq IS NULL")
        .execute(store.pool())
        .await?;
    sqlx::query("UPDATE sealing_key SET withdrawn_seq = (SELECT seq FROM key_log_entry WHERE statement_sha256 = sealing_key.withdrawal_sha256) WHERE withdrawn_seq IS NULL AND withdrawal_sha256 IS NOT NULL")
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Each statement the gateway said it took, with the position it named: (SHA-256 hex, seq).
pub async fn acknowledged(store: &NodeStore) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT statement_sha256, published_seq FROM sealing_key WHERE published_seq IS NOT NULL UNION ALL SELECT withdrawal_sha256, withdrawn_seq FROM sealing_key WHERE withdrawn_seq IS NOT NULL")
        .fetch_all(store.pool())
        .await
}

/// How old a pending statement may be before it is signed again: the gateway refuses an `issued_at`
/// more than [`sealing::ISSUED_AT_SKEW_SECS`] from its clock.
const RESIGN_AFTER_SECS: i64 = sealing::ISSUED_AT_SKEW_SECS / 2;

/// Registers every statement the gateway has not taken yet, publications before withdrawals, each on
/// its own (one refused does not hold up the rest). A statement that waited too long is signed again
/// with a fresh `issued_at` first (never one the log may hold: [`reconcile`] runs before, on every
/// round). Returns the first refusal.
pub async fn register_pending(store: &NodeStore, link: &GatewayLink, clock: &SharedClock) -> Result<usize, Status> {
    let rows = sqlx::query("SELECT kid, statement, 'publish', 0 FROM sealing_key WHERE published_seq IS NULL UNION ALL SELECT kid, withdrawal, 'withdraw', 1 FROM sealing_key WHERE withdrawal IS NOT NULL AND withdrawn_seq IS NULL ORDER BY 4, 1")
        .fetch_all(store.pool())
        .await
        .map_err(db)?;
    let (mut done, mut first_refusal) = (0, None);
    for r in rows {
        let (kid, jws, action): (String, String, String) =
            (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?, r.try_get(2).map_err(db)?);
        match register_one(store, link, clock, &kid, jws, &action).await {
            Ok(()) => done += 1,
            Err(s) => {
                first_refusal.get_or_insert(s);
            }
        }
    }
    match first_refusal {
        Some(s) => Err(s),
        None => Ok(done),
    }
}

async fn register_one(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    kid: &str,
    jws: String,
    action: &str,
) -> Result<(), Status> {
    let now = clock.now_micros().div_euclid(1_000_000);
    let mut jws = jws;
    let statement = decode(&jws)?;
    if now.saturating_sub(statement.issued_at) > RESIGN_AFTER_SECS {
        let fresh = SealingKeyStatement { issued_at: now, ..statement };
        jws = link
            .signer()
            .sign_typed(STATEMENT_TYP, &fresh)
            .map_err(|e| Status::internal(format!("cannot sign the statement again: {e}")))?;
        let sha = hex::encode(sealing::statement_sha256(&jws));
        let sql = if action == "publish" {
            "UPDATE sealing_key SET statement = $1, statement_sha256 = $2 WHERE kid = $3 AND published_seq IS NULL"
        } else {
            "UPDATE sealing_key SET withdrawal = $1, withdrawal_sha256 = $2 WHERE kid = $3 AND withdrawn_seq IS NULL"
        };
        sqlx::query(sql).bind(&jws).bind(&sha).bind(kid).execute(store.pool()).await.map_err(db)?;
    }
    let request = link.request(&PersonId::node(), Role::Node, RegisterSealingKeyRequest { statement: jws })?;
    let seq = GatewayClient::new(link.channel())
        .register_sealing_key(request)
        .await
        .map_err(|s| link.relay(s))?
        .into_inner()
        .seq;
    let sql = if action == "publish" {
        "UPDATE sealing_key SET published_seq = $1 WHERE kid = $2"
    } else {
        "UPDATE sealing_key SET withdrawn_seq = $1 WHERE kid = $2"
    };
    sqlx::query(sql).bind(i64::try_from(seq).unwrap_or(i64::MAX)).bind(kid).execute(store.pool()).await.map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven_trust::clock::ManualClock;

    const DAY: i64 = 86_400;

    async fn key(store: &NodeStore, folder: &KeyFolder, kid: &str, not_after: i64) {
        sqlx::query("INSERT INTO sealing_key (kid, public_key, not_before, not_after, created_at_micros, created_by, statement, statement_sha256) VALUES ($1, '', 0, $2, 0, 'ada', '', '')")
            .bind(kid)
            .bind(not_after)
            .execute(store.pool())
            .await
            .unwrap();
        folder.write(kid, &[1u8; 32]).unwrap();
    }

    /// A retired key's private half is kept until its window has ended and the longest delivery TTL
    /// of the bundles the node knows has passed since; then it is destroyed and the time recorded. A
    /// key still in its window is kept.
    #[tokio::test]
    async fn a_retired_key_is_destroyed_only_once_its_window_and_the_longest_ttl_are_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("node.db").display().to_string()).await.unwrap();
        let folder = KeyFolder(dir.path().join("sealing"));
        let t0 = 1_900_000_000;
        key(&store, &folder, "x25519:old", t0).await;
        key(&store, &folder, "x25519:new", t0 + 365 * DAY).await;
        for (version, ttl) in [("sha256:a", 30), ("sha256:b", 45)] {
            sqlx::query("INSERT INTO policy_bundle (version, files, delivery_ttl_days, fetched_at_micros) VALUES ($1, '{}', $2, 0)")
                .bind(version)
                .bind(ttl)
                .execute(store.pool())
                .await
                .unwrap();
        }
        let clock = ManualClock::at((t0 + 44 * DAY) * 1_000_000);
        let shared: SharedClock = std::sync::Arc::new(clock.clone());
        assert!(destroy_retired(&store, &folder, &shared).await.unwrap().is_empty(), "45 days have not passed");
        assert!(folder.read("x25519:old").is_ok());
        clock.advance_secs(2 * DAY);
        assert_eq!(destroy_retired(&store, &folder, &shared).await.unwrap(), ["x25519:old"]);
        assert!(folder.read("x25519:old").is_err(), "the file is gone");
        assert!(folder.read("x25519:new").is_ok(), "a key in its window is kept");
        let states: Vec<(String, &str)> =
            list(&store).await.unwrap().iter().map(|k| (k.kid.clone(), k.state())).collect();
        assert!(states.contains(&("x25519:old".into(), "destroyed")), "{states:?}");
        assert!(destroy_retired(&store, &folder, &shared).await.unwrap().is_empty(), "once");
    }
}
