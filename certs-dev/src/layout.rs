//! Owns the on-disk layout of a development PKI directory. Every other crate finds its certificates
//! through [`Layout`], so the paths are decided in one place:
//!
//! ```text
//! DIR/ca.pem, ca.key              the network CA
//! DIR/crl.pem                     the CA's current revocation list
//! DIR/revoked.toml                every revoked serial (the CRL is rebuilt from it)
//! DIR/pins.toml                   fingerprints of every valid certificate issued (haven_trust::registry::PinsFile)
//! DIR/gateway/tls.crt, tls.key    the gateway's mutual-TLS certificate
//! DIR/gateway/signing.crt, .key   the gateway's audit checkpoint signing certificate
//! DIR/gateway/pseudonym.key       the gateway's pseudonym secret (32 bytes, hex)
//! DIR/orgs/<id>/tls.crt, tls.key, signing.crt, signing.key
//! ```

use std::path::{Path, PathBuf};

use haven_trust::ids::OrgId;

use crate::party::{CertKind, Party};

/// The paths of a development PKI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `out` (the `--out` directory).
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Layout { root: out.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The network CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// The network CA private key (PKCS#8 PEM, mode 0600).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    /// The CA's certificate revocation list (PEM).
    pub fn crl(&self) -> PathBuf {
        self.root.join("crl.pem")
    }

    /// The list of revoked certificates the CRL is built from.
    pub fn revoked(&self) -> PathBuf {
        self.root.join("revoked.toml")
    }

    /// The pins file (`haven_trust::registry::PinsFile`).
    pub fn pins(&self) -> PathBuf {
        self.root.join("pins.toml")
    }

    /// The gateway's directory.
    pub fn gateway_dir(&self) -> PathBuf {
        self.root.join("gateway")
    }

    /// The gateway's mutual-TLS certificate.
    pub fn gateway_tls_cert(&self) -> PathBuf {
        self.gateway_dir().join("tls.crt")
    }

    /// The gateway's mutual-TLS key.
    pub fn gateway_tls_key(&self) -> PathBuf {
        self.gateway_dir().join("tls.key")
    }

    /// The certificate of the key that signs the gateway's audit checkpoints.
    pub fn gateway_signing_cert(&self) -> PathBuf {
        self.gateway_dir().join("signing.crt")
    }

    /// The key that signs the gateway's audit checkpoints.
    pub fn gateway_signing_key(&self) -> PathBuf {
        self.gateway_dir().join("signing.key")
    }

    /// The gateway's secret for recipient-scoped pseudonyms: 32 random bytes as 64 hex digits, no
    /// newline.
    pub fn pseudonym_key(&self) -> PathBuf {
        self.gateway_dir().join("pseudonym.key")
    }

    /// The directory that holds every organization's directory.
    pub fn orgs_dir(&self) -> PathBuf {
        self.root.join("orgs")
    }

    /// One organization's directory.
    pub fn org_dir(&self, org: &OrgId) -> PathBuf {
        self.orgs_dir().join(org.as_str())
    }

    /// An organization's mutual-TLS certificate (the leaf only, no chain).
    pub fn org_tls_cert(&self, org: &OrgId) -> PathBuf {
        self.org_dir(org).join("tls.crt")
    }

    /// An organization's mutual-TLS key.
    pub fn org_tls_key(&self, org: &OrgId) -> PathBuf {
        self.org_dir(org).join("tls.key")
    }

    /// An organization's signing certificate (the leaf only, no chain).
    pub fn org_signing_cert(&self, org: &OrgId) -> PathBuf {
        self.org_dir(org).join("signing.crt")
    }

    /// An organization's signing key.
    pub fn org_signing_key(&self, org: &OrgId) -> PathBuf {
        self.org_dir(org).join("signing.key")
    }

    /// The directory holding a party's files.
    pub fn party_dir(&self, party: &Party) -> PathBuf {
        match party {
            Party::Gateway => self.gateway_dir(),
            Party::Org(org) => self.org_dir(org),
        }
    }

    /// A party's certificate of a kind.
    pub fn cert(&self, party: &Party, kind: CertKind) -> PathBuf {
        match (party, kind) {
            (Party::Gateway, CertKind::Tls) => self.gateway_tls_cert(),
            (Party::Gateway, CertKind::Signing) => self.gateway_signing_cert(),
            (Party::Org(org), CertKind::Tls) => self.org_tls_cert(org),
            (Party::Org(org), CertKind::Signing) => self.org_signing_cert(org),
        }
    }

    /// A party's key of a kind.
    pub fn key(&self, party: &Party, kind: CertKind) -> PathBuf {
        match (party, kind) {
            (Party::Gateway, CertKind::Tls) => self.gateway_tls_key(),
            (Party::Gateway, CertKind::Signing) => self.gateway_signing_key(),
            (Party::Org(org), CertKind::Tls) => self.org_tls_key(org),
            (Party::Org(org), CertKind::Signing) => self.org_signing_key(org),
        }
    }
}
