//! The policy bundles this node decides and checks under. A sender's node decides each send on the
//! bundle in force before it seals anything, so a gateway that lied about the policy could only
//! withhold, never widen; a recipient's node checks a copy's values against the schema of the bundle
//! the copy names.
//!
//! A bundle comes from the gateway (`Gateway.PolicyBundle`) as its files. The node writes them to a
//! private temporary folder, loads them with the same code the gateway uses, and keeps the bundle only
//! if its version (the SHA-256 of the files) is the one the gateway named. Bundles are kept in the
//! node's database by version, so old ones stay available.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::{PolicyBundleRequest, PolicyBundleResponse};
use haven_sharing::policy::Bundle;
use haven_trust::ids::{PersonId, Role};
use tonic::Status;

use crate::link::GatewayLink;
use crate::store::NodeStore;
use crate::witness::Witness;

/// The bundles loaded so far, by version, and the newest one fetched. Cheap to clone.
#[derive(Clone)]
pub struct Bundles {
    inner: Arc<Mutex<Loaded>>,
    /// The node's audit witness, which checks the checkpoint covering each bundle's audit entry.
    witness: Witness,
}

#[derive(Default)]
struct Loaded {
    by_version: HashMap<String, Arc<Bundle>>,
    newest: Option<Arc<Bundle>>,
}

impl Bundles {
    /// No bundle loaded yet; each one fetched is checked against the audit trail with `witness`.
    pub fn new(witness: Witness) -> Self {
        Bundles { inner: Default::default(), witness }
    }

    /// The bundle this node last learned is in force, fetched if it knows none.
    pub async fn current(&self, store: &NodeStore, link: &GatewayLink) -> Result<Arc<Bundle>, Status> {
        let newest = self.inner.lock().map(|l| l.newest.clone()).unwrap_or_default();
        match newest {
            Some(b) => Ok(b),
            None => self.refresh(store, link).await,
        }
    }

    /// Fetches the bundle in force from the gateway, checks its version and keeps it. A failed call is
    /// returned as the gateway (or the transport) said it, for the caller to describe.
    pub async fn refresh(&self, store: &NodeStore, link: &GatewayLink) -> Result<Arc<Bundle>, Status> {
        let bundle = self.fetch(store, link, "").await?;
        if let Ok(mut l) = self.inner.lock() {
            l.newest = Some(bundle.clone());
        }
        Ok(bundle)
    }

    /// Fetches a bundle (`""`: the one in force) from the gateway, checks its version and keeps it.
    async fn fetch(&self, store: &NodeStore, link: &GatewayLink, version: &str) -> Result<Arc<Bundle>, Status> {
        let request =
            link.request(&PersonId::node(), Role::Node, PolicyBundleRequest { version: version.to_owned() })?;
        let PolicyBundleResponse { bundle_version, files, in_force, in_force_proof, checkpoint } =
            GatewayClient::new(link.channel()).policy_bundle(request).await?.into_inner();
        let seq = self.in_force(&bundle_version, in_force, in_force_proof, checkpoint).await?;
        if version.is_empty() {
            // The bundle in force must have been put in force no earlier than one this node accepted as
            // in force before: otherwise the gateway is rolling the policy back without recording it.
            let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(in_force_seq) FROM policy_bundle")
                .fetch_one(store.pool())
                .await
                .map_err(crate::store::status)?;
            let newest = u64::try_from(newest.unwrap_or(0)).unwrap_or(0);
            if seq < newest {
                return Err(Status::failed_precondition(format!(
                    "the gateway serves policy bundle {} as in force, put in force at audit entry {seq}, but this node accepted a bundle put in force later (audit entry {newest}): a rollback the audit trail does not record; this node does not decide on it",
                    haven_trust::untrusted::shown(&bundle_version)
                )));
            }
        }
        if !version.is_empty() && bundle_version != version {
            return Err(Status::failed_precondition(format!(
                "asked for bundle {version}, the gateway served {}",
                haven_trust::untrusted::shown(&bundle_version)
            )));
        }
        let files: BTreeMap<String, String> = files.into_iter().collect();
        let bundle = Arc::new(load(&files, &bundle_version)?);
        let json = serde_json::to_string(&files).map_err(|e| Status::internal(e.to_string()))?;
        sqlx::query("INSERT INTO policy_bundle (version, files, delivery_ttl_days, in_force_seq, fetched_at_micros) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO UPDATE SET in_force_seq = MAX(policy_bundle.in_force_seq, excluded.in_force_seq)")
            .bind(&bundle_version)
            .bind(json)
            .bind(i64::from(bundle.network().delivery_ttl_days))
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .bind(link.clock().now_micros())
            .execute(store.pool())
            .await
            .map_err(crate::store::status)?;
        if let Ok(mut l) = self.inner.lock() {
            l.by_version.insert(bundle_version, bundle.clone());
        }
        Ok(bundle)
    }

