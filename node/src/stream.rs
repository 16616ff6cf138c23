//! The node's outbound delivery stream: opened with role `node`, kept open, and reopened after any
//! outage with exponential backoff and jitter.
//!
//! The gateway lets one stream per organization receive, network-wide: the stream that holds the
//! organization's lease. When another copy of this node holds it (or this node's previous stream, which
//! the gateway has not yet seen end), the gateway refuses the stream with ALREADY_EXISTS and says when
//! the holder's lease lapses; this node logs that another copy holds the stream and retries, no later
//! than that moment, so a node restarted after a crash gets its stream back as soon as the lease of
//! its dead predecessor lapses.

use std::time::Duration;

use futures::FutureExt;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::{Ack, GatewayFrame, Hello, NodeFrame, gateway_frame, node_frame};
use haven_trust::ids::{PersonId, Role};
use rand::Rng;
use tokio::sync::{mpsc, watch};

use std::sync::Arc;

use crate::failure;
use crate::mailbox;
use crate::state::NodeState;
pub use crate::state::StreamState;

/// The metadata key in which the gateway's ALREADY_EXISTS refusal says, in milliseconds, when the
/// holder's lease lapses unless it is renewed.
const RETRY_AFTER_MS: &str = "haven-retry-after-ms";

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// The stream could not be opened, or it ran and ended, for this reason.
    Lost(String),
    /// The gateway refused the stream because another stream of the organization holds its lease.
    /// `lapses_in` is when that lease runs out unless it is renewed, as the gateway said.
    Held { reason: String, lapses_in: Option<Duration> },
}

