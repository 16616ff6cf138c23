//! What a shared commit reads once for all its submissions: whether each message id was used before,
//! each consent a submission names, and how many deliveries each sender has queued for each
//! organization. One statement of each kind per batch replaces three or more per submission.
//!
//! The reads are taken inside the batch's transaction, before its units run, and stay true while they
//! run: units write these tables only through the batch's buffers (new messages in
//! [`super::rows::NewRows`], count changes in [`super::queue::CountChanges`]), which are written after
//! every unit has run, and a unit looks in those buffers as well. On SQLite the transaction holds the
//! write lock from its start (`BEGIN IMMEDIATE`), so nobody else writes them meanwhile. On PostgreSQL
//! the consent rows are locked as they are read (`FOR NO KEY UPDATE`), so a revocation racing a
//! submission is ordered before or after it (see [`super::lifecycle`]); a row another transaction
//! holds is skipped, and the submission that names it waits for it alone, in a savepoint.

use std::collections::{HashMap, HashSet};

use super::queue::QueuedRow;
use crate::store::consents::{self, Stored};
use crate::store::deliveries::Copy;
use crate::store::dialect::chunks;
use crate::store::outbox::RowLock;
use crate::store::{Dialect, StoreError, Tx};
use crate::store::{messages, outbox};

/// What one unit will read, named before it runs.
#[derive(Default)]
pub struct Reads {
    /// (sender, message id) pairs.
    pub messages: Vec<(String, String)>,
    pub consents: Vec<String>,
    /// Senders whose queued counts the unit checks against the quota.
    pub senders: Vec<String>,
    /// Queued items (with their copies) the unit acknowledges.
    pub items: Vec<String>,
}

impl Reads {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.consents.is_empty() && self.senders.is_empty() && self.items.is_empty()
    }
}

/// A stored message's content hash and reply.
pub type StoredMessage = (String, Vec<u8>);

/// What a batch read for its units (or one unit's own read, [`Prefetched::read_own`]). A lookup
/// answers `None` when the key was not read here: a unit finds every key it named.
#[derive(Default)]
pub struct Prefetched {
    /// Every pair looked up, with the stored content hash and reply where the message exists.
    messages: HashMap<(String, String), Option<StoredMessage>>,
    /// Every consent looked up: `None` where there is none with that id, an error where its row
    /// cannot be read back (damaged data, reported to the unit that names it).
    consents: HashMap<String, Result<Option<Stored>, String>>,
    /// Senders whose counts were read, and the counts by (sender, organization).
    senders: HashSet<String>,
    pending: HashMap<(String, String), i64>,
    /// Items without a consent whose own rows the batch locked (on PostgreSQL).
    locked_items: HashSet<String>,
    /// Every item looked up, with its copy for a delivery.
    items: HashMap<String, Option<(QueuedRow, Option<Copy>)>>,
    /// Whether everything here stays true until the batch commits: read on SQLite, in a transaction
    /// that holds the one write lock, or read by one unit under its own locks ([`Prefetched::read_own`]).
    held: bool,
}

/// Keys per statement on PostgreSQL (on SQLite, see [`chunks`]): two binds each for pairs, far below
/// its limit.
const CHUNK: usize = 200;

impl Prefetched {
    /// Reads what `wants` name, in `tx`.
    pub async fn read<'a>(tx: &mut Tx<'_>, wants: impl Iterator<Item = &'a Reads>) -> Result<Prefetched, sqlx::Error> {
        let dialect = tx.dialect();
        let mut messages: HashSet<(&str, &str)> = HashSet::new();
        let mut consents: HashSet<&str> = HashSet::new();
        let mut senders: HashSet<&str> = HashSet::new();
        let mut items: HashSet<&str> = HashSet::new();
        for w in wants {
            items.extend(w.items.iter().map(String::as_str));
            messages.extend(w.messages.iter().map(|(s, m)| (s.as_str(), m.as_str())));
            consents.extend(w.consents.iter().map(String::as_str).filter(|c| !c.is_empty()));
            senders.extend(w.senders.iter().map(String::as_str));
        }
        let mut out = Prefetched { held: dialect == Dialect::Sqlite, ..Prefetched::default() };

        let messages: Vec<(&str, &str)> = messages.into_iter().collect();
        for chunk in chunks(&messages, dialect, CHUNK) {
            for (s, m) in chunk {
                out.messages.insert(((*s).to_owned(), (*m).to_owned()), None);
            }
            for (sender, message_id, sha, response) in messages::by_keys(tx, chunk).await? {
                out.messages.insert((sender, message_id), Some((sha, response)));
            }
        }

