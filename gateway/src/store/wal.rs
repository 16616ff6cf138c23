//! Syncing SQLite's write-ahead log beside the writes (group commit with the fsync off the writer).
//!
//! With `synchronous = FULL`, SQLite syncs the write-ahead log inside every COMMIT, and holds the write
//! lock meanwhile, so no write can begin while the disk works: under load a shared commit spent about
//! 40 % of its time in that fsync. The writer connection therefore runs with `synchronous = NORMAL`: a
//! COMMIT appends its frames to the log and makes them visible, without syncing. This module then
//! syncs the log file itself, on a thread of its own, while the writer goes on with the next
//! transaction; one sync covers every commit made before it began. Nobody is answered for a write
//! before the sync that covers it has returned ([`Durable::wait`]), so a success reply still means
//! committed with fsync.
//!
//! Why this is sound: the log is written in order, so a sync makes a prefix of it durable, and SQLite
//! recovers the log up to its last whole commit (a commit whose frames were not all synced is dropped
//! as a whole at recovery, as with any crash mid-write). `synchronous = NORMAL` keeps the database
//! consistent on its own: a checkpoint syncs the log before copying it and the database file after.
//!
//! Between its COMMIT and the sync, a write is visible to readers but not yet durable. What leaves the
//! gateway is held back until it is: units are answered, and delivery streams woken, after the sync;
//! and a read that answers a caller first waits with [`WalSync::settled`] for every commit it could
//! have seen.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

use super::StoreError;

/// How far the log is known to be on disk: every commit numbered `upto` or lower is; and the last
/// sync that failed, with the highest commit it was to cover and why.
#[derive(Debug, Clone, Default)]
struct Synced {
    upto: u64,
    failed: Option<(u64, Arc<str>)>,
}

/// The commits made on SQLite's writer connection, and how many of them are on disk.
#[derive(Debug)]
pub(super) struct WalSync {
    /// The database file; its log is this path with `-wal` appended.
    db: PathBuf,
    /// Commits made visible so far, numbered from 1.
    committed: AtomicU64,
    synced: watch::Sender<Synced>,
    /// Wakes the syncing task after a commit.
    kick: Notify,
    closed: AtomicBool,
}

impl WalSync {
    /// Starts the syncing task for the database file at `db`.
    pub(super) fn start(db: PathBuf) -> Arc<WalSync> {
        let sync = Arc::new(WalSync {
            db,
            committed: AtomicU64::new(0),
            synced: watch::channel(Synced::default()).0,
            kick: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(run(sync.clone()));
        sync
    }

    /// Counts a commit that has returned on the writer connection and asks for a sync that covers it.
    pub(super) fn committed(self: &Arc<Self>) -> Durable {
        let seq = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        self.kick.notify_one();
        Durable(Some((seq, self.clone())))
    }

    /// Waits until every commit made so far is on disk.
    pub(super) async fn settled(&self) -> Result<(), StoreError> {
        self.reached(self.committed.load(Ordering::SeqCst)).await
    }

    /// Waits until commit `seq` is on disk, or fails if the sync that was to cover it failed.
    async fn reached(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.synced.subscribe();
        let state = rx
            .wait_for(|s| s.upto >= seq || s.failed.as_ref().is_some_and(|(to, _)| *to >= seq))
            .await
            .map_err(|_| StoreError::Commit(STOPPED.into()))?
            .clone();
        match state.failed {
            Some((_, why)) if state.upto < seq => {
                Err(StoreError::Unsynced(format!("syncing the write-ahead log of {} failed: {why}", self.db.display())))
            }
            _ => Ok(()),
        }
    }

    /// Ends the syncing task after a last sync.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.kick.notify_one();
    }
}

const STOPPED: &str = "the database's write-ahead log is no longer synced (the store was closed); retry";

/// A commit's claim on the sync that covers it; `Durable::ready` for one that is durable already
/// (PostgreSQL commits, which the server syncs before it answers).
#[must_use = "a commit is not durable until its sync is waited for"]
pub struct Durable(Option<(u64, Arc<WalSync>)>);

impl Durable {
    /// A commit that was synced when it returned.
    pub(super) fn ready() -> Durable {
        Durable(None)
    }

