//! The consent registry: signed receipts, verified against the controller's pinned signing
//! certificate before anything is stored, and their states (given, withdrawn, revoked, expired,
//! superseded).
//!
//! Only the controller may use, show, renew or revoke a consent. Every change writes its audit entry in
//! the same transaction. What a revocation does to queued and delivered messages (the cascade) is the
//! routing module's part, called from the same transaction.

use haven_proto::v1::ConsentRecord;
use haven_trust::audit::{Action, AuditEntry};
use haven_trust::ids::Caller;
use haven_trust::receipt::{ConsentReceipt, ConsentState, RECEIPT_VERSION};
use haven_trust::token::{self, TokenError};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::audit;
use crate::audit::Stamp;
use crate::error::{ConsentError, Error};
use crate::policy::Bundle;
pub use crate::store::consents::{Stored, load, load_locked, load_many, load_read};
use crate::store::{Store, Unsettled, consents};

/// Why a consent was revoked; the controller gives one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// The survivor withdrew it (state `withdrawn`).
    WithdrawnBySubject,
    /// The organization revoked it (state `revoked`).
    RevokedByOrg,
    /// It should never have been recorded (state `revoked`).
    RecordedInError,
}

impl RevocationReason {
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "withdrawn_by_subject" => Ok(Self::WithdrawnBySubject),
            "revoked_by_org" => Ok(Self::RevokedByOrg),
            "recorded_in_error" => Ok(Self::RecordedInError),
            other => Err(ConsentError::UnknownReason { given: short(other) }.into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WithdrawnBySubject => "withdrawn_by_subject",
            Self::RevokedByOrg => "revoked_by_org",
            Self::RecordedInError => "recorded_in_error",
        }
    }

    fn state(self) -> ConsentState {
        match self {
            Self::WithdrawnBySubject => ConsentState::Withdrawn,
            Self::RevokedByOrg | Self::RecordedInError => ConsentState::Revoked,
        }
    }
}

impl Stored {
    /// The wire form.
    pub fn to_proto(&self) -> ConsentRecord {
        ConsentRecord {
            consent_id: self.receipt.consent_id.clone(),
            receipt_jws: self.receipt_jws.clone(),
            receipt_json: self.receipt_json.clone(),
            state: self.state.as_str().to_owned(),
            revocation_reason: self.revocation_reason.clone(),
            registered_at_micros: self.registered_at_micros,
            state_changed_at_micros: self.state_changed_at_micros,
            superseded_by: self.superseded_by.clone(),
        }
    }
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn short(s: &str) -> String {
    haven_trust::untrusted::shown(s)
}

/// A subject pseudonym of the accepted form ([`haven_sharing::consent::check_pseudonym`]).
pub fn check_pseudonym(p: &str) -> Result<(), Error> {
    haven_sharing::consent::check_pseudonym(p).map_err(|e| invalid(e.to_string()))
}

/// Checks a receipt's content against the bundle in force.
pub fn validate(receipt: &ConsentReceipt, bundle: &Bundle) -> Result<(), Error> {
    let bad = |m: String| Err(invalid(m));
    if receipt.version != RECEIPT_VERSION {
        return bad(format!("receipt version {} is not supported (expected {RECEIPT_VERSION})", receipt.version));
    }
    if uuid::Uuid::parse_str(&receipt.consent_id).is_err() {
        return bad(format!("consent_id `{}` is not a UUID", short(&receipt.consent_id)));
    }
    check_pseudonym(&receipt.subject)?;
    if receipt.purposes.is_empty() {
        return bad("a consent must name at least one purpose".into());
    }
    for p in &receipt.purposes {
        if !bundle.is_purpose(p) {
            let known: Vec<&str> = bundle.purposes().collect();
            return bad(format!("unknown purpose `{}` (known: {})", short(p), known.join(", ")));
        }
    }
    if receipt.recipient_orgs.is_empty() && receipt.recipient_types.is_empty() {
        return bad("a consent must name at least one recipient organization or organization type".into());
    }
    for o in &receipt.recipient_orgs {
        if bundle.registry().get(o).is_none() {
            return bad(format!("unknown recipient organization `{o}`"));
        }
    }
    let types = bundle.registry().types();
    for t in &receipt.recipient_types {
        if !types.contains(t) {
            let known: Vec<String> = types.iter().map(|t| t.to_string()).collect();
            return bad(format!("unknown recipient organization type `{t}` (known: {})", known.join(", ")));
        }
    }
    if receipt.labels.is_empty() && receipt.fields.is_empty() {
        return bad("a consent must allow at least one label or field".into());
    }
    for l in &receipt.labels {
        if !Bundle::is_label(l) {
            return bad(format!("unknown label `{}` (known: {})", short(l), Bundle::labels().join(", ")));
        }
    }
    for f in &receipt.fields {
        if !bundle.schema().kinds().any(|k| k.field(f).is_some()) {
            return bad(format!("unknown field `{}`: no message kind in the schema has it", short(f)));
        }
    }
    if receipt.valid_until <= receipt.valid_from {
        return bad("valid_until must be after valid_from".into());
    }
    let max_days = i64::from(bundle.network().max_consent_days);
    if receipt.valid_until - receipt.valid_from > time::Duration::days(max_days) {
        return bad(format!("the consent window is longer than the network maximum of {max_days} days"));
    }
    if receipt.evidence_sha256.len() != 64 || !receipt.evidence_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("evidence_sha256 must be the SHA-256 of the signed form, 64 hex characters".into());
    }
    if receipt.language.is_empty()
        || receipt.language.len() > 35
        || !receipt.language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return bad("language must be a BCP 47 tag such as `en` or `es-MX`".into());
    }
    Ok(())
}