        let items: Vec<&str> = items.into_iter().collect();
        for chunk in chunks(&items, dialect, CHUNK) {
            for id in chunk {
                out.items.insert((*id).to_owned(), None);
            }
            for (item_id, row, copy) in outbox::items_with_copies(tx, chunk).await? {
                out.items.insert(item_id, Some((row, copy)));
            }
        }
        // On PostgreSQL the items' consents are locked with the submissions' (as a revocation or an
        // expiry locks the consent before it ends an item), and the items' states are read again
        // under those locks: an acknowledgement of an item whose consent the batch holds is settled
        // by these reads. An item without a consent (a notice, or a delivery sent without one) has
        // its own row locked instead, after the consents, as every writer of items locks them. An
        // item whose lock another transaction holds is left for a transaction of its own.
        let item_consents: Vec<String> = if dialect == Dialect::Sqlite {
            Vec::new()
        } else {
            out.items.values().flatten().map(|(row, _)| row.consent_id.clone()).collect()
        };
        consents.extend(item_consents.iter().map(String::as_str).filter(|c| !c.is_empty()));

        let consents: Vec<&str> = consents.into_iter().collect();
        for chunk in chunks(&consents, dialect, CHUNK) {
            for (id, stored) in consents::load_many(tx, chunk).await? {
                out.consents.insert(id, stored);
            }
        }
        // Every item found is read again, including those whose consent a submission named: any of
        // them may have ended between the first read and the lock.
        let found: Vec<String> = if dialect == Dialect::Sqlite {
            Vec::new()
        } else {
            out.items.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k.clone()).collect()
        };
        let (bare, under_consent): (Vec<String>, Vec<String>) = found.into_iter().partition(|id| {
            out.items.get(id).is_some_and(|v| v.as_ref().is_some_and(|(row, _)| row.consent_id.is_empty()))
        });
        for (ids, lock) in [(under_consent, RowLock::None), (bare, RowLock::Skip)] {
            for chunk in chunks(&ids, dialect, CHUNK) {
                for (id, state) in outbox::states(tx, chunk, lock).await? {
                    if lock == RowLock::Skip {
                        out.locked_items.insert(id.clone());
                    }
                    if let Some(Some((row, _))) = out.items.get_mut(&id) {
                        row.state = state;
                    }
                }
            }
        }

        let senders: Vec<&str> = senders.into_iter().collect();
        for chunk in chunks(&senders, dialect, CHUNK) {
            out.senders.extend(chunk.iter().map(|s| (*s).to_owned()));
            for (sender, org, pending) in outbox::counts_from(tx, chunk).await? {
                out.pending.insert((sender, org), pending);
            }
        }
        Ok(out)
    }

    /// What one unit reads for itself where the batch could not settle its reads (on PostgreSQL, a
    /// consent row another transaction held when the batch read): the same facts, read under locks
    /// that wait and then hold until the batch commits, so the unit runs the same plan on them as a
    /// settled unit does. Consents are locked in id order, then each item's row (`FOR UPDATE`, as a
    /// revocation or an expiry locks it after its consent) and its state read again under that lock.
    pub async fn read_own(tx: &mut Tx<'_>, reads: &Reads) -> Result<Prefetched, StoreError> {
        let mut out = Prefetched { held: true, ..Prefetched::default() };
        let pairs: Vec<(&str, &str)> = reads.messages.iter().map(|(s, m)| (s.as_str(), m.as_str())).collect();
        for (s, m) in &pairs {
            out.messages.insert(((*s).to_owned(), (*m).to_owned()), None);
        }
        for (sender, message_id, sha, response) in messages::by_keys(tx, &pairs).await? {
            out.messages.insert((sender, message_id), Some((sha, response)));
        }
        let items: Vec<&str> = reads.items.iter().map(String::as_str).collect();
        for id in &items {
            out.items.insert((*id).to_owned(), None);
        }
        for (item_id, row, copy) in outbox::items_with_copies(tx, &items).await? {
            out.items.insert(item_id, Some((row, copy)));
        }
        // Every lock in id order; the consents the unit names are read, an item's consent only locked
        // (the acknowledgement needs its lock, not its content).
        let mut consents: Vec<&str> = reads.consents.iter().map(String::as_str).collect();
        consents.extend(out.items.values().flatten().map(|(row, _)| row.consent_id.as_str()));
        consents.retain(|c| !c.is_empty());
        consents.sort_unstable();
        consents.dedup();
        let consents: Vec<String> = consents.into_iter().map(str::to_owned).collect();
        for id in consents {
            if !reads.consents.contains(&id) {
                consents::lock_consent(tx, &id).await?;
                continue;
            }
            let stored = match consents::load_locked(tx, &id).await {
                Ok(stored) => Ok(stored),
                Err(StoreError::Unreadable(why)) => Err(why),
                Err(e) => return Err(e),
            };
            out.consents.insert(id, stored);
        }
        let found: Vec<String> = out.items.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k.clone()).collect();
        for (id, state) in outbox::states(tx, &found, RowLock::Wait).await? {
            if let Some(Some((row, _))) = out.items.get_mut(&id) {
                row.state = state;
            }
        }
        let senders: Vec<&str> = reads.senders.iter().map(String::as_str).collect();
        out.senders.extend(senders.iter().map(|s| (*s).to_owned()));
        for (sender, org, pending) in outbox::counts_from(tx, &senders).await? {
            out.pending.insert((sender, org), pending);
        }
        Ok(out)
    }

    /// A queued item and, for a delivery, its copy, if they were read here: `Some(None)` when there is
    /// no such item.
    pub fn item(&self, item_id: &str) -> Option<Option<&(QueuedRow, Option<Copy>)>> {
        self.items.get(item_id).map(Option::as_ref)
    }

    /// The stored content hash and reply of a message, if it was read here: `Some(None)` when it does
    /// not exist.
    pub fn message(&self, sender: &str, message_id: &str) -> Option<Option<&StoredMessage>> {
        self.messages.get(&(sender.to_owned(), message_id.to_owned())).map(Option::as_ref)
    }

    /// A consent, if it was read here: `Some(Ok(None))` when there is none with that id, an error when
    /// its row cannot be read back.
    pub fn consent(&self, consent_id: &str) -> Option<Result<Option<&Stored>, StoreError>> {
        self.consents.get(consent_id).map(|c| match c {
            Ok(stored) => Ok(stored.as_ref()),
            Err(why) => Err(StoreError::Unreadable(why.clone())),
        })
    }

    /// Whether what was read here for `reads` stays true until the batch commits, so a unit that reads
    /// no more can write through the batch's buffers alone: on SQLite always (the batch holds the one
    /// write lock); on PostgreSQL when the batch locked every consent they touch, so no revocation or
    /// expiry can change them meanwhile, and the row of every item without a consent (an item that
    /// does not exist is covered too, since nothing is written for it).
    pub fn settled(&self, reads: &Reads) -> bool {
        self.held
            || reads.consents.iter().all(|c| self.consents.contains_key(c))
                && reads.items.iter().all(|i| self.item_settled(i))
    }

    /// Whether what was read here of one item stays true until the batch commits (see
    /// [`Prefetched::settled`]).
    pub fn item_settled(&self, item_id: &str) -> bool {
        self.held
            || match self.items.get(item_id) {
                Some(Some((row, _))) if row.consent_id.is_empty() => self.locked_items.contains(item_id),
                Some(Some((row, _))) => {
                    // Read, so locked (an unreadable row too); absent, nothing was locked.
                    self.consents.get(&row.consent_id).is_some_and(|c| !matches!(c, Ok(None)))
                }
                Some(None) => true,
                None => false,
            }
    }

    /// How many deliveries `sender` has queued for `org` as committed, if the sender's counts were read.
    pub fn pending(&self, sender: &str, org: &str) -> Option<i64> {
        self.senders
            .contains(sender)
            .then(|| self.pending.get(&(sender.to_owned(), org.to_owned())).copied().unwrap_or(0))
    }
}

