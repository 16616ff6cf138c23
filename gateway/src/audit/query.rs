//! Reading the log for people: who may see which entries, the filters they may apply, and how an entry
//! is shown to a privacy officer whose organization only received data.
//!
//! - A network auditor (role `auditor` in an organization of type `auditor`) sees every entry as
//!   stored.
//! - A `privacy_officer` sees the entries in which their organization is the actor or the
//!   counterparty. In an entry where their organization is only the counterparty, the subject shown is
//!   the recipient-scoped pseudonym (`counterparty_subject`), never the controller's; the entry then
//!   carries the commitment to the controller's, and the leaf commits to the pseudonym shown, so it
//!   still verifies and the pseudonym cannot be swapped (see `haven_trust::audit`). In an entry of their
//!   own organization, the counterparty's pseudonym is given as its commitment. A subject filter matches
//!   what the officer is shown.
//! - Everyone else gets PERMISSION_DENIED.
//!
//! A subject is a pseudonym *of an organization*: an entry's subject is its actor's (see
//! `AuditEntry::subject`). Two controllers that use the same pseudonym string have two subjects, so
//! a subject access report is keyed by (controller, pseudonym), and a subject filter may name the
//! controller too (`subject_controller`).

use std::borrow::Cow;

use haven_proto::v1::AuditFilter;
use haven_trust::audit::{Action, AuditEntry, counterparty_subject_commitment};
use haven_trust::ids::{Caller, OrgId, Role};
use haven_trust::merkle::Hash;

use crate::error::Error;
use crate::store::StoreError;
use crate::store::audit_log::{Column, Select};

/// The largest page a query returns.
pub const MAX_PAGE: u32 = 1000;
/// The page size when none is given.
pub const DEFAULT_PAGE: u32 = 100;

/// Which entries a caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A network auditor: every entry, as stored.
    All,
    /// A privacy officer: entries where this organization is the actor or the counterparty.
    Org(OrgId),
}

impl Scope {
    /// The scope of a caller, or PERMISSION_DENIED naming who may read the log.
    pub fn of(caller: &Caller) -> Result<Scope, Error> {
        match caller.role {
            Role::Auditor if caller.org_type.as_str() == "auditor" => Ok(Scope::All),
            Role::PrivacyOfficer => Ok(Scope::Org(caller.org.clone())),
            _ => Err(Error::PermissionDenied(format!(
                "the audit log is open to network auditors (role `auditor` in an organization of type `auditor`) and to privacy officers (role `privacy_officer`), not to role `{}` in an organization of type `{}`",
                caller.role, caller.org_type
            ))),
        }
    }
}

/// A validated filter. Absent values do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub from_micros: i64,
    /// Exclusive.
    pub until_micros: Option<i64>,
    /// The actor or the counterparty.
    pub org: Option<String>,
    pub person: Option<String>,
    pub action: Option<String>,
    pub decision: Option<String>,
    pub subject: Option<String>,
    /// The organization that minted `subject`: only entries about its subject (the ones it is the
    /// actor of). Only with `subject`.
    pub subject_controller: Option<String>,
    /// Matches `object_id`.
    pub message_id: Option<String>,
    pub consent_id: Option<String>,
}

/// The longest identifier a filter accepts.
const MAX_ID: usize = 128;

/// Filter values are identifiers (organization and person ids, pseudonyms, UUIDs), never free text:
/// they are written into the query's own audit entry.
fn identifier(name: &str, value: &str) -> Result<Option<String>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_ID
        || !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(Error::InvalidArgument(format!(
            "filter.{name} must be an identifier of at most {MAX_ID} characters from `A-Z a-z 0-9 - _ . :`"
        )));
    }
    Ok(Some(value.to_owned()))
}

