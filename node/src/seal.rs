//! Sealing a send: the sender's node decides each recipient itself, on the bundle in force, and seals
//! for each the fields that its own decision releases, to the recipient's sealing key as this node's
//! key-log witness verified it. The gateway receives the field names and the sealed copies, never a
//! value; it decides again and refuses a copy that lists more than its own decision releases, so what
//! goes is what both decisions release.
//!
//! No copy is sealed to an organization of type `operator` or `auditor`, whatever a rule says: those
//! run the network and check it, and never receive case data.

use std::collections::BTreeMap;
use std::sync::Arc;

use haven_proto::v1 as pb;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_sharing::envelope::{Envelope, RawEnvelope, Recipients};
use haven_sharing::policy::{self, Bundle, DecisionRequest};
use haven_trust::ids::{OrgId, Role};
use haven_trust::receipt::{ConsentReceipt, ConsentState, ConsentView};
use haven_trust::registry::Fingerprint;
use haven_trust::sealed::{self, ManifestBody};
use haven_trust::sealing::SealingKeyStatement;
use prost::Message;
use sqlx::Row;
use tonic::Status;

use crate::keylog::{self, KeyLogWitness};
use crate::link::GatewayLink;
use crate::store::NodeStore;

/// Organization types that never receive a sealed copy.
pub const NEVER_SEALED_TO: [&str; 2] = ["operator", "auditor"];

/// What sending needs of the node: its database, its link, its clock, its key-log witness and its
/// policy bundles. Cheap to clone.
#[derive(Clone)]
pub struct Sending {
    pub store: NodeStore,
    pub link: GatewayLink,
    pub clock: haven_trust::clock::SharedClock,
    pub key_log: KeyLogWitness,
    pub bundles: crate::bundles::Bundles,
    /// DER of the network CA certificate.
    pub ca: Vec<u8>,
}

impl Sending {
    /// The sealer of this node.
    pub fn sealer(&self) -> Sealer<'_> {
        Sealer { store: &self.store, link: &self.link, key_log: &self.key_log, ca: &self.ca }
    }
}

/// What sealing needs of the node.
pub struct Sealer<'a> {
    pub store: &'a NodeStore,
    pub link: &'a GatewayLink,
    pub key_log: &'a KeyLogWitness,
    /// DER of the network CA certificate.
    pub ca: &'a [u8],
}

/// Why a recipient got no copy; kept for the person's view of the send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsealed {
    pub recipient: String,
    pub why: String,
}

impl Sealer<'_> {
    /// Decides `env` (with its values) for a person in `role`, under `bundle`, and seals a copy for each
    /// recipient both this decision and a key allow. Returns the request for the gateway and the
    /// recipients left without a copy, with why.
    pub async fn seal(
        &self,
        env: &pb::Envelope,
        who: &crate::people::Person,
        bundle: Arc<Bundle>,
    ) -> Result<(pb::SubmitRequest, Vec<Unsealed>), Status> {
        let role = who.role;
        let signer = self.link.signer();
        let clock = self.link.clock();
        let parsed = parse(env, signer.org(), &bundle)?;
        let consent = match &parsed.consent_id {
            Some(id) => self.consent(id.as_str(), clock.now_micros()).await?,
            None => None,
        };
        // A round first, so a rotation or a withdrawal registered since the last one is seen now; a
        // gateway that cannot be asked leaves the log this node verified last.
        self.key_log.check_now().await;
        let mut keys = BTreeMap::new();
        for recipient in recipients(&parsed, signer.org(), role, &bundle) {
            let key =
                keylog::recipient_key(self.store, &recipient, clock.now_secs()).await.map_err(crate::store::status)?;
            if let Some(key) = key {
                keys.insert(recipient, key);
            }
        }
        let checkpoint = keylog::newest_checkpoint(self.store).await.map_err(crate::store::status)?;
        let facts = Facts {
            person: &who.name,
            role,
            bundle: &bundle,
            consent: consent.as_ref(),
            keys: &keys,
            key_log: checkpoint,
            now: clock.now(),
        };
        seal_with(signer, env, &facts)
    }

    /// The consent as this node holds it, or as the gateway holds it when this node does not (its
    /// receipt must carry this organization's own signature). A state this node recorded wins over
    /// the gateway's, so the gateway cannot revive a consent this node ended.
    async fn consent(&self, id: &str, now_micros: i64) -> Result<Option<(ConsentReceipt, ConsentState)>, Status> {
        let row = sqlx::query("SELECT receipt_jws, state FROM consents WHERE consent_id = $1")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(crate::store::status)?;
        let (jws, state) = match row {
            Some(r) => (
                r.try_get::<String, _>(0).map_err(crate::store::status)?,
                r.try_get::<String, _>(1).map_err(crate::store::status)?,
            ),
            None => {
                let req = self.link.request(
                    &haven_trust::ids::PersonId::node(),
                    Role::Node,
                    pb::GetConsentRequest { consent_id: id.to_owned() },
                )?;
                match GatewayClient::new(self.link.channel()).get_consent(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        (r.receipt_jws, r.state)
                    }
                    // Another organization's consent, or none: the decision refuses it either way.
                    Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::PermissionDenied) => {
                        return Ok(None);
                    }
                    Err(s) => return Err(self.link.relay(s)),
                }
            }
        };
        Ok(consent_fact(&jws, &state, self.link.signer(), Some(self.ca), now_micros))
    }
}

