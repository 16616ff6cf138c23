//! Submitting a referral or an alert: in one transaction, decide each recipient, minimize each copy,
//! replace the subject's pseudonym with the recipient's own, queue the copies and write every audit
//! entry. An identical resubmission returns the first reply and queues nothing.

use haven_proto::v1 as pb;
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::clock::SharedClock;
use haven_trust::ids::Caller;
use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use std::sync::Arc;

use time::OffsetDateTime;

use super::queue::{self, CountChanges, NewItem};
use super::rows::{DeliveryRow, MessageRow};
use super::sealed::Copies;
use super::{decide_with, decision_entry, micros, pseudonym};
use crate::commit::{Committer, Effects, Prefetched, Reads};
use crate::envelope::{Envelope, Recipients};
use crate::error::{Error, SubmitError};
use crate::policy::{Bundle, DenyReason};

/// What makes two submissions with one id the same: everything the sender chose, its sealed copies
/// included (a node seals once and sends the same bytes on every retry).
fn content_hash(env: &Envelope, copies: &Copies) -> String {
    let recipients = match &env.recipients {
        Recipients::Named(list) => list.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(","),
        Recipients::AllPermitted => "*".into(),
    };
    let canonical = format!(
        "{}\n{}\n{}\n{:?}\n{:?}\n{:?}\n{}\n{}",
        env.kind,
        recipients,
        env.purpose,
        env.subject,
        env.consent_id,
        env.fields.names(),
        env.correlation_id,
        copies.digest()
    );
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// What a submission is planned with besides its facts: the moment, the bundle in force and the
/// pseudonym secret.
pub struct Context<'a> {
    pub now: OffsetDateTime,
    pub bundle: Arc<Bundle>,
    pub pseudonym_key: &'a [u8; 32],
}

/// What a submission reads: whether its message id was used, its consent, and its sender's counts.
fn reads(caller: &Caller, env: &Envelope) -> Reads {
    Reads {
        messages: vec![(caller.org.to_string(), env.message_id.to_string())],
        consents: env.consent_id.iter().map(ToString::to_string).collect(),
        senders: vec![caller.org.to_string()],
        ..Reads::default()
    }
}

/// Submits an envelope for `caller` under `bundle`, in the next shared commit; returns once it is
/// durable, with the organizations that have something new queued (for the caller to wake).
pub async fn submit(
    commits: &Committer,
    clock: &SharedClock,
    bundle: Arc<Bundle>,
    pseudonym_key: [u8; 32],
    caller: &Caller,
    env: Envelope,
    copies: Copies,
) -> Result<(pb::SubmitResponse, Vec<String>), Error> {
    let reads = reads(caller, &env);
    let (clock, who) = (clock.clone(), caller.clone());
    commits
        .run(reads, move |seen, fx| {
            let cx = Context { now: clock.now(), bundle, pseudonym_key: &pseudonym_key };
            submit_in(seen, fx, &cx, &who, env, &copies)
        })
        .await
}

/// A fact the batch must have read for this unit, since the unit named it; missing, it is a bug.
fn unread(what: &'static str) -> SubmitError {
    SubmitError::FactsUnread { what }
}

