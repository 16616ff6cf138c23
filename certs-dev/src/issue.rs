//! Owns the certificate profiles of the network and the act of issuing one:
//!
//! - a **TLS** certificate names its party by URI SAN (`haven://org/<id>` or `haven://gateway`), has key
//!   usage digitalSignature and extended key usages clientAuth + serverAuth; the gateway's also names
//!   `localhost` and `127.0.0.1`, and the DNS names the operator gives it ([`gateway_names`]);
//! - a **signing** certificate names its party the same way, has key usage digitalSignature only and no
//!   extended key usage, so it can never serve as a TLS identity.
//!
//! Every certificate gets a random serial so that a revocation can name it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use haven_trust::registry::Fingerprint;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use rustls_pki_types::{CertificateDer, DnsName};
use x509_parser::extensions::GeneralName;

use crate::ca::{NetworkCa, parse_cert};
use crate::error::CertsError;
use crate::party::{CertKind, Party};
use crate::store::{self, Existing, Secrecy};
pub(crate) use crate::validity::{Validity, random_serial};

/// The canonical hex of a certificate's serial (lowercase, leading zero bytes removed).
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[first..])
}

/// Checks the DNS names an operator gives the gateway's TLS certificate, beside `localhost`: each must
/// be a host name (not an address, no wildcard), and they come back lowercased, sorted, without repeats.
pub(crate) fn gateway_names(names: &[String]) -> Result<Vec<String>, CertsError> {
    let mut checked = Vec::with_capacity(names.len());
    for name in names {
        let bad = |detail: &str| CertsError::BadGatewayName {
            name: name.clone(),
            detail: format!("{detail}; give the host name nodes dial the gateway by, such as gateway.example.org"),
        };
        if name.parse::<IpAddr>().is_ok() {
            return Err(bad("it is an IP address; nodes check the gateway by name"));
        }
        if name.contains('*') {
            return Err(bad("wildcards are not issued: name the gateway's host itself"));
        }
        if name.ends_with('.') {
            return Err(bad("give the name without its trailing dot"));
        }
        let dns = DnsName::try_from(name.as_str()).map_err(|e| bad(&e.to_string()))?;
        let lower = dns.as_ref().to_ascii_lowercase();
        if lower != "localhost" {
            checked.push(lower);
        }
    }
    checked.sort();
    checked.dedup();
    Ok(checked)
}

/// Whether a party's certificate of a kind carries DNS names: only the gateway's TLS certificate does.
pub(crate) fn takes_dns_names(party: &Party, kind: CertKind) -> bool {
    *party == Party::Gateway && kind == CertKind::Tls
}

/// Refuses DNS names for a certificate that carries none (see [`takes_dns_names`]).
pub(crate) fn names_apply(party: &Party, kind: CertKind, names: &[String]) -> Result<(), CertsError> {
    if names.is_empty() || takes_dns_names(party, kind) {
        return Ok(());
    }
    Err(CertsError::BadGatewayName {
        name: names.join(", "),
        detail: format!(
            "only the gateway's TLS certificate carries DNS names (renew it with --gateway), not the {kind} certificate of the {party}"
        ),
    })
}

/// The DNS names a certificate carries, other than `localhost`.
pub(crate) fn dns_names_of(der: &[u8], path: &Path) -> Result<Vec<String>, CertsError> {
    let cert = parse_cert(der, path)?;
    let san = cert.subject_alternative_name().map_err(|e| CertsError::BadPem {
        path: path.to_owned(),
        what: "X.509 certificate",
        detail: format!("unreadable subject alternative names: {e}"),
    })?;
    let mut names: Vec<String> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) if *d != "localhost" => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The parameters of a party's certificate of a kind, with a random serial. `dns_names` (checked by
/// [`gateway_names`]) go into the gateway's TLS certificate, beside `localhost`; no other certificate
/// carries DNS names.
pub(crate) fn leaf_params(
    party: &Party,
    kind: CertKind,
    validity: Validity,
    dns_names: &[String],
) -> Result<CertificateParams, CertsError> {
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

    names_apply(party, kind, dns_names)?;
    let uri = party.uri();
    let uri_san = SanType::URI(uri.clone().try_into().map_err(CertsError::build(format!("URI SAN {uri}")))?);
    params.subject_alt_names = match (party, kind) {
        (Party::Gateway, CertKind::Tls) => {
            let mut sans =
                vec![SanType::DnsName("localhost".try_into().map_err(CertsError::build("DNS SAN localhost"))?)];
            for name in dns_names {
                sans.push(SanType::DnsName(
                    name.as_str().try_into().map_err(CertsError::build(format!("DNS SAN {name}")))?,
                ));
            }
            sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            sans.push(uri_san);
            sans
        }
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
    dns_names: &[String],
    public_key: &impl PublicKeyData,
) -> Result<NewCert, CertsError> {
    let params = leaf_params(party, kind, validity, dns_names)?;
    let serial = params.serial_number.as_ref().map(|s| serial_hex(s.as_ref())).unwrap_or_default();
    let cert = params
        .signed_by(public_key, ca.issuer())
        .map_err(CertsError::build(format!("{kind} certificate of the {party}")))?;
    Ok(NewCert { cert_pem: cert.pem(), fingerprint: Fingerprint::of_der(cert.der()), key_pem: None, serial })
}

/// Issues a certificate with a fresh ECDSA P-256 key (`dns_names` as in [`leaf_params`]).
pub(crate) fn issue_with_new_key(
    ca: &NetworkCa,
    party: &Party,
    kind: CertKind,
    validity: Validity,
    dns_names: &[String],
) -> Result<NewCert, CertsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertsError::build("ECDSA P-256 key"))?;
    let mut cert = issue_for_key(ca, party, kind, validity, dns_names, &key)?;
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

    #[test]
    fn gateway_names_are_host_names_lowercased_once_each() {
        let names = |v: &[&str]| gateway_names(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            names(&["Gateway.Example.org", "gateway.example.org", "localhost", "gw-2.example.org", "haven-gw"])
                .unwrap(),
            vec!["gateway.example.org".to_owned(), "gw-2.example.org".to_owned(), "haven-gw".to_owned()]
        );
        for (bad, why) in [
            ("10.0.0.7", "IP address"),
            ("*.example.org", "wildcards"),
            ("gateway.example.org.", "trailing dot"),
            ("gate way.example.org", "invalid"),
            ("", "invalid"),
        ] {
            let e = names(&[bad]).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }
}
