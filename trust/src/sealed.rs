//! Sealed copies: what a sender's node makes for each recipient, so that the gateway routes field
//! values it cannot read.
//!
//! A copy is three parts:
//! - the **manifest**, a compact JWS (ES256, `typ` [`MANIFEST_TYP`], `x5c` carrying the sender's
//!   signing certificate) whose payload is a [`Manifest`]: the [`ManifestBody`] (who, what, which
//!   fields, to which key, under which bundle, until when) and the SHA-256 of `enc` and the ciphertext;
//! - `enc`, the HPKE encapsulated key;
//! - the ciphertext of the field values, sealed with HPKE base mode to the recipient's sealing key,
//!   with `info` = [`INFO_LABEL`] and the message id, and `aad` = the canonical manifest body
//!   ([`ManifestBody::canonical`]).
//!
//! Base mode does not authenticate the sender: anyone holding the recipient's public key could seal
//! other values under the same `aad`. The manifest's signature covers the hash of `enc` and the
//! ciphertext, so a gateway cannot re-seal its own values under a real manifest.
//!
//! What the plaintext encodes (the node's protobuf of field values) is the nodes' business; this
//! module seals and opens bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::Checkpoint;
use crate::hpke::{self, HpkeError};
use crate::ids::OrgId;
use crate::registry::Registry;
use crate::token::{self, OrgSigner, SignerError, TokenError};

/// The JWS `typ` of a manifest.
pub const MANIFEST_TYP: &str = "haven-sealed-manifest+jwt";

/// The manifest format this version writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// The start of every copy's HPKE `info`; the message id follows.
pub const INFO_LABEL: &str = "haven.sealed-copy/v1 ";

/// The largest manifest, as a JWS, in bytes. A manifest with its certificate is about 3 KiB.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024;

/// The largest ciphertext of one copy, in bytes.
pub const MAX_CIPHERTEXT_BYTES: usize = 1024 * 1024;

/// How far in the future a manifest's `created_at` may lie, in seconds (clock skew between nodes).
pub const CREATED_AT_SKEW_SECS: i64 = 10 * 60;

/// The longest a manifest may stay valid, in seconds: the network's longest delivery TTL (3660 days).
pub const MAX_LIFETIME_SECS: i64 = 3660 * 86_400;

/// What the sender states about one copy, before the copy's hash is known. Serialized in this field
/// order, it is the copy's `aad`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBody {
    /// [`MANIFEST_VERSION`].
    pub v: u32,
    pub message_id: String,
    pub sender: OrgId,
    /// The person at the sender who sent it (the gateway checks it is the person it authenticated).
    pub sender_person: String,
    pub recipient: OrgId,
    pub kind: String,
    pub purpose: String,
    /// Empty when the message names no consent.
    pub consent_id: String,
    /// The sender's correlation id (a UUID, or empty).
    pub correlation_id: String,
    /// `sha256:<hex>` of the policy bundle the sender decided under.
    pub bundle_version: String,
    /// The names of the fields sealed in the copy, sorted and unique.
    pub fields: Vec<String>,
    /// The recipient's sealing key the copy is sealed to.
    pub recipient_kid: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds: the recipient refuses the copy after this.
    pub not_after: i64,
    /// The sender's newest key-log checkpoint that its own witness verified; the recipient checks it
    /// against its own view of the key log (a gateway showing two logs is caught this way).
    pub key_log: Option<Checkpoint>,
}

/// The signed payload of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub body: ManifestBody,
    /// Hex SHA-256 of the copy's `enc` and ciphertext ([`sealed_sha256`]).
    pub sealed_sha256: String,
}

/// One sealed copy, as the wire carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCopy {
    pub manifest: String,
    pub enc: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Why a copy or its manifest was refused. Each names what is wrong; [`ManifestError::code`] is the
/// reason a gateway or a recipient records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is {0} bytes; at most {MAX_MANIFEST_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the sealed copy is {0} bytes; at most {MAX_CIPHERTEXT_BYTES} are accepted")]
    CiphertextTooLarge(usize),
    #[error("the manifest's JWS `typ` is `{0}`, not `{MANIFEST_TYP}`")]
    WrongType(String),
    #[error("manifest signature: {0}")]
    Signature(TokenError),
    #[error("the manifest is signed by `{key_org}` but names `{sender}` as its sender")]
    OtherOrganization { sender: String, key_org: String },
    #[error("the manifest is malformed: {0}")]
    Malformed(String),
    #[error("the manifest's {what} is `{got}`, but the copy is for `{want}`")]
    Mismatch { what: &'static str, got: String, want: String },
    #[error("the copy's enc and ciphertext do not hash to the manifest's sealed_sha256")]
    HashMismatch,
    #[error("the manifest expired at {not_after} (now {now})")]
    Expired { not_after: i64, now: i64 },
    #[error("the copy does not open: {0}")]
    Open(HpkeError),
}

impl ManifestError {
    /// A stable code. Everything about the manifest's integrity is `manifest_mismatch`; an expired one
    /// is `manifest_expired`; a copy that does not open is `sealed_copy_unopenable`.
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::Expired { .. } => "manifest_expired",
            ManifestError::Open(_) => "sealed_copy_unopenable",
            _ => "manifest_mismatch",
        }
    }
}