/// A consent as a decision takes it: the receipt, if `signer`'s organization signed it (with the key
/// `signer` holds, or, when `ca` is given, with any signing certificate the network CA issued to the
/// organization: one from before a rotation), and its state as of `now_micros`.
pub fn consent_fact(
    receipt_jws: &str,
    state: &str,
    signer: &haven_trust::token::OrgSigner,
    ca: Option<&[u8]>,
    now_micros: i64,
) -> Option<(ConsentReceipt, ConsentState)> {
    let (receipt, der) = haven_trust::token::verify_with_x5c::<ConsentReceipt>(receipt_jws).ok()?;
    let own_key = Some(Fingerprint::of_der(&der).to_hex()) == signer.header().kid;
    let own_org = || {
        ca.and_then(|ca| haven_trust::token::verify_by_ca::<ConsentReceipt>(receipt_jws, ca).ok())
            .and_then(|(_, cert)| cert.org().ok())
            .is_some_and(|org| &org == signer.org())
    };
    if !own_key && !own_org() {
        return None;
    }
    let state = ConsentState::parse(state)?;
    let until = i64::try_from(receipt.valid_until.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
    Some((receipt, haven_sharing::consent::effective_state(state, until, now_micros)))
}

/// What a send is decided and sealed on, gathered by the caller.
pub struct Facts<'a> {
    /// The sending person, and their role.
    pub person: &'a haven_trust::ids::PersonId,
    pub role: Role,
    pub bundle: &'a Bundle,
    /// The consent the message names, with its effective state.
    pub consent: Option<&'a (ConsentReceipt, ConsentState)>,
    /// The key to seal to, for each recipient that has one in the verified key log.
    pub keys: &'a BTreeMap<OrgId, SealingKeyStatement>,
    /// The newest key-log checkpoint the sender verified.
    pub key_log: Option<haven_trust::audit::Checkpoint>,
    pub now: time::OffsetDateTime,
}

