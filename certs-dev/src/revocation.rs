//! Owns revocation: `revoked.toml` (every revoked serial, whose it was and when), and `crl.pem`, the
//! CRL the CA signs from it. Every CRL gets the next CRL number, lasts seven days, and carries the
//! authority key identifier rustls-webpki needs to match it to the CA.

use std::path::Path;

use haven_trust::ids::OrgId;
use haven_trust::registry::Fingerprint;
use rcgen::{CertificateRevocationListParams, RevocationReason, RevokedCertParams, SerialNumber};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

use crate::ca::{NetworkCa, parse_cert};
use crate::error::CertsError;
use crate::issue::OnDisk;
use crate::layout::Layout;
use crate::party::{CertKind, Party};
use crate::pins;
use crate::store::{self, Existing, Secrecy};

/// How long a CRL is current.
pub const CRL_LIFETIME: Duration = Duration::days(7);

/// Why a certificate was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationCause {
    /// The operator revoked it (`haven-certs revoke`); no reason code is written in the CRL.
    Unspecified,
    /// A renewal replaced it (`haven-certs renew`).
    Superseded,
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedEntry {
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// The organization it named; absent for the gateway's own certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgId>,
    /// Whether it was the TLS or the signing certificate.
    pub which: CertKind,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Its fingerprint, so it is never pinned again.
    pub fingerprint: Fingerprint,
    /// Why it was revoked.
    pub reason: RevocationCause,
}

impl RevokedEntry {
    /// Whom the certificate named.
    pub fn party(&self) -> Party {
        self.org.clone().map_or(Party::Gateway, Party::Org)
    }
}

/// `revoked.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// The number of the last CRL written (0 before the first).
    #[serde(default)]
    pub crl_number: u64,
    /// Every revoked certificate, oldest first.
    #[serde(default)]
    pub revoked: Vec<RevokedEntry>,
}

impl RevocationList {
    /// Reads `revoked.toml`, or an empty list when there is none.
    pub fn load(layout: &Layout) -> Result<Self, CertsError> {
        let path = layout.revoked();
        if !path.exists() {
            return Ok(RevocationList::default());
        }
        let text = store::read_text(&path)?;
        toml::from_str(&text).map_err(|e| CertsError::Toml { path, detail: e.to_string() })
    }

    fn save(&self, layout: &Layout) -> Result<(), CertsError> {
        let path = layout.revoked();
        let text = toml::to_string(self).map_err(|e| CertsError::Toml { path: path.clone(), detail: e.to_string() })?;
        let header = "# Written by `haven-certs`: every certificate the development CA revoked. crl.pem is built\n\
                      # from this file. Do not edit by hand.\n\n";
        store::write(&path, format!("{header}{text}").as_bytes(), Secrecy::Public, Existing::Replace)
    }

    /// Whether a serial (lowercase hex) is revoked.
    pub fn contains_serial(&self, serial: &str) -> bool {
        self.revoked.iter().any(|e| e.serial == serial)
    }
}

