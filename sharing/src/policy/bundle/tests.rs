//! Loading the shipped bundle, its version, and deliberately broken bundles: each refused with every
//! problem listed at `file:line:col`.

use std::path::Path;

use super::*;
use crate::policy::fixtures::{bundle_with_rules, copy_shipped, shipped, shipped_dir};

/// Copies the shipped bundle, applies `edit` to it, and returns the problems, with the temporary
/// directory's path removed.
fn problems_after(edit: impl FnOnce(&Path)) -> Vec<String> {
    let dir = copy_shipped();
    edit(dir.path());
    let prefix = format!("{}/", dir.path().display());
    match Bundle::load(dir.path(), None) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(|p| p.to_string().replace(&prefix, "")).collect(),
    }
}

/// Replaces `from` (which must occur) with `to` in the bundle file `name`.
fn replace(dir: &Path, name: &str, from: &str, to: &str) {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{name} does not contain {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn broken(name: &str, from: &str, to: &str) -> Vec<String> {
    problems_after(|dir| replace(dir, name, from, to))
}

#[test]
fn the_shipped_bundle_loads_with_a_stable_labelled_version() {
    let a = shipped();
    let b = shipped();
    assert_eq!(a.version(), b.version(), "the version is a function of the content");
    assert_eq!(a.version().label(), Some("sample network 2025-06"));
    assert_eq!(a.version().to_string(), format!("{} (sample network 2025-06)", a.version().id()));
    assert_eq!(a.version_id(), a.version().id());
    assert_eq!(a.network().max_consent_days, 365);
    assert!(a.is_purpose("housing") && !a.is_purpose("holiday"));
    assert!(Bundle::is_label("location") && !Bundle::is_label("secret"));
    assert_eq!(Bundle::labels().len(), 5);
    for kind in ["referral", "alert"] {
        assert!(a.schema().kind(kind).is_some(), "{kind}");
    }
    assert!(a.rules().iter().all(|r| !r.description.trim().is_empty()));
}

#[test]
fn any_change_to_the_content_changes_the_version_but_the_tests_directory_does_not() {
    let before = shipped();
    let dir = copy_shipped();
    replace(dir.path(), "rules/boundaries.toml", "# Network-wide", "#  Network-wide");
    let after = Bundle::load(dir.path(), None).unwrap();
    assert_ne!(before.version().id(), after.version().id(), "even a comment is part of what was reviewed");
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/extra.toml"), "# not part of the bundle\n").unwrap();
    assert_eq!(Bundle::load(dir.path(), None).unwrap().version(), after.version());
    std::fs::write(dir.path().join("rules/README.md"), "only *.toml files are rules\n").unwrap();
    assert_eq!(Bundle::load(dir.path(), None).unwrap().version(), after.version());
    assert!(shipped_dir().join("tests").is_dir());
}

#[test]
fn each_kind_of_mistake_is_refused_with_a_precise_located_message() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "rules/referrals.toml",
            "labels = [\"identifying\", \"contact\", \"operational\", \"location\"] }",
            "labels = [\"identifiying\", \"contact\", \"operational\", \"location\"] }",
            "rules/referrals.toml:18:22: rule `ngo-to-shelter-housing`: unknown label `identifiying` (did you mean `identifying`?) (known: identifying, contact, sensitive, operational, location)",
        ),
        (
            "rules/referrals.toml",
            "from = [\"ngo\"]",
            "from = [\"harbour\"]",
            "rules/referrals.toml:12:9: rule `ngo-to-shelter-housing`: `harbour` in `from` is neither an organization nor an organization type (did you mean `harbor`?) (types: auditor, clinic, law_enforcement, legal_aid, ngo, operator, shelter); a type no organization has yet is written `type:harbour`",
        ),
        (
            "rules/referrals.toml",
            "to = [\"shelter\"]",
            "to = [\"operator\"]",
            "rules/referrals.toml:13:7: rule `ngo-to-shelter-housing`: `operator` in `to` is both an organization and an organization type; write `org:operator` or `type:operator`",
        ),
        (
            "rules/referrals.toml",
            "person_roles = [\"caseworker\", \"privacy_officer\"]",
            "person_roles = [\"case_worker\", \"privacy_officer\"]",
            "rules/referrals.toml:14:17: rule `ngo-to-shelter-housing`: unknown person role `case_worker` (did you mean `caseworker`?) (known: caseworker, liaison, privacy_officer, auditor, admin, node)",
        ),
        (
            "rules/referrals.toml",
            "kind = \"referral\"",
            "kind = \"refferal\"",
            "rules/referrals.toml:15:8: rule `ngo-to-shelter-housing`: unknown message kind `refferal` (did you mean `referral`?) (known: alert, referral)",
        ),
        (
            "rules/referrals.toml",
            "purposes = [\"housing\"]",
            "purposes = [\"houseing\"]",
            "rules/referrals.toml:16:13: rule `ngo-to-shelter-housing`: unknown purpose `houseing` (did you mean `housing`?) (purposes.toml defines: counselling, housing, investigation, legal_aid, medical, safety_alert)",
        ),
        (
            "rules/law-enforcement.toml",
            "names = [\"exploitation_type\"]",
            "names = [\"exploitation_typ\"]",
            "rules/law-enforcement.toml:18:21: rule `ngo-to-law-enforcement-investigation`: kind `referral` has no field `exploitation_typ` (did you mean `exploitation_type`?)",
        ),
        (
            "rules/referrals.toml",
            "id = \"ngo-to-clinic-medical\"",
            "id = \"ngo-to-shelter-housing\"",
            "rules/referrals.toml:21:6: rule `ngo-to-shelter-housing`: this id is already used by the rule at rules/referrals.toml:5",
        ),
        (
            "rules/referrals.toml",
            "kind = \"referral\"",
            "kind = 3",
            "rules/referrals.toml:15:8: invalid type: integer `3`, expected a string",
        ),
        (
            "rules/referrals.toml",
            "purposes = [\"housing\"]",
            "purpose = [\"housing\"]",
            "rules/referrals.toml:16:1: unknown key `purpose` (did you mean `purposes`?); expected one of `id`, `description`, `effect`, `from`, `to`, `person_roles`, `kind`, `purposes`, `consent`, `fields`, `valid_from`, `valid_until`",
        ),
        (
            "rules/referrals.toml",
            "effect = \"allow\"",
            "effect = \"alow\"",
            "rules/referrals.toml:11:10: unknown value `alow` (did you mean `allow`?); expected `allow` or `deny`",
        ),
        (
            "rules/referrals.toml",
            "fields = { labels = [\"identifying\", \"contact\", \"operational\", \"location\"] }",
            "fields = {}",
            "rules/referrals.toml:18:10: rule `ngo-to-shelter-housing`: `fields` is empty, so the rule releases nothing; name fields and/or labels",
        ),
        (
            "rules/referrals.toml",
            "fields = { labels = [\"identifying\", \"contact\", \"operational\", \"location\"] }\n",
            "",
            "rules/referrals.toml:5:1: rule `ngo-to-shelter-housing`: an allow rule must state `fields` (what it releases, by name and/or label); only a deny rule may leave it out to mean \"any\"",
        ),
        (
            "rules/boundaries.toml",
            "to = [\"auditor\"]",
            "to = [\"auditor\"]\nconsent = \"required\"",
            "rules/boundaries.toml:10:11: rule `nothing-to-the-auditor`: `consent` belongs on allow rules only: a deny applies whatever the consent says",
        ),
        (
            "schema.toml",
            "labels = [\"sensitive\"]\nlabel = { en = \"Medical notes\"",
            "labels = [\"sensitve\"]\nlabel = { en = \"Medical notes\"",
            "schema.toml:157:11: unknown label `sensitve` (did you mean `sensitive`?) (known: identifying, contact, sensitive, operational, location)",
        ),
        (
            "purposes.toml",
            "[purpose.housing]",
            "[purposes.housing]",
            "purposes.toml:6:2: unknown key `purposes` in purposes.toml (did you mean `purpose`?); known keys: purpose",
        ),
        (
            "network.toml",
            "queue_quota = 10000",
            "queue_quota = -1",
            "network.toml:18:15: invalid value: integer `-1`, expected u32",
        ),
        (
            "rules/referrals.toml",
            "consent = \"required\"",
            "consent = \"required\"\nconsent = \"none\"",
            "rules/referrals.toml:18:1: duplicate key: it is already set earlier in the same table",
        ),
        (
            "rules/referrals.toml",
            "description = \"\"\"\nAn NGO caseworker or privacy officer may refer a survivor to a shelter",
            "description = \"\"\"\nAn NGO \"caseworker\" or privacy officer may refer a survivor to a shelter",
            "",
        ),
    ];
    for (file, from, to, expected) in cases {
        let problems = broken(file, from, to);
        if expected.is_empty() {
            assert!(problems.is_empty(), "{to:?} is fine: {problems:#?}");
        } else {
            assert_eq!(problems, [*expected], "after writing {to:?} into {file}");
        }
    }
}

