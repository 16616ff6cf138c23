//! The `baseline` scenario: a bare unary echo over the gateway's own mTLS stack.
//!
//! The server is `haven-bench echo`, a process of its own like the gateway. It builds its rustls
//! configuration with [`haven_trust::pki::server_config`] from the gateway's development certificate,
//! accepts connections with the gateway's own acceptor ([`haven_gateway::identity::incoming`]: TLS 1.3,
//! client certificate verified against the CA and CRL, peer certificate parsed once per connection),
//! and serves one hand-written tonic service with the gateway's timeout and keepalive settings. The
//! service echoes a [`Envelope`], the message a submission carries, so the payload is the same; the
//! client sends the same bearer token header a submission does. No `.proto` file is involved and the
//! `haven.v1` contract is untouched: the path `/haven.bench.Echo/Echo` exists only in this binary.
//!
//! What the echo leaves out is exactly what Haven adds: the token check, policy, consent, the audit
//! log and the durable queue.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use haven_proto::v1::Envelope;
use haven_trust::pki::{self, CertsDir};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The one method of the echo service.
pub const PATH: &str = "/haven.bench.Echo/Echo";

/// The echo service, routed by tonic like a generated server.
#[derive(Debug, Clone, Default)]
pub struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "haven.bench.Echo";
}

/// The unary handler: the request message is the reply.
struct Echo;

impl tonic::server::UnaryService<Envelope> for Echo {
    type Response = Envelope;
    type Future = std::future::Ready<Result<Response<Envelope>, Status>>;

    fn call(&mut self, request: Request<Envelope>) -> Self::Future {
        std::future::ready(Ok(Response::new(request.into_inner())))
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for EchoServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(async { Ok(Status::unimplemented("only /haven.bench.Echo/Echo is served").into_http()) });
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Envelope, Envelope>::default());
            Ok(grpc.unary(Echo, req).await)
        })
    }
}

/// Serves the echo on a loopback port with the gateway's certificate from `certs`, printing
/// `HAVEN_READY <addr>` once it listens, until SIGTERM.
pub async fn serve(certs: &Path, ready: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    pki::install_crypto_provider();
    let dir = CertsDir(certs.to_owned());
    let tls = pki::server_config(
        &pki::load_certs(&dir.ca_cert())?,
        pki::load_crls(&dir.crl())?,
        pki::load_certs(&dir.gateway_tls_cert())?,
        pki::load_key(&dir.gateway_tls_key())?,
    )?;
    // The gateway's own settings, so the only difference is the service behind them.
    let settings = haven_gateway::config::Config::new(certs.to_owned(), certs.to_owned(), String::new());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    ready(listener.local_addr()?);
    let incoming = haven_gateway::identity::incoming(listener, Arc::new(RwLock::new(Arc::new(tls))));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        .timeout(settings.request_timeout)
        .http2_keepalive_interval(Some(settings.keepalive))
        .http2_keepalive_timeout(Some(settings.keepalive))
        .add_service(EchoServer)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = term.recv().await;
        })
        .await?;
    Ok(())
}

/// One echo call on `channel`.
pub async fn call(channel: Channel, request: Request<Envelope>) -> Result<Envelope, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("echo service not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(PATH);
    Ok(grpc.unary(request, path, ProstCodec::<Envelope, Envelope>::default()).await?.into_inner())
}
