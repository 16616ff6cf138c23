//! Numbering the registry, so a decision compares small integers: [`Directory`] numbers the
//! registry's organizations and types, keyed with [`FxMap`], a fast map for keys the bundle chose.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use haven_trust::ids::{OrgId, OrgType};
use haven_trust::registry::Registry;

/// A small, fast hasher for integer keys and short identifiers (the Firefox/rustc "Fx" hash). The keys
/// it hashes come from the policy bundle, not from callers, so it needs no defence against chosen
/// collisions.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A hash map keyed by policy identifiers.
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The registry's organizations and types, numbered.
#[derive(Debug, Clone, Default)]
pub(crate) struct Directory {
    numbers: FxMap<String, u32>,
    orgs: Vec<OrgId>,
    org_type: Vec<u32>,
    type_numbers: FxMap<String, u32>,
    types: Vec<OrgType>,
    members: Vec<Vec<u32>>,
}

impl Directory {
    pub(crate) fn new(registry: &Registry) -> Self {
        let mut dir = Directory::default();
        for t in registry.types() {
            dir.type_numbers.insert(t.as_str().to_owned(), dir.types.len() as u32);
            dir.types.push(t.clone());
            dir.members.push(Vec::new());
        }
        for org in registry.iter() {
            let n = dir.orgs.len() as u32;
            let t = dir.type_numbers[org.org_type.as_str()];
            dir.numbers.insert(org.id.as_str().to_owned(), n);
            dir.orgs.push(org.id.clone());
            dir.org_type.push(t);
            dir.members[t as usize].push(n);
        }
        dir
    }

    /// The number of an organization.
    #[inline]
    pub(crate) fn org(&self, id: &str) -> Option<u32> {
        self.numbers.get(id).copied()
    }

    /// The type number of an organization.
    #[inline]
    pub(crate) fn type_of(&self, org: u32) -> u32 {
        self.org_type[org as usize]
    }

    /// The number of an organization type.
    pub(crate) fn type_number(&self, t: &str) -> Option<u32> {
        self.type_numbers.get(t).copied()
    }

    pub(crate) fn org_id(&self, org: u32) -> &OrgId {
        &self.orgs[org as usize]
    }

    pub(crate) fn type_name(&self, t: u32) -> &OrgType {
        &self.types[t as usize]
    }

    /// The organizations of a type.
    pub(crate) fn members(&self, t: u32) -> &[u32] {
        &self.members[t as usize]
    }
}
