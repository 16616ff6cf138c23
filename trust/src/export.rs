//! The audit export format (JSON lines) and the offline verifier that both `haven-gateway audit verify`
//! and `haven-node audit verify` run.
//!
//! An export is UTF-8 text, one JSON object per line, each ending with `\n`; the `type` key says what a
//! line is. The reference is `docs/audit-export.md`; in short:
//!
//! - **full** export (a network auditor, no filter): a `header`, then every entry from seq 0 in order,
//!   with each stored `checkpoint` placed right after the entry that completes its tree size, the last
//!   one covering every entry, then `end`. The verifier rebuilds the Merkle tree from the entries'
//!   content and compares each signed root as it passes.
//! - **filtered** export (a filter, or a privacy officer's scope): a `header`, the covering `checkpoint`,
//!   then the matching entries in seq order, each with its inclusion proof against that checkpoint, then
//!   `end`. Where a privacy officer must not see the controller's subject pseudonym, the entry shows the
//!   recipient-scoped one, which the leaf commits to (encoding version 3), and the line carries the
//!   `subject_commitment` to the controller's. Where an officer must not see the counterparty's pseudonym,
//!   the line carries its `counterparty_subject_commitment` instead. Whatever an entry shows, the leaf
//!   binds: a redacted entry of version 2, whose leaf does not bind the recipient-scoped pseudonym, shows
//!   none.
//!
//! Checkpoints collected elsewhere (a node's witness, an earlier export) are checked against the
//! export: any two must describe one log, or the verifier reports a fork. Consistency proofs for sizes
//! the export cannot recompute come in `consistency` lines of those files.
//!
//! Verification reads the export once, line by line into one reused buffer, borrows strings from it
//! and hashes entries without building their encoding, so it runs in constant memory (plus the
//! checkpoints) at well over a million entries a second.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};

use crate::audit::{
    AuditEntry, Checkpoint, CheckpointKey, ENCODING_VERSION, Encoding, EntryFields, counterparty_subject_commitment,
    subject_commitment,
};
use crate::merkle::{self, CompactTree, Hash};

/// The `format` of every export header.
pub const FORMAT: &str = "haven.audit.export/v1";

/// Whether an export holds the whole log or a selection of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Every entry from seq 0, with the stored checkpoints between them.
    Full,
    /// Some entries, each with an inclusion proof against the covering checkpoint.
    Filtered,
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The newest canonical entry encoding the entries may use ([`ENCODING_VERSION`]); each entry
    /// names its own.
    pub encoding_version: u8,
    pub kind: Kind,
    /// The size of the covering checkpoint.
    pub tree_size: u64,
    pub exported_at_micros: i64,
    /// Who asked for the export, as the gateway authenticated them.
    pub exported_by_org: String,
    pub exported_by_person: String,
    pub exported_by_role: String,
    /// The filter, as given (empty values are absent filters).
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
}

/// A consistency proof between two tree sizes, hashes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyLine {
    pub first_size: u64,
    pub second_size: u64,
    pub hashes: Vec<String>,
}

