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
use sqlx::Row;
use uuid::Uuid;

use crate::audit;
use crate::store::{Store, StoreError};

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
        // One statement decides: a new row, or the lapsed row of another stream taken over. A live
        // row is left alone (and, on PostgreSQL, locked until this transaction ends).
        let taken = sqlx::query(
            "INSERT INTO stream_leases (org, stream_id, source, opened_at_micros, expires_at_micros) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org) DO UPDATE SET stream_id = excluded.stream_id, source = excluded.source, \
             opened_at_micros = excluded.opened_at_micros, expires_at_micros = excluded.expires_at_micros \
             WHERE stream_leases.expires_at_micros <= excluded.opened_at_micros",
        )
        .bind(org.as_str())
        .bind(stream_id.to_string())
        .bind(source)
        .bind(now)
        .bind(expires)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if taken {
            audit::append_one(&mut tx, opened).await?;
            tx.commit().await?;
            return Ok(Taken::Held(Lease { org: org.clone(), stream_id, ttl_micros, expires_at_micros: expires }));
        }
        let row = sqlx::query(
            "SELECT stream_id, source, opened_at_micros, expires_at_micros FROM stream_leases WHERE org = $1",
        )
        .bind(org.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let holder = Holder {
            stream_id: row.try_get("stream_id")?,
            source: row.try_get("source")?,
            opened_at_micros: row.try_get("opened_at_micros")?,
            expires_at_micros: row.try_get("expires_at_micros")?,
        };
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
        let held = sqlx::query("UPDATE stream_leases SET expires_at_micros = $1 WHERE org = $2 AND stream_id = $3")
            .bind(expires)
            .bind(self.org.as_str())
            .bind(self.stream_id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
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
        sqlx::query("DELETE FROM stream_leases WHERE org = $1 AND stream_id = $2")
            .bind(self.org.as_str())
            .bind(self.stream_id.to_string())
            .execute(&mut *tx)
            .await?;
        audit::append_one(&mut tx, closed).await?;
        tx.commit().await?;
        Ok(())
    }
}
