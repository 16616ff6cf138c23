//! Shared commits: concurrent state changes (submissions, acknowledgements) and audit entries that
//! stand alone (an auditor's queries, through [`Committer::record`]) share one transaction and one
//! fsync. This is the gateway's one group committer.
//!
//! One task owns the queue of units of work. It takes the first waiting unit and every other already
//! queued (up to the caps below), begins one transaction, and runs the units one after another. A unit
//! writes through the batch's buffers, so one that fails has its buffered rows dropped, alone, and its
//! caller gets its own error. Then the audit entries of every unit that succeeded are appended in one
//! multi-row write, the transaction commits, and only then is each caller answered. So:
//!
//! - **durability is unchanged**: nobody is answered before the commit that holds their change is on
//!   disk (`synchronous_commit=on` on PostgreSQL; on SQLite the write-ahead log is synced beside the
//!   next batch, see `store::wal`, and the callers are answered when that sync returns), and if that
//!   commit fails every caller in it gets the error and none of the changes exist;
//! - **the audit rule is kept**: a unit's entries are committed in the same transaction as its change;
//! - **lock order is kept**: the batch takes its consent rows before its units run (a unit it could not
//!   settle takes its own, and then its items' rows, in its savepoint); the audit head is taken once,
//!   after them, and the queue's counts last, as every other writer does (consent row, audit head,
//!   counts), so a revocation that holds a consent row never waits on a batch that waits on it.
//!
//! Under load the batch grows by itself, because units pile up while the previous commit runs; with
//! one caller it is one transaction per unit, as before. A batch takes at most [`MAX_UNITS`] units
//! that read ([`MAX_UNITS_PG`] on PostgreSQL, where each may take a savepoint), and units that read
//! nothing (standalone audit entries, which take no savepoint) fill it up to [`MAX_BATCH`] in all, so
//! a burst of them shares one commit. After each commit that appended audit entries the audit log's
//! integrator is told ([`Committer::audit_committed`]), so it picks them up at once.
//!
//! Facts, then a plan, then effects: a unit names what it will read ([`Reads`]), and the batch reads
//! that for every unit at once, before they run ([`Prefetched`]). A unit issues no statement: it finds
//! its facts in `Batch::seen`, plans, and writes its effects through the batch's buffers. Where the
//! batch could not settle a unit's reads (see [`Prefetched::settled`]: on PostgreSQL, a consent row
//! another transaction held), the unit is left for a transaction of its own, on a connection of its
//! own, beside the committer, so that neither its batch nor the batches after it wait for that lock;
//! there the committer reads that unit's facts again under locks that wait ([`Prefetched::read_own`]), between `SAVEPOINT` and
//! `RELEASE` so that a failure (a lock timeout) is rolled back alone, and the unit runs the same plan
//! on them.

use std::sync::Arc;

use haven_trust::audit::AuditEntry;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AssertSqlSafe};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::error::Error;
pub use crate::routing::prefetch::{Prefetched, Reads};
use crate::routing::queue::{self, CountChanges};
use crate::routing::rows::{Mark, NewRows};
use crate::store::audit_log;
use crate::store::{Dialect, Store, StoreError, Tx};

/// The most units that read ([`Reads`] not empty) one shared commit takes on SQLite.
const MAX_UNITS: usize = 512;
/// The same on PostgreSQL: each unit whose reads the batch cannot settle takes a subtransaction, and
/// a transaction with more than 64 of them overflows PostgreSQL's per-backend cache, which slows every
/// session's snapshots. A unit that reads nothing is settled and takes none, so it is not counted.
const MAX_UNITS_PG: usize = 60;
/// The most units one shared commit takes in all: units that read nothing (standalone audit entries,
/// one or a few each) fill a batch past the caps above, so a burst of them shares one commit.
const MAX_BATCH: usize = 4096;
/// How many transactions of units that wait for a lock (see `commit_deferred`) run beside the
/// committer at once, each on a connection of its own.
const MAX_DEFERRED: usize = 4;
/// On PostgreSQL, how long a unit may wait for a row lock (a consent row another replica's batch
/// holds) before it fails alone and is answered UNAVAILABLE. Such units wait in a transaction of their
/// own, beside the committer (see `commit_deferred`), so the units that need no wait never wait for
/// them.
const PG_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";
/// Units waiting for the committer.
const QUEUE: usize = 4096;

