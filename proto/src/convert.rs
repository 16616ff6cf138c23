//! Conversions between the wire's messages and the types the gateway, the nodes and the tools work
//! with, written once here so no two crates keep their own copy.

use haven_sharing::envelope::{RawEnvelope, RawValue};
use haven_sharing::policy::{Decision, FieldValue};
use haven_trust::audit::{AuditEntry, Checkpoint, Encoding};
use haven_trust::ids::Caller;

use crate::v1 as pb;
use crate::v1::field_value::Value;

impl From<&Checkpoint> for pb::SignedCheckpoint {
    /// The wire form carries the root and signature as bytes, and the exact body that was signed.
    fn from(cp: &Checkpoint) -> Self {
        let root = cp.root().unwrap_or_default();
        pb::SignedCheckpoint {
            tree_size: cp.tree_size,
            root_hash: root.to_vec(),
            timestamp_micros: cp.timestamp_micros,
            signed_body: Checkpoint::body(cp.tree_size, &root, cp.timestamp_micros),
            signature: hex::decode(&cp.signature).unwrap_or_default(),
            key_id: cp.key_id.clone(),
        }
    }
}

impl pb::SignedCheckpoint {
    /// A key-log checkpoint on the wire: the same shape, its body under the key log's own origin.
    pub fn of_key_log(cp: &Checkpoint) -> Self {
        let root = cp.root().unwrap_or_default();
        pb::SignedCheckpoint {
            signed_body: Checkpoint::body_of(
                haven_trust::keylog::KEY_LOG_ORIGIN,
                cp.tree_size,
                &root,
                cp.timestamp_micros,
            ),
            ..pb::SignedCheckpoint::from(cp)
        }
    }
}

impl From<&pb::SignedCheckpoint> for Checkpoint {
    /// The checkpoint as `haven-trust` checks it (hex root and signature); nothing is verified here.
    fn from(cp: &pb::SignedCheckpoint) -> Self {
        Checkpoint {
            tree_size: cp.tree_size,
            root_hash: hex::encode(&cp.root_hash),
            timestamp_micros: cp.timestamp_micros,
            signature: hex::encode(&cp.signature),
            key_id: cp.key_id.clone(),
        }
    }
}

/// An audit entry as the gateway shows it, with the canonical bytes its leaf hashes (which hold
/// commitments where the entry itself shows a pseudonym only to its controller).
pub struct WireEntry<'a> {
    pub entry: &'a AuditEntry,
    pub canonical: Vec<u8>,
}

impl From<WireEntry<'_>> for pb::AuditEntry {
    fn from(w: WireEntry<'_>) -> Self {
        let e = w.entry;
        pb::AuditEntry {
            seq: e.seq,
            time_micros: e.time_micros,
            actor_org: e.actor_org.clone(),
            actor_person: e.actor_person.clone(),
            actor_role: e.actor_role.clone(),
            action: e.action.clone(),
            object_id: e.object_id.clone(),
            counterparty: e.counterparty.clone(),
            subject: e.subject.clone(),
            purpose: e.purpose.clone(),
            consent_id: e.consent_id.clone(),
            rule_ids: e.rule_ids.clone(),
            bundle_version: e.bundle_version.clone(),
            decision: e.decision.clone(),
            reason: e.reason.clone(),
            released_fields: e.released_fields.clone(),
            withheld_fields: e.withheld_fields.clone(),
            outcome: e.outcome.clone(),
            correlation_id: e.correlation_id.clone(),
            source_node: e.source_node.clone(),
            canonical: w.canonical,
        }
    }
}

impl From<&pb::AuditEntry> for AuditEntry {
    /// The entry as an export line holds it. The wire never shows the counterparty's pseudonym, and
    /// the encoding version is the first byte of the canonical bytes.
    fn from(e: &pb::AuditEntry) -> Self {
        AuditEntry {
            seq: e.seq,
            time_micros: e.time_micros,
            actor_org: e.actor_org.clone(),
            actor_person: e.actor_person.clone(),
            actor_role: e.actor_role.clone(),
            action: e.action.clone(),
            object_id: e.object_id.clone(),
            counterparty: e.counterparty.clone(),
            subject: e.subject.clone(),
            purpose: e.purpose.clone(),
            consent_id: e.consent_id.clone(),
            rule_ids: e.rule_ids.clone(),
            bundle_version: e.bundle_version.clone(),
            decision: e.decision.clone(),
            reason: e.reason.clone(),
            released_fields: e.released_fields.clone(),
            withheld_fields: e.withheld_fields.clone(),
            outcome: e.outcome.clone(),
            correlation_id: e.correlation_id.clone(),
            source_node: e.source_node.clone(),
            counterparty_subject: String::new(),
            encoding_version: e.canonical.first().and_then(|v| Encoding::of_version(*v)).unwrap_or_default(),
        }
    }
}

