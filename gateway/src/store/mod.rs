//! Storage: one code path over SQLite (the embedded default) and PostgreSQL (for deployments that
//! outgrow one machine).
//!
//! The dialect is chosen once, from the URL, when the store opens ([`Dialect`]), and every write
//! transaction carries it ([`Tx::dialect`]). Most queries are written once, with `$N` placeholders that
//! both dialects accept, and run through sqlx's `Any` driver. Where the dialects differ: the
//! migrations (one script of each per version, embedded in the binary and applied at start-up); the
//! statements built in `dialect` (how placeholders are written, and how many rows one statement
//! takes); and the few statements that pick their text by the dialect they are given, for what only
//! one of them has (PostgreSQL's row locks and `pg_notify`, each one's JSON functions).
//!
//! Durability: SQLite runs in WAL mode, and every commit's log is synced before anyone is told of it
//! (the writer's sync runs beside the next write; see `wal`); PostgreSQL commits with its default
//! `synchronous_commit=on`. A success reply therefore always means committed with fsync.
//!
//! What stays on disk: SQLite's files are created (and, found looser, set) readable by their owner
//! alone; `secure_delete` overwrites what a write deletes in the database file, and the write-ahead
//! log, which keeps the older frames, is truncated whenever the gateway has been idle a moment and
//! when it shuts down (see `checkpoint_wal` and [`Store::truncate_wal`]).

pub mod audit_log;
pub mod bundles;
pub mod consents;
pub mod crl;
pub mod deliveries;
pub(crate) mod dialect;
pub mod key_log;
pub mod leases;
pub(crate) mod merkle;
pub use merkle::ENTRY_LEAVES;
pub mod messages;
mod migrate;
pub mod outbox;
pub mod reported;
mod wal;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use haven_trust::owner_only;
use sqlx::SqlSafeStr;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use tokio::sync::{Notify, watch};

pub use dialect::Dialect;
pub use wal::Durable;
use wal::WalSync;

/// SQLite: take the write lock at once.
const BEGIN_SQLITE: &str = "BEGIN IMMEDIATE";

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one Haven understands.
    #[error("database URL `{0}` is not supported: use a file path, `sqlite://PATH` or `postgres://...`")]
    BadUrl(String),
    /// A PostgreSQL server beyond loopback must be reached over verified TLS.
    #[error(
        "database `{host}` is not on loopback, so its URL must set `sslmode=verify-full` (and `sslrootcert=` if the server's CA is not a public one)"
    )]
    InsecureRemote { host: String },
    /// The file is not a SQLite database.
    #[error(
        "{path} is not a SQLite database (its header is not SQLite's): give --database the path of this gateway's database file, or a path where none exists yet to make a new one"
    )]
    NotSqlite { path: String },
    /// The database could not be reached or opened.
    #[error("cannot open database {url}: {}", reported::reported(.source))]
    Connect { url: String, source: sqlx::Error },
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {}", reported::reported(.source))]
    Migration { version: i64, name: &'static str, source: sqlx::Error },
    /// The database holds a migration this binary does not know (it is older than the database).
    #[error("the database was migrated by a newer Haven (migration {0} is unknown to this binary); upgrade the binary")]
    UnknownMigration(i64),
    /// A migration that was applied has different content now.
    #[error("migration {version} ({name}) was changed after it was applied; migrations are append-only")]
    ChangedMigration { version: i64, name: &'static str },
    /// A shared commit failed (or never began); nothing in it was committed.
    #[error("commit failed: {0}")]
    Commit(String),
    /// SQLite's write-ahead log could not be opened to be synced.
    #[error("cannot open the write-ahead log of {db}: {source}")]
    Log { db: String, source: std::io::Error },
    /// A change was committed, but the write-ahead log that holds it could not be synced to disk.
    #[error("the change was committed but could not be synced to disk: {0}")]
    Unsynced(String),
    /// The database refused a write because its disk is full (SQLite's `SQLITE_FULL`, PostgreSQL's
    /// `53100 disk_full`); nothing of it was committed. Writes succeed again once space is freed.
    #[error("the database's disk is full: {0}")]
    DiskFull(String),
    /// Stored data could not be read back as the gateway wrote it (a value of the wrong type, a state
    /// it never writes): a bug or damaged data, never a passing failure, so never "retry later".
    #[error("stored data cannot be read: {0}")]
    Unreadable(String),
    /// The SQLite file could not be created, or its mode set, before it was opened.
    #[error(
        "cannot create or restrict the database file {path}: {source}; check that its directory exists and the gateway's user may write it"
    )]
    File { path: PathBuf, source: std::io::Error },
    /// Any other database error.
    #[error("database error: {}", reported::reported(.0))]
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if is_disk_full(&e) {
            StoreError::DiskFull(reported::reported(&e).to_string())
        } else if is_unreadable(&e) {
            StoreError::Unreadable(e.to_string())
        } else {
            StoreError::Sql(e)
        }
    }
}

/// Whether reading a row back failed: the row is not what the gateway writes.
fn is_unreadable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Decode(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
    )
}

