//! Runs the RFC 6962 proof test vectors in `tests/vectors/merkle` (taken from the transparency-dev/merkle
//! project under the Apache License 2.0; see the README.md and LICENSE beside them) against
//! `haven_trust::merkle`. They live in this crate, so the tests need nothing beside the checkout.
//!
//! How a case is read:
//! - `wantErr` is the verdict: `false` must verify, `true` must be rejected. The README calls only the
//!   `happy-path` files valid, but two other files are valid too and say so (`wantErr: false`): a
//!   one-leaf tree whose root is its leaf hash with the empty proof, and equal sizes with equal roots
//!   and the empty proof. The tests check that every `happy-path` file has `wantErr: false`.
//! - Hashes are base64. A value that is not 32 bytes long (an empty "garbage" proof hash, a 9-byte
//!   "wrong" root) is rejected where the gateway would reject it, when the wire bytes become a
//!   [`Hash`], and that counts as a rejection. The one exception are the placeholders of
//!   `consistency/additional` (the text `don't care 1`, `don't care 2`): they stand for arbitrary
//!   hashes the verifier must not need to look at, so each is replaced by a 32-byte stand-in (equal
//!   placeholders get equal stand-ins).
//! - `"proof": null` is the empty proof.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use haven_trust::merkle::{
    Hash, MemoryTree, consistency_proof, hash_from_slice, inclusion_proof, leaf_hash, proof_from_slices, root_at,
    verify_consistency, verify_inclusion,
};
use serde::Deserialize;

/// The placeholder prefix the `additional` consistency cases use for hashes that do not matter.
const PLACEHOLDER: &[u8] = b"don't care";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

/// The vectors directory, kept in this crate.
fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/merkle"));
    assert!(
        dir.join("inclusion").is_dir() && dir.join("consistency").is_dir(),
        "the Merkle test vectors are missing: {} should hold inclusion/ and consistency/",
        dir.display()
    );
    dir
}

/// Every `.json` file under `dir`, recursively, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("reading {}: {e}", d.display())).path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "json") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The cases of one kind, keyed by their path relative to the vectors directory.
fn load<T: for<'de> Deserialize<'de>>(root: &Path, kind: &str) -> BTreeMap<String, T> {
    let files = json_files(&root.join(kind));
    assert!(!files.is_empty(), "no {kind} vectors under {}", root.join(kind).display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let case = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not a {kind} vector: {e}", path.display()));
            let name = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            (name, case)
        })
        .collect()
}

fn base64(name: &str, value: &str) -> Vec<u8> {
    STANDARD.decode(value).unwrap_or_else(|e| panic!("{name}: `{value}` is not base64: {e}"))
}

/// A root or leaf hash from a vector, read as the gateway reads one from the wire.
fn hash(name: &str, value: &str) -> Result<Hash, String> {
    let bytes = base64(name, value);
    if bytes.starts_with(PLACEHOLDER) {
        // A stand-in for an arbitrary hash, equal for equal placeholders.
        return Ok(leaf_hash(&bytes));
    }
    hash_from_slice(&bytes).map_err(|e| format!("rejected on reading: {e}"))
}

fn proof(name: &str, values: &Option<Vec<String>>) -> Result<Vec<Hash>, String> {
    let bytes: Vec<Vec<u8>> = values.iter().flatten().map(|v| base64(name, v)).collect();
    proof_from_slices(&bytes).map_err(|e| format!("rejected on reading: {e}"))
}

fn run_inclusion(name: &str, c: &InclusionCase) -> Result<(), String> {
    let leaf = hash(name, &c.leaf_hash)?;
    let root = hash(name, &c.root)?;
    let proof = proof(name, &c.proof)?;
    verify_inclusion(&leaf, c.leaf_idx, c.tree_size, &proof, &root).map_err(|e| e.to_string())
}

fn run_consistency(name: &str, c: &ConsistencyCase) -> Result<(), String> {
    let root1 = hash(name, &c.root1)?;
    let root2 = hash(name, &c.root2)?;
    let proof = proof(name, &c.proof)?;
    verify_consistency(c.size1, c.size2, &root1, &root2, &proof).map_err(|e| e.to_string())
}

