//! Owns the certificate profiles of the network and the act of issuing one:
//!
//! - a **TLS** certificate names its party by URI SAN (`haven://org/<id>` or `haven://gateway`), has key
//!   usage digitalSignature and extended key usages clientAuth + serverAuth; the gateway's also names
//!   `localhost` and `127.0.0.1`;
//! - a **signing** certificate names its party the same way, has key usage digitalSignature only and no
//!   extended key usage, so it can never serve as a TLS identity.
//!
//! Every certificate gets a random serial so that a revocation can name it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use haven_trust::registry::Fingerprint;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::ca::{NetworkCa, parse_cert};
use crate::error::CertsError;
use crate::party::{CertKind, Party};
use crate::store::{self, Existing, Secrecy};

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

impl Validity {
    /// A minute of slack for clocks that run slightly behind.
    const BACKDATE: Duration = Duration::minutes(1);

    /// Ten years from a minute ago.
    pub(crate) fn ca_from_now() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Self::BACKDATE, not_after: now + Duration::days(3652) }
    }

    /// One year from a minute ago.
    pub(crate) fn leaf_from_now() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Self::BACKDATE, not_after: now + Duration::days(365) }
    }

    /// A window that closed yesterday.
    pub(crate) fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Duration::days(30), not_after: now - Duration::days(1) }
    }
}

/// A fresh random serial: 16 bytes, positive, never starting with a zero byte, so its hex is canonical.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

/// The canonical hex of a certificate's serial (lowercase, leading zero bytes removed).
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[first..])
}

/// The parameters of a party's certificate of a kind, with a random serial.
pub(crate) fn leaf_params(party: &Party, kind: CertKind, validity: Validity) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let common_name = match (party, kind) {
        (Party::Gateway, CertKind::Tls) => "Haven gateway".to_owned(),
        (Party::Gateway, CertKind::Signing) => "Haven gateway audit signing".to_owned(),
        (Party::Org(org), _) => org.as_str().to_owned(),
    };
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Haven");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.serial_number = Some(random_serial());
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.use_authority_key_identifier_extension = true;

    let uri = party.uri();
    let uri_san = SanType::URI(uri.clone().try_into().map_err(CertsError::build(format!("URI SAN {uri}")))?);
    params.subject_alt_names = match (party, kind) {
        (Party::Gateway, CertKind::Tls) => vec![
            SanType::DnsName("localhost".try_into().map_err(CertsError::build("DNS SAN localhost"))?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            uri_san,
        ],
        _ => vec![uri_san],
    };
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match kind {
        CertKind::Tls => vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth],
        CertKind::Signing => Vec::new(),
    };
    Ok(params)
}

/// A certificate just issued, with its key when the key was made here.
pub(crate) struct NewCert {
    pub(crate) cert_pem: String,
    /// PKCS#8 PEM; `None` when the key belongs to the requester (CSR).
    pub(crate) key_pem: Option<String>,
    pub(crate) serial: String,
    pub(crate) fingerprint: Fingerprint,
}

impl NewCert {
    /// Writes the key (0600) then the certificate.
    pub(crate) fn write(&self, cert: &Path, key: &Path, existing: Existing) -> Result<(), CertsError> {
        if let Some(key_pem) = &self.key_pem {
            store::write(key, key_pem.as_bytes(), Secrecy::Secret, existing)?;
        }
        store::write(cert, self.cert_pem.as_bytes(), Secrecy::Public, existing)
    }
}

/// Issues a certificate for an existing public key.
pub(crate) fn issue_for_key(
    ca: &NetworkCa,
    party: &Party,
    kind: CertKind,
    validity: Validity,
    public_key: &impl PublicKeyData,
) -> Result<NewCert, CertsError> {
    let params = leaf_params(party, kind, validity)?;
    let serial = params.serial_number.as_ref().map(|s| serial_hex(s.as_ref())).unwrap_or_default();
    let cert = params
        .signed_by(public_key, ca.issuer())
        .map_err(CertsError::build(format!("{kind} certificate of the {party}")))?;
    Ok(NewCert { cert_pem: cert.pem(), fingerprint: Fingerprint::of_der(cert.der()), key_pem: None, serial })
}

/// Issues a certificate with a fresh ECDSA P-256 key.
pub(crate) fn issue_with_new_key(
    ca: &NetworkCa,
    party: &Party,
    kind: CertKind,
    validity: Validity,
) -> Result<NewCert, CertsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertsError::build("ECDSA P-256 key"))?;
    let mut cert = issue_for_key(ca, party, kind, validity, &key)?;
    cert.key_pem = Some(key.serialize_pem());
    Ok(cert)
}

/// What `init`, `renew` and `sign-csr` report for each certificate they issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Whom the certificate names.
    pub party: Party,
    /// What it is for.
    pub kind: CertKind,
    /// Where the certificate was written.
    pub cert_path: PathBuf,
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// Its pin.
    pub fingerprint: Fingerprint,
}

/// A certificate read back from disk.
pub(crate) struct OnDisk {
    pub(crate) der: CertificateDer<'static>,
    pub(crate) serial: String,
    pub(crate) fingerprint: Fingerprint,
}

impl OnDisk {
    /// Reads a PEM certificate and its serial.
    pub(crate) fn read(path: &Path) -> Result<Self, CertsError> {
        let der = store::read_cert(path)?;
        let serial = serial_hex(parse_cert(&der, path)?.raw_serial());
        Ok(OnDisk { fingerprint: Fingerprint::of_der(&der), serial, der })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_random_and_canonical_in_hex() {
        let a = random_serial();
        let b = random_serial();
        assert_ne!(a, b);
        let bytes = a.to_bytes();
        assert!(bytes[0] != 0 && bytes[0] < 0x80);
        assert_eq!(serial_hex(&bytes).len(), 32);
        assert_eq!(serial_hex(&[0, 0x9f, 1]), "9f01");
        assert_eq!(serial_hex(&[0]), "00");
    }
}
