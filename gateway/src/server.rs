//! Ties the services to the mTLS listener: health and reflection (mTLS only), and the Haven services
//! behind the person-token interceptor, with bounded message sizes, timeouts and HTTP/2 keepalive.

use std::future::Future;

use haven_proto::v1::audit_server::AuditServer;
use haven_proto::v1::gateway_server::GatewayServer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Request, Status};

use crate::identity::{self, PeerInfo};
use crate::service::{AuditService, GatewayService};
use crate::state::Gateway;

/// The interceptor that turns each request's certificate and token into a `Caller`.
fn authenticate(gateway: Gateway) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let peer = req.extensions().get::<PeerInfo>().cloned();
        let caller = gateway.0.auth.authenticate(peer.as_ref(), req.metadata())?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// Serves the gateway on `listener` until `shutdown` completes.
pub async fn run(
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let cfg = &gateway.0.config;
    let max = cfg.max_message_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<GatewayServer<GatewayService>>().await;
    health.set_serving::<AuditServer<AuditService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(haven_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| tracing::error!(error = %e, "reflection unavailable"))
        .ok();
    let gateway_svc = InterceptedService::new(
        GatewayServer::new(GatewayService::new(gateway.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        authenticate(gateway.clone()),
    );
    let audit_svc = InterceptedService::new(
        AuditServer::new(AuditService::new(gateway.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        authenticate(gateway.clone()),
    );
    let incoming = identity::incoming(listener, gateway.0.tls.clone());
    Server::builder()
        .timeout(cfg.request_timeout)
        .http2_keepalive_interval(Some(cfg.keepalive))
        .http2_keepalive_timeout(Some(cfg.keepalive))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(gateway_svc)
        .add_service(audit_svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
