//! The `Node` service: what the organization's own people call. Each call is authenticated with the
//! person's node token, against the people in the node's database; the node then acts on the gateway
//! as that person.

use std::sync::Arc;

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::node_server::Node;
use haven_proto::v1::*;
use haven_trust::ids::Role;
use tonic::{Request, Response, Status};

use crate::consent;
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

    /// A failed gateway call, as the person who asked should see it ([`crate::link::GatewayLink::relay`]).
    fn relay(&self, s: Status) -> Status {
        self.state.link.relay(s)
    }
}

type InboxStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<InboxItem, Status>> + Send>>;

#[tonic::async_trait]
impl Node for NodeService {
    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let user = self.user(&req).await?;
        let mut gw = GatewayClient::new(self.state.link.channel());
        gw.who_am_i(self.state.link.request(&user.name, user.role, WhoAmIRequest {})?).await.map_err(|s| self.relay(s))
    }

    async fn send(&self, req: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let user = self.user(&req).await?;
        let mut env = req.into_inner().envelope.ok_or_else(|| Status::invalid_argument("envelope is missing"))?;
        if env.message_id.is_empty() {
            env.message_id = uuid::Uuid::now_v7().to_string();
        }
        let now = self.state.clock.now_micros();
        mailbox::record_sent(&self.state.store, &env, user.name.as_str(), user.role.as_str(), now).await.map_err(db)?;
        Ok(Response::new(submit(&self.state, env, &user.name, user.role).await?))
    }

    async fn list_sent(&self, req: Request<ListSentRequest>) -> Result<Response<ListSentResponse>, Status> {
        self.user(&req).await?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 50 } else { r.limit };
        let messages = mailbox::sent_list(&self.state.store, &r.kind, limit).await.map_err(db)?;
        Ok(Response::new(ListSentResponse { messages }))
    }

    async fn inbox(&self, req: Request<InboxRequest>) -> Result<Response<InboxResponse>, Status> {
        self.user(&req).await?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 50 } else { r.limit };
        Ok(Response::new(InboxResponse { items: mailbox::inbox(&self.state.store, &r.kind, limit).await.map_err(db)? }))
    }

    type WatchInboxStream = InboxStream;

    async fn watch_inbox(&self, req: Request<InboxRequest>) -> Result<Response<InboxStream>, Status> {
        // Subscribed before the sign-in, so a change committed after the check is never missed.
        let mut people = self.state.people.subscribe();
        self.user(&req).await?;
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
                            let k = match &item.item {
                                Some(Item { body: Some(item::Body::Delivery(d)), .. }) => d.kind.clone(),
                                _ => item.item_kind.clone(),
                            };
                            if !(kind.is_empty() || k == kind || item.item_kind == kind) {
                                continue;
                            }
                            Ok(item)
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
        self.user(&req).await?;
        let id = req.into_inner().message_id;
        if let Some(sent) = mailbox::sent(&self.state.store, &id).await.map_err(db)? {
            return Ok(Response::new(MessageView { direction: "sent".into(), sent: Some(sent), received: None }));
        }
        if let Some(received) = mailbox::received(&self.state.store, &id).await.map_err(db)? {
            return Ok(Response::new(MessageView {
                direction: "received".into(),
                sent: None,
                received: Some(received),
            }));
        }
        Err(Status::not_found(format!("no message `{}` on this node", haven_trust::untrusted::shown(&id))))
    }

    async fn update_status(&self, req: Request<UpdateStatusRequest>) -> Result<Response<UpdateStatusResponse>, Status> {
        let user = self.user(&req).await?;
        let mut r = req.into_inner();
        if r.update_id.is_empty() {
            r.update_id = uuid::Uuid::new_v4().to_string();
        }
        let as_sender = r.status == MessageStatus::Withdrawn as i32;
        let counterparty = if as_sender { r.recipient.clone() } else { r.sender.clone() };
        let (message_id, code) = (r.message_id.clone(), r.code.clone());
        let mut gw = GatewayClient::new(self.state.link.channel());
        let resp = gw
            .update_status(self.state.link.request(&user.name, user.role, r)?)
            .await
            .map_err(|s| self.relay(s))?
            .into_inner();
        let status =
            MessageStatus::try_from(resp.status).map(|s| s.as_str_name().to_ascii_lowercase()).unwrap_or_default();
        let change = mailbox::LocalChange {
            message_id: &message_id,
            counterparty: &counterparty,
            status: &status,
            code: &code,
            person: user.name.as_str(),
            now: self.state.clock.now_micros(),
            as_sender,
        };
        mailbox::local_status(&self.state.store, change).await.map_err(db)?;
        Ok(Response::new(resp))
    }

    async fn record_consent(&self, req: Request<RecordConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let user = self.user(&req).await?;
        consent::may_manage(&user)?;
        let receipt = consent::receipt(&self.state, &user, req.into_inner(), None)?;
        Ok(Response::new(consent::register(&self.state, &user, receipt, false).await?))
    }

    async fn renew_consent(&self, req: Request<RenewConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let user = self.user(&req).await?;
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
                .await
                .map_err(|s| self.relay(s))?
                .into_inner();
            let v: serde_json::Value = serde_json::from_str(&old.receipt_json).unwrap_or_default();
            draft.subject_pseudonym = v.get("subject").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
        }
        let receipt = consent::receipt(&self.state, &user, draft, Some(r.supersedes))?;
        Ok(Response::new(consent::register(&self.state, &user, receipt, true).await?))
    }

    async fn revoke_consent(&self, req: Request<RevokeConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let user = self.user(&req).await?;
        consent::may_manage(&user)?;
        let mut gw = GatewayClient::new(self.state.link.channel());
        let record = gw
            .revoke_consent(self.state.link.request(&user.name, user.role, req.into_inner())?)
            .await
            .map_err(|s| self.relay(s))?
            .into_inner();
        let v: serde_json::Value = serde_json::from_str(&record.receipt_json).unwrap_or_default();
        let subject = v.get("subject").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
        consent::remember(&self.state, &record, &subject, &user).await?;
        Ok(Response::new(record))
    }

    async fn get_consent(&self, req: Request<GetConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let user = self.user(&req).await?;
        let mut gw = GatewayClient::new(self.state.link.channel());
        gw.get_consent(self.state.link.request(&user.name, user.role, req.into_inner())?)
            .await
            .map_err(|s| self.relay(s))
    }

    async fn list_consents(&self, req: Request<ListConsentsRequest>) -> Result<Response<ListConsentsResponse>, Status> {
        let user = self.user(&req).await?;
        let mut gw = GatewayClient::new(self.state.link.channel());
        gw.list_consents(self.state.link.request(&user.name, user.role, req.into_inner())?)
            .await
            .map_err(|s| self.relay(s))
    }

    async fn witness_status(
        &self,
        req: Request<WitnessStatusRequest>,
    ) -> Result<Response<WitnessStatusResponse>, Status> {
        self.user(&req).await?;
        Ok(Response::new(witness_status(self.state.witness.report())))
    }

    async fn acknowledge_witness_alarm(
        &self,
        req: Request<AcknowledgeWitnessAlarmRequest>,
    ) -> Result<Response<AcknowledgeWitnessAlarmResponse>, Status> {
        let user = self.user(&req).await?;
        if user.role != Role::Auditor {
            return Err(Status::permission_denied(format!(
                "acknowledging a witness alarm needs role auditor, not {}",
                user.role
            )));
        }
        let note = req.into_inner().note;
        if note.trim().is_empty() {
            return Err(Status::invalid_argument(
                "say what you found in the note (--note): it is kept with the alarm it acknowledges",
            ));
        }
        let (acknowledged, report) =
            self.state.witness.acknowledge(user.name.as_str(), note.trim()).await.map_err(db)?;
        if acknowledged == 0 {
            return Err(Status::failed_precondition(format!(
                "the witness has no standing alarm to acknowledge (it reports `{}`)",
                report.state.as_str()
            )));
        }
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

fn db(e: sqlx::Error) -> Status {
    crate::store::status(e)
}

/// Whether a failed submission should stay pending and be retried (the gateway could not be reached,
/// did not answer, or its database disk is full), as opposed to a refusal of the message itself.
fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    )
}

