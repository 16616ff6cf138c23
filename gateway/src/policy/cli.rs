//! `haven-gateway policy check|test|explain`: the tools the network uses to review and test its
//! sharing contract before the gateway enforces it.

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
use super::testcases;

/// The `policy` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy bundle; print every problem as file:line:col and exit non-zero on any.
    Check {
        /// The bundle directory (holding orgs.toml, network.toml, purposes.toml, schema.toml, rules/).
        dir: PathBuf,
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
        PolicyCommand::Check { dir } => check(&dir),
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

fn check(dir: &Path) -> ExitCode {
    match Bundle::load(dir, None) {
        Ok(b) => {
            println!(
                "{}: ok, {} organizations, {} purposes, {} kinds, {} rules; version {}",
                dir.display(),
                b.registry().len(),
                b.purpose_defs().len(),
                b.schema().kinds().count(),
                b.rules().len(),
                b.version()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => report(&problems),
    }
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
