//! Typed identifiers, parsed once at the edge so nothing downstream handles raw strings.
//!
//! An organization id appears in certificates (`haven://org/<id>`), in tokens, in the registry and in
//! policy rules. Every one of those paths goes through [`OrgId::parse`], so the same rules apply.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier was empty.
    #[error("{what} is empty")]
    Empty { what: &'static str },
    /// The identifier was longer than allowed.
    #[error("{what} `{value}` is longer than {max} characters")]
    TooLong { what: &'static str, value: String, max: usize },
    /// The identifier used a character outside `a-z 0-9 - _ .`.
    #[error("{what} `{value}` may only use lowercase letters, digits, `-`, `_` and `.`")]
    BadCharacter { what: &'static str, value: String },
    /// A role outside the fixed list.
    #[error("unknown person role `{0}` (known: {known})", known = Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "))]
    UnknownRole(String),
    /// A URI SAN that does not name an organization.
    #[error("`{0}` is not an organization URI (expected haven://org/<id>)")]
    NotOrgUri(String),
}

fn check_token(what: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > max {
        return Err(IdError::TooLong { what, value: crate::untrusted::shown(value), max });
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(IdError::BadCharacter { what, value: crate::untrusted::shown(value) });
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the identifier.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check_token($what, value, $max)?;
                Ok(Self(value.to_owned()))
            }

            /// The identifier as it appears on the wire and in the registry.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

token_id!(
    /// An organization in the network, as named by its certificate's URI SAN `haven://org/<id>`.
    OrgId, "organization id", 64
);
token_id!(
    /// What an organization is (`ngo`, `shelter`, `law_enforcement`, `operator`, ...). Policy rules
    /// may name types instead of single organizations.
    OrgType, "organization type", 64
);
token_id!(
    /// A person acting inside an organization, as named by the `sub` of their token. It is the
    /// organization's own account name, never a legal name.
    PersonId, "person id", 128
);

impl PersonId {
    /// The person a node acts as for its own delivery stream.
    pub fn node() -> Self {
        PersonId("node".to_owned())
    }
}

/// The prefix of an organization's URI SAN.
pub const ORG_URI_PREFIX: &str = "haven://org/";
/// The URI SAN of the gateway's TLS certificate.
pub const GATEWAY_URI: &str = "haven://gateway";

impl OrgId {
    /// Parses `haven://org/<id>`, the form the network CA writes into a certificate's URI SAN.
    pub fn from_uri(uri: &str) -> Result<Self, IdError> {
        let id = uri.strip_prefix(ORG_URI_PREFIX).ok_or_else(|| IdError::NotOrgUri(crate::untrusted::shown(uri)))?;
        Self::parse(id)
    }

    /// The URI SAN that names this organization.
    pub fn uri(&self) -> String {
        format!("{ORG_URI_PREFIX}{}", self.0)
    }
}

/// What a person may do inside their organization. The list is fixed by the network; the organization
/// *type* says what the organization is, the role says what the person is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Records consent, sends and answers referrals.
    Caseworker,
    /// Receives and acknowledges law-enforcement alerts.
    Liaison,
    /// Answers for the organization's data: sees its own audit entries and subject access reports.
    PrivacyOfficer,
    /// Reads the network's whole audit trail (in an organization of type `auditor`).
    Auditor,
    /// Operates the network (in the organization of type `operator`): reloads policy.
    Admin,
    /// The node process itself, for its delivery stream.
    Node,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 6] =
        [Role::Caseworker, Role::Liaison, Role::PrivacyOfficer, Role::Auditor, Role::Admin, Role::Node];

    /// The wire name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caseworker => "caseworker",
            Role::Liaison => "liaison",
            Role::PrivacyOfficer => "privacy_officer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| IdError::UnknownRole(crate::untrusted::shown(s)))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Role::parse(s)
    }
}

/// The authenticated caller of a gateway method: an organization proven by its certificate and a
/// person proven by a token that organization signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub org: OrgId,
    pub org_type: OrgType,
    pub person: PersonId,
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_uri_round_trips_and_rejects_other_schemes() {
        let id = OrgId::from_uri("haven://org/harbor-ngo").unwrap();
        assert_eq!(id.as_str(), "harbor-ngo");
        assert_eq!(id.uri(), "haven://org/harbor-ngo");
        assert!(matches!(OrgId::from_uri("https://org/x"), Err(IdError::NotOrgUri(_))));
        assert!(matches!(OrgId::from_uri("haven://org/"), Err(IdError::Empty { .. })));
        assert!(matches!(OrgId::from_uri("haven://org/Bad Org"), Err(IdError::BadCharacter { .. })));
    }

    #[test]
    fn roles_parse_only_from_the_fixed_list() {
        assert_eq!(Role::parse("privacy_officer").unwrap(), Role::PrivacyOfficer);
        let err = Role::parse("superuser").unwrap_err().to_string();
        assert!(err.contains("known: caseworker"), "{err}");
    }
}
