//! The audit log's format: the entry, its canonical byte encoding, and signed checkpoints.
//!
//! The gateway appends entries; nodes witness checkpoints; auditors verify exports offline. All three
//! use this module, so there is one definition of what is hashed and what is signed. The encoding is
//! documented in `docs/audit-export.md`; changing it means a new [`ENCODING_VERSION`].
//!
//! # The subject commitments
//!
//! The canonical encoding does not hold the subject pseudonym itself but a commitment to it,
//! [`subject_commitment`] = SHA-256(`haven.audit.subject/v1` ‖ 0x00 ‖ seq ‖ subject). A privacy officer
//! of an organization that *received* data about a subject must never see the controller's pseudonym;
//! their export shows the recipient-scoped pseudonym instead and carries the commitment, from which the
//! verifier still recomputes the leaf and checks its inclusion proof. Pseudonyms are 128-bit random
//! values, so the commitment cannot be reversed by guessing (unlike a hash of a field value, which the
//! log never holds), and because `seq` is hashed in, two entries about the same subject carry unrelated
//! commitments: a redacted export does not let recipients link what they hold.
//!
//! Version 3 also commits to the pseudonym the counterparty knows the subject by,
//! [`counterparty_subject_commitment`], so the recipient-scoped pseudonym a redacted entry shows is
//! bound by the leaf like every other field: changing it fails verification. Version 2 entries, written
//! before, bind only the controller's pseudonym; they keep their encoding and still verify.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;
use crate::pki::CertInfo;
use crate::registry::Fingerprint;

/// The newest canonical entry encoding, the one the gateway writes: the first byte of each new entry's
/// encoding, and the `encoding_version` of an export that may hold such entries. Version 3 commits to
/// the subject through [`subject_commitment`] and to the counterparty's pseudonym for it through
/// [`counterparty_subject_commitment`]; version 2 (entries written before) only to the subject; version
/// 1 (the subject in clear) was never released.
pub const ENCODING_VERSION: u8 = 3;

/// Which canonical encoding an entry's leaf was built with. Each entry keeps the one it was written
/// with: a leaf is never recomputed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Encoding {
    /// Version 2: commits to the subject only, not to what the counterparty knows it by.
    V2,
    /// Version 3 ([`ENCODING_VERSION`]): also commits to the counterparty's pseudonym.
    #[default]
    V3,
}

impl Encoding {
    /// The version number, the first byte of the encoding.
    pub fn version(self) -> u8 {
        match self {
            Encoding::V2 => 2,
            Encoding::V3 => 3,
        }
    }

    /// The encoding of a version number, if it is one this code knows.
    pub fn of_version(v: u8) -> Option<Self> {
        match v {
            2 => Some(Encoding::V2),
            3 => Some(Encoding::V3),
            _ => None,
        }
    }

    /// Whether the encoding binds the counterparty's pseudonym.
    pub fn binds_counterparty_subject(self) -> bool {
        self == Encoding::V3
    }

    /// What an export line means when it names no version: entries exported before the version was
    /// named were all version 2.
    fn unnamed() -> Self {
        Encoding::V2
    }

    fn is_unnamed(&self) -> bool {
        *self == Encoding::unnamed()
    }
}

impl TryFrom<u8> for Encoding {
    type Error = String;

    fn try_from(v: u8) -> Result<Self, String> {
        Encoding::of_version(v).ok_or_else(|| format!("unknown entry encoding version {v} (known: 2, 3)"))
    }
}

impl From<Encoding> for u8 {
    fn from(e: Encoding) -> u8 {
        e.version()
    }
}

/// The domain separation prefix of [`subject_commitment`].
const SUBJECT_DOMAIN: &[u8] = b"haven.audit.subject/v1\0";

/// The domain separation prefix of [`counterparty_subject_commitment`].
const COUNTERPARTY_SUBJECT_DOMAIN: &[u8] = b"haven.audit.counterparty_subject/v1\0";

/// The commitment to the subject pseudonym of entry `seq` that the canonical encoding holds:
/// SHA-256(`haven.audit.subject/v1` ‖ 0x00 ‖ seq as u64 big-endian ‖ subject as UTF-8).
pub fn subject_commitment(seq: u64, subject: &str) -> Hash {
    commitment(SUBJECT_DOMAIN, seq, subject)
}

