//! The Merkle tree over the stored audit log: its single integrator, signed checkpoints, and proofs
//! read from stored perfect subtrees.
//!
//! Sequencing (documented in `docs/audit-export.md` and migration 3): [`super::append`] gives every
//! entry its gap-free `seq` inside the transaction that records the state change, so positions exist
//! the moment an entry commits. Integrating entries into the tree is a separate step that one
//! integrator at a time performs, in seq order: it locks `merkle_head` (SQLite's single writer; on
//! PostgreSQL `SELECT ... FOR UPDATE`, so gateway replicas that share a database take turns and only
//! one extends the tree), appends the leaves past `merkle_head.size`, writes the perfect subtrees they
//! complete (`merkle_node`, keyed `(level, idx)`), advances the head and, when the cadence says so,
//! signs a checkpoint, all in one transaction. Every replica runs [`AuditLog::spawn`], which integrates
//! within a fraction of a second of a commit; a reader that needs more (a proof, an export) integrates
//! on demand first.
//!
//! Entries that stand alone (an auditor's queries) are appended by [`AuditLog::record`] as units of the
//! gateway's shared committer ([`crate::commit::Committer`]), beside the state changes, and the
//! committer tells the integrator after each commit that appended entries. The log holds the committer,
//! which knows nothing of the log but that notification: the committer is started first, over the
//! store, and the log is built with it.
//!
//! Proofs read only the O(log n) subtrees [`merkle::inclusion_proof_nodes`] and
//! [`merkle::consistency_proof_nodes`] name, in one query; the log is never rehashed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haven_proto::v1::SignedCheckpoint;
use haven_trust::audit::{AuditEntry, Checkpoint, CheckpointSigner};
use haven_trust::clock::SharedClock;
use haven_trust::merkle::{self, CompactTree, Hash, NodeId, ProofError};
use sqlx::AnyConnection;
use tokio::sync::{Notify, watch};

use crate::commit::Committer;
use crate::error::Error;
use crate::store::merkle::{self as merkle_store, StoredCheckpoint};
use crate::store::{Dialect, Store, StoreError, Tx, Unsettled};

/// When checkpoints are signed: after this many new entries, or this long after the previous one if
/// the log has grown since, whichever comes first (`network.toml`: `checkpoint_every_entries`,
/// `checkpoint_every_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub every_entries: u64,
    pub every: Duration,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence { every_entries: 1000, every: Duration::from_secs(10) }
    }
}

/// How often the background integrator looks for committed entries when nobody nudged it.
const POLL: Duration = Duration::from_millis(200);
/// The shortest time between two integration passes, however often the integrator is nudged.
const MIN_GAP: Duration = Duration::from_millis(50);
/// The most entries one integration transaction takes.
const BATCH: usize = 4096;

/// Why a log operation failed. Each maps to a precise gRPC status in [`From<LogError> for Error`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database failed; nothing was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A proof was asked for a tree larger than the log.
    #[error("tree size {asked} is beyond the log, which holds {size} integrated entries; ask for size {size} or less")]
    SizeBeyondLog { asked: u64, size: u64 },
    /// A proof was asked for an entry the log does not hold.
    #[error("no entry with seq {seq}: the log holds {size} integrated entries")]
    NoSuchEntry { seq: u64, size: u64 },
    /// The entry exists but the tree asked about is too small to hold it.
    #[error("seq {seq} is not in the tree of size {tree_size}; ask about a tree larger than {seq}")]
    LeafNotInTree { seq: u64, tree_size: u64 },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("first_size {first} is larger than second_size {second}")]
    Inverted { first: u64, second: u64 },
    /// A consistency proof was asked from the empty tree.
    #[error("first_size must be at least 1: every log extends the empty tree, so there is nothing to prove")]
    EmptyFirst,
    /// Stored tree data is missing or malformed: the database was damaged or tampered with.
    #[error("the stored Merkle tree is damaged: {0}")]
    Damaged(String),
}

impl From<sqlx::Error> for LogError {
    fn from(e: sqlx::Error) -> Self {
        LogError::Store(e.into())
    }
}

impl From<LogError> for Error {
    fn from(e: LogError) -> Error {
        match e {
            LogError::Store(s) => Error::Store(s),
            e @ LogError::SizeBeyondLog { .. } => Error::OutOfRange(e.to_string()),
            e @ LogError::NoSuchEntry { .. } => Error::NotFound(e.to_string()),
            e @ (LogError::LeafNotInTree { .. } | LogError::Inverted { .. } | LogError::EmptyFirst) => {
                Error::InvalidArgument(e.to_string())
            }
            e @ LogError::Damaged(_) => Error::Internal(e.to_string()),
        }
    }
}

