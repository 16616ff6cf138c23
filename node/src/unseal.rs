//! Opening a received copy: the recipient's node verifies, then stores. A copy that fails any check is
//! stored as rejected, acknowledged (so the gateway does not send it again), shown to no one, and
//! reported to the gateway as an audited integrity failure; the sender sees `rejected: integrity`.
//!
//! The checks, in order: the manifest's signature by a signing certificate the network CA issued to
//! the sender; the manifest names this organization, the delivery's sender, message, kind, purpose and
//! bundle; its window; the hash of `enc` and ciphertext; the sender's key-log checkpoint is the log
//! this node verified (a gateway showing two logs is caught here); the key it was sealed to is one of
//! this organization's; the copy opens with the manifest as `aad`; the opened field names are the
//! manifest's; and every value type-checks against the schema of the manifest's bundle.

use std::collections::BTreeMap;

use haven_proto::v1 as pb;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_sharing::policy::FieldValue;
use haven_trust::ids::{PersonId, Role};
use haven_trust::sealed::{self, SealedCopy};
use prost::Message;
use sqlx::Row;

use crate::bundles::Bundles;
use crate::keylog::{KeyLogWitness, PeerView};
use crate::link::GatewayLink;
use crate::sealing::KeyFolder;
use crate::store::NodeStore;
use haven_trust::clock::SharedClock;

/// What opening a received copy needs of the node (`NodeState::opening`).
pub struct Opening<'a> {
    pub store: &'a NodeStore,
    pub link: &'a GatewayLink,
    pub clock: &'a SharedClock,
    /// DER of the network CA certificate: what a manifest's signer must chain to.
    pub ca_cert: &'a [u8],
    pub key_log: &'a KeyLogWitness,
    pub sealing_keys: &'a KeyFolder,
    pub bundles: &'a Bundles,
}

/// The reason stored for a second copy of a message already shown (not reported: the gateway's
/// retry of a copy this node acknowledged is not an attack, and a replay shows nothing twice).
pub const DUPLICATE: &str = "duplicate";

/// Why a copy was refused: a stable code (`Gateway.ReportIntegrityFailure`) and what failed, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        let detail: String = detail.into();
        Rejection { reason, detail: detail.chars().take(300).collect() }
    }

    /// A copy of a message already shown.
    pub fn duplicate() -> Self {
        Rejection::new(DUPLICATE, "a copy of a message already received")
    }
}

/// Opens every delivery of `items` in place (the values filled in, `enc` and ciphertext dropped, the
/// manifest kept). Returns, for each item, why it was rejected, if it was. `Err` is trouble of this
/// node's own (its database, or the gateway unreachable for a bundle): nothing is acknowledged then,
/// and the items come again.
pub async fn open_items(node: &Opening<'_>, items: &mut [pb::Item]) -> Result<Vec<Option<Rejection>>, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter_mut() {
        match &mut item.body {
            Some(pb::item::Body::Delivery(d)) => match open(node, d).await? {
                Ok(()) => out.push(None),
                Err(why) => {
                    tracing::warn!(message_id = %d.message_id, sender = %d.sender, reason = why.reason, detail = %why.detail, "a sealed copy failed its checks; it is kept from everyone and reported");
                    d.fields.clear();
                    if let Some(s) = &mut d.sealed {
                        s.enc.clear();
                        s.ciphertext.clear();
                    }
                    out.push(Some(why));
                }
            },
            _ => out.push(None),
        }
    }
    Ok(out)
}

