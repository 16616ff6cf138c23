//! The Merkle tree's tables: `merkle_head` (how many entries the tree holds), `merkle_node` (its
//! perfect subtrees, leaves at level 0) and `audit_checkpoint` (signed tree heads). Values come back as
//! stored; `audit::log` checks the hashes and builds the tree.

use haven_trust::audit::Checkpoint;
use haven_trust::merkle::{Hash, NodeId};
use sqlx::{AnyConnection, Row};

use super::Tx;
use super::dialect::{Dialect, chunks, push_pair_terms, with_rows};

/// Perfect subtrees per INSERT on PostgreSQL: small statements, for the reason given at
/// [`super::dialect::PG_INSERT_CHUNK`] (on SQLite, see [`chunks`]).
const PG_NODE_CHUNK: usize = 64;
/// Subtrees per SELECT by id (two binds each) on PostgreSQL.
const FETCH_CHUNK: usize = 100;

/// A size or index as the database stores it (BIGINT).
pub(crate) fn db_int(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// A size or index as the database gave it back.
pub(crate) fn from_db(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}

/// A signed checkpoint as stored, the audit trail's or the key log's: root and signature as bytes.
pub(crate) struct StoredCheckpoint {
    pub tree_size: u64,
    pub timestamp_micros: i64,
    pub root_hash: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: String,
}

impl StoredCheckpoint {
    /// A checkpoint the gateway's signer just made, to store (its hex is the signer's own).
    pub(crate) fn of(cp: &Checkpoint) -> StoredCheckpoint {
        StoredCheckpoint {
            tree_size: cp.tree_size,
            timestamp_micros: cp.timestamp_micros,
            root_hash: cp.root().unwrap_or_default().to_vec(),
            signature: hex::decode(&cp.signature).unwrap_or_default(),
            key_id: cp.key_id.clone(),
        }
    }

    /// The checkpoint as `haven-trust` checks it.
    pub(crate) fn checkpoint(self) -> Checkpoint {
        Checkpoint {
            tree_size: self.tree_size,
            root_hash: hex::encode(self.root_hash),
            timestamp_micros: self.timestamp_micros,
            signature: hex::encode(self.signature),
            key_id: self.key_id,
        }
    }
}

/// The log a checkpoint table signs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signed {
    /// `audit_checkpoint`.
    Audit,
    /// `key_log_checkpoint`.
    KeyLog,
}

pub(crate) fn checkpoint_from_row(row: &sqlx::any::AnyRow) -> Result<StoredCheckpoint, sqlx::Error> {
    Ok(StoredCheckpoint {
        tree_size: from_db(row.try_get("tree_size")?),
        timestamp_micros: row.try_get("timestamp_micros")?,
        root_hash: row.try_get("root_hash")?,
        signature: row.try_get("signature")?,
        key_id: row.try_get("key_id")?,
    })
}

/// The committed (`audit_head`) and integrated (`merkle_head`) sizes.
pub(crate) async fn sizes(pool: &sqlx::AnyPool) -> Result<(u64, u64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT next_seq FROM audit_head WHERE id = 1) AS committed, (SELECT size FROM merkle_head WHERE id = 1) AS integrated",
    )
    .fetch_one(pool)
    .await?;
    Ok((from_db(row.try_get("committed")?), from_db(row.try_get("integrated")?)))
}

/// The integrated size, its row locked until the transaction ends (SQLite's transactions already
/// hold the one write lock).
pub(crate) async fn lock_size(tx: &mut Tx<'_>) -> Result<u64, sqlx::Error> {
    let sql = match tx.dialect() {
        Dialect::Sqlite => "SELECT size FROM merkle_head WHERE id = 1",
        Dialect::Postgres => "SELECT size FROM merkle_head WHERE id = 1 FOR UPDATE",
    };
    Ok(from_db(sqlx::query(sql).fetch_one(&mut **tx).await?.try_get(0)?))
}

/// Sets the integrated size.
pub(crate) async fn set_size(tx: &mut Tx<'_>, size: u64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE merkle_head SET size = $1 WHERE id = 1").bind(db_int(size)).execute(&mut **tx).await?;
    Ok(())
}

/// The statement of [`entry_leaves`], public for the plan test.
pub const ENTRY_LEAVES: &str = "SELECT seq, leaf_hash FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq";

