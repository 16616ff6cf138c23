//! The stream_leases table: at most one row per organization, naming the stream that holds the
//! organization's delivery lease and until when (see `stream::lease`).

use sqlx::Row;

use super::Tx;

/// The stream that holds an organization's lease, as a refusal names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub stream_id: String,
    /// Where the holding stream connected from.
    pub source: String,
    pub opened_at_micros: i64,
    /// When the lease lapses unless its replica renews it.
    pub expires_at_micros: i64,
}

/// Writes `holder` as `org`'s lease holder if no stream holds it or the holder's lease has lapsed at
/// its `opened_at_micros`; returns whether it was written. A live row is left alone (and, on
/// PostgreSQL, locked until the transaction ends).
pub(crate) async fn take(tx: &mut Tx<'_>, org: &str, holder: &Holder) -> Result<bool, sqlx::Error> {
    // One statement decides: a new row, or the lapsed row of another stream taken over.
    let done = sqlx::query(
        "INSERT INTO stream_leases (org, stream_id, source, opened_at_micros, expires_at_micros) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (org) DO UPDATE SET stream_id = excluded.stream_id, source = excluded.source, \
         opened_at_micros = excluded.opened_at_micros, expires_at_micros = excluded.expires_at_micros \
         WHERE stream_leases.expires_at_micros <= excluded.opened_at_micros",
    )
    .bind(org)
    .bind(holder.stream_id.as_str())
    .bind(holder.source.as_str())
    .bind(holder.opened_at_micros)
    .bind(holder.expires_at_micros)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The stream that holds `org`'s lease; an error if no row exists.
pub(crate) async fn holder(tx: &mut Tx<'_>, org: &str) -> Result<Holder, sqlx::Error> {
    let row =
        sqlx::query("SELECT stream_id, source, opened_at_micros, expires_at_micros FROM stream_leases WHERE org = $1")
            .bind(org)
            .fetch_one(&mut **tx)
            .await?;
    Ok(Holder {
        stream_id: row.try_get("stream_id")?,
        source: row.try_get("source")?,
        opened_at_micros: row.try_get("opened_at_micros")?,
        expires_at_micros: row.try_get("expires_at_micros")?,
    })
}

/// Extends `stream_id`'s lease on `org` until `expires`; returns whether that stream held it.
pub(crate) async fn renew(tx: &mut Tx<'_>, org: &str, stream_id: &str, expires: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE stream_leases SET expires_at_micros = $1 WHERE org = $2 AND stream_id = $3")
        .bind(expires)
        .bind(org)
        .bind(stream_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes `stream_id`'s lease on `org`, if it still holds it.
pub(crate) async fn release(tx: &mut Tx<'_>, org: &str, stream_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM stream_leases WHERE org = $1 AND stream_id = $2")
        .bind(org)
        .bind(stream_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
