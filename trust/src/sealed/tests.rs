//! A small network made with rcgen: a CA, two organizations' signing certificates, and one issued by
//! the CA to an impostor.

use super::*;
use crate::ids::OrgType;
use crate::registry::{Fingerprint, OrgEntry};

const NOW: i64 = 1_800_000_000;

struct Org {
    signer: OrgSigner,
    cert_der: Vec<u8>,
}

struct Net {
    ca_der: Vec<u8>,
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
}

impl Net {
    fn new() -> Net {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Fictional Network CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Net { ca_der: ca.der().to_vec(), ca_key, ca_params: params }
    }

    /// A signing certificate for `org`, issued by this network's CA.
    fn org(&self, org: &str) -> Org {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(format!("haven://org/{org}").try_into().unwrap())];
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{org} signing"));
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let signer =
            OrgSigner::new(OrgId::parse(org).unwrap(), key.serialize_pem().as_bytes(), cert.der(), cert.der()).unwrap();
        Org { signer, cert_der: cert.der().to_vec() }
    }
}

fn registry(orgs: &[(&str, &Org)]) -> Registry {
    Registry::from_entries(orgs.iter().map(|(id, o)| OrgEntry {
        id: OrgId::parse(id).unwrap(),
        name: id.to_string(),
        org_type: OrgType::parse("ngo").unwrap(),
        tls_pins: vec![Fingerprint::of_der(&o.cert_der)],
        signing_pins: vec![Fingerprint::of_der(&o.cert_der)],
    }))
}

fn body(sender: &str, recipient: &str) -> ManifestBody {
    ManifestBody {
        v: MANIFEST_VERSION,
        message_id: "019300aa-0000-7000-8000-000000000001".into(),
        sender: OrgId::parse(sender).unwrap(),
        sender_person: "casey".into(),
        recipient: OrgId::parse(recipient).unwrap(),
        kind: "referral".into(),
        purpose: "housing".into(),
        consent_id: String::new(),
        correlation_id: String::new(),
        bundle_version: "sha256:00".into(),
        fields: vec!["survivor_first_name".into(), "urgency".into()],
        recipient_kid: "x25519:00".into(),
        created_at: NOW,
        not_after: NOW + 30 * 86_400,
        key_log: None,
    }
}

fn recipient_keys() -> ([u8; 32], [u8; 32]) {
    let secret = [42u8; 32];
    (secret, crate::hpke::public_of(&secret).unwrap())
}

#[test]
fn a_copy_verifies_both_ways_and_opens() {
    let net = Net::new();
    let harbor = net.org("harbor");
    let (sk, pk) = recipient_keys();
    let copy = seal(&harbor.signer, body("harbor", "maple-house"), &pk, b"Rosa (fictional)").unwrap();
    let reg = registry(&[("harbor", &harbor)]);
    let by_pins = verify_by_pins(&copy, &reg, NOW).unwrap();
    let by_ca = verify_by_ca(&copy, &net.ca_der, NOW).unwrap();
    assert_eq!(by_pins, by_ca);
    assert_eq!(by_ca.body, body("harbor", "maple-house"));
    assert_eq!(open(&by_ca, &copy, &sk).unwrap(), b"Rosa (fictional)");
}

#[test]
fn values_resealed_under_a_real_manifest_are_caught_by_the_hash() {
    let net = Net::new();
    let harbor = net.org("harbor");
    let (sk, pk) = recipient_keys();
    let copy = seal(&harbor.signer, body("harbor", "maple-house"), &pk, b"real").unwrap();
    // A gateway holding only the public key seals its own values under the real manifest's aad.
    let b = body("harbor", "maple-house");
    let (enc, ciphertext) = crate::hpke::seal(&pk, &info(&b.message_id), &b.canonical(), b"forged").unwrap();
    let forged = SealedCopy { manifest: copy.manifest.clone(), enc, ciphertext };
    assert_eq!(verify_by_ca(&forged, &net.ca_der, NOW).unwrap_err(), ManifestError::HashMismatch);
    let m = verify_by_ca(&copy, &net.ca_der, NOW).unwrap();
    assert_eq!(open(&m, &forged, &sk).unwrap_err(), ManifestError::HashMismatch);
}

