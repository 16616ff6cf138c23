//! Merkle tree hashing and proofs for the audit log, as RFC 6962 §2.1 defines them and RFC 9162 §2.1
//! gives the algorithms.
//!
//! The audit log is an append-only list of entries. Its state at size `n` is summed up by the Merkle Tree
//! Hash (MTH) of the first `n` entries, which the gateway signs as a checkpoint. This module owns:
//!
//! - the hashing: [`leaf_hash`] = SHA-256(0x00 ‖ entry), [`node_hash`] = SHA-256(0x01 ‖ left ‖ right), and
//!   [`empty_root`] = SHA-256() for the tree of size 0; [`root_from_leaves`] is the MTH by its definition;
//! - appending without rehashing: [`CompactTree`] keeps only the O(log n) roots of the perfect subtrees
//!   that cover the log (its "frontier"), and reports every perfect subtree a new leaf completes, so that
//!   storage can save them;
//! - proofs over stored data: [`inclusion_proof`] and [`consistency_proof`] read at most about 2·log2(n)
//!   perfect subtree hashes through a [`NodeSource`] and never rehash the log. [`MemoryTree`] is the
//!   in-memory source for tests and for the export verifier; the gateway's database is another;
//! - verification: [`verify_inclusion`] and [`verify_consistency`] follow RFC 9162 §2.1.3.2 and §2.1.4.2
//!   step by step.
//!
//! # Perfect subtrees and how a database stores them
//!
//! A perfect subtree is named by `(level, index)`: it covers the `2^level` leaves
//! `[index·2^level, (index+1)·2^level)`, and level 0 is the leaf hashes. Once the log holds all of its
//! leaves, a perfect subtree's hash never changes, so storage can write it once and never update it.
//! Every other node of the tree of size `n` lies on the right edge, depends on `n`, and is recomputed
//! from at most log2(n) perfect subtrees when needed; it is never stored.
//!
//! A database keeps one table, keyed by `(level, index)`, for example
//!
//! ```sql
//! CREATE TABLE merkle_node (
//!     level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 63),
//!     idx   INTEGER NOT NULL CHECK (idx >= 0),
//!     hash  BLOB    NOT NULL CHECK (length(hash) = 32),
//!     PRIMARY KEY (level, idx)
//! );
//! ```
//!
//! and writes, in the same transaction as the leaf, the rows that [`CompactTree::push`] returns: the leaf
//! itself at `(0, i)`, then `(l, i >> l)` for each level `l` that leaf `i` completes (one row per set low
//! bit of `i`, so two rows per leaf on average). Level 0 may equally live in the leaf table. At start-up
//! the writer restores its [`CompactTree`] with [`CompactTree::from_source`] (log2(n) reads) or from a
//! saved [`CompactTree::frontier`]. A [`NodeSource`] over that table answers one point read per call; a
//! source answers [`ProofError::NodeNotFound`] for a subtree it does not hold, which is also what happens
//! when a caller asks about a tree larger than the log.
//!
//! An asynchronous store can learn up front which rows a proof needs from [`inclusion_proof_nodes`],
//! [`consistency_proof_nodes`] and [`CompactTree::frontier_nodes`], fetch them in one query into a
//! `HashMap<NodeId, Hash>` (which is a [`NodeSource`]) and build the proof from that map.
//!
//! # Sizes and errors
//!
//! Sizes and indices are `u64`. No function here panics on any input: bad sizes, indices, proof lengths
//! and hashes come back as a [`ProofError`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use sha2::{Digest, Sha256};

/// The length of a hash in bytes.
pub const HASH_SIZE: usize = 32;

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; HASH_SIZE];

/// The domain separation prefix of leaf hashes (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// The domain separation prefix of interior node hashes (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

