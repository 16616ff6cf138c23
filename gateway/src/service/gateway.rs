//! The `Gateway` service: identity, decisions, submissions, the delivery stream, status updates,
//! consent, pins and policy reload.

use futures::Stream;
use haven_proto::v1::gateway_server::Gateway as GatewayRpc;
use haven_proto::v1::*;
use haven_trust::ids::{Caller, Role};
use std::pin::Pin;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::{caller, settle};
use crate::identity::PeerInfo;
use crate::state::Gateway;
use crate::{consent, envelope, routing};

/// Serves `haven.v1.Gateway`.
pub struct GatewayService {
    gateway: Gateway,
}

impl GatewayService {
    pub fn new(gateway: Gateway) -> Self {
        GatewayService { gateway }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<GatewayFrame, Status>> + Send>>;

#[tonic::async_trait]
impl GatewayRpc for GatewayService {
    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = caller(&req)?;
        Ok(Response::new(WhoAmIResponse {
            caller: Some(haven_proto::v1::Caller::from(&caller)),
            bundle_version: self.gateway.bundle().version_id().to_owned(),
        }))
    }

    async fn decide(&self, req: Request<DecideRequest>) -> Result<Response<DecideResponse>, Status> {
        let caller = caller(&req)?;
        let g = &self.gateway;
        let env = envelope::parse(req.into_inner().envelope, &g.bundle(), &caller.org, false)?;
        Ok(Response::new(routing::dry_run(g.store(), g.commits(), g.clock().now(), g.bundle(), &caller, &env).await?))
    }

    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let caller = caller(&req)?;
        let g = &self.gateway;
        // One bundle for the whole submission: the copies are checked against it and it decides.
        let bundle = g.bundle();
        let r = req.into_inner();
        let env = envelope::parse(r.envelope, &bundle, &caller.org, true)?;
        let now = g.clock().now_micros().div_euclid(1_000_000);
        let copies =
            routing::sealed::check(g.store(), &bundle, &caller, &env, &r.bundle_version, r.copies, now).await?;
        let (resp, woken) =
            routing::submit::submit(g.commits(), g.clock(), bundle, *g.pseudonym_key(), &caller, env, copies).await?;
        g.wake(&woken);
        Ok(Response::new(resp))
    }

    type DeliveriesStream = FrameStream;