impl Filter {
    /// Validates a filter from the wire.
    pub fn parse(f: Option<&AuditFilter>) -> Result<Filter, Error> {
        let Some(f) = f else { return Ok(Filter::default()) };
        if f.from_micros < 0 || f.until_micros < 0 {
            return Err(Error::InvalidArgument("filter.from_micros and filter.until_micros cannot be negative".into()));
        }
        let until_micros = (f.until_micros != 0).then_some(f.until_micros);
        if let Some(until) = until_micros
            && until <= f.from_micros
        {
            return Err(Error::InvalidArgument(format!(
                "inverted time range: filter.until_micros ({until}) must be after filter.from_micros ({}); 0 means no upper bound",
                f.from_micros
            )));
        }
        let action = identifier("action", &f.action)?;
        if let Some(a) = &action
            && Action::parse(a).is_none()
        {
            return Err(Error::InvalidArgument(format!(
                "unknown filter.action `{a}` (known: {})",
                Action::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let decision = identifier("decision", &f.decision)?;
        if let Some(d) = &decision
            && d != "allow"
            && d != "deny"
        {
            return Err(Error::InvalidArgument(format!("unknown filter.decision `{d}` (known: allow, deny)")));
        }
        let subject = identifier("subject", &f.subject)?;
        let subject_controller = identifier("subject_controller", &f.subject_controller)?;
        if subject_controller.is_some() && subject.is_none() {
            return Err(Error::InvalidArgument(
                "filter.subject_controller names whose pseudonym filter.subject is: give filter.subject too".into(),
            ));
        }
        Ok(Filter {
            from_micros: f.from_micros,
            until_micros,
            org: identifier("org", &f.org)?,
            person: identifier("person", &f.person)?,
            action,
            decision,
            subject,
            subject_controller,
            message_id: identifier("message_id", &f.message_id)?,
            consent_id: identifier("consent_id", &f.consent_id)?,
        })
    }

    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// The filter as `name = value` pairs, for an export's header.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.from_micros != 0 {
            out.push(("from_micros", self.from_micros.to_string()));
        }
        if let Some(u) = self.until_micros {
            out.push(("until_micros", u.to_string()));
        }
        for (name, v) in [
            ("org", &self.org),
            ("person", &self.person),
            ("action", &self.action),
            ("decision", &self.decision),
            ("subject", &self.subject),
            ("subject_controller", &self.subject_controller),
            ("message_id", &self.message_id),
            ("consent_id", &self.consent_id),
        ] {
            if let Some(v) = v {
                out.push((name, v.clone()));
            }
        }
        out
    }

    /// The audit entry that records a read with this filter: the identifiers the reader looked for go
    /// into the fields of the same name, so "who looked up subject X" is itself in the log.
    pub fn audit_entry(&self, caller: &Caller, action: Action, now_micros: i64) -> AuditEntry {
        AuditEntry {
            actor_org: caller.org.to_string(),
            actor_person: caller.person.to_string(),
            actor_role: caller.role.to_string(),
            object_id: self.message_id.clone().unwrap_or_default(),
            counterparty: self.org.clone().unwrap_or_default(),
            subject: self.subject.clone().unwrap_or_default(),
            consent_id: self.consent_id.clone().unwrap_or_default(),
            outcome: "ok".into(),
            source_node: caller.org.to_string(),
            ..AuditEntry::new(action, now_micros)
        }
    }
}

/// One entry as a reader is allowed to see it.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The entry; for a redacted one, `subject` is the counterparty's pseudonym and
    /// `counterparty_subject` is empty.
    pub entry: AuditEntry,
    /// For a redacted entry, the commitment to the controller's subject, which it does not show.
    pub subject_commitment: Option<Hash>,
    /// For an entry of the reader's own organization, the commitment to the counterparty's pseudonym,
    /// which it does not show.
    pub counterparty_subject_commitment: Option<Hash>,
}

impl Shown {
    /// The (subject, counterparty subject) commitments the leaf hashes. In a redacted entry the subject
    /// shown is the counterparty's pseudonym (bound from version 3 on; version 2 ignores the second).
    pub fn leaf_commitments(&self) -> (Hash, Hash) {
        let e = &self.entry;
        match self.subject_commitment {
            Some(subject) => (subject, counterparty_subject_commitment(e.seq, &e.subject)),
            None => (
                e.subject_commitment(),
                self.counterparty_subject_commitment.unwrap_or_else(|| e.counterparty_subject_commitment()),
            ),
        }
    }

