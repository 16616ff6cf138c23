//! ES256, the one signature algorithm of Haven's JWS (person tokens, consent receipts, sealing-key
//! statements, sealed-copy manifests), computed by ring: the library, and the P-256 code, that TLS
//! already uses here.
//!
//! jsonwebtoken still encodes, parses and checks every JWS; this module is only its crypto provider
//! (`jsonwebtoken::crypto::CryptoProvider`). Its pure-Rust P-256 took 245 µs to sign and recovered a
//! public key it never used; a gateway verifies one manifest per sealed copy, so a 50-copy alert spent
//! most of its gateway CPU here. `benches/sealing.rs` measures both.
//!
//! ES256 keys ring does not take (a PKCS#8 document without its public key, which some tools write; a
//! public key that is not an uncompressed P-256 point; a key of another family), and every other
//! algorithm, go to the pure-Rust provider as before. What is accepted does not change, only how fast;
//! one refusal is named differently: a 65-byte point that is not on the curve fails as a bad signature
//! where it failed as a bad key. [`install`] is called by every function of [`crate::token`] before it signs or verifies, so
//! no binary or test has to remember it.

use std::sync::OnceLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::Result;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey};

/// Makes ring's ES256 jsonwebtoken's process-wide provider, once. If another provider was installed
/// first (or jsonwebtoken was used before this, which installs its pure-Rust one), that one stays: it
/// accepts the same signatures, only more slowly. Signatures are not byte for byte the same: ring
/// draws each nonce at random where the pure-Rust signer derives it from the key and message (RFC
/// 6979), so signing one payload twice gives two different, equally valid, signatures.
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let provider = PROVIDER.get_or_init(|| CryptoProvider {
            signer_factory,
            verifier_factory,
            key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
        });
        let _ = provider.install_default();
    });
}

/// An organization's P-256 key, read once per signature from its PKCS#8 document.
struct Signer(EcdsaKeyPair);

impl signature::Signer<Vec<u8>> for Signer {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        // The fixed form is JWS's: r then s, 32 bytes each (RFC 7518 §3.4).
        let sig = self.0.sign(&SystemRandom::new(), msg).map_err(|_| signature::Error::new())?;
        Ok(sig.as_ref().to_vec())
    }
}

impl JwtSigner for Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

/// A P-256 public key as an uncompressed point, as `DecodingKey::from_ec_der` holds it.
struct Verifier(Vec<u8>);

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.0).verify(msg, sig).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

fn signer_factory(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if *alg == Algorithm::ES256
        && key.family() == AlgorithmFamily::Ec
        && let Ok(pair) =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes(), &SystemRandom::new())
    {
        return Ok(Box::new(Signer(pair)));
    }
    (rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key)
}

