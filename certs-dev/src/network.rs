//! Owns setting up a development network's PKI directory ([`init`]): the CA, the gateway's
//! certificates and pseudonym secret, a TLS and a signing certificate for every organization in the
//! registry, the first CRL and the pins.
//!
//! A rerun keeps the CA and every file already there, issues only what is missing (a newly listed
//! organization, a deleted file), refreshes the CRL and rebuilds the pins. `force` starts over with a
//! new CA.
//!
//! The gateway's TLS certificate names `localhost` and `127.0.0.1`, and the DNS names given to
//! [`init_with_gateway_names`] (the names nodes dial). A rerun that gives names the existing
//! certificate lacks is refused with the `renew` command that adds them.

use std::path::Path;

use haven_trust::registry::{PinsFile, Registry};

use crate::ca::{NetworkCa, ca_common_name};
use crate::error::CertsError;
use crate::issue::{Issued, OnDisk, Validity, dns_names_of, gateway_names, issue_with_new_key, takes_dns_names};
use crate::layout::Layout;
use crate::party::{CertKind, Party};
use crate::pins;
use crate::revocation::{self, RevocationList};
use crate::store::{self, Existing, HINT_USE_RENEW, Secrecy};

/// What [`init`] did.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The directory written.
    pub layout: Layout,
    /// Whether a new CA was made (false when an existing one was reused).
    pub ca_created: bool,
    /// Every certificate issued by this run, in order (gateway first).
    pub issued: Vec<Issued>,
    /// Whether the pseudonym secret was made by this run.
    pub pseudonym_key_created: bool,
    /// The pins now in `pins.toml`.
    pub pins: PinsFile,
    /// The network CA's common name.
    pub ca_name: String,
}

/// What [`init_with`] is asked to do beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Delete everything an earlier `init` wrote, the CA included, and start over.
    pub force: bool,
    /// DNS names for the gateway's TLS certificate, beside `localhost` and `127.0.0.1`.
    pub gateway_names: Vec<String>,
    /// The common name of a new CA; by default `Haven network CA` and a random id, so that no two
    /// networks' CAs share a subject. Refused if the directory's CA exists under another name.
    pub ca_name: Option<String>,
}

/// Sets up (or completes) the development PKI in `out` for the organizations of `orgs_toml`. See the
/// module documentation for what a rerun and `force` do.
pub fn init(orgs_toml: &Path, out: &Path, force: bool) -> Result<InitReport, CertsError> {
    init_with(orgs_toml, out, &InitOptions { force, ..InitOptions::default() })
}

/// [`init`], with the gateway's TLS certificate also naming `names` (DNS host names).
pub fn init_with_gateway_names(
    orgs_toml: &Path,
    out: &Path,
    force: bool,
    names: &[String],
) -> Result<InitReport, CertsError> {
    init_with(orgs_toml, out, &InitOptions { force, gateway_names: names.to_vec(), ca_name: None })
}

/// [`init`] with every option.
pub fn init_with(orgs_toml: &Path, out: &Path, options: &InitOptions) -> Result<InitReport, CertsError> {
    let (force, names) = (options.force, gateway_names(&options.gateway_names)?);
    let ca_name = ca_common_name(options.ca_name.as_deref())?;
    let registry = Registry::load(orgs_toml, None).map_err(|problems| CertsError::Registry {
        path: orgs_toml.to_owned(),
        problems: problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
    })?;
    let layout = Layout::new(out);
    if force {
        wipe(&layout)?;
    }

    let (ca, ca_created) = if layout.ca_cert().exists() || layout.ca_key().exists() {
        let ca = NetworkCa::load(&layout)?;
        let existing = ca.name()?;
        if options.ca_name.is_some() && existing != ca_name {
            return Err(CertsError::CaNameDiffers { path: layout.ca_cert(), existing, asked: ca_name });
        }
        (ca, false)
    } else {
        refuse_orphans(&layout)?;
        let mut ca = NetworkCa::generate(&ca_name)?;
        ca.write(&layout, Existing::Refuse(HINT_USE_RENEW))?;
        (ca, true)
    };

    let mut parties = vec![Party::Gateway];
    parties.extend(registry.iter().map(|org| Party::Org(org.id.clone())));
    let mut issued = Vec::new();
    for party in parties {
        for kind in CertKind::ALL {
            let cert_path = layout.cert(&party, kind);
            let key_path = layout.key(&party, kind);
            // A certificate without its key is fine: the organization may hold the key (CSR flow).
            if cert_path.exists() {
                if takes_dns_names(&party, kind) && !names.is_empty() {
                    let has = dns_names_of(&OnDisk::read(&cert_path)?.der, &cert_path)?;
                    let missing: Vec<&str> = names.iter().filter(|n| !has.contains(n)).map(String::as_str).collect();
                    if !missing.is_empty() {
                        return Err(CertsError::GatewayNamesMissing { path: cert_path, missing: missing.join(", ") });
                    }
                }
                continue;
            }
            if key_path.exists() {
                return Err(CertsError::AlreadyExists {
                    path: key_path,
                    hint: "this key has no certificate next to it; remove the key to have init issue a new pair, \
                           or sign a request for it with `haven-certs sign-csr`",
                });
            }
            let dns: &[String] = if takes_dns_names(&party, kind) { &names } else { &[] };
            let cert = issue_with_new_key(&ca, &party, kind, Validity::leaf_from_now(), dns)?;
            cert.write(&cert_path, &key_path, Existing::Refuse(HINT_USE_RENEW))?;
            issued.push(Issued {
                party: party.clone(),
                kind,
                cert_path,
                serial: cert.serial,
                fingerprint: cert.fingerprint,
            });
        }
    }

    let pseudonym_key_created = !layout.pseudonym_key().exists();
    if pseudonym_key_created {
        let secret: [u8; 32] = rand::random();
        store::write(
            &layout.pseudonym_key(),
            hex::encode(secret).as_bytes(),
            Secrecy::Secret,
            Existing::Refuse(HINT_USE_RENEW),
        )?;
    }

    let mut revoked = RevocationList::load(&layout)?;
    revocation::publish(&layout, &ca, &mut revoked)?;
    let pins = pins::rebuild(&layout, revoked.revoked.iter().map(|e| &e.fingerprint))?;
    pins::save(&layout, &pins)?;
    let ca_name = ca.name()?;
    Ok(InitReport { layout, ca_created, issued, pseudonym_key_created, pins, ca_name })
}

/// Removes everything `init` writes (and nothing else in the directory).
fn wipe(layout: &Layout) -> Result<(), CertsError> {
    for file in [layout.ca_cert(), layout.ca_key(), layout.crl(), layout.revoked(), layout.pins()] {
        store::remove_file(&file)?;
    }
    store::remove_dir(&layout.gateway_dir())?;
    store::remove_dir(&layout.orgs_dir())
}

/// Before making a new CA: refuses if files of an earlier CA are still there, since they would be
/// pinned although nothing can verify them any more.
fn refuse_orphans(layout: &Layout) -> Result<(), CertsError> {
    for path in [layout.gateway_dir(), layout.orgs_dir(), layout.pins(), layout.revoked()] {
        if path.exists() {
            return Err(CertsError::AlreadyExists {
                path,
                hint: "it belongs to an earlier CA whose ca.pem and ca.key are gone; run `haven-certs init --force` \
                       to start over",
            });
        }
    }
    Ok(())
}
