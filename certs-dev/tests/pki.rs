//! End-to-end tests of the development PKI: what `init` writes, reruns, revocation (checked with
//! x509-parser and with rustls-webpki, as the gateway will use it), renewal, CSR signing and the bad
//! certificates for TLS tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use haven_certs::{CertKind, CertsError, Layout, Party};
use haven_trust::ids::OrgId;
use haven_trust::registry::{Fingerprint, PinsFile, Registry};
use rcgen::PublicKeyData;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

fn repo_orgs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/orgs.toml")
}

fn org(id: &str) -> OrgId {
    OrgId::parse(id).unwrap()
}

fn read_der(path: &Path) -> CertificateDer<'static> {
    let all: Vec<_> = CertificateDer::pem_file_iter(path).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 1, "{} must hold only the leaf", path.display());
    all.into_iter().next().unwrap()
}

fn fingerprint(path: &Path) -> Fingerprint {
    Fingerprint::of_der(&read_der(path))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    sans(cert).into_iter().filter_map(|s| s.strip_prefix("URI:").map(str::to_owned)).collect()
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// (clientAuth, serverAuth), or None without an EKU extension.
fn ekus(cert: &X509Certificate<'_>) -> Option<(bool, bool)> {
    cert.extended_key_usage().unwrap().map(|e| (e.value.client_auth, e.value.server_auth))
}

fn client_verifier(layout: &Layout) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
    let mut roots = RootCertStore::empty();
    roots.add(read_der(&layout.ca_cert())).unwrap();
    let crls: Vec<CertificateRevocationListDer<'static>> =
        vec![CertificateRevocationListDer::from_pem_file(layout.crl()).unwrap()];
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider()))
        .with_crls(crls)
        .build()
        .unwrap()
}

fn verify_client(layout: &Layout, cert: &Path) -> Result<(), rustls::Error> {
    client_verifier(layout).verify_client_cert(&read_der(cert), &[], UnixTime::now()).map(|_| ())
}

#[test]
fn init_writes_every_file_with_the_network_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let report = haven_certs::init(&repo_orgs(), &out, false).unwrap();
    let layout = Layout::new(&out);
    let registry = Registry::load(&repo_orgs(), None).unwrap();
    let ids: Vec<OrgId> = registry.iter().map(|o| o.id.clone()).collect();
    assert!(report.ca_created);
    assert_eq!(report.issued.len(), 2 + 2 * ids.len());

    // The CA.
    let ca_der = read_der(&layout.ca_cert());
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca.is_ca());
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    let cn = ca.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned();
    assert_eq!(cn, report.ca_name);
    let id = cn.strip_prefix("Haven network CA ").expect("the default name and an id");
    assert!(id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{cn}");

    // Secrets are 0600.
    let mut secrets =
        vec![layout.ca_key(), layout.gateway_tls_key(), layout.gateway_signing_key(), layout.pseudonym_key()];
    for id in &ids {
        secrets.push(layout.org_tls_key(id));
        secrets.push(layout.org_signing_key(id));
    }
    for secret in &secrets {
        assert_eq!(mode(secret), 0o600, "{}", secret.display());
    }
    let pseudonym = std::fs::read_to_string(layout.pseudonym_key()).unwrap();
    assert_eq!(hex::decode(&pseudonym).unwrap().len(), 32);

    // The gateway.
    let gw_der = read_der(&layout.gateway_tls_cert());
    let (_, gw) = X509Certificate::from_der(&gw_der).unwrap();
    assert_eq!(sans(&gw), vec!["DNS:localhost", "IP:[127, 0, 0, 1]", "URI:haven://gateway"]);
    assert_eq!(ekus(&gw), Some((true, true)));
    let gws_der = read_der(&layout.gateway_signing_cert());
    let (_, gws) = X509Certificate::from_der(&gws_der).unwrap();
    assert_eq!(uris(&gws), vec!["haven://gateway"]);
    assert_eq!(ekus(&gws), None);
    let ku = gws.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.key_encipherment());

    // Every organization.
    let pins = PinsFile::load(&layout.pins()).unwrap();
    assert_eq!(pins, report.pins);
    assert_eq!(pins.gateway.tls, vec![fingerprint(&layout.gateway_tls_cert())]);
    assert_eq!(pins.gateway.signing, vec![fingerprint(&layout.gateway_signing_cert())]);
    for id in &ids {
        let tls_der = read_der(&layout.org_tls_cert(id));
        let (_, tls) = X509Certificate::from_der(&tls_der).unwrap();
        assert_eq!(uris(&tls), vec![id.uri()]);
        assert_eq!(ekus(&tls), Some((true, true)));
        assert!(tls.subject().to_string().contains(&format!("CN={id}")), "{}", tls.subject());
        assert!(!tls.is_ca());
        assert!(tls.verify_signature(Some(ca.public_key())).is_ok());

        let sig_der = read_der(&layout.org_signing_cert(id));
        let (_, sig) = X509Certificate::from_der(&sig_der).unwrap();
        assert_eq!(uris(&sig), vec![id.uri()]);
        assert_eq!(ekus(&sig), None);
        assert_eq!(sig.key_usage().unwrap().unwrap().value.flags, 1, "digitalSignature only");

        let set = &pins.org[id];
        assert_eq!(set.tls, vec![Fingerprint::of_der(&tls_der)]);
        assert_eq!(set.signing, vec![Fingerprint::of_der(&sig_der)]);
        verify_client(&layout, &layout.org_tls_cert(id)).unwrap();
    }

    // The registry merges the pins, and the gateway certificate serves localhost.
    let merged = Registry::load(&repo_orgs(), Some(&layout.pins())).unwrap();
    assert_eq!(merged.get(&ids[0]).unwrap().tls_pins.len(), 1);
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.clone()).unwrap();
    let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    server_verifier
        .verify_server_cert(&gw_der, &[], &ServerName::try_from("localhost").unwrap(), &[], UnixTime::now())
        .unwrap();
}