/// Checks each outcome against its verdict and fails with every mismatch at once.
fn judge(kind: &str, outcomes: Vec<(String, String, bool, Result<(), String>)>) {
    let (mut valid, mut rejected, mut on_reading) = (0, 0, 0);
    let mut happy = 0;
    let mut wrong = String::new();
    for (name, desc, want_err, outcome) in &outcomes {
        if name.ends_with("happy-path.json") {
            happy += 1;
            if *want_err {
                let _ = writeln!(wrong, "  {name}: a happy path, but the file says wantErr: true");
            }
        }
        match (want_err, outcome) {
            (false, Ok(())) => valid += 1,
            (true, Err(e)) => {
                rejected += 1;
                on_reading += usize::from(e.starts_with("rejected on reading"));
            }
            (false, Err(e)) => {
                let _ = writeln!(wrong, "  {name} ({desc}): valid, but rejected: {e}");
            }
            (true, Ok(())) => {
                let _ = writeln!(wrong, "  {name} ({desc}): corrupted, but it verified");
            }
        }
    }
    assert!(wrong.is_empty(), "{kind} vectors judged wrongly:\n{wrong}");
    assert!(happy > 0 && rejected > 0, "{kind}: expected happy paths and corrupted cases");
    eprintln!(
        "{kind}: {valid} valid cases verified, {rejected} corrupted cases rejected \
         ({on_reading} of them because a hash is not 32 bytes)"
    );
}

#[test]
fn inclusion_vectors() {
    let root = vectors_dir();
    let cases: BTreeMap<String, InclusionCase> = load(&root, "inclusion");
    let outcomes =
        cases.iter().map(|(name, c)| (name.clone(), c.desc.clone(), c.want_err, run_inclusion(name, c))).collect();
    judge("inclusion", outcomes);
}

#[test]
fn consistency_vectors() {
    let root = vectors_dir();
    let cases: BTreeMap<String, ConsistencyCase> = load(&root, "consistency");
    let outcomes =
        cases.iter().map(|(name, c)| (name.clone(), c.desc.clone(), c.want_err, run_consistency(name, c))).collect();
    judge("consistency", outcomes);
}

/// The happy-path proofs come from the 8-leaf reference tree of RFC 6962 implementations
/// (transparency-dev/merkle `testonly/constants.go`): the proofs this crate builds for them must be
/// the very same.
#[test]
fn happy_paths_are_the_proofs_we_generate() {
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
    let tree = MemoryTree::from_leaf_hashes(inputs.iter().map(|e| leaf_hash(e))).unwrap();
    let root = vectors_dir();
    let mut compared = 0;

    let cases: BTreeMap<String, InclusionCase> = load(&root, "inclusion");
    for (name, c) in cases.iter().filter(|(n, _)| n.ends_with("happy-path.json")) {
        assert!(c.tree_size <= tree.size(), "{name}: not from the reference tree");
        let want_root = hash(name, &c.root).unwrap();
        assert_eq!(root_at(&tree, c.tree_size).unwrap(), want_root, "{name}: root");
        let leaf = tree.leaf(c.leaf_idx).unwrap();
        assert_eq!(leaf, hash(name, &c.leaf_hash).unwrap(), "{name}: leaf hash");
        let ours = inclusion_proof(&tree, c.leaf_idx, c.tree_size).unwrap();
        assert_eq!(ours, proof(name, &c.proof).unwrap(), "{name}: proof");
        compared += 1;
    }

    let cases: BTreeMap<String, ConsistencyCase> = load(&root, "consistency");
    for (name, c) in cases.iter().filter(|(n, _)| n.ends_with("happy-path.json")) {
        assert!(c.size2 <= tree.size(), "{name}: not from the reference tree");
        assert_eq!(root_at(&tree, c.size1).unwrap(), hash(name, &c.root1).unwrap(), "{name}: root1");
        assert_eq!(root_at(&tree, c.size2).unwrap(), hash(name, &c.root2).unwrap(), "{name}: root2");
        let ours = consistency_proof(&tree, c.size1, c.size2).unwrap();
        assert_eq!(ours, proof(name, &c.proof).unwrap(), "{name}: proof");
        compared += 1;
    }
    assert!(compared >= 2, "no happy path was compared");
}
