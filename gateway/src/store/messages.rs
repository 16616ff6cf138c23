//! The messages table: each submitted message with its reply, so that a resubmission of the same
//! message gets the same reply and a different message under a used id is refused.

use sqlx::{AssertSqlSafe, Row};

use super::Tx;
use super::dialect::{insert_many, push_pair_terms};

/// A submitted message, with its reply for idempotent resubmission.
pub struct MessageRow {
    pub sender: String,
    pub message_id: String,
    pub kind: String,
    pub content_sha256: String,
    pub response: Vec<u8>,
    pub created_at_micros: i64,
}

/// Inserts submitted messages.
pub(crate) async fn insert(tx: &mut Tx<'_>, rows: &[MessageRow]) -> Result<(), sqlx::Error> {
    insert_many(
        tx,
        "INSERT INTO messages (sender, message_id, kind, content_sha256, response, created_at_micros) VALUES",
        6,
        rows,
        |q, m| {
            q.bind(m.sender.as_str())
                .bind(m.message_id.as_str())
                .bind(m.kind.as_str())
                .bind(m.content_sha256.as_str())
                .bind(m.response.as_slice())
                .bind(m.created_at_micros)
        },
    )
    .await
}

/// The content hash and reply of each of the messages `keys` names (sender, message id) that was
/// submitted, as `(sender, message_id, content_sha256, response)`; one statement, whose shape changes
/// with the number of keys (callers take them in `dialect::chunks`).
pub(crate) async fn by_keys(
    tx: &mut Tx<'_>,
    keys: &[(&str, &str)],
) -> Result<Vec<(String, String, String, Vec<u8>)>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = String::from("SELECT sender, message_id, content_sha256, response FROM messages WHERE ");
    push_pair_terms(&mut sql, tx.dialect(), "sender", "message_id", keys.len());
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for (s, m) in keys {
        q = q.bind(*s).bind(*m);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).collect()
}
