//! Every tampering case against exports built in memory with a throwaway signing key.

use std::io::Cursor;

use super::*;
use crate::audit::CheckpointSigner;
use crate::merkle::MemoryTree;

struct Log {
    signer: CheckpointSigner,
    cert: Vec<u8>,
    entries: Vec<AuditEntry>,
    tree: MemoryTree,
}

fn log(n: u64) -> Log {
    log_with_legacy(n, 0)
}

/// A log of `n` entries whose first `legacy` were written with encoding version 2, before version 3
/// existed: their leaves do not bind the counterparty's pseudonym, so they are read without it.
fn log_with_legacy(n: u64, legacy: u64) -> Log {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gateway.test".into()]).unwrap().self_signed(&key).unwrap();
    let cert = cert.der().to_vec();
    let signer = CheckpointSigner::new(&key.serialize_pem(), &cert).unwrap();
    let mut l = Log { signer, cert, entries: Vec::new(), tree: MemoryTree::new() };
    for seq in 0..n {
        let e = AuditEntry {
            seq,
            time_micros: 1_700_000_000_000_000 + seq as i64,
            actor_org: "harbor".into(),
            actor_person: "casey".into(),
            actor_role: "caseworker".into(),
            action: if seq % 2 == 0 { "submitted" } else { "delivered" }.into(),
            object_id: format!("msg-{seq}"),
            counterparty: "maple-house".into(),
            subject: format!("subj-{:032x}", seq % 3),
            counterparty_subject: format!("r_{:032x}", seq % 3 + 100),
            released_fields: vec!["first_name".into(), "needs".into()],
            outcome: "queued".into(),
            ..Default::default()
        };
        let e = if seq < legacy {
            AuditEntry { encoding_version: Encoding::V2, counterparty_subject: String::new(), ..e }
        } else {
            e
        };
        l.tree.push(e.leaf_hash()).unwrap();
        l.entries.push(e);
    }
    l
}

impl Log {
    fn checkpoint(&self, size: u64) -> Checkpoint {
        self.signer.sign(size, &merkle::root_at(&self.tree, size).unwrap(), 1_700_000_001_000_000 + size as i64)
    }

    fn header(&self, kind: Kind, tree_size: u64) -> Header {
        Header {
            format: FORMAT.into(),
            encoding_version: ENCODING_VERSION,
            kind,
            tree_size,
            exported_at_micros: 1,
            exported_by_org: "audit-office".into(),
            exported_by_person: "ada".into(),
            exported_by_role: "auditor".into(),
            filter: BTreeMap::new(),
        }
    }

    /// A full export with a checkpoint after every `every` entries and one covering all.
    fn full(&self, every: u64) -> Vec<String> {
        let n = self.entries.len() as u64;
        let mut out = vec![Line::Header(&self.header(Kind::Full, n)).to_json_line()];
        let mut cps = 0;
        for e in &self.entries {
            out.push(
                Line::Entry {
                    entry: e,
                    leaf: hex::encode(e.leaf_hash()),
                    subject_commitment: None,
                    counterparty_subject_commitment: None,
                    proof: None,
                }
                .to_json_line(),
            );
            let size = e.seq + 1;
            if size % every == 0 || size == n {
                out.push(Line::Checkpoint(&self.checkpoint(size)).to_json_line());
                cps += 1;
            }
        }
        out.push(Line::End { entries: n, checkpoints: cps }.to_json_line());
        out
    }

    /// A filtered export of `seqs`, redacting the subject of those in `redact`.
    fn filtered(&self, seqs: &[u64], redact: &[u64]) -> Vec<String> {
        let views: Vec<(u64, View)> =
            seqs.iter().map(|&s| (s, if redact.contains(&s) { View::Redacted } else { View::AsStored })).collect();
        self.filtered_views(&views)
    }

