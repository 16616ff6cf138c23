//! What happens to a queued copy after submission: its transport acknowledgement, the closed-loop
//! status changes (accept, decline, close, withdraw, acknowledge), cancellation when its consent ends,
//! and expiry. Each change commits with its audit entry and any notice it owes the other party.

use haven_proto::v1 as pb;
use haven_sharing::delivery::{self, DeliveryStatus, ItemState, Party};
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::ids::{Caller, OrgId, Role};

use super::queue::{self, NewItem};
use super::rows::{Acked, OutboxRow};
use crate::audit;
use crate::commit::{Batch, Reads};
use crate::error::Error;
use crate::state::Gateway;
use crate::store::Tx;
use crate::store::consents::lock_consent;
use crate::store::deliveries::{self, Copy, copy_by_id, set_status};
use crate::store::outbox;

fn base_entry(g: &Gateway, now: i64, action: Action, c: &Copy) -> AuditEntry {
    AuditEntry {
        object_id: c.message_id.clone(),
        purpose: c.purpose.clone(),
        consent_id: c.consent_id.clone(),
        bundle_version: g.bundle().version_id().to_owned(),
        outcome: "ok".into(),
        ..AuditEntry::new(action, now)
    }
}

/// The sender's entry about a copy: the recipient is the counterparty and sees its own pseudonym.
fn sender_side(g: &Gateway, now: i64, action: Action, c: &Copy) -> (AuditEntry, String) {
    let mut e = base_entry(g, now, action, c);
    e.actor_org = c.sender.clone();
    e.actor_role = "system".into();
    e.counterparty = c.recipient.clone();
    e.subject = c.subject.clone();
    e.source_node = c.sender.clone();
    (e, c.recipient_subject.clone())
}

async fn notify_sender(
    tx: &mut Tx<'_>,
    now: i64,
    c: &Copy,
    kind: pb::sender_notice::Kind,
    reason: &str,
) -> Result<(), sqlx::Error> {
    outbox::insert(tx, &[sender_notice(now, c, kind, reason)]).await
}

/// The item that tells a copy's sender what became of it.
fn sender_notice(now: i64, c: &Copy, kind: pb::sender_notice::Kind, reason: &str) -> OutboxRow {
    let notice = pb::SenderNotice {
        message_id: c.message_id.clone(),
        recipient: c.recipient.clone(),
        kind: kind as i32,
        reason: reason.to_owned(),
        at_micros: now,
    };
    queue::outbox_row(
        now,
        NewItem {
            org: &c.sender,
            body: pb::item::Body::SenderNotice(notice),
            delivery_id: "",
            consent_id: "",
            sender: "",
            expires_at_micros: i64::MAX,
        },
    )
}

/// A node's transport acknowledgement: the item is stored at the node, so its payload goes, and a
/// delivery becomes `delivered`. A repeated acknowledgement is harmless.
///
/// It runs in the next shared commit, so a stream's many acknowledgements (and every stream's) share
/// one fsync.
pub async fn ack(g: &Gateway, org: &OrgId, item_id: &str) -> Result<(), Error> {
    // Item ids are the gateway's own UUIDs. Anything else is refused here, before it can reach the
    // shared commit's one read of every unit's items, where a value the database rejects would fail
    // the other units with it.
    check_item_id(item_id)?;
    let (gateway, org, item) = (g.clone(), org.clone(), item_id.to_owned());
    let reads = Reads { items: vec![item_id.to_owned()], ..Reads::default() };
    // An acknowledgement writes only through the batch's buffers when what the batch read of its
    // item is settled (see `ack_in`).
    let wake =
        g.0.commits
            .run(reads, move |batch| Box::pin(async move { ack_in(batch, &gateway, &org, &item).await }))
            .await?;
    if let Some(s) = wake {
        g.0.wakeups.wake(&s);
    }
    Ok(())
}