#[test]
fn rerun_keeps_the_ca_and_adds_a_newly_listed_org() {
    let dir = tempfile::tempdir().unwrap();
    let orgs = dir.path().join("orgs.toml");
    std::fs::copy(repo_orgs(), &orgs).unwrap();
    let out = dir.path().join("pki");
    let layout = Layout::new(&out);
    haven_certs::init(&orgs, &out, false).unwrap();
    let ca_before = std::fs::read(layout.ca_cert()).unwrap();
    let ca_key_before = std::fs::read(layout.ca_key()).unwrap();
    let harbor_before = std::fs::read(layout.org_tls_cert(&org("harbor"))).unwrap();
    let pseudonym_before = std::fs::read(layout.pseudonym_key()).unwrap();

    let mut text = std::fs::read_to_string(&orgs).unwrap();
    text.push_str("\n[[org]]\nid = \"new-shelter\"\nname = \"New Shelter\"\ntype = \"shelter\"\n");
    std::fs::write(&orgs, text).unwrap();
    let report = haven_certs::init(&orgs, &out, false).unwrap();

    assert!(!report.ca_created);
    assert!(!report.pseudonym_key_created);
    assert_eq!(std::fs::read(layout.ca_cert()).unwrap(), ca_before);
    assert_eq!(std::fs::read(layout.ca_key()).unwrap(), ca_key_before);
    assert_eq!(std::fs::read(layout.org_tls_cert(&org("harbor"))).unwrap(), harbor_before);
    assert_eq!(std::fs::read(layout.pseudonym_key()).unwrap(), pseudonym_before);
    let new = org("new-shelter");
    let issued: Vec<_> = report.issued.iter().map(|i| (i.party.clone(), i.kind)).collect();
    assert_eq!(issued, vec![(Party::Org(new.clone()), CertKind::Tls), (Party::Org(new.clone()), CertKind::Signing)]);
    let pins = PinsFile::load(&layout.pins()).unwrap();
    assert_eq!(pins.org[&new].tls, vec![fingerprint(&layout.org_tls_cert(&new))]);
    assert_eq!(pins.org.len(), 10);
    verify_client(&layout, &layout.org_tls_cert(&new)).unwrap();

    // A deleted file is reissued; the others stay.
    std::fs::remove_file(layout.org_signing_cert(&new)).unwrap();
    std::fs::remove_file(layout.org_signing_key(&new)).unwrap();
    let report = haven_certs::init(&orgs, &out, false).unwrap();
    assert_eq!(report.issued.len(), 1);
    let pins = PinsFile::load(&layout.pins()).unwrap();
    assert_eq!(pins.org[&new].signing.len(), 2, "the old signing pin stays until revoked");
    assert!(pins.org[&new].signing.contains(&fingerprint(&layout.org_signing_cert(&new))));

    // --force makes a new CA.
    let report = haven_certs::init(&orgs, &out, true).unwrap();
    assert!(report.ca_created);
    assert_ne!(std::fs::read(layout.ca_cert()).unwrap(), ca_before);
    assert_eq!(PinsFile::load(&layout.pins()).unwrap().org[&new].signing.len(), 1);
}