/// One line of an export or of a checkpoint file, for writing.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line<'a> {
    Header(&'a Header),
    Entry {
        entry: &'a AuditEntry,
        /// The leaf hash (hex) the log integrated for this seq.
        leaf: String,
        /// A redacted entry: the commitment to the controller's subject, which the entry does not
        /// show; `entry.subject` is then the counterparty's pseudonym (bound by a version 3 leaf, and
        /// empty in a version 2 entry, whose leaf does not bind it).
        #[serde(skip_serializing_if = "Option::is_none")]
        subject_commitment: Option<String>,
        /// The commitment to the counterparty's pseudonym, where the reader may not see it (the
        /// actor's own privacy officer); `entry.counterparty_subject` is then empty.
        #[serde(skip_serializing_if = "Option::is_none")]
        counterparty_subject_commitment: Option<String>,
        /// Filtered exports: the inclusion proof against the covering checkpoint, lowest first.
        #[serde(skip_serializing_if = "Option::is_none")]
        proof: Option<Vec<String>>,
    },
    Checkpoint(&'a Checkpoint),
    Consistency(&'a ConsistencyLine),
    End {
        entries: u64,
        checkpoints: u64,
    },
}

impl Line<'_> {
    /// The line as JSON, with its `\n`.
    pub fn to_json_line(&self) -> String {
        // Serializing these plain structs cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Why an export (or a checkpoint file) does not verify. Every variant names the first place that is
/// wrong: a line of the export, a seq, or a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The gateway signing certificate could not be read.
    #[error("gateway signing certificate {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// A line is not what the format allows (bad JSON, an unknown key, bad hex, ...).
    #[error("{source_name} line {line}: malformed: {reason}")]
    Malformed { source_name: String, line: u64, reason: String },
    /// A line is not UTF-8.
    #[error("{source_name} line {line}: not UTF-8 text")]
    NotUtf8 { source_name: String, line: u64 },
    /// The file ends in the middle of a line.
    #[error("{source_name} line {line}: truncated in the middle of the line (no newline at the end of the file)")]
    TruncatedLine { source_name: String, line: u64 },
    /// The file is empty or does not start with a header.
    #[error("line {line}: an export starts with a header line of format `{FORMAT}`: {reason}")]
    BadHeader { line: u64, reason: String },
    /// An entry's content does not hash to the leaf the log integrated.
    #[error("line {line}: seq {seq} was edited: its content does not match the leaf hash the log integrated")]
    EditedEntry { line: u64, seq: u64 },
    /// A seq is missing from a full export.
    #[error("line {line}: seq {expected} is missing (deleted): the next entry has seq {found}")]
    MissingEntry { line: u64, expected: u64, found: u64 },
    /// An entry's seq is not after the previous one.
    #[error("line {line}: seq {seq} is out of order (reordered or inserted): expected seq {expected} or later")]
    OutOfOrder { line: u64, seq: u64, expected: u64 },
    /// A filtered export holds an entry its checkpoint does not cover.
    #[error("line {line}: seq {seq} is not covered by the checkpoint of size {tree_size}: it was inserted")]
    NotCovered { line: u64, seq: u64, tree_size: u64 },
    /// A redacted entry of encoding version 2 shows a subject, which its leaf does not bind.
    #[error(
        "line {line}: seq {seq} shows a subject its leaf does not bind (a redacted entry of encoding version 2 shows none): the shown subject was added or changed"
    )]
    UnboundSubject { line: u64, seq: u64 },
    /// An entry of a filtered export fails its inclusion proof.
    #[error("line {line}: seq {seq} is not in the signed log (edited, or inserted later): inclusion proof: {reason}")]
    NotIncluded { line: u64, seq: u64, reason: String },
    /// A checkpoint's signature does not verify with the gateway's key.
    #[error("{source_name}: checkpoint of size {tree_size}: bad signature: {reason}")]
    BadSignature { source_name: String, tree_size: u64, reason: String },
    /// A signed root does not match the entries before it.
    #[error(
        "line {line}: the signed checkpoint of size {tree_size} does not match the entries: an entry with seq in [{from}, {tree_size}) was edited, inserted or removed"
    )]
    RootMismatch { line: u64, tree_size: u64, from: u64 },
    /// A checkpoint sits where its size does not match the entries before it.
    #[error("line {line}: checkpoint of size {tree_size} follows {entries} entries (entries were removed or inserted)")]
    MisplacedCheckpoint { line: u64, tree_size: u64, entries: u64 },
    /// Entries after the last checkpoint.
    #[error(
        "seq {from} and later are not covered by a signed checkpoint: entries were added after signing, or the checkpoint was removed"
    )]
    Uncovered { from: u64 },
    /// The export ends before it should.
    #[error("the export is truncated: {reason}")]
    Truncated { reason: String },
    /// Something follows the end line.
    #[error("line {line}: data after the end line")]
    TrailingData { line: u64 },
    /// Two signed checkpoints cannot both describe this log.
    #[error("fork: {a} and {b} are signed checkpoints of two different logs ({reason})")]
    Fork { a: String, b: String, reason: String },
    /// A checkpoint cannot be checked against the export without a consistency proof.
    #[error(
        "{source_name}: checkpoint of size {tree_size} cannot be checked against the export (size {export_size}) without a consistency proof between them: export again, or add the proof (`haven-node audit checkpoint --consistency-from {min}`)",
        min = .export_size.min(.tree_size)
    )]
    NeedsProof { source_name: String, tree_size: u64, export_size: u64 },
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub kind: Kind,
    /// Entries verified.
    pub entries: u64,
    /// Signed checkpoints in the export, all verified.
    pub checkpoints: u64,
    /// The covering checkpoint.
    pub covering: Checkpoint,
    /// Independent checkpoints found consistent with the export.
    pub independent: u64,
    /// Redacted entries of an export of encoding version 2 (made before version 3) that show a
    /// subject: their leaves do not bind it, so nothing here proves it.
    pub unbound_subjects: u64,
}

/// The fields of an entry line, borrowed from the line where possible.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn<'a> {
    seq: u64,
    time_micros: i64,
    #[serde(borrow)]
    actor_org: Cow<'a, str>,
    #[serde(borrow)]
    actor_person: Cow<'a, str>,
    #[serde(borrow)]
    actor_role: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    object_id: Cow<'a, str>,
    #[serde(borrow)]
    counterparty: Cow<'a, str>,
    #[serde(borrow)]
    subject: Cow<'a, str>,
    #[serde(borrow)]
    purpose: Cow<'a, str>,
    #[serde(borrow)]
    consent_id: Cow<'a, str>,
    #[serde(borrow)]
    rule_ids: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    bundle_version: Cow<'a, str>,
    #[serde(borrow)]
    decision: Cow<'a, str>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    released_fields: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    withheld_fields: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    outcome: Cow<'a, str>,
    #[serde(borrow)]
    correlation_id: Cow<'a, str>,
    #[serde(borrow)]
    source_node: Cow<'a, str>,
    #[serde(default, borrow)]
    counterparty_subject: Cow<'a, str>,
    /// Absent before version 3.
    #[serde(default)]
    encoding_version: Option<u8>,
}