fn damaged(e: ProofError) -> LogError {
    LogError::Damaged(e.to_string())
}

struct Inner {
    store: Store,
    signer: CheckpointSigner,
    clock: SharedClock,
    cadence: Mutex<Cadence>,
    /// The tree as this replica last integrated it. The lock serializes this replica's integrations;
    /// the database lock on `merkle_head` serializes replicas, and a stale copy is reloaded.
    tree: tokio::sync::Mutex<CompactTree>,
    /// The newest signed checkpoint, for the delivery streams.
    latest: watch::Sender<Option<SignedCheckpoint>>,
    /// Wakes the integrator after a commit: the shared committer's
    /// [`Committer::audit_committed`].
    nudge: Arc<Notify>,
    /// The shared committer, which appends the entries that stand alone.
    commits: Committer,
}

/// The gateway's audit log handle. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog(Arc<Inner>);

impl AuditLog {
    /// A handle over `store`, appending the entries that stand alone through `commits` (the shared
    /// committer over the same store), signing checkpoints with `signer`.
    pub fn new(
        store: Store,
        commits: Committer,
        signer: CheckpointSigner,
        clock: SharedClock,
        cadence: Cadence,
    ) -> AuditLog {
        AuditLog(Arc::new(Inner {
            store,
            signer,
            clock,
            cadence: Mutex::new(cadence),
            tree: tokio::sync::Mutex::new(CompactTree::new()),
            latest: watch::channel(None).0,
            nudge: commits.audit_committed(),
            commits,
        }))
    }

    /// Changes the checkpoint cadence (after a policy reload).
    pub fn set_cadence(&self, cadence: Cadence) {
        if let Ok(mut c) = self.0.cadence.lock() {
            *c = cadence;
        }
    }

    fn cadence(&self) -> Cadence {
        self.0.cadence.lock().map(|c| *c).unwrap_or_default()
    }

    /// The store the log lives in.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Subscribes to new signed checkpoints: the receiver holds the newest one (`None` before the
    /// first) and changes whenever a newer one is signed, by this replica or another.
    pub fn subscribe(&self) -> watch::Receiver<Option<SignedCheckpoint>> {
        self.0.latest.subscribe()
    }

    /// The newest signed checkpoint this replica knows, without touching the database.
    pub fn latest_signed(&self) -> Option<SignedCheckpoint> {
        self.0.latest.borrow().clone()
    }

    fn publish(&self, cp: &Checkpoint) {
        let newer = |cur: &Option<SignedCheckpoint>| {
            cur.as_ref().is_none_or(|c| (cp.tree_size, cp.timestamp_micros) > (c.tree_size, c.timestamp_micros))
        };
        self.0.latest.send_if_modified(|cur| {
            if newer(cur) {
                *cur = Some(SignedCheckpoint::from(cp));
                true
            } else {
                false
            }
        });
    }

    /// Appends entries that stand alone (not part of another state change) as a unit of the shared
    /// committer ([`Committer::record`]): concurrent callers, and the state changes queued beside them,
    /// share one transaction and one fsync, and each returns only once its entries are durably
    /// committed. Returns the first assigned seq.
    pub async fn record(&self, entries: Vec<(AuditEntry, String)>) -> Result<u64, LogError> {
        Ok(self.0.commits.record(entries).await?)
    }

