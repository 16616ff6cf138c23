//! The consent registry through a real node and a real gateway over mTLS: recording, the decisions a
//! consent allows and every way it can fail to cover a send, and every bad input refused with nothing
//! stored.

use std::collections::HashMap;
use std::sync::Arc;

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::*;
use haven_tests::fixtures::{DAY, consent_request, text};
use haven_tests::net::{TestNet, TestNode};
use haven_trust::clock::{Clock, ManualClock};
use haven_trust::ids::{PersonId, Role};
use haven_trust::receipt::ConsentReceipt;
use tonic::Code;

fn draft(clock: &dyn Clock, purposes: &[&str], types: &[&str], labels: &[&str]) -> RecordConsentRequest {
    RecordConsentRequest {
        evidence_sha256: "ab".repeat(32),
        ..consent_request(purposes, types, labels, clock.now_micros() + 90 * DAY)
    }
}

async fn record(node: &TestNode, d: RecordConsentRequest) -> ConsentRecord {
    node.client().await.record_consent(node.as_person("casey", d)).await.expect("consent recorded").into_inner()
}

fn subject_of(c: &ConsentRecord) -> String {
    serde_json::from_str::<ConsentReceipt>(&c.receipt_json).unwrap().subject
}

/// A housing referral's fields: required ones plus one sensitive field.
fn referral_fields() -> HashMap<String, FieldValue> {
    HashMap::from([
        ("urgency".into(), text("high")),
        ("safe_to_contact_by".into(), text("through_caseworker")),
        ("preferred_language".into(), text("es")),
        ("survivor_first_name".into(), text("Rosa (fictional)")),
        ("medical_notes".into(), text("fictional notes")),
    ])
}

async fn decide(net: &TestNet, org: &str, to: &str, purpose: &str, subject: &str, consent: &str) -> Decision {
    let link = net.link(org);
    let env = Envelope {
        kind: "referral".into(),
        recipients: vec![to.into()],
        purpose: purpose.into(),
        subject_pseudonym: subject.into(),
        consent_id: consent.into(),
        fields: referral_fields(),
        ..Default::default()
    };
    let req = link
        .request(
            &PersonId::parse("casey").unwrap(),
            Role::Caseworker,
            DecideRequest { envelope: Some(haven_tests::sender::names_only(&env)) },
        )
        .unwrap();
    let mut resp = GatewayClient::new(link.channel()).decide(req).await.expect("decide").into_inner();
    assert_eq!(resp.outcomes.len(), 1);
    resp.outcomes.remove(0).decision.unwrap()
}

fn assert_denied(d: &Decision, code: &str) {
    assert!(!d.allowed, "expected {code}, got an allow: {d:?}");
    assert_eq!(d.reason_code, code, "{d:?}");
}

#[tokio::test]
async fn a_referral_is_allowed_under_a_valid_consent_and_minimized() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let c = record(
        &harbor,
        draft(&haven_trust::clock::SystemClock, &["housing"], &["shelter"], &["identifying", "contact", "operational"]),
    )
    .await;
    assert_eq!(c.state, "given");
    assert_eq!(subject_of(&c).len(), 32, "the node mints a 128-bit pseudonym");
    let d = decide(&net, "harbor", "maple-house", "housing", &subject_of(&c), &c.consent_id).await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.rule_ids, vec!["ngo-to-shelter-housing".to_owned()]);
    assert!(d.released_fields.contains(&"survivor_first_name".to_owned()));
    assert!(d.withheld_fields.contains(&"medical_notes".to_owned()), "sensitive fields never go to a shelter");
    assert!(d.bundle_version.starts_with("sha256:"));
    net.stop().await;
}

