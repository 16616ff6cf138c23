//! The audit log's format: the entry, its canonical byte encoding, and signed checkpoints.
//!
//! The gateway appends entries; nodes witness checkpoints; auditors verify exports offline. All three
//! use this module, so there is one definition of what is hashed and what is signed. The encoding is
//! documented in `docs/audit-export.md`; changing it means a new [`ENCODING_VERSION`].
//!
//! # The subject commitment (encoding version 2)
//!
//! The canonical encoding does not hold the subject pseudonym itself but a commitment to it,
//! [`subject_commitment`] = SHA-256(`haven.audit.subject/v1` ‖ 0x00 ‖ seq ‖ subject). A privacy officer
//! of an organization that *received* data about a subject must never see the controller's pseudonym;
//! their export shows the recipient-scoped pseudonym instead and carries the commitment, from which the
//! verifier still recomputes the leaf and checks its inclusion proof. Pseudonyms are 128-bit random
//! values, so the commitment cannot be reversed by guessing (unlike a hash of a field value, which the
//! log never holds), and because `seq` is hashed in, two entries about the same subject carry unrelated
//! commitments: a redacted export does not let recipients link what they hold.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;
use crate::pki::CertInfo;
use crate::registry::Fingerprint;

/// The first byte of every canonical entry. Version 2 commits to the subject through
/// [`subject_commitment`]; version 1 (the subject in clear) was never released.
pub const ENCODING_VERSION: u8 = 2;

/// The domain separation prefix of [`subject_commitment`].
const SUBJECT_DOMAIN: &[u8] = b"haven.audit.subject/v1\0";

/// The commitment to the subject pseudonym of entry `seq` that the canonical encoding holds:
/// SHA-256(`haven.audit.subject/v1` ‖ 0x00 ‖ seq as u64 big-endian ‖ subject as UTF-8).
pub fn subject_commitment(seq: u64, subject: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(SUBJECT_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(subject.as_bytes());
    h.finalize().into()
}

/// One audit entry. Only verified identifiers, enumerated codes and field *names* go in: never field
/// values, hashes of field values, or free text from callers. Empty strings mean "not applicable".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, gap-free from 0, in commit order.
    pub seq: u64,
    /// UTC, microseconds since the Unix epoch.
    pub time_micros: i64,
    pub actor_org: String,
    pub actor_person: String,
    pub actor_role: String,
    /// What happened, from the fixed list in [`Action`].
    pub action: String,
    /// The message, delivery or consent the action concerns.
    pub object_id: String,
    pub counterparty: String,
    /// The controller's subject pseudonym. The canonical encoding holds only its
    /// [`subject_commitment`].
    pub subject: String,
    pub purpose: String,
    pub consent_id: String,
    pub rule_ids: Vec<String>,
    pub bundle_version: String,
    /// `allow`, `deny` or empty.
    pub decision: String,
    /// A reason code (a denial reason, a revocation reason, a rejection code).
    pub reason: String,
    pub released_fields: Vec<String>,
    pub withheld_fields: Vec<String>,
    /// `ok`, `refused`, `queued`, ...
    pub outcome: String,
    pub correlation_id: String,
    /// The organization whose node the action came through.
    pub source_node: String,
}

/// The actions the log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A rejected call that got past the TLS handshake, aggregated per source and reason.
    AuthRejected,
    /// A dry-run decision.
    Decided,
    /// A submission accepted for one recipient (queued) or refused for it.
    Submitted,
    /// A delivery's transport acknowledgement by the recipient's node.
    Delivered,
    /// A queued delivery cancelled (consent withdrawn, sender withdrew).
    Cancelled,
    /// A queued delivery past its TTL.
    Expired,
    /// A status change on a referral or alert.
    StatusChanged,
    ConsentRegistered,
    ConsentRenewed,
    ConsentRevoked,
    ConsentExpired,
    /// A consent withdrawal notice queued for a recipient that holds data.
    WithdrawalNotified,
    PolicyReloaded,
    PolicyReloadRejected,
    /// A reload refused because of the TLS material (CA, CRL, the gateway's certificate or key); the
    /// reason names what was wrong, and nothing changed.
    TrustReloadRejected,
    /// A delivery stream took its organization's lease (the source address is recorded).
    StreamOpened,
    /// A delivery stream ended, with why and the items it had sent that were not acknowledged.
    StreamClosed,
    /// A delivery stream was refused because another stream of the organization holds the lease.
    StreamRefused,
    /// An acknowledgement that came on a fenced stream: recorded, not applied.
    AckFenced,
    AuditQueried,
    AuditExported,
    SubjectReport,
    /// The gateway started (bundle version recorded).
    GatewayStarted,
}

