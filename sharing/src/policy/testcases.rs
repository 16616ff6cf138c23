//! Table-driven policy tests (`policies/tests/*.toml`), run by `policy test` and by CI the way
//! `opa test` runs Rego tests: each case is one request, an optional consent, the time, and the
//! decision expected. The network reviews them beside the rules, as worked examples of what the rules
//! mean.

use std::fmt;
use std::path::{Path, PathBuf};

use haven_trust::ids::{OrgId, OrgType, PersonId, Role};
use haven_trust::receipt::{CollectionMethod, ConsentReceipt, ConsentState, ConsentView, RECEIPT_VERSION};
use haven_trust::source::{Located, SourceFile};
use serde::Deserialize;
use time::OffsetDateTime;
use toml::Spanned;
use toml::value::Datetime;

use super::bundle::Bundle;
use super::engine::{Decision, DecisionRequest, DenyReason, decide};
use super::files;
use super::schema::LABELS;

/// The subject a case is about when it names none.
pub const DEFAULT_SUBJECT: &str = "subject-under-test";

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub allowed: bool,
    /// Required on a deny, absent on an allow.
    pub reason: Option<DenyReason>,
    /// Checked when given.
    pub reason_detail: Option<String>,
    /// Checked when given, in any order.
    pub rule_ids: Option<Vec<String>>,
    /// Checked when given, in any order.
    pub released: Option<Vec<String>>,
    /// Checked when given, in any order.
    pub withheld: Option<Vec<String>>,
}

/// One case.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    /// `file:line` of the case.
    pub location: String,
    pub sender: OrgId,
    pub sender_role: Role,
    pub recipient: OrgId,
    pub kind: String,
    pub purpose: String,
    pub subject: String,
    pub consent_id: Option<String>,
    pub consent: Option<(ConsentReceipt, ConsentState)>,
    /// The fields the message carries; by default every field of the kind.
    pub fields: Vec<String>,
    /// The time of the decision. Cases never read the clock.
    pub now: OffsetDateTime,
    pub expect: Expectation,
}

impl TestCase {
    /// Runs the case through [`decide`].
    pub fn run(&self, bundle: &Bundle) -> CaseOutcome {
        let fields: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        let req = DecisionRequest {
            sender: &self.sender,
            sender_role: self.sender_role,
            recipient: &self.recipient,
            kind: &self.kind,
            purpose: &self.purpose,
            subject: Some(&self.subject),
            consent_id: self.consent_id.as_deref(),
            fields: &fields,
        };
        let consent = self.consent.as_ref().map(|(receipt, state)| ConsentView { receipt, state: *state });
        let decision = decide(&req, bundle, consent, self.now);
        let mismatches = self.mismatches(&decision);
        CaseOutcome { name: self.name.clone(), location: self.location.clone(), decision, mismatches }
    }

    fn mismatches(&self, d: &Decision) -> Vec<String> {
        let e = &self.expect;
        let word = |allowed: bool| if allowed { "allow" } else { "deny" };
        let mut out = Vec::new();
        if d.allowed() != e.allowed {
            let reason = d.reason().map(|r| format!(" ({r})")).unwrap_or_default();
            out.push(format!("expected {}, got {}{reason}", word(e.allowed), word(d.allowed())));
        } else if e.reason.is_some() && d.reason() != e.reason {
            let show = |r: Option<DenyReason>| r.map_or("none", |r| r.code());
            out.push(format!("expected reason {}, got {}", show(e.reason), show(d.reason())));
        }
        if let Some(detail) = &e.reason_detail
            && d.reason_detail() != Some(detail.as_str())
        {
            out.push(format!("expected detail `{detail}`, got {:?}", d.reason_detail()));
        }
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        for (what, expected, got) in [
            ("rule_ids", &e.rule_ids, &d.rule_ids()),
            ("released", &e.released, &d.released()),
            ("withheld", &e.withheld, &d.withheld()),
        ] {
            if let Some(expected) = expected
                && sorted(expected) != sorted(got)
            {
                out.push(format!("expected {what} [{}], got [{}]", sorted(expected).join(", "), got.join(", ")));
            }
        }
        out
    }
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    pub location: String,
    pub decision: Decision,
    /// Empty when the case passed.
    pub mismatches: Vec<String>,
}

impl CaseOutcome {
    /// Whether the decision was the one expected.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// The results of every case.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub outcomes: Vec<CaseOutcome>,
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed()).count()
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }
}

