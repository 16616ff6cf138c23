//! One node's delivery stream: opened by the node with role `node`, kept alive with heartbeats, and
//! closed when the node's certificate expires, is revoked or unpinned, or a newer stream of the same
//! organization replaces it (the older one is fenced and can no longer acknowledge).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use haven_proto::v1::{self as pb, GatewayFrame, Heartbeat, NodeFrame, Welcome, gateway_frame, node_frame};
use haven_trust::ids::{Caller, OrgId};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};
use uuid::Uuid;

use crate::app::Gateway;
use crate::identity::PeerInfo;
use crate::routing::{lifecycle, queue};
use crate::service::caller_proto;

/// How often the gateway sends a heartbeat down a stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The open streams, one per organization. Opening a stream fences the previous one.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<OrgId, (Uuid, watch::Sender<bool>)>>,
}

impl Streams {
    /// Registers a new stream for `org`, fencing the one it replaces.
    fn open(&self, org: &OrgId, id: Uuid) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        if let Ok(mut open) = self.open.lock()
            && let Some((_, old)) = open.insert(org.clone(), (id, tx))
        {
            let _ = old.send(true);
        }
        rx
    }

    /// Forgets a stream, if it is still the current one.
    fn close(&self, org: &OrgId, id: Uuid) {
        if let Ok(mut open) = self.open.lock()
            && open.get(org).is_some_and(|(cur, _)| *cur == id)
        {
            open.remove(org);
        }
    }

    /// Whether `id` is the organization's current stream (acknowledgements from any other are refused).
    pub fn is_current(&self, org: &OrgId, id: Uuid) -> bool {
        self.open.lock().map(|o| o.get(org).is_some_and(|(cur, _)| *cur == id)).unwrap_or(false)
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    if out.is_empty() {
        return Ok(());
    }
    // Nothing goes out that a power failure could still undo: what this pass read may be a commit
    // whose sync is under way.
    g.store.settled().await.map_err(|e| {
        tracing::error!(error = %e, "cannot deliver: the database could not be synced");
        Status::unavailable("the gateway cannot sync its database to disk; reconnect later")
    })?;
    for item in out {
        window.inflight.insert(item.item_id.clone());
        if tx.send(frame(gateway_frame::Frame::Item(item))).await.is_err() {
            return Err(Status::cancelled("node went away"));
        }
    }
    Ok(())
}

