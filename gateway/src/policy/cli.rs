//! `haven-gateway policy check|test|explain|init`: the tools the network uses to review and test its
//! sharing contract before the gateway enforces it, and to start one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use haven_trust::ids::{OrgId, Role};
use haven_trust::receipt::{ConsentReceipt, ConsentState, ConsentView};
use haven_trust::source::{Located, SourceFile};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::bundle::Bundle;
use super::engine::DecisionRequest;
use super::explain::explain;
use super::{starter, testcases};

/// The `policy` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy bundle; print every problem as file:line:col and exit non-zero on any.
    /// Warnings (an organization without pins, a rule naming a type no organization has yet) are
    /// printed too but do not fail the check.
    Check {
        /// The bundle directory (holding orgs.toml, network.toml, purposes.toml, schema.toml, rules/).
        dir: PathBuf,
        /// A pins.toml to merge into the registry, as the gateway merges the one in its certificate
        /// directory.
        #[arg(long)]
        pins: Option<PathBuf>,
    },
    /// Write the starter bundle for a real network into DIR: rules that name organization types
    /// only, so they fit any registry. Refuses to overwrite a file.
    Init {
        /// The folder to write (created if missing).
        dir: PathBuf,
        /// Your organization registry, copied to DIR/orgs.toml (default: placeholders to replace).
        #[arg(long)]
        orgs: Option<PathBuf>,
    },
    /// Run the table-driven cases in DIR/tests/*.toml; print a line per case, then `N passed, N failed`.
    Test {
        /// The bundle directory.
        dir: PathBuf,
    },
    /// Decide one request and explain the decision rule by rule.
    Explain {
        /// The bundle directory.
        dir: PathBuf,
        /// The sending organization.
        #[arg(long, value_parser = OrgId::parse)]
        from: OrgId,
        /// The receiving organization.
        #[arg(long, value_parser = OrgId::parse)]
        to: OrgId,
        /// The message kind (referral, alert, ...).
        #[arg(long)]
        kind: String,
        /// The purpose of the send.
        #[arg(long)]
        purpose: String,
        /// The sending person's role.
        #[arg(long, default_value = "caseworker", value_parser = Role::parse)]
        role: Role,
        /// A consent receipt (TOML, or JSON when the file ends in .json), optionally with a `state`
        /// (given, withdrawn, revoked, expired, superseded; default given).
        #[arg(long)]
        consent: Option<PathBuf>,
        /// The fields the message carries, comma-separated (default: every field of the kind).
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// The subject's pseudonym (default: the consent's subject).
        #[arg(long)]
        subject: Option<String>,
        /// The time of the decision, RFC 3339 (default: now).
        #[arg(long)]
        now: Option<String>,
    },
}

/// Runs a `policy` subcommand, printing results to stdout and problems to stderr.
pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { dir, pins } => match check(&dir, pins.as_deref()) {
            Ok(checked) => {
                checked.print();
                ExitCode::SUCCESS
            }
            Err(problems) => report(&problems),
        },
        PolicyCommand::Init { dir, orgs } => match init(&dir, orgs.as_deref()) {
            Ok(checked) => {
                checked.print();
                println!(
                    "next: put your organizations and their pins in orgs.toml, name the network in network.toml, review the rules, then `haven-gateway policy check {}`",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => report(&problems),
        },
        PolicyCommand::Test { dir } => test(&dir),
        PolicyCommand::Explain { dir, from, to, kind, purpose, role, consent, fields, subject, now } => {
            let args = ExplainArgs { from, to, kind, purpose, role, consent, fields, subject, now };
            match explain_cmd(&dir, args) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(problems) => report(&problems),
            }
        }
    }
}

fn report(problems: &[Located]) -> ExitCode {
    for p in problems {
        eprintln!("{p}");
    }
    eprintln!("{} problem{}", problems.len(), if problems.len() == 1 { "" } else { "s" });
    ExitCode::FAILURE
}

/// A bundle that passed `policy check`: its summary line and its warnings.
pub struct Checked {
    pub summary: String,
    pub warnings: Vec<Located>,
}

