//! The node's durable mailbox: what it received (stored before it is acknowledged, once per item id,
//! so people see each item exactly once) and what it sent (kept `pending` until the gateway answers,
//! and retried with the same message id).

use haven_proto::v1 as pb;
use prost::Message;
use sqlx::Row;
use tokio::sync::broadcast;

use crate::store::NodeStore;

/// The item's wire kind.
pub fn item_kind(item: &pb::Item) -> &'static str {
    match item.body {
        Some(pb::item::Body::Delivery(_)) => "delivery",
        Some(pb::item::Body::ConsentWithdrawn(_)) => "consent_withdrawn",
        Some(pb::item::Body::Status(_)) => "status",
        Some(pb::item::Body::SenderNotice(_)) => "sender_notice",
        None => "unknown",
    }
}

fn status_name(s: i32) -> String {
    pb::MessageStatus::try_from(s).map(|s| s.as_str_name().to_ascii_lowercase()).unwrap_or_else(|_| "unknown".into())
}

/// Stores an item and applies what it says, in one transaction. Returns true when the item is new
/// (false for a repeat delivery, which is simply acknowledged again).
pub async fn store_item(store: &NodeStore, item: &pb::Item, now: i64) -> Result<bool, sqlx::Error> {
    Ok(store_items(store, std::slice::from_ref(item), &[None], now).await?.first().copied().unwrap_or(false))
}

/// Stores items that arrived together, in order, in one transaction (one fsync): each is stored and
/// applied as [`store_item`] does, a delivery whose sealed copy failed its checks (`rejected`, beside
/// it) stored as rejected and queued to be reported. Returns, for each, whether it was new and may be
/// shown.
pub async fn store_items(
    store: &NodeStore,
    items: &[pb::Item],
    rejected: &[Option<crate::unseal::Rejection>],
    now: i64,
) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let mut new = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        new.push(store_in(&mut tx, item, rejected.get(i).and_then(Option::as_ref), now).await?);
    }
    tx.commit().await?;
    Ok(new)
}

