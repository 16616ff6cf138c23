//! Sealing keys and the statements that publish them.
//!
//! Each organization has X25519 sealing key pairs, made at its node; the private half never leaves it.
//! The organization publishes each public key in a *sealing-key statement*: a compact JWS (ES256, `typ`
//! [`STATEMENT_TYP`], `x5c` carrying the organization's signing certificate) whose payload is a
//! [`SealingKeyStatement`]. A statement either publishes a key or withdraws one. The gateway keeps
//! every statement it accepts in the public key log ([`crate::keylog`]), where every node reads it.
//!
//! The checks here are the ones that need no database: the shape, the suite, the key, its id and the
//! validity window. Who may register a statement, and which key it may withdraw, the gateway decides
//! against the registry and the log.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::OrgId;
use crate::registry::Registry;
use crate::token::{self, TokenError};

/// The JWS `typ` of a sealing-key statement.
pub const STATEMENT_TYP: &str = "haven-sealing-key+jwt";

/// The HPKE suite of every key this version makes (RFC 9180: KEM 0x0020, KDF 0x0001, AEAD 0x0003).
pub const SUITE_X25519_CHACHA20: &str = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305";

/// The suites a statement may name. A new suite is added here, so that keys can change algorithm
/// without a new statement format.
pub const SUITES: [&str; 1] = [SUITE_X25519_CHACHA20];

/// The largest statement, as a JWS, in bytes. A statement with its certificate is about 2 KiB.
pub const MAX_STATEMENT_BYTES: usize = 16 * 1024;

/// The longest validity window a statement may give, in seconds (about two years).
pub const MAX_WINDOW_SECS: i64 = 800 * 86_400;

/// How far in the past or future a statement's `issued_at` may lie, in seconds.
pub const ISSUED_AT_SKEW_SECS: i64 = 10 * 60;

/// What a statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementAction {
    /// Publishes a key: senders may seal to it within its window.
    Publish,
    /// Withdraws a key published earlier: no sender may seal to it from now on.
    Withdraw,
}

impl StatementAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementAction::Publish => "publish",
            StatementAction::Withdraw => "withdraw",
        }
    }
}

/// The payload of a sealing-key statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealingKeyStatement {
    /// The organization the key speaks for; the statement must be signed with its signing key.
    pub org: OrgId,
    pub action: StatementAction,
    /// The key's id: [`key_id`] of its public key.
    pub kid: String,
    /// The HPKE suite the key is for (one of [`SUITES`]).
    pub suite: String,
    /// The X25519 public key, base64url without padding (32 bytes).
    pub public_key: String,
    /// The key's window, Unix seconds: senders seal to it only within `[not_before, not_after)`. A
    /// withdrawal repeats the window of the key it withdraws.
    pub not_before: i64,
    pub not_after: i64,
    /// When the statement was made, Unix seconds.
    pub issued_at: i64,
}

/// Why a statement was refused. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("the statement is {0} bytes; at most {MAX_STATEMENT_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the statement's JWS `typ` is `{0}`, not `{STATEMENT_TYP}`")]
    WrongType(String),
    #[error("statement: {0}")]
    Signature(TokenError),
    #[error(
        "the statement is signed by `{key_org}` but speaks for `{statement_org}`: an organization signs only its own keys"
    )]
    OtherOrganization { statement_org: String, key_org: String },
    #[error("unknown HPKE suite `{0}`; this version knows: {known}", known = SUITES.join("; "))]
    UnknownSuite(String),
    #[error("the public key is not an X25519 key: {0}")]
    BadKey(String),
    #[error("the key id is `{got}`, but the key's id is `{expected}`")]
    WrongKeyId { got: String, expected: String },
    #[error("the validity window is wrong: {0}")]
    BadWindow(String),
    #[error("the statement's window ended at {not_after} (now {now}): make a new key (`haven-node keys rotate`)")]
    Expired { not_after: i64, now: i64 },
    #[error("the statement was issued at {issued_at}, too far from now ({now}); check the node's clock")]
    IssuedAt { issued_at: i64, now: i64 },
}

