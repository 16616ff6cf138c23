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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

use super::StoreError;

/// How far the log is known to be on disk: every commit numbered `upto` or lower is. Once a sync has
/// failed, or the store has closed, no later commit ever is (`ended`).
#[derive(Debug, Clone, Default)]
struct Synced {
    upto: u64,
    ended: Option<Arc<str>>,
}

/// The commits made on SQLite's writer connection, and how many of them are on disk.
#[derive(Debug)]
pub(super) struct WalSync {
    /// The write-ahead log, open for as long as the store: a write-back error the kernel meets
    /// between two syncs is reported to a descriptor that was open before it (a fresh one would miss
    /// it). The writer connection also stays open as long as the store, so SQLite never removes it.
    log: Arc<File>,
    path: PathBuf,
    /// COMMITs begun so far, numbered from 1: a commit is visible to readers before its COMMIT
    /// returns, so a read that must wait for what it saw counts from here.
    begun: AtomicU64,
    /// COMMITs that have returned (or were abandoned): the most a sync may claim to cover.
    returned: AtomicU64,
    synced: watch::Sender<Synced>,
    /// Wakes the syncing task after a commit.
    kick: Notify,
}

impl WalSync {
    /// Opens the write-ahead log of the database file at `db` and starts the syncing task.
    pub(super) fn start(db: &Path) -> io::Result<Arc<WalSync>> {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        let sync = Arc::new(WalSync {
            log: Arc::new(File::open(&path)?),
            path,
            begun: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            synced: watch::channel(Synced::default()).0,
            kick: Notify::new(),
        });
        tokio::spawn(run(sync.clone()));
        Ok(sync)
    }

    /// Numbers a COMMIT about to be sent on the writer connection. The commit counts as returned when
    /// the ticket is dropped, whether the COMMIT succeeded, failed or was abandoned; the writer
    /// connection runs one COMMIT at a time, so the numbers return in order.
    pub(super) fn begin_commit(self: &Arc<Self>) -> Ticket {
        Ticket { seq: self.begun.fetch_add(1, Ordering::SeqCst) + 1, sync: self.clone() }
    }

    /// Waits until every commit begun so far is on disk.
    pub(super) async fn settled(&self) -> Result<(), StoreError> {
        self.reached(self.begun.load(Ordering::SeqCst)).await
    }

    /// Waits until commit `seq` is on disk, or fails once it never will be.
    async fn reached(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.synced.subscribe();
        let state = match rx.wait_for(|s| s.upto >= seq || s.ended.is_some()).await {
            Ok(state) => state.clone(),
            Err(_) => return Err(StoreError::Unsynced(format!("{} is no longer synced", self.path.display()))),
        };
        match state.ended {
            Some(why) if state.upto < seq => Err(StoreError::Unsynced(why.to_string())),
            _ => Ok(()),
        }
    }

    /// Ends the syncing task after a last sync; commits made later are never answered as durable.
    pub(super) fn close(&self) {
        self.end(format!("the store was closed before {} was synced", self.path.display()));
    }

    fn end(&self, why: String) {
        self.synced.send_if_modified(|s| {
            let first = s.ended.is_none();
            if first {
                s.ended = Some(why.into());
            }
            first
        });
        self.kick.notify_one();
    }
}

/// A COMMIT under way on the writer connection (see [`WalSync::begin_commit`]).
pub(super) struct Ticket {
    seq: u64,
    sync: Arc<WalSync>,
}

impl Ticket {
    /// The COMMIT succeeded: the claim on the sync that covers it.
    pub(super) fn committed(self) -> Durable {
        Durable(Some((self.seq, self.sync.clone())))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.sync.returned.fetch_max(self.seq, Ordering::SeqCst);
        self.sync.kick.notify_one();
    }
}

/// A commit's claim on the sync that covers it; `Durable::ready` for one that is durable already
/// (PostgreSQL commits, which the server syncs before it answers).
#[must_use = "a commit is not durable until its sync is waited for"]
pub struct Durable(Option<(u64, Arc<WalSync>)>);

impl Durable {
    /// A commit that was synced when it returned.
    pub(super) fn ready() -> Durable {
        Durable(None)
    }

    /// Whether the commit was on disk when it returned (nothing to wait for).
    pub fn is_ready(&self) -> bool {
        self.0.is_none()
    }

    /// Waits until the commit is on disk.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            Some((seq, sync)) => sync.reached(seq).await,
            None => Ok(()),
        }
    }
}

