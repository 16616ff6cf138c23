//! The node's own SQLite database (WAL, `synchronous=FULL`): what it received and what it witnessed,
//! and the organization's people. Migrations are embedded and applied at start-up. Its files are
//! readable by their owner alone: they hold survivors' data.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use haven_trust::owner_only;
use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tonic::Status;

/// Why the node's database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NodeStoreError {
    #[error("cannot open node database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    /// The file is not a SQLite database.
    #[error(
        "{0} is not a SQLite database (its header is not SQLite's): give --database the path of this node's database file, or a path where none exists yet to make a new one"
    )]
    NotSqlite(String),
    /// The file could not be created, or its mode set, before SQLite opened it.
    #[error(
        "cannot create or restrict the node database file {path}: {source}; check that its directory exists and the node's user may write it"
    )]
    File { path: PathBuf, source: std::io::Error },
    #[error("node database migration failed: {0}")]
    Migrate(sqlx::Error),
    #[error("node database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// The node's database.
#[derive(Debug, Clone)]
pub struct NodeStore {
    pool: SqlitePool,
}

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_node.sql")),
    (2, include_str!("migrations/0002_witness.sql")),
    (3, include_str!("migrations/0003_consent.sql")),
    (4, include_str!("migrations/0004_mail.sql")),
    (5, include_str!("migrations/0005_witness_clearing.sql")),
    (6, include_str!("migrations/0006_people.sql")),
    (7, include_str!("migrations/0007_console.sql")),
    (8, include_str!("migrations/0008_second_factor.sql")),
    (9, include_str!("migrations/0009_assignment.sql")),
    (10, include_str!("migrations/0010_view_reports.sql")),
    (11, include_str!("migrations/0011_timeline.sql")),
    (12, include_str!("migrations/0012_consent_scans.sql")),
    (13, include_str!("migrations/0013_sealing_keys.sql")),
    (14, include_str!("migrations/0014_sealed_payloads.sql")),
];

impl NodeStore {
    /// Opens (creating if needed) and migrates the node database at `path`.
    pub async fn open(path: &str) -> Result<Self, NodeStoreError> {
        owner_only_files(Path::new(path))?;
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|source| NodeStoreError::Open { path: path.into(), source })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(15))
            .pragma("secure_delete", "ON")
            // What lies past 16 MiB is cut off when the write-ahead log starts over.
            .pragma("journal_size_limit", "16777216");
        Self::open_with(path, opts).await
    }

    async fn open_with(path: &str, opts: SqliteConnectOptions) -> Result<Self, NodeStoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_release(|conn, _| Box::pin(reusable(conn)))
            .connect_with(opts)
            .await
            .map_err(|source| match &source {
                sqlx::Error::Database(d) if d.code().as_deref() == Some("26") => NodeStoreError::NotSqlite(path.into()),
                _ => NodeStoreError::Open { path: path.into(), source },
            })?;
        let store = NodeStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), NodeStoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS node_migrations (version BIGINT PRIMARY KEY)")
            .execute(&self.pool)
            .await
            .map_err(NodeStoreError::Migrate)?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await.map_err(NodeStoreError::Migrate)?;
            let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM node_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(NodeStoreError::Migrate)?;
            if done.is_none() {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut *tx).await.map_err(NodeStoreError::Migrate)?;
                sqlx::query("INSERT INTO node_migrations (version) VALUES ($1)")
                    .bind(version)
                    .execute(&mut *tx)
                    .await
                    .map_err(NodeStoreError::Migrate)?;
            }
            tx.commit().await.map_err(NodeStoreError::Migrate)?;
        }
        Ok(())
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Copies the whole write-ahead log into the database file and truncates the log to zero bytes,
    /// as the node stops: `secure_delete` overwrites what a write deletes or replaces in the database
    /// file, but not the log's older frames. Returns whether it did (not while a reader held the log
    /// for the 15 s busy timeout).
    pub async fn truncate_wal(&self) -> Result<bool, sqlx::Error> {
        use sqlx::Row;
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.pool).await?;
        let (busy, log): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(busy == 0 && log == 0)
    }
}

/// Whether a connection given back to the pool may be used again: not while it still counts a
/// transaction. A transaction dropped without COMMIT or ROLLBACK has queued its ROLLBACK, which runs
/// here; but when a write fails with `disk is full`, SQLite may roll the whole transaction back
/// itself, the ROLLBACK that follows fails, and the connection would go on counting a transaction it
/// is not in (its next transaction would open as a savepoint, and a rollback of that leaves SQLite's
/// transaction open). Such a connection is closed, and the pool opens a new one.
async fn reusable(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    tracing::warn!(
        "a node database connection whose transaction failed to end is closed and replaced (a write had failed, the disk may be full)"
    );
    Ok(false)
}

