//! The public key log: every sealing-key statement the gateway accepted, in order, in an RFC 6962
//! Merkle tree of its own with signed checkpoints, like the audit trail's (the same tree code, and a
//! checkpoint body of its own origin, [`KEY_LOG_ORIGIN`], so that an audit checkpoint can never pass
//! for a key-log one).
//!
//! A leaf commits to an entry's position, time and the SHA-256 of the whole statement:
//! `SHA-256(0x00 ‖ 0x01 ‖ seq (u64 BE) ‖ registered_at_micros (i64 BE) ‖ SHA-256(statement))`.
//! The log holds public keys only, so every node downloads all of it and recomputes the tree.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::audit::{Checkpoint, CheckpointKey};
use crate::merkle::{self, Hash};
use crate::sealing::{self, StatementAction};

/// The version byte that starts every leaf's bytes.
pub const ENTRY_VERSION: u8 = 1;

/// The first line of every signed key-log checkpoint body.
pub const KEY_LOG_ORIGIN: &str = "haven.keylog.checkpoint/v1";

/// The bytes a key-log leaf hashes.
pub fn entry_bytes(seq: u64, registered_at_micros: i64, statement_sha256: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 8 + 32);
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&registered_at_micros.to_be_bytes());
    out.extend_from_slice(statement_sha256);
    out
}

/// The Merkle leaf hash of a key-log entry.
pub fn leaf_hash(seq: u64, registered_at_micros: i64, statement_sha256: &[u8; 32]) -> Hash {
    merkle::leaf_hash(&entry_bytes(seq, registered_at_micros, statement_sha256))
}

/// One line of a key-log export (`haven-node keys log`): JSON, `{"entry": {...}}` or
/// `{"checkpoint": {...}}` (the audit trail's checkpoint shape, under the key log's origin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportLine {
    Entry(ExportEntry),
    Checkpoint(Checkpoint),
}

/// An entry as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportEntry {
    pub seq: u64,
    pub registered_at_micros: i64,
    /// The statement, the compact JWS as registered.
    pub statement: String,
}

/// Writes an export: each entry, in order, then the checkpoint that covers them, one JSON line each.
/// Entries past the checkpoint (read after it) are left out: nothing in the export signs them.
pub fn export_text(entries: impl IntoIterator<Item = ExportEntry>, checkpoint: Option<Checkpoint>) -> String {
    let covered = checkpoint.as_ref().map_or(0, |c| c.tree_size);
    let entries = entries.into_iter().filter(|e| e.seq < covered).map(ExportLine::Entry);
    let lines = entries.chain(checkpoint.map(ExportLine::Checkpoint));
    lines.map(|l| serde_json::to_string(&l).unwrap_or_default() + "\n").collect()
}

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub checkpoints: u64,
    /// The newest checkpoint, which covers every entry.
    pub covering: Checkpoint,
    /// By organization: the keys published and the keys withdrawn.
    pub orgs: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

impl Summary {
    /// A human summary for the CLI.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "OK: key log of {} entries verified against {} signed checkpoint(s); covering checkpoint: size {}, root {}, signed at {} µs by key {}; every statement signed by a certificate the network CA issued to its organization",
            self.entries,
            self.checkpoints,
            self.covering.tree_size,
            self.covering.root_hash,
            self.covering.timestamp_micros,
            self.covering.key_id
        );
        for (org, (published, withdrawn)) in &self.orgs {
            out.push_str(&format!("\n{org}: published {}", published.join(", ")));
            if !withdrawn.is_empty() {
                out.push_str(&format!("; withdrawn {}", withdrawn.join(", ")));
            }
        }
        out
    }
}