    /// A filtered export of the given entries, each shown as the gateway shows it to its reader.
    fn filtered_views(&self, seqs: &[(u64, View)]) -> Vec<String> {
        let n = self.entries.len() as u64;
        let mut out = vec![Line::Header(&self.header(Kind::Filtered, n)).to_json_line()];
        out.push(Line::Checkpoint(&self.checkpoint(n)).to_json_line());
        for &(seq, view) in seqs {
            let real = &self.entries[seq as usize];
            let mut shown = real.clone();
            let (mut subject, mut counterparty) = (None, None);
            match view {
                View::AsStored => {}
                View::Redacted => {
                    shown.subject = std::mem::take(&mut shown.counterparty_subject);
                    subject = Some(hex::encode(real.subject_commitment()));
                }
                // Version 2 entries are read without one, so there is nothing to hide.
                View::CounterpartyHidden if !real.counterparty_subject.is_empty() => {
                    shown.counterparty_subject.clear();
                    counterparty = Some(hex::encode(real.counterparty_subject_commitment()));
                }
                View::CounterpartyHidden => {}
            }
            let proof = merkle::inclusion_proof(&self.tree, seq, n).unwrap().iter().map(hex::encode).collect();
            out.push(
                Line::Entry {
                    entry: &shown,
                    leaf: hex::encode(real.leaf_hash()),
                    subject_commitment: subject,
                    counterparty_subject_commitment: counterparty,
                    proof: Some(proof),
                }
                .to_json_line(),
            );
        }
        out.push(Line::End { entries: seqs.len() as u64, checkpoints: 1 }.to_json_line());
        out
    }

    fn verify(&self, lines: &[String]) -> Result<Summary, VerifyError> {
        self.verify_with(lines, &Independent::default())
    }

    fn verify_with(&self, lines: &[String], independent: &Independent) -> Result<Summary, VerifyError> {
        verify("export.jsonl", Cursor::new(lines.concat().into_bytes()), &self.cert, independent)
    }

    fn independent(&self, cps: &[Checkpoint], proofs: &[(u64, u64)]) -> Independent {
        let mut ind = Independent::default();
        for (i, cp) in cps.iter().enumerate() {
            ind.add_checkpoint(format!("node-{i}.json"), cp.clone(), &self.cert).unwrap();
        }
        for &(a, b) in proofs {
            ind.add_proof(a, b, merkle::consistency_proof(&self.tree, a, b).unwrap());
        }
        ind
    }
}

/// How a filtered export shows an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// As stored (a network auditor).
    AsStored,
    /// To the counterparty's privacy officer: the counterparty's pseudonym as the subject, and the
    /// commitment to the controller's.
    Redacted,
    /// To the actor's privacy officer: the commitment to the counterparty's pseudonym in its place.
    CounterpartyHidden,
}

/// Replaces the entry line of `seq` (line index `seq + 1` in an export without interleaved
/// checkpoints before it) through its JSON form.
fn edit_line(line: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    f(&mut v);
    let mut s = v.to_string();
    s.push('\n');
    s
}

fn entry_index(lines: &[String], seq: u64) -> usize {
    lines.iter().position(|l| l.contains("\"type\":\"entry\"") && l.contains(&format!("\"seq\":{seq},"))).unwrap()
}

#[test]
fn an_untouched_full_export_verifies() {
    let l = log(50);
    let s = l.verify(&l.full(16)).unwrap();
    assert_eq!((s.kind, s.entries, s.checkpoints, s.covering.tree_size), (Kind::Full, 50, 4, 50));
    assert!(s.describe().starts_with("OK: full export: 50 entries"));
}

#[test]
fn an_edited_entry_is_named_by_seq() {
    let l = log(40);
    let mut lines = l.full(16);
    let i = entry_index(&lines, 21);
    lines[i] = edit_line(&lines[i], |v| v["entry"]["outcome"] = "refused".into());
    let e = l.verify(&lines).unwrap_err();
    assert!(matches!(e, VerifyError::EditedEntry { seq: 21, .. }), "{e}");
    assert!(e.to_string().contains("seq 21 was edited"), "{e}");
}

