//! The `Node` service: what the organization's own people call. Each call is authenticated with the
//! person's token from the users file; the node then acts on the gateway as that person.

use std::sync::Arc;

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::node_server::Node;
use haven_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::app::NodeState;
use crate::consent;
use crate::users::User;

/// Serves `haven.v1.Node`.
pub struct NodeService {
    state: Arc<NodeState>,
}

impl NodeService {
    pub fn new(state: Arc<NodeState>) -> Self {
        NodeService { state }
    }

    /// The signed-in person, from `authorization: Bearer <user token>`.
    fn user<T>(&self, req: &Request<T>) -> Result<User, Status> {
        let raw = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("sign in: send `authorization: Bearer <your node token>`"))?;
        let token = raw
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization header must be `Bearer <your node token>`"))?;
        self.state.users.authenticate(token).cloned().ok_or_else(|| {
            Status::unauthenticated("unknown node token; ask your administrator for one (`haven-node users add`)")
        })
    }
}

fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!("{method} is part of the v1 contract but not implemented by this node version"))
}

type InboxStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<InboxItem, Status>> + Send>>;

#[tonic::async_trait]
impl Node for NodeService {
    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let user = self.user(&req)?;
        let mut gw = GatewayClient::new(self.state.link.channel());
        gw.who_am_i(self.state.link.request(&user.name, user.role, WhoAmIRequest {})?).await
    }

    async fn send(&self, req: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.Send"))
    }

    async fn list_sent(&self, req: Request<ListSentRequest>) -> Result<Response<ListSentResponse>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.ListSent"))
    }

    async fn inbox(&self, req: Request<InboxRequest>) -> Result<Response<InboxResponse>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.Inbox"))
    }

    type WatchInboxStream = InboxStream;

    async fn watch_inbox(&self, req: Request<InboxRequest>) -> Result<Response<InboxStream>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.WatchInbox"))
    }

    async fn get_message(&self, req: Request<GetMessageRequest>) -> Result<Response<MessageView>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.GetMessage"))
    }

    async fn update_status(&self, req: Request<UpdateStatusRequest>) -> Result<Response<UpdateStatusResponse>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.UpdateStatus"))
    }

    async fn record_consent(&self, req: Request<RecordConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let user = self.user(&req)?;
        consent::may_manage(&user)?;
        let receipt = consent::receipt(&self.state, &user, req.into_inner(), None)?;
        Ok(Response::new(consent::register(&self.state, &user, receipt, false).await?))
    }

    async fn renew_consent(&self, req: Request<RenewConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let user = self.user(&req)?;
        consent::may_manage(&user)?;
        let r = req.into_inner();
        if r.supersedes.is_empty() {
            return Err(Status::invalid_argument("name the consent this renewal supersedes"));
        }
        let mut draft = r.consent.unwrap_or_default();
        if draft.subject_pseudonym.is_empty() {
            let mut gw = GatewayClient::new(self.state.link.channel());
            let old = gw
                .get_consent(self.state.link.request(
                    &user.name,
                    user.role,
                    GetConsentRequest { consent_id: r.supersedes.clone() },
                )?)
                .await?
                .into_inner();
            let v: serde_json::Value = serde_json::from_str(&old.receipt_json).unwrap_or_default();
            draft.subject_pseudonym = v.get("subject").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
        }
        let receipt = consent::receipt(&self.state, &user, draft, Some(r.supersedes))?;
        Ok(Response::new(consent::register(&self.state, &user, receipt, true).await?))
    }

    async fn revoke_consent(&self, req: Request<RevokeConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let user = self.user(&req)?;
        consent::may_manage(&user)?;
        let mut gw = GatewayClient::new(self.state.link.channel());
        let record =
            gw.revoke_consent(self.state.link.request(&user.name, user.role, req.into_inner())?).await?.into_inner();
        let v: serde_json::Value = serde_json::from_str(&record.receipt_json).unwrap_or_default();
        let subject = v.get("subject").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
        consent::remember(&self.state, &record, &subject, &user).await?;
        Ok(Response::new(record))
    }

    async fn get_consent(&self, req: Request<GetConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let user = self.user(&req)?;
        let mut gw = GatewayClient::new(self.state.link.channel());
        gw.get_consent(self.state.link.request(&user.name, user.role, req.into_inner())?).await
    }

    async fn list_consents(&self, req: Request<ListConsentsRequest>) -> Result<Response<ListConsentsResponse>, Status> {
        let user = self.user(&req)?;
        let mut gw = GatewayClient::new(self.state.link.channel());
        gw.list_consents(self.state.link.request(&user.name, user.role, req.into_inner())?).await
    }

    async fn witness_status(
        &self,
        req: Request<WitnessStatusRequest>,
    ) -> Result<Response<WitnessStatusResponse>, Status> {
        self.user(&req)?;
        let report = self.state.witness.report();
        Ok(Response::new(WitnessStatusResponse {
            latest: report.latest,
            state: report.state.as_str().to_owned(),
            detail: report.detail,
            checked_at_micros: report.checked_at_micros,
        }))
    }
}