#[tokio::test]
async fn each_way_a_consent_can_fail_to_cover_a_send_has_its_own_reason() {
    let clock = ManualClock::starting_now();
    let net = TestNet::start_with_clock(Arc::new(clock.clone())).await;
    let harbor = net.node_with_clock("harbor", &[("casey", Role::Caseworker)], Arc::new(clock.clone())).await;
    let northstar = net.node_with_clock("northstar", &[("casey", Role::Caseworker)], Arc::new(clock.clone())).await;
    let all = ["identifying", "contact", "operational", "sensitive", "location"];
    let housing = record(&harbor, draft(&clock, &["housing"], &["shelter"], &all)).await;
    let s = subject_of(&housing);

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_denied(&decide(&net, "harbor", "maple-house", "housing", &s, &unknown).await, "consent_missing");
    assert_denied(&decide(&net, "harbor", "maple-house", "housing", &s, "").await, "consent_missing");
    assert_denied(
        &decide(&net, "northstar", "maple-house", "housing", &s, &housing.consent_id).await,
        "consent_other_organization",
    );
    let other_subject = "0123456789abcdef0123456789abcdef";
    assert_denied(
        &decide(&net, "harbor", "maple-house", "housing", other_subject, &housing.consent_id).await,
        "consent_other_subject",
    );
    assert_denied(
        &decide(&net, "harbor", "riverside-clinic", "medical", &s, &housing.consent_id).await,
        "consent_purpose_not_covered",
    );

    let mut medical_for_shelters = draft(&clock, &["medical"], &["shelter"], &all);
    medical_for_shelters.subject_pseudonym = s.clone();
    let c = record(&harbor, medical_for_shelters).await;
    assert_denied(
        &decide(&net, "harbor", "riverside-clinic", "medical", &s, &c.consent_id).await,
        "consent_recipient_not_covered",
    );

    let mut narrow = draft(&clock, &["housing"], &["shelter"], &["identifying"]);
    narrow.subject_pseudonym = s.clone();
    let c = record(&harbor, narrow).await;
    assert_denied(
        &decide(&net, "harbor", "maple-house", "housing", &s, &c.consent_id).await,
        "consent_label_not_covered",
    );

    let mut later = draft(&clock, &["housing"], &["shelter"], &all);
    later.subject_pseudonym = s.clone();
    later.valid_from_micros = clock.now_micros() + 2 * DAY;
    let c = record(&harbor, later).await;
    assert_denied(&decide(&net, "harbor", "maple-house", "housing", &s, &c.consent_id).await, "consent_not_yet_valid");

    for (reason, code) in [("revoked_by_org", "consent_revoked"), ("withdrawn_by_subject", "consent_withdrawn")] {
        let mut d = draft(&clock, &["housing"], &["shelter"], &all);
        d.subject_pseudonym = s.clone();
        let c = record(&harbor, d).await;
        let r =
            harbor
                .client()
                .await
                .revoke_consent(harbor.as_person(
                    "casey",
                    RevokeConsentRequest { consent_id: c.consent_id.clone(), reason: reason.into() },
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(r.revocation_reason, reason);
        assert_denied(&decide(&net, "harbor", "maple-house", "housing", &s, &c.consent_id).await, code);
    }

    let renewed = harbor
        .client()
        .await
        .renew_consent(harbor.as_person(
            "casey",
            RenewConsentRequest {
                supersedes: housing.consent_id.clone(),
                consent: Some(draft(&clock, &["housing"], &["shelter"], &all)),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(subject_of(&renewed), s, "a renewal keeps the subject");
    assert_denied(
        &decide(&net, "harbor", "maple-house", "housing", &s, &housing.consent_id).await,
        "consent_superseded",
    );
    assert!(decide(&net, "harbor", "maple-house", "housing", &s, &renewed.consent_id).await.allowed);

    clock.advance_secs(91 * 86_400);
    assert_denied(&decide(&net, "harbor", "maple-house", "housing", &s, &renewed.consent_id).await, "consent_expired");
    let expired = net.gateway.expire_consents().await.unwrap();
    assert!(expired >= 1, "the sweep records expiry");
    let shown = harbor
        .client()
        .await
        .get_consent(harbor.as_person("casey", GetConsentRequest { consent_id: renewed.consent_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.state, "expired");
    drop(northstar);
    net.stop().await;
}

/// Registers a hand-made receipt directly with the gateway as harbor.
async fn register_raw(
    net: &TestNet,
    signer_org: &str,
    receipt: &ConsentReceipt,
) -> Result<ConsentRecord, tonic::Status> {
    let link = net.link("harbor");
    let jws = net.link(signer_org).signer().sign(receipt).unwrap();
    let req = link
        .request(&PersonId::parse("casey").unwrap(), Role::Caseworker, RegisterConsentRequest { receipt_jws: jws })
        .unwrap();
    GatewayClient::new(link.channel()).register_consent(req).await.map(|r| r.into_inner())
}

fn good_receipt() -> ConsentReceipt {
    let now = time::OffsetDateTime::now_utc();
    ConsentReceipt {
        version: 1,
        consent_id: uuid::Uuid::new_v4().to_string(),
        subject: "fedcba9876543210fedcba9876543210".into(),
        controller: "harbor".parse().unwrap(),
        purposes: vec!["housing".into()],
        recipient_orgs: vec![],
        recipient_types: vec!["shelter".parse().unwrap()],
        labels: vec!["operational".into()],
        fields: vec![],
        valid_from: now,
        valid_until: now + time::Duration::days(30),
        method: haven_trust::receipt::CollectionMethod::VerbalWitnessed,
        evidence_sha256: "cd".repeat(32),
        language: "es-MX".into(),
        recorded_by: "casey".parse().unwrap(),
        issued_at: now,
        supersedes: None,
    }
}

async fn stored_consents(net: &TestNet) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) FROM consents").fetch_one(net.gateway.store().pool()).await.unwrap().get::<i64, _>(0)
}

async fn refused(net: &TestNet, signer: &str, r: &ConsentReceipt, code: Code, expect: &str) {
    let before = stored_consents(net).await;
    let err = register_raw(net, signer, r).await.expect_err("must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(err.message().contains(expect), "expected `{expect}` in `{}`", err.message());
    assert_eq!(stored_consents(net).await, before, "nothing stored");
}

#[tokio::test]
async fn bad_consent_input_is_refused_precisely_and_nothing_is_stored() {
    let net = TestNet::start().await;

    // Tampered after signing: change the payload of a valid JWS.
    let link = net.link("harbor");
    let jws = link.signer().sign(&good_receipt()).unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let mut forged = good_receipt();
    forged.purposes = vec!["investigation".into()];
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    let req = link
        .request(&PersonId::parse("casey").unwrap(), Role::Caseworker, RegisterConsentRequest { receipt_jws: tampered })
        .unwrap();
    let err = GatewayClient::new(link.channel()).register_consent(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("does not verify"), "{}", err.message());

    refused(&net, "maple-house", &good_receipt(), Code::PermissionDenied, "key of organization `maple-house`").await;
    let mut r = good_receipt();
    r.valid_until = r.valid_from - time::Duration::days(1);
    refused(&net, "harbor", &r, Code::InvalidArgument, "valid_until must be after valid_from").await;
    let mut r = good_receipt();
    r.valid_until = r.valid_from + time::Duration::days(400);
    refused(&net, "harbor", &r, Code::InvalidArgument, "network maximum of 365 days").await;
    let mut r = good_receipt();
    r.purposes = vec!["housingg".into()];
    refused(&net, "harbor", &r, Code::InvalidArgument, "unknown purpose `housingg`").await;
    let mut r = good_receipt();
    r.recipient_orgs = vec!["nowhere-shelter".parse().unwrap()];
    refused(&net, "harbor", &r, Code::InvalidArgument, "unknown recipient organization `nowhere-shelter`").await;
    let mut r = good_receipt();
    r.labels = vec!["identifiying".into()];
    refused(&net, "harbor", &r, Code::InvalidArgument, "unknown label `identifiying`").await;
    let mut r = good_receipt();
    r.subject = "jane-doe".into();
    refused(&net, "harbor", &r, Code::InvalidArgument, "128 bits").await;

    let r = good_receipt();
    let first = register_raw(&net, "harbor", &r).await.unwrap();
    let again = register_raw(&net, "harbor", &r).await.expect("identical content is idempotent");
    assert_eq!(first.consent_id, again.consent_id);
    let mut changed = r.clone();
    changed.language = "fr".into();
    refused(&net, "harbor", &changed, Code::AlreadyExists, "different content").await;

    let maple = net.link("maple-house");
    let revoke = |l: &haven_node::link::GatewayLink, id: &str, reason: &str| {
        l.request(
            &PersonId::parse("casey").unwrap(),
            Role::Caseworker,
            RevokeConsentRequest { consent_id: id.into(), reason: reason.into() },
        )
        .unwrap()
    };
    let err = GatewayClient::new(maple.channel())
        .revoke_consent(revoke(&maple, &r.consent_id, "revoked_by_org"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = GatewayClient::new(link.channel())
        .revoke_consent(revoke(&link, &uuid::Uuid::new_v4().to_string(), "revoked_by_org"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err =
        GatewayClient::new(link.channel()).revoke_consent(revoke(&link, &r.consent_id, "because")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let once = GatewayClient::new(link.channel())
        .revoke_consent(revoke(&link, &r.consent_id, "withdrawn_by_subject"))
        .await
        .unwrap()
        .into_inner();
    let twice = GatewayClient::new(link.channel())
        .revoke_consent(revoke(&link, &r.consent_id, "withdrawn_by_subject"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(once.state, "withdrawn");
    assert_eq!(twice.state_changed_at_micros, once.state_changed_at_micros, "revoking twice changes nothing");

    let size = haven_gateway::audit::size(net.gateway.store().pool()).await.unwrap();
    let entries = haven_gateway::audit::read_range(net.gateway.store().pool(), 0, size).await.unwrap();
    let actions: Vec<&str> =
        entries.iter().filter(|e| e.consent_id == r.consent_id).map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["consent_registered", "consent_revoked"],
        "one entry per change, none for idempotent repeats"
    );
    net.stop().await;
}

/// The consent check lives once: a delivery stream's SQL read of what it may send
/// (`queue::sendable`) and the rule it stands for (`haven_sharing::consent::releases_queued_copy`,
/// built on the `effective_state` decisions use) agree on random consents, windows and times, on the
/// database under test. Each round stores a few hundred consents in every state, with windows around
/// the times asked about and some of another controller, queues one item under each (and some under
/// no consent or an unknown one), then asks both at several times, the window ends exactly included.
#[tokio::test]
async fn the_stream_read_and_the_consent_rule_agree_on_random_consents() {
    use haven_gateway::routing::queue;
    use haven_gateway::store::Store;
    use haven_sharing::consent::{QueuedUnder, releases_queued_copy};
    use haven_trust::receipt::ConsentState;
    use rand::{Rng, SeedableRng};

    const STATES: [ConsentState; 5] = [
        ConsentState::Given,
        ConsentState::Withdrawn,
        ConsentState::Revoked,
        ConsentState::Expired,
        ConsentState::Superseded,
    ];
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&haven_tests::net::fresh_database(dir.path()).await).await.unwrap();
    let mut expected_ids = std::collections::BTreeMap::new();
    let mut tx = store.begin().await.unwrap();
    for i in 0..300 {
        let consent_id = format!("c-{i:04}");
        let state = STATES[rng.random_range(0..STATES.len())];
        let until: i64 = rng.random_range(0..=20);
        // Mostly the sender's own consent; sometimes another organization's, or none on record.
        let (controller, stored) = match rng.random_range(0..10) {
            0 => ("org-other", true),
            1 => ("org-a", false),
            _ => ("org-a", true),
        };
        if stored {
            sqlx::query(
                "INSERT INTO consents (consent_id, controller, subject, receipt_jws, receipt_json, content_sha256, \
                 valid_from_micros, valid_until_micros, state, registered_at_micros, state_changed_at_micros) \
                 VALUES ($1, $2, $3, '', '{}', $1, 0, $4, $5, 0, 0)",
            )
            .bind(&consent_id)
            .bind(controller)
            .bind(format!("subject-{i}"))
            .bind(until)
            .bind(state.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        let under = match (stored, controller) {
            (true, "org-a") => QueuedUnder::Consent { state, valid_until_micros: until },
            _ => QueuedUnder::Unknown,
        };
        // One item in ten names no consent at all.
        let (item_consent, under) =
            if rng.random_range(0..10) == 0 { (String::new(), QueuedUnder::NoConsent) } else { (consent_id, under) };
        let item_id = format!("item-{i:04}");
        sqlx::query(
            "INSERT INTO outbox (item_id, org, item_kind, consent_id, sender, payload, queued_at_micros, \
             expires_at_micros, state) VALUES ($1, 'org-b', 'delivery', $2, 'org-a', $3, 0, 1000000, 'pending')",
        )
        .bind(&item_id)
        .bind(&item_consent)
        .bind(vec![0_u8])
        .execute(&mut *tx)
        .await
        .unwrap();
        expected_ids.insert(item_id, under);
    }
    tx.commit().await.unwrap();

    let mut released_somewhere = 0;
    let mut held_somewhere = 0;
    for now in [-1_i64, 0, 1, 5, 10, 19, 20, 21] {
        let read = queue::sendable(&store, "org-b", &[], now, 10_000).await.unwrap();
        let read: Vec<String> = store.settle(read).await.unwrap().into_iter().map(|p| p.item_id).collect();
        let rule: Vec<String> = expected_ids
            .iter()
            .filter(|(_, under)| releases_queued_copy(**under, now))
            .map(|(id, _)| id.clone())
            .collect();
        let disagree: Vec<_> = expected_ids
            .iter()
            .filter(|(id, _)| read.contains(id) != rule.contains(id))
            .map(|(id, under)| format!("{id} under {under:?}: SQL {}, rule {}", read.contains(id), rule.contains(id)))
            .collect();
        assert!(
            disagree.is_empty(),
            "seed {seed}, now {now}: the read and the rule disagree on\n{}",
            disagree.join("\n")
        );
        released_somewhere += rule.len();
        held_somewhere += expected_ids.len() - rule.len();
    }
    // Both answers occur, so agreement is not agreement on nothing.
    assert!(released_somewhere > 0 && held_somewhere > 0, "seed {seed}: {released_somewhere} / {held_somewhere}");
    store.close().await;
}
