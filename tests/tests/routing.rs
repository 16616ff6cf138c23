//! Haven's main job end to end, through real nodes and a real gateway over mTLS: a referral delivered
//! minimized under a recipient-scoped pseudonym and answered through its lifecycle, an alert fanned out
//! and acknowledged, the revocation cascade, idempotent submission, and bad input.

use std::collections::HashMap;
use std::time::Duration;

use haven_proto::v1::*;
use haven_tests::fixtures::{self, DAY, consent_request, record_consent, send, text};
use haven_tests::net::{TestNet, TestNode, copy_policies};
use haven_trust::clock::{Clock, SystemClock};
use haven_trust::ids::Role;
use tonic::Code;

async fn consent(node: &TestNode, purposes: &[&str], types: &[&str]) -> (String, String) {
    consent_for(node, purposes, types, "").await
}

/// Records a consent for the subject the node knows as `subject` (minted when empty); returns the
/// consent id and the subject.
async fn consent_for(node: &TestNode, purposes: &[&str], types: &[&str], subject: &str) -> (String, String) {
    let labels = ["identifying", "contact", "operational", "sensitive", "location"];
    let mut req = consent_request(purposes, types, &labels, SystemClock.now_micros() + 30 * DAY);
    req.subject_pseudonym = subject.into();
    record_consent(node, req).await
}

/// A referral with a sensitive field the rules keep from shelters.
fn referral(to: &str, purpose: &str, subject: &str, consent: &str) -> Envelope {
    let mut env = fixtures::referral(to, purpose, subject, consent);
    env.fields.insert("medical_notes".into(), text("fictional notes"));
    env
}

async fn wait_inbox(node: &TestNode, person: &str, pred: impl Fn(&InboxItem) -> bool) -> InboxItem {
    let mut watch =
        node.client().await.watch_inbox(node.as_person(person, InboxRequest::default())).await.unwrap().into_inner();
    let listed = node
        .client()
        .await
        .inbox(node.as_person(person, InboxRequest { kind: String::new(), limit: 1000 }))
        .await
        .unwrap()
        .into_inner();
    if let Some(i) = listed.items.into_iter().find(|i| pred(i)) {
        return i;
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let i = watch.message().await.unwrap().expect("watch open");
            if pred(&i) {
                return i;
            }
        }
    })
    .await
    .expect("item arrives within 20 s")
}

fn delivery(i: &InboxItem) -> Option<&Delivery> {
    match &i.item {
        Some(Item { body: Some(item::Body::Delivery(d)), .. }) => Some(d),
        _ => None,
    }
}

async fn sent_status(node: &TestNode, message_id: &str, recipient: &str, want: MessageStatus) -> RecipientStatus {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = node
                .client()
                .await
                .get_message(node.as_person("casey", GetMessageRequest { message_id: message_id.into() }))
                .await
                .unwrap()
                .into_inner();
            if let Some(r) = m.sent.unwrap().recipients.into_iter().find(|r| r.recipient == recipient)
                && r.status == want as i32
            {
                return r;
            }
            // Status notices arrive on the stream; the inbox watch tells us when something came in.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                let mut w = node
                    .client()
                    .await
                    .watch_inbox(node.as_person("casey", InboxRequest::default()))
                    .await
                    .unwrap()
                    .into_inner();
                let _ = w.message().await;
            })
            .await;
        }
    })
    .await
    .expect("status arrives within 20 s")
}

