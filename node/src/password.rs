//! People's passwords: what a new password must be ([`Password`]), how it is kept (an argon2id hash,
//! as a PHC string, in the person's row), and [`Passwords::verify`], the one check that signs a person
//! in with their name and password.
//!
//! Hashing is slow on purpose, so it runs off the async runtime (`spawn_blocking`), and at most
//! [`CONCURRENT_HASHES`] hashes run at once in a process: a flood of sign-ins queues instead of
//! exhausting the CPU and memory. A name this node does not know, and a person without a password,
//! are checked against a fixed dummy hash with the same parameters, so they cost what a wrong
//! password costs and get the same error.

use std::io::BufRead;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use tokio::sync::Semaphore;

use haven_trust::ids::PersonId;

use crate::people::{People, PeopleError, Person};

/// The fewest characters a password may have: NIST SP 800-63B asks for at least 8, and more where a
/// password is the only factor, as it is here for most roles. A passphrase of three or four words
/// passes easily.
pub const MIN_CHARS: usize = 12;
/// The most characters a password may have: enough for any passphrase or password manager, and a
/// bound on what is hashed.
pub const MAX_CHARS: usize = 128;

/// argon2id memory cost, in KiB: 24 MiB, with [`T_COST`] 3 passes and [`P_COST`] 1 lane: above the
/// minimums OWASP's password storage guidance recommends (for example 19 MiB with 2 passes, or 12 MiB
/// with 3), and it costs 28 to 32 ms per hash in a release build on the 2-core machines the project is
/// tested on: slow for an attacker guessing offline, quick for a person signing in. With
/// [`CONCURRENT_HASHES`] at once, checking passwords holds at most 48 MiB.
pub const M_COST_KIB: u32 = 24 * 1024;
/// argon2id passes over memory (see [`M_COST_KIB`]).
pub const T_COST: u32 = 3;
/// argon2id lanes (see [`M_COST_KIB`]).
pub const P_COST: u32 = 1;
/// How many password hashes a process computes at once; the rest wait their turn. Two keeps a core
/// free for everything else the node does on a small machine.
pub const CONCURRENT_HASHES: usize = 2;

/// A password a person chose, of an allowed length. Its `Debug` never shows it.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRefused {
    /// Standard input ended before any line.
    #[error(
        "no password on standard input: give it there on one line, for example from a password manager (never as an argument, which other users of this machine can see)"
    )]
    Missing,
    /// The line was empty.
    #[error("the password is empty: give one of at least {MIN_CHARS} characters on standard input")]
    Empty,
    /// Fewer than [`MIN_CHARS`] characters.
    #[error(
        "the password is {0} characters long: give one of at least {MIN_CHARS} (a passphrase of a few words is easiest to remember)"
    )]
    TooShort(usize),
    /// More than [`MAX_CHARS`] characters.
    #[error("the password is {0} characters long: give one of at most {MAX_CHARS}")]
    TooLong(usize),
    /// Standard input could not be read, or was not UTF-8 text.
    #[error("cannot read the password from standard input: {0}")]
    Read(String),
}

impl Password {
    /// Checks a password's length (in characters, not bytes).
    pub fn parse(password: &str) -> Result<Password, PasswordRefused> {
        let chars = password.chars().count();
        if chars == 0 {
            return Err(PasswordRefused::Empty);
        }
        if chars < MIN_CHARS {
            return Err(PasswordRefused::TooShort(chars));
        }
        if chars > MAX_CHARS {
            return Err(PasswordRefused::TooLong(chars));
        }
        Ok(Password(password.to_owned()))
    }

    /// Reads one line (its line ending removed, nothing else) and checks it.
    pub fn read_line(input: &mut dyn BufRead) -> Result<Password, PasswordRefused> {
        let mut line = String::new();
        let read = input.read_line(&mut line).map_err(|e| PasswordRefused::Read(e.to_string()))?;
        if read == 0 {
            return Err(PasswordRefused::Missing);
        }
        let line = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
        Password::parse(line)
    }
}

