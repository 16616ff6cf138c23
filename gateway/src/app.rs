//! The gateway as a whole: its configuration turned into live state, the reload path shared by SIGHUP
//! and the reload RPC, and the server that ties the services to the mTLS listener.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use haven_trust::audit::{Action, AuditEntry, CheckpointSigner};
use haven_trust::clock::SharedClock;
use haven_trust::pki::{self, CertsDir, PkiError};
use haven_trust::registry::Registry;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::{self, Rejections};
use crate::config::Config;
use crate::identity::{Authenticator, Trust};
use crate::store::{Store, StoreError};

/// Why the gateway could not start or reload. Each names the file or setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{0}")]
    File(String),
    #[error("policy bundle refused:\n{}", .0.join("\n"))]
    Bundle(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Everything the services share.
pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub clock: SharedClock,
    pub auth: Authenticator,
    pub trust: Arc<RwLock<Arc<Trust>>>,
    pub tls: Arc<RwLock<Arc<ServerConfig>>>,
    pub rejections: Arc<Rejections>,
    pub checkpoints: CheckpointSigner,
    /// The secret for recipient-scoped pseudonyms; shared by replicas.
    pub pseudonym_key: [u8; 32],
    /// Bumped on every reload, so open streams re-check their peer.
    pub reloads: watch::Sender<u64>,
    /// The open delivery streams, one per organization.
    pub streams: crate::stream::Streams,
}

/// A running gateway's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Gateway(pub Arc<Inner>);

fn certs(config: &Config) -> CertsDir {
    CertsDir(config.certs.clone())
}

fn read_text(path: PathBuf) -> Result<String, StartError> {
    std::fs::read_to_string(&path).map_err(|e| StartError::File(format!("cannot read {}: {e}", path.display())))
}

fn load_trust(config: &Config) -> Result<(Trust, Arc<ServerConfig>), StartError> {
    let dir = certs(config);
    let pins = dir.pins();
    let registry = Registry::load(&config.policies.join("orgs.toml"), pins.exists().then_some(pins.as_path()))
        .map_err(|errs| StartError::Bundle(errs.iter().map(|e| e.to_string()).collect()))?;
    let ca = pki::load_certs(&dir.ca_cert())?;
    let crls = pki::load_crls(&dir.crl())?;
    let revoked_serials = pki::revoked_serials(&crls)?.into_iter().collect();
    let tls = pki::server_config(
        &ca,
        crls,
        pki::load_certs(&dir.gateway_tls_cert())?,
        pki::load_key(&dir.gateway_tls_key())?,
    )?;
    Ok((Trust { registry, revoked_serials }, Arc::new(tls)))
}

impl Gateway {
    /// Loads certificates, policy and the database, and records the start in the audit log.
    pub async fn open(config: Config, clock: SharedClock) -> Result<Gateway, StartError> {
        pki::install_crypto_provider();
        let dir = certs(&config);
        let (trust, tls) = load_trust(&config)?;
        let signing_cert = pki::load_certs(&dir.gateway_signing_cert())?;
        let checkpoints = CheckpointSigner::new(&read_text(dir.gateway_signing_key())?, signing_cert[0].as_ref())
            .map_err(|e| StartError::File(format!("{}: {e}", dir.gateway_signing_key().display())))?;
        let pseudonym_key = parse_pseudonym_key(&read_text(dir.pseudonym_key())?)
            .map_err(|e| StartError::File(format!("{}: {e}", dir.pseudonym_key().display())))?;
        let store = Store::open(&config.database).await?;
        let trust = Arc::new(RwLock::new(Arc::new(trust)));
        let rejections = Arc::new(Rejections::default());
        let auth = Authenticator::new(trust.clone(), clock.clone(), rejections.clone());
        let gateway = Gateway(Arc::new(Inner {
            config,
            store,
            clock,
            auth,
            trust,
            tls: Arc::new(RwLock::new(tls)),
            rejections,
            checkpoints,
            pseudonym_key,
            reloads: watch::channel(0).0,
            streams: Default::default(),
        }));
        gateway.record_system(Action::GatewayStarted, "ok", "").await?;
        Ok(gateway)
    }

    /// Re-reads the CRL and the registry (SIGHUP). On success, new handshakes use the new CRL, cached
    /// tokens are forgotten, and open streams re-check their certificates. On failure nothing changes.
    pub async fn reload(&self) -> Result<(), StartError> {
        match load_trust(&self.0.config) {
            Ok((trust, tls)) => {
                if let Ok(mut t) = self.0.trust.write() {
                    *t = Arc::new(trust);
                }
                if let Ok(mut t) = self.0.tls.write() {
                    *t = tls;
                }
                self.0.auth.clear_cache();
                self.0.reloads.send_modify(|g| *g += 1);
                tracing::info!("reloaded CRL and registry");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the previous CRL and registry stay in force");
                Err(e)
            }
        }
    }

    /// Writes a system entry (no person acted) in its own transaction.
    async fn record_system(&self, action: Action, outcome: &str, reason: &str) -> Result<(), StoreError> {
        let mut tx = self.0.store.begin().await?;
        audit::append_one(
            &mut tx,
            AuditEntry {
                time_micros: self.0.clock.now_micros(),
                actor_role: "system".into(),
                action: action.as_str().into(),
                outcome: outcome.into(),
                reason: reason.into(),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Binds the configured listen address, naming it if it is taken.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        let addr = self.0.config.listen;
        TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })
    }

    /// Serves on an already-bound listener until `shutdown` completes, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let flusher = {
            let g = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    if let Err(e) = g.0.rejections.flush(&g.0.store, g.0.clock.now_micros()).await {
                        tracing::warn!(error = %e, "could not write aggregated rejections");
                    }
                }
            })
        };
        let result = crate::server::run(self.clone(), listener, shutdown).await;
        flusher.abort();
        if let Err(e) = self.0.rejections.flush(&self.0.store, self.0.clock.now_micros()).await {
            tracing::warn!(error = %e, "could not write aggregated rejections at shutdown");
        }
        result
    }
}

impl Gateway {
    /// Serves until SIGTERM or Ctrl-C, reloading the CRL and registry on SIGHUP.
    pub async fn serve_until_signal(self, listener: TcpListener) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let reloader = {
            let g = self.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = g.reload().await;
                }
            })
        };
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
        };
        let result = self.serve(listener, shutdown).await;
        reloader.abort();
        result.map_err(std::io::Error::other)
    }
}

fn parse_pseudonym_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "not hex".to_owned())?;
    bytes.try_into().map_err(|_| "must hold 32 bytes in hex".to_owned())
}
