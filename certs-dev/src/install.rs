//! Owns assembling a node's certificate folder ([`install`]): the organization's TLS and signing
//! certificates and keys, the network CA and the gateway's checkpoint signing certificate, each put
//! where a node reads it (`haven_trust::pki::CertsDir`), under the name it reads it by.
//!
//! Every file is checked before anything is written, with the same checks a node makes at start-up
//! (`haven_trust::pki::check_identity`): each key is its certificate's, each certificate names the
//! organization (or the gateway) and is of the kind its place needs, and each was issued by the CA
//! given. So a swapped, misplaced or foreign file is refused here, naming the option it came from,
//! instead of stopping the node later or failing every handshake.

use std::path::{Path, PathBuf};

use haven_trust::ids::{GATEWAY_URI, OrgId};
use haven_trust::pki::{self, CertInfo, CertPurpose, CertsDir, PkiError};
use haven_trust::registry::Fingerprint;

use crate::ca::{common_name, parse_cert};
use crate::error::CertsError;
use crate::store::{self, Existing, Secrecy};

/// The files an organization holds after enrolment, as given on the command line.
#[derive(Debug, Clone)]
pub struct InstallFiles {
    /// `--tls-cert`: the TLS certificate `sign-csr` issued.
    pub tls_cert: PathBuf,
    /// `--tls-key`: the key `haven-certs csr --kind tls` made.
    pub tls_key: PathBuf,
    /// `--signing-cert`: the signing certificate `sign-csr` issued.
    pub signing_cert: PathBuf,
    /// `--signing-key`: the key `haven-certs csr --kind signing` made.
    pub signing_key: PathBuf,
    /// `--ca`: the network CA certificate (`ca.pem`).
    pub ca: PathBuf,
    /// `--gateway-signing-cert`: the gateway's checkpoint signing certificate (`gateway/signing.crt`).
    pub gateway_signing_cert: PathBuf,
}

/// What [`install`] did.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Files written, in order.
    pub written: Vec<PathBuf>,
    /// Files already there with the same content, left as they were.
    pub unchanged: Vec<PathBuf>,
    /// The pin of the TLS certificate, as the registry must list it.
    pub tls_pin: Fingerprint,
    /// The pin of the signing certificate.
    pub signing_pin: Fingerprint,
    /// The network CA's common name.
    pub ca_name: String,
}

/// Installs `org`'s files into the certificate folder `out` (created if missing): `ca.pem`,
/// `gateway/signing.crt` and `orgs/<org>/{tls.crt, tls.key, signing.crt, signing.key}`, keys with mode
/// 0600. Refuses, before writing anything, a file that does not fit its place, and a file already in
/// `out` with other content unless `replace` (for a renewal).
pub fn install(org: &OrgId, files: &InstallFiles, out: &Path, replace: bool) -> Result<Installed, CertsError> {
    let refused = |what: &'static str, detail: String| CertsError::InstallRefused { what, detail };
    let uri = org.uri();

    let ca_der = store::read_cert(&files.ca)?;
    let ca = parse_cert(&ca_der, &files.ca)?;
    if !ca.is_ca() {
        return Err(refused(
            "--ca",
            format!("{} is not a CA certificate; give the network's ca.pem", files.ca.display()),
        ));
    }
    let ca_name = common_name(&ca).unwrap_or_default();

    let pair = |what, cert: &Path, key: &Path, purpose| {
        pki::check_identity(cert, key, &uri, purpose).map_err(|e: PkiError| refused(what, e.to_string()))
    };
    let tls = pair("--tls-cert and --tls-key", &files.tls_cert, &files.tls_key, CertPurpose::TlsClient)?;
    let signing =
        pair("--signing-cert and --signing-key", &files.signing_cert, &files.signing_key, CertPurpose::Signing)?;
    // The node signs tokens with this key, which must be PKCS#8 P-256 (as `haven-certs csr` makes it).
    let signing_cert_der = store::read_cert(&files.signing_cert)?;
    pki::key_matches_cert(&store::read(&files.signing_key)?, &signing_cert_der)
        .map_err(|e| refused("--signing-key", format!("{}: {e}", files.signing_key.display())))?;

    let gateway_der = store::read_cert(&files.gateway_signing_cert)?;
    let gateway = CertInfo::parse(&gateway_der)
        .map_err(|e| refused("--gateway-signing-cert", format!("{}: {e}", files.gateway_signing_cert.display())))?;
    if !gateway.uris.iter().any(|u| u == GATEWAY_URI) || gateway.client_auth || gateway.server_auth {
        return Err(refused(
            "--gateway-signing-cert",
            format!(
                "{} is not the gateway's checkpoint signing certificate (it must name {GATEWAY_URI} and list no TLS usage); give the operator's gateway/signing.crt",
                files.gateway_signing_cert.display()
            ),
        ));
    }

    for (what, path) in [
        ("--tls-cert", &files.tls_cert),
        ("--signing-cert", &files.signing_cert),
        ("--gateway-signing-cert", &files.gateway_signing_cert),
    ] {
        let der = store::read_cert(path)?;
        let cert = parse_cert(&der, path)?;
        if cert.verify_signature(Some(ca.public_key())).is_err() {
            return Err(refused(
                what,
                format!(
                    "{} was not issued by the network CA in {} (`{ca_name}`), but by `{}`; install the certificates and the ca.pem of one network",
                    path.display(),
                    files.ca.display(),
                    haven_trust::untrusted::shown(&cert.issuer().to_string())
                ),
            ));
        }
    }

    let dir = CertsDir(out.to_owned());
    let plan = [
        (dir.ca_cert(), &files.ca, Secrecy::Public),
        (dir.gateway_signing_cert(), &files.gateway_signing_cert, Secrecy::Public),
        (dir.org_tls_cert(org), &files.tls_cert, Secrecy::Public),
        (dir.org_tls_key(org), &files.tls_key, Secrecy::Secret),
        (dir.org_signing_cert(org), &files.signing_cert, Secrecy::Public),
        (dir.org_signing_key(org), &files.signing_key, Secrecy::Secret),
    ];
    let mut contents = Vec::with_capacity(plan.len());
    for (dest, source, secrecy) in &plan {
        let bytes = store::read(source)?;
        let same = match std::fs::read(dest) {
            Ok(existing) if existing == bytes => true,
            Ok(_) if !replace => {
                return Err(CertsError::AlreadyExists {
                    path: dest.clone(),
                    hint: "it holds another file; give --replace to replace it (after a renewal), or another --out",
                });
            }
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(CertsError::Io { action: "read", path: dest.clone(), source: e }),
        };
        contents.push((dest.clone(), bytes, *secrecy, same));
    }
    let mut installed = Installed {
        written: Vec::new(),
        unchanged: Vec::new(),
        tls_pin: tls.fingerprint,
        signing_pin: signing.fingerprint,
        ca_name,
    };
    for (dest, bytes, secrecy, same) in contents {
        if same {
            installed.unchanged.push(dest);
        } else {
            store::write(&dest, &bytes, secrecy, Existing::Replace)?;
            installed.written.push(dest);
        }
    }
    Ok(installed)
}
