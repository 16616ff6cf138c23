//! The rows submissions add — each message, each recipient's copy, each queued item — kept in memory
//! while a shared commit's units run, then written with multi-row inserts (one round trip per chunk
//! instead of three per submission) before the batch's audit entries, in the same transaction.
//!
//! A unit that fails has its rows dropped with its savepoint ([`NewRows::truncate`]); a later unit of
//! the same batch sees earlier units' messages through [`NewRows::message`], so a repeated message id
//! is recognised before anything is written.

use std::collections::BTreeSet;

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};

use crate::audit::{PG_INSERT_CHUNK, chunks, is_sqlite, push_row};
use crate::store::Tx;

/// A recipient's copy of a message.
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
    /// The derivation of `recipient_subject` ([`super::pseudonym::VERSION`]).
    pub pseudonym_version: i64,
    /// JSON array of the released field names.
    pub released_fields: String,
    pub updated_at_micros: i64,
    pub expires_at_micros: i64,
}

/// A submitted message, with its reply for idempotent resubmission.
pub struct MessageRow {
    pub sender: String,
    pub message_id: String,
    pub kind: String,
    pub content_sha256: String,
    pub response: Vec<u8>,
    pub created_at_micros: i64,
}

/// A queued item.
pub struct OutboxRow {
    pub item_id: String,
    pub org: String,
    pub item_kind: &'static str,
    pub delivery_id: String,
    pub consent_id: String,
    pub sender: String,
    pub payload: Vec<u8>,
    pub queued_at_micros: i64,
    pub expires_at_micros: i64,
}

/// An acknowledged item, and the copy it delivered (if it was a delivery), recorded by the
/// recipient `by` at `at`.
pub struct Acked {
    pub item_id: String,
    pub delivery_id: Option<String>,
    pub by: String,
    pub at: i64,
}

/// Rows to write at the end of a shared commit, and (on SQLite) acknowledgements to record.
#[derive(Default)]
pub struct NewRows {
    pub messages: Vec<MessageRow>,
    pub deliveries: Vec<DeliveryRow>,
    pub outbox: Vec<OutboxRow>,
    pub acked: Vec<Acked>,
}

/// How many rows of each kind there were, to drop a failed unit's.
#[derive(Clone, Copy)]
pub struct Mark(usize, usize, usize, usize);

impl NewRows {
    pub fn mark(&self) -> Mark {
        Mark(self.messages.len(), self.deliveries.len(), self.outbox.len(), self.acked.len())
    }

    /// Drops every row added after `mark`.
    pub fn truncate(&mut self, mark: Mark) {
        self.messages.truncate(mark.0);
        self.deliveries.truncate(mark.1);
        self.outbox.truncate(mark.2);
        self.acked.truncate(mark.3);
    }

    /// Whether an earlier unit of this batch acknowledged the item.
    pub fn is_acked(&self, item_id: &str) -> bool {
        self.acked.iter().any(|a| a.item_id == item_id)
    }

    /// A message an earlier unit of this batch submitted.
    pub fn message(&self, sender: &str, message_id: &str) -> Option<&MessageRow> {
        self.messages.iter().find(|m| m.sender == sender && m.message_id == message_id)
    }

    /// Writes every row, then (on PostgreSQL) notifies each organization something was queued.
    pub async fn write(&self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
        insert_many(
            tx,
            "INSERT INTO messages (sender, message_id, kind, content_sha256, response, created_at_micros) VALUES",
            6,
            &self.messages,
            |q, m| {
                q.bind(m.sender.as_str())
                    .bind(m.message_id.as_str())
                    .bind(m.kind.as_str())
                    .bind(m.content_sha256.as_str())
                    .bind(m.response.as_slice())
                    .bind(m.created_at_micros)
            },
        )
        .await?;
        insert_many(tx, "INSERT INTO deliveries (delivery_id, sender, sender_person, message_id, recipient, kind, purpose, consent_id, subject, recipient_subject, pseudonym_version, released_fields, status, updated_at_micros, expires_at_micros) VALUES", 15, &self.deliveries, |q, d| {
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
                .bind("sent")
                .bind(d.updated_at_micros)
                .bind(d.expires_at_micros)
        })
        .await?;
        insert_outbox(tx, &self.outbox).await?;
        self.record_acks(tx).await
    }

