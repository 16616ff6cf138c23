//! Owns `pins.toml`: the fingerprints of every valid certificate the CA issued, in the
//! [`PinsFile`] format the registry merges. A certificate is pinned when issued and unpinned when
//! revoked; a revoked fingerprint is never pinned again.

use std::path::Path;

use haven_trust::ids::OrgId;
use haven_trust::registry::{Fingerprint, PinSet, PinsFile};

use crate::error::CertsError;
use crate::issue::OnDisk;
use crate::layout::Layout;
use crate::party::{CertKind, Party};
use crate::store::{self, Existing, Secrecy};

/// Reads `pins.toml`, or an empty pins file when there is none.
pub(crate) fn load(layout: &Layout) -> Result<PinsFile, CertsError> {
    let path = layout.pins();
    if !path.exists() {
        return Ok(PinsFile::default());
    }
    PinsFile::load(&path).map_err(|e| CertsError::Toml { path, detail: e.to_string() })
}

/// Writes `pins.toml`.
pub(crate) fn save(layout: &Layout, pins: &PinsFile) -> Result<(), CertsError> {
    let path = layout.pins();
    let text = toml::to_string(pins).map_err(|e| CertsError::Toml { path: path.clone(), detail: e.to_string() })?;
    let header = "# Written by `haven-certs`: the SHA-256 fingerprints of every valid certificate the development\n\
                  # CA issued. The gateway merges this file into policies/orgs.toml. Do not edit by hand.\n\n";
    store::write(&path, format!("{header}{text}").as_bytes(), Secrecy::Public, Existing::Replace)
}

fn set_mut<'a>(pins: &'a mut PinsFile, party: &Party) -> &'a mut PinSet {
    match party {
        Party::Gateway => &mut pins.gateway,
        Party::Org(org) => pins.org.entry(org.clone()).or_default(),
    }
}

/// Pins a fingerprint (once).
pub(crate) fn add(pins: &mut PinsFile, party: &Party, kind: CertKind, fingerprint: Fingerprint) {
    let set = set_mut(pins, party);
    let list = match kind {
        CertKind::Tls => &mut set.tls,
        CertKind::Signing => &mut set.signing,
    };
    if !list.contains(&fingerprint) {
        list.push(fingerprint);
    }
}

/// Unpins a fingerprint wherever it appears.
pub(crate) fn remove(pins: &mut PinsFile, fingerprint: &Fingerprint) {
    for set in std::iter::once(&mut pins.gateway).chain(pins.org.values_mut()) {
        set.tls.retain(|f| f != fingerprint);
        set.signing.retain(|f| f != fingerprint);
    }
}

/// The pins after a rerun of `init`: those already recorded, plus every certificate in the layout,
/// minus every revoked certificate.
pub(crate) fn rebuild<'a>(
    layout: &Layout,
    revoked: impl IntoIterator<Item = &'a Fingerprint>,
) -> Result<PinsFile, CertsError> {
    let mut pins = load(layout)?;
    let mut parties = vec![Party::Gateway];
    parties.extend(org_dirs(layout)?.into_iter().map(Party::Org));
    for party in &parties {
        for kind in CertKind::ALL {
            let path = layout.cert(party, kind);
            if path.exists() {
                let cert = OnDisk::read(&path)?;
                add(&mut pins, party, kind, cert.fingerprint);
            }
        }
    }
    for fingerprint in revoked {
        remove(&mut pins, fingerprint);
    }
    Ok(pins)
}

/// The organizations that have a directory under `orgs/`.
pub(crate) fn org_dirs(layout: &Layout) -> Result<Vec<OrgId>, CertsError> {
    let dir = layout.orgs_dir();
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(CertsError::io("list", &dir))? {
        let entry = entry.map_err(CertsError::io("list", &dir))?;
        let is_dir = entry.file_type().map_err(CertsError::io("inspect", entry.path()))?.is_dir();
        if let (true, Some(id)) = (is_dir, entry.file_name().to_str().and_then(|n| OrgId::parse(n).ok())) {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}

/// Whether a fingerprint is pinned for this party and kind.
pub fn is_pinned(pins: &PinsFile, party: &Party, kind: CertKind, fingerprint: &Fingerprint) -> bool {
    let set = match party {
        Party::Gateway => Some(&pins.gateway),
        Party::Org(org) => pins.org.get(org),
    };
    set.is_some_and(|s| match kind {
        CertKind::Tls => s.tls.contains(fingerprint),
        CertKind::Signing => s.signing.contains(fingerprint),
    })
}

/// Reads the pins of a PKI directory (an empty set when `pins.toml` does not exist yet).
pub fn read_pins(out: &Path) -> Result<PinsFile, CertsError> {
    load(&Layout::new(out))
}