#[test]
fn an_edited_entry_with_a_recomputed_leaf_fails_at_its_checkpoint() {
    let l = log(40);
    let mut lines = l.full(16);
    let i = entry_index(&lines, 21);
    let mut forged = l.entries[21].clone();
    forged.released_fields.push("date_of_birth".into());
    lines[i] = edit_line(&lines[i], |v| {
        v["entry"]["released_fields"] = serde_json::json!(forged.released_fields);
        v["leaf"] = hex::encode(forged.leaf_hash()).into();
    });
    let e = l.verify(&lines).unwrap_err();
    assert!(matches!(e, VerifyError::RootMismatch { tree_size: 32, from: 16, .. }), "{e}");
}

#[test]
fn a_deleted_entry_is_named_by_seq() {
    let l = log(40);
    let mut lines = l.full(16);
    lines.remove(entry_index(&lines, 7));
    let e = l.verify(&lines).unwrap_err();
    assert!(matches!(e, VerifyError::MissingEntry { expected: 7, found: 8, .. }), "{e}");
}

#[test]
fn reordered_entries_are_caught() {
    let l = log(40);
    let mut lines = l.full(16);
    let (a, b) = (entry_index(&lines, 9), entry_index(&lines, 10));
    lines.swap(a, b);
    let e = l.verify(&lines).unwrap_err();
    assert!(matches!(e, VerifyError::MissingEntry { expected: 9, found: 10, .. }), "{e}");
}

#[test]
fn a_renumbered_insertion_is_caught() {
    let l = log(40);
    let mut lines = l.full(16);
    // An entry slipped in at seq 5, and every later seq shifted by one to make room.
    let mut renumbered: Vec<String> = Vec::new();
    for line in &lines {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "entry" && v["entry"]["seq"].as_u64().unwrap() >= 5 {
            let seq = v["entry"]["seq"].as_u64().unwrap() + 1;
            v["entry"]["seq"] = seq.into();
        }
        renumbered.push(format!("{v}\n"));
    }
    let i = entry_index(&lines, 5);
    lines = renumbered;
    let mut inserted = l.entries[5].clone();
    inserted.action = "decided".into();
    lines.insert(
        i,
        Line::Entry {
            entry: &inserted,
            leaf: hex::encode(inserted.leaf_hash()),
            subject_commitment: None,
            counterparty_subject_commitment: None,
            proof: None,
        }
        .to_json_line(),
    );
    let e = l.verify(&lines).unwrap_err();
    // Seq 6 now holds what was seq 5: its content no longer hashes to its stated leaf.
    assert!(matches!(e, VerifyError::EditedEntry { seq: 6, .. }), "{e}");
}

#[test]
fn an_entry_appended_after_the_last_checkpoint_is_caught() {
    let l = log(20);
    let mut lines = l.full(8);
    let end = lines.pop().unwrap();
    let mut extra = l.entries[19].clone();
    extra.seq = 20;
    lines.push(
        Line::Entry {
            entry: &extra,
            leaf: hex::encode(extra.leaf_hash()),
            subject_commitment: None,
            counterparty_subject_commitment: None,
            proof: None,
        }
        .to_json_line(),
    );
    lines.push(edit_line(&end, |v| v["entries"] = 21.into()));
    let e = l.verify(&lines).unwrap_err();
    assert!(matches!(e, VerifyError::Uncovered { from: 20 }), "{e}");
}

#[test]
fn a_truncated_tail_is_caught() {
    let l = log(20);
    let lines = l.full(8);
    // Cut after entry 17: the covering checkpoint and the end line are gone.
    let cut = entry_index(&lines, 17) + 1;
    let e = l.verify(&lines[..cut]).unwrap_err();
    assert!(matches!(e, VerifyError::Uncovered { from: 16 }), "{e}");
    // Cut right after a checkpoint: the end line is missing.
    let cut = lines.iter().position(|x| x.contains("\"tree_size\":16,")).unwrap() + 1;
    let e = l.verify(&lines[..cut]).unwrap_err();
    assert!(matches!(e, VerifyError::Truncated { .. }), "{e}");
}

