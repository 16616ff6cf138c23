//! Console sessions, kept server-side in the node's database, and the checks every request passes:
//! the session cookie, the CSRF token of every state-changing form, and the `Origin` check.
//!
//! - A session id is 256 random bits, made at sign-in; only its SHA-256 is stored.
//! - A session ends after [`IDLE`] without a request, after [`LIFETIME`] in all, when its person signs
//!   out, and at once when its person is disabled, removed or given another role (every request
//!   checks the person's row, not a copy).
//! - The cookie is `HttpOnly` and `SameSite=Strict`; when the console's public origin is HTTPS it is
//!   also `Secure` and named with the `__Host-` prefix.

use std::net::{IpAddr, SocketAddr};

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::watch;

use haven_trust::clock::SharedClock;
use haven_trust::ids::{PersonId, Role};

use crate::people::Person;
use crate::store::NodeStore;

/// A session ends after this long without a request (the live-update stream does not count).
pub const IDLE_MICROS: i64 = 15 * 60 * 1_000_000;
/// A session ends this long after sign-in, however busy.
pub const LIFETIME_MICROS: i64 = 8 * 3600 * 1_000_000;
/// Failed sign-ins are counted over this window.
pub const FAILURE_WINDOW_MICROS: i64 = 15 * 60 * 1_000_000;
/// After this many failures for one name within the window, that name waits until the oldest of them
/// leaves the window.
pub const FAILURES_PER_NAME: i64 = 5;
/// After this many failures from one address within the window, that address waits the same way.
pub const FAILURES_PER_ADDRESS: i64 = 30;

/// 256 random bits, base64url.
pub fn random_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a session may wait between the password and the second factor.
pub const SECOND_STEP_MICROS: i64 = 5 * 60 * 1_000_000;

/// How far a session has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The password was right; the second factor (its code, or its enrollment) is still to come.
    Password,
    /// Signed in.
    Full,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Password => "password",
            Stage::Full => "full",
        }
    }
}

/// A live session: who, how far it has got, and the token its forms carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub person: Person,
    pub csrf: String,
    pub stage: Stage,
    id_sha256: String,
}

/// Why a session cookie does not sign anyone in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No such session (never made, or removed with its person).
    Unknown,
    SignedOut,
    Idle,
    TooOld,
    /// The person was disabled or given another role since signing in.
    PersonChanged,
}

/// The console's sessions, in the node's database.
#[derive(Clone)]
pub struct Sessions {
    store: NodeStore,
    clock: SharedClock,
    /// Bumped whenever a session ends here, so live-update streams re-check theirs at once.
    ended: std::sync::Arc<watch::Sender<u64>>,
}

impl Sessions {
    pub fn new(store: NodeStore, clock: SharedClock) -> Sessions {
        Sessions { store, clock, ended: std::sync::Arc::new(watch::channel(0).0) }
    }

    /// Starts a session for `person` at `stage`; returns the cookie value (the session id) and the
    /// session.
    pub async fn start(&self, person: &Person, stage: Stage) -> Result<(String, Session), sqlx::Error> {
        let id = random_token();
        let session = Session { person: person.clone(), csrf: random_token(), stage, id_sha256: sha256_hex(&id) };
        let now = self.clock.now_micros();
        sqlx::query("INSERT INTO console_session (id_sha256, person, role, csrf, created_at_micros, last_seen_micros, stage) VALUES ($1, $2, $3, $4, $5, $5, $6)")
            .bind(&session.id_sha256)
            .bind(person.name.as_str())
            .bind(person.role.as_str())
            .bind(&session.csrf)
            .bind(now)
            .bind(stage.as_str())
            .execute(self.store.pool())
            .await?;
        Ok((id, session))
    }

    /// Completes a session's sign-in: a new session, fully signed in, with a new id (so an id seen
    /// before the second factor is worth nothing after it); the old one ends.
    pub async fn promote(&self, session: &Session) -> Result<(String, Session), sqlx::Error> {
        let started = self.start(&session.person, Stage::Full).await?;
        self.end(session).await?;
        Ok(started)
    }

