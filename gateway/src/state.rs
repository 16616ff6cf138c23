//! A running gateway's state: what its services, streams and sweeps share. Built once by
//! [`Gateway::open`](crate::app) from the typed configuration; serving lives in `app.rs` and
//! `server.rs`, apart from it.

use std::sync::{Arc, RwLock};

use haven_trust::audit::CheckpointSigner;
use haven_trust::clock::SharedClock;
use rustls::ServerConfig;
use tokio::sync::watch;

use crate::audit::{self, Rejections};
use crate::commit::Committer;
use crate::config::Config;
use crate::identity::{Authenticator, Trust};
use crate::policy::Bundle;
use crate::routing::queue::Wakeups;
use crate::store::Store;
use crate::stream::registry::Streams;

/// Everything the services share.
pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub clock: SharedClock,
    pub auth: Authenticator,
    pub trust: Arc<RwLock<Arc<Trust>>>,
    pub tls: Arc<RwLock<Arc<ServerConfig>>>,
    pub rejections: Arc<Rejections>,
    pub checkpoints: CheckpointSigner,
    /// The audit log's Merkle tree, checkpoints and proofs; `audit_log.subscribe()` yields each newly
    /// signed checkpoint for the delivery streams.
    pub audit_log: audit::AuditLog,
    /// Shared commits for submissions and acknowledgements.
    pub commits: Committer,
    /// The secret for recipient-scoped pseudonyms; shared by replicas.
    pub pseudonym_key: [u8; 32],
    /// Bumped on every reload, so open streams re-check their peer.
    pub reloads: watch::Sender<u64>,
    /// Flips to true when the gateway starts shutting down, so open streams end and shutdown is not
    /// held up by nodes that never hang up.
    pub closing: watch::Sender<bool>,
    /// Wakes an organization's delivery stream when something is queued for it.
    pub wakeups: Wakeups,
    /// The open delivery streams, one per organization.
    pub streams: Streams,
}

/// A running gateway's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Gateway(pub Arc<Inner>);

impl Gateway {
    /// The policy bundle in force.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.0.auth.trust().bundle.clone()
    }
}