#[test]
fn rules_that_can_never_match_are_refused() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "rules/referrals.toml",
            "valid_until = 2026-03-01T00:00:00Z",
            "valid_until = 2025-03-01T00:00:00Z",
            "rules/referrals.toml:90:15: rule `clinic-to-legal-aid-pilot`: `valid_until` (2025-03-01T00:00:00Z) is not after `valid_from` (2025-03-01T00:00:00Z), so the rule is never in force",
        ),
        (
            "rules/referrals.toml",
            "to = [\"lantern-legal\"]",
            "to = [\"riverside-clinic\"]",
            "rules/referrals.toml:83:6: rule `clinic-to-legal-aid-pilot`: `from` and `to` are both only `riverside-clinic`, so the rule can never match: an organization does not send to itself through the gateway",
        ),
        (
            "rules/boundaries.toml",
            "to = [\"auditor\"]",
            "to = []",
            "rules/boundaries.toml:9:6: rule `nothing-to-the-auditor`: `to` is empty, so the rule can never match; name organizations or types (a deny rule may leave `to` out to mean any)",
        ),
        (
            "rules/referrals.toml",
            "person_roles = [\"caseworker\", \"privacy_officer\"]",
            "person_roles = []",
            "rules/referrals.toml:14:16: rule `ngo-to-shelter-housing`: `person_roles` is empty, so the rule can never match; list the roles that may use it",
        ),
        (
            "rules/referrals.toml",
            "fields = { labels = [\"identifying\", \"contact\", \"operational\", \"location\"] }",
            "fields = { labels = [\"identifying\", \"operational\"] }",
            "rules/referrals.toml:18:10: rule `ngo-to-shelter-housing`: the rule can never allow a message: it does not release the required field(s) `safe_to_contact_by` (contact) of kind `referral`",
        ),
        (
            "rules/law-enforcement.toml",
            "fields = { labels = [\"operational\", \"location\"] }",
            "fields = { labels = [\"location\"] }",
            "rules/law-enforcement.toml:32:10: rule `ngo-safety-alert-to-law-enforcement`: the rule can never allow a message: it does not release the required field(s) `incident_type` (operational) of kind `alert`",
        ),
        (
            "rules/law-enforcement.toml",
            "fields = { labels = [\"contact\"] }",
            "fields = { names = [\"contact_phone\"] }",
            "rules/law-enforcement.toml:53:21: rule `county-sheriff-contact-hold`: fields named in `fields.names` belong to one kind; give the rule a `kind`",
        ),
        (
            "rules/referrals.toml",
            "valid_from = 2025-03-01T00:00:00Z",
            "valid_from = 2025-03-01T00:00:00",
            "rules/referrals.toml:89:14: rule `clinic-to-legal-aid-pilot`: `2025-03-01T00:00:00` has no UTC offset, so it names no definite moment; add one, for example `2025-03-01T00:00:00Z`",
        ),
    ];
    for (file, from, to, expected) in cases {
        assert_eq!(broken(file, from, to), [*expected], "after writing {to:?} into {file}");
    }
}

