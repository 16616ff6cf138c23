//! A synthetic network generated in memory from a seed: thousands of organizations, a thousand rules
//! and a stream of requests that mostly land near some rule. The benchmark measures [`super::decide`]
//! on it against the linear scan, and tests use it to check that the index never changes a decision.

use haven_trust::ids::{OrgId, OrgType, PersonId, Role};
use haven_trust::receipt::{CollectionMethod, ConsentReceipt, ConsentState, ConsentView, RECEIPT_VERSION};
use haven_trust::registry::{OrgEntry, Registry};
use haven_trust::source::{Located, SourceFile};
use time::{Duration, OffsetDateTime};

use super::bundle::{Bundle, BundleParts};
use super::engine::DecisionRequest;
use super::network::{NetworkParams, PurposeDef, Purposes};
use super::rules::{ConsentRequirement, Effect, FieldGrant, Parties, Rule};
use super::schema::{LABELS, Schema};
use super::words::Words;

const TYPES: [(&str, u64); 8] = [
    ("ngo", 40),
    ("shelter", 15),
    ("clinic", 12),
    ("legal_aid", 8),
    ("counselling", 10),
    ("law_enforcement", 10),
    ("auditor", 3),
    ("operator", 2),
];

const PURPOSES: [&str; 6] = ["counselling", "housing", "investigation", "legal_aid", "medical", "safety_alert"];

const KINDS: [(&str, &[&str]); 2] = [
    (
        "referral",
        &[
            "contact_phone",
            "current_city",
            "household_size",
            "medical_notes",
            "needs",
            "preferred_language",
            "safe_to_contact_by",
            "summary",
            "survivor_first_name",
            "urgency",
        ],
    ),
    (
        "alert",
        &["incident_type", "location_area", "number_of_people", "observed_at", "reporter_contact", "victim_name"],
    ),
];

const SCHEMA: &str = r#"
[kind.referral]
description = "synthetic referral"
[kind.referral.fields.contact_phone]
type = "string"
max_len = 32
labels = ["contact"]
[kind.referral.fields.current_city]
type = "string"
max_len = 100
labels = ["location"]
[kind.referral.fields.household_size]
type = "integer"
labels = ["operational"]
[kind.referral.fields.medical_notes]
type = "string"
max_len = 2000
labels = ["sensitive"]
[kind.referral.fields.needs]
type = "list"
max_len = 8
labels = ["operational"]
[kind.referral.fields.preferred_language]
type = "string"
max_len = 35
labels = ["operational"]
[kind.referral.fields.safe_to_contact_by]
type = "enum"
values = ["phone", "in_person"]
labels = ["contact"]
[kind.referral.fields.summary]
type = "string"
max_len = 4000
labels = ["sensitive", "operational"]
[kind.referral.fields.survivor_first_name]
type = "string"
max_len = 100
labels = ["identifying"]
[kind.referral.fields.urgency]
type = "enum"
values = ["low", "high"]
required = true
labels = ["operational"]

[kind.alert]
description = "synthetic alert"
[kind.alert.fields.incident_type]
type = "enum"
values = ["suspected_trafficking"]
required = true
labels = ["operational"]
[kind.alert.fields.location_area]
type = "string"
max_len = 200
labels = ["location"]
[kind.alert.fields.number_of_people]
type = "integer"
labels = ["operational"]
[kind.alert.fields.observed_at]
type = "date"
labels = ["operational"]
[kind.alert.fields.reporter_contact]
type = "string"
max_len = 200
labels = ["contact"]
[kind.alert.fields.victim_name]
type = "string"
max_len = 200
labels = ["identifying"]
"#;

/// A deterministic generator (SplitMix64), so a seed always gives the same network.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One generated request, owning what a [`DecisionRequest`] borrows.
#[derive(Debug, Clone)]
pub struct SyntheticRequest {
    pub sender: OrgId,
    pub role: Role,
    pub recipient: OrgId,
    pub kind: &'static str,
    pub purpose: &'static str,
    pub subject: String,
    pub fields: Vec<&'static str>,
    pub consent: Option<(ConsentReceipt, ConsentState)>,
}

impl SyntheticRequest {
    /// The request as the engine takes it.
    pub fn request(&self) -> DecisionRequest<'_> {
        DecisionRequest {
            sender: &self.sender,
            sender_role: self.role,
            recipient: &self.recipient,
            kind: self.kind,
            purpose: self.purpose,
            subject: Some(&self.subject),
            consent_id: self.consent.as_ref().map(|(r, _)| r.consent_id.as_str()),
            fields: &self.fields,
        }
    }

    /// The consent the request names, as the engine takes it.
    pub fn consent(&self) -> Option<ConsentView<'_>> {
        self.consent.as_ref().map(|(receipt, state)| ConsentView { receipt, state: *state })
    }
}

