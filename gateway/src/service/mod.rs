//! The gRPC services the gateway offers to nodes.

mod audit;
mod gateway;

pub use audit::AuditService;
pub use gateway::GatewayService;

use haven_trust::ids::Caller;
use tonic::{Request, Status};

use crate::store::{Store, Unsettled};

/// The caller the interceptor authenticated.
pub(crate) fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| Status::unauthenticated("request was not authenticated"))
}

/// Opens a read for its answer once what it saw is on disk (see `Store::settle`).
pub(crate) async fn settle<T>(store: &Store, read: Unsettled<T>) -> Result<T, Status> {
    store.settle(read).await.map_err(|e| {
        tracing::error!(error = %e, "a read could not be answered");
        Status::unavailable(
            "the gateway cannot confirm that what this read found is on disk (its database could not be synced); the gateway's operator must check its disk; retry later",
        )
    })
}
