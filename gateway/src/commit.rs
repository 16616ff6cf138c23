//! Shared commits: concurrent state changes (submissions, acknowledgements) share one transaction
//! and one fsync.
//!
//! One task owns the queue of units of work. It takes the first waiting unit and every other already
//! queued (up to [`MAX_UNITS`]), begins one transaction, and runs the units one after another. A unit
//! writes through the batch's buffers, so one that fails has its buffered rows dropped, alone, and its
//! caller gets its own error. Then the audit entries of every unit that succeeded are appended in one
//! multi-row write, the transaction commits, and only then is each caller answered. So:
//!
//! - **durability is unchanged**: nobody is answered before the commit that holds their change is on
//!   disk (`synchronous_commit=on` on PostgreSQL; on SQLite the write-ahead log is synced beside the
//!   next batch, see `store::wal`, and the callers are answered when that sync returns), and if that
//!   commit fails every caller in it gets the error and none of the changes exist;
//! - **the audit rule is kept**: a unit's entries are committed in the same transaction as its change;
//! - **lock order is kept**: units take their consent rows as they run; the audit head is taken once,
//!   after them, and the queue's counts last, as every other writer does (consent row, audit head,
//!   counts), so a revocation that holds a consent row never waits on a batch that waits on it.
//!
//! Under load the batch grows by itself, because units pile up while the previous commit runs; with
//! one caller it is one transaction per unit, as before.
//!
//! Facts, then a plan, then effects: a unit names what it will read ([`Reads`]), and the batch reads
//! that for every unit at once, before they run ([`Prefetched`]). A unit issues no statement: it finds
//! its facts in `Batch::seen`, plans, and writes its effects through the batch's buffers. Where the
//! batch could not settle a unit's reads (see [`Prefetched::settled`]: on PostgreSQL, a consent row
//! another transaction held), the committer reads that unit's facts again under locks that wait
//! ([`Prefetched::read_own`]), between `SAVEPOINT` and `RELEASE` so that a failure (a lock timeout) is
//! rolled back alone, and the unit runs the same plan on them.

use haven_trust::audit::AuditEntry;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AssertSqlSafe};
use tokio::sync::{mpsc, oneshot};

use crate::audit;
use crate::error::Error;
pub use crate::routing::prefetch::{Prefetched, Reads};
use crate::routing::queue::{self, CountChanges};
use crate::routing::rows::{Mark, NewRows};
use crate::store::{Dialect, Store, StoreError, Tx};

/// The most units one shared commit takes on SQLite.
const MAX_UNITS: usize = 512;
/// On PostgreSQL: each unit that writes takes a subtransaction, and a transaction with more than 64
/// of them overflows PostgreSQL's per-backend cache, which slows every session's snapshots.
const MAX_UNITS_PG: usize = 60;
/// On PostgreSQL, how long a unit may wait for a row lock (a consent row another replica's batch
/// holds) before it fails alone and is answered UNAVAILABLE, so one blocked unit cannot hold up every
/// other change behind it.
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

/// Called once the batch's fate is known: `None` when it committed and is on disk, or why not.
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
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
}

const STOPPED: &str =
    "the shared commit this change was in did not complete (see the gateway's log); nothing was committed, retry";