/// Keeps a rejected copy out of sight and queues its report; returns false.
async fn reject_in(
    tx: &mut sqlx::SqliteConnection,
    item: &pb::Item,
    d: &pb::Delivery,
    why: &crate::unseal::Rejection,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE inbox SET rejected = $1 WHERE item_id = $2")
        .bind(why.reason)
        .bind(&item.item_id)
        .execute(&mut *tx)
        .await?;
    if why.reason != crate::unseal::DUPLICATE {
        sqlx::query("INSERT INTO integrity_report (item_id, message_id, sender, reason, detail, found_at_micros) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (item_id) DO NOTHING")
            .bind(&item.item_id)
            .bind(&d.message_id)
            .bind(&d.sender)
            .bind(why.reason)
            .bind(&why.detail)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    Ok(false)
}

async fn store_in(
    tx: &mut sqlx::SqliteConnection,
    item: &pb::Item,
    rejected: Option<&crate::unseal::Rejection>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let (message_id, sender, kind) = match &item.body {
        Some(pb::item::Body::Delivery(d)) => (d.message_id.clone(), d.sender.clone(), d.kind.clone()),
        Some(pb::item::Body::Status(s)) => (s.message_id.clone(), s.from_org.clone(), String::new()),
        Some(pb::item::Body::SenderNotice(n)) => (n.message_id.clone(), n.recipient.clone(), String::new()),
        _ => (String::new(), String::new(), String::new()),
    };
    let inserted = sqlx::query("INSERT INTO inbox (item_id, received_at_micros, item_kind, message_id, body, sender, kind) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (item_id) DO NOTHING")
        .bind(&item.item_id)
        .bind(now)
        .bind(item_kind(item))
        .bind(&message_id)
        .bind(item.encode_to_vec())
        .bind(&sender)
        .bind(&kind)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if inserted {
        match &item.body {
            Some(pb::item::Body::Delivery(d)) => {
                if let Some(why) = rejected {
                    return reject_in(tx, item, d, why, now).await;
                }
                // One message is shown once, by the sender and id its verified manifest names.
                let first = sqlx::query("INSERT INTO received_message (sender, message_id, item_id) VALUES ($1, $2, $3) ON CONFLICT (sender, message_id) DO NOTHING")
                    .bind(&d.sender)
                    .bind(&d.message_id)
                    .bind(&item.item_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if !first {
                    let why = crate::unseal::Rejection::duplicate();
                    return reject_in(tx, item, d, &why, now).await;
                }
                let step = Step {
                    message_id: &d.message_id,
                    counterparty: &d.sender,
                    step: "received",
                    at: now,
                    ..Step::default()
                };
                step.record(&mut *tx).await?;
            }
            Some(pb::item::Body::ConsentWithdrawn(w)) => {
                for m in &w.message_ids {
                    sqlx::query("UPDATE inbox SET withdrawn = 1 WHERE message_id = $1 AND item_kind = 'delivery'")
                        .bind(m)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            Some(pb::item::Body::Status(s)) => {
                let status = status_name(s.status);
                Step {
                    message_id: &s.message_id,
                    counterparty: &s.from_org,
                    step: &status,
                    code: &s.code,
                    by_org: &s.from_org,
                    by_person: &s.from_person,
                    at: if s.at_micros > 0 { s.at_micros } else { now },
                }
                .record(&mut *tx)
                .await?;
                // As sender: the recipient changed its copy. As recipient: the sender withdrew.
                sqlx::query("UPDATE sent_recipients SET status = $1, code = $2, by_person = $3, updated_at_micros = $4 WHERE message_id = $5 AND recipient = $6")
                    .bind(&status)
                    .bind(&s.code)
                    .bind(&s.from_person)
                    .bind(now)
                    .bind(&s.message_id)
                    .bind(&s.from_org)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE inbox SET status = $1 WHERE message_id = $2 AND item_kind = 'delivery' AND sender = $3",
                )
                .bind(&status)
                .bind(&s.message_id)
                .bind(&s.from_org)
                .execute(&mut *tx)
                .await?;
            }
            Some(pb::item::Body::SenderNotice(n)) => {
                let status = match pb::sender_notice::Kind::try_from(n.kind) {
                    Ok(pb::sender_notice::Kind::Delivered) => "delivered",
                    Ok(pb::sender_notice::Kind::Cancelled) => "revoked",
                    Ok(pb::sender_notice::Kind::Expired) => "expired",
                    Ok(pb::sender_notice::Kind::Rejected) => "rejected",
                    _ => "unknown",
                };
                let step = if status == "revoked" { "cancelled" } else { status };
                Step {
                    message_id: &n.message_id,
                    counterparty: &n.recipient,
                    step,
                    code: &n.reason,
                    at: if n.at_micros > 0 { n.at_micros } else { now },
                    ..Step::default()
                }
                .record(&mut *tx)
                .await?;
                // A delivery notice never overrides a later status such as accepted.
                sqlx::query("UPDATE sent_recipients SET status = $1, reason = $2, updated_at_micros = $3 WHERE message_id = $4 AND recipient = $5 AND (status = 'sent' OR $1 <> 'delivered')")
                    .bind(status)
                    .bind(&n.reason)
                    .bind(now)
                    .bind(&n.message_id)
                    .bind(&n.recipient)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
    }
    Ok(inserted)
}

/// A received item as people see it: field values hidden once the consent was withdrawn.
pub fn view(row: &sqlx::sqlite::SqliteRow) -> Result<pb::InboxItem, sqlx::Error> {
    let body: Vec<u8> = row.try_get("body")?;
    let mut item = pb::Item::decode(body.as_slice()).unwrap_or_default();
    let withdrawn: i64 = row.try_get("withdrawn")?;
    if withdrawn != 0
        && let Some(pb::item::Body::Delivery(d)) = &mut item.body
    {
        d.fields.clear();
    }
    let status: String = row.try_get("status")?;
    Ok(pb::InboxItem {
        item_id: row.try_get("item_id")?,
        received_at_micros: row.try_get("received_at_micros")?,
        item_kind: row.try_get("item_kind")?,
        item: Some(item),
        status: pb::MessageStatus::from_str_name(&status.to_ascii_uppercase()).map_or(0, |s| s as i32),
        withdrawn: withdrawn != 0,
        assigned_to: row.try_get("assigned_to")?,
    })
}

/// The columns [`view`] reads.
const VIEW_COLUMNS: &str = "item_id, received_at_micros, item_kind, body, status, withdrawn, assigned_to";

/// Received items of `kind`, assigned to `person`, deliveries in `state` (each '' for any), newest
/// first.
pub async fn inbox(
    store: &NodeStore,
    kind: &str,
    person: &str,
    state: &str,
    limit: u32,
) -> Result<Vec<pb::InboxItem>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {VIEW_COLUMNS} FROM inbox WHERE rejected = '' AND ($1 = '' OR kind = $1 OR item_kind = $1) AND ($3 = '' OR assigned_to = $3) AND ($4 = '' OR (item_kind = 'delivery' AND (status = $4 OR ($4 = 'withdrawn' AND withdrawn = 1)))) ORDER BY received_at_micros DESC, item_id DESC LIMIT $2")))
        .bind(kind)
        .bind(i64::from(limit.clamp(1, 1000)))
        .bind(person)
        .bind(state)
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(view).collect()
}

/// One received delivery by message id.
pub async fn received(store: &NodeStore, message_id: &str) -> Result<Option<pb::InboxItem>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM inbox WHERE message_id = $1 AND item_kind = 'delivery' AND rejected = '' LIMIT 1"
    )))
    .bind(message_id)
    .fetch_optional(store.pool())
    .await?;
    row.as_ref().map(view).transpose()
}