impl StatementError {
    /// A stable code, for refusals an operator or a test can match.
    pub fn code(&self) -> &'static str {
        match self {
            StatementError::TooLarge(_) => "statement_too_large",
            StatementError::WrongType(_) => "statement_wrong_type",
            StatementError::Signature(_) => "statement_bad_signature",
            StatementError::OtherOrganization { .. } => "statement_other_organization",
            StatementError::UnknownSuite(_) => "unknown_suite",
            StatementError::BadKey(_) => "statement_bad_key",
            StatementError::WrongKeyId { .. } => "statement_wrong_key_id",
            StatementError::BadWindow(_) => "statement_bad_window",
            StatementError::Expired { .. } => "statement_expired",
            StatementError::IssuedAt { .. } => "statement_issued_at",
        }
    }
}

/// The id of an X25519 public key: `x25519:` and the hex of the first 16 bytes of its SHA-256.
pub fn key_id(public_key: &[u8; 32]) -> String {
    format!("x25519:{}", hex::encode(&Sha256::digest(public_key)[..16]))
}

/// The SHA-256 of a whole statement (its JWS bytes): what the key log commits to.
pub fn statement_sha256(jws: &str) -> [u8; 32] {
    Sha256::digest(jws.as_bytes()).into()
}

impl SealingKeyStatement {
    /// A statement publishing `public_key` for `org`, valid `[not_before, not_after)`, made at `now`.
    pub fn publish(org: OrgId, public_key: &[u8; 32], not_before: i64, not_after: i64, now: i64) -> Self {
        SealingKeyStatement {
            org,
            action: StatementAction::Publish,
            kid: key_id(public_key),
            suite: SUITE_X25519_CHACHA20.to_owned(),
            public_key: URL_SAFE_NO_PAD.encode(public_key),
            not_before,
            not_after,
            issued_at: now,
        }
    }

    /// The statement withdrawing the key `published` published, made at `now`.
    pub fn withdrawal(published: &SealingKeyStatement, now: i64) -> Self {
        SealingKeyStatement { action: StatementAction::Withdraw, issued_at: now, ..published.clone() }
    }

    /// The public key's bytes.
    pub fn key_bytes(&self) -> Result<[u8; 32], StatementError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.public_key)
            .map_err(|e| StatementError::BadKey(format!("not base64url without padding: {e}")))?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| StatementError::BadKey(format!("{} bytes, not 32", b.len())))?;
        if key == [0u8; 32] {
            return Err(StatementError::BadKey("the all-zero key".into()));
        }
        Ok(key)
    }

    /// The checks that need no database, at `now` (Unix seconds): a known suite, a real key named by
    /// its id, a window of at most [`MAX_WINDOW_SECS`] that has not ended, and an `issued_at` near now.
    pub fn check(&self, now: i64) -> Result<(), StatementError> {
        self.check_shape()?;
        if self.action == StatementAction::Publish && self.not_after <= now {
            return Err(StatementError::Expired { not_after: self.not_after, now });
        }
        if self.issued_at.abs_diff(now) > ISSUED_AT_SKEW_SECS.unsigned_abs() {
            return Err(StatementError::IssuedAt { issued_at: self.issued_at, now });
        }
        Ok(())
    }

    /// The checks that hold whenever the statement is read: a known suite, a real key named by its id
    /// and a well-formed window (a reader of the log checks statements registered long ago).
    pub fn check_shape(&self) -> Result<(), StatementError> {
        if !SUITES.contains(&self.suite.as_str()) {
            return Err(StatementError::UnknownSuite(crate::untrusted::shown(&self.suite)));
        }
        let key = self.key_bytes()?;
        let expected = key_id(&key);
        if self.kid != expected {
            return Err(StatementError::WrongKeyId { got: crate::untrusted::shown(&self.kid), expected });
        }
        if self.not_after <= self.not_before {
            return Err(StatementError::BadWindow("`not_after` must be after `not_before`".into()));
        }
        if self.not_after.saturating_sub(self.not_before) > MAX_WINDOW_SECS {
            return Err(StatementError::BadWindow(format!(
                "{} days long; at most {} are allowed",
                self.not_after.saturating_sub(self.not_before) / 86_400,
                MAX_WINDOW_SECS / 86_400
            )));
        }
        Ok(())
    }

    /// Whether a sender may seal to this key at `now`: a publication within its window.
    pub fn usable_at(&self, now: i64) -> bool {
        self.action == StatementAction::Publish && self.not_before <= now && now < self.not_after
    }
}