impl Action {
    /// The code written to the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::AuthRejected => "auth_rejected",
            Action::Decided => "decided",
            Action::Submitted => "submitted",
            Action::Delivered => "delivered",
            Action::Cancelled => "cancelled",
            Action::Expired => "expired",
            Action::StatusChanged => "status_changed",
            Action::ConsentRegistered => "consent_registered",
            Action::ConsentRenewed => "consent_renewed",
            Action::ConsentRevoked => "consent_revoked",
            Action::ConsentExpired => "consent_expired",
            Action::WithdrawalNotified => "withdrawal_notified",
            Action::PolicyReloaded => "policy_reloaded",
            Action::PolicyReloadRejected => "policy_reload_rejected",
            Action::TrustReloadRejected => "trust_reload_rejected",
            Action::StreamOpened => "stream_opened",
            Action::StreamClosed => "stream_closed",
            Action::StreamRefused => "stream_refused",
            Action::AckFenced => "ack_fenced",
            Action::AuditQueried => "audit_queried",
            Action::AuditExported => "audit_exported",
            Action::SubjectReport => "subject_report",
            Action::GatewayStarted => "gateway_started",
        }
    }

    /// Every action, for validating query filters.
    pub const ALL: [Action; 23] = [
        Action::AuthRejected,
        Action::Decided,
        Action::Submitted,
        Action::Delivered,
        Action::Cancelled,
        Action::Expired,
        Action::StatusChanged,
        Action::ConsentRegistered,
        Action::ConsentRenewed,
        Action::ConsentRevoked,
        Action::ConsentExpired,
        Action::WithdrawalNotified,
        Action::PolicyReloaded,
        Action::PolicyReloadRejected,
        Action::TrustReloadRejected,
        Action::StreamOpened,
        Action::StreamClosed,
        Action::StreamRefused,
        Action::AckFenced,
        Action::AuditQueried,
        Action::AuditExported,
        Action::SubjectReport,
        Action::GatewayStarted,
    ];

    /// Parses a code.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Where canonical bytes go: a buffer, or straight into a hash so that verifying needs no allocation.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

fn put_str(out: &mut impl Sink, s: &str) {
    out.put(&(s.len() as u32).to_be_bytes());
    out.put(s.as_bytes());
}

fn put_list<S: AsRef<str>>(out: &mut impl Sink, items: &[S]) {
    out.put(&(items.len() as u32).to_be_bytes());
    for i in items {
        put_str(out, i.as_ref());
    }
}

/// The fields of an entry as the canonical encoding sees them, borrowed from an [`AuditEntry`] or from
/// a line of an export (where strings may be borrowed from the line itself). The subject is given as
/// its commitment.
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a, S: AsRef<str>> {
    pub seq: u64,
    pub time_micros: i64,
    pub actor_org: &'a str,
    pub actor_person: &'a str,
    pub actor_role: &'a str,
    pub action: &'a str,
    pub object_id: &'a str,
    pub counterparty: &'a str,
    pub subject_commitment: &'a Hash,
    pub purpose: &'a str,
    pub consent_id: &'a str,
    pub rule_ids: &'a [S],
    pub bundle_version: &'a str,
    pub decision: &'a str,
    pub reason: &'a str,
    pub released_fields: &'a [S],
    pub withheld_fields: &'a [S],
    pub outcome: &'a str,
    pub correlation_id: &'a str,
    pub source_node: &'a str,
}

