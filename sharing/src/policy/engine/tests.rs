//! The decision rules, one behaviour per test, on the shipped bundle or on small rule sets written for
//! the test.

use haven_trust::ids::{OrgType, Role};
use haven_trust::receipt::{ConsentState, ConsentView};
use time::Duration;

use super::*;
use crate::policy::fixtures::{NOW, Req, bundle_with_rules, consent, given, org, shipped};
use crate::policy::synthetic;

const HOUSING_FIELDS: &[&str] =
    &["survivor_first_name", "contact_phone", "safe_to_contact_by", "urgency", "current_city", "medical_notes"];

fn housing() -> Req {
    Req::new("harbor", "maple-house", "referral", "housing", HOUSING_FIELDS)
}

fn housing_consent() -> haven_trust::receipt::ConsentReceipt {
    consent("harbor", &["housing"], &["maple-house"], &["identifying", "contact", "operational", "location"])
}

fn denied(d: &Decision, reason: DenyReason) {
    assert!(!d.allowed(), "expected {reason}, got an allow: {d:?}");
    assert_eq!(d.reason(), Some(reason), "{d:?}");
    assert!(d.released().is_empty(), "a denial releases nothing: {d:?}");
}

#[test]
fn a_covered_referral_releases_only_what_rule_and_consent_both_grant() {
    let b = shipped();
    let c = housing_consent();
    let d = decide(&housing().get(), &b, given(&c), NOW);
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.rule_ids(), ["ngo-to-shelter-housing"]);
    assert_eq!(d.released(), ["contact_phone", "current_city", "safe_to_contact_by", "survivor_first_name", "urgency"]);
    assert_eq!(d.withheld(), ["medical_notes"], "the shelter rule grants nothing sensitive");
    assert_eq!(d.reason(), None);
    assert_eq!(d.bundle_version(), b.version().id());
    assert!(d.bundle_version().starts_with("sha256:") && d.bundle_version().len() == 7 + 64);
}

#[test]
fn the_consent_narrows_what_the_rule_grants() {
    let b = shipped();
    let mut c = housing_consent();
    c.labels.retain(|l| l != "location");
    let d = decide(&housing().get(), &b, given(&c), NOW);
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.withheld(), ["current_city", "medical_notes"]);
}

#[test]
fn a_field_must_have_every_one_of_its_labels_granted() {
    // accessibility_needs is operational *and* sensitive; the shelter rule grants operational only.
    let b = shipped();
    let mut c = housing_consent();
    c.labels.push("sensitive".to_owned());
    let req = Req::new(
        "harbor",
        "maple-house",
        "referral",
        "housing",
        &["safe_to_contact_by", "urgency", "accessibility_needs"],
    );
    let d = decide(&req.get(), &b, given(&c), NOW);
    assert_eq!(d.released(), ["safe_to_contact_by", "urgency"]);
    assert_eq!(d.withheld(), ["accessibility_needs"]);
}

#[test]
fn fields_the_kind_does_not_define_are_never_released() {
    let b = shipped();
    let c = housing_consent();
    let req =
        Req::new("harbor", "maple-house", "referral", "housing", &["safe_to_contact_by", "urgency", "passport_number"]);
    let d = decide(&req.get(), &b, given(&c), NOW);
    assert!(d.allowed());
    assert_eq!(d.withheld(), ["passport_number"]);
}

#[test]
fn nothing_is_allowed_without_a_rule() {
    let b = shipped();
    let c = consent("harbor", &["housing"], &["riverside-clinic"], &["identifying", "contact", "operational"]);
    let req = Req::new("harbor", "riverside-clinic", "referral", "housing", HOUSING_FIELDS);
    let d = decide(&req.get(), &b, given(&c), NOW);
    denied(&d, DenyReason::NoRuleMatched);
    assert!(d.rule_ids().is_empty());
    assert_eq!(d.withheld().len(), HOUSING_FIELDS.len(), "a denial withholds every field present");
}