/// Parses a send's envelope, with its values, as the gateway would parse its names.
pub fn parse(env: &pb::Envelope, org: &OrgId, bundle: &Bundle) -> Result<Envelope, Status> {
    haven_sharing::envelope::parse(RawEnvelope::from(env.clone()), bundle, org, true)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Decides each recipient of `env` on `facts` and seals, with `signer`, a copy of the fields each
/// decision releases to each recipient with a key. No I/O: the node and the tests' senders gather the
/// facts their own way.
pub fn seal_with(
    signer: &haven_trust::token::OrgSigner,
    env: &pb::Envelope,
    facts: &Facts<'_>,
) -> Result<(pb::SubmitRequest, Vec<Unsealed>), Status> {
    let org = signer.org().clone();
    let bundle = facts.bundle;
    let parsed = parse(env, &org, bundle)?;
    let Some(values) = parsed.fields.values() else {
        return Err(Status::invalid_argument("a send carries the fields' values, not only their names"));
    };
    let now_secs = facts.now.unix_timestamp();
    let view = facts.consent.map(|(receipt, state)| ConsentView { receipt, state: *state });
    let names: Vec<&str> = parsed.fields.names();
    let ttl = i64::from(bundle.network().delivery_ttl_days) * 86_400;
    let mut copies = Vec::new();
    let mut unsealed = Vec::new();
    for recipient in recipients(&parsed, &org, facts.role, bundle) {
        let refused = |why: String| Unsealed { recipient: recipient.to_string(), why };
        let org_type = bundle.registry().get(&recipient).map(|o| o.org_type.as_str().to_owned()).unwrap_or_default();
        if NEVER_SEALED_TO.contains(&org_type.as_str()) {
            unsealed.push(refused(format!("`{recipient}` is an {org_type}: no copy is ever sealed to one")));
            continue;
        }
        let req = DecisionRequest {
            sender: &org,
            sender_role: facts.role,
            recipient: &recipient,
            kind: parsed.kind.as_str(),
            purpose: parsed.purpose.as_str(),
            subject: parsed.subject.as_deref(),
            consent_id: parsed.consent_id.as_ref().map(|c| c.as_str()),
            fields: &names,
        };
        let decision = policy::decide(&req, bundle, view, facts.now);
        if !decision.allowed() {
            unsealed.push(refused(format!(
                "this node's own decision refuses it: {}",
                decision.reason().map(|r| r.code()).unwrap_or("denied")
            )));
            continue;
        }
        let Some(key) = facts.keys.get(&recipient) else {
            unsealed.push(refused(format!(
                "`{recipient}` has no sealing key in the key log this node verified; its admin makes one with `haven-node keys init`"
            )));
            continue;
        };
        let key_bytes = key.key_bytes().map_err(|e| Status::internal(format!("a verified key does not read: {e}")))?;
        let released = decision.released().to_vec();
        let plaintext = pb::SealedFields {
            fields: released
                .iter()
                .filter_map(|name| values.get(name).map(|v| (name.clone(), pb::FieldValue::from(v))))
                .collect(),
        }
        .encode_to_vec();
        let body = ManifestBody {
            v: sealed::MANIFEST_VERSION,
            message_id: parsed.message_id.to_string(),
            sender: org.clone(),
            sender_person: facts.person.to_string(),
            recipient: recipient.clone(),
            kind: parsed.kind.to_string(),
            purpose: parsed.purpose.to_string(),
            consent_id: parsed.consent_id.as_ref().map(ToString::to_string).unwrap_or_default(),
            correlation_id: parsed.correlation_id.clone(),
            bundle_version: bundle.version_id().to_owned(),
            fields: released,
            recipient_kid: key.kid.clone(),
            created_at: now_secs,
            not_after: now_secs + ttl,
            key_log: facts.key_log.clone(),
        };
        let copy = sealed::seal(signer, body, &key_bytes, &plaintext)
            .map_err(|e| Status::internal(format!("cannot seal the copy for `{recipient}`: {e}")))?;
        copies.push(pb::SealedCopy {
            recipient: recipient.to_string(),
            manifest: copy.manifest,
            enc: copy.enc,
            ciphertext: copy.ciphertext,
        });
    }
    let mut envelope = env.clone();
    envelope.field_names = names.iter().map(|n| (*n).to_owned()).collect();
    envelope.fields.clear();
    let request =
        pb::SubmitRequest { envelope: Some(envelope), bundle_version: bundle.version_id().to_owned(), copies };
    Ok((request, unsealed))
}

/// The recipients to decide: those named, or for an alert to every permitted recipient, each
/// organization an allow rule could reach.
fn recipients(env: &Envelope, org: &OrgId, role: Role, bundle: &Bundle) -> Vec<OrgId> {
    match &env.recipients {
        Recipients::Named(list) => list.clone(),
        Recipients::AllPermitted => bundle.candidate_recipients(org, role, env.kind.as_str(), env.purpose.as_str()),
    }
}