#[test]
fn a_rule_that_releases_nothing_of_its_kind_is_refused() {
    let errs = bundle_with_rules(
        r#"
[[rule]]
id = "alerts-with-nothing"
description = "grants only sensitive fields of an alert, of which there is one, and it is not required"
effect = "allow"
from = ["ngo"]
to = ["law_enforcement"]
person_roles = ["caseworker"]
kind = "alert"
purposes = ["safety_alert"]
consent = "none"
fields = { names = [], labels = [] }

[[rule]]
id = "strips-nothing"
description = "there is no such field in any kind"
effect = "deny"
kind = "alert"
fields = { names = ["summary"] }
"#,
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
    assert_eq!(
        text,
        [
            "rule `alerts-with-nothing`: `fields` is empty, so the rule releases nothing; name fields and/or labels",
            "rule `strips-nothing`: kind `alert` has no field `summary`",
        ]
    );
}

#[test]
fn every_problem_in_every_file_is_listed_not_just_the_first() {
    let problems = problems_after(|dir| {
        replace(dir, "rules/referrals.toml", "kind = \"referral\"", "kind = \"refferal\"");
        replace(dir, "rules/referrals.toml", "purposes = [\"medical\"]", "purposes = [\"medicine\"]");
        replace(
            dir,
            "rules/referrals.toml",
            "effect = \"allow\"\nfrom = [\"shelter\"]",
            "effect = \"allow\"\nform = [\"shelter\"]",
        );
        replace(dir, "rules/law-enforcement.toml", "to = [\"county-sheriff\"]", "to = [\"county-sherif\"]");
        replace(dir, "network.toml", "queue_quota = 10000", "queue_quota = 0");
    });
    assert_eq!(problems.len(), 5, "{problems:#?}");
    let expect = [
        ("network.toml:18:15:", "`queue_quota` must be between 1 and 1000000"),
        ("rules/law-enforcement.toml:52:7:", "did you mean `county-sheriff`?"),
        ("rules/referrals.toml:15:8:", "did you mean `referral`?"),
        ("rules/referrals.toml:30:13:", "unknown purpose `medicine`"),
        ("rules/referrals.toml:40:1:", "unknown key `form`"),
    ];
    for (p, (at, says)) in problems.iter().zip(expect) {
        assert!(p.starts_with(at) && p.contains(says), "{p} should start {at} and say {says}");
    }
}

#[test]
fn with_a_broken_registry_the_rules_are_still_checked_for_shape() {
    let problems = problems_after(|dir| {
        replace(dir, "orgs.toml", "type = \"ngo\"", "typ = \"ngo\"");
        replace(dir, "rules/boundaries.toml", "effect = \"deny\"", "effect = \"refuse\"");
    });
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("orgs.toml:14:1: unknown field `typ`"), "{}", problems[0]);
    assert!(problems[1].starts_with("rules/boundaries.toml:8:10: unknown value `refuse`"), "{}", problems[1]);
}

