//! Who is calling: the mTLS edge and person tokens.
//!
//! The TLS acceptor verifies the client certificate against the network CA and its CRL (TLS 1.3 only)
//! and records what the certificate says in [`PeerInfo`], once per connection. The [`Authenticator`]
//! then turns each request's peer and bearer token into a typed [`Caller`], or refuses it with
//! UNAUTHENTICATED and a reason. Health and reflection need mTLS only; every Haven method needs both.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use haven_trust::clock::SharedClock;
use haven_trust::ids::{Caller, OrgId};
use haven_trust::pki::CertInfo;
use haven_trust::registry::{Fingerprint, Registry};
use haven_trust::token::{self, Claims, TokenError};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::audit::Rejections;

/// What the TLS handshake proved about a connection's peer. Attached to every request.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// The verified client certificate (chained to the CA, not expired, not on the CRL at handshake).
    pub cert: Option<Arc<CertInfo>>,
}

/// A TLS connection whose peer has been verified.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections and performs TLS handshakes concurrently, yielding verified connections.
/// The server configuration is read per connection, so a reload (new CRL) applies to the next
/// handshake.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<RwLock<Arc<ServerConfig>>>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let _ = tcp.set_nodelay(true);
            let config = match tls.read() {
                Ok(c) => c.clone(),
                Err(_) => break,
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = TlsAcceptor::from(config);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|der| CertInfo::parse(der).ok())
                            .map(Arc::new);
                        let _ = tx.send(Ok(TlsConn { stream, info: PeerInfo { remote, cert } })).await;
                    }
                    Ok(Err(e)) => tracing::info!(%remote, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no verified client certificate on this connection")]
    NoCertificate,
    #[error("client certificate: {0}")]
    BadCertificate(String),
    #[error("client certificate has been revoked")]
    Revoked,
    #[error("client certificate has expired")]
    CertificateExpired,
    #[error("organization `{0}` is not in the registry")]
    UnknownOrg(String),
    #[error("certificate {fingerprint} does not match the pins registered for organization `{org}`")]
    NotPinned { org: String, fingerprint: String },
    #[error("{0}")]
    Token(#[from] TokenError),
}

impl AuthError {
    /// A stable code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::NoCertificate => "no_certificate",
            AuthError::BadCertificate(_) => "bad_certificate",
            AuthError::Revoked => "certificate_revoked",
            AuthError::CertificateExpired => "certificate_expired",
            AuthError::UnknownOrg(_) => "unknown_org",
            AuthError::NotPinned { .. } => "certificate_not_pinned",
            AuthError::Token(t) => t.code(),
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        tonic::Status::unauthenticated(e.to_string())
    }
}

/// What the gateway trusts right now: the policy bundle (which holds the registry and its pins) and
/// the serial numbers on the CRL. Swapped as a whole on reload.
#[derive(Debug)]
pub struct Trust {
    pub bundle: Arc<crate::policy::Bundle>,
    /// Serial numbers on the CRL.
    pub revoked_serials: HashSet<Vec<u8>>,
}

impl Trust {
    /// The organization registry of the bundle in force.
    pub fn registry(&self) -> &Registry {
        self.bundle.registry()
    }

    /// Checks a connection's certificate against the current registry and CRL.
    pub fn check_peer(&self, cert: &CertInfo, now_secs: i64) -> Result<(OrgId, haven_trust::ids::OrgType), AuthError> {
        if self.revoked_serials.contains(&cert.serial) {
            return Err(AuthError::Revoked);
        }
        if cert.not_after < now_secs {
            return Err(AuthError::CertificateExpired);
        }
        let org = cert.org().map_err(AuthError::BadCertificate)?;
        let entry = self.registry().get(&org).ok_or_else(|| AuthError::UnknownOrg(org.to_string()))?;
        if !entry.tls_pins.contains(&cert.fingerprint) {
            return Err(AuthError::NotPinned { org: org.to_string(), fingerprint: cert.fingerprint.to_hex() });
        }
        Ok((org, entry.org_type.clone()))
    }
}

