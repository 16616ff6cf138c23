//! The node as a witness of the gateway's public key log.
//!
//! Each round ([`KeyLogWitness::check_now`], every [`ROUND`] and whenever asked):
//!
//! 1. the node registers its own statements the gateway has not taken yet;
//! 2. it reads the log past what it holds (the log holds public keys only, so a node holds all of it),
//!    with the gateway's newest signed key-log checkpoint;
//! 3. the checkpoint's signature must verify with the gateway's signing certificate, under the key
//!    log's own origin;
//! 4. the entries the node holds, followed by the new ones, must hash to the checkpoint's root at its
//!    size: the log only ever grew, and it is the log the gateway signed (a checkpoint smaller than
//!    what the node holds is a rollback);
//! 5. every new statement must verify by the network CA the node trusts, not by the gateway's
//!    registry: signed with a certificate the CA issued, whose URI SAN names the statement's
//!    organization;
//! 6. a statement in this organization's name that this node did not make is a key registered behind
//!    its back, for example with a signing certificate the CA's key issued to someone else.
//!
//! A failure at 3, 4 or 5 stores nothing of the round and raises an alarm; 6 stores the entry (it is in
//! the log, signed) and raises an alarm. Alarms go through the audit witness ([`Witness::raise`]), so
//! they stand, show at the top of every console page and are acknowledged the same way.
//!
//! A sender seals only to a key it finds here ([`recipient_key`]): one whose publication is in the log
//! this node verified, within its window, and not withdrawn.

use std::time::Duration;

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::{KeyLogRequest, KeyLogResponse, SignedCheckpoint};
use haven_trust::audit::{Checkpoint, CheckpointKey};
use haven_trust::clock::SharedClock;
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::keylog::{self, KEY_LOG_ORIGIN};
use haven_trust::merkle::{self, MemoryTree};
use haven_trust::sealing::{self, SealingKeyStatement};
use sqlx::Row;

use crate::link::GatewayLink;
use crate::store::NodeStore;
use crate::witness::{Witness, WitnessState};

/// How often the node reads the key log: a rotation or a withdrawal reaches every node within this.
pub const ROUND: Duration = Duration::from_secs(60);

/// What a round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// The log verified; the node now holds `size` entries (`new` of them this round).
    Verified { size: u64, new: u64 },
    /// The log failed a check; the alarm says what.
    Alarm(WitnessState, String),
    /// The gateway could not be asked; nothing was concluded.
    Unreachable(String),
}

/// What a key-log checkpoint from another node says against this node's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerView {
    /// The same log, at the checkpoint's size.
    Consistent,
    /// The checkpoint is past what this node could read; nothing can be concluded yet.
    Ahead { held: u64, peer: u64 },
    /// The checkpoint is not signed by the gateway.
    Unsigned(String),
    /// Another log: the gateway shows different logs to different nodes.
    Split(String),
}

/// The newest key-log checkpoint this node verified.
pub async fn newest_checkpoint(store: &NodeStore) -> Result<Option<Checkpoint>, sqlx::Error> {
    Ok(sqlx::query("SELECT checkpoint FROM key_log_checkpoint ORDER BY tree_size DESC LIMIT 1")
        .fetch_optional(store.pool())
        .await?
        .map(|r| r.try_get::<String, _>(0))
        .transpose()?
        .and_then(|json| serde_json::from_str::<Checkpoint>(&json).ok()))
}

/// The key-log witness. Cheap to clone.
#[derive(Clone)]
pub struct KeyLogWitness {
    store: NodeStore,
    link: GatewayLink,
    clock: SharedClock,
    witness: Witness,
    org: OrgId,
    /// DER of the network CA certificate the node trusts.
    ca: Vec<u8>,
    /// Where the organization's private keys are: retired ones are destroyed at the end of a round.
    folder: crate::sealing::KeyFolder,
    /// One round at a time: the background rounds and one asked for must not both append.
    busy: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// One entry as the node holds it.
struct Held {
    seq: u64,
    registered_at_micros: i64,
    sha256: [u8; 32],
}

impl KeyLogWitness {
    pub fn new(
        store: NodeStore,
        link: GatewayLink,
        clock: SharedClock,
        witness: Witness,
        org: OrgId,
        ca: Vec<u8>,
        folder: crate::sealing::KeyFolder,
    ) -> Self {
        KeyLogWitness { store, link, clock, witness, org, ca, folder, busy: Default::default() }
    }