/// The keys a sender may seal to at `now`, from one organization's statements in log order: each
/// publication within its window that no statement withdraws, newest first. The gateway, the nodes and
/// the tools all choose keys this way.
pub fn usable_keys(statements: Vec<SealingKeyStatement>, now: i64) -> Vec<SealingKeyStatement> {
    let withdrawn: std::collections::HashSet<String> =
        statements.iter().filter(|s| s.action == StatementAction::Withdraw).map(|s| s.kid.clone()).collect();
    statements.into_iter().rev().filter(|s| s.usable_at(now) && !withdrawn.contains(&s.kid)).collect()
}

/// The payload of a statement verified before (one a node signed, or stored after verifying it), read
/// without checking its signature again. `None` for bytes that are not a statement.
pub fn verified_payload(jws: &str) -> Option<SealingKeyStatement> {
    let bytes = URL_SAFE_NO_PAD.decode(jws.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Verifies a statement as a node reads it from the key log, trusting the network CA (`ca`, DER) and
/// not the gateway's registry: its `typ`, its signature with the certificate in its `x5c`, that the CA
/// issued that certificate, that the certificate's URI SAN names the statement's organization, and
/// [`SealingKeyStatement::check_shape`]. Returns the statement, the SHA-256 of the JWS and the signing
/// certificate's fingerprint.
pub fn verify_statement_by_ca(
    jws: &str,
    ca: &[u8],
) -> Result<(SealingKeyStatement, [u8; 32], crate::registry::Fingerprint), StatementError> {
    if jws.len() > MAX_STATEMENT_BYTES {
        return Err(StatementError::TooLarge(jws.len()));
    }
    check_typ(jws)?;
    let garbled = |e: String| StatementError::Signature(TokenError::Garbled(e));
    let (statement, info) = token::verify_by_ca::<SealingKeyStatement>(jws, ca).map_err(StatementError::Signature)?;
    let cert_org = info.org().map_err(garbled)?;
    if info.not_after < statement.issued_at {
        return Err(garbled(format!(
            "the signing certificate expired (at {}) before the statement was made",
            info.not_after
        )));
    }
    if cert_org != statement.org {
        return Err(StatementError::OtherOrganization {
            statement_org: statement.org.to_string(),
            key_org: cert_org.to_string(),
        });
    }
    statement.check_shape()?;
    Ok((statement, statement_sha256(jws), info.fingerprint))
}

fn check_typ(jws: &str) -> Result<(), StatementError> {
    match token::typ_of(jws) {
        Some(t) if t == STATEMENT_TYP => Ok(()),
        Some(t) => Err(StatementError::WrongType(crate::untrusted::shown(&t))),
        None => Err(StatementError::Signature(TokenError::Garbled("not a compact JWS with a `typ` header".into()))),
    }
}

/// Verifies a statement against the registry's signing pins at `now`: its size, its `typ`, its
/// signature, that it speaks for the organization that signed it, and [`SealingKeyStatement::check`].
/// Returns the statement and the SHA-256 of the whole JWS.
pub fn verify_statement(
    jws: &str,
    registry: &Registry,
    now: i64,
) -> Result<(SealingKeyStatement, [u8; 32]), StatementError> {
    if jws.len() > MAX_STATEMENT_BYTES {
        return Err(StatementError::TooLarge(jws.len()));
    }
    check_typ(jws)?;
    let (statement, key_org, _) =
        token::verify_signed::<SealingKeyStatement>(jws, registry).map_err(StatementError::Signature)?;
    if statement.org != key_org {
        return Err(StatementError::OtherOrganization {
            statement_org: statement.org.to_string(),
            key_org: key_org.to_string(),
        });
    }
    statement.check(now)?;
    Ok((statement, statement_sha256(jws)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    fn statement() -> SealingKeyStatement {
        SealingKeyStatement::publish(org("harbor"), &[7u8; 32], NOW, NOW + 365 * 86_400, NOW)
    }

    #[test]
    fn a_fresh_statement_passes_and_names_its_key() {
        let s = statement();
        assert_eq!(s.check(NOW), Ok(()));
        assert_eq!(s.kid, key_id(&[7u8; 32]));
        assert!(s.kid.starts_with("x25519:") && s.kid.len() == 7 + 32);
        assert!(s.usable_at(NOW) && !s.usable_at(NOW - 1) && !s.usable_at(NOW + 365 * 86_400));
        let w = SealingKeyStatement::withdrawal(&s, NOW + 10);
        assert_eq!((w.action, w.kid.as_str()), (StatementAction::Withdraw, s.kid.as_str()));
        assert!(!w.usable_at(NOW + 20), "a withdrawal is never a key to seal to");
    }

    #[test]
    fn each_bad_statement_is_refused_with_its_reason() {
        let cases: Vec<(SealingKeyStatement, &str)> = vec![
            (SealingKeyStatement { suite: "DHKEM(P-256)".into(), ..statement() }, "unknown_suite"),
            (SealingKeyStatement { public_key: "not base64!".into(), ..statement() }, "statement_bad_key"),
            (SealingKeyStatement { public_key: URL_SAFE_NO_PAD.encode([1u8; 31]), ..statement() }, "statement_bad_key"),
            (
                SealingKeyStatement {
                    public_key: URL_SAFE_NO_PAD.encode([0u8; 32]),
                    kid: key_id(&[0u8; 32]),
                    ..statement()
                },
                "statement_bad_key",
            ),
            (SealingKeyStatement { kid: key_id(&[8u8; 32]), ..statement() }, "statement_wrong_key_id"),
            (SealingKeyStatement { not_after: NOW, ..statement() }, "statement_bad_window"),
            (SealingKeyStatement { not_after: NOW + 900 * 86_400, ..statement() }, "statement_bad_window"),
            (
                SealingKeyStatement { not_before: NOW - 400 * 86_400, not_after: NOW - 1, ..statement() },
                "statement_expired",
            ),
            (SealingKeyStatement { issued_at: NOW + 3600, ..statement() }, "statement_issued_at"),
        ];
        for (s, code) in cases {
            let err = s.check(NOW).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn the_usable_keys_are_the_live_publications_not_withdrawn_newest_first() {
        let old = statement();
        let new = SealingKeyStatement::publish(org("harbor"), &[9u8; 32], NOW, NOW + 365 * 86_400, NOW);
        let expired = SealingKeyStatement::publish(org("harbor"), &[3u8; 32], NOW - 400 * 86_400, NOW - 1, NOW);
        let log = vec![expired, old.clone(), new.clone()];
        assert_eq!(usable_keys(log.clone(), NOW), [new.clone(), old.clone()]);
        let withdrawn = [log, vec![SealingKeyStatement::withdrawal(&new, NOW)]].concat();
        assert_eq!(usable_keys(withdrawn, NOW), [old]);
    }

    #[test]
    fn the_statement_hash_covers_the_whole_jws() {
        assert_ne!(statement_sha256("a.b.c"), statement_sha256("a.b.d"));
        assert_eq!(statement_sha256("a.b.c"), <[u8; 32]>::from(Sha256::digest(b"a.b.c")));
    }
}
