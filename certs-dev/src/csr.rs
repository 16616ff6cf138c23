//! Owns the production enrolment flow, in which the operator never holds an organization's keys: the
//! organization makes its own key and certificate request ([`make_csr`]), and the operator signs it
//! ([`sign_csr`]). Only the request's public key is used: the URI SAN, key usage and extended key usage
//! are the network's profile for that organization and kind. A request that asks for anything the
//! profile does not give (another party's name, other names, CA powers, other usages) is refused
//! rather than quietly narrowed, since it is most likely another organization's request or the wrong
//! kind of request, and signing it would put the wrong key behind the organization's name.

use std::path::Path;

use haven_trust::ids::{GATEWAY_URI, OrgId};
use haven_trust::untrusted::shown;
use rcgen::{IsCa, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm};
use x509_parser::asn1_rs::Oid;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::ca::NetworkCa;
use crate::error::CertsError;
use crate::issue::{Issued, Validity, issue_for_key, leaf_params};
use crate::layout::Layout;
use crate::party::{CertKind, Party};
use crate::pins;
use crate::store::{self, Existing, Secrecy};

/// Makes a fresh ECDSA P-256 key (written 0600 to `key_out`) and a certificate request for it
/// (`csr_out`), asking for the network's profile of `org`'s certificate of `kind`. Refuses to overwrite
/// either file.
pub fn make_csr(org: &OrgId, kind: CertKind, key_out: &Path, csr_out: &Path) -> Result<(), CertsError> {
    let party = Party::Org(org.clone());
    let mut params = leaf_params(&party, kind, Validity::leaf_from_now(), &[])?;
    // A request cannot carry these; the CA decides them.
    params.serial_number = None;
    params.use_authority_key_identifier_extension = false;
    params.is_ca = IsCa::NoCa;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertsError::build("ECDSA P-256 key"))?;
    let csr = params.serialize_request(&key).map_err(CertsError::build(format!("{kind} certificate request")))?;
    let csr_pem = csr.pem().map_err(CertsError::build("PEM of the certificate request"))?;
    if csr_out.exists() {
        return Err(CertsError::AlreadyExists { path: csr_out.to_owned(), hint: "choose another --csr-out" });
    }
    store::write(
        key_out,
        key.serialize_pem().as_bytes(),
        Secrecy::Secret,
        Existing::Refuse("choose another --key-out"),
    )?;
    store::write(csr_out, csr_pem.as_bytes(), Secrecy::Public, Existing::Refuse("choose another --csr-out"))
}

/// Signs `org`'s certificate request (PEM file `csr`) with the network CA, writes the certificate to
/// `cert_out` (refusing to overwrite it) and pins it.
///
/// The request's signature must verify and its key must be ECDSA P-256. What it asks for must fit the
/// profile (see [`check_request`]); the certificate then gets the URI SAN `haven://org/<org>` and the
/// key usages of `kind`. Its subject is not used.
pub fn sign_csr(out: &Path, org: &OrgId, csr: &Path, kind: CertKind, cert_out: &Path) -> Result<Issued, CertsError> {
    let layout = Layout::new(out);
    let ca = NetworkCa::load(&layout)?;
    let der = store::read_csr(csr)?;
    let (_, request) = X509CertificationRequest::from_der(&der)
        .map_err(|e| CertsError::BadCsr { path: csr.to_owned(), detail: format!("not a PKCS#10 request ({e})") })?;
    let public_key = p256_public_key(&request.certification_request_info.subject_pki, csr)?;
    request.verify_signature().map_err(|e| CertsError::BadCsr {
        path: csr.to_owned(),
        detail: format!("its signature does not verify ({e})"),
    })?;
    check_request(&request, org, kind).map_err(|detail| CertsError::CsrRefused { path: csr.to_owned(), detail })?;

    let party = Party::Org(org.clone());
    let cert = issue_for_key(&ca, &party, kind, Validity::leaf_from_now(), &[], &public_key)?;
    store::write(
        cert_out,
        cert.cert_pem.as_bytes(),
        Secrecy::Public,
        Existing::Refuse("choose another --cert-out, or remove the old certificate (revoke it first if it was in use)"),
    )?;
    let mut pins = pins::load(&layout)?;
    pins::add(&mut pins, &party, kind, cert.fingerprint);
    pins::save(&layout, &pins)?;
    Ok(Issued { party, kind, cert_path: cert_out.to_owned(), serial: cert.serial, fingerprint: cert.fingerprint })
}