const ALLOW_AND_DENY: &str = r#"
[[rule]]
id = "ngo-to-shelter"
description = "allow"
effect = "allow"
from = ["ngo"]
to = ["shelter"]
person_roles = ["caseworker"]
kind = "referral"
purposes = ["housing"]
consent = "none"
fields = { labels = ["identifying", "contact", "operational", "location", "sensitive"] }

[[rule]]
id = "harbor-paused"
description = "deny"
effect = "deny"
from = ["harbor"]
to = ["maple-house"]
"#;

#[test]
fn a_matching_deny_wins_over_any_allow() {
    let b = bundle_with_rules(ALLOW_AND_DENY).unwrap();
    let d = decide(&housing().get(), &b, None, NOW);
    denied(&d, DenyReason::DeniedByRule);
    assert_eq!(d.reason_detail(), Some("harbor-paused"));
    assert_eq!(d.rule_ids(), ["harbor-paused"]);
    let other = Req::new("northstar", "maple-house", "referral", "housing", HOUSING_FIELDS);
    assert!(decide(&other.get(), &b, None, NOW).allowed(), "the deny names harbor only");
}

#[test]
fn a_deny_with_fields_strips_them_and_lets_the_message_through() {
    let rules = ALLOW_AND_DENY.replace(
        "to = [\"maple-house\"]",
        "to = [\"maple-house\"]\nfields = { labels = [\"sensitive\", \"location\"] }",
    );
    let b = bundle_with_rules(&rules).unwrap();
    let d = decide(&housing().get(), &b, None, NOW);
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.rule_ids(), ["ngo-to-shelter", "harbor-paused"]);
    assert_eq!(d.withheld(), ["current_city", "medical_notes"]);
}

#[test]
fn a_deny_that_strips_a_required_field_denies_the_message() {
    let rules = ALLOW_AND_DENY.replace(
        "to = [\"maple-house\"]",
        "to = [\"maple-house\"]\nfields = { names = [\"urgency\"] }\nkind = \"referral\"",
    );
    let b = bundle_with_rules(&rules).unwrap();
    let d = decide(&housing().get(), &b, None, NOW);
    denied(&d, DenyReason::RequiredFieldNotReleased);
    assert_eq!(d.reason_detail(), Some("urgency"));
    assert_eq!(d.rule_ids(), ["ngo-to-shelter", "harbor-paused"]);
}

#[test]
fn a_required_field_the_consent_does_not_cover_denies_the_message() {
    let b = shipped();
    let mut c = housing_consent();
    c.labels.retain(|l| l != "contact");
    let d = decide(&housing().get(), &b, given(&c), NOW);
    denied(&d, DenyReason::ConsentLabelNotCovered);
    assert_eq!(d.reason_detail(), Some("safe_to_contact_by"));
    // Covering the one field by name is enough; the phone number stays.
    c.fields.push("safe_to_contact_by".to_owned());
    let d = decide(&housing().get(), &b, given(&c), NOW);
    assert!(d.allowed(), "{d:?}");
    assert!(d.withheld().contains(&"contact_phone".to_owned()));
}

#[test]
fn a_missing_optional_field_is_fine_and_a_missing_required_one_is_the_schemas_business() {
    let b = shipped();
    let c = housing_consent();
    let req = Req::new("harbor", "maple-house", "referral", "housing", &["urgency"]);
    let d = decide(&req.get(), &b, given(&c), NOW);
    assert!(d.allowed(), "decide checks what is present; Schema::validate reports what is missing: {d:?}");
}

