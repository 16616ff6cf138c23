//! Owns the two questions every certificate answers: whom it names ([`Party`]: the gateway or an
//! organization) and what it is for ([`CertKind`]: mutual TLS or signing).

use std::fmt;
use std::str::FromStr;

use haven_trust::ids::{GATEWAY_URI, OrgId};
use serde::{Deserialize, Serialize};

/// What a certificate is for. Each party holds one of each, with separate keys (as X-Road members keep
/// an authentication key and a signing key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    /// The mutual-TLS certificate (extended key usages clientAuth and serverAuth).
    Tls,
    /// The signing certificate: tokens, consent receipts, audit checkpoints (digitalSignature only, no
    /// TLS usage).
    Signing,
}

impl CertKind {
    /// Both kinds, TLS first.
    pub const ALL: [CertKind; 2] = [CertKind::Tls, CertKind::Signing];

    /// The name used on the command line and in `revoked.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Tls => "tls",
            CertKind::Signing => "signing",
        }
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tls" => Ok(CertKind::Tls),
            "signing" => Ok(CertKind::Signing),
            other => Err(format!("unknown certificate kind `{other}` (expected `tls` or `signing`)")),
        }
    }
}

/// Whom a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// The gateway (`haven://gateway`).
    Gateway,
    /// A member organization (`haven://org/<id>`).
    Org(OrgId),
}

impl Party {
    /// The URI SAN written into the party's certificates.
    pub fn uri(&self) -> String {
        match self {
            Party::Gateway => GATEWAY_URI.to_owned(),
            Party::Org(id) => id.uri(),
        }
    }

    /// The organization, if the party is one.
    pub fn org(&self) -> Option<&OrgId> {
        match self {
            Party::Gateway => None,
            Party::Org(id) => Some(id),
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Gateway => f.write_str("gateway"),
            Party::Org(id) => write!(f, "organization {id}"),
        }
    }
}
