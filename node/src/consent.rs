//! Recording consent at the controller's node: the node mints the subject pseudonym when none is
//! given (128 random bits, never derived from personal data), signs the receipt with the
//! organization's signing key, registers it with the gateway as the person recording it, and keeps a
//! copy.

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::{ConsentRecord, RecordConsentRequest, RegisterConsentRequest};
use haven_trust::ids::{OrgId, OrgType, Role};
use haven_trust::receipt::{CollectionMethod, ConsentReceipt, RECEIPT_VERSION};
use rand::RngCore;
use time::OffsetDateTime;
use tonic::Status;

use haven_trust::clock::SharedClock;

use crate::link::GatewayLink;
use crate::people::Person;
use crate::store::NodeStore;

/// Mints a subject pseudonym: 128 random bits as 32 hex characters.
pub fn mint_pseudonym() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn at(micros: i64, what: &str) -> Result<OffsetDateTime, Status> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|_| Status::invalid_argument(format!("{what} is out of range")))
}

/// Only these roles record, renew and revoke consent.
pub fn may_manage(user: &Person) -> Result<(), Status> {
    if matches!(user.role, Role::Caseworker | Role::PrivacyOfficer) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "recording consent needs role caseworker or privacy_officer, not {}",
            user.role
        )))
    }
}

/// Builds the receipt a caseworker asked for.
pub fn receipt(
    link: &GatewayLink,
    clock: &SharedClock,
    user: &Person,
    r: RecordConsentRequest,
    supersedes: Option<String>,
) -> Result<ConsentReceipt, Status> {
    let now = clock.now();
    let parse_orgs = r
        .recipient_orgs
        .iter()
        .map(|o| OrgId::parse(o).map_err(|e| Status::invalid_argument(format!("recipient: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let parse_types = r
        .recipient_types
        .iter()
        .map(|t| OrgType::parse(t).map_err(|e| Status::invalid_argument(format!("recipient type: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let method = CollectionMethod::parse(&r.method).ok_or_else(|| {
        Status::invalid_argument(format!("method `{}` is not one of written, verbal_witnessed, electronic", r.method))
    })?;
    if r.valid_until_micros == 0 {
        return Err(Status::invalid_argument("valid_until is required: consent is always time-limited"));
    }
    let valid_from = if r.valid_from_micros == 0 { now } else { at(r.valid_from_micros, "valid_from")? };
    Ok(ConsentReceipt {
        version: RECEIPT_VERSION,
        consent_id: if r.consent_id.is_empty() { uuid::Uuid::new_v4().to_string() } else { r.consent_id },
        subject: if r.subject_pseudonym.is_empty() { mint_pseudonym() } else { r.subject_pseudonym },
        controller: link.signer().org().clone(),
        purposes: r.purposes,
        recipient_orgs: parse_orgs,
        recipient_types: parse_types,
        labels: r.labels,
        fields: r.fields,
        valid_from,
        valid_until: at(r.valid_until_micros, "valid_until")?,
        method,
        evidence_sha256: r.evidence_sha256,
        language: r.language,
        recorded_by: user.name.clone(),
        issued_at: now,
        supersedes,
    })
}

/// Signs and registers a receipt (or a renewal), then keeps a copy.
pub async fn register(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    user: &Person,
    receipt: ConsentReceipt,
    renew: bool,
) -> Result<ConsentRecord, Status> {
    let jws = link.signer().sign(&receipt).map_err(|e| Status::internal(e.to_string()))?;
    let mut gw = GatewayClient::new(link.channel());
    let req = link.request(&user.name, user.role, RegisterConsentRequest { receipt_jws: jws })?;
    let record = if renew { gw.renew_consent(req).await } else { gw.register_consent(req).await }
        .map_err(|s| link.relay(s))?
        .into_inner();
    remember(store, clock, &record, &receipt.subject, user).await?;
    Ok(record)
}

/// Keeps the node's copy of a consent in step with the gateway's.
pub async fn remember(
    store: &NodeStore,
    clock: &SharedClock,
    record: &ConsentRecord,
    subject: &str,
    user: &Person,
) -> Result<(), Status> {
    sqlx::query("INSERT INTO consents (consent_id, subject, receipt_jws, state, recorded_by, updated_at_micros) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (consent_id) DO UPDATE SET state = excluded.state, updated_at_micros = excluded.updated_at_micros")
        .bind(&record.consent_id)
        .bind(subject)
        .bind(&record.receipt_jws)
        .bind(&record.state)
        .bind(user.name.as_str())
        .bind(clock.now_micros())
        .execute(store.pool())
        .await
        .map_err(crate::store::status)?;
    Ok(())
}

/// The subject pseudonym a consent record's receipt names ('' if it names none).
pub fn subject_of(record: &ConsentRecord) -> String {
    serde_json::from_str::<ConsentReceipt>(&record.receipt_json).map(|r| r.subject).unwrap_or_default()
}

/// The scan of a consent's signed form, as kept.
pub struct Scan {
    pub sha256: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Keeps the scan of consent `consent_id`'s signed form, recording who kept it, in one transaction.
/// A second keep of the same consent changes nothing.
pub async fn keep_scan(
    store: &NodeStore,
    clock: &SharedClock,
    who: &Person,
    source: &crate::access::Source,
    consent_id: &str,
    scan: &Scan,
) -> Result<(), sqlx::Error> {
    let now = clock.now_micros();
    let mut tx = store.pool().begin().await?;
    let new = sqlx::query("INSERT INTO consent_scan (consent_id, sha256, content_type, bytes, stored_by, stored_at_micros) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (consent_id) DO NOTHING")
        .bind(consent_id)
        .bind(&scan.sha256)
        .bind(&scan.content_type)
        .bind(&scan.bytes)
        .bind(who.name.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if new {
        crate::access::consent_scan(&mut tx, who, "scan_kept", consent_id, source, now).await?;
    }
    tx.commit().await
}

/// Whether the node keeps a scan for this consent (without reading it).
pub async fn has_scan(store: &NodeStore, consent_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM consent_scan WHERE consent_id = $1")
        .bind(consent_id)
        .fetch_optional(store.pool())
        .await?;
    Ok(found.is_some())
}

/// The kept scan of a consent's signed form, its opening recorded in the access log in the same
/// transaction.
pub async fn open_scan(
    store: &NodeStore,
    clock: &SharedClock,
    who: &Person,
    source: &crate::access::Source,
    consent_id: &str,
) -> Result<Option<Scan>, sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let row: Option<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT sha256, content_type, bytes FROM consent_scan WHERE consent_id = $1")
            .bind(consent_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((sha256, content_type, bytes)) = row else { return Ok(None) };
    crate::access::consent_scan(&mut tx, who, "scan_opened", consent_id, source, clock.now_micros()).await?;
    tx.commit().await?;
    Ok(Some(Scan { sha256, content_type, bytes }))
}
