//! The consent receipt: what a survivor agreed to share, with whom, for what and for how long.
//!
//! Modelled on the Kantara Consent Receipt, ISO/IEC TS 27560 and FHIR Consent. The controller's node signs
//! it as a compact JWS (ES256) with the organization's signing key; the gateway verifies it against the
//! organization's pinned signing certificate before it stores anything. See `docs/consent-receipt.md`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{OrgId, OrgType, PersonId};

/// The receipt format version this code writes and reads.
pub const RECEIPT_VERSION: u32 = 1;

/// How the consent was collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionMethod {
    /// A signed paper or digital form.
    Written,
    /// Spoken, with a second staff member as witness.
    VerbalWitnessed,
    /// Given through an electronic form the survivor completed.
    Electronic,
}

impl CollectionMethod {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionMethod::Written => "written",
            CollectionMethod::VerbalWitnessed => "verbal_witnessed",
            CollectionMethod::Electronic => "electronic",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Written, Self::VerbalWitnessed, Self::Electronic].into_iter().find(|m| m.as_str() == s)
    }
}

/// The signed content of a consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentReceipt {
    /// Format version, [`RECEIPT_VERSION`].
    pub version: u32,
    /// Chosen by the controller's node (a UUID); unique across the network.
    pub consent_id: String,
    /// The subject's pseudonym as minted by the controller: random, never derived from personal data.
    pub subject: String,
    /// The organization that collected the consent and alone may use, renew or revoke it.
    pub controller: OrgId,
    /// The purposes the survivor agreed to (network-defined, see `policies/purposes.toml`).
    pub purposes: Vec<String>,
    /// Organizations that may receive data under this consent.
    #[serde(default)]
    pub recipient_orgs: Vec<OrgId>,
    /// Organization types that may receive data under this consent.
    #[serde(default)]
    pub recipient_types: Vec<OrgType>,
    /// Sensitivity labels whose fields may be shared.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Individual fields that may be shared, in addition to those the labels cover.
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
    pub method: CollectionMethod,
    /// SHA-256 (hex) of the signed form, which stays at the controller.
    pub evidence_sha256: String,
    /// The language the survivor was informed in (BCP 47, for example `en` or `es-MX`).
    pub language: String,
    /// The person at the controller who recorded it.
    pub recorded_by: PersonId,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The consent this one renews, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
}

/// Where a consent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// In force (within its window, unless the window says otherwise).
    Given,
    /// Withdrawn by the subject.
    Withdrawn,
    /// Revoked by the controller organization (including "recorded in error").
    Revoked,
    /// Past `valid_until`, as recorded by the expiry sweep.
    Expired,
    /// Renewed: a newer consent supersedes it.
    Superseded,
}

impl ConsentState {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Given => "given",
            ConsentState::Withdrawn => "withdrawn",
            ConsentState::Revoked => "revoked",
            ConsentState::Expired => "expired",
            ConsentState::Superseded => "superseded",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Given, Self::Withdrawn, Self::Revoked, Self::Expired, Self::Superseded]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// A consent as the policy engine sees it: the signed receipt and its current state.
#[derive(Debug, Clone, Copy)]
pub struct ConsentView<'a> {
    pub receipt: &'a ConsentReceipt,
    pub state: ConsentState,
}