#[test]
fn every_way_a_consent_can_fail_has_its_own_reason() {
    let b = shipped();
    type Breaker = fn(&mut haven_trust::receipt::ConsentReceipt, &mut ConsentState, &mut Req);
    let cases: &[(&str, Breaker, DenyReason, Option<&str>)] = &[
        (
            "another org's consent",
            |c, _, _| c.controller = org("northstar"),
            DenyReason::ConsentOtherOrganization,
            Some("northstar"),
        ),
        ("another subject", |c, _, _| c.subject = "s-2".into(), DenyReason::ConsentOtherSubject, Some("c-1")),
        ("no subject named", |_, _, r| r.subject = None, DenyReason::ConsentOtherSubject, Some("c-1")),
        ("withdrawn", |_, s, _| *s = ConsentState::Withdrawn, DenyReason::ConsentWithdrawn, Some("c-1")),
        ("revoked", |_, s, _| *s = ConsentState::Revoked, DenyReason::ConsentRevoked, Some("c-1")),
        ("superseded", |_, s, _| *s = ConsentState::Superseded, DenyReason::ConsentSuperseded, Some("c-1")),
        ("marked expired", |_, s, _| *s = ConsentState::Expired, DenyReason::ConsentExpired, Some("c-1")),
        (
            "not yet valid",
            |c, _, _| c.valid_from = NOW + Duration::seconds(1),
            DenyReason::ConsentNotYetValid,
            Some("c-1"),
        ),
        ("window ended", |c, _, _| c.valid_until = NOW, DenyReason::ConsentExpired, Some("c-1")),
        (
            "other purpose",
            |c, _, _| c.purposes = vec!["medical".into()],
            DenyReason::ConsentPurposeNotCovered,
            Some("housing"),
        ),
        (
            "other recipient",
            |c, _, _| c.recipient_orgs = vec![org("riverside-clinic")],
            DenyReason::ConsentRecipientNotCovered,
            Some("maple-house"),
        ),
        (
            "another consent than the one named",
            |_, _, r| r.consent_id = Some("c-9".into()),
            DenyReason::ConsentMissing,
            Some("c-9"),
        ),
    ];
    for (what, breaker, reason, detail) in cases {
        let (mut c, mut state, mut req) = (housing_consent(), ConsentState::Given, housing());
        breaker(&mut c, &mut state, &mut req);
        let d = decide(&req.get(), &b, Some(ConsentView { receipt: &c, state }), NOW);
        denied(&d, *reason);
        assert_eq!(d.reason_detail(), *detail, "{what}");
        assert_eq!(d.rule_ids(), ["ngo-to-shelter-housing"], "{what}: the denial names the rule that needed consent");
    }
    let d = decide(&housing().get(), &b, None, NOW);
    denied(&d, DenyReason::ConsentMissing);
}

#[test]
fn a_consent_window_includes_its_start_and_excludes_its_end() {
    let b = shipped();
    let c = housing_consent();
    assert!(decide(&housing().get(), &b, given(&c), c.valid_from).allowed());
    assert!(decide(&housing().get(), &b, given(&c), c.valid_until - Duration::nanoseconds(1)).allowed());
    denied(&decide(&housing().get(), &b, given(&c), c.valid_until), DenyReason::ConsentExpired);
    denied(
        &decide(&housing().get(), &b, given(&c), c.valid_from - Duration::seconds(1)),
        DenyReason::ConsentNotYetValid,
    );
}

#[test]
fn a_consent_may_name_the_recipient_by_type() {
    let b = shipped();
    let mut c = housing_consent();
    c.recipient_orgs.clear();
    c.recipient_types = vec![OrgType::parse("shelter").unwrap()];
    assert!(decide(&housing().get(), &b, given(&c), NOW).allowed());
}

#[test]
fn rules_without_consent_ignore_any_consent_given() {
    let b = shipped();
    let mut c = housing_consent();
    c.controller = org("northstar");
    let req =
        Req::new("harbor", "metro-police", "alert", "safety_alert", &["incident_type", "location_area", "victim_name"]);
    let d = decide(&req.get(), &b, Some(ConsentView { receipt: &c, state: ConsentState::Revoked }), NOW);
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.released(), ["incident_type", "location_area"]);
    assert_eq!(d.withheld(), ["victim_name"]);
    assert_eq!(d.rule_ids(), ["ngo-safety-alert-to-law-enforcement", "no-identity-in-safety-alerts"]);
}

