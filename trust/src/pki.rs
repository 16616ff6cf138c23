//! Certificates and keys on disk, and the TLS configurations built from them.
//!
//! Every file is named in the error when it cannot be used, so a start-up failure tells the operator
//! which file to fix. TLS is 1.3 only, with the ring provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
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
    /// A CRL file exists but holds no CRL.
    #[error(
        "{path} exists but holds no certificate revocation list; an emptied or truncated CRL would bring revoked certificates back, so it is refused: restore the network CA's latest crl.pem"
    )]
    EmptyCrl { path: PathBuf },
    /// A CRL is not the network CA's, or its signature does not verify.
    #[error("{path}: {detail}; a CRL must be issued and signed by the network CA in ca.pem")]
    ForeignCrl { path: PathBuf, detail: String },
    /// The private key is not the key of the certificate beside it.
    #[error(
        "{key} is not the private key of {cert}: install the key that was made with this certificate (or the certificate issued for this key)"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// A certificate names another party than the one it is installed for.
    #[error("{path} names {found}, but it is installed as the certificate of {expected}")]
    WrongHolder { path: PathBuf, expected: String, found: String },
    /// A certificate is of the wrong kind for its place (a TLS certificate where a signing one belongs,
    /// or the reverse).
    #[error("{path}: {detail}")]
    WrongPurpose { path: PathBuf, detail: String },
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

/// Reads the CRLs of a PEM file; a missing file means no revocations yet. A file that exists must
/// hold at least one CRL. The gateway reads its CRL with [`read_revocations`], which also checks the
/// issuer and signature; this is for tools that only pass the file on to rustls.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Malformed { path: path.to_owned(), what: "CRL", detail: e.to_string() })?;
    if crls.is_empty() {
        return Err(PkiError::EmptyCrl { path: path.to_owned() });
    }
    Ok(crls)
}

/// The network CA's revocation list, read from its file and checked.
#[derive(Debug, Clone)]
pub struct Revocations {
    /// The CRLs, for the TLS verifier.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Every serial number they list (big-endian bytes).
    pub serials: Vec<Vec<u8>>,
    /// The newest `thisUpdate` among them, Unix seconds: a CRL older than one already accepted is
    /// refused, so an old file cannot bring a revoked certificate back.
    pub this_update: i64,
    /// The CRL number of the newest, lowercase hex without leading zeros (empty if it has none).
    pub number: String,
}

/// Reads the CRL file at `path` and checks each CRL in it against the network CA `ca`: it must be
/// issued by the CA and its signature must verify. Returns `None` if the file does not exist (a
/// network that has never revoked anything); a file that exists but holds no CRL is refused.
pub fn read_revocations(path: &Path, ca: &[CertificateDer<'static>]) -> Result<Option<Revocations>, PkiError> {
    if !path.exists() {
        return Ok(None);
    }
    let crls = load_crls(path)?;
    let foreign = |detail: String| PkiError::ForeignCrl { path: path.to_owned(), detail };
    let cas = ca
        .iter()
        .map(|c| X509Certificate::from_der(c.as_ref()).map(|(_, c)| c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::X509(format!("CA certificate: {e}")))?;
    let mut out = Revocations { crls: Vec::new(), serials: Vec::new(), this_update: i64::MIN, number: String::new() };
    for crl in crls {
        let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
            .map_err(|e| PkiError::Malformed { path: path.to_owned(), what: "CRL", detail: e.to_string() })?;
        let issuer = cas
            .iter()
            .find(|c| c.subject().as_raw() == parsed.issuer().as_raw())
            .ok_or_else(|| foreign(format!("the CRL is issued by `{}`, not by the network CA", parsed.issuer())))?;
        parsed
            .verify_signature(issuer.public_key())
            .map_err(|e| foreign(format!("the CRL's signature does not verify ({e})")))?;
        let this_update = parsed.last_update().timestamp();
        if this_update >= out.this_update {
            out.this_update = this_update;
            out.number = parsed.crl_number().map(|n| n.to_str_radix(16)).unwrap_or_default();
        }
        out.serials.extend(parsed.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
        out.crls.push(crl);
    }
    Ok(Some(out))
}

/// Checks that the network CA (`ca`, DER) issued the certificate `cert` (DER): its issuer is the CA's
/// subject and the CA's key signed it. Whether it is revoked or still valid in time, the caller decides.
pub fn issued_by(cert: &[u8], ca: &[u8]) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(cert).map_err(|e| format!("the certificate: {e}"))?;
    let (_, ca) = X509Certificate::from_der(ca).map_err(|e| format!("the CA certificate: {e}"))?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(format!(
            "the certificate is issued by `{}`, not by the network CA `{}`",
            cert.issuer(),
            ca.subject()
        ));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| format!("the network CA's key did not sign the certificate ({e})"))
}

/// Whether a CRL numbered `new` (hex, as [`Revocations::number`]) comes before one numbered `old`.
/// Unnumbered CRLs are ordered by `thisUpdate` alone.
pub fn crl_number_before(new: &str, old: &str) -> bool {
    if new.is_empty() || old.is_empty() {
        return false;
    }
    let (new, old) = (new.trim_start_matches('0'), old.trim_start_matches('0'));
    (new.len(), new) < (old.len(), old)
}

/// What an identity certificate is installed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertPurpose {
    /// The gateway's TLS certificate: nodes dial it, so it must list serverAuth.
    TlsServer,
    /// An organization's TLS certificate: its node connects with it, so it must list clientAuth.
    TlsClient,
    /// A signing certificate (tokens, receipts, checkpoints): it must list no TLS usage.
    Signing,
}

