//! The `Node` service: what the organization's own people call. Each call is authenticated with the
//! person's token from the users file; the node then acts on the gateway as that person.

use std::sync::Arc;

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::node_server::Node;
use haven_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::app::NodeState;
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
        self.user(&req)?;
        Err(not_yet("Node.RecordConsent"))
    }

    async fn renew_consent(&self, req: Request<RenewConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.RenewConsent"))
    }

    async fn revoke_consent(&self, req: Request<RevokeConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.RevokeConsent"))
    }

    async fn get_consent(&self, req: Request<GetConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.GetConsent"))
    }

    async fn list_consents(&self, req: Request<ListConsentsRequest>) -> Result<Response<ListConsentsResponse>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.ListConsents"))
    }

    async fn witness_status(
        &self,
        req: Request<WitnessStatusRequest>,
    ) -> Result<Response<WitnessStatusResponse>, Status> {
        self.user(&req)?;
        Err(not_yet("Node.WitnessStatus"))
    }
}