/// A receipt refused for its form or content.
fn invalid(why: String) -> Error {
    ConsentError::InvalidReceipt { why }.into()
}

fn token_error(e: TokenError) -> Error {
    invalid(match e {
        TokenError::BadSignature => {
            "consent receipt signature does not verify: it was forged or changed after signing".into()
        }
        TokenError::UnknownKey(k) => {
            format!("consent receipt is signed with certificate {} that no organization's signing pin names", short(&k))
        }
        TokenError::BadClaims(m) => format!("consent receipt content is invalid: {m}"),
        other => format!("consent receipt: {other}"),
    })
}

/// Verifies a receipt JWS: signed by the caller's organization, naming it as controller, valid
/// content.
pub fn verify(jws: &str, caller: &Caller, bundle: &Bundle) -> Result<(ConsentReceipt, String), Error> {
    if jws.len() > 64 * 1024 {
        return Err(invalid("consent receipt is larger than 64 KiB".into()));
    }
    let (receipt, key_org, _) = token::verify_signed::<ConsentReceipt>(jws, bundle.registry()).map_err(token_error)?;
    if key_org != caller.org {
        return Err(ConsentError::SignedByAnother { key_org, caller: caller.org.clone() }.into());
    }
    if receipt.controller != caller.org {
        return Err(ConsentError::ControllerIsAnother { controller: receipt.controller }.into());
    }
    validate(&receipt, bundle)?;
    let json = serde_json::to_string(&receipt).map_err(|e| invalid(e.to_string()))?;
    Ok((receipt, json))
}

fn content_hash(json: &str) -> String {
    hex::encode(Sha256::digest(json.as_bytes()))
}

fn entry(stamp: &Stamp, caller: &Caller, action: Action, receipt: &ConsentReceipt, reason: &str) -> AuditEntry {
    AuditEntry {
        actor_org: caller.org.to_string(),
        actor_person: caller.person.to_string(),
        actor_role: caller.role.to_string(),
        object_id: receipt.consent_id.clone(),
        subject: receipt.subject.clone(),
        purpose: receipt.purposes.join(","),
        consent_id: receipt.consent_id.clone(),
        reason: reason.into(),
        outcome: "ok".into(),
        source_node: caller.org.to_string(),
        ..stamp.entry(action)
    }
}

/// Registers a receipt (`renew = false`) or a renewal that supersedes an earlier consent, verified
/// against `bundle`'s registry and audited with `stamp`.
pub async fn register(
    store: &Store,
    bundle: &Bundle,
    stamp: &Stamp,
    caller: &Caller,
    jws: &str,
    renew: bool,
) -> Result<Stored, Error> {
    let (receipt, json) = verify(jws, caller, bundle)?;
    match (&receipt.supersedes, renew) {
        (Some(_), false) => return Err(ConsentError::RenewalRegistered.into()),
        (None, true) => return Err(ConsentError::RenewalWithoutSupersedes.into()),
        _ => {}
    }
    let hash = content_hash(&json);
    let now = stamp.now;
    let mut tx = store.begin().await?;
    if let Some((existing, existing_hash)) = load(&mut tx, &receipt.consent_id).await? {
        tx.rollback().await?;
        return if existing_hash == hash {
            Ok(existing)
        } else {
            Err(ConsentError::ContentChanged { id: receipt.consent_id.clone() }.into())
        };
    }
    let mut entries = Vec::new();
    if let Some(old_id) = &receipt.supersedes {
        let (old, _) =
            load(&mut tx, old_id).await?.ok_or_else(|| ConsentError::SupersededNotFound { id: short(old_id) })?;
        if old.receipt.controller != caller.org {
            return Err(ConsentError::NotController { id: short(old_id), revoking: false }.into());
        }
        if old.receipt.subject != receipt.subject {
            return Err(ConsentError::OtherSubject { id: short(old_id) }.into());
        }
        if !matches!(old.state, ConsentState::Given | ConsentState::Expired) {
            return Err(ConsentError::NotRenewable { id: short(old_id), state: old.state }.into());
        }
        consents::supersede(&mut tx, old_id, &receipt.consent_id, now).await?;
        entries.push((entry(stamp, caller, Action::ConsentRenewed, &old.receipt, "superseded"), String::new()));
    }
    let new = consents::NewConsent {
        consent_id: receipt.consent_id.as_str(),
        controller: receipt.controller.as_str(),
        subject: receipt.subject.as_str(),
        receipt_jws: jws,
        receipt_json: json.as_str(),
        content_sha256: hash.as_str(),
        valid_from_micros: micros(receipt.valid_from),
        valid_until_micros: micros(receipt.valid_until),
    };
    consents::insert(&mut tx, &new, now).await?;
    entries.push((entry(stamp, caller, Action::ConsentRegistered, &receipt, ""), String::new()));
    audit::append(&mut tx, &mut entries).await?;
    tx.commit().await?;
    Ok(Stored {
        receipt,
        receipt_jws: jws.to_owned(),
        receipt_json: json,
        state: ConsentState::Given,
        revocation_reason: String::new(),
        superseded_by: String::new(),
        registered_at_micros: now,
        state_changed_at_micros: now,
    })
}