    /// The entry's leaf hash, recomputed from what is shown.
    pub fn leaf_hash(&self) -> Hash {
        let (subject, counterparty) = self.leaf_commitments();
        self.entry.fields(&subject, &counterparty).leaf_hash()
    }

    /// The entry as an export shows it: only what its leaf binds, so a redacted entry of encoding
    /// version 2 (whose leaf does not bind the counterparty's pseudonym) shows no subject.
    pub fn exported(&self) -> Cow<'_, AuditEntry> {
        if self.subject_commitment.is_some() && !self.entry.encoding_version.binds_counterparty_subject() {
            let mut e = self.entry.clone();
            e.subject.clear();
            return Cow::Owned(e);
        }
        Cow::Borrowed(&self.entry)
    }

    /// The wire form, with the canonical bytes the leaf hashes.
    pub fn to_proto(&self) -> haven_proto::v1::AuditEntry {
        let (subject, counterparty) = self.leaf_commitments();
        let canonical = self.entry.fields(&subject, &counterparty).canonical();
        haven_proto::convert::WireEntry { entry: &self.entry, canonical }.into()
    }
}

/// Entries with `from_seq <= seq < to_seq` that `scope` may see and `filter` selects, in seq order, at
/// most `limit` of them, as the reader may see them.
pub async fn select(
    pool: &sqlx::AnyPool,
    scope: &Scope,
    filter: &Filter,
    from_seq: u64,
    to_seq: Option<u64>,
    limit: u32,
) -> Result<Vec<Shown>, StoreError> {
    let mut w = Select::new(from_seq, to_seq);
    if filter.from_micros != 0 {
        w.time_from(filter.from_micros);
    }
    if let Some(u) = filter.until_micros {
        w.time_until(u);
    }
    if let Scope::Org(org) = scope {
        w.involving(org.as_str());
    }
    if let Some(org) = &filter.org {
        w.involving(org);
    }
    for (column, value) in [
        (Column::ActorPerson, &filter.person),
        (Column::Action, &filter.action),
        (Column::Decision, &filter.decision),
        (Column::ObjectId, &filter.message_id),
        (Column::ConsentId, &filter.consent_id),
    ] {
        if let Some(v) = value {
            w.equals(column, v);
        }
    }
    if let Some(subject) = &filter.subject {
        match scope {
            Scope::All => w.subject(subject),
            // Match the subject as the officer is shown it, so the filter cannot probe the controller's
            // pseudonyms.
            Scope::Org(org) => w.subject_seen_by(org.as_str(), subject),
        }
    }
    if let Some(controller) = &filter.subject_controller {
        w.actor(controller);
    }
    let rows = w.fetch(pool, limit).await?;
    Ok(rows.into_iter().map(|(entry, stored)| shown(entry, stored, scope)).collect())
}

/// Applies the scope's redaction to an entry read with its counterparty subject as stored.
fn shown(mut entry: AuditEntry, stored_counterparty_subject: String, scope: &Scope) -> Shown {
    let (mut subject_commitment, mut counterparty_subject_commitment) = (None, None);
    if let Scope::Org(org) = scope {
        if entry.actor_org != org.as_str() {
            subject_commitment = Some(entry.subject_commitment());
            // Read as stored: an entry of version 2 is read without it, but a query (not an export)
            // still shows it, as it did before version 3.
            entry.subject = stored_counterparty_subject;
            entry.counterparty_subject.clear();
        } else if !entry.counterparty_subject.is_empty() {
            counterparty_subject_commitment = Some(entry.counterparty_subject_commitment());
            entry.counterparty_subject.clear();
        }
    }
    Shown { entry, subject_commitment, counterparty_subject_commitment }
}

/// Whether `org` controls a consent about `subject`: the test for a privacy officer's subject access
/// report. It reads the consent registry (`consents`, migration 2).
pub async fn controls_subject(pool: &sqlx::AnyPool, org: &OrgId, subject: &str) -> Result<bool, StoreError> {
    Ok(crate::store::consents::controls_subject(pool, org.as_str(), subject).await?)
}

