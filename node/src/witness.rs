//! The node as a witness of the gateway's audit log.
//!
//! Every checkpoint the node sees (on its delivery stream, or when it asks) goes through
//! [`Witness::observe`]:
//!
//! 1. its signature must verify with the gateway's signing certificate from the node's certificate
//!    directory;
//! 2. it must be consistent with the newest checkpoint the node kept (table `witness`): the same root
//!    at the same size, or a consistency proof, fetched from the gateway, between the two sizes;
//! 3. the registry must still pin this organization's own TLS and signing certificates (`GetPins`), so
//!    a gateway that swaps an organization's keys is caught by that organization.
//!
//! A newer consistent checkpoint replaces the kept one. A failure is logged with `tracing::error!`,
//! written to `witness_alarm` and reported by `Node.WitnessStatus` from then on: a gateway that
//! rewrote history stays caught across restarts until an auditor has looked into it and acknowledged
//! it ([`Witness::acknowledge`], `haven-node audit witness ack`). An `unpinned` alarm also clears itself
//! when a later check finds the registry pinning this organization's own certificates, and no other,
//! again (the end of a certificate rotation); a fork or a bad signature never does. A cleared alarm's
//! row stays, with when and how it was cleared. An unreachable gateway is reported but is not an alarm.

use std::sync::Arc;

use haven_proto::v1::audit_client::AuditClient;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::{ConsistencyProofRequest, GetCheckpointRequest, GetPinsRequest, SignedCheckpoint};
use haven_trust::audit::Checkpoint;
use haven_trust::clock::SharedClock;
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::merkle;
use haven_trust::registry::Fingerprint;
use sqlx::Row;
use tokio::sync::{Mutex, watch};

use crate::failure;
use crate::link::{GatewayLink, LinkConfig, LinkError};
use crate::store::NodeStore;

/// What the last check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitnessState {
    /// Nothing checked yet.
    Unchecked,
    /// The checkpoint verified, extends what the node kept, and the node's certificates are pinned.
    Ok,
    /// Two checkpoints signed by the gateway cannot both describe one log: history was rewritten.
    Fork,
    /// A checkpoint's signature does not verify with the gateway's signing certificate.
    BadSignature,
    /// The registry no longer pins this organization's own certificates.
    Unpinned,
    /// The gateway could not be asked for a proof or the pins; nothing was concluded.
    Unreachable,
    /// The key log holds a sealing-key statement in this organization's name that its node did not
    /// make: a key registered behind its back.
    ForeignKey,
}

impl WitnessState {
    /// The code `Node.WitnessStatus` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            WitnessState::Unchecked => "unchecked",
            WitnessState::Ok => "ok",
            WitnessState::Fork => "fork",
            WitnessState::BadSignature => "bad_signature",
            WitnessState::Unpinned => "unpinned",
            WitnessState::Unreachable => "unreachable",
            WitnessState::ForeignKey => "foreign_sealing_key",
        }
    }

    /// Whether this is an alarm (kept until an auditor acknowledges it or, for `unpinned`, the pins
    /// say so again).
    pub fn is_alarm(self) -> bool {
        matches!(
            self,
            WitnessState::Fork | WitnessState::BadSignature | WitnessState::Unpinned | WitnessState::ForeignKey
        )
    }
}

/// The witness's report, as `Node.WitnessStatus` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WitnessReport {
    /// The newest checkpoint the node keeps (verified and consistent).
    pub latest: Option<SignedCheckpoint>,
    pub state: WitnessState,
    pub detail: String,
    pub checked_at_micros: i64,
}

/// Why the witness could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("node database: {0}")]
    Sql(#[from] sqlx::Error),
}

struct Inner {
    store: NodeStore,
    link: GatewayLink,
    org: OrgId,
    clock: SharedClock,
    /// DER of the gateway signing certificate.
    gateway_cert: Vec<u8>,
    own_tls: String,
    own_signing: String,
    /// One observation at a time, so two checkpoints never race to replace the kept one.
    busy: Mutex<()>,
    report: watch::Sender<WitnessReport>,
}

/// The node's witness. Cheap to clone.
#[derive(Clone)]
pub struct Witness(Arc<Inner>);