/// The leaf hashes of the audit entries from `from` on, by seq, at most `limit`.
///
/// Seqs are gap-free (assigned under the `audit_head` lock), so this is the primary key's range
/// `[from, from + limit)`, which a plan reads through the index whatever the statistics say. Written
/// as `seq >= from ... LIMIT limit` instead, PostgreSQL planned it for a log without statistics yet
/// (a new gateway's first minutes) as a scan of the whole table and a sort: 3 to 6 ms a read at 10,000
/// entries during a bench, growing with the log (checked by a plan test in `tests/tests/audit.rs`).
pub(crate) async fn entry_leaves(tx: &mut Tx<'_>, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, sqlx::Error> {
    let to = from.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX));
    let rows = sqlx::query(ENTRY_LEAVES).bind(db_int(from)).bind(db_int(to)).fetch_all(&mut **tx).await?;
    rows.iter().map(|r| Ok((from_db(r.try_get("seq")?), r.try_get("leaf_hash")?))).collect()
}

/// The integrated leaves (level-0 subtrees) `[from, to)`, by index.
pub(crate) async fn tree_leaves(pool: &sqlx::AnyPool, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, sqlx::Error> {
    let rows = sqlx::query("SELECT idx, hash FROM merkle_node WHERE level = 0 AND idx >= $1 AND idx < $2 ORDER BY idx")
        .bind(db_int(from))
        .bind(db_int(to))
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| Ok((from_db(r.try_get("idx")?), r.try_get("hash")?))).collect()
}

/// Reads the named subtrees (those present) on `conn`, of a store of `dialect`, a bounded number per
/// query.
pub(crate) async fn nodes(
    conn: &mut AnyConnection,
    dialect: Dialect,
    ids: &[NodeId],
) -> Result<Vec<(NodeId, Vec<u8>)>, sqlx::Error> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in chunks(ids, dialect, FETCH_CHUNK) {
        let mut sql = String::from("SELECT level, idx, hash FROM merkle_node WHERE ");
        push_pair_terms(&mut sql, dialect, "level", "idx", chunk.len());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(i64::from(id.level)).bind(db_int(id.index));
        }
        for row in q.fetch_all(&mut *conn).await? {
            let level = u32::try_from(row.try_get::<i64, _>("level")?).unwrap_or(u32::MAX);
            let index = from_db(row.try_get("idx")?);
            out.push((NodeId { level, index }, row.try_get("hash")?));
        }
    }
    Ok(out)
}

/// Writes newly completed subtrees, many per statement.
pub(crate) async fn insert_nodes(tx: &mut Tx<'_>, nodes: &[(NodeId, Hash)]) -> Result<(), sqlx::Error> {
    let head = "INSERT INTO merkle_node (level, idx, hash) VALUES";
    with_rows(tx, head, 3, "", PG_NODE_CHUNK, nodes, |q, (id, hash)| {
        q.bind(i64::from(id.level)).bind(db_int(id.index)).bind(hash.to_vec())
    })
    .await?;
    Ok(())
}

/// Stores a signed checkpoint of `log`; one of the same size (and time) already stored is kept.
pub(crate) async fn insert_checkpoint(tx: &mut Tx<'_>, log: Signed, cp: &StoredCheckpoint) -> Result<(), sqlx::Error> {
    sqlx::query(match log {
        Signed::Audit => "INSERT INTO audit_checkpoint (tree_size, timestamp_micros, root_hash, signature, key_id) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        Signed::KeyLog => "INSERT INTO key_log_checkpoint (tree_size, timestamp_micros, root_hash, signature, key_id) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    })
    .bind(db_int(cp.tree_size))
    .bind(cp.timestamp_micros)
    .bind(cp.root_hash.as_slice())
    .bind(cp.signature.as_slice())
    .bind(cp.key_id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The newest stored checkpoint, read on `conn`.
pub(crate) async fn latest_checkpoint(conn: &mut AnyConnection) -> Result<Option<StoredCheckpoint>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tree_size, timestamp_micros, root_hash, signature, key_id FROM audit_checkpoint ORDER BY tree_size DESC, timestamp_micros DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(checkpoint_from_row).transpose()
}

/// Every stored checkpoint of at most `size` entries, oldest first.
pub(crate) async fn checkpoints_upto(pool: &sqlx::AnyPool, size: u64) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tree_size, timestamp_micros, root_hash, signature, key_id FROM audit_checkpoint WHERE tree_size <= $1 ORDER BY tree_size, timestamp_micros",
    )
    .bind(db_int(size))
    .fetch_all(pool)
    .await?;
    rows.iter().map(checkpoint_from_row).collect()
}
