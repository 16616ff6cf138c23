//! The console's second factor: time-based one-time passwords (RFC 6238) as authenticator apps make
//! them (HMAC-SHA1, 30-second steps, 6 digits), and one-time recovery codes.
//!
//! - A person enrolls from the console: the node makes a 160-bit secret, shows it as a QR code and as
//!   base32 text, and keeps it only once the person has typed a code it makes. Enrolling also makes ten
//!   recovery codes, shown once; only their SHA-256 is kept, and each works once.
//! - A code is accepted for the step it names and one step either side (clocks drift), and never for a
//!   step at or before the last one accepted for that person, so a code seen over a shoulder cannot be
//!   replayed.
//! - The roles that see the most (privacy officer, auditor, admin) must enroll before the console lets
//!   them do anything else ([`required`]); for the others it is optional.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use sqlx::Row;

use haven_trust::clock::SharedClock;
use haven_trust::ids::{PersonId, Role};

use crate::store::NodeStore;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Recovery codes made at enrollment.
pub const RECOVERY_CODES: usize = 10;

/// Whether `role` must have a second factor to use the console.
pub fn required(role: Role) -> bool {
    matches!(role, Role::PrivacyOfficer | Role::Auditor | Role::Admin)
}

/// A new secret: 160 random bits, as RFC 4226 recommends.
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; 20];
    rand::rng().fill_bytes(&mut s);
    s
}

/// The code for `secret` at time step `step` (RFC 4226's HOTP with the step as the counter).
pub fn code_at_step(secret: &[u8], step: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else { return String::new() };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let bin = (u32::from(digest[offset]) & 0x7f) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    format!("{:0width$}", bin % 10u32.pow(DIGITS), width = DIGITS as usize)
}

/// The code for `secret` at Unix time `secs`.
pub fn code(secret: &[u8], secs: i64) -> String {
    code_at_step(secret, secs.div_euclid(STEP_SECS))
}

/// RFC 4648 base32, without padding: how authenticator apps take a secret.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(char::from(ALPHABET[((buffer >> (bits - 5)) & 31) as usize]));
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The `otpauth://` URI an authenticator app reads from the QR code.
pub fn otpauth_uri(org: &str, person: &PersonId, secret: &[u8]) -> String {
    let label = format!("Haven {org}:{person}");
    let encode = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        encode(&label),
        base32(secret),
        encode(&format!("Haven {org}"))
    )
}

/// The QR code of `text`, as an SVG document.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(code.render::<qrcode::render::svg::Color>().min_dimensions(220, 220).quiet_zone(true).build())
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.trim().to_ascii_lowercase().replace(['-', ' '], "").as_bytes()))
}

/// A person's second factor, in the node's database.
#[derive(Clone)]
pub struct SecondFactor {
    store: NodeStore,
    clock: SharedClock,
}

/// What a code was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// A current code (or one step either side) not used before.
    Accepted,
    /// A recovery code, now used up.
    Recovered,
    Refused,
}

impl SecondFactor {
    pub fn new(store: NodeStore, clock: SharedClock) -> SecondFactor {
        SecondFactor { store, clock }
    }

