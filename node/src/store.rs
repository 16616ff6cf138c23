//! The node's own SQLite database (WAL, `synchronous=FULL`): what it received and what it witnessed.
//! Migrations are embedded and applied at start-up. Its files are readable by their owner alone: they
//! hold survivors' data.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use haven_trust::owner_only;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Why the node's database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NodeStoreError {
    #[error("cannot open node database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
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
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| NodeStoreError::Open { path: path.into(), source })?;
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
}

/// Creates the database file readable and writable by its owner alone before SQLite opens it (SQLite
/// gives the `-wal` and `-shm` files the same mode), and restricts those files to their owner if they
/// were left readable by others.
fn owner_only_files(db: &Path) -> Result<(), NodeStoreError> {
    let file_error = |path: &Path| {
        let path = path.to_owned();
        move |source| NodeStoreError::File { path, source }
    };
    owner_only::create(db).map_err(file_error(db))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        if let Some(was) = owner_only::tighten(&path).map_err(file_error(&path))? {
            tracing::warn!(file = %path.display(), was = format!("{was:04o}"), "the node database file was readable by other users; it is now readable by its owner alone (0600)");
        }
    }
    Ok(())
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
}