async fn open(node: &Opening<'_>, d: &mut pb::Delivery) -> Result<Result<(), Rejection>, String> {
    let Some(wire) = d.sealed.take() else {
        return Ok(Err(Rejection::new("manifest_mismatch", "the delivery carries no sealed copy")));
    };
    let copy = SealedCopy { manifest: wire.manifest.clone(), enc: wire.enc, ciphertext: wire.ciphertext };
    d.sealed = Some(pb::SealedCopy { recipient: wire.recipient, manifest: wire.manifest, ..Default::default() });
    let now = node.clock.now_secs();
    let manifest = match sealed::verify_by_ca(&copy, node.ca_cert, now) {
        Ok(m) => m,
        Err(e) => return Ok(Err(Rejection::new(e.code(), e.to_string()))),
    };
    let b = &manifest.body;
    let own = node.link.signer().org().as_str();
    let checks: [(&str, &str, &str); 8] = [
        ("recipient", b.recipient.as_str(), own),
        ("sender", b.sender.as_str(), &d.sender),
        ("sender person", &b.sender_person, &d.sender_person),
        ("correlation id", &b.correlation_id, &d.correlation_id),
        ("message id", &b.message_id, &d.message_id),
        ("kind", &b.kind, &d.kind),
        ("purpose", &b.purpose, &d.purpose),
        ("bundle version", &b.bundle_version, &d.bundle_version),
    ];
    for (what, signed, delivered) in checks {
        if signed != delivered {
            return Ok(Err(Rejection::new(
                "manifest_mismatch",
                format!(
                    "the manifest's {what} is `{}`, but the delivery's is `{}`",
                    haven_trust::untrusted::shown(signed),
                    haven_trust::untrusted::shown(delivered)
                ),
            )));
        }
    }
    // The sender's view of the key log first: a split view is caught whatever else is wrong.
    match &b.key_log {
        None => {
            return Ok(Err(Rejection::new("manifest_mismatch", "the manifest carries no key-log checkpoint")));
        }
        Some(cp) => match node.key_log.check_peer(cp).await.map_err(|e| format!("node database: {e}"))? {
            PeerView::Consistent | PeerView::Ahead { .. } => {}
            PeerView::Unsigned(why) => return Ok(Err(Rejection::new("manifest_mismatch", why))),
            PeerView::Split(why) => return Ok(Err(Rejection::new("key_log_split", why))),
        },
    }
    let secret = match node.sealing_keys.read_if_held(&b.recipient_kid) {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Ok(Err(Rejection::new(
                "unknown_sealing_key",
                format!(
                    "sealed to {}, which is not a key this node holds",
                    haven_trust::untrusted::shown(&b.recipient_kid)
                ),
            )));
        }
        // The node's own trouble (a key file it cannot read now): nothing is concluded.
        Err(why) => return Err(format!("a sealing key could not be read: {why}")),
    };
    let plaintext = match sealed::open(&manifest, &copy, &secret) {
        Ok(p) => p,
        Err(e) => return Ok(Err(Rejection::new(e.code(), e.to_string()))),
    };
    let Ok(opened) = pb::SealedFields::decode(plaintext.as_slice()) else {
        return Ok(Err(Rejection::new("fields_invalid", "the opened copy is not a set of field values")));
    };
    let mut names: Vec<&String> = opened.fields.keys().collect();
    names.sort();
    if names.iter().map(|n| n.as_str()).ne(b.fields.iter().map(String::as_str)) {
        return Ok(Err(Rejection::new(
            "fields_mismatch",
            format!(
                "the copy holds {} fields ({}), but its manifest lists {} ({})",
                names.len(),
                names.iter().map(|n| haven_trust::untrusted::shown(n)).collect::<Vec<_>>().join(", "),
                b.fields.len(),
                b.fields.join(", ")
            ),
        )));
    }
    let bundle = match node.bundles.by_version(node.store, node.link, &b.bundle_version).await {
        Ok(Some(bundle)) => bundle,
        Ok(None) => {
            return Ok(Err(Rejection::new(
                "unknown_bundle",
                format!(
                    "sealed under bundle {}, which this node never had",
                    haven_trust::untrusted::shown(&b.bundle_version)
                ),
            )));
        }
        Err(s) if crate::failure::retryable(&s) => {
            return Err(format!("the policy bundle {} could not be read: {}", b.bundle_version, s.message()));
        }
        // The gateway answered, and this node does not accept that bundle: a permanent refusal.
        Err(s) => return Ok(Err(Rejection::new("unknown_bundle", s.message().to_owned()))),
    };
    let longest = i64::from(bundle.network().delivery_ttl_days) * 86_400 + sealed::CREATED_AT_SKEW_SECS;
    if b.not_after - b.created_at > longest {
        return Ok(Err(Rejection::new(
            "manifest_mismatch",
            format!(
                "the manifest is valid for {} s, longer than the delivery TTL of {}",
                b.not_after - b.created_at,
                b.bundle_version
            ),
        )));
    }
    let mut values = BTreeMap::new();
    for (name, v) in &opened.fields {
        match typed(v) {
            Some(v) => {
                values.insert(name.clone(), v);
            }
            None => return Ok(Err(Rejection::new("fields_invalid", format!("field `{name}` has no readable value")))),
        }
    }
    if let Err(problems) = bundle.schema().validate(&b.kind, &values) {
        let first = problems.first().map(ToString::to_string).unwrap_or_default();
        return Ok(Err(Rejection::new(
            "fields_invalid",
            format!("the values do not fit the schema of {}: {first}", b.bundle_version),
        )));
    }
    d.fields = opened.fields;
    Ok(Ok(()))
}

