//! The deliveries table: one recipient's copy of a message, as the lifecycle reads it.

use haven_sharing::delivery::DeliveryStatus;
use sqlx::Row;

use super::Tx;

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

const COPY_COLUMNS: &str = "delivery_id, sender, message_id, recipient, kind, purpose, consent_id, subject, recipient_subject, status, expires_at_micros";

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

pub(crate) async fn copy_by_id(tx: &mut Tx<'_>, delivery_id: &str) -> Result<Option<Copy>, sqlx::Error> {
    let _ = COPY_COLUMNS;
    let r = sqlx::query("SELECT delivery_id, sender, message_id, recipient, kind, purpose, consent_id, subject, recipient_subject, status, expires_at_micros FROM deliveries WHERE delivery_id = $1")
        .bind(delivery_id)
        .fetch_optional(&mut **tx)
        .await?;
    r.as_ref().map(copy_from).transpose()
}