/// Two networks' CAs never share a subject: a node that dials another network's gateway is then told
/// the certificate comes from an unknown issuer, instead of failing on a bad signature of a CA that
/// merely looks like its own.
#[test]
fn every_init_makes_a_ca_with_a_subject_of_its_own_or_the_name_given() {
    let dir = tempfile::tempdir().unwrap();
    let subject = |out: &Path| {
        let der = read_der(&Layout::new(out).ca_cert());
        X509Certificate::from_der(&der).unwrap().1.subject().to_string()
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let no_orgs = dir.path().join("no-orgs.toml");
    std::fs::write(&no_orgs, "# organizations enrol by certificate request\n").unwrap();
    haven_certs::init(&no_orgs, &a, false).unwrap();
    haven_certs::init(&no_orgs, &b, false).unwrap();
    assert_ne!(subject(&a), subject(&b));

    let named = dir.path().join("named");
    let options = |name: &str| haven_certs::InitOptions { ca_name: Some(name.to_owned()), ..Default::default() };
    let report = haven_certs::init_with(&no_orgs, &named, &options("Lakeshore Haven Network CA")).unwrap();
    assert_eq!(report.ca_name, "Lakeshore Haven Network CA");
    assert!(subject(&named).contains("CN=Lakeshore Haven Network CA"), "{}", subject(&named));
    // A rerun keeps the CA; naming it otherwise is refused rather than ignored.
    haven_certs::init_with(&no_orgs, &named, &options("Lakeshore Haven Network CA")).unwrap();
    let err = haven_certs::init_with(&no_orgs, &named, &options("Another CA")).unwrap_err();
    assert!(matches!(err, CertsError::CaNameDiffers { .. }), "{err}");
    assert!(err.to_string().contains("is named `Lakeshore Haven Network CA`, not `Another CA`"), "{err}");
    let err = haven_certs::init_with(&no_orgs, &dir.path().join("bad"), &options("")).unwrap_err();
    assert!(matches!(err, CertsError::BadCaName { .. }), "{err}");
}

#[test]
fn init_never_overwrites_half_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let layout = Layout::new(&out);
    haven_certs::init(&repo_orgs(), &out, false).unwrap();
    let ca = std::fs::read(layout.ca_cert()).unwrap();
    std::fs::remove_file(layout.ca_key()).unwrap();
    let err = haven_certs::init(&repo_orgs(), &out, false).unwrap_err();
    assert!(matches!(err, CertsError::CaIncomplete { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert_eq!(std::fs::read(layout.ca_cert()).unwrap(), ca);

    std::fs::remove_file(layout.ca_cert()).unwrap();
    let err = haven_certs::init(&repo_orgs(), &out, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
}

#[test]
fn revoke_lists_the_serial_in_a_crl_that_webpki_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let layout = Layout::new(&out);
    haven_certs::init(&repo_orgs(), &out, false).unwrap();
    let harbor = org("harbor");
    let cert_path = layout.org_tls_cert(&harbor);
    let der = read_der(&cert_path);
    let serial = X509Certificate::from_der(&der).unwrap().1.raw_serial().to_vec();
    let fp = Fingerprint::of_der(&der);
    verify_client(&layout, &cert_path).unwrap();

    haven_certs::revoke(&out, &harbor, CertKind::Tls).unwrap();

    let crl_der = CertificateRevocationListDer::from_pem_file(layout.crl()).unwrap();
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der).unwrap();
    let listed: Vec<&[u8]> = crl.iter_revoked_certificates().map(|r| r.raw_serial()).collect();
    assert_eq!(listed, vec![serial.as_slice()]);
    assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("2".to_owned()), "init wrote CRL 1");
    let ca_der = read_der(&layout.ca_cert());
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(crl.verify_signature(ca.public_key()).is_ok());

    let err = verify_client(&layout, &cert_path).unwrap_err();
    assert_eq!(err, rustls::Error::InvalidCertificate(CertificateError::Revoked));
    verify_client(&layout, &layout.org_tls_cert(&org("northstar"))).unwrap();

    let pins = PinsFile::load(&layout.pins()).unwrap();
    assert!(pins.org[&harbor].tls.is_empty());
    assert_eq!(pins.org[&harbor].signing.len(), 1);

    let again = haven_certs::revoke(&out, &harbor, CertKind::Tls).unwrap_err();
    assert!(matches!(again, CertsError::AlreadyRevoked { .. }), "{again}");

    // A rerun of init neither re-pins the revoked certificate nor forgets the revocation.
    haven_certs::init(&repo_orgs(), &out, false).unwrap();
    assert!(PinsFile::load(&layout.pins()).unwrap().org[&harbor].tls.is_empty());
    assert!(!haven_certs::pins::is_pinned(
        &PinsFile::load(&layout.pins()).unwrap(),
        &Party::Org(harbor.clone()),
        CertKind::Tls,
        &fp
    ));
    assert_eq!(
        verify_client(&layout, &cert_path).unwrap_err(),
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
}

#[test]
fn renew_replaces_the_key_revokes_the_old_certificate_and_repins() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let layout = Layout::new(&out);
    haven_certs::init(&repo_orgs(), &out, false).unwrap();
    let party = Party::Org(org("maple-house"));
    let old_cert = read_der(&layout.cert(&party, CertKind::Signing));
    let old_key = std::fs::read(layout.key(&party, CertKind::Signing)).unwrap();

    let issued = haven_certs::renew(&out, &party, CertKind::Signing).unwrap();
    let new_cert = read_der(&layout.cert(&party, CertKind::Signing));
    assert_ne!(new_cert, old_cert);
    assert_ne!(std::fs::read(layout.key(&party, CertKind::Signing)).unwrap(), old_key);
    assert_eq!(mode(&layout.key(&party, CertKind::Signing)), 0o600);
    assert_eq!(issued.fingerprint, Fingerprint::of_der(&new_cert));

    let pins = PinsFile::load(&layout.pins()).unwrap();
    assert_eq!(pins.org[party.org().unwrap()].signing, vec![issued.fingerprint]);
    let revoked = haven_certs::RevocationList::load(&layout).unwrap();
    assert_eq!(revoked.revoked.len(), 1);
    assert_eq!(revoked.revoked[0].fingerprint, Fingerprint::of_der(&old_cert));
    assert_eq!(revoked.revoked[0].reason, haven_certs::RevocationCause::Superseded);

    // The gateway's TLS certificate renews too, and the new one is not revoked.
    haven_certs::renew(&out, &Party::Gateway, CertKind::Tls).unwrap();
    let pins = PinsFile::load(&layout.pins()).unwrap();
    assert_eq!(pins.gateway.tls, vec![fingerprint(&layout.gateway_tls_cert())]);
    client_verifier(&layout); // the CRL with two entries still loads

    // Revoke then renew (key compromise): the renewal does not revoke twice.
    let harbor = org("harbor");
    haven_certs::revoke(&out, &harbor, CertKind::Tls).unwrap();
    haven_certs::renew(&out, &Party::Org(harbor.clone()), CertKind::Tls).unwrap();
    assert_eq!(haven_certs::RevocationList::load(&layout).unwrap().revoked.len(), 3);
    verify_client(&layout, &layout.org_tls_cert(&harbor)).unwrap();
}

#[test]
fn sign_csr_forces_the_network_profile_and_refuses_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let layout = Layout::new(&out);
    haven_certs::init(&repo_orgs(), &out, false).unwrap();
    let harbor = org("harbor");

    // A request that asks for nothing (as `openssl req -new` makes by default) gets the profile.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Harbor Light Outreach");
    let csr_path = dir.path().join("plain.csr");
    std::fs::write(&csr_path, params.serialize_request(&key).unwrap().pem().unwrap()).unwrap();

    let cert_out = dir.path().join("harbor-tls.crt");
    let issued = haven_certs::sign_csr(&out, &harbor, &csr_path, CertKind::Tls, &cert_out).unwrap();
    let der = read_der(&cert_out);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(sans(&cert), vec!["URI:haven://org/harbor"]);
    assert_eq!(ekus(&cert), Some((true, true)));
    assert!(!cert.is_ca());
    assert_eq!(cert.public_key().raw, key.subject_public_key_info().as_slice());
    assert_eq!(issued.fingerprint, Fingerprint::of_der(&der));
    assert!(PinsFile::load(&layout.pins()).unwrap().org[&harbor].tls.contains(&issued.fingerprint));
    verify_client(&layout, &cert_out).unwrap();

    // The same request as a signing certificate: no TLS usage at all.
    let sig_out = dir.path().join("harbor-signing.crt");
    haven_certs::sign_csr(&out, &harbor, &csr_path, CertKind::Signing, &sig_out).unwrap();
    let sig_der = read_der(&sig_out);
    let (_, sig) = X509Certificate::from_der(&sig_der).unwrap();
    assert_eq!(ekus(&sig), None);
    assert_eq!(sig.key_usage().unwrap().unwrap().value.flags, 1);

    // Never overwrite the output.
    let err = haven_certs::sign_csr(&out, &harbor, &csr_path, CertKind::Tls, &cert_out).unwrap_err();
    assert!(matches!(err, CertsError::AlreadyExists { .. }), "{err}");

    // The organization's own flow.
    let key_out = dir.path().join("own.key");
    let own_csr = dir.path().join("own.csr");
    haven_certs::make_csr(&harbor, CertKind::Tls, &key_out, &own_csr).unwrap();
    assert_eq!(mode(&key_out), 0o600);
    let own_cert = dir.path().join("own.crt");
    haven_certs::sign_csr(&out, &harbor, &own_csr, CertKind::Tls, &own_cert).unwrap();
    verify_client(&layout, &own_cert).unwrap();
    // A certificate kept outside the layout can be revoked by file.
    let entry = haven_certs::revoke_cert_file(&out, &own_cert).unwrap();
    assert_eq!((entry.party(), entry.which), (Party::Org(harbor.clone()), CertKind::Tls));
    assert_eq!(
        verify_client(&layout, &own_cert).unwrap_err(),
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );

    // A P-384 key is refused, clearly.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384_csr = dir.path().join("p384.csr");
    let req = rcgen::CertificateParams::default().serialize_request(&p384).unwrap();
    std::fs::write(&p384_csr, req.pem().unwrap()).unwrap();
    let err = haven_certs::sign_csr(&out, &harbor, &p384_csr, CertKind::Tls, &dir.path().join("x.crt")).unwrap_err();
    assert!(matches!(err, CertsError::NotP256 { .. }), "{err}");
    assert!(err.to_string().contains("P-384"), "{err}");

    // A tampered request (one signature byte changed) is refused.
    let pem = std::fs::read_to_string(&csr_path).unwrap();
    let mut lines: Vec<String> = pem.lines().map(str::to_owned).collect();
    let last_b64 = lines.len() - 2;
    let first = lines[last_b64].remove(0);
    lines[last_b64].insert(0, if first == 'A' { 'B' } else { 'A' });
    let tampered = dir.path().join("tampered.csr");
    std::fs::write(&tampered, lines.join("\n")).unwrap();
    let err = haven_certs::sign_csr(&out, &harbor, &tampered, CertKind::Tls, &dir.path().join("y.crt")).unwrap_err();
    assert!(matches!(err, CertsError::BadCsr { .. }), "{err}");
}

