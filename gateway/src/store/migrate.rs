//! Embedded, append-only migrations, one list per dialect, applied at start-up.
//!
//! Each migration runs in its own transaction with its bookkeeping row. On PostgreSQL an advisory lock
//! keeps two replicas starting at once from applying the same migration twice.

use sha2::{Digest, Sha256};
use sqlx::{Executor, Row};

use super::{Dialect, Store, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// A migration numbered `version` with its SQL for each dialect, from
/// `migrations/{sqlite,postgres}/{prefix}_{name}.sql`.
macro_rules! migration {
    ($version:literal, $prefix:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("migrations/sqlite/", $prefix, "_", $name, ".sql")),
            postgres: include_str!(concat!("migrations/postgres/", $prefix, "_", $name, ".sql")),
        }
    };
}

/// Every migration, in the order they are applied. Versions increase but need not be contiguous:
/// [`apply`] runs each listed migration whose version the database has not recorded, so a number left
/// out now can be listed later and is then applied on databases that already have the ones after it.
const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001", "audit_log"),
    migration!(2, "0002", "consent"),
    migration!(3, "0003", "merkle"),
    migration!(4, "0004", "routing"),
    migration!(5, "0005", "queue_counts"),
    migration!(6, "0006", "pending_order"),
    migration!(7, "0007", "drop_pending_default_collation"),
    migration!(8, "0008", "controller_scoped_subjects"),
    migration!(9, "0009", "stream_leases"),
    migration!(10, "0010", "accepted_crl"),
    migration!(11, "0011", "key_log"),
    migration!(12, "0012", "policy_bundles"),
];

/// An arbitrary constant naming Haven's migration lock.
const PG_LOCK_KEY: i64 = 0x4841_5645_4e00_0001;

pub(super) async fn run(store: &Store) -> Result<(), StoreError> {
    let mut conn = store.pool.acquire().await?;
    if store.dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)").bind(PG_LOCK_KEY).execute(&mut *conn).await?;
    }
    let result = apply(store.dialect, &mut conn).await;
    if store.dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_LOCK_KEY).execute(&mut *conn).await?;
    }
    result
}

async fn apply(dialect: Dialect, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
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
        if checksum != checksum_of(sql_for(dialect, m)) {
            return Err(StoreError::ChangedMigration { version, name: m.name });
        }
        done.push(version);
    }
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        let sql = sql_for(dialect, m);
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

fn sql_for(dialect: Dialect, m: &Migration) -> &'static str {
    match dialect {
        Dialect::Sqlite => m.sqlite,
        Dialect::Postgres => m.postgres,
    }
}

fn checksum_of(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}