/// Checks that a request asks for nothing beyond the profile of `org`'s `kind` certificate: no name
/// but `haven://org/<org>`, no CA, no key usage but digitalSignature, and no extended key usage but
/// the TLS certificate's clientAuth and serverAuth. A request may ask for less (no extensions at all,
/// as `openssl req` makes by default). The error says what the request asked for and what to do.
fn check_request(request: &X509CertificationRequest<'_>, org: &OrgId, kind: CertKind) -> Result<(), String> {
    let own = org.uri();
    let remake = format!("make a new request with `haven-certs csr --org {org} --kind {kind}`");
    let Some(extensions) = request.requested_extensions() else { return Ok(()) };
    for ext in extensions {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                let mut other_names = Vec::new();
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(uri) if *uri == own => {}
                        GeneralName::URI(uri) if uri.starts_with(haven_trust::ids::ORG_URI_PREFIX) => {
                            let other = uri.trim_start_matches(haven_trust::ids::ORG_URI_PREFIX);
                            return Err(format!(
                                "it is a request of another organization: it names {}, but --org is {org}; if it is {}'s request, sign it with --org {}, otherwise ask {org} for its own request (`haven-certs csr --org {org} --kind {kind}`)",
                                shown(uri),
                                shown(other),
                                shown(other)
                            ));
                        }
                        GeneralName::URI(uri) if *uri == GATEWAY_URI => {
                            return Err(format!(
                                "it names the gateway ({GATEWAY_URI}), not {own}: the gateway's certificates come from `haven-certs init` and `renew --gateway`, never from a request"
                            ));
                        }
                        GeneralName::URI(uri) => other_names.push(format!("URI:{}", shown(uri))),
                        GeneralName::DNSName(d) => other_names.push(format!("DNS:{}", shown(d))),
                        GeneralName::RFC822Name(m) => other_names.push(format!("email:{}", shown(m))),
                        GeneralName::IPAddress(ip) => other_names.push(format!("IP:{}", hex::encode(ip))),
                        other => other_names.push(shown(&other.to_string())),
                    }
                }
                if !other_names.is_empty() {
                    return Err(format!(
                        "it asks for names an organization's certificate never carries ({}); the certificate names only {own}: {remake}",
                        other_names.join(", ")
                    ));
                }
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                return Err(format!(
                    "it asks to be a certificate authority (basicConstraints CA:true); an organization's certificate never is: {remake}"
                ));
            }
            ParsedExtension::KeyUsage(ku) if ku.flags & !1 != 0 => {
                const NAMES: [&str; 9] = [
                    "digitalSignature",
                    "nonRepudiation",
                    "keyEncipherment",
                    "dataEncipherment",
                    "keyAgreement",
                    "keyCertSign",
                    "cRLSign",
                    "encipherOnly",
                    "decipherOnly",
                ];
                let asked: Vec<&str> =
                    NAMES.iter().enumerate().filter(|(i, _)| ku.flags >> i & 1 == 1).map(|(_, n)| *n).collect();
                return Err(format!(
                    "it asks for key usage {}; the profile gives digitalSignature only: {remake}",
                    asked.join(", ")
                ));
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                let tls = [(eku.client_auth, "clientAuth"), (eku.server_auth, "serverAuth")];
                let tls: Vec<&str> = tls.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
                if kind == CertKind::Signing && !tls.is_empty() {
                    return Err(format!(
                        "it asks for the TLS usages {}, so it is a TLS request: sign it with --kind tls, or sign {org}'s signing request here",
                        tls.join(", ")
                    ));
                }
                let mut others: Vec<String> = [
                    (eku.any, "anyExtendedKeyUsage"),
                    (eku.code_signing, "codeSigning"),
                    (eku.email_protection, "emailProtection"),
                    (eku.time_stamping, "timeStamping"),
                    (eku.ocsp_signing, "OCSPSigning"),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| (*n).to_owned())
                .collect();
                others.extend(eku.other.iter().map(|oid| oid.to_id_string()));
                if !others.is_empty() {
                    let gives = match kind {
                        CertKind::Tls => "clientAuth and serverAuth only",
                        CertKind::Signing => "no extended key usage",
                    };
                    return Err(format!(
                        "it asks for extended key usage {}; the {kind} profile gives {gives}: {remake}",
                        others.join(", ")
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The public key of a request, accepted only if it is an uncompressed ECDSA P-256 point.
struct P256PublicKey {
    point: Vec<u8>,
}

impl PublicKeyData for P256PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

fn p256_public_key(spki: &SubjectPublicKeyInfo<'_>, path: &Path) -> Result<P256PublicKey, CertsError> {
    let algorithm = &spki.algorithm.algorithm;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| Oid::try_from(p).ok());
    if *algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve.as_ref() != Some(&OID_EC_P256) {
        return Err(CertsError::NotP256 { path: path.to_owned(), found: describe_key(algorithm, curve.as_ref()) });
    }
    let point = spki.subject_public_key.data.to_vec();
    if point.len() != 65 || point[0] != 0x04 {
        return Err(CertsError::BadCsr {
            path: path.to_owned(),
            detail: "the P-256 public key is not an uncompressed point".to_owned(),
        });
    }
    Ok(P256PublicKey { point })
}

fn describe_key(algorithm: &Oid<'_>, curve: Option<&Oid<'_>>) -> String {
    match algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => "an RSA key".to_owned(),
        "1.2.840.113549.1.1.10" => "an RSA-PSS key".to_owned(),
        "1.3.101.112" => "an Ed25519 key".to_owned(),
        "1.3.101.113" => "an Ed448 key".to_owned(),
        "1.2.840.10045.2.1" => {
            let curve = match curve.map(|c| c.to_id_string()).as_deref() {
                Some("1.3.132.0.34") => "P-384".to_owned(),
                Some("1.3.132.0.35") => "P-521".to_owned(),
                Some("1.3.132.0.10") => "secp256k1".to_owned(),
                Some(other) => format!("curve {other}"),
                None => "an unnamed curve".to_owned(),
            };
            format!("an ECDSA key on {curve}")
        }
        other => format!("a key of algorithm {other}"),
    }
}
