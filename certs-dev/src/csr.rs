//! Owns the production enrolment flow, in which the operator never holds an organization's keys: the
//! organization makes its own key and certificate request ([`make_csr`]), and the operator signs it
//! ([`sign_csr`]). Only the request's public key is used: the URI SAN, key usage and extended key usage
//! are the network's profile for that organization and kind, whatever the request asked for.

use std::path::Path;

use haven_trust::ids::OrgId;
use rcgen::{IsCa, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm};
use x509_parser::asn1_rs::Oid;
use x509_parser::certification_request::X509CertificationRequest;
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
/// The request's signature must verify and its key must be ECDSA P-256. Everything else in it is
/// ignored: the certificate gets the URI SAN `haven://org/<org>` and the key usages of `kind`.
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