/// Every disclosure `controller` made about its subject `subject`, in seq order, and what became of
/// each queued copy:
///
/// - each submission queued for a recipient (`queued`: the controller's entry, which names the
///   subject);
/// - each delivery of one of those messages (`delivered`: the recipient's entry, with the controller as
///   counterparty and the message id, which is the controller's own, but, so that the controller's
///   pseudonym is never written where the recipient reads, no subject);
/// - each queued copy cancelled before delivery (`cancelled`: consent withdrawn) or past its TTL
///   (`expired`), so the report says which queued copies never reached their recipient;
/// - each withdrawal notice queued for a recipient that may hold the data (`withdrawal_notified`; no
///   message id, since one notice covers every message under the consent).
///
/// The entries of the last two kinds are the controller's, with the subject and the recipient as
/// counterparty, as routing writes them. Everything is keyed by the controller: another organization's
/// entries about a subject of the same pseudonym, or about a message of the same id, are never read.
/// Whose staff names a report shows on its `viewed` lines.
#[derive(Debug, Clone, Copy)]
pub enum NamesShown<'a> {
    /// Everyone's (an auditor).
    All,
    /// Only this organization's own people (a privacy officer).
    Org(&'a str),
}

/// The disclosures of a subject, as the report lists them.
pub async fn disclosures(
    pool: &sqlx::AnyPool,
    controller: &str,
    subject: &str,
    names_of: NamesShown<'_>,
) -> Result<Vec<haven_proto::v1::Disclosure>, StoreError> {
    let entries = crate::store::audit_log::disclosures(pool, controller, subject).await?;
    entries
        .into_iter()
        .map(|e| {
            // A delivery is acknowledged, and a view asserted, by the recipient: its actor.
            let by_recipient = e.action == Action::Delivered.as_str() || e.action == Action::Viewed.as_str();
            let viewed = e.action == Action::Viewed.as_str();
            let viewer = match names_of {
                _ if !viewed => String::new(),
                NamesShown::All => e.actor_person.clone(),
                NamesShown::Org(org) if org == e.actor_org => e.actor_person.clone(),
                NamesShown::Org(_) => String::new(),
            };
            let viewer_role = if viewed { e.actor_role.clone() } else { String::new() };
            // A withdrawal notice is about the consent (its entry's object), not one message.
            let notice = e.action == Action::WithdrawalNotified.as_str();
            let action = if e.action == Action::Submitted.as_str() { "queued".to_owned() } else { e.action };
            Ok(haven_proto::v1::Disclosure {
                time_micros: e.time_micros,
                recipient: if by_recipient { e.actor_org } else { e.counterparty },
                purpose: e.purpose,
                released_fields: e.released_fields,
                consent_id: e.consent_id,
                message_id: if notice { String::new() } else { e.object_id },
                seq: e.seq,
                action,
                viewer_role,
                viewer,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> AuditFilter {
        AuditFilter::default()
    }

    #[test]
    fn bad_filters_are_invalid_arguments_with_a_reason() {
        let e = Filter::parse(Some(&AuditFilter { from_micros: 10, until_micros: 5, ..f() })).unwrap_err();
        assert!(e.to_string().contains("inverted time range"), "{e}");
        let e = Filter::parse(Some(&AuditFilter { action: "peeked".into(), ..f() })).unwrap_err();
        assert!(e.to_string().contains("unknown filter.action `peeked`"), "{e}");
        let e = Filter::parse(Some(&AuditFilter { decision: "maybe".into(), ..f() })).unwrap_err();
        assert!(e.to_string().contains("known: allow, deny"), "{e}");
        let e = Filter::parse(Some(&AuditFilter { subject: "a b".into(), ..f() })).unwrap_err();
        assert!(e.to_string().contains("filter.subject"), "{e}");
        let e = Filter::parse(Some(&AuditFilter { subject_controller: "harbor".into(), ..f() })).unwrap_err();
        assert!(e.to_string().contains("give filter.subject too"), "{e}");
        assert!(Filter::parse(None).unwrap().is_empty());
        let ok = Filter::parse(Some(&AuditFilter { action: "submitted".into(), until_micros: 9, ..f() })).unwrap();
        assert_eq!(ok.pairs(), vec![("until_micros", "9".to_owned()), ("action", "submitted".to_owned())]);
    }
}
