//! `haven-node consent record|show|list|renew|revoke`: a survivor's consent, recorded by a caseworker at
//! the organization that collected it. The node signs the receipt with the organization's key and
//! registers it with the gateway; renewal is a new consent that supersedes the old one.

use clap::builder::PossibleValuesParser;
use haven_proto::v1::{
    ConsentRecord, GetConsentRequest, ListConsentsRequest, RecordConsentRequest, RenewConsentRequest,
    RevokeConsentRequest,
};
use haven_trust::ids::{OrgId, OrgType};
use haven_trust::receipt::{CollectionMethod, ConsentReceipt, ConsentState};
use serde::Serialize;
use time::Date;
use time::format_description::well_known::Rfc3339;

use super::client::{ClientArgs, Session};
use super::dates;
use super::error::CliError;
use super::output::{self, Out, Table};

/// The `consent` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConsentCommand {
    /// Record a survivor's consent; prints its id and the subject's pseudonym.
    Record(RecordArgs),
    /// One consent: its terms and where it stands.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Your organization's consents, optionally for one subject or in one state.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this subject's consents (your pseudonym for them).
        #[arg(long, value_name = "PSEUDONYM")]
        subject: Option<String>,
        /// Only consents in this state.
        #[arg(long, value_parser = PossibleValuesParser::new(STATES.map(ConsentState::as_str)))]
        state: Option<String>,
    },
    /// Renew a consent: a new consent, signed again, that supersedes ID (the subject stays the same).
    Renew {
        #[command(flatten)]
        client: ClientArgs,
        /// The consent this renewal supersedes.
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        terms: Terms,
    },
    /// Revoke a consent: from then on nothing may be sent under it, queued copies are cancelled and
    /// organizations that hold data under it are told.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(value_name = "ID")]
        id: String,
        /// Why it ends.
        #[arg(long, value_enum)]
        reason: RevokeReason,
    },
}

const STATES: [ConsentState; 5] = [
    ConsentState::Given,
    ConsentState::Withdrawn,
    ConsentState::Revoked,
    ConsentState::Expired,
    ConsentState::Superseded,
];
const METHODS: [CollectionMethod; 3] =
    [CollectionMethod::Written, CollectionMethod::VerbalWitnessed, CollectionMethod::Electronic];

/// Why a consent is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The survivor withdrew it.
    WithdrawnBySubject,
    /// The organization revoked it.
    RevokedByOrg,
    /// It should never have been recorded.
    RecordedInError,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::WithdrawnBySubject => "withdrawn_by_subject",
            RevokeReason::RevokedByOrg => "revoked_by_org",
            RevokeReason::RecordedInError => "recorded_in_error",
        }
    }
}

/// `consent record`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub terms: Terms,
    /// The survivor's pseudonym, when they already have one here; otherwise the node mints a random one.
    #[arg(long, value_name = "PSEUDONYM")]
    pub subject: Option<String>,
}

/// What the survivor agreed to: the same flags for a consent and for its renewal.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("recipients").args(["to_types", "to"]).required(true).multiple(true)))]
pub struct Terms {
    /// The purposes agreed to, from policies/purposes.toml (housing, medical, legal_aid, ...).
    #[arg(long = "purpose", value_name = "P", required = true, num_args = 1.., value_delimiter = ',')]
    pub purposes: Vec<String>,
    /// Organization types that may receive data (shelter, clinic, legal_aid, ...).
    #[arg(long = "to-type", value_name = "T", num_args = 1.., value_delimiter = ',')]
    pub to_types: Vec<OrgType>,
    /// Organizations that may receive data, by id.
    #[arg(long = "to", value_name = "ORG", num_args = 1.., value_delimiter = ',')]
    pub to: Vec<OrgId>,
    /// Sensitivity labels whose fields may be shared (identifying, contact, operational, location,
    /// sensitive).
    #[arg(long = "label", value_name = "L", num_args = 1.., value_delimiter = ',', required_unless_present = "fields")]
    pub labels: Vec<String>,
    /// Single fields that may be shared besides those the labels cover.
    #[arg(long = "field", value_name = "F", num_args = 1.., value_delimiter = ',')]
    pub fields: Vec<String>,
    /// The last day the consent covers (YYYY-MM-DD, UTC; the whole day is covered).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = dates::parse)]
    pub until: Date,
    /// The first day it covers (YYYY-MM-DD, UTC; default: now).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = dates::parse)]
    pub from: Option<Date>,
    /// How it was collected.
    #[arg(long, value_parser = PossibleValuesParser::new(METHODS.map(CollectionMethod::as_str)))]
    pub method: String,
    /// SHA-256 (64 hex digits) of the signed form, which stays with your organization.
    #[arg(long, value_name = "HEX", value_parser = sha256_hex)]
    pub evidence_sha256: String,
    /// The language the survivor was informed in (BCP 47: en, es-MX, ...).
    #[arg(long)]
    pub language: String,
}

