//! Person tokens: the short-lived JWTs that name the person acting.
//!
//! A node mints one for each person it acts for, ES256-signed with the organization's signing key, with
//! `kid` = the signing certificate's fingerprint and `x5c` = that certificate. The gateway verifies it
//! against the registry's signing pins, checks that it names the organization of the TLS certificate and
//! that it is bound to that very certificate (`cnf.x5t#S256`, RFC 8705). See `docs/wire-protocol.md`.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{OrgId, PersonId, Role};
use crate::pki::CertInfo;
use crate::registry::{Fingerprint, Registry};

/// The only audience a gateway token may carry.
pub const AUDIENCE: &str = "haven-gateway";
/// The longest lifetime a token may claim, in seconds.
pub const MAX_LIFETIME_SECS: i64 = 300;
/// Clock skew tolerated between a node and the gateway, in seconds.
pub const SKEW_SECS: i64 = 30;

/// The RFC 8705 confirmation claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url(SHA-256(DER of the organization's TLS certificate)).
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The claims of a person token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub org: String,
    pub role: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default)]
    pub jti: String,
    pub cnf: Confirmation,
}

/// The thumbprint a token must carry to be bound to a TLS certificate.
pub fn thumbprint(fp: &Fingerprint) -> String {
    URL_SAFE_NO_PAD.encode(fp.0)
}

/// Why a signing key or token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("signing key: {0}")]
    Key(String),
    #[error("signing certificate: {0}")]
    Cert(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// An organization's signing key, held by its node. Mints person tokens and signs consent receipts.
#[derive(Clone)]
pub struct OrgSigner {
    org: OrgId,
    key: EncodingKey,
    kid: String,
    x5c: String,
    tls_thumbprint: String,
}

impl OrgSigner {
    /// Builds a signer from the organization's signing key (PKCS#8 PEM), its signing certificate (DER)
    /// and its TLS certificate (DER), to which every token is bound.
    pub fn new(org: OrgId, key_pem: &[u8], signing_cert_der: &[u8], tls_cert_der: &[u8]) -> Result<Self, SignerError> {
        let key = EncodingKey::from_ec_pem(key_pem).map_err(|e| SignerError::Key(e.to_string()))?;
        crate::pki::key_matches_cert(key_pem, signing_cert_der).map_err(SignerError::Key)?;
        Ok(OrgSigner {
            org,
            key,
            kid: Fingerprint::of_der(signing_cert_der).to_hex(),
            x5c: STANDARD.encode(signing_cert_der),
            tls_thumbprint: thumbprint(&Fingerprint::of_der(tls_cert_der)),
        })
    }

    /// The organization this signer speaks for.
    pub fn org(&self) -> &OrgId {
        &self.org
    }

    /// The JWS header every signature carries.
    pub fn header(&self) -> Header {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        h.x5c = Some(vec![self.x5c.clone()]);
        h
    }

    /// Mints a person token valid from `now` (Unix seconds) for `lifetime` seconds.
    pub fn mint(&self, person: &PersonId, role: Role, now: i64, lifetime: i64) -> Result<String, SignerError> {
        let claims = Claims {
            sub: person.to_string(),
            org: self.org.to_string(),
            role: role.as_str().to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + lifetime,
            jti: uuid::Uuid::new_v4().to_string(),
            cnf: Confirmation { x5t_s256: self.tls_thumbprint.clone() },
        };
        self.sign(&claims)
    }

    /// Signs any serializable payload as a compact JWS with this organization's key.
    pub fn sign<T: Serialize>(&self, payload: &T) -> Result<String, SignerError> {
        crate::es256::install();
        jsonwebtoken::encode(&self.header(), payload, &self.key).map_err(|e| SignerError::Sign(e.to_string()))
    }

    /// The same, with the header's `typ` set to `typ` (a statement of a kind of its own, such as
    /// [`crate::sealing::STATEMENT_TYP`]).
    pub fn sign_typed<T: Serialize>(&self, typ: &str, payload: &T) -> Result<String, SignerError> {
        let mut header = self.header();
        header.typ = Some(typ.to_owned());
        crate::es256::install();
        jsonwebtoken::encode(&header, payload, &self.key).map_err(|e| SignerError::Sign(e.to_string()))
    }
}

/// Why a token was refused. Each message tells the operator of the calling node what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing bearer token: send `authorization: Bearer <jwt>`")]
    Missing,
    #[error("garbled token: {0}")]
    Garbled(String),
    #[error("token algorithm {0} is not allowed (only ES256)")]
    WrongAlgorithm(String),
    #[error("token header has no `kid` naming the signing certificate")]
    NoKid,
    #[error("token signing certificate {0} is not pinned for any organization")]
    UnknownKey(String),
    #[error("token is signed with a key pinned to organization `{key_org}`, not `{tls_org}`")]
    OtherOrganizationKey { key_org: String, tls_org: String },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token names organization `{token_org}` but the TLS certificate is `{tls_org}`")]
    OrgMismatch { token_org: String, tls_org: String },
    #[error("token is bound to another TLS certificate (cnf.x5t#S256 does not match)")]
    WrongCertificate,
    #[error("token expired at {exp} (now {now}, {SKEW_SECS}s skew allowed)")]
    Expired { exp: i64, now: i64 },
    #[error("token is not yet valid (iat {iat}, now {now}, {SKEW_SECS}s skew allowed)")]
    NotYetValid { iat: i64, now: i64 },
    #[error("token lifetime {0}s is longer than the {MAX_LIFETIME_SECS}s allowed")]
    TooLong(i64),
    #[error("token audience `{0}` is not `{AUDIENCE}`")]
    WrongAudience(String),
    #[error("token has no `jti`")]
    NoJti,
    #[error("token claims are invalid: {0}")]
    BadClaims(String),
}

