//! The node's `Audit` service: the organization's people reach the gateway's audit API through their
//! own node. Each call is authenticated with the person's node token and forwarded to the gateway with
//! the person's short-lived gateway token, so the gateway decides what they may see (and records that
//! they looked) as itself; the node adds nothing and removes nothing. A gateway that cannot be reached,
//! or answers UNAVAILABLE, is reported as the `Node` service reports it ([`GatewayLink::relay`]).
//!
//! [`GatewayLink::relay`]: crate::link::GatewayLink::relay

use std::sync::Arc;

use haven_proto::v1::audit_client::AuditClient;
use haven_proto::v1::audit_server::Audit;
use haven_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::state::NodeState;

/// Serves `haven.v1.Audit` on the node.
pub struct AuditProxy {
    state: Arc<NodeState>,
}

impl AuditProxy {
    pub fn new(state: Arc<NodeState>) -> Self {
        AuditProxy { state }
    }

    /// The signed-in person, from `authorization: Bearer <node token>` (as for the `Node` service).
    /// The person's request to the gateway and a client to send it with.
    async fn forward<T>(
        &self,
        req: Request<T>,
    ) -> Result<(AuditClient<tonic::transport::Channel>, Request<T>), Status> {
        let user = self.state.people.sign_in(req.metadata()).await?;
        let out = self.state.link.request(&user.name, user.role, req.into_inner())?;
        Ok((AuditClient::new(self.state.link.channel()), out))
    }

    /// A failed gateway call, as the person should see it.
    fn relay(&self, s: Status) -> Status {
        self.state.link.relay(s)
    }
}

type ExportStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Audit for AuditProxy {
    async fn query(&self, req: Request<AuditQueryRequest>) -> Result<Response<AuditQueryResponse>, Status> {
        let (mut gw, req) = self.forward(req).await?;
        gw.query(req).await.map_err(|s| self.relay(s))
    }

    type ExportStream = ExportStream;

    async fn export(&self, req: Request<AuditExportRequest>) -> Result<Response<ExportStream>, Status> {
        let (mut gw, req) = self.forward(req).await?;
        let stream = gw.export(req).await.map_err(|s| self.relay(s))?.into_inner();
        let link = self.state.link.clone();
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, move |chunk| chunk.map_err(|s| link.relay(s))))))
    }

    async fn get_checkpoint(&self, req: Request<GetCheckpointRequest>) -> Result<Response<SignedCheckpoint>, Status> {
        let (mut gw, req) = self.forward(req).await?;
        gw.get_checkpoint(req).await.map_err(|s| self.relay(s))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        let (mut gw, req) = self.forward(req).await?;
        gw.get_inclusion_proof(req).await.map_err(|s| self.relay(s))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        let (mut gw, req) = self.forward(req).await?;
        gw.get_consistency_proof(req).await.map_err(|s| self.relay(s))
    }

    async fn subject_access_report(
        &self,
        req: Request<SubjectAccessRequest>,
    ) -> Result<Response<SubjectAccessResponse>, Status> {
        let (mut gw, req) = self.forward(req).await?;
        gw.subject_access_report(req).await.map_err(|s| self.relay(s))
    }
}
