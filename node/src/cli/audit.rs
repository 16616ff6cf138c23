//! `haven-node audit query|export|report|checkpoint|witness|verify`: the audit API from the command line,
//! through the person's own node. Human tables by default, `--json` for scripts. Failures print and
//! exit like every other `haven-node` command ([`super::error`]).
//!
//! `verify` runs offline: it needs only the export and the gateway's signing certificate (it is the same
//! code as `haven-gateway audit verify`). `checkpoint --json` writes a checkpoint file that `verify
//! --checkpoint` accepts, so checkpoints collected from several nodes can be checked against an export.

use std::io::Write;
use std::path::PathBuf;

use haven_proto::v1::audit_client::AuditClient;
use haven_proto::v1::{
    AcknowledgeWitnessAlarmRequest, AuditExportRequest, AuditFilter, AuditQueryRequest, ConsistencyProofRequest,
    GetCheckpointRequest, SignedCheckpoint, SubjectAccessRequest, WitnessStatusRequest, WitnessStatusResponse,
};
use haven_trust::audit::AuditEntry;
use haven_trust::export::{ConsistencyLine, Line};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::{ClientArgs, Session};
use super::error::CliError;
use super::output::{Out, or_dash, write_rows};

/// The `audit` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// List audit entries (auditors: every entry; privacy officers: their organization's).
    Query {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Entries per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Continue from a `next_cursor` an earlier page printed.
        #[arg(long, default_value_t = 0)]
        cursor: u64,
        /// Follow the cursor to the last page.
        #[arg(long)]
        all: bool,
    },
    /// Export entries with what offline verification needs (JSON lines).
    Export {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Where to write the export (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// "Who has seen my data?": every disclosure one controller made about one of its subjects.
    Report {
        #[command(flatten)]
        client: ClientArgs,
        /// The subject's pseudonym (the controller's).
        #[arg(long)]
        subject: String,
        /// The controller that minted the pseudonym: required of a network auditor; a privacy officer
        /// reports on their own organization's subjects only and may leave it out.
        #[arg(long)]
        controller: Option<String>,
    },
    /// The gateway's newest signed checkpoint (with --json, a file `verify --checkpoint` accepts).
    Checkpoint {
        #[command(flatten)]
        client: ClientArgs,
        /// Have the gateway sign one covering every entry committed so far.
        #[arg(long)]
        refresh: bool,
        /// Also fetch the consistency proof from this older size to the checkpoint.
        #[arg(long)]
        consistency_from: Option<u64>,
    },
    /// What this node's witness has seen of the audit log; exits 6 while an alarm stands. `ack`
    /// acknowledges it.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Witness {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        action: Option<WitnessAction>,
    },
    /// Verify an export offline with the gateway's signing certificate.
    Verify {
        /// The export file.
        export: PathBuf,
        /// The gateway's signing certificate (CERTS_DIR/gateway/signing.crt).
        #[arg(long)]
        key: PathBuf,
        /// Independently collected checkpoint files (`haven-node audit checkpoint --json`).
        #[arg(long = "checkpoint", num_args = 1..)]
        checkpoints: Vec<PathBuf>,
    },
}

/// What an auditor does about the witness.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WitnessAction {
    /// Acknowledge the standing alarm once you have looked into it (role auditor): the node records
    /// you, the time and your note beside it, then checks the gateway again; a problem that persists
    /// is a new alarm.
    Ack {
        #[command(flatten)]
        client: ClientArgs,
        /// What you found (kept with the alarm, at most 1000 characters).
        #[arg(long)]
        note: String,
    },
}

/// The audit filter. Times are RFC 3339 (`2025-06-01T00:00:00Z`) or microseconds since the epoch.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Entries at or after this time.
    #[arg(long)]
    pub from: Option<String>,
    /// Entries before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// The actor or counterparty organization.
    #[arg(long)]
    pub org: Option<String>,
    #[arg(long)]
    pub person: Option<String>,
    /// An action code (submitted, delivered, consent_registered, audit_queried, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// allow or deny.
    #[arg(long)]
    pub decision: Option<String>,
    /// A subject pseudonym.
    #[arg(long)]
    pub subject: Option<String>,
    /// With --subject: the organization that minted it (only its entries about that subject).
    #[arg(long)]
    pub subject_controller: Option<String>,
    #[arg(long)]
    pub message_id: Option<String>,
    #[arg(long)]
    pub consent_id: Option<String>,
}

