//! Submitting a referral or an alert: in one transaction, decide each recipient, minimize each copy,
//! replace the subject's pseudonym with the recipient's own, queue the copies and write every audit
//! entry. An identical resubmission returns the first reply and queues nothing.

use haven_proto::v1 as pb;
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::ids::Caller;
use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::queue::{self, NewItem};
use super::rows::{DeliveryRow, MessageRow};
use super::{decide_with, decision_entry, pseudonym};
use crate::commit::{Batch, Reads};
use crate::consent;
use crate::envelope::{Envelope, Recipients};
use crate::error::Error;
use crate::policy::DenyReason;
use crate::state::Gateway;
use crate::store::messages;

/// What makes two submissions with one id the same: everything the sender chose.
fn content_hash(env: &Envelope) -> String {
    let recipients = match &env.recipients {
        Recipients::Named(list) => list.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(","),
        Recipients::AllPermitted => "*".into(),
    };
    let canonical = format!(
        "{}\n{}\n{}\n{:?}\n{:?}\n{:?}\n{}",
        env.kind, recipients, env.purpose, env.subject, env.consent_id, env.fields, env.correlation_id
    );
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Submits an envelope for `caller`, in the next shared commit; returns once it is durable, with the
/// organizations that have something new queued (already woken).
pub async fn submit(g: &Gateway, caller: &Caller, env: Envelope) -> Result<(pb::SubmitResponse, Vec<String>), Error> {
    let reads = Reads {
        messages: vec![(caller.org.to_string(), env.message_id.to_string())],
        consents: env.consent_id.iter().map(ToString::to_string).collect(),
        senders: vec![caller.org.to_string()],
        ..Reads::default()
    };
    let (gateway, who) = (g.clone(), caller.clone());
    let (response, woken) =
        g.0.commits
            .run(reads, move |batch| Box::pin(async move { submit_in(batch, &gateway, &who, env).await }))
            .await?;
    for org in &woken {
        g.0.wakeups.wake(org);
    }
    Ok((response, woken))
}

/// The submission itself, in the shared transaction: its changes and audit entries go in `batch`'s
/// buffers, and what it reads it finds in `batch.seen` (reading it here only if it is not there).
async fn submit_in(
    batch: &mut Batch<'_>,
    g: &Gateway,
    caller: &Caller,
    env: Envelope,
) -> Result<(pb::SubmitResponse, Vec<String>), Error> {
    let hash = content_hash(&env);
    let now = g.0.clock.now_micros();
    let message_id = env.message_id.to_string();
    let Batch { tx, audit, counts, rows, seen } = batch;

    // The same message id again: from an earlier commit, or from an earlier unit of this one.
    let earlier = match (rows.message(caller.org.as_str(), &message_id), seen.message(caller.org.as_str(), &message_id))
    {
        (Some(m), _) => Some((m.content_sha256.clone(), m.response.clone())),
        (None, Some(stored)) => stored.cloned(),
        (None, None) => messages::earlier(tx, caller.org.as_str(), &message_id).await?,
    };
    if let Some((stored, bytes)) = earlier {
        if stored != hash {
            return Err(Error::AlreadyExists(format!(
                "message_id {message_id} was already used for a different message; make a new UUIDv7 for a new message"
            )));
        }
        let mut resp = pb::SubmitResponse::decode(bytes.as_slice())
            .map_err(|e| Error::Internal(format!("the stored reply to message {message_id} cannot be decoded: {e}")))?;
        resp.replayed = true;
        return Ok((resp, Vec::new()));
    }

    // Lock the consent row, so a revocation racing this submission either commits first (and this
    // submission sees it) or waits for this commit (and its cascade sees these copies).
    let stored_consent = match &env.consent_id {
        Some(id) => match seen.consent(id.as_str()) {
            Some(stored) => stored.cloned(),
            None => consent::load_locked(tx, id.as_str()).await?,
        },
        None => None,
    };
    let bundle = g.bundle();
    let decided = decide_with(g, caller, &env, bundle.clone(), stored_consent);
    // At most 3660 days (the bundle's ceiling), so neither this nor `now + ttl` can overflow.
    let ttl = i64::from(bundle.network().delivery_ttl_days) * 86_400_000_000;
    let quota = i64::from(bundle.network().queue_quota);
    let mut outcomes = Vec::with_capacity(decided.outcomes.len());
    let mut entries: Vec<(AuditEntry, String)> = Vec::with_capacity(decided.outcomes.len());
    let mut woken = Vec::new();
    for (recipient, mut d) in decided.outcomes {
        let mut outcome =
            if d.allowed() { pb::recipient_outcome::Outcome::Queued } else { pb::recipient_outcome::Outcome::Denied };
        // Committed, plus what this shared commit queued before this submission. The batch's changes
        // are summed only when they could reach the quota: they add at most one each.
        let committed = match seen.pending(caller.org.as_str(), recipient.as_str()) {
            Some(n) => n,
            None => queue::queued_between(tx, caller.org.as_str(), recipient.as_str()).await?,
        };
        let near = committed + i64::try_from(counts.len()).unwrap_or(i64::MAX) >= quota;
        let queued = || {
            counts
                .iter()
                .filter(|(s, o, _)| s == caller.org.as_str() && o == recipient.as_str())
                .map(|c| c.2)
                .sum::<i64>()
        };
        if d.allowed() && near && committed + queued() >= quota {
            outcome = pb::recipient_outcome::Outcome::QuotaExceeded;
            d = d.refused(DenyReason::QuotaExceeded, Some(recipient.to_string()));
        }
        let mut delivery_id = String::new();
        let mut recipient_subject = String::new();
        if outcome == pb::recipient_outcome::Outcome::Queued {
            delivery_id = Uuid::now_v7().to_string();
            // The sender is the controller of the subject it names: a consent a rule relies on must be
            // the sender's own (the decision checked it).
            recipient_subject = env
                .subject
                .as_deref()
                .map(|s| pseudonym::for_recipient(&g.0.pseudonym_key, recipient.as_str(), caller.org.as_str(), s))
                .unwrap_or_default();
            let fields = d
                .released()
                .iter()
                .filter_map(|name| env.fields.get(name).map(|v| (name.clone(), pb::FieldValue::from(v))))
                .collect();
            let delivery = pb::Delivery {
                message_id: message_id.clone(),
                kind: env.kind.to_string(),
                sender: caller.org.to_string(),
                sender_person: caller.person.to_string(),
                purpose: env.purpose.to_string(),
                subject_pseudonym: recipient_subject.clone(),
                fields,
                withheld_fields: d.withheld().to_vec(),
                rule_ids: d.rule_ids().to_vec(),
                bundle_version: d.bundle_version().to_owned(),
                expires_at_micros: now + ttl,
                correlation_id: env.correlation_id.clone(),
            };
            rows.deliveries.push(DeliveryRow {
                delivery_id: delivery_id.clone(),
                sender: caller.org.to_string(),
                sender_person: caller.person.to_string(),
                message_id: message_id.clone(),
                recipient: recipient.to_string(),
                kind: env.kind.to_string(),
                purpose: env.purpose.to_string(),
                consent_id: env.consent_id.as_ref().map(ToString::to_string).unwrap_or_default(),
                subject: env.subject.clone().unwrap_or_default(),
                recipient_subject: recipient_subject.clone(),
                pseudonym_version: pseudonym::VERSION,
                released_fields: serde_json::to_string(&d.released()).unwrap_or_default(),
                updated_at_micros: now,
                expires_at_micros: now + ttl,
            });
            rows.outbox.push(queue::outbox_row(
                now,
                NewItem {
                    org: recipient.as_str(),
                    body: pb::item::Body::Delivery(delivery),
                    delivery_id: &delivery_id,
                    consent_id: env.consent_id.as_ref().map(|c| c.as_str()).unwrap_or(""),
                    sender: caller.org.as_str(),
                    expires_at_micros: now + ttl,
                },
            ));
            counts.push((caller.org.to_string(), recipient.to_string(), 1));
            woken.push(recipient.to_string());
        }
        let label = match outcome {
            pb::recipient_outcome::Outcome::Queued => "queued",
            pb::recipient_outcome::Outcome::QuotaExceeded => "quota_exceeded",
            _ => "denied",
        };
        let mut e: AuditEntry = decision_entry(g, caller, &env, Action::Submitted, &recipient, &d, label);
        e.object_id = message_id.clone();
        entries.push((e, recipient_subject));
        outcomes.push(pb::RecipientOutcome {
            recipient: recipient.to_string(),
            outcome: outcome as i32,
            decision: Some(pb::Decision::from(&d)),
            delivery_id,
        });
    }
    let response = pb::SubmitResponse {
        message_id: message_id.clone(),
        outcomes,
        bundle_version: bundle.version_id().to_owned(),
        replayed: false,
    };
    rows.messages.push(MessageRow {
        sender: caller.org.to_string(),
        message_id: message_id.clone(),
        kind: env.kind.to_string(),
        content_sha256: hash,
        response: response.encode_to_vec(),
        created_at_micros: now,
    });
    audit.extend(entries);
    Ok((response, woken))
}