#[test]
fn malformed_toml_is_located() {
    let problems = broken("rules/boundaries.toml", "effect = \"deny\"", "effect = = \"deny\"");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("rules/boundaries.toml:8:10: "), "{}", problems[0]);
}

#[test]
fn an_oversized_file_is_refused_before_it_is_parsed() {
    let problems = problems_after(|dir| {
        let mut huge = String::from("# padding\n");
        huge.push_str(&"#".repeat(10 * 1024 * 1024));
        std::fs::write(dir.join("rules/huge.toml"), huge).unwrap();
    });
    assert_eq!(problems, ["rules/huge.toml: file is 10485770 bytes, over the 1048576 byte limit for a contract file"]);
}

#[test]
fn missing_parts_are_reported() {
    let problems = problems_after(|dir| {
        std::fs::remove_dir_all(dir.join("rules")).unwrap();
        std::fs::remove_file(dir.join("purposes.toml")).unwrap();
    });
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("purposes.toml: cannot read:"), "{}", problems[0]);
    assert!(problems[1].starts_with("rules: cannot list the rules directory:"), "{}", problems[1]);
}

#[test]
fn rules_built_in_memory_are_checked_like_loaded_ones() {
    let b = shipped();
    let mut rule = b.rule("ngo-to-shelter-housing").unwrap().clone();
    rule.kind = Some("refferal".to_owned());
    rule.origin = None;
    let parts = BundleParts {
        registry: b.registry().clone(),
        network: b.network().clone(),
        purposes: b.purpose_defs().clone(),
        schema: b.schema().clone(),
        rules: vec![rule],
    };
    let errs = Bundle::from_parts(parts.clone()).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "<in-memory bundle>: rule `ngo-to-shelter-housing`: unknown message kind `refferal` (did you mean `referral`?) (known: alert, referral)"
    );
    let mut fixed = parts;
    fixed.rules[0].kind = Some("referral".to_owned());
    let a = Bundle::from_parts(fixed.clone()).unwrap();
    assert_eq!(a.version(), Bundle::from_parts(fixed).unwrap().version());
    assert_ne!(a.version(), b.version());
}

#[test]
fn a_type_no_organization_has_yet_is_a_warning_when_written_as_a_type_and_matches_nobody() {
    let dir = copy_shipped();
    replace(
        dir.path(),
        "rules/referrals.toml",
        "to = [\"shelter\"]",
        "to = [\"shelter\", \"type:food_bank\", \"type:sheltr\"]",
    );
    let b = Bundle::load(dir.path(), None).unwrap_or_else(|p| panic!("{p:#?}"));
    let prefix = format!("{}/", dir.path().display());
    let warned: Vec<String> =
        b.warnings().iter().map(|w| w.to_string().replace(&prefix, "")).filter(|w| w.contains("rule")).collect();
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert!(
        warned[0].starts_with("rules/referrals.toml:13:18: rule `ngo-to-shelter-housing`: no organization in the registry has type `food_bank` yet"),
        "{}",
        warned[0]
    );
    assert!(
        warned[1].contains("`sheltr` yet, so `to` covers none until one joins (did you mean `shelter`?)"),
        "{}",
        warned[1]
    );
    // The shelter is still reached, and nothing is filed under the types without members.
    let harbor = OrgId::parse("harbor").unwrap();
    let found = b.candidate_recipients(&harbor, Role::Caseworker, "referral", "housing");
    assert_eq!(found.iter().map(OrgId::as_str).collect::<Vec<_>>(), ["maple-house"]);
    // Unprefixed, an unknown name is still an error: it may be a mistyped organization.
    let problems = broken("rules/referrals.toml", "to = [\"shelter\"]", "to = [\"food_bank\"]");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].ends_with("a type no organization has yet is written `type:food_bank`"), "{}", problems[0]);
}