fn micros(s: &str) -> Result<i64, CliError> {
    if let Ok(m) = s.parse::<i64>() {
        return Ok(m);
    }
    let shown = haven_trust::untrusted::shown(s);
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        CliError::Usage(format!(
            "`{shown}` is neither RFC 3339 (2025-06-01T00:00:00Z) nor microseconds since the epoch"
        ))
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).map_err(|_| CliError::Usage(format!("`{shown}` is out of range")))
}

fn when(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

impl FilterArgs {
    fn to_proto(&self) -> Result<AuditFilter, CliError> {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        Ok(AuditFilter {
            from_micros: self.from.as_deref().map(micros).transpose()?.unwrap_or(0),
            until_micros: self.until.as_deref().map(micros).transpose()?.unwrap_or(0),
            org: s(&self.org),
            person: s(&self.person),
            action: s(&self.action),
            decision: s(&self.decision),
            subject: s(&self.subject),
            subject_controller: s(&self.subject_controller),
            message_id: s(&self.message_id),
            consent_id: s(&self.consent_id),
        })
    }
}

/// Writes rows as a table under a header, columns padded to their widest cell.
fn table(out: Out<'_>, header: &[&str], rows: Vec<Vec<String>>) -> std::io::Result<()> {
    let all: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| (*h).to_owned()).collect()).chain(rows).collect();
    write_rows(out, &all)
}

/// Runs an `audit` subcommand, writing what it prints to `out` and notes to `err`.
pub async fn run(cmd: &AuditCommand, out: Out<'_>, err: Out<'_>) -> Result<(), CliError> {
    match cmd {
        AuditCommand::Query { client, filter, page_size, cursor, all } => {
            query(client, filter, *page_size, *cursor, *all, out).await
        }
        AuditCommand::Export { client, filter, out: file } => export(client, filter, file.as_ref(), out, err).await,
        AuditCommand::Report { client, subject, controller } => report(client, subject, controller, out).await,
        AuditCommand::Checkpoint { client, refresh, consistency_from } => {
            checkpoint(client, *refresh, *consistency_from, out).await
        }
        AuditCommand::Witness { client, action: None } => witness(client, out).await,
        AuditCommand::Witness { action: Some(WitnessAction::Ack { client, note }), .. } => {
            acknowledge(client, note, out).await
        }
        AuditCommand::Verify { export, key, checkpoints } => {
            let summary = haven_trust::export::verify_files(export, key, checkpoints)
                .map_err(|e| CliError::Verification(e.to_string()))?;
            writeln!(out, "{}", summary.describe())?;
            Ok(())
        }
    }
}

/// A signed-in session and an Audit client over its connection.
async fn audit_client(client: &ClientArgs) -> Result<(Session, AuditClient<tonic::transport::Channel>), CliError> {
    let session = Session::open(client).await?;
    let audit = AuditClient::new(session.channel());
    Ok((session, audit))
}

