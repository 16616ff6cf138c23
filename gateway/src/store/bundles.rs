//! The `policy_bundle` table: the files of every bundle the gateway put in force, by version, with the
//! audit entry that put it in force.

use sqlx::Row;

use super::Tx;

/// Keeps a bundle's files (a JSON object of path to text) under its version, with the audit entry that
/// put it in force (the newest, when it is put in force again).
pub(crate) async fn keep(
    tx: &mut Tx<'_>,
    version: &str,
    files_json: &str,
    in_force_seq: u64,
    now_micros: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO policy_bundle (version, files, in_force_seq, in_force_at_micros) VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO UPDATE SET in_force_seq = excluded.in_force_seq, in_force_at_micros = excluded.in_force_at_micros")
        .bind(version)
        .bind(files_json)
        .bind(i64::try_from(in_force_seq).unwrap_or(i64::MAX))
        .bind(now_micros)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The files of the bundle `version` and the position of the audit entry that put it in force, if the
/// gateway ever did.
pub async fn files(pool: &sqlx::AnyPool, version: &str) -> Result<Option<(String, u64)>, sqlx::Error> {
    let row = sqlx::query("SELECT files, in_force_seq FROM policy_bundle WHERE version = $1")
        .bind(version)
        .fetch_optional(pool)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, u64::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0)))).transpose()
}
