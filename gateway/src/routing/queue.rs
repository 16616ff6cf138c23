//! The durable per-organization queue. Every item an organization's node must receive — a delivery, a
//! consent-withdrawal notice, a status notice, a notice for the sender — is a row here until the node
//! acknowledges it. The payload is emptied in the same transaction that acknowledges, cancels or
//! expires the item; the row remains as a tombstone so a repeated acknowledgement is recognised.
//!
//! Wake-ups: on SQLite an in-process [`Wakeups`] notifier; on PostgreSQL also `pg_notify`, sent at
//! commit, so a node connected to another replica hears of it. Streams poll slowly behind both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use haven_proto::v1 as pb;
use haven_sharing::delivery::ItemState;
use prost::Message;
use sqlx::Row;
use tokio::sync::Notify;
use uuid::Uuid;

use super::rows::{OutboxRow, insert_outbox};
use crate::store::{Backend, Store, StoreError, Tx};

/// The channel name for PostgreSQL wake-ups.
pub const PG_CHANNEL: &str = "haven_queue";

/// What kind of item a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Delivery,
    ConsentWithdrawn,
    Status,
    SenderNotice,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Delivery => "delivery",
            ItemKind::ConsentWithdrawn => "consent_withdrawn",
            ItemKind::Status => "status",
            ItemKind::SenderNotice => "sender_notice",
        }
    }

    fn of(body: &pb::item::Body) -> Self {
        match body {
            pb::item::Body::Delivery(_) => ItemKind::Delivery,
            pb::item::Body::ConsentWithdrawn(_) => ItemKind::ConsentWithdrawn,
            pb::item::Body::Status(_) => ItemKind::Status,
            pb::item::Body::SenderNotice(_) => ItemKind::SenderNotice,
        }
    }
}

/// Per-organization wake-ups for open streams.
#[derive(Default)]
pub struct Wakeups {
    orgs: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    /// The notifier an organization's stream waits on.
    pub fn get(&self, org: &str) -> Arc<Notify> {
        match self.orgs.lock() {
            Ok(mut m) => m.entry(org.to_owned()).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Wakes an organization's stream, if one waits here.
    pub fn wake(&self, org: &str) {
        if let Ok(m) = self.orgs.lock()
            && let Some(n) = m.get(org)
        {
            n.notify_one();
        }
    }
}

/// Where a new item goes.
pub struct NewItem<'a> {
    pub org: &'a str,
    pub body: pb::item::Body,
    pub delivery_id: &'a str,
    pub consent_id: &'a str,
    pub sender: &'a str,
    pub expires_at_micros: i64,
}

/// A new item's row: a fresh id (a UUIDv7, so ids sort oldest first) and its encoded payload.
pub fn outbox_row(now: i64, item: NewItem<'_>) -> OutboxRow {
    let item_id = Uuid::now_v7().to_string();
    let item_kind = ItemKind::of(&item.body).as_str();
    let payload = pb::Item { item_id: item_id.clone(), queued_at_micros: now, body: Some(item.body) }.encode_to_vec();
    OutboxRow {
        item_id,
        org: item.org.to_owned(),
        item_kind,
        delivery_id: item.delivery_id.to_owned(),
        consent_id: item.consent_id.to_owned(),
        sender: item.sender.to_owned(),
        payload,
        queued_at_micros: now,
        expires_at_micros: item.expires_at_micros,
    }
}

/// Queues an item in the caller's transaction (a delivery's quota count is the caller's to record, in
/// its [`CountChanges`]). Returns its id.
pub async fn enqueue(tx: &mut Tx<'_>, now: i64, item: NewItem<'_>) -> Result<String, sqlx::Error> {
    let row = outbox_row(now, item);
    insert_outbox(tx, std::slice::from_ref(&row)).await?;
    Ok(row.item_id)
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
) -> Result<Vec<Pending>, StoreError> {
    let sql = match store.backend() {
        Backend::Sqlite => SENDABLE_SQLITE,
        Backend::Postgres => SENDABLE_POSTGRES,
    };
    let skip =
        serde_json::to_string(&skip.into_iter().collect::<Vec<_>>()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let rows = sqlx::query(sql).bind(org).bind(skip).bind(now).bind(limit).fetch_all(store.pool()).await?;
    Ok(rows
        .iter()
        .map(|r| Ok(Pending { item_id: r.try_get(0)?, payload: r.try_get(1)? }))
        .collect::<Result<_, sqlx::Error>>()?)
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

/// Changes to the quota counts (`queue_counts`: deliveries waiting per sender and recipient) that a
/// transaction makes: `(sender, org, change)`. A transaction applies them with [`apply_counts`] after
/// its audit append, so every writer takes its locks in one order (consent row, audit head, counts)
/// and none can deadlock another on PostgreSQL.
pub type CountChanges = Vec<(String, String, i64)>;

/// Ends an item (acked, cancelled or expired), deleting its payload, and records a delivery's count
/// change in `counts`. Returns whether it was pending.
pub async fn finish(
    tx: &mut Tx<'_>,
    item_id: &str,
    state: ItemState,
    now: i64,
    counts: &mut CountChanges,
) -> Result<bool, sqlx::Error> {
    let ended = sqlx::query(
        "UPDATE outbox SET state = $1, payload = $2, done_at_micros = $3 WHERE item_id = $4 AND state = 'pending' RETURNING sender, org, item_kind",
    )
    .bind(state.as_str())
    .bind(Vec::<u8>::new())
    .bind(now)
    .bind(item_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = ended else { return Ok(false) };
    if row.try_get::<String, _>(2)? == ItemKind::Delivery.as_str() {
        counts.push((row.try_get(0)?, row.try_get(1)?, -1));
    }
    Ok(true)
}

/// Applies count changes, summed per pair and in key order.
pub async fn apply_counts(tx: &mut Tx<'_>, counts: &[(String, String, i64)]) -> Result<(), sqlx::Error> {
    let mut sums: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
    for (sender, org, change) in counts {
        *sums.entry((sender.as_str(), org.as_str())).or_default() += change;
    }
    for ((sender, org), change) in sums.into_iter().filter(|(_, c)| *c != 0) {
        sqlx::query("INSERT INTO queue_counts (sender, org, pending) VALUES ($1, $2, $3) ON CONFLICT (sender, org) DO UPDATE SET pending = queue_counts.pending + excluded.pending")
            .bind(sender)
            .bind(org)
            .bind(change)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// How many deliveries from `sender` wait for `org`, as committed (see [`CountChanges`]).
pub async fn queued_between(tx: &mut Tx<'_>, sender: &str, org: &str) -> Result<i64, sqlx::Error> {
    let r = sqlx::query("SELECT pending FROM queue_counts WHERE sender = $1 AND org = $2")
        .bind(sender)
        .bind(org)
        .fetch_optional(&mut **tx)
        .await?;
    r.map_or(Ok(0), |r| r.try_get(0))
}
