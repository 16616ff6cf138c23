//! The gRPC services the gateway offers to nodes.

mod audit;
mod gateway;

pub use audit::AuditService;
pub use gateway::GatewayService;

use haven_trust::ids::Caller;
use tonic::{Request, Status};

/// The caller the interceptor authenticated.
pub(crate) fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| Status::unauthenticated("request was not authenticated"))
}

/// Waits until what a read saw is on disk, before it is answered (see `Store::settled`).
pub(crate) async fn settled(gateway: &crate::state::Gateway) -> Result<(), Status> {
    gateway.0.store.settled().await.map_err(|e| {
        tracing::error!(error = %e, "a read could not be answered");
        Status::unavailable(
            "the gateway cannot confirm that what this read found is on disk (its database could not be synced); the gateway's operator must check its disk; retry later",
        )
    })
}