/// One received item by its item id.
pub async fn item(store: &NodeStore, item_id: &str) -> Result<Option<pb::InboxItem>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM inbox WHERE item_id = $1 AND rejected = ''"
    )))
    .bind(item_id)
    .fetch_optional(store.pool())
    .await?;
    row.as_ref().map(view).transpose()
}

/// Records a send before the gateway is asked, so it survives a crash or an outage. A message id
/// recorded before is kept as it was; returns the envelope recorded under it then, if it was.
pub async fn record_sent(
    store: &NodeStore,
    env: &pb::Envelope,
    person: &str,
    role: &str,
    now: i64,
) -> Result<Option<pb::Envelope>, sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let new = sqlx::query("INSERT INTO sent (message_id, kind, purpose, envelope, person, role, state, created_at_micros) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) ON CONFLICT (message_id) DO NOTHING")
        .bind(&env.message_id)
        .bind(&env.kind)
        .bind(&env.purpose)
        .bind(env.encode_to_vec())
        .bind(person)
        .bind(role)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if new {
        Step { message_id: &env.message_id, step: "sent", by_person: person, at: now, ..Step::default() }
            .record(&mut tx)
            .await?;
    }
    let earlier = if new {
        None
    } else {
        let bytes: Vec<u8> = sqlx::query_scalar("SELECT envelope FROM sent WHERE message_id = $1")
            .bind(&env.message_id)
            .fetch_one(&mut *tx)
            .await?;
        Some(pb::Envelope::decode(bytes.as_slice()).unwrap_or_default())
    };
    tx.commit().await?;
    Ok(earlier)
}

/// Records the gateway's answer to a send.
pub async fn record_outcome(store: &NodeStore, resp: &pb::SubmitResponse, now: i64) -> Result<(), sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    sqlx::query("UPDATE sent SET state = 'submitted', bundle_version = $1, error = '' WHERE message_id = $2")
        .bind(&resp.bundle_version)
        .bind(&resp.message_id)
        .execute(&mut *tx)
        .await?;
    for o in &resp.outcomes {
        let (status, reason) = match pb::recipient_outcome::Outcome::try_from(o.outcome) {
            Ok(pb::recipient_outcome::Outcome::Queued) => ("sent", String::new()),
            Ok(pb::recipient_outcome::Outcome::QuotaExceeded) => ("denied", "quota_exceeded".to_owned()),
            _ => ("denied", o.decision.as_ref().map(|d| d.reason_code.clone()).unwrap_or_default()),
        };
        let new = sqlx::query("INSERT INTO sent_recipients (message_id, recipient, status, reason, updated_at_micros) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id, recipient) DO NOTHING")
            .bind(&resp.message_id)
            .bind(&o.recipient)
            .bind(status)
            .bind(&reason)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if new {
            let step = if status == "sent" { "queued" } else { "denied" };
            Step {
                message_id: &resp.message_id,
                counterparty: &o.recipient,
                step,
                code: &reason,
                at: now,
                ..Step::default()
            }
            .record(&mut tx)
            .await?;
        }
    }
    tx.commit().await
}