/// What a unit of work writes: the rows submissions add, written together once every unit has run;
/// the audit entries to append (with each one's counterparty-scoped subject) after them; and the
/// queue's count changes, applied last. A unit gets these and the facts its batch read; it never gets
/// the transaction, so it cannot issue a statement of its own.
#[derive(Default)]
pub struct Effects {
    pub rows: NewRows,
    pub audit: Vec<(AuditEntry, String)>,
    pub counts: CountChanges,
}

/// How much of each buffer was written, to drop a failed unit's effects.
struct Marks(usize, usize, Mark);

impl Effects {
    fn mark(&self) -> Marks {
        Marks(self.audit.len(), self.counts.len(), self.rows.mark())
    }

    fn truncate(&mut self, m: Marks) {
        self.audit.truncate(m.0);
        self.counts.truncate(m.1);
        self.rows.truncate(m.2);
    }
}

/// The shared transaction and what its units wrote and read.
struct Batch<'c> {
    tx: Tx<'c>,
    effects: Effects,
    seen: Prefetched,
}

/// Called once the batch's fate is known: `Ok` when it committed and is on disk, with the `seq` given
/// to the first audit entry the unit appended (`None` if it appended none), or why not.
type Finish = Box<dyn FnOnce(Result<Option<u64>, &StoreError>) + Send>;
/// A queued unit with its result type erased: runs on the facts and buffers of a batch (or, given
/// none, does not run) and says whether it succeeded.
type Work = Box<dyn FnOnce(Option<(&Prefetched, &mut Effects)>) -> (bool, Finish) + Send>;

/// A queued unit: what it will read, and the work.
struct Job {
    reads: Reads,
    work: Work,
}

/// The handle callers queue units through. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Job>,
    /// Told after each commit that appended audit entries.
    audit_committed: Arc<Notify>,
}

const STOPPED: &str =
    "the shared commit this change was in did not complete (see the gateway's log); nothing was committed, retry";

impl Committer {
    /// Starts the committer task; it ends when every handle is gone.
    pub fn start(store: Store) -> Committer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let audit_committed = Arc::new(Notify::new());
        tokio::spawn(run(store, audit_committed.clone(), rx));
        Committer { queue: tx, audit_committed }
    }

    /// Told after each commit that appended audit entries (once on disk on PostgreSQL, once visible on
    /// SQLite), so the audit log's integrator, which waits on it, picks them up at once.
    pub fn audit_committed(&self) -> Arc<Notify> {
        self.audit_committed.clone()
    }

    /// Runs `unit` in the next shared transaction and returns its result once that transaction has
    /// committed. If `unit` fails, its effects are dropped (and only its own). What `reads` names is
    /// read beforehand for the whole batch; `unit` finds it in the facts it is given, and writes its
    /// effects through the buffers it is given.
    pub async fn run<T, F>(&self, reads: Reads, unit: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Prefetched, &mut Effects) -> Result<T, Error> + Send + 'static,
    {
        Ok(self.queue(reads, unit).await?.0)
    }

    /// Appends audit entries that stand alone (not part of another state change) in the next shared
    /// transaction, as a unit that reads nothing, and returns once they are committed and on disk, with
    /// the `seq` of the first (0 when there are none). Each entry comes with its counterparty-scoped
    /// subject, as in [`Effects::audit`].
    pub async fn record(&self, entries: Vec<(AuditEntry, String)>) -> Result<u64, StoreError> {
        let appended = self.queue(Reads::default(), move |_, effects| {
            effects.audit.extend(entries);
            Ok(())
        });
        match appended.await {
            Ok(((), first)) => Ok(first.unwrap_or_default()),
            Err(Error::Store(e)) => Err(e),
            // The unit itself cannot fail: the committer answers with store errors alone.
            Err(e) => Err(StoreError::Commit(e.to_string())),
        }
    }

    /// [`Committer::run`], answering also with the `seq` of the first audit entry `unit` appended.
    async fn queue<T, F>(&self, reads: Reads, unit: F) -> Result<(T, Option<u64>), Error>
    where
        T: Send + 'static,
        F: FnOnce(&Prefetched, &mut Effects) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<(T, Option<u64>), Error>>();
        let work: Work = Box::new(move |batch| {
            let result = batch.map(|(seen, effects)| unit(seen, effects));
            let ok = matches!(result, Some(Ok(_)));
            let finish: Finish = Box::new(move |outcome| {
                let _ = reply.send(match (result, outcome) {
                    (Some(Err(e)), _) => Err(e),
                    (Some(Ok(v)), Ok(first)) => Ok((v, first)),
                    (_, Err(why)) => Err(Error::Store(why.shared())),
                    (None, Ok(_)) => Err(Error::Store(StoreError::Commit(
                        "the shared transaction ended before this change ran".to_owned(),
                    ))),
                });
            });
            (ok, finish)
        });
        self.queue.send(Job { reads, work }).await.map_err(|_| Error::Store(StoreError::Commit(STOPPED.into())))?;
        answer.await.map_err(|_| Error::Store(StoreError::Commit(STOPPED.into())))?
    }
}