#[test]
fn a_tail_cut_back_to_an_old_checkpoint_is_caught_by_a_newer_independent_checkpoint() {
    let l = log(20);
    let old = log_prefix_export(&l, 16);
    let witness = l.independent(&[l.checkpoint(20)], &[]);
    let e = l.verify_with(&old, &witness).unwrap_err();
    assert!(matches!(e, VerifyError::NeedsProof { tree_size: 20, export_size: 16, .. }), "{e}");
    // With the consistency proof the node fetched, the older export is proven a prefix.
    let witness = l.independent(&[l.checkpoint(20)], &[(16, 20)]);
    l.verify_with(&old, &witness).unwrap();
}

/// A well-formed full export of the first `size` entries.
fn log_prefix_export(l: &Log, size: u64) -> Vec<String> {
    let mut lines = vec![Line::Header(&l.header(Kind::Full, size)).to_json_line()];
    for e in &l.entries[..size as usize] {
        lines.push(
            Line::Entry {
                entry: e,
                leaf: hex::encode(e.leaf_hash()),
                subject_commitment: None,
                counterparty_subject_commitment: None,
                proof: None,
            }
            .to_json_line(),
        );
    }
    lines.push(Line::Checkpoint(&l.checkpoint(size)).to_json_line());
    lines.push(Line::End { entries: size, checkpoints: 1 }.to_json_line());
    lines
}

#[test]
fn a_bad_checkpoint_signature_is_named() {
    let l = log(20);
    let mut lines = l.full(8);
    let i = lines.iter().position(|x| x.contains("\"tree_size\":8,")).unwrap();
    lines[i] = edit_line(&lines[i], |v| v["timestamp_micros"] = 5.into());
    let e = l.verify(&lines).unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature { tree_size: 8, .. }), "{e}");
    assert!(e.to_string().contains("line"), "{e}");
    // A checkpoint signed by another key.
    let other = log(20);
    let mut lines = l.full(8);
    lines[i] = Line::Checkpoint(&other.signer.sign(8, &merkle::root_at(&l.tree, 8).unwrap(), 1)).to_json_line();
    assert!(matches!(l.verify(&lines).unwrap_err(), VerifyError::BadSignature { tree_size: 8, .. }));
}

#[test]
fn a_fork_between_independent_checkpoints_is_caught() {
    let l = log(30);
    // The gateway signed, for a node, a checkpoint of a different history of the first 10 entries.
    let mut other = MemoryTree::new();
    for e in &l.entries[..10] {
        let mut e = e.clone();
        if e.seq == 3 {
            e.outcome = "refused".into();
        }
        other.push(e.leaf_hash()).unwrap();
    }
    let forked = l.signer.sign(10, &other.root(), 7);
    let e = l.verify_with(&l.full(8), &l.independent(std::slice::from_ref(&forked), &[])).unwrap_err();
    assert!(matches!(e, VerifyError::Fork { .. }), "{e}");
    assert!(e.to_string().contains("node-0.json"), "{e}");
    // Two independent checkpoints of one size with different roots.
    let e = l.verify_with(&l.full(8), &l.independent(&[l.checkpoint(10), forked], &[])).unwrap_err();
    assert!(matches!(e, VerifyError::Fork { .. }), "{e}");
    // Honest independent checkpoints, older and equal, agree.
    let ok = l.verify_with(&l.full(8), &l.independent(&[l.checkpoint(3), l.checkpoint(30)], &[])).unwrap();
    assert_eq!(ok.independent, 2);
}

