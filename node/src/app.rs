//! A running node: its link to the gateway, its delivery stream, its database and its API.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use haven_proto::v1::audit_server::AuditServer;
use haven_proto::v1::node_server::NodeServer;
use haven_trust::clock::SharedClock;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::NodeService;
use crate::audit_proxy::AuditProxy;
use crate::console::session::{PublicOrigin, Sessions};
use crate::console::{Bound, Console, ConsoleConfig, ConsoleError};
use crate::link::{GatewayLink, LinkConfig, LinkError};
use crate::password::Passwords;
use crate::people::{Import, People};
use crate::store::{NodeStore, NodeStoreError};
use crate::stream::StreamState;

pub use crate::state::NodeState;

/// Settings for `haven-node serve`.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub link: LinkConfig,
    /// The node's own SQLite file.
    pub database: String,
    /// The users file of earlier versions, imported once into a database that holds nobody
    /// ([`People::import_once`]).
    pub users: PathBuf,
    /// Where people reach the node's API (127.0.0.1 by default).
    pub listen: SocketAddr,
    /// Certificate and key for serving the API over TLS, required when `listen` is not loopback.
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// Where and how to serve the web console, if at all (`--console`).
    pub console: Option<ConsoleConfig>,
    /// Make the organization's first sealing key at start when it has none (`--no-first-sealing-key`
    /// turns this off).
    pub first_sealing_key: bool,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Store(#[from] NodeStoreError),
    #[error("the first sealing key: {0}")]
    SealingKey(String),
    #[error("people: {0}")]
    People(#[from] crate::people::PeopleError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the node API listens on {0}, which is not loopback: give --api-cert and --api-key to serve it over TLS")]
    NeedsTls(SocketAddr),
    #[error("API TLS: {0}")]
    Tls(String),
    #[error("audit witness: {0}")]
    Witness(#[from] crate::witness::WitnessError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

/// A node ready to serve.
pub struct Node {
    pub state: Arc<NodeState>,
    config: NodeConfig,
    stream_tx: watch::Sender<StreamState>,
    /// The console's listener, bound at open so a taken port or a bad setting stops the start.
    console: Option<Bound>,
}

impl Node {
    /// Opens the database (importing the users file once, see [`People::import_once`]) and prepares
    /// the gateway link.
    pub async fn open(config: NodeConfig, clock: SharedClock) -> Result<Node, NodeError> {
        if !config.listen.ip().is_loopback() && config.api_tls.is_none() {
            return Err(NodeError::NeedsTls(config.listen));
        }
        let mut keys = vec![config.link.tls_key.clone(), config.link.signing_key.clone()];
        keys.extend(config.api_tls.as_ref().map(|(_, key)| key.clone()));
        keys.extend(crate::sealing::KeyFolder::beside(&config.link.signing_key).files());
        for key in haven_trust::owner_only::loose(&keys) {
            tracing::warn!(file = %key.path.display(), "a private key file is open to other users: {key}");
        }
        let console = match &config.console {
            Some(c) => Some(c.bind().await?),
            None => None,
        };
        let store = NodeStore::open(&config.database).await?;
        let people = People::new(store.clone(), clock.clone()).await?;
        log_import(&people.import_once(&config.users).await?, &config.users);
        let passwords = Passwords::new(people.clone());
        let link = GatewayLink::new(&config.link, clock.clone())?;
        let (stream_tx, stream) = watch::channel(StreamState::default());
        let witness = crate::witness::Witness::new(store.clone(), link.clone(), &config.link, clock.clone()).await?;
        let ca = haven_trust::pki::load_certs(&config.link.ca_cert)
            .ok()
            .and_then(|c| c.into_iter().next())
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| {
                crate::link::LinkError::Tls(format!("{}: no CA certificate", config.link.ca_cert.display()))
            })?;
        let key_log = crate::keylog::KeyLogWitness::new(
            store.clone(),
            link.clone(),
            clock.clone(),
            witness.clone(),
            config.link.org.clone(),
            ca.clone(),
            crate::sealing::KeyFolder::beside(&config.link.signing_key),
        );
        let sealing_keys = crate::sealing::KeyFolder::beside(&config.link.signing_key);
        let bundles = crate::bundles::Bundles::new(witness.clone());
        // The first start of an organization that never had a key makes one; an admin who withdrew
        // every key makes the next one (`haven-node keys rotate`).
        let never_keyed = crate::sealing::list(&store).await.map(|k| k.is_empty()).unwrap_or(false);
        if config.first_sealing_key && never_keyed && !crate::sealing::keyed_elsewhere(&link).await {
            match crate::sealing::make(&store, &link, &clock, &sealing_keys, "node", true).await {
                Ok((key, None)) => {
                    tracing::info!(key = %key.kid, "the organization's first sealing key is made and published")
                }
                Ok((key, Some(pending))) => {
                    tracing::warn!(key = %key.kid, why = %pending.message(), "the organization's first sealing key is made; the gateway has not taken it yet, and it is registered again at every key-log round")
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                Err(s) => return Err(NodeError::SealingKey(s.message().to_owned())),
            }
        }
        let arrivals = tokio::sync::broadcast::channel(256).0;
        Ok(Node {
            state: Arc::new(NodeState {
                link,
                store,
                people,
                passwords,
                clock,
                stream,
                witness,
                key_log,
                sealing_keys,
                arrivals,
                network: Default::default(),
                bundles,
                ca_cert: ca,
            }),
            config,
            stream_tx,
            console,
        })
    }

    /// Where the console listens and the origin people use, when it is served.
    pub fn console(&self) -> Option<(SocketAddr, &PublicOrigin)> {
        self.console.as_ref().map(|b| (b.addr, &b.origin))
    }

    /// Binds the API address, naming it if it is taken.
    pub async fn bind(&self) -> Result<TcpListener, NodeError> {
        let addr = self.config.listen;
        TcpListener::bind(addr).await.map_err(|source| NodeError::Listen { addr, source })
    }

    /// Runs the delivery stream and serves the API on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), NodeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stream = tokio::spawn(crate::stream::run(self.state.clone(), self.stream_tx, stop_rx.clone()));
        let retrier = tokio::spawn(crate::actions::retry_pending(self.state.sending(), stop_rx.clone()));
        let people = tokio::spawn(self.state.people.clone().follow(stop_rx.clone()));
        let views = tokio::spawn(crate::views::run(
            self.state.store.clone(),
            self.state.link.clone(),
            self.state.clock.clone(),
            stop_rx.clone(),
        ));
        let mut stream_state = self.state.stream.clone();
        let connected = async move {
            let _ = stream_state.wait_for(|s| s.connected).await;
        };
        let key_log = tokio::spawn(self.state.key_log.clone().run(stop_rx.clone(), connected));
        let console = self.console.map(|bound| {
            let s = &self.state;
            let console = Arc::new(Console {
                store: s.store.clone(),
                link: s.link.clone(),
                clock: s.clock.clone(),
                people: s.people.clone(),
                passwords: s.passwords.clone(),
                arrivals: s.arrivals.clone(),
                network: s.network.clone(),
                witness: s.witness.clone(),
                stream: s.stream.clone(),
                sessions: Sessions::new(s.store.clone(), s.clock.clone()),
                second_factor: crate::totp::SecondFactor::new(s.store.clone(), s.clock.clone()),
                certificates: certificate_expiries(&self.config.link),
                help_phone: self.config.console.as_ref().and_then(|c| c.help_phone.clone()),
                keep_scans: self.config.console.as_ref().is_some_and(|c| c.keep_scans),
                sealing_keys: s.sealing_keys.clone(),
                sending: s.sending(),
                origin: bound.origin.clone(),
                stopping: stop_rx.clone(),
            });
            tokio::spawn(bound.serve(console, stop_rx))
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<NodeServer<NodeService>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(haven_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .ok();
        let router = tonic::transport::Server::builder()
            .timeout(std::time::Duration::from_secs(60))
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
            .add_service(health_service)
            .add_optional_service(reflection)
            .add_service(
                NodeServer::new(NodeService::new(self.state.clone()))
                    .max_decoding_message_size(4 * 1024 * 1024)
                    .max_encoding_message_size(4 * 1024 * 1024),
            )
            .add_service(
                AuditServer::new(AuditProxy::new(self.state.clone()))
                    .max_decoding_message_size(4 * 1024 * 1024)
                    .max_encoding_message_size(4 * 1024 * 1024),
            );
        let result = match &self.config.api_tls {
            None => {
                router
                    .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
                    .await
            }
            Some((cert, key)) => {
                let chain = haven_trust::pki::load_certs(cert).map_err(|e| NodeError::Tls(e.to_string()))?;
                let key = haven_trust::pki::load_key(key).map_err(|e| NodeError::Tls(e.to_string()))?;
                let config =
                    haven_trust::pki::plain_server_config(chain, key).map_err(|e| NodeError::Tls(e.to_string()))?;
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                let incoming = futures::StreamExt::filter_map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    move |tcp| {
                        let acceptor = acceptor.clone();
                        async move {
                            let tcp = tcp.ok()?;
                            acceptor.accept(tcp).await.ok().map(Ok::<_, std::io::Error>)
                        }
                    },
                );
                router.serve_with_incoming_shutdown(incoming, shutdown).await
            }
        };
        let _ = stop_tx.send(true);
        let _ = stream.await;
        let _ = retrier.await;
        let _ = people.await;
        let _ = views.await;
        let _ = key_log.await;
        if let Some(console) = console {
            let _ = console.await;
        }
        // Last: what writes replaced or deleted leaves SQLite's write-ahead log, which
        // `secure_delete` does not reach.
        match self.state.store.truncate_wal().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("could not truncate the node database's write-ahead log at shutdown (a reader held it)")
            }
            Err(e) => tracing::warn!(error = %e, "could not truncate the node database's write-ahead log at shutdown"),
        }
        result.map_err(|e| NodeError::Tls(e.to_string()))
    }
}

/// The node's certificates and when each expires, for the console's health page; one that cannot be
/// read is left out (the link would not have started).
fn certificate_expiries(link: &crate::link::LinkConfig) -> Vec<(String, i64)> {
    [("TLS", &link.tls_cert), ("signing", &link.signing_cert), ("network CA", &link.ca_cert)]
        .into_iter()
        .filter_map(|(label, path)| {
            let der = haven_trust::pki::load_certs(path).ok()?.into_iter().next()?;
            let info = haven_trust::pki::CertInfo::parse(&der).ok()?;
            Some((format!("{label} ({})", path.display()), info.not_after))
        })
        .collect()
}

/// Says what the start did with the users file: once when it imports it (a warning, because the
/// operator now manages people with `haven-node users` and SIGHUP no longer reads the file), and
/// nothing at every later start.
fn log_import(import: &Import, file: &std::path::Path) {
    let file = file.display().to_string();
    match import {
        Import::Imported { count } => tracing::warn!(
            %file,
            people = count,
            "imported the users file into the node database; the file is no longer read: manage people with `haven-node users` (changes are in force at once), and remove the file once `haven-node users list` shows everyone"
        ),
        Import::NotRead { held } => tracing::warn!(
            %file,
            people = held,
            "the users file is not read: the node database already holds people (`haven-node users list`)"
        ),
        Import::Nobody => tracing::info!(
            %file,
            "nobody can sign in to this node yet: add people with `haven-node users add`"
        ),
        Import::Done => {}
    }
}

impl Node {
    /// Serves until SIGTERM or Ctrl-C. SIGHUP is logged and changes nothing: people are in the database
    /// and their changes are in force at once, and a signal an older setup still sends must not stop
    /// the node (SIGHUP's default action).
    pub async fn serve_until_signal(self, listener: TcpListener) -> Result<(), NodeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let handler = |kind| signal(kind).map_err(|e| NodeError::Tls(format!("signal handler: {e}")));
        let mut term = handler(SignalKind::terminate())?;
        // Installed before the API serves, so a SIGHUP is never the default action (exit).
        let mut hangup = handler(SignalKind::hangup())?;
        let reloads = tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::warn!(
                    "SIGHUP: nothing to re-read; people are in the node database and `haven-node users` changes are in force at once"
                );
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        let served = self.serve(listener, shutdown).await;
        reloads.abort();
        served
    }
}
