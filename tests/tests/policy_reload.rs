//! Hot reload of the policy bundle under a running gateway, observed through the `Decide` RPC: a good
//! bundle takes effect at once, a broken one is refused with precise messages and the old one stays in
//! force, and both are audited.

use std::collections::HashMap;
use std::sync::Arc;

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::*;
use haven_tests::net::{TestNet, copy_policies};
use haven_trust::clock::SystemClock;
use haven_trust::ids::{PersonId, Role};
use tonic::Code;

async fn alert_to_metro(net: &TestNet) -> DecideResponse {
    let link = net.link("harbor");
    let env = Envelope {
        kind: "alert".into(),
        recipients: vec!["metro-police".into()],
        purpose: "safety_alert".into(),
        fields: HashMap::from([(
            "incident_type".to_owned(),
            FieldValue { value: Some(field_value::Value::Text("suspicious_recruitment".into())) },
        )]),
        ..Default::default()
    };
    let req = link
        .request(
            &PersonId::parse("casey").unwrap(),
            Role::Caseworker,
            DecideRequest { envelope: Some(haven_tests::sender::names_only(&env)) },
        )
        .unwrap();
    GatewayClient::new(link.channel()).decide(req).await.expect("decide").into_inner()
}

async fn reload(net: &TestNet, org: &str, role: Role) -> Result<ReloadPolicyResponse, tonic::Status> {
    let link = net.link(org);
    let req = link.request(&PersonId::parse("omar").unwrap(), role, ReloadPolicyRequest {}).unwrap();
    GatewayClient::new(link.channel()).reload_policy(req).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn a_changed_rule_takes_effect_on_reload_and_a_broken_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_policies(&policies);
    let net = TestNet::start_with(policies.clone(), Arc::new(SystemClock)).await;

    let before = alert_to_metro(&net).await;
    let d = before.outcomes[0].decision.clone().unwrap();
    assert!(d.allowed, "{d:?}");

    // Only the operator's admin may reload.
    assert_eq!(reload(&net, "harbor", Role::Admin).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(reload(&net, "operator", Role::Caseworker).await.unwrap_err().code(), Code::PermissionDenied);

    // Narrow the safety-alert rule to the county sheriff only.
    let rules = policies.join("rules/law-enforcement.toml");
    let text = std::fs::read_to_string(&rules).unwrap();
    let narrowed = {
        // The second `to = ["law_enforcement"]` belongs to the safety-alert rule.
        let mut parts = text.splitn(3, "to = [\"law_enforcement\"]");
        let (a, b, c) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        format!("{a}to = [\"law_enforcement\"]{b}to = [\"county-sheriff\"]{c}")
    };
    std::fs::write(&rules, narrowed).unwrap();
    let r = reload(&net, "operator", Role::Admin).await.expect("good bundle reloads");
    assert_eq!(r.old_version, before.bundle_version);
    assert_ne!(r.new_version, r.old_version);

    let after = alert_to_metro(&net).await;
    assert_eq!(after.bundle_version, r.new_version, "decisions use the new bundle at once");
    let d = after.outcomes[0].decision.clone().unwrap();
    assert!(!d.allowed);
    assert_eq!(d.reason_code, "no_rule_matched");

    // A broken bundle: a label typo. Refused, precisely, and the new-but-good bundle stays.
    let schema = policies.join("schema.toml");
    let good_schema = std::fs::read_to_string(&schema).unwrap();
    std::fs::write(&schema, good_schema.replacen("labels = [\"operational\"]", "labels = [\"operationl\"]", 1))
        .unwrap();
    let err = reload(&net, "operator", Role::Admin).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("schema.toml:"), "names the file and place: {}", err.message());
    assert!(err.message().contains("operational"), "suggests the near miss: {}", err.message());
    assert_eq!(alert_to_metro(&net).await.bundle_version, r.new_version, "the old bundle stays in force");

    let store = &net.gateway.store();
    let size = haven_gateway::audit::size(store.pool()).await.unwrap();
    let entries = haven_gateway::audit::read_range(store.pool(), 0, size).await.unwrap();
    let reloaded: Vec<_> = entries.iter().filter(|e| e.action == "policy_reloaded").collect();
    assert_eq!(reloaded.len(), 1);
    assert_eq!(
        (reloaded[0].object_id.as_str(), reloaded[0].bundle_version.as_str()),
        (r.old_version.as_str(), r.new_version.as_str())
    );
    assert_eq!(reloaded[0].actor_org, "operator");
    assert_eq!(entries.iter().filter(|e| e.action == "policy_reload_rejected").count(), 1);
    assert!(
        entries.iter().any(|e| e.action == "decided" && e.decision == "deny" && e.reason == "no_rule_matched"),
        "decisions are audited"
    );
    net.stop().await;
}

#[tokio::test]
async fn a_flood_of_problems_gets_a_bounded_error_that_lists_twenty() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_policies(&policies);
    let net = TestNet::start_with(policies.clone(), Arc::new(SystemClock)).await;

    // Ten thousand unknown fields with long names, straight to the gateway.
    let link = net.link("harbor");
    let mut env = Envelope {
        kind: "alert".into(),
        recipients: vec!["metro-police".into()],
        purpose: "safety_alert".into(),
        fields: HashMap::from([(
            "incident_type".to_owned(),
            FieldValue { value: Some(field_value::Value::Text("suspicious_recruitment".into())) },
        )]),
        ..Default::default()
    };
    for i in 0..10_000 {
        env.fields.insert(
            format!("{i:05}{}", "x".repeat(200)),
            FieldValue { value: Some(field_value::Value::Text("v".into())) },
        );
    }
    let req = link
        .request(
            &PersonId::parse("casey").unwrap(),
            Role::Caseworker,
            DecideRequest { envelope: Some(haven_tests::sender::names_only(&env)) },
        )
        .unwrap();
    let err = GatewayClient::new(link.channel()).decide(req).await.expect_err("unknown fields");
    assert_eq!(err.code(), Code::InvalidArgument);
    let m = err.message();
    assert!(m.len() <= haven_trust::untrusted::MAX_STATUS_BYTES, "{} bytes", m.len());
    assert_eq!(m.matches("has no field").count(), 20, "{m}");
    assert!(m.contains("and 9980 more problems"), "{m}");
    assert!(m.contains(&format!("`00000{}…`", "x".repeat(59))), "names are cut at 64 characters: {m}");

    // A bundle with thirty problems: the caller of ReloadPolicy reads twenty and a count.
    let mut rules = String::new();
    for i in 0..30 {
        rules.push_str(&format!("[[rule]]\nid = \"broken-{i}\"\neffect = \"alow\"\n\n"));
    }
    std::fs::write(policies.join("rules/broken.toml"), rules).unwrap();
    let err = reload(&net, "operator", Role::Admin).await.expect_err("broken bundle");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let m = err.message();
    assert!(m.contains("more problem"), "{m}");
    assert!(m.lines().count() <= 22, "a header, twenty problems and the count: {m}");
    net.stop().await;
}
