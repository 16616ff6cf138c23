//! The public key log: every sealing-key statement the gateway accepted, in order, in an RFC 6962
//! Merkle tree of its own with signed checkpoints, like the audit trail's (the same tree code, and a
//! checkpoint body of its own origin, [`KEY_LOG_ORIGIN`], so that an audit checkpoint can never pass
//! for a key-log one).
//!
//! A leaf commits to an entry's position, time and the SHA-256 of the whole statement:
//! `SHA-256(0x00 ‖ 0x01 ‖ seq (u64 BE) ‖ registered_at_micros (i64 BE) ‖ SHA-256(statement))`.
//! The log holds public keys only, so every node downloads all of it and recomputes the tree.

use crate::merkle::{self, Hash};

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