impl Ended {
    fn from_status(e: &tonic::Status) -> Ended {
        let reason = format!("{}: {}", e.code(), e.message());
        if e.code() != tonic::Code::AlreadyExists {
            return Ended::Lost(reason);
        }
        let lapses_in = e
            .metadata()
            .get(RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        Ended::Held { reason, lapses_in }
    }
}

/// How long to wait before the next attempt: the backoff with up to 50 % jitter, but, when the
/// stream is held elsewhere and the gateway said when that lease lapses, no later than just after
/// that (so a dead predecessor's lease costs no more than its time to live).
fn wait_before_retry(backoff: Duration, jitter_ms: u64, ended: &Ended) -> Duration {
    let wait = backoff + Duration::from_millis(jitter_ms);
    match ended {
        Ended::Held { lapses_in: Some(lapse), .. } => wait.min(*lapse + Duration::from_millis(100 + jitter_ms % 100)),
        _ => wait,
    }
}

/// Keeps the stream open until `shutdown` flips to true.
pub async fn run(node: Arc<NodeState>, state: watch::Sender<StreamState>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    let org = node.link.signer().org().clone();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started = std::time::Instant::now();
        let ended = tokio::select! {
            r = session(&node, &state) => r,
            _ = shutdown.changed() => break,
        };
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(200);
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        let wait = wait_before_retry(backoff, jitter, &ended);
        backoff = (backoff * 2).min(Duration::from_secs(30));
        match &ended {
            Ended::Lost(reason) => {
                tracing::warn!(reason = %reason, "delivery stream ended; reconnecting");
            }
            Ended::Held { reason, .. } => tracing::warn!(
                %org,
                reason = %reason,
                retry_in = ?wait,
                "the gateway refused this node's delivery stream: another copy of this node for organization {org} holds it (or this node's previous stream has not ended yet); this copy receives nothing until it gets the stream, and retries"
            ),
        }
        state.send_modify(|s| {
            s.connected = false;
            match &ended {
                Ended::Lost(reason) => {
                    s.last_error = reason.clone();
                    s.held_elsewhere = false;
                }
                Ended::Held { reason, .. } => {
                    s.last_error = reason.clone();
                    s.held_elsewhere = true;
                    s.refusals += 1;
                }
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// The most items stored in one transaction (the gateway sends at most its window unacknowledged).
const MAX_BURST: usize = 256;

async fn session(node: &NodeState, state: &watch::Sender<StreamState>) -> Ended {
    let link = &node.link;
    let (tx, rx) = mpsc::channel::<NodeFrame>(256);
    let hello = NodeFrame {
        frame: Some(node_frame::Frame::Hello(Hello { witnessed_tree_size: node.witness.witnessed_size() })),
    };
    if tx.send(hello).await.is_err() {
        return Ended::Lost("internal channel closed".into());
    }
    let req = match link.request(&PersonId::node(), Role::Node, tokio_stream::wrappers::ReceiverStream::new(rx)) {
        Ok(r) => r,
        Err(e) => return Ended::Lost(e.message().to_owned()),
    };
    let mut client = GatewayClient::new(link.channel());
    let mut inbound = match client.deliveries(req).await {
        Ok(resp) => resp.into_inner(),
        // Another copy of this node holding the stream is said by the gateway's ALREADY_EXISTS.
        Err(e) if e.code() == tonic::Code::AlreadyExists && failure::transport_failure(&e).is_none() => {
            return Ended::from_status(&e);
        }
        Err(e) => return Ended::Lost(link.describe(&e)),
    };
    // A frame read while draining a burst of items, to handle next.
    let mut lookahead = None;
    loop {
        let next = match lookahead.take() {
            Some(frame) => frame,
            None => inbound.message().await,
        };
        match next {
            Ok(Some(GatewayFrame { frame: Some(gateway_frame::Frame::Welcome(w)) })) => {
                tracing::info!(stream = %w.stream_id, "delivery stream open");
                state.send_modify(|s| {
                    s.connected = true;
                    s.sessions += 1;
                    s.held_elsewhere = false;
                });
                crate::unseal::report_pending(&node.opening()).await;
            }
            Ok(Some(GatewayFrame { frame: Some(gateway_frame::Frame::Item(item)) })) => {
                // Items already received with this one are stored with it, in one transaction.
                let mut items = vec![item];
                while items.len() < MAX_BURST {
                    match inbound.message().now_or_never() {
                        Some(Ok(Some(GatewayFrame { frame: Some(gateway_frame::Frame::Item(item)) }))) => {
                            items.push(item)
                        }
                        Some(other) => {
                            lookahead = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                // Stored durably first, then acknowledged: a crash in between means a repeat, which
                // is stored once and acknowledged again.
                // Each sealed copy is verified and opened first; one that fails is stored as rejected.
                let rejected = match crate::unseal::open_items(&node.opening(), &mut items).await {
                    Ok(r) => r,
                    Err(e) => return Ended::Lost(format!("cannot check a delivery: {e}")),
                };
                let now = node.clock.now_micros();
                let new = match mailbox::store_items(&node.store, &items, &rejected, now).await {
                    Ok(new) => new,
                    Err(e) => return Ended::Lost(format!("cannot store a delivery: {e}")),
                };
                if rejected.iter().any(|r| r.as_ref().is_some_and(|r| r.reason != crate::unseal::DUPLICATE)) {
                    crate::unseal::report_pending(&node.opening()).await;
                }
                // Acknowledged at once; then the new ones are shown to whoever watches the inbox.
                let mut fresh = Vec::new();
                for (item, new) in items.into_iter().zip(new) {
                    if new {
                        fresh.push(item.item_id.clone());
                    }
                    let ack = NodeFrame { frame: Some(node_frame::Frame::Ack(Ack { item_id: item.item_id })) };
                    if tx.send(ack).await.is_err() {
                        return Ended::Lost("internal channel closed".into());
                    }
                }
                if node.arrivals.receiver_count() > 0 {
                    for item_id in fresh {
                        if let Ok(Some(v)) = mailbox::item(&node.store, &item_id).await {
                            let _ = node.arrivals.send(v);
                        }
                    }
                }
            }
            Ok(Some(GatewayFrame { frame: Some(gateway_frame::Frame::Checkpoint(cp)) })) => {
                let report = node.witness.observe(cp).await;
                tracing::debug!(?report, "checkpoint witnessed");
            }
            Ok(Some(GatewayFrame { frame: Some(gateway_frame::Frame::Heartbeat(_)) })) => {
                let hb = NodeFrame { frame: Some(node_frame::Frame::Heartbeat(Default::default())) };
                if tx.send(hb).await.is_err() {
                    return Ended::Lost("internal channel closed".into());
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ended::Lost("gateway closed the stream".into()),
            Err(e) => return Ended::Lost(link.describe(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal because the stream is held elsewhere says when the holder's lease lapses; the node
    /// never waits much past that, however long its backoff has grown, so a node restarted after a
    /// crash gets its stream back once its dead predecessor's lease lapses.
    #[test]
    fn a_held_stream_is_retried_no_later_than_just_after_the_lease_lapses() {
        let mut refusal = tonic::Status::already_exists("organization `harbor` already has a delivery stream");
        refusal.metadata_mut().insert(RETRY_AFTER_MS, "1500".parse().unwrap());
        let ended = Ended::from_status(&refusal);
        assert_eq!(
            ended,
            Ended::Held {
                reason: format!("{}: organization `harbor` already has a delivery stream", tonic::Code::AlreadyExists),
                lapses_in: Some(Duration::from_millis(1500)),
            }
        );
        let wait = wait_before_retry(Duration::from_secs(30), 15_000, &ended);
        assert!(wait >= Duration::from_millis(1600) && wait < Duration::from_millis(1700), "{wait:?}");
        // A short backoff is kept: the holder may end (and release the lease) any moment.
        assert_eq!(wait_before_retry(Duration::from_millis(200), 50, &ended), Duration::from_millis(250));
        // Without the gateway's hint, and for any other ending, the backoff alone decides.
        let unhinted = Ended::from_status(&tonic::Status::already_exists("held"));
        assert_eq!(wait_before_retry(Duration::from_secs(30), 0, &unhinted), Duration::from_secs(30));
        let lost = Ended::from_status(&tonic::Status::unavailable("down"));
        assert!(matches!(lost, Ended::Lost(_)));
        assert_eq!(wait_before_retry(Duration::from_secs(8), 4000, &lost), Duration::from_secs(12));
    }
}
