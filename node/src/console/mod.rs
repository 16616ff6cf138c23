//! The web console: the node's person actions ([`crate::actions`]) in a browser, for the people who do
//! the work. Pages are rendered on the server with `maud` and work as plain HTML; `htmx` (vendored,
//! [`assets`]) and one small script refresh the live regions when the node's Server-Sent Events stream
//! says something arrived. The stream carries metadata only.
//!
//! - [`routes`]: the handlers, each a thin caller of one action;
//! - [`pages`]: the templates (maud: checked by the compiler, every value escaped unless marked);
//! - [`session`]: sessions, cookies, the CSRF token and the `Origin` check;
//! - [`i18n`]: the message catalog (English and Spanish);
//! - [`assets`]: the stylesheet and scripts, embedded, served under content-hashed names.
//!
//! Every response carries a strict Content-Security-Policy (no inline script or style, no framing),
//! `Referrer-Policy: same-origin` and `X-Content-Type-Options: nosniff`; every page is `no-store`.

pub mod assets;
pub mod i18n;
pub mod pages;
pub mod routes;
pub mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use haven_trust::clock::SharedClock;

use crate::link::GatewayLink;
use crate::mailbox::Arrivals;
use crate::password::Passwords;
use crate::people::People;
use crate::state::StreamState;
use crate::store::NodeStore;
use crate::witness::Witness;
use session::{PublicOrigin, Sessions};

/// How the console is served (`haven-node serve --console …`).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// Certificate and key: the console serves HTTPS itself.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve plain HTTP on an address that is not loopback (behind a proxy that terminates TLS).
    pub insecure_http: bool,
    /// The origin people use (`--console-public-origin`); by default the listener's own.
    pub public_origin: Option<String>,
    /// The phone number the survivor's copies of a consent give (`--console-help-phone`).
    pub help_phone: Option<String>,
    /// Keep the scans of signed consent forms uploaded in the console
    /// (`--console-keep-consent-scans`); without it only their SHA-256 is kept, in the receipt.
    pub keep_scans: bool,
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "the console would serve plain HTTP on {0}, which is not loopback: give --console-tls-cert and --console-tls-key, or --console-insecure-http behind a proxy that terminates TLS"
    )]
    NeedsTls(SocketAddr),
    #[error("{0}")]
    Origin(String),
    #[error("console TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr} for the console: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// What the console's handlers share: the handles the person actions take, and the console's own.
pub struct Console {
    pub store: NodeStore,
    pub link: GatewayLink,
    pub clock: SharedClock,
    pub people: People,
    pub passwords: Passwords,
    pub arrivals: Arrivals,
    pub network: crate::network::Network,
    pub witness: Witness,
    pub stream: watch::Receiver<StreamState>,
    pub sessions: Sessions,
    pub second_factor: crate::totp::SecondFactor,
    /// The node's certificates and when each expires (Unix seconds), read at start.
    pub certificates: Vec<(String, i64)>,
    /// The phone number the survivor's copies of a consent give.
    pub help_phone: Option<String>,
    /// Whether the organization opted in to keeping consent scans.
    pub keep_scans: bool,
    /// Where the organization's sealing keys' private halves are kept.
    pub sealing_keys: crate::sealing::KeyFolder,
    /// What sending a message needs (sealing it first).
    pub sending: crate::seal::Sending,
    pub origin: PublicOrigin,
    /// Becomes true when the node stops: live-update streams end so connections can close.
    pub stopping: watch::Receiver<bool>,
}

/// A bound console, ready to serve.
pub struct Bound {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The address it listens on (the port chosen, for port 0).
    pub addr: SocketAddr,
    /// The origin people use.
    pub origin: PublicOrigin,
}

impl ConsoleConfig {
    /// Checks the settings and binds the address.
    pub async fn bind(&self) -> Result<Bound, ConsoleError> {
        if self.tls.is_none() && !self.insecure_http && !self.listen.ip().is_loopback() {
            return Err(ConsoleError::NeedsTls(self.listen));
        }
        let tls = match &self.tls {
            None => None,
            Some((cert, key)) => {
                let chain = haven_trust::pki::load_certs(cert).map_err(|e| ConsoleError::Tls(e.to_string()))?;
                let key = haven_trust::pki::load_key(key).map_err(|e| ConsoleError::Tls(e.to_string()))?;
                let mut config =
                    haven_trust::pki::plain_server_config(chain, key).map_err(|e| ConsoleError::Tls(e.to_string()))?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
            }
        };
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|source| ConsoleError::Listen { addr: self.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ConsoleError::Listen { addr: self.listen, source })?;
        let origin = match &self.public_origin {
            Some(o) => PublicOrigin::parse(o, tls.is_some()).map_err(ConsoleError::Origin)?,
            None => PublicOrigin::of_listener(addr, tls.is_some()),
        };
        Ok(Bound { listener, tls, addr, origin })
    }
}

/// The address a request came from, as the connection saw it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Bound {
    /// Serves the console until `stop` becomes true; each connection then finishes its request.
    pub async fn serve(self, console: Arc<Console>, mut stop: watch::Receiver<bool>) {
        let router = routes::router(console);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "the console could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let (router, tls, stop) = (router.clone(), self.tls.clone(), stop.clone());
            tokio::spawn(async move {
                match tls {
                    None => connection(TokioIo::new(tcp), peer, router, stop).await,
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                        if let Ok(Ok(stream)) = handshake {
                            connection(TokioIo::new(stream), peer, router, stop).await;
                        }
                    }
                }
            });
        }
    }
}

/// Serves one HTTP/1.1 connection, telling each request where it came from.
async fn connection<I>(io: I, peer: SocketAddr, router: Router, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(15))
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// The Content-Security-Policy of every response: this origin only, no inline script or style, no
/// plugins, no framing, forms posting only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every response, and `Cache-Control: no-store` to every one that
/// does not set its own (only the content-hashed assets do).
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