    /// Waits until the commit is on disk.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            Some((seq, sync)) => sync.reached(seq).await,
            None => Ok(()),
        }
    }
}

/// Syncs the log whenever commits were made since the last sync, until the store closes.
async fn run(sync: Arc<WalSync>) {
    loop {
        let target = sync.committed.load(Ordering::SeqCst);
        if target <= sync.synced.borrow().upto {
            if sync.closed.load(Ordering::SeqCst) {
                return;
            }
            // A commit made between the load and here left a permit, so it is not missed.
            sync.kick.notified().await;
            continue;
        }
        let db = sync.db.clone();
        let outcome = match tokio::task::spawn_blocking(move || sync_log(&db)).await {
            Ok(outcome) => outcome,
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        match outcome {
            Ok(()) => sync.synced.send_modify(|s| s.upto = target),
            Err(e) => {
                tracing::error!(error = %e, db = %sync.db.display(), "cannot sync SQLite's write-ahead log; changes since the last sync are not answered as committed");
                sync.synced.send_modify(|s| s.failed = Some((target, e.to_string().into())));
                // The next commit tries again.
                sync.kick.notified().await;
            }
        }
    }
}

/// Syncs the database's write-ahead log. If there is none, the last connection to close copied it
/// into the database file and removed it, and that file is synced instead (SQLite syncs it after such
/// a copy as well).
fn sync_log(db: &std::path::Path) -> io::Result<()> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    match File::open(&wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => File::open(db)?.sync_data(),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A commit whose sync fails is reported as not durable to everyone waiting on it, and the failure
    /// does not stick: the next commit's sync, once the disk is usable again, succeeds.
    #[tokio::test]
    async fn a_failed_sync_fails_its_commits_and_the_next_sync_retries() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("missing").join("haven.db");
        let sync = WalSync::start(db.clone());
        let bound = Duration::from_secs(10);

        // Neither the log nor the database file can be opened, so the sync fails.
        let claim = sync.committed();
        let err = tokio::time::timeout(bound, claim.wait()).await.expect("the claim was answered").unwrap_err();
        assert!(matches!(err, StoreError::Unsynced(_)), "{err}");
        let err = tokio::time::timeout(bound, sync.settled()).await.expect("settled was answered").unwrap_err();
        assert!(matches!(err, StoreError::Unsynced(_)), "{err}");

        // The log exists now: the next commit's sync covers it and the earlier one.
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::write(dir.path().join("missing").join("haven.db-wal"), b"frames").unwrap();
        let claim = sync.committed();
        tokio::time::timeout(bound, claim.wait()).await.expect("the claim was answered").unwrap();
        tokio::time::timeout(bound, sync.settled()).await.expect("settled was answered").unwrap();
        assert_eq!(sync.synced.borrow().upto, 2, "one sync covered both commits made so far");
        sync.close();
    }

    /// A commit is answered only by a sync that began after it: with no commit made, nothing is
    /// synced and `settled` has nothing to wait for; claims are answered in any order.
    #[tokio::test]
    async fn claims_are_answered_once_a_sync_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("haven.db");
        std::fs::write(&db, b"").unwrap();
        let sync = WalSync::start(db);
        let bound = Duration::from_secs(10);
        tokio::time::timeout(bound, sync.settled()).await.expect("nothing to wait for").unwrap();
        assert_eq!(sync.synced.borrow().upto, 0);
        let claims: Vec<Durable> = (0..5).map(|_| sync.committed()).collect();
        for claim in claims.into_iter().rev() {
            tokio::time::timeout(bound, claim.wait()).await.expect("the claim was answered").unwrap();
        }
        assert_eq!(sync.synced.borrow().upto, 5, "every commit is covered");
        sync.close();
    }
}
