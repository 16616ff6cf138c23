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
pub(crate) async fn settled(gateway: &crate::app::Gateway) -> Result<(), Status> {
    gateway.0.store.settled().await.map_err(|e| {
        tracing::error!(error = %e, "a read could not be answered");
        Status::unavailable(
            "the gateway cannot confirm that what this read found is on disk (its database could not be synced); the gateway's operator must check its disk; retry later",
        )
    })
}

/// The wire form of a caller.
pub(crate) fn caller_proto(c: &Caller) -> haven_proto::v1::Caller {
    haven_proto::v1::Caller {
        org_id: c.org.to_string(),
        org_type: c.org_type.to_string(),
        person: c.person.to_string(),
        role: c.role.as_str().to_owned(),
    }
}