impl Checked {
    /// Warnings to stderr, the summary to stdout.
    fn print(&self) {
        for w in &self.warnings {
            eprintln!("warning: {w}");
        }
        println!("{}", self.summary);
    }
}

/// `policy check`: loads and validates the bundle in `dir`, merging `pins` as the gateway would.
pub fn check(dir: &Path, pins: Option<&Path>) -> Result<Checked, Vec<Located>> {
    let b = Bundle::load(dir, pins)?;
    let n = b.warnings().len();
    let warnings = match n {
        0 => String::new(),
        1 => "; 1 warning".to_owned(),
        n => format!("; {n} warnings"),
    };
    let summary = format!(
        "{}: ok, {} organizations, {} purposes, {} kinds, {} rules; version {}{warnings}",
        dir.display(),
        b.registry().len(),
        b.purpose_defs().len(),
        b.schema().kinds().count(),
        b.rules().len(),
        b.version()
    );
    Ok(Checked { summary, warnings: b.warnings().to_vec() })
}

/// `policy init`: writes the starter bundle into `dir` with the registry `orgs`, then checks it.
pub fn init(dir: &Path, orgs: Option<&Path>) -> Result<Checked, Vec<Located>> {
    for path in starter::write(dir, orgs)? {
        println!("wrote    {}", path.display());
    }
    check(dir, None)
}

fn test(dir: &Path) -> ExitCode {
    match testcases::run(dir) {
        Ok(report) => {
            print!("{report}");
            if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(problems) => report(&problems),
    }
}

struct ExplainArgs {
    from: OrgId,
    to: OrgId,
    kind: String,
    purpose: String,
    role: Role,
    consent: Option<PathBuf>,
    fields: Vec<String>,
    subject: Option<String>,
    now: Option<String>,
}

fn explain_cmd(dir: &Path, a: ExplainArgs) -> Result<String, Vec<Located>> {
    let bundle = Bundle::load(dir, None)?;
    let consent = a.consent.as_deref().map(read_consent).transpose().map_err(|e| vec![e])?;
    let now = match &a.now {
        Some(text) => OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
            vec![Located {
                file: "--now".into(),
                line: 0,
                col: 0,
                message: format!("`{text}` is not an RFC 3339 time: {e}"),
            }]
        })?,
        None => OffsetDateTime::now_utc(),
    };
    let fields: Vec<String> = if a.fields.is_empty() {
        bundle.schema().kind(&a.kind).map(|k| k.field_names().map(str::to_owned).collect()).unwrap_or_default()
    } else {
        a.fields
    };
    let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let subject = a.subject.or_else(|| consent.as_ref().map(|(r, _)| r.subject.clone()));
    let req = DecisionRequest {
        sender: &a.from,
        sender_role: a.role,
        recipient: &a.to,
        kind: &a.kind,
        purpose: &a.purpose,
        subject: subject.as_deref(),
        consent_id: consent.as_ref().map(|(r, _)| r.consent_id.as_str()),
        fields: &field_refs,
    };
    let view = consent.as_ref().map(|(receipt, state)| ConsentView { receipt, state: *state });
    Ok(explain(&req, &bundle, view, now).to_string())
}

/// Reads a consent receipt for `explain`: TOML (datetimes may be TOML datetimes or RFC 3339 strings)
/// or JSON, with an optional top-level `state`.
fn read_consent(path: &Path) -> Result<(ConsentReceipt, ConsentState), Located> {
    let src = SourceFile::read(path)?;
    let mut value: serde_json::Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&src.text).map_err(|e| src.whole(format!("not a JSON consent receipt: {e}")))?
    } else {
        let table: toml::Table = src.parse()?;
        toml_to_json(toml::Value::Table(table))
    };
    let state = match value.as_object_mut().and_then(|o| o.remove("state")) {
        None => ConsentState::Given,
        Some(serde_json::Value::String(s)) => ConsentState::parse(&s).ok_or_else(|| {
            src.whole(format!("unknown consent state `{s}` (known: given, withdrawn, revoked, expired, superseded)"))
        })?,
        Some(_) => return Err(src.whole("`state` must be a string")),
    };
    let receipt: ConsentReceipt =
        serde_json::from_value(value).map_err(|e| src.whole(format!("not a consent receipt: {e}")))?;
    Ok((receipt, state))
}

