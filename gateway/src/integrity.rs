//! Integrity failures a recipient's node reports (`Gateway.ReportIntegrityFailure`): a sealed copy it
//! refused because its manifest, its hash or its content failed a check. The gateway cannot check the
//! claim (it cannot open the copy), so it records it as the recipient's assertion, in an
//! `integrity_failure` audit entry, and tells the sender (`SenderNotice.REJECTED`), in one commit. A
//! failure is recorded once per message and recipient.

use haven_proto::v1 as pb;
use haven_proto::v1::{ReportIntegrityFailureRequest, ReportIntegrityFailureResponse};
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::ids::{Caller, Role};
use haven_trust::untrusted;

use crate::audit::Stamp;
use crate::commit::{Committer, Reads};
use crate::error::Error;
use crate::routing::queue::{self, NewItem};
use crate::store::{Store, audit_log, deliveries};

/// The reasons a node may report.
pub const REASONS: [&str; 8] = [
    "manifest_mismatch",
    "manifest_expired",
    "sealed_copy_unopenable",
    "fields_mismatch",
    "fields_invalid",
    "unknown_bundle",
    "key_log_split",
    "unknown_sealing_key",
];

/// The longest detail kept, in characters.
pub const MAX_DETAIL_CHARS: usize = 300;

/// Records a recipient's report of a copy it refused.
pub async fn report(
    store: &Store,
    commits: &Committer,
    stamp: &Stamp,
    caller: &Caller,
    r: ReportIntegrityFailureRequest,
) -> Result<ReportIntegrityFailureResponse, Error> {
    if caller.role != Role::Node {
        return Err(Error::PermissionDenied(format!(
            "integrity failures are reported by an organization's node (role node), not by role {}",
            caller.role
        )));
    }
    if !REASONS.contains(&r.reason.as_str()) {
        return Err(Error::InvalidArgument(format!(
            "unknown integrity failure reason `{}`; one of: {}",
            untrusted::shown(&r.reason),
            REASONS.join(", ")
        )));
    }
    uuid::Uuid::parse_str(&r.message_id).map_err(|_| {
        Error::InvalidArgument(format!("message_id `{}` is not a UUID", untrusted::shown(&r.message_id)))
    })?;
    let sender = haven_trust::ids::OrgId::parse(&r.sender)
        .map_err(|e| Error::InvalidArgument(format!("sender: {e}")))?
        .to_string();
    let Some(sender_subject) =
        deliveries::received_from(store.pool(), &r.message_id, caller.org.as_str(), &sender).await?
    else {
        return Err(Error::NotFound(format!(
            "organization `{}` received no message `{}` from `{sender}`; only a delivered copy can be reported",
            caller.org, r.message_id
        )));
    };
    if audit_log::integrity_failure_recorded(store.pool(), caller.org.as_str(), &r.message_id, &sender).await? {
        return Ok(ReportIntegrityFailureResponse { recorded: false });
    }
    let detail: String = r.detail.chars().filter(|c| !c.is_control()).take(MAX_DETAIL_CHARS).collect();
    let entry = AuditEntry {
        actor_org: caller.org.to_string(),
        actor_person: caller.person.to_string(),
        actor_role: caller.role.as_str().to_owned(),
        object_id: r.message_id.clone(),
        counterparty: sender.clone(),
        outcome: "rejected".into(),
        reason: r.reason.clone(),
        source_node: caller.org.to_string(),
        ..stamp.entry(Action::IntegrityFailure)
    };
    let notice = pb::SenderNotice {
        message_id: r.message_id.clone(),
        recipient: caller.org.to_string(),
        kind: pb::sender_notice::Kind::Rejected as i32,
        reason: format!("integrity: {}: {detail}", r.reason),
        at_micros: stamp.now,
    };
    let row = queue::outbox_row(
        stamp.now,
        NewItem {
            org: &sender,
            body: pb::item::Body::SenderNotice(notice),
            delivery_id: "",
            consent_id: "",
            sender: "",
            expires_at_micros: i64::MAX,
        },
    );
    commits
        .run(Reads::default(), move |_, fx| {
            fx.rows.outbox.push(row);
            fx.audit.push((entry, sender_subject));
            Ok(())
        })
        .await?;
    tracing::warn!(recipient = %caller.org, message_id = %r.message_id, reason = %r.reason, "a recipient refused a sealed copy");
    Ok(ReportIntegrityFailureResponse { recorded: true })
}
