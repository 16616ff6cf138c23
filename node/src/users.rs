//! The node's users: the organization's own people, each with a role and a secret token.
//!
//! The users file holds only SHA-256 hashes of the tokens. Tokens are 256-bit random values, so a fast
//! hash is enough: there is nothing to brute-force. `haven-node users add` prints a new token once; a
//! person can be removed or disabled (`disabled = true`), and a running node applies the file on SIGHUP
//! ([`Directory::reload`]): from then on a removed or disabled person's token is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use haven_trust::ids::{PersonId, Role};
use haven_trust::source::{Located, SourceFile};

/// One person allowed to use this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: PersonId,
    pub role: Role,
    /// Hex SHA-256 of the person's token.
    pub token_sha256: String,
    /// A disabled person keeps their entry (and token) but is refused until enabled again, for a
    /// leave of absence or while a lost device is looked into.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// The users file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    #[serde(default)]
    pub user: Vec<User>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Users {
    /// Reads a users file; a missing file is an error that names it, and so is a file that names one
    /// person twice or holds a token hash that is not 64 hex digits.
    pub fn load(path: &Path) -> Result<Self, Located> {
        let users: Users = SourceFile::read(path)?.parse()?;
        let whole_file = |message: String| Located { file: path.to_owned(), line: 0, col: 0, message };
        let mut seen = std::collections::HashSet::new();
        for u in &users.user {
            if !seen.insert(u.name.as_str()) {
                return Err(whole_file(format!("person `{}` is listed more than once", u.name)));
            }
            if u.token_sha256.len() != 64 || !u.token_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(whole_file(format!(
                    "person `{}`: token_sha256 must be 64 hex digits (give them a new token with `haven-node users add`)",
                    u.name
                )));
            }
        }
        Ok(users)
    }

    /// Writes the file with mode 0600.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(b"# Haven node users: token hashes only. Add people with `haven-node users add`; a running node applies changes on SIGHUP.\n")?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    }

    /// Adds (or replaces) a person and returns their new token.
    pub fn add(&mut self, name: PersonId, role: Role) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("hvn_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        self.user.retain(|u| u.name != name);
        self.user.push(User { name, role, token_sha256: hash(&token), disabled: false });
        token
    }

    /// Removes a person; their token stops working once the node reloads the file.
    pub fn remove(&mut self, name: &PersonId) -> Option<User> {
        let at = self.user.iter().position(|u| &u.name == name)?;
        Some(self.user.remove(at))
    }

    /// Disables or enables a person. Returns whether anything changed; `None` when no such person.
    pub fn set_disabled(&mut self, name: &PersonId, disabled: bool) -> Option<bool> {
        let u = self.user.iter_mut().find(|u| &u.name == name)?;
        let changed = u.disabled != disabled;
        u.disabled = disabled;
        Some(changed)
    }

    /// The person a token belongs to, disabled or not.
    pub fn authenticate(&self, token: &str) -> Option<&User> {
        let h = hash(token);
        self.user.iter().find(|u| u.token_sha256 == h)
    }

    /// The person signed in on a request, from `authorization: Bearer <node token>`; every Node and
    /// Audit method of the node starts here.
    pub fn sign_in(&self, metadata: &tonic::metadata::MetadataMap) -> Result<User, tonic::Status> {
        let raw = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| tonic::Status::unauthenticated("sign in: send `authorization: Bearer <your node token>`"))?;
        let token = raw
            .strip_prefix("Bearer ")
            .ok_or_else(|| tonic::Status::unauthenticated("authorization header must be `Bearer <your node token>`"))?;
        let user = self.authenticate(token).ok_or_else(|| {
            tonic::Status::unauthenticated(
                "unknown node token; ask your administrator for one (`haven-node users add`)",
            )
        })?;
        if user.disabled {
            return Err(tonic::Status::unauthenticated(format!(
                "person `{}` is disabled on this node; ask your administrator",
                user.name
            )));
        }
        Ok(user.clone())
    }

    /// What changed from `old` to `self`, one line per person, for the log of a reload.
    pub fn changes_from(&self, old: &Users) -> Vec<String> {
        let before: BTreeMap<&str, &User> = old.user.iter().map(|u| (u.name.as_str(), u)).collect();
        let after: BTreeMap<&str, &User> = self.user.iter().map(|u| (u.name.as_str(), u)).collect();
        let mut changes = Vec::new();
        for name in before.keys().filter(|name| !after.contains_key(*name)) {
            changes.push(format!("removed {name}"));
        }
        for (name, new) in &after {
            let Some(old) = before.get(name) else {
                let state = if new.disabled { ", disabled" } else { "" };
                changes.push(format!("added {name} ({}{state})", new.role));
                continue;
            };
            if old.role != new.role {
                changes.push(format!("{name}: role {} -> {}", old.role, new.role));
            }
            if old.token_sha256 != new.token_sha256 {
                changes.push(format!("{name}: new token (the old one is refused)"));
            }
            match (old.disabled, new.disabled) {
                (false, true) => changes.push(format!("disabled {name}")),
                (true, false) => changes.push(format!("enabled {name}")),
                _ => {}
            }
        }
        changes
    }
}