/// The submission itself, planned on what its batch read (`seen`) and on what earlier units of the
/// batch wrote (`fx`), and written to the batch's buffers: each recipient decided, quota checked,
/// each copy minimized and pseudonymized, every audit entry. No I/O. Returns the reply and the
/// organizations that have something new queued.
pub fn submit_in(
    seen: &Prefetched,
    fx: &mut Effects,
    cx: &Context<'_>,
    caller: &Caller,
    env: Envelope,
    copies: &Copies,
) -> Result<(pb::SubmitResponse, Vec<String>), Error> {
    let hash = content_hash(&env, copies);
    let now = micros(cx.now);
    let message_id = env.message_id.to_string();
    let sender = caller.org.as_str();

    // The same message id again: from an earlier commit, or from an earlier unit of this one.
    let earlier = match fx.rows.message(sender, &message_id) {
        Some(m) => Some((m.content_sha256.clone(), m.response.clone())),
        None => seen.message(sender, &message_id).ok_or_else(|| unread("the message id"))?.cloned(),
    };
    if let Some((stored, bytes)) = earlier {
        if stored != hash {
            return Err(SubmitError::MessageIdReused { id: message_id }.into());
        }
        let mut resp = pb::SubmitResponse::decode(bytes.as_slice())
            .map_err(|e| SubmitError::StoredReplyUnreadable { id: message_id.clone(), why: e.to_string() })?;
        resp.replayed = true;
        return Ok((resp, Vec::new()));
    }

    // Copies sealed under another bundle are refused whole, and nothing is stored: the sender decides
    // and seals again under the bundle in force, with the same message id.
    if let Some(why) = copies.stale() {
        return Err(Error::FailedPrecondition(why.to_owned()));
    }

    // The consent row is locked (by the batch or the unit's own read), so a revocation racing this
    // submission either committed first (and this submission sees it) or waits for this commit (and
    // its cascade sees these copies).
    let stored_consent = match &env.consent_id {
        Some(id) => seen.consent(id.as_str()).ok_or_else(|| unread("the consent"))??.cloned(),
        None => None,
    };
    let bundle = cx.bundle.clone();
    let decided = decide_with(cx.now, caller, &env, bundle.clone(), stored_consent);
    // At most 3660 days (the bundle's ceiling), so neither this nor `now + ttl` can overflow.
    let ttl = i64::from(bundle.network().delivery_ttl_days) * 86_400_000_000;
    let quota = i64::from(bundle.network().queue_quota);
    let mut outcomes = Vec::with_capacity(decided.outcomes.len());
    let mut entries: Vec<(AuditEntry, String)> = Vec::with_capacity(decided.outcomes.len());
    let mut woken = Vec::new();
    for (recipient, d) in decided.outcomes {
        // The copy the sender sealed for this recipient must fit the decision, or the recipient is refused.
        let (mut d, sealed) = copies.apply(&recipient, d);
        let mut outcome =
            if d.allowed() { pb::recipient_outcome::Outcome::Queued } else { pb::recipient_outcome::Outcome::Denied };
        // Committed, plus what this shared commit queued before this submission. The batch's changes
        // are summed only when they could reach the quota: they add at most one each.
        let committed = seen.pending(sender, recipient.as_str()).ok_or_else(|| unread("the queue counts"))?;
        let near = committed + i64::try_from(fx.counts.len()).unwrap_or(i64::MAX) >= quota;
        let queued = |counts: &CountChanges| {
            counts.iter().filter(|(s, o, _)| s == sender && o == recipient.as_str()).map(|c| c.2).sum::<i64>()
        };
        if d.allowed() && near && committed + queued(&fx.counts) >= quota {
            outcome = pb::recipient_outcome::Outcome::QuotaExceeded;
            d = d.refused(DenyReason::QuotaExceeded, Some(recipient.to_string()));
        }
        let mut delivery_id = String::new();
        let mut recipient_subject = String::new();
        if outcome == pb::recipient_outcome::Outcome::Queued
            && let Some((sealed, not_after)) = sealed
        {
            // Never later than the manifest's own end, past which the recipient would refuse the copy:
            // a send that waited at its node expires here, and its sender is told.
            let expires = (now + ttl).min(not_after.saturating_mul(1_000_000));
            delivery_id = Uuid::now_v7().to_string();
            // The sender is the controller of the subject it names: a consent a rule relies on must be
            // the sender's own (the decision checked it).
            recipient_subject = env
                .subject
                .as_deref()
                .map(|s| pseudonym::for_recipient(cx.pseudonym_key, recipient.as_str(), sender, s))
                .unwrap_or_default();
            let delivery = pb::Delivery {
                message_id: message_id.clone(),
                kind: env.kind.to_string(),
                sender: caller.org.to_string(),
                sender_person: caller.person.to_string(),
                purpose: env.purpose.to_string(),
                subject_pseudonym: recipient_subject.clone(),
                fields: Default::default(),
                withheld_fields: d.withheld().to_vec(),
                rule_ids: d.rule_ids().to_vec(),
                bundle_version: d.bundle_version().to_owned(),
                expires_at_micros: expires,
                correlation_id: env.correlation_id.clone(),
                sealed: Some(sealed),
            };
            fx.rows.deliveries.push(DeliveryRow {
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
                expires_at_micros: expires,
            });
            fx.rows.outbox.push(queue::outbox_row(
                now,
                NewItem {
                    org: recipient.as_str(),
                    body: pb::item::Body::Delivery(delivery),
                    delivery_id: &delivery_id,
                    consent_id: env.consent_id.as_ref().map(|c| c.as_str()).unwrap_or(""),
                    sender,
                    expires_at_micros: expires,
                },
            ));
            fx.counts.push((caller.org.to_string(), recipient.to_string(), 1));
            woken.push(recipient.to_string());
        }
        let label = match outcome {
            pb::recipient_outcome::Outcome::Queued => "queued",
            pb::recipient_outcome::Outcome::QuotaExceeded => "quota_exceeded",
            _ => "denied",
        };
        let mut e: AuditEntry = decision_entry(now, caller, &env, Action::Submitted, &recipient, &d, label);
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
    fx.rows.messages.push(MessageRow {
        sender: caller.org.to_string(),
        message_id,
        kind: env.kind.to_string(),
        content_sha256: hash,
        response: response.encode_to_vec(),
        created_at_micros: now,
    });
    fx.audit.extend(entries);
    Ok((response, woken))
}

#[cfg(test)]
mod tests {
    //! The submission's plan, on facts written by hand: no database. The bundle is the shipped sample,
    //! with made-up pins so that every organization can connect.

    use std::collections::BTreeMap;

    use haven_trust::ids::{OrgId, OrgType, PersonId, Role};
    use haven_trust::registry::{Fingerprint, PinSet, PinsFile};

    use super::*;

    const KEY: [u8; 32] = [9; 32];
    const MESSAGE: &str = "0190d5a0-0000-7000-8000-0000000000aa";

    fn bundle() -> Arc<Bundle> {
        let dir = tempfile::tempdir().unwrap();
        let org = ["harbor", "northstar", "maple-house", "metro-police", "county-sheriff"]
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let n = u8::try_from(i).unwrap();
                (
                    OrgId::parse(o).unwrap(),
                    PinSet { tls: vec![Fingerprint([n; 32])], signing: vec![Fingerprint([n + 100; 32])] },
                )
            })
            .collect::<BTreeMap<_, _>>();
        let pins = dir.path().join("pins.toml");
        std::fs::write(&pins, toml::to_string(&PinsFile { gateway: PinSet::default(), org }).unwrap()).unwrap();
        let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        Arc::new(Bundle::load(&policies, Some(&pins)).unwrap_or_else(|e| panic!("{e:#?}")))
    }

    fn caseworker() -> Caller {
        Caller {
            org: OrgId::parse("harbor").unwrap(),
            org_type: OrgType::parse("ngo").unwrap(),
            person: PersonId::parse("casey").unwrap(),
            role: Role::Caseworker,
        }
    }

    /// Copies as the sender's node seals them: to each police organization the fields its own decision
    /// releases (never the victim's name), to the shelter a referral's.
    fn copies() -> Copies {
        Copies::assumed(&[
            ("metro-police", &["incident_type", "location_area"]),
            ("county-sheriff", &["incident_type", "location_area"]),
            ("maple-house", &["safe_to_contact_by", "survivor_first_name", "urgency"]),
        ])
    }

    /// A safety alert to both police organizations, naming a (fictional) victim the rules withhold.
    fn alert(bundle: &Bundle) -> Envelope {
        let env = pb::Envelope {
            message_id: MESSAGE.into(),
            kind: "alert".into(),
            recipients: vec!["metro-police".into(), "county-sheriff".into()],
            purpose: "safety_alert".into(),
            field_names: vec!["incident_type".into(), "location_area".into(), "victim_name".into()],
            ..Default::default()
        };
        crate::envelope::parse(Some(env), bundle, &caseworker().org, true).unwrap()
    }

    fn context(bundle: Arc<Bundle>) -> Context<'static> {
        Context { now: time::macros::datetime!(2025-06-01 12:00 UTC), bundle, pseudonym_key: &KEY }
    }

    /// The facts of a first submission: the id unused, nothing queued.
    fn fresh() -> Prefetched {
        Prefetched::held().with_message("harbor", MESSAGE, None).with_counts("harbor", &[])
    }

    fn outcome(r: &pb::SubmitResponse, org: &str) -> pb::recipient_outcome::Outcome {
        let o = r.outcomes.iter().find(|o| o.recipient == org).unwrap_or_else(|| panic!("no outcome for {org}"));
        pb::recipient_outcome::Outcome::try_from(o.outcome).unwrap()
    }

    #[test]
    fn a_new_alert_queues_a_minimized_copy_per_recipient_with_its_entries() {
        let b = bundle();
        let mut fx = Effects::default();
        let (resp, woken) =
            submit_in(&fresh(), &mut fx, &context(b.clone()), &caseworker(), alert(&b), &copies()).unwrap();
        assert_eq!(woken, ["metro-police", "county-sheriff"]);
        assert_eq!(outcome(&resp, "metro-police"), pb::recipient_outcome::Outcome::Queued);
        assert!(!resp.replayed);
        assert_eq!((fx.rows.messages.len(), fx.rows.deliveries.len(), fx.rows.outbox.len()), (1, 2, 2));
        for d in &fx.rows.deliveries {
            assert_eq!(d.released_fields, r#"["incident_type","location_area"]"#, "the victim's name never goes");
        }
        assert_eq!(fx.audit.len(), 2, "one entry per recipient");
        assert!(
            fx.audit.iter().all(|(e, _)| e.action == "submitted" && e.outcome == "queued" && e.object_id == MESSAGE)
        );
        assert_eq!(fx.counts.len(), 2);
    }

    #[test]
    fn the_same_message_again_replays_the_stored_reply_and_queues_nothing() {
        let b = bundle();
        let mut first = Effects::default();
        let (resp, _) =
            submit_in(&fresh(), &mut first, &context(b.clone()), &caseworker(), alert(&b), &copies()).unwrap();
        let stored = (first.rows.messages[0].content_sha256.clone(), first.rows.messages[0].response.clone());
        let seen = Prefetched::held().with_message("harbor", MESSAGE, Some(stored)).with_counts("harbor", &[]);
        let mut fx = Effects::default();
        let (again, woken) =
            submit_in(&seen, &mut fx, &context(b.clone()), &caseworker(), alert(&b), &copies()).unwrap();
        assert!(again.replayed && woken.is_empty());
        assert_eq!(again.outcomes, resp.outcomes);
        assert!(fx.rows.messages.is_empty() && fx.rows.deliveries.is_empty() && fx.audit.is_empty());
        // An earlier unit of the same batch counts as well.
        let (again, _) =
            submit_in(&fresh(), &mut first, &context(b.clone()), &caseworker(), alert(&b), &copies()).unwrap();
        assert!(again.replayed);
        assert_eq!(first.rows.messages.len(), 1);
    }

    #[test]
    fn a_different_message_under_a_used_id_is_refused() {
        let b = bundle();
        let seen = Prefetched::held().with_message("harbor", MESSAGE, Some(("other".into(), Vec::new())));
        let mut fx = Effects::default();
        let e = submit_in(&seen, &mut fx, &context(b.clone()), &caseworker(), alert(&b), &copies()).unwrap_err();
        assert!(matches!(&e, Error::Submit(SubmitError::MessageIdReused { id }) if id == MESSAGE), "{e:?}");
        assert!(fx.rows.messages.is_empty() && fx.audit.is_empty());
    }

    #[test]
    fn a_recipient_at_its_quota_is_refused_and_audited_while_the_others_queue() {
        let b = bundle();
        let quota = i64::from(b.network().queue_quota);
        let seen =
            Prefetched::held().with_message("harbor", MESSAGE, None).with_counts("harbor", &[("metro-police", quota)]);
        let mut fx = Effects::default();
        let (resp, woken) =
            submit_in(&seen, &mut fx, &context(b.clone()), &caseworker(), alert(&b), &copies()).unwrap();
        assert_eq!(outcome(&resp, "metro-police"), pb::recipient_outcome::Outcome::QuotaExceeded);
        assert_eq!(outcome(&resp, "county-sheriff"), pb::recipient_outcome::Outcome::Queued);
        assert_eq!(woken, ["county-sheriff"]);
        let refused = fx.audit.iter().find(|(e, _)| e.counterparty == "metro-police").unwrap();
        assert_eq!((refused.0.outcome.as_str(), refused.0.reason.as_str()), ("quota_exceeded", "quota_exceeded"));
        assert_eq!(fx.rows.deliveries.len(), 1);
    }

    #[test]
    fn a_referral_under_a_consent_that_does_not_exist_is_denied_and_queues_nothing() {
        let b = bundle();
        let consent = "0190d5a0-0000-7000-8000-0000000000cc";
        let env = pb::Envelope {
            message_id: MESSAGE.into(),
            kind: "referral".into(),
            recipients: vec!["maple-house".into()],
            purpose: "housing".into(),
            subject_pseudonym: "s-fictional-subject-000007".into(),
            consent_id: consent.into(),
            field_names: vec!["urgency".into(), "safe_to_contact_by".into(), "survivor_first_name".into()],
            ..Default::default()
        };
        let env = crate::envelope::parse(Some(env), &b, &caseworker().org, true).unwrap();
        let seen = fresh().with_consent(consent, None);
        let mut fx = Effects::default();
        let (resp, woken) = submit_in(&seen, &mut fx, &context(b.clone()), &caseworker(), env, &copies()).unwrap();
        assert_eq!(outcome(&resp, "maple-house"), pb::recipient_outcome::Outcome::Denied);
        assert!(woken.is_empty() && fx.rows.deliveries.is_empty() && fx.counts.is_empty());
        assert_eq!(fx.rows.messages.len(), 1, "the reply is kept, so a retry gets the same answer");
        assert_eq!((fx.audit[0].0.decision.as_str(), fx.audit[0].0.outcome.as_str()), ("deny", "denied"));
    }

    #[test]
    fn a_consent_whose_row_cannot_be_read_back_is_reported_as_damaged_data() {
        let b = bundle();
        let consent = "0190d5a0-0000-7000-8000-0000000000cd";
        let mut env = alert(&b);
        env.consent_id = Some(crate::envelope::ConsentId::parse(consent).unwrap());
        let seen = fresh().with_damaged_consent(consent, "a stored consent receipt cannot be decoded");
        let mut fx = Effects::default();
        let e = submit_in(&seen, &mut fx, &context(b.clone()), &caseworker(), env, &copies()).unwrap_err();
        assert!(
            matches!(&e, Error::Store(crate::store::StoreError::Unreadable(why)) if why.contains("decoded")),
            "{e:?}"
        );
        assert_eq!(crate::error::code(&e), tonic::Code::Internal);
        assert!(fx.rows.messages.is_empty() && fx.audit.is_empty());
    }

    #[test]
    fn facts_the_batch_did_not_read_are_a_bug_not_a_guess() {
        let b = bundle();
        let mut fx = Effects::default();
        let e = submit_in(&Prefetched::held(), &mut fx, &context(b.clone()), &caseworker(), alert(&b), &copies())
            .unwrap_err();
        assert!(matches!(e, Error::Submit(SubmitError::FactsUnread { .. })), "{e:?}");
        assert_eq!(crate::error::code(&e), tonic::Code::Internal, "a bug, not a retry");
    }

    #[test]
    fn a_copy_that_does_not_fit_the_decision_refuses_its_recipient_only() {
        let b = bundle();
        let exceeding = Copies::assumed(&[
            ("metro-police", &["incident_type", "location_area", "victim_name"]),
            ("county-sheriff", &["incident_type"]),
        ]);
        let mut fx = Effects::default();
        let (resp, woken) =
            submit_in(&fresh(), &mut fx, &context(b.clone()), &caseworker(), alert(&b), &exceeding).unwrap();
        assert_eq!(outcome(&resp, "metro-police"), pb::recipient_outcome::Outcome::Denied);
        let d = resp.outcomes.iter().find(|o| o.recipient == "metro-police").unwrap().decision.clone().unwrap();
        assert_eq!(d.reason_code, "manifest_exceeds_grant");
        assert!(d.reason_detail.contains("victim_name"), "{}", d.reason_detail);
        assert_eq!(woken, ["county-sheriff"]);
        let sheriff = fx.rows.deliveries.iter().find(|r| r.recipient == "county-sheriff").unwrap();
        assert_eq!(sheriff.released_fields, r#"["incident_type"]"#, "what was sealed is what is released");

        let none = Copies::assumed(&[("county-sheriff", &["incident_type"])]);
        let mut fx = Effects::default();
        let (resp, _) = submit_in(&fresh(), &mut fx, &context(b.clone()), &caseworker(), alert(&b), &none).unwrap();
        let d = resp.outcomes.iter().find(|o| o.recipient == "metro-police").unwrap().decision.clone().unwrap();
        assert_eq!(d.reason_code, "no_sealed_copy");
    }
}