async fn query(
    client: &ClientArgs,
    filter: &FilterArgs,
    page_size: u32,
    mut cursor: u64,
    all: bool,
    out: Out<'_>,
) -> Result<(), CliError> {
    let filter = filter.to_proto()?;
    let (s, mut audit) = audit_client(client).await?;
    let mut entries = Vec::new();
    let next = loop {
        let resp = audit
            .query(s.signed(AuditQueryRequest { filter: Some(filter.clone()), page_size, cursor }))
            .await?
            .into_inner();
        entries.extend(resp.entries);
        if !all || resp.next_cursor == 0 {
            break resp.next_cursor;
        }
        cursor = resp.next_cursor;
    };
    if client.json {
        let list: Vec<AuditEntry> = entries.iter().map(AuditEntry::from).collect();
        writeln!(out, "{}", serde_json::json!({ "entries": list, "next_cursor": next }))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                when(e.time_micros),
                e.action.clone(),
                format!("{}/{} ({})", or_dash(&e.actor_org), or_dash(&e.actor_person), or_dash(&e.actor_role)),
                or_dash(&e.counterparty),
                or_dash(&e.subject),
                or_dash(&e.object_id),
                or_dash(&e.decision),
                or_dash(&e.outcome),
            ]
        })
        .collect();
    let header = ["SEQ", "TIME", "ACTION", "ACTOR", "COUNTERPARTY", "SUBJECT", "OBJECT", "DECISION", "OUTCOME"];
    table(out, &header, rows)?;
    if next != 0 {
        writeln!(out, "more: --cursor {next}")?;
    }
    Ok(())
}

async fn export(
    client: &ClientArgs,
    filter: &FilterArgs,
    file: Option<&PathBuf>,
    out: Out<'_>,
    err: Out<'_>,
) -> Result<(), CliError> {
    let filter = filter.to_proto()?;
    let (s, mut audit) = audit_client(client).await?;
    let mut stream = audit.export(s.signed(AuditExportRequest { filter: Some(filter) })).await?.into_inner();
    // The file is created once the node has accepted the export, so a refusal leaves no empty file.
    let mut to_file = match file {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| CliError::File(format!("cannot create {}: {e}", path.display())))?,
        )),
        None => None,
    };
    let sink: &mut (dyn Write + Send) = match &mut to_file {
        Some(f) => f,
        None => out,
    };
    let mut bytes = 0usize;
    while let Some(chunk) = stream.message().await? {
        bytes += chunk.data.len();
        sink.write_all(&chunk.data)?;
    }
    sink.flush()?;
    if let Some(path) = file {
        writeln!(
            err,
            "wrote {bytes} bytes to {}; check it with `haven-node audit verify {} --key CERTS_DIR/gateway/signing.crt`",
            path.display(),
            path.display()
        )?;
    }
    Ok(())
}

