//! One node's delivery stream: opened by the node with role `node`, kept alive with heartbeats, and
//! closed when the node leaves, its certificate expires, is revoked or unpinned, or the stream loses its
//! organization's lease.
//!
//! - [`lease`]: the network-wide lease that lets one stream per organization receive, on every replica.
//!
//! A stream opens only if it takes the lease ([`open`]); while another stream holds a live lease, the
//! new one is refused with ALREADY_EXISTS. Openings, closings (with the items in flight) and refusals
//! are accesses and are audited; so is an acknowledgement that arrives on a stream that lost its lease,
//! which is not applied.

pub mod lease;
pub mod registry;

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use haven_proto::v1::{self as pb, GatewayFrame, Heartbeat, NodeFrame, Welcome, gateway_frame, node_frame};
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::ids::{Caller, OrgId};
use haven_trust::untrusted::Shown;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use uuid::Uuid;

use crate::audit::Stamp;
use crate::config::Config;
use crate::error::Error;
use crate::identity::PeerInfo;
use crate::routing::{lifecycle, queue};
use crate::state::Gateway;
use lease::{Claim, Holder, Lease, Taken};
pub use registry::Streams;

/// The shortest heartbeat a stream uses, whatever the configuration says (a zero interval would spin).
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// The stream heartbeat in force: the configured one, at least [`MIN_HEARTBEAT`].
fn heartbeat_of(config: &Config) -> Duration {
    config.heartbeat.max(MIN_HEARTBEAT)
}

/// A lease's time to live: two heartbeats, so one renewal that comes late does not lose it.
pub fn lease_ttl(heartbeat: Duration) -> Duration {
    heartbeat.saturating_mul(2)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The metadata key of an ALREADY_EXISTS refusal that says, in milliseconds, when the holder's lease
/// lapses unless it is renewed: the earliest moment a retry can succeed, unless the holder ends first.
pub const RETRY_AFTER_MS: &str = "haven-retry-after-ms";

/// A stream that holds its organization's lease, ready to [`run`].
pub struct Opened {
    id: Uuid,
    source: String,
    lease: Lease,
}

/// An entry about the stream `id` of `caller` from `source`.
fn stream_entry(stamp: &Stamp, caller: &Caller, action: Action, id: &str, source: &str) -> AuditEntry {
    AuditEntry {
        actor_org: caller.org.to_string(),
        actor_person: caller.person.to_string(),
        actor_role: caller.role.to_string(),
        object_id: id.to_owned(),
        outcome: "ok".into(),
        source_node: source.to_owned(),
        ..stamp.entry(action)
    }
}

/// Takes the organization's lease for a new stream from `peer`, or refuses the stream with
/// ALREADY_EXISTS naming the stream that holds it: when it opened and from where.
pub async fn open(gateway: &Gateway, caller: &Caller, peer: &PeerInfo) -> Result<Opened, Status> {
    let g = &gateway.0;
    let id = Uuid::now_v7();
    let stamp = gateway.stamp();
    let now = stamp.now;
    let source = peer.remote.to_string();
    let opened = stream_entry(&stamp, caller, Action::StreamOpened, &id.to_string(), &source);
    let mut refused = stream_entry(&stamp, caller, Action::StreamRefused, "", &source);
    refused.outcome = "refused".into();
    refused.reason = "stream_held".into();
    let claim = Claim {
        org: &caller.org,
        stream_id: id,
        source: &source,
        now,
        ttl_micros: micros(lease_ttl(heartbeat_of(gateway.config()))),
    };
    match Lease::take(&g.store, claim, opened, refused).await {
        Ok(Taken::Held(lease)) => Ok(Opened { id, source, lease }),
        Ok(Taken::Refused(holder)) => {
            tracing::warn!(org = %caller.org, source = %source, holder = %holder.stream_id, holder_source = %holder.source, "delivery stream refused: another stream of this organization holds the lease");
            Err(held_elsewhere(&caller.org, &holder, now))
        }
        Err(e) => {
            tracing::error!(error = %e, org = %caller.org, "cannot take a delivery stream's lease");
            Err(Status::unavailable("the gateway's database is unavailable; reconnect later"))
        }
    }
}

/// The refusal of a stream while `holder` holds the organization's lease.
fn held_elsewhere(org: &OrgId, holder: &Holder, now: i64) -> Status {
    let at = |micros: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .replace_nanosecond(0)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
    };
    let left_ms = holder.expires_at_micros.saturating_sub(now).max(0) / 1000;
    // Both were written by a gateway, but they are read back from the database: shown with care.
    let (source, stream) = (Shown(&holder.source), Shown(&holder.stream_id));
    let mut status = Status::already_exists(format!(
        "organization `{org}` already has a delivery stream, connected at {} from {source} (stream {stream}); \
         another copy of this node is running, or this node's previous stream has not yet been seen to end. \
         Its lease lapses at {} ({} s from now) unless that stream's gateway renews it: stop the other copy, \
         or retry after that",
        at(holder.opened_at_micros),
        at(holder.expires_at_micros),
        (left_ms + 999) / 1000,
    ));
    if let Ok(v) = left_ms.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_MS, v);
    }
    status
}