/// Facts written by hand, for the plans' unit tests: each as if read under the batch's locks.
#[cfg(test)]
impl Prefetched {
    pub(crate) fn held() -> Prefetched {
        Prefetched { held: true, ..Prefetched::default() }
    }

    pub(crate) fn with_item(mut self, item_id: &str, found: Option<(QueuedRow, Option<Copy>)>) -> Prefetched {
        self.items.insert(item_id.to_owned(), found);
        self
    }

    pub(crate) fn with_message(mut self, sender: &str, message_id: &str, found: Option<StoredMessage>) -> Prefetched {
        self.messages.insert((sender.to_owned(), message_id.to_owned()), found);
        self
    }

    pub(crate) fn with_consent(mut self, consent_id: &str, found: Option<Stored>) -> Prefetched {
        self.consents.insert(consent_id.to_owned(), Ok(found));
        self
    }

    /// A consent whose row cannot be read back.
    pub(crate) fn with_damaged_consent(mut self, consent_id: &str, why: &str) -> Prefetched {
        self.consents.insert(consent_id.to_owned(), Err(why.to_owned()));
        self
    }

    /// The sender's counts were read: `pending` deliveries queued for each organization named.
    pub(crate) fn with_counts(mut self, sender: &str, pending: &[(&str, i64)]) -> Prefetched {
        self.senders.insert(sender.to_owned());
        for (org, n) in pending {
            self.pending.insert((sender.to_owned(), (*org).to_owned()), *n);
        }
        self
    }
}