#[test]
fn a_filtered_export_verifies_by_inclusion_proofs_even_when_redacted() {
    let l = log(33);
    let lines = l.filtered(&[0, 4, 17, 32], &[4, 17]);
    assert!(!lines.concat().contains(&l.entries[4].subject), "the controller's pseudonym never appears");
    let s = l.verify(&lines).unwrap();
    assert_eq!((s.kind, s.entries), (Kind::Filtered, 4));
    // Consistency with an independent checkpoint needs a proof.
    let e = l.verify_with(&lines, &l.independent(&[l.checkpoint(20)], &[])).unwrap_err();
    assert!(matches!(e, VerifyError::NeedsProof { .. }), "{e}");
    l.verify_with(&lines, &l.independent(&[l.checkpoint(20)], &[(20, 33)])).unwrap();
    // A forked one fails its proof.
    let forked = l.signer.sign(20, &[7; 32], 1);
    let e = l.verify_with(&lines, &l.independent(&[forked], &[(20, 33)])).unwrap_err();
    assert!(matches!(e, VerifyError::Fork { .. }), "{e}");
}

#[test]
fn tampering_with_a_filtered_export_is_caught() {
    let l = log(33);
    let lines = l.filtered(&[0, 4, 17, 32], &[17]);
    // Edited content with the leaf left alone.
    let mut t = lines.clone();
    t[3] = edit_line(&t[3], |v| v["entry"]["purpose"] = "investigation".into());
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::EditedEntry { seq: 4, .. }));
    // Edited content with a recomputed leaf: the proof fails.
    let mut t = lines.clone();
    t[3] = edit_line(&t[3], |v| {
        v["entry"]["purpose"] = "investigation".into();
        v.as_object_mut().unwrap().remove("leaf");
    });
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::NotIncluded { seq: 4, .. }));
    // A swapped commitment.
    let mut t = lines.clone();
    t[4] = edit_line(&t[4], |v| v["subject_commitment"] = hex::encode([1u8; 32]).into());
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::EditedEntry { seq: 17, .. }));
    // Reordered.
    let mut t = lines.clone();
    t.swap(3, 4);
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::OutOfOrder { seq: 4, .. }));
    // An entry beyond the checkpoint.
    let mut t = lines.clone();
    t[5] = edit_line(&t[5], |v| v["entry"]["seq"] = 40.into());
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::EditedEntry { .. } | VerifyError::NotCovered { .. }));
    // A truncated tail.
    assert!(matches!(l.verify(&lines[..4]).unwrap_err(), VerifyError::Truncated { .. }));
}

#[test]
fn malformed_input_names_the_line_and_never_panics() {
    let l = log(5);
    let lines = l.full(8);
    let text = lines.concat();
    let check = |bytes: Vec<u8>, want: &dyn Fn(&VerifyError) -> bool| {
        let e = verify("x", Cursor::new(bytes), &l.cert, &Independent::default()).unwrap_err();
        assert!(want(&e), "{e}");
    };
    // Truncated in the middle of a line.
    check(text.as_bytes()[..text.len() - 10].to_vec(), &|e| matches!(e, VerifyError::TruncatedLine { line: 8, .. }));
    // Not UTF-8.
    let mut bad = text.clone().into_bytes();
    let at = text.find("casey").unwrap();
    bad[at] = 0xff;
    check(bad, &|e| matches!(e, VerifyError::NotUtf8 { line: 2, .. }));
    // Not JSON, an unknown key, bad hex, an unknown type.
    let mut t = lines.clone();
    t[3] = "{not json\n".into();
    check(t.concat().into_bytes(), &|e| matches!(e, VerifyError::Malformed { line: 4, .. }));
    let mut t = lines.clone();
    t[3] = edit_line(&t[3], |v| v["extra"] = 1.into());
    check(t.concat().into_bytes(), &|e| matches!(e, VerifyError::Malformed { line: 4, .. }));
    let mut t = lines.clone();
    t[3] = edit_line(&t[3], |v| v["leaf"] = "zz".into());
    check(t.concat().into_bytes(), &|e| matches!(e, VerifyError::Malformed { line: 4, .. }));
    let mut t = lines.clone();
    t[3] = edit_line(&t[3], |v| v["type"] = "gossip".into());
    check(t.concat().into_bytes(), &|e| e.to_string().contains("unknown line type `gossip`"));
    // Empty, headerless, and data after the end.
    check(Vec::new(), &|e| matches!(e, VerifyError::BadHeader { .. }));
    check(lines[1..].concat().into_bytes(), &|e| matches!(e, VerifyError::BadHeader { .. }));
    let mut t = lines.clone();
    t.push(lines[1].clone());
    check(t.concat().into_bytes(), &|e| matches!(e, VerifyError::TrailingData { .. }));
    // Random garbage never panics.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        let mut bytes = text.clone().into_bytes();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % bytes.len();
            bytes[i] = (seed >> 32) as u8;
        }
        let _ = verify("fuzz", Cursor::new(bytes), &l.cert, &Independent::default());
    }
}