impl ManifestBody {
    /// The copy's `aad`: the body as JSON, in the struct's field order.
    pub fn canonical(&self) -> Vec<u8> {
        // Serializing plain strings, integers and vectors cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The checks that need nothing but the clock: the version, the field list, the window.
    pub fn check(&self, now: i64) -> Result<(), ManifestError> {
        if self.v != MANIFEST_VERSION {
            return Err(ManifestError::Malformed(format!("version {} (this node reads {MANIFEST_VERSION})", self.v)));
        }
        if self.fields.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ManifestError::Malformed("its fields are not sorted and unique".into()));
        }
        if self.created_at > now + CREATED_AT_SKEW_SECS {
            return Err(ManifestError::Malformed(format!(
                "it was created at {}, in the future (now {now}); check the sender's clock",
                self.created_at
            )));
        }
        if self.not_after <= self.created_at || self.not_after - self.created_at > MAX_LIFETIME_SECS {
            return Err(ManifestError::Malformed("its window is empty or longer than the longest delivery TTL".into()));
        }
        if now >= self.not_after {
            return Err(ManifestError::Expired { not_after: self.not_after, now });
        }
        Ok(())
    }
}

/// The copy's HPKE `info`.
pub fn info(message_id: &str) -> Vec<u8> {
    let mut out = INFO_LABEL.as_bytes().to_vec();
    out.extend_from_slice(message_id.as_bytes());
    out
}

/// Hex SHA-256 of `enc` and the ciphertext: the length of `enc` (4 bytes, big-endian), `enc`, then
/// the ciphertext.
pub fn sealed_sha256(enc: &[u8], ciphertext: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(u32::try_from(enc.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.update(enc);
    h.update(ciphertext);
    hex::encode(h.finalize())
}

/// Why sealing failed at the sender.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Hpke(#[from] HpkeError),
    #[error("signing the manifest: {0}")]
    Sign(#[from] SignerError),
}

/// Seals `plaintext` to `recipient_key` under `body`, and signs the manifest with the sender's
/// signing key.
pub fn seal(
    signer: &OrgSigner,
    body: ManifestBody,
    recipient_key: &[u8; 32],
    plaintext: &[u8],
) -> Result<SealedCopy, SealError> {
    let (enc, ciphertext) = hpke::seal(recipient_key, &info(&body.message_id), &body.canonical(), plaintext)?;
    let manifest = Manifest { sealed_sha256: sealed_sha256(&enc, &ciphertext), body };
    let manifest = signer.sign_typed(MANIFEST_TYP, &manifest)?;
    Ok(SealedCopy { manifest, enc, ciphertext })
}

fn check_form(copy: &SealedCopy) -> Result<(), ManifestError> {
    if copy.manifest.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(copy.manifest.len()));
    }
    if copy.ciphertext.len() > MAX_CIPHERTEXT_BYTES {
        return Err(ManifestError::CiphertextTooLarge(copy.ciphertext.len()));
    }
    match token::typ_of(&copy.manifest) {
        Some(t) if t == MANIFEST_TYP => Ok(()),
        Some(t) => Err(ManifestError::WrongType(crate::untrusted::shown(&t))),
        None => Err(ManifestError::Signature(TokenError::Garbled("not a compact JWS with a `typ` header".into()))),
    }
}

fn check_hash(manifest: &Manifest, copy: &SealedCopy) -> Result<(), ManifestError> {
    if manifest.sealed_sha256 != sealed_sha256(&copy.enc, &copy.ciphertext) {
        return Err(ManifestError::HashMismatch);
    }
    Ok(())
}

/// Verifies a copy as the gateway does, against the registry's signing pins at `now`: the form, the
/// signature, that the key speaks for the manifest's sender, the body's own checks and the hash of
/// `enc` and ciphertext. Returns the manifest; whether it fits the envelope and the decision is the
/// gateway's to check.
pub fn verify_by_pins(copy: &SealedCopy, registry: &Registry, now: i64) -> Result<Manifest, ManifestError> {
    check_form(copy)?;
    let (manifest, key_org, _) =
        token::verify_signed::<Manifest>(&copy.manifest, registry).map_err(ManifestError::Signature)?;
    if manifest.body.sender != key_org {
        return Err(ManifestError::OtherOrganization {
            sender: manifest.body.sender.to_string(),
            key_org: key_org.to_string(),
        });
    }
    manifest.body.check(now)?;
    check_hash(&manifest, copy)?;
    Ok(manifest)
}

/// Verifies a copy as a recipient's node does, trusting the network CA (`ca`, DER) and not the
/// gateway: the form, the signature, that the CA issued the signing certificate to the manifest's
/// sender and that it was valid when the manifest was made, the body's own checks and the hash.
pub fn verify_by_ca(copy: &SealedCopy, ca: &[u8], now: i64) -> Result<Manifest, ManifestError> {
    check_form(copy)?;
    let (manifest, cert) = token::verify_by_ca::<Manifest>(&copy.manifest, ca).map_err(ManifestError::Signature)?;
    let key_org = cert.org().map_err(|e| ManifestError::Signature(TokenError::Garbled(e)))?;
    if manifest.body.sender != key_org {
        return Err(ManifestError::OtherOrganization {
            sender: manifest.body.sender.to_string(),
            key_org: key_org.to_string(),
        });
    }
    if cert.not_after < manifest.body.created_at {
        return Err(ManifestError::Signature(TokenError::Garbled(format!(
            "the signing certificate expired (at {}) before the manifest was made",
            cert.not_after
        ))));
    }
    manifest.body.check(now)?;
    check_hash(&manifest, copy)?;
    Ok(manifest)
}

/// Opens a verified copy with the recipient's private key: the plaintext the sender sealed.
pub fn open(manifest: &Manifest, copy: &SealedCopy, secret: &[u8; 32]) -> Result<Vec<u8>, ManifestError> {
    check_hash(manifest, copy)?;
    let body = &manifest.body;
    hpke::open(secret, &copy.enc, &info(&body.message_id), &body.canonical(), &copy.ciphertext)
        .map_err(ManifestError::Open)
}

#[cfg(test)]
mod tests;