    /// The bundle of `version`: loaded before, kept in the database, or fetched from the gateway (which
    /// keeps every bundle it put in force). `None` when the gateway never put it in force.
    pub async fn by_version(
        &self,
        store: &NodeStore,
        link: &GatewayLink,
        version: &str,
    ) -> Result<Option<Arc<Bundle>>, Status> {
        if let Some(b) = self.inner.lock().ok().and_then(|l| l.by_version.get(version).cloned()) {
            return Ok(Some(b));
        }
        let kept: Option<String> = sqlx::query_scalar("SELECT files FROM policy_bundle WHERE version = $1")
            .bind(version)
            .fetch_optional(store.pool())
            .await
            .map_err(crate::store::status)?;
        if let Some(json) = kept {
            let files: BTreeMap<String, String> = serde_json::from_str(&json)
                .map_err(|e| Status::internal(format!("a kept policy bundle is unreadable: {e}")))?;
            let bundle = Arc::new(load(&files, version)?);
            if let Ok(mut l) = self.inner.lock() {
                l.by_version.insert(version.to_owned(), bundle.clone());
            }
            return Ok(Some(bundle));
        }
        match self.fetch(store, link, version).await {
            Ok(b) => Ok(Some(b)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }
}

impl Bundles {
    /// Checks that the audit trail records `version` as put in force: the entry the gateway names is a
    /// `gateway_started` or `policy_reloaded` entry, outcome `ok`, naming the version; it is included
    /// in a checkpoint signed by the gateway that this node's audit witness accepts (consistent with
    /// every checkpoint it saw before). A bundle the gateway serves without such an entry is a policy
    /// change the logs do not record, and this node does not decide on it.
    async fn in_force(
        &self,
        version: &str,
        entry: Option<haven_proto::v1::AuditEntry>,
        proof: Option<haven_proto::v1::InclusionProof>,
        checkpoint: Option<haven_proto::v1::SignedCheckpoint>,
    ) -> Result<u64, Status> {
        let refused = |why: String| {
            Status::failed_precondition(format!(
                "the gateway served policy bundle {} without proof that the audit trail records it as put in force: {why}; this node does not decide on it",
                haven_trust::untrusted::shown(version)
            ))
        };
        let (Some(wire), Some(proof), Some(cp)) = (entry, proof, checkpoint) else {
            return Err(refused("no audit entry, proof or checkpoint came with it".into()));
        };
        match self.witness.vouch_for(cp.clone()).await {
            Ok(()) => {}
            // The witness could not ask the gateway (or its database): nothing is concluded, try later.
            Err((crate::witness::WitnessState::Unreachable, why)) => {
                return Err(Status::unavailable(format!(
                    "the audit checkpoint of the policy bundle could not be checked: {why}"
                )));
            }
            Err((_, why)) => return Err(refused(format!("this node's audit witness refuses the checkpoint: {why}"))),
        }
        let entry = haven_trust::audit::AuditEntry::from(&wire);
        let names_it = matches!(entry.action.as_str(), "gateway_started" | "policy_reloaded")
            && entry.outcome == "ok"
            && entry.bundle_version == version;
        if !names_it || entry.seq != proof.seq {
            return Err(refused(format!(
                "audit entry {} is `{}` ({}) for bundle {}",
                entry.seq,
                haven_trust::untrusted::shown(&entry.action),
                haven_trust::untrusted::shown(&entry.outcome),
                haven_trust::untrusted::shown(&entry.bundle_version)
            )));
        }
        let cp = haven_trust::audit::Checkpoint::from(&cp);
        let root = cp.root().map_err(|e| refused(format!("the checkpoint's root: {e}")))?;
        let hashes = haven_trust::merkle::proof_from_slices(&proof.hashes).map_err(|e| refused(e.to_string()))?;
        haven_trust::merkle::verify_inclusion(&entry.leaf_hash(), proof.seq, cp.tree_size, &hashes, &root).map_err(
            |e| refused(format!("audit entry {} is not in the checkpoint of size {}: {e}", proof.seq, cp.tree_size)),
        )?;
        Ok(proof.seq)
    }
}

/// Loads a bundle from its files and checks that it is `version`.
pub fn load(files: &BTreeMap<String, String>, version: &str) -> Result<Bundle, Status> {
    let dir = tempfile::tempdir()
        .map_err(|e| Status::internal(format!("cannot make a folder for the policy bundle: {e}")))?;
    let files: Vec<(String, String)> = files.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
    Bundle::write_files(&files, dir.path()).map_err(|e| {
        Status::failed_precondition(format!("the gateway served a policy bundle this node cannot keep: {e}"))
    })?;
    let bundle = Bundle::load(dir.path(), None).map_err(|problems| {
        let first = problems.first().map(|p| p.message.clone()).unwrap_or_default();
        Status::failed_precondition(format!(
            "the gateway served a policy bundle that does not load ({} problems; the first: {first})",
            problems.len()
        ))
    })?;
    if bundle.version_id() != version {
        return Err(Status::failed_precondition(format!(
            "the gateway served files whose version is {}, but named them {}: this node does not decide on them",
            bundle.version_id(),
            haven_trust::untrusted::shown(version)
        )));
    }
    Ok(bundle)
}
