//! A sender that calls the gateway directly, as a node does, for the tests and the benchmark that
//! drive the gateway without a node in between: it reads the bundle in force and the key log from the
//! gateway, takes the consent from the gateway, and seals with `haven_node::seal::seal_with`, the
//! node's own sealing, under the organization's real signing key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use haven_node::link::GatewayLink;
use haven_node::seal::{Facts, Unsealed};
use haven_proto::v1 as pb;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_sharing::policy::Bundle;
use haven_trust::audit::Checkpoint;
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::sealing::{self, SealingKeyStatement};

/// Bundles already loaded, by version (loading one takes milliseconds; tests submit thousands).
fn loaded() -> &'static Mutex<HashMap<String, Arc<Bundle>>> {
    static LOADED: OnceLock<Mutex<HashMap<String, Arc<Bundle>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// The bundle in force at the gateway `link` reaches.
pub async fn bundle(link: &GatewayLink) -> Result<Arc<Bundle>, tonic::Status> {
    let req = link.request(&PersonId::node(), Role::Node, pb::PolicyBundleRequest::default())?;
    let resp = GatewayClient::new(link.channel()).policy_bundle(req).await?.into_inner();
    if let Some(b) = loaded().lock().ok().and_then(|l| l.get(&resp.bundle_version).cloned()) {
        return Ok(b);
    }
    let files: BTreeMap<String, String> = resp.files.into_iter().collect();
    let bundle = Arc::new(haven_node::bundles::load(&files, &resp.bundle_version)?);
    if let Ok(mut l) = loaded().lock() {
        l.insert(resp.bundle_version, bundle.clone());
    }
    Ok(bundle)
}

/// The key log as the gateway serves it: each organization's newest usable key, and the checkpoint.
/// (A node verifies all of it; the tests that drive the gateway directly trust it.)
pub async fn keys(
    link: &GatewayLink,
    now: i64,
) -> Result<(BTreeMap<OrgId, SealingKeyStatement>, Option<Checkpoint>), tonic::Status> {
    let mut entries = Vec::new();
    let mut checkpoint = None;
    loop {
        let req = link.request(
            &PersonId::node(),
            Role::Node,
            pb::KeyLogRequest { from_seq: entries.len() as u64, limit: 0 },
        )?;
        let page = GatewayClient::new(link.channel()).key_log(req).await?.into_inner();
        if checkpoint.is_none() {
            checkpoint = page.checkpoint.as_ref().map(Checkpoint::from);
        }
        let covered = checkpoint.as_ref().map_or(0, |c| c.tree_size) as usize;
        let got = page.entries.len();
        entries.extend(page.entries);
        if got == 0 || entries.len() >= covered {
            break;
        }
    }
    let mut by_org: BTreeMap<OrgId, Vec<SealingKeyStatement>> = BTreeMap::new();
    for s in entries.iter().filter_map(|e| sealing::verified_payload(&e.statement)) {
        by_org.entry(s.org.clone()).or_default().push(s);
    }
    let keys = by_org
        .into_iter()
        .filter_map(|(org, statements)| Some((org, sealing::usable_keys(statements, now).into_iter().next()?)))
        .collect();
    Ok((keys, checkpoint))
}

/// Seals `env` as `link`'s organization would for a person in `role`: what a node sends the gateway.
pub async fn seal(
    link: &GatewayLink,
    person: &PersonId,
    role: Role,
    env: &pb::Envelope,
) -> Result<(pb::SubmitRequest, Vec<Unsealed>), tonic::Status> {
    let bundle = bundle(link).await?;
    let clock = link.clock();
    let (keys, key_log) = keys(link, clock.now_secs()).await?;
    let consent = if env.consent_id.is_empty() {
        None
    } else {
        let req = link.request(person, role, pb::GetConsentRequest { consent_id: env.consent_id.clone() })?;
        match GatewayClient::new(link.channel()).get_consent(req).await {
            Ok(r) => {
                let r = r.into_inner();
                haven_node::seal::consent_fact(&r.receipt_jws, &r.state, link.signer(), None, clock.now_micros())
            }
            Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::PermissionDenied) => None,
            Err(s) => return Err(s),
        }
    };
    let facts =
        Facts { person, role, bundle: &bundle, consent: consent.as_ref(), keys: &keys, key_log, now: clock.now() };
    haven_node::seal::seal_with(link.signer(), env, &facts)
}

/// Seals and submits `env`, as a node does.
pub async fn submit(
    link: &GatewayLink,
    person: &PersonId,
    role: Role,
    env: &pb::Envelope,
) -> Result<pb::SubmitResponse, tonic::Status> {
    let (request, _) = seal(link, person, role, env).await?;
    GatewayClient::new(link.channel()).submit(link.request(person, role, request)?).await.map(|r| r.into_inner())
}