#[test]
fn checkpoint_files_accept_untyped_checkpoints_and_consistency_lines() {
    let l = log(12);
    let cp = l.checkpoint(5);
    let proof = ConsistencyLine {
        first_size: 5,
        second_size: 12,
        hashes: merkle::consistency_proof(&l.tree, 5, 12).unwrap().iter().map(hex::encode).collect(),
    };
    let file = format!("{}\n{}", serde_json::to_string(&cp).unwrap(), Line::Consistency(&proof).to_json_line());
    let mut ind = Independent::default();
    ind.add_file("node.json", Cursor::new(file.into_bytes()), &l.cert).unwrap();
    let filtered = l.filtered(&[1], &[]);
    assert_eq!(l.verify_with(&filtered, &ind).unwrap().independent, 1);
    let mut ind = Independent::default();
    let bad = format!("{}\n", serde_json::to_string(&Checkpoint { tree_size: 6, ..cp }).unwrap());
    let e = ind.add_file("node.json", Cursor::new(bad.into_bytes()), &l.cert).unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature { tree_size: 6, .. }), "{e}");
}

#[test]
fn the_subject_a_redacted_entry_shows_is_bound_by_its_leaf() {
    let l = log(20);
    let lines = l.filtered(&[3, 7, 11], &[7]);
    let ok = l.verify(&lines).unwrap();
    assert_eq!((ok.entries, ok.unbound_subjects), (3, 0));
    let i = entry_index(&lines, 7);
    let shown = l.entries[7].counterparty_subject.clone();
    assert!(lines[i].contains(&shown), "the redacted entry shows the recipient-scoped pseudonym");
    // Another pseudonym, or none at all, in its place.
    for other in ["r_ffffffffffffffffffffffffffffffff", &l.entries[3].counterparty_subject, ""] {
        let mut t = lines.clone();
        t[i] = edit_line(&t[i], |v| v["entry"]["subject"] = other.into());
        let e = l.verify(&t).unwrap_err();
        assert!(matches!(e, VerifyError::EditedEntry { line: 4, seq: 7 }), "{other}: {e}");
        // With the stated leaf dropped, the inclusion proof fails instead.
        t[i] = edit_line(&t[i], |v| {
            v.as_object_mut().unwrap().remove("leaf");
        });
        let e = l.verify(&t).unwrap_err();
        assert!(matches!(e, VerifyError::NotIncluded { line: 4, seq: 7, .. }), "{other}: {e}");
    }
    // Passed off as an entry of version 2, whose leaf binds no counterparty pseudonym: the leaf is not
    // one of version 2.
    let mut t = lines.clone();
    t[i] = edit_line(&t[i], |v| {
        v["entry"].as_object_mut().unwrap().remove("encoding_version");
        v["entry"]["subject"] = "r_ffffffffffffffffffffffffffffffff".into();
    });
    let e = l.verify(&t).unwrap_err();
    assert!(matches!(e, VerifyError::EditedEntry { seq: 7, .. }), "{e}");
    // Showing the pseudonym beside the commitment to the controller's is not a form the format has.
    let mut t = lines.clone();
    t[i] = edit_line(&t[i], |v| v["entry"]["counterparty_subject"] = shown.clone().into());
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::Malformed { line: 4, .. }));
}