#[tokio::test]
async fn a_referral_is_delivered_minimized_and_follows_its_lifecycle() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    let (consent_id, subject) = consent(&harbor, &["housing"], &["shelter"]).await;

    let sent = send(&harbor, "casey", referral("maple-house", "housing", &subject, &consent_id)).await.unwrap();
    assert_eq!(sent.state, "submitted");
    assert_eq!(sent.outcomes[0].outcome, recipient_outcome::Outcome::Queued as i32);
    let got = wait_inbox(&maple, "sam", |i| delivery(i).is_some_and(|d| d.message_id == sent.message_id)).await;
    let d = delivery(&got).unwrap();
    assert!(d.fields.contains_key("survivor_first_name"));
    assert!(!d.fields.contains_key("medical_notes"), "a shelter never receives sensitive fields");
    assert_eq!(d.withheld_fields, vec!["medical_notes".to_owned()]);
    assert_ne!(d.subject_pseudonym, subject, "the recipient sees its own pseudonym");
    assert!(d.subject_pseudonym.starts_with("r_"));

    sent_status(&harbor, &sent.message_id, "maple-house", MessageStatus::Delivered).await;
    let accept = UpdateStatusRequest {
        message_id: sent.message_id.clone(),
        sender: "harbor".into(),
        status: MessageStatus::Accepted as i32,
        ..Default::default()
    };
    maple.client().await.update_status(maple.as_person("sam", accept.clone())).await.unwrap();
    let r = sent_status(&harbor, &sent.message_id, "maple-house", MessageStatus::Accepted).await;
    assert_eq!(r.by_person, "sam");

    // Illegal transitions and the wrong party.
    let decline =
        UpdateStatusRequest { status: MessageStatus::Declined as i32, code: "no_capacity".into(), ..accept.clone() };
    let err = maple.client().await.update_status(maple.as_person("sam", decline.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(err.message(), "cannot move a referral from `accepted` to `declined` (allowed from: sent, delivered)");
    let close_by_sender = UpdateStatusRequest {
        message_id: sent.message_id.clone(),
        recipient: "maple-house".into(),
        status: MessageStatus::Closed as i32,
        code: "housed".into(),
        ..Default::default()
    };
    let err = harbor.client().await.update_status(harbor.as_person("casey", close_by_sender)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the sender is not a recipient of its own message: {err:?}");
    // The schema lists the outcomes a close chooses from: another code is refused, naming them, and
    // changes nothing.
    let unlisted =
        UpdateStatusRequest { status: MessageStatus::Closed as i32, code: "moved_away".into(), ..accept.clone() };
    let err = maple.client().await.update_status(maple.as_person("sam", unlisted)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with(
            "the network's schema lists the codes for closed; use one of: housed, lost_contact, referred_on"
        ),
        "{}",
        err.message()
    );
    sent_status(&harbor, &sent.message_id, "maple-house", MessageStatus::Accepted).await;
    let close = UpdateStatusRequest { status: MessageStatus::Closed as i32, code: "housed".into(), ..accept };
    maple.client().await.update_status(maple.as_person("sam", close)).await.unwrap();
    let r = sent_status(&harbor, &sent.message_id, "maple-house", MessageStatus::Closed).await;
    assert_eq!(r.code, "housed");

    // The sender's timeline: each step, who took it and with which code.
    let view = harbor
        .client()
        .await
        .get_message(harbor.as_person("casey", GetMessageRequest { message_id: sent.message_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let steps: Vec<(&str, &str, &str, &str)> = view
        .timeline
        .iter()
        .map(|s| (s.step.as_str(), s.by_org.as_str(), s.by_person.as_str(), s.code.as_str()))
        .collect();
    assert_eq!(steps.first(), Some(&("sent", "", "casey", "")), "{steps:?}");
    for want in [
        ("queued", "", "", ""),
        ("delivered", "", "", ""),
        ("accepted", "maple-house", "sam", ""),
        ("closed", "maple-house", "sam", "housed"),
    ] {
        assert!(steps.contains(&want), "{want:?} in {steps:?}");
    }
    let at = |step: &str| steps.iter().position(|s| s.0 == step);
    assert!(at("accepted") < at("closed"), "{steps:?}");
    assert_eq!(steps.len(), 5, "each step once: {steps:?}");

    // A stored status the gateway never writes is a broken invariant: INTERNAL, not "retry later".
    sqlx::query("UPDATE deliveries SET status = 'misfiled' WHERE message_id = $1")
        .bind(sent.message_id.as_str())
        .execute(net.gateway.store().pool())
        .await
        .unwrap();
    let decline = UpdateStatusRequest { update_id: uuid::Uuid::new_v4().to_string(), ..decline };
    let err = maple.client().await.update_status(maple.as_person("sam", decline)).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("cannot read back"), "{err:?}");

    // Resubmitting the same message id: the same sealed bytes (what the node kept, and sends on every
    // retry) replay; different content is refused.
    let kept = haven_node::mailbox::sealed_submit(&harbor.state.store, &sent.message_id).await.unwrap().unwrap();
    let link = net.link("harbor");
    let casey: haven_trust::ids::PersonId = "casey".parse().unwrap();
    let req = link.request(&casey, Role::Caseworker, kept).unwrap();
    let replay =
        haven_proto::v1::gateway_client::GatewayClient::new(link.channel()).submit(req).await.unwrap().into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.outcomes[0].delivery_id, sent.outcomes[0].delivery_id, "nothing queued twice");
    let mut again = referral("maple-house", "housing", &subject, &consent_id);
    again.message_id = sent.message_id.clone();
    let err = haven_tests::sender::submit(&link, &casey, Role::Caseworker, &again).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "sealed again, the copies differ: {err:?}");
    harbor.stop().await;
    maple.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn an_alert_fans_out_deidentified_and_each_liaison_acknowledges() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let metro = net.node("metro-police", &[("lee", Role::Liaison)]).await;
    let county = net.node("county-sheriff", &[("kim", Role::Liaison)]).await;
    let env = Envelope {
        kind: "alert".into(),
        all_permitted_recipients: true,
        purpose: "safety_alert".into(),
        fields: HashMap::from([
            ("incident_type".into(), text("suspicious_recruitment")),
            ("location_area".into(), text("North bus terminal (fictional)")),
            ("reporter_contact".into(), text("555-0100")),
        ]),
        ..Default::default()
    };
    let sent = send(&harbor, "casey", env).await.unwrap();
    let mut recipients: Vec<&str> = sent
        .outcomes
        .iter()
        .filter(|o| o.outcome == recipient_outcome::Outcome::Queued as i32)
        .map(|o| o.recipient.as_str())
        .collect();
    recipients.sort();
    assert_eq!(recipients, vec!["county-sheriff", "metro-police"]);
    for (node, person) in [(&metro, "lee"), (&county, "kim")] {
        let got = wait_inbox(node, person, |i| delivery(i).is_some_and(|d| d.message_id == sent.message_id)).await;
        let d = delivery(&got).unwrap();
        assert!(d.subject_pseudonym.is_empty(), "a de-identified alert carries no pseudonym");
        assert!(
            !d.fields.contains_key("reporter_contact"),
            "no contact field ever goes to law enforcement in an alert"
        );
        assert!(d.fields.contains_key("location_area"));
        let ack = UpdateStatusRequest {
            message_id: sent.message_id.clone(),
            sender: "harbor".into(),
            status: MessageStatus::Acknowledged as i32,
            ..Default::default()
        };
        node.client().await.update_status(node.as_person(person, ack)).await.unwrap();
    }
    let r = sent_status(&harbor, &sent.message_id, "metro-police", MessageStatus::Acknowledged).await;
    assert_eq!(r.by_person, "lee");
    sent_status(&harbor, &sent.message_id, "county-sheriff", MessageStatus::Acknowledged).await;
    for n in [harbor, metro, county] {
        n.stop().await;
    }
    net.stop().await;
}

/// An organization in the registry without pins can never connect, so nothing is queued for it: an
/// alert to every permitted recipient leaves it out, and a message naming it gets that recipient
/// refused `recipient_not_pinned`, audited like any refusal, while the other recipients are served.
#[tokio::test]
async fn an_organization_without_pins_is_never_queued_for_and_a_message_naming_it_is_refused_for_it() {
    let policies = tempfile::tempdir().unwrap();
    copy_policies(policies.path());
    let orgs = policies.path().join("orgs.toml");
    let mut registry = std::fs::read_to_string(&orgs).unwrap();
    registry.push_str(
        "\n[[org]]\nid = \"lakeside-police\"\nname = \"Lakeside Police Liaison (fictional)\"\ntype = \"law_enforcement\"\n",
    );
    std::fs::write(&orgs, registry).unwrap();
    let net = TestNet::start_with(policies.path().to_owned(), std::sync::Arc::new(SystemClock)).await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let alert = |recipients: &[&str]| Envelope {
        kind: "alert".into(),
        all_permitted_recipients: recipients.is_empty(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        purpose: "safety_alert".into(),
        fields: HashMap::from([("incident_type".into(), text("suspicious_recruitment"))]),
        ..Default::default()
    };

    let to_all = send(&harbor, "casey", alert(&[])).await.unwrap();
    let mut reached: Vec<&str> = to_all.outcomes.iter().map(|o| o.recipient.as_str()).collect();
    reached.sort();
    assert_eq!(reached, vec!["county-sheriff", "metro-police"], "the unpinned liaison is not a recipient at all");

    let named = send(&harbor, "casey", alert(&["lakeside-police", "metro-police"])).await.unwrap();
    let outcome = |org: &str| named.outcomes.iter().find(|o| o.recipient == org).unwrap();
    assert_eq!(outcome("metro-police").outcome, recipient_outcome::Outcome::Queued as i32);
    let refused = outcome("lakeside-police");
    assert_eq!(refused.outcome, recipient_outcome::Outcome::Denied as i32);
    let d = refused.decision.as_ref().unwrap();
    assert_eq!((d.reason_code.as_str(), d.reason_detail.as_str()), ("recipient_not_pinned", "lakeside-police"));
    assert_eq!(d.reason, DenyReason::RecipientNotPinned as i32);
    assert!(d.released_fields.is_empty() && d.withheld_fields == ["incident_type"]);

    use sqlx::Row;
    let pool = net.gateway.store().pool();
    let queued = sqlx::query("SELECT COUNT(*) FROM outbox WHERE org = $1")
        .bind("lakeside-police")
        .fetch_one(pool)
        .await
        .unwrap()
        .get::<i64, _>(0);
    assert_eq!(queued, 0);
    let size = haven_gateway::audit::size(pool).await.unwrap();
    let audited: Vec<_> = haven_gateway::audit::read_range(pool, 0, size)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.counterparty == "lakeside-police")
        .collect();
    assert_eq!(audited.len(), 1, "{audited:#?}");
    assert_eq!(
        (
            audited[0].action.as_str(),
            audited[0].decision.as_str(),
            audited[0].reason.as_str(),
            audited[0].outcome.as_str()
        ),
        ("submitted", "deny", "recipient_not_pinned", "denied")
    );
    harbor.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn revoking_consent_cancels_queued_copies_and_notifies_holders() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    let (consent_id, subject) = consent(&harbor, &["housing", "legal_aid"], &["shelter", "legal_aid"]).await;
    let to_shelter = send(&harbor, "casey", referral("maple-house", "housing", &subject, &consent_id)).await.unwrap();
    wait_inbox(&maple, "sam", |i| delivery(i).is_some_and(|d| d.message_id == to_shelter.message_id)).await;
    // The legal-aid node is not running: its copy waits in the queue.
    let mut legal = referral("lantern-legal", "legal_aid", &subject, &consent_id);
    legal.fields.remove("medical_notes");
    let to_legal = send(&harbor, "casey", legal).await.unwrap();
    assert_eq!(to_legal.outcomes[0].outcome, recipient_outcome::Outcome::Queued as i32, "{:?}", to_legal.outcomes);

    let revoke = RevokeConsentRequest { consent_id: consent_id.clone(), reason: "withdrawn_by_subject".into() };
    harbor.client().await.revoke_consent(harbor.as_person("casey", revoke)).await.unwrap();

    sent_status(&harbor, &to_legal.message_id, "lantern-legal", MessageStatus::Revoked).await;
    let notice = wait_inbox(&maple, "sam", |i| i.item_kind == "consent_withdrawn").await;
    match notice.item.and_then(|i| i.body) {
        Some(item::Body::ConsentWithdrawn(w)) => assert!(w.message_ids.contains(&to_shelter.message_id)),
        other => panic!("expected a withdrawal notice, got {other:?}"),
    }
    let held = maple
        .client()
        .await
        .get_message(maple.as_person("sam", GetMessageRequest { message_id: to_shelter.message_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let received = held.received.unwrap();
    assert!(received.withdrawn);
    assert!(delivery(&received).unwrap().fields.is_empty(), "withdrawn data is hidden from the recipient's users");

    // No copy for the stopped node is left at the gateway, payload included. (It may still be told
    // of the withdrawal, since a cancelled copy could have been in flight.)
    use sqlx::Row;
    let left = sqlx::query("SELECT COUNT(*) FROM outbox WHERE org = 'lantern-legal' AND item_kind = 'delivery' AND (state = 'pending' OR length(payload) > 0)")
        .fetch_one(net.gateway.store().pool())
        .await
        .unwrap()
        .get::<i64, _>(0);
    assert_eq!(left, 0);
    // The subject access report says the legal-aid copy was queued, then cancelled: it never reached
    // its recipient.
    let report = haven_gateway::audit::query::disclosures(
        net.gateway.store().pool(),
        "harbor",
        &subject,
        haven_gateway::audit::query::NamesShown::All,
    )
    .await
    .unwrap();
    let to_legal_fate: Vec<(&str, &str)> = report
        .iter()
        .filter(|d| d.message_id == to_legal.message_id)
        .map(|d| (d.action.as_str(), d.recipient.as_str()))
        .collect();
    assert_eq!(to_legal_fate, vec![("queued", "lantern-legal"), ("cancelled", "lantern-legal")]);
    // The shelter, which holds the data, was told of the withdrawal.
    assert!(
        report.iter().any(|d| (d.action.as_str(), d.recipient.as_str(), d.consent_id.as_str(), d.message_id.as_str())
            == ("withdrawal_notified", "maple-house", consent_id.as_str(), "")),
        "{report:?}"
    );
    // Later sends under the consent are denied.
    let late = send(&harbor, "casey", referral("maple-house", "housing", &subject, &consent_id)).await.unwrap();
    assert_eq!(late.outcomes[0].decision.as_ref().unwrap().reason_code, "consent_withdrawn");
    harbor.stop().await;
    maple.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn bad_envelopes_are_refused_precisely_and_nothing_is_queued() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent_id, subject) = consent(&harbor, &["housing"], &["shelter"]).await;
    let cases: Vec<(Envelope, &str)> = vec![
        (
            Envelope {
                recipients: vec!["nowhere".into()],
                ..referral("maple-house", "housing", &subject, &consent_id)
            },
            "unknown recipient organization",
        ),
        (
            Envelope { kind: "postcard".into(), ..referral("maple-house", "housing", &subject, &consent_id) },
            "unknown message kind",
        ),
        (
            {
                let mut e = referral("maple-house", "housing", &subject, &consent_id);
                e.fields.remove("urgency");
                e
            },
            "urgency",
        ),
        (
            {
                let mut e = referral("maple-house", "housing", &subject, &consent_id);
                e.fields.insert("urgency".into(), FieldValue { value: Some(field_value::Value::Integer(3)) });
                e
            },
            "urgency",
        ),
        (
            {
                let mut e = referral("maple-house", "housing", &subject, &consent_id);
                e.fields.insert("favourite_colour".into(), text("blue"));
                e
            },
            "favourite_colour",
        ),
        (
            {
                let mut e = referral("maple-house", "housing", &subject, &consent_id);
                e.fields.insert("summary".into(), text(&"x".repeat(100_000)));
                e
            },
            "summary",
        ),
        (
            Envelope {
                recipients: (0..60).map(|i| format!("org-{i}")).collect(),
                ..referral("maple-house", "housing", &subject, &consent_id)
            },
            "network maximum",
        ),
    ];
    for (env, expect) in cases {
        let err = send(&harbor, "casey", env).await.expect_err(expect);
        assert_eq!(err.code(), Code::InvalidArgument, "{expect}: {err:?}");
        assert!(err.message().contains(expect), "expected `{expect}` in `{}`", err.message());
    }
    use sqlx::Row;
    let queued = sqlx::query("SELECT COUNT(*) FROM outbox")
        .fetch_one(net.gateway.store().pool())
        .await
        .unwrap()
        .get::<i64, _>(0);
    assert_eq!(queued, 0);
    harbor.stop().await;
    net.stop().await;
}

/// A pseudonym is a subject only together with its controller: another organization that registers a
/// consent under the same pseudonym string gets a different recipient-scoped pseudonym at every
/// recipient, so the recipient can neither link the two organizations' referrals nor be fed the other's
/// records under the first one's pseudonym.
#[tokio::test]
async fn a_recipient_sees_two_controllers_subjects_of_one_pseudonym_as_two() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let northstar = net.node("northstar", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    let (harbor_consent, s1) = consent(&harbor, &["housing"], &["shelter"]).await;
    // northstar copies harbor's pseudonym into a consent of its own: the gateway accepts it, since to
    // northstar it names a subject of its own.
    let (northstar_consent, same) = consent_for(&northstar, &["housing"], &["shelter"], &s1).await;
    assert_eq!(same, s1);

    let mut seen = Vec::new();
    for (node, consent_id) in [(&harbor, &harbor_consent), (&northstar, &northstar_consent), (&harbor, &harbor_consent)]
    {
        let sent = send(node, "casey", referral("maple-house", "housing", &s1, consent_id)).await.unwrap();
        assert_eq!(sent.outcomes[0].outcome, recipient_outcome::Outcome::Queued as i32, "{:?}", sent.outcomes);
        let got = wait_inbox(&maple, "sam", |i| delivery(i).is_some_and(|d| d.message_id == sent.message_id)).await;
        seen.push(delivery(&got).unwrap().subject_pseudonym.clone());
    }
    let (harbor_first, northstar_seen, harbor_again) = (&seen[0], &seen[1], &seen[2]);
    assert_ne!(harbor_first, northstar_seen, "two controllers' subjects must not share a pseudonym at the recipient");
    assert_eq!(harbor_first, harbor_again, "one controller's subject keeps its pseudonym at the recipient");
    for p in &seen {
        assert!(p.starts_with("r_") && *p != s1, "{p}");
    }
    // Each copy records the derivation it used.
    use sqlx::Row;
    let versions: Vec<i64> = sqlx::query("SELECT pseudonym_version FROM deliveries ORDER BY delivery_id")
        .fetch_all(net.gateway.store().pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![haven_gateway::routing::pseudonym::VERSION; 3]);
    for n in [harbor, northstar, maple] {
        n.stop().await;
    }
    net.stop().await;
}

/// A consent's revocation reaches only its controller's copies: another organization that names the
/// consent's id on a send whose rule needs no consent (a safety alert) keeps its copy, and its recipient
/// gets no withdrawal notice from it.
#[tokio::test]
async fn revoking_a_consent_leaves_other_organizations_copies_alone() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let northstar = net.node("northstar", &[("casey", Role::Caseworker)]).await;
    let (consent_id, subject) = consent(&harbor, &["housing"], &["shelter"]).await;
    // No law-enforcement node runs: the alert's copy waits in the queue.
    let alert = Envelope {
        kind: "alert".into(),
        recipients: vec!["metro-police".into()],
        purpose: "safety_alert".into(),
        subject_pseudonym: subject.clone(),
        consent_id: consent_id.clone(),
        fields: HashMap::from([
            ("incident_type".into(), text("suspicious_recruitment")),
            ("location_area".into(), text("North bus terminal (fictional)")),
        ]),
        ..Default::default()
    };
    let sent = send(&northstar, "casey", alert).await.unwrap();
    assert_eq!(sent.outcomes[0].outcome, recipient_outcome::Outcome::Queued as i32, "{:?}", sent.outcomes);

    let revoke = RevokeConsentRequest { consent_id: consent_id.clone(), reason: "withdrawn_by_subject".into() };
    harbor.client().await.revoke_consent(harbor.as_person("casey", revoke)).await.unwrap();

    // The revocation's transaction has committed: its cascade is done.
    use sqlx::Row;
    let pool = net.gateway.store().pool();
    let status: String = sqlx::query("SELECT status FROM deliveries WHERE sender = 'northstar' AND message_id = $1")
        .bind(sent.message_id.as_str())
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "sent", "harbor's revocation must not cancel northstar's copy");
    let touched: i64 = sqlx::query(
        "SELECT COUNT(*) FROM outbox WHERE (org = 'metro-police' AND item_kind = 'consent_withdrawn') OR (org = 'northstar' AND item_kind = 'sender_notice')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(touched, 0, "neither northstar nor its recipient hears of harbor's revocation");
    let cascaded: i64 = sqlx::query(
        "SELECT COUNT(*) FROM audit_log WHERE action IN ('cancelled', 'withdrawal_notified') AND actor_org = 'northstar'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(cascaded, 0);
    harbor.stop().await;
    northstar.stop().await;
    net.stop().await;
}

/// A recipient whose copies under one consent span the upgrade of the pseudonym derivation holds them
/// under two pseudonyms: the withdrawal names each copy by the pseudonym the recipient was given for it.
#[tokio::test]
async fn a_withdrawal_names_each_copy_by_the_pseudonym_its_recipient_was_given() {
    use prost::Message;
    use sqlx::Row;
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent_id, subject) = consent(&harbor, &["housing"], &["shelter"]).await;
    // The shelter's node is not running: the new copy waits in the queue.
    let sent = send(&harbor, "casey", referral("maple-house", "housing", &subject, &consent_id)).await.unwrap();
    let pool = net.gateway.store().pool();
    let new_pseudonym: String = sqlx::query("SELECT recipient_subject FROM deliveries WHERE message_id = $1")
        .bind(sent.message_id.as_str())
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
    // A copy the shelter received before the upgrade, under the pseudonym of version 1.
    let (old_message, old_pseudonym) = (uuid::Uuid::now_v7().to_string(), "r_00112233445566778899aabbccddeeff");
    sqlx::query("INSERT INTO deliveries (delivery_id, sender, sender_person, message_id, recipient, kind, purpose, consent_id, subject, recipient_subject, pseudonym_version, released_fields, status, updated_at_micros, expires_at_micros) VALUES ($1, 'harbor', 'casey', $2, 'maple-house', 'referral', 'housing', $3, $4, $5, 1, '[]', 'delivered', 0, $6)")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(old_message.as_str())
        .bind(consent_id.as_str())
        .bind(subject.as_str())
        .bind(old_pseudonym)
        .bind(SystemClock.now_micros() + DAY)
        .execute(pool)
        .await
        .unwrap();

    let revoke = RevokeConsentRequest { consent_id: consent_id.clone(), reason: "withdrawn_by_subject".into() };
    harbor.client().await.revoke_consent(harbor.as_person("casey", revoke)).await.unwrap();

    // The revocation's transaction has committed: its notices are queued.
    let mut notices: Vec<(String, Vec<String>)> = sqlx::query(
        "SELECT payload FROM outbox WHERE org = 'maple-house' AND item_kind = 'consent_withdrawn' ORDER BY item_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| match Item::decode(r.get::<Vec<u8>, _>(0).as_slice()).unwrap().body {
        Some(item::Body::ConsentWithdrawn(w)) => (w.subject_pseudonym, w.message_ids),
        other => panic!("expected a withdrawal notice, got {other:?}"),
    })
    .collect();
    notices.sort();
    let mut want = vec![(old_pseudonym.to_owned(), vec![old_message]), (new_pseudonym, vec![sent.message_id.clone()])];
    want.sort();
    assert_eq!(notices, want);
    harbor.stop().await;
    net.stop().await;
}
