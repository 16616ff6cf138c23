//! Embedded, append-only migrations, one list per dialect, applied at start-up.
//!
//! Each migration runs in its own transaction with its bookkeeping row. On PostgreSQL an advisory lock
//! keeps two replicas starting at once from applying the same migration twice.

use sha2::{Digest, Sha256};
use sqlx::{Executor, Row};

use super::{Backend, Store, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "audit_log",
        sqlite: include_str!("migrations/sqlite/0001_audit_log.sql"),
        postgres: include_str!("migrations/postgres/0001_audit_log.sql"),
    },
    Migration {
        version: 2,
        name: "consent",
        sqlite: include_str!("migrations/sqlite/0002_consent.sql"),
        postgres: include_str!("migrations/postgres/0002_consent.sql"),
    },
    Migration {
        version: 3,
        name: "merkle",
        sqlite: include_str!("migrations/sqlite/0003_merkle.sql"),
        postgres: include_str!("migrations/postgres/0003_merkle.sql"),
    },
    Migration {
        version: 4,
        name: "routing",
        sqlite: include_str!("migrations/sqlite/0004_routing.sql"),
        postgres: include_str!("migrations/postgres/0004_routing.sql"),
    },
    Migration {
        version: 5,
        name: "queue_counts",
        sqlite: include_str!("migrations/sqlite/0005_queue_counts.sql"),
        postgres: include_str!("migrations/postgres/0005_queue_counts.sql"),
    },
    Migration {
        version: 6,
        name: "pending_order",
        sqlite: include_str!("migrations/sqlite/0006_pending_order.sql"),
        postgres: include_str!("migrations/postgres/0006_pending_order.sql"),
    },
    Migration {
        version: 7,
        name: "drop_pending_default_collation",
        sqlite: include_str!("migrations/sqlite/0007_drop_pending_default_collation.sql"),
        postgres: include_str!("migrations/postgres/0007_drop_pending_default_collation.sql"),
    },
];

/// An arbitrary constant naming Haven's migration lock.
const PG_LOCK_KEY: i64 = 0x4841_5645_4e00_0001;

pub(super) async fn run(store: &Store) -> Result<(), StoreError> {
    let mut conn = store.pool.acquire().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)").bind(PG_LOCK_KEY).execute(&mut *conn).await?;
    }
    let result = apply(store.backend, &mut conn).await;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_LOCK_KEY).execute(&mut *conn).await?;
    }
    result
}

async fn apply(backend: Backend, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS haven_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at_micros BIGINT NOT NULL)",
    )
    .await?;
    let applied =
        sqlx::query("SELECT version, checksum FROM haven_migrations ORDER BY version").fetch_all(&mut *conn).await?;
    let mut done = Vec::new();
    for row in applied {
        let version: i64 = row.try_get("version")?;
        let checksum: String = row.try_get("checksum")?;
        let m = MIGRATIONS.iter().find(|m| m.version == version).ok_or(StoreError::UnknownMigration(version))?;
        if checksum != checksum_of(sql_for(backend, m)) {
            return Err(StoreError::ChangedMigration { version, name: m.name });
        }
        done.push(version);
    }
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        let sql = sql_for(backend, m);
        let fail = |source| StoreError::Migration { version: m.version, name: m.name, source };
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(fail)?;
        tx.execute(sqlx::AssertSqlSafe(sql)).await.map_err(fail)?;
        sqlx::query(
            "INSERT INTO haven_migrations (version, name, checksum, applied_at_micros) VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(checksum_of(sql))
        .bind(haven_trust::clock::Clock::now_micros(&haven_trust::clock::SystemClock))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

fn sql_for(backend: Backend, m: &Migration) -> &'static str {
    match backend {
        Backend::Sqlite => m.sqlite,
        Backend::Postgres => m.postgres,
    }
}

fn checksum_of(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}
