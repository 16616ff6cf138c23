//! Owns certificate renewal: a party's certificate is reissued with a new key, the old one is revoked
//! (reason superseded) and unpinned, and the new one pinned. The gateway's TLS certificate keeps the
//! DNS names the old one carried, and takes any new ones given.

use std::path::Path;

use crate::ca::NetworkCa;
use crate::error::CertsError;
use crate::issue::{
    Issued, OnDisk, Validity, dns_names_of, gateway_names, issue_with_new_key, names_apply, takes_dns_names,
};
use crate::layout::Layout;
use crate::party::{CertKind, Party};
use crate::pins;
use crate::revocation::{self, RevocationCause, RevocationList};
use crate::store::Existing;

/// Reissues `party`'s certificate of kind `which` with a fresh key, in place, and revokes the old one
/// (unless it was revoked already, e.g. by `revoke` after a key compromise).
pub fn renew(out: &Path, party: &Party, which: CertKind) -> Result<Issued, CertsError> {
    renew_with_gateway_names(out, party, which, &[])
}

/// [`renew`], with the gateway's new TLS certificate also naming `add` (DNS host names) beside the
/// names the old one carried. Names are refused for any other certificate.
pub fn renew_with_gateway_names(
    out: &Path,
    party: &Party,
    which: CertKind,
    add: &[String],
) -> Result<Issued, CertsError> {
    let add = gateway_names(add)?;
    // Refused before anything changes.
    names_apply(party, which, &add)?;
    let layout = Layout::new(out);
    let ca = NetworkCa::load(&layout)?;
    let cert_path = layout.cert(party, which);
    let key_path = layout.key(party, which);
    if !cert_path.exists() {
        return Err(CertsError::NoCertificate {
            path: cert_path,
            hint: "nothing to renew; run `haven-certs init` to issue it",
        });
    }
    let mut revoked = RevocationList::load(&layout)?;
    let mut pins = pins::load(&layout)?;

    let old = OnDisk::read(&cert_path)?;
    // Read before anything changes, so a certificate whose names cannot be read is left as it was.
    let mut names = add;
    if takes_dns_names(party, which) {
        names.extend(dns_names_of(&old.der, &cert_path)?);
        names.sort();
        names.dedup();
    }
    if !revoked.contains_serial(&old.serial) {
        revocation::record(&ca, &mut revoked, &cert_path, party, which, RevocationCause::Superseded)?;
    }
    let new = issue_with_new_key(&ca, party, which, Validity::leaf_from_now(), &names)?;
    new.write(&cert_path, &key_path, Existing::Replace)?;
    revocation::publish(&layout, &ca, &mut revoked)?;

    pins::remove(&mut pins, &old.fingerprint);
    pins::add(&mut pins, party, which, new.fingerprint);
    pins::save(&layout, &pins)?;
    Ok(Issued { party: party.clone(), kind: which, cert_path, serial: new.serial, fingerprint: new.fingerprint })
}