#[test]
fn every_organization_without_pins_is_named_in_a_warning() {
    let b = shipped();
    let warned: Vec<String> = b.warnings().iter().map(|w| w.message.clone()).collect();
    assert_eq!(warned.len(), b.registry().len(), "the sample registry pins nobody: {warned:#?}");
    assert!(
        warned.iter().any(|w| w.starts_with("organization `harbor` has no TLS pin (`tls_pins`) and no signing pin"))
    );
    assert!(b.warnings().iter().all(|w| w.file.ends_with("orgs.toml")));
}

#[test]
fn every_label_and_description_has_each_language_the_network_lists() {
    let b = shipped();
    assert_eq!(b.network().languages, ["en", "es"]);
    let housing = b.purpose_defs().iter().find(|p| p.name == "housing").unwrap();
    assert_eq!(housing.label_in("es"), "Vivienda");
    assert_eq!(housing.label_in("es-MX"), "Vivienda", "a region falls back to its language");
    assert!(housing.description.text("es").starts_with("Encontrar"));
    let urgency = b.schema().field("referral", "urgency").unwrap();
    assert_eq!(urgency.value_labels["immediate"].text("es"), "Inmediata");
    let closed = b.schema().kind("referral").unwrap().codes_for(crate::delivery::DeliveryStatus::Closed).unwrap();
    assert!(closed.iter().any(|(c, w)| c == "housed" && w.text("es") == "Persona alojada"), "{closed:?}");

    // A missing translation is named at its place, with the language it lacks.
    let problems =
        broken("purposes.toml", "label = { en = \"Housing\", es = \"Vivienda\" }", "label = { en = \"Housing\" }");
    assert_eq!(
        problems,
        [
            "purposes.toml:7:9: purpose `housing`'s label has no `es` text (network.toml lists the languages en, es; every label and description needs each)"
        ]
    );
    // A plain string is the first language's text.
    let problems = broken("schema.toml", "label = { en = \"Urgency\", es = \"Urgencia\" }", "label = \"Urgency\"");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("field `referral.urgency`'s label has no `es` text"), "{problems:?}");
    // A network that adds a language must translate everything.
    let problems = broken("network.toml", "languages = [\"en\", \"es\"]", "languages = [\"en\", \"es\", \"fr\"]");
    assert!(problems.len() > 50, "every text lacks `fr`: {}", problems.len());
    assert!(problems.iter().all(|p| p.contains("has no `fr` text")), "{problems:?}");
    // Bad tags, a value without words, codes for a status that carries none.
    let problems = broken("network.toml", "languages = [\"en\", \"es\"]", "languages = [\"en\", \"Spanish\", \"en\"]");
    assert_eq!(
        problems,
        [
            "network.toml:9:20: `Spanish` is not a language tag (a BCP 47 tag such as `en`, `es` or `es-MX`)",
            "network.toml:9:31: language `en` is listed twice"
        ]
    );
    let problems = broken("schema.toml", "low = { en = \"Low\", es = \"Baja\" }\n", "");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`value_labels` must give words for every value; missing: low"), "{problems:?}");
    let problems = broken("schema.toml", "[kind.referral.codes.closed]", "[kind.referral.codes.accepted]");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("`codes.accepted`: only a change to declined or closed carries a code"),
        "{problems:?}"
    );
}

#[test]
fn a_bundle_written_from_its_files_loads_with_the_same_version() {
    let dir = tempfile::tempdir().unwrap();
    let b = Bundle::load(&shipped_dir(), None).unwrap();
    assert!(b.files().iter().any(|(n, _)| n == "network.toml"));
    assert!(b.files().iter().any(|(n, _)| n.starts_with("rules/")));
    Bundle::write_files(b.files(), dir.path()).unwrap();
    let again = Bundle::load(dir.path(), None).unwrap();
    assert_eq!(again.version_id(), b.version_id());
    for bad in ["../orgs.toml", "rules/../../x.toml", "rules/.hidden.toml", "secrets.txt", "rules/"] {
        let e = Bundle::write_files(&[(bad.to_owned(), String::new())], dir.path()).unwrap_err();
        assert!(e.to_string().contains("is not a file of a policy bundle"), "{bad}: {e}");
    }
}