/// The users a running node signs people in against: read at start-up, and again from the same file
/// on SIGHUP. A reload that cannot read the file changes nothing.
pub struct Directory {
    path: PathBuf,
    current: RwLock<Arc<Users>>,
    /// Bumped by every reload that changed something, so a long call (an inbox watch) can check its
    /// person again.
    changed: watch::Sender<u64>,
}

impl Directory {
    /// Reads the users file at `path`.
    pub fn load(path: &Path) -> Result<Directory, Located> {
        let users = Users::load(path)?;
        Ok(Directory { path: path.to_owned(), current: RwLock::new(Arc::new(users)), changed: watch::channel(0).0 })
    }

    /// The file this directory reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users in force.
    pub fn current(&self) -> Arc<Users> {
        match self.current.read() {
            Ok(u) => u.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Signs a request's person in against the users in force ([`Users::sign_in`]).
    pub fn sign_in(&self, metadata: &tonic::metadata::MetadataMap) -> Result<User, tonic::Status> {
        self.current().sign_in(metadata)
    }

    /// Reads the file again and puts it in force at once; returns what changed. A file that cannot be
    /// read or parsed is refused and the users in force stay.
    pub fn reload(&self) -> Result<Vec<String>, Located> {
        let new = Users::load(&self.path)?;
        let changes = new.changes_from(&self.current());
        match self.current.write() {
            Ok(mut u) => *u = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        if !changes.is_empty() {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(changes)
    }

    /// Changes as they are put in force.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(name: &str) -> PersonId {
        PersonId::parse(name).unwrap()
    }

    fn bearer(token: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("authorization", format!("Bearer {token}").parse().unwrap());
        m
    }

    #[test]
    fn tokens_authenticate_only_their_person() {
        let mut users = Users::default();
        let t = users.add(person("casey"), Role::Caseworker);
        let u = users.authenticate(&t).unwrap();
        assert_eq!(u.role, Role::Caseworker);
        assert!(users.authenticate("hvn_wrong").is_none());
        assert!(!toml::to_string(&users).unwrap().contains(&t), "the file must never hold the token");
    }

    #[test]
    fn a_disabled_person_is_refused_until_enabled_and_keeps_their_token() {
        let mut users = Users::default();
        let t = users.add(person("casey"), Role::Caseworker);
        assert_eq!(users.set_disabled(&person("casey"), true), Some(true));
        let e = users.sign_in(&bearer(&t)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("disabled"), "{}", e.message());
        assert_eq!(users.set_disabled(&person("casey"), false), Some(true));
        assert_eq!(users.sign_in(&bearer(&t)).unwrap().name, person("casey"));
        assert_eq!(users.set_disabled(&person("nobody"), true), None);
    }

    #[test]
    fn a_reload_says_what_changed() {
        let mut old = Users::default();
        old.add(person("casey"), Role::Caseworker);
        old.add(person("sam"), Role::Caseworker);
        old.add(person("lee"), Role::Liaison);
        let mut new = old.clone();
        new.remove(&person("sam"));
        new.set_disabled(&person("lee"), true);
        new.add(person("casey"), Role::PrivacyOfficer);
        new.add(person("pat"), Role::Auditor);
        let changes = new.changes_from(&old);
        assert_eq!(
            changes,
            [
                "removed sam",
                "casey: role caseworker -> privacy_officer",
                "casey: new token (the old one is refused)",
                "disabled lee",
                "added pat (auditor)",
            ]
        );
    }

    #[test]
    fn a_file_naming_a_person_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let line =
            format!("[[user]]\nname = \"casey\"\nrole = \"caseworker\"\ntoken_sha256 = \"{}\"\n", "a".repeat(64));
        std::fs::write(&path, format!("{line}{line}")).unwrap();
        let e = Users::load(&path).unwrap_err();
        assert!(e.to_string().contains("`casey` is listed more than once"), "{e}");
    }
}