/// Whether the database refused a write because its disk is full: SQLite's `SQLITE_FULL` (which a
/// `max_page_count` cap gives too), PostgreSQL's SQLSTATE `53100` (`disk_full`).
pub fn is_disk_full(e: &sqlx::Error) -> bool {
    /// SQLite's primary result code for a full disk; extended codes keep it in the low byte.
    const SQLITE_FULL: i32 = 13;
    let Some(db) = e.as_database_error() else { return false };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == SQLITE_FULL);
    }
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some_and(|pg| pg.code() == "53100")
}

impl StoreError {
    /// The same failure, for one more of the callers it reached (a shared commit answers each).
    pub fn shared(&self) -> StoreError {
        match self {
            StoreError::Unsynced(why) => StoreError::Unsynced(why.clone()),
            StoreError::Commit(why) => StoreError::Commit(why.clone()),
            StoreError::DiskFull(why) => StoreError::DiskFull(why.clone()),
            StoreError::Unreadable(why) => StoreError::Unreadable(why.clone()),
            e => StoreError::Commit(e.to_string()),
        }
    }

    /// The same failure, as that of a shared commit of which nothing was committed. A full disk keeps
    /// its kind: its callers are told to wait for space rather than that the database is down.
    pub fn commit_failed(self) -> StoreError {
        match self {
            e @ (StoreError::Commit(_) | StoreError::DiskFull(_) | StoreError::Unsynced(_)) => e,
            e => StoreError::Commit(e.to_string()),
        }
    }
}

/// A handle to the gateway's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// On SQLite, the one connection every write transaction runs on (see [`Store::begin`]).
    writer: Option<AnyPool>,
    /// How many callers of [`Store::begin`] wait for the SQLite writer connection.
    waiting: Arc<AtomicUsize>,
    /// Told of each SQLite write transaction, so the write-ahead log is checkpointed after it.
    wrote: Arc<Notify>,
    /// How many checkpoint rounds wholly copied the write-ahead log (see `checkpoint_round`).
    restarts: watch::Sender<u64>,
    /// How many times the write-ahead log was truncated to nothing (see [`Store::truncate_wal`]).
    truncations: watch::Sender<u64>,
    /// On SQLite, one idle connection open for as long as the store: SQLite deletes the write-ahead
    /// log when the last connection to the file closes, so without it a writer connection replaced
    /// while no reader is open (see `reusable`) would leave the syncer holding a deleted log.
    keeper: Option<AnyPool>,
    /// On SQLite, syncs the write-ahead log after the writer's commits (see `wal`).
    wal: Option<Arc<WalSync>>,
    /// On SQLite, how long no write may begin before the write-ahead log is truncated.
    wal_idle: Duration,
    /// Fixed when the store opens, from its URL.
    dialect: Dialect,
    /// Each organization's usable sealing keys as last read from the key log (see
    /// [`key_log::usable_keys`]).
    pub(crate) sealing_keys: key_log::KeyCache,
}

/// A write transaction. Everything that changes state writes its audit entry through the same one.
/// Statements run on the connection it derefs to (`&mut *tx`).
pub struct Tx<'c> {
    inner: Transaction<'c, Any>,
    /// Set on SQLite, whose writer commits without syncing (see `wal`).
    wal: Option<Arc<WalSync>>,
    /// The store's dialect, for the statements that differ by it.
    dialect: Dialect,
}

impl Tx<'_> {
    /// The dialect of the store the transaction runs on.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Commits, and returns once the commit is on disk.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.commit_visible().await?.wait().await
    }

    /// Commits, which makes the changes visible to other connections, and returns at once with the
    /// claim to wait on before anyone is told the changes are committed. On SQLite the disk sync runs
    /// beside whatever the caller writes next; on PostgreSQL the commit is durable when it returns.
    pub async fn commit_visible(self) -> Result<Durable, StoreError> {
        let Tx { inner, wal, .. } = self;
        // Numbered before it is sent: the commit is visible to readers before COMMIT returns.
        let ticket = wal.as_ref().map(WalSync::begin_commit);
        inner.commit().await?;
        Ok(match ticket {
            Some(ticket) => ticket.committed(),
            None => Durable::ready(),
        })
    }

    /// Rolls back, and returns once what the transaction read is on disk: a caller that rolls back
    /// answers from the state it found (a repeated request, say), which may be a commit that is
    /// visible but not yet synced.
    pub async fn rollback(self) -> Result<(), StoreError> {
        let Tx { inner, wal, .. } = self;
        inner.rollback().await?;
        settled(wal.as_deref()).await
    }
}

/// What a read found, which may hold a commit that is visible but not yet on disk (on SQLite a commit
/// is visible to readers a moment before its sync returns; see `wal`). Reads whose answer leaves the
/// gateway return this, and only [`Store::settle`] opens it: a handler cannot answer before the wait
/// by forgetting a call.
#[must_use = "open it with Store::settle before answering with it"]
#[derive(Debug)]
pub struct Unsettled<T>(T);

impl<T> Unsettled<T> {
    /// A value read from the store (or computed from what was read).
    pub(crate) fn read(value: T) -> Unsettled<T> {
        Unsettled(value)
    }
}

