//! The consents table: registering, superseding, revoking and expiring a consent, reading one back,
//! alone or for a shared commit, and locking its row so that a revocation, a submission and an
//! acknowledgement under it are ordered.

use haven_trust::receipt::{ConsentReceipt, ConsentState};
use sqlx::Row;

use super::dialect::{Dialect, push_row};
use super::{StoreError, Tx};

/// A stored consent.
#[derive(Debug, Clone)]
pub struct Stored {
    pub receipt: ConsentReceipt,
    pub receipt_jws: String,
    pub receipt_json: String,
    pub state: ConsentState,
    pub revocation_reason: String,
    pub superseded_by: String,
    pub registered_at_micros: i64,
    pub state_changed_at_micros: i64,
}

/// A consent row as read back.
pub(crate) fn row_to_stored(row: &sqlx::any::AnyRow) -> Result<Stored, StoreError> {
    let json: String = row.try_get("receipt_json")?;
    let receipt: ConsentReceipt = serde_json::from_str(&json)
        .map_err(|e| StoreError::Unreadable(format!("a stored consent receipt cannot be decoded: {e}")))?;
    let state: String = row.try_get("state")?;
    let state = ConsentState::parse(&state)
        .ok_or_else(|| StoreError::Unreadable(format!("a stored consent has the unknown state `{state}`")))?;
    Ok(Stored {
        receipt,
        receipt_jws: row.try_get("receipt_jws")?,
        receipt_json: json,
        state,
        revocation_reason: row.try_get("revocation_reason")?,
        superseded_by: row.try_get("superseded_by")?,
        registered_at_micros: row.try_get("registered_at_micros")?,
        state_changed_at_micros: row.try_get("state_changed_at_micros")?,
    })
}

/// The columns every consent read selects.
macro_rules! select {
    ($tail:literal) => {
        concat!("SELECT consent_id, receipt_json, receipt_jws, state, revocation_reason, superseded_by, registered_at_micros, state_changed_at_micros, content_sha256 FROM consents ", $tail)
    };
}

/// Loads a consent in a transaction.
pub async fn load(tx: &mut Tx<'_>, consent_id: &str) -> Result<Option<(Stored, String)>, StoreError> {
    let row = sqlx::query(select!("WHERE consent_id = $1")).bind(consent_id).fetch_optional(&mut **tx).await?;
    match row {
        Some(r) => Ok(Some((row_to_stored(&r)?, r.try_get("content_sha256")?))),
        None => Ok(None),
    }
}

/// Loads consents by id in a transaction, for a shared commit's submissions: each id maps to its
/// consent, to `None` where there is none, or to why its row cannot be read back (damaged data, which
/// the submission that names it reports).
///
/// On PostgreSQL it also locks the rows (as [`load_locked`] does), skipping any another transaction
/// holds: those are left out, and each submission that names one waits for it alone.
pub async fn load_many(
    tx: &mut Tx<'_>,
    ids: &[&str],
) -> Result<Vec<(String, Result<Option<Stored>, String>)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let dialect = tx.dialect();
    let mut sql = String::from(select!("WHERE consent_id IN "));
    push_row(&mut sql, dialect, 0, ids.len());
    if dialect == Dialect::Postgres {
        sql.push_str(" FOR NO KEY UPDATE SKIP LOCKED");
    }
    // Its shape changes with the number of ids, which callers take in `dialect::chunks`.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    // Where rows may be skipped, a missing id is not known to be absent.
    let mut found: std::collections::HashMap<String, Result<Option<Stored>, String>> = match dialect {
        Dialect::Sqlite => ids.iter().map(|id| ((*id).to_owned(), Ok(None))).collect(),
        Dialect::Postgres => Default::default(),
    };
    for row in q.fetch_all(&mut **tx).await? {
        let id: String = row.try_get("consent_id")?;
        let stored = row_to_stored(&row).map(Some).map_err(|e| match e {
            StoreError::Unreadable(why) => why,
            other => other.to_string(),
        });
        found.insert(id, stored);
    }
    Ok(found.into_iter().collect())
}

/// Loads a consent in a transaction and, on PostgreSQL, locks its row until the transaction ends, as a
/// revocation does, so the two are ordered (SQLite's transactions already are).
pub async fn load_locked(tx: &mut Tx<'_>, consent_id: &str) -> Result<Option<Stored>, StoreError> {
    let sql = match tx.dialect() {
        Dialect::Sqlite => select!("WHERE consent_id = $1"),
        Dialect::Postgres => select!("WHERE consent_id = $1 FOR NO KEY UPDATE"),
    };
    let row = sqlx::query(sql).bind(consent_id).fetch_optional(&mut **tx).await?;
    row.as_ref().map(row_to_stored).transpose()
}

