//! Routing: deciding each recipient of an envelope, and (for a submission) minimizing, pseudonymizing
//! and queueing each copy in one transaction with its audit entries.

pub mod lifecycle;
pub mod prefetch;
pub mod pseudonym;
pub mod queue;
pub mod rows;
pub mod sealed;
pub mod submit;

use std::sync::Arc;

use haven_proto::v1 as pb;
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::ids::{Caller, OrgId};
use haven_trust::receipt::{ConsentState, ConsentView};

use crate::commit::Committer;
use crate::consent::{self, Stored};
use crate::envelope::{Envelope, MessageId, Recipients};
use crate::error::Error;
use crate::policy::{self, Bundle, Decision, DecisionRequest, DenyReason};
use crate::store::Store;
use time::OffsetDateTime;

/// The decisions for every recipient of one envelope, all from one bundle version.
pub struct Decided {
    pub bundle: Arc<Bundle>,
    pub consent: Option<Stored>,
    pub outcomes: Vec<(OrgId, Decision)>,
}

/// The consent's state as a decision must see it ([`haven_sharing::consent::effective_state`]).
pub fn effective_state(stored: &Stored, now_micros: i64) -> ConsentState {
    let until = i64::try_from(stored.receipt.valid_until.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
    haven_sharing::consent::effective_state(stored.state, until, now_micros)
}

/// Microseconds since the Unix epoch of `t`, as stored.
pub fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// Decides every recipient of `env` for `caller`, at `now`, under `bundle`, with its consent as
/// committed.
pub async fn decide_all(
    store: &Store,
    now: OffsetDateTime,
    bundle: Arc<Bundle>,
    caller: &Caller,
    env: &Envelope,
) -> Result<Decided, Error> {
    let consent = match &env.consent_id {
        Some(id) => consent::load_read(store.pool(), id.as_str()).await?,
        None => None,
    };
    Ok(decide_with(now, caller, env, bundle, consent))
}

/// Whether the registry pins certificates of `org` with which its node could ever connect; nothing
/// is queued for one that cannot, since no stream could ever take it.
fn reachable(bundle: &Bundle, org: &OrgId) -> bool {
    bundle.registry().get(org).is_some_and(|entry| entry.can_connect())
}

/// The refusal of a recipient whose node can never connect: nothing released, every field withheld.
fn not_pinned(bundle: &Bundle, recipient: &OrgId, fields: &[&str]) -> Decision {
    let mut withheld: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    withheld.sort();
    Decision::Deny {
        reason: DenyReason::RecipientNotPinned,
        detail: Some(recipient.to_string()),
        rule_ids: Vec::new(),
        withheld,
        bundle_version: bundle.version_id().to_owned(),
    }
}

/// The pure part of [`decide_all`]: given the bundle and the consent, decide each recipient. An alert
/// to every permitted recipient leaves out the organizations whose nodes can never connect; a
/// recipient named outright is refused `recipient_not_pinned`.
pub fn decide_with(
    now: OffsetDateTime,
    caller: &Caller,
    env: &Envelope,
    bundle: Arc<Bundle>,
    consent: Option<Stored>,
) -> Decided {
    let now_micros = micros(now);
    let recipients = match &env.recipients {
        Recipients::Named(list) => list.clone(),
        Recipients::AllPermitted => bundle
            .candidate_recipients(&caller.org, caller.role, env.kind.as_str(), env.purpose.as_str())
            .into_iter()
            .filter(|org| reachable(&bundle, org))
            .collect(),
    };
    let names: Vec<&str> = env.fields.names();
    let state = consent.as_ref().map(|c| effective_state(c, now_micros));
    let outcomes = recipients
        .into_iter()
        .map(|recipient| {
            if !reachable(&bundle, &recipient) {
                let d = not_pinned(&bundle, &recipient, &names);
                return (recipient, d);
            }
            let req = DecisionRequest {
                sender: &caller.org,
                sender_role: caller.role,
                recipient: &recipient,
                kind: env.kind.as_str(),
                purpose: env.purpose.as_str(),
                subject: env.subject.as_deref(),
                consent_id: env.consent_id.as_ref().map(|c| c.as_str()),
                fields: &names,
            };
            let view = consent.as_ref().zip(state).map(|(c, state)| ConsentView { receipt: &c.receipt, state });
            let d = policy::decide(&req, &bundle, view, now);
            (recipient, d)
        })
        .collect();
    Decided { bundle, consent, outcomes }
}

/// The audit entry for one recipient's decision.
pub fn decision_entry(
    now_micros: i64,
    caller: &Caller,
    env: &Envelope,
    action: Action,
    recipient: &OrgId,
    d: &Decision,
    outcome: &str,
) -> AuditEntry {
    AuditEntry {
        actor_org: caller.org.to_string(),
        actor_person: caller.person.to_string(),
        actor_role: caller.role.to_string(),
        object_id: if env.message_id == MessageId::NONE { String::new() } else { env.message_id.to_string() },
        counterparty: recipient.to_string(),
        subject: env.subject.clone().unwrap_or_default(),
        purpose: env.purpose.to_string(),
        consent_id: env.consent_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        rule_ids: d.rule_ids().to_vec(),
        bundle_version: d.bundle_version().to_owned(),
        decision: if d.allowed() { "allow" } else { "deny" }.into(),
        reason: d.reason().map(|r| r.code().to_owned()).unwrap_or_default(),
        released_fields: d.released().to_vec(),
        withheld_fields: d.withheld().to_vec(),
        outcome: outcome.into(),
        correlation_id: env.correlation_id.clone(),
        source_node: caller.org.to_string(),
        ..AuditEntry::new(action, now_micros)
    }
}

/// The dry run: decides every recipient and audits each decision; queues nothing.
pub async fn dry_run(
    store: &Store,
    commits: &Committer,
    now: OffsetDateTime,
    bundle: Arc<Bundle>,
    caller: &Caller,
    env: &Envelope,
) -> Result<pb::DecideResponse, Error> {
    let decided = decide_all(store, now, bundle, caller, env).await?;
    let entries: Vec<(AuditEntry, String)> = decided
        .outcomes
        .iter()
        .map(|(r, d)| (decision_entry(micros(now), caller, env, Action::Decided, r, d, "dry_run"), String::new()))
        .collect();
    commits.record(entries).await?;
    Ok(pb::DecideResponse {
        outcomes: decided
            .outcomes
            .iter()
            .map(|(r, d)| pb::RecipientOutcome {
                recipient: r.to_string(),
                outcome: if d.allowed() {
                    pb::recipient_outcome::Outcome::Queued
                } else {
                    pb::recipient_outcome::Outcome::Denied
                } as i32,
                decision: Some(pb::Decision::from(d)),
                delivery_id: String::new(),
            })
            .collect(),
        bundle_version: decided.bundle.version_id().to_owned(),
    })
}