/// A generated bundle, requests against it, and the time to decide them at.
#[derive(Debug, Clone)]
pub struct SyntheticNetwork {
    pub bundle: Bundle,
    pub requests: Vec<SyntheticRequest>,
    pub now: OffsetDateTime,
}

// The generator makes only well-formed identifiers, so parsing them cannot fail.
fn org(s: &str) -> OrgId {
    OrgId::parse(s).expect("generated organization ids are well formed")
}

fn org_type(s: &str) -> OrgType {
    OrgType::parse(s).expect("generated organization types are well formed")
}

/// Generates a network of `orgs` organizations and `rules` rules, and `requests` requests against it.
pub fn network(orgs: usize, rules: usize, requests: usize, seed: u64) -> Result<SyntheticNetwork, Vec<Located>> {
    let mut rng = Rng(seed);
    let now = time::macros::datetime!(2025-06-01 12:00 UTC);
    let total: u64 = TYPES.iter().map(|(_, w)| w).sum();
    let mut members: Vec<Vec<OrgId>> = vec![Vec::new(); TYPES.len()];
    let mut entries = Vec::with_capacity(orgs);
    for n in 0..orgs {
        // Every type gets at least one member, then the weights decide.
        let t = if n < TYPES.len() {
            n
        } else {
            let mut roll = rng.next() % total;
            TYPES
                .iter()
                .position(|(_, w)| {
                    roll < *w || {
                        roll -= w;
                        false
                    }
                })
                .unwrap_or(0)
        };
        let id = org(&format!("{}-{n:05}", TYPES[t].0.replace('_', "-")));
        members[t].push(id.clone());
        entries.push(OrgEntry {
            id,
            name: format!("Synthetic organization {n}"),
            org_type: org_type(TYPES[t].0),
            tls_pins: Vec::new(),
            signing_pins: Vec::new(),
        });
    }
    let registry = Registry::from_entries(entries);
    let schema = Schema::parse(&SourceFile { path: "<synthetic>/schema.toml".into(), text: SCHEMA.to_owned() })?;
    let purposes = Purposes::from_list(
        PURPOSES
            .iter()
            .map(|p| PurposeDef {
                name: (*p).to_owned(),
                label: None,
                description: Words::plain(format!("synthetic {p}")),
            })
            .collect(),
    );

    let senders = [0usize, 1, 2]; // ngo, shelter, clinic send most
    let parties = |rng: &mut Rng, type_pool: &[usize]| -> Parties {
        if rng.chance(25) {
            Parties { orgs: Vec::new(), types: vec![org_type(TYPES[*rng.pick(type_pool)].0)] }
        } else {
            let mut orgs = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let t = *rng.pick(type_pool);
                let id = rng.pick(&members[t]).clone();
                if !orgs.contains(&id) {
                    orgs.push(id);
                }
            }
            Parties { orgs, types: Vec::new() }
        }
    };
    let recipients_pool = [0usize, 1, 2, 3, 4, 5, 6];
    let mut rule_list = Vec::with_capacity(rules);
    while rule_list.len() < rules {
        let n = rule_list.len();
        let kind = if rng.chance(75) { 0 } else { 1 };
        let allow = rng.chance(88);
        let from = parties(&mut rng, &senders);
        let to = parties(&mut rng, &recipients_pool);
        if from.types.is_empty() && to.types.is_empty() && from.orgs.len() == 1 && from.orgs == to.orgs {
            continue;
        }
        let purposes: Vec<String> = (0..1 + rng.below(2)).map(|_| (*rng.pick(&PURPOSES)).to_owned()).collect();
        let window = rng.chance(10).then(|| {
            let start = now + Duration::days(rng.below(120) as i64 - 90);
            (start, start + Duration::days(30 + rng.below(90) as i64))
        });
        let rule = if allow {
            let mut labels = vec!["operational".to_owned()];
            for l in LABELS {
                if l != "operational" && rng.chance(40) {
                    labels.push(l.to_owned());
                }
            }
            let names = if rng.chance(20) { vec![(*rng.pick(KINDS[kind].1)).to_owned()] } else { Vec::new() };
            let roles = match rng.below(3) {
                0 => vec![Role::Caseworker],
                1 => vec![Role::Caseworker, Role::PrivacyOfficer],
                _ => vec![Role::Caseworker, Role::Liaison],
            };
            Rule {
                id: format!("synthetic-allow-{n}"),
                description: "synthetic allow".to_owned(),
                effect: Effect::Allow,
                from: Some(from),
                to: Some(to),
                person_roles: Some(roles),
                kind: Some(KINDS[kind].0.to_owned()),
                purposes: Some(purposes),
                consent: Some(if rng.chance(70) {
                    ConsentRequirement::Required
                } else {
                    ConsentRequirement::NotRequired
                }),
                fields: Some(FieldGrant { names, labels }),
                valid_from: window.map(|w| w.0),
                valid_until: window.map(|w| w.1),
                origin: None,
            }
        } else {
            let strips = rng.chance(50);
            Rule {
                id: format!("synthetic-deny-{n}"),
                description: "synthetic deny".to_owned(),
                effect: Effect::Deny,
                from: (!rng.chance(30)).then_some(from),
                to: Some(to),
                person_roles: None,
                kind: rng.chance(50).then(|| KINDS[kind].0.to_owned()),
                purposes: rng.chance(50).then_some(purposes),
                consent: None,
                fields: strips.then(|| FieldGrant {
                    names: Vec::new(),
                    labels: vec![(*rng.pick(&["identifying", "contact", "location"])).to_owned()],
                }),
                valid_from: window.map(|w| w.0),
                valid_until: window.map(|w| w.1),
                origin: None,
            }
        };
        rule_list.push(rule);
    }
    let bundle = Bundle::from_parts(BundleParts {
        registry,
        network: NetworkParams { label: Some("synthetic".to_owned()), ..NetworkParams::default() },
        purposes,
        schema,
        rules: rule_list,
    })?;

    let all_orgs: Vec<&OrgId> = members.iter().flatten().collect();
    let member_of = |rng: &mut Rng, p: &Parties| -> OrgId {
        if !p.orgs.is_empty() {
            return rng.pick(&p.orgs).clone();
        }
        let t = TYPES.iter().position(|(name, _)| p.types.first().is_some_and(|pt| pt.as_str() == *name)).unwrap_or(0);
        rng.pick(&members[t]).clone()
    };
    let mut out = Vec::with_capacity(requests);
    let allows: Vec<&Rule> = bundle.rules().iter().filter(|r| r.effect == Effect::Allow).collect();
    for n in 0..requests {
        let near = !allows.is_empty() && rng.chance(80);
        let (sender, recipient, kind, purpose, role) = if near {
            let rule = *rng.pick(&allows);
            let kind = KINDS.iter().position(|(k, _)| rule.kind.as_deref() == Some(*k)).unwrap_or(0);
            let purpose = rule
                .purposes
                .as_ref()
                .and_then(|p| p.first())
                .map_or("housing", |p| PURPOSES.iter().copied().find(|q| q == p).unwrap_or("housing"));
            let roles = rule.person_roles.clone().unwrap_or_default();
            let role = if rng.chance(90) { *rng.pick(&roles) } else { Role::Auditor };
            let from = rule.from.clone().unwrap_or_default();
            let to = rule.to.clone().unwrap_or_default();
            (member_of(&mut rng, &from), member_of(&mut rng, &to), kind, purpose, role)
        } else {
            let kind = rng.below(KINDS.len());
            (
                (*rng.pick(&all_orgs)).clone(),
                (*rng.pick(&all_orgs)).clone(),
                kind,
                *rng.pick(&PURPOSES),
                Role::Caseworker,
            )
        };
        let subject = format!("subject-{n}");
        let fields: Vec<&'static str> = KINDS[kind]
            .1
            .iter()
            .copied()
            .filter(|f| matches!(*f, "urgency" | "incident_type") || rng.chance(70))
            .collect();
        let consent = rng.chance(85).then(|| {
            let state = if rng.chance(90) { ConsentState::Given } else { ConsentState::Revoked };
            let labels = LABELS.iter().filter(|_| rng.chance(75)).map(|l| (*l).to_owned()).collect();
            let (valid_from, valid_until) = if rng.chance(90) {
                (now - Duration::days(30), now + Duration::days(300))
            } else {
                (now - Duration::days(400), now - Duration::days(35))
            };
            let receipt = ConsentReceipt {
                version: RECEIPT_VERSION,
                consent_id: format!("consent-{n}"),
                subject: if rng.chance(97) { subject.clone() } else { "someone-else".to_owned() },
                controller: if rng.chance(97) { sender.clone() } else { (*rng.pick(&all_orgs)).clone() },
                purposes: vec![if rng.chance(92) { purpose.to_owned() } else { "counselling".to_owned() }],
                recipient_orgs: if rng.chance(50) { vec![recipient.clone()] } else { Vec::new() },
                recipient_types: if rng.chance(60) {
                    bundle.registry().get(&recipient).map(|e| vec![e.org_type.clone()]).unwrap_or_default()
                } else {
                    Vec::new()
                },
                labels,
                fields: Vec::new(),
                valid_from,
                valid_until,
                method: CollectionMethod::Written,
                evidence_sha256: "0".repeat(64),
                language: "en".to_owned(),
                recorded_by: PersonId::parse("synthetic").expect("a well-formed person id"),
                issued_at: valid_from,
                supersedes: None,
            };
            (receipt, state)
        });
        out.push(SyntheticRequest { sender, role, recipient, kind: KINDS[kind].0, purpose, subject, fields, consent });
    }
    Ok(SyntheticNetwork { bundle, requests: out, now })
}