impl EntryIn<'_> {
    fn leaf(&self, encoding: Encoding, subject: &Hash, counterparty_subject: &Hash) -> Hash {
        EntryFields {
            encoding,
            seq: self.seq,
            time_micros: self.time_micros,
            actor_org: &self.actor_org,
            actor_person: &self.actor_person,
            actor_role: &self.actor_role,
            action: &self.action,
            object_id: &self.object_id,
            counterparty: &self.counterparty,
            subject_commitment: subject,
            counterparty_subject_commitment: counterparty_subject,
            purpose: &self.purpose,
            consent_id: &self.consent_id,
            rule_ids: &self.rule_ids,
            bundle_version: &self.bundle_version,
            decision: &self.decision,
            reason: &self.reason,
            released_fields: &self.released_fields,
            withheld_fields: &self.withheld_fields,
            outcome: &self.outcome,
            correlation_id: &self.correlation_id,
            source_node: &self.source_node,
        }
        .leaf_hash()
    }
}

/// Any line, for reading: every key of every line type, each optional; `kind` says which apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    // entry
    #[serde(default, borrow)]
    entry: Option<EntryIn<'a>>,
    #[serde(default, borrow)]
    leaf: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    subject_commitment: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    counterparty_subject_commitment: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    proof: Option<Vec<Cow<'a, str>>>,
    // header
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    encoding_version: Option<u8>,
    #[serde(default, rename = "kind")]
    export_kind: Option<Kind>,
    #[serde(default)]
    exported_at_micros: Option<i64>,
    #[serde(default)]
    exported_by_org: Option<String>,
    #[serde(default)]
    exported_by_person: Option<String>,
    #[serde(default)]
    exported_by_role: Option<String>,
    #[serde(default)]
    filter: Option<BTreeMap<String, String>>,
    // checkpoint (tree_size is shared with the header)
    #[serde(default)]
    tree_size: Option<u64>,
    #[serde(default)]
    root_hash: Option<String>,
    #[serde(default)]
    timestamp_micros: Option<i64>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    // consistency
    #[serde(default)]
    first_size: Option<u64>,
    #[serde(default)]
    second_size: Option<u64>,
    #[serde(default)]
    hashes: Option<Vec<String>>,
    // end
    #[serde(default)]
    entries: Option<u64>,
    #[serde(default)]
    checkpoints: Option<u64>,
}

/// A line's type, for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Header,
    Entry,
    Checkpoint,
    Consistency,
    End,
}

impl LineIn<'_> {
    fn line_kind(&self, default: Option<LineKind>) -> Result<LineKind, String> {
        match self.kind.as_deref() {
            Some("header") => Ok(LineKind::Header),
            Some("entry") => Ok(LineKind::Entry),
            Some("checkpoint") => Ok(LineKind::Checkpoint),
            Some("consistency") => Ok(LineKind::Consistency),
            Some("end") => Ok(LineKind::End),
            Some(other) => Err(format!(
                "unknown line type `{}` (known: header, entry, checkpoint, consistency, end)",
                crate::untrusted::shown(other)
            )),
            None => default.ok_or_else(|| "missing `type`".to_owned()),
        }
    }

    fn checkpoint(&self) -> Result<Checkpoint, String> {
        let missing = |k: &str| format!("checkpoint line without `{k}`");
        Ok(Checkpoint {
            tree_size: self.tree_size.ok_or_else(|| missing("tree_size"))?,
            root_hash: self.root_hash.clone().ok_or_else(|| missing("root_hash"))?,
            timestamp_micros: self.timestamp_micros.ok_or_else(|| missing("timestamp_micros"))?,
            signature: self.signature.clone().ok_or_else(|| missing("signature"))?,
            key_id: self.key_id.clone().ok_or_else(|| missing("key_id"))?,
        })
    }

    fn consistency(&self) -> Result<(u64, u64, Vec<Hash>), String> {
        let missing = |k: &str| format!("consistency line without `{k}`");
        let first = self.first_size.ok_or_else(|| missing("first_size"))?;
        let second = self.second_size.ok_or_else(|| missing("second_size"))?;
        let hashes = self.hashes.as_ref().ok_or_else(|| missing("hashes"))?;
        let hashes = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| parse_hash(h).map_err(|e| format!("hashes[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((first, second, hashes))
    }
}

/// The value of each hex digit, or 0xff.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Reads 64 hex characters (either case) into a hash, without allocating.
fn parse_hash(hex_text: &str) -> Result<Hash, String> {
    let bytes = hex_text.as_bytes();
    let mut out = [0u8; 32];
    if bytes.len() != 64 {
        return Err("expected 64 hex characters".to_owned());
    }
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | (lo & 0x0f);
    }
    if bad & 0xf0 != 0 {
        return Err("expected 64 hex characters".to_owned());
    }
    Ok(out)
}

/// Reads the lines of one source, numbering them, with one reused buffer.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    number: u64,
    name: String,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R, name: String) -> Self {
        Lines { reader, buf: Vec::with_capacity(4096), number: 0, name }
    }

    /// The next line's number and text without its `\n`, or `None` at the end.
    fn next_line(&mut self) -> Result<Option<(u64, &str)>, VerifyError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| VerifyError::Io { path: PathBuf::from(&self.name), source })?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        if self.buf.last() != Some(&b'\n') {
            return Err(VerifyError::TruncatedLine { source_name: self.name.clone(), line: self.number });
        }
        self.buf.pop();
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        std::str::from_utf8(&self.buf)
            .map(|text| Some((self.number, text)))
            .map_err(|_| VerifyError::NotUtf8 { source_name: self.name.clone(), line: self.number })
    }
}

fn malformed(name: &str, line: u64, reason: impl Into<String>) -> VerifyError {
    VerifyError::Malformed { source_name: name.to_owned(), line, reason: reason.into() }
}

