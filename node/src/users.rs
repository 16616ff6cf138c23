//! The users file of earlier versions: the organization's people, each with a role and the SHA-256
//! of their node token. People now live in the node's database ([`crate::people`]); a node imports
//! this file once, on its first start with a database that holds nobody, and never reads it again.
//! It stays readable and writable so that an older node's file can be imported, and so that tests and
//! the demo can prepare people before a node first starts.

use std::path::Path;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use haven_trust::ids::{PersonId, Role};
use haven_trust::source::{Located, SourceFile};

/// Mints a node token: 256 random bits, URL-safe base64, prefixed `hvn_` so it is recognisable in a
/// leaked file or log.
pub fn mint_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("hvn_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The hex SHA-256 of a token: what the node keeps of it, in the users file and in its database.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One person in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: PersonId,
    pub role: Role,
    /// Hex SHA-256 of the person's token.
    pub token_sha256: String,
    /// A disabled person is imported disabled, with their token revoked.
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
        f.write_all(b"# Haven node users: token hashes only. A node imports this file once, into a database that holds nobody.\n")?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    }

    /// Adds (or replaces) a person and returns their new token.
    pub fn add(&mut self, name: PersonId, role: Role) -> String {
        let token = mint_token();
        self.user.retain(|u| u.name != name);
        self.user.push(User { name, role, token_sha256: token_sha256(&token), disabled: false });
        token
    }

    /// Removes a person from the file.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(name: &str) -> PersonId {
        PersonId::parse(name).unwrap()
    }

    #[test]
    fn the_file_keeps_only_token_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::default();
        let t = users.add(person("casey"), Role::Caseworker);
        assert_eq!(users.set_disabled(&person("casey"), true), Some(true));
        assert_eq!(users.set_disabled(&person("nobody"), true), None);
        users.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t), "the file must never hold the token");
        assert!(text.contains(&token_sha256(&t)));
        assert_eq!(Users::load(&path).unwrap(), users);
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