async fn report(client: &ClientArgs, subject: &str, controller: &Option<String>, out: Out<'_>) -> Result<(), CliError> {
    let (s, mut audit) = audit_client(client).await?;
    let request = SubjectAccessRequest {
        subject_pseudonym: subject.to_owned(),
        controller: controller.clone().unwrap_or_default(),
    };
    let resp = audit.subject_access_report(s.signed(request)).await?.into_inner();
    if client.json {
        let list: Vec<serde_json::Value> = resp
            .disclosures
            .iter()
            .map(|d| {
                serde_json::json!({
                    "seq": d.seq,
                    "time_micros": d.time_micros,
                    "action": d.action,
                    "recipient": d.recipient,
                    "purpose": d.purpose,
                    "released_fields": d.released_fields,
                    "consent_id": d.consent_id,
                    "message_id": d.message_id,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({ "subject_pseudonym": resp.subject_pseudonym, "controller": resp.controller, "disclosures": list })
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "disclosures by {} about its subject {}: {}",
        resp.controller,
        resp.subject_pseudonym,
        resp.disclosures.len()
    )?;
    let rows: Vec<Vec<String>> = resp
        .disclosures
        .iter()
        .map(|d| {
            vec![
                when(d.time_micros),
                d.action.clone(),
                or_dash(&d.recipient),
                or_dash(&d.purpose),
                or_dash(&d.released_fields.join(",")),
                or_dash(&d.consent_id),
                or_dash(&d.message_id),
            ]
        })
        .collect();
    table(out, &["DATE", "WHAT", "RECIPIENT", "PURPOSE", "FIELDS RELEASED", "CONSENT", "MESSAGE"], rows)?;
    Ok(())
}

async fn checkpoint(
    client: &ClientArgs,
    refresh: bool,
    consistency_from: Option<u64>,
    out: Out<'_>,
) -> Result<(), CliError> {
    let (s, mut audit) = audit_client(client).await?;
    let cp: SignedCheckpoint = audit.get_checkpoint(s.signed(GetCheckpointRequest { refresh })).await?.into_inner();
    let proof = match consistency_from {
        Some(first) if first < cp.tree_size && first > 0 => Some(
            audit
                .get_consistency_proof(
                    s.signed(ConsistencyProofRequest { first_size: first, second_size: cp.tree_size }),
                )
                .await?
                .into_inner(),
        ),
        _ => None,
    };
    let checkpoint = haven_trust::audit::Checkpoint::from(&cp);
    if client.json {
        write!(out, "{}", Line::Checkpoint(&checkpoint).to_json_line())?;
        if let Some(p) = &proof {
            let line = ConsistencyLine {
                first_size: p.first_size,
                second_size: p.second_size,
                hashes: p.hashes.iter().map(hex::encode).collect(),
            };
            write!(out, "{}", Line::Consistency(&line).to_json_line())?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "tree size:  {}\nroot hash:  {}\nsigned at:  {}\nkey id:     {}",
        checkpoint.tree_size,
        checkpoint.root_hash,
        when(checkpoint.timestamp_micros),
        checkpoint.key_id
    )?;
    if let Some(p) = proof {
        writeln!(out, "consistency proof from size {} ({} hashes):", p.first_size, p.hashes.len())?;
        for h in p.hashes {
            writeln!(out, "  {}", hex::encode(h))?;
        }
    }
    Ok(())
}

async fn witness(client: &ClientArgs, out: Out<'_>) -> Result<(), CliError> {
    let s = Session::open(client).await?;
    let r = s.client().witness_status(s.signed(WitnessStatusRequest {})).await?.into_inner();
    if client.json {
        let latest = r.latest.as_ref().map(haven_trust::audit::Checkpoint::from);
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "state": r.state,
                "detail": r.detail,
                "checked_at_micros": r.checked_at_micros,
                "latest": latest,
            })
        )?;
    } else {
        write_witness(&r, out)?;
    }
    in_alarm(&r)
}

async fn acknowledge(client: &ClientArgs, note: &str, out: Out<'_>) -> Result<(), CliError> {
    let s = Session::open(client).await?;
    let req = AcknowledgeWitnessAlarmRequest { note: note.to_owned() };
    let resp = s.client().acknowledge_witness_alarm(s.signed(req)).await?.into_inner();
    let r = resp.status.unwrap_or_default();
    if client.json {
        let latest = r.latest.as_ref().map(haven_trust::audit::Checkpoint::from);
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "acknowledged": resp.acknowledged,
                "state": r.state,
                "detail": r.detail,
                "checked_at_micros": r.checked_at_micros,
                "latest": latest,
            })
        )?;
    } else {
        let plural = if resp.acknowledged == 1 { "" } else { "s" };
        writeln!(out, "acknowledged {} alarm{plural}; checked again:", resp.acknowledged)?;
        write_witness(&r, out)?;
    }
    in_alarm(&r)
}

fn write_witness(r: &WitnessStatusResponse, out: Out<'_>) -> Result<(), CliError> {
    writeln!(
        out,
        "state:      {}\ndetail:     {}\nchecked at: {}",
        r.state,
        or_dash(&r.detail),
        when(r.checked_at_micros)
    )?;
    if let Some(cp) = r.latest.as_ref().map(haven_trust::audit::Checkpoint::from) {
        writeln!(
            out,
            "witnessed:  size {}, root {}, signed at {}",
            cp.tree_size,
            cp.root_hash,
            when(cp.timestamp_micros)
        )?;
    }
    Ok(())
}

/// A report in alarm is a failure of the command (exit 6), after the report itself is printed.
fn in_alarm(r: &WitnessStatusResponse) -> Result<(), CliError> {
    match r.state.as_str() {
        "fork" | "bad_signature" | "unpinned" => {
            Err(CliError::WitnessAlarm { state: r.state.clone(), detail: r.detail.clone() })
        }
        _ => Ok(()),
    }
}
