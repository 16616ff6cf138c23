//! The node's outbound delivery stream: opened with role `node`, kept open, and reopened after any
//! outage with exponential backoff and jitter.

use std::time::Duration;

use futures::FutureExt;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::{Ack, GatewayFrame, Hello, NodeFrame, gateway_frame, node_frame};
use haven_trust::ids::{PersonId, Role};
use rand::Rng;
use tokio::sync::{mpsc, watch};

use std::sync::Arc;

use crate::app::NodeState;
use crate::mailbox;

/// What the node knows about its stream, for its users and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    pub connected: bool,
    /// How many times the stream has been (re)opened.
    pub sessions: u64,
    /// Why the last session ended.
    pub last_error: String,
}

/// Keeps the stream open until `shutdown` flips to true.
pub async fn run(node: Arc<NodeState>, state: watch::Sender<StreamState>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started = std::time::Instant::now();
        let ended = tokio::select! {
            r = session(&node, &state) => r,
            _ = shutdown.changed() => break,
        };
        state.send_modify(|s| {
            s.connected = false;
            s.last_error = ended.clone();
        });
        tracing::warn!(reason = %ended, "delivery stream ended; reconnecting");
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(200);
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        let wait = backoff + Duration::from_millis(jitter);
        backoff = (backoff * 2).min(Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// The most items stored in one transaction (the gateway sends at most its window unacknowledged).
const MAX_BURST: usize = 256;

async fn session(node: &NodeState, state: &watch::Sender<StreamState>) -> String {
    let link = &node.link;
    let (tx, rx) = mpsc::channel::<NodeFrame>(256);
    let hello = NodeFrame {
        frame: Some(node_frame::Frame::Hello(Hello { witnessed_tree_size: node.witness.witnessed_size() })),
    };
    if tx.send(hello).await.is_err() {
        return "internal channel closed".into();
    }
    let req = match link.request(&PersonId::node(), Role::Node, tokio_stream::wrappers::ReceiverStream::new(rx)) {
        Ok(r) => r,
        Err(e) => return e.message().to_owned(),
    };
    let mut client = GatewayClient::new(link.channel());
    let mut inbound = match client.deliveries(req).await {
        Ok(resp) => resp.into_inner(),
        Err(e) => return link.describe(&e),
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
                });
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
                let now = node.clock.now_micros();
                let new = match mailbox::store_items(&node.store, &items, now).await {
                    Ok(new) => new,
                    Err(e) => return format!("cannot store a delivery: {e}"),
                };
                // Acknowledged at once; then the new ones are shown to whoever watches the inbox.
                let mut fresh = Vec::new();
                for (item, new) in items.into_iter().zip(new) {
                    if new {
                        fresh.push(item.item_id.clone());
                    }
                    let ack = NodeFrame { frame: Some(node_frame::Frame::Ack(Ack { item_id: item.item_id })) };
                    if tx.send(ack).await.is_err() {
                        return "internal channel closed".into();
                    }
                }
                if node.arrivals.receiver_count() > 0 {
                    for item_id in fresh {
                        if let Ok(Some(v)) = view_of(node, &item_id).await {
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
                    return "internal channel closed".into();
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return "gateway closed the stream".into(),
            Err(e) => return link.describe(&e),
        }
    }
}

async fn view_of(node: &NodeState, item_id: &str) -> Result<Option<haven_proto::v1::InboxItem>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT item_id, received_at_micros, item_kind, body, status, withdrawn FROM inbox WHERE item_id = $1",
    )
    .bind(item_id)
    .fetch_optional(node.store.pool())
    .await?;
    row.as_ref().map(mailbox::view).transpose()
}
