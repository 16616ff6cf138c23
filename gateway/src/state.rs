//! A running gateway's state: what its services, streams and sweeps share. Built once by
//! [`Gateway::open`](crate::app) from the typed configuration; serving lives in `app.rs` and
//! `server.rs`, apart from it.

use std::sync::{Arc, RwLock};

use haven_trust::clock::SharedClock;
use rustls::ServerConfig;
use tokio::sync::watch;

use crate::audit::{self, Rejections, Stamp};
use crate::commit::Committer;
use crate::config::Config;
use crate::identity::{Authenticator, Trust};
use crate::policy::Bundle;
use crate::routing::queue::Wakeups;
use crate::store::Store;
use crate::stream::registry::Streams;

/// Everything the services share.
pub struct Inner {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) clock: SharedClock,
    pub(crate) auth: Authenticator,
    pub(crate) trust: Arc<RwLock<Arc<Trust>>>,
    pub(crate) tls: Arc<RwLock<Arc<ServerConfig>>>,
    pub(crate) rejections: Arc<Rejections>,
    /// The audit log's Merkle tree, checkpoints and proofs; `audit_log.subscribe()` yields each newly
    /// signed checkpoint for the delivery streams.
    pub(crate) audit_log: audit::AuditLog,
    /// Shared commits for submissions and acknowledgements.
    pub(crate) commits: Committer,
    /// Signs the key log's checkpoints (the gateway's signing key, as for the audit trail's).
    pub(crate) key_log_signer: haven_trust::audit::CheckpointSigner,
    /// The secret for recipient-scoped pseudonyms; shared by replicas.
    pub(crate) pseudonym_key: [u8; 32],
    /// Bumped on every reload, so open streams re-check their peer.
    pub(crate) reloads: watch::Sender<u64>,
    /// Flips to true when the gateway starts shutting down, so open streams end and shutdown is not
    /// held up by nodes that never hang up.
    pub(crate) closing: watch::Sender<bool>,
    /// Wakes an organization's delivery stream when something is queued for it.
    pub(crate) wakeups: Wakeups,
    /// The open delivery streams, one per organization.
    pub(crate) streams: Streams,
}

/// A running gateway's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Gateway(pub(crate) Arc<Inner>);

impl Gateway {
    /// The database.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The clock every decision and entry is timed by.
    pub fn clock(&self) -> &SharedClock {
        &self.0.clock
    }

    /// The settings it was built from.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The audit log's Merkle tree, checkpoints and proofs.
    pub fn audit_log(&self) -> &audit::AuditLog {
        &self.0.audit_log
    }

    /// The counts of refused requests, written to the audit log every few seconds.
    pub fn rejections(&self) -> &Rejections {
        &self.0.rejections
    }

    /// The shared committer of submissions and acknowledgements.
    pub fn commits(&self) -> &Committer {
        &self.0.commits
    }

    /// The signer of the key log's checkpoints.
    pub fn key_log_signer(&self) -> &haven_trust::audit::CheckpointSigner {
        &self.0.key_log_signer
    }

    /// The trust material in force: registry pins, CRL, bundle.
    pub fn trust(&self) -> Arc<Trust> {
        self.0.auth.trust()
    }

    /// Whether the gateway is shutting down; open streams watch it.
    pub fn closing(&self) -> &watch::Sender<bool> {
        &self.0.closing
    }

    /// The policy bundle in force.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.0.auth.trust().bundle.clone()
    }

    /// What a change made now is audited with: the time, and the bundle in force.
    pub fn stamp(&self) -> Stamp {
        Stamp { now: self.0.clock.now_micros(), bundle_version: self.bundle().version_id().to_owned() }
    }

    /// Wakes the delivery streams of organizations that have something new queued.
    pub fn wake(&self, orgs: &[String]) {
        for org in orgs {
            self.0.wakeups.wake(org);
        }
    }

    /// The secret recipient-scoped pseudonyms are derived with.
    pub(crate) fn pseudonym_key(&self) -> &[u8; 32] {
        &self.0.pseudonym_key
    }
}