/// Why a person could not be signed in with a password.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// A wrong password, a name this node does not know, or a person without a password: the same
    /// error after the same work, so a caller learns nothing about which names exist.
    #[error("wrong name or password")]
    Refused,
    /// The right password, of a person disabled on this node.
    #[error("person `{0}` is disabled on this node; ask your administrator")]
    Disabled(PersonId),
    /// The node's database could not be read.
    #[error(transparent)]
    People(#[from] PeopleError),
    /// The hashing itself failed (it did not run to an answer).
    #[error(transparent)]
    Hash(#[from] HashFailed),
}

/// Hashing a password failed; nothing was stored or checked.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashFailed(String);

/// Hashes and checks passwords for the people in one node's database, at most
/// [`CONCURRENT_HASHES`] (or the limit given) at once. Clones share the limit.
#[derive(Clone)]
pub struct Passwords {
    people: People,
    permits: Arc<Semaphore>,
}

impl Passwords {
    /// Checks passwords against `people`, [`CONCURRENT_HASHES`] at a time.
    pub fn new(people: People) -> Passwords {
        Passwords::with_limit(people, CONCURRENT_HASHES)
    }

    /// Checks passwords against `people`, `at_once` at a time (at least one).
    pub fn with_limit(people: People, at_once: usize) -> Passwords {
        Passwords { people, permits: Arc::new(Semaphore::new(at_once.max(1))) }
    }

    /// The argon2id hash of `password` with a new random salt, as a PHC string.
    pub async fn hash(&self, password: &Password) -> Result<String, HashFailed> {
        let password = password.0.clone();
        self.blocking(move || hash(&password)).await?
    }

    /// Sets `name`'s password.
    pub async fn set(&self, name: &PersonId, password: &Password) -> Result<(), SignInError> {
        let hash = self.hash(password).await?;
        Ok(self.people.set_password_hash(name, &hash).await?)
    }

    /// Signs a person in with their name and password. Every refusal but [`SignInError::Disabled`]
    /// (given only to someone who knows the password) is [`SignInError::Refused`], after one hash.
    pub async fn verify(&self, name: &str, password: &str) -> Result<Person, SignInError> {
        let credentials = match PersonId::parse(name) {
            Ok(name) => self.people.credentials(&name).await?,
            Err(_) => None,
        };
        let (stored, credentials) = match credentials {
            Some(c) => (c.password_hash.clone(), Some(c)),
            None => (None, None),
        };
        // A password longer than any that can be set cannot be right; it is checked against the dummy,
        // so even that costs what any other refusal does.
        let stored = stored.filter(|_| password.chars().count() <= MAX_CHARS);
        let password = if password.chars().count() <= MAX_CHARS { password.to_owned() } else { String::new() };
        let right = self
            .blocking(move || match stored {
                Some(phc) => matches(&phc, &password).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a stored password hash cannot be read; the person must be given a new password (`haven-node users passwd`)");
                    let _ = matches(&dummy(), &password);
                    false
                }),
                None => {
                    let _ = matches(&dummy(), &password);
                    false
                }
            })
            .await?;
        match credentials {
            Some(c) if right && c.disabled => Err(SignInError::Disabled(c.person.name)),
            Some(c) if right => Ok(c.person),
            _ => Err(SignInError::Refused),
        }
    }

    /// Runs `work` on the blocking pool once one of the limited permits is free.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashFailed> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashFailed("the hashing limit was closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| HashFailed(format!("the hashing task failed: {e}")))
    }
}

/// The hasher with this node's parameters.
fn argon2() -> Result<Argon2<'static>, HashFailed> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| HashFailed(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash(password: &str) -> Result<String, HashFailed> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashFailed(e.to_string()))?;
    let hash = argon2()?.hash_password(password.as_bytes(), &salt).map_err(|e| HashFailed(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` is the one hashed in `phc`. The parameters come from `phc` itself, so a hash
/// made with earlier parameters still checks; the comparison takes the same time wherever it differs.
fn matches(phc: &str, password: &str) -> Result<bool, HashFailed> {
    let parsed = PasswordHash::new(phc).map_err(|e| HashFailed(format!("not a PHC string: {e}")))?;
    match argon2()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(HashFailed(e.to_string())),
    }
}

/// A hash no password matches in practice (its output is all zero bytes), with this node's
/// parameters: checking a password against it costs what checking a real one does.
fn dummy() -> String {
    format!("$argon2id$v=19$m={M_COST_KIB},t={T_COST},p={P_COST}${}${}", "A".repeat(22), "A".repeat(43))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_counted_in_characters_and_refused_precisely() {
        assert_eq!(Password::parse("").unwrap_err(), PasswordRefused::Empty);
        assert_eq!(Password::parse("short").unwrap_err(), PasswordRefused::TooShort(5));
        assert_eq!(Password::parse(&"x".repeat(MAX_CHARS + 1)).unwrap_err(), PasswordRefused::TooLong(MAX_CHARS + 1));
        // Twelve characters, more bytes.
        assert!(Password::parse("ñandú-ñandú!").is_ok());
        let e = Password::parse("short").unwrap_err().to_string();
        assert_eq!(
            e,
            "the password is 5 characters long: give one of at least 12 (a passphrase of a few words is easiest to remember)"
        );
    }

    #[test]
    fn one_line_is_read_without_its_line_ending_and_nothing_else_is_trimmed() {
        let read = |s: &str| Password::read_line(&mut s.as_bytes()).map(|p| p.0);
        assert_eq!(read("maple tree house\n").unwrap(), "maple tree house");
        assert_eq!(read(" maple tree house \r\nsecond line\n").unwrap(), " maple tree house ");
        assert_eq!(read("maple tree house").unwrap(), "maple tree house", "no line ending at the end of input");
        assert_eq!(read("").unwrap_err(), PasswordRefused::Missing);
        assert_eq!(read("\n").unwrap_err(), PasswordRefused::Empty);
        assert!(!format!("{:?}", Password::parse("maple tree house").unwrap()).contains("maple"));
    }

    #[test]
    fn a_hash_is_argon2id_with_the_documented_parameters_and_checks_only_its_password() {
        let phc = hash("maple tree house").unwrap();
        assert!(phc.starts_with(&format!("$argon2id$v=19$m={M_COST_KIB},t={T_COST},p={P_COST}$")), "{phc}");
        assert!(matches(&phc, "maple tree house").unwrap());
        assert!(!matches(&phc, "maple tree housE").unwrap());
        assert_ne!(hash("maple tree house").unwrap(), phc, "a new salt each time");
    }

    /// The dummy an unknown name is checked against has the parameters of a real hash, so it costs the
    /// same, and it parses (an unparsable dummy would answer at once).
    #[test]
    fn the_dummy_hash_has_the_parameters_of_a_real_one() {
        let real = hash("maple tree house").unwrap();
        let params = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(&dummy()), params(&real));
        let dummy = dummy();
        let parsed = PasswordHash::new(&dummy).unwrap();
        assert_eq!(parsed.hash.unwrap().len(), PasswordHash::new(&real).unwrap().hash.unwrap().len());
        assert!(!matches(&dummy, "").unwrap());
    }
}
