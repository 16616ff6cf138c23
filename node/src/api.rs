//! The `Node` service: what the organization's own people call. Each call is authenticated with the
//! person's node token, against the people in the node's database; each method then calls the person
//! action of the same name ([`crate::actions`]), which checks what the person may do.

use std::sync::Arc;

use haven_proto::v1::node_server::Node;
use haven_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::access::Source;
use crate::actions::{self, Detail, Listing};
use crate::mailbox;
use crate::people::Person;
use crate::state::NodeState;

/// Serves `haven.v1.Node`.
pub struct NodeService {
    state: Arc<NodeState>,
}

impl NodeService {
    pub fn new(state: Arc<NodeState>) -> Self {
        NodeService { state }
    }

    /// The signed-in person, from `authorization: Bearer <user token>`.
    async fn user<T>(&self, req: &Request<T>) -> Result<Person, Status> {
        self.state.people.sign_in(req.metadata()).await
    }

    fn sealing(&self) -> actions::SealingHandles<'_> {
        let s = &self.state;
        actions::SealingHandles { store: &s.store, link: &s.link, clock: &s.clock, folder: &s.sealing_keys }
    }
}

fn key_info(k: &crate::sealing::SealingKey) -> SealingKeyInfo {
    SealingKeyInfo {
        kid: k.kid.clone(),
        state: k.state().to_owned(),
        not_before: k.not_before,
        not_after: k.not_after,
        created_at_micros: k.created_at_micros,
        created_by: k.created_by.clone(),
        published_seq: k.published_seq.unwrap_or(-1),
        withdrawn_seq: k.withdrawn_seq.unwrap_or(-1),
    }
}

fn key_response(k: &crate::sealing::SealingKey, pending: Option<Status>) -> SealingKeyResponse {
    SealingKeyResponse {
        key: Some(key_info(k)),
        pending_reason: pending.map(|s| s.message().to_owned()).unwrap_or_default(),
    }
}

type InboxStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<InboxItem, Status>> + Send>>;