    /// Ends the acknowledged items (payload deleted) and moves their copies from `sent` to
    /// `delivered`, a statement per chunk for each.
    async fn record_acks(&self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
        let empty = if is_sqlite(tx) { "x''" } else { "''::bytea" };
        let head =
            format!("UPDATE outbox SET state = 'acked', payload = {empty}, done_at_micros = v.column2 FROM (VALUES");
        let tail = ") AS v WHERE outbox.item_id = v.column1 AND outbox.state = 'pending'";
        let ended = with_rows(tx, &head, 2, tail, &self.acked, |q, a| q.bind(a.item_id.as_str()).bind(a.at)).await?;
        // Each was read as pending in this transaction, which holds the write lock: if any was not
        // ended here, the counts and audit entries built on that read are wrong, and nothing commits.
        if ended != self.acked.len() as u64 {
            return Err(sqlx::Error::Protocol(format!(
                "{} of {} acknowledged items were still pending when written; the shared commit is rolled back",
                ended,
                self.acked.len()
            )));
        }
        let copies: Vec<&Acked> = self.acked.iter().filter(|a| a.delivery_id.is_some()).collect();
        let head = "UPDATE deliveries SET status = 'delivered', status_code = '', status_by = v.column2, updated_at_micros = v.column3 FROM (VALUES";
        let tail = ") AS v WHERE deliveries.delivery_id = v.column1 AND deliveries.status = 'sent'";
        // A copy may have moved on from `sent` already (its recipient acted first): not counted.
        with_rows(tx, head, 3, tail, &copies, |q, a| {
            q.bind(a.delivery_id.as_deref().unwrap_or("")).bind(a.by.as_str()).bind(a.at)
        })
        .await?;
        Ok(())
    }
}

/// Inserts queued items and, on PostgreSQL, sends one `pg_notify` per organization (delivered at
/// commit, so a stream on another replica hears of them).
pub async fn insert_outbox(tx: &mut Tx<'_>, rows: &[OutboxRow]) -> Result<(), sqlx::Error> {
    insert_many(tx, "INSERT INTO outbox (item_id, org, item_kind, delivery_id, consent_id, sender, payload, queued_at_micros, expires_at_micros, state) VALUES", 10, rows, |q, r| {
        q.bind(r.item_id.as_str())
            .bind(r.org.as_str())
            .bind(r.item_kind)
            .bind(r.delivery_id.as_str())
            .bind(r.consent_id.as_str())
            .bind(r.sender.as_str())
            .bind(r.payload.as_slice())
            .bind(r.queued_at_micros)
            .bind(r.expires_at_micros)
            .bind("pending")
    })
    .await?;
    if !is_sqlite(tx) {
        let orgs: BTreeSet<&str> = rows.iter().map(|r| r.org.as_str()).collect();
        for org in orgs {
            sqlx::query("SELECT pg_notify($1, $2)").bind(super::queue::PG_CHANNEL).bind(org).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// Inserts `rows` with multi-row statements of `columns` columns each, `bind` binding one row.
async fn insert_many<'r, R>(
    tx: &mut Tx<'_>,
    head: &str,
    columns: usize,
    rows: &'r [R],
    bind: impl Fn(Query<'r, Any, AnyArguments>, &'r R) -> Query<'r, Any, AnyArguments>,
) -> Result<(), sqlx::Error> {
    with_rows(tx, head, columns, "", rows, bind).await?;
    Ok(())
}

/// Runs `head`, then the placeholders of a chunk of `rows` (`columns` each), then `tail`, once per
/// chunk (see [`chunks`]; PostgreSQL takes the audit log's small chunks, for the reason given there),
/// `bind` binding one row; returns how many rows the statements changed.
async fn with_rows<'r, R>(
    tx: &mut Tx<'_>,
    head: &str,
    columns: usize,
    tail: &str,
    rows: &'r [R],
    bind: impl Fn(Query<'r, Any, AnyArguments>, &'r R) -> Query<'r, Any, AnyArguments>,
) -> Result<u64, sqlx::Error> {
    let sqlite = is_sqlite(tx);
    let mut affected = 0;
    for chunk in chunks(rows, sqlite, PG_INSERT_CHUNK) {
        let mut sql = String::with_capacity(head.len() + tail.len() + chunk.len() * columns * 5);
        sql.push_str(head);
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { " " } else { ", " });
            push_row(&mut sql, sqlite, i, columns);
        }
        sql.push_str(tail);
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            q = bind(q, row);
        }
        affected += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(affected)
}