    /// The live session a cookie value names. `touch` counts this request as activity (the idle
    /// timeout starts again); the live-update stream checks without touching.
    pub async fn find(&self, id: &str, touch: bool) -> Result<Result<Session, Ended>, sqlx::Error> {
        let id_sha256 = sha256_hex(id);
        let row = sqlx::query("SELECT s.person, s.role, s.csrf, s.created_at_micros, s.last_seen_micros, s.ended_at_micros, s.stage, p.role AS now_role, p.disabled FROM console_session s JOIN person p ON p.name = s.person WHERE s.id_sha256 = $1")
            .bind(&id_sha256)
            .fetch_optional(self.store.pool())
            .await?;
        let Some(row) = row else { return Ok(Err(Ended::Unknown)) };
        let now = self.clock.now_micros();
        let role: String = row.try_get("role")?;
        let now_role: String = row.try_get("now_role")?;
        let disabled: i64 = row.try_get("disabled")?;
        let ended: Option<i64> = row.try_get("ended_at_micros")?;
        let created: i64 = row.try_get("created_at_micros")?;
        let last_seen: i64 = row.try_get("last_seen_micros")?;
        let stage = if row.try_get::<String, _>("stage")? == "full" { Stage::Full } else { Stage::Password };
        let verdict = if ended.is_some() {
            Err(Ended::SignedOut)
        } else if role != now_role || disabled != 0 {
            Err(Ended::PersonChanged)
        } else if now.saturating_sub(created) > LIFETIME_MICROS {
            Err(Ended::TooOld)
        } else if now.saturating_sub(last_seen) > IDLE_MICROS
            || (stage == Stage::Password && now.saturating_sub(created) > SECOND_STEP_MICROS)
        {
            Err(Ended::Idle)
        } else {
            let name: String = row.try_get("person")?;
            match (PersonId::parse(&name), Role::parse(&role)) {
                (Ok(name), Ok(role)) => Ok(Session {
                    person: Person { name, role },
                    csrf: row.try_get("csrf")?,
                    stage,
                    id_sha256: id_sha256.clone(),
                }),
                _ => Err(Ended::Unknown),
            }
        };
        if verdict.is_ok() && touch {
            sqlx::query(
                "UPDATE console_session SET last_seen_micros = $1 WHERE id_sha256 = $2 AND last_seen_micros < $1",
            )
            .bind(now)
            .bind(&id_sha256)
            .execute(self.store.pool())
            .await?;
        }
        Ok(verdict)
    }

    /// Ends a session on the server (signing out).
    pub async fn end(&self, session: &Session) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE console_session SET ended_at_micros = $1 WHERE id_sha256 = $2 AND ended_at_micros IS NULL")
            .bind(self.clock.now_micros())
            .bind(&session.id_sha256)
            .execute(self.store.pool())
            .await?;
        self.ended.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Changes whenever a session ends here.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.ended.subscribe()
    }
}

/// The origin people use to reach the console, and what follows from it.
#[derive(Debug, Clone)]
pub struct PublicOrigin {
    /// `scheme://host[:port]`, as a browser sends it in `Origin`.
    pub origin: String,
    /// Whether it is HTTPS: cookies are then `Secure` and `__Host-` prefixed.
    pub secure: bool,
    /// Whether the client's address is taken from `X-Forwarded-For` when the connection comes from a
    /// loopback address: true when the console serves plain HTTP behind a proxy that terminates TLS
    /// for an HTTPS public origin.
    pub behind_proxy: bool,
}