impl TokenError {
    /// A stable code for the audit log's aggregated rejections.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Garbled(_) => "token_garbled",
            TokenError::WrongAlgorithm(_) => "token_wrong_algorithm",
            TokenError::NoKid => "token_no_kid",
            TokenError::UnknownKey(_) => "token_unknown_key",
            TokenError::OtherOrganizationKey { .. } => "token_other_org_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::OrgMismatch { .. } => "token_org_mismatch",
            TokenError::WrongCertificate => "token_wrong_certificate",
            TokenError::Expired { .. } => "token_expired",
            TokenError::NotYetValid { .. } => "token_not_yet_valid",
            TokenError::TooLong(_) => "token_too_long",
            TokenError::WrongAudience(_) => "token_wrong_audience",
            TokenError::NoJti => "token_no_jti",
            TokenError::BadClaims(_) => "token_bad_claims",
        }
    }
}

/// A verified person token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub person: PersonId,
    pub role: Role,
    pub exp: i64,
}

/// Verifies a compact JWS signed by an organization whose signing certificate the registry pins.
/// Returns the payload and the organization that signed it.
pub fn verify_signed<T: serde::de::DeserializeOwned>(
    jws: &str,
    registry: &Registry,
) -> Result<(T, OrgId, Fingerprint), TokenError> {
    // The algorithm is checked before anything else, so `none` and HMAC tokens are named as such.
    if let Some(alg) = alg_of(jws)
        && alg != "ES256"
    {
        return Err(TokenError::WrongAlgorithm(alg));
    }
    let header = jsonwebtoken::decode_header(jws).map_err(|e| TokenError::Garbled(e.to_string()))?;
    if header.alg != Algorithm::ES256 {
        return Err(TokenError::WrongAlgorithm(format!("{:?}", header.alg)));
    }
    let kid = header.kid.ok_or(TokenError::NoKid)?;
    let kid_fp: Fingerprint = kid.parse().map_err(|_| TokenError::UnknownKey(kid.clone()))?;
    let key_org = registry
        .iter()
        .find(|o| o.signing_pins.contains(&kid_fp))
        .map(|o| o.id.clone())
        .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
    let der = x5c_of(header.x5c)?;
    if Fingerprint::of_der(&der) != kid_fp {
        return Err(TokenError::UnknownKey(kid));
    }
    let claims = decode_with_cert(jws, &der)?;
    Ok((claims, key_org, kid_fp))
}