/// Submits a recorded send and records the outcome. A gateway that cannot be reached, or answers that
/// it cannot take the message now (UNAVAILABLE, or RESOURCE_EXHAUSTED when its database disk is full),
/// leaves it pending, with the reason.
pub async fn submit(
    state: &NodeState,
    env: Envelope,
    person: &haven_trust::ids::PersonId,
    role: haven_trust::ids::Role,
) -> Result<SendResponse, Status> {
    let message_id = env.message_id.clone();
    let mut gw = GatewayClient::new(state.link.channel());
    match gw.submit(state.link.request(person, role, SubmitRequest { envelope: Some(env) })?).await {
        Ok(resp) => {
            let resp = resp.into_inner();
            mailbox::record_outcome(&state.store, &resp, state.clock.now_micros()).await.map_err(db)?;
            Ok(SendResponse {
                message_id,
                state: "submitted".into(),
                outcomes: resp.outcomes,
                bundle_version: resp.bundle_version,
                pending_reason: String::new(),
            })
        }
        Err(s) if retryable(&s) => {
            // Whether the gateway was reached decides what the person (and the operator) should look
            // at: the network and certificates, or the gateway's own trouble.
            let reason = state.link.describe(&s);
            tracing::warn!(%message_id, %reason, "the gateway did not accept the message; it stays pending and will be retried");
            mailbox::record_pending(&state.store, &message_id, &reason).await.map_err(db)?;
            Ok(SendResponse {
                message_id,
                state: "pending".into(),
                outcomes: Vec::new(),
                bundle_version: String::new(),
                pending_reason: reason,
            })
        }
        Err(s) => {
            mailbox::record_failure(&state.store, &message_id, s.message()).await.map_err(db)?;
            Err(state.link.relay(s))
        }
    }
}

/// Retries pending sends with their original message ids until the gateway answers.
pub async fn retry_pending(state: Arc<NodeState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Ok(pending) = mailbox::pending_sends(&state.store).await else { continue };
        for (env, person, role) in pending {
            let (Ok(person), Ok(role)) =
                (haven_trust::ids::PersonId::parse(&person), haven_trust::ids::Role::parse(&role))
            else {
                continue;
            };
            if submit(&state, env, &person, role).await.map(|r| r.state == "pending").unwrap_or(false) {
                break;
            }
        }
    }
}