/// Creates the database file readable and writable by its owner alone before SQLite opens it (SQLite
/// gives the `-wal` and `-shm` files the same mode), and restricts those files to their owner if they
/// were left readable by others.
fn owner_only_files(db: &Path) -> Result<(), NodeStoreError> {
    let tightened = owner_only::database_files(db).map_err(|(path, source)| NodeStoreError::File { path, source })?;
    for file in tightened {
        tracing::warn!(file = %file.path.display(), was = format!("{:04o}", file.mode), "the node database file was readable by other users; it is now readable by its owner alone (0600)");
    }
    Ok(())
}

/// Whether SQLite refused a write because the disk is full (`SQLITE_FULL`, also what a
/// `max_page_count` cap gives).
pub fn is_disk_full(e: &sqlx::Error) -> bool {
    /// SQLite's primary result code for a full disk; extended codes keep it in the low byte.
    const SQLITE_FULL: i32 = 13;
    e.as_database_error()
        .and_then(|db| db.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == SQLITE_FULL)
}

/// What a caller of the node's API is told when its database fails: RESOURCE_EXHAUSTED when the disk
/// is full (nothing was saved, and the operator must free space), UNAVAILABLE otherwise.
pub fn status(e: sqlx::Error) -> Status {
    if is_disk_full(&e) {
        tracing::error!(error = %e, "node database: the disk is full; free space on it");
        return Status::resource_exhausted(
            "the node's database disk is full; nothing was saved. The node's operator must free space on the disk that holds its database; retry later",
        );
    }
    tracing::error!(error = %e, "node database");
    Status::unavailable("the node's database is unavailable")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn files(db: &Path) -> Vec<PathBuf> {
        ["", "-wal", "-shm"].iter().map(|suffix| PathBuf::from(format!("{}{suffix}", db.display()))).collect()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_named_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "shopping list: bread, milk, and enough text to fill a header page\n".repeat(20))
            .unwrap();
        let Err(err) = NodeStore::open(&path.display().to_string()).await else { panic!("not a database") };
        assert!(matches!(err, NodeStoreError::NotSqlite(_)), "{err}");
        assert!(err.to_string().contains("notes.txt is not a SQLite database"), "{err}");
    }

    /// The database file and its log and index are created readable by their owner alone, and files
    /// left readable by others are restricted when the node opens them again.
    #[tokio::test]
    async fn database_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let store = NodeStore::open(&path.display().to_string()).await.unwrap();
        for file in files(&path) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        store.pool().close().await;
        for file in files(&path) {
            if !file.exists() {
                std::fs::write(&file, b"").unwrap();
            }
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let store = NodeStore::open(&path.display().to_string()).await.unwrap();
        for file in files(&path) {
            assert_eq!(mode(&file), 0o600, "{} after reopening", file.display());
        }
        store.pool().close().await;
    }

    /// Truncating the log (as the node stops) leaves it empty, with what it held in the database file.
    #[tokio::test]
    async fn truncating_the_log_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let store = NodeStore::open(&path.display().to_string()).await.unwrap();
        sqlx::query("INSERT INTO witness_alarm (at_micros, state, detail) VALUES (1, 'fork', 'fictional')")
            .execute(store.pool())
            .await
            .unwrap();
        let log = dir.path().join("node.db-wal");
        assert!(std::fs::metadata(&log).unwrap().len() > 0, "the write is in the log");
        assert!(store.truncate_wal().await.unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        let alarms: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM witness_alarm").fetch_one(store.pool()).await.unwrap();
        assert_eq!(alarms, 1);
        store.pool().close().await;
    }

    /// A write refused because the disk is full is told to callers as such (RESOURCE_EXHAUSTED), and
    /// SQLite's rollback of the whole transaction leaves no connection that the pool hands out still
    /// counting it.
    #[tokio::test]
    async fn after_a_full_disk_no_connection_counts_the_failed_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("max_page_count", "64");
        let store = NodeStore::open_with(&path.display().to_string(), opts).await.unwrap();
        sqlx::query("CREATE TABLE scratch (b BLOB NOT NULL)").execute(store.pool()).await.unwrap();

        let mut tx = store.pool().begin().await.unwrap();
        let mut refused = None;
        for _ in 0..64 {
            if let Err(e) = sqlx::query("INSERT INTO scratch (b) VALUES (randomblob(8192))").execute(&mut *tx).await {
                refused = Some(e);
                break;
            }
        }
        let refused = refused.expect("the capped file filled up");
        assert!(is_disk_full(&refused), "{refused}");
        let status = status(refused);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("disk is full"), "{status:?}");
        drop(tx);

        // Every connection the pool may hand out, held at once, so the one that failed is among them
        // if it was kept.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(store.pool().acquire().await.unwrap());
        }
        assert!(held.iter().all(|c| !c.is_in_transaction()), "a connection still counts the failed transaction");
        drop(held);
        store.pool().close().await;
    }
}