impl<S: AsRef<str>> EntryFields<'_, S> {
    fn write(&self, out: &mut impl Sink) {
        out.put(&[ENCODING_VERSION]);
        out.put(&self.seq.to_be_bytes());
        out.put(&self.time_micros.to_be_bytes());
        for s in [self.actor_org, self.actor_person, self.actor_role, self.action, self.object_id, self.counterparty] {
            put_str(out, s);
        }
        out.put(self.subject_commitment);
        for s in [self.purpose, self.consent_id] {
            put_str(out, s);
        }
        put_list(out, self.rule_ids);
        for s in [self.bundle_version, self.decision, self.reason] {
            put_str(out, s);
        }
        put_list(out, self.released_fields);
        put_list(out, self.withheld_fields);
        for s in [self.outcome, self.correlation_id, self.source_node] {
            put_str(out, s);
        }
    }

    /// The canonical encoding (see [`AuditEntry::canonical`]).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out);
        out
    }

    /// The Merkle leaf hash, SHA-256(0x00 ‖ canonical), computed without building the encoding.
    pub fn leaf_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update([0u8]);
        self.write(&mut h);
        h.finalize().into()
    }
}

impl AuditEntry {
    /// The entry's fields with the subject replaced by `commitment`.
    pub fn fields<'a>(&'a self, commitment: &'a Hash) -> EntryFields<'a, String> {
        EntryFields {
            seq: self.seq,
            time_micros: self.time_micros,
            actor_org: &self.actor_org,
            actor_person: &self.actor_person,
            actor_role: &self.actor_role,
            action: &self.action,
            object_id: &self.object_id,
            counterparty: &self.counterparty,
            subject_commitment: commitment,
            purpose: &self.purpose,
            consent_id: &self.consent_id,
            rule_ids: &self.rule_ids,
            bundle_version: &self.bundle_version,
            decision: &self.decision,
            reason: &self.reason,
            released_fields: &self.released_fields,
            withheld_fields: &self.withheld_fields,
            outcome: &self.outcome,
            correlation_id: &self.correlation_id,
            source_node: &self.source_node,
        }
    }

    /// The commitment to this entry's subject (see [`subject_commitment`]).
    pub fn subject_commitment(&self) -> Hash {
        subject_commitment(self.seq, &self.subject)
    }

    /// The canonical encoding the Merkle leaf hashes: the version byte, `seq` (u64 big-endian),
    /// `time_micros` (i64 big-endian), then every other field in declaration order, each string as a
    /// u32 big-endian byte length followed by its UTF-8 bytes, each list as a u32 big-endian count
    /// followed by its strings, except the subject, which is written as its 32-byte
    /// [`subject_commitment`] with no length.
    pub fn canonical(&self) -> Vec<u8> {
        self.fields(&self.subject_commitment()).canonical()
    }

    /// The Merkle leaf hash of the entry: SHA-256(0x00 ‖ [`AuditEntry::canonical`]).
    pub fn leaf_hash(&self) -> Hash {
        self.fields(&self.subject_commitment()).leaf_hash()
    }
}

/// A signed checkpoint: the log's size and root at a time, signed by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tree_size: u64,
    /// Hex of the RFC 6962 root hash.
    pub root_hash: String,
    pub timestamp_micros: i64,
    /// Hex of the DER ECDSA P-256 / SHA-256 signature over [`Checkpoint::body`].
    pub signature: String,
    /// Fingerprint (hex) of the gateway signing certificate.
    pub key_id: String,
}

/// The first line of every signed checkpoint body.
pub const CHECKPOINT_ORIGIN: &str = "haven.audit.checkpoint/v1";

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint signed by key {got}, expected {expected}")]
    WrongKey { got: String, expected: String },
    #[error("checkpoint root hash or signature is not valid hex")]
    Malformed,
    #[error("checkpoint signature does not verify for tree size {0}")]
    BadSignature(u64),
    #[error("gateway signing key: {0}")]
    Key(String),
}

impl Checkpoint {
    /// The exact bytes signed: four lines, `haven.audit.checkpoint/v1`, the tree size, the root hash in
    /// hex and the timestamp in microseconds, each ending with `\n`.
    pub fn body(tree_size: u64, root: &[u8; 32], timestamp_micros: i64) -> Vec<u8> {
        format!("{CHECKPOINT_ORIGIN}\n{tree_size}\n{}\n{timestamp_micros}\n", hex::encode(root)).into_bytes()
    }

    /// The root hash as bytes.
    pub fn root(&self) -> Result<[u8; 32], CheckpointError> {
        hex::decode(&self.root_hash).ok().and_then(|v| v.try_into().ok()).ok_or(CheckpointError::Malformed)
    }

    /// Verifies the signature with the gateway's signing certificate.
    pub fn verify(&self, gateway_signing_cert_der: &[u8]) -> Result<(), CheckpointError> {
        CheckpointKey::new(gateway_signing_cert_der)?.verify(self)
    }
}