/// Why a proof could not be built or did not verify, or why tree state was refused.
///
/// A gRPC layer maps [`ProofError::NodeNotFound`] to `NotFound` (or `OutOfRange` when the caller asked
/// about a size beyond the log), [`ProofError::Storage`] to `Internal`, [`ProofError::TreeFull`] to
/// `ResourceExhausted`, and every other variant to `InvalidArgument`: they all say that the request or
/// the proof it carries is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// An inclusion proof was asked for or checked with a leaf index outside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    LeafIndexOutOfRange {
        /// The leaf index given.
        index: u64,
        /// The tree size given.
        size: u64,
    },
    /// A consistency proof was asked for or checked from a larger tree to a smaller one.
    #[error("first size {first} is larger than second size {second}")]
    FirstLargerThanSecond {
        /// The first (older) tree size given.
        first: u64,
        /// The second (newer) tree size given.
        second: u64,
    },
    /// A consistency proof was asked for or checked from the empty tree to a non-empty one. Every tree
    /// extends the empty tree, so there is nothing to prove (RFC 6962 §2.1.2 defines proofs for
    /// `0 < first`).
    #[error("size 0 cannot be proven consistent with a non-empty tree")]
    EmptyFirstTree,
    /// A consistency proof was asked for or checked between two empty trees; as for
    /// [`ProofError::EmptyFirstTree`], there is nothing to prove.
    #[error("two empty trees (size 0) have no consistency proof")]
    EmptyTrees,
    /// The proof does not have the number of hashes the sizes and index call for. This also covers an
    /// empty proof where one is needed and a non-empty proof between two equal sizes.
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength {
        /// The number of hashes in the proof.
        got: usize,
        /// The number the sizes and index call for.
        expected: usize,
    },
    /// The root computed from the proof is not the expected root: the (second) root for a consistency
    /// proof, the tree root for an inclusion proof.
    #[error("computed root does not match")]
    RootMismatch,
    /// The first-tree root computed from a consistency proof is not the first root given.
    #[error("computed first root does not match")]
    FirstRootMismatch,
    /// Two trees of the same size were given different roots, so they cannot be the same tree.
    #[error("trees of equal size {size} have different roots")]
    EqualSizesDifferentRoots {
        /// The common size.
        size: u64,
    },
    /// A hash received from outside (a root or a leaf hash) does not have 32 bytes.
    #[error("hash has {len} bytes, expected 32")]
    MalformedHash {
        /// Its length in bytes.
        len: usize,
    },
    /// A proof hash received from outside does not have 32 bytes.
    #[error("proof hash {position} has {len} bytes, expected 32")]
    MalformedProofHash {
        /// Its position in the proof, from 0.
        position: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A compact tree was restored from a frontier whose length is not the number of set bits of its size.
    #[error("a compact tree of size {size} has {expected} frontier hashes, got {got}")]
    FrontierMismatch {
        /// The tree size given.
        size: u64,
        /// The number of hashes that size calls for.
        expected: usize,
        /// The number of hashes given.
        got: usize,
    },
    /// The tree already holds `u64::MAX` leaves and cannot grow.
    #[error("the tree is full: it cannot hold more than {} leaves", u64::MAX)]
    TreeFull,
    /// The node source does not hold this perfect subtree, typically because the tree size asked about is
    /// beyond the leaves the log holds.
    #[error("no hash is stored for the subtree at level {level}, index {index}")]
    NodeNotFound {
        /// The subtree level (0 for leaves).
        level: u32,
        /// The subtree index within its level.
        index: u64,
    },
    /// The node source failed to read (for example a database error).
    #[error("node storage failed: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The leaf hash of an entry: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Reads a hash received from outside (for example from a gRPC message).
pub fn hash_from_slice(bytes: &[u8]) -> Result<Hash, ProofError> {
    Hash::try_from(bytes).map_err(|_| ProofError::MalformedHash { len: bytes.len() })
}

/// Reads a proof received from outside, checking that every hash has 32 bytes.
pub fn proof_from_slices<T: AsRef<[u8]>>(hashes: &[T]) -> Result<Vec<Hash>, ProofError> {
    hashes
        .iter()
        .enumerate()
        .map(|(position, h)| {
            let bytes = h.as_ref();
            Hash::try_from(bytes).map_err(|_| ProofError::MalformedProofHash { position, len: bytes.len() })
        })
        .collect()
}

/// The Merkle Tree Hash of a list of leaf hashes, by its definition in RFC 6962 §2.1: the empty root for
/// no leaves, the leaf hash for one, otherwise the node hash of the trees left and right of the largest
/// power of two smaller than the number of leaves. It hashes every leaf; use it for small lists and as
/// the reference, and [`CompactTree`] or [`root_at`] for the log.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let (left, right) = leaves.split_at(split_point(leaves.len() as u64) as usize);
            node_hash(&root_from_leaves(left), &root_from_leaves(right))
        }
    }
}

/// The largest power of two smaller than `n`, for `n >= 2` (0 otherwise).
fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    // n - 1 >= 1, so it has at most 63 leading zeros.
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The number of bits needed to write `x`.
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// `x >> shift`, which is 0 when `shift` is 64 or more.
fn shr(x: u64, shift: u32) -> u64 {
    x.checked_shr(shift).unwrap_or(0)
}

/// The name of a perfect subtree: the `2^level` leaves `[index·2^level, (index+1)·2^level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// The height of the subtree: 0 for a leaf, at most 63.
    pub level: u32,
    /// The position of the subtree within its level, from 0.
    pub index: u64,
}

/// Where proofs read perfect subtree hashes from.
///
/// See the [module documentation](self) for how a database stores them.
pub trait NodeSource {
    /// The hash of the perfect subtree that covers leaves `[index·2^level, (index+1)·2^level)`.
    ///
    /// Proof generation only asks for subtrees whose leaves all lie below the tree size it works on.
    /// A source that does not hold the subtree answers [`ProofError::NodeNotFound`].
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, ProofError>;
}

impl<T: NodeSource + ?Sized> NodeSource for &T {
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        (**self).subtree_hash(level, index)
    }
}

impl<S: BuildHasher> NodeSource for HashMap<NodeId, Hash, S> {
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.get(&NodeId { level, index }).copied().ok_or(ProofError::NodeNotFound { level, index })
    }
}

impl NodeSource for BTreeMap<NodeId, Hash> {
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.get(&NodeId { level, index }).copied().ok_or(ProofError::NodeNotFound { level, index })
    }
}

/// The perfect subtree of `len` leaves starting at leaf `start`; `len` is a power of two and `start` a
/// multiple of it.
fn perfect<S: NodeSource + ?Sized>(src: &S, start: u64, len: u64) -> Result<Hash, ProofError> {
    let level = len.trailing_zeros();
    src.subtree_hash(level, shr(start, level))
}

/// The Merkle Tree Hash of leaves `[start, end)`, where `start` is a multiple of the largest power of two
/// not above `end - start` (so the range is a node of some tree), from the perfect subtrees that cover it:
/// at most log2(end - start) + 1 reads.
fn range_hash<S: NodeSource + ?Sized>(src: &S, start: u64, end: u64) -> Result<Hash, ProofError> {
    let mut pieces: Vec<Hash> = Vec::new();
    let mut p = start;
    while p < end {
        // The largest aligned perfect subtree that starts at p and ends at or before end. For a range of
        // the documented shape this walks the binary decomposition of end - start, largest first.
        let fits = 63 - (end - p).leading_zeros();
        let level = p.trailing_zeros().min(fits);
        pieces.push(src.subtree_hash(level, p >> level)?);
        p += 1u64 << level;
    }
    Ok(fold_right(&pieces))
}

/// Hashes perfect subtree roots, given left to right with decreasing sizes, into the root of the tree
/// they make up: the rightmost two first. No pieces make the empty tree.
fn fold_right(pieces: &[Hash]) -> Hash {
    let mut rev = pieces.iter().rev();
    let Some(last) = rev.next() else {
        return empty_root();
    };
    rev.fold(*last, |acc, left| node_hash(left, &acc))
}

