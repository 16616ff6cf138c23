//! What a running node's API, delivery stream and audit proxy share; built and run by `app.rs`.

use tokio::sync::watch;

use haven_trust::clock::SharedClock;

use crate::link::GatewayLink;
use crate::mailbox::Arrivals;
use crate::password::Passwords;
use crate::people::People;
use crate::store::NodeStore;
use crate::witness::Witness;

/// What the node's services share.
pub struct NodeState {
    pub link: GatewayLink,
    pub store: NodeStore,
    /// The people who may sign in, in the node's database: every call is checked against it, so a
    /// change is in force at once.
    pub people: People,
    /// Checks people's passwords, a few at a time.
    pub passwords: Passwords,
    pub clock: SharedClock,
    pub stream: watch::Receiver<StreamState>,
    /// Checks every audit checkpoint the node sees; the delivery stream feeds it.
    pub witness: Witness,
    /// Reads and checks the gateway's key log, and registers this organization's statements.
    pub key_log: crate::keylog::KeyLogWitness,
    /// Where this organization's sealing keys' private halves are kept.
    pub sealing_keys: crate::sealing::KeyFolder,
    /// New arrivals, as they are stored.
    pub arrivals: Arrivals,
    /// The network's purposes, kinds and organizations, as the node keeps them.
    pub network: crate::network::Network,
    /// The policy bundles this node decides and checks under.
    pub bundles: crate::bundles::Bundles,
    /// DER of the network CA certificate: what a sealed copy's signer must chain to.
    pub ca_cert: Vec<u8>,
}

/// What the node knows about its stream, for its users and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    pub connected: bool,
    /// How many times the stream has been (re)opened.
    pub sessions: u64,
    /// Why the last session ended.
    pub last_error: String,
    /// Whether the gateway refused the last attempt because another stream of this organization holds
    /// its lease (another copy of this node, or this node's previous stream not yet seen to end).
    pub held_elsewhere: bool,
    /// How many attempts the gateway refused for that reason.
    pub refusals: u64,
}

impl NodeState {
    /// What sending a message needs of this node.
    pub fn sending(&self) -> crate::seal::Sending {
        crate::seal::Sending {
            store: self.store.clone(),
            link: self.link.clone(),
            clock: self.clock.clone(),
            key_log: self.key_log.clone(),
            bundles: self.bundles.clone(),
            ca: self.ca_cert.clone(),
        }
    }

    /// What opening a received copy needs of this node.
    pub fn opening(&self) -> crate::unseal::Opening<'_> {
        crate::unseal::Opening {
            store: &self.store,
            link: &self.link,
            clock: &self.clock,
            ca_cert: &self.ca_cert,
            key_log: &self.key_log,
            sealing_keys: &self.sealing_keys,
            bundles: &self.bundles,
        }
    }
}
