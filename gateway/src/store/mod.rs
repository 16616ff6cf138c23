//! Storage: one code path over SQLite (the embedded default) and PostgreSQL (for deployments that
//! outgrow one machine).
//!
//! Queries are written once, with `$N` placeholders that both dialects accept, and run through sqlx's
//! `Any` driver. Only the migrations differ per dialect; they are embedded in the binary and applied at
//! start-up. Durability: SQLite runs in WAL mode with `synchronous=FULL`; PostgreSQL commits with its
//! default `synchronous_commit=on`. A success reply therefore always means committed with fsync.

mod migrate;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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
    /// The database could not be reached or opened.
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {source}")]
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
    /// Any other database error.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A handle to the gateway's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A write transaction. Everything that changes state writes its audit entry through the same one.
pub type Tx = Transaction<'static, Any>;

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
        sqlx::any::install_default_drivers();
        let (backend, conn_url) = classify(url)?;
        let options = AnyConnectOptions::from_str(&conn_url).map_err(|_| StoreError::BadUrl(redact(url)))?;
        let pool_opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(15));
        let pool_opts = match backend {
            Backend::Sqlite => pool_opts.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 15000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA secure_delete = ON").await?;
                    Ok(())
                })
            }),
            Backend::Postgres => pool_opts.max_connections(16),
        };
        // One direct connection first, so an unreachable or misconfigured server is reported with
        // its real cause rather than as a pool timeout.
        {
            use sqlx::ConnectOptions;
            match tokio::time::timeout(Duration::from_secs(15), options.connect()).await {
                Ok(Ok(conn)) => {
                    let _ = sqlx::Connection::close(conn).await;
                }
                Ok(Err(source)) => return Err(StoreError::Connect { url: redact(url), source }),
                Err(_) => return Err(StoreError::Connect { url: redact(url), source: sqlx::Error::PoolTimedOut }),
            }
        }
        let pool =
            pool_opts.connect_with(options).await.map_err(|source| StoreError::Connect { url: redact(url), source })?;
        let store = Store { pool, backend };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// a transaction that reads before it writes never fails with a busy upgrade.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Works out the backend and the URL to connect with.
fn classify(url: &str) -> Result<(Backend, String), StoreError> {
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
        return Ok((Backend::Postgres, url.to_owned()));
    }
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    if path.is_empty() || url.contains("://") && !url.starts_with("sqlite:") {
        return Err(StoreError::BadUrl(redact(url)));
    }
    Ok((Backend::Sqlite, format!("sqlite://{path}?mode=rwc")))
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
        assert_eq!(classify("haven.db").unwrap().0, Backend::Sqlite);
        assert!(matches!(classify("mysql://x"), Err(StoreError::BadUrl(_))));
    }

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://***@h/db");
    }
}