#[tonic::async_trait]
impl Node for NodeService {
    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let who = self.user(&req).await?;
        Ok(Response::new(actions::who_am_i(&self.state.link, &who).await?))
    }

    async fn network_info(&self, req: Request<NetworkInfoRequest>) -> Result<Response<NetworkInfoResponse>, Status> {
        let who = self.user(&req).await?;
        let info = actions::network_info(&self.state.network, &self.state.link, &who).await?;
        Ok(Response::new((*info).clone()))
    }

    async fn preview(&self, req: Request<DecideRequest>) -> Result<Response<DecideResponse>, Status> {
        let who = self.user(&req).await?;
        let env = req.into_inner().envelope.ok_or_else(|| Status::invalid_argument("envelope is missing"))?;
        let s = &self.state;
        Ok(Response::new(actions::preview(&s.sending(), &s.network, &who, env).await?))
    }

    async fn send(&self, req: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let who = self.user(&req).await?;
        let env = req.into_inner().envelope.ok_or_else(|| Status::invalid_argument("envelope is missing"))?;
        let s = &self.state;
        Ok(Response::new(actions::send(&s.sending(), &who, env).await?))
    }

    async fn list_sent(&self, req: Request<ListSentRequest>) -> Result<Response<ListSentResponse>, Status> {
        let who = self.user(&req).await?;
        let r = req.into_inner();
        Ok(Response::new(ListSentResponse {
            messages: actions::list_sent(&self.state.store, &who, &r.kind, r.limit).await?,
        }))
    }

    async fn inbox(&self, req: Request<InboxRequest>) -> Result<Response<InboxResponse>, Status> {
        let who = self.user(&req).await?;
        let r = req.into_inner();
        let s = &self.state;
        let items = actions::inbox(
            &s.store,
            &s.clock,
            &who,
            &Source::Api,
            Listing { kind: &r.kind, ..Default::default() },
            r.limit,
            Detail::Fields,
        )
        .await?;
        Ok(Response::new(InboxResponse { items }))
    }

    type WatchInboxStream = InboxStream;

    async fn watch_inbox(&self, req: Request<InboxRequest>) -> Result<Response<InboxStream>, Status> {
        // Subscribed before the sign-in, so a change committed after the check is never missed.
        let mut people = self.state.people.subscribe();
        let who = self.user(&req).await?;
        actions::may_read_mail(&who)?;
        let signed_in = req.metadata().clone();
        let kind = req.into_inner().kind;
        let mut arrivals = self.state.arrivals.subscribe();
        let state = self.state.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    // A person removed, disabled or given another role loses the watch as soon as the
                    // node sees the change.
                    changed = people.changed() => match changed {
                        Ok(()) => match state.people.sign_in(&signed_in).await {
                            Ok(_) => continue,
                            Err(refused) => Err(refused),
                        },
                        Err(_) => return,
                    },
                    r = arrivals.recv() => match r {
                        Ok(item) => {
                            if !(kind.is_empty() || mailbox::kind_of(&item) == kind || item.item_kind == kind) {
                                continue;
                            }
                            // A watch prints what arrives, fields included: an access like any other.
                            let shown = actions::inbox_item_shown(&state.store, &state.clock, &who, &Source::Api, &item).await;
                            match shown {
                                Ok(()) => Ok(item),
                                Err(e) => Err(e),
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            Err(Status::data_loss("missed arrivals while this watch lagged; list the inbox again"))
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                };
                let last = next.is_err();
                if tx.send(next).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_message(&self, req: Request<GetMessageRequest>) -> Result<Response<MessageView>, Status> {
        let who = self.user(&req).await?;
        let id = req.into_inner().message_id;
        let s = &self.state;
        Ok(Response::new(actions::open_message(&s.store, &s.clock, &who, &Source::Api, &id).await?))
    }

    async fn update_status(&self, req: Request<UpdateStatusRequest>) -> Result<Response<UpdateStatusResponse>, Status> {
        let who = self.user(&req).await?;
        let s = &self.state;
        Ok(Response::new(actions::update_status(&s.store, &s.link, &s.clock, &who, req.into_inner()).await?))
    }

    async fn record_consent(&self, req: Request<RecordConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let who = self.user(&req).await?;
        let s = &self.state;
        Ok(Response::new(actions::record_consent(&s.store, &s.link, &s.clock, &who, req.into_inner()).await?))
    }

    async fn renew_consent(&self, req: Request<RenewConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let who = self.user(&req).await?;
        let s = &self.state;
        Ok(Response::new(actions::renew_consent(&s.store, &s.link, &s.clock, &who, req.into_inner()).await?))
    }

    async fn revoke_consent(&self, req: Request<RevokeConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let who = self.user(&req).await?;
        let s = &self.state;
        Ok(Response::new(actions::revoke_consent(&s.store, &s.link, &s.clock, &who, req.into_inner()).await?))
    }

    async fn get_consent(&self, req: Request<GetConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let who = self.user(&req).await?;
        Ok(Response::new(actions::get_consent(&self.state.link, &who, req.into_inner()).await?))
    }

    async fn list_consents(&self, req: Request<ListConsentsRequest>) -> Result<Response<ListConsentsResponse>, Status> {
        let who = self.user(&req).await?;
        Ok(Response::new(actions::list_consents(&self.state.link, &who, req.into_inner()).await?))
    }

    async fn witness_status(
        &self,
        req: Request<WitnessStatusRequest>,
    ) -> Result<Response<WitnessStatusResponse>, Status> {
        let who = self.user(&req).await?;
        Ok(Response::new(witness_status(actions::witness_status(&self.state.witness, &who))))
    }

    async fn sealing_keys(&self, req: Request<SealingKeysRequest>) -> Result<Response<SealingKeysResponse>, Status> {
        let who = self.user(&req).await?;
        let keys = actions::sealing_keys(&self.state.store, &who).await?;
        Ok(Response::new(SealingKeysResponse { keys: keys.iter().map(key_info).collect() }))
    }

    async fn make_sealing_key(
        &self,
        req: Request<MakeSealingKeyRequest>,
    ) -> Result<Response<SealingKeyResponse>, Status> {
        let who = self.user(&req).await?;
        let only_if_none = req.into_inner().only_if_none;
        let (key, pending) = actions::make_sealing_key(self.sealing(), &who, only_if_none).await?;
        Ok(Response::new(key_response(&key, pending)))
    }

    async fn withdraw_sealing_key(
        &self,
        req: Request<WithdrawSealingKeyRequest>,
    ) -> Result<Response<SealingKeyResponse>, Status> {
        let who = self.user(&req).await?;
        let kid = req.into_inner().kid;
        let (key, pending) = actions::withdraw_sealing_key(self.sealing(), &who, &kid).await?;
        Ok(Response::new(key_response(&key, pending)))
    }

    async fn key_log(&self, req: Request<KeyLogRequest>) -> Result<Response<KeyLogResponse>, Status> {
        self.user(&req).await?;
        let r = req.into_inner();
        let log = crate::keylog::held_log(&self.state.store, r.from_seq, r.limit)
            .await
            .map_err(|e| Status::unavailable(format!("node database: {e}")))?;
        Ok(Response::new(log))
    }

    async fn acknowledge_witness_alarm(
        &self,
        req: Request<AcknowledgeWitnessAlarmRequest>,
    ) -> Result<Response<AcknowledgeWitnessAlarmResponse>, Status> {
        let who = self.user(&req).await?;
        let note = req.into_inner().note;
        let (acknowledged, report) = actions::acknowledge_witness_alarm(&self.state.witness, &who, &note).await?;
        Ok(Response::new(AcknowledgeWitnessAlarmResponse {
            acknowledged: u32::try_from(acknowledged).unwrap_or(u32::MAX),
            status: Some(witness_status(report)),
        }))
    }
}

/// The witness's report on the wire.
fn witness_status(report: crate::witness::WitnessReport) -> WitnessStatusResponse {
    WitnessStatusResponse {
        latest: report.latest,
        state: report.state.as_str().to_owned(),
        detail: report.detail,
        checked_at_micros: report.checked_at_micros,
    }
}