fn sha256_hex(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("`{s}` is not a SHA-256 in hex (64 hex digits; for example from `sha256sum form.pdf`)"))
    }
}

impl Terms {
    fn request(&self, subject: Option<&str>) -> RecordConsentRequest {
        RecordConsentRequest {
            subject_pseudonym: subject.unwrap_or_default().to_owned(),
            purposes: self.purposes.clone(),
            recipient_orgs: self.to.iter().map(ToString::to_string).collect(),
            recipient_types: self.to_types.iter().map(ToString::to_string).collect(),
            labels: self.labels.clone(),
            fields: self.fields.clone(),
            valid_from_micros: self.from.map(dates::start_micros).unwrap_or(0),
            valid_until_micros: dates::end_micros(self.until),
            method: self.method.clone(),
            evidence_sha256: self.evidence_sha256.clone(),
            language: self.language.clone(),
            consent_id: String::new(),
        }
    }
}

/// A consent as a row: the signed receipt's terms and the gateway's view of its state.
#[derive(Debug, Serialize)]
pub struct ConsentRow {
    pub consent_id: String,
    /// given, withdrawn, revoked, expired or superseded.
    pub state: String,
    /// For a withdrawn or revoked consent: why.
    pub revocation_reason: String,
    /// The subject's pseudonym at your organization; keep it with the case record.
    pub subject: String,
    pub controller: String,
    pub purposes: Vec<String>,
    pub recipient_orgs: Vec<String>,
    pub recipient_types: Vec<String>,
    pub labels: Vec<String>,
    pub fields: Vec<String>,
    pub valid_from: String,
    pub valid_until: String,
    pub method: String,
    pub evidence_sha256: String,
    pub language: String,
    pub recorded_by: String,
    pub issued_at: String,
    /// The consent this one renewed.
    pub supersedes: String,
    /// The consent that renewed this one.
    pub superseded_by: String,
    pub registered_at: String,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Reads the record's receipt into a row.
pub fn row(c: &ConsentRecord) -> Result<ConsentRow, CliError> {
    let r: ConsentReceipt = serde_json::from_str(&c.receipt_json)
        .map_err(|e| CliError::Answer(format!("consent {}: unreadable receipt: {e}", c.consent_id)))?;
    Ok(ConsentRow {
        consent_id: c.consent_id.clone(),
        state: c.state.clone(),
        revocation_reason: c.revocation_reason.clone(),
        subject: r.subject,
        controller: r.controller.to_string(),
        purposes: r.purposes,
        recipient_orgs: r.recipient_orgs.iter().map(ToString::to_string).collect(),
        recipient_types: r.recipient_types.iter().map(ToString::to_string).collect(),
        labels: r.labels,
        fields: r.fields,
        valid_from: rfc3339(r.valid_from),
        valid_until: rfc3339(r.valid_until),
        method: r.method.as_str().to_owned(),
        evidence_sha256: r.evidence_sha256,
        language: r.language,
        recorded_by: r.recorded_by.to_string(),
        issued_at: rfc3339(r.issued_at),
        supersedes: r.supersedes.unwrap_or_default(),
        superseded_by: c.superseded_by.clone(),
        registered_at: output::rfc3339(c.registered_at_micros),
    })
}

fn recipients(r: &ConsentRow) -> String {
    let types = r.recipient_types.iter().map(|t| format!("type {t}"));
    output::list(&r.recipient_orgs.iter().cloned().chain(types).collect::<Vec<_>>())
}

fn write_one(out: Out<'_>, json: bool, r: &ConsentRow) -> Result<(), CliError> {
    if json {
        return Ok(output::json_line(out, r)?);
    }
    let state =
        if r.revocation_reason.is_empty() { r.state.clone() } else { format!("{} ({})", r.state, r.revocation_reason) };
    output::write_block(
        out,
        &[
            ("consent", r.consent_id.clone()),
            ("state", state),
            ("subject", r.subject.clone()),
            ("controller", r.controller.clone()),
            ("purposes", r.purposes.join(", ")),
            ("recipients", recipients(r)),
            ("labels", r.labels.join(", ")),
            ("fields", r.fields.join(", ")),
            ("valid", format!("{} until {}", r.valid_from, r.valid_until)),
            ("method", r.method.clone()),
            ("evidence", r.evidence_sha256.clone()),
            ("language", r.language.clone()),
            ("recorded by", r.recorded_by.clone()),
            ("issued", r.issued_at.clone()),
            ("supersedes", r.supersedes.clone()),
            ("superseded by", r.superseded_by.clone()),
        ],
    )?;
    Ok(())
}

/// Runs a `consent` subcommand.
pub async fn run(cmd: &ConsentCommand, out: Out<'_>) -> Result<(), CliError> {
    match cmd {
        ConsentCommand::Record(a) => {
            let s = Session::open(&a.client).await?;
            let req = a.terms.request(a.subject.as_deref());
            let record = s.client().record_consent(s.signed(req)).await?.into_inner();
            let r = row(&record)?;
            if !a.client.json {
                writeln!(
                    out,
                    "recorded consent {} for subject {} (keep the pseudonym with the case record)\n",
                    r.consent_id, r.subject
                )?;
            }
            write_one(out, a.client.json, &r)
        }
        ConsentCommand::Show { client, id } => {
            let s = Session::open(client).await?;
            let record =
                s.client().get_consent(s.signed(GetConsentRequest { consent_id: id.clone() })).await?.into_inner();
            write_one(out, client.json, &row(&record)?)
        }
        ConsentCommand::List { client, subject, state } => {
            let s = Session::open(client).await?;
            let mut rows = Vec::new();
            let mut page_token = String::new();
            loop {
                let req = ListConsentsRequest {
                    subject_pseudonym: subject.clone().unwrap_or_default(),
                    state: state.clone().unwrap_or_default(),
                    page_size: 500,
                    page_token,
                };
                let page = s.client().list_consents(s.signed(req)).await?.into_inner();
                for c in &page.consents {
                    rows.push(row(c)?);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if client.json {
                for r in &rows {
                    output::json_line(out, r)?;
                }
                return Ok(());
            }
            let mut table = Table::new(&["CONSENT", "STATE", "SUBJECT", "PURPOSES", "RECIPIENTS", "VALID UNTIL"]);
            for r in &rows {
                table.row(vec![
                    r.consent_id.clone(),
                    r.state.clone(),
                    r.subject.clone(),
                    output::list(&r.purposes),
                    recipients(r),
                    r.valid_until.clone(),
                ]);
            }
            table.write(out, "no consents")?;
            Ok(())
        }
        ConsentCommand::Renew { client, id, terms } => {
            let s = Session::open(client).await?;
            let req = RenewConsentRequest { supersedes: id.clone(), consent: Some(terms.request(None)) };
            let record = s.client().renew_consent(s.signed(req)).await?.into_inner();
            let r = row(&record)?;
            if !client.json {
                writeln!(out, "renewed consent {id} as {}\n", r.consent_id)?;
            }
            write_one(out, client.json, &r)
        }
        ConsentCommand::Revoke { client, id, reason } => {
            let s = Session::open(client).await?;
            let req = RevokeConsentRequest { consent_id: id.clone(), reason: reason.as_str().into() };
            let record = s.client().revoke_consent(s.signed(req)).await?.into_inner();
            let r = row(&record)?;
            if !client.json {
                writeln!(out, "revoked consent {id}: nothing more may be sent under it\n")?;
            }
            write_one(out, client.json, &r)
        }
    }
}