/// Verifies a key-log export offline, with the gateway's signing certificate and the network CA's
/// (both DER): entries gap-free from 0; each statement signed with a certificate the CA issued to the
/// organization it speaks for; every checkpoint signed by the gateway under the key log's origin, with
/// the root of the entries up to its size; the newest covering every entry. The error names the line.
pub fn verify_export(text: &str, gateway_cert: &[u8], ca: &[u8]) -> Result<Summary, String> {
    let key = CheckpointKey::new(gateway_cert).map_err(|e| format!("the gateway signing certificate: {e}"))?;
    let mut leaves: Vec<Hash> = Vec::new();
    let mut checkpoints: Vec<(usize, Checkpoint)> = Vec::new();
    let mut orgs: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        match serde_json::from_str::<ExportLine>(line).map_err(|e| format!("line {n}: not a key-log line: {e}"))? {
            ExportLine::Entry(e) => {
                if e.seq != leaves.len() as u64 {
                    return Err(format!(
                        "line {n}: entry {} where {} was due: the log has a gap or is out of order",
                        e.seq,
                        leaves.len()
                    ));
                }
                let (statement, sha, _) = sealing::verify_statement_by_ca(&e.statement, ca)
                    .map_err(|why| format!("line {n}: entry {}: {why}", e.seq))?;
                leaves.push(leaf_hash(e.seq, e.registered_at_micros, &sha));
                let (published, withdrawn) = orgs.entry(statement.org.to_string()).or_default();
                match statement.action {
                    StatementAction::Publish => published.push(statement.kid),
                    StatementAction::Withdraw => withdrawn.push(statement.kid),
                }
            }
            ExportLine::Checkpoint(cp) => {
                key.verify_of(KEY_LOG_ORIGIN, &cp).map_err(|e| format!("line {n}: key-log checkpoint: {e}"))?;
                checkpoints.push((n, cp));
            }
        }
    }
    for (n, cp) in &checkpoints {
        let size = usize::try_from(cp.tree_size).unwrap_or(usize::MAX);
        if size > leaves.len() {
            return Err(format!(
                "line {n}: the checkpoint of size {size} covers entries the export does not hold ({})",
                leaves.len()
            ));
        }
        let root = merkle::root_from_leaves(&leaves[..size]);
        if cp.root().map_err(|e| format!("line {n}: {e}"))? != root {
            return Err(format!(
                "line {n}: the checkpoint of size {size} signs root {}, but the entries give {}: the log was rewritten",
                cp.root_hash,
                hex::encode(root)
            ));
        }
    }
    let covering = checkpoints
        .iter()
        .map(|(_, cp)| cp)
        .max_by_key(|cp| cp.tree_size)
        .cloned()
        .ok_or("the export holds no checkpoint: nothing signs the entries")?;
    if covering.tree_size != leaves.len() as u64 {
        return Err(format!(
            "the newest checkpoint covers {} entries, but the export holds {}: the rest is not signed",
            covering.tree_size,
            leaves.len()
        ));
    }
    Ok(Summary { entries: leaves.len() as u64, checkpoints: checkpoints.len() as u64, covering, orgs })
}

/// [`verify_export`] on files: the export, the gateway signing certificate and the network CA
/// certificate (PEM or DER).
pub fn verify_files(export: &Path, gateway_cert: &Path, ca: &Path) -> Result<Summary, String> {
    let read_cert = |p: &Path| crate::export::read_key(p).map_err(|e| e.to_string());
    let text = std::fs::read_to_string(export).map_err(|e| format!("{}: {e}", export.display()))?;
    verify_export(&text, &read_cert(gateway_cert)?, &read_cert(ca)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_commits_to_position_time_and_statement() {
        let h = [9u8; 32];
        let a = leaf_hash(0, 5, &h);
        assert_ne!(a, leaf_hash(1, 5, &h));
        assert_ne!(a, leaf_hash(0, 6, &h));
        assert_ne!(a, leaf_hash(0, 5, &[8u8; 32]));
        assert_eq!(entry_bytes(0, 5, &h).len(), 49);
        assert_eq!(entry_bytes(0, 5, &h)[0], ENTRY_VERSION);
    }
}
