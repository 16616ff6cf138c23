//! Aggregated authentication rejections.
//!
//! Calls refused after the TLS handshake (bad tokens, unknown or unpinned organizations) are counted
//! in memory per (organization, source address, reason) and written as one `auth_rejected` entry per
//! key at each flush, with the count in `outcome` (`refused:<n>`). The number of keys is bounded, so a
//! flood of rejections costs at most a bounded number of entries per flush interval.

use std::collections::HashMap;
use std::sync::Mutex;

use haven_trust::audit::{Action, AuditEntry};

use crate::commit::Committer;
use crate::store::StoreError;

/// At most this many distinct keys are kept between flushes; the rest are counted under one key.
const MAX_KEYS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The organization named by the (CA-verified) certificate, or empty.
    org: String,
    /// The peer's IP address.
    source: String,
    reason: &'static str,
}

/// Rejection counters awaiting their flush.
#[derive(Debug, Default)]
pub struct Rejections {
    counts: Mutex<HashMap<Key, u64>>,
}

impl Rejections {
    /// Counts one rejection.
    pub fn record(&self, org: &str, source: &str, reason: &'static str) {
        let Ok(mut counts) = self.counts.lock() else { return };
        let mut key = Key { org: org.to_owned(), source: source.to_owned(), reason };
        if !counts.contains_key(&key) && counts.len() >= MAX_KEYS {
            key = Key { org: String::new(), source: "*".into(), reason: "overflow" };
        }
        *counts.entry(key).or_insert(0) += 1;
    }

    /// Writes one audit entry per key, through the shared committer, and clears the counters.
    pub async fn flush(&self, commits: &Committer, now_micros: i64) -> Result<usize, StoreError> {
        let drained: Vec<(Key, u64)> = match self.counts.lock() {
            Ok(mut counts) => counts.drain().collect(),
            Err(_) => return Ok(0),
        };
        if drained.is_empty() {
            return Ok(0);
        }
        let entries: Vec<(AuditEntry, String)> = drained
            .iter()
            .map(|(k, n)| {
                (
                    AuditEntry {
                        actor_org: k.org.clone(),
                        reason: k.reason.into(),
                        outcome: format!("refused:{n}"),
                        source_node: k.source.clone(),
                        ..AuditEntry::new(Action::AuthRejected, now_micros)
                    },
                    String::new(),
                )
            })
            .collect();
        let n = entries.len();
        commits.record(entries).await?;
        Ok(n)
    }
}
