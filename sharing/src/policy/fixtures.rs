//! Test fixtures: the shipped sample bundle, copies of it to break, and consents to decide with.

use std::path::{Path, PathBuf};

use haven_trust::ids::{OrgId, OrgType, PersonId, Role};
use haven_trust::receipt::{CollectionMethod, ConsentReceipt, ConsentState, ConsentView, RECEIPT_VERSION};
use haven_trust::source::Located;
use time::{Duration, OffsetDateTime};

use super::bundle::Bundle;
use super::engine::DecisionRequest;

/// The time most tests decide at.
pub(crate) const NOW: OffsetDateTime = time::macros::datetime!(2025-06-01 12:00 UTC);

/// The subject most tests are about.
pub(crate) const SUBJECT: &str = "s-1";

/// `policies/` at the root of the workspace.
pub(crate) fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

pub(crate) fn shipped() -> Bundle {
    Bundle::load(&shipped_dir(), None).unwrap_or_else(|e| panic!("the shipped bundle must load: {e:#?}"))
}

/// A copy of the shipped bundle (without its tests) in a temporary directory.
pub(crate) fn copy_shipped() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["orgs.toml", "network.toml", "purposes.toml", "schema.toml"] {
        std::fs::copy(shipped_dir().join(name), dir.path().join(name)).unwrap();
    }
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for entry in std::fs::read_dir(shipped_dir().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join("rules").join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// The shipped registry, network, purposes and schema with these rules alone.
pub(crate) fn bundle_with_rules(rules: &str) -> Result<Bundle, Vec<Located>> {
    let dir = copy_shipped();
    for entry in std::fs::read_dir(dir.path().join("rules")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::write(dir.path().join("rules/test.toml"), rules).unwrap();
    Bundle::load(dir.path(), None)
}

pub(crate) fn org(id: &str) -> OrgId {
    OrgId::parse(id).unwrap()
}

/// A consent by `controller` for `subject` covering `purposes`, `recipient_orgs`, `labels`, valid for a
/// month either side of [`NOW`].
pub(crate) fn consent(controller: &str, purposes: &[&str], recipient_orgs: &[&str], labels: &[&str]) -> ConsentReceipt {
    ConsentReceipt {
        version: RECEIPT_VERSION,
        consent_id: "c-1".to_owned(),
        subject: SUBJECT.to_owned(),
        controller: org(controller),
        purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
        recipient_orgs: recipient_orgs.iter().map(|o| org(o)).collect(),
        recipient_types: Vec::<OrgType>::new(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        fields: Vec::new(),
        valid_from: NOW - Duration::days(30),
        valid_until: NOW + Duration::days(30),
        method: CollectionMethod::Written,
        evidence_sha256: "0".repeat(64),
        language: "en".to_owned(),
        recorded_by: PersonId::parse("cw-1").unwrap(),
        issued_at: NOW - Duration::days(30),
        supersedes: None,
    }
}

pub(crate) fn given(receipt: &ConsentReceipt) -> Option<ConsentView<'_>> {
    Some(ConsentView { receipt, state: ConsentState::Given })
}

/// Owns what a [`DecisionRequest`] borrows.
pub(crate) struct Req {
    pub(crate) sender: OrgId,
    pub(crate) role: Role,
    pub(crate) recipient: OrgId,
    pub(crate) kind: String,
    pub(crate) purpose: String,
    pub(crate) subject: Option<String>,
    pub(crate) consent_id: Option<String>,
    pub(crate) fields: Vec<&'static str>,
}

impl Req {
    /// A caseworker's message about [`SUBJECT`] under consent `c-1`.
    pub(crate) fn new(sender: &str, recipient: &str, kind: &str, purpose: &str, fields: &[&'static str]) -> Req {
        Req {
            sender: org(sender),
            role: Role::Caseworker,
            recipient: org(recipient),
            kind: kind.to_owned(),
            purpose: purpose.to_owned(),
            subject: Some(SUBJECT.to_owned()),
            consent_id: Some("c-1".to_owned()),
            fields: fields.to_vec(),
        }
    }

    pub(crate) fn get(&self) -> DecisionRequest<'_> {
        DecisionRequest {
            sender: &self.sender,
            sender_role: self.role,
            recipient: &self.recipient,
            kind: &self.kind,
            purpose: &self.purpose,
            subject: self.subject.as_deref(),
            consent_id: self.consent_id.as_deref(),
            fields: &self.fields,
        }
    }
}