fn first_der(path: &std::path::Path) -> Result<Vec<u8>, LinkError> {
    let certs = haven_trust::pki::load_certs(path).map_err(|e| LinkError::Tls(format!("{}: {e}", path.display())))?;
    certs
        .into_iter()
        .next()
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| LinkError::Tls(format!("{}: no certificate", path.display())))
}

/// The outcome of one check, before it is recorded.
struct Finding {
    state: WitnessState,
    detail: String,
    /// The checkpoint to keep as the newest, if it changes.
    keep: Option<Checkpoint>,
    /// Whether this check found the registry pinning this organization's own certificates, and no
    /// other: what clears a standing `unpinned` alarm.
    pins_ok: bool,
}

impl Finding {
    fn alarm(state: WitnessState, detail: String) -> Self {
        Finding { state, detail, keep: None, pins_ok: false }
    }
}

/// How many characters of an acknowledgement's note are kept.
pub const MAX_ACK_NOTE_CHARS: usize = 1000;

impl Witness {
    /// A witness for the organization `config` names, keeping its state in `store`.
    pub async fn new(
        store: NodeStore,
        link: GatewayLink,
        config: &LinkConfig,
        clock: SharedClock,
    ) -> Result<Witness, WitnessError> {
        let gateway_cert = first_der(&config.gateway_signing_cert)?;
        let own_tls = Fingerprint::of_der(&first_der(&config.tls_cert)?).to_hex();
        let own_signing = Fingerprint::of_der(&first_der(&config.signing_cert)?).to_hex();
        let witness = Witness(Arc::new(Inner {
            store,
            link,
            org: config.org.clone(),
            clock,
            gateway_cert,
            own_tls,
            own_signing,
            busy: Mutex::new(()),
            report: watch::channel(WitnessReport {
                latest: None,
                state: WitnessState::Unchecked,
                detail: String::new(),
                checked_at_micros: 0,
            })
            .0,
        }));
        let kept = witness.kept().await?;
        let alarm = witness.first_alarm().await?;
        witness.0.report.send_modify(|r| {
            r.latest = kept.as_ref().map(SignedCheckpoint::from);
            if let Some((state, detail, at)) = alarm {
                (r.state, r.detail, r.checked_at_micros) = (state, detail, at);
            }
        });
        Ok(witness)
    }

    /// The current report.
    pub fn report(&self) -> WitnessReport {
        self.0.report.borrow().clone()
    }

    /// Reports as they change, for tests and for anything that wants to react to an alarm.
    pub fn subscribe(&self) -> watch::Receiver<WitnessReport> {
        self.0.report.subscribe()
    }

    /// The size of the newest checkpoint kept (for the stream's `Hello.witnessed_tree_size`).
    pub fn witnessed_size(&self) -> u64 {
        self.0.report.borrow().latest.as_ref().map_or(0, |c| c.tree_size)
    }

    /// Asks the gateway for its newest checkpoint and observes it.
    pub async fn check_now(&self) -> WitnessReport {
        let req = match self.0.link.request(&PersonId::node(), Role::Node, GetCheckpointRequest { refresh: false }) {
            Ok(r) => r,
            Err(e) => return self.record(Finding::alarm(WitnessState::Unreachable, e.message().to_owned())).await,
        };
        match AuditClient::new(self.0.link.channel()).get_checkpoint(req).await {
            Ok(resp) => self.observe(resp.into_inner()).await,
            Err(e) => self.record(self.refused("cannot get a checkpoint", &e)).await,
        }
    }