impl Committer {
    /// Starts the committer task; it ends when every handle is gone. The log's integrator is nudged
    /// after each commit that appended audit entries.
    pub fn start(store: Store, committed: audit::AuditLog) -> Committer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, committed, rx));
        Committer { queue: tx }
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
        let (reply, answer) = oneshot::channel::<Result<T, Error>>();
        let work: Work = Box::new(move |batch| {
            let result = batch.map(|(seen, effects)| unit(seen, effects));
            let ok = matches!(result, Some(Ok(_)));
            let finish: Finish = Box::new(move |failed| {
                let _ = reply.send(match (result, failed) {
                    (Some(Err(e)), _) => Err(e),
                    (Some(Ok(v)), None) => Ok(v),
                    (_, Some(why)) => Err(Error::Store(why.shared())),
                    (None, None) => Err(Error::Store(StoreError::Commit(
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

async fn run(store: Store, committed: audit::AuditLog, mut rx: mpsc::Receiver<Job>) {
    // The connection the last batch committed on, kept for the next one while units are waiting and
    // no other writer is: it saves the pool's check-in (which pings the connection) and check-out
    // between batches, and on SQLite keeps the page cache the last batch warmed.
    let mut conn: Option<PoolConnection<Any>> = None;
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let max = if store.dialect() == Dialect::Postgres { MAX_UNITS_PG } else { MAX_UNITS };
        while jobs.len() < max {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // Each batch runs as a task of its own, so a unit that panics fails its batch (its callers
        // see the committer's error) and the committer goes on with the next.
        match tokio::spawn(commit_batch(store.clone(), conn.take(), jobs)).await {
            Ok((appended, kept)) => {
                if appended {
                    committed.nudge();
                }
                conn = kept;
            }
            Err(e) => tracing::error!(error = %e, "a shared commit panicked; its callers were told nothing committed"),
        }
        if rx.is_empty() || store.writer_wanted() {
            conn = None;
        }
    }
}

/// Runs the jobs in one transaction on `held` (or a connection from the pool) and answers each.
/// Returns whether audit entries were committed, and the connection if the commit succeeded (one
/// that failed may be broken, or still count its transaction; the pool checks it, and replaces it).
async fn commit_batch(
    store: Store,
    held: Option<PoolConnection<Any>>,
    jobs: Vec<Job>,
) -> (bool, Option<PoolConnection<Any>>) {
    let mut conn = match held {
        Some(conn) => conn,
        None => match store.writer().await {
            Ok(conn) => conn,
            Err(e) => {
                fail_all(jobs, &e);
                return (false, None);
            }
        },
    };
    let (appended, ok) = commit_on(&store, &mut conn, jobs).await;
    (appended, ok.then_some(conn))
}

/// Answers every job with why its shared commit could not begin.
fn fail_all(jobs: Vec<Job>, e: &StoreError) {
    tracing::error!(error = %e, units = jobs.len(), "cannot begin a shared commit");
    for job in jobs {
        let (_, finish) = (job.work)(None);
        finish(Some(e));
    }
}

/// Runs the jobs in one transaction on `conn`; returns whether audit entries were committed and
/// whether the transaction committed.
async fn commit_on(store: &Store, conn: &mut AnyConnection, jobs: Vec<Job>) -> (bool, bool) {
    let mut finishes: Vec<Finish> = Vec::with_capacity(jobs.len());
    let mut batch = match store.begin_on(conn).await {
        Ok(tx) => Batch { tx, effects: Effects::default(), seen: Prefetched::default() },
        Err(e) => {
            fail_all(jobs, &e);
            return (false, false);
        }
    };
    let postgres = batch.tx.dialect() == Dialect::Postgres;
    let mut broken: Option<StoreError> = None;
    if postgres && let Err(e) = sqlx::raw_sql(PG_LOCK_TIMEOUT).execute(&mut *batch.tx).await {
        broken = Some(e.into());
    }
    let (reads, jobs): (Vec<Reads>, Vec<Work>) = jobs.into_iter().map(|j| (j.reads, j.work)).unzip();
    if broken.is_none() && reads.iter().any(|r| !r.is_empty()) {
        match Prefetched::read(&mut batch.tx, reads.iter()).await {
            Ok(seen) => batch.seen = seen,
            Err(e) => broken = Some(e.into()),
        }
    }
    // What closes the last unit's savepoint when it succeeded: it goes out with the statement that
    // opens the next one, in one round trip.
    let mut close = "";
    for (work, reads) in jobs.into_iter().zip(&reads) {
        // Once the transaction is unusable, the remaining units do not run.
        if broken.is_some() {
            finishes.push(work(None).1);
            continue;
        }
        // A unit issues statements of its own only where the batch could not settle its reads.
        let savepoint = !batch.seen.settled(reads);
        if savepoint {
            let open = format!("{close}SAVEPOINT unit");
            close = "";
            if let Err(e) = sqlx::raw_sql(AssertSqlSafe(open)).execute(&mut *batch.tx).await {
                broken = Some(e.into());
                finishes.push(work(None).1);
                continue;
            }
        }
        let marks = batch.effects.mark();
        // A unit the batch's reads did not settle has its own facts read under locks that wait, and
        // then runs exactly as a settled unit does, on them.
        let own = if savepoint { Some(Prefetched::read_own(&mut batch.tx, reads).await) } else { None };
        let (ok, finish) = match own {
            None => work(Some((&batch.seen, &mut batch.effects))),
            Some(Ok(own)) => work(Some((&own, &mut batch.effects))),
            Some(Err(e)) => {
                let (_, finish) = work(None);
                let failed: Finish = Box::new(move |_| finish(Some(&e)));
                (false, failed)
            }
        };
        if !ok {
            batch.effects.truncate(marks);
        }
        finishes.push(finish);
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
                audit::append(&mut tx, &mut audit).await?;
            }
            queue::apply_counts(&mut tx, &counts).await?;
            tx.commit_visible().await
        }
        .await
        .map_err(StoreError::commit_failed),
    };
    let committed = outcome.is_ok();
    match outcome {
        // Already on disk (PostgreSQL): the callers are answered now.
        Ok(durable) if durable.is_ready() => {
            for finish in finishes {
                finish(None);
            }
        }
        // The callers are answered once the commit is on disk; meanwhile the next batch runs.
        Ok(durable) => {
            tokio::spawn(async move {
                let synced = durable.wait().await;
                if let Err(e) = &synced {
                    tracing::error!(error = %e, units = finishes.len(), "a shared commit could not be synced");
                }
                for finish in finishes {
                    finish(synced.as_ref().err());
                }
            });
        }
        Err(e) => {
            tracing::error!(error = %e, units = finishes.len(), "shared commit failed; nothing in it was committed");
            for finish in finishes {
                finish(Some(&e));
            }
        }
    }
    (appended && committed, committed)
}
