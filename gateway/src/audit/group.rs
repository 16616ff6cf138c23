//! Group commit for entries that stand alone: concurrent callers of [`super::AuditLog::record`] share
//! one transaction and one fsync.
//!
//! One task owns the queue. It takes the first waiting request, then every other request already
//! queued (up to [`MAX_BATCH`] entries), appends them all through [`super::append`] in one
//! transaction, commits, and only then answers each caller with its own first seq. Durability is the
//! same as one transaction per caller (`synchronous=FULL` on SQLite, `synchronous_commit=on` on
//! PostgreSQL): nobody is answered before the commit that holds their entries is on disk, and if that
//! commit fails every caller in it gets the error and none of the entries exist. Under load the batch
//! grows by itself, because requests pile up while the previous commit's fsync runs.
//!
//! Entries that record a state change do not come here: they are appended in the transaction of that
//! change, which is how the audit rule ("same commit") is kept.

use std::sync::Arc;

use haven_trust::audit::AuditEntry;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::{Store, StoreError};

/// The most entries one shared commit takes.
const MAX_BATCH: usize = 4096;
/// Requests waiting for the committer.
const QUEUE: usize = 8192;

/// One caller's entries and where to answer.
pub(crate) struct Request {
    entries: Vec<(AuditEntry, String)>,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// Starts the committer task; it ends when every handle to the queue is gone.
///
/// `integrator` is woken after each commit, so the integrator picks the entries up at once.
pub(crate) fn start(store: Store, integrator: Arc<Notify>) -> mpsc::Sender<Request> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(store, integrator, rx));
    tx
}

/// Queues entries and waits until they are committed.
pub(crate) async fn submit(
    queue: &mpsc::Sender<Request>,
    entries: Vec<(AuditEntry, String)>,
) -> Result<u64, SubmitError> {
    let (reply, answer) = oneshot::channel();
    queue.send(Request { entries, reply }).await.map_err(|_| SubmitError::Stopped)?;
    answer.await.map_err(|_| SubmitError::Stopped)?.map_err(SubmitError::Store)
}

/// Why queued entries were not committed.
pub(crate) enum SubmitError {
    /// The committer task has stopped (a bug: it runs as long as the gateway).
    Stopped,
    /// The database failed; none of the batch was committed.
    Store(StoreError),
}

async fn run(store: Store, integrator: Arc<Notify>, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut count = batch[0].entries.len();
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    count += r.entries.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let lens: Vec<usize> = batch.iter().map(|r| r.entries.len()).collect();
        let mut all: Vec<(AuditEntry, String)> = Vec::with_capacity(count);
        let mut replies = Vec::with_capacity(batch.len());
        for r in batch {
            all.extend(r.entries);
            replies.push(r.reply);
        }
        match commit(&store, &mut all).await {
            Ok(first_seq) => {
                let mut seq = first_seq;
                for (reply, n) in replies.into_iter().zip(lens) {
                    let _ = reply.send(Ok(seq));
                    seq += n as u64;
                }
                integrator.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, entries = all.len(), "audit group commit failed");
                for reply in replies {
                    let _ = reply.send(Err(e.shared()));
                }
            }
        }
    }
}

async fn commit(store: &Store, entries: &mut [(AuditEntry, String)]) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let first = super::append(&mut tx, entries).await?;
    tx.commit().await?;
    Ok(first)
}