/// Checks an identity installed at `cert` and `key` for the party named `holder_uri` (for example
/// `haven://gateway` or `haven://org/harbor`): the key is the certificate's, the certificate names
/// the holder, and it is of the kind its place needs. Run at start-up, so a mismatched pair stops the
/// process with the file named instead of failing every handshake or signature later.
pub fn check_identity(cert: &Path, key: &Path, holder_uri: &str, purpose: CertPurpose) -> Result<CertInfo, PkiError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key_der).map_err(|e| PkiError::Malformed {
        path: key.to_owned(),
        what: "private key",
        detail: e.to_string(),
    })?;
    let info = CertInfo::parse(chain[0].as_ref()).map_err(|e| match e {
        PkiError::X509(detail) => PkiError::Malformed { path: cert.to_owned(), what: "certificate", detail },
        e => e,
    })?;
    match rustls::sign::CertifiedKey::new(chain, signing).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(PkiError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned() });
        }
        Err(e) => return Err(PkiError::Tls(format!("{}: {e}", cert.display()))),
    }
    if !info.uris.iter().any(|u| u == holder_uri) {
        let found = info.uris.iter().filter(|u| u.starts_with("haven://")).cloned().collect::<Vec<_>>();
        return Err(PkiError::WrongHolder {
            path: cert.to_owned(),
            expected: holder_uri.to_owned(),
            found: if found.is_empty() { "no haven:// party".to_owned() } else { found.join(", ") },
        });
    }
    let wrong = |detail: &str| Err(PkiError::WrongPurpose { path: cert.to_owned(), detail: detail.to_owned() });
    match purpose {
        CertPurpose::TlsServer if !info.server_auth => {
            return wrong(
                "this certificate does not list the serverAuth extended key usage, so it cannot serve TLS; is it a signing certificate?",
            );
        }
        CertPurpose::TlsClient if !info.client_auth => {
            return wrong(
                "this certificate does not list the clientAuth extended key usage, so it cannot connect over mTLS; is it a signing certificate?",
            );
        }
        CertPurpose::Signing if info.client_auth || info.server_auth => {
            return wrong(
                "this is a TLS certificate (it lists a TLS extended key usage); the signing certificate belongs here",
            );
        }
        _ => {}
    }
    Ok(info)
}

/// Checks that an ECDSA P-256 private key (PKCS#8 PEM) is the key of a certificate (DER): a signer
/// built from a mismatched pair would sign what nobody can verify.
pub fn key_matches_cert(key_pem: &[u8], cert_der: &[u8]) -> Result<(), String> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePrivateKey;
    let text = std::str::from_utf8(key_pem).map_err(|_| "the key file is not PEM text".to_owned())?;
    let secret = p256::SecretKey::from_pkcs8_pem(text).map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
    let info = CertInfo::parse(cert_der).map_err(|e| e.to_string())?;
    if secret.public_key().to_encoded_point(false).as_bytes() != info.public_key.as_slice() {
        return Err("the private key is not the key of the certificate beside it".into());
    }
    Ok(())
}

/// What the network cares about in a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub fingerprint: Fingerprint,
    /// The subject's distinguished name as text (`CN=..., O=...`), for messages: a network CA's
    /// subject names the network.
    pub subject: String,
    /// URI SANs, for example `haven://org/harbor`.
    pub uris: Vec<String>,
    /// Serial number, big-endian bytes, for revocation checks.
    pub serial: Vec<u8>,
    /// Unix seconds after which the certificate is no longer valid.
    pub not_after: i64,
    /// The SubjectPublicKeyInfo's key bytes (for ECDSA, the uncompressed point).
    pub public_key: Vec<u8>,
    /// Whether the extended key usage lists clientAuth: only a TLS certificate may complete a
    /// handshake as a client, so a signing certificate (which lists no usage) never does.
    pub client_auth: bool,
    /// Whether the extended key usage lists serverAuth.
    pub server_auth: bool,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::X509(e.to_string()))?;
        let mut uris = Vec::new();
        let (mut client_auth, mut server_auth) = (false, false);
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        if let GeneralName::URI(u) = name {
                            uris.push((*u).to_owned());
                        }
                    }
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    client_auth = eku.client_auth;
                    server_auth = eku.server_auth;
                }
                _ => {}
            }
        }
        Ok(CertInfo {
            fingerprint: Fingerprint::of_der(der),
            subject: cert.subject().to_string(),
            uris,
            serial: cert.raw_serial().to_vec(),
            not_after: cert.validity().not_after.timestamp(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            client_auth,
            server_auth,
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
        .with_client_cert_verifier(Arc::new(ClientAuthOnly(verifier)))
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client certificate verifier that also requires the clientAuth extended key usage.
///
/// webpki accepts a certificate that lists no extended key usage at all for any purpose, and a
/// signing certificate lists none, so without this check an organization's signing certificate (and
/// its key) would complete a handshake as a client; only the registry's pins would stop it later.
#[derive(Debug)]
struct ClientAuthOnly(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ClientAuthOnly {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        let info = CertInfo::parse(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if !info.client_auth {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::InvalidPurpose));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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
