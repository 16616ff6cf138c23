//! Sealed copies at the gateway: each copy of a submission is checked before the submission's commit,
//! without opening it (the gateway holds no key that could).
//!
//! A submission whose bundle version is not the bundle in force is refused whole (`bundle_changed`):
//! the sender decided under other rules. A copy that is malformed as a request (a recipient named
//! twice, or not named by the envelope) refuses the whole submission too; it is the sender's bug. A
//! copy whose manifest does not verify, does not match the envelope, or is sealed to a key that is not
//! the recipient's current one refuses only that recipient, with a reason the audit trail records. That
//! the manifest's fields are within what the decision releases is checked in the commit, beside the
//! decision ([`Checked::apply`]).

use std::collections::BTreeMap;

use haven_proto::v1 as pb;
use haven_trust::ids::{Caller, OrgId};
use haven_trust::sealed::{self, Manifest, SealedCopy};
use sha2::{Digest, Sha256};

use crate::envelope::{Envelope, Recipients};
use crate::error::Error;
use crate::policy::{Bundle, Decision, DenyReason};
use crate::store::Store;
use crate::store::key_log;

/// One copy after its checks.
#[derive(Debug, Clone)]
pub enum Checked {
    /// The manifest verified and matches the envelope; the copy may go if the decision releases its
    /// fields.
    Sound { manifest: Box<Manifest>, copy: pb::SealedCopy },
    /// The recipient is refused for this reason, whatever the policy says.
    Refused { reason: DenyReason, detail: String },
}

/// Every copy of a submission, by recipient.
#[derive(Debug, Clone, Default)]
pub struct Copies {
    by_recipient: BTreeMap<OrgId, Checked>,
    /// What makes two submissions' copies the same: each recipient, manifest and sealed hash.
    digest: String,
    /// Why the copies cannot be used, when they were sealed under another bundle than the one in force.
    stale: Option<String>,
}

impl Copies {
    /// What the content hash of a submission includes of its copies.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The `bundle_changed` refusal, when the copies were sealed under another bundle than the one in
    /// force.
    pub fn stale(&self) -> Option<&str> {
        self.stale.as_deref()
    }

    /// `decision` for `recipient`, with its copy: an allow narrowed to the fields sealed, or refused
    /// when the copy is missing, unsound or exceeds the grant. Returns the copy that goes, with its
    /// manifest's `not_after` (Unix seconds), past which its recipient would refuse it.
    pub fn apply(&self, recipient: &OrgId, decision: Decision) -> (Decision, Option<(pb::SealedCopy, i64)>) {
        if !decision.allowed() {
            return (decision, None);
        }
        match self.by_recipient.get(recipient) {
            None => (
                decision
                    .refused(DenyReason::NoSealedCopy, Some(format!("the sender sealed no copy for `{recipient}`"))),
                None,
            ),
            Some(Checked::Refused { reason, detail }) => (decision.refused(*reason, Some(detail.clone())), None),
            Some(Checked::Sound { manifest, copy }) => match decision.clone().narrowed_to(&manifest.body.fields) {
                Ok(narrowed) => (narrowed, Some((copy.clone(), manifest.body.not_after))),
                Err(exceeding) => (
                    decision.refused(
                        DenyReason::ManifestExceedsGrant,
                        Some(format!("the policy does not release {} to `{recipient}`", exceeding.join(", "))),
                    ),
                    None,
                ),
            },
        }
    }
}

/// Checks the copies of a submission from `caller` of `env`, decided by its sender under
/// `bundle_version`, at `now` (Unix seconds).
pub async fn check(
    store: &Store,
    bundle: &Bundle,
    caller: &Caller,
    env: &Envelope,
    bundle_version: &str,
    copies: Vec<pb::SealedCopy>,
    now: i64,
) -> Result<Copies, Error> {
    // Refused in the commit, after the message id is looked up: a retry of a submission that was
    // stored before the bundle changed is answered with its first reply, not refused.
    let stale = (bundle_version != bundle.version_id()).then(|| {
        format!(
            "bundle_changed: the copies were sealed under bundle {}, but {} is in force; fetch it (Gateway.PolicyBundle), decide again and seal again under the same message id",
            haven_trust::untrusted::shown(bundle_version),
            bundle.version_id()
        )
    });
    let max = bundle.network().max_recipients as usize;
    if copies.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{} sealed copies is more than the network maximum of {max} recipients",
            copies.len()
        )));
    }
    let names = env.fields.names();
    let mut by_recipient = BTreeMap::new();
    let mut digest = Sha256::new();
    let mut keys: BTreeMap<OrgId, Vec<String>> = BTreeMap::new();
    for copy in copies {
        let recipient =
            OrgId::parse(&copy.recipient).map_err(|e| Error::InvalidArgument(format!("sealed copy recipient: {e}")))?;
        if by_recipient.contains_key(&recipient) {
            return Err(Error::InvalidArgument(format!("two sealed copies for `{recipient}`; send one per recipient")));
        }
        if let Recipients::Named(list) = &env.recipients
            && !list.contains(&recipient)
        {
            return Err(Error::InvalidArgument(format!(
                "a sealed copy for `{recipient}`, which the envelope does not name as a recipient"
            )));
        }
        for part in [
            copy.recipient.as_bytes(),
            copy.manifest.as_bytes(),
            &Sha256::digest(&copy.enc),
            &Sha256::digest(&copy.ciphertext),
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        if !keys.contains_key(&recipient) {
            let kids = key_log::usable_keys(store, recipient.as_str(), now.saturating_mul(1_000_000)).await?;
            keys.insert(recipient.clone(), kids);
        }
        let checked = match verify(&copy, bundle, caller, env, &names, &recipient, now) {
            Err((reason, detail)) => Checked::Refused { reason, detail },
            Ok(m) if !keys.get(&recipient).is_some_and(|k| k.contains(&m.body.recipient_kid)) => Checked::Refused {
                reason: DenyReason::UnknownSealingKey,
                detail: format!(
                    "{} is not a current sealing key of `{recipient}` in the key log",
                    haven_trust::untrusted::shown(&m.body.recipient_kid)
                ),
            },
            Ok(m) => Checked::Sound { manifest: Box::new(m), copy },
        };
        by_recipient.insert(recipient, checked);
    }
    Ok(Copies { by_recipient, digest: hex::encode(digest.finalize()), stale })
}