impl fmt::Display for Report {
    /// A pass/fail line per case, the mismatches under each failure, then `N passed, N failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.outcomes {
            writeln!(f, "{} {}  {}", if o.passed() { "PASS" } else { "FAIL" }, o.location, o.name)?;
            for m in &o.mismatches {
                writeln!(f, "       {m}")?;
            }
        }
        writeln!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Loads the bundle in `dir` and runs every case in `dir/tests/*.toml`.
pub fn run(dir: &Path) -> Result<Report, Vec<Located>> {
    let bundle = Bundle::load(dir, None)?;
    let cases = load(&dir.join("tests"), &bundle)?;
    Ok(Report { outcomes: cases.iter().map(|c| c.run(&bundle)).collect() })
}

/// Reads every `*.toml` in `tests_dir` (sorted by name), checking each case against the bundle.
pub fn load(tests_dir: &Path, bundle: &Bundle) -> Result<Vec<TestCase>, Vec<Located>> {
    let whole = |message: String| Located { file: tests_dir.to_owned(), line: 0, col: 0, message };
    if !tests_dir.is_dir() {
        return Err(vec![whole(
            "no test cases: this folder does not exist; write cases for your own organizations in tests/*.toml (see `policy test` in docs/policy-language.md)".into(),
        )]);
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(tests_dir)
        .map_err(|e| vec![whole(format!("cannot list the test cases: {e}"))])?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    paths.sort();
    let mut problems = Vec::new();
    let mut cases = Vec::new();
    for path in &paths {
        match SourceFile::read(path) {
            Ok(src) => cases.extend(parse_file(&src, bundle, &mut problems)),
            Err(e) => problems.push(e),
        }
    }
    if cases.is_empty() && problems.is_empty() {
        problems.push(whole("no test cases: add `[[case]]` tables to a .toml file here".to_owned()));
    }
    if problems.is_empty() { Ok(cases) } else { Err(files::in_order(problems)) }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    sender: Spanned<String>,
    sender_role: Option<Spanned<String>>,
    recipient: Spanned<String>,
    kind: Spanned<String>,
    purpose: Spanned<String>,
    subject: Option<String>,
    consent_id: Option<String>,
    now: Option<Spanned<Datetime>>,
    fields: Option<Vec<Spanned<String>>>,
    consent: Option<RawConsent>,
    expect: Spanned<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    state: Option<Spanned<String>>,
    consent_id: Option<String>,
    controller: Option<Spanned<String>>,
    subject: Option<String>,
    purposes: Vec<Spanned<String>>,
    #[serde(default)]
    recipient_orgs: Vec<Spanned<String>>,
    #[serde(default)]
    recipient_types: Vec<Spanned<String>>,
    #[serde(default)]
    labels: Vec<Spanned<String>>,
    #[serde(default)]
    fields: Vec<Spanned<String>>,
    valid_from: Spanned<Datetime>,
    valid_until: Spanned<Datetime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    decision: Spanned<Expected>,
    reason: Option<Spanned<String>>,
    detail: Option<String>,
    rule_ids: Option<Vec<Spanned<String>>>,
    released: Option<Vec<Spanned<String>>>,
    withheld: Option<Vec<Spanned<String>>>,
}

/// Checks names in a case against what the bundle knows, so a typo fails loudly instead of
/// silently testing something else.
struct Checker<'a> {
    src: &'a SourceFile,
    bundle: &'a Bundle,
    problems: &'a mut Vec<Located>,
}

