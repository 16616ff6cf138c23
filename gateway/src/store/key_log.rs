//! The key log's tables: `key_log` (each accepted sealing-key statement, in order) and
//! `key_log_checkpoint` (signed heads of its Merkle tree). `keys` decides what goes in.

use sqlx::Row;

use super::Tx;
use super::dialect::Dialect;
use super::merkle::{StoredCheckpoint, checkpoint_from_row, db_int, from_db};

/// One entry, as stored.
#[derive(Debug, Clone)]
pub struct KeyLogRow {
    pub seq: u64,
    pub registered_at_micros: i64,
    pub org: String,
    pub key_id: String,
    pub action: String,
    pub statement: String,
}

/// An entry to append.
pub(crate) struct NewEntry<'a> {
    pub registered_at_micros: i64,
    pub org: &'a str,
    pub key_id: &'a str,
    pub action: &'a str,
    pub statement: &'a str,
    pub statement_sha256: &'a [u8; 32],
}

/// Takes the log's append lock until the transaction ends (SQLite's transactions already hold the one
/// write lock), so positions are gap-free across gateway replicas.
pub(crate) async fn lock(tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
    if tx.dialect() == Dialect::Postgres {
        sqlx::query("LOCK TABLE key_log IN EXCLUSIVE MODE").execute(&mut **tx).await?;
    }
    Ok(())
}

/// The entry that stored this statement, if one did.
pub(crate) async fn by_statement(tx: &mut Tx<'_>, sha256: &[u8; 32]) -> Result<Option<u64>, sqlx::Error> {
    let row = sqlx::query("SELECT seq FROM key_log WHERE statement_sha256 = $1")
        .bind(sha256.as_slice())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| Ok(from_db(r.try_get("seq")?))).transpose()
}

/// The position of a stored statement, read outside any transaction.
pub(crate) async fn stored_seq(pool: &sqlx::AnyPool, sha256: &[u8; 32]) -> Result<Option<u64>, sqlx::Error> {
    let row = sqlx::query("SELECT seq FROM key_log WHERE statement_sha256 = $1")
        .bind(sha256.as_slice())
        .fetch_optional(pool)
        .await?;
    row.map(|r| Ok(from_db(r.try_get("seq")?))).transpose()
}

/// The actions stored for one key of one organization, in log order.
pub(crate) async fn actions_of(tx: &mut Tx<'_>, org: &str, key_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT action FROM key_log WHERE org = $1 AND key_id = $2 ORDER BY seq")
        .bind(org)
        .bind(key_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(|r| r.try_get("action")).collect()
}

/// Every leaf hash, in order (the key log is small: public keys only).
pub(crate) async fn leaves(tx: &mut Tx<'_>) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    let rows = sqlx::query("SELECT leaf_hash FROM key_log ORDER BY seq").fetch_all(&mut **tx).await?;
    rows.iter().map(|r| r.try_get("leaf_hash")).collect()
}

/// Appends an entry at `seq` with its leaf hash.
pub(crate) async fn append(tx: &mut Tx<'_>, seq: u64, e: &NewEntry<'_>, leaf: &[u8; 32]) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO key_log (seq, registered_at_micros, org, key_id, action, statement, statement_sha256, leaf_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(db_int(seq))
        .bind(e.registered_at_micros)
        .bind(e.org)
        .bind(e.key_id)
        .bind(e.action)
        .bind(e.statement)
        .bind(e.statement_sha256.as_slice())
        .bind(leaf.as_slice())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The newest checkpoint.
pub(crate) async fn newest_checkpoint(pool: &sqlx::AnyPool) -> Result<Option<StoredCheckpoint>, sqlx::Error> {
    let row = sqlx::query("SELECT tree_size, timestamp_micros, root_hash, signature, key_id FROM key_log_checkpoint ORDER BY tree_size DESC LIMIT 1")
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(checkpoint_from_row).transpose()
}

/// Entries from `from`, at most `limit`, in order.
pub async fn entries(pool: &sqlx::AnyPool, from: u64, limit: u32) -> Result<Vec<KeyLogRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT seq, registered_at_micros, org, key_id, action, statement FROM key_log WHERE seq >= $1 ORDER BY seq LIMIT $2")
        .bind(db_int(from))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(KeyLogRow {
                seq: from_db(r.try_get("seq")?),
                registered_at_micros: r.try_get("registered_at_micros")?,
                org: r.try_get("org")?,
                key_id: r.try_get("key_id")?,
                action: r.try_get("action")?,
                statement: r.try_get("statement")?,
            })
        })
        .collect()
}

/// The statements of one organization, in log order.
pub(crate) async fn statements_of(pool: &sqlx::AnyPool, org: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT statement FROM key_log WHERE org = $1 ORDER BY seq").bind(org).fetch_all(pool).await
}

/// How long a read of an organization's usable keys serves submissions (a key registered at another
/// replica is seen within it; one registered here at once).
pub(crate) const KEY_CACHE_TTL_MICROS: i64 = 2_000_000;

/// An organization's usable key ids, with when they were read (microseconds).
type ReadKeys = (i64, Vec<String>);

/// Each organization's usable key ids, with when they were read, and a generation that every append
/// moves on (a read that began before an append is not kept). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyCache(std::sync::Arc<std::sync::Mutex<(u64, std::collections::HashMap<String, ReadKeys>)>>);

impl KeyCache {
    /// Forgets every organization's keys (a statement was appended).
    pub(crate) fn clear(&self) {
        if let Ok(mut c) = self.0.lock() {
            c.0 = c.0.wrapping_add(1);
            c.1.clear();
        }
    }
}

/// The key ids a sender may seal to for `org` at `now_micros`: published, within their window, not
/// withdrawn. Read from the key log at most every [`KEY_CACHE_TTL_MICROS`].
pub(crate) async fn usable_keys(store: &super::Store, org: &str, now_micros: i64) -> Result<Vec<String>, sqlx::Error> {
    let (generation, cached) = match store.sealing_keys.0.lock() {
        Ok(c) => (c.0, c.1.get(org).cloned()),
        Err(_) => (0, None),
    };
    if let Some((at, kids)) = cached
        && now_micros.saturating_sub(at) < KEY_CACHE_TTL_MICROS
        && at <= now_micros
    {
        return Ok(kids);
    }
    let statements = statements_of(store.pool(), org).await?;
    let statements = statements.iter().filter_map(|jws| haven_trust::sealing::verified_payload(jws)).collect();
    let kids: Vec<String> = haven_trust::sealing::usable_keys(statements, now_micros.div_euclid(1_000_000))
        .into_iter()
        .map(|s| s.kid)
        .collect();
    if let Ok(mut c) = store.sealing_keys.0.lock()
        && c.0 == generation
    {
        c.1.insert(org.to_owned(), (now_micros, kids.clone()));
    }
    Ok(kids)
}
