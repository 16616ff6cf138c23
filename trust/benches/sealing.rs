//! How much a sealed copy costs over bare HPKE: sealing one copy at the sender (`sealed::seal`: HPKE
//! base mode, the hash of `enc` and ciphertext, and the ES256 manifest signature) and verifying and
//! opening it at the recipient (`sealed::verify_by_ca`, then `sealed::open`), against two baselines
//! measured in the same run: the bare HPKE seal and open of the same plaintext (`hpke::seal`, then
//! `hpke::open`), and the ES256 signature of the manifest alone (`OrgSigner::sign_typed`). Each is
//! measured for a plaintext of 512 B and one of 16 KiB, on a fictional network made with rcgen: a CA,
//! the sender `harbor`'s signing certificate and the recipient `maple-house`'s sealing key.
//!
//! It also measures the ES256 signature and its verification both ways jsonwebtoken can compute them,
//! in the same rounds: by its pure-Rust provider (what Haven used before) and by ring, the provider
//! `haven_trust::es256` installs.
//!
//! `cargo bench -p haven-trust --bench sealing` runs criterion's measurements, then prints the median
//! time of each case, sampled alternately so they see the same machine conditions, and its ratio to
//! both baselines.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use haven_trust::hpke;
use haven_trust::ids::OrgId;
use haven_trust::sealed::{self, MANIFEST_TYP, MANIFEST_VERSION, Manifest, ManifestBody, SealedCopy};
use haven_trust::token::OrgSigner;
use jsonwebtoken::crypto::rust_crypto;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// The plaintext sizes, in bytes.
const SIZES: [usize; 2] = [512, 16 * 1024];

/// The recipient's clock, in Unix seconds: the manifests are made at this instant.
const NOW: i64 = 1_800_000_000;

/// The sender, the recipient and the network CA.
struct Net {
    ca_der: Vec<u8>,
    signer: OrgSigner,
    /// The signer's key and public point, for ES256 alone.
    encoding: EncodingKey,
    decoding: DecodingKey,
    body: ManifestBody,
    secret: [u8; 32],
    public: [u8; 32],
}

impl Net {
    fn new() -> Net {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Fictional Network CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("signing key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("signing params");
        params.subject_alt_names =
            vec![rcgen::SanType::URI("haven://org/harbor".try_into().expect("the organization's URI"))];
        params.distinguished_name.push(rcgen::DnType::CommonName, "harbor signing");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).expect("signing certificate");
        let signer =
            OrgSigner::new(org("harbor"), key.serialize_pem().as_bytes(), cert.der(), cert.der()).expect("signer");

        let secret = [42u8; 32];
        let public = hpke::public_of(&secret).expect("the recipient's public key");
        let body = ManifestBody {
            v: MANIFEST_VERSION,
            message_id: "019300aa-0000-7000-8000-000000000001".into(),
            sender: org("harbor"),
            sender_person: "casey".into(),
            recipient: org("maple-house"),
            kind: "referral".into(),
            purpose: "housing".into(),
            consent_id: String::new(),
            correlation_id: String::new(),
            bundle_version: format!("sha256:{}", "0".repeat(64)),
            fields: vec!["survivor_first_name".into(), "urgency".into()],
            recipient_kid: format!("x25519:{}", hex::encode(public)),
            created_at: NOW,
            not_after: NOW + 30 * 86_400,
            key_log: None,
        };
        let encoding = EncodingKey::from_ec_der(&key.serialize_der());
        let decoding = DecodingKey::from_ec_der(key.public_key_raw());
        Net { ca_der: ca.der().to_vec(), signer, encoding, decoding, body, secret, public }
    }

    /// (a) One copy, sealed and signed as the sender's node does.
    fn seal(&self, plaintext: &[u8]) -> SealedCopy {
        sealed::seal(&self.signer, self.body.clone(), &self.public, plaintext).expect("seal")
    }