fn toml_to_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => J::from(f),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real network's registry of four fictional organizations, two of them not yet pinned.
    const FOUR_ORGS: &str = r#"
[[org]]
id = "bayside-outreach"
name = "Bayside Outreach (fictional NGO)"
type = "ngo"
tls_pins = ["1111111111111111111111111111111111111111111111111111111111111111"]
signing_pins = ["2222222222222222222222222222222222222222222222222222222222222222"]

[[org]]
id = "cedar-house"
name = "Cedar House (fictional shelter)"
type = "shelter"
tls_pins = ["3333333333333333333333333333333333333333333333333333333333333333"]

[[org]]
id = "hillside-clinic"
name = "Hillside Clinic (fictional)"
type = "clinic"

[[org]]
id = "ops"
name = "Network Operations (fictional)"
type = "operator"
tls_pins = ["4444444444444444444444444444444444444444444444444444444444444444"]
signing_pins = ["5555555555555555555555555555555555555555555555555555555555555555"]
"#;

    fn starter_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/starter")
    }

    /// Copies the bundle files (not tests) of `from` into a new folder, with `orgs` as its registry.
    fn with_registry(from: &Path, orgs: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in ["network.toml", "purposes.toml", "schema.toml"] {
            std::fs::copy(from.join(name), dir.path().join(name)).unwrap();
        }
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        for entry in std::fs::read_dir(from.join("rules")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join("rules").join(path.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join("orgs.toml"), orgs).unwrap();
        dir
    }

    fn messages(found: &[Located]) -> Vec<String> {
        found.iter().map(|l| l.message.clone()).collect()
    }

    #[test]
    fn the_starter_bundle_checks_clean_with_a_four_organization_registry_where_the_sample_rules_do_not() {
        let sample = with_registry(&starter_dir().join(".."), FOUR_ORGS);
        let problems = check(sample.path(), None).err().expect("the sample rules name the sample organizations");
        assert!(problems.iter().any(|p| p.message.contains("county-sheriff")), "{problems:#?}");

        let starter = with_registry(&starter_dir(), FOUR_ORGS);
        let checked = check(starter.path(), None).unwrap_or_else(|p| panic!("{p:#?}"));
        assert!(checked.summary.contains(": ok, 4 organizations"), "{}", checked.summary);
        let warned = messages(&checked.warnings);
        for missing in ["legal_aid", "law_enforcement", "auditor"] {
            assert!(
                warned.iter().any(|w| w.contains(&format!("has type `{missing}` yet"))),
                "{missing} has no member: {warned:#?}"
            );
        }
        assert!(warned.iter().any(|w| w.contains("`cedar-house` has no signing pin (`signing_pins`)")), "{warned:#?}");
        assert!(warned.iter().any(|w| w.contains("`hillside-clinic` has no TLS pin (`tls_pins`) and no signing pin")));
        assert!(!warned.iter().any(|w| w.contains("bayside-outreach") || w.contains("`ops`")), "{warned:#?}");
        assert!(checked.summary.ends_with(&format!("; {} warnings", warned.len())), "{}", checked.summary);

        // With its own placeholder registry too.
        check(&starter_dir(), None).unwrap_or_else(|p| panic!("{p:#?}"));
    }

    #[test]
    fn policy_init_writes_the_starter_around_the_given_registry_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let orgs = dir.path().join("our-orgs.toml");
        std::fs::write(&orgs, FOUR_ORGS).unwrap();
        let bundle = dir.path().join("policies");
        let checked = init(&bundle, Some(&orgs)).unwrap_or_else(|p| panic!("{p:#?}"));
        assert!(checked.summary.contains(": ok, 4 organizations"), "{}", checked.summary);
        assert_eq!(std::fs::read_to_string(bundle.join("orgs.toml")).unwrap(), FOUR_ORGS);
        for (name, text) in starter::FILES {
            assert_eq!(std::fs::read_to_string(bundle.join(name)).unwrap(), *text, "{name}");
        }
        std::fs::write(bundle.join("network.toml"), "label = \"ours\"\n").unwrap();
        let refused = init(&bundle, Some(&orgs)).err().expect("an existing bundle is not overwritten");
        assert!(refused.iter().all(|p| p.message.contains("exists already")), "{refused:#?}");
        assert_eq!(std::fs::read_to_string(bundle.join("network.toml")).unwrap(), "label = \"ours\"\n");

        // A broken registry writes nothing.
        std::fs::write(&orgs, "[[org]]\nid = \"Not An Id\"\n").unwrap();
        let elsewhere = dir.path().join("other");
        assert!(init(&elsewhere, Some(&orgs)).is_err());
        assert!(!elsewhere.exists());
    }

    #[test]
    fn the_starter_files_built_in_are_every_file_of_policies_starter() {
        let mut on_disk = Vec::new();
        for sub in ["", "rules/"] {
            for entry in std::fs::read_dir(starter_dir().join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    on_disk.push(format!("{sub}{}", path.file_name().unwrap().to_string_lossy()));
                }
            }
        }
        on_disk.sort();
        let mut built_in: Vec<String> = starter::FILES.iter().map(|(name, _)| (*name).to_owned()).collect();
        built_in.push("orgs.toml".to_owned());
        built_in.sort();
        assert_eq!(on_disk, built_in);
    }

    #[test]
    fn a_policy_folder_that_does_not_exist_is_one_problem_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let problems = check(&dir.path().join("no-such-folder"), None).err().unwrap();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].to_string().contains("no-such-folder: the policy folder does not exist"),
            "{}",
            problems[0]
        );
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let problems = check(&file, None).err().unwrap();
        assert_eq!(messages(&problems).len(), 1);
        assert!(problems[0].message.contains("is not a folder"), "{}", problems[0]);
        let problems = testcases::run(&starter_dir()).err().unwrap();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].to_string().contains("tests: no test cases: this folder does not exist"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn pins_merged_as_the_gateway_merges_them_silence_the_warning() {
        let dir = with_registry(&starter_dir(), FOUR_ORGS);
        let pins = dir.path().join("pins.toml");
        let fp = "6".repeat(64);
        std::fs::write(
            &pins,
            format!("[org.cedar-house]\nsigning = [\"{fp}\"]\n[org.hillside-clinic]\ntls = [\"{fp}\"]\nsigning = [\"{fp}\"]\n"),
        )
        .unwrap();
        let warned = messages(&check(dir.path(), Some(&pins)).unwrap().warnings);
        assert!(!warned.iter().any(|w| w.contains("pin")), "{warned:#?}");
    }

    #[test]
    fn consent_files_read_as_toml_or_json_with_a_state() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("c.toml");
        std::fs::write(
            &toml_path,
            r#"
version = 1
consent_id = "c-1"
subject = "s-1"
controller = "harbor"
purposes = ["housing"]
recipient_types = ["shelter"]
labels = ["operational"]
valid_from = 2025-01-01T00:00:00Z
valid_until = "2025-12-31T00:00:00Z"
method = "written"
evidence_sha256 = "00"
language = "en"
recorded_by = "cw-1"
issued_at = 2025-01-01T00:00:00Z
state = "revoked"
"#,
        )
        .unwrap();
        let (receipt, state) = read_consent(&toml_path).unwrap();
        assert_eq!((receipt.consent_id.as_str(), state), ("c-1", ConsentState::Revoked));
        let json_path = dir.path().join("c.json");
        std::fs::write(&json_path, serde_json::to_string(&receipt).unwrap()).unwrap();
        let (again, state) = read_consent(&json_path).unwrap();
        assert_eq!((again, state), (receipt, ConsentState::Given));
    }
}