/// A signed checkpoint read from somewhere, with where it came from.
#[derive(Debug, Clone)]
pub struct SourcedCheckpoint {
    /// `FILE line N`, for messages.
    pub source: String,
    pub checkpoint: Checkpoint,
    root: Hash,
}

/// Checkpoints and consistency proofs collected independently of an export (from nodes, earlier
/// exports, `haven-node audit checkpoint`).
#[derive(Debug, Clone, Default)]
pub struct Independent {
    pub checkpoints: Vec<SourcedCheckpoint>,
    /// (first size, second size) → proof.
    proofs: BTreeMap<(u64, u64), Vec<Hash>>,
}

impl Independent {
    /// Reads a checkpoint file: JSON lines of `checkpoint` objects (the `type` key may be left out) and
    /// `consistency` objects. Each checkpoint's signature is checked with the gateway's certificate.
    pub fn add_file(&mut self, name: &str, reader: impl BufRead, key_der: &[u8]) -> Result<(), VerifyError> {
        let mut lines = Lines::new(reader, name.to_owned());
        while let Some((number, text)) = lines.next_line()? {
            if text.trim().is_empty() {
                continue;
            }
            let line: LineIn<'_> = serde_json::from_str(text).map_err(|e| malformed(name, number, e.to_string()))?;
            match line.line_kind(Some(LineKind::Checkpoint)).map_err(|e| malformed(name, number, e))? {
                LineKind::Checkpoint => {
                    let cp = line.checkpoint().map_err(|e| malformed(name, number, e))?;
                    self.add_checkpoint(format!("{name} line {number}"), cp, key_der)?;
                }
                LineKind::Consistency => {
                    let (a, b, proof) = line.consistency().map_err(|e| malformed(name, number, e))?;
                    self.proofs.insert((a, b), proof);
                }
                other => {
                    return Err(malformed(
                        name,
                        number,
                        format!("a checkpoint file holds checkpoint and consistency lines, not {other:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Adds one checkpoint after checking its signature.
    pub fn add_checkpoint(&mut self, source: String, cp: Checkpoint, key_der: &[u8]) -> Result<(), VerifyError> {
        cp.verify(key_der).map_err(|e| VerifyError::BadSignature {
            source_name: source.clone(),
            tree_size: cp.tree_size,
            reason: e.to_string(),
        })?;
        let root = cp.root().map_err(|e| VerifyError::BadSignature {
            source_name: source.clone(),
            tree_size: cp.tree_size,
            reason: e.to_string(),
        })?;
        self.checkpoints.push(SourcedCheckpoint { source, checkpoint: cp, root });
        Ok(())
    }

    /// Adds a consistency proof.
    pub fn add_proof(&mut self, first: u64, second: u64, proof: Vec<Hash>) {
        self.proofs.insert((first, second), proof);
    }

    /// Checks that every pair of independent checkpoints of equal size agree.
    fn check_pairs(&self) -> Result<(), VerifyError> {
        for (i, a) in self.checkpoints.iter().enumerate() {
            for b in &self.checkpoints[i + 1..] {
                if a.checkpoint.tree_size == b.checkpoint.tree_size && a.root != b.root {
                    return Err(VerifyError::Fork {
                        a: a.source.clone(),
                        b: b.source.clone(),
                        reason: format!("both have size {} but different roots", a.checkpoint.tree_size),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks two checkpoints of different sizes with a collected consistency proof.
    fn check_with_proof(
        &self,
        known: (&str, u64, &Hash),
        other: &SourcedCheckpoint,
        export_size: u64,
    ) -> Result<(), VerifyError> {
        let (name, size, root) = known;
        let (s1, r1, s2, r2) = if size < other.checkpoint.tree_size {
            (size, root, other.checkpoint.tree_size, &other.root)
        } else {
            (other.checkpoint.tree_size, &other.root, size, root)
        };
        if s1 == 0 {
            // Every log extends the empty one.
            return Ok(());
        }
        let proof = self.proofs.get(&(s1, s2)).ok_or_else(|| VerifyError::NeedsProof {
            source_name: other.source.clone(),
            tree_size: other.checkpoint.tree_size,
            export_size,
        })?;
        merkle::verify_consistency(s1, s2, r1, r2, proof).map_err(|e| VerifyError::Fork {
            a: name.to_owned(),
            b: other.source.clone(),
            reason: format!("consistency proof from size {s1} to {s2}: {e}"),
        })
    }
}

/// Bytes of the export handed to a worker at a time (whole lines).
const BLOCK: usize = 1 << 20;
/// Blocks read ahead of the checks.
const IN_FLIGHT: usize = 8;

/// What a worker found wrong with a line; the line number is added in order.
enum Bad {
    Malformed(String),
    NotUtf8,
    Truncated,
    Edited { seq: u64 },
    Io(String),
}

/// One line, parsed and (for an entry) hashed.
enum Item {
    Header(Result<Header, String>),
    Entry {
        seq: u64,
        leaf: Hash,
        proof: Option<Vec<Hash>>,
        encoding: Encoding,
        /// A redacted entry of version 2 that shows a subject its leaf does not bind.
        unbound: bool,
    },
    /// A checkpoint and whether its signature verified (checked by the worker, reported in order).
    Checkpoint(Checkpoint, Result<(), String>),
    Consistency,
    End {
        entries: u64,
        checkpoints: u64,
    },
}

/// An entry line's encoding and the (subject, counterparty subject) commitments its leaf is built from,
/// and whether it shows a subject the leaf does not bind.
///
/// Everything a version 3 entry shows is bound: a redacted entry shows the counterparty's pseudonym as
/// its `subject` and gives the commitment to the controller's; any other entry shows its subject and
/// either shows the counterparty's pseudonym or gives its commitment. A version 2 leaf binds no
/// counterparty pseudonym, so a version 2 entry shows none (the caller decides what a redacted version 2
/// entry that shows a subject means).
fn commitments(line: &LineIn<'_>, entry: &EntryIn<'_>) -> Result<(Encoding, (Hash, Hash), bool), Bad> {
    let seq = entry.seq;
    let hash_of = |name: &str, h: &Option<Cow<'_, str>>| -> Result<Option<Hash>, Bad> {
        h.as_deref().map(|h| parse_hash(h).map_err(|e| Bad::Malformed(format!("{name}: {e}")))).transpose()
    };
    let given_subject = hash_of("subject_commitment", &line.subject_commitment)?;
    let given_counterparty = hash_of("counterparty_subject_commitment", &line.counterparty_subject_commitment)?;
    let encoding = match entry.encoding_version {
        None => Encoding::V2,
        Some(v) => Encoding::of_version(v).ok_or_else(|| {
            Bad::Malformed(format!("entry.encoding_version {v} is not one this verifier knows (2, 3)"))
        })?,
    };
    let shows_counterparty = !entry.counterparty_subject.is_empty();
    if given_counterparty.is_some() && shows_counterparty {
        return Err(Bad::Malformed(
            "an entry gives either `entry.counterparty_subject` or `counterparty_subject_commitment`, not both".into(),
        ));
    }
    match encoding {
        Encoding::V2 => {
            if shows_counterparty || given_counterparty.is_some() {
                return Err(Bad::Malformed(
                    "an entry of encoding version 2 has no counterparty subject: its leaf does not bind one".into(),
                ));
            }
            let unbound = given_subject.is_some() && !entry.subject.is_empty();
            let subject = given_subject.unwrap_or_else(|| subject_commitment(seq, &entry.subject));
            Ok((encoding, (subject, [0; 32]), unbound))
        }
        Encoding::V3 => match given_subject {
            Some(subject) => {
                if shows_counterparty || given_counterparty.is_some() {
                    return Err(Bad::Malformed(
                        "a redacted entry (with `subject_commitment`) shows the counterparty's pseudonym as its `subject`, and nothing else about it".into(),
                    ));
                }
                Ok((encoding, (subject, counterparty_subject_commitment(seq, &entry.subject)), false))
            }
            None => {
                let counterparty = given_counterparty
                    .unwrap_or_else(|| counterparty_subject_commitment(seq, &entry.counterparty_subject));
                Ok((encoding, (subject_commitment(seq, &entry.subject), counterparty), false))
            }
        },
    }
}

/// Parses and hashes one line: everything about a line that does not depend on the lines before it.
fn parse_line(text: &str, key: &CheckpointKey) -> Result<Item, Bad> {
    let text = text.strip_suffix('\r').unwrap_or(text);
    let line: LineIn<'_> = serde_json::from_str(text).map_err(|e| Bad::Malformed(e.to_string()))?;
    Ok(match line.line_kind(None).map_err(Bad::Malformed)? {
        LineKind::Header => Item::Header(header_of(&line)),
        LineKind::Entry => {
            let entry = line.entry.as_ref().ok_or_else(|| Bad::Malformed("entry line without `entry`".into()))?;
            let seq = entry.seq;
            let (encoding, commitments, unbound) = commitments(&line, entry)?;
            let leaf = entry.leaf(encoding, &commitments.0, &commitments.1);
            if let Some(stated) = line.leaf.as_deref()
                && parse_hash(stated).map_err(|e| Bad::Malformed(format!("leaf: {e}")))? != leaf
            {
                return Err(Bad::Edited { seq });
            }
            let proof = match &line.proof {
                None => None,
                Some(p) => Some(
                    p.iter()
                        .enumerate()
                        .map(|(i, h)| parse_hash(h).map_err(|e| Bad::Malformed(format!("proof[{i}]: {e}"))))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            Item::Entry { seq, leaf, proof, encoding, unbound }
        }
        LineKind::Checkpoint => {
            let cp = line.checkpoint().map_err(Bad::Malformed)?;
            let signature = key.verify(&cp).map_err(|e| e.to_string());
            Item::Checkpoint(cp, signature)
        }
        LineKind::Consistency => {
            line.consistency().map_err(Bad::Malformed)?;
            Item::Consistency
        }
        LineKind::End => Item::End {
            entries: line.entries.ok_or_else(|| Bad::Malformed("end line without `entries`".into()))?,
            checkpoints: line.checkpoints.ok_or_else(|| Bad::Malformed("end line without `checkpoints`".into()))?,
        },
    })
}

/// Parses a block of whole lines; with `cut`, the block's last line has no newline (the file ends
/// in the middle of it).
fn parse_block(block: &[u8], cut: bool, key: &CheckpointKey) -> Vec<Result<Item, Bad>> {
    let mut items = Vec::with_capacity(block.len() / 400 + 1);
    let (whole, tail) = if cut {
        let at = block.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        block.split_at(at)
    } else {
        (block, &[][..])
    };
    match std::str::from_utf8(whole) {
        // The usual case: one validation for the block, then a fast split.
        Ok(text) => {
            for line in text.split_terminator('\n') {
                items.push(parse_line(line, key));
            }
        }
        Err(_) => {
            for line in whole.split(|&b| b == b'\n').take(whole.iter().filter(|&&b| b == b'\n').count()) {
                items.push(std::str::from_utf8(line).map_err(|_| Bad::NotUtf8).and_then(|l| parse_line(l, key)));
            }
        }
    }
    if !tail.is_empty() {
        items.push(Err(Bad::Truncated));
    }
    items
}

type Parsed = Vec<Result<Item, Bad>>;

/// Reads `reader` in blocks of whole lines and hands them to the workers, telling the checker in
/// which order to collect the results. Stops early when the checker stops listening.
fn read_blocks<R: Read>(
    mut reader: R,
    order: mpsc::SyncSender<mpsc::Receiver<Parsed>>,
    jobs: mpsc::SyncSender<(Vec<u8>, bool, mpsc::Sender<Parsed>)>,
) {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = std::mem::take(&mut carry);
        let before = buf.len();
        buf.reserve(BLOCK);
        let n = match (&mut reader).take(BLOCK as u64).read_to_end(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let (tx, rx) = mpsc::channel();
                let _ = order.send(rx);
                let _ = tx.send(vec![Err(Bad::Io(e.to_string()))]);
                return;
            }
        };
        let eof = n == 0;
        let block = if eof {
            if buf.is_empty() {
                return;
            }
            buf
        } else {
            match buf[before..].iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    carry = buf.split_off(before + i + 1);
                    buf
                }
                None => {
                    // A line longer than a block: keep reading.
                    carry = buf;
                    continue;
                }
            }
        };
        let cut = block.last() != Some(&b'\n');
        let (tx, rx) = mpsc::channel();
        if order.send(rx).is_err() || jobs.send((block, cut, tx)).is_err() {
            return;
        }
        if eof {
            return;
        }
    }
}

/// Verifies an export read from `reader` (named `name` in messages) with the gateway signing
/// certificate `key_der`, and checks it against independently collected checkpoints.
///
/// Lines are parsed and hashed on every core while this thread checks them in order, so the first
/// problem reported is always the first in the file.
pub fn verify<R: Read + Send>(
    name: &str,
    reader: R,
    key_der: &[u8],
    independent: &Independent,
) -> Result<Summary, VerifyError> {
    independent.check_pairs()?;
    let key = CheckpointKey::new(key_der)
        .map_err(|e| VerifyError::Key { path: PathBuf::from("gateway signing certificate"), reason: e.to_string() })?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    std::thread::scope(|scope| {
        let (order_tx, order_rx) = mpsc::sync_channel::<mpsc::Receiver<Parsed>>(IN_FLIGHT);
        let (job_tx, job_rx) = mpsc::sync_channel::<(Vec<u8>, bool, mpsc::Sender<Parsed>)>(IN_FLIGHT);
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let key = &key;
            scope.spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((block, cut, tx)) = job else { return };
                    let _ = tx.send(parse_block(&block, cut, key));
                }
            });
        }
        scope.spawn(move || read_blocks(reader, order_tx, job_tx));
        let mut check = Check::new(name, independent);
        let mut line = 0u64;
        let result = (|| {
            for rx in order_rx.iter() {
                let items = rx.recv().map_err(|_| VerifyError::Io {
                    path: PathBuf::from(name),
                    source: std::io::Error::other("a verification worker stopped"),
                })?;
                for item in items {
                    line += 1;
                    check.item(line, item)?;
                }
            }
            check.finish(line)
        })();
        // Dropping the receiver stops the reader, which stops the workers.
        drop(order_rx);
        result
    })
}

/// The in-order checks of one export.
struct Check<'a> {
    name: &'a str,
    independent: &'a Independent,
    header: Option<Header>,
    /// Prefix roots a full export must report for the independent checkpoints.
    wanted: BTreeMap<u64, Option<Hash>>,
    tree: CompactTree,
    next_seq: u64,
    entries: u64,
    checkpoints: u64,
    covering: Option<(Checkpoint, Hash)>,
    covered_to: u64,
    ended: Option<(u64, u64)>,
    unbound_subjects: u64,
}

impl<'a> Check<'a> {
    fn new(name: &'a str, independent: &'a Independent) -> Self {
        let mut wanted: BTreeMap<u64, Option<Hash>> =
            independent.checkpoints.iter().map(|c| (c.checkpoint.tree_size, None)).collect();
        if let Some(slot) = wanted.get_mut(&0) {
            *slot = Some(merkle::empty_root());
        }
        Check {
            name,
            independent,
            header: None,
            wanted,
            tree: CompactTree::new(),
            next_seq: 0,
            entries: 0,
            checkpoints: 0,
            covering: None,
            covered_to: 0,
            ended: None,
            unbound_subjects: 0,
        }
    }

    fn bad(&self, line: u64, bad: Bad) -> VerifyError {
        let source_name = self.name.to_owned();
        match bad {
            Bad::Malformed(reason) => VerifyError::Malformed { source_name, line, reason },
            Bad::NotUtf8 => VerifyError::NotUtf8 { source_name, line },
            Bad::Truncated => VerifyError::TruncatedLine { source_name, line },
            Bad::Edited { seq } => VerifyError::EditedEntry { line, seq },
            Bad::Io(e) => VerifyError::Io { path: PathBuf::from(self.name), source: std::io::Error::other(e) },
        }
    }

    fn item(&mut self, line: u64, item: Result<Item, Bad>) -> Result<(), VerifyError> {
        let name = self.name;
        let item = match item {
            Err(Bad::Malformed(reason)) if line == 1 => return Err(VerifyError::BadHeader { line, reason }),
            Err(b) => return Err(self.bad(line, b)),
            Ok(i) => i,
        };
        if self.ended.is_some() {
            return Err(VerifyError::TrailingData { line });
        }
        let Some(header) = &self.header else {
            return match item {
                Item::Header(Ok(h)) => {
                    self.header = Some(h);
                    Ok(())
                }
                Item::Header(Err(reason)) => Err(VerifyError::BadHeader { line, reason }),
                _ => Err(VerifyError::BadHeader { line, reason: "the first line is not a header".into() }),
            };
        };
        let kind = header.kind;
        match item {
            Item::Header(_) => return Err(malformed(name, line, "a second header")),
            Item::Entry { seq, leaf, proof, encoding, unbound } => {
                if encoding.version() > header.encoding_version {
                    return Err(malformed(
                        name,
                        line,
                        format!(
                            "seq {seq} has encoding version {}, newer than the export's version {}",
                            encoding.version(),
                            header.encoding_version
                        ),
                    ));
                }
                if unbound {
                    // Before version 3 every export showed the recipient-scoped pseudonym unbound; from
                    // version 3 on, an export never shows what its leaves do not bind.
                    if header.encoding_version >= 3 {
                        return Err(VerifyError::UnboundSubject { line, seq });
                    }
                    self.unbound_subjects += 1;
                }
                match kind {
                    Kind::Full => {
                        if seq > self.next_seq {
                            return Err(VerifyError::MissingEntry { line, expected: self.next_seq, found: seq });
                        }
                        if seq < self.next_seq {
                            return Err(VerifyError::OutOfOrder { line, seq, expected: self.next_seq });
                        }
                        self.tree.push(leaf).map_err(|e| malformed(name, line, e.to_string()))?;
                        if let Some(slot) = self.wanted.get_mut(&self.tree.size()) {
                            *slot = Some(self.tree.root());
                        }
                    }
                    Kind::Filtered => {
                        if seq < self.next_seq {
                            return Err(VerifyError::OutOfOrder { line, seq, expected: self.next_seq });
                        }
                        let (cp, root) = self.covering.as_ref().ok_or_else(|| {
                            malformed(
                                name,
                                line,
                                "in a filtered export the covering checkpoint comes before the entries",
                            )
                        })?;
                        if seq >= cp.tree_size {
                            return Err(VerifyError::NotCovered { line, seq, tree_size: cp.tree_size });
                        }
                        let proof =
                            proof.ok_or_else(|| malformed(name, line, "entry of a filtered export without `proof`"))?;
                        merkle::verify_inclusion(&leaf, seq, cp.tree_size, &proof, root)
                            .map_err(|e| VerifyError::NotIncluded { line, seq, reason: e.to_string() })?;
                    }
                }
                self.next_seq = seq + 1;
                self.entries += 1;
            }
            Item::Checkpoint(cp, signature) => {
                signature.map_err(|reason| VerifyError::BadSignature {
                    source_name: format!("{name} line {line}"),
                    tree_size: cp.tree_size,
                    reason,
                })?;
                let root = cp.root().map_err(|e| malformed(name, line, e.to_string()))?;
                match kind {
                    Kind::Full => {
                        if cp.tree_size != self.tree.size() {
                            return Err(VerifyError::MisplacedCheckpoint {
                                line,
                                tree_size: cp.tree_size,
                                entries: self.tree.size(),
                            });
                        }
                        if root != self.tree.root() {
                            return Err(VerifyError::RootMismatch {
                                line,
                                tree_size: cp.tree_size,
                                from: self.covered_to,
                            });
                        }
                    }
                    Kind::Filtered => {
                        if self.covering.is_some() || self.entries > 0 {
                            return Err(malformed(
                                name,
                                line,
                                "a filtered export has one checkpoint, before its entries",
                            ));
                        }
                    }
                }
                self.covered_to = cp.tree_size;
                self.checkpoints += 1;
                self.covering = Some((cp, root));
            }
            Item::Consistency => {}
            Item::End { entries, checkpoints } => self.ended = Some((entries, checkpoints)),
        }
        Ok(())
    }

    fn finish(self, lines: u64) -> Result<Summary, VerifyError> {
        let name = self.name;
        let Some(header) = self.header else {
            return Err(VerifyError::BadHeader { line: 1, reason: "the export is empty".into() });
        };
        let (covering, covering_root) = self
            .covering
            .ok_or_else(|| VerifyError::Truncated { reason: "no signed checkpoint in the export".into() })?;
        if header.kind == Kind::Full && self.tree.size() > self.covered_to {
            return Err(VerifyError::Uncovered { from: self.covered_to });
        }
        if covering.tree_size != header.tree_size {
            return Err(VerifyError::Truncated {
                reason: format!(
                    "the header announces a checkpoint of size {} but the last one has size {}",
                    header.tree_size, covering.tree_size
                ),
            });
        }
        let Some((end_entries, end_checkpoints)) = self.ended else {
            return Err(VerifyError::Truncated {
                reason: format!("no end line after line {lines} (the tail was cut off)"),
            });
        };
        if end_entries != self.entries || end_checkpoints != self.checkpoints {
            return Err(VerifyError::Truncated {
                reason: format!(
                    "the end line counts {end_entries} entries and {end_checkpoints} checkpoints, the export holds {} and {}",
                    self.entries, self.checkpoints
                ),
            });
        }
        // Independent checkpoints against the export.
        let export_name = format!("{name} (checkpoint of size {})", covering.tree_size);
        for other in &self.independent.checkpoints {
            let size = other.checkpoint.tree_size;
            match (header.kind, self.wanted.get(&size).copied().flatten()) {
                (Kind::Full, Some(prefix_root)) => {
                    if prefix_root != other.root {
                        return Err(VerifyError::Fork {
                            a: format!("{name} (entries 0..{size})"),
                            b: other.source.clone(),
                            reason: format!("the export's first {size} entries have another root"),
                        });
                    }
                }
                _ if size == covering.tree_size => {
                    if other.root != covering_root {
                        return Err(VerifyError::Fork {
                            a: export_name.clone(),
                            b: other.source.clone(),
                            reason: format!("both have size {size} but different roots"),
                        });
                    }
                }
                _ => self.independent.check_with_proof(
                    (&export_name, covering.tree_size, &covering_root),
                    other,
                    covering.tree_size,
                )?,
            }
        }
        Ok(Summary {
            kind: header.kind,
            entries: self.entries,
            checkpoints: self.checkpoints,
            covering,
            independent: self.independent.checkpoints.len() as u64,
            unbound_subjects: self.unbound_subjects,
        })
    }
}

/// The header a line describes.
fn header_of(line: &LineIn<'_>) -> Result<Header, String> {
    let format = line.format.clone().unwrap_or_default();
    if format != FORMAT {
        return Err(format!("format is `{}`", crate::untrusted::shown(&format)));
    }
    let version = line.encoding_version.ok_or("no encoding_version")?;
    if Encoding::of_version(version).is_none() {
        return Err(format!(
            "entry encoding version {version} is not one this verifier knows (2 to {ENCODING_VERSION})"
        ));
    }
    Ok(Header {
        format,
        encoding_version: version,
        kind: line.export_kind.ok_or("no kind")?,
        tree_size: line.tree_size.ok_or("no tree_size")?,
        exported_at_micros: line.exported_at_micros.unwrap_or_default(),
        exported_by_org: line.exported_by_org.clone().unwrap_or_default(),
        exported_by_person: line.exported_by_person.clone().unwrap_or_default(),
        exported_by_role: line.exported_by_role.clone().unwrap_or_default(),
        filter: line.filter.clone().unwrap_or_default(),
    })
}

/// Reads the gateway signing certificate (PEM or DER) and returns its DER.
pub fn read_key(path: &Path) -> Result<Vec<u8>, VerifyError> {
    let bytes = std::fs::read(path).map_err(|source| VerifyError::Io { path: path.to_owned(), source })?;
    if bytes.starts_with(b"-----BEGIN") {
        let certs = crate::pki::load_certs(path)
            .map_err(|e| VerifyError::Key { path: path.to_owned(), reason: e.to_string() })?;
        return certs
            .into_iter()
            .next()
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| VerifyError::Key { path: path.to_owned(), reason: "no certificate in the file".into() });
    }
    Ok(bytes)
}

/// Verifies the export file `export` with the gateway signing certificate at `key` and the checkpoint
/// files `checkpoints`: what both CLIs run.
pub fn verify_files(export: &Path, key: &Path, checkpoints: &[PathBuf]) -> Result<Summary, VerifyError> {
    let key_der = read_key(key)?;
    let mut independent = Independent::default();
    for path in checkpoints {
        let file = std::fs::File::open(path).map_err(|source| VerifyError::Io { path: path.clone(), source })?;
        independent.add_file(&path.display().to_string(), std::io::BufReader::new(file), &key_der)?;
    }
    let file = std::fs::File::open(export).map_err(|source| VerifyError::Io { path: export.to_owned(), source })?;
    verify(&export.display().to_string(), file, &key_der, &independent)
}

impl Summary {
    /// A human summary for the CLIs.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            Kind::Full => "full export",
            Kind::Filtered => "filtered export",
        };
        let unbound = match self.unbound_subjects {
            0 => String::new(),
            1 => "; 1 redacted entry of encoding version 2 shows a subject the log does not bind: nothing proves it"
                .to_owned(),
            n => format!(
                "; {n} redacted entries of encoding version 2 show a subject the log does not bind: nothing proves it"
            ),
        };
        format!(
            "OK: {kind}: {} entries verified against {} signed checkpoint(s); covering checkpoint: size {}, root {}, signed at {} µs by key {}; {} independent checkpoint(s) consistent",
            self.entries,
            self.checkpoints,
            self.covering.tree_size,
            self.covering.root_hash,
            self.covering.timestamp_micros,
            self.covering.key_id,
            self.independent
        ) + &unbound
    }
}

#[cfg(test)]
mod tests;