/// Marks a send refused by the gateway as a whole (bad input).
pub async fn record_failure(store: &NodeStore, message_id: &str, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sent SET state = 'failed', error = $1 WHERE message_id = $2")
        .bind(error)
        .bind(message_id)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Keeps why a pending send is still waiting (the last attempt's failure), for `referral show`.
pub async fn record_pending(store: &NodeStore, message_id: &str, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sent SET error = $1 WHERE message_id = $2 AND state = 'pending'")
        .bind(reason)
        .bind(message_id)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The sealed request kept for a send, if it was sealed.
pub async fn sealed_submit(store: &NodeStore, message_id: &str) -> Result<Option<pb::SubmitRequest>, sqlx::Error> {
    let bytes: Option<Option<Vec<u8>>> = sqlx::query_scalar("SELECT sealed_submit FROM sent WHERE message_id = $1")
        .bind(message_id)
        .fetch_optional(store.pool())
        .await?;
    Ok(bytes.flatten().and_then(|b| pb::SubmitRequest::decode(b.as_slice()).ok()))
}

/// Keeps the sealed request of a send, unless one was kept already (two sealings raced: the first
/// kept wins, since the gateway takes only the bytes it saw first); returns the request kept.
pub async fn keep_sealed(
    store: &NodeStore,
    message_id: &str,
    request: pb::SubmitRequest,
) -> Result<pb::SubmitRequest, sqlx::Error> {
    sqlx::query("UPDATE sent SET sealed_submit = $1 WHERE message_id = $2 AND sealed_submit IS NULL")
        .bind(request.encode_to_vec())
        .bind(message_id)
        .execute(store.pool())
        .await?;
    Ok(sealed_submit(store, message_id).await?.unwrap_or(request))
}

/// Drops the sealed request of a send, to seal it again (the network's policy changed).
pub async fn forget_sealed(store: &NodeStore, message_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sent SET sealed_submit = NULL WHERE message_id = $1")
        .bind(message_id)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Sends still waiting for the gateway, oldest first: (envelope, person, role).
pub async fn pending_sends(store: &NodeStore) -> Result<Vec<(pb::Envelope, String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT envelope, person, role FROM sent WHERE state = 'pending' ORDER BY created_at_micros LIMIT 100",
    )
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let bytes: Vec<u8> = r.try_get(0)?;
        if let Ok(env) = pb::Envelope::decode(bytes.as_slice()) {
            out.push((env, r.try_get(1)?, r.try_get(2)?));
        }
    }
    Ok(out)
}

/// A sent message with each recipient's status.
pub async fn sent(store: &NodeStore, message_id: &str) -> Result<Option<pb::SentMessage>, sqlx::Error> {
    let Some(r) = sqlx::query(
        "SELECT message_id, kind, purpose, state, error, created_at_micros FROM sent WHERE message_id = $1",
    )
    .bind(message_id)
    .fetch_optional(store.pool())
    .await?
    else {
        return Ok(None);
    };
    let recipients = sqlx::query("SELECT recipient, status, code, reason, by_person, updated_at_micros FROM sent_recipients WHERE message_id = $1 ORDER BY recipient")
        .bind(message_id)
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(|x| {
            let status: String = x.try_get(1)?;
            Ok(pb::RecipientStatus {
                recipient: x.try_get(0)?,
                status: pb::MessageStatus::from_str_name(&status.to_ascii_uppercase()).map_or(0, |s| s as i32),
                code: x.try_get(2)?,
                reason: x.try_get(3)?,
                by_person: x.try_get(4)?,
                updated_at_micros: x.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(pb::SentMessage {
        message_id: r.try_get(0)?,
        kind: r.try_get(1)?,
        purpose: r.try_get(2)?,
        state: r.try_get(3)?,
        error: r.try_get(4)?,
        created_at_micros: r.try_get(5)?,
        recipients,
    }))
}

/// Sent messages, newest first.
pub async fn sent_list(store: &NodeStore, kind: &str, limit: u32) -> Result<Vec<pb::SentMessage>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query(
        "SELECT message_id FROM sent WHERE ($1 = '' OR kind = $1) ORDER BY created_at_micros DESC LIMIT $2",
    )
    .bind(kind)
    .bind(i64::from(limit.clamp(1, 1000)))
    .fetch_all(store.pool())
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(m) = sent(store, &id).await? {
            out.push(m);
        }
    }
    Ok(out)
}

/// A status change this node made, to mirror on its local copy.
pub struct LocalChange<'a> {
    pub message_id: &'a str,
    /// The recipient (for the sender's withdraw; empty for every recipient) or the sender.
    pub counterparty: &'a str,
    pub status: &'a str,
    pub code: &'a str,
    pub person: &'a str,
    pub now: i64,
    /// Whether this node sent the message.
    pub as_sender: bool,
}

/// Updates a local copy's status after a status change this node made.
pub async fn local_status(store: &NodeStore, change: LocalChange<'_>) -> Result<(), sqlx::Error> {
    let LocalChange { message_id, counterparty, status, code, person, now, as_sender } = change;
    let mut tx = store.pool().begin().await?;
    Step { message_id, counterparty, step: status, code, by_person: person, at: now, ..Step::default() }
        .record(&mut tx)
        .await?;
    if as_sender {
        sqlx::query("UPDATE sent_recipients SET status = $1, code = $2, by_person = $3, updated_at_micros = $4 WHERE message_id = $5 AND ($6 = '' OR recipient = $6)")
            .bind(status)
            .bind(code)
            .bind(person)
            .bind(now)
            .bind(message_id)
            .bind(counterparty)
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query("UPDATE inbox SET status = $1 WHERE message_id = $2 AND item_kind = 'delivery' AND sender = $3")
            .bind(status)
            .bind(message_id)
            .bind(counterparty)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// One step of a message's life, as this node learned it (see `TimelineStep`).
#[derive(Default)]
struct Step<'a> {
    message_id: &'a str,
    counterparty: &'a str,
    step: &'a str,
    code: &'a str,
    by_org: &'a str,
    by_person: &'a str,
    at: i64,
}

impl Step<'_> {
    async fn record(&self, conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO message_step (message_id, counterparty, step, code, by_org, by_person, at_micros) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(self.message_id)
            .bind(self.counterparty)
            .bind(self.step)
            .bind(self.code)
            .bind(self.by_org)
            .bind(self.by_person)
            .bind(self.at)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// A message's timeline, oldest first (by time, then by the order the node learned the steps).
pub async fn timeline(store: &NodeStore, message_id: &str) -> Result<Vec<pb::TimelineStep>, sqlx::Error> {
    sqlx::query("SELECT step, counterparty, code, by_org, by_person, at_micros FROM message_step WHERE message_id = $1 ORDER BY at_micros, step_id LIMIT 1000")
        .bind(message_id)
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(pb::TimelineStep {
                step: r.try_get(0)?,
                counterparty: r.try_get(1)?,
                code: r.try_get(2)?,
                by_org: r.try_get(3)?,
                by_person: r.try_get(4)?,
                at_micros: r.try_get(5)?,
            })
        })
        .collect()
}

/// A sent message's recipient status as people read it: the status, or `denied` for a recipient the
/// gateway refused (no status, but a reason), or `-`.
pub fn recipient_status(status: i32, reason: &str) -> String {
    match pb::MessageStatus::try_from(status) {
        Ok(pb::MessageStatus::Unspecified) | Err(_) if !reason.is_empty() => "denied".into(),
        Ok(pb::MessageStatus::Unspecified) | Err(_) => "-".into(),
        Ok(s) => s.as_str_name().to_ascii_lowercase(),
    }
}

/// The message kind of a received item (a delivery's `referral` or `alert`), else its item kind.
pub fn kind_of(item: &pb::InboxItem) -> &str {
    match &item.item {
        Some(pb::Item { body: Some(pb::item::Body::Delivery(d)), .. }) => &d.kind,
        _ => &item.item_kind,
    }
}

/// New arrivals, for `WatchInbox` and `inbox --watch`.
pub type Arrivals = broadcast::Sender<pb::InboxItem>;
