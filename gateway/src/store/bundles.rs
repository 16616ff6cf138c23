//! The `policy_bundle` table: the files of every bundle the gateway put in force, by version.

use sqlx::Row;

use super::Tx;

/// Keeps a bundle's files (a JSON object of path to text) under its version, once.
pub(crate) async fn keep(tx: &mut Tx<'_>, version: &str, files_json: &str, now_micros: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO policy_bundle (version, files, in_force_at_micros) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING")
        .bind(version)
        .bind(files_json)
        .bind(now_micros)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The files of the bundle `version`, if the gateway ever put it in force.
pub async fn files(pool: &sqlx::AnyPool, version: &str) -> Result<Option<String>, sqlx::Error> {
    let row =
        sqlx::query("SELECT files FROM policy_bundle WHERE version = $1").bind(version).fetch_optional(pool).await?;
    row.map(|r| r.try_get(0)).transpose()
}