/// The manifest's own checks and its agreement with the envelope.
fn verify(
    copy: &pb::SealedCopy,
    bundle: &Bundle,
    caller: &Caller,
    env: &Envelope,
    names: &[&str],
    recipient: &OrgId,
    now: i64,
) -> Result<Manifest, (DenyReason, String)> {
    let mismatch = |detail: String| (DenyReason::ManifestMismatch, detail);
    let sealed_copy =
        SealedCopy { manifest: copy.manifest.clone(), enc: copy.enc.clone(), ciphertext: copy.ciphertext.clone() };
    let m = sealed::verify_by_pins(&sealed_copy, bundle.registry(), now).map_err(|e| mismatch(e.to_string()))?;
    let b = &m.body;
    let consent = env.consent_id.as_ref().map(|c| c.as_str()).unwrap_or("");
    let message_id = env.message_id.to_string();
    let person = caller.person.to_string();
    let checks: [(&'static str, &str, &str); 9] = [
        ("sender", b.sender.as_str(), caller.org.as_str()),
        ("sender person", &b.sender_person, &person),
        ("correlation id", &b.correlation_id, &env.correlation_id),
        ("recipient", b.recipient.as_str(), recipient.as_str()),
        ("message id", &b.message_id, &message_id),
        ("kind", &b.kind, env.kind.as_str()),
        ("purpose", &b.purpose, env.purpose.as_str()),
        ("consent id", &b.consent_id, consent),
        ("bundle version", &b.bundle_version, bundle.version_id()),
    ];
    for (what, got, want) in checks {
        if got != want {
            return Err(mismatch(format!(
                "the manifest's {what} is `{}`, but the message's is `{want}`",
                haven_trust::untrusted::shown(got)
            )));
        }
    }
    if let Some(extra) = b.fields.iter().find(|f| !names.contains(&f.as_str())) {
        return Err(mismatch(format!(
            "the manifest lists field `{}`, which the envelope does not name",
            haven_trust::untrusted::shown(extra)
        )));
    }
    let missing = bundle
        .schema()
        .kind(env.kind.as_str())
        .and_then(|k| k.fields().iter().find(|f| f.required && !b.fields.contains(&f.name)).map(|f| f.name.clone()));
    if let Some(field) = missing {
        return Err(mismatch(format!("the manifest leaves out `{field}`, which the schema requires")));
    }
    Ok(m)
}

#[cfg(test)]
impl Copies {
    /// Copies taken as sound, each listing its fields: for the plan's tests, which check no signatures.
    pub fn assumed(copies: &[(&str, &[&str])]) -> Copies {
        let by_recipient = copies
            .iter()
            .map(|(recipient, fields)| {
                let recipient = OrgId::parse(recipient).unwrap_or_else(|e| panic!("{e}"));
                let body = sealed::ManifestBody {
                    v: sealed::MANIFEST_VERSION,
                    message_id: String::new(),
                    sender: recipient.clone(),
                    sender_person: String::new(),
                    recipient: recipient.clone(),
                    kind: String::new(),
                    purpose: String::new(),
                    consent_id: String::new(),
                    correlation_id: String::new(),
                    bundle_version: String::new(),
                    fields: fields.iter().map(|f| (*f).to_owned()).collect(),
                    recipient_kid: String::new(),
                    created_at: 0,
                    not_after: i64::MAX / 1_000_000,
                    key_log: None,
                };
                let manifest = Box::new(Manifest { body, sealed_sha256: String::new() });
                let copy = pb::SealedCopy { recipient: recipient.to_string(), ..Default::default() };
                (recipient, Checked::Sound { manifest, copy })
            })
            .collect();
        Copies { by_recipient, digest: format!("{copies:?}"), stale: None }
    }
}
