//! The one place Haven calls an HPKE implementation (RFC 9180), so that it can be swapped.
//!
//! Sealed payloads use base mode with the suite a recipient's sealing-key statement names; this
//! version knows one, [`crate::sealing::SUITE_X25519_CHACHA20`]: DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305. The implementation is the `hpke` crate (0.15, pure Rust on the
//! RustCrypto primitives). It follows the RFC's test vectors but has not had a formal audit; see
//! `docs/threat-model.md`.

use ::hpke::aead::ChaCha20Poly1305;
use ::hpke::kdf::HkdfSha256;
use ::hpke::kem::X25519HkdfSha256;
use ::hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};

type Kem = X25519HkdfSha256;

/// The implementation, as the docs name it.
pub const IMPLEMENTATION: &str = "hpke 0.15 (rozbb/rust-hpke, RustCrypto)";

/// The length of an encapsulated key (`enc`) for X25519.
pub const ENC_LEN: usize = 32;

/// Why sealing or opening failed. Deliberately coarse: an attacker learns nothing from which step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpkeError {
    #[error("the recipient's public key is not an X25519 key")]
    BadPublicKey,
    #[error("the encapsulated key is not {ENC_LEN} bytes of an X25519 key")]
    BadEncapsulation,
    #[error("the copy does not open with this key and these associated data")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Seals `plaintext` to `public_key` (base mode): returns `enc` and the ciphertext, which carries
/// the AEAD tag.
pub fn seal(public_key: &[u8; 32], info: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>), HpkeError> {
    let pk = <Kem as ::hpke::Kem>::PublicKey::from_bytes(public_key).map_err(|_| HpkeError::BadPublicKey)?;
    let (enc, ct) =
        ::hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(&OpModeS::Base, &pk, info, plaintext, aad)
            .map_err(|_| HpkeError::Seal)?;
    Ok((enc.to_bytes().to_vec(), ct))
}

/// Opens a copy sealed by [`seal`] with the private key `secret`.
pub fn open(secret: &[u8; 32], enc: &[u8], info: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, HpkeError> {
    let sk = <Kem as ::hpke::Kem>::PrivateKey::from_bytes(secret).map_err(|_| HpkeError::Open)?;
    let enc = <Kem as ::hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| HpkeError::BadEncapsulation)?;
    ::hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(&OpModeR::Base, &sk, &enc, info, ciphertext, aad)
        .map_err(|_| HpkeError::Open)
}

/// The public half of an X25519 private key, as HPKE derives it.
pub fn public_of(secret: &[u8; 32]) -> Result<[u8; 32], HpkeError> {
    let sk = <Kem as ::hpke::Kem>::PrivateKey::from_bytes(secret).map_err(|_| HpkeError::Open)?;
    let pk = Kem::sk_to_pk(&sk);
    let mut out = [0u8; 32];
    out.copy_from_slice(&pk.to_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> ([u8; 32], [u8; 32]) {
        let secret: [u8; 32] = rand::random();
        (secret, public_of(&secret).unwrap())
    }

    #[test]
    fn a_sealed_copy_opens_only_with_its_key_info_and_aad() {
        let (sk, pk) = keypair();
        let (enc, ct) = seal(&pk, b"info", b"aad", b"fictional values").unwrap();
        assert_eq!(enc.len(), ENC_LEN);
        assert_eq!(open(&sk, &enc, b"info", b"aad", &ct).unwrap(), b"fictional values");
        assert_eq!(open(&sk, &enc, b"other", b"aad", &ct), Err(HpkeError::Open));
        assert_eq!(open(&sk, &enc, b"info", b"other", &ct), Err(HpkeError::Open));
        let (other_sk, _) = keypair();
        assert_eq!(open(&other_sk, &enc, b"info", b"aad", &ct), Err(HpkeError::Open));
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        assert_eq!(open(&sk, &enc, b"info", b"aad", &flipped), Err(HpkeError::Open));
        assert_eq!(open(&sk, &enc[..31], b"info", b"aad", &ct), Err(HpkeError::BadEncapsulation));
    }

    #[test]
    fn each_seal_is_fresh() {
        let (_, pk) = keypair();
        let a = seal(&pk, b"i", b"a", b"same").unwrap();
        let b = seal(&pk, b"i", b"a", b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn the_public_half_matches_x25519() {
        let secret = [9u8; 32];
        let dalek = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
        assert_eq!(public_of(&secret).unwrap(), dalek.to_bytes());
    }
}