    /// Whether `person` has enrolled.
    pub async fn enrolled(&self, person: &PersonId) -> Result<bool, sqlx::Error> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM person_totp WHERE person = $1 AND enrolled_at_micros IS NOT NULL")
                .bind(person.as_str())
                .fetch_one(self.store.pool())
                .await?;
        Ok(n > 0)
    }

    /// Starts an enrollment: a new secret, kept aside until [`SecondFactor::confirm`]. An earlier
    /// enrollment stays in force until then.
    pub async fn begin(&self, person: &PersonId) -> Result<Vec<u8>, sqlx::Error> {
        let secret = new_secret();
        sqlx::query("INSERT INTO person_totp (person, pending_secret) VALUES ($1, $2) ON CONFLICT (person) DO UPDATE SET pending_secret = excluded.pending_secret")
            .bind(person.as_str())
            .bind(&secret)
            .execute(self.store.pool())
            .await?;
        Ok(secret)
    }

    /// The secret being enrolled, if any.
    pub async fn pending(&self, person: &PersonId) -> Result<Option<Vec<u8>>, sqlx::Error> {
        let row = sqlx::query("SELECT pending_secret FROM person_totp WHERE person = $1")
            .bind(person.as_str())
            .fetch_optional(self.store.pool())
            .await?;
        Ok(row.and_then(|r| r.try_get::<Option<Vec<u8>>, _>(0).ok().flatten()))
    }

    /// Finishes an enrollment when `code` is right for the pending secret: the secret is in force, and
    /// the new recovery codes (returned, shown once) replace any earlier ones.
    pub async fn confirm(&self, person: &PersonId, code: &str) -> Result<Option<Vec<String>>, sqlx::Error> {
        let Some(secret) = self.pending(person).await? else { return Ok(None) };
        let Some(step) = self.matching_step(&secret, code, i64::MIN) else { return Ok(None) };
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        let mut tx = self.store.pool().begin().await?;
        sqlx::query("UPDATE person_totp SET secret = pending_secret, pending_secret = NULL, enrolled_at_micros = $1, last_step = $2 WHERE person = $3")
            .bind(self.clock.now_micros())
            .bind(step)
            .bind(person.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM person_recovery_code WHERE person = $1")
            .bind(person.as_str())
            .execute(&mut *tx)
            .await?;
        for c in &codes {
            sqlx::query("INSERT INTO person_recovery_code (code_sha256, person) VALUES ($1, $2)")
                .bind(sha256_hex(c))
                .bind(person.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(codes))
    }

    /// Enrolls `person` with `secret` at once, without a code (for the demo, which prints the secret).
    pub async fn enroll_directly(&self, person: &PersonId, secret: &[u8]) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO person_totp (person, secret, enrolled_at_micros, last_step) VALUES ($1, $2, $3, $4) ON CONFLICT (person) DO UPDATE SET secret = excluded.secret, enrolled_at_micros = excluded.enrolled_at_micros, last_step = excluded.last_step, pending_secret = NULL")
            .bind(person.as_str())
            .bind(secret)
            .bind(self.clock.now_micros())
            .bind(i64::MIN)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Checks a code at sign-in: a current code not used before, or an unused recovery code.
    pub async fn check(&self, person: &PersonId, code: &str) -> Result<Checked, sqlx::Error> {
        let row = sqlx::query(
            "SELECT secret, last_step FROM person_totp WHERE person = $1 AND enrolled_at_micros IS NOT NULL",
        )
        .bind(person.as_str())
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else { return Ok(Checked::Refused) };
        let secret: Vec<u8> = row.try_get(0)?;
        let last: i64 = row.try_get(1)?;
        if let Some(step) = self.matching_step(&secret, code, last) {
            // Only the first of two concurrent uses of one code moves the step.
            let moved = sqlx::query("UPDATE person_totp SET last_step = $1 WHERE person = $2 AND last_step < $1")
                .bind(step)
                .bind(person.as_str())
                .execute(self.store.pool())
                .await?;
            return Ok(if moved.rows_affected() == 1 { Checked::Accepted } else { Checked::Refused });
        }
        let used = sqlx::query("UPDATE person_recovery_code SET used_at_micros = $1 WHERE code_sha256 = $2 AND person = $3 AND used_at_micros IS NULL")
            .bind(self.clock.now_micros())
            .bind(sha256_hex(code))
            .bind(person.as_str())
            .execute(self.store.pool())
            .await?;
        Ok(if used.rows_affected() == 1 { Checked::Recovered } else { Checked::Refused })
    }

    /// Removes `person`'s second factor (a lost phone) and ends their console sessions: they enroll
    /// again at their next sign-in.
    pub async fn reset(&self, person: &PersonId) -> Result<bool, sqlx::Error> {
        let mut tx = self.store.pool().begin().await?;
        let gone =
            sqlx::query("DELETE FROM person_totp WHERE person = $1").bind(person.as_str()).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM person_recovery_code WHERE person = $1")
            .bind(person.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE console_session SET ended_at_micros = $1 WHERE person = $2 AND ended_at_micros IS NULL")
            .bind(self.clock.now_micros())
            .bind(person.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone.rows_affected() > 0)
    }

    /// The step `code` is right for (this step or one either side), if it is after `after`.
    fn matching_step(&self, secret: &[u8], code: &str, after: i64) -> Option<i64> {
        let code = code.trim().replace(' ', "");
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = self.clock.now_secs().div_euclid(STEP_SECS);
        [now - 1, now, now + 1].into_iter().filter(|s| *s > after).find(|s| {
            let want = code_at_step(secret, *s);
            crate::console::session::same_secret(&want, &code)
        })
    }
}

/// A recovery code: 10 random base32 characters, shown in two groups of five.
fn recovery_code() -> String {
    let mut b = [0u8; 7];
    rand::rng().fill_bytes(&mut b);
    let s = base32(&b).to_ascii_lowercase();
    format!("{}-{}", &s[..5], &s[5..10])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B, SHA-1 rows (8 digits there; the last 6 here).
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (secs, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code(secret, secs), eight[2..], "at {secs}");
        }
    }

    #[test]
    fn base32_is_rfc_4648_without_padding() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"12345678901234567890"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn the_roles_that_see_the_most_must_enroll() {
        assert!(required(Role::PrivacyOfficer) && required(Role::Auditor) && required(Role::Admin));
        assert!(!required(Role::Caseworker) && !required(Role::Liaison));
    }
}