/// A request that asks for more than the profile, or names another party, is refused before anything
/// is signed, with what it asked for and what to do: it is most likely another organization's request
/// or the wrong kind, and signing it would put the wrong key behind the organization's name.
#[test]
fn sign_csr_refuses_a_request_naming_another_party_or_asking_beyond_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let layout = Layout::new(&out);
    haven_certs::init(&repo_orgs(), &out, false).unwrap();
    let pins_before = std::fs::read(layout.pins()).unwrap();
    let harbor = org("harbor");
    let request = |name: &str, edit: &dyn Fn(&mut rcgen::CertificateParams)| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        edit(&mut params);
        let path = dir.path().join(format!("{name}.csr"));
        std::fs::write(&path, params.serialize_request(&key).unwrap().pem().unwrap()).unwrap();
        path
    };
    let uri = |u: &str| rcgen::SanType::URI(u.try_into().unwrap());
    // Another organization's request, made by `haven-certs csr` as that organization would.
    let police_csr = dir.path().join("police.csr");
    haven_certs::make_csr(&org("metro-police"), CertKind::Tls, &dir.path().join("police.key"), &police_csr).unwrap();
    let tls_csr = dir.path().join("harbor-tls.csr");
    haven_certs::make_csr(&harbor, CertKind::Tls, &dir.path().join("harbor-tls.key"), &tls_csr).unwrap();
    let cases: Vec<(PathBuf, CertKind, &str)> = vec![
        (
            police_csr,
            CertKind::Tls,
            "it is a request of another organization: it names haven://org/metro-police, but --org is harbor; if it is metro-police's request, sign it with --org metro-police",
        ),
        (
            request("both", &|p| {
                p.subject_alt_names = vec![uri("haven://org/harbor"), uri("haven://org/maple-house")];
            }),
            CertKind::Tls,
            "names haven://org/maple-house, but --org is harbor",
        ),
        (
            request("gateway", &|p| p.subject_alt_names = vec![uri("haven://gateway")]),
            CertKind::Tls,
            "it names the gateway (haven://gateway)",
        ),
        (
            request("dns", &|p| {
                p.subject_alt_names =
                    vec![uri("haven://org/harbor"), rcgen::SanType::DnsName("evil.example".try_into().unwrap())];
            }),
            CertKind::Tls,
            "it asks for names an organization's certificate never carries (DNS:evil.example)",
        ),
        (
            request("ca", &|p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)),
            CertKind::Tls,
            "it asks to be a certificate authority",
        ),
        (
            request("ku", &|p| {
                p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyCertSign]
            }),
            CertKind::Signing,
            "it asks for key usage digitalSignature, keyCertSign; the profile gives digitalSignature only",
        ),
        (
            request("eku", &|p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning]),
            CertKind::Tls,
            "it asks for extended key usage codeSigning; the tls profile gives clientAuth and serverAuth only",
        ),
        (
            tls_csr.clone(),
            CertKind::Signing,
            "it asks for the TLS usages clientAuth, serverAuth, so it is a TLS request: sign it with --kind tls",
        ),
    ];
    for (csr, kind, says) in cases {
        let cert_out = dir.path().join("out.crt");
        let err = haven_certs::sign_csr(&out, &harbor, &csr, kind, &cert_out).unwrap_err();
        assert!(matches!(err, CertsError::CsrRefused { .. }), "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("refusing to sign {}: ", csr.display())), "{text}");
        assert!(text.contains(says), "{} should say {says}: {text}", csr.display());
        assert!(!cert_out.exists(), "nothing is written for {}", csr.display());
    }
    assert_eq!(std::fs::read(layout.pins()).unwrap(), pins_before, "nothing is pinned");
    // The organization's own TLS request, signed as what it is.
    haven_certs::sign_csr(&out, &harbor, &tls_csr, CertKind::Tls, &dir.path().join("ok.crt")).unwrap();
}

