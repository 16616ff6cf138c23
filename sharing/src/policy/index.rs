//! Indexing, so a decision never scans every rule.
//!
//! [`RuleIndex`] files each rule under every (kind, sender, recipient) key it covers, where the sender
//! and the recipient are each an organization, a type or "any" (numbered by
//! [`Directory`](super::directory::Directory)), and the kind is a kind or "any". A request looks up at
//! most 2 × 3 × 3 keys, and only the key shapes that some rule actually uses, so the cost of a decision
//! depends on the rules that could apply to it, not on the size of the bundle.

use super::directory::FxMap;
use super::rules::Compiled;

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