const PILOT: &str = r#"
[[rule]]
id = "pilot"
description = "a pilot"
effect = "allow"
from = ["ngo"]
to = ["shelter"]
person_roles = ["caseworker"]
kind = "referral"
purposes = ["housing"]
consent = "none"
fields = { labels = ["contact", "operational"] }
valid_from = 2025-06-01T12:00:00Z
valid_until = 2025-07-01T00:00:00Z
"#;

#[test]
fn a_rule_is_in_force_from_valid_from_until_just_before_valid_until() {
    let b = bundle_with_rules(PILOT).unwrap();
    let until = time::macros::datetime!(2025-07-01 0:00 UTC);
    assert!(decide(&housing().get(), &b, None, NOW).allowed(), "valid_from is inclusive");
    assert!(decide(&housing().get(), &b, None, until - Duration::nanoseconds(1)).allowed());
    let d = decide(&housing().get(), &b, None, NOW - Duration::seconds(1));
    denied(&d, DenyReason::RuleNotYetValid);
    assert_eq!(d.reason_detail(), Some("pilot"));
    denied(&decide(&housing().get(), &b, None, until), DenyReason::RuleExpired);
}

#[test]
fn a_person_role_outside_the_rule_is_not_permitted() {
    let b = shipped();
    let c = consent("harbor", &["investigation"], &["metro-police"], &["identifying", "contact", "operational"]);
    let mut req = Req::new("harbor", "metro-police", "referral", "investigation", &["safe_to_contact_by", "urgency"]);
    for role in [Role::Caseworker, Role::PrivacyOfficer] {
        req.role = role;
        assert!(decide(&req.get(), &b, given(&c), NOW).allowed(), "{role}");
    }
    for role in [Role::Liaison, Role::Auditor, Role::Admin, Role::Node] {
        req.role = role;
        let d = decide(&req.get(), &b, given(&c), NOW);
        denied(&d, DenyReason::RoleNotPermitted);
        assert_eq!(d.reason_detail(), Some("ngo-to-law-enforcement-investigation"));
    }
}

#[test]
fn the_allow_rule_that_came_closest_gives_the_reason() {
    // A consent failure (the rule fit in every other way) beats a role failure, which beats a window.
    let rules = format!(
        "{PILOT}\n{}",
        PILOT
            .replace("id = \"pilot\"", "id = \"with-consent\"")
            .replace("consent = \"none\"", "consent = \"required\"")
            .replace("valid_from = 2025-06-01T12:00:00Z\nvalid_until = 2025-07-01T00:00:00Z\n", "")
    );
    let b = bundle_with_rules(&rules).unwrap();
    let early = NOW - Duration::days(1);
    let d = decide(&housing().get(), &b, None, early);
    denied(&d, DenyReason::ConsentMissing);
    assert_eq!(d.rule_ids(), ["with-consent"]);
    let mut req = housing();
    req.role = Role::Liaison;
    denied(&decide(&req.get(), &b, None, early), DenyReason::RoleNotPermitted);
}

#[test]
fn grants_of_several_allow_rules_add_up_and_a_failed_consent_only_loses_its_own_rule() {
    let rules = format!(
        "{}\n{}",
        PILOT.replace("valid_from = 2025-06-01T12:00:00Z\nvalid_until = 2025-07-01T00:00:00Z\n", ""),
        PILOT
            .replace("id = \"pilot\"", "id = \"identity-with-consent\"")
            .replace("consent = \"none\"", "consent = \"required\"")
            .replace("[\"contact\", \"operational\"]", "[\"identifying\", \"contact\", \"operational\"]")
            .replace("valid_from = 2025-06-01T12:00:00Z\nvalid_until = 2025-07-01T00:00:00Z\n", "")
    );
    let b = bundle_with_rules(&rules).unwrap();
    let c = housing_consent();
    let d = decide(&housing().get(), &b, given(&c), NOW);
    assert_eq!(d.rule_ids(), ["pilot", "identity-with-consent"]);
    assert_eq!(d.released(), ["contact_phone", "safe_to_contact_by", "survivor_first_name", "urgency"]);
    let d = decide(&housing().get(), &b, Some(ConsentView { receipt: &c, state: ConsentState::Revoked }), NOW);
    assert!(d.allowed(), "the rule that needs no consent still applies: {d:?}");
    assert_eq!(d.rule_ids(), ["pilot"]);
    assert_eq!(d.released(), ["contact_phone", "safe_to_contact_by", "urgency"]);
}