/// Refuses an acknowledged `item_id` that is not one of the gateway's item ids (UUIDs).
fn check_item_id(item_id: &str) -> Result<(), Error> {
    if uuid::Uuid::try_parse(item_id).is_err() {
        let shown: String = haven_trust::untrusted::shown(item_id);
        return Err(Error::InvalidArgument(format!(
            "ack item_id {shown:?} is not an item id: acknowledge the `item_id` of an Item this stream sent"
        )));
    }
    Ok(())
}

/// An acknowledgement that arrived on a stream that lost its organization's lease: recorded as an
/// `ack_fenced` entry, since the node that sent it did store the item, but not applied. The item stays
/// queued and goes to the stream that holds the lease, whose acknowledgement is the `delivered` one.
/// For one of the organization's deliveries the entry names the message as `delivered` would; for
/// anything else, the item.
pub async fn ack_fenced(g: &Gateway, org: &OrgId, item_id: &str) -> Result<(), Error> {
    check_item_id(item_id)?;
    let now = g.0.clock.now_micros();
    let mut tx = g.0.store.begin().await?;
    let copy = match queue::get(&mut tx, item_id).await? {
        Some(row) if row.org == org.as_str() && row.kind == queue::ItemKind::Delivery.as_str() => {
            copy_by_id(&mut tx, &row.delivery_id).await?
        }
        _ => None,
    };
    let mut e = match &copy {
        Some(c) => {
            let mut e = base_entry(g, now, Action::AckFenced, c);
            e.counterparty = c.sender.clone();
            e
        }
        None => AuditEntry {
            object_id: item_id.to_owned(),
            bundle_version: g.bundle().version_id().to_owned(),
            ..AuditEntry::new(Action::AckFenced, now)
        },
    };
    e.actor_org = org.to_string();
    e.actor_person = "node".into();
    e.actor_role = Role::Node.to_string();
    e.source_node = org.to_string();
    e.outcome = "refused".into();
    e.reason = "stream_fenced".into();
    audit::append_one(&mut tx, e).await?;
    tx.commit().await?;
    Ok(())
}

/// The acknowledgement in the shared transaction; returns the sender to wake, if any.
async fn ack_in(batch: &mut Batch<'_>, g: &Gateway, org: &OrgId, item_id: &str) -> Result<Option<String>, Error> {
    let now = g.0.clock.now_micros();
    let Batch { tx, audit, counts, rows, seen } = batch;
    // Settled: what the batch read of the item stays true until it commits (on SQLite it holds the
    // one write lock; on PostgreSQL it locked the item's consent, as a revocation or an expiry does
    // before it ends an item, and read the item again under that lock). The acknowledgement then
    // goes in the batch's buffers and is written with every other one; otherwise it takes the
    // consent lock and writes here, in its savepoint.
    let buffered = seen.item_settled(item_id);
    // The item and its copy, as the batch read them (what is read of them here never changes, but a
    // copy's status, which is why the status changes below only from `sent`).
    let prefetched = seen.item(item_id);
    let row = match prefetched {
        Some(found) => found.map(|(row, _)| row.clone()),
        None => queue::get(tx, item_id).await?,
    }
    .ok_or_else(|| Error::NotFound(format!("no queued item `{}`", haven_trust::untrusted::shown(item_id))))?;
    if row.org != org.as_str() {
        return Err(Error::PermissionDenied(format!("item `{item_id}` is queued for another organization")));
    }
    // Lock the consent row first, as a revocation does: an acknowledgement racing the revocation then
    // waits for it (and finds the item cancelled) or goes first. Taking the item first would deadlock
    // on PostgreSQL, the revocation holding the audit head while it waits for this item.
    if !buffered {
        lock_consent(tx, &row.consent_id).await?;
    }
    let is_delivery = row.kind == queue::ItemKind::Delivery.as_str();
    // Settled implies the batch read the item, so `row` is that read.
    let ended = if buffered {
        let pending = row.state == ItemState::Pending && !rows.is_acked(item_id);
        if pending && is_delivery {
            counts.push((row.sender.clone(), row.org.clone(), -1));
        }
        pending
    } else {
        queue::finish(tx, item_id, ItemState::Acked, now, counts).await?
    };
    if !ended {
        return Ok(None);
    }
    let mut entries = Vec::new();
    let mut wake = None;
    let copy = match prefetched {
        _ if !is_delivery => None,
        Some(Some((_, copy))) => copy.clone(),
        _ => copy_by_id(tx, &row.delivery_id).await?,
    };
    if buffered {
        let delivery_id = copy.as_ref().map(|c| c.delivery_id.clone());
        rows.acked.push(Acked { item_id: item_id.to_owned(), delivery_id, by: org.to_string(), at: now });
    }
    if let Some(c) = copy {
        if !buffered {
            deliveries::mark_delivered(tx, &c.delivery_id, org.as_str(), now).await?;
        }
        // The recipient acts; the controller's pseudonym is not written where the recipient reads.
        let mut e = base_entry(g, now, Action::Delivered, &c);
        e.actor_org = org.to_string();
        e.actor_person = "node".into();
        e.actor_role = Role::Node.to_string();
        e.counterparty = c.sender.clone();
        e.source_node = org.to_string();
        entries.push((e, String::new()));
        rows.outbox.push(sender_notice(now, &c, pb::sender_notice::Kind::Delivered, ""));
        wake = Some(c.sender.clone());
    } else {
        let e = AuditEntry {
            actor_org: org.to_string(),
            actor_person: "node".into(),
            actor_role: Role::Node.to_string(),
            object_id: item_id.to_owned(),
            reason: row.kind.clone(),
            outcome: "ok".into(),
            source_node: org.to_string(),
            ..AuditEntry::new(Action::Delivered, now)
        };
        entries.push((e, String::new()));
    }
    audit.extend(entries);
    Ok(wake)
}