/// The gateway's checkpoint verification key, read once from its signing certificate, for checking
/// many checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointKey {
    key: VerifyingKey,
    key_id: String,
}

impl CheckpointKey {
    /// Reads the key from the gateway signing certificate (DER).
    pub fn new(gateway_signing_cert_der: &[u8]) -> Result<Self, CheckpointError> {
        let info = CertInfo::parse(gateway_signing_cert_der).map_err(|e| CheckpointError::Key(e.to_string()))?;
        let key = VerifyingKey::from_sec1_bytes(&info.public_key).map_err(|e| CheckpointError::Key(e.to_string()))?;
        Ok(CheckpointKey { key, key_id: Fingerprint::of_der(gateway_signing_cert_der).to_hex() })
    }

    /// Verifies a checkpoint's key id and signature.
    pub fn verify(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        if cp.key_id != self.key_id {
            return Err(CheckpointError::WrongKey {
                got: crate::untrusted::shown(&cp.key_id),
                expected: self.key_id.clone(),
            });
        }
        let sig_bytes = hex::decode(&cp.signature).map_err(|_| CheckpointError::Malformed)?;
        let sig = Signature::from_der(&sig_bytes).map_err(|_| CheckpointError::BadSignature(cp.tree_size))?;
        let body = Checkpoint::body(cp.tree_size, &cp.root()?, cp.timestamp_micros);
        self.key.verify(&body, &sig).map_err(|_| CheckpointError::BadSignature(cp.tree_size))
    }
}

/// The gateway's checkpoint signer.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl CheckpointSigner {
    /// Loads the gateway's signing key (PKCS#8 PEM) and certificate (DER).
    pub fn new(key_pem: &str, cert_der: &[u8]) -> Result<Self, CheckpointError> {
        let key = SigningKey::from_pkcs8_pem(key_pem).map_err(|e| CheckpointError::Key(e.to_string()))?;
        crate::pki::key_matches_cert(key_pem.as_bytes(), cert_der).map_err(CheckpointError::Key)?;
        Ok(CheckpointSigner { key, key_id: Fingerprint::of_der(cert_der).to_hex() })
    }

    /// Signs a checkpoint.
    pub fn sign(&self, tree_size: u64, root: &[u8; 32], timestamp_micros: i64) -> Checkpoint {
        let sig: Signature = self.key.sign(&Checkpoint::body(tree_size, root, timestamp_micros));
        Checkpoint {
            tree_size,
            root_hash: hex::encode(root),
            timestamp_micros,
            signature: hex::encode(sig.to_der().as_bytes()),
            key_id: self.key_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_encoding_is_stable_and_field_sensitive() {
        let e = AuditEntry { seq: 7, time_micros: 1, action: "submitted".into(), ..Default::default() };
        let a = e.canonical();
        assert_eq!(a[0], ENCODING_VERSION);
        assert_eq!(&a[1..9], &7u64.to_be_bytes());
        let mut moved = e.clone();
        // The same bytes shifted between adjacent fields must not collide.
        moved.action = String::new();
        moved.object_id = "submitted".into();
        assert_ne!(a, moved.canonical());
        assert_eq!(e.leaf_hash(), crate::merkle::leaf_hash(&a));
    }

    #[test]
    fn the_encoding_commits_to_the_subject_without_holding_it() {
        let e = AuditEntry { seq: 3, subject: "subj-0123456789abcdef".into(), ..Default::default() };
        let bytes = e.canonical();
        assert!(!bytes.windows(e.subject.len()).any(|w| w == e.subject.as_bytes()));
        assert!(bytes.windows(32).any(|w| w == e.subject_commitment()));
        // The same subject at another position gets an unrelated commitment (no linking).
        assert_ne!(subject_commitment(3, &e.subject), subject_commitment(4, &e.subject));
        // A redacted copy that carries the commitment hashes to the same leaf.
        let shown = AuditEntry { subject: "recipient-scoped".into(), ..e.clone() };
        assert_eq!(shown.fields(&e.subject_commitment()).leaf_hash(), e.leaf_hash());
        let other = AuditEntry { subject: "subj-other".into(), ..e.clone() };
        assert_ne!(other.leaf_hash(), e.leaf_hash());
    }

    #[test]
    fn every_action_code_parses_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }
}