    /// Runs a round: reads and verifies the log, checks this organization's own statements in it and
    /// raises any alarm, then registers the statements the gateway has not taken yet.
    pub async fn check_now(&self) -> Round {
        let _one_at_a_time = self.busy.lock().await;
        let mut round = match self.round().await {
            Ok(r) => r,
            Err(e) => Round::Unreachable(format!("node database: {e}")),
        };
        if matches!(round, Round::Verified { .. }) {
            match self.own_statements_in_log().await {
                Ok(Some(alarm)) => round = alarm,
                Ok(None) => {}
                Err(e) => round = Round::Unreachable(format!("node database: {e}")),
            }
        }
        if let Err(e) = crate::sealing::register_pending(&self.store, &self.link, &self.clock).await {
            tracing::warn!(error = %e.message(), "a sealing-key statement is still waiting for the gateway");
        }
        if let Err(e) = crate::sealing::rotate_if_due(&self.store, &self.link, &self.clock, &self.folder).await {
            tracing::warn!(error = %e.message(), "the organization's sealing key is due for rotation, and could not be rotated");
        }
        if let Err(e) = crate::sealing::destroy_retired(&self.store, &self.folder, &self.clock).await {
            tracing::warn!(error = %e, "retired sealing keys could not be checked");
        }
        match &round {
            // A foreign statement's alarm is raised where it is found, so that it is raised once.
            Round::Alarm(WitnessState::ForeignKey, _) => {}
            Round::Alarm(state, detail) => {
                self.witness.raise(*state, detail.clone()).await;
            }
            Round::Unreachable(why) => tracing::warn!(%why, "the key log could not be checked"),
            Round::Verified { new, .. } if *new > 0 => tracing::info!(new, "key log verified"),
            Round::Verified { .. } => {}
        }
        round
    }