/// The consent ended (withdrawn, revoked or expired): in the caller's transaction, cancel every queued
/// copy that depends on it (payload deleted, sender told) and queue a withdrawal notice for every
/// recipient that holds, or may be receiving, data under it: one for each pseudonym the recipient was
/// given for the subject (two where its copies span the upgrade of the pseudonym derivation), each
/// listing the copies it was given under that pseudonym. Returns the organizations to wake.
///
/// Only the copies `controller` sent are the consent's: another organization may have named the
/// consent's id on a send whose rule needs no consent (nothing then checks it), and the controller's
/// revocation must reach neither that organization's copies nor its recipients.
pub async fn consent_ended(
    g: &Gateway,
    tx: &mut Tx<'_>,
    controller: &str,
    consent_id: &str,
    reason: &str,
    now: i64,
) -> Result<Vec<String>, Error> {
    let copies = deliveries::copies_under_consent(tx, consent_id, controller).await?;
    let mut entries = Vec::new();
    let mut counts = Vec::new();
    let mut wake = Vec::new();
    // (recipient, its pseudonym for the subject) → the messages it holds under that pseudonym.
    let mut holders: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for c in &copies {
        let plan = delivery::plan_consent_end(c.status);
        if plan.revoke {
            for id in outbox::pending_of_delivery(tx, &c.delivery_id).await? {
                queue::finish(tx, &id, ItemState::Cancelled, now, &mut counts).await?;
            }
            set_status(tx, &c.delivery_id, DeliveryStatus::Revoked, reason, "", now).await?;
            let (mut e, rs) = sender_side(g, now, Action::Cancelled, c);
            e.reason = reason.into();
            entries.push((e, rs));
            notify_sender(tx, now, c, pb::sender_notice::Kind::Cancelled, reason).await?;
            wake.push(c.sender.clone());
        }
        if plan.notify_recipient {
            holders.entry((c.recipient.clone(), c.recipient_subject.clone())).or_default().push(c.message_id.clone());
        }
    }
    for ((recipient, recipient_subject), message_ids) in holders {
        let notice = pb::ConsentWithdrawn {
            message_ids,
            subject_pseudonym: recipient_subject.clone(),
            reason: reason.into(),
            at_micros: now,
        };
        queue::enqueue(
            tx,
            now,
            NewItem {
                org: &recipient,
                body: pb::item::Body::ConsentWithdrawn(notice),
                delivery_id: "",
                consent_id: "",
                sender: "",
                expires_at_micros: i64::MAX,
            },
        )
        .await?;
        if let Some(c) = copies.iter().find(|c| c.recipient == recipient && c.recipient_subject == recipient_subject) {
            let (mut e, rs) = sender_side(g, now, Action::WithdrawalNotified, c);
            e.object_id = consent_id.to_owned();
            e.reason = reason.into();
            entries.push((e, rs));
        }
        if !wake.contains(&recipient) {
            wake.push(recipient);
        }
    }
    audit::append(tx, &mut entries).await?;
    queue::apply_counts(tx, &counts).await?;
    Ok(wake)
}

