//! The outbox table: every item an organization's node must receive, until the node acknowledges it
//! (see `routing::queue`); and `queue_counts`, the deliveries waiting per sender and recipient.

use std::collections::BTreeSet;

use haven_proto::v1 as pb;
use haven_sharing::delivery::ItemState;
use prost::Message;
use sqlx::{AssertSqlSafe, Row};

use super::deliveries::{COPY_COLUMNS, Copy, copy_from};
use super::dialect::{PG_INSERT_CHUNK, insert_weighed, push_row, with_rows};
use super::{Dialect, Store, StoreError, Tx, Unsettled};

/// The channel name for PostgreSQL wake-ups.
pub const PG_CHANNEL: &str = "haven_queue";

/// A queued item, as written.
pub struct OutboxRow {
    pub item_id: String,
    pub org: String,
    pub item_kind: &'static str,
    pub delivery_id: String,
    pub consent_id: String,
    pub sender: String,
    pub payload: Vec<u8>,
    pub queued_at_micros: i64,
    pub expires_at_micros: i64,
}

/// Inserts queued items and, on PostgreSQL, sends one `pg_notify` per organization (delivered at
/// commit, so a stream on another replica hears of them).
pub async fn insert(tx: &mut Tx<'_>, rows: &[OutboxRow]) -> Result<(), sqlx::Error> {
    // Sealed copies are a few KiB each: on PostgreSQL a statement takes as many as fit in one TLS
    // record (`dialect::PG_STATEMENT_BYTES`).
    insert_weighed(tx, "INSERT INTO outbox (item_id, org, item_kind, delivery_id, consent_id, sender, payload, queued_at_micros, expires_at_micros, state) VALUES", 10, rows, |r| r.payload.len(), |q, r| {
        q.bind(r.item_id.as_str())
            .bind(r.org.as_str())
            .bind(r.item_kind)
            .bind(r.delivery_id.as_str())
            .bind(r.consent_id.as_str())
            .bind(r.sender.as_str())
            .bind(r.payload.as_slice())
            .bind(r.queued_at_micros)
            .bind(r.expires_at_micros)
            .bind(ItemState::Pending.as_str())
    })
    .await?;
    if tx.dialect() == Dialect::Postgres {
        let orgs: BTreeSet<&str> = rows.iter().map(|r| r.org.as_str()).collect();
        for org in orgs {
            sqlx::query("SELECT pg_notify($1, $2)").bind(PG_CHANNEL).bind(org).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// A pending item read for sending, its payload still encoded.
pub struct Pending {
    pub item_id: String,
    pub payload: Vec<u8>,
}

impl Pending {
    /// The item, or `None` (logged) if its stored payload cannot be decoded.
    pub fn decode(&self) -> Option<pb::Item> {
        let item = pb::Item::decode(self.payload.as_slice());
        if item.is_err() {
            tracing::error!(item_id = %self.item_id, "undecodable queued item skipped");
        }
        item.ok()
    }
}

/// The read of the items an organization's stream may send next, oldest first: `$1` the
/// organization, `$2` a JSON array of item ids to pass over (those in flight), `$3` the time now,
/// `$4` at most how many.
///
/// - Every item is checked against its consent as it is read, by the rule
///   [`haven_sharing::consent::releases_queued_copy`] defines, written here in SQL: an item queued
///   under a consent goes out only while that consent is given and within its window, or superseded
///   by a renewal. Others wait for the sweep or the cascade to cancel them. The consent-agreement test
///   in `tests/tests/consent.rs` proves the two agree on both databases.
/// - A consent covers only its controller's items: an item whose sender named another organization's
///   consent (possible on a send whose rule needs no consent) is read as naming no consent that
///   exists (`QueuedUnder::Unknown`), and waits for its expiry.
/// - The ids passed over and the items whose consent does not cover them are filtered out by the
///   statement (the consent through its primary key), so only the rows sent come back.
/// - PostgreSQL's orders by `item_id` in the "C" collation, an order only `outbox_pending_c` gives
///   (migration 6 says why); SQLite's BINARY is that order already, given by `outbox_pending`.
macro_rules! sendable {
    ($skip:literal, $order:literal) => {
        concat!(
            "SELECT o.item_id, o.payload FROM outbox o LEFT JOIN consents c ON c.consent_id = o.consent_id AND c.controller = o.sender ",
            "WHERE o.org = $1 AND o.state = 'pending' AND o.item_id NOT IN (",
            $skip,
            ") AND (o.consent_id = '' OR c.state = 'superseded' OR (c.state = 'given' AND c.valid_until_micros > $3)) ",
            "ORDER BY ",
            $order,
            " LIMIT $4"
        )
    };
}
pub const SENDABLE_SQLITE: &str = sendable!("SELECT value FROM json_each($2)", "o.item_id");
pub const SENDABLE_POSTGRES: &str = sendable!("SELECT jsonb_array_elements_text($2::jsonb)", "o.item_id COLLATE \"C\"");

/// The organization's oldest items that may be sent at `now` (see [`SENDABLE_SQLITE`]), other than
/// those in `skip`, at most `limit`.
pub async fn sendable<'a>(
    store: &Store,
    org: &str,
    skip: impl IntoIterator<Item = &'a String>,
    now: i64,
    limit: i64,
) -> Result<Unsettled<Vec<Pending>>, StoreError> {
    let sql = match store.dialect() {
        Dialect::Sqlite => SENDABLE_SQLITE,
        Dialect::Postgres => SENDABLE_POSTGRES,
    };
    let skip =
        serde_json::to_string(&skip.into_iter().collect::<Vec<_>>()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let rows = sqlx::query(sql).bind(org).bind(skip).bind(now).bind(limit).fetch_all(store.pool()).await?;
    let pending = rows
        .iter()
        .map(|r| Ok(Pending { item_id: r.try_get(0)?, payload: r.try_get(1)? }))
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Unsettled::read(pending))
}

/// A queued row's identity, read under the transaction.
#[derive(Clone)]
pub struct QueuedRow {
    pub org: String,
    pub state: ItemState,
    pub kind: String,
    pub delivery_id: String,
    /// The consent a delivery depends on (empty for notices and consent-free deliveries).
    pub consent_id: String,
    /// A delivery's sender (empty for notices).
    pub sender: String,
}

/// A stored item state; one the gateway never writes is a decode error (a broken invariant).
pub fn item_state(s: &str) -> Result<ItemState, sqlx::Error> {
    ItemState::parse(s).ok_or_else(|| sqlx::Error::Decode(format!("unknown outbox state `{s}`").into()))
}

/// Reads an item's row.
pub async fn get(tx: &mut Tx<'_>, item_id: &str) -> Result<Option<QueuedRow>, sqlx::Error> {
    let row =
        sqlx::query("SELECT org, state, item_kind, delivery_id, consent_id, sender FROM outbox WHERE item_id = $1")
            .bind(item_id)
            .fetch_optional(&mut **tx)
            .await?;
    row.map(|r| {
        Ok(QueuedRow {
            org: r.try_get("org")?,
            state: item_state(&r.try_get::<String, _>("state")?)?,
            kind: r.try_get("item_kind")?,
            delivery_id: r.try_get("delivery_id")?,
            consent_id: r.try_get("consent_id")?,
            sender: r.try_get("sender")?,
        })
    })
    .transpose()
}

/// An item that [`finish`] ended.
pub(crate) struct Ended {
    pub sender: String,
    pub org: String,
    pub item_kind: String,
}

/// Ends an item in `state` (acked, cancelled or expired) at `now`, deleting its payload, if it is
/// pending.
pub(crate) async fn finish(
    tx: &mut Tx<'_>,
    item_id: &str,
    state: ItemState,
    now: i64,
) -> Result<Option<Ended>, sqlx::Error> {
    let ended = sqlx::query(
        "UPDATE outbox SET state = $1, payload = $2, done_at_micros = $3 WHERE item_id = $4 AND state = 'pending' RETURNING sender, org, item_kind",
    )
    .bind(state.as_str())
    .bind(Vec::<u8>::new())
    .bind(now)
    .bind(item_id)
    .fetch_optional(&mut **tx)
    .await?;
    ended.map(|r| Ok(Ended { sender: r.try_get(0)?, org: r.try_get(1)?, item_kind: r.try_get(2)? })).transpose()
}

/// An item its node acknowledged at `at`.
pub(crate) struct AckedItem<'a> {
    pub item_id: &'a str,
    pub at: i64,
}

/// Ends acknowledged items (payload deleted), a statement per chunk; returns how many were pending.
pub(crate) async fn ack_many(tx: &mut Tx<'_>, items: &[AckedItem<'_>]) -> Result<u64, sqlx::Error> {
    let empty = match tx.dialect() {
        Dialect::Sqlite => "x''",
        Dialect::Postgres => "''::bytea",
    };
    let head = format!("UPDATE outbox SET state = 'acked', payload = {empty}, done_at_micros = v.column2 FROM (VALUES");
    let tail = ") AS v WHERE outbox.item_id = v.column1 AND outbox.state = 'pending'";
    with_rows(tx, &head, 2, tail, PG_INSERT_CHUNK, items, |q, a| q.bind(a.item_id).bind(a.at)).await
}

