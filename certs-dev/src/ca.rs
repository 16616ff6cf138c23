//! Owns the network CA: making it, writing it, loading it back from `ca.pem` + `ca.key` on a rerun,
//! and checking that a certificate really is one of its own.
//!
//! Whether freshly made or loaded, the CA is turned into an rcgen [`Issuer`] the same way (from the
//! certificate's DER), so the authority key identifier of everything it signs is the subject key
//! identifier written in `ca.pem`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::error::CertsError;
use crate::layout::Layout;
use crate::store::{self, Existing, Secrecy};
use crate::validity::{Validity, random_serial};

/// How every network CA's common name begins, unless the operator names it: `init` adds a random id
/// (`Haven network CA 3f9a0c21`), so that two networks' CAs never share a subject. With one subject, a
/// node dialing another network's gateway would find "its" CA and fail on a bad signature, instead of
/// being told that the gateway's certificate comes from another CA.
pub const NETWORK_CA_NAME: &str = "Haven network CA";

/// A new CA's common name: `name` if the operator gave one, else [`NETWORK_CA_NAME`] and a random id.
pub(crate) fn ca_common_name(name: Option<&str>) -> Result<String, CertsError> {
    let Some(name) = name else {
        return Ok(format!("{NETWORK_CA_NAME} {}", hex::encode(rand::random::<[u8; 4]>())));
    };
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 64 || trimmed.chars().any(char::is_control) {
        return Err(CertsError::BadCaName {
            name: haven_trust::untrusted::shown(name),
            detail: "a CA name is one line of 1 to 64 characters".to_owned(),
        });
    }
    Ok(trimmed.to_owned())
}

/// The common name in a CA certificate's subject, if it has one.
pub(crate) fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
}

/// A CA that can issue certificates and sign CRLs.
pub(crate) struct NetworkCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    /// Where the certificate lives, for error messages (empty for a CA not yet written).
    cert_path: PathBuf,
}

impl NetworkCa {
    /// Makes a new self-signed CA with a fresh ECDSA P-256 key, valid ten years.
    pub(crate) fn generate(common_name: &str) -> Result<Self, CertsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertsError::build("CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Haven");
        params.distinguished_name = dn;
        // The CA issues only end-entity certificates.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        let validity = Validity::ca_from_now();
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key).map_err(CertsError::build("CA certificate"))?;
        let cert_der = cert.der().clone();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(CertsError::build("CA issuer"))?;
        Ok(NetworkCa { issuer, cert_pem: cert.pem(), cert_der, cert_path: PathBuf::new() })
    }

    /// Loads the CA of a PKI directory, checking that its key matches its certificate.
    pub(crate) fn load(layout: &Layout) -> Result<Self, CertsError> {
        let cert_path = layout.ca_cert();
        let key_path = layout.ca_key();
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {}
            (false, false) => {
                return Err(CertsError::NoCa { path: cert_path, dir: layout.root().to_owned() });
            }
            (true, false) => {
                return Err(CertsError::CaIncomplete { present: cert_path, missing: key_path });
            }
            (false, true) => {
                return Err(CertsError::CaIncomplete { present: key_path, missing: cert_path });
            }
        }
        let cert_der = store::read_cert(&cert_path)?;
        let key = load_p256_key(&key_path)?;
        let parsed = parse_cert(&cert_der, &cert_path)?;
        if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(CertsError::CaKeyMismatch { key: key_path, cert: cert_path });
        }
        if !parsed.is_ca() {
            return Err(CertsError::BadPem {
                path: cert_path,
                what: "CA certificate",
                detail: "the certificate is not a CA (basicConstraints CA:false)".to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(CertsError::build(format!("CA issuer from {}", cert_path.display())))?;
        let cert_pem = store::read_text(&cert_path)?;
        Ok(NetworkCa { issuer, cert_der, cert_pem, cert_path })
    }

    /// Writes `ca.pem` and `ca.key`.
    pub(crate) fn write(&mut self, layout: &Layout, existing: Existing) -> Result<(), CertsError> {
        self.write_to(&layout.ca_cert(), &layout.ca_key(), existing)
    }

    /// Writes the certificate and key to the given files.
    pub(crate) fn write_to(&mut self, cert: &Path, key: &Path, existing: Existing) -> Result<(), CertsError> {
        store::write(key, self.issuer.key().serialize_pem().as_bytes(), Secrecy::Secret, existing)?;
        store::write(cert, self.cert_pem.as_bytes(), Secrecy::Public, existing)?;
        self.cert_path = cert.to_owned();
        Ok(())
    }

    /// The rcgen issuer, for signing certificates and CRLs.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The CA certificate, PEM.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// How to name the CA's key in a CRL's authority key identifier: the subject key identifier of the
    /// CA certificate, exactly as written.
    pub(crate) fn key_id_method(&self) -> Result<KeyIdMethod, CertsError> {
        let parsed = parse_cert(&self.cert_der, &self.cert_path)?;
        let ski = parsed.iter_extensions().find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
        Ok(ski.map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified))
    }

    /// The common name of the CA's subject.
    pub(crate) fn name(&self) -> Result<String, CertsError> {
        Ok(common_name(&parse_cert(&self.cert_der, &self.cert_path)?).unwrap_or_default())
    }

    /// Fails unless `cert` carries a valid signature by this CA.
    pub(crate) fn check_issued(&self, cert: &X509Certificate<'_>, path: &Path) -> Result<(), CertsError> {
        let ca = parse_cert(&self.cert_der, &self.cert_path)?;
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|_| CertsError::NotIssuedByCa { path: path.to_owned(), ca: self.cert_path.clone() })
    }
}

/// Parses a DER certificate, naming `path` on failure.
pub(crate) fn parse_cert<'a>(der: &'a [u8], path: &Path) -> Result<X509Certificate<'a>, CertsError> {
    X509Certificate::from_der(der).map(|(_, cert)| cert).map_err(|e| CertsError::BadPem {
        path: path.to_owned(),
        what: "X.509 certificate",
        detail: e.to_string(),
    })
}

/// Loads a PKCS#8 PEM key and checks it is ECDSA P-256.
pub(crate) fn load_p256_key(path: &Path) -> Result<KeyPair, CertsError> {
    let der = store::read_pkcs8_key(path)?;
    let key = KeyPair::try_from(&der).map_err(|e| CertsError::BadPem {
        path: path.to_owned(),
        what: "private key",
        detail: e.to_string(),
    })?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CertsError::NotP256 { path: path.to_owned(), found: format!("{:?}", key.algorithm()) });
    }
    Ok(key)
}