/// Loads a consent outside a transaction (decisions, shows).
pub async fn load_read(pool: &sqlx::AnyPool, consent_id: &str) -> Result<Option<Stored>, StoreError> {
    let row = sqlx::query(select!("WHERE consent_id = $1")).bind(consent_id).fetch_optional(pool).await?;
    row.as_ref().map(row_to_stored).transpose()
}

/// A controller's consents, by id after `after`, at most `limit`; `subject` and `state` narrow them
/// when not empty.
pub async fn list(
    pool: &sqlx::AnyPool,
    controller: &str,
    subject: &str,
    state: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<Stored>, StoreError> {
    let rows = sqlx::query(
        select!("WHERE controller = $1 AND ($2 = '' OR subject = $2) AND ($3 = '' OR state = $3) AND consent_id > $4 ORDER BY consent_id LIMIT $5"),
    )
    .bind(controller)
    .bind(subject)
    .bind(state)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(row_to_stored).collect()
}

/// Locks a consent's row for the rest of the transaction. Every transaction that touches copies under
/// a consent takes this lock first, so revocations, acknowledgements, withdrawals and expiry queue up
/// on the consent instead of deadlocking on PostgreSQL. On SQLite a write transaction already holds
/// the database's one write lock (`BEGIN IMMEDIATE`), so there is nothing more to take.
pub(crate) async fn lock_consent(tx: &mut Tx<'_>, consent_id: &str) -> Result<(), sqlx::Error> {
    if !consent_id.is_empty() && tx.dialect() == Dialect::Postgres {
        // The lock an UPDATE takes, without writing a new row version.
        sqlx::query("SELECT 1 FROM consents WHERE consent_id = $1 FOR NO KEY UPDATE")
            .bind(consent_id)
            .fetch_optional(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A consent as registration writes it (state `given`).
pub(crate) struct NewConsent<'a> {
    pub consent_id: &'a str,
    pub controller: &'a str,
    pub subject: &'a str,
    pub receipt_jws: &'a str,
    pub receipt_json: &'a str,
    pub content_sha256: &'a str,
    pub valid_from_micros: i64,
    pub valid_until_micros: i64,
}

/// Inserts a newly registered consent, given at `now`.
pub(crate) async fn insert(tx: &mut Tx<'_>, c: &NewConsent<'_>, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO consents (consent_id, controller, subject, receipt_jws, receipt_json, content_sha256, valid_from_micros, valid_until_micros, state, registered_at_micros, state_changed_at_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'given', $9, $9)")
        .bind(c.consent_id)
        .bind(c.controller)
        .bind(c.subject)
        .bind(c.receipt_jws)
        .bind(c.receipt_json)
        .bind(c.content_sha256)
        .bind(c.valid_from_micros)
        .bind(c.valid_until_micros)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Marks consent `old_id` superseded by `new_id` at `now`.
pub(crate) async fn supersede(tx: &mut Tx<'_>, old_id: &str, new_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE consents SET state = 'superseded', superseded_by = $1, state_changed_at_micros = $2 WHERE consent_id = $3")
        .bind(new_id)
        .bind(now)
        .bind(old_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records a consent's revocation: its new state and the reason, at `now`.
pub(crate) async fn revoke(
    tx: &mut Tx<'_>,
    consent_id: &str,
    state: ConsentState,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE consents SET state = $1, revocation_reason = $2, state_changed_at_micros = $3 WHERE consent_id = $4",
    )
    .bind(state.as_str())
    .bind(reason)
    .bind(now)
    .bind(consent_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The given consents whose window has ended at `now`, soonest ended first, at most 1000.
pub(crate) async fn due_to_expire(pool: &sqlx::AnyPool, now: i64) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT consent_id FROM consents WHERE state = 'given' AND valid_until_micros <= $1 ORDER BY valid_until_micros LIMIT 1000")
        .bind(now)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// Marks a given consent expired at `now`; returns whether it was still given.
pub(crate) async fn expire(tx: &mut Tx<'_>, consent_id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE consents SET state = 'expired', state_changed_at_micros = $1 WHERE consent_id = $2 AND state = 'given'",
    )
    .bind(now)
    .bind(consent_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `controller` registered a consent about `subject` (in any state).
pub(crate) async fn controls_subject(
    pool: &sqlx::AnyPool,
    controller: &str,
    subject: &str,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT 1 FROM consents WHERE controller = $1 AND subject = $2 LIMIT 1")
        .bind(controller)
        .bind(subject)
        .fetch_optional(pool)
        .await?;
    Ok(row.is_some())
}