impl Checker<'_> {
    fn say(&mut self, at: usize, message: String) {
        self.problems.push(self.src.at(at, message));
    }

    fn org(&mut self, name: &Spanned<String>, what: &str) -> Option<OrgId> {
        let id = OrgId::parse(name.get_ref()).ok().filter(|id| self.bundle.registry().get(id).is_some());
        if id.is_none() {
            let hint = files::did_you_mean(name.get_ref(), self.bundle.registry().iter().map(|o| o.id.as_str()));
            self.say(name.span().start, format!("{what}: unknown organization `{}`{hint}", name.get_ref()));
        }
        id
    }

    fn org_type(&mut self, name: &Spanned<String>) -> Option<OrgType> {
        let registry = self.bundle.registry();
        let t = OrgType::parse(name.get_ref()).ok().filter(|t| registry.types().contains(t));
        if t.is_none() {
            let hint = files::did_you_mean(name.get_ref(), registry.types().into_iter().map(|t| t.as_str()));
            self.say(name.span().start, format!("unknown organization type `{}`{hint}", name.get_ref()));
        }
        t
    }

    fn purpose(&mut self, name: &Spanned<String>) -> Option<String> {
        let known = self.bundle.is_purpose(name.get_ref());
        if !known {
            let hint = files::did_you_mean(name.get_ref(), self.bundle.purposes());
            self.say(name.span().start, format!("unknown purpose `{}`{hint}", name.get_ref()));
        }
        known.then(|| name.get_ref().clone())
    }

    fn label(&mut self, name: &Spanned<String>) -> Option<String> {
        let known = LABELS.contains(&name.get_ref().as_str());
        if !known {
            let hint = files::did_you_mean(name.get_ref(), LABELS);
            self.say(name.span().start, format!("unknown label `{}`{hint}", name.get_ref()));
        }
        known.then(|| name.get_ref().clone())
    }

    fn field(&mut self, kind: &str, name: &Spanned<String>) -> Option<String> {
        let def = self.bundle.schema().kind(kind)?;
        let known = def.field(name.get_ref()).is_some();
        if !known {
            let hint = files::did_you_mean(name.get_ref(), def.field_names());
            self.say(name.span().start, format!("kind `{kind}` has no field `{}`{hint}", name.get_ref()));
        }
        known.then(|| name.get_ref().clone())
    }

    fn rule(&mut self, id: &Spanned<String>) -> Option<String> {
        let known = self.bundle.rule(id.get_ref()).is_some();
        if !known {
            let hint = files::did_you_mean(id.get_ref(), self.bundle.rules().iter().map(|r| r.id.as_str()));
            self.say(id.span().start, format!("no rule has id `{}`{hint}", id.get_ref()));
        }
        known.then(|| id.get_ref().clone())
    }

    fn instant(&mut self, dt: &Spanned<Datetime>) -> Option<OffsetDateTime> {
        files::instant(dt.get_ref()).map_err(|e| self.say(dt.span().start, e)).ok()
    }
}

