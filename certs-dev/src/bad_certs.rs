//! Owns the certificates that must be REFUSED, for the TLS tests of the gateway and the nodes: one
//! that has expired, one the CA signed but the registry does not pin, and one from another CA. Each is
//! written as `tls.crt` + `tls.key` into a directory of the test's choosing; the network's own files
//! are never touched (except the pins of the expired certificate, see below).

use std::path::Path;

use haven_trust::ids::OrgId;

use crate::ca::NetworkCa;
use crate::error::CertsError;
use crate::issue::{Validity, issue_with_new_key};
use crate::layout::Layout;
use crate::party::{CertKind, Party};
use crate::pins;
use crate::store::{self, Existing, Secrecy};

/// Issues, with the network's real CA, a TLS certificate for `org` whose validity ended yesterday, and
/// writes `tls.crt` and `tls.key` into `dest_dir`.
///
/// The certificate IS pinned in `pins.toml`, so that expiry is its only flaw: a peer that accepts it
/// is not checking validity dates.
pub fn issue_expired_org_cert(out: &Path, org: &OrgId, dest_dir: &Path) -> Result<(), CertsError> {
    let layout = Layout::new(out);
    let ca = NetworkCa::load(&layout)?;
    let party = Party::Org(org.clone());
    let cert = issue_with_new_key(&ca, &party, CertKind::Tls, Validity::expired(), &[])?;
    cert.write(&dest_dir.join("tls.crt"), &dest_dir.join("tls.key"), Existing::Replace)?;
    let mut pins = pins::load(&layout)?;
    pins::add(&mut pins, &party, CertKind::Tls, cert.fingerprint);
    pins::save(&layout, &pins)
}

/// Issues, with the network's real CA, a valid TLS certificate for `org` that is NOT pinned, and writes
/// `tls.crt` and `tls.key` into `dest_dir`. A peer that accepts it trusts the CA alone.
pub fn issue_unpinned_org_cert(out: &Path, org: &OrgId, dest_dir: &Path) -> Result<(), CertsError> {
    let ca = NetworkCa::load(&Layout::new(out))?;
    let cert = issue_with_new_key(&ca, &Party::Org(org.clone()), CertKind::Tls, Validity::leaf_from_now(), &[])?;
    cert.write(&dest_dir.join("tls.crt"), &dest_dir.join("tls.key"), Existing::Replace)
}

/// Makes a whole other CA and has it issue a valid TLS certificate for `haven://org/<org>`; writes
/// `tls.crt`, `tls.key` and that CA's `ca.pem` into `dest_dir`.
pub fn foreign_ca_org_cert(org: &OrgId, dest_dir: &Path) -> Result<(), CertsError> {
    let ca = NetworkCa::generate("Impostor Network CA")?;
    let cert = issue_with_new_key(&ca, &Party::Org(org.clone()), CertKind::Tls, Validity::leaf_from_now(), &[])?;
    cert.write(&dest_dir.join("tls.crt"), &dest_dir.join("tls.key"), Existing::Replace)?;
    store::write(&dest_dir.join("ca.pem"), ca.cert_pem().as_bytes(), Secrecy::Public, Existing::Replace)
}