/// Verifies a compact JWS (ES256) with the certificate its `x5c` carries, pinned or not, and returns
/// the payload and that certificate (DER). Whose certificate it is, and who issued it, the caller
/// decides (a node checks a sealing-key statement against the network CA this way).
pub fn verify_with_x5c<T: serde::de::DeserializeOwned>(jws: &str) -> Result<(T, Vec<u8>), TokenError> {
    if let Some(alg) = alg_of(jws)
        && alg != "ES256"
    {
        return Err(TokenError::WrongAlgorithm(alg));
    }
    let header = jsonwebtoken::decode_header(jws).map_err(|e| TokenError::Garbled(e.to_string()))?;
    let der = x5c_of(header.x5c)?;
    let claims = decode_with_cert(jws, &der)?;
    Ok((claims, der))
}

/// An organization's JWS verified against the network CA (`ca`, DER) rather than the registry: its
/// signature with the certificate its `x5c` carries, that the CA issued that certificate, and that it
/// is a signing certificate (no TLS usage). Returns the payload and the certificate; that the
/// certificate's organization is the one the payload speaks for, and that it was valid when the payload
/// was made, the caller checks.
pub fn verify_by_ca<T: serde::de::DeserializeOwned>(jws: &str, ca: &[u8]) -> Result<(T, CertInfo), TokenError> {
    let (payload, der) = verify_with_x5c::<T>(jws)?;
    crate::pki::issued_by(&der, ca).map_err(TokenError::Garbled)?;
    let info = CertInfo::parse(&der).map_err(|e| TokenError::Garbled(e.to_string()))?;
    if info.client_auth || info.server_auth {
        return Err(TokenError::Garbled(
            "signed with a TLS certificate; only a signing certificate speaks for an organization".into(),
        ));
    }
    Ok((payload, info))
}

/// The `typ` of a compact JWS's header, if it has one (at most 64 characters of it).
pub fn typ_of(jws: &str) -> Option<String> {
    let head = jws.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(head).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("typ")?.as_str().map(|s| s.chars().take(64).collect())
}

/// The first certificate of a header's `x5c`, as DER.
fn x5c_of(x5c: Option<Vec<String>>) -> Result<Vec<u8>, TokenError> {
    let cert_b64 = x5c
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| TokenError::Garbled("token header has no `x5c` carrying the signing certificate".into()))?;
    STANDARD.decode(cert_b64).map_err(|e| TokenError::Garbled(format!("x5c is not base64: {e}")))
}

/// Checks an ES256 JWS's signature with the key of the certificate `der` and returns its payload.
/// Time, audience and required claims are the caller's to check, against an injectable clock.
fn decode_with_cert<T: serde::de::DeserializeOwned>(jws: &str, der: &[u8]) -> Result<T, TokenError> {
    let info = CertInfo::parse(der).map_err(|e| TokenError::Garbled(e.to_string()))?;
    let key = DecodingKey::from_ec_der(&info.public_key);
    crate::es256::install();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<T>(jws, &key, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
        jsonwebtoken::errors::ErrorKind::Json(_) => TokenError::BadClaims(e.to_string()),
        _ => TokenError::Garbled(e.to_string()),
    })?;
    Ok(data.claims)
}

fn alg_of(jws: &str) -> Option<String> {
    let head = jws.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(head).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(|s| s.chars().take(16).collect())
}

/// Verifies a person token presented on a connection whose TLS certificate names `tls_org` and has
/// fingerprint `tls_fp`, at `now` (Unix seconds).
pub fn verify_person_token(
    token: &str,
    registry: &Registry,
    tls_org: &OrgId,
    tls_fp: &Fingerprint,
    now: i64,
) -> Result<VerifiedToken, TokenError> {
    let (claims, key_org, _) = verify_signed::<Claims>(token, registry)?;
    if &key_org != tls_org {
        return Err(TokenError::OtherOrganizationKey { key_org: key_org.to_string(), tls_org: tls_org.to_string() });
    }
    check_claims(&claims, tls_org, tls_fp, now)
}

