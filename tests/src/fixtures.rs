//! What the integration tests build again and again, written once: field values, consent requests,
//! referrals, sends, and the wait for a delivery stream to end. Every organization, person and survivor
//! here is fictional.

use std::collections::HashMap;
use std::time::Duration;

use haven_proto::v1::{
    Envelope, FieldValue, GatewayFrame, RecordConsentRequest, SendRequest, SendResponse, field_value,
};
use haven_trust::receipt::ConsentReceipt;

use crate::net::TestNode;

/// A day in microseconds.
pub const DAY: i64 = 86_400_000_000;

/// A text field value.
pub fn text(s: &str) -> FieldValue {
    FieldValue { value: Some(field_value::Value::Text(s.into())) }
}

/// A consent request to share for `purposes` with organizations of `types`, under `labels`, until
/// `valid_until_micros`; recorded in writing, in English, for the subject the node mints.
pub fn consent_request(
    purposes: &[&str],
    types: &[&str],
    labels: &[&str],
    valid_until_micros: i64,
) -> RecordConsentRequest {
    RecordConsentRequest {
        purposes: purposes.iter().map(|s| s.to_string()).collect(),
        recipient_types: types.iter().map(|s| s.to_string()).collect(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        valid_until_micros,
        method: "written".into(),
        evidence_sha256: "ef".repeat(32),
        language: "en".into(),
        ..Default::default()
    }
}

/// Records `req` at `node` as casey (its caseworker); returns the consent id and the subject.
pub async fn record_consent(node: &TestNode, req: RecordConsentRequest) -> (String, String) {
    let c = node.client().await.record_consent(node.as_person("casey", req)).await.unwrap().into_inner();
    let subject = serde_json::from_str::<ConsentReceipt>(&c.receipt_json).unwrap().subject;
    (c.consent_id, subject)
}

/// A referral to `to` for `purpose` about `subject` under `consent`, with the fields the sample schema
/// requires and a fictional first name.
pub fn referral(to: &str, purpose: &str, subject: &str, consent: &str) -> Envelope {
    Envelope {
        kind: "referral".into(),
        recipients: vec![to.into()],
        purpose: purpose.into(),
        subject_pseudonym: subject.into(),
        consent_id: consent.into(),
        fields: HashMap::from([
            ("urgency".into(), text("high")),
            ("safe_to_contact_by".into(), text("through_caseworker")),
            ("survivor_first_name".into(), text("Rosa (fictional)")),
        ]),
        ..Default::default()
    }
}

/// Sends `env` through `node` as `person`.
pub async fn send(node: &TestNode, person: &str, env: Envelope) -> Result<SendResponse, tonic::Status> {
    node.client().await.send(node.as_person(person, SendRequest { envelope: Some(env) })).await.map(|r| r.into_inner())
}

/// Reads a delivery stream until it ends, at most `within`: the status it ended with, or `None` when it
/// ended without one. Panics, naming `what`, if it is still open after `within`.
pub async fn stream_end(
    stream: &mut tonic::Streaming<GatewayFrame>,
    within: Duration,
    what: &str,
) -> Option<tonic::Status> {
    tokio::time::timeout(within, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => break None,
                Err(s) => break Some(s),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: the stream is still open after {within:?}"))
}

/// Polls `check` (every 20 ms) until it yields a value; fails after `limit`, naming `what`. For facts
/// that only a database holds (a row written by another process); an event a test can await, it awaits.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