    /// (b) The copy verified against the network CA and opened, as the recipient's node does.
    fn verify_and_open(&self, copy: &SealedCopy) -> Vec<u8> {
        let manifest = sealed::verify_by_ca(copy, &self.ca_der, NOW).expect("verify");
        sealed::open(&manifest, copy, &self.secret).expect("open")
    }

    /// The first baseline: the same plaintext sealed and opened with bare HPKE, under the same `info`
    /// and `aad`, with no manifest.
    fn hpke_seal_open(&self, plaintext: &[u8], info: &[u8], aad: &[u8]) -> Vec<u8> {
        let (enc, ciphertext) = hpke::seal(&self.public, info, aad, plaintext).expect("hpke seal");
        hpke::open(&self.secret, &enc, info, aad, &ciphertext).expect("hpke open")
    }

    /// The second baseline: the ES256 signature of a manifest alone. It does not depend on the
    /// plaintext's size.
    fn sign(&self, manifest: &Manifest) -> String {
        self.signer.sign_typed(MANIFEST_TYP, manifest).expect("sign")
    }
}

/// An ES256 signature of `msg` and its verification, by ring (through jsonwebtoken's installed
/// provider) or by jsonwebtoken's pure-Rust provider; each builds its key from the key's bytes per
/// call, as jsonwebtoken does.
fn es256(net: &Net, msg: &[u8], ring: bool) -> (String, bool) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if ring {
        haven_trust::es256::install();
        let sig = jsonwebtoken::crypto::sign(msg, &net.encoding, Algorithm::ES256).expect("ring signs");
        let ok = jsonwebtoken::crypto::verify(&sig, msg, &net.decoding, Algorithm::ES256).expect("ring verifies");
        (sig, ok)
    } else {
        let signer = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&Algorithm::ES256, &net.encoding).expect("signer");
        let sig = signature::Signer::try_sign(&*signer, msg).expect("signs");
        let verifier =
            (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::ES256, &net.decoding).expect("verifier");
        let ok = signature::Verifier::verify(&*verifier, msg, &sig).is_ok();
        (b64.encode(sig), ok)
    }
}

fn org(id: &str) -> OrgId {
    OrgId::parse(id).expect("organization id")
}

/// A fictional plaintext of `len` bytes.
fn plaintext(len: usize) -> Vec<u8> {
    b"Rosa (fictional), urgency high; ".iter().copied().cycle().take(len).collect()
}

/// What one size's cases work on, made once.
struct Case {
    size: usize,
    plaintext: Vec<u8>,
    copy: SealedCopy,
    manifest: Manifest,
    info: Vec<u8>,
    aad: Vec<u8>,
}

impl Case {
    fn new(net: &Net, size: usize) -> Case {
        let plaintext = plaintext(size);
        let copy = net.seal(&plaintext);
        let manifest = sealed::verify_by_ca(&copy, &net.ca_der, NOW).expect("the copy verifies");
        assert_eq!(net.verify_and_open(&copy), plaintext, "the copy opens to its plaintext");
        let info = sealed::info(&net.body.message_id);
        let aad = net.body.canonical();
        assert_eq!(net.hpke_seal_open(&plaintext, &info, &aad), plaintext, "bare HPKE round-trips");
        Case { size, plaintext, copy, manifest, info, aad }
    }
}

fn modest(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
}

fn criterion_runs(c: &mut Criterion, net: &Net, cases: &[Case]) {
    for case in cases {
        let mut group = c.benchmark_group(format!("sealing/{}_bytes", case.size));
        modest(&mut group);
        group.throughput(Throughput::Bytes(case.size as u64));
        group.bench_function("seal", |b| b.iter(|| black_box(net.seal(black_box(&case.plaintext)))));
        group.bench_function("verify_by_ca+open", |b| b.iter(|| black_box(net.verify_and_open(black_box(&case.copy)))));
        group.bench_function("hpke_seal+open", |b| {
            b.iter(|| black_box(net.hpke_seal_open(black_box(&case.plaintext), &case.info, &case.aad)))
        });
        group.finish();
    }
    let mut group = c.benchmark_group("sealing/es256");
    modest(&mut group);
    group.bench_function("sign_typed", |b| b.iter(|| black_box(net.sign(black_box(&cases[0].manifest)))));
    group.finish();
}