    async fn round(&self) -> Result<Round, sqlx::Error> {
        let held = self.held().await?;
        let from = held.len() as u64;
        let (entries, checkpoint) = match self.read(from).await {
            Ok(r) => r,
            Err(why) => return Ok(Round::Unreachable(why)),
        };
        let Some(wire) = checkpoint else {
            if from > 0 {
                return Ok(alarm(
                    WitnessState::Fork,
                    format!("key log: the gateway serves an empty log, but this node holds {from} entries of it"),
                ));
            }
            return Ok(Round::Verified { size: 0, new: 0 });
        };
        let cp = Checkpoint::from(&wire);
        let key = match CheckpointKey::new(self.witness.gateway_cert()) {
            Ok(k) => k,
            Err(e) => {
                return Ok(alarm(WitnessState::BadSignature, format!("key log: the gateway signing certificate: {e}")));
            }
        };
        if let Err(e) = key.verify_of(KEY_LOG_ORIGIN, &cp) {
            return Ok(alarm(WitnessState::BadSignature, format!("key-log checkpoint of size {}: {e}", cp.tree_size)));
        }
        if cp.tree_size < from {
            return Ok(alarm(
                WitnessState::Fork,
                format!(
                    "key log rolled back: the gateway signed size {}, but this node holds {from} entries",
                    cp.tree_size
                ),
            ));
        }
        // The node's entries, then the new ones up to the checkpoint, must give the signed root.
        let mut tree = MemoryTree::new();
        for h in &held {
            push(&mut tree, keylog::leaf_hash(h.seq, h.registered_at_micros, &h.sha256));
        }
        let mut verified = Vec::new();
        for e in entries.iter().take_while(|e| e.seq < cp.tree_size) {
            if e.seq != tree.size() {
                return Ok(alarm(
                    WitnessState::Fork,
                    format!("key log: entry {} where {} was due", e.seq, tree.size()),
                ));
            }
            let (statement, sha, signer) = match sealing::verify_statement_by_ca(&e.statement, &self.ca) {
                Ok(v) => v,
                Err(why) => {
                    return Ok(alarm(
                        WitnessState::BadSignature,
                        format!("key log entry {}: the statement does not verify by the network CA: {why}", e.seq),
                    ));
                }
            };
            push(&mut tree, keylog::leaf_hash(e.seq, e.registered_at_micros, &sha));
            verified.push((e.clone(), statement, sha, signer));
        }
        let root = cp.root().unwrap_or_default();
        if tree.size() != cp.tree_size || tree.root() != root {
            return Ok(alarm(
                WitnessState::Fork,
                format!(
                    "key log: the checkpoint of size {} (root {}) is not the log this node holds and was served (size {}, root {}): the log was rewritten, or this node is shown another log than other nodes",
                    cp.tree_size,
                    hex::encode(root),
                    tree.size(),
                    hex::encode(tree.root())
                ),
            ));
        }
        let own = crate::sealing::own_statements(&self.store).await?;
        let mut tx = self.store.pool().begin().await?;
        for (e, s, sha, _) in &verified {
            let foreign = s.org == self.org && !own.contains(&hex::encode(sha));
            sqlx::query("INSERT INTO key_log_entry (seq, registered_at_micros, statement, statement_sha256, org, kid, action, not_before, not_after, public_key, foreign_statement) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
                .bind(db_int(e.seq))
                .bind(e.registered_at_micros)
                .bind(&e.statement)
                .bind(hex::encode(sha))
                .bind(s.org.as_str())
                .bind(&s.kid)
                .bind(s.action.as_str())
                .bind(s.not_before)
                .bind(s.not_after)
                .bind(&s.public_key)
                .bind(i64::from(foreign))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO key_log_checkpoint (tree_size, checkpoint, checked_at_micros) VALUES ($1, $2, $3) ON CONFLICT (tree_size) DO NOTHING")
            .bind(db_int(cp.tree_size))
            .bind(serde_json::to_string(&cp).unwrap_or_default())
            .bind(self.clock.now_micros())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Round::Verified { size: tree.size(), new: verified.len() as u64 })
    }

    /// This organization's statements in the log it holds: each the gateway said it took must be at
    /// the position it named, and each entry in the organization's name that its node did not make
    /// raises `foreign_sealing_key` once (again after a crash, never after an auditor's
    /// acknowledgement). Statements registered while their reply was lost are marked registered.
    async fn own_statements_in_log(&self) -> Result<Option<Round>, sqlx::Error> {
        crate::sealing::reconcile(&self.store).await?;
        for (sha, seq) in crate::sealing::acknowledged(&self.store).await? {
            let held: Option<String> = sqlx::query_scalar("SELECT statement_sha256 FROM key_log_entry WHERE seq = $1")
                .bind(seq)
                .fetch_optional(self.store.pool())
                .await?;
            if let Some(held) = held
                && held != sha
            {
                return Ok(Some(alarm(
                    WitnessState::Fork,
                    format!(
                        "key log: the gateway took this node's statement {sha} at position {seq}, but the log it signs holds another statement there"
                    ),
                )));
            }
        }
        let foreign = sqlx::query("SELECT seq, kid, action, statement FROM key_log_entry WHERE foreign_statement = 1 AND alarmed_at_micros IS NULL ORDER BY seq LIMIT 1")
            .fetch_optional(self.store.pool())
            .await?;
        let Some(row) = foreign else { return Ok(None) };
        let (seq, kid, action, jws): (i64, String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        let signer = sealing::verify_statement_by_ca(&jws, &self.ca).map(|(_, _, f)| f.to_hex()).unwrap_or_default();
        let detail = format!(
            "key log entry {seq}: a statement to {action} sealing key {kid} in this organization's name, which this node did not make (signed with certificate {signer}): someone registered a key behind its back"
        );
        self.witness.raise(WitnessState::ForeignKey, detail.clone()).await;
        sqlx::query("UPDATE key_log_entry SET alarmed_at_micros = $1 WHERE seq = $2")
            .bind(self.clock.now_micros())
            .bind(seq)
            .execute(self.store.pool())
            .await?;
        Ok(Some(Round::Alarm(WitnessState::ForeignKey, detail)))
    }

    /// The entries the node holds, in order.
    /// Checks a key-log checkpoint another node verified (carried in a sealed copy's manifest) against
    /// the log this node verified: signed by the gateway, and, at its size, the same tree. A checkpoint
    /// past this node's log is checked after one more round; still past it, it cannot be judged yet.
    /// A checkpoint of another tree is a split view: the alarm is raised here.
    pub async fn check_peer(&self, cp: &Checkpoint) -> Result<PeerView, sqlx::Error> {
        let key = match CheckpointKey::new(self.witness.gateway_cert()) {
            Ok(k) => k,
            Err(e) => return Ok(PeerView::Unsigned(format!("the gateway signing certificate: {e}"))),
        };
        match key.verify_of(KEY_LOG_ORIGIN, cp) {
            Ok(()) => {}
            // Signed with another gateway key (the gateway's signing certificate was replaced since):
            // this node cannot check it, and concludes nothing.
            Err(haven_trust::audit::CheckpointError::WrongKey { .. }) => {
                return Ok(PeerView::Ahead { held: 0, peer: cp.tree_size });
            }
            Err(e) => {
                return Ok(PeerView::Unsigned(format!(
                    "the sender's key-log checkpoint of size {}: {e}",
                    cp.tree_size
                )));
            }
        }
        // The usual case: the sender saw a checkpoint this node verified itself (same size, same root).
        let own: Option<String> = sqlx::query_scalar("SELECT checkpoint FROM key_log_checkpoint WHERE tree_size = $1")
            .bind(db_int(cp.tree_size))
            .fetch_optional(self.store.pool())
            .await?;
        if own
            .and_then(|json| serde_json::from_str::<Checkpoint>(&json).ok())
            .is_some_and(|c| c.root_hash == cp.root_hash)
        {
            return Ok(PeerView::Consistent);
        }
        let mut held = self.held().await?;
        if (held.len() as u64) < cp.tree_size {
            self.check_now().await;
            held = self.held().await?;
        }
        if (held.len() as u64) < cp.tree_size {
            return Ok(PeerView::Ahead { held: held.len() as u64, peer: cp.tree_size });
        }
        let mut tree = MemoryTree::new();
        for h in held.iter().take_while(|h| h.seq < cp.tree_size) {
            push(&mut tree, keylog::leaf_hash(h.seq, h.registered_at_micros, &h.sha256));
        }
        let root = cp.root().unwrap_or_default();
        if tree.size() != cp.tree_size || tree.root() != root {
            let detail = format!(
                "key log split view: a sealed copy carried the gateway's checkpoint of size {} (root {}), but the log this node verified has root {} at that size: the gateway shows different logs to different nodes",
                cp.tree_size,
                hex::encode(root),
                hex::encode(tree.root())
            );
            self.witness.raise(WitnessState::Fork, detail.clone()).await;
            return Ok(PeerView::Split(detail));
        }
        Ok(PeerView::Consistent)
    }

    async fn held(&self) -> Result<Vec<Held>, sqlx::Error> {
        let rows = sqlx::query("SELECT seq, registered_at_micros, statement_sha256 FROM key_log_entry ORDER BY seq")
            .fetch_all(self.store.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let sha: String = r.try_get(2)?;
                Ok(Held {
                    seq: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                    registered_at_micros: r.try_get(1)?,
                    sha256: hex::decode(&sha).ok().and_then(|b| b.try_into().ok()).unwrap_or([0; 32]),
                })
            })
            .collect()
    }

    /// The log past `from`, every page of it, and the checkpoint of the first answer (the entries
    /// read after it cover it).
    async fn read(&self, from: u64) -> Result<(Vec<haven_proto::v1::KeyLogEntry>, Option<SignedCheckpoint>), String> {
        let mut entries = Vec::new();
        let mut checkpoint = None;
        let mut next = from;
        loop {
            let request = self
                .link
                .request(&PersonId::node(), Role::Node, KeyLogRequest { from_seq: next, limit: 0 })
                .map_err(|e| e.message().to_owned())?;
            let KeyLogResponse { entries: page, checkpoint: cp } = GatewayClient::new(self.link.channel())
                .key_log(request)
                .await
                .map_err(|s| self.link.relay(s).message().to_owned())?
                .into_inner();
            if checkpoint.is_none() {
                checkpoint = cp;
            }
            let covered = checkpoint.as_ref().map_or(0, |c| c.tree_size);
            // Only what the checkpoint covers, and only forward: a gateway cannot keep a round going.
            let page: Vec<_> = page.into_iter().filter(|e| e.seq >= next && e.seq < covered).collect();
            let last = page.last().map(|e| e.seq + 1);
            entries.extend(page);
            match last {
                Some(end) if end > next && end < covered => next = end,
                _ => return Ok((entries, checkpoint)),
            }
        }
    }

    /// Runs rounds every [`ROUND`] until `stop` turns true, the first once `connected` completes: when
    /// the node's delivery stream has connected (a gateway that refuses this node is reported by the
    /// stream, not raced by a round).
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>, connected: impl Future<Output = ()>) {
        tokio::select! {
            _ = connected => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        loop {
            self.check_now().await;
            tokio::select! {
                _ = tokio::time::sleep(ROUND) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

fn push(tree: &mut MemoryTree, leaf: merkle::Hash) {
    // A tree of fewer than 2^63 leaves never refuses a push.
    let _ = tree.push(leaf);
}

fn alarm(state: WitnessState, detail: String) -> Round {
    Round::Alarm(state, detail)
}

fn db_int(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// The key log as this node verified it, from `from_seq`, at most `limit` entries (0: 1000), with the
/// newest checkpoint it found consistent.
pub async fn held_log(store: &NodeStore, from_seq: u64, limit: u32) -> Result<KeyLogResponse, sqlx::Error> {
    let limit = if limit == 0 { 1000 } else { limit.min(1000) };
    let cp = newest_checkpoint(store).await?;
    let rows = sqlx::query(
        "SELECT seq, registered_at_micros, statement FROM key_log_entry WHERE seq >= $1 ORDER BY seq LIMIT $2",
    )
    .bind(db_int(from_seq))
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    let entries = rows
        .iter()
        .map(|r| {
            Ok(haven_proto::v1::KeyLogEntry {
                seq: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                registered_at_micros: r.try_get(1)?,
                statement: r.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(KeyLogResponse { entries, checkpoint: cp.as_ref().map(SignedCheckpoint::of_key_log) })
}

/// The whole key log as this node verified it, as export lines (see `haven_trust::keylog::ExportLine`).
pub async fn export_lines(store: &NodeStore) -> Result<String, sqlx::Error> {
    let mut entries = Vec::new();
    let mut checkpoint = None;
    loop {
        let page = held_log(store, entries.len() as u64, 0).await?;
        checkpoint = checkpoint.or(page.checkpoint);
        if page.entries.is_empty() {
            break;
        }
        entries.extend(page.entries.into_iter().map(export_entry));
    }
    Ok(haven_trust::keylog::export_text(entries, checkpoint.as_ref().map(Checkpoint::from)))
}

/// An entry of the wire as an export line's entry.
pub fn export_entry(e: haven_proto::v1::KeyLogEntry) -> haven_trust::keylog::ExportEntry {
    haven_trust::keylog::ExportEntry {
        seq: e.seq,
        registered_at_micros: e.registered_at_micros,
        statement: e.statement,
    }
}

/// The key a sender may seal to for `org` at `now` (Unix seconds): the newest publication in the key
/// log this node verified that is within its window and has no withdrawal after it. `None` when the
/// organization has no such key.
pub async fn recipient_key(
    store: &NodeStore,
    org: &OrgId,
    now: i64,
) -> Result<Option<SealingKeyStatement>, sqlx::Error> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT statement FROM key_log_entry WHERE org = $1 ORDER BY seq")
        .bind(org.as_str())
        .fetch_all(store.pool())
        .await?;
    let statements = rows.iter().filter_map(|jws| sealing::verified_payload(jws)).collect();
    Ok(sealing::usable_keys(statements, now).into_iter().next())
}
