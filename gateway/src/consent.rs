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
use sqlx::Row;
use time::OffsetDateTime;

use crate::app::Gateway;
use crate::audit;
use crate::error::Error;
use crate::policy::Bundle;
use crate::store::Tx;

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
            other => Err(Error::InvalidArgument(format!(
                "revocation reason `{}` is not one of withdrawn_by_subject, revoked_by_org, recorded_in_error",
                haven_trust::untrusted::shown(other)
            ))),
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

/// A stored consent.
#[derive(Debug, Clone)]
pub struct Stored {
    pub receipt: ConsentReceipt,
    pub receipt_jws: String,
    pub receipt_json: String,
    pub state: ConsentState,
    pub revocation_reason: String,
    pub superseded_by: String,
    pub registered_at_micros: i64,
    pub state_changed_at_micros: i64,
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
    haven_sharing::consent::check_pseudonym(p).map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// Checks a receipt's content against the bundle in force.
pub fn validate(receipt: &ConsentReceipt, bundle: &Bundle) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
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

fn token_error(e: TokenError) -> Error {
    match e {
        TokenError::BadSignature => Error::InvalidArgument(
            "consent receipt signature does not verify: it was forged or changed after signing".into(),
        ),
        TokenError::UnknownKey(k) => Error::InvalidArgument(format!(
            "consent receipt is signed with certificate {} that no organization's signing pin names",
            short(&k)
        )),
        TokenError::BadClaims(m) => Error::InvalidArgument(format!("consent receipt content is invalid: {m}")),
        other => Error::InvalidArgument(format!("consent receipt: {other}")),
    }
}

/// Verifies a receipt JWS: signed by the caller's organization, naming it as controller, valid
/// content.
pub fn verify(jws: &str, caller: &Caller, bundle: &Bundle) -> Result<(ConsentReceipt, String), Error> {
    if jws.len() > 64 * 1024 {
        return Err(Error::InvalidArgument("consent receipt is larger than 64 KiB".into()));
    }
    let (receipt, key_org, _) = token::verify_signed::<ConsentReceipt>(jws, bundle.registry()).map_err(token_error)?;
    if key_org != caller.org {
        return Err(Error::PermissionDenied(format!(
            "consent receipt is signed with the key of organization `{key_org}`, but you are `{}`",
            caller.org
        )));
    }
    if receipt.controller != caller.org {
        return Err(Error::PermissionDenied(format!(
            "consent receipt names controller `{}`; only the controller may register it",
            receipt.controller
        )));
    }
    validate(&receipt, bundle)?;
    let json = serde_json::to_string(&receipt).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok((receipt, json))
}

fn content_hash(json: &str) -> String {
    hex::encode(Sha256::digest(json.as_bytes()))
}

fn row_to_stored(row: &sqlx::any::AnyRow) -> Result<Stored, Error> {
    let json: String = row.try_get("receipt_json")?;
    let receipt: ConsentReceipt = serde_json::from_str(&json)
        .map_err(|e| Error::Internal(format!("a stored consent receipt cannot be decoded: {e}")))?;
    let state: String = row.try_get("state")?;
    let state = ConsentState::parse(&state)
        .ok_or_else(|| Error::Internal(format!("a stored consent has the unknown state `{state}`")))?;
    Ok(Stored {
        receipt,
        receipt_jws: row.try_get("receipt_jws")?,
        receipt_json: json,
        state,
        revocation_reason: row.try_get("revocation_reason")?,
        superseded_by: row.try_get("superseded_by")?,
        registered_at_micros: row.try_get("registered_at_micros")?,
        state_changed_at_micros: row.try_get("state_changed_at_micros")?,
    })
}

/// The columns every consent read selects.
macro_rules! select {
    ($tail:literal) => {
        concat!("SELECT consent_id, receipt_json, receipt_jws, state, revocation_reason, superseded_by, registered_at_micros, state_changed_at_micros, content_sha256 FROM consents ", $tail)
    };
}

/// Loads a consent in a transaction.
pub async fn load(tx: &mut Tx<'_>, consent_id: &str) -> Result<Option<(Stored, String)>, Error> {
    let row = sqlx::query(select!("WHERE consent_id = $1")).bind(consent_id).fetch_optional(&mut **tx).await?;
    match row {
        Some(r) => Ok(Some((row_to_stored(&r)?, r.try_get("content_sha256")?))),
        None => Ok(None),
    }
}

/// Loads consents by id in a transaction, for a shared commit's submissions: each id maps to its
/// consent, or to `None` where there is none. A row that cannot be read is left out, so the submission
/// that names it reads it alone and gets the reason.
///
/// On PostgreSQL it also locks the rows (as [`load_locked`] does), skipping any another transaction
/// holds: those are left out too, and each submission that names one waits for it alone.
pub async fn load_many(tx: &mut Tx<'_>, ids: &[&str]) -> Result<Vec<(String, Option<Stored>)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sqlite = crate::audit::is_sqlite(tx);
    let mut sql = String::from(select!("WHERE consent_id IN "));
    crate::audit::push_row(&mut sql, sqlite, 0, ids.len());
    if !sqlite {
        sql.push_str(" FOR NO KEY UPDATE SKIP LOCKED");
    }
    // Its shape changes with the number of ids, which callers take in `audit::chunks`.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    // Where rows may be skipped, a missing id is not known to be absent.
    let mut found: std::collections::HashMap<String, Option<Stored>> =
        if sqlite { ids.iter().map(|id| ((*id).to_owned(), None)).collect() } else { Default::default() };
    for row in q.fetch_all(&mut **tx).await? {
        let id: String = row.try_get("consent_id")?;
        match row_to_stored(&row) {
            Ok(stored) => found.insert(id, Some(stored)),
            Err(_) => found.remove(&id),
        };
    }
    Ok(found.into_iter().collect())
}

/// Loads a consent in a transaction and, on PostgreSQL, locks its row until the transaction ends, as a
/// revocation does, so the two are ordered (SQLite's transactions already are).
pub async fn load_locked(tx: &mut Tx<'_>, consent_id: &str) -> Result<Option<Stored>, Error> {
    let sql = if crate::audit::is_sqlite(tx) {
        select!("WHERE consent_id = $1")
    } else {
        select!("WHERE consent_id = $1 FOR NO KEY UPDATE")
    };
    let row = sqlx::query(sql).bind(consent_id).fetch_optional(&mut **tx).await?;
    row.as_ref().map(row_to_stored).transpose()
}

/// Loads a consent outside a transaction (decisions, shows).
pub async fn load_read(pool: &sqlx::AnyPool, consent_id: &str) -> Result<Option<Stored>, Error> {
    let row = sqlx::query(select!("WHERE consent_id = $1")).bind(consent_id).fetch_optional(pool).await?;
    row.as_ref().map(row_to_stored).transpose()
}

fn entry(g: &Gateway, caller: &Caller, action: Action, receipt: &ConsentReceipt, reason: &str) -> AuditEntry {
    AuditEntry {
        time_micros: g.0.clock.now_micros(),
        actor_org: caller.org.to_string(),
        actor_person: caller.person.to_string(),
        actor_role: caller.role.to_string(),
        action: action.as_str().into(),
        object_id: receipt.consent_id.clone(),
        subject: receipt.subject.clone(),
        purpose: receipt.purposes.join(","),
        consent_id: receipt.consent_id.clone(),
        bundle_version: g.bundle().version_id().to_owned(),
        reason: reason.into(),
        outcome: "ok".into(),
        source_node: caller.org.to_string(),
        ..Default::default()
    }
}

/// Registers a receipt (`renew = false`) or a renewal that supersedes an earlier consent.
pub async fn register(g: &Gateway, caller: &Caller, jws: &str, renew: bool) -> Result<Stored, Error> {
    let bundle = g.bundle();
    let (receipt, json) = verify(jws, caller, &bundle)?;
    match (&receipt.supersedes, renew) {
        (Some(_), false) => {
            return Err(Error::InvalidArgument(
                "this receipt supersedes another consent: register it with RenewConsent".into(),
            ));
        }
        (None, true) => {
            return Err(Error::InvalidArgument("a renewal must name the consent it supersedes (`supersedes`)".into()));
        }
        _ => {}
    }
    let hash = content_hash(&json);
    let now = g.0.clock.now_micros();
    let mut tx = g.0.store.begin().await?;
    if let Some((existing, existing_hash)) = load(&mut tx, &receipt.consent_id).await? {
        tx.rollback().await?;
        return if existing_hash == hash {
            Ok(existing)
        } else {
            Err(Error::AlreadyExists(format!(
                "consent `{}` is already registered with different content; a changed consent is a renewal with a new consent_id",
                receipt.consent_id
            )))
        };
    }
    let mut entries = Vec::new();
    if let Some(old_id) = &receipt.supersedes {
        let (old, _) = load(&mut tx, old_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("consent `{}` to supersede does not exist", short(old_id))))?;
        if old.receipt.controller != caller.org {
            return Err(Error::PermissionDenied(format!("consent `{old_id}` belongs to another organization")));
        }
        if old.receipt.subject != receipt.subject {
            return Err(Error::InvalidArgument(format!("consent `{old_id}` is about another subject")));
        }
        if !matches!(old.state, ConsentState::Given | ConsentState::Expired) {
            return Err(Error::FailedPrecondition(format!(
                "consent `{old_id}` is {}; only a given or expired consent can be renewed",
                old.state.as_str()
            )));
        }
        sqlx::query("UPDATE consents SET state = 'superseded', superseded_by = $1, state_changed_at_micros = $2 WHERE consent_id = $3")
            .bind(receipt.consent_id.as_str())
            .bind(now)
            .bind(old_id.as_str())
            .execute(&mut *tx)
            .await?;
        entries.push((entry(g, caller, Action::ConsentRenewed, &old.receipt, "superseded"), String::new()));
    }
    sqlx::query("INSERT INTO consents (consent_id, controller, subject, receipt_jws, receipt_json, content_sha256, valid_from_micros, valid_until_micros, state, registered_at_micros, state_changed_at_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'given', $9, $9)")
        .bind(receipt.consent_id.as_str())
        .bind(receipt.controller.as_str())
        .bind(receipt.subject.as_str())
        .bind(jws)
        .bind(json.as_str())
        .bind(hash.as_str())
        .bind(micros(receipt.valid_from))
        .bind(micros(receipt.valid_until))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    entries.push((entry(g, caller, Action::ConsentRegistered, &receipt, ""), String::new()));
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
pub async fn revoke(g: &Gateway, caller: &Caller, consent_id: &str, reason: &str) -> Result<Stored, Error> {
    let reason = RevocationReason::parse(reason)?;
    let now = g.0.clock.now_micros();
    let mut tx = g.0.store.begin().await?;
    let (mut stored, _) = load(&mut tx, consent_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no consent `{}`", short(consent_id))))?;
    if stored.receipt.controller != caller.org {
        return Err(Error::PermissionDenied(format!(
            "consent `{consent_id}` belongs to another organization; only its controller may revoke it"
        )));
    }
    if matches!(stored.state, ConsentState::Withdrawn | ConsentState::Revoked) {
        tx.rollback().await?;
        return Ok(stored);
    }
    let state = reason.state();
    sqlx::query(
        "UPDATE consents SET state = $1, revocation_reason = $2, state_changed_at_micros = $3 WHERE consent_id = $4",
    )
    .bind(state.as_str())
    .bind(reason.as_str())
    .bind(now)
    .bind(consent_id)
    .execute(&mut *tx)
    .await?;
    let mut entries = vec![(entry(g, caller, Action::ConsentRevoked, &stored.receipt, reason.as_str()), String::new())];
    audit::append(&mut tx, &mut entries).await?;
    let wake =
        crate::routing::lifecycle::consent_ended(g, &mut tx, caller.org.as_str(), consent_id, reason.as_str(), now)
            .await?;
    tx.commit().await?;
    for org in wake {
        g.0.wakeups.wake(&org);
    }
    stored.state = state;
    stored.revocation_reason = reason.as_str().into();
    stored.state_changed_at_micros = now;
    Ok(stored)
}

/// Shows a consent to its controller.
pub async fn get(g: &Gateway, caller: &Caller, consent_id: &str) -> Result<Stored, Error> {
    let stored = load_read(g.0.store.pool(), consent_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no consent `{}`", short(consent_id))))?;
    if stored.receipt.controller != caller.org {
        return Err(Error::PermissionDenied(format!("consent `{consent_id}` belongs to another organization")));
    }
    Ok(stored)
}

/// Lists the caller's consents, optionally for one subject or state, in registration order.
pub async fn list(
    g: &Gateway,
    caller: &Caller,
    subject: &str,
    state: &str,
    limit: u32,
    after: &str,
) -> Result<Vec<Stored>, Error> {
    if !state.is_empty() && ConsentState::parse(state).is_none() {
        return Err(Error::InvalidArgument(format!(
            "unknown consent state `{}` (known: given, withdrawn, revoked, expired, superseded)",
            short(state)
        )));
    }
    let limit = i64::from(limit.clamp(1, 500));
    let rows = sqlx::query(
        select!("WHERE controller = $1 AND ($2 = '' OR subject = $2) AND ($3 = '' OR state = $3) AND consent_id > $4 ORDER BY consent_id LIMIT $5"),
    )
    .bind(caller.org.as_str())
    .bind(subject)
    .bind(state)
    .bind(after)
    .bind(limit)
    .fetch_all(g.0.store.pool())
    .await?;
    rows.iter().map(row_to_stored).collect()
}

/// Marks every given consent whose window has ended as expired, each with its audit entry, in one
/// transaction per consent. Returns how many expired. Runs periodically; tests call it with a moved
/// clock.
pub async fn sweep_expired(g: &Gateway) -> Result<usize, Error> {
    let now = g.0.clock.now_micros();
    let ids: Vec<String> = sqlx::query("SELECT consent_id FROM consents WHERE state = 'given' AND valid_until_micros <= $1 ORDER BY valid_until_micros LIMIT 1000")
        .bind(now)
        .fetch_all(g.0.store.pool())
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    let mut n = 0;
    for id in ids {
        let mut tx = g.0.store.begin().await?;
        let Some((stored, _)) = load(&mut tx, &id).await? else { continue };
        if stored.state != ConsentState::Given {
            continue;
        }
        let done = sqlx::query("UPDATE consents SET state = 'expired', state_changed_at_micros = $1 WHERE consent_id = $2 AND state = 'given'")
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            let system = AuditEntry {
                time_micros: now,
                actor_org: stored.receipt.controller.to_string(),
                actor_role: "system".into(),
                action: Action::ConsentExpired.as_str().into(),
                object_id: id.clone(),
                subject: stored.receipt.subject.clone(),
                consent_id: id.clone(),
                bundle_version: g.bundle().version_id().to_owned(),
                reason: "expired".into(),
                outcome: "ok".into(),
                ..Default::default()
            };
            audit::append(&mut tx, &mut [(system, String::new())]).await?;
            let wake = crate::routing::lifecycle::consent_ended(
                g,
                &mut tx,
                stored.receipt.controller.as_str(),
                &id,
                "expired",
                now,
            )
            .await?;
            tx.commit().await?;
            for org in wake {
                g.0.wakeups.wake(&org);
            }
            n += 1;
            continue;
        }
        tx.commit().await?;
    }
    Ok(n)
}