fn frame(f: gateway_frame::Frame) -> Result<GatewayFrame, Status> {
    Ok(GatewayFrame { frame: Some(f) })
}

/// How often a stream looks for queued items even without a wake-up (a safety net behind the
/// notifier and PostgreSQL's LISTEN/NOTIFY).
pub const SAFETY_POLL: Duration = Duration::from_secs(2);

/// The items sent down one stream and not yet acknowledged.
struct Window {
    inflight: HashSet<String>,
    /// Items held back because their stored payload cannot be decoded (logged again after each slow
    /// poll). Items whose consent no longer covers them never come back from the read.
    held: HashSet<String>,
    max: usize,
}

/// Sends the oldest pending items until the window is full. Every delivery rechecks its consent as
/// it is read (see [`queue::SENDABLE_SQLITE`]).
async fn fill(
    gateway: &Gateway,
    org: &OrgId,
    window: &mut Window,
    tx: &mpsc::Sender<Result<GatewayFrame, Status>>,
) -> Result<(), Status> {
    let g = &gateway.0;
    let mut out = Vec::new();
    // An item that cannot be decoded is held back and the read goes on past it.
    loop {
        let room = window.max.saturating_sub(window.inflight.len() + out.len());
        if room == 0 {
            break;
        }
        // What is in flight, about to go, or held back is passed over by the read.
        let skip = window.inflight.iter().chain(&window.held).chain(out.iter().map(|i: &pb::Item| &i.item_id));
        let limit = i64::try_from(room).unwrap_or(i64::MAX);
        let items = queue::sendable(&g.store, org.as_str(), skip, g.clock.now_micros(), limit).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the queue");
            Status::unavailable("the gateway's database is unavailable; reconnect later")
        })?;
        if items.is_empty() {
            break;
        }
        // Nothing goes out that a power failure could still undo: what this read found may be a
        // commit whose sync is under way.
        let items = g.store.settle(items).await.map_err(|e| {
            tracing::error!(error = %e, "cannot deliver: the database could not be synced");
            Status::unavailable("the gateway cannot sync its database to disk; reconnect later")
        })?;
        let (read, held_before) = (items.len(), window.held.len());
        for p in items {
            match p.decode() {
                Some(item) => out.push(item),
                None => {
                    window.held.insert(p.item_id);
                }
            }
        }
        if read < room || window.held.len() == held_before {
            break;
        }
    }
    for item in out {
        window.inflight.insert(item.item_id.clone());
        if tx.send(frame(gateway_frame::Frame::Item(item))).await.is_err() {
            return Err(Status::cancelled("node went away"));
        }
    }
    Ok(())
}

/// Why a stream ended: a code for the audit log (`stream_closed`'s reason) and the status the node
/// gets.
struct End {
    why: &'static str,
    status: Status,
}

impl End {
    fn new(why: &'static str, status: Status) -> End {
        End { why, status }
    }

    /// The node went away (its side of the connection is gone).
    fn node_gone() -> End {
        End::new("node_gone", Status::cancelled("node went away"))
    }

    /// The stream lost its organization's lease to another stream.
    fn fenced(what: &str) -> End {
        End::new(
            "fenced",
            Status::aborted(format!(
                "this stream's lease lapsed and another delivery stream of this organization took over; {what}"
            )),
        )
    }

    /// A pass that sends queued items failed: the node left, or the database failed.
    fn from_fill(status: Status) -> End {
        let why = if status.code() == tonic::Code::Cancelled { "node_gone" } else { "database_unavailable" };
        End::new(why, status)
    }

    /// An acknowledgement failed: the node acknowledged something it may not, or the database failed.
    fn from_ack(e: Error) -> End {
        let why = match &e {
            Error::Store(crate::store::StoreError::DiskFull(_)) => "database_full",
            Error::Store(_) => "database_unavailable",
            _ => "ack_refused",
        };
        End::new(why, Status::from(e))
    }
}

