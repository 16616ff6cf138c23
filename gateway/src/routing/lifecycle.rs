//! What happens to a queued copy after submission: its transport acknowledgement, the closed-loop
//! status changes (accept, decline, close, withdraw, acknowledge), cancellation when its consent ends,
//! and expiry. Each change commits with its audit entry and any notice it owes the other party.

use haven_proto::v1 as pb;
use haven_sharing::delivery::{self, DeliveryStatus, ItemState, Party};
use haven_sharing::policy::Schema;
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::clock::SharedClock;
use haven_trust::ids::{Caller, OrgId, Role};

use super::queue::{self, NewItem};
use super::rows::{Acked, OutboxRow};
use crate::audit;
use crate::audit::Stamp;
use crate::commit::Committer;
use crate::commit::{Effects, Prefetched, Reads};
use crate::error::Error;
use crate::store::consents::lock_consent;
use crate::store::deliveries::{self, Copy, copy_by_id, set_status};
use crate::store::outbox;
use crate::store::outbox::QueuedRow;
use crate::store::{Store, Tx};

fn base_entry(bundle_version: &str, now: i64, action: Action, c: &Copy) -> AuditEntry {
    AuditEntry {
        object_id: c.message_id.clone(),
        purpose: c.purpose.clone(),
        consent_id: c.consent_id.clone(),
        bundle_version: bundle_version.to_owned(),
        outcome: "ok".into(),
        ..AuditEntry::new(action, now)
    }
}

