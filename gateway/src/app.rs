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
use crate::config::{Config, ConfigError};
use crate::identity::{Authenticator, Trust};
use crate::policy::Bundle;
use crate::store::{Store, StoreError, crl};

pub use crate::state::{Gateway, Inner};

/// Why the gateway could not start or reload. Each names the file or setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is out of range, or a folder it names does not exist.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{0}")]
    File(String),
    #[error("policy bundle refused:\n{}", .0.join("\n"))]
    Bundle(Vec<String>),
    /// The CRL file is older than the newest one this gateway accepted before.
    #[error(
        "{path}: this CRL (thisUpdate {this_update}{}) is older than the one this gateway accepted before (thisUpdate {accepted}); an old CRL could bring a revoked certificate back, so it is refused: install the network CA's latest crl.pem",
        number_note(.number)
    )]
    CrlOlder { path: PathBuf, this_update: String, number: String, accepted: String },
    /// The CRL file is gone, though this gateway accepted a CRL before.
    #[error(
        "{path} is missing, but this gateway accepted a CRL before (thisUpdate {accepted}); without it revoked certificates would be trusted again, so the gateway refuses to go on: restore the network CA's latest crl.pem"
    )]
    CrlMissing { path: PathBuf, accepted: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

fn number_note(number: &str) -> String {
    if number.is_empty() { String::new() } else { format!(", number {number}") }
}

impl StartError {
    /// A stable code for the audit log's `reason`.
    pub fn code(&self) -> &'static str {
        match self {
            StartError::Config(_) => "config_invalid",
            StartError::Pki(PkiError::EmptyCrl { .. }) => "crl_empty",
            StartError::Pki(PkiError::ForeignCrl { .. }) => "crl_not_the_cas",
            StartError::Pki(PkiError::Malformed { what: "CRL", .. }) => "crl_malformed",
            StartError::Pki(PkiError::KeyMismatch { .. }) => "key_mismatch",
            StartError::Pki(PkiError::WrongHolder { .. }) => "certificate_wrong_holder",
            StartError::Pki(PkiError::WrongPurpose { .. }) => "certificate_wrong_purpose",
            StartError::Pki(PkiError::Read { .. }) => "file_unreadable",
            StartError::Pki(PkiError::NoPem { .. } | PkiError::Malformed { .. } | PkiError::X509(_)) => {
                "file_malformed"
            }
            StartError::Pki(PkiError::Tls(_)) => "tls_refused",
            StartError::File(_) => "file_unreadable",
            StartError::Bundle(_) => "bundle_invalid",
            StartError::CrlOlder { .. } => "crl_older",
            StartError::CrlMissing { .. } => "crl_missing",
            StartError::Store(_) => "store_unavailable",
            StartError::Listen { .. } => "listen_failed",
        }
    }

    /// The error as a caller of `ReloadPolicy` is told it: at most twenty of a bundle's problems and
    /// a count of the rest (the log has them all).
    pub fn summary(&self) -> String {
        match self {
            StartError::Bundle(problems) => {
                format!("policy bundle refused:\n{}", haven_trust::untrusted::list_problems(problems, "\n"))
            }
            e => e.to_string(),
        }
    }
}

fn certs(config: &Config) -> CertsDir {
    CertsDir(config.certs.clone())
}

fn read_text(path: PathBuf) -> Result<String, StartError> {
    std::fs::read_to_string(&path).map_err(|e| StartError::File(format!("cannot read {}: {e}", path.display())))
}

fn load_bundle(config: &Config) -> Result<Bundle, StartError> {
    let pins = certs(config).pins();
    let bundle = Bundle::load(&config.policies, pins.exists().then_some(pins.as_path()))
        .map_err(|errs| StartError::Bundle(errs.iter().map(|e| e.to_string()).collect()))?;
    for warning in bundle.warnings() {
        tracing::warn!(%warning, "policy bundle");
    }
    Ok(bundle)
}

/// The TLS material read from disk, checked, but not yet in force.
struct TlsMaterial {
    config: Arc<ServerConfig>,
    revoked_serials: std::collections::HashSet<Vec<u8>>,
    /// The CRL's place in the CA's sequence; `None` when there is no CRL file.
    crl: Option<crl::AcceptedCrl>,
}

