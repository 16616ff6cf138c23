//! The network-wide lease on an organization's delivery stream (`stream_leases`, migration 9).
//!
//! Every replica sharing the database sees the same row, so at most one stream of an organization
//! holds the lease at a time, wherever it is connected. A stream takes the lease when it opens, if no
//! other stream holds it or the holder's lease has lapsed; its replica renews it at every heartbeat;
//! the stream deletes it when it ends. Only a replica that dies (or loses its database) leaves a lease
//! behind, and that lease lapses after its time to live, twice the heartbeat interval. Lease times are
//! read from the gateway's clock, so the replicas' clocks must agree (NTP).
//!
//! Taking, refusing and releasing the lease each commit with their audit entry.

use haven_trust::audit::AuditEntry;
use haven_trust::ids::OrgId;
use uuid::Uuid;

use crate::audit;
use crate::store::leases;
pub use crate::store::leases::Holder;
use crate::store::{Store, StoreError};

/// A new stream's claim on its organization's lease.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub org: &'a OrgId,
    pub stream_id: Uuid,
    /// Where the stream connected from.
    pub source: &'a str,
    pub now: i64,
    pub ttl_micros: i64,
}

/// What became of an attempt to take the lease.
#[derive(Debug)]
pub enum Taken {
    /// The stream holds the lease.
    Held(Lease),
    /// Another stream holds it.
    Refused(Holder),
}

/// A stream's hold on its organization's lease.
#[derive(Debug)]
pub struct Lease {
    org: OrgId,
    stream_id: Uuid,
    ttl_micros: i64,
    /// As last written by this stream: no other stream can take the lease before then.
    expires_at_micros: i64,
}

impl Lease {
    /// Takes the claimed lease, unless another stream holds a live one. `opened` is written in the
    /// same transaction when the lease is taken; `refused`, with the holder's stream id as its object,
    /// when it is not.
    pub async fn take(
        store: &Store,
        claim: Claim<'_>,
        opened: AuditEntry,
        mut refused: AuditEntry,
    ) -> Result<Taken, StoreError> {
        let Claim { org, stream_id, source, now, ttl_micros } = claim;
        let expires = now.saturating_add(ttl_micros);
        let mut tx = store.begin().await?;
        let claimed = Holder {
            stream_id: stream_id.to_string(),
            source: source.to_owned(),
            opened_at_micros: now,
            expires_at_micros: expires,
        };
        let taken = leases::take(&mut tx, org.as_str(), &claimed).await?;
        if taken {
            audit::append_one(&mut tx, opened).await?;
            tx.commit().await?;
            return Ok(Taken::Held(Lease { org: org.clone(), stream_id, ttl_micros, expires_at_micros: expires }));
        }
        let holder = leases::holder(&mut tx, org.as_str()).await?;
        refused.object_id = holder.stream_id.clone();
        audit::append_one(&mut tx, refused).await?;
        tx.commit().await?;
        Ok(Taken::Refused(holder))
    }

    /// Whether this stream may act as the holder at `now` without asking the database: its lease
    /// runs at least `margin` longer (the margin covers the time an acknowledgement takes to commit
    /// and clocks that differ a little between replicas).
    pub fn sure_at(&self, now: i64, margin_micros: i64) -> bool {
        self.expires_at_micros.saturating_sub(margin_micros) > now
    }

    /// Renews the lease until `now` plus its time to live. Returns false when this stream no longer
    /// holds it: it lapsed and another stream took it over. A lease that lapsed and that nobody took
    /// is this stream's again.
    pub async fn renew(&mut self, store: &Store, now: i64) -> Result<bool, StoreError> {
        let expires = now.saturating_add(self.ttl_micros);
        let mut tx = store.begin().await?;
        let held = leases::renew(&mut tx, self.org.as_str(), &self.stream_id.to_string(), expires).await?;
        tx.commit().await?;
        if held {
            self.expires_at_micros = expires;
        }
        Ok(held)
    }

    /// Releases the lease (if this stream still holds it), so that the organization's next stream
    /// is not kept waiting, and writes `closed` in the same transaction.
    pub async fn release(self, store: &Store, closed: AuditEntry) -> Result<(), StoreError> {
        let mut tx = store.begin().await?;
        leases::release(&mut tx, self.org.as_str(), &self.stream_id.to_string()).await?;
        audit::append_one(&mut tx, closed).await?;
        tx.commit().await?;
        Ok(())
    }
}