/// The ids of a delivery's pending items.
pub(crate) async fn pending_of_delivery(tx: &mut Tx<'_>, delivery_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT item_id FROM outbox WHERE delivery_id = $1 AND state = 'pending'")
        .bind(delivery_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// A pending item past its expiry.
pub(crate) struct Due {
    pub item_id: String,
    pub delivery_id: String,
    pub consent_id: String,
}

/// The pending items past their expiry at `now`, soonest expired first, at most 1000.
pub(crate) async fn due(pool: &sqlx::AnyPool, now: i64) -> Result<Vec<Due>, sqlx::Error> {
    let rows = sqlx::query("SELECT item_id, delivery_id, consent_id FROM outbox WHERE state = 'pending' AND expires_at_micros <= $1 ORDER BY expires_at_micros LIMIT 1000")
        .bind(now)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok(Due { item_id: r.try_get(0)?, delivery_id: r.try_get(1)?, consent_id: r.try_get(2)? }))
        .collect()
}

/// Adds `change` to the deliveries from `sender` waiting for `org`.
pub(crate) async fn add_count(tx: &mut Tx<'_>, sender: &str, org: &str, change: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO queue_counts (sender, org, pending) VALUES ($1, $2, $3) ON CONFLICT (sender, org) DO UPDATE SET pending = queue_counts.pending + excluded.pending")
        .bind(sender)
        .bind(org)
        .bind(change)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// How many deliveries from `sender` wait for `org`, as committed.
pub(crate) async fn count_between(tx: &mut Tx<'_>, sender: &str, org: &str) -> Result<i64, sqlx::Error> {
    let r = sqlx::query("SELECT pending FROM queue_counts WHERE sender = $1 AND org = $2")
        .bind(sender)
        .bind(org)
        .fetch_optional(&mut **tx)
        .await?;
    r.map_or(Ok(0), |r| r.try_get(0))
}

/// The items `ids` names (those that exist), each with its copy if it is a delivery; one statement,
/// whose shape changes with the number of ids (callers take them in `dialect::chunks`).
pub(crate) async fn items_with_copies(
    tx: &mut Tx<'_>,
    ids: &[&str],
) -> Result<Vec<(String, QueuedRow, Option<Copy>)>, sqlx::Error> {
    let dialect = tx.dialect();
    items_with_copies_on(tx, dialect, ids).await
}

/// An item and, for a delivery, its copy, read outside any transaction (for an entry about it whose
/// columns never change once the item exists).
pub(crate) async fn item_with_copy(
    store: &Store,
    item_id: &str,
) -> Result<Option<(QueuedRow, Option<Copy>)>, sqlx::Error> {
    let mut conn = store.pool().acquire().await?;
    let found = items_with_copies_on(&mut conn, store.dialect(), &[item_id]).await?;
    Ok(found.into_iter().next().map(|(_, row, copy)| (row, copy)))
}

async fn items_with_copies_on(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    ids: &[&str],
) -> Result<Vec<(String, QueuedRow, Option<Copy>)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = format!(
        "SELECT o.item_id, o.org, o.state, o.item_kind, o.delivery_id AS item_delivery, o.consent_id AS item_consent, o.sender AS item_sender, {COPY_COLUMNS} FROM outbox o LEFT JOIN deliveries d ON o.item_kind = 'delivery' AND d.delivery_id = o.delivery_id WHERE o.item_id IN "
    );
    push_row(&mut sql, dialect, 0, ids.len());
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    let mut out = Vec::new();
    for r in q.fetch_all(&mut *conn).await? {
        let row = QueuedRow {
            org: r.try_get("org")?,
            state: item_state(&r.try_get::<String, _>("state")?)?,
            kind: r.try_get("item_kind")?,
            delivery_id: r.try_get("item_delivery")?,
            consent_id: r.try_get("item_consent")?,
            sender: r.try_get("item_sender")?,
        };
        let copy = match r.try_get::<Option<String>, _>("delivery_id")? {
            Some(_) => Some(copy_from(&r)?),
            None => None,
        };
        out.push((r.try_get("item_id")?, row, copy));
    }
    Ok(out)
}

/// How [`states`] locks the rows it reads, on PostgreSQL (SQLite's writer already holds the one write
/// lock): each row it returns is locked until the transaction ends, so no other writer can end the
/// item between this read and the transaction's own write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowLock {
    /// A plain read.
    None,
    /// Waits for rows other transactions hold.
    Wait,
    /// Leaves out rows other transactions hold.
    Skip,
}