#[test]
fn the_auditor_receives_nothing_even_under_consent() {
    let b = shipped();
    let c = consent("harbor", &["housing"], &["audit-office"], &["identifying", "contact", "operational"]);
    let req = Req::new("harbor", "audit-office", "referral", "housing", HOUSING_FIELDS);
    let d = decide(&req.get(), &b, given(&c), NOW);
    denied(&d, DenyReason::DeniedByRule);
    assert_eq!(d.reason_detail(), Some("nothing-to-the-auditor"));
}

#[test]
fn names_the_bundle_does_not_know_are_denied_without_looking_at_rules() {
    let b = shipped();
    let d = decide(&Req::new("harbor", "ghost-shelter", "referral", "housing", &["urgency"]).get(), &b, None, NOW);
    denied(&d, DenyReason::UnknownRecipient);
    assert_eq!((d.reason_detail(), d.withheld()), (Some("ghost-shelter"), &["urgency".to_owned()][..]));
    let d = decide(&Req::new("ghost-ngo", "maple-house", "referral", "housing", &[]).get(), &b, None, NOW);
    denied(&d, DenyReason::NoRuleMatched);
    let d = decide(&Req::new("harbor", "maple-house", "postcard", "housing", &[]).get(), &b, None, NOW);
    denied(&d, DenyReason::NoRuleMatched);
    assert_eq!(d.reason_detail(), None, "text the caller chose is never echoed into a decision");
    let c = housing_consent();
    let d = decide(&Req::new("harbor", "maple-house", "referral", "holiday", &[]).get(), &b, given(&c), NOW);
    denied(&d, DenyReason::NoRuleMatched);
}

#[test]
fn reason_codes_are_stable_unique_snake_case_and_round_trip() {
    let all = DenyReason::all();
    assert_eq!(all.len(), 24);
    let mut codes: Vec<&str> = all.iter().map(|r| r.code()).collect();
    for (reason, code) in all.iter().zip(&codes) {
        assert_eq!(DenyReason::from_code(code), Some(*reason));
        assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code}");
        assert!(!reason.describe().is_empty());
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
    assert_eq!(DenyReason::NoRuleMatched.code(), "no_rule_matched");
    assert_eq!(DenyReason::from_code("no_such_reason"), None);
}

#[test]
fn candidate_recipients_are_the_organizations_an_allow_rule_could_reach() {
    let b = shipped();
    let ids = |v: Vec<haven_trust::ids::OrgId>| v.into_iter().map(|o| o.to_string()).collect::<Vec<_>>();
    let harbor = org("harbor");
    assert_eq!(
        ids(b.candidate_recipients(&harbor, Role::Caseworker, "alert", "safety_alert")),
        ["county-sheriff", "metro-police"]
    );
    assert_eq!(
        ids(b.candidate_recipients(&harbor, Role::Caseworker, "referral", "counselling")),
        ["northstar"],
        "never the sender"
    );
    assert!(b.candidate_recipients(&harbor, Role::Liaison, "alert", "safety_alert").is_empty());
    assert!(b.candidate_recipients(&org("maple-house"), Role::Caseworker, "alert", "safety_alert").is_empty());
    assert!(b.candidate_recipients(&harbor, Role::Caseworker, "alert", "no_such_purpose").is_empty());
}

fn assert_index_agrees(net: &synthetic::SyntheticNetwork) -> (usize, usize) {
    let mut allowed = 0;
    for (n, r) in net.requests.iter().enumerate() {
        let indexed = decide(&r.request(), &net.bundle, r.consent(), net.now);
        let linear = decide_linear(&r.request(), &net.bundle, r.consent(), net.now);
        assert_eq!(indexed, linear, "request {n}: {r:?}");
        allowed += usize::from(indexed.allowed());
    }
    (allowed, net.requests.len())
}