impl<T> Unsettled<Vec<T>> {
    /// Whether nothing was found: a read that answers with nothing needs no wait.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Waits until every commit begun on the SQLite writer so far is on disk; at once without one.
async fn settled(wal: Option<&WalSync>) -> Result<(), StoreError> {
    match wal {
        Some(wal) => wal.settled().await,
        None => Ok(()),
    }
}

impl Deref for Tx<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

fn redact(url: &str) -> String {
    // Never print a password from a URL.
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, WAL_IDLE).await
    }

    /// [`Store::open`], truncating SQLite's write-ahead log once no write has begun for `wal_idle`
    /// (see `checkpoint_wal`).
    pub async fn open_with(url: &str, wal_idle: Duration) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (dialect, conn_url) = classify(url)?;
        let options = AnyConnectOptions::from_str(&conn_url).map_err(|_| StoreError::BadUrl(redact(url)))?;
        if let Some(file) = sqlite_file(url) {
            owner_only_files(Path::new(file))?;
        }
        let pool_opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(15)).after_release(reusable);
        let pool_opts = match dialect {
            Dialect::Sqlite => sqlite_pragmas(pool_opts.max_connections(4), false),
            Dialect::Postgres => postgres_session(pool_opts.max_connections(16)),
        };
        // One direct connection first, so an unreachable or misconfigured server is reported with
        // its real cause rather than as a pool timeout.
        {
            use sqlx::ConnectOptions;
            match tokio::time::timeout(Duration::from_secs(15), options.connect()).await {
                Ok(Ok(mut conn)) => {
                    // SQLite opens a file lazily: read its header now, so a file that is not a
                    // database is named here instead of failing every pooled connection until the
                    // pool gives up.
                    if dialect == Dialect::Sqlite
                        && let Err(source) = sqlx::query("PRAGMA schema_version").execute(&mut conn).await
                    {
                        let _ = sqlx::Connection::close(conn).await;
                        return Err(match &source {
                            sqlx::Error::Database(d) if d.code().as_deref() == Some("26") => {
                                StoreError::NotSqlite { path: sqlite_file(url).unwrap_or(url).to_owned() }
                            }
                            _ => StoreError::Connect { url: redact(url), source },
                        });
                    }
                    let _ = sqlx::Connection::close(conn).await;
                }
                Ok(Err(source)) => return Err(StoreError::Connect { url: redact(url), source }),
                Err(_) => return Err(StoreError::Connect { url: redact(url), source: sqlx::Error::PoolTimedOut }),
            }
        }
        let pool = pool_opts
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Connect { url: redact(url), source })?;
        let keeper = match dialect {
            Dialect::Sqlite => Some(
                sqlite_pragmas(
                    AnyPoolOptions::new()
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .test_before_acquire(false),
                    false,
                )
                .connect_with(options.clone())
                .await
                .map_err(|source| StoreError::Connect { url: redact(url), source })?,
            ),
            Dialect::Postgres => None,
        };
        // SQLite admits one writer at a time, so the writes queue for one connection rather than
        // for the file lock: no busy-wait, and that connection's page cache stays valid from one
        // transaction to the next (a connection that did not make the last write must drop its cache
        // and read the pages again). A local file connection cannot go stale, so it is not pinged.
        // It lives as long as the store, so the write-ahead log is never removed under the syncer.
        let writer = match dialect {
            Dialect::Sqlite => Some(
                sqlite_pragmas(
                    AnyPoolOptions::new()
                        .acquire_timeout(Duration::from_secs(15))
                        .max_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .test_before_acquire(false)
                        .after_release(reusable),
                    true,
                )
                .connect_with(options.clone())
                .await
                .map_err(|source| StoreError::Connect { url: redact(url), source })?,
            ),
            Dialect::Postgres => None,
        };
        let wal = match &writer {
            Some(writer) => {
                // The log exists: every connection has set `journal_mode = WAL`.
                let file: String = sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                    .fetch_one(writer)
                    .await
                    .map_err(|source| StoreError::Connect { url: redact(url), source })?;
                let wal =
                    WalSync::start(Path::new(&file)).map_err(|source| StoreError::Log { db: file.clone(), source })?;
                Some(wal)
            }
            None => None,
        };
        let store = Store {
            pool,
            writer,
            waiting: Arc::default(),
            wrote: Arc::new(Notify::new()),
            restarts: watch::channel(0).0,
            truncations: watch::channel(0).0,
            keeper,
            wal,
            wal_idle,
            dialect,
            sealing_keys: Default::default(),
        };
        migrate::run(&store).await?;
        if dialect == Dialect::Sqlite {
            tokio::spawn(checkpoint_wal(store.clone()));
        }
        Ok(store)
    }

    /// The dialect the store speaks, fixed when it opened.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// a transaction that reads before it writes never fails with a busy upgrade.
    pub async fn begin(&self) -> Result<Tx<'static>, StoreError> {
        let inner = match self.dialect {
            Dialect::Sqlite => {
                self.wrote.notify_one();
                Transaction::begin(self.writer_in_turn().await?, Some(BEGIN_SQLITE.into_sql_str())).await?
            }
            Dialect::Postgres => self.pool.begin().await?,
        };
        Ok(Tx { inner, wal: self.wal.clone(), dialect: self.dialect })
    }

    /// Opens what a read found, once every write committed before it is on disk, so nobody is answered
    /// with a change that a power failure could still undo (on SQLite a commit is visible a moment
    /// before it is synced; see `wal`). The only way to open an [`Unsettled`].
    pub async fn settle<T>(&self, read: Unsettled<T>) -> Result<T, StoreError> {
        settled(self.wal.as_deref()).await?;
        Ok(read.0)
    }

    /// The SQLite writer connection, asking its holder to let it go ([`Store::writer_wanted`]).
    async fn writer_in_turn(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _done = Waited(&self.waiting);
        self.writer_pool().acquire().await
    }

    /// The pool writes are made on: the writer connection on SQLite, the one pool on PostgreSQL.
    fn writer_pool(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    /// One checkpoint of SQLite's write-ahead log (see `checkpoint_wal`): a PASSIVE copy on a reader
    /// connection, then, if the log is long (or `restart`), a RESTART one on the writer connection,
    /// between two write transactions, which copies what was appended meanwhile so that the next
    /// write starts the log over. Returns whether the log was wholly copied (by the writer's step
    /// when it ran, else as far as it had been written when the copy began); it is not when another
    /// checkpoint ran at the same time or a reader kept old pages past the wait.
    pub async fn checkpoint_round(&self, restart: bool) -> Result<bool, sqlx::Error> {
        let copy = Checkpointed::of(&sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&self.pool).await?)?;
        let mut whole = copy.whole();
        // A copy on a reader connection says nothing of the commits made while it ran, and the next
        // write starts the log over only if it finds every frame copied and no reader in the log. So
        // under steady writes only the writer connection, between two transactions, can restart it:
        // RESTART copies what was appended meanwhile and waits for readers to leave the log (they are
        // short). It holds up only the next shared commit, and waits `RESTART_BUSY_TIMEOUT` at most.
        if restart || copy.log >= RESTART_FRAMES {
            whole = self.checkpoint_on_writer("PRAGMA wal_checkpoint(RESTART)", RESTART_BUSY_TIMEOUT).await?.0.whole();
        }
        if whole {
            self.restarts.send_modify(|n| *n += 1);
        }
        Ok(whole)
    }

    /// Runs the checkpoint `pragma` on the writer connection, between two write transactions, waiting
    /// at most `busy` for readers of older pages to leave the log. Returns the writer connection with
    /// the outcome, so no write begins before the caller has counted it.
    async fn checkpoint_on_writer(
        &self,
        pragma: &'static str,
        busy: &'static str,
    ) -> Result<(Checkpointed, PoolConnection<Any>), sqlx::Error> {
        let mut writer = self.writer_in_turn().await?;
        sqlx::query(busy).execute(&mut *writer).await?;
        let copy = sqlx::query(pragma).fetch_one(&mut *writer).await;
        if let Err(e) = sqlx::query(BUSY_TIMEOUT).execute(&mut *writer).await {
            // Only a broken connection refuses a pragma; until the pool replaces it, the writer
            // gives up after 10 ms on a lock another process holds.
            tracing::error!(error = %e, "cannot restore the SQLite writer's busy timeout after a checkpoint");
            return Err(e);
        }
        Ok((Checkpointed::of(&copy?)?, writer))
    }

    /// Counts the checkpoint rounds that wholly copied SQLite's write-ahead log into the database
    /// file (see `checkpoint_round`).
    pub fn wal_restarts(&self) -> watch::Receiver<u64> {
        self.restarts.subscribe()
    }

    /// Copies SQLite's whole write-ahead log into the database file and truncates the log to zero
    /// bytes, waiting up to 15 s for readers to leave it; returns whether it did. `secure_delete`
    /// overwrites deleted payloads in the database file, but the log's older frames keep them until
    /// the log is truncated, so the gateway calls this as it shuts down (and, with a short wait,
    /// whenever it has been idle a moment; see `checkpoint_wal`). Returns `true` at once on
    /// PostgreSQL, which has no such file.
    pub async fn truncate_wal(&self) -> Result<bool, StoreError> {
        Ok(self.dialect == Dialect::Postgres || self.truncate_wal_within(BUSY_TIMEOUT).await?)
    }

    /// [`Store::truncate_wal`], waiting at most `busy` for readers.
    async fn truncate_wal_within(&self, busy: &'static str) -> Result<bool, sqlx::Error> {
        // Counted while the writer connection is held, so a truncation counted after a commit was
        // seen began after that commit.
        let (copy, _writer) = self.checkpoint_on_writer("PRAGMA wal_checkpoint(TRUNCATE)", busy).await?;
        let truncated = copy.truncated();
        if truncated {
            self.truncations.send_modify(|n| *n += 1);
        }
        Ok(truncated)
    }

    /// Counts the times SQLite's write-ahead log was truncated to nothing (see
    /// [`Store::truncate_wal`]).
    pub fn wal_truncations(&self) -> watch::Receiver<u64> {
        self.truncations.subscribe()
    }

    /// Whether a caller of [`Store::begin`] waits for the SQLite writer connection, so a holder of
    /// it from [`Store::writer`] should let it go.
    pub fn writer_wanted(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// A connection to write on, for a caller that begins one transaction after another on it
    /// ([`Store::begin_on`]) and so skips the pool's check-in and check-out between them. On SQLite
    /// it is the writer connection: every other write waits until it is dropped.
    pub async fn writer(&self) -> Result<PoolConnection<Any>, StoreError> {
        Ok(self.writer_pool().acquire().await?)
    }

    /// Begins a write transaction on `conn` (from [`Store::writer`]), as [`Store::begin`] does.
    pub async fn begin_on<'c>(&self, conn: &'c mut AnyConnection) -> Result<Tx<'c>, StoreError> {
        let inner = match self.dialect {
            Dialect::Sqlite => {
                self.wrote.notify_one();
                conn.begin_with(BEGIN_SQLITE).await?
            }
            Dialect::Postgres => conn.begin().await?,
        };
        Ok(Tx { inner, wal: self.wal.clone(), dialect: self.dialect })
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
        // The checkpointer finds the pool closed and ends; the syncer ends after a last sync.
        self.wrote.notify_one();
        if let Some(wal) = &self.wal {
            wal.close();
        }
        // Last: SQLite checkpoints and deletes the log as the file's last connection closes.
        if let Some(keeper) = &self.keeper {
            keeper.close().await;
        }
    }
}