/// A wire value as the schema checks it; `None` for one with no value or an unreadable date.
fn typed(v: &pb::FieldValue) -> Option<FieldValue> {
    use pb::field_value::Value;
    Some(match v.value.as_ref()? {
        Value::Text(s) => FieldValue::Str(s.clone()),
        Value::Integer(i) => FieldValue::Int(*i),
        Value::Date(d) => {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            FieldValue::Date(time::Date::parse(d, &fmt).ok()?)
        }
        Value::List(l) => FieldValue::List(l.items.clone()),
    })
}

/// Reports the integrity failures the gateway has not heard of yet; each is marked once the gateway
/// answers. Runs after every burst that rejected something, and when the stream opens.
pub async fn report_pending(node: &Opening<'_>) {
    let Ok(rows) = sqlx::query(
        "SELECT item_id, message_id, sender, reason, detail FROM integrity_report WHERE reported_at_micros IS NULL ORDER BY found_at_micros LIMIT 100",
    )
    .fetch_all(node.store.pool())
    .await
    else {
        return;
    };
    for r in rows {
        let get = |i: usize| r.try_get::<String, _>(i).unwrap_or_default();
        let req = pb::ReportIntegrityFailureRequest {
            item_id: get(0),
            message_id: get(1),
            sender: get(2),
            reason: get(3),
            detail: get(4),
        };
        let item_id = req.item_id.clone();
        let Ok(request) = node.link.request(&PersonId::node(), Role::Node, req) else { return };
        match GatewayClient::new(node.link.channel()).report_integrity_failure(request).await {
            Ok(_) => {
                let _ = sqlx::query("UPDATE integrity_report SET reported_at_micros = $1 WHERE item_id = $2")
                    .bind(node.clock.now_micros())
                    .bind(&item_id)
                    .execute(node.store.pool())
                    .await;
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::PermissionDenied
                ) =>
            {
                // Refused for what the report says, not for the gateway's trouble: sending it again
                // would be refused again. The rejection itself stays in this node's database.
                tracing::warn!(%item_id, error = %s.message(), "the gateway refused an integrity failure report");
                let _ = sqlx::query("UPDATE integrity_report SET reported_at_micros = $1 WHERE item_id = $2")
                    .bind(node.clock.now_micros())
                    .bind(&item_id)
                    .execute(node.store.pool())
                    .await;
            }
            Err(s) => {
                tracing::warn!(%item_id, error = %node.link.describe(&s), "an integrity failure is not reported yet; it is tried again");
                return;
            }
        }
    }
}