/// What an organization holds after enrolment: its keys and requests made with `haven-certs csr`, the
/// certificates the operator signed, and the operator's `ca.pem` and `gateway/signing.crt`.
fn enrolled(dir: &Path, pki: &Path, id: &str) -> haven_certs::InstallFiles {
    let org = org(id);
    let at = |name: &str| dir.join(format!("{id}-{name}"));
    for (kind, name) in [(CertKind::Tls, "tls"), (CertKind::Signing, "signing")] {
        let (key, csr, cert) = (at(&format!("{name}.key")), at(&format!("{name}.csr")), at(&format!("{name}.crt")));
        haven_certs::make_csr(&org, kind, &key, &csr).unwrap();
        haven_certs::sign_csr(pki, &org, &csr, kind, &cert).unwrap();
    }
    let layout = Layout::new(pki);
    haven_certs::InstallFiles {
        tls_cert: at("tls.crt"),
        tls_key: at("tls.key"),
        signing_cert: at("signing.crt"),
        signing_key: at("signing.key"),
        ca: layout.ca_cert(),
        gateway_signing_cert: layout.gateway_signing_cert(),
    }
}

/// `install` puts each file where a node reads it, keys 0600, after checking every one as a node
/// would; a swapped, misplaced, foreign or other organization's file is refused, naming the option,
/// and nothing is written.
#[test]
fn install_assembles_a_node_certificate_folder_and_refuses_files_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let no_orgs = dir.path().join("no-orgs.toml");
    std::fs::write(&no_orgs, "# organizations enrol by certificate request\n").unwrap();
    haven_certs::init(&no_orgs, &pki, false).unwrap();
    let harbor = org("harbor");
    let files = enrolled(dir.path(), &pki, "harbor");

    let refusals: Vec<(&str, haven_certs::InstallFiles, OrgId, &str)> = vec![
        (
            "keys swapped",
            haven_certs::InstallFiles {
                tls_key: files.signing_key.clone(),
                signing_key: files.tls_key.clone(),
                ..files.clone()
            },
            harbor.clone(),
            "--tls-cert and --tls-key: ",
        ),
        (
            "TLS and signing certificates swapped with their keys",
            haven_certs::InstallFiles {
                tls_cert: files.signing_cert.clone(),
                tls_key: files.signing_key.clone(),
                signing_cert: files.tls_cert.clone(),
                signing_key: files.tls_key.clone(),
                ..files.clone()
            },
            harbor.clone(),
            "clientAuth",
        ),
        (
            "another organization's files",
            files.clone(),
            org("maple-house"),
            "names haven://org/harbor, but it is installed as the certificate of haven://org/maple-house",
        ),
        (
            "the gateway's TLS certificate as its signing certificate",
            haven_certs::InstallFiles { gateway_signing_cert: Layout::new(&pki).gateway_tls_cert(), ..files.clone() },
            harbor.clone(),
            "--gateway-signing-cert: ",
        ),
        (
            "a CA certificate that is not one",
            haven_certs::InstallFiles { ca: files.tls_cert.clone(), ..files.clone() },
            harbor.clone(),
            "--ca: ",
        ),
    ];
    let out = dir.path().join("node-certs");
    for (case, given, id, says) in refusals {
        let err = haven_certs::install(&id, &given, &out, false).unwrap_err();
        assert!(matches!(err, CertsError::InstallRefused { .. }), "{case}: {err}");
        let text = err.to_string();
        assert!(text.contains(says) && text.ends_with("; nothing was installed"), "{case}: {text}");
        assert!(!out.exists(), "{case}: nothing is written");
    }
    // Another network's CA.
    let other = dir.path().join("other-pki");
    haven_certs::init(&no_orgs, &other, false).unwrap();
    let foreign = haven_certs::InstallFiles { ca: Layout::new(&other).ca_cert(), ..files.clone() };
    let err = haven_certs::install(&harbor, &foreign, &out, false).unwrap_err();
    assert!(err.to_string().contains("was not issued by the network CA in"), "{err}");
    assert!(!out.exists());

    let done = haven_certs::install(&harbor, &files, &out, false).unwrap();
    assert_eq!(done.written.len(), 6);
    let node = haven_trust::pki::CertsDir(out.clone());
    for (installed, given) in [
        (node.ca_cert(), &files.ca),
        (node.gateway_signing_cert(), &files.gateway_signing_cert),
        (node.org_tls_cert(&harbor), &files.tls_cert),
        (node.org_tls_key(&harbor), &files.tls_key),
        (node.org_signing_cert(&harbor), &files.signing_cert),
        (node.org_signing_key(&harbor), &files.signing_key),
    ] {
        assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(given).unwrap(), "{}", installed.display());
    }
    assert_eq!(mode(&node.org_tls_key(&harbor)), 0o600);
    assert_eq!(mode(&node.org_signing_key(&harbor)), 0o600);
    assert_eq!(done.tls_pin, fingerprint(&files.tls_cert));
    use haven_trust::pki::{CertPurpose, check_identity};
    let uri = harbor.uri();
    check_identity(&node.org_tls_cert(&harbor), &node.org_tls_key(&harbor), &uri, CertPurpose::TlsClient).unwrap();
    check_identity(&node.org_signing_cert(&harbor), &node.org_signing_key(&harbor), &uri, CertPurpose::Signing)
        .unwrap();

    // Again with the same files: nothing to do. With a renewed certificate: only with --replace.
    let again = haven_certs::install(&harbor, &files, &out, false).unwrap();
    assert_eq!((again.written.len(), again.unchanged.len()), (0, 6));
    let renewed = enrolled(&dir.path().join("renewal"), &pki, "harbor");
    let err = haven_certs::install(&harbor, &renewed, &out, false).unwrap_err();
    assert!(matches!(err, CertsError::AlreadyExists { .. }) && err.to_string().contains("--replace"), "{err}");
    assert_eq!(std::fs::read(node.org_tls_key(&harbor)).unwrap(), std::fs::read(&files.tls_key).unwrap());
    let replaced = haven_certs::install(&harbor, &renewed, &out, true).unwrap();
    assert_eq!(replaced.written.len(), 4, "the CA and the gateway's certificate are unchanged");
}

