//! The public key log (`Gateway.RegisterSealingKey`, `Gateway.KeyLog`): sealing-key statements,
//! verified against the registry's signing pins before anything is stored, appended to a log of their
//! own with the same RFC 6962 tree as the audit trail, and a new signed checkpoint per append.
//!
//! What is checked, in order: the caller is an organization's node; the statement is at most 16 KiB, of
//! its own `typ`, signed with a pinned signing key of the caller's own organization, for that
//! organization, with a known suite, a real key named by its id and a live window
//! (`haven_trust::sealing`); a withdrawal names a key the organization published and did not withdraw
//! already; a publication names a key not seen before. The same statement again is answered with its
//! first entry.

use haven_proto::v1::{KeyLogEntry, KeyLogResponse, RegisterSealingKeyResponse, SignedCheckpoint};
use haven_sharing::policy::Bundle;
use haven_trust::audit::CheckpointSigner;
use haven_trust::ids::{Caller, Role};
use haven_trust::keylog::{self, KEY_LOG_ORIGIN};
use haven_trust::merkle::{self, MemoryTree};
use haven_trust::sealing::{self, StatementAction, StatementError};

use crate::error::Error;
use crate::store::Store;
use crate::store::key_log::{self, NewEntry};
use crate::store::merkle::{self as checkpoints, StoredCheckpoint};

/// The most entries one `KeyLog` answer holds.
pub const MAX_ENTRIES_PER_ANSWER: u32 = 1000;

/// Registers a statement at `now_micros`; returns its entry and the checkpoint that covers it.
pub async fn register(
    store: &Store,
    signer: &CheckpointSigner,
    bundle: &Bundle,
    caller: &Caller,
    jws: &str,
    now_micros: i64,
) -> Result<RegisterSealingKeyResponse, Error> {
    if caller.role != Role::Node {
        return Err(Error::PermissionDenied(format!(
            "sealing keys are registered by an organization's node (role node), not by role {}",
            caller.role
        )));
    }
    if jws.len() > sealing::MAX_STATEMENT_BYTES {
        return Err(refusal(StatementError::TooLarge(jws.len())));
    }
    // A statement stored before is answered with its entry, however old it is now: a node whose
    // reply was lost sends the same bytes again.
    let sha = sealing::statement_sha256(jws);
    if let Some(seq) = key_log::stored_seq(store.pool(), &sha).await? {
        let checkpoint = newest(store).await?;
        return Ok(RegisterSealingKeyResponse { seq, statement_sha256: hex::encode(sha), replayed: true, checkpoint });
    }
    let (statement, _) =
        sealing::verify_statement(jws, bundle.registry(), now_micros.div_euclid(1_000_000)).map_err(refusal)?;
    if statement.org != caller.org {
        return Err(Error::PermissionDenied(format!(
            "organization `{}` may register only its own keys: the statement is signed by and for `{}`",
            caller.org, statement.org
        )));
    }
    let mut tx = store.begin().await?;
    key_log::lock(&mut tx).await?;
    if let Some(seq) = key_log::by_statement(&mut tx, &sha).await? {
        tx.rollback().await?;
        let checkpoint = newest(store).await?;
        return Ok(RegisterSealingKeyResponse { seq, statement_sha256: hex::encode(sha), replayed: true, checkpoint });
    }
    let seen = key_log::actions_of(&mut tx, statement.org.as_str(), &statement.kid).await?;
    match statement.action {
        StatementAction::Publish if !seen.is_empty() => {
            return Err(Error::FailedPrecondition(format!(
                "key {} was published before; a key is published once (make a new one with `haven-node keys rotate`)",
                statement.kid
            )));
        }
        StatementAction::Withdraw if !seen.iter().any(|a| a == "publish") => {
            return Err(Error::FailedPrecondition(format!(
                "key {} was never published by `{}`, so it cannot be withdrawn",
                statement.kid, statement.org
            )));
        }
        StatementAction::Withdraw if seen.iter().any(|a| a == "withdraw") => {
            return Err(Error::FailedPrecondition(format!("key {} is already withdrawn", statement.kid)));
        }
        _ => {}
    }
    let mut tree = MemoryTree::new();
    for leaf in key_log::leaves(&mut tx).await? {
        tree.push(merkle::hash_from_slice(&leaf).map_err(|e| Error::Internal(format!("key log leaf: {e}")))?)
            .map_err(|e| Error::Internal(format!("key log tree: {e}")))?;
    }
    let seq = tree.size();
    let leaf = keylog::leaf_hash(seq, now_micros, &sha);
    let entry = NewEntry {
        registered_at_micros: now_micros,
        org: statement.org.as_str(),
        key_id: &statement.kid,
        action: statement.action.as_str(),
        statement: jws,
        statement_sha256: &sha,
    };
    key_log::append(&mut tx, seq, &entry, &leaf).await?;
    tree.push(leaf).map_err(|e| Error::Internal(format!("key log tree: {e}")))?;
    let cp = signer.sign_of(KEY_LOG_ORIGIN, tree.size(), &tree.root(), now_micros);
    checkpoints::insert_checkpoint(&mut tx, checkpoints::Signed::KeyLog, &StoredCheckpoint::of(&cp)).await?;
    tx.commit().await?;
    store.sealing_keys.clear();
    tracing::info!(org = %statement.org, key = %statement.kid, action = statement.action.as_str(), seq, "sealing-key statement registered");
    Ok(RegisterSealingKeyResponse {
        seq,
        statement_sha256: hex::encode(sha),
        replayed: false,
        checkpoint: Some(SignedCheckpoint::of_key_log(&cp)),
    })
}

/// The log from `from_seq`, at most `limit` entries (0: the most), with the newest checkpoint; to be
/// answered once what it read is on disk (`Store::settle`).
pub async fn read(store: &Store, from_seq: u64, limit: u32) -> Result<crate::store::Unsettled<KeyLogResponse>, Error> {
    let limit = if limit == 0 { MAX_ENTRIES_PER_ANSWER } else { limit.min(MAX_ENTRIES_PER_ANSWER) };
    // The checkpoint first: the entries read after it cover at least what it signs.
    let checkpoint = newest(store).await?;
    let entries = key_log::entries(store.pool(), from_seq, limit)
        .await?
        .into_iter()
        .map(|e| KeyLogEntry { seq: e.seq, registered_at_micros: e.registered_at_micros, statement: e.statement })
        .collect();
    Ok(crate::store::Unsettled::read(KeyLogResponse { entries, checkpoint }))
}

async fn newest(store: &Store) -> Result<Option<SignedCheckpoint>, Error> {
    Ok(key_log::newest_checkpoint(store.pool()).await?.map(wire))
}

fn wire(cp: StoredCheckpoint) -> SignedCheckpoint {
    SignedCheckpoint::of_key_log(&cp.checkpoint())
}

/// A statement's refusal as the matching status: another organization's key is PERMISSION_DENIED,
/// everything else INVALID_ARGUMENT, each with its reason.
fn refusal(e: StatementError) -> Error {
    use haven_trust::token::TokenError;
    match &e {
        StatementError::OtherOrganization { .. }
        | StatementError::Signature(TokenError::UnknownKey(_) | TokenError::OtherOrganizationKey { .. }) => {
            Error::PermissionDenied(e.to_string())
        }
        _ => Error::InvalidArgument(e.to_string()),
    }
}