#[test]
fn a_manifest_speaking_for_another_organization_is_refused() {
    let net = Net::new();
    // The CA issued the impostor a certificate in its own name; it claims to send as harbor.
    let impostor = net.org("impostor");
    let (_, pk) = recipient_keys();
    let copy = seal(&impostor.signer, body("harbor", "maple-house"), &pk, b"x").unwrap();
    let e = verify_by_ca(&copy, &net.ca_der, NOW).unwrap_err();
    assert!(matches!(e, ManifestError::OtherOrganization { .. }), "{e}");
    assert_eq!(e.code(), "manifest_mismatch");
    let reg = registry(&[("impostor", &impostor)]);
    assert!(matches!(verify_by_pins(&copy, &reg, NOW).unwrap_err(), ManifestError::OtherOrganization { .. }));
    // Signed by a CA the recipient does not trust.
    let other = Net::new().org("harbor");
    let copy = seal(&other.signer, body("harbor", "maple-house"), &pk, b"x").unwrap();
    assert!(matches!(verify_by_ca(&copy, &net.ca_der, NOW).unwrap_err(), ManifestError::Signature(_)));
    // Signed by a key the registry does not pin.
    let reg = registry(&[("harbor", &net.org("harbor"))]);
    assert!(matches!(verify_by_pins(&copy, &reg, NOW).unwrap_err(), ManifestError::Signature(_)));
}

#[test]
fn each_malformed_copy_is_refused_with_its_reason() {
    let net = Net::new();
    let harbor = net.org("harbor");
    let (_, pk) = recipient_keys();
    let sealed = |b: ManifestBody| seal(&harbor.signer, b, &pk, b"x").unwrap();
    let check = |copy: &SealedCopy, now: i64| verify_by_ca(copy, &net.ca_der, now).unwrap_err();

    let e = check(&sealed(body("harbor", "maple-house")), NOW + 31 * 86_400);
    assert_eq!(e.code(), "manifest_expired", "{e}");
    let e = check(&sealed(ManifestBody { v: 2, ..body("harbor", "maple-house") }), NOW);
    assert!(e.to_string().contains("version 2"), "{e}");
    let e = check(&sealed(ManifestBody { fields: vec!["b".into(), "a".into()], ..body("harbor", "maple-house") }), NOW);
    assert!(e.to_string().contains("sorted"), "{e}");
    let e = check(&sealed(ManifestBody { created_at: NOW + 3600, ..body("harbor", "maple-house") }), NOW);
    assert!(e.to_string().contains("future"), "{e}");

    let mut copy = sealed(body("harbor", "maple-house"));
    copy.manifest = "garbage".into();
    assert!(matches!(check(&copy, NOW), ManifestError::Signature(_)));
    copy.manifest = "x".repeat(MAX_MANIFEST_BYTES + 1);
    assert_eq!(check(&copy, NOW), ManifestError::TooLarge(MAX_MANIFEST_BYTES + 1));
    let mut copy = sealed(body("harbor", "maple-house"));
    copy.ciphertext = vec![0; MAX_CIPHERTEXT_BYTES + 1];
    assert_eq!(check(&copy, NOW), ManifestError::CiphertextTooLarge(MAX_CIPHERTEXT_BYTES + 1));
    // Another typ: a sealing-key statement is not a manifest.
    let statement = harbor.signer.sign_typed(crate::sealing::STATEMENT_TYP, &body("harbor", "maple-house")).unwrap();
    let copy = SealedCopy { manifest: statement, ..sealed(body("harbor", "maple-house")) };
    assert!(matches!(check(&copy, NOW), ManifestError::WrongType(_)));
}

#[test]
fn the_wrong_key_cannot_open_a_copy() {
    let net = Net::new();
    let harbor = net.org("harbor");
    let (_, pk) = recipient_keys();
    let copy = seal(&harbor.signer, body("harbor", "maple-house"), &pk, b"x").unwrap();
    let m = verify_by_ca(&copy, &net.ca_der, NOW).unwrap();
    let e = open(&m, &copy, &[7u8; 32]).unwrap_err();
    assert_eq!(e.code(), "sealed_copy_unopenable");
}