#[test]
fn the_index_decides_exactly_as_the_linear_scan_on_a_large_synthetic_network() {
    for seed in [1, 2, 3] {
        let net = synthetic::network(3_000, 400, 6_000, seed).unwrap();
        let (allowed, total) = assert_index_agrees(&net);
        // The generator aims most requests near a rule, so both outcomes are well exercised.
        assert!(allowed > total / 20 && allowed < total * 19 / 20, "seed {seed}: {allowed} of {total} allowed");
    }
}

#[test]
fn the_index_decides_exactly_as_the_linear_scan_on_the_shipped_bundle() {
    let b = shipped();
    let orgs: Vec<_> = b.registry().iter().map(|o| o.id.clone()).collect();
    let purposes: Vec<String> = b.purposes().map(str::to_owned).collect();
    let mut checked = 0;
    for sender in &orgs {
        for recipient in &orgs {
            for kind in ["referral", "alert"] {
                for purpose in &purposes {
                    for role in Role::ALL {
                        let fields: Vec<&str> = b.schema().kind(kind).unwrap().field_names().collect();
                        let c = consent(
                            sender.as_str(),
                            &[purpose],
                            &[recipient.as_str()],
                            &["identifying", "contact", "operational"],
                        );
                        let req = DecisionRequest {
                            sender,
                            sender_role: role,
                            recipient,
                            kind,
                            purpose,
                            subject: Some(crate::policy::fixtures::SUBJECT),
                            consent_id: Some("c-1"),
                            fields: &fields,
                        };
                        for now in [NOW, NOW + Duration::days(300)] {
                            assert_eq!(decide(&req, &b, given(&c), now), decide_linear(&req, &b, given(&c), now));
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 10_000);
}

#[test]
fn an_allow_refused_for_a_reason_outside_the_rules_releases_nothing_and_keeps_its_rules() {
    let allow = Decision::Allow {
        rule_ids: vec!["ngo-to-shelter".into()],
        released: vec!["survivor_first_name".into(), "urgency".into()],
        withheld: vec!["medical_notes".into()],
        bundle_version: "sha256:00".into(),
    };
    let d = allow.refused(DenyReason::QuotaExceeded, Some("maple-house".into()));
    assert!(!d.allowed());
    assert_eq!(d.reason(), Some(DenyReason::QuotaExceeded));
    assert_eq!(d.reason_detail(), Some("maple-house"));
    assert!(d.released().is_empty());
    assert_eq!(d.withheld(), ["medical_notes", "survivor_first_name", "urgency"]);
    assert_eq!(d.rule_ids(), ["ngo-to-shelter"]);
    assert_eq!(d.bundle_version(), "sha256:00");
    let again = d.clone().refused(DenyReason::NoRuleMatched, None);
    assert_eq!(again, d, "a deny stays the deny it was");
}

#[test]
fn an_allow_narrows_to_the_sealed_fields_and_refuses_more() {
    let allow = Decision::Allow {
        rule_ids: vec!["r1".into()],
        released: vec!["survivor_first_name".into(), "urgency".into()],
        withheld: vec!["date_of_birth".into()],
        bundle_version: "sha256:00".into(),
    };
    let narrowed = allow.clone().narrowed_to(&["urgency".into()]).unwrap();
    assert_eq!(narrowed.released(), &["urgency".to_owned()][..]);
    assert_eq!(narrowed.withheld(), &["date_of_birth".to_owned(), "survivor_first_name".to_owned()][..]);
    assert_eq!(
        allow.clone().narrowed_to(&["date_of_birth".into(), "urgency".into()]),
        Err(vec!["date_of_birth".into()])
    );
    let deny = allow.refused(DenyReason::QuotaExceeded, None);
    assert_eq!(deny.clone().narrowed_to(&["urgency".into()]), Ok(deny));
}