/// The root of the tree of the first `size` leaves of a source, from at most log2(size) + 1 perfect
/// subtrees (those [`CompactTree::frontier_nodes`] names).
pub fn root_at<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Hash, ProofError> {
    range_hash(src, 0, size)
}

/// The inclusion proof of leaf `leaf_index` in the tree of the first `tree_size` leaves of a source
/// (RFC 6962 §2.1.1, RFC 9162 §2.1.3.1): the sibling hashes on the path from the leaf to the root,
/// lowest first. It reads each perfect sibling once and recomputes the one sibling on the right edge that
/// may not be perfect, at most about 2·log2(tree_size) reads in all.
///
/// The caller checks `tree_size` against the log; a source answers [`ProofError::NodeNotFound`] for
/// subtrees it does not hold.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    leaf_index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if leaf_index >= tree_size {
        return Err(ProofError::LeafIndexOutOfRange { index: leaf_index, size: tree_size });
    }
    // PATH(m, D[start:start+n]), unrolled from the root down; the siblings come out highest first.
    let mut path = Vec::new();
    let (mut start, mut n, mut m) = (0u64, tree_size, leaf_index);
    while n > 1 {
        let k = split_point(n);
        if m < k {
            path.push(range_hash(src, start + k, start + n)?);
            n = k;
        } else {
            path.push(perfect(src, start, k)?);
            start += k;
            n -= k;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof between the trees of the first `first` and the first `second` leaves of a
/// source (RFC 6962 §2.1.2, RFC 9162 §2.1.4.1), lowest hashes first. Equal sizes have the empty proof;
/// size 0 has none. At most about 2·log2(second) reads.
///
/// The caller checks `second` against the log; a source answers [`ProofError::NodeNotFound`] for
/// subtrees it does not hold.
pub fn consistency_proof<S: NodeSource + ?Sized>(src: &S, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
    check_consistency_sizes(first, second)?;
    if first == second {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start:start+n], whole), unrolled from the root down; hashes come out highest first.
    let mut path = Vec::new();
    let (mut start, mut n, mut m, mut whole) = (0u64, second, first, true);
    loop {
        if m == n {
            if !whole {
                path.push(range_hash(src, start, start + n)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            path.push(range_hash(src, start + k, start + n)?);
            n = k;
        } else {
            path.push(perfect(src, start, k)?);
            start += k;
            n -= k;
            m -= k;
            whole = false;
        }
    }
    path.reverse();
    Ok(path)
}

/// A node source that answers every read with zeros and remembers what was asked.
struct Recorder {
    asked: RefCell<Vec<NodeId>>,
}

impl NodeSource for Recorder {
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.asked.borrow_mut().push(NodeId { level, index });
        Ok([0; HASH_SIZE])
    }
}

/// The perfect subtrees [`inclusion_proof`] reads for these arguments, in the order it reads them.
pub fn inclusion_proof_nodes(leaf_index: u64, tree_size: u64) -> Result<Vec<NodeId>, ProofError> {
    let recorder = Recorder { asked: RefCell::new(Vec::new()) };
    inclusion_proof(&recorder, leaf_index, tree_size)?;
    Ok(recorder.asked.into_inner())
}

/// The perfect subtrees [`consistency_proof`] reads for these arguments, in the order it reads them.
pub fn consistency_proof_nodes(first: u64, second: u64) -> Result<Vec<NodeId>, ProofError> {
    let recorder = Recorder { asked: RefCell::new(Vec::new()) };
    consistency_proof(&recorder, first, second)?;
    Ok(recorder.asked.into_inner())
}

/// The number of hashes in the inclusion proof of leaf `leaf_index` in a tree of `tree_size` leaves.
pub fn inclusion_proof_size(leaf_index: u64, tree_size: u64) -> Result<usize, ProofError> {
    if leaf_index >= tree_size {
        return Err(ProofError::LeafIndexOutOfRange { index: leaf_index, size: tree_size });
    }
    Ok(inclusion_decomposition(leaf_index, tree_size).total())
}

/// The number of hashes in the consistency proof between trees of `first` and `second` leaves.
pub fn consistency_proof_size(first: u64, second: u64) -> Result<usize, ProofError> {
    check_consistency_sizes(first, second)?;
    if first == second {
        return Ok(0);
    }
    // The proof is the tail of the inclusion proof of leaf first - 1 in the tree of size second, from
    // the level of the rightmost perfect subtree of the first tree up, preceded by that subtree's root
    // unless the first tree is itself perfect (its root is then the first root, which the verifier has).
    let split = inclusion_decomposition(first - 1, second);
    let shift = first.trailing_zeros();
    let seed = usize::from(!first.is_power_of_two());
    Ok(seed + (split.inner.saturating_sub(shift) + split.border) as usize)
}

/// The two parts of the inclusion proof of a leaf: below and above the level where the paths to the leaf
/// and to the last leaf of the tree meet.
struct Decomposition {
    /// Siblings below the meeting point, left or right.
    inner: u32,
    /// Left siblings of the right edge above it.
    border: u32,
}

impl Decomposition {
    fn total(&self) -> usize {
        (self.inner + self.border) as usize
    }
}

/// Requires `index < size`.
fn inclusion_decomposition(index: u64, size: u64) -> Decomposition {
    let inner = bit_len(index ^ size.saturating_sub(1));
    Decomposition { inner, border: shr(index, inner).count_ones() }
}

fn check_consistency_sizes(first: u64, second: u64) -> Result<(), ProofError> {
    if first > second {
        Err(ProofError::FirstLargerThanSecond { first, second })
    } else if first == 0 && second == 0 {
        Err(ProofError::EmptyTrees)
    } else if first == 0 {
        Err(ProofError::EmptyFirstTree)
    } else {
        Ok(())
    }
}

/// Computes the root of a tree of `tree_size` leaves from the hash and index of one of its leaves and the
/// leaf's inclusion proof, by RFC 9162 §2.1.3.2. The proof must have exactly the expected length.
pub fn root_from_inclusion(
    leaf_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    let expected = inclusion_proof_size(leaf_index, tree_size)?;
    let wrong_length = ProofError::WrongProofLength { got: proof.len(), expected };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Step 2 (leaf_index < tree_size, so tree_size >= 1).
    let mut f = leaf_index;
    let mut s = tree_size - 1;
    // Step 3.
    let mut r = *leaf_hash;
    // Step 4.
    for p in proof {
        if s == 0 {
            return Err(wrong_length);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 5, first half (the length check above makes this hold).
    if s != 0 {
        return Err(wrong_length);
    }
    Ok(r)
}

/// Verifies that the leaf with hash `leaf_hash` is at `leaf_index` in the tree of `tree_size` leaves
/// whose root is `root`, by RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion(leaf_hash, leaf_index, tree_size, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `second` leaves with root `second_root` extends the tree of `first` leaves
/// with root `first_root`, by RFC 9162 §2.1.4.2.
///
/// Edge cases: `first > second` and `first == 0` are errors; for `first == second` the proof must be
/// empty and the roots equal; otherwise the proof must have exactly the expected length (in particular
/// it cannot be empty).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    check_consistency_sizes(first, second)?;
    let expected = consistency_proof_size(first, second)?;
    let wrong_length = ProofError::WrongProofLength { got: proof.len(), expected };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    if first == second {
        if first_root != second_root {
            return Err(ProofError::EqualSizesDifferentRoots { size: first });
        }
        return Ok(());
    }
    // Step 1 (an empty proof) is covered by the length check: 0 < first < second needs at least one hash.
    // Step 2: if first is a power of two, the proof implicitly starts with first_root.
    let (seed, rest) = if first.is_power_of_two() {
        (first_root, proof)
    } else {
        match proof.split_first() {
            Some((seed, rest)) => (seed, rest),
            None => return Err(wrong_length),
        }
    };
    // Step 3 (0 < first < second).
    let mut f = first - 1;
    let mut s = second - 1;
    // Step 4.
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // Step 5.
    let mut fr = *seed;
    let mut sr = *seed;
    // Step 6.
    for c in rest {
        if s == 0 {
            return Err(wrong_length);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 7.
    if s != 0 {
        return Err(wrong_length);
    }
    if fr != *first_root {
        return Err(ProofError::FirstRootMismatch);
    }
    if sr != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// An append-only Merkle tree that keeps only the roots of the perfect subtrees covering its leaves
/// (one per set bit of its size, largest first): a compact range `[0, size)`.
///
/// It gives the root of the log in O(log n) and appends in amortized O(1) hashes, without the leaves.
/// Restore it from [`CompactTree::frontier`] and the size, or from stored subtrees with
/// [`CompactTree::from_source`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactTree {
    size: u64,
    frontier: Vec<Hash>,
}

impl CompactTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a tree of `size` leaves from its frontier: the roots of its perfect subtrees, largest
    /// (leftmost) first, one per set bit of `size`.
    pub fn from_frontier(size: u64, frontier: Vec<Hash>) -> Result<Self, ProofError> {
        let expected = size.count_ones() as usize;
        if frontier.len() != expected {
            return Err(ProofError::FrontierMismatch { size, expected, got: frontier.len() });
        }
        Ok(Self { size, frontier })
    }

    /// The perfect subtrees that make up the frontier of a tree of `size` leaves, largest first.
    pub fn frontier_nodes(size: u64) -> Vec<NodeId> {
        (0..u64::BITS)
            .rev()
            .filter(|&level| shr(size, level) & 1 == 1)
            .map(|level| NodeId { level, index: shr(size, level) - 1 })
            .collect()
    }

    /// Restores a tree of `size` leaves from the perfect subtrees a source holds (log2(size) + 1 reads).
    pub fn from_source<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Self, ProofError> {
        let frontier = Self::frontier_nodes(size)
            .into_iter()
            .map(|node| src.subtree_hash(node.level, node.index))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { size, frontier })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier, to save alongside the size: the roots of the perfect subtrees, largest first.
    pub fn frontier(&self) -> Vec<Hash> {
        self.frontier.clone()
    }

    /// The Merkle Tree Hash of the leaves so far (the empty root for none).
    pub fn root(&self) -> Hash {
        fold_right(&self.frontier)
    }

    /// Appends a leaf hash. Returns the perfect subtrees the leaf completes, lowest first: the leaf itself
    /// at level 0 (its index is the new leaf's index), then its parent if the leaf is a right child, and
    /// so on. These are the rows a store writes (see the [module documentation](self)).
    pub fn push(&mut self, leaf: Hash) -> Result<Vec<(NodeId, Hash)>, ProofError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(ProofError::TreeFull)?;
        let merges = index.trailing_ones() as usize;
        let expected = index.count_ones() as usize;
        if self.frontier.len() != expected || merges > expected {
            // The constructors keep this from happening.
            return Err(ProofError::FrontierMismatch { size: index, expected, got: self.frontier.len() });
        }
        let mut completed = Vec::with_capacity(merges + 1);
        let mut node = NodeId { level: 0, index };
        let mut hash = leaf;
        completed.push((node, hash));
        for left in self.frontier.drain(expected - merges..).rev() {
            hash = node_hash(&left, &hash);
            node = NodeId { level: node.level + 1, index: node.index >> 1 };
            completed.push((node, hash));
        }
        self.frontier.push(hash);
        self.size = new_size;
        Ok(completed)
    }
}

/// A Merkle tree held in memory with every perfect subtree hash: a [`NodeSource`] for tests and for
/// verifying an exported log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTree {
    /// The leaf hashes (level 0).
    leaves: Vec<Hash>,
    /// `levels[l - 1]` holds the perfect subtrees of level `l`, by index.
    levels: Vec<Vec<Hash>>,
    /// The right edge, for the root.
    compact: CompactTree,
}

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of these leaf hashes.
    pub fn from_leaf_hashes<I: IntoIterator<Item = Hash>>(leaves: I) -> Result<Self, ProofError> {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push(leaf)?;
        }
        Ok(tree)
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.compact.size()
    }

    /// The hash of leaf `index`, if the tree has it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        usize::try_from(index).ok().and_then(|i| self.leaves.get(i)).copied()
    }

    /// The Merkle Tree Hash of all the leaves.
    pub fn root(&self) -> Hash {
        self.compact.root()
    }

    /// The frontier of the whole tree, as [`CompactTree`] would have it.
    pub fn compact(&self) -> &CompactTree {
        &self.compact
    }

    /// Appends a leaf hash and returns its index.
    pub fn push(&mut self, leaf: Hash) -> Result<u64, ProofError> {
        let completed = self.compact.push(leaf)?;
        for (node, hash) in &completed {
            let level = match node.level.checked_sub(1) {
                None => &mut self.leaves,
                Some(l) => {
                    let l = l as usize;
                    if self.levels.len() <= l {
                        self.levels.resize_with(l + 1, Vec::new);
                    }
                    &mut self.levels[l]
                }
            };
            level.push(*hash);
        }
        Ok(self.size() - 1)
    }
}

