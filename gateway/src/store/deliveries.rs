//! The deliveries table: one recipient's copy of a message, written at submission and read and moved
//! on by the lifecycle; and `status_updates`, the idempotency keys of the status changes applied to
//! the copies.

use haven_sharing::delivery::DeliveryStatus;
use sqlx::Row;

use super::Tx;
use super::dialect::{PG_INSERT_CHUNK, insert_many, with_rows};

/// One recipient copy, as stored (no field values).
#[derive(Debug, Clone)]
pub struct Copy {
    pub delivery_id: String,
    pub sender: String,
    pub message_id: String,
    pub recipient: String,
    pub kind: String,
    pub purpose: String,
    pub consent_id: String,
    pub subject: String,
    pub recipient_subject: String,
    pub status: DeliveryStatus,
    pub expires_at_micros: i64,
}

/// The columns [`copy_from`] reads, of `deliveries` named `d` (so that a join can select them too).
macro_rules! copy_columns {
    () => {
        "d.delivery_id, d.sender, d.message_id, d.recipient, d.kind, d.purpose, d.consent_id, d.subject, d.recipient_subject, d.status, d.expires_at_micros"
    };
}

/// The columns [`copy_from`] reads, for a statement that joins `deliveries d`.
pub(crate) const COPY_COLUMNS: &str = copy_columns!();

/// A read of [`Copy`] rows from `deliveries d`, then `$tail`.
macro_rules! select_copies {
    ($tail:literal) => {
        concat!("SELECT ", copy_columns!(), " FROM deliveries d ", $tail)
    };
}

/// A recipient's copy of a message, as submission writes it (in state `sent`).
pub struct DeliveryRow {
    pub delivery_id: String,
    pub sender: String,
    pub sender_person: String,
    pub message_id: String,
    pub recipient: String,
    pub kind: String,
    pub purpose: String,
    pub consent_id: String,
    pub subject: String,
    pub recipient_subject: String,
    /// The derivation of `recipient_subject` (`routing::pseudonym::VERSION`).
    pub pseudonym_version: i64,
    /// JSON array of the released field names.
    pub released_fields: String,
    pub updated_at_micros: i64,
    pub expires_at_micros: i64,
}

/// A copy its recipient stored, to be moved from `sent` to `delivered`.
pub(crate) struct Delivered<'a> {
    pub delivery_id: &'a str,
    /// The recipient organization that acknowledged it.
    pub by: &'a str,
    pub at: i64,
}

/// A stored delivery status; one the gateway never writes is a decode error (a broken invariant).
fn delivery_status(s: &str) -> Result<DeliveryStatus, sqlx::Error> {
    DeliveryStatus::parse(s).ok_or_else(|| sqlx::Error::Decode(format!("unknown delivery status `{s}`").into()))
}

pub(crate) fn copy_from(r: &sqlx::any::AnyRow) -> Result<Copy, sqlx::Error> {
    Ok(Copy {
        delivery_id: r.try_get("delivery_id")?,
        sender: r.try_get("sender")?,
        message_id: r.try_get("message_id")?,
        recipient: r.try_get("recipient")?,
        kind: r.try_get("kind")?,
        purpose: r.try_get("purpose")?,
        consent_id: r.try_get("consent_id")?,
        subject: r.try_get("subject")?,
        recipient_subject: r.try_get("recipient_subject")?,
        status: delivery_status(&r.try_get::<String, _>("status")?)?,
        expires_at_micros: r.try_get("expires_at_micros")?,
    })
}

/// One copy by its id.
pub(crate) async fn copy_by_id(tx: &mut Tx<'_>, delivery_id: &str) -> Result<Option<Copy>, sqlx::Error> {
    let r = sqlx::query(select_copies!("WHERE delivery_id = $1")).bind(delivery_id).fetch_optional(&mut **tx).await?;
    r.as_ref().map(copy_from).transpose()
}

/// The copies `sender` sent under a consent, by id.
pub(crate) async fn copies_under_consent(
    tx: &mut Tx<'_>,
    consent_id: &str,
    sender: &str,
) -> Result<Vec<Copy>, sqlx::Error> {
    let rows = sqlx::query(select_copies!("WHERE consent_id = $1 AND sender = $2 ORDER BY delivery_id"))
        .bind(consent_id)
        .bind(sender)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(copy_from).collect()
}

/// The copies of `sender`'s message `message_id`, by id: the one to `recipient`, or every one where
/// `recipient` is empty.
pub(crate) async fn copies_of_message(
    tx: &mut Tx<'_>,
    sender: &str,
    message_id: &str,
    recipient: &str,
) -> Result<Vec<Copy>, sqlx::Error> {
    let rows = sqlx::query(select_copies!(
        "WHERE sender = $1 AND message_id = $2 AND ($3 = '' OR recipient = $3) ORDER BY delivery_id"
    ))
    .bind(sender)
    .bind(message_id)
    .bind(recipient)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(copy_from).collect()
}