/// The most verified tokens remembered at once.
const TOKEN_CACHE_MAX: usize = 16_384;

/// Verifies requests. Verified tokens are cached by their exact text, so a node reusing a token within
/// its lifetime does not pay for an ECDSA verification on every call; the cheap claim checks (expiry,
/// binding to this certificate) still run on every hit.
pub struct Authenticator {
    trust: Arc<RwLock<Arc<Trust>>>,
    clock: SharedClock,
    cache: Mutex<HashMap<String, Claims>>,
    rejections: Arc<Rejections>,
}

impl Authenticator {
    pub fn new(trust: Arc<RwLock<Arc<Trust>>>, clock: SharedClock, rejections: Arc<Rejections>) -> Self {
        Authenticator { trust, clock, cache: Mutex::new(HashMap::new()), rejections }
    }

    /// Forgets every cached token (after a registry or CRL reload).
    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// The current trust state.
    pub fn trust(&self) -> Arc<Trust> {
        match self.trust.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Authenticates a request from its peer info and metadata, recording a rejection when it fails.
    pub fn authenticate(
        &self,
        peer: Option<&PeerInfo>,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, AuthError> {
        let result = self.authenticate_inner(peer, metadata);
        if let Err(e) = &result {
            let org = peer
                .and_then(|p| p.cert.as_ref())
                .and_then(|c| c.org().ok())
                .map(|o| o.to_string())
                .unwrap_or_default();
            let source = peer.map(|p| p.remote.ip().to_string()).unwrap_or_default();
            self.rejections.record(&org, &source, e.code());
            tracing::info!(%org, %source, reason = e.code(), "call refused: {e}");
        }
        result
    }

    /// Checks only the connection's certificate (for a stream already open).
    pub fn check_peer(&self, peer: &PeerInfo) -> Result<OrgId, AuthError> {
        let cert = peer.cert.as_ref().ok_or(AuthError::NoCertificate)?;
        Ok(self.trust().check_peer(cert, self.clock.now_secs())?.0)
    }

    fn authenticate_inner(
        &self,
        peer: Option<&PeerInfo>,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, AuthError> {
        let cert = peer.and_then(|p| p.cert.as_ref()).ok_or(AuthError::NoCertificate)?;
        let now = self.clock.now_secs();
        let trust = self.trust();
        let (org, org_type) = trust.check_peer(cert, now)?;
        let raw = metadata
            .get("authorization")
            .ok_or(TokenError::Missing)?
            .to_str()
            .map_err(|_| TokenError::Garbled("authorization header is not ASCII".into()))?;
        let jwt = raw
            .strip_prefix("Bearer ")
            .ok_or_else(|| TokenError::Garbled("authorization header must be `Bearer <jwt>`".into()))?;
        let cached = self.cache.lock().ok().and_then(|c| c.get(jwt).cloned());
        let verified = match cached {
            Some(claims) => token::check_claims(&claims, &org, &cert.fingerprint, now)?,
            None => {
                let (claims, key_org, _) = token::verify_signed::<Claims>(jwt, trust.registry())?;
                if key_org != org {
                    return Err(TokenError::OtherOrganizationKey {
                        key_org: key_org.to_string(),
                        tls_org: org.to_string(),
                    }
                    .into());
                }
                let verified = token::check_claims(&claims, &org, &cert.fingerprint, now)?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= TOKEN_CACHE_MAX {
                        cache.retain(|_, c| c.exp + token::SKEW_SECS > now);
                        if cache.len() >= TOKEN_CACHE_MAX {
                            cache.clear();
                        }
                    }
                    cache.insert(jwt.to_owned(), claims);
                }
                verified
            }
        };
        Ok(Caller { org, org_type, person: verified.person, role: verified.role })
    }
}

/// The SHA-256 fingerprint of a DER certificate (re-exported for callers that only hold bytes).
pub fn fingerprint(der: &[u8]) -> Fingerprint {
    Fingerprint::of_der(der)
}