/// Whether a connection given back to its pool may be used again: not while it still counts a
/// transaction. A transaction dropped without COMMIT or ROLLBACK has queued its ROLLBACK, which runs
/// here. But when a write fails with `disk is full` (or an I/O error), SQLite may roll the whole
/// transaction back itself; the COMMIT or ROLLBACK that follows then fails, and the connection would
/// go on counting a transaction it is not in, so that every later `BEGIN IMMEDIATE` on it failed
/// (`attempted to call begin_with at non-zero transaction depth`), until a restart. Such a connection
/// is closed, and the pool opens a new one.
fn reusable(
    conn: &mut AnyConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if !conn.is_in_transaction() {
            return Ok(true);
        }
        conn.ping().await?;
        if !conn.is_in_transaction() {
            return Ok(true);
        }
        tracing::warn!(
            "a database connection whose transaction failed to end is closed and replaced (a write had failed, the disk may be full)"
        );
        Ok(false)
    })
}

/// Copies SQLite's write-ahead log back into the database file a moment after each write
/// transaction, until the pool closes.
///
/// The writer connection does not checkpoint (`wal_autocheckpoint = 0`): SQLite's automatic
/// checkpoint runs inside the COMMIT that crosses its threshold, so one writer in every few hundred
/// paid for copying and syncing the pages that hundreds of others had made, while holding the write
/// lock. Here the copy runs on a reader connection, beside the writes, and never waits for the write
/// lock or holds it up (PASSIVE). Only the log's restart needs the writer: once the log is long, the
/// writer connection checkpoints what was appended during the copy (a short tail), so the log is
/// wholly copied and the next write starts it over. Durability is unchanged: every commit is in the
/// log and synced before it returns; a checkpoint moves pages that are already durable.
///
/// Once no write transaction has begun for a moment ([`WAL_IDLE`] unless configured), the log is also
/// truncated to nothing on the writer connection (waiting `RESTART_BUSY_TIMEOUT` at most for readers,
/// and trying again after the next idle moment if one is still in the log): `secure_delete`
/// overwrites a deleted payload in the database file, but the log's older frames keep it until they
/// are overwritten or cut off. So a deleted value stays in the log until the writes pause for that
/// moment; under writes that never pause, until the log has been started over and written past it
/// again, at most about 32 MiB (two lengths of the log) of later writes, more if a long read holds the
/// restart back (`journal_size_limit` cuts off what lies beyond 16 MiB as the log starts over). It
/// starts with the log to truncate: a gateway that crashed left older frames in it.
async fn checkpoint_wal(store: Store) {
    let mut untruncated = true;
    loop {
        if untruncated {
            if tokio::time::timeout(store.wal_idle, store.wrote.notified()).await.is_err() {
                match store.truncate_wal_within(RESTART_BUSY_TIMEOUT).await {
                    Ok(truncated) => untruncated = !truncated,
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "truncating SQLite's WAL failed; the next idle moment tries again")
                    }
                }
                continue;
            }
        } else {
            store.wrote.notified().await;
        }
        if store.pool.is_closed() {
            return;
        }
        // Let the writes of the next moment pile up: one checkpoint for many commits.
        tokio::time::sleep(CHECKPOINT_GAP).await;
        untruncated = true;
        match store.checkpoint_round(false).await {
            Ok(_) => {}
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => tracing::warn!(error = %e, "SQLite WAL checkpoint failed; the next write tries again"),
        }
    }
}

