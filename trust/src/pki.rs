//! Certificates and keys on disk, and the TLS configurations built from them.
//!
//! Every file is named in the error when it cannot be used, so a start-up failure tells the operator
//! which file to fix. TLS is 1.3 only, with the ring provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::ids::OrgId;
use crate::registry::Fingerprint;

/// Why certificate material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file holds no PEM block of the expected kind.
    #[error("{path} holds no {what} (expected a PEM file)")]
    NoPem { path: PathBuf, what: &'static str },
    /// A PEM block could not be decoded.
    #[error("{path}: malformed {what}: {detail}")]
    Malformed { path: PathBuf, what: &'static str, detail: String },
    /// The certificate could not be parsed as X.509.
    #[error("certificate is not valid X.509: {0}")]
    X509(String),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Tls(String),
}

/// Installs ring as the process-wide rustls provider. Idempotent; called by every binary at start-up
/// so that no other provider (aws-lc) is ever picked implicitly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Read { path: path.to_owned(), source })
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Malformed { path: path.to_owned(), what: "certificate", detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(PkiError::NoPem { path: path.to_owned(), what: "certificate" });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PkiError::NoPem { path: path.to_owned(), what: "private key" },
        e => PkiError::Malformed { path: path.to_owned(), what: "private key", detail: e.to_string() },
    })
}

/// Reads the CRLs of a PEM file; a missing file means no revocations yet.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = read(path)?;
    CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Malformed { path: path.to_owned(), what: "CRL", detail: e.to_string() })
}

/// What the network cares about in a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub fingerprint: Fingerprint,
    /// URI SANs, for example `haven://org/harbor`.
    pub uris: Vec<String>,
    /// Serial number, big-endian bytes, for revocation checks.
    pub serial: Vec<u8>,
    /// Unix seconds after which the certificate is no longer valid.
    pub not_after: i64,
    /// The SubjectPublicKeyInfo's key bytes (for ECDSA, the uncompressed point).
    pub public_key: Vec<u8>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::X509(e.to_string()))?;
        let mut uris = Vec::new();
        for ext in cert.extensions() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                for name in &san.general_names {
                    if let GeneralName::URI(u) = name {
                        uris.push((*u).to_owned());
                    }
                }
            }
        }
        Ok(CertInfo {
            fingerprint: Fingerprint::of_der(der),
            uris,
            serial: cert.raw_serial().to_vec(),
            not_after: cert.validity().not_after.timestamp(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }

    /// The organization named by the certificate's URI SAN. Exactly one `haven://org/` URI is accepted.
    pub fn org(&self) -> Result<OrgId, String> {
        let mut orgs = self.uris.iter().filter(|u| u.starts_with(crate::ids::ORG_URI_PREFIX));
        match (orgs.next(), orgs.next()) {
            (Some(uri), None) => OrgId::from_uri(uri).map_err(|e| e.to_string()),
            (None, _) => Err("the certificate names no organization (no haven://org/<id> URI SAN)".into()),
            (Some(_), Some(_)) => Err("the certificate names more than one organization".into()),
        }
    }
}

/// The rustls server configuration for the gateway: TLS 1.3 only, client certificates required and
/// verified against the network CA and its CRLs.
pub fn server_config(
    ca: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).map_err(|e| PkiError::Tls(format!("CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The rustls server configuration for a node's own API when it listens beyond loopback: server
/// authentication only (people authenticate with their user tokens).
pub fn plain_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Where the files of a certificate directory (as `haven-certs init` writes it) live. Deployments use
/// the same layout with their own files.
#[derive(Debug, Clone)]
pub struct CertsDir(pub PathBuf);

impl CertsDir {
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    pub fn crl(&self) -> PathBuf {
        self.0.join("crl.pem")
    }
    pub fn pins(&self) -> PathBuf {
        self.0.join("pins.toml")
    }
    pub fn gateway_tls_cert(&self) -> PathBuf {
        self.0.join("gateway/tls.crt")
    }
    pub fn gateway_tls_key(&self) -> PathBuf {
        self.0.join("gateway/tls.key")
    }
    pub fn gateway_signing_cert(&self) -> PathBuf {
        self.0.join("gateway/signing.crt")
    }
    pub fn gateway_signing_key(&self) -> PathBuf {
        self.0.join("gateway/signing.key")
    }
    pub fn pseudonym_key(&self) -> PathBuf {
        self.0.join("gateway/pseudonym.key")
    }
    pub fn org_dir(&self, org: &OrgId) -> PathBuf {
        self.0.join("orgs").join(org.as_str())
    }
    pub fn org_tls_cert(&self, org: &OrgId) -> PathBuf {
        self.org_dir(org).join("tls.crt")
    }
    pub fn org_tls_key(&self, org: &OrgId) -> PathBuf {
        self.org_dir(org).join("tls.key")
    }
    pub fn org_signing_cert(&self, org: &OrgId) -> PathBuf {
        self.org_dir(org).join("signing.crt")
    }
    pub fn org_signing_key(&self, org: &OrgId) -> PathBuf {
        self.org_dir(org).join("signing.key")
    }
}

/// The serial numbers a CRL lists.
pub fn revoked_serials(crls: &[CertificateRevocationListDer<'_>]) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut out = Vec::new();
    for crl in crls {
        let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
            .map_err(|e| PkiError::X509(format!("CRL: {e}")))?;
        for r in parsed.iter_revoked_certificates() {
            out.push(r.raw_serial().to_vec());
        }
    }
    Ok(out)
}