/// Runs a stream until the node leaves or the gateway closes it.
pub async fn run(
    gateway: Gateway,
    caller: Caller,
    peer: PeerInfo,
    mut inbound: Streaming<NodeFrame>,
    tx: mpsc::Sender<Result<GatewayFrame, Status>>,
) {
    let g = &gateway.0;
    let id = Uuid::now_v7();
    let mut fenced = g.streams.open(&caller.org, id);
    let mut reloads = g.reloads.subscribe();
    let mut closing = g.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await.map(|_| ());
    };
    tokio::pin!(closed);
    let max = usize::try_from(gateway.bundle().network().max_unacked_per_stream).unwrap_or(64).max(1);
    let welcome = Welcome {
        caller: Some(caller_proto(&caller)),
        max_unacked: u32::try_from(max).unwrap_or(64),
        stream_id: id.to_string(),
        bundle_version: gateway.bundle().version_id().to_owned(),
    };
    if tx.send(frame(gateway_frame::Frame::Welcome(welcome))).await.is_err() {
        g.streams.close(&caller.org, id);
        return;
    }
    tracing::info!(org = %caller.org, stream = %id, "delivery stream opened");
    // Every node is a witness: it gets the newest signed checkpoint now and each new one as it is made.
    let mut checkpoints = g.audit_log.subscribe();
    let latest = checkpoints.borrow_and_update().clone();
    if let Some(cp) = latest
        && tx.send(frame(gateway_frame::Frame::Checkpoint(cp))).await.is_err()
    {
        g.streams.close(&caller.org, id);
        return;
    }
    let expires_in = peer.cert.as_ref().map(|c| c.not_after.saturating_sub(g.clock.now_secs()).max(0)).unwrap_or(0);
    let expiry = tokio::time::sleep(Duration::from_secs(u64::try_from(expires_in).unwrap_or(0)));
    tokio::pin!(expiry);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut poll = tokio::time::interval(SAFETY_POLL);
    let wake = g.wakeups.get(caller.org.as_str());
    let mut window = Window { inflight: HashSet::new(), held: HashSet::new(), max };
    let mut acking = FuturesUnordered::new();
    let reason: Status = loop {
        tokio::select! {
            // At most a window of acknowledgements commit at once; past that the stream waits.
            msg = inbound.message(), if acking.len() < window.max => match msg {
                Ok(Some(NodeFrame { frame: Some(node_frame::Frame::Heartbeat(_)) })) => {}
                Ok(Some(NodeFrame { frame: Some(node_frame::Frame::Hello(_)) })) => {
                    if let Err(s) = fill(&gateway, &caller.org, &mut window, &tx).await {
                        break s;
                    }
                }
                Ok(Some(NodeFrame { frame: Some(node_frame::Frame::Ack(ack)) })) => {
                    if !g.streams.is_current(&caller.org, id) {
                        break Status::aborted("this stream was replaced by a newer one; acknowledgements are refused");
                    }
                    // Acknowledgements are committed concurrently (they share commits), and the
                    // stream reads on meanwhile; each frees its window slot once it is durable.
                    let (gateway, org) = (&gateway, &caller.org);
                    acking.push(async move {
                        let r = lifecycle::ack(gateway, org, &ack.item_id).await;
                        (ack.item_id, r)
                    });
                }
                Ok(Some(NodeFrame { frame: None })) => {
                    break Status::invalid_argument("empty frame: send hello, ack or heartbeat");
                }
                Ok(None) => break Status::ok("node closed the stream"),
                Err(e) => break e,
            },
            Some(first) = acking.next(), if !acking.is_empty() => {
                // Acknowledgements committed together free their slots together: one refill.
                let ready = std::iter::from_fn(|| acking.next().now_or_never().flatten());
                let mut failed = None;
                for (item_id, r) in std::iter::once(first).chain(ready) {
                    if let Err(e) = r {
                        failed = Some(Status::from(e));
                        break;
                    }
                    window.inflight.remove(&item_id);
                }
                if let Some(s) = failed {
                    break s;
                }
                if let Err(s) = fill(&gateway, &caller.org, &mut window, &tx).await {
                    break s;
                }
            }
            _ = wake.notified() => {
                if let Err(s) = fill(&gateway, &caller.org, &mut window, &tx).await {
                    break s;
                }
            }
            _ = poll.tick() => {
                window.held.clear();
                if let Err(s) = fill(&gateway, &caller.org, &mut window, &tx).await {
                    break s;
                }
            }
            changed = checkpoints.changed() => {
                if changed.is_ok() {
                    let cp = checkpoints.borrow_and_update().clone();
                    if let Some(cp) = cp
                        && tx.send(frame(gateway_frame::Frame::Checkpoint(cp))).await.is_err()
                    {
                        break Status::cancelled("node went away");
                    }
                }
            }
            _ = heartbeat.tick() => {
                let hb = Heartbeat { sent_at_micros: g.clock.now_micros() };
                if tx.send(frame(gateway_frame::Frame::Heartbeat(hb))).await.is_err() {
                    break Status::cancelled("node went away");
                }
            }
            changed = reloads.changed() => {
                if changed.is_err() {
                    break Status::unavailable("gateway is shutting down");
                }
                if let Err(e) = g.auth.check_peer(&peer) {
                    break Status::unauthenticated(format!("stream closed: {e}"));
                }
            }
            _ = &mut closed => {
                break Status::unavailable("the gateway is shutting down; reconnect");
            }
            _ = fenced.changed() => {
                break Status::aborted("a newer delivery stream of this organization replaced this one");
            }
            _ = &mut expiry => {
                break Status::unauthenticated("stream closed: the client certificate expired");
            }
        }
    };
    g.streams.close(&caller.org, id);
    tracing::info!(org = %caller.org, stream = %id, reason = %reason.message(), "delivery stream closed");
    if reason.code() != tonic::Code::Ok {
        let _ = tx.send(Err(reason)).await;
    }
}