/// What `PRAGMA wal_checkpoint` reports.
struct Checkpointed {
    /// Whether it was blocked by a reader or writer before it finished.
    busy: i64,
    /// Frames in the log.
    log: i64,
    /// Frames copied into the database file.
    done: i64,
}

impl Checkpointed {
    fn of(row: &sqlx::any::AnyRow) -> Result<Checkpointed, sqlx::Error> {
        use sqlx::Row;
        Ok(Checkpointed { busy: row.try_get(0)?, log: row.try_get(1)?, done: row.try_get(2)? })
    }

    /// Every frame in the log was copied.
    fn whole(&self) -> bool {
        self.busy == 0 && self.done == self.log
    }

    /// The log was truncated: TRUNCATE reports an empty log only once it has truncated it.
    fn truncated(&self) -> bool {
        self.busy == 0 && self.log == 0
    }
}

/// Frames (pages) the write-ahead log may reach before it is started over: 16 MiB of 4 KiB pages.
const RESTART_FRAMES: i64 = 4096;

/// How large SQLite leaves the write-ahead log file when it starts the log over
/// (`journal_size_limit`): what lies past this is cut off rather than kept until overwritten.
const JOURNAL_SIZE_LIMIT: &str = "PRAGMA journal_size_limit = 16777216";

