//! The newest certificate revocation list the gateway has accepted (`accepted_crl`), kept so that an
//! older CRL is refused even after a restart.

use sqlx::Row;

use super::{Store, StoreError, Tx};

/// A CRL's place in the CA's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedCrl {
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// The CRL number, lowercase hex without leading zeros; empty if it has none.
    pub number: String,
}

/// The newest CRL accepted so far, if any.
pub async fn newest(store: &Store) -> Result<Option<AcceptedCrl>, StoreError> {
    let row = sqlx::query("SELECT this_update_secs, crl_number FROM accepted_crl WHERE id = 1")
        .fetch_optional(store.pool())
        .await?;
    row.map(|r| Ok(AcceptedCrl { this_update: r.try_get("this_update_secs")?, number: r.try_get("crl_number")? }))
        .transpose()
}

/// Records `crl` as the newest accepted, in the transaction that records the start or reload.
pub async fn record(tx: &mut Tx<'_>, crl: &AcceptedCrl, now_micros: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO accepted_crl (id, this_update_secs, crl_number, accepted_at_micros) VALUES (1, $1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET this_update_secs = excluded.this_update_secs, \
         crl_number = excluded.crl_number, accepted_at_micros = excluded.accepted_at_micros",
    )
    .bind(crl.this_update)
    .bind(&crl.number)
    .bind(now_micros)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