/// Syncs the log whenever commits have returned since the last sync, until the store closes or a
/// sync fails. A failed sync ends it for good: Linux may mark the pages it could not write as clean,
/// so a later sync that succeeds proves nothing about them (the gateway must be restarted, after the
/// disk is checked, and SQLite then recovers the log as it is on disk).
async fn run(sync: Arc<WalSync>) {
    loop {
        let target = sync.returned.load(Ordering::SeqCst);
        let (upto, ended) = {
            let s = sync.synced.borrow();
            (s.upto, s.ended.is_some())
        };
        if target <= upto {
            if ended {
                return;
            }
            // A commit that returned between the load and here left a permit, so it is not missed.
            sync.kick.notified().await;
            continue;
        }
        let log = sync.log.clone();
        let outcome = match tokio::task::spawn_blocking(move || log.sync_data()).await {
            Ok(outcome) => outcome,
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        match outcome {
            Ok(()) => {
                sync.synced.send_modify(|s| s.upto = target);
            }
            Err(e) => {
                tracing::error!(error = %e, log = %sync.path.display(), "cannot sync SQLite's write-ahead log; no change is answered as committed from now on: check the disk, then restart the gateway");
                sync.end(format!("syncing {} failed ({e}); the gateway must be restarted", sync.path.display()));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    /// A log to sync: the database file `haven.db` in `dir`, whose `-wal` is `target`.
    fn log_at(dir: &Path, target: Option<&Path>) -> PathBuf {
        let db = dir.join("haven.db");
        let wal = dir.join("haven.db-wal");
        match target {
            Some(target) => std::os::unix::fs::symlink(target, &wal).unwrap(),
            None => std::fs::write(&wal, b"frames").unwrap(),
        }
        db
    }

    /// A commit is answered once a sync that began after its COMMIT returned has returned; one sync
    /// covers every commit that returned before it; and `settled` waits for commits still under way.
    #[tokio::test]
    async fn claims_are_answered_once_a_sync_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let sync = WalSync::start(&log_at(dir.path(), None)).unwrap();
        tokio::time::timeout(BOUND, sync.settled()).await.expect("nothing to wait for").unwrap();
        assert_eq!(sync.synced.borrow().upto, 0, "nothing was synced without a commit");

        // A COMMIT under way: it may be visible already, so a read that may have seen it waits for
        // it, and no sync claims to cover it before it returns.
        let under_way = sync.begin_commit();
        let mut settled = Box::pin(sync.settled());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut settled).await.is_err(),
            "settled returned before the commit it may have seen was synced"
        );
        assert_eq!(sync.synced.borrow().upto, 0, "a sync claimed to cover a COMMIT that had not returned");
        let first = under_way.committed();
        tokio::time::timeout(BOUND, settled).await.expect("settled was answered").unwrap();
        tokio::time::timeout(BOUND, first.wait()).await.expect("the claim was answered").unwrap();
        // Claims made one after another are answered in any order.
        let claims: Vec<Durable> = (0..4).map(|_| sync.begin_commit().committed()).collect();
        for claim in claims.into_iter().rev() {
            tokio::time::timeout(BOUND, claim.wait()).await.expect("the claim was answered").unwrap();
        }
        assert_eq!(sync.synced.borrow().upto, 5, "every commit is covered");
        sync.close();
    }

    /// A COMMIT that fails or is abandoned still counts as returned, so nothing waits on it forever.
    #[tokio::test]
    async fn an_abandoned_commit_does_not_hold_up_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let sync = WalSync::start(&log_at(dir.path(), None)).unwrap();
        drop(sync.begin_commit());
        tokio::time::timeout(BOUND, sync.settled()).await.expect("settled was answered").unwrap();
        let claim = sync.begin_commit().committed();
        tokio::time::timeout(BOUND, claim.wait()).await.expect("the claim was answered").unwrap();
        sync.close();
    }

    /// A failed sync fails every commit it was to cover, and every later one: the kernel may have
    /// dropped the pages it could not write, so no later sync can vouch for them.
    #[tokio::test]
    async fn a_failed_sync_fails_its_commits_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        // A log that cannot be synced: the kernel refuses to sync a character device.
        let sync = WalSync::start(&log_at(dir.path(), Some(Path::new("/dev/null")))).unwrap();
        let claim = sync.begin_commit().committed();
        let err = tokio::time::timeout(BOUND, claim.wait()).await.expect("the claim was answered").unwrap_err();
        assert!(matches!(&err, StoreError::Unsynced(why) if why.contains("must be restarted")), "{err}");
        let later = sync.begin_commit().committed();
        let err = tokio::time::timeout(BOUND, later.wait()).await.expect("the claim was answered").unwrap_err();
        assert!(matches!(err, StoreError::Unsynced(_)), "{err}");
        let err = tokio::time::timeout(BOUND, sync.settled()).await.expect("settled was answered").unwrap_err();
        assert!(matches!(err, StoreError::Unsynced(_)), "{err}");
    }

    /// Once the store is closed, a commit is never answered as durable, and nobody waits forever.
    #[tokio::test]
    async fn after_close_nothing_waits_forever() {
        let dir = tempfile::tempdir().unwrap();
        let sync = WalSync::start(&log_at(dir.path(), None)).unwrap();
        sync.close();
        let claim = sync.begin_commit().committed();
        let err = tokio::time::timeout(BOUND, claim.wait()).await.expect("the claim was answered").unwrap_err();
        assert!(matches!(err, StoreError::Unsynced(_)), "{err}");
    }
}