/// Runs a stream that took its lease until the node leaves or the gateway closes it; then releases
/// the lease and records the closing with the items still in flight.
pub async fn run(
    gateway: Gateway,
    caller: Caller,
    peer: PeerInfo,
    mut opened: Opened,
    inbound: Streaming<NodeFrame>,
    tx: mpsc::Sender<Result<GatewayFrame, Status>>,
) {
    let g = &gateway.0;
    let id = opened.id;
    tracing::info!(org = %caller.org, stream = %id, source = %opened.source, "delivery stream opened");
    let max = usize::try_from(gateway.bundle().network().max_unacked_per_stream).unwrap_or(64).max(1);
    let mut window = Window { inflight: HashSet::new(), held: HashSet::new(), max };
    let end = serve(&gateway, &caller, &peer, &mut opened, inbound, &mut window, &tx).await;
    g.streams.close(&caller.org, id);
    let Opened { source, lease, .. } = opened;
    // Released before the node hears the stream is over, so a node that reconnects at once finds the
    // lease free.
    let mut inflight: Vec<String> = window.inflight.into_iter().collect();
    inflight.sort();
    let mut closed = stream_entry(&gateway.stamp(), &caller, Action::StreamClosed, &id.to_string(), &source);
    closed.reason = end.why.into();
    closed.released_fields = inflight;
    if let Err(e) = lease.release(&g.store, closed).await {
        tracing::error!(error = %e, org = %caller.org, stream = %id, "cannot release a delivery stream's lease or record its closing; the lease lapses on its own");
    }
    tracing::info!(org = %caller.org, stream = %id, why = end.why, reason = %end.status.message(), "delivery stream closed");
    if end.status.code() != tonic::Code::Ok {
        let _ = tx.send(Err(end.status)).await;
    }
}