#[test]
fn the_counterpartys_pseudonym_is_bound_where_it_is_shown_and_where_it_is_hidden() {
    let l = log(20);
    // A full export shows it, and binds it.
    let mut lines = l.full(8);
    let i = entry_index(&lines, 5);
    lines[i] =
        edit_line(&lines[i], |v| v["entry"]["counterparty_subject"] = "r_ffffffffffffffffffffffffffffffff".into());
    assert!(matches!(l.verify(&lines).unwrap_err(), VerifyError::EditedEntry { seq: 5, .. }));
    // The actor's own officer gets its commitment instead.
    let lines = l.filtered_views(&[(5, View::CounterpartyHidden), (6, View::AsStored)]);
    l.verify(&lines).unwrap();
    let i = entry_index(&lines, 5);
    assert!(!lines[i].contains(&l.entries[5].counterparty_subject));
    let mut t = lines.clone();
    t[i] = edit_line(&t[i], |v| v["counterparty_subject_commitment"] = hex::encode([7u8; 32]).into());
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::EditedEntry { seq: 5, .. }));
    let mut t = lines.clone();
    t[i] = edit_line(&t[i], |v| v["entry"]["counterparty_subject"] = "r_ffffffffffffffffffffffffffffffff".into());
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::Malformed { line: 3, .. }));
}

#[test]
fn entries_of_version_2_still_verify_and_show_nothing_their_leaves_do_not_bind() {
    // Entries 0..10 were written before version 3.
    let l = log_with_legacy(30, 10);
    assert_eq!(l.verify(&l.full(8)).unwrap().entries, 30);
    let lines = l.filtered_views(&[
        (2, View::Redacted),
        (4, View::AsStored),
        (5, View::CounterpartyHidden),
        (12, View::Redacted),
        (15, View::CounterpartyHidden),
    ]);
    assert_eq!(l.verify(&lines).unwrap().unbound_subjects, 0);
    let i = entry_index(&lines, 2);
    let v: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
    assert_eq!(v["entry"]["subject"], "", "a redacted entry of version 2 shows no subject");
    assert!(v["entry"].get("encoding_version").is_none());
    // Showing one there is caught, since nothing binds it.
    let mut t = lines.clone();
    t[i] = edit_line(&t[i], |v| v["entry"]["subject"] = "r_ffffffffffffffffffffffffffffffff".into());
    let e = l.verify(&t).unwrap_err();
    assert!(matches!(e, VerifyError::UnboundSubject { line: 3, seq: 2 }), "{e}");
    assert!(e.to_string().contains("seq 2 shows a subject its leaf does not bind"), "{e}");
    // So is a counterparty pseudonym on a version 2 entry.
    let mut t = lines.clone();
    let j = entry_index(&t, 4);
    t[j] = edit_line(&t[j], |v| v["entry"]["counterparty_subject"] = "r_ffffffffffffffffffffffffffffffff".into());
    assert!(matches!(l.verify(&t).unwrap_err(), VerifyError::Malformed { line: 4, .. }));
    // An export that says it is of version 2 holds no entry of version 3.
    let mut t = lines.clone();
    t[0] = edit_line(&t[0], |v| v["encoding_version"] = 2.into());
    let e = l.verify(&t).unwrap_err();
    assert!(matches!(e, VerifyError::Malformed { line: 6, .. }), "{e}");

    // An export made before version 3 showed the recipient-scoped pseudonym unbound: it still verifies,
    // and says what it cannot prove.
    let mut archive = l.filtered_views(&[(2, View::Redacted), (4, View::AsStored)]);
    archive[0] = edit_line(&archive[0], |v| v["encoding_version"] = 2.into());
    let i = entry_index(&archive, 2);
    archive[i] = edit_line(&archive[i], |v| v["entry"]["subject"] = "r_0a1b2c3d4e5f60718293a4b5c6d7e8f9".into());
    let s = l.verify(&archive).unwrap();
    assert_eq!((s.entries, s.unbound_subjects), (2, 1));
    assert!(s.describe().contains("1 redacted entry of encoding version 2 shows a subject the log does not bind"));
}
