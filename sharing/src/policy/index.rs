//! Numbering and indexing, so a decision never scans every rule.
//!
//! [`Directory`] numbers the registry's organizations and types. [`RuleIndex`] files each rule under
//! every (kind, sender, recipient) key it covers, where the sender and the recipient are each an
//! organization, a type or "any", and the kind is a kind or "any". A request looks up at most
//! 2 × 3 × 3 keys, and only the key shapes that some rule actually uses, so the cost of a decision
//! depends on the rules that could apply to it, not on the size of the bundle.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use haven_trust::ids::{OrgId, OrgType};
use haven_trust::registry::Registry;

use super::rules::Compiled;

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

const ANY: u64 = 0;
const ORG: u64 = 1;
const TYPE: u64 = 2;
const ANY_KIND: u128 = 0xffff;

fn party(tag: u64, n: u32) -> u64 {
    (tag << 32) | u64::from(n)
}

fn key(kind: u128, from: u64, to: u64) -> u128 {
    (kind << 80) | (u128::from(from) << 40) | u128::from(to)
}

/// The bit of a key shape: kind or any kind, times sender tag, times recipient tag.
fn shape(any_kind: bool, from_tag: u64, to_tag: u64) -> u32 {
    1 << (u32::from(any_kind) * 9 + (from_tag as u32) * 3 + to_tag as u32)
}

/// Rules filed by (kind, sender, recipient).
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleIndex {
    map: FxMap<u128, Box<[u32]>>,
    /// The key shapes some rule uses; lookups skip the others.
    shapes: u32,
}

impl RuleIndex {
    pub(crate) fn build(rules: &[Compiled]) -> Self {
        let mut lists: FxMap<u128, Vec<u32>> = FxMap::default();
        let mut shapes = 0;
        let sides = |m: &super::rules::PartyMatch| -> Vec<(u64, u64)> {
            if m.any {
                vec![(ANY, party(ANY, 0))]
            } else {
                m.orgs
                    .iter()
                    .map(|&o| (ORG, party(ORG, o)))
                    .chain(m.types.iter().map(|&t| (TYPE, party(TYPE, t))))
                    .collect()
            }
        };
        for (i, rule) in rules.iter().enumerate() {
            let kind = rule.kind.map_or(ANY_KIND, |k| k as u128);
            let tos = sides(&rule.to);
            for (from_tag, from) in sides(&rule.from) {
                for &(to_tag, to) in &tos {
                    shapes |= shape(rule.kind.is_none(), from_tag, to_tag);
                    lists.entry(key(kind, from, to)).or_default().push(i as u32);
                }
            }
        }
        RuleIndex { map: lists.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect(), shapes }
    }

    /// Appends to `out`, in bundle order and without repeats, every rule whose kind, `from` and `to`
    /// cover this request.
    #[inline]
    pub(crate) fn candidates(&self, kind: usize, sender: (u32, u32), recipient: (u32, u32), out: &mut Vec<u32>) {
        let froms = [(ANY, party(ANY, 0)), (ORG, party(ORG, sender.0)), (TYPE, party(TYPE, sender.1))];
        let tos = [(ANY, party(ANY, 0)), (ORG, party(ORG, recipient.0)), (TYPE, party(TYPE, recipient.1))];
        let mut lists = 0;
        for (any_kind, k) in [(false, kind as u128), (true, ANY_KIND)] {
            for &(from_tag, from) in &froms {
                for &(to_tag, to) in &tos {
                    if self.shapes & shape(any_kind, from_tag, to_tag) == 0 {
                        continue;
                    }
                    if let Some(list) = self.map.get(&key(k, from, to)) {
                        out.extend_from_slice(list);
                        lists += 1;
                    }
                }
            }
        }
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}