/// Reads the CA, the CRL and the gateway's TLS certificate and key, and checks them: the key is the
/// certificate's, the certificate is the gateway's and serves TLS, the CRL is the CA's.
fn read_tls(config: &Config) -> Result<TlsMaterial, StartError> {
    let dir = certs(config);
    pki::check_identity(
        &dir.gateway_tls_cert(),
        &dir.gateway_tls_key(),
        haven_trust::ids::GATEWAY_URI,
        pki::CertPurpose::TlsServer,
    )?;
    let ca = pki::load_certs(&dir.ca_cert())?;
    let revocations = pki::read_revocations(&dir.crl(), &ca)?;
    let (crls, revoked_serials, crl) = match revocations {
        Some(r) => (
            r.crls,
            r.serials.into_iter().collect(),
            Some(crl::AcceptedCrl { this_update: r.this_update, number: r.number }),
        ),
        None => (Vec::new(), Default::default(), None),
    };
    let tls = pki::server_config(
        &ca,
        crls,
        pki::load_certs(&dir.gateway_tls_cert())?,
        pki::load_key(&dir.gateway_tls_key())?,
    )?;
    Ok(TlsMaterial { config: Arc::new(tls), revoked_serials, crl })
}

fn utc(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Refuses a CRL older than the newest this gateway accepted before, and a missing one after one was.
async fn check_crl_order(store: &Store, config: &Config, tls: &TlsMaterial) -> Result<(), StartError> {
    let Some(accepted) = crl::newest(store).await? else {
        return Ok(());
    };
    let path = certs(config).crl();
    match &tls.crl {
        None => Err(StartError::CrlMissing { path, accepted: utc(accepted.this_update) }),
        Some(new)
            if new.this_update < accepted.this_update
                || (new.this_update == accepted.this_update
                    && pki::crl_number_before(&new.number, &accepted.number)) =>
        {
            Err(StartError::CrlOlder {
                path,
                this_update: utc(new.this_update),
                number: new.number.clone(),
                accepted: utc(accepted.this_update),
            })
        }
        Some(_) => Ok(()),
    }
}

impl Gateway {
    /// Loads certificates, policy and the database, and records the start in the audit log. Every
    /// identity file is checked first (each key against its certificate, each certificate against
    /// its place), and a CRL older than one accepted before is refused, so a start with the wrong
    /// files stops here with the file named.
    pub async fn open(config: Config, clock: SharedClock) -> Result<Gateway, StartError> {
        pki::install_crypto_provider();
        config.validate()?;
        let dir = certs(&config);
        for key in owner_only::loose(&[dir.gateway_tls_key(), dir.gateway_signing_key(), dir.pseudonym_key()]) {
            tracing::warn!(file = %key.path.display(), "a private key file is open to other users: {key}");
        }
        let bundle = Arc::new(load_bundle(&config)?);
        let tls = read_tls(&config)?;
        pki::check_identity(
            &dir.gateway_signing_cert(),
            &dir.gateway_signing_key(),
            haven_trust::ids::GATEWAY_URI,
            pki::CertPurpose::Signing,
        )?;
        let signing_cert = pki::load_certs(&dir.gateway_signing_cert())?;
        let checkpoints = CheckpointSigner::new(&read_text(dir.gateway_signing_key())?, signing_cert[0].as_ref())
            .map_err(|e| StartError::File(format!("{}: {e}", dir.gateway_signing_key().display())))?;
        let pseudonym_key = parse_pseudonym_key(&read_text(dir.pseudonym_key())?)
            .map_err(|e| StartError::File(format!("{}: {e}", dir.pseudonym_key().display())))?;
        let store = Store::open_with(&config.database, config.wal_idle).await?;
        check_crl_order(&store, &config, &tls).await?;
        let TlsMaterial { config: tls_config, revoked_serials, crl: accepted_crl } = tls;
        let trust = Trust { bundle, revoked_serials };
        let network = trust.bundle.network();
        let cadence = audit::Cadence {
            every_entries: network.checkpoint_every_entries,
            every: std::time::Duration::from_secs(network.checkpoint_every_secs),
        };
        let commits = crate::commit::Committer::start(store.clone());
        let key_log_signer = checkpoints.clone();
        let audit_log = audit::AuditLog::new(store.clone(), commits.clone(), checkpoints, clock.clone(), cadence);
        let trust = Arc::new(RwLock::new(Arc::new(trust)));
        let rejections = Arc::new(Rejections::default());
        let auth = Authenticator::new(trust.clone(), clock.clone(), rejections.clone());
        let gateway = Gateway(Arc::new(Inner {
            config,
            store,
            clock,
            auth,
            trust,
            tls: Arc::new(RwLock::new(tls_config)),
            rejections,
            commits,
            key_log_signer,
            audit_log,
            pseudonym_key,
            reloads: watch::channel(0).0,
            streams: Default::default(),
            wakeups: Default::default(),
            closing: watch::channel(false).0,
        }));
        let started = gateway.system_entry(Action::GatewayStarted, "ok", "");
        gateway.record(started, accepted_crl.as_ref(), Some(&gateway.bundle())).await?;
        Ok(gateway)
    }

    /// Re-reads the CRL and the policy bundle, registry included (SIGHUP, and the reload RPC).
    ///
    /// - TLS material that cannot be used (a missing or junk file, a key that is not its
    ///   certificate's, an empty, foreign or older CRL) refuses the whole reload: nothing changes, the
    ///   reason is logged with the file named, and a `trust_reload_rejected` entry is written where the
    ///   database allows.
    /// - Otherwise the CRL applies to the next handshake and open streams re-check their certificates.
    ///   A bundle that fails validation is refused, with every problem logged and a
    ///   `policy_reload_rejected` entry, and the old one stays in force; a good one is swapped in
    ///   atomically (each decision uses exactly one bundle) with a `policy_reloaded` entry naming the
    ///   old (`object_id`) and new (`bundle_version`) versions.
    /// - Nothing is swapped in before its audit entry (and the CRL's place) is committed: a reload
    ///   whose entry cannot be written changes nothing.
    ///
    /// Returns the old and new versions.
    pub async fn reload(&self, actor: Option<&haven_trust::ids::Caller>) -> Result<(String, String), StartError> {
        let old = self.bundle();
        let now = self.0.clock.now_micros();
        // The entry of this reload, whatever becomes of it: who asked, and the version it replaces.
        let entry = |action: Action, outcome: &str, reason: &str, version: &str| AuditEntry {
            actor_org: actor.map(|c| c.org.to_string()).unwrap_or_default(),
            actor_person: actor.map(|c| c.person.to_string()).unwrap_or_default(),
            actor_role: actor.map_or_else(|| "system".to_owned(), |c| c.role.to_string()),
            object_id: old.version_id().to_owned(),
            bundle_version: version.to_owned(),
            outcome: outcome.into(),
            reason: reason.into(),
            ..AuditEntry::new(action, now)
        };
        let refused = |e: &StartError| entry(Action::TrustReloadRejected, "refused", e.code(), old.version_id());
        let tls = match read_tls(&self.0.config) {
            Ok(tls) => match check_crl_order(&self.0.store, &self.0.config, &tls).await {
                Ok(()) => tls,
                Err(e) => return Err(self.refuse_trust(refused(&e), e).await),
            },
            Err(e) => return Err(self.refuse_trust(refused(&e), e).await),
        };
        let loaded = load_bundle(&self.0.config);
        let bundle = match &loaded {
            Ok(b) => Arc::new(b.clone()),
            Err(_) => old.clone(),
        };
        let entry = match &loaded {
            Ok(_) => entry(Action::PolicyReloaded, "ok", "", bundle.version_id()),
            Err(_) => entry(Action::PolicyReloadRejected, "refused", "bundle_invalid", bundle.version_id()),
        };
        if let Err(e) = self.record(entry, tls.crl.as_ref(), loaded.as_ref().ok().map(|_| bundle.as_ref())).await {
            tracing::error!(
                error = %e,
                "reload refused: its audit entry could not be written; the previous certificates, CRL and bundle stay in force"
            );
            return Err(e.into());
        }
        let TlsMaterial { config: tls_config, revoked_serials, .. } = tls;
        if let Ok(mut t) = self.0.trust.write() {
            *t = Arc::new(Trust { bundle: bundle.clone(), revoked_serials });
        }
        if let Ok(mut t) = self.0.tls.write() {
            *t = tls_config;
        }
        self.0.auth.clear_cache();
        self.0.reloads.send_modify(|g| *g += 1);
        match loaded {
            Ok(_) => {
                let network = bundle.network();
                self.0.audit_log.set_cadence(audit::Cadence {
                    every_entries: network.checkpoint_every_entries,
                    every: std::time::Duration::from_secs(network.checkpoint_every_secs),
                });
                tracing::info!(old = %old.version(), new = %bundle.version(), "reloaded CRL and policy bundle");
                Ok((old.version_id().to_owned(), bundle.version_id().to_owned()))
            }
            Err(e) => {
                tracing::error!(error = %e, "policy bundle refused; the previous bundle stays in force");
                Err(e)
            }
        }
    }

    /// Refuses a reload because of its TLS material: logs why, with the file named, and writes its
    /// `trust_reload_rejected` entry if the database allows. Nothing changes.
    async fn refuse_trust(&self, entry: AuditEntry, e: StartError) -> StartError {
        tracing::error!(
            error = %e,
            reason = e.code(),
            "reload refused: the TLS material cannot be used; the previous certificates, CRL and bundle stay in force"
        );
        if let Err(w) = self.record(entry, None, None).await {
            tracing::error!(error = %w, "could not write the trust_reload_rejected audit entry");
        }
        e
    }

    /// Writes `entry` in its own transaction, with the CRL now in force when it is one to record.
    async fn record(
        &self,
        entry: AuditEntry,
        crl: Option<&crl::AcceptedCrl>,
        bundle: Option<&Bundle>,
    ) -> Result<(), StoreError> {
        let mut tx = self.0.store.begin().await?;
        if let Some(crl) = crl {
            crl::record(&mut tx, crl, self.0.clock.now_micros()).await?;
        }
        let seq = audit::append_one(&mut tx, entry).await?;
        if let Some(b) = bundle {
            let files: std::collections::BTreeMap<&str, &str> =
                b.files().iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
            let json = serde_json::to_string(&files).map_err(|e| StoreError::Commit(e.to_string()))?;
            crate::store::bundles::keep(&mut tx, b.version_id(), &json, seq, self.0.clock.now_micros()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A system entry (no person acted) under the bundle in force.
    fn system_entry(&self, action: Action, outcome: &str, reason: &str) -> AuditEntry {
        AuditEntry {
            actor_role: "system".into(),
            outcome: outcome.into(),
            reason: reason.into(),
            ..self.stamp().entry(action)
        }
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
                    if let Err(e) = g.0.rejections.flush(&g.0.commits, g.0.clock.now_micros()).await {
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
                    if let Err(e) = g.expire_deliveries().await {
                        tracing::warn!(error = %e, "delivery expiry sweep failed");
                    }
                    if let Err(e) = g.expire_consents().await {
                        tracing::warn!(error = %e, "consent expiry sweep failed");
                    }
                }
            })
        };
        let listener_task = (self.0.store.dialect() == crate::store::Dialect::Postgres).then(|| {
            let g = self.clone();
            tokio::spawn(async move { listen_for_wakeups(g).await })
        });
        let closing = self.clone();
        let shutdown = async move {
            shutdown.await;
            // Stored even when no stream is open to receive it (`send` would drop it then), so a
            // stream that opens while the server drains its connections ends at once too.
            closing.0.closing.send_replace(true);
        };
        let result = crate::server::run(self.clone(), listener, shutdown).await;
        sweeper.abort();
        if let Some(t) = listener_task {
            t.abort();
        }
        flusher.abort();
        integrator.abort();
        if let Err(e) = self.0.rejections.flush(&self.0.commits, self.0.clock.now_micros()).await {
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
    /// Expires queued copies past their TTL and wakes each sender once its expiry is durable (the
    /// periodic sweep; tests call it with a moved clock). Returns how many expired.
    pub async fn expire_deliveries(&self) -> Result<usize, crate::error::Error> {
        crate::routing::lifecycle::expire_due(self.store(), &self.stamp(), &|orgs| self.wake(orgs)).await
    }

    /// Expires every given consent whose window has ended, cascading to its copies, and wakes whoever
    /// has something new queued (the periodic sweep; tests call it with a moved clock). Returns how
    /// many expired.
    pub async fn expire_consents(&self) -> Result<usize, crate::error::Error> {
        crate::consent::sweep_expired(self.store(), &self.stamp(), &|orgs| self.wake(orgs)).await
    }

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
