//! The node's users: the organization's own people, each with a role and a secret token.
//!
//! The users file holds only SHA-256 hashes of the tokens. Tokens are 256-bit random values, so a fast
//! hash is enough: there is nothing to brute-force. `haven-node users add` prints a new token once.

use std::path::Path;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// Reads a users file; a missing file is an error that names it.
    pub fn load(path: &Path) -> Result<Self, Located> {
        let users: Users = SourceFile::read(path)?.parse()?;
        Ok(users)
    }

    /// Writes the file with mode 0600.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(b"# Haven node users: token hashes only. Add people with `haven-node users add`.\n")?;
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
        self.user.push(User { name, role, token_sha256: hash(&token) });
        token
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
        self.authenticate(token).cloned().ok_or_else(|| {
            tonic::Status::unauthenticated(
                "unknown node token; ask your administrator for one (`haven-node users add`)",
            )
        })
    }

    /// The person a token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&User> {
        let h = hash(token);
        self.user.iter().find(|u| u.token_sha256 == h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_only_their_person() {
        let mut users = Users::default();
        let t = users.add(PersonId::parse("casey").unwrap(), Role::Caseworker);
        let u = users.authenticate(&t).unwrap();
        assert_eq!(u.role, Role::Caseworker);
        assert!(users.authenticate("hvn_wrong").is_none());
        assert!(!toml::to_string(&users).unwrap().contains(&t), "the file must never hold the token");
    }
}
