//! The gateway as a whole: its configuration turned into live state, the reload path shared by SIGHUP
//! and the reload RPC, and the server that ties the services to the mTLS listener.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use haven_trust::audit::{Action, AuditEntry, CheckpointSigner};
use haven_trust::clock::SharedClock;
use haven_trust::owner_only;
use haven_trust::pki::{self, CertsDir, PkiError};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::{self, Rejections};
use crate::config::Config;
use crate::identity::{Authenticator, Trust};
use crate::policy::Bundle;
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
    /// The audit log's Merkle tree, checkpoints and proofs; `audit_log.subscribe()` yields each newly
    /// signed checkpoint for the delivery streams.
    pub audit_log: audit::AuditLog,
    /// Shared commits for submissions and acknowledgements.
    pub commits: crate::commit::Committer,
    /// The secret for recipient-scoped pseudonyms; shared by replicas.
    pub pseudonym_key: [u8; 32],
    /// Bumped on every reload, so open streams re-check their peer.
    pub reloads: watch::Sender<u64>,
    /// Flips to true when the gateway starts shutting down, so open streams end and shutdown is not
    /// held up by nodes that never hang up.
    pub closing: watch::Sender<bool>,
    /// Wakes an organization's delivery stream when something is queued for it.
    pub wakeups: crate::routing::queue::Wakeups,
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

fn load_bundle(config: &Config) -> Result<Bundle, StartError> {
    let pins = certs(config).pins();
    Bundle::load(&config.policies, pins.exists().then_some(pins.as_path()))
        .map_err(|errs| StartError::Bundle(errs.iter().map(|e| e.to_string()).collect()))
}

fn load_tls(config: &Config) -> Result<(std::collections::HashSet<Vec<u8>>, Arc<ServerConfig>), StartError> {
    let dir = certs(config);
    let ca = pki::load_certs(&dir.ca_cert())?;
    let crls = pki::load_crls(&dir.crl())?;
    let revoked_serials = pki::revoked_serials(&crls)?.into_iter().collect();
    let tls = pki::server_config(
        &ca,
        crls,
        pki::load_certs(&dir.gateway_tls_cert())?,
        pki::load_key(&dir.gateway_tls_key())?,
    )?;
    Ok((revoked_serials, Arc::new(tls)))
}

impl Gateway {
    /// Loads certificates, policy and the database, and records the start in the audit log.
    pub async fn open(config: Config, clock: SharedClock) -> Result<Gateway, StartError> {
        pki::install_crypto_provider();
        let dir = certs(&config);
        for key in owner_only::loose(&[dir.gateway_tls_key(), dir.gateway_signing_key(), dir.pseudonym_key()]) {
            tracing::warn!(file = %key.path.display(), "a private key file is open to other users: {key}");
        }
        let bundle = Arc::new(load_bundle(&config)?);
        let (revoked_serials, tls) = load_tls(&config)?;
        let trust = Trust { bundle, revoked_serials };
        let signing_cert = pki::load_certs(&dir.gateway_signing_cert())?;
        let checkpoints = CheckpointSigner::new(&read_text(dir.gateway_signing_key())?, signing_cert[0].as_ref())
            .map_err(|e| StartError::File(format!("{}: {e}", dir.gateway_signing_key().display())))?;
        let pseudonym_key = parse_pseudonym_key(&read_text(dir.pseudonym_key())?)
            .map_err(|e| StartError::File(format!("{}: {e}", dir.pseudonym_key().display())))?;
        let store = Store::open_with(&config.database, config.wal_idle).await?;
        let network = trust.bundle.network();
        let cadence = audit::Cadence {
            every_entries: network.checkpoint_every_entries,
            every: std::time::Duration::from_secs(network.checkpoint_every_secs),
        };
        let audit_log = audit::AuditLog::new(store.clone(), checkpoints.clone(), clock.clone(), cadence);
        let trust = Arc::new(RwLock::new(Arc::new(trust)));
        let rejections = Arc::new(Rejections::default());
        let auth = Authenticator::new(trust.clone(), clock.clone(), rejections.clone());
        let commits = crate::commit::Committer::start(store.clone(), audit_log.clone());
        let gateway = Gateway(Arc::new(Inner {
            config,
            store,
            clock,
            auth,
            trust,
            tls: Arc::new(RwLock::new(tls)),
            rejections,
            checkpoints,
            commits,
            audit_log,
            pseudonym_key,
            reloads: watch::channel(0).0,
            streams: Default::default(),
            wakeups: Default::default(),
            closing: watch::channel(false).0,
        }));
        gateway.record_system(Action::GatewayStarted, "ok", "").await?;
        Ok(gateway)
    }