/// Microseconds per operation over `ROUND` runs of `op`.
fn one_round(mut op: impl FnMut()) -> f64 {
    const ROUND: u32 = 8;
    let start = Instant::now();
    for _ in 0..ROUND {
        op();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUND)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn medians(net: &Net, cases: &[Case]) {
    const ROUNDS: usize = 41;
    let sign = || {
        black_box(net.sign(black_box(&cases[0].manifest)));
    };
    // Per size: seal, verify and open, bare HPKE; and the signature, which does not depend on size.
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()], [Vec::new(), Vec::new(), Vec::new()]];
    let mut signs = Vec::new();
    // ES256 sign and verify of the manifest's signing input: pure-Rust, then ring.
    let jws = net.sign(&cases[0].manifest);
    let input = jws.rsplit_once('.').map(|(input, _)| input.as_bytes().to_vec()).expect("a compact JWS");
    let (mut pure, mut ring) = (Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let p = one_round(|| {
            let (sig, ok) = es256(net, black_box(&input), false);
            assert!(ok, "verifies");
            black_box(sig);
        });
        let r = one_round(|| {
            let (sig, ok) = es256(net, black_box(&input), true);
            assert!(ok, "verifies");
            black_box(sig);
        });
        if round > 0 {
            pure.push(p);
            ring.push(r);
        }
        for (case, s) in cases.iter().zip(&mut samples) {
            let seal = one_round(|| {
                black_box(net.seal(black_box(&case.plaintext)));
            });
            let open = one_round(|| {
                black_box(net.verify_and_open(black_box(&case.copy)));
            });
            let bare = one_round(|| {
                black_box(net.hpke_seal_open(black_box(&case.plaintext), &case.info, &case.aad));
            });
            let signed = one_round(sign);
            // The first round warms up.
            if round > 0 {
                s[0].push(seal);
                s[1].push(open);
                s[2].push(bare);
                signs.push(signed);
            }
        }
    }
    let es256 = median(signs);
    let (pure, ring) = (median(pure), median(ring));
    println!();
    println!("median time per operation, {ROUNDS} rounds of 8 each, cases alternating:");
    println!("  ES256 sign+verify, jsonwebtoken's pure-Rust P-256  {pure:>8.1} µs");
    println!("  ES256 sign+verify, ring (haven_trust::es256)       {ring:>8.1} µs  {:>5.2}x pure-Rust", ring / pure);
    println!("  ES256 manifest signature alone (sign_typed)  {es256:>8.1} µs");
    for (case, s) in cases.iter().zip(samples) {
        let [seal, open, bare] = s.map(median);
        let mib_s = |us: f64| case.size as f64 / us / 1.048_576;
        println!("  {} B plaintext:", case.size);
        println!("    bare HPKE seal+open        {bare:>8.1} µs  {:>7.1} MiB/s", mib_s(bare));
        for (name, t) in [("(a) seal", seal), ("(b) verify_by_ca+open", open)] {
            println!(
                "    {name:<26} {t:>8.1} µs  {:>7.1} MiB/s  {:>5.2}x bare HPKE  {:>5.2}x ES256 signature",
                mib_s(t),
                t / bare,
                t / es256
            );
        }
    }
}

fn main() {
    let net = Net::new();
    let cases: Vec<Case> = SIZES.iter().map(|&size| Case::new(&net, size)).collect();
    let mut c = Criterion::default().configure_from_args();
    criterion_runs(&mut c, &net, &cases);
    c.final_summary();
    // `cargo test --benches` runs this binary without `--bench`, to check it works; only a real
    // benchmark run spends time on the medians.
    if std::env::args().any(|a| a == "--bench") {
        medians(&net, &cases);
    }
}
