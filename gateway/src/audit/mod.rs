//! The gateway's side of the audit log: appending entries in the same transaction as the state change
//! they record, and aggregating authentication rejections so that an attacker cannot make the log grow
//! without bound.
//!
//! - [`log`]: the Merkle tree over the stored entries, its single integrator, signed checkpoints and
//!   proofs read from stored subtrees; [`AuditLog`] is the handle the gateway keeps, and appends the
//!   entries that stand alone (audit queries) as units of the shared committer (`crate::commit`);
//! - [`query`]: filters, access scopes and redaction for the auditor API;
//! - [`export`]: the JSON-lines export stream;
//! - [`cli`]: `haven-gateway audit verify`.

pub mod cli;
pub mod export;
pub mod log;
pub mod query;
mod rejections;

use haven_trust::audit::{Action, AuditEntry};

pub use log::{AuditLog, Cadence, LogError};
pub use rejections::Rejections;

pub use crate::store::audit_log::{ENTRY_COLUMNS, append, append_one, entry_from_row, parse_list, read_range, size};

/// What the audit entries of one change are stamped with: the moment it happens, and the version of
/// the bundle in force.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub now: i64,
    pub bundle_version: String,
}

impl Stamp {
    /// An entry of `action`, stamped.
    pub fn entry(&self, action: Action) -> AuditEntry {
        AuditEntry { bundle_version: self.bundle_version.clone(), ..AuditEntry::new(action, self.now) }
    }
}