fn parse_file(src: &SourceFile, bundle: &Bundle, problems: &mut Vec<Located>) -> Vec<TestCase> {
    let doc = match files::parse_document(src) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(e);
            return Vec::new();
        }
    };
    files::check_keys(src, doc.get_ref(), &["now", "case"], "a test file", problems);
    let file_now = match files::get(doc.get_ref(), "now").map(|n| files::deserialize::<Spanned<Datetime>>(src, n)) {
        Some(Ok(dt)) => files::instant(dt.get_ref()).map_err(|e| problems.push(src.at(dt.span().start, e))).ok(),
        Some(Err(e)) => {
            problems.push(e);
            None
        }
        None => None,
    };
    let Some(node) = files::get(doc.get_ref(), "case") else { return Vec::new() };
    let mut cases = Vec::new();
    for item in files::items(src, "case", node, problems) {
        match files::deserialize::<RawCase>(src, item) {
            Ok(raw) => {
                let before = problems.len();
                let mut checker = Checker { src, bundle, problems };
                let case = check_case(&mut checker, item.span().start, raw, file_now);
                if problems.len() == before {
                    cases.extend(case);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    cases
}

fn check_case(c: &mut Checker<'_>, at: usize, raw: RawCase, file_now: Option<OffsetDateTime>) -> Option<TestCase> {
    let expect_deny = matches!(raw.expect.get_ref().decision.get_ref(), Expected::Deny);
    let sender = c.org(&raw.sender, "sender");
    let sender_role = match &raw.sender_role {
        None => Some(Role::Caseworker),
        Some(r) => Role::parse(r.get_ref())
            .map_err(|_| {
                let known = Role::ALL.map(Role::as_str);
                let hint = files::did_you_mean(r.get_ref(), known);
                c.say(
                    r.span().start,
                    format!("unknown person role `{}`{hint} (known: {})", r.get_ref(), known.join(", ")),
                );
            })
            .ok(),
    };
    // A case may name a recipient outside the registry only to test `unknown_recipient`.
    let expects_unknown =
        raw.expect.get_ref().reason.as_ref().is_some_and(|r| r.get_ref() == DenyReason::UnknownRecipient.code());
    let recipient = if expects_unknown {
        OrgId::parse(raw.recipient.get_ref()).map_err(|e| c.say(raw.recipient.span().start, e.to_string())).ok()
    } else {
        c.org(&raw.recipient, "recipient")
    };
    let kind = raw.kind.get_ref().clone();
    if c.bundle.schema().kind(&kind).is_none() {
        let hint = files::did_you_mean(&kind, c.bundle.schema().kinds().map(|k| k.name.as_str()));
        c.say(raw.kind.span().start, format!("unknown message kind `{kind}`{hint}"));
        return None;
    }
    let purpose = c.purpose(&raw.purpose);
    let fields: Vec<String> = match &raw.fields {
        Some(list) => list.iter().filter_map(|f| c.field(&kind, f)).collect(),
        None => c.bundle.schema().kind(&kind).map(|k| k.field_names().map(str::to_owned).collect()).unwrap_or_default(),
    };
    let now = match (&raw.now, file_now) {
        (Some(dt), _) => c.instant(dt),
        (None, Some(now)) => Some(now),
        (None, None) => {
            c.say(at, "the case needs a time: give `now` in the case or at the top of the file".to_owned());
            None
        }
    };
    let subject = raw.subject.clone().unwrap_or_else(|| DEFAULT_SUBJECT.to_owned());
    let consent = match &raw.consent {
        Some(rc) => sender.as_ref().and_then(|s| check_consent(c, rc, s, &subject, &kind)),
        None => None,
    };
    let consent_id = raw.consent_id.clone().or_else(|| consent.as_ref().map(|(r, _)| r.consent_id.clone()));

    let e = raw.expect.get_ref();
    let reason = match &e.reason {
        Some(code) => {
            let reason = DenyReason::from_code(code.get_ref());
            if reason.is_none() {
                let hint = files::did_you_mean(code.get_ref(), DenyReason::all().iter().map(|r| r.code()));
                c.say(code.span().start, format!("unknown reason `{}`{hint}", code.get_ref()));
            } else if !expect_deny {
                c.say(code.span().start, "an allow has no reason; remove `reason` or expect `deny`".to_owned());
            }
            reason
        }
        None if expect_deny => {
            c.say(raw.expect.span().start, "a case expecting `deny` must give the `reason`".to_owned());
            None
        }
        None => None,
    };
    let names = |c: &mut Checker<'_>, list: &Option<Vec<Spanned<String>>>| {
        list.as_ref().map(|l| l.iter().filter_map(|f| c.field(&kind, f)).collect::<Vec<_>>())
    };
    let expect = Expectation {
        allowed: !expect_deny,
        reason,
        reason_detail: e.detail.clone(),
        rule_ids: e.rule_ids.as_ref().map(|l| l.iter().filter_map(|r| c.rule(r)).collect()),
        released: names(c, &e.released),
        withheld: names(c, &e.withheld),
    };
    let (line, _) = c.src.line_col(at);
    Some(TestCase {
        name: raw.name,
        location: format!("{}:{line}", c.src.path.display()),
        sender: sender?,
        sender_role: sender_role?,
        recipient: recipient?,
        kind,
        purpose: purpose?,
        subject,
        consent_id,
        consent,
        fields,
        now: now?,
        expect,
    })
}

fn check_consent(
    c: &mut Checker<'_>,
    rc: &RawConsent,
    sender: &OrgId,
    subject: &str,
    kind: &str,
) -> Option<(ConsentReceipt, ConsentState)> {
    let state = match &rc.state {
        None => Some(ConsentState::Given),
        Some(s) => {
            let state = ConsentState::parse(s.get_ref());
            if state.is_none() {
                let known = ["given", "withdrawn", "revoked", "expired", "superseded"];
                let hint = files::did_you_mean(s.get_ref(), known);
                c.say(
                    s.span().start,
                    format!("unknown consent state `{}`{hint} (known: {})", s.get_ref(), known.join(", ")),
                );
            }
            state
        }
    };
    let controller = match &rc.controller {
        Some(name) => c.org(name, "consent controller"),
        None => Some(sender.clone()),
    };
    let purposes: Vec<String> = rc.purposes.iter().filter_map(|p| c.purpose(p)).collect();
    let recipient_orgs: Vec<OrgId> = rc.recipient_orgs.iter().filter_map(|o| c.org(o, "consent recipient")).collect();
    let recipient_types: Vec<OrgType> = rc.recipient_types.iter().filter_map(|t| c.org_type(t)).collect();
    let labels: Vec<String> = rc.labels.iter().filter_map(|l| c.label(l)).collect();
    let fields: Vec<String> = rc.fields.iter().filter_map(|f| c.field(kind, f)).collect();
    let valid_from = c.instant(&rc.valid_from);
    let valid_until = c.instant(&rc.valid_until);
    let (valid_from, valid_until) = (valid_from?, valid_until?);
    let receipt = ConsentReceipt {
        version: RECEIPT_VERSION,
        consent_id: rc.consent_id.clone().unwrap_or_else(|| "consent-under-test".to_owned()),
        subject: rc.subject.clone().unwrap_or_else(|| subject.to_owned()),
        controller: controller?,
        purposes,
        recipient_orgs,
        recipient_types,
        labels,
        fields,
        valid_from,
        valid_until,
        method: CollectionMethod::Written,
        evidence_sha256: "0".repeat(64),
        language: "en".to_owned(),
        recorded_by: PersonId::parse("policy-test").ok()?,
        issued_at: valid_from,
        supersedes: None,
    };
    Some((receipt, state?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::policy::fixtures::{copy_shipped, shipped, shipped_dir};

    #[test]
    fn every_shipped_case_passes() {
        let report = run(&shipped_dir()).unwrap_or_else(|e| panic!("{e:#?}"));
        assert!(report.outcomes.len() >= 30, "{report}");
        assert_eq!(report.failed(), 0, "{report}");
        assert!(report.to_string().ends_with(&format!("\n{} passed, 0 failed\n", report.passed())));
    }

    #[test]
    fn the_shipped_cases_cover_every_rule_and_every_reason_decide_can_give() {
        let bundle = shipped();
        let cases = load(&shipped_dir().join("tests"), &bundle).unwrap();
        let decisions: Vec<Decision> = cases.iter().map(|c| c.run(&bundle).decision).collect();
        let rules: BTreeSet<&str> = decisions.iter().flat_map(|d| d.rule_ids().iter().map(String::as_str)).collect();
        for rule in bundle.rules() {
            assert!(rules.contains(rule.id.as_str()), "no case exercises rule `{}`", rule.id);
        }
        let reasons: BTreeSet<DenyReason> = decisions.iter().filter_map(|d| d.reason()).collect();
        let by_the_router = [
            DenyReason::QuotaExceeded,
            DenyReason::RecipientNotPinned,
            DenyReason::ManifestExceedsGrant,
            DenyReason::ManifestMismatch,
            DenyReason::UnknownSealingKey,
            DenyReason::NoSealedCopy,
        ];
        for reason in DenyReason::all().iter().filter(|r| !by_the_router.contains(r)) {
            assert!(reasons.contains(reason), "no case produces `{}`", reason.code());
        }
        assert!(decisions.iter().any(|d| d.allowed()));
    }

    #[test]
    fn a_failing_case_says_what_differed() {
        let dir = copy_shipped();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/wrong.toml"),
            r#"
now = 2025-06-01T12:00:00Z

[[case]]
name = "expects the wrong thing"
sender = "harbor"
recipient = "metro-police"
kind = "alert"
purpose = "safety_alert"
fields = ["incident_type", "victim_name"]
expect = { decision = "allow", released = ["incident_type", "victim_name"] }
"#,
        )
        .unwrap();
        let report = run(dir.path()).unwrap();
        assert_eq!((report.passed(), report.failed()), (0, 1));
        let text = report.to_string();
        assert!(text.contains("FAIL "), "{text}");
        assert!(text.contains("expected released [incident_type, victim_name], got [incident_type]"), "{text}");
        assert!(text.ends_with("0 passed, 1 failed\n"), "{text}");
    }

    #[test]
    fn a_case_with_a_typo_is_refused_rather_than_testing_something_else() {
        let dir = copy_shipped();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/typos.toml"),
            r#"
[[case]]
name = "typos"
sender = "harbour"
sender_role = "case_worker"
recipient = "maple-house"
kind = "referral"
purpose = "housing"
fields = ["urgncy"]
expect = { decision = "deny", reason = "consent_mising" }
"#,
        )
        .unwrap();
        let prefix = format!("{}/", dir.path().display());
        let errs: Vec<String> =
            run(dir.path()).unwrap_err().iter().map(|e| e.to_string().replace(&prefix, "")).collect();
        assert_eq!(
            errs,
            [
                "tests/typos.toml:2:1: the case needs a time: give `now` in the case or at the top of the file",
                "tests/typos.toml:4:10: sender: unknown organization `harbour` (did you mean `harbor`?)",
                "tests/typos.toml:5:15: unknown person role `case_worker` (did you mean `caseworker`?) (known: caseworker, liaison, privacy_officer, auditor, admin, node)",
                "tests/typos.toml:9:11: kind `referral` has no field `urgncy` (did you mean `urgency`?)",
                "tests/typos.toml:10:40: unknown reason `consent_mising` (did you mean `consent_missing`?)",
            ]
        );
    }
}