/// `env` with its fields named and its values dropped: what a node sends the gateway to decide.
pub fn names_only(env: &pb::Envelope) -> pb::Envelope {
    let mut env = env.clone();
    env.field_names = env.fields.drain().map(|(name, _)| name).collect();
    env.field_names.sort();
    env
}

/// Seals each distinct envelope once and sends the same bytes again when it is submitted again, as a
/// node does with a send it retries. Cheap to clone; clones share what they sealed.
#[derive(Clone, Default)]
pub struct SealOnce {
    sealed: Arc<Mutex<HashMap<String, pb::SubmitRequest>>>,
}

impl SealOnce {
    /// Seals (once per distinct envelope) and submits.
    pub async fn submit(
        &self,
        link: &GatewayLink,
        person: &PersonId,
        role: Role,
        env: &pb::Envelope,
    ) -> Result<pb::SubmitResponse, tonic::Status> {
        let key = canonical(env);
        let kept = self.sealed.lock().ok().and_then(|s| s.get(&key).cloned());
        let request = match kept {
            Some(r) => r,
            None => {
                let (r, _) = seal(link, person, role, env).await?;
                if let Ok(mut s) = self.sealed.lock() {
                    s.insert(key, r.clone());
                }
                r
            }
        };
        GatewayClient::new(link.channel()).submit(link.request(person, role, request)?).await.map(|r| r.into_inner())
    }
}

/// What makes two envelopes the same send.
fn canonical(env: &pb::Envelope) -> String {
    let mut fields: Vec<_> = env.fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    fields.sort();
    let mut env = env.clone();
    env.fields.clear();
    format!("{env:?}{fields:?}")
}

/// A sender that reads the bundle, the key log and each consent once, as a node keeps them: for the
/// benchmark, whose figures should show what the gateway costs, not these reads.
pub struct Sender {
    link: GatewayLink,
    bundle: Arc<Bundle>,
    keys: BTreeMap<OrgId, SealingKeyStatement>,
    key_log: Option<Checkpoint>,
    consents:
        Mutex<HashMap<String, Option<(haven_trust::receipt::ConsentReceipt, haven_trust::receipt::ConsentState)>>>,
}

impl Sender {
    /// Reads the bundle and the key log now.
    pub async fn new(link: GatewayLink) -> Result<Sender, tonic::Status> {
        let bundle = bundle(&link).await?;
        let (keys, key_log) = keys(&link, link.clock().now_secs()).await?;
        Ok(Sender { link, bundle, keys, key_log, consents: Default::default() })
    }

    /// Seals `env` for a person in `role`.
    pub async fn seal(
        &self,
        person: &PersonId,
        role: Role,
        env: &pb::Envelope,
    ) -> Result<pb::SubmitRequest, tonic::Status> {
        let clock = self.link.clock();
        let kept = self.consents.lock().ok().and_then(|c| c.get(&env.consent_id).cloned());
        let consent = match kept {
            Some(c) => c,
            None if env.consent_id.is_empty() => None,
            None => {
                let req =
                    self.link.request(person, role, pb::GetConsentRequest { consent_id: env.consent_id.clone() })?;
                let r = GatewayClient::new(self.link.channel()).get_consent(req).await?.into_inner();
                let c = haven_node::seal::consent_fact(
                    &r.receipt_jws,
                    &r.state,
                    self.link.signer(),
                    None,
                    clock.now_micros(),
                );
                if let Ok(mut m) = self.consents.lock() {
                    m.insert(env.consent_id.clone(), c.clone());
                }
                c
            }
        };
        let facts = Facts {
            person,
            role,
            bundle: &self.bundle,
            consent: consent.as_ref(),
            keys: &self.keys,
            key_log: self.key_log.clone(),
            now: clock.now(),
        };
        Ok(haven_node::seal::seal_with(self.link.signer(), env, &facts)?.0)
    }
}

/// Makes a sealing key for `link`'s organization and registers it, as `haven-node keys init` does;
/// returns the private half. For organizations that have no node in a test or a benchmark.
pub async fn publish_key(link: &GatewayLink) -> Result<[u8; 32], tonic::Status> {
    let secret: [u8; 32] = rand::random();
    let public = haven_trust::hpke::public_of(&secret).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let now = link.clock().now_secs();
    let statement = SealingKeyStatement::publish(link.signer().org().clone(), &public, now, now + 365 * 86_400, now);
    let jws = link
        .signer()
        .sign_typed(sealing::STATEMENT_TYP, &statement)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let req = link.request(&PersonId::node(), Role::Node, pb::RegisterSealingKeyRequest { statement: jws })?;
    GatewayClient::new(link.channel()).register_sealing_key(req).await?;
    Ok(secret)
}
