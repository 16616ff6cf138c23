//! The organization registry: who is in the network, what type each organization is, and which
//! certificates it may present (pins).
//!
//! The committed `policies/orgs.toml` holds no pins, because development certificates are made on each
//! machine. `haven-certs init` writes `pins.toml`, which [`Registry::load`] merges in. In production the
//! operator writes the pins into `orgs.toml` itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{OrgId, OrgType};
use crate::source::{Located, SourceFile};

/// The SHA-256 of a certificate's DER encoding. Pins are compared on this value, so even a
/// certificate the CA signed is refused unless the registry names it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Lowercase hex, as written in pins and `kid` headers.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        let bytes = hex::decode(s).map_err(|_| format!("fingerprint `{s}` is not hex"))?;
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| format!("fingerprint `{s}` is not 32 bytes (a SHA-256 in hex)"))?;
        Ok(Fingerprint(arr))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One organization of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgEntry {
    pub id: OrgId,
    /// Shown to people; never used for decisions.
    pub name: String,
    #[serde(rename = "type")]
    pub org_type: OrgType,
    /// Fingerprints of the TLS certificates it may present. More than one during a rotation.
    #[serde(default)]
    pub tls_pins: Vec<Fingerprint>,
    /// Fingerprints of the certificates whose keys sign its tokens and consent receipts.
    #[serde(default)]
    pub signing_pins: Vec<Fingerprint>,
}

impl OrgEntry {
    /// Whether the organization's node could ever be served: it needs a pinned TLS certificate to
    /// complete a handshake and a pinned signing certificate for the tokens of every call, its delivery
    /// stream included. The gateway queues nothing for an organization that cannot.
    pub fn can_connect(&self) -> bool {
        !self.tls_pins.is_empty() && !self.signing_pins.is_empty()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgsFile {
    #[serde(default)]
    org: Vec<toml::Spanned<OrgEntry>>,
}

/// The pins of one party, as `haven-certs` writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinSet {
    #[serde(default)]
    pub tls: Vec<Fingerprint>,
    #[serde(default)]
    pub signing: Vec<Fingerprint>,
}

/// `pins.toml`: the fingerprints of every certificate a development CA issued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinsFile {
    #[serde(default)]
    pub gateway: PinSet,
    #[serde(default)]
    pub org: BTreeMap<OrgId, PinSet>,
}

impl PinsFile {
    /// Reads a pins file.
    pub fn load(path: &Path) -> Result<Self, Located> {
        SourceFile::read(path)?.parse()
    }
}

/// The organization registry, after merging pins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    orgs: BTreeMap<OrgId, OrgEntry>,
}

impl Registry {
    /// Reads `orgs.toml` and, when given, merges the pins of a `pins.toml` into it. Every problem is
    /// reported, each at its place in the file.
    pub fn load(orgs_path: &Path, pins_path: Option<&Path>) -> Result<Self, Vec<Located>> {
        let src = SourceFile::read(orgs_path).map_err(|e| vec![e])?;
        let file: OrgsFile = src.parse().map_err(|e| vec![e])?;
        let mut problems = Vec::new();
        let mut orgs = BTreeMap::new();
        for spanned in file.org {
            let span = spanned.span();
            let entry = spanned.into_inner();
            if orgs.contains_key(&entry.id) {
                problems.push(src.at(span.start, format!("organization `{}` is listed twice", entry.id)));
                continue;
            }
            orgs.insert(entry.id.clone(), entry);
        }
        if let Some(pins_path) = pins_path {
            match PinsFile::load(pins_path) {
                Ok(pins) => {
                    for (id, set) in pins.org {
                        // A pins file may cover organizations the registry no longer lists; those
                        // certificates simply stay unusable.
                        if let Some(entry) = orgs.get_mut(&id) {
                            for fp in set.tls {
                                if !entry.tls_pins.contains(&fp) {
                                    entry.tls_pins.push(fp);
                                }
                            }
                            for fp in set.signing {
                                if !entry.signing_pins.contains(&fp) {
                                    entry.signing_pins.push(fp);
                                }
                            }
                        }
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() { Ok(Registry { orgs }) } else { Err(problems) }
    }

    /// Builds a registry from entries (tests and tools).
    pub fn from_entries(entries: impl IntoIterator<Item = OrgEntry>) -> Self {
        Registry { orgs: entries.into_iter().map(|e| (e.id.clone(), e)).collect() }
    }

    /// The organization with this id.
    pub fn get(&self, id: &OrgId) -> Option<&OrgEntry> {
        self.orgs.get(id)
    }

    /// Every organization, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &OrgEntry> {
        self.orgs.values()
    }

    /// Every organization type in use.
    pub fn types(&self) -> std::collections::BTreeSet<&OrgType> {
        self.orgs.values().map(|o| &o.org_type).collect()
    }

    /// The organizations of a type.
    pub fn of_type<'a>(&'a self, t: &'a OrgType) -> impl Iterator<Item = &'a OrgEntry> + 'a {
        self.orgs.values().filter(move |o| &o.org_type == t)
    }

    /// How many organizations the registry holds.
    pub fn len(&self) -> usize {
        self.orgs.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_merge_into_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let orgs = dir.path().join("orgs.toml");
        std::fs::write(&orgs, "[[org]]\nid = \"harbor-ngo\"\nname = \"Harbor\"\ntype = \"ngo\"\n").unwrap();
        let pins = dir.path().join("pins.toml");
        let fp = Fingerprint([7; 32]);
        let file = PinsFile {
            gateway: PinSet::default(),
            org: BTreeMap::from([(OrgId::parse("harbor-ngo").unwrap(), PinSet { tls: vec![fp], signing: vec![] })]),
        };
        std::fs::write(&pins, toml::to_string(&file).unwrap()).unwrap();
        let reg = Registry::load(&orgs, Some(&pins)).unwrap();
        assert_eq!(reg.get(&OrgId::parse("harbor-ngo").unwrap()).unwrap().tls_pins, vec![fp]);
    }

    #[test]
    fn duplicate_and_malformed_orgs_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let orgs = dir.path().join("orgs.toml");
        std::fs::write(
            &orgs,
            "[[org]]\nid = \"a\"\nname = \"A\"\ntype = \"ngo\"\n[[org]]\nid = \"a\"\nname = \"A2\"\ntype = \"ngo\"\n",
        )
        .unwrap();
        let errs = Registry::load(&orgs, None).unwrap_err();
        assert!(errs[0].to_string().contains("listed twice"), "{}", errs[0]);
        assert_eq!(errs[0].line, 5);

        std::fs::write(&orgs, "[[org]]\nid = \"Bad Id\"\nname = \"A\"\ntype = \"ngo\"\n").unwrap();
        let errs = Registry::load(&orgs, None).unwrap_err();
        assert!(errs[0].to_string().contains("lowercase"), "{}", errs[0]);
    }
}
