//! The `Audit` service: queries, exports, checkpoints, proofs and subject access reports.

use haven_proto::v1::audit_server::Audit;
use haven_proto::v1::*;
use tonic::{Request, Response, Status};

use super::{caller, not_yet};
use crate::app::Gateway;

/// Serves `haven.v1.Audit`.
pub struct AuditService {
    #[allow(dead_code)]
    gateway: Gateway,
}

impl AuditService {
    pub fn new(gateway: Gateway) -> Self {
        AuditService { gateway }
    }
}

type ExportStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query(&self, req: Request<AuditQueryRequest>) -> Result<Response<AuditQueryResponse>, Status> {
        caller(&req)?;
        Err(not_yet("Audit.Query"))
    }
    type ExportStream = ExportStream;
    async fn export(&self, req: Request<AuditExportRequest>) -> Result<Response<ExportStream>, Status> {
        caller(&req)?;
        Err(not_yet("Audit.Export"))
    }
    async fn get_checkpoint(&self, req: Request<GetCheckpointRequest>) -> Result<Response<SignedCheckpoint>, Status> {
        caller(&req)?;
        Err(not_yet("Audit.GetCheckpoint"))
    }
    async fn get_inclusion_proof(
        &self,
        req: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        caller(&req)?;
        Err(not_yet("Audit.GetInclusionProof"))
    }
    async fn get_consistency_proof(
        &self,
        req: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        caller(&req)?;
        Err(not_yet("Audit.GetConsistencyProof"))
    }
    async fn subject_access_report(
        &self,
        req: Request<SubjectAccessRequest>,
    ) -> Result<Response<SubjectAccessResponse>, Status> {
        caller(&req)?;
        Err(not_yet("Audit.SubjectAccessReport"))
    }
}