#[test]
fn bad_certificates_fail_for_the_intended_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let layout = Layout::new(&out);
    haven_certs::init(&repo_orgs(), &out, false).unwrap();
    let harbor = org("harbor");

    let expired = dir.path().join("expired");
    haven_certs::issue_expired_org_cert(&out, &harbor, &expired).unwrap();
    assert_eq!(mode(&expired.join("tls.key")), 0o600);
    let err = verify_client(&layout, &expired.join("tls.crt")).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );
    let pins = PinsFile::load(&layout.pins()).unwrap();
    assert!(pins.org[&harbor].tls.contains(&fingerprint(&expired.join("tls.crt"))));

    let unpinned = dir.path().join("unpinned");
    haven_certs::issue_unpinned_org_cert(&out, &harbor, &unpinned).unwrap();
    verify_client(&layout, &unpinned.join("tls.crt")).unwrap();
    let pins = PinsFile::load(&layout.pins()).unwrap();
    assert!(!pins.org[&harbor].tls.contains(&fingerprint(&unpinned.join("tls.crt"))));

    let foreign = dir.path().join("foreign");
    haven_certs::foreign_ca_org_cert(&harbor, &foreign).unwrap();
    let foreign_der = read_der(&foreign.join("tls.crt"));
    let (_, cert) = X509Certificate::from_der(&foreign_der).unwrap();
    assert_eq!(uris(&cert), vec!["haven://org/harbor"]);
    assert!(foreign.join("ca.pem").exists());
    let err = verify_client(&layout, &foreign.join("tls.crt")).unwrap_err();
    assert_eq!(err, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
}

