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
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::Tx;
use crate::store::outbox::{self, OutboxRow};
pub use crate::store::outbox::{
    PG_CHANNEL, Pending, QueuedRow, SENDABLE_POSTGRES, SENDABLE_SQLITE, get, item_state, sendable,
};

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
    outbox::insert(tx, std::slice::from_ref(&row)).await?;
    Ok(row.item_id)
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
    let Some(ended) = outbox::finish(tx, item_id, state, now).await? else { return Ok(false) };
    if ended.item_kind == ItemKind::Delivery.as_str() {
        counts.push((ended.sender, ended.org, -1));
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
        outbox::add_count(tx, sender, org, change).await?;
    }
    Ok(())
}

/// How many deliveries from `sender` wait for `org`, as committed (see [`CountChanges`]).
pub async fn queued_between(tx: &mut Tx<'_>, sender: &str, org: &str) -> Result<i64, sqlx::Error> {
    outbox::count_between(tx, sender, org).await
}