    /// Runs the integrator in the background until the returned task is aborted: it integrates within
    /// [`POLL`] of any commit (at once after a shared commit that appended entries), signs checkpoints
    /// on the cadence, and publishes the newest checkpoint, whichever replica signed it.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = log.0.nudge.notified() => {}
                }
                if let Err(e) = log.integrate().await {
                    tracing::warn!(error = %e, "audit log integration failed; retrying");
                }
                // Published once on disk: it may have been signed by a commit whose sync is under way.
                match log.latest_checkpoint().await {
                    Ok(read) => match log.0.store.settle(read).await {
                        Ok(Some(cp)) => log.publish(&cp),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "the newest audit checkpoint is not on disk; not published")
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot read the newest audit checkpoint"),
                }
                // Let commits pile up between passes: one integration (and its write lock and fsync)
                // per batch of commits, not one per commit.
                tokio::time::sleep(MIN_GAP).await;
            }
        })
    }

    /// Integrates every committed entry, signing a checkpoint if the cadence calls for one. Returns
    /// the integrated size.
    pub async fn integrate(&self) -> Result<u64, LogError> {
        self.integrate_inner(false).await
    }

    async fn integrate_inner(&self, cover: bool) -> Result<u64, LogError> {
        // A cheap read first, so that an idle poll never takes the write lock.
        if !cover {
            let (committed, integrated) = self.sizes().await?;
            let latest = self.latest().await?;
            if committed == integrated && !self.due(latest.as_ref(), integrated) {
                return Ok(integrated);
            }
        }
        let mut cached = self.0.tree.lock().await;
        loop {
            let (size, done) = self.integrate_batch(&mut cached, cover).await?;
            if done {
                return Ok(size);
            }
        }
    }

    /// The committed (`audit_head`) and integrated (`merkle_head`) sizes.
    async fn sizes(&self) -> Result<(u64, u64), LogError> {
        Ok(merkle_store::sizes(self.0.store.pool()).await?)
    }

    /// Whether the cadence calls for a checkpoint of a log of `size` entries.
    fn due(&self, latest: Option<&Checkpoint>, size: u64) -> bool {
        let cadence = self.cadence();
        match latest {
            None => size > 0,
            Some(cp) if size <= cp.tree_size => false,
            Some(cp) => {
                let age = self.0.clock.now_micros().saturating_sub(cp.timestamp_micros);
                size - cp.tree_size >= cadence.every_entries.max(1)
                    || age >= i64::try_from(cadence.every.as_micros()).unwrap_or(i64::MAX)
            }
        }
    }

    /// One integration transaction. With `cover`, the last batch also signs a checkpoint of the whole
    /// integrated log unless the newest one already covers it. Returns the size and whether the log is
    /// fully integrated.
    async fn integrate_batch(&self, cached: &mut CompactTree, cover: bool) -> Result<(u64, bool), LogError> {
        let store = &self.0.store;
        let mut tx = store.begin().await?;
        let size = merkle_store::lock_size(&mut tx).await?;
        if cached.size() != size {
            let dialect = tx.dialect();
            let frontier = fetch_nodes(&mut tx, dialect, &CompactTree::frontier_nodes(size)).await?;
            let hashes = CompactTree::frontier_nodes(size)
                .iter()
                .map(|id| {
                    frontier.get(id).copied().ok_or(ProofError::NodeNotFound { level: id.level, index: id.index })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(damaged)?;
            *cached = CompactTree::from_frontier(size, hashes).map_err(damaged)?;
        }
        let rows = merkle_store::entry_leaves(&mut tx, size, BATCH).await?;
        let mut tree = cached.clone();
        let mut nodes: Vec<(NodeId, Hash)> = Vec::with_capacity(rows.len() * 2);
        for (seq, leaf) in &rows {
            if *seq != tree.size() {
                // Cannot happen while seq is assigned under the audit_head lock; integrate up to the gap.
                break;
            }
            let leaf = merkle::hash_from_slice(leaf).map_err(damaged)?;
            nodes.extend(tree.push(leaf).map_err(damaged)?);
        }
        let new_size = tree.size();
        let done = rows.len() < BATCH;
        if new_size > size {
            merkle_store::insert_nodes(&mut tx, &nodes).await?;
            merkle_store::set_size(&mut tx, new_size).await?;
        }
        let latest = latest_in(&mut tx).await?;
        let sign = if done && cover {
            latest.as_ref().is_none_or(|cp| cp.tree_size != new_size)
        } else {
            self.due(latest.as_ref(), new_size)
        };
        let signed = if sign { Some(self.sign_in(&mut tx, new_size, &tree.root()).await?) } else { None };
        if new_size == size && signed.is_none() {
            tx.rollback().await?;
            return Ok((size, done));
        }
        tx.commit().await?;
        *cached = tree;
        if let Some(cp) = signed {
            tracing::debug!(tree_size = cp.tree_size, "signed audit checkpoint");
            self.publish(&cp);
        }
        Ok((new_size, done))
    }

    async fn sign_in(&self, tx: &mut Tx<'_>, size: u64, root: &Hash) -> Result<Checkpoint, LogError> {
        let cp = self.0.signer.sign(size, root, self.0.clock.now_micros());
        merkle_store::insert_checkpoint(tx, merkle_store::Signed::Audit, &StoredCheckpoint::of(&cp)).await?;
        Ok(cp)
    }

    /// A checkpoint that covers every entry committed before the call: the newest one if it already
    /// does, otherwise a new one, signed after integrating.
    pub async fn covering_checkpoint(&self) -> Result<Unsettled<Checkpoint>, LogError> {
        let size = self.integrate_inner(true).await?;
        let cp = match self.latest().await? {
            Some(cp) if cp.tree_size >= size => cp,
            // Another replica integrated further in between; sign over what is integrated now.
            _ => {
                self.integrate_inner(true).await?;
                self.latest().await?.ok_or_else(|| LogError::Damaged("no checkpoint after signing".into()))?
            }
        };
        Ok(Unsettled::read(cp))
    }

    /// The newest stored checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Unsettled<Option<Checkpoint>>, LogError> {
        Ok(Unsettled::read(self.latest().await?))
    }

    async fn latest(&self) -> Result<Option<Checkpoint>, LogError> {
        let mut conn = self.0.store.pool().acquire().await?;
        latest_in(&mut conn).await
    }

    /// Every stored checkpoint of at most `size` entries, oldest first.
    pub async fn checkpoints_upto(&self, size: u64) -> Result<Vec<Checkpoint>, LogError> {
        Ok(merkle_store::checkpoints_upto(self.0.store.pool(), size)
            .await?
            .into_iter()
            .map(StoredCheckpoint::checkpoint)
            .collect())
    }

    /// How many entries the tree holds.
    pub async fn integrated_size(&self) -> Result<u64, LogError> {
        Ok(self.sizes().await?.1)
    }

    /// Makes sure the tree holds at least `size` entries, integrating if needed.
    async fn ensure_integrated(&self, size: u64) -> Result<u64, LogError> {
        let mut have = self.integrated_size().await?;
        if size > have {
            have = self.integrate().await?;
        }
        if size > have {
            return Err(LogError::SizeBeyondLog { asked: size, size: have });
        }
        Ok(have)
    }

    /// The inclusion proof of entry `seq` in the tree of `tree_size` entries, and the entry's leaf hash
    /// as integrated.
    pub async fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<Unsettled<(Vec<Hash>, Hash)>, LogError> {
        let have = self.ensure_integrated(tree_size).await?;
        if seq >= tree_size {
            return Err(if seq >= have {
                LogError::NoSuchEntry { seq, size: have }
            } else {
                LogError::LeafNotInTree { seq, tree_size }
            });
        }
        let mut ids = merkle::inclusion_proof_nodes(seq, tree_size).map_err(damaged)?;
        ids.push(NodeId { level: 0, index: seq });
        let nodes = self.nodes(&ids).await?;
        let proof = merkle::inclusion_proof(&nodes, seq, tree_size).map_err(damaged)?;
        let leaf = merkle::NodeSource::subtree_hash(&nodes, 0, seq).map_err(damaged)?;
        Ok(Unsettled::read((proof, leaf)))
    }

    /// The consistency proof between the trees of `first` and `second` entries.
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Unsettled<Vec<Hash>>, LogError> {
        if first > second {
            return Err(LogError::Inverted { first, second });
        }
        if first == 0 {
            return Err(LogError::EmptyFirst);
        }
        self.ensure_integrated(second).await?;
        let ids = merkle::consistency_proof_nodes(first, second).map_err(damaged)?;
        let nodes = self.nodes(&ids).await?;
        Ok(Unsettled::read(merkle::consistency_proof(&nodes, first, second).map_err(damaged)?))
    }

    /// The stored perfect subtrees named by `ids` (those present).
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, LogError> {
        let mut conn = self.0.store.pool().acquire().await?;
        fetch_nodes(&mut conn, self.0.store.dialect(), ids).await
    }

    /// The leaf hashes of entries `[from, to)` as integrated, by seq, in order. Missing ones (a damaged
    /// database) are simply absent: the export shows what is there and the verifier names the gap.
    pub async fn leaves(&self, from: u64, to: u64) -> Result<Vec<(u64, Hash)>, LogError> {
        let rows = merkle_store::tree_leaves(self.0.store.pool(), from, to).await?;
        rows.iter().map(|(idx, hash)| Ok((*idx, merkle::hash_from_slice(hash).map_err(damaged)?))).collect()
    }
}

/// The newest stored checkpoint, read on `conn`.
async fn latest_in(conn: &mut AnyConnection) -> Result<Option<Checkpoint>, LogError> {
    Ok(merkle_store::latest_checkpoint(conn).await?.map(StoredCheckpoint::checkpoint))
}

/// Reads the named subtrees on `conn`, of a store of `dialect`, a bounded number per query.
async fn fetch_nodes(
    conn: &mut AnyConnection,
    dialect: Dialect,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, LogError> {
    let mut out = HashMap::with_capacity(ids.len());
    for (id, hash) in merkle_store::nodes(conn, dialect, ids).await? {
        out.insert(id, merkle::hash_from_slice(&hash).map_err(damaged)?);
    }
    Ok(out)
}