impl From<&Caller> for pb::Caller {
    fn from(c: &Caller) -> Self {
        pb::Caller {
            org_id: c.org.to_string(),
            org_type: c.org_type.to_string(),
            person: c.person.to_string(),
            role: c.role.as_str().to_owned(),
        }
    }
}

impl From<&Decision> for pb::Decision {
    fn from(d: &Decision) -> Self {
        let code = d.reason().map(|r| r.code()).unwrap_or("");
        pb::Decision {
            allowed: d.allowed(),
            rule_ids: d.rule_ids().to_vec(),
            released_fields: d.released().to_vec(),
            withheld_fields: d.withheld().to_vec(),
            bundle_version: d.bundle_version().to_owned(),
            reason: pb::DenyReason::from_str_name(&code.to_ascii_uppercase()).map_or(0, |r| r as i32),
            reason_code: code.to_owned(),
            reason_detail: d.reason_detail().map(str::to_owned).unwrap_or_default(),
        }
    }
}

impl From<&FieldValue> for pb::FieldValue {
    fn from(v: &FieldValue) -> Self {
        let value = match v {
            FieldValue::Str(s) => Value::Text(s.clone()),
            FieldValue::Int(i) => Value::Integer(*i),
            FieldValue::Date(d) => Value::Date(d.to_string()),
            FieldValue::List(items) => Value::List(pb::StringList { items: items.clone() }),
        };
        pb::FieldValue { value: Some(value) }
    }
}

impl From<pb::Envelope> for RawEnvelope {
    /// The envelope as `haven_sharing::envelope::parse` takes it; nothing is checked here.
    fn from(env: pb::Envelope) -> Self {
        let fields = env
            .fields
            .into_iter()
            .map(|(name, v)| {
                let value = v.value.map(|v| match v {
                    Value::Text(s) => RawValue::Text(s),
                    Value::Integer(i) => RawValue::Integer(i),
                    Value::Date(d) => RawValue::Date(d),
                    Value::List(l) => RawValue::List(l.items),
                });
                (name, value)
            })
            .collect();
        RawEnvelope {
            message_id: env.message_id,
            kind: env.kind,
            recipients: env.recipients,
            all_permitted_recipients: env.all_permitted_recipients,
            purpose: env.purpose,
            subject_pseudonym: env.subject_pseudonym,
            consent_id: env.consent_id,
            fields,
            field_names: env.field_names,
            correlation_id: env.correlation_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_survives_the_wire() {
        let cp = Checkpoint {
            tree_size: 7,
            root_hash: "ab".repeat(32),
            timestamp_micros: 1_700_000_000_000_000,
            signature: "3045".into(),
            key_id: "cd".repeat(32),
        };
        let wire = pb::SignedCheckpoint::from(&cp);
        assert_eq!(wire.root_hash, vec![0xab; 32]);
        assert_eq!(wire.signed_body, Checkpoint::body(7, &[0xab; 32], cp.timestamp_micros));
        assert_eq!(Checkpoint::from(&wire), cp);
    }

    #[test]
    fn a_field_value_and_an_envelope_keep_every_part() {
        let date = time::macros::date!(2026 - 01 - 31);
        let wire = pb::FieldValue::from(&FieldValue::Date(date));
        assert_eq!(wire.value, Some(Value::Date("2026-01-31".into())));
        let mut fields = std::collections::HashMap::new();
        fields.insert("needs".to_owned(), pb::FieldValue::from(&FieldValue::List(vec!["housing".into()])));
        fields.insert("empty".to_owned(), pb::FieldValue { value: None });
        let env = pb::Envelope { kind: "referral".into(), fields, ..Default::default() };
        let mut raw = RawEnvelope::from(env);
        raw.fields.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(raw.kind, "referral");
        assert_eq!(
            raw.fields,
            [("empty".to_owned(), None), ("needs".to_owned(), Some(RawValue::List(vec!["housing".into()])))]
        );
    }
}