    /// Raises an alarm another check found (the key-log witness): kept, reported and acknowledged like
    /// the audit witness's own.
    pub async fn raise(&self, state: WitnessState, detail: String) -> WitnessReport {
        let _one_at_a_time = self.0.busy.lock().await;
        // The same alarm still standing is not written again (a round finds it every minute).
        let standing: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM witness_alarm WHERE state = $1 AND detail = $2 AND cleared_at_micros IS NULL LIMIT 1",
        )
        .bind(state.as_str())
        .bind(&detail)
        .fetch_optional(self.0.store.pool())
        .await
        .ok()
        .flatten();
        if standing.is_some() {
            return self.report();
        }
        self.record(Finding::alarm(state, detail)).await
    }

    /// The gateway's signing certificate (DER), which signs the key log's checkpoints too.
    pub fn gateway_cert(&self) -> &[u8] {
        &self.0.gateway_cert
    }

    /// Checks a checkpoint the gateway sent (the delivery stream calls this for every `checkpoint`
    /// frame) and returns the report that results.
    pub async fn observe(&self, cp: SignedCheckpoint) -> WitnessReport {
        self.observe_finding(cp).await.0
    }

    /// Checks and records `cp`; returns the report and this checkpoint's own finding.
    async fn observe_finding(&self, cp: SignedCheckpoint) -> (WitnessReport, WitnessState, String) {
        let _one_at_a_time = self.0.busy.lock().await;
        let finding = match self.check(&cp).await {
            Ok(f) => f,
            Err(e) => Finding::alarm(WitnessState::Unreachable, format!("node database: {e}")),
        };
        let (state, detail) = (finding.state, finding.detail.clone());
        (self.record(finding).await, state, detail)
    }

    /// Observes `cp` as [`Witness::observe`] does, and says whether this checkpoint itself passed (a
    /// standing alarm from before does not decide it): signed by the gateway, and consistent with every
    /// checkpoint this node witnessed. `Err` says why not.
    pub async fn vouch_for(&self, cp: SignedCheckpoint) -> Result<(), (WitnessState, String)> {
        let (_, state, detail) = self.observe_finding(cp).await;
        if state == WitnessState::Ok { Ok(()) } else { Err((state, detail)) }
    }

    async fn check(&self, wire: &SignedCheckpoint) -> Result<Finding, sqlx::Error> {
        let cp = Checkpoint::from(wire);
        let size = cp.tree_size;
        if let Err(e) = cp.verify(&self.0.gateway_cert) {
            return Ok(Finding::alarm(
                WitnessState::BadSignature,
                format!("checkpoint of size {size}: {e}; the gateway's signing key did not sign it"),
            ));
        }
        if !wire.signed_body.is_empty()
            && cp.root().is_ok_and(|root| wire.signed_body != Checkpoint::body(size, &root, cp.timestamp_micros))
        {
            return Ok(Finding::alarm(
                WitnessState::BadSignature,
                format!("checkpoint of size {size}: signed_body is not the body of the checkpoint it came with"),
            ));
        }
        let new_root = cp.root().unwrap_or_default();
        let mut keep = Some(cp.clone());
        if let Some(old) = self.kept().await? {
            let old_root = old.root().unwrap_or_default();
            let (s1, r1, s2, r2) = if old.tree_size <= size {
                (old.tree_size, old_root, size, new_root)
            } else {
                (size, new_root, old.tree_size, old_root)
            };
            if old.tree_size >= size {
                // Not newer: keep the old one (an equal size only refreshes the time).
                keep = (old.tree_size == size && cp.timestamp_micros > old.timestamp_micros).then_some(cp.clone());
            }
            if s1 == s2 {
                if r1 != r2 {
                    return Ok(Finding::alarm(
                        WitnessState::Fork,
                        format!(
                            "fork: the gateway signed two different roots for size {s1} ({} and {})",
                            hex::encode(r1),
                            hex::encode(r2)
                        ),
                    ));
                }
            } else if s1 > 0 {
                match self.consistency(s1, s2).await {
                    Err(f) => return Ok(f),
                    Ok(proof) => {
                        if let Err(e) = merkle::verify_consistency(s1, s2, &r1, &r2, &proof) {
                            return Ok(Finding::alarm(
                                WitnessState::Fork,
                                format!(
                                    "fork: the checkpoint of size {s2} does not extend the one of size {s1} this node witnessed: {e}"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if let Err(f) = self.check_pins().await {
            return Ok(f);
        }
        Ok(Finding {
            state: WitnessState::Ok,
            detail: format!("checkpoint of size {size} verified"),
            keep,
            pins_ok: true,
        })
    }

    /// What a refused gateway call means: the gateway refusing this organization's own credentials is
    /// an alarm (its certificates were unpinned or swapped); anything else, a gateway that could not be
    /// reached included, only means it could not be asked.
    fn refused(&self, what: &str, e: &tonic::Status) -> Finding {
        if e.code() == tonic::Code::Unauthenticated && failure::transport_failure(e).is_none() {
            Finding::alarm(
                WitnessState::Unpinned,
                format!("{what}: the gateway refuses this organization's own credentials: {}", e.message()),
            )
        } else {
            Finding::alarm(WitnessState::Unreachable, format!("{what}: {}", self.0.link.describe(e)))
        }
    }

    async fn consistency(&self, first: u64, second: u64) -> Result<Vec<merkle::Hash>, Finding> {
        let req = self
            .0
            .link
            .request(&PersonId::node(), Role::Node, ConsistencyProofRequest { first_size: first, second_size: second })
            .map_err(|e| Finding::alarm(WitnessState::Unreachable, e.message().to_owned()))?;
        let proof = AuditClient::new(self.0.link.channel())
            .get_consistency_proof(req)
            .await
            .map_err(|e| self.refused(&format!("cannot get a consistency proof from {first} to {second}"), &e))?
            .into_inner();
        merkle::proof_from_slices(&proof.hashes).map_err(|e| {
            Finding::alarm(WitnessState::Fork, format!("malformed consistency proof from the gateway: {e}"))
        })
    }

    async fn check_pins(&self) -> Result<(), Finding> {
        let req = self
            .0
            .link
            .request(&PersonId::node(), Role::Node, GetPinsRequest { org_id: self.0.org.to_string() })
            .map_err(|e| Finding::alarm(WitnessState::Unreachable, e.message().to_owned()))?;
        let pins = GatewayClient::new(self.0.link.channel())
            .get_pins(req)
            .await
            .map_err(|e| self.refused("cannot read the registry's pins", &e))?
            .into_inner();
        let own = pins.orgs.iter().find(|o| o.org_id == self.0.org.as_str());
        let (tls, signing) = own.map_or((&[][..], &[][..]), |o| (&o.tls_pins[..], &o.signing_pins[..]));
        let org = &self.0.org;
        let problem = if !tls.contains(&self.0.own_tls) {
            Some(format!("the registry no longer pins organization `{org}`'s own TLS certificate"))
        } else if !signing.contains(&self.0.own_signing) {
            Some(format!("the registry no longer pins organization `{org}`'s own signing certificate"))
        } else if let Some(other) = tls.iter().find(|p| **p != self.0.own_tls) {
            Some(format!(
                "the registry also pins TLS certificate {other} for organization `{org}`, which is not this node's"
            ))
        } else {
            signing.iter().find(|p| **p != self.0.own_signing).map(|other| {
                format!("the registry also pins signing certificate {other} for organization `{org}`, which is not this node's")
            })
        };
        match problem {
            None => Ok(()),
            Some(p) => Err(Finding::alarm(
                WitnessState::Unpinned,
                format!(
                    "{p}: someone may be able to act as this organization (expected during a certificate rotation only)"
                ),
            )),
        }
    }

    /// Stores a finding and publishes the report.
    async fn record(&self, f: Finding) -> WitnessReport {
        let now = self.0.clock.now_micros();
        if f.state.is_alarm() {
            tracing::error!(state = f.state.as_str(), detail = %f.detail, "AUDIT WITNESS ALARM: the gateway's audit log or registry failed a check");
            let stored = sqlx::query("INSERT INTO witness_alarm (at_micros, state, detail) VALUES ($1, $2, $3)")
                .bind(now)
                .bind(f.state.as_str())
                .bind(&f.detail)
                .execute(self.0.store.pool())
                .await;
            if let Err(e) = stored {
                tracing::error!(error = %e, "cannot record the witness alarm in the node database");
            }
        } else if f.state == WitnessState::Unreachable {
            tracing::warn!(detail = %f.detail, "audit witness could not check the newest checkpoint");
        }
        if f.pins_ok {
            let cleared = sqlx::query(
                "UPDATE witness_alarm SET cleared_at_micros = $1, cleared_by = 'pins' WHERE state = 'unpinned' AND cleared_at_micros IS NULL",
            )
            .bind(now)
            .execute(self.0.store.pool())
            .await;
            match cleared {
                Ok(done) if done.rows_affected() > 0 => tracing::info!(
                    alarms = done.rows_affected(),
                    "audit witness: the registry pins this organization's own certificates again, and no other; the unpinned alarm clears itself"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot clear the resolved unpinned alarm in the node database"),
            }
        }
        if let Some(cp) = &f.keep {
            let saved = sqlx::query(
                "INSERT INTO witness (id, tree_size, checkpoint, checked_at_micros) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET tree_size = excluded.tree_size, checkpoint = excluded.checkpoint, checked_at_micros = excluded.checked_at_micros",
            )
            .bind(i64::try_from(cp.tree_size).unwrap_or(i64::MAX))
            .bind(serde_json::to_string(cp).unwrap_or_default())
            .bind(now)
            .execute(self.0.store.pool())
            .await;
            if let Err(e) = saved {
                tracing::error!(error = %e, "cannot keep the witnessed checkpoint in the node database");
            }
        }
        let alarm = self.first_alarm().await.ok().flatten();
        self.0.report.send_modify(|r| {
            if let Some(cp) = &f.keep {
                r.latest = Some(SignedCheckpoint::from(cp));
            }
            match &alarm {
                // An alarm stands until it is acknowledged (or, unpinned, resolved by the pins).
                Some((state, detail, at)) => (r.state, r.detail, r.checked_at_micros) = (*state, detail.clone(), *at),
                None => (r.state, r.detail, r.checked_at_micros) = (f.state, f.detail.clone(), now),
            }
        });
        self.report()
    }

    /// The newest checkpoint kept.
    async fn kept(&self) -> Result<Option<Checkpoint>, sqlx::Error> {
        let row =
            sqlx::query("SELECT checkpoint FROM witness WHERE id = 1").fetch_optional(self.0.store.pool()).await?;
        Ok(row.and_then(|r| r.try_get::<String, _>(0).ok()).and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Acknowledges every standing alarm for `person`, an auditor who looked into it, with their
    /// `note` (at most [`MAX_ACK_NOTE_CHARS`] characters are kept); then checks the gateway's newest
    /// checkpoint at once, so the report says what holds now (a problem that persists is a new
    /// finding). Returns how many alarms were acknowledged (0: none stood) and the report.
    pub async fn acknowledge(&self, person: &str, note: &str) -> Result<(u64, WitnessReport), sqlx::Error> {
        let note: String = note.chars().take(MAX_ACK_NOTE_CHARS).collect();
        let acknowledged = {
            let _one_at_a_time = self.0.busy.lock().await;
            let done = sqlx::query(
                "UPDATE witness_alarm SET cleared_at_micros = $1, cleared_by = 'ack', acked_by = $2, ack_note = $3 WHERE cleared_at_micros IS NULL",
            )
            .bind(self.0.clock.now_micros())
            .bind(person)
            .bind(&note)
            .execute(self.0.store.pool())
            .await?
            .rows_affected();
            if done > 0 {
                tracing::warn!(%person, %note, alarms = done, "audit witness alarm acknowledged");
            }
            done
        };
        if acknowledged == 0 {
            return Ok((0, self.report()));
        }
        Ok((acknowledged, self.check_now().await))
    }

    /// The first alarm recorded and not cleared.
    async fn first_alarm(&self) -> Result<Option<(WitnessState, String, i64)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT state, detail, at_micros FROM witness_alarm WHERE cleared_at_micros IS NULL ORDER BY id LIMIT 1",
        )
        .fetch_optional(self.0.store.pool())
        .await?;
        Ok(row.map(|r| {
            let state = match r.try_get::<String, _>("state").unwrap_or_default().as_str() {
                "fork" => WitnessState::Fork,
                "bad_signature" => WitnessState::BadSignature,
                "foreign_sealing_key" => WitnessState::ForeignKey,
                _ => WitnessState::Unpinned,
            };
            (state, r.try_get("detail").unwrap_or_default(), r.try_get("at_micros").unwrap_or_default())
        }))
    }
}