/// The sender's entry about a copy: the recipient is the counterparty and sees its own pseudonym.
fn sender_side(bundle_version: &str, now: i64, action: Action, c: &Copy) -> (AuditEntry, String) {
    let mut e = base_entry(bundle_version, now, action, c);
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
/// one fsync. Returns the sender to wake, if any.
pub async fn ack(
    commits: &Committer,
    clock: &SharedClock,
    bundle_version: String,
    org: &OrgId,
    item_id: &str,
) -> Result<Option<String>, Error> {
    // Item ids are the gateway's own UUIDs. Anything else is refused here, before it can reach the
    // shared commit's one read of every unit's items, where a value the database rejects would fail
    // the other units with it.
    check_item_id(item_id)?;
    let (clock, org, item) = (clock.clone(), org.clone(), item_id.to_owned());
    let reads = Reads { items: vec![item_id.to_owned()], ..Reads::default() };
    commits.run(reads, move |seen, fx| ack_in(seen, fx, &org, &item, clock.now_micros(), &bundle_version)).await
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
/// anything else, the item. A unit of the shared commit, like every other acknowledgement.
pub async fn ack_fenced(
    store: &Store,
    commits: &Committer,
    stamp: &Stamp,
    org: &OrgId,
    item_id: &str,
) -> Result<(), Error> {
    check_item_id(item_id)?;
    // Read without a lock: the entry names only what never changes once the item exists.
    let found = outbox::item_with_copy(store, item_id).await?;
    commits.record(vec![(fenced_entry(found.as_ref(), stamp, org, item_id), String::new())]).await?;
    Ok(())
}

/// The `ack_fenced` entry, given what is stored of the item.
fn fenced_entry(found: Option<&(QueuedRow, Option<Copy>)>, stamp: &Stamp, org: &OrgId, item_id: &str) -> AuditEntry {
    let copy = match found {
        Some((row, copy)) if row.org == org.as_str() => copy.as_ref(),
        _ => None,
    };
    let mut e = match copy {
        Some(c) => {
            let mut e = base_entry(&stamp.bundle_version, stamp.now, Action::AckFenced, c);
            e.counterparty = c.sender.clone();
            e
        }
        None => AuditEntry { object_id: item_id.to_owned(), ..stamp.entry(Action::AckFenced) },
    };
    e.actor_org = org.to_string();
    e.actor_person = "node".into();
    e.actor_role = Role::Node.to_string();
    e.source_node = org.to_string();
    e.outcome = "refused".into();
    e.reason = "stream_fenced".into();
    e
}

/// The acknowledgement, planned on what its batch read of the item (`seen`) and written to the
/// batch's buffers (`fx`); returns the sender to wake, if any. No I/O: the item was read, and stays as
/// read until the batch commits (see `commit`), so an item still pending ends here.
fn ack_in(
    seen: &Prefetched,
    fx: &mut Effects,
    org: &OrgId,
    item_id: &str,
    now: i64,
    bundle_version: &str,
) -> Result<Option<String>, Error> {
    let not_found = || Error::NotFound(format!("no queued item `{}`", haven_trust::untrusted::shown(item_id)));
    // Always read (the batch reads every unit's items, or the unit's own read does): missing, a bug.
    let found = seen.item(item_id).ok_or_else(|| {
        Error::Internal("the shared commit did not read the item for an acknowledgement that named it".into())
    })?;
    let (row, copy) = found.ok_or_else(not_found)?;
    if row.org != org.as_str() {
        return Err(Error::PermissionDenied(format!("item `{item_id}` is queued for another organization")));
    }
    if row.state != ItemState::Pending || fx.rows.is_acked(item_id) {
        return Ok(None);
    }
    let is_delivery = row.kind == queue::ItemKind::Delivery.as_str();
    let copy = copy.as_ref().filter(|_| is_delivery);
    if is_delivery {
        fx.counts.push((row.sender.clone(), row.org.clone(), -1));
    }
    let delivery_id = copy.map(|c| c.delivery_id.clone());
    fx.rows.acked.push(Acked { item_id: item_id.to_owned(), delivery_id, by: org.to_string(), at: now });
    let Some(c) = copy else {
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
        fx.audit.push((e, String::new()));
        return Ok(None);
    };
    // The recipient acts; the controller's pseudonym is not written where the recipient reads.
    let mut e = base_entry(bundle_version, now, Action::Delivered, c);
    e.actor_org = org.to_string();
    e.actor_person = "node".into();
    e.actor_role = Role::Node.to_string();
    e.counterparty = c.sender.clone();
    e.source_node = org.to_string();
    fx.audit.push((e, String::new()));
    fx.rows.outbox.push(sender_notice(now, c, pb::sender_notice::Kind::Delivered, ""));
    Ok(Some(c.sender.clone()))
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
    tx: &mut Tx<'_>,
    stamp: &Stamp,
    controller: &str,
    consent_id: &str,
    reason: &str,
) -> Result<Vec<String>, Error> {
    let now = stamp.now;
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
            let (mut e, rs) = sender_side(&stamp.bundle_version, now, Action::Cancelled, c);
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
            let (mut e, rs) = sender_side(&stamp.bundle_version, now, Action::WithdrawalNotified, c);
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

/// Expires queued copies past their TTL at `stamp`, one transaction each: payload deleted, the sender
/// told, and `wake` called with the sender once that commit is durable. Returns how many.
pub async fn expire_due(store: &Store, stamp: &Stamp, wake: &(dyn Fn(&[String]) + Sync)) -> Result<usize, Error> {
    let now = stamp.now;
    let due = outbox::due(store.pool(), now).await?;
    let mut n = 0;
    for outbox::Due { item_id, delivery_id, consent_id } in due {
        let mut tx = store.begin().await?;
        // Consent row first, in the same order as revocation and acknowledgement (no deadlock).
        lock_consent(&mut tx, &consent_id).await?;
        let mut counts = Vec::new();
        if !queue::finish(&mut tx, &item_id, ItemState::Expired, now, &mut counts).await? {
            tx.rollback().await?;
            continue;
        }
        let mut entries = Vec::new();
        let mut sender = Vec::new();
        if let Some(c) = copy_by_id(&mut tx, &delivery_id).await? {
            set_status(&mut tx, &c.delivery_id, DeliveryStatus::Expired, "ttl", "", now).await?;
            entries.push(sender_side(&stamp.bundle_version, now, Action::Expired, &c));
            notify_sender(&mut tx, now, &c, pb::sender_notice::Kind::Expired, "ttl").await?;
            sender.push(c.sender.clone());
        }
        audit::append(&mut tx, &mut entries).await?;
        queue::apply_counts(&mut tx, &counts).await?;
        tx.commit().await?;
        wake(&sender);
        n += 1;
    }
    Ok(n)
}

/// The status a party asks for, if it is one a copy can have.
fn requested(status: pb::MessageStatus) -> Option<DeliveryStatus> {
    DeliveryStatus::parse(&status.as_str_name().to_ascii_lowercase())
}

/// Applies a status update from either party, with its idempotency key; a decline's or a close's code
/// must be one the kind lists in `schema`, where it lists them. Returns the reply and the
/// organizations that have something new queued (to wake).
pub async fn update_status(
    store: &Store,
    schema: &Schema,
    stamp: &Stamp,
    caller: &Caller,
    req: pb::UpdateStatusRequest,
) -> Result<(pb::UpdateStatusResponse, Vec<String>), Error> {
    let status = pb::MessageStatus::try_from(req.status)
        .map_err(|_| Error::InvalidArgument(format!("unknown status {}", req.status)))?;
    if uuid::Uuid::parse_str(&req.update_id).is_err() {
        return Err(Error::InvalidArgument("update_id must be a UUID (the idempotency key of this change)".into()));
    }
    delivery::check_code(requested(status), &req.code)?;
    let now = stamp.now;
    let mut tx = store.begin().await?;
    if let Some(s) = deliveries::status_update(&mut tx, caller.org.as_str(), &req.update_id).await? {
        tx.rollback().await?;
        let st = pb::MessageStatus::from_str_name(&s.to_ascii_uppercase()).unwrap_or(status);
        return Ok((pb::UpdateStatusResponse { status: st as i32, replayed: true }, Vec::new()));
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
        schema.check_status_code(&c.kind, Some(plan.to), &req.code)?;
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
        let mut e = base_entry(&stamp.bundle_version, now, Action::StatusChanged, c);
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
    let st =
        final_status.and_then(|s| pb::MessageStatus::from_str_name(&s.as_str().to_ascii_uppercase())).unwrap_or(status);
    Ok((pb::UpdateStatusResponse { status: st as i32, replayed: false }, wake))
}

#[cfg(test)]
mod tests {
    //! The acknowledgement's plan, on facts written by hand: no database.

    use super::*;

    const ITEM: &str = "0190d5a0-0000-7000-8000-000000000001";
    const NOW: i64 = 1_750_000_000_000_000;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).unwrap()
    }

    fn row(kind: queue::ItemKind, state: ItemState) -> QueuedRow {
        QueuedRow {
            org: "maple-house".into(),
            state,
            kind: kind.as_str().into(),
            delivery_id: "d-1".into(),
            consent_id: "c-1".into(),
            sender: "harbor".into(),
        }
    }

    fn copy() -> Copy {
        Copy {
            delivery_id: "d-1".into(),
            sender: "harbor".into(),
            message_id: "m-1".into(),
            recipient: "maple-house".into(),
            kind: "referral".into(),
            purpose: "housing".into(),
            consent_id: "c-1".into(),
            subject: "s-fictional-1".into(),
            recipient_subject: "r_0000".into(),
            status: DeliveryStatus::Sent,
            expires_at_micros: i64::MAX,
        }
    }

    fn pending_delivery() -> Prefetched {
        Prefetched::held().with_item(ITEM, Some((row(queue::ItemKind::Delivery, ItemState::Pending), Some(copy()))))
    }

    #[test]
    fn a_pending_delivery_ends_is_delivered_audited_and_its_sender_told_and_woken() {
        let mut fx = Effects::default();
        let wake = ack_in(&pending_delivery(), &mut fx, &org("maple-house"), ITEM, NOW, "sha256:v").unwrap();
        assert_eq!(wake.as_deref(), Some("harbor"));
        assert_eq!(fx.counts, vec![("harbor".to_owned(), "maple-house".to_owned(), -1)]);
        assert_eq!(fx.rows.acked.len(), 1);
        assert_eq!(fx.rows.acked[0].delivery_id.as_deref(), Some("d-1"), "the copy becomes delivered");
        assert_eq!((fx.rows.acked[0].by.as_str(), fx.rows.acked[0].at), ("maple-house", NOW));
        let (e, shown) = &fx.audit[0];
        assert_eq!(
            (e.action.as_str(), e.actor_org.as_str(), e.counterparty.as_str()),
            ("delivered", "maple-house", "harbor")
        );
        assert_eq!((e.object_id.as_str(), e.bundle_version.as_str()), ("m-1", "sha256:v"));
        assert!(e.subject.is_empty() && shown.is_empty(), "the recipient's entry names no pseudonym of the controller");
        assert_eq!(fx.rows.outbox.len(), 1, "one notice for the sender");
        assert_eq!(fx.rows.outbox[0].org, "harbor");
    }

    #[test]
    fn a_second_acknowledgement_in_the_same_batch_does_nothing() {
        let seen = pending_delivery();
        let mut fx = Effects::default();
        ack_in(&seen, &mut fx, &org("maple-house"), ITEM, NOW, "v").unwrap();
        let again = ack_in(&seen, &mut fx, &org("maple-house"), ITEM, NOW, "v").unwrap();
        assert_eq!(again, None);
        assert_eq!((fx.rows.acked.len(), fx.audit.len(), fx.counts.len()), (1, 1, 1));
    }

    #[test]
    fn an_item_that_already_ended_is_acknowledged_without_effect() {
        for state in [ItemState::Acked, ItemState::Cancelled, ItemState::Expired] {
            let seen = Prefetched::held().with_item(ITEM, Some((row(queue::ItemKind::Delivery, state), Some(copy()))));
            let mut fx = Effects::default();
            assert_eq!(ack_in(&seen, &mut fx, &org("maple-house"), ITEM, NOW, "v").unwrap(), None, "{state:?}");
            assert!(fx.rows.acked.is_empty() && fx.audit.is_empty() && fx.counts.is_empty(), "{state:?}");
        }
    }

    #[test]
    fn a_notice_ends_without_a_count_or_a_notice_back() {
        let seen = Prefetched::held().with_item(ITEM, Some((row(queue::ItemKind::Status, ItemState::Pending), None)));
        let mut fx = Effects::default();
        assert_eq!(ack_in(&seen, &mut fx, &org("maple-house"), ITEM, NOW, "v").unwrap(), None);
        assert!(fx.counts.is_empty() && fx.rows.outbox.is_empty());
        assert_eq!(fx.rows.acked[0].delivery_id, None);
        assert_eq!((fx.audit[0].0.object_id.as_str(), fx.audit[0].0.reason.as_str()), (ITEM, "status"));
    }

    #[test]
    fn a_fenced_acknowledgement_names_the_message_for_its_own_delivery_and_the_item_otherwise() {
        let stamp = Stamp { now: NOW, bundle_version: "v".into() };
        let found = (row(queue::ItemKind::Delivery, ItemState::Pending), Some(copy()));
        let e = fenced_entry(Some(&found), &stamp, &org("maple-house"), ITEM);
        assert_eq!((e.action.as_str(), e.object_id.as_str(), e.counterparty.as_str()), ("ack_fenced", "m-1", "harbor"));
        assert_eq!((e.outcome.as_str(), e.reason.as_str()), ("refused", "stream_fenced"));
        // Another organization's item, or none: the entry names only the item id it was given.
        for found in [Some(&found), None] {
            let e = fenced_entry(found, &stamp, &org("harbor"), ITEM);
            assert_eq!((e.object_id.as_str(), e.counterparty.as_str()), (ITEM, ""));
        }
    }

    #[test]
    fn another_organizations_item_is_refused_and_a_missing_one_is_not_found() {
        let mut fx = Effects::default();
        let e = ack_in(&pending_delivery(), &mut fx, &org("harbor"), ITEM, NOW, "v").unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
        let e = ack_in(&Prefetched::held().with_item(ITEM, None), &mut fx, &org("maple-house"), ITEM, NOW, "v")
            .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
        assert!(fx.rows.acked.is_empty() && fx.audit.is_empty() && fx.counts.is_empty());
    }
}