/// Revokes a consent. From the commit on, no send under it is allowed. Revoking twice is idempotent.
/// Returns the consent and the organizations that have something new queued (to wake).
pub async fn revoke(
    store: &Store,
    stamp: &Stamp,
    caller: &Caller,
    consent_id: &str,
    reason: &str,
) -> Result<(Stored, Vec<String>), Error> {
    let reason = RevocationReason::parse(reason)?;
    let now = stamp.now;
    let mut tx = store.begin().await?;
    let (mut stored, _) =
        load(&mut tx, consent_id).await?.ok_or_else(|| ConsentError::NotFound { id: short(consent_id) })?;
    if stored.receipt.controller != caller.org {
        return Err(ConsentError::NotController { id: short(consent_id), revoking: true }.into());
    }
    if matches!(stored.state, ConsentState::Withdrawn | ConsentState::Revoked) {
        tx.rollback().await?;
        return Ok((stored, Vec::new()));
    }
    let state = reason.state();
    consents::revoke(&mut tx, consent_id, state, reason.as_str(), now).await?;
    let mut entries =
        vec![(entry(stamp, caller, Action::ConsentRevoked, &stored.receipt, reason.as_str()), String::new())];
    audit::append(&mut tx, &mut entries).await?;
    let wake =
        crate::routing::lifecycle::consent_ended(&mut tx, stamp, caller.org.as_str(), consent_id, reason.as_str())
            .await?;
    tx.commit().await?;
    stored.state = state;
    stored.revocation_reason = reason.as_str().into();
    stored.state_changed_at_micros = now;
    Ok((stored, wake))
}

/// Shows a consent to its controller.
pub async fn get(store: &Store, caller: &Caller, consent_id: &str) -> Result<Unsettled<Stored>, Error> {
    let stored =
        load_read(store.pool(), consent_id).await?.ok_or_else(|| ConsentError::NotFound { id: short(consent_id) })?;
    if stored.receipt.controller != caller.org {
        return Err(ConsentError::NotController { id: short(consent_id), revoking: false }.into());
    }
    Ok(Unsettled::read(stored))
}

/// Lists the caller's consents, optionally for one subject or state, in registration order.
pub async fn list(
    store: &Store,
    caller: &Caller,
    subject: &str,
    state: &str,
    limit: u32,
    after: &str,
) -> Result<Unsettled<Vec<Stored>>, Error> {
    if !state.is_empty() && ConsentState::parse(state).is_none() {
        return Err(ConsentError::UnknownState { given: short(state) }.into());
    }
    let limit = i64::from(limit.clamp(1, 500));
    Ok(Unsettled::read(
        crate::store::consents::list(store.pool(), caller.org.as_str(), subject, state, after, limit).await?,
    ))
}

/// Marks every given consent whose window has ended by `stamp` as expired, each with its audit entry,
/// in one transaction per consent, and calls `wake` with the organizations that have something new
/// queued once that commit is durable. Returns how many expired. Runs periodically; tests call it with
/// a moved clock.
pub async fn sweep_expired(store: &Store, stamp: &Stamp, wake: &(dyn Fn(&[String]) + Sync)) -> Result<usize, Error> {
    let now = stamp.now;
    let ids = consents::due_to_expire(store.pool(), now).await?;
    let mut n = 0;
    for id in ids {
        let mut tx = store.begin().await?;
        let Some((stored, _)) = load(&mut tx, &id).await? else { continue };
        if stored.state != ConsentState::Given {
            continue;
        }
        if consents::expire(&mut tx, &id, now).await? {
            let system = AuditEntry {
                actor_org: stored.receipt.controller.to_string(),
                actor_role: "system".into(),
                object_id: id.clone(),
                subject: stored.receipt.subject.clone(),
                consent_id: id.clone(),
                reason: "expired".into(),
                outcome: "ok".into(),
                ..stamp.entry(Action::ConsentExpired)
            };
            audit::append(&mut tx, &mut [(system, String::new())]).await?;
            let woken = crate::routing::lifecycle::consent_ended(
                &mut tx,
                stamp,
                stored.receipt.controller.as_str(),
                &id,
                "expired",
            )
            .await?;
            tx.commit().await?;
            wake(&woken);
            n += 1;
            continue;
        }
        tx.commit().await?;
    }
    Ok(n)
}
