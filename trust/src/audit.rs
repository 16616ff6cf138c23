//! The audit log's format: the entry, its canonical byte encoding, and signed checkpoints.
//!
//! The gateway appends entries; nodes witness checkpoints; auditors verify exports offline. All three
//! use this module, so there is one definition of what is hashed and what is signed. The encoding is
//! documented in `docs/audit-export.md`; changing it means a new [`ENCODING_VERSION`].

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};

use crate::pki::CertInfo;
use crate::registry::Fingerprint;

/// The first byte of every canonical entry.
pub const ENCODING_VERSION: u8 = 1;

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
    /// The controller's subject pseudonym.
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
    /// A delivery stream opened or closed.
    StreamOpened,
    StreamClosed,
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
            Action::StreamOpened => "stream_opened",
            Action::StreamClosed => "stream_closed",
            Action::AuditQueried => "audit_queried",
            Action::AuditExported => "audit_exported",
            Action::SubjectReport => "subject_report",
            Action::GatewayStarted => "gateway_started",
        }
    }

    /// Every action, for validating query filters.
    pub const ALL: [Action; 20] = [
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
        Action::StreamOpened,
        Action::StreamClosed,
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

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for i in items {
        put_str(out, i);
    }
}

impl AuditEntry {
    /// The canonical encoding the Merkle leaf hashes: the version byte, `seq` (u64 big-endian),
    /// `time_micros` (i64 big-endian), then every other field in declaration order, each string as a
    /// u32 big-endian byte length followed by its UTF-8 bytes, each list as a u32 big-endian count
    /// followed by its strings.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time_micros.to_be_bytes());
        for s in [
            &self.actor_org,
            &self.actor_person,
            &self.actor_role,
            &self.action,
            &self.object_id,
            &self.counterparty,
            &self.subject,
            &self.purpose,
            &self.consent_id,
        ] {
            put_str(&mut out, s);
        }
        put_list(&mut out, &self.rule_ids);
        for s in [&self.bundle_version, &self.decision, &self.reason] {
            put_str(&mut out, s);
        }
        put_list(&mut out, &self.released_fields);
        put_list(&mut out, &self.withheld_fields);
        for s in [&self.outcome, &self.correlation_id, &self.source_node] {
            put_str(&mut out, s);
        }
        out
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
        let expected = Fingerprint::of_der(gateway_signing_cert_der).to_hex();
        if self.key_id != expected {
            return Err(CheckpointError::WrongKey { got: self.key_id.chars().take(64).collect(), expected });
        }
        let info = CertInfo::parse(gateway_signing_cert_der).map_err(|e| CheckpointError::Key(e.to_string()))?;
        let key = VerifyingKey::from_sec1_bytes(&info.public_key).map_err(|e| CheckpointError::Key(e.to_string()))?;
        let sig_bytes = hex::decode(&self.signature).map_err(|_| CheckpointError::Malformed)?;
        let sig = Signature::from_der(&sig_bytes).map_err(|_| CheckpointError::BadSignature(self.tree_size))?;
        let body = Checkpoint::body(self.tree_size, &self.root()?, self.timestamp_micros);
        key.verify(&body, &sig).map_err(|_| CheckpointError::BadSignature(self.tree_size))
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
    }

    #[test]
    fn every_action_code_parses_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }
}
