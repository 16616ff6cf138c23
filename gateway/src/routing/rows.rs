//! The rows submissions add — each message, each recipient's copy, each queued item — kept in memory
//! while a shared commit's units run, then written with multi-row inserts (one round trip per chunk
//! instead of three per submission) before the batch's audit entries, in the same transaction.
//!
//! A unit that fails has its rows dropped ([`NewRows::truncate`]); a later unit of the same batch sees
//! earlier units' messages through [`NewRows::message`], so a repeated message id is recognised before
//! anything is written.

use crate::store::Tx;
use crate::store::deliveries::{self, Delivered};
use crate::store::messages;
use crate::store::outbox::{self, AckedItem};

pub use crate::store::deliveries::DeliveryRow;
pub use crate::store::messages::MessageRow;
pub use crate::store::outbox::OutboxRow;

/// An acknowledged item, and the copy it delivered (if it was a delivery), recorded by the
/// recipient `by` at `at`.
pub struct Acked {
    pub item_id: String,
    pub delivery_id: Option<String>,
    pub by: String,
    pub at: i64,
}

/// Rows to write at the end of a shared commit, and acknowledgements to record.
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
        messages::insert(tx, &self.messages).await?;
        deliveries::insert(tx, &self.deliveries).await?;
        outbox::insert(tx, &self.outbox).await?;
        self.record_acks(tx).await
    }

    /// Ends the acknowledged items (payload deleted) and moves their copies from `sent` to
    /// `delivered`, a statement per chunk for each.
    async fn record_acks(&self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
        let items: Vec<AckedItem<'_>> =
            self.acked.iter().map(|a| AckedItem { item_id: a.item_id.as_str(), at: a.at }).collect();
        let ended = outbox::ack_many(tx, &items).await?;
        // Each was read as pending in this transaction under a lock no other writer of items gets past
        // (SQLite's one write lock; on PostgreSQL the item's consent row, or its own row): if any was
        // not ended here, the counts and audit entries built on that read are wrong, and nothing
        // commits.
        if ended != self.acked.len() as u64 {
            return Err(sqlx::Error::Protocol(format!(
                "{} of {} acknowledged items were still pending when written; the shared commit is rolled back",
                ended,
                self.acked.len()
            )));
        }
        let copies: Vec<Delivered<'_>> = self
            .acked
            .iter()
            .filter_map(|a| {
                a.delivery_id.as_deref().map(|delivery_id| Delivered { delivery_id, by: a.by.as_str(), at: a.at })
            })
            .collect();
        // A copy may have moved on from `sent` already (its recipient acted first): not counted.
        deliveries::mark_delivered_many(tx, &copies).await?;
        Ok(())
    }
}