/// Takes the next CRL number, saves `revoked.toml` and writes a fresh `crl.pem` listing every revoked
/// serial.
pub(crate) fn publish(layout: &Layout, ca: &NetworkCa, list: &mut RevocationList) -> Result<(), CertsError> {
    list.crl_number += 1;
    // Saved first: a CRL number must never be reused, even if writing the CRL fails.
    list.save(layout)?;
    let now = OffsetDateTime::now_utc();
    let mut revoked_certs = Vec::with_capacity(list.revoked.len());
    for entry in &list.revoked {
        let serial = hex::decode(&entry.serial).map_err(|e| CertsError::Toml {
            path: layout.revoked(),
            detail: format!("serial `{}` is not hex ({e})", entry.serial),
        })?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: entry.revoked_at,
            reason_code: match entry.reason {
                RevocationCause::Unspecified => None,
                RevocationCause::Superseded => Some(RevocationReason::Superseded),
            },
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + CRL_LIFETIME,
        crl_number: SerialNumber::from(list.crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: ca.key_id_method()?,
    };
    let crl = params.signed_by(ca.issuer()).map_err(CertsError::build("certificate revocation list"))?;
    let pem = crl.pem().map_err(CertsError::build("PEM of the certificate revocation list"))?;
    store::write(&layout.crl(), pem.as_bytes(), Secrecy::Public, Existing::Replace)
}

/// Adds the certificate at `path` to the list. Fails if it is not this CA's or is already revoked.
pub(crate) fn record(
    ca: &NetworkCa,
    list: &mut RevocationList,
    path: &Path,
    party: &Party,
    which: CertKind,
    reason: RevocationCause,
) -> Result<RevokedEntry, CertsError> {
    let cert = OnDisk::read(path)?;
    ca.check_issued(&parse_cert(&cert.der, path)?, path)?;
    if list.contains_serial(&cert.serial) {
        return Err(CertsError::AlreadyRevoked { path: path.to_owned(), serial: cert.serial });
    }
    let entry = RevokedEntry {
        serial: cert.serial,
        org: party.org().cloned(),
        which,
        revoked_at: OffsetDateTime::now_utc(),
        fingerprint: cert.fingerprint,
        reason,
    };
    list.revoked.push(entry.clone());
    Ok(entry)
}

/// Revokes an organization's TLS or signing certificate: records its serial in `revoked.toml`,
/// rewrites `crl.pem` and unpins it.
pub fn revoke(out: &Path, org: &OrgId, which: CertKind) -> Result<(), CertsError> {
    revoke_party(out, &Party::Org(org.clone()), which).map(|_| ())
}

/// Revokes a party's (the gateway's or an organization's) certificate at its place in the layout.
pub fn revoke_party(out: &Path, party: &Party, which: CertKind) -> Result<RevokedEntry, CertsError> {
    let layout = Layout::new(out);
    let path = layout.cert(party, which);
    if !path.exists() {
        return Err(CertsError::NoCertificate {
            path,
            hint: "check the organization id, or pass the certificate itself with `revoke --cert FILE`",
        });
    }
    revoke_at(&layout, &path, party, which)
}

/// Revokes the certificate in `cert` (for example one issued from a CSR and kept elsewhere). Whom it
/// names is read from its URI SAN, and what it is for from its extended key usage.
pub fn revoke_cert_file(out: &Path, cert: &Path) -> Result<RevokedEntry, CertsError> {
    let layout = Layout::new(out);
    let on_disk = OnDisk::read(cert)?;
    let parsed = parse_cert(&on_disk.der, cert)?;
    let (party, which) = identify(&parsed, cert)?;
    revoke_at(&layout, cert, &party, which)
}

fn revoke_at(layout: &Layout, path: &Path, party: &Party, which: CertKind) -> Result<RevokedEntry, CertsError> {
    let ca = NetworkCa::load(layout)?;
    let mut list = RevocationList::load(layout)?;
    let mut pins = pins::load(layout)?;
    let entry = record(&ca, &mut list, path, party, which, RevocationCause::Unspecified)?;
    publish(layout, &ca, &mut list)?;
    pins::remove(&mut pins, &entry.fingerprint);
    pins::save(layout, &pins)?;
    Ok(entry)
}

/// Reads whom a network certificate names and what it is for.
pub(crate) fn identify(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    path: &Path,
) -> Result<(Party, CertKind), CertsError> {
    let bad = |detail: String| CertsError::BadPem { path: path.to_owned(), what: "network certificate", detail };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("unreadable subject alternative name: {e}")))?
        .ok_or_else(|| bad("no subject alternative name".to_owned()))?;
    let party = san
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) if *uri == haven_trust::ids::GATEWAY_URI => Some(Party::Gateway),
            GeneralName::URI(uri) => OrgId::from_uri(uri).ok().map(Party::Org),
            _ => None,
        })
        .ok_or_else(|| bad("no haven://org/<id> or haven://gateway URI SAN".to_owned()))?;
    let is_tls = cert
        .extended_key_usage()
        .map_err(|e| bad(format!("unreadable extended key usage: {e}")))?
        .is_some_and(|eku| eku.value.client_auth || eku.value.server_auth);
    Ok((party, if is_tls { CertKind::Tls } else { CertKind::Signing }))
}