impl PublicOrigin {
    /// Parses `--console-public-origin`: `http(s)://host[:port]`, nothing after it.
    pub fn parse(value: &str, console_tls: bool) -> Result<PublicOrigin, String> {
        let value = value.trim_end_matches('/');
        let (secure, rest) = if let Some(rest) = value.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = value.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "--console-public-origin `{}` must start with https:// (or http:// for a loopback address)",
                haven_trust::untrusted::shown(value)
            ));
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "--console-public-origin `{}` must be scheme://host[:port], with no path, query or user",
                haven_trust::untrusted::shown(value)
            ));
        }
        Ok(PublicOrigin { origin: value.to_ascii_lowercase(), secure, behind_proxy: secure && !console_tls })
    }

    /// The origin of a console reached at `addr` itself (no `--console-public-origin`).
    pub fn of_listener(addr: SocketAddr, console_tls: bool) -> PublicOrigin {
        let scheme = if console_tls { "https" } else { "http" };
        PublicOrigin { origin: format!("{scheme}://{addr}"), secure: console_tls, behind_proxy: false }
    }

    /// The session cookie's name.
    pub fn session_cookie(&self) -> &'static str {
        if self.secure { "__Host-haven-session" } else { "haven-session" }
    }

    /// The sign-in form's token cookie's name.
    pub fn sign_in_cookie(&self) -> &'static str {
        if self.secure { "__Host-haven-sign-in" } else { "haven-sign-in" }
    }

    /// A `Set-Cookie` value for `name`, lasting `max_age` seconds (0 ends it).
    pub fn cookie(&self, name: &str, value: &str, max_age: Option<i64>) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        c
    }

    /// Whether a state-changing request comes from the console's own pages: its `Origin` is the
    /// public origin, or (where a browser sends `Origin: null` or none) `Sec-Fetch-Site` says
    /// same-origin.
    pub fn allows(&self, headers: &http::HeaderMap) -> bool {
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        match headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()) {
            Some("null") | None => fetch_site == Some("same-origin"),
            Some(origin) => origin.eq_ignore_ascii_case(&self.origin),
        }
    }

    /// The client's address: the peer's, or behind a trusted proxy on loopback, the last address the
    /// proxy added to `X-Forwarded-For`.
    pub fn client(&self, peer: SocketAddr, headers: &http::HeaderMap) -> IpAddr {
        if self.behind_proxy && peer.ip().is_loopback() {
            // The proxy appends the address it saw; what comes before it, the client could have sent.
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|a| a.trim().parse::<IpAddr>().ok());
            if let Some(a) = forwarded {
                return a;
            }
        }
        peer.ip()
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_origin_check_takes_the_console_origin_or_a_same_origin_fetch_only() {
        let o = PublicOrigin::parse("https://haven.example.org", false).unwrap();
        assert!(o.allows(&headers(&[("origin", "https://haven.example.org")])));
        assert!(!o.allows(&headers(&[("origin", "https://evil.example.net")])));
        assert!(!o.allows(&headers(&[("origin", "http://haven.example.org")])), "another scheme is another origin");
        assert!(o.allows(&headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")])));
        assert!(!o.allows(&headers(&[("origin", "null"), ("sec-fetch-site", "cross-site")])));
        assert!(!o.allows(&headers(&[("origin", "null")])));
        assert!(!o.allows(&headers(&[])), "no origin and no fetch metadata: not a browser form of this console");
    }

    #[test]
    fn a_public_origin_is_a_scheme_and_a_host_only() {
        assert!(PublicOrigin::parse("ftp://haven.example.org", false).is_err());
        assert!(PublicOrigin::parse("https://haven.example.org/console", false).is_err());
        assert!(PublicOrigin::parse("https://user@haven.example.org", false).is_err());
        let o = PublicOrigin::parse("https://Haven.Example.org/", false).unwrap();
        assert_eq!(o.origin, "https://haven.example.org");
        assert!(o.secure && o.behind_proxy);
        assert_eq!(o.session_cookie(), "__Host-haven-session");
        assert!(o.cookie("a", "b", None).contains("; Secure"));
        let plain = PublicOrigin::of_listener("127.0.0.1:7680".parse().unwrap(), false);
        assert_eq!(plain.origin, "http://127.0.0.1:7680");
        assert!(!plain.cookie("a", "b", None).contains("Secure"));
    }

    #[test]
    fn forwarded_addresses_count_only_from_a_loopback_proxy_of_an_https_origin() {
        let proxied = PublicOrigin::parse("https://haven.example.org", false).unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7")]);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(proxied.client(local, &h), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(proxied.client(remote, &h), remote.ip(), "only a proxy on this machine is trusted");
        let direct = PublicOrigin::parse("https://haven.example.org", true).unwrap();
        assert_eq!(direct.client(local, &h), local.ip(), "a console serving TLS itself has no proxy");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "haven-session-x=1; haven-session=abc"), ("cookie", "other=2")]);
        assert_eq!(cookie(&h, "haven-session"), Some("abc"));
        assert_eq!(cookie(&h, "other"), Some("2"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