/// Expires queued copies past their TTL: payload deleted, the sender told. Returns how many.
pub async fn expire_due(g: &Gateway) -> Result<usize, Error> {
    let now = g.0.clock.now_micros();
    let due = outbox::due(g.0.store.pool(), now).await?;
    let mut n = 0;
    for outbox::Due { item_id, delivery_id, consent_id } in due {
        let mut tx = g.0.store.begin().await?;
        // Consent row first, in the same order as revocation and acknowledgement (no deadlock).
        lock_consent(&mut tx, &consent_id).await?;
        let mut counts = Vec::new();
        if !queue::finish(&mut tx, &item_id, ItemState::Expired, now, &mut counts).await? {
            tx.rollback().await?;
            continue;
        }
        let mut entries = Vec::new();
        let mut wake = None;
        if let Some(c) = copy_by_id(&mut tx, &delivery_id).await? {
            set_status(&mut tx, &c.delivery_id, DeliveryStatus::Expired, "ttl", "", now).await?;
            entries.push(sender_side(g, now, Action::Expired, &c));
            notify_sender(&mut tx, now, &c, pb::sender_notice::Kind::Expired, "ttl").await?;
            wake = Some(c.sender.clone());
        }
        audit::append(&mut tx, &mut entries).await?;
        queue::apply_counts(&mut tx, &counts).await?;
        tx.commit().await?;
        if let Some(s) = wake {
            g.0.wakeups.wake(&s);
        }
        n += 1;
    }
    Ok(n)
}

/// The status a party asks for, if it is one a copy can have.
fn requested(status: pb::MessageStatus) -> Option<DeliveryStatus> {
    DeliveryStatus::parse(&status.as_str_name().to_ascii_lowercase())
}