/// How long no write transaction may begin before the write-ahead log is truncated to nothing, unless
/// configured otherwise.
pub const WAL_IDLE: Duration = Duration::from_secs(1);

/// How long the writer connection waits, in a checkpoint that starts the log over, for readers of
/// older pages to finish: 10 ms, so a long read (an audit export) costs the writes little; if one
/// has not finished by then, the log is started over at a later round.
const RESTART_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 10";
/// How long a connection waits for a lock another process holds; and the writer, once its
/// checkpoint is over.
const BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 15000";

/// How long after a write transaction begins the write-ahead log is checkpointed.
const CHECKPOINT_GAP: Duration = Duration::from_millis(100);

/// Counts a waiter out when its wait ends, however it ends.
struct Waited<'a>(&'a AtomicUsize);

impl Drop for Waited<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every SQLite connection: write-ahead log, every commit synced before it is answered, and a wait
/// (rather than an error) when another process holds the file's lock.
fn sqlite_pragmas(opts: AnyPoolOptions, writer: bool) -> AnyPoolOptions {
    opts.after_connect(move |conn, _| {
        Box::pin(async move {
            if writer {
                // Checkpoints run beside the writes (see `checkpoint_wal`).
                conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                // A statement that changes many rows inside the shared transaction keeps a journal to
                // undo itself alone; in memory, not in a temporary file. Commits are unaffected.
                conn.execute("PRAGMA temp_store = MEMORY").await?;
            }
            conn.execute("PRAGMA journal_mode = WAL").await?;
            // The writer's commits are synced beside the next write (see `wal`); a reader's
            // checkpoint syncs at once.
            conn.execute(if writer { "PRAGMA synchronous = NORMAL" } else { "PRAGMA synchronous = FULL" }).await?;
            conn.execute(BUSY_TIMEOUT).await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
            // Deleted content is overwritten in the database file (payloads once acknowledged).
            conn.execute("PRAGMA secure_delete = ON").await?;
            conn.execute(JOURNAL_SIZE_LIMIT).await?;
            Ok(())
        })
    })
}