/// The commitment to the pseudonym the counterparty of entry `seq` knows the subject by, which a
/// version 3 encoding holds right after the [`subject_commitment`]:
/// SHA-256(`haven.audit.counterparty_subject/v1` ‖ 0x00 ‖ seq as u64 big-endian ‖ pseudonym as UTF-8).
pub fn counterparty_subject_commitment(seq: u64, counterparty_subject: &str) -> Hash {
    commitment(COUNTERPARTY_SUBJECT_DOMAIN, seq, counterparty_subject)
}

fn commitment(domain: &[u8], seq: u64, value: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(seq.to_be_bytes());
    h.update(value.as_bytes());
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
    /// A subject pseudonym, always the actor organization's own: the controller's, in an entry about a
    /// consent or a disclosure (whose actor is the controller), or the one a reader looked for, in an
    /// entry recording a read. A pseudonym names a subject only together with the organization that
    /// minted it, so what this entry says about a subject it says about (`actor_org`, `subject`). The
    /// canonical encoding holds only its [`subject_commitment`].
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
    /// The pseudonym the counterparty knows the subject by (its recipient-scoped one), shown to the
    /// counterparty's privacy officer in place of `subject`. Version 3 holds only its
    /// [`counterparty_subject_commitment`]; version 2 does not bind it, so an entry of version 2 is
    /// read with this empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub counterparty_subject: String,
    /// The encoding the entry's leaf was built with. In JSON it is named for version 3 and later; an
    /// entry that names none is version 2.
    #[serde(default = "Encoding::unnamed", skip_serializing_if = "Encoding::is_unnamed")]
    pub encoding_version: Encoding,
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
    /// A person at a recipient organization was shown a received message's fields, as that
    /// organization asserts in a signed batch of view records (names, never values).
    Viewed,
    /// A recipient's node refused a sealed copy that failed its checks (manifest, hash, content), as
    /// that organization reports it; nobody there saw it.
    IntegrityFailure,
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
            Action::Viewed => "viewed",
            Action::IntegrityFailure => "integrity_failure",
        }
    }

    /// Every action, for validating query filters.
    pub const ALL: [Action; 25] = [
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
        Action::Viewed,
        Action::IntegrityFailure,
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
/// a line of an export (where strings may be borrowed from the line itself). The subject and the
/// counterparty's pseudonym are given as their commitments.
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a, S: AsRef<str>> {
    pub encoding: Encoding,
    pub seq: u64,
    pub time_micros: i64,
    pub actor_org: &'a str,
    pub actor_person: &'a str,
    pub actor_role: &'a str,
    pub action: &'a str,
    pub object_id: &'a str,
    pub counterparty: &'a str,
    pub subject_commitment: &'a Hash,
    /// Written by version 3 only.
    pub counterparty_subject_commitment: &'a Hash,
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
        out.put(&[self.encoding.version()]);
        out.put(&self.seq.to_be_bytes());
        out.put(&self.time_micros.to_be_bytes());
        for s in [self.actor_org, self.actor_person, self.actor_role, self.action, self.object_id, self.counterparty] {
            put_str(out, s);
        }
        out.put(self.subject_commitment);
        if self.encoding.binds_counterparty_subject() {
            out.put(self.counterparty_subject_commitment);
        }
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
    /// An entry recording `action` at `time_micros` (UTC microseconds), in the current encoding; the
    /// caller fills in who acted, on what, and why. Every entry the gateway writes starts here, so the
    /// action is always one of the fixed list.
    pub fn new(action: Action, time_micros: i64) -> AuditEntry {
        AuditEntry { time_micros, action: action.as_str().to_owned(), ..AuditEntry::default() }
    }

    /// The entry's fields with the subject and the counterparty's pseudonym replaced by the given
    /// commitments.
    pub fn fields<'a>(
        &'a self,
        subject_commitment: &'a Hash,
        counterparty_subject_commitment: &'a Hash,
    ) -> EntryFields<'a, String> {
        EntryFields {
            encoding: self.encoding_version,
            seq: self.seq,
            time_micros: self.time_micros,
            actor_org: &self.actor_org,
            actor_person: &self.actor_person,
            actor_role: &self.actor_role,
            action: &self.action,
            object_id: &self.object_id,
            counterparty: &self.counterparty,
            subject_commitment,
            counterparty_subject_commitment,
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

    /// The commitment to this entry's counterparty's pseudonym (see
    /// [`counterparty_subject_commitment`]).
    pub fn counterparty_subject_commitment(&self) -> Hash {
        counterparty_subject_commitment(self.seq, &self.counterparty_subject)
    }

    /// The canonical encoding the Merkle leaf hashes: the version byte, `seq` (u64 big-endian),
    /// `time_micros` (i64 big-endian), then every other field in declaration order, each string as a
    /// u32 big-endian byte length followed by its UTF-8 bytes, each list as a u32 big-endian count
    /// followed by its strings, except the subject, which is written as its 32-byte
    /// [`subject_commitment`] with no length, followed in version 3 by the 32-byte
    /// [`counterparty_subject_commitment`]. `encoding_version` is the version byte, not a field.
    pub fn canonical(&self) -> Vec<u8> {
        self.fields(&self.subject_commitment(), &self.counterparty_subject_commitment()).canonical()
    }

    /// The Merkle leaf hash of the entry: SHA-256(0x00 ‖ [`AuditEntry::canonical`]).
    pub fn leaf_hash(&self) -> Hash {
        self.fields(&self.subject_commitment(), &self.counterparty_subject_commitment()).leaf_hash()
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
        Checkpoint::body_of(CHECKPOINT_ORIGIN, tree_size, root, timestamp_micros)
    }

    /// The same body for the log named by `origin` (the audit trail's, or the key log's,
    /// [`crate::keylog::KEY_LOG_ORIGIN`]).
    pub fn body_of(origin: &str, tree_size: u64, root: &[u8; 32], timestamp_micros: i64) -> Vec<u8> {
        format!("{origin}\n{tree_size}\n{}\n{timestamp_micros}\n", hex::encode(root)).into_bytes()
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
        self.verify_of(CHECKPOINT_ORIGIN, cp)
    }

    /// Verifies a checkpoint of the log named by `origin`.
    pub fn verify_of(&self, origin: &str, cp: &Checkpoint) -> Result<(), CheckpointError> {
        if cp.key_id != self.key_id {
            return Err(CheckpointError::WrongKey {
                got: crate::untrusted::shown(&cp.key_id),
                expected: self.key_id.clone(),
            });
        }
        let sig_bytes = hex::decode(&cp.signature).map_err(|_| CheckpointError::Malformed)?;
        let sig = Signature::from_der(&sig_bytes).map_err(|_| CheckpointError::BadSignature(cp.tree_size))?;
        let body = Checkpoint::body_of(origin, cp.tree_size, &cp.root()?, cp.timestamp_micros);
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
        self.sign_of(CHECKPOINT_ORIGIN, tree_size, root, timestamp_micros)
    }

    /// Signs a checkpoint of the log named by `origin`.
    pub fn sign_of(&self, origin: &str, tree_size: u64, root: &[u8; 32], timestamp_micros: i64) -> Checkpoint {
        let sig: Signature = self.key.sign(&Checkpoint::body_of(origin, tree_size, root, timestamp_micros));
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
    fn an_entry_starts_from_its_typed_action_in_the_current_encoding() {
        let e = AuditEntry::new(Action::Submitted, 1_700_000_000_000_000);
        assert_eq!(e.action, "submitted");
        assert_eq!(e.time_micros, 1_700_000_000_000_000);
        assert_eq!(e.encoding_version.version(), ENCODING_VERSION);
        assert_eq!(AuditEntry { actor_org: "harbor".into(), ..e.clone() }.action, e.action);
    }

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
        let none = e.counterparty_subject_commitment();
        assert_eq!(shown.fields(&e.subject_commitment(), &none).leaf_hash(), e.leaf_hash());
        let other = AuditEntry { subject: "subj-other".into(), ..e.clone() };
        assert_ne!(other.leaf_hash(), e.leaf_hash());
    }

    /// One entry of each version, hashed by an independent implementation of the documented encoding
    /// (`docs/audit-export.md`): version 2 leaves written before version 3 existed keep verifying.
    #[test]
    fn both_encodings_match_their_documented_bytes() {
        let mut e = AuditEntry {
            seq: 17,
            time_micros: 1_750_000_000_000_000,
            actor_org: "harbor".into(),
            actor_person: "casey".into(),
            actor_role: "caseworker".into(),
            action: "submitted".into(),
            object_id: "0197a1b2-0000-7000-8000-000000000001".into(),
            counterparty: "maple-house".into(),
            subject: "subj-5f1c0a3e9b7d4e2a8c6b1d0f3a5e7c9b".into(),
            purpose: "housing".into(),
            consent_id: "c-0001".into(),
            rule_ids: vec!["ngo-to-shelter-housing".into()],
            bundle_version: "sha256:test".into(),
            decision: "allow".into(),
            released_fields: vec!["first_name".into(), "needs".into()],
            withheld_fields: vec!["date_of_birth".into()],
            outcome: "queued".into(),
            source_node: "harbor".into(),
            counterparty_subject: "r_0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
            ..Default::default()
        };
        assert_eq!(e.encoding_version, Encoding::V3, "new entries are written with the newest encoding");
        assert_eq!(hex::encode(e.leaf_hash()), "f3855996b0969465bcc777f422acdfa8194c257447918c0d0d651634f69687e9");
        e.encoding_version = Encoding::V2;
        assert_eq!(hex::encode(e.leaf_hash()), "456dce6d5a05d7535598a61f08e3b7b1ed9457ec209c2638c1f16b7302d985e7");
        assert_eq!(e.canonical()[0], 2);
        // Version 2 does not bind the counterparty's pseudonym at all.
        let v2 = e.leaf_hash();
        e.counterparty_subject = "r_ffffffffffffffffffffffffffffffff".into();
        assert_eq!(e.leaf_hash(), v2);
    }

    #[test]
    fn version_3_binds_the_counterpartys_pseudonym_without_holding_it() {
        let e = AuditEntry {
            seq: 3,
            subject: "subj-0123456789abcdef".into(),
            counterparty_subject: "r_0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
            ..Default::default()
        };
        let bytes = e.canonical();
        assert_eq!(bytes[0], 3);
        assert!(!bytes.windows(e.counterparty_subject.len()).any(|w| w == e.counterparty_subject.as_bytes()));
        assert!(bytes.windows(32).any(|w| w == e.counterparty_subject_commitment()));
        let other = AuditEntry { counterparty_subject: "r_ffffffffffffffffffffffffffffffff".into(), ..e.clone() };
        assert_ne!(other.leaf_hash(), e.leaf_hash());
        // The two commitments are separated by domain: swapping the pseudonyms changes the leaf.
        let swapped = AuditEntry {
            subject: e.counterparty_subject.clone(),
            counterparty_subject: e.subject.clone(),
            ..e.clone()
        };
        assert_ne!(swapped.leaf_hash(), e.leaf_hash());
        assert_ne!(subject_commitment(3, &e.subject), counterparty_subject_commitment(3, &e.subject));
    }

    #[test]
    fn json_names_the_encoding_from_version_3_on() {
        let e = AuditEntry { seq: 1, ..Default::default() };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["encoding_version"], 3);
        assert!(json.get("counterparty_subject").is_none(), "an empty pseudonym is left out");
        assert_eq!(serde_json::from_value::<AuditEntry>(json).unwrap(), e);
        let v2 = AuditEntry { encoding_version: Encoding::V2, ..e.clone() };
        let json = serde_json::to_value(&v2).unwrap();
        assert!(json.get("encoding_version").is_none(), "version 2 predates the key");
        assert_eq!(serde_json::from_value::<AuditEntry>(json).unwrap().encoding_version, Encoding::V2);
        let mut json = serde_json::to_value(&e).unwrap();
        json["encoding_version"] = 9.into();
        assert!(serde_json::from_value::<AuditEntry>(json).is_err());
    }

    #[test]
    fn every_action_code_parses_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }
}