async fn run(store: Store, audit_committed: Arc<Notify>, mut rx: mpsc::Receiver<Job>) {
    // The connection the last batch committed on, kept for the next one while units are waiting and
    // no other writer is: it saves the pool's check-in (which pings the connection) and check-out
    // between batches, and on SQLite keeps the page cache the last batch warmed.
    let mut conn: Option<PoolConnection<Any>> = None;
    let max_reading = match store.dialect() {
        Dialect::Sqlite => MAX_UNITS,
        Dialect::Postgres => MAX_UNITS_PG,
    };
    let deferring = Arc::new(Semaphore::new(MAX_DEFERRED));
    // A unit taken from the queue that the last batch had no room for: the first of the next.
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        let jobs;
        (jobs, next) = take_batch(first, &mut rx, max_reading);
        // Each batch runs as a task of its own, so a unit that panics fails its batch (its callers
        // see the committer's error) and the committer goes on with the next.
        match tokio::spawn(commit_batch(store.clone(), conn.take(), jobs)).await {
            Ok((appended, kept, deferred)) => {
                if appended {
                    audit_committed.notify_one();
                }
                conn = kept;
                if !deferred.is_empty() {
                    // At most [`MAX_DEFERRED`] such transactions at once; past that the committer
                    // waits for one to end.
                    if let Ok(permit) = deferring.clone().acquire_owned().await {
                        let (store, audit_committed) = (store.clone(), audit_committed.clone());
                        tokio::spawn(async move {
                            if commit_deferred(store, deferred).await {
                                audit_committed.notify_one();
                            }
                            drop(permit);
                        });
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "a shared commit panicked; its callers were told nothing committed"),
        }
        if (next.is_none() && rx.is_empty()) || store.writer_wanted() {
            conn = None;
        }
    }
}

/// A batch: `first`, then the units already queued, in order, up to `max_reading` units that read and
/// [`MAX_BATCH`] in all. Returns the batch, and the unit that read past the cap if one was taken from
/// the queue: it begins the next batch.
fn take_batch(first: Job, rx: &mut mpsc::Receiver<Job>, max_reading: usize) -> (Vec<Job>, Option<Job>) {
    let mut reading = usize::from(!first.reads.is_empty());
    let mut jobs = vec![first];
    while jobs.len() < MAX_BATCH {
        let Ok(job) = rx.try_recv() else { break };
        if !job.reads.is_empty() {
            if reading >= max_reading {
                return (jobs, Some(job));
            }
            reading += 1;
        }
        jobs.push(job);
    }
    (jobs, None)
}

/// Runs the jobs in one transaction on `held` (or a connection from the pool) and answers each.
/// Returns whether audit entries were committed, and the connection if the commit succeeded (one
/// that failed may be broken, or still count its transaction; the pool checks it, and replaces it).
async fn commit_batch(
    store: Store,
    held: Option<PoolConnection<Any>>,
    jobs: Vec<Job>,
) -> (bool, Option<PoolConnection<Any>>, Vec<Job>) {
    let mut conn = match held {
        Some(conn) => conn,
        None => match store.writer().await {
            Ok(conn) => conn,
            Err(e) => {
                fail_all(jobs, &e);
                return (false, None, Vec::new());
            }
        },
    };
    let (appended, ok, deferred) = commit_on(&store, &mut conn, jobs, false).await;
    (appended, ok.then_some(conn), deferred)
}

/// Runs units whose reads their batch could not settle (on PostgreSQL, a consent row another
/// transaction held) in a transaction of their own, on a connection of their own, beside the
/// committer: each reads its facts under locks that wait, so neither the units of its batch nor the
/// batches after it wait for those locks. Returns whether audit entries were committed. Never on
/// SQLite: there a batch's reads always settle (it holds the one write lock), and the committer holds
/// the one writer connection.
async fn commit_deferred(store: Store, jobs: Vec<Job>) -> bool {
    let mut conn = match store.writer().await {
        Ok(conn) => conn,
        Err(e) => {
            fail_all(jobs, &e);
            return false;
        }
    };
    commit_on(&store, &mut conn, jobs, true).await.0
}

/// Answers every job with why its shared commit could not begin.
fn fail_all(jobs: Vec<Job>, e: &StoreError) {
    tracing::error!(error = %e, units = jobs.len(), "cannot begin a shared commit");
    for job in jobs {
        let (_, finish) = (job.work)(None);
        finish(Err(e));
    }
}

/// Runs the jobs in one transaction on `conn`; returns whether audit entries were committed, whether
/// the transaction committed, and the jobs it left for a transaction of their own. With `own_reads`,
/// nothing is read for the batch: each unit reads its own facts, under locks that wait, in a
/// savepoint. Without, the batch reads for all of them, runs those its reads settle, and leaves the
/// others.
async fn commit_on(store: &Store, conn: &mut AnyConnection, jobs: Vec<Job>, own_reads: bool) -> (bool, bool, Vec<Job>) {
    let mut deferred = Vec::new();
    let mut finishes: Vec<Finish> = Vec::with_capacity(jobs.len());
    // Beside each finish: where in the batch's audit entries the unit's begin, if it appended any.
    let mut starts: Vec<Option<usize>> = Vec::with_capacity(jobs.len());
    let mut batch = match store.begin_on(conn).await {
        Ok(tx) => Batch { tx, effects: Effects::default(), seen: Prefetched::default() },
        Err(e) => {
            fail_all(jobs, &e);
            return (false, false, deferred);
        }
    };
    let postgres = batch.tx.dialect() == Dialect::Postgres;
    let mut broken: Option<StoreError> = None;
    if postgres && let Err(e) = sqlx::raw_sql(PG_LOCK_TIMEOUT).execute(&mut *batch.tx).await {
        broken = Some(e.into());
    }
    let (reads, jobs): (Vec<Reads>, Vec<Work>) = jobs.into_iter().map(|j| (j.reads, j.work)).unzip();
    if broken.is_none() && !own_reads && reads.iter().any(|r| !r.is_empty()) {
        match Prefetched::read(&mut batch.tx, reads.iter()).await {
            Ok(seen) => batch.seen = seen,
            Err(e) => broken = Some(e.into()),
        }
    }
    // What closes the last unit's savepoint when it succeeded: it goes out with the statement that
    // opens the next one, in one round trip.
    let mut close = "";
    for (work, reads) in jobs.into_iter().zip(reads) {
        // Once the transaction is unusable, the remaining units do not run.
        if broken.is_some() {
            finishes.push(work(None).1);
            starts.push(None);
            continue;
        }
        // A unit issues statements of its own only where the batch could not settle its reads, and
        // then in a transaction of its own.
        let savepoint = own_reads || !batch.seen.settled(&reads);
        if savepoint && !own_reads {
            deferred.push(Job { reads, work });
            continue;
        }
        if savepoint {
            let open = format!("{close}SAVEPOINT unit");
            close = "";
            if let Err(e) = sqlx::raw_sql(AssertSqlSafe(open)).execute(&mut *batch.tx).await {
                broken = Some(e.into());
                finishes.push(work(None).1);
                starts.push(None);
                continue;
            }
        }
        let marks = batch.effects.mark();
        let audited = marks.0;
        // A unit the batch's reads did not settle has its own facts read under locks that wait, and
        // then runs exactly as a settled unit does, on them.
        let own = if savepoint { Some(Prefetched::read_own(&mut batch.tx, &reads).await) } else { None };
        let (ok, finish) = match own {
            None => work(Some((&batch.seen, &mut batch.effects))),
            Some(Ok(own)) => work(Some((&own, &mut batch.effects))),
            Some(Err(e)) => {
                let (_, finish) = work(None);
                let failed: Finish = Box::new(move |_| finish(Err(&e)));
                (false, failed)
            }
        };
        if !ok {
            batch.effects.truncate(marks);
        }
        finishes.push(finish);
        starts.push((batch.effects.audit.len() > audited).then_some(audited));
        if savepoint && ok {
            close = "RELEASE SAVEPOINT unit; ";
        } else if savepoint
            && let Err(e) =
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT unit; RELEASE SAVEPOINT unit").execute(&mut *batch.tx).await
        {
            // Undone at once, so the next unit never sees what this one wrote.
            broken = Some(e.into());
        }
    }
    if broken.is_none()
        && !close.is_empty()
        && let Err(e) = sqlx::raw_sql(AssertSqlSafe(close.trim_end_matches("; "))).execute(&mut *batch.tx).await
    {
        broken = Some(e.into());
    }
    let Batch { mut tx, effects: Effects { rows, mut audit, counts }, .. } = batch;
    let appended = !audit.is_empty();
    let outcome = match broken {
        Some(why) => Err(why.commit_failed()),
        None => async {
            rows.write(&mut tx).await?;
            if appended {
                audit_log::append(&mut tx, &mut audit).await?;
            }
            queue::apply_counts(&mut tx, &counts).await?;
            tx.commit_visible().await
        }
        .await
        .map_err(StoreError::commit_failed),
    };
    let committed = outcome.is_ok();
    // Each unit's first entry, numbered by the append.
    let firsts: Vec<Option<u64>> =
        starts.into_iter().map(|start| start.and_then(|i| audit.get(i)).map(|(entry, _)| entry.seq)).collect();
    match outcome {
        // Already on disk (PostgreSQL): the callers are answered now.
        Ok(durable) if durable.is_ready() => {
            for (finish, first) in finishes.into_iter().zip(firsts) {
                finish(Ok(first));
            }
        }
        // The callers are answered once the commit is on disk; meanwhile the next batch runs.
        Ok(durable) => {
            tokio::spawn(async move {
                let synced = durable.wait().await;
                if let Err(e) = &synced {
                    tracing::error!(error = %e, units = finishes.len(), "a shared commit could not be synced");
                }
                for (finish, first) in finishes.into_iter().zip(firsts) {
                    finish(synced.as_ref().map(|_| first));
                }
            });
        }
        Err(e) => {
            tracing::error!(error = %e, units = finishes.len(), "shared commit failed; nothing in it was committed");
            for finish in finishes {
                finish(Err(&e));
            }
        }
    }
    (appended && committed, committed, deferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queued unit that reads `reads` senders (the work is never run).
    fn job(reads: usize) -> Job {
        let work: Work = Box::new(|_| {
            let finish: Finish = Box::new(|_| {});
            (true, finish)
        });
        Job { reads: Reads { senders: vec!["harbor".to_owned(); reads], ..Reads::default() }, work }
    }

    /// Units that read count toward PostgreSQL's cap (each may take a savepoint); units that read
    /// nothing (standalone audit entries) do not, so a burst of them shares one commit with them.
    #[tokio::test]
    async fn units_that_read_nothing_fill_a_batch_past_the_savepoint_cap() {
        let (tx, mut rx) = mpsc::channel(2 * MAX_BATCH);
        // 70 units that read, each followed by ten that read nothing.
        for _ in 0..70 {
            tx.send(job(1)).await.unwrap();
            for _ in 0..10 {
                tx.send(job(0)).await.unwrap();
            }
        }
        let first = rx.recv().await.unwrap();
        let (batch, next) = take_batch(first, &mut rx, MAX_UNITS_PG);
        let reading = batch.iter().filter(|j| !j.reads.is_empty()).count();
        assert_eq!(reading, MAX_UNITS_PG, "units that read up to the cap");
        assert_eq!(batch.len(), MAX_UNITS_PG * 11, "with every unit that reads nothing queued among them");
        let next = next.expect("the unit past the cap was kept");
        assert!(!next.reads.is_empty(), "the unit past the cap begins the next batch");
        let (batch, next) = take_batch(next, &mut rx, MAX_UNITS_PG);
        assert_eq!(batch.len(), 10 * 11, "the rest, in order");
        assert!(next.is_none() && rx.is_empty());

        // A burst of standalone entries alone: up to MAX_BATCH in one commit.
        for _ in 0..MAX_BATCH + 5 {
            tx.send(job(0)).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        let (batch, next) = take_batch(first, &mut rx, MAX_UNITS_PG);
        assert_eq!(batch.len(), MAX_BATCH);
        assert!(next.is_none());
        assert_eq!(rx.len(), 5);
    }
}