/// Every PostgreSQL session plans each statement for the values it is given
/// (`plan_cache_mode = force_custom_plan`), never with a generic plan cached for all values.
///
/// sqlx prepares every statement, and after five executions PostgreSQL may switch a prepared statement
/// to a generic plan, chosen from the statistics of that moment and kept for the connection's life. The
/// gateway's tables start empty and grow by thousands of rows a second, so a generic plan chosen early
/// could keep scanning a whole table: runs of the same `e2e` bench fell into two groups, one at half the
/// throughput of the other with 2.6 times the server CPU per message, depending on when each
/// connection chose. Planning each execution costs the server a little CPU per statement and took every
/// run to the faster group (docs/performance.md). PostgreSQL 12 or later has the setting; an older
/// server is told so in the log, and the gateway runs without it.
fn postgres_session(opts: AnyPoolOptions) -> AnyPoolOptions {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    opts.after_connect(|conn, _| {
        Box::pin(async move {
            match conn.execute("SET plan_cache_mode = force_custom_plan").await {
                Ok(_) => Ok(()),
                // 42704, undefined_object: a server without the setting. Any other failure is the
                // connection's, and the pool tries another.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42704") => {
                    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(error = %e, "this PostgreSQL server cannot be told to plan each statement for its values (plan_cache_mode needs PostgreSQL 12 or later); statements may keep generic plans");
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    })
}

/// Creates the SQLite file at `db` readable and writable by its owner alone before SQLite opens it
/// (SQLite gives its `-wal` and `-shm` files the same mode), and restricts those files to their owner
/// if an older version, a copy or a loose umask left them readable by others: they hold survivors'
/// data.
fn owner_only_files(db: &Path) -> Result<(), StoreError> {
    let tightened = owner_only::database_files(db).map_err(|(path, source)| StoreError::File { path, source })?;
    for file in tightened {
        tracing::warn!(file = %file.path.display(), was = format!("{:04o}", file.mode), "the database file was readable by other users; it is now readable by its owner alone (0600)");
    }
    Ok(())
}

/// The file a SQLite URL names; `None` for PostgreSQL (see `classify`).
fn sqlite_file(url: &str) -> Option<&str> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    Some(url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url))
}

/// Works out the dialect and the URL to connect with.
fn classify(url: &str) -> Result<(Dialect, String), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let host = url
            .split("://")
            .nth(1)
            .map(|rest| rest.rsplit('@').next().unwrap_or(rest))
            .map(|hostpart| hostpart.split(['/', '?']).next().unwrap_or(""))
            .map(|hostport| hostport.rsplit_once(':').map_or(hostport, |(h, _)| h))
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_owned();
        let loopback = host.is_empty()
            || host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || host.starts_with('/');
        if !loopback && !url.contains("sslmode=verify-full") {
            return Err(StoreError::InsecureRemote { host });
        }
        return Ok((Dialect::Postgres, url.to_owned()));
    }
    let path = sqlite_file(url).unwrap_or_default();
    if path.is_empty() || url.contains("://") && !url.starts_with("sqlite:") {
        return Err(StoreError::BadUrl(redact(url)));
    }
    Ok((Dialect::Sqlite, format!("sqlite://{path}?mode=rwc")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_postgres_without_verified_tls_is_refused() {
        assert!(matches!(classify("postgres://u:p@db.example.org/haven"), Err(StoreError::InsecureRemote { .. })));
        assert!(classify("postgres://u:p@db.example.org/haven?sslmode=verify-full").is_ok());
        assert!(classify("postgres://postgres@127.0.0.1:5432/test").is_ok());
        assert!(classify("postgres://postgres@localhost/test").is_ok());
        assert_eq!(classify("haven.db").unwrap().0, Dialect::Sqlite);
        assert!(matches!(classify("mysql://x"), Err(StoreError::BadUrl(_))));
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_named_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "shopping list: bread, milk, and enough text to fill a header page\n".repeat(20))
            .unwrap();
        let err = Store::open(&path.display().to_string()).await.expect_err("not a database");
        assert!(matches!(err, StoreError::NotSqlite { .. }), "{err}");
        assert!(err.to_string().contains("notes.txt is not a SQLite database"), "{err}");
    }

    /// A SQLite store in a new directory, with a table `scratch (b BLOB)` to fill.
    async fn scratch_store(name: &str) -> (tempfile::TempDir, std::path::PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let store = Store::open(&path.display().to_string()).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        sqlx::query("CREATE TABLE scratch (b BLOB NOT NULL)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        (dir, path, store)
    }

    /// SQLite's write-ahead log is copied back into the database file beside the writes, and once
    /// wholly copied it is started over, so a busy gateway's log stays bounded although the writer
    /// never checkpoints.
    #[tokio::test]
    async fn the_write_ahead_log_is_copied_back_and_started_over() {
        let (dir, path, store) = scratch_store("wal.db").await;
        // Each transaction writes 1 MiB in fresh pages.
        let write = |n: usize| {
            let store = store.clone();
            async move {
                for _ in 0..n {
                    let mut tx = store.begin().await.unwrap();
                    for _ in 0..16 {
                        sqlx::query("INSERT INTO scratch (b) VALUES (randomblob(65536))")
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                    }
                    tx.commit().await.unwrap();
                }
            }
        };
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let wal = dir.path().join("wal.db-wal");
        let mut restarts = store.wal_restarts();
        write(24).await;
        // Copy the whole log; a round the background task runs at the same time may leave ours
        // short, and then its own end is awaited before trying again.
        tokio::time::timeout(Duration::from_secs(30), async {
            while !store.checkpoint_round(true).await.unwrap() {
                restarts.changed().await.unwrap();
            }
        })
        .await
        .expect("the log was wholly copied within 30 s");
        assert!(size(&path) >= 24 << 20, "the 24 MiB written are in the database file");
        // Started over: the next 24 MiB reuse the log's space instead of doubling it.
        write(24).await;
        let logged = size(&wal);
        assert!(logged < 30 << 20, "the log was not started over: {logged} bytes after 48 MiB written");
        // The background task copies them in without being asked.
        tokio::time::timeout(Duration::from_secs(30), async {
            while size(&path) < 48 << 20 {
                restarts.changed().await.unwrap();
            }
        })
        .await
        .expect("the background checkpoint copied the log into the database file within 30 s");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scratch").fetch_one(store.pool()).await.unwrap();
        assert_eq!(rows, 48 * 16, "every committed row is there");
        store.close().await;
    }

    /// Under steady writes, with readers coming and going, the log is still started over: a copy on a
    /// reader connection always finds that more was committed while it ran, so only the writer
    /// connection's step can restart it. Without that the log grows by every page written.
    #[tokio::test]
    async fn the_write_ahead_log_is_started_over_under_steady_writes_and_reads() {
        let (dir, _, store) = scratch_store("steady.db").await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Short read transactions, one after another, as delivery passes and audit queries make.
        let reader = tokio::spawn({
            let (store, stop) = (store.clone(), stop.clone());
            async move {
                let mut reads = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let _: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM scratch").fetch_one(store.pool()).await.unwrap();
                    reads += 1;
                }
                reads
            }
        });
        // 160 MiB in commits of 256 KiB, back to back on the writer connection, as shared commits come
        // under load. Between two rounds of the background checkpointer (100 ms apart, plus the copy)
        // the log grows by what is written meanwhile, so the bound leaves room for a fast disk.
        for _ in 0..640 {
            let mut tx = store.begin().await.unwrap();
            for _ in 0..4 {
                sqlx::query("INSERT INTO scratch (b) VALUES (randomblob(65536))").execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        assert!(reader.await.unwrap() > 0, "reads ran beside the writes");
        let logged = std::fs::metadata(dir.path().join("steady.db-wal")).unwrap().len();
        assert!(logged < 112 << 20, "the log was not started over under load: {logged} bytes after 160 MiB written");
        store.close().await;
    }

    /// The database file and the `-wal` and `-shm` files beside it.
    fn files(db: &Path) -> Vec<PathBuf> {
        ["", "-wal", "-shm"].iter().map(|suffix| PathBuf::from(format!("{}{suffix}", db.display()))).collect()
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The store's files that hold `needle`, as raw bytes.
    fn in_files(db: &Path, needle: &[u8]) -> Vec<PathBuf> {
        files(db)
            .into_iter()
            .filter(|f| std::fs::read(f).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
            .collect()
    }

    /// The database file and its log and index are created readable by their owner alone, and files
    /// left readable by others are restricted when the store opens them again.
    #[tokio::test]
    async fn database_files_are_owner_only() {
        let (_dir, path, store) = scratch_store("modes.db").await;
        for file in files(&path) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        store.close().await;
        // As an older version or a copy with a loose umask might have left them.
        for file in files(&path) {
            if !file.exists() {
                std::fs::write(&file, b"").unwrap();
            }
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        }
        let store = Store::open(&path.display().to_string()).await.unwrap();
        for file in files(&path) {
            assert_eq!(mode(&file), 0o600, "{} after reopening", file.display());
        }
        store.close().await;
    }

    /// Every connection overwrites deleted content in the database file (`secure_delete`), and once the
    /// log is truncated a deleted value is in none of the files.
    #[tokio::test]
    async fn a_deleted_value_is_in_no_file_once_the_log_is_truncated() {
        let (_dir, path, store) = scratch_store("deleted.db").await;
        let on: i64 = sqlx::query_scalar("PRAGMA main.secure_delete").fetch_one(store.pool()).await.unwrap();
        assert_eq!(on, 1, "readers overwrite deleted content");
        let on: i64 = sqlx::query_scalar("PRAGMA main.secure_delete")
            .fetch_one(&mut *store.writer().await.unwrap())
            .await
            .unwrap();
        assert_eq!(on, 1, "the writer overwrites deleted content");

        let value = format!("Ileana-{}", uuid::Uuid::new_v4().simple());
        let mut tx = store.begin().await.unwrap();
        sqlx::query("INSERT INTO scratch (b) VALUES ($1)").bind(value.as_bytes()).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert!(!in_files(&path, value.as_bytes()).is_empty(), "the value was written");
        let mut tx = store.begin().await.unwrap();
        sqlx::query("DELETE FROM scratch").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();

        assert!(store.truncate_wal().await.unwrap(), "no reader held the log");
        let left = in_files(&path, value.as_bytes());
        assert!(left.is_empty(), "the deleted value is still in {left:?}");
        store.close().await;
    }

    /// A write refused because the disk is full fails with `DiskFull`. SQLite rolled the whole
    /// transaction back, so the writer connection is not reused as though still in it: it is
    /// replaced, and the next write transaction begins and commits. The log the syncer holds stays the
    /// one SQLite writes, even with no reader connection open while the writer is replaced.
    #[tokio::test]
    async fn after_a_full_disk_the_next_write_transaction_begins() {
        use std::os::unix::fs::MetadataExt;
        let (dir, _, store) = scratch_store("full.db").await;
        let log = std::fs::File::open(dir.path().join("full.db-wal")).unwrap();
        store.pool().close().await;
        {
            let mut writer = store.writer().await.unwrap();
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut *writer).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {}", pages + 8)))
                .execute(&mut *writer)
                .await
                .unwrap();
        }
        let mut tx = store.begin().await.unwrap();
        let mut refused = None;
        for _ in 0..64 {
            if let Err(e) = sqlx::query("INSERT INTO scratch (b) VALUES (randomblob(8192))").execute(&mut *tx).await {
                refused = Some(StoreError::from(e));
                break;
            }
        }
        let refused = refused.expect("the capped file filled up");
        assert!(matches!(refused, StoreError::DiskFull(_)), "{refused}");
        drop(tx);

        let mut tx = store.begin().await.unwrap();
        sqlx::query("INSERT INTO scratch (b) VALUES (x'00')").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scratch")
            .fetch_one(&mut *store.writer().await.unwrap())
            .await
            .unwrap();
        assert_eq!(rows, 1, "only the later transaction's row");
        assert_eq!(log.metadata().unwrap().nlink(), 1, "SQLite deleted the log the syncer holds");
        store.close().await;
    }

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://***@h/db");
    }
}