/// The stream itself, from `Welcome` to its end. `window` keeps what is in flight when it ends.
async fn serve(
    gateway: &Gateway,
    caller: &Caller,
    peer: &PeerInfo,
    opened: &mut Opened,
    mut inbound: Streaming<NodeFrame>,
    window: &mut Window,
    tx: &mpsc::Sender<Result<GatewayFrame, Status>>,
) -> End {
    let g = &gateway.0;
    let Opened { id, lease, .. } = opened;
    let id = *id;
    // This replica's older stream of the organization, if any, is fenced now (its lease lapsed).
    let mut fenced = g.streams.open(&caller.org, id);
    let mut reloads = g.reloads.subscribe();
    let mut closing = g.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await.map(|_| ());
    };
    tokio::pin!(closed);
    let welcome = Welcome {
        caller: Some(pb::Caller::from(caller)),
        max_unacked: u32::try_from(window.max).unwrap_or(64),
        stream_id: id.to_string(),
        bundle_version: gateway.bundle().version_id().to_owned(),
    };
    if tx.send(frame(gateway_frame::Frame::Welcome(welcome))).await.is_err() {
        return End::node_gone();
    }
    // Every node is a witness: it gets the newest signed checkpoint now and each new one as it is made.
    let mut checkpoints = g.audit_log.subscribe();
    let latest = checkpoints.borrow_and_update().clone();
    if let Some(cp) = latest
        && tx.send(frame(gateway_frame::Frame::Checkpoint(cp))).await.is_err()
    {
        return End::node_gone();
    }
    let expires_in = peer.cert.as_ref().map(|c| c.not_after.saturating_sub(g.clock.now_secs()).max(0)).unwrap_or(0);
    let expiry = tokio::time::sleep(Duration::from_secs(u64::try_from(expires_in).unwrap_or(0)));
    tokio::pin!(expiry);
    let every = heartbeat_of(gateway.config());
    // An acknowledgement is applied without asking the database while the lease runs at least half a
    // heartbeat longer; renewals every heartbeat keep it a whole heartbeat ahead or more.
    let margin = micros(every / 2);
    let mut heartbeat = tokio::time::interval(every);
    heartbeat.tick().await;
    let mut poll = tokio::time::interval(SAFETY_POLL);
    let wake = g.wakeups.get(caller.org.as_str());
    let org = &caller.org;
    let mut acking = FuturesUnordered::new();
    let end = loop {
        tokio::select! {
            // At most a window of acknowledgements commit at once; past that the stream waits.
            msg = inbound.message(), if acking.len() < window.max => match msg {
                Ok(Some(NodeFrame { frame: Some(node_frame::Frame::Heartbeat(_)) })) => {}
                Ok(Some(NodeFrame { frame: Some(node_frame::Frame::Hello(_)) })) => {
                    if let Err(s) = fill(gateway, org, window, tx).await {
                        break End::from_fill(s);
                    }
                }
                Ok(Some(NodeFrame { frame: Some(node_frame::Frame::Ack(ack)) })) => {
                    // A stream that lost its lease may no longer change anything: its acknowledgement
                    // is recorded (the node did store the item) but the item stays queued for the
                    // stream that holds the lease.
                    let now = g.clock.now_micros();
                    let replaced_here = *fenced.borrow();
                    let holds = !replaced_here && (lease.sure_at(now, margin) || match lease.renew(&g.store, now).await {
                        Ok(held) => held,
                        Err(e) => {
                            tracing::error!(error = %e, %org, stream = %id, "cannot renew a delivery stream's lease");
                            break End::new("database_unavailable", Status::unavailable("the gateway cannot renew this stream's lease: its database is unavailable; reconnect later"));
                        }
                    });
                    if !holds {
                        if let Err(e) = lifecycle::ack_fenced(gateway.store(), gateway.commits(), &gateway.stamp(), org, &ack.item_id).await {
                            tracing::error!(error = %e, %org, stream = %id, "cannot record an acknowledgement on a fenced stream");
                        }
                        break End::fenced("its acknowledgements are refused");
                    }
                    // Acknowledgements are committed concurrently (they share commits), and the
                    // stream reads on meanwhile; each frees its window slot once it is durable.
                    acking.push(async move {
                        let version = gateway.bundle().version_id().to_owned();
                        let r = lifecycle::ack(gateway.commits(), gateway.clock(), version, org, &ack.item_id).await;
                        if let Ok(Some(sender)) = &r {
                            gateway.wake(std::slice::from_ref(sender));
                        }
                        (ack.item_id, r.map(|_| ()))
                    });
                }
                Ok(Some(NodeFrame { frame: None })) => {
                    break End::new("bad_frame", Status::invalid_argument("empty frame: send hello, ack or heartbeat"));
                }
                Ok(None) => break End::new("node_closed", Status::ok("node closed the stream")),
                Err(e) => break End::new("node_gone", e),
            },
            Some(first) = acking.next(), if !acking.is_empty() => {
                // Acknowledgements committed together free their slots together: one refill.
                let ready = std::iter::from_fn(|| acking.next().now_or_never().flatten());
                let mut failed = None;
                for (item_id, r) in std::iter::once(first).chain(ready) {
                    if let Err(e) = r {
                        failed = Some(End::from_ack(e));
                        break;
                    }
                    window.inflight.remove(&item_id);
                }
                if let Some(end) = failed {
                    break end;
                }
                if let Err(s) = fill(gateway, org, window, tx).await {
                    break End::from_fill(s);
                }
            }
            _ = wake.notified() => {
                if let Err(s) = fill(gateway, org, window, tx).await {
                    break End::from_fill(s);
                }
            }
            _ = poll.tick() => {
                window.held.clear();
                if let Err(s) = fill(gateway, org, window, tx).await {
                    break End::from_fill(s);
                }
            }
            changed = checkpoints.changed() => {
                if changed.is_ok() {
                    let cp = checkpoints.borrow_and_update().clone();
                    if let Some(cp) = cp
                        && tx.send(frame(gateway_frame::Frame::Checkpoint(cp))).await.is_err()
                    {
                        break End::node_gone();
                    }
                }
            }
            _ = heartbeat.tick() => {
                // The heartbeat renews the lease; a stream that finds another holding it is fenced.
                let now = g.clock.now_micros();
                match lease.renew(&g.store, now).await {
                    Ok(true) => {}
                    Ok(false) => break End::fenced("this one is closed"),
                    Err(e) => {
                        tracing::warn!(error = %e, %org, stream = %id, "cannot renew a delivery stream's lease; trying again at the next heartbeat");
                        if !lease.sure_at(now, 0) {
                            break End::new("database_unavailable", Status::unavailable("the gateway cannot renew this stream's lease: its database is unavailable; reconnect later"));
                        }
                    }
                }
                let hb = Heartbeat { sent_at_micros: now };
                if tx.send(frame(gateway_frame::Frame::Heartbeat(hb))).await.is_err() {
                    break End::node_gone();
                }
            }
            changed = reloads.changed() => {
                if changed.is_err() {
                    break End::new("shutdown", Status::unavailable("gateway is shutting down"));
                }
                if let Err(e) = g.auth.check_peer(peer) {
                    break End::new("certificate_refused", Status::unauthenticated(format!("stream closed: {e}")));
                }
            }
            _ = &mut closed => {
                break End::new("shutdown", Status::unavailable("the gateway is shutting down; reconnect"));
            }
            _ = fenced.changed() => {
                break End::fenced("this one is closed");
            }
            _ = &mut expiry => {
                break End::new("certificate_expired", Status::unauthenticated("stream closed: the client certificate expired"));
            }
        }
    };
    // Acknowledgements already handed to the committer commit whatever this stream does now; wait
    // (a little) for their answers, so the items they name are not counted as still in flight.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((item_id, r)) = acking.next().await {
            if r.is_ok() {
                window.inflight.remove(&item_id);
            }
        }
    });
    let _ = drained.await;
    end
}
