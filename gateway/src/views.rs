//! View records a recipient organization reports (`Gateway.ReportViews`): verified against the
//! registry's signing pins, checked against what the organization received, and written to the audit
//! trail as `viewed` entries asserted by that organization. A record is stored once, by its `view_id`,
//! so the node can send a batch again until it hears back.

use haven_proto::v1::{RefusedView, ReportViewsResponse};
use haven_sharing::policy::Bundle;
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::ids::{Caller, Role};
use haven_trust::token::{self, TokenError};
use haven_trust::views::{MAX_BATCH_BYTES, MAX_VIEWS_PER_BATCH, ViewBatch, ViewRecord};

use crate::audit::Stamp;
use crate::commit::Committer;
use crate::error::Error;
use crate::store::{Store, audit_log, deliveries};

/// The longest person name, role or field name a record may carry.
const MAX_NAME_CHARS: usize = 64;
/// The most field names one record may carry.
const MAX_FIELDS: usize = 128;

/// Verifies a batch and records its views; returns what was stored and what was refused, and why.
pub async fn report(
    store: &Store,
    commits: &Committer,
    bundle: &Bundle,
    stamp: &Stamp,
    caller: &Caller,
    jws: &str,
) -> Result<ReportViewsResponse, Error> {
    if caller.role != Role::Node {
        return Err(Error::PermissionDenied(format!(
            "view records are reported by an organization's node (role node), not by role {}",
            caller.role
        )));
    }
    if jws.len() > MAX_BATCH_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the batch is {} bytes; at most {MAX_BATCH_BYTES} are accepted: send fewer views at once",
            jws.len()
        )));
    }
    let (batch, key_org, _) = token::verify_signed::<ViewBatch>(jws, bundle.registry()).map_err(token_error)?;
    if key_org != caller.org || batch.org != caller.org {
        return Err(Error::PermissionDenied(format!(
            "organization `{}` may report only its own people's views: the batch is signed by `{key_org}` for `{}`",
            caller.org, batch.org
        )));
    }
    if batch.views.len() > MAX_VIEWS_PER_BATCH {
        return Err(Error::InvalidArgument(format!(
            "the batch holds {} views; at most {MAX_VIEWS_PER_BATCH} are accepted",
            batch.views.len()
        )));
    }
    let mut response = ReportViewsResponse::default();
    let mut entries = Vec::new();
    for view in &batch.views {
        if let Err(why) = well_formed(view) {
            response.refused.push(RefusedView {
                view_id: view.view_id.chars().take(64).collect(),
                reason: format!("malformed: {why}"),
            });
            continue;
        }
        if audit_log::view_recorded(store.pool(), caller.org.as_str(), &view.view_id).await? {
            response.stored.push(view.view_id.clone());
            continue;
        }
        match deliveries::received_by(store.pool(), &view.message_id, caller.org.as_str()).await? {
            Some((sender, sender_subject, _)) => {
                entries.push((entry(stamp, caller, view, &sender, "asserted", ""), sender_subject));
                response.stored.push(view.view_id.clone());
            }
            None => {
                // Refused, and the refusal is in the trail: a node reporting views of messages it never
                // received is worth an auditor's look.
                entries.push((entry(stamp, caller, view, "", "refused", "not_received"), String::new()));
                response.refused.push(RefusedView { view_id: view.view_id.clone(), reason: "not_received".into() });
            }
        }
    }
    if !entries.is_empty() {
        commits.record(entries).await?;
    }
    Ok(response)
}

fn well_formed(view: &ViewRecord) -> Result<(), String> {
    uuid::Uuid::parse_str(&view.view_id).map_err(|_| "view_id is not a UUID".to_owned())?;
    uuid::Uuid::parse_str(&view.message_id).map_err(|_| "message_id is not a UUID".to_owned())?;
    Role::parse(&view.role).map_err(|e| format!("role: {e}"))?;
    if view.person.is_empty() || view.person.chars().count() > MAX_NAME_CHARS {
        return Err(format!("person must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if view.fields.len() > MAX_FIELDS || view.fields.iter().any(|f| f.is_empty() || f.chars().count() > MAX_NAME_CHARS)
    {
        return Err(format!("at most {MAX_FIELDS} field names of 1 to {MAX_NAME_CHARS} characters"));
    }
    if view.subject.chars().count() > MAX_NAME_CHARS {
        return Err(format!("subject is longer than {MAX_NAME_CHARS} characters"));
    }
    Ok(())
}

fn entry(stamp: &Stamp, caller: &Caller, view: &ViewRecord, sender: &str, outcome: &str, reason: &str) -> AuditEntry {
    AuditEntry {
        actor_org: caller.org.to_string(),
        actor_person: view.person.clone(),
        actor_role: view.role.clone(),
        object_id: view.message_id.clone(),
        counterparty: sender.to_owned(),
        subject: view.subject.clone(),
        released_fields: view.fields.clone(),
        correlation_id: view.view_id.clone(),
        outcome: outcome.into(),
        reason: reason.into(),
        source_node: caller.org.to_string(),
        ..stamp.entry(Action::Viewed)
    }
}

fn token_error(e: TokenError) -> Error {
    Error::InvalidArgument(match e {
        TokenError::BadSignature => {
            "the view batch's signature does not verify: it was forged or changed after signing".into()
        }
        TokenError::UnknownKey(k) => {
            format!("the view batch is signed with certificate {k} that no organization's signing pin names")
        }
        TokenError::BadClaims(m) => format!("the view batch is not a batch of view records: {m}"),
        other => format!("view batch: {other}"),
    })
}