impl NodeSource for MemoryTree {
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let not_found = ProofError::NodeNotFound { level, index };
        let Ok(i) = usize::try_from(index) else {
            return Err(not_found);
        };
        let stored = match level.checked_sub(1) {
            None => Some(&self.leaves),
            Some(l) => usize::try_from(l).ok().and_then(|l| self.levels.get(l)),
        };
        stored.and_then(|hashes| hashes.get(i)).copied().ok_or(not_found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> Hash {
        hash_from_slice(&hex::decode(s).unwrap()).unwrap()
    }

    fn test_leaf(i: u64) -> Hash {
        leaf_hash(&i.to_be_bytes())
    }

    /// PATH(m, D[n]) by its recursive definition in RFC 6962 §2.1.1, from the leaves.
    fn ref_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = ref_path(m, &leaves[..k]);
            p.push(root_from_leaves(&leaves[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &leaves[k..]);
            p.push(root_from_leaves(&leaves[..k]));
            p
        }
    }

    /// SUBPROOF(m, D[n], b) by its recursive definition in RFC 6962 §2.1.2, from the leaves.
    fn ref_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { Vec::new() } else { vec![root_from_leaves(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = ref_subproof(m, &leaves[..k], whole);
            p.push(root_from_leaves(&leaves[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &leaves[k..], false);
            p.push(root_from_leaves(&leaves[..k]));
            p
        }
    }

    fn flip(h: &Hash, bit: usize) -> Hash {
        let mut h = *h;
        h[(bit / 8) % HASH_SIZE] ^= 1 << (bit % 8);
        h
    }

    /// How hard the tamper checks try.
    #[derive(Clone, Copy)]
    enum Tamper {
        /// Three bits of every proof hash.
        Thorough,
        /// One bit of every proof hash.
        EveryHash,
        /// One bit of the first, middle and last two proof hashes (for proofs of huge trees).
        Sample,
    }

    /// The (proof position, bit) pairs to flip.
    fn flips(len: usize, how: Tamper) -> Vec<(usize, usize)> {
        let one = |j: usize| (j, j * 37 + 11);
        match how {
            Tamper::Thorough => (0..len).flat_map(|j| [(j, 0), (j, 255), one(j)]).collect(),
            Tamper::EveryHash => (0..len).map(one).collect(),
            Tamper::Sample => {
                let mut js: Vec<usize> = [0, 1, len / 2, len.saturating_sub(2), len.saturating_sub(1)]
                    .into_iter()
                    .filter(|&j| j < len)
                    .collect();
                js.dedup();
                js.into_iter().map(one).collect()
            }
        }
    }

    /// Checks every way of corrupting a valid inclusion proof fails.
    fn assert_inclusion_tamper_fails(leaf: &Hash, i: u64, n: u64, proof: &[Hash], root: &Hash, how: Tamper) {
        for (j, bit) in flips(proof.len(), how) {
            let mut bad = proof.to_vec();
            bad[j] = flip(&bad[j], bit);
            assert!(
                matches!(verify_inclusion(leaf, i, n, &bad, root), Err(ProofError::RootMismatch)),
                "inclusion {i}/{n}: flipped bit {bit} of hash {j} verified"
            );
        }
        assert!(verify_inclusion(&flip(leaf, 3), i, n, proof, root).is_err());
        assert!(verify_inclusion(leaf, i, n, proof, &flip(root, 200)).is_err());
        let mut longer = proof.to_vec();
        longer.push(*root);
        assert!(matches!(verify_inclusion(leaf, i, n, &longer, root), Err(ProofError::WrongProofLength { .. })));
        if let Some((_, shorter)) = proof.split_last() {
            assert!(matches!(verify_inclusion(leaf, i, n, shorter, root), Err(ProofError::WrongProofLength { .. })));
        }
    }

    /// Checks every way of corrupting a valid consistency proof fails.
    fn assert_consistency_tamper_fails(m: u64, n: u64, r1: &Hash, r2: &Hash, proof: &[Hash], how: Tamper) {
        for (j, bit) in flips(proof.len(), how) {
            let mut bad = proof.to_vec();
            bad[j] = flip(&bad[j], bit);
            assert!(
                verify_consistency(m, n, r1, r2, &bad).is_err(),
                "consistency {m}->{n}: flipped bit {bit} of hash {j} verified"
            );
        }
        assert!(verify_consistency(m, n, &flip(r1, 9), r2, proof).is_err());
        assert!(verify_consistency(m, n, r1, &flip(r2, 9), proof).is_err());
        if r1 != r2 {
            assert!(verify_consistency(m, n, r2, r1, proof).is_err());
        }
        let mut longer = proof.to_vec();
        longer.insert(0, *r1);
        assert!(verify_consistency(m, n, r1, r2, &longer).is_err());
        if let Some((_, shorter)) = proof.split_last() {
            assert!(verify_consistency(m, n, r1, r2, shorter).is_err());
        }
    }

    #[test]
    fn known_answers_from_rfc6962_reference_tree() {
        // The tree used by Certificate Transparency and transparency-dev/merkle (testonly/constants.go).
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let level1 = [
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ];
        assert_eq!(empty_root(), hex32(roots[0]));
        let leaves: Vec<Hash> = inputs.iter().map(|e| leaf_hash(e)).collect();
        assert_eq!(leaves[7], hex32("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"));
        let tree = MemoryTree::from_leaf_hashes(leaves.iter().copied()).unwrap();
        let mut compact = CompactTree::new();
        assert_eq!(compact.root(), hex32(roots[0]));
        for (n, want) in roots.iter().enumerate() {
            let want = hex32(want);
            assert_eq!(root_from_leaves(&leaves[..n]), want, "size {n}");
            assert_eq!(root_at(&tree, n as u64).unwrap(), want, "size {n}");
            if n > 0 {
                compact.push(leaves[n - 1]).unwrap();
                assert_eq!(compact.root(), want, "size {n}");
            }
        }
        for (i, want) in level1.iter().enumerate() {
            assert_eq!(tree.subtree_hash(1, i as u64).unwrap(), hex32(want));
        }
        assert_eq!(
            tree.subtree_hash(2, 1).unwrap(),
            hex32("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")
        );
        assert_eq!(tree.subtree_hash(3, 0).unwrap(), hex32(roots[8]));
    }

    #[test]
    fn every_proof_up_to_64_matches_the_rfc_and_verifies() {
        // One store of 64 leaves answers for every older size, as the log does for old checkpoints.
        let leaves: Vec<Hash> = (0..64).map(test_leaf).collect();
        let tree = MemoryTree::from_leaf_hashes(leaves.iter().copied()).unwrap();
        let roots: Vec<Hash> = (0..=64).map(|n| root_from_leaves(&leaves[..n])).collect();
        for n in 1..=64usize {
            let size = n as u64;
            assert_eq!(root_at(&tree, size).unwrap(), roots[n]);
            for i in 0..n {
                let index = i as u64;
                let proof = inclusion_proof(&tree, index, size).unwrap();
                assert_eq!(proof, ref_path(i, &leaves[..n]), "inclusion {i}/{n}");
                assert_eq!(proof.len(), inclusion_proof_size(index, size).unwrap());
                verify_inclusion(&leaves[i], index, size, &proof, &roots[n]).unwrap();
                assert_eq!(root_from_inclusion(&leaves[i], index, size, &proof).unwrap(), roots[n]);
                assert!(inclusion_proof_nodes(index, size).unwrap().len() <= 2 * 7);
            }
            for m in 1..=n {
                let first = m as u64;
                let proof = consistency_proof(&tree, first, size).unwrap();
                assert_eq!(proof, ref_subproof(m, &leaves[..n], true), "consistency {m}->{n}");
                assert_eq!(proof.len(), consistency_proof_size(first, size).unwrap());
                verify_consistency(first, size, &roots[m], &roots[n], &proof)
                    .unwrap_or_else(|e| panic!("consistency {m}->{n}: {e}"));
                assert!(consistency_proof_nodes(first, size).unwrap().len() <= 2 * 7);
            }
        }
    }

    #[test]
    fn flipped_bits_and_wrong_lengths_fail_up_to_32() {
        let leaves: Vec<Hash> = (0..32).map(test_leaf).collect();
        let tree = MemoryTree::from_leaf_hashes(leaves.iter().copied()).unwrap();
        for n in 1..=32u64 {
            let root = root_at(&tree, n).unwrap();
            for i in 0..n {
                let proof = inclusion_proof(&tree, i, n).unwrap();
                assert_inclusion_tamper_fails(&leaves[i as usize], i, n, &proof, &root, Tamper::Thorough);
            }
            for m in 1..=n {
                let r1 = root_at(&tree, m).unwrap();
                let proof = consistency_proof(&tree, m, n).unwrap();
                assert_consistency_tamper_fails(m, n, &r1, &root, &proof, Tamper::Thorough);
            }
        }
    }

    #[test]
    fn compact_tree_matches_root_from_leaves_up_to_200() {
        let leaves: Vec<Hash> = (0..200).map(test_leaf).collect();
        let mut compact = CompactTree::new();
        let mut tree = MemoryTree::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let completed = compact.push(*leaf).unwrap();
            assert_eq!(completed[0], (NodeId { level: 0, index: i as u64 }, *leaf));
            assert_eq!(completed.len() as u32, (i as u64).trailing_ones() + 1);
            for (node, hash) in &completed {
                let start = (node.index << node.level) as usize;
                let end = start + (1usize << node.level);
                assert_eq!(end, i + 1, "{node:?} is completed by leaf {i}");
                assert_eq!(*hash, root_from_leaves(&leaves[start..end]));
            }
            assert_eq!(tree.push(*leaf).unwrap(), i as u64);
            let size = compact.size();
            assert_eq!(size, i as u64 + 1);
            let want = root_from_leaves(&leaves[..=i]);
            assert_eq!(compact.root(), want, "size {size}");
            assert_eq!(tree.root(), want);
            assert_eq!(root_at(&tree, size).unwrap(), want);
            let restored = CompactTree::from_frontier(size, compact.frontier()).unwrap();
            assert_eq!(restored, compact);
            assert_eq!(CompactTree::from_source(&tree, size).unwrap(), compact);
            assert_eq!(CompactTree::frontier_nodes(size).len(), size.count_ones() as usize);
        }
        // Appending to a restored tree continues the same tree.
        let mut restored =
            CompactTree::from_frontier(150, CompactTree::from_source(&tree, 150).unwrap().frontier()).unwrap();
        for leaf in &leaves[150..] {
            restored.push(*leaf).unwrap();
        }
        assert_eq!(restored, compact);
    }

    #[test]
    fn property_loop_up_to_300() {
        let leaves: Vec<Hash> = (0..300).map(test_leaf).collect();
        let tree = MemoryTree::from_leaf_hashes(leaves.iter().copied()).unwrap();
        let mut sizes: Vec<u64> = (1..=300).step_by(17).collect();
        sizes.extend([127, 128, 129, 255, 256, 257, 299, 300]);
        for &n in &sizes {
            let root = root_at(&tree, n).unwrap();
            assert_eq!(root, root_from_leaves(&leaves[..n as usize]));
            let stride = (n / 11).max(1);
            let mut indices: Vec<u64> = (0..n).step_by(stride as usize).collect();
            indices.push(n - 1);
            for &i in &indices {
                let leaf = &leaves[i as usize];
                let proof = inclusion_proof(&tree, i, n).unwrap();
                assert_eq!(proof, ref_path(i as usize, &leaves[..n as usize]));
                verify_inclusion(leaf, i, n, &proof, &root).unwrap();
                assert_inclusion_tamper_fails(leaf, i, n, &proof, &root, Tamper::EveryHash);
                let m = i + 1;
                let r1 = root_at(&tree, m).unwrap();
                let proof = consistency_proof(&tree, m, n).unwrap();
                assert_eq!(proof.len(), consistency_proof_size(m, n).unwrap());
                verify_consistency(m, n, &r1, &root, &proof).unwrap();
                assert_consistency_tamper_fails(m, n, &r1, &root, &proof, Tamper::EveryHash);
                // Every proof is bounded by the height of the tree.
                assert!(proof.len() <= 2 * bit_len(n) as usize);
            }
        }
    }

    /// A tree of 2^64 - 1 equal leaves: every perfect subtree of a level has the same hash, so proofs
    /// for huge sizes can be built and checked in O(log n).
    struct Uniform {
        levels: Vec<Hash>,
    }

    impl Uniform {
        fn new() -> Self {
            let mut levels = vec![leaf_hash(b"same")];
            for l in 1..64 {
                let below = levels[l - 1];
                levels.push(node_hash(&below, &below));
            }
            Self { levels }
        }
    }

    impl NodeSource for Uniform {
        fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
            // The last leaf of the subtree must be below u64::MAX.
            let fits = index.checked_add(1).and_then(|i| i.checked_mul(1u64 << level.min(63)));
            match (self.levels.get(level as usize), fits) {
                (Some(h), Some(_)) => Ok(*h),
                _ => Err(ProofError::NodeNotFound { level, index }),
            }
        }
    }

    #[test]
    fn huge_sizes_prove_and_verify_without_overflow() {
        let src = Uniform::new();
        let leaf = src.levels[0];
        let sizes = [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) + 1, (1 << 63) - 1, 0x5555_5555_5555_5555, 3];
        for &n in &sizes {
            let root = root_at(&src, n).unwrap();
            for i in [0, 1, n / 2, n - 2, n - 1, (1 << 62) % n] {
                if i >= n {
                    continue;
                }
                let proof = inclusion_proof(&src, i, n).unwrap();
                verify_inclusion(&leaf, i, n, &proof, &root).unwrap();
                assert_inclusion_tamper_fails(&leaf, i, n, &proof, &root, Tamper::Sample);
                let m = i + 1;
                let r1 = root_at(&src, m).unwrap();
                let proof = consistency_proof(&src, m, n).unwrap();
                verify_consistency(m, n, &r1, &root, &proof).unwrap();
                assert_consistency_tamper_fails(m, n, &r1, &root, &proof, Tamper::Sample);
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let tree = MemoryTree::from_leaf_hashes((0..5).map(test_leaf)).unwrap();
        let root = tree.root();
        let leaf = test_leaf(0);

        let e = inclusion_proof(&tree, 9, 5).unwrap_err();
        assert_eq!(e.to_string(), "leaf index 9 is not below tree size 5");
        assert!(matches!(inclusion_proof(&tree, 5, 5), Err(ProofError::LeafIndexOutOfRange { .. })));
        assert!(matches!(inclusion_proof(&tree, 0, 0), Err(ProofError::LeafIndexOutOfRange { .. })));
        assert!(matches!(
            verify_inclusion(&leaf, 5, 5, &[], &root),
            Err(ProofError::LeafIndexOutOfRange { index: 5, size: 5 })
        ));
        assert!(verify_inclusion(&leaf, u64::MAX, u64::MAX, &[], &root).is_err());
        assert!(verify_inclusion(&leaf, 0, 0, &[], &empty_root()).is_err());

        let e = consistency_proof(&tree, 8, 5).unwrap_err();
        assert_eq!(e.to_string(), "first size 8 is larger than second size 5");
        let e = consistency_proof(&tree, 0, 5).unwrap_err();
        assert_eq!(e.to_string(), "size 0 cannot be proven consistent with a non-empty tree");
        assert!(matches!(consistency_proof(&tree, 0, 0), Err(ProofError::EmptyTrees)));
        assert!(matches!(
            verify_consistency(8, 5, &root, &root, &[]),
            Err(ProofError::FirstLargerThanSecond { first: 8, second: 5 })
        ));
        assert!(matches!(verify_consistency(0, 5, &empty_root(), &root, &[]), Err(ProofError::EmptyFirstTree)));
        let r0 = empty_root();
        assert!(matches!(verify_consistency(0, 0, &r0, &r0, &[]), Err(ProofError::EmptyTrees)));

        // Equal sizes: empty proof and equal roots, nothing else.
        assert_eq!(consistency_proof(&tree, 5, 5).unwrap(), Vec::<Hash>::new());
        verify_consistency(5, 5, &root, &root, &[]).unwrap();
        let e = verify_consistency(5, 5, &root, &root, &[root]).unwrap_err();
        assert_eq!(e.to_string(), "proof has 1 hashes, expected 0");
        assert!(matches!(
            verify_consistency(5, 5, &root, &leaf, &[]),
            Err(ProofError::EqualSizesDifferentRoots { size: 5 })
        ));
        // An empty proof where one is needed.
        let e = verify_consistency(3, 5, &root, &root, &[]).unwrap_err();
        assert!(matches!(e, ProofError::WrongProofLength { got: 0, expected } if expected > 0), "{e}");
        let proof = inclusion_proof(&tree, 1, 5).unwrap();
        assert_eq!(
            verify_inclusion(&leaf, 1, 5, &proof[..2], &root).unwrap_err().to_string(),
            "proof has 2 hashes, expected 3"
        );
        assert_eq!(
            verify_inclusion(&test_leaf(2), 1, 5, &proof, &root).unwrap_err().to_string(),
            "computed root does not match"
        );

        // Sizes beyond what the source holds.
        assert!(matches!(inclusion_proof(&tree, 0, 6), Err(ProofError::NodeNotFound { .. })));
        assert!(matches!(consistency_proof(&tree, 2, 6), Err(ProofError::NodeNotFound { .. })));
        assert!(matches!(root_at(&tree, 6), Err(ProofError::NodeNotFound { .. })));
        assert!(inclusion_proof(&tree, u64::MAX - 1, u64::MAX).is_err());
        assert!(consistency_proof(&tree, 1, u64::MAX).is_err());
        assert!(tree.subtree_hash(200, u64::MAX).is_err());
        assert!(tree.subtree_hash(u32::MAX, 0).is_err());

        // Garbage proofs at extreme sizes are rejected without panicking.
        let garbage = vec![leaf; 130];
        for (a, b) in [(1, u64::MAX), (u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX), (3, 1 << 63), (u64::MAX, u64::MAX)]
        {
            for len in [0, 1, 63, 64, 65, 127, 128, 130] {
                assert!(verify_consistency(a, b, &root, &leaf, &garbage[..len]).is_err());
                assert!(verify_inclusion(&leaf, a.min(b - 1), b, &garbage[..len], &root).is_err());
            }
            assert!(consistency_proof_size(a, b).unwrap() <= 128);
            assert!(inclusion_proof_size(a.min(b - 1), b).unwrap() <= 64);
            assert!(consistency_proof_nodes(a, b).unwrap().len() <= 130);
            assert!(inclusion_proof_nodes(a.min(b - 1), b).unwrap().len() <= 130);
        }

        // Hashes and frontiers from outside.
        assert_eq!(hash_from_slice(&[0; 9]).unwrap_err().to_string(), "hash has 9 bytes, expected 32");
        assert_eq!(hash_from_slice(&leaf).unwrap(), leaf);
        let e = proof_from_slices(&[leaf.to_vec(), Vec::new()]).unwrap_err();
        assert_eq!(e.to_string(), "proof hash 1 has 0 bytes, expected 32");
        assert_eq!(proof_from_slices(&[leaf, root]).unwrap(), vec![leaf, root]);
        assert!(matches!(
            CompactTree::from_frontier(5, vec![leaf]),
            Err(ProofError::FrontierMismatch { size: 5, expected: 2, got: 1 })
        ));
        let mut full = CompactTree::from_frontier(u64::MAX, vec![leaf; 64]).unwrap();
        assert!(matches!(full.push(leaf), Err(ProofError::TreeFull)));
        let mut almost = CompactTree::from_frontier(u64::MAX - 1, vec![leaf; 63]).unwrap();
        almost.push(leaf).unwrap();
        assert_eq!(almost.size(), u64::MAX);
        assert_eq!(CompactTree::frontier_nodes(u64::MAX).len(), 64);
        assert_eq!(CompactTree::frontier_nodes(0), Vec::new());
    }

    #[test]
    fn single_leaf_and_empty_tree() {
        let leaf = test_leaf(7);
        verify_inclusion(&leaf, 0, 1, &[], &leaf).unwrap();
        assert_eq!(root_from_leaves(&[]), empty_root());
        assert_eq!(MemoryTree::new().root(), empty_root());
        assert_eq!(root_at(&MemoryTree::new(), 0).unwrap(), empty_root());
        assert_eq!(MemoryTree::from_leaf_hashes([leaf]).unwrap().leaf(0), Some(leaf));
        assert_eq!(MemoryTree::new().leaf(u64::MAX), None);
        let map: HashMap<NodeId, Hash> = HashMap::from([(NodeId { level: 0, index: 0 }, leaf)]);
        assert_eq!(root_at(&map, 1).unwrap(), leaf);
        assert!(matches!(root_at(&map, 2), Err(ProofError::NodeNotFound { level: 1, index: 0 })));
    }

    #[test]
    fn proofs_from_prefetched_nodes_match() {
        let tree = MemoryTree::from_leaf_hashes((0..100).map(test_leaf)).unwrap();
        for (i, n) in [(0, 1), (5, 77), (76, 77), (63, 64), (99, 100)] {
            let map: HashMap<NodeId, Hash> = inclusion_proof_nodes(i, n)
                .unwrap()
                .into_iter()
                .map(|id| (id, tree.subtree_hash(id.level, id.index).unwrap()))
                .collect();
            assert_eq!(inclusion_proof(&map, i, n).unwrap(), inclusion_proof(&tree, i, n).unwrap());
            let m = i + 1;
            let map: BTreeMap<NodeId, Hash> = consistency_proof_nodes(m, n)
                .unwrap()
                .into_iter()
                .map(|id| (id, tree.subtree_hash(id.level, id.index).unwrap()))
                .collect();
            assert_eq!(consistency_proof(&map, m, n).unwrap(), consistency_proof(&tree, m, n).unwrap());
        }
        let dynamic: &dyn NodeSource = &tree;
        assert_eq!(root_at(dynamic, 100).unwrap(), tree.root());
    }
}