/// The claim checks that do not need the signature; also run on every cache hit.
pub fn check_claims(
    claims: &Claims,
    tls_org: &OrgId,
    tls_fp: &Fingerprint,
    now: i64,
) -> Result<VerifiedToken, TokenError> {
    if claims.org != tls_org.as_str() {
        return Err(TokenError::OrgMismatch {
            token_org: crate::untrusted::shown(&claims.org),
            tls_org: tls_org.to_string(),
        });
    }
    if claims.cnf.x5t_s256 != thumbprint(tls_fp) {
        return Err(TokenError::WrongCertificate);
    }
    if claims.aud != AUDIENCE {
        return Err(TokenError::WrongAudience(crate::untrusted::shown(&claims.aud)));
    }
    if claims.jti.is_empty() {
        return Err(TokenError::NoJti);
    }
    // Both times are the caller's numbers: every step saturates, so no pair of values can wrap
    // around into a short lifetime or a time in the window.
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if lifetime > MAX_LIFETIME_SECS {
        return Err(TokenError::TooLong(lifetime));
    }
    if lifetime <= 0 {
        return Err(TokenError::BadClaims(format!("exp ({}) is not after iat ({})", claims.exp, claims.iat)));
    }
    if claims.iat > now.saturating_add(SKEW_SECS) {
        return Err(TokenError::NotYetValid { iat: claims.iat, now });
    }
    if claims.exp.saturating_add(SKEW_SECS) <= now {
        return Err(TokenError::Expired { exp: claims.exp, now });
    }
    // Given the checks above this holds already; it is the window every accepted token lies in, kept
    // explicit so that a change to one check cannot widen it.
    if claims.exp > now.saturating_add(MAX_LIFETIME_SECS + SKEW_SECS) {
        return Err(TokenError::TooLong(lifetime));
    }
    let person = PersonId::parse(&claims.sub).map_err(|e| TokenError::BadClaims(format!("sub: {e}")))?;
    let role = Role::parse(&claims.role).map_err(|e| TokenError::BadClaims(format!("role: {e}")))?;
    Ok(VerifiedToken { person, role, exp: claims.exp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: i64, exp: i64) -> (Claims, OrgId, Fingerprint) {
        let org = OrgId::parse("harbor").expect("org id");
        let fp = Fingerprint::of_der(b"a certificate");
        let c = Claims {
            sub: "casey".into(),
            org: org.to_string(),
            role: "caseworker".into(),
            aud: AUDIENCE.into(),
            iat,
            exp,
            jti: "j".into(),
            cnf: Confirmation { x5t_s256: thumbprint(&fp) },
        };
        (c, org, fp)
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_lifetime_that_wraps_around_is_too_long() {
        let (c, org, fp) = claims(-4611686018427388904, 4611686018427387904);
        assert_eq!(check_claims(&c, &org, &fp, NOW).map(|_| ()), Err(TokenError::TooLong(i64::MAX)));
        let (c, org, fp) = claims(i64::MIN, i64::MAX);
        assert!(matches!(check_claims(&c, &org, &fp, NOW), Err(TokenError::TooLong(_))));
    }

    #[test]
    fn times_far_from_now_are_refused_without_overflow() {
        let (c, org, fp) = claims(i64::MAX - 10, i64::MAX);
        assert!(matches!(check_claims(&c, &org, &fp, NOW), Err(TokenError::NotYetValid { .. })));
        let (c, org, fp) = claims(i64::MIN, i64::MIN + 10);
        assert!(matches!(check_claims(&c, &org, &fp, NOW), Err(TokenError::Expired { .. })));
        let (c, org, fp) = claims(NOW, NOW);
        assert!(matches!(check_claims(&c, &org, &fp, NOW), Err(TokenError::BadClaims(_))));
        let (c, org, fp) = claims(NOW, NOW - 5);
        assert!(matches!(check_claims(&c, &org, &fp, NOW), Err(TokenError::BadClaims(_))));
    }

    #[test]
    fn a_token_inside_the_window_is_accepted() {
        let (c, org, fp) = claims(NOW - 10, NOW + MAX_LIFETIME_SECS - 10);
        let v = check_claims(&c, &org, &fp, NOW).expect("valid");
        assert_eq!(v.exp, NOW + MAX_LIFETIME_SECS - 10);
        let (c, org, fp) = claims(NOW + SKEW_SECS, NOW + SKEW_SECS + MAX_LIFETIME_SECS);
        assert!(check_claims(&c, &org, &fp, NOW).is_ok(), "iat at the edge of the skew");
        let (c, org, fp) = claims(NOW + SKEW_SECS + 1, NOW + SKEW_SECS + 60);
        assert!(matches!(check_claims(&c, &org, &fp, NOW), Err(TokenError::NotYetValid { .. })));
    }
}
