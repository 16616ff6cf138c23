//! The node's own SQLite database (WAL, `synchronous=FULL`): what it received and what it witnessed.
//! Migrations are embedded and applied at start-up.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Why the node's database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NodeStoreError {
    #[error("cannot open node database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
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