    async fn deliveries(&self, req: Request<Streaming<NodeFrame>>) -> Result<Response<FrameStream>, Status> {
        let caller = caller(&req)?;
        if caller.role != Role::Node {
            return Err(Status::permission_denied(format!(
                "the delivery stream needs a token with role `node`, not `{}`",
                caller.role
            )));
        }
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no verified client certificate on this connection"))?;
        // The stream opens only with its organization's lease; while another stream holds it, the
        // call is refused here, before any frame is exchanged.
        let opened = crate::stream::open(&self.gateway, &caller, &peer).await?;
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(crate::stream::run(self.gateway.clone(), caller, peer, opened, inbound, tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn update_status(&self, req: Request<UpdateStatusRequest>) -> Result<Response<UpdateStatusResponse>, Status> {
        let caller = caller(&req)?;
        let g = &self.gateway;
        let bundle = g.bundle();
        let (resp, woken) =
            routing::lifecycle::update_status(g.store(), bundle.schema(), &g.stamp(), &caller, req.into_inner())
                .await?;
        g.wake(&woken);
        Ok(Response::new(resp))
    }

    async fn register_consent(&self, req: Request<RegisterConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let caller = caller(&req)?;
        let jws = req.into_inner().receipt_jws;
        Ok(Response::new(
            consent::register(
                self.gateway.store(),
                &self.gateway.bundle(),
                &self.gateway.stamp(),
                &caller,
                &jws,
                false,
            )
            .await?
            .to_proto(),
        ))
    }

    async fn renew_consent(&self, req: Request<RegisterConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let caller = caller(&req)?;
        let jws = req.into_inner().receipt_jws;
        Ok(Response::new(
            consent::register(self.gateway.store(), &self.gateway.bundle(), &self.gateway.stamp(), &caller, &jws, true)
                .await?
                .to_proto(),
        ))
    }

    async fn revoke_consent(&self, req: Request<RevokeConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let g = &self.gateway;
        let (stored, woken) = consent::revoke(g.store(), &g.stamp(), &caller, &r.consent_id, &r.reason).await?;
        g.wake(&woken);
        Ok(Response::new(stored.to_proto()))
    }

    async fn get_consent(&self, req: Request<GetConsentRequest>) -> Result<Response<ConsentRecord>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let store = self.gateway.store();
        let record = settle(store, consent::get(store, &caller, &r.consent_id).await?).await?;
        Ok(Response::new(record.to_proto()))
    }

    async fn list_consents(&self, req: Request<ListConsentsRequest>) -> Result<Response<ListConsentsResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let page = if r.page_size == 0 { 100 } else { r.page_size };
        let store = self.gateway.store();
        let list = consent::list(store, &caller, &r.subject_pseudonym, &r.state, page, &r.page_token).await?;
        let list = settle(store, list).await?;
        let next_page_token = if list.len() as u32 >= page.clamp(1, 500) {
            list.last().map(|c| c.receipt.consent_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListConsentsResponse {
            consents: list.iter().map(|c| c.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn report_views(&self, req: Request<ReportViewsRequest>) -> Result<Response<ReportViewsResponse>, Status> {
        let caller = caller(&req)?;
        let g = &self.gateway;
        let jws = req.into_inner().batch_jws;
        Ok(Response::new(crate::views::report(g.store(), g.commits(), &g.bundle(), &g.stamp(), &caller, &jws).await?))
    }

    async fn register_sealing_key(
        &self,
        req: Request<RegisterSealingKeyRequest>,
    ) -> Result<Response<RegisterSealingKeyResponse>, Status> {
        let caller = caller(&req)?;
        let g = &self.gateway;
        let statement = req.into_inner().statement;
        let now = g.clock().now_micros();
        Ok(Response::new(
            crate::keys::register(g.store(), g.key_log_signer(), &g.bundle(), &caller, &statement, now).await?,
        ))
    }

    async fn key_log(&self, req: Request<KeyLogRequest>) -> Result<Response<KeyLogResponse>, Status> {
        caller(&req)?;
        let r = req.into_inner();
        let read = crate::keys::read(self.gateway.store(), r.from_seq, r.limit).await?;
        Ok(Response::new(super::settle(self.gateway.store(), read).await?))
    }

    async fn policy_bundle(&self, req: Request<PolicyBundleRequest>) -> Result<Response<PolicyBundleResponse>, Status> {
        caller(&req)?;
        let g = &self.gateway;
        let wanted = req.into_inner().version;
        let version = if wanted.is_empty() { g.bundle().version_id().to_owned() } else { wanted };
        let kept = crate::store::bundles::files(g.store().pool(), &version).await.map_err(crate::error::Error::from)?;
        let Some((json, seq)) = kept else {
            return Err(crate::error::Error::NotFound(format!(
                "this gateway never put bundle {} in force",
                haven_trust::untrusted::shown(&version)
            ))
            .into());
        };
        let files: std::collections::HashMap<String, String> = serde_json::from_str(&json).map_err(|e| {
            crate::error::Error::Internal(format!("the kept files of bundle {version} do not read back: {e}"))
        })?;
        // The entry that put it in force, a checkpoint that covers it, and the proof between them.
        let log = g.audit_log();
        let checkpoint = settle(g.store(), log.covering_checkpoint().await.map_err(crate::error::Error::from)?).await?;
        let read = log.inclusion_proof(seq, checkpoint.tree_size).await.map_err(crate::error::Error::from)?;
        let (proof, leaf) = settle(g.store(), read).await?;
        let entry = crate::store::audit_log::read_range(g.store().pool(), seq, seq + 1)
            .await
            .map_err(crate::error::Error::from)?
            .into_iter()
            .next()
            .ok_or_else(|| crate::error::Error::Internal(format!("audit entry {seq} is missing")))?;
        let canonical = entry.canonical();
        Ok(Response::new(PolicyBundleResponse {
            bundle_version: version,
            files,
            in_force: Some(haven_proto::convert::WireEntry { entry: &entry, canonical }.into()),
            in_force_proof: Some(InclusionProof {
                seq,
                tree_size: checkpoint.tree_size,
                hashes: proof.iter().map(|h| h.to_vec()).collect(),
                leaf_hash: leaf.to_vec(),
            }),
            checkpoint: Some(SignedCheckpoint::from(&checkpoint)),
        }))
    }

    async fn report_integrity_failure(
        &self,
        req: Request<ReportIntegrityFailureRequest>,
    ) -> Result<Response<ReportIntegrityFailureResponse>, Status> {
        let caller = caller(&req)?;
        let g = &self.gateway;
        let r = req.into_inner();
        let sender = r.sender.clone();
        let resp = crate::integrity::report(g.store(), g.commits(), &g.stamp(), &caller, r).await?;
        if resp.recorded {
            g.wake(&[sender]);
        }
        Ok(Response::new(resp))
    }

    async fn network_info(&self, req: Request<NetworkInfoRequest>) -> Result<Response<NetworkInfoResponse>, Status> {
        caller(&req)?;
        Ok(Response::new(network_info(&self.gateway.bundle())))
    }

    async fn get_pins(&self, req: Request<GetPinsRequest>) -> Result<Response<GetPinsResponse>, Status> {
        caller(&req)?;
        let wanted = req.get_ref().org_id.as_str();
        let trust = self.gateway.0.auth.trust();
        let orgs = trust
            .registry()
            .iter()
            .filter(|o| wanted.is_empty() || o.id.as_str() == wanted)
            .map(|o| OrgPins {
                org_id: o.id.to_string(),
                name: o.name.clone(),
                org_type: o.org_type.to_string(),
                tls_pins: o.tls_pins.iter().map(|f| f.to_hex()).collect(),
                signing_pins: o.signing_pins.iter().map(|f| f.to_hex()).collect(),
            })
            .collect::<Vec<_>>();
        if orgs.is_empty() && !wanted.is_empty() {
            return Err(Status::not_found(format!(
                "organization `{}` is not in the registry",
                haven_trust::untrusted::shown(wanted)
            )));
        }
        Ok(Response::new(GetPinsResponse { orgs, bundle_version: trust.bundle.version_id().to_owned() }))
    }

    async fn reload_policy(&self, req: Request<ReloadPolicyRequest>) -> Result<Response<ReloadPolicyResponse>, Status> {
        let caller: Caller = caller(&req)?;
        if caller.role != Role::Admin || caller.org_type.as_str() != "operator" {
            return Err(Status::permission_denied(
                "policy reload needs role `admin` in the organization of type `operator`",
            ));
        }
        let (old_version, new_version) = self
            .gateway
            .reload(Some(&caller))
            .await
            .map_err(|e| Status::failed_precondition(haven_trust::untrusted::bounded(e.summary())))?;
        Ok(Response::new(ReloadPolicyResponse { old_version, new_version }))
    }
}

/// What a bundle tells people who build messages: no rules, no pins.
fn network_info(bundle: &haven_sharing::policy::Bundle) -> NetworkInfoResponse {
    let purposes = bundle
        .purpose_defs()
        .iter()
        .map(|p| PurposeInfo {
            id: p.name.clone(),
            description: words(Some(&p.description)),
            label: words(p.label.as_ref()),
        })
        .collect();
    let kinds = bundle
        .schema()
        .kinds()
        .map(|k| KindInfo {
            name: k.name.clone(),
            description: words(Some(&k.description)),
            label: words(k.label.as_ref()),
            codes: k
                .codes
                .iter()
                .flat_map(|(status, codes)| {
                    codes.iter().map(|(code, w)| CodeInfo {
                        status: status.as_str().to_owned(),
                        code: code.clone(),
                        label: words(Some(w)),
                    })
                })
                .collect(),
            fields: k
                .fields()
                .iter()
                .map(|f| FieldInfo {
                    name: f.name.clone(),
                    r#type: f.field_type.as_str().to_owned(),
                    required: f.required,
                    values: f.values.clone(),
                    labels: f.labels.clone(),
                    label: words(f.label.as_ref()),
                    description: words(f.description.as_ref()),
                    value_labels: f
                        .value_labels
                        .iter()
                        .filter_map(|(v, w)| Some((v.clone(), words(Some(w))?)))
                        .collect(),
                    min: f.min,
                    max: f.max,
                    max_len: f.max_len.unwrap_or(0),
                })
                .collect(),
        })
        .collect();
    let organizations = bundle
        .registry()
        .iter()
        .map(|o| OrgInfo { id: o.id.to_string(), name: o.name.clone(), r#type: o.org_type.as_str().to_owned() })
        .collect();
    NetworkInfoResponse {
        bundle_version: bundle.version().to_string(),
        purposes,
        kinds,
        organizations,
        languages: bundle.network().languages.clone(),
    }
}

/// A text in each of its languages, for the wire.
fn words(w: Option<&haven_sharing::policy::Words>) -> Option<Words> {
    w.map(|w| Words { by_language: w.iter().map(|(l, t)| (l.to_owned(), t.to_owned())).collect() })
}
