//! The export stream: the log, or a selection of it, as the JSON lines `haven_trust::export` defines,
//! with everything the offline verifier needs.
//!
//! A full export (a network auditor with no filter) carries every entry from seq 0 to the covering
//! checkpoint's size, each stored checkpoint right after the entry that completes it, and each entry's
//! leaf hash as the tree integrated it. A filtered export carries the covering checkpoint first, then
//! each selected entry with its inclusion proof against that checkpoint, as the reader may see it (see
//! [`query::Shown`]), showing nothing its leaf does not bind. Entries are read in pages, so an export
//! of any size streams in bounded memory.
//!
//! The exporter writes what the database holds, damaged or not: a row deleted or edited behind the
//! gateway's back is exported as found, and the verifier names it.

use std::collections::HashMap;

use haven_proto::v1::ExportChunk;
use haven_trust::audit::Checkpoint;
use haven_trust::export::{Header, Line};
use haven_trust::merkle::{self, Hash, NodeId};
use tokio::sync::mpsc;
use tonic::Status;

use super::log::{AuditLog, LogError};
use super::query::{self, Filter, Scope};
use crate::error::Error;

/// Entries read per database round trip.
const PAGE: u32 = 1000;
/// Bytes per chunk sent.
const CHUNK: usize = 64 * 1024;

/// Where lines go: whole lines, batched into chunks.
struct Out {
    tx: mpsc::Sender<Result<ExportChunk, Status>>,
    buf: String,
}

impl Out {
    async fn line(&mut self, line: Line<'_>) -> Result<(), ()> {
        self.buf.push_str(&line.to_json_line());
        if self.buf.len() >= CHUNK { self.flush().await } else { Ok(()) }
    }

    async fn flush(&mut self) -> Result<(), ()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf).into_bytes();
        self.tx.send(Ok(ExportChunk { data })).await.map_err(|_| ())
    }

    async fn fail(&mut self, e: impl Into<Error>) {
        let _ = self.flush().await;
        let _ = self.tx.send(Err(e.into().into())).await;
    }
}

/// Streams an export covered by `covering` into `tx` (the receiver may go away at any time).
pub async fn run(
    log: AuditLog,
    scope: Scope,
    filter: Filter,
    header: Header,
    covering: Checkpoint,
    tx: mpsc::Sender<Result<ExportChunk, Status>>,
) {
    let mut out = Out { tx, buf: String::with_capacity(CHUNK + 4096) };
    let full = scope == Scope::All && filter.is_empty();
    let result = if full {
        full_export(&log, &header, &covering, &mut out).await
    } else {
        filtered_export(&log, &scope, &filter, &header, &covering, &mut out).await
    };
    match result {
        Ok(Ok(())) => {
            let _ = out.flush().await;
        }
        Ok(Err(())) => {} // the receiver went away
        Err(e) => out.fail(e).await,
    }
}

async fn full_export(
    log: &AuditLog,
    header: &Header,
    covering: &Checkpoint,
    out: &mut Out,
) -> Result<Result<(), ()>, LogError> {
    let n = covering.tree_size;
    let pool = log.store().pool().clone();
    let checkpoints = log.checkpoints_upto(n).await?;
    let mut pending = checkpoints.iter().peekable();
    let (mut entries, mut written_cps) = (0u64, 0u64);
    if out.line(Line::Header(header)).await.is_err() {
        return Ok(Err(()));
    }
    let mut from = 0u64;
    loop {
        while let Some(cp) = pending.next_if(|cp| cp.tree_size <= from) {
            if out.line(Line::Checkpoint(cp)).await.is_err() {
                return Ok(Err(()));
            }
            written_cps += 1;
        }
        if from >= n {
            break;
        }
        let to = (from + u64::from(PAGE)).min(n);
        let page = super::read_range(&pool, from, to).await?;
        let leaves: HashMap<u64, Hash> = log.leaves(from, to).await?.into_iter().collect();
        for entry in &page {
            let leaf = leaves.get(&entry.seq).map(hex::encode).unwrap_or_default();
            let line = Line::Entry {
                entry,
                leaf,
                subject_commitment: None,
                counterparty_subject_commitment: None,
                proof: None,
            };
            if out.line(line).await.is_err() {
                return Ok(Err(()));
            }
            entries += 1;
            while let Some(cp) = pending.next_if(|cp| cp.tree_size <= entry.seq + 1) {
                if out.line(Line::Checkpoint(cp)).await.is_err() {
                    return Ok(Err(()));
                }
                written_cps += 1;
            }
        }
        from = to;
    }
    Ok(out.line(Line::End { entries, checkpoints: written_cps }).await)
}

async fn filtered_export(
    log: &AuditLog,
    scope: &Scope,
    filter: &Filter,
    header: &Header,
    covering: &Checkpoint,
    out: &mut Out,
) -> Result<Result<(), ()>, LogError> {
    let n = covering.tree_size;
    let pool = log.store().pool().clone();
    if out.line(Line::Header(header)).await.is_err() || out.line(Line::Checkpoint(covering)).await.is_err() {
        return Ok(Err(()));
    }
    let mut entries = 0u64;
    let mut from = 0u64;
    while from < n {
        let page = query::select(&pool, scope, filter, from, Some(n), PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.entry.seq + 1;
        // Every subtree the page's proofs need, in a few queries.
        let mut ids: Vec<NodeId> = Vec::new();
        for shown in &page {
            ids.extend(
                merkle::inclusion_proof_nodes(shown.entry.seq, n).map_err(|e| LogError::Damaged(e.to_string()))?,
            );
            ids.push(NodeId { level: 0, index: shown.entry.seq });
        }
        ids.sort_unstable();
        ids.dedup();
        let nodes = log.nodes(&ids).await?;
        for shown in &page {
            let seq = shown.entry.seq;
            let proof = merkle::inclusion_proof(&nodes, seq, n).map_err(|e| LogError::Damaged(e.to_string()))?;
            let leaf =
                merkle::NodeSource::subtree_hash(&nodes, 0, seq).map_err(|e| LogError::Damaged(e.to_string()))?;
            let line = Line::Entry {
                entry: &shown.exported(),
                leaf: hex::encode(leaf),
                subject_commitment: shown.subject_commitment.map(hex::encode),
                counterparty_subject_commitment: shown.counterparty_subject_commitment.map(hex::encode),
                proof: Some(proof.iter().map(hex::encode).collect()),
            };
            if out.line(line).await.is_err() {
                return Ok(Err(()));
            }
            entries += 1;
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    Ok(out.line(Line::End { entries, checkpoints: 1 }).await)
}