/// Applies a status update from either party, with its idempotency key.
pub async fn update_status(
    g: &Gateway,
    caller: &Caller,
    req: pb::UpdateStatusRequest,
) -> Result<pb::UpdateStatusResponse, Error> {
    let status = pb::MessageStatus::try_from(req.status)
        .map_err(|_| Error::InvalidArgument(format!("unknown status {}", req.status)))?;
    if uuid::Uuid::parse_str(&req.update_id).is_err() {
        return Err(Error::InvalidArgument("update_id must be a UUID (the idempotency key of this change)".into()));
    }
    delivery::check_code(requested(status), &req.code)?;
    let now = g.0.clock.now_micros();
    let mut tx = g.0.store.begin().await?;
    if let Some(s) = deliveries::status_update(&mut tx, caller.org.as_str(), &req.update_id).await? {
        tx.rollback().await?;
        let st = pb::MessageStatus::from_str_name(&s.to_ascii_uppercase()).unwrap_or(status);
        return Ok(pb::UpdateStatusResponse { status: st as i32, replayed: true });
    }
    // Find the copies: the recipient names the sender; the sender names the recipient (or all).
    let mut copies = if status == pb::MessageStatus::Withdrawn {
        deliveries::copies_of_message(&mut tx, caller.org.as_str(), &req.message_id, &req.recipient).await?
    } else {
        deliveries::copies_of_message(&mut tx, &req.sender, &req.message_id, caller.org.as_str()).await?
    };
    let mut consents: Vec<String> = copies.iter().map(|c| c.consent_id.clone()).filter(|c| !c.is_empty()).collect();
    consents.sort();
    consents.dedup();
    if !consents.is_empty() {
        for c in &consents {
            lock_consent(&mut tx, c).await?;
        }
        // Re-read under the lock: a revocation may have changed the copies meanwhile.
        let mut fresh = Vec::with_capacity(copies.len());
        for c in &copies {
            if let Some(c) = copy_by_id(&mut tx, &c.delivery_id).await? {
                fresh.push(c);
            }
        }
        copies = fresh;
    }
    if copies.is_empty() {
        // Distinguish "not yours" from "does not exist" without revealing other organizations' traffic.
        return Err(Error::NotFound(format!(
            "no message `{}` between your organization and that party",
            haven_trust::untrusted::shown(&req.message_id)
        )));
    }
    let mut entries = Vec::new();
    let mut counts = Vec::new();
    let mut wake = Vec::new();
    let mut final_status = None;
    for c in &copies {
        let Some(to) = requested(status) else {
            return Err(Error::InvalidArgument(format!(
                "status {} does not apply to a {}",
                status.as_str_name(),
                c.kind
            )));
        };
        let by = if c.sender == caller.org.as_str() { Party::Sender } else { Party::Recipient };
        let plan = delivery::plan_status_change(&c.kind, c.status, to, by)?;
        let to = plan.to;
        final_status = Some(to);
        if plan.cancel_queued {
            for id in outbox::pending_of_delivery(&mut tx, &c.delivery_id).await? {
                queue::finish(&mut tx, &id, ItemState::Cancelled, now, &mut counts).await?;
            }
        }
        set_status(&mut tx, &c.delivery_id, to, &req.code, caller.person.as_str(), now).await?;
        let other = if c.sender == caller.org.as_str() { c.recipient.clone() } else { c.sender.clone() };
        if plan.notify_other_party {
            let notice = pb::StatusNotice {
                message_id: c.message_id.clone(),
                from_org: caller.org.to_string(),
                from_person: caller.person.to_string(),
                status: status as i32,
                code: req.code.clone(),
                at_micros: now,
            };
            queue::enqueue(
                &mut tx,
                now,
                NewItem {
                    org: &other,
                    body: pb::item::Body::Status(notice),
                    delivery_id: "",
                    consent_id: "",
                    sender: "",
                    expires_at_micros: i64::MAX,
                },
            )
            .await?;
            wake.push(other.clone());
        }
        let mut e = base_entry(g, now, Action::StatusChanged, c);
        e.actor_org = caller.org.to_string();
        e.actor_person = caller.person.to_string();
        e.actor_role = caller.role.to_string();
        e.counterparty = other;
        e.reason = req.code.clone();
        e.outcome = to.as_str().into();
        e.source_node = caller.org.to_string();
        // The controller (sender) sees its own pseudonym; the recipient never sees it.
        let recipient_subject = if c.sender == caller.org.as_str() {
            e.subject = c.subject.clone();
            c.recipient_subject.clone()
        } else {
            String::new()
        };
        entries.push((e, recipient_subject));
        if let Some(first) = copies.first()
            && first.delivery_id == c.delivery_id
        {
            deliveries::record_status_update(&mut tx, caller.org.as_str(), &req.update_id, &c.delivery_id, to).await?;
        }
    }
    audit::append(&mut tx, &mut entries).await?;
    queue::apply_counts(&mut tx, &counts).await?;
    tx.commit().await?;
    for o in wake {
        g.0.wakeups.wake(&o);
    }
    let st =
        final_status.and_then(|s| pb::MessageStatus::from_str_name(&s.as_str().to_ascii_uppercase())).unwrap_or(status);
    Ok(pb::UpdateStatusResponse { status: st as i32, replayed: false })
}