    /// Re-reads the CRL and the policy bundle, registry included (SIGHUP, and the reload RPC). The
    /// CRL applies to the next handshake and open streams re-check their certificates. A bundle that
    /// fails validation is refused, with every problem logged and a `policy_reload_rejected` entry, and
    /// the old one stays in force; a good one is swapped in atomically (each decision uses exactly one
    /// bundle) with a `policy_reloaded` entry naming the old (`object_id`) and new (`bundle_version`)
    /// versions. Returns the old and new versions.
    pub async fn reload(&self, actor: Option<&haven_trust::ids::Caller>) -> Result<(String, String), StartError> {
        let (revoked_serials, tls) = load_tls(&self.0.config)?;
        let old = self.bundle();
        let loaded = load_bundle(&self.0.config);
        let bundle = match &loaded {
            Ok(b) => Arc::new(b.clone()),
            Err(_) => old.clone(),
        };
        if let Ok(mut t) = self.0.trust.write() {
            *t = Arc::new(Trust { bundle: bundle.clone(), revoked_serials });
        }
        if let Ok(mut t) = self.0.tls.write() {
            *t = tls;
        }
        self.0.auth.clear_cache();
        self.0.reloads.send_modify(|g| *g += 1);
        let mut entry = AuditEntry {
            time_micros: self.0.clock.now_micros(),
            actor_org: actor.map(|c| c.org.to_string()).unwrap_or_default(),
            actor_person: actor.map(|c| c.person.to_string()).unwrap_or_default(),
            actor_role: actor.map_or_else(|| "system".to_owned(), |c| c.role.to_string()),
            object_id: old.version_id().to_owned(),
            bundle_version: bundle.version_id().to_owned(),
            ..Default::default()
        };
        match loaded {
            Ok(_) => {
                let network = bundle.network();
                self.0.audit_log.set_cadence(audit::Cadence {
                    every_entries: network.checkpoint_every_entries,
                    every: std::time::Duration::from_secs(network.checkpoint_every_secs),
                });
                entry.action = Action::PolicyReloaded.as_str().into();
                entry.outcome = "ok".into();
                self.append_entry(entry).await?;
                tracing::info!(old = %old.version(), new = %bundle.version(), "reloaded CRL and policy bundle");
                Ok((old.version_id().to_owned(), bundle.version_id().to_owned()))
            }
            Err(e) => {
                entry.action = Action::PolicyReloadRejected.as_str().into();
                entry.outcome = "refused".into();
                entry.reason = "bundle_invalid".into();
                self.append_entry(entry).await?;
                tracing::error!(error = %e, "policy bundle refused; the previous bundle stays in force");
                Err(e)
            }
        }
    }

    /// The policy bundle in force.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.0.auth.trust().bundle.clone()
    }

    async fn append_entry(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.0.store.begin().await?;
        audit::append_one(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a system entry (no person acted) in its own transaction.
    async fn record_system(&self, action: Action, outcome: &str, reason: &str) -> Result<(), StoreError> {
        self.append_entry(AuditEntry {
            time_micros: self.0.clock.now_micros(),
            actor_role: "system".into(),
            action: action.as_str().into(),
            outcome: outcome.into(),
            reason: reason.into(),
            bundle_version: self.bundle().version_id().to_owned(),
            ..Default::default()
        })
        .await
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
                // Every 5 s from now: the interval's immediate first tick would flush whatever the
                // first moments counted on its own, splitting one burst of rejections in two entries.
                let every = std::time::Duration::from_secs(5);
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    if let Err(e) = g.0.rejections.flush(&g.0.store, g.0.clock.now_micros()).await {
                        tracing::warn!(error = %e, "could not write aggregated rejections");
                    }
                }
            })
        };
        let integrator = self.0.audit_log.spawn();
        let sweeper = {
            let g = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    if let Err(e) = crate::routing::lifecycle::expire_due(&g).await {
                        tracing::warn!(error = %e, "delivery expiry sweep failed");
                    }
                    if let Err(e) = crate::consent::sweep_expired(&g).await {
                        tracing::warn!(error = %e, "consent expiry sweep failed");
                    }
                }
            })
        };
        let listener_task = (self.0.store.backend() == crate::store::Backend::Postgres).then(|| {
            let g = self.clone();
            tokio::spawn(async move { listen_for_wakeups(g).await })
        });
        let closing = self.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = closing.0.closing.send(true);
        };
        let result = crate::server::run(self.clone(), listener, shutdown).await;
        sweeper.abort();
        if let Some(t) = listener_task {
            t.abort();
        }
        flusher.abort();
        integrator.abort();
        if let Err(e) = self.0.rejections.flush(&self.0.store, self.0.clock.now_micros()).await {
            tracing::warn!(error = %e, "could not write aggregated rejections at shutdown");
        }
        // Last: acknowledged payloads, which `secure_delete` overwrote in the database file, leave
        // SQLite's write-ahead log too.
        match self.0.store.truncate_wal().await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "could not truncate SQLite's write-ahead log at shutdown (a reader held it for 15 s); deleted payloads may remain in it until the next start"
            ),
            Err(e) => tracing::warn!(error = %e, "could not truncate SQLite's write-ahead log at shutdown"),
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
                    let _ = g.reload(None).await;
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

/// On PostgreSQL, wakes local streams when any replica queues an item for their organization.
async fn listen_for_wakeups(g: Gateway) {
    loop {
        match sqlx::postgres::PgListener::connect(&g.0.config.database).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(crate::routing::queue::PG_CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; streams fall back to polling");
                } else {
                    while let Ok(n) = listener.recv().await {
                        g.0.wakeups.wake(n.payload());
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the LISTEN connection; streams fall back to polling"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

fn parse_pseudonym_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "not hex".to_owned())?;
    bytes.try_into().map_err(|_| "must hold 32 bytes in hex".to_owned())
}