/// ring takes an EC key given as an uncompressed P-256 point (65 bytes, `0x04`, x, y); any other key
/// (another family, a compressed point, another curve) goes to the pure-Rust provider, which refuses
/// or accepts it as it always did.
fn verifier_factory(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if *alg == Algorithm::ES256
        && key.family() == AlgorithmFamily::Ec
        && let Ok(point) = key.try_get_as_bytes()
        && point.len() == 65
        && point[0] == 0x04
    {
        return Ok(Box::new(Verifier(point.to_vec())));
    }
    (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use p256::pkcs8::DecodePrivateKey;

    fn pkcs8() -> Vec<u8> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        kp.serialize_der()
    }

    #[test]
    fn ring_and_the_pure_rust_provider_accept_each_others_signatures() {
        let der = pkcs8();
        let enc = EncodingKey::from_ec_der(&der);
        let sk = p256::ecdsa::SigningKey::from_pkcs8_der(&der).expect("p256 reads it");
        let point = sk.verifying_key().to_encoded_point(false);
        let dec = DecodingKey::from_ec_der(point.as_bytes());
        let msg = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjYXNleSJ9";

        let by_ring = signature::Signer::try_sign(&*signer_factory(&Algorithm::ES256, &enc).expect("signer"), msg)
            .expect("ring signs");
        assert_eq!(by_ring.len(), 64, "JWS's fixed r||s form");
        let sig = p256::ecdsa::Signature::from_slice(&by_ring).expect("64 bytes");
        sk.verifying_key().verify(msg, &sig).expect("the pure-Rust verifier accepts ring's signature");

        let by_p256: p256::ecdsa::Signature = sk.sign(msg);
        let verifier = verifier_factory(&Algorithm::ES256, &dec).expect("verifier");
        signature::Verifier::verify(&*verifier, msg, &by_p256.to_vec()).expect("ring accepts the pure-Rust one");
        let mut tampered = by_p256.to_vec();
        tampered[10] ^= 1;
        assert!(signature::Verifier::verify(&*verifier, msg, &tampered).is_err(), "a changed signature fails");
        assert!(signature::Verifier::verify(&*verifier, b"another message", &by_p256.to_vec()).is_err());
        assert!(signature::Verifier::verify(&*verifier, msg, &by_p256.to_vec()[..63].to_vec()).is_err());
    }

    #[test]
    fn after_install_ring_is_the_process_provider() {
        install();
        // ring draws each nonce at random; the pure-Rust signer's (RFC 6979) would sign alike twice.
        let enc = EncodingKey::from_ec_der(&pkcs8());
        let sign = || jsonwebtoken::crypto::sign(b"a message", &enc, Algorithm::ES256).expect("signs");
        assert_ne!(sign(), sign(), "signed by ring");
        let pure = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&Algorithm::ES256, &enc).expect("signer");
        let pure_sign = || signature::Signer::try_sign(&*pure, b"a message").expect("signs");
        assert_eq!(
            pure_sign(),
            pure_sign(),
            "the pure-Rust signer is deterministic, so the check above means something"
        );
    }

    #[test]
    fn keys_ring_does_not_take_are_judged_by_the_pure_rust_provider_as_before() {
        let der = pkcs8();
        let sk = p256::ecdsa::SigningKey::from_pkcs8_der(&der).expect("p256 reads it");
        let msg = b"a message";
        let sig: p256::ecdsa::Signature = sk.sign(msg);
        // A compressed point: the pure-Rust verifier reads it, ring would not.
        let compressed = sk.verifying_key().to_encoded_point(true);
        let v =
            verifier_factory(&Algorithm::ES256, &DecodingKey::from_ec_der(compressed.as_bytes())).expect("verifier");
        signature::Verifier::verify(&*v, msg, &sig.to_vec()).expect("accepted as before");
        // A key of another family is refused, as before, whatever its bytes.
        let hmac = DecodingKey::from_secret(compressed.as_bytes()).expect("an HMAC key");
        assert!(verifier_factory(&Algorithm::ES256, &hmac).is_err(), "an HMAC key is no EC key");
    }

    #[test]
    fn a_key_ring_cannot_read_is_signed_with_by_the_pure_rust_provider() {
        // PKCS#8 without the optional public key: valid, and written by some tools, but not read by ring.
        let der = pkcs8();
        let sk = p256::ecdsa::SigningKey::from_pkcs8_der(&der).expect("p256 reads it");
        // SEQUENCE { version 0, { id-ecPublicKey, prime256v1 }, OCTET STRING { ECPrivateKey { 1, d } } }
        let mut bare =
            hex::decode("3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420").expect("hex");
        bare.extend_from_slice(&sk.to_bytes());
        assert!(p256::ecdsa::SigningKey::from_pkcs8_der(&bare).is_ok(), "a valid PKCS#8 document");
        assert!(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &bare, &SystemRandom::new()).is_err(),
            "ring does not read it"
        );
        let enc = EncodingKey::from_ec_der(&bare);
        let msg = b"a message";
        let sig = signature::Signer::try_sign(&*signer_factory(&Algorithm::ES256, &enc).expect("signer"), msg)
            .expect("signs");
        let sig = p256::ecdsa::Signature::from_slice(&sig).expect("64 bytes");
        sk.verifying_key().verify(msg, &sig).expect("a valid ES256 signature");
    }
}