/// Whether the gateway's TLS certificate in `layout` verifies, as a node checks it, for `name`.
fn gateway_serves(layout: &Layout, name: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(read_der(&layout.ca_cert())).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let cert = read_der(&layout.gateway_tls_cert());
    verifier
        .verify_server_cert(&cert, &[], &ServerName::try_from(name.to_owned()).unwrap(), &[], UnixTime::now())
        .map(|_| ())
}

fn dns_sans(layout: &Layout) -> Vec<String> {
    let der = read_der(&layout.gateway_tls_cert());
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    sans(&cert).into_iter().filter_map(|s| s.strip_prefix("DNS:").map(str::to_owned)).collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_gateway_certificate_names_the_hosts_nodes_dial_and_keeps_them_when_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let layout = Layout::new(&out);
    haven_certs::init_with_gateway_names(&repo_orgs(), &out, false, &names(&["Gateway.Example.org"])).unwrap();
    assert_eq!(dns_sans(&layout), names(&["localhost", "gateway.example.org"]));
    gateway_serves(&layout, "gateway.example.org").unwrap();
    gateway_serves(&layout, "localhost").unwrap();
    let other = gateway_serves(&layout, "other.example.org");
    assert!(
        matches!(
            other,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{other:?}"
    );
    // Organizations' certificates carry no DNS name.
    let harbor = read_der(&layout.org_tls_cert(&org("harbor")));
    assert!(!sans(&X509Certificate::from_der(&harbor).unwrap().1).iter().any(|s| s.starts_with("DNS:")));

    // A rerun with the same name changes nothing; with a new one, it says how to add it.
    assert!(
        haven_certs::init_with_gateway_names(&repo_orgs(), &out, false, &names(&["gateway.example.org"]))
            .unwrap()
            .issued
            .is_empty()
    );
    let err =
        haven_certs::init_with_gateway_names(&repo_orgs(), &out, false, &names(&["gw2.example.org"])).unwrap_err();
    assert!(matches!(err, CertsError::GatewayNamesMissing { .. }), "{err}");
    assert!(err.to_string().contains("gw2.example.org") && err.to_string().contains("haven-certs renew"), "{err}");

    // Renewal keeps the names and adds the new one; plain renewal keeps them all.
    haven_certs::renew_with_gateway_names(&out, &Party::Gateway, CertKind::Tls, &names(&["gw2.example.org"])).unwrap();
    assert_eq!(dns_sans(&layout), names(&["localhost", "gateway.example.org", "gw2.example.org"]));
    haven_certs::renew(&out, &Party::Gateway, CertKind::Tls).unwrap();
    assert_eq!(dns_sans(&layout), names(&["localhost", "gateway.example.org", "gw2.example.org"]));
    gateway_serves(&layout, "gw2.example.org").unwrap();

    // Names that cannot go in the certificate, and certificates that take none, are refused, and
    // nothing on disk changes.
    let before = read_der(&layout.gateway_tls_cert());
    for bad in ["10.1.2.3", "*.example.org", "bad name.example.org", "gateway.example.org."] {
        let err =
            haven_certs::renew_with_gateway_names(&out, &Party::Gateway, CertKind::Tls, &names(&[bad])).unwrap_err();
        assert!(matches!(err, CertsError::BadGatewayName { .. }), "{bad}: {err}");
    }
    let err = haven_certs::renew_with_gateway_names(
        &out,
        &Party::Org(org("harbor")),
        CertKind::Tls,
        &names(&["h.example.org"]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("only the gateway's TLS certificate carries DNS names"), "{err}");
    assert_eq!(read_der(&layout.gateway_tls_cert()), before);
}