/// Inserts new copies, in state `sent`.
pub(crate) async fn insert(tx: &mut Tx<'_>, rows: &[DeliveryRow]) -> Result<(), sqlx::Error> {
    insert_many(tx, "INSERT INTO deliveries (delivery_id, sender, sender_person, message_id, recipient, kind, purpose, consent_id, subject, recipient_subject, pseudonym_version, released_fields, status, updated_at_micros, expires_at_micros) VALUES", 15, rows, |q, d| {
        q.bind(d.delivery_id.as_str())
            .bind(d.sender.as_str())
            .bind(d.sender_person.as_str())
            .bind(d.message_id.as_str())
            .bind(d.recipient.as_str())
            .bind(d.kind.as_str())
            .bind(d.purpose.as_str())
            .bind(d.consent_id.as_str())
            .bind(d.subject.as_str())
            .bind(d.recipient_subject.as_str())
            .bind(d.pseudonym_version)
            .bind(d.released_fields.as_str())
            .bind(DeliveryStatus::Sent.as_str())
            .bind(d.updated_at_micros)
            .bind(d.expires_at_micros)
    })
    .await
}

/// Sets a copy's status, with the code that explains it and the person who set it.
pub(crate) async fn set_status(
    tx: &mut Tx<'_>,
    delivery_id: &str,
    status: DeliveryStatus,
    code: &str,
    by: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE deliveries SET status = $1, status_code = $2, status_by = $3, updated_at_micros = $4 WHERE delivery_id = $5")
        .bind(status.as_str())
        .bind(code)
        .bind(by)
        .bind(now)
        .bind(delivery_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves copies from `sent` to `delivered`, each acknowledged by its recipient `by` at `at`, a
/// statement per chunk; returns how many moved. A copy that has moved on from `sent` already (its
/// recipient acted first) is left as it is.
pub(crate) async fn mark_delivered_many(tx: &mut Tx<'_>, copies: &[Delivered<'_>]) -> Result<u64, sqlx::Error> {
    let head = "UPDATE deliveries SET status = 'delivered', status_code = '', status_by = v.column2, updated_at_micros = v.column3 FROM (VALUES";
    let tail = ") AS v WHERE deliveries.delivery_id = v.column1 AND deliveries.status = 'sent'";
    with_rows(tx, head, 3, tail, PG_INSERT_CHUNK, copies, |q, d| q.bind(d.delivery_id).bind(d.by).bind(d.at)).await
}

/// The status a status change with this idempotency key set, if `org` made one.
pub(crate) async fn status_update(tx: &mut Tx<'_>, org: &str, update_id: &str) -> Result<Option<String>, sqlx::Error> {
    let r = sqlx::query("SELECT status FROM status_updates WHERE org = $1 AND update_id = $2")
        .bind(org)
        .bind(update_id)
        .fetch_optional(&mut **tx)
        .await?;
    r.map(|r| r.try_get(0)).transpose()
}

/// Records the idempotency key of `org`'s status change, the copy it named first and the status set.
pub(crate) async fn record_status_update(
    tx: &mut Tx<'_>,
    org: &str,
    update_id: &str,
    delivery_id: &str,
    status: DeliveryStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO status_updates (org, update_id, delivery_id, status) VALUES ($1, $2, $3, $4)")
        .bind(org)
        .bind(update_id)
        .bind(delivery_id)
        .bind(status.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The copy of `message_id` that `recipient` received, if it received one: (sender, the subject as the
/// sender knows it, the subject as the recipient knows it).
pub async fn received_by(
    pool: &sqlx::AnyPool,
    message_id: &str,
    recipient: &str,
) -> Result<Option<(String, String, String)>, super::StoreError> {
    let row = sqlx::query(
        "SELECT sender, subject, recipient_subject FROM deliveries WHERE message_id = $1 AND recipient = $2 LIMIT 1",
    )
    .bind(message_id)
    .bind(recipient)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
        None => None,
    })
}

/// Whether `recipient` received message `message_id` from `sender` (a message id is unique per sender
/// only): the sender's subject, if it did.
pub async fn received_from(
    pool: &sqlx::AnyPool,
    message_id: &str,
    recipient: &str,
    sender: &str,
) -> Result<Option<String>, super::StoreError> {
    let row =
        sqlx::query("SELECT subject FROM deliveries WHERE message_id = $1 AND recipient = $2 AND sender = $3 LIMIT 1")
            .bind(message_id)
            .bind(recipient)
            .bind(sender)
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}