/// The states of the items `ids` names (those that exist, less those `lock` skips); one statement,
/// as [`items_with_copies`].
pub(crate) async fn states(
    tx: &mut Tx<'_>,
    ids: &[String],
    lock: RowLock,
) -> Result<Vec<(String, ItemState)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = String::from("SELECT item_id, state FROM outbox WHERE item_id IN ");
    push_row(&mut sql, tx.dialect(), 0, ids.len());
    if tx.dialect() == Dialect::Postgres {
        match lock {
            RowLock::None => {}
            RowLock::Wait => sql.push_str(" ORDER BY item_id FOR UPDATE"),
            RowLock::Skip => sql.push_str(" ORDER BY item_id FOR UPDATE SKIP LOCKED"),
        }
    }
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(id.as_str());
    }
    let rows = q.fetch_all(&mut **tx).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, item_state(&r.try_get::<String, _>(1)?)?))).collect()
}

/// The counts of deliveries waiting from each of `senders`, as `(sender, org, pending)`; one
/// statement, as [`items_with_copies`].
pub(crate) async fn counts_from(tx: &mut Tx<'_>, senders: &[&str]) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    if senders.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = String::from("SELECT sender, org, pending FROM queue_counts WHERE sender IN ");
    push_row(&mut sql, tx.dialect(), 0, senders.len());
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for s in senders {
        q = q.bind(*s);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
}
