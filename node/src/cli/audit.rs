//! `haven-node audit query|export|report|checkpoint|witness|verify`: the audit API from the command line,
//! through the person's own node. Human tables by default, `--json` for scripts.
//!
//! `verify` runs offline: it needs only the export and the gateway's signing certificate (it is the same
//! code as `haven-gateway audit verify`). `checkpoint --json` writes a checkpoint file that `verify
//! --checkpoint` accepts, so checkpoints collected from several nodes can be checked against an export.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use haven_proto::v1::audit_client::AuditClient;
use haven_proto::v1::node_client::NodeClient;
use haven_proto::v1::{
    AuditExportRequest, AuditFilter, AuditQueryRequest, ConsistencyProofRequest, GetCheckpointRequest,
    SignedCheckpoint, SubjectAccessRequest, WitnessStatusRequest,
};
use haven_trust::audit::{AuditEntry, Encoding};
use haven_trust::export::{ConsistencyLine, Line};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::transport::Channel;

use crate::witness::from_proto;

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
    /// What this node's witness has seen of the audit log.
    Witness {
        #[command(flatten)]
        client: ClientArgs,
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

/// How to reach your node.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The node's API address.
    #[arg(long, env = "HAVEN_NODE", default_value = "http://127.0.0.1:7600")]
    pub node: String,
    /// Your node token.
    #[arg(long, env = "HAVEN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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

fn micros(s: &str) -> anyhow::Result<i64> {
    if let Ok(m) = s.parse::<i64>() {
        return Ok(m);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| anyhow!("`{s}` is neither RFC 3339 (2025-06-01T00:00:00Z) nor microseconds since the epoch"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).map_err(|_| anyhow!("`{s}` is out of range"))
}

fn when(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

impl FilterArgs {
    fn to_proto(&self) -> anyhow::Result<AuditFilter> {
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

impl ClientArgs {
    async fn channel(&self) -> anyhow::Result<Channel> {
        tonic::transport::Endpoint::from_shared(self.node.clone())
            .map_err(|_| anyhow!("`{}` is not a valid node address", self.node))?
            .connect()
            .await
            .map_err(|e| anyhow!("cannot reach the node at {}: {e}", self.node))
    }

    fn request<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().map_err(|_| anyhow!("the token is not a valid header value"))?,
        );
        Ok(req)
    }
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), s.message())
}

/// The serde form of a wire entry.
fn entry(e: &haven_proto::v1::AuditEntry) -> AuditEntry {
    AuditEntry {
        seq: e.seq,
        time_micros: e.time_micros,
        actor_org: e.actor_org.clone(),
        actor_person: e.actor_person.clone(),
        actor_role: e.actor_role.clone(),
        action: e.action.clone(),
        object_id: e.object_id.clone(),
        counterparty: e.counterparty.clone(),
        subject: e.subject.clone(),
        purpose: e.purpose.clone(),
        consent_id: e.consent_id.clone(),
        rule_ids: e.rule_ids.clone(),
        bundle_version: e.bundle_version.clone(),
        decision: e.decision.clone(),
        reason: e.reason.clone(),
        released_fields: e.released_fields.clone(),
        withheld_fields: e.withheld_fields.clone(),
        outcome: e.outcome.clone(),
        correlation_id: e.correlation_id.clone(),
        source_node: e.source_node.clone(),
        // The wire form does not show it.
        counterparty_subject: String::new(),
        // The first byte of the canonical encoding.
        encoding_version: e.canonical.first().and_then(|v| Encoding::of_version(*v)).unwrap_or_default(),
    }
}

/// Prints rows as a table with a header, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_owned() }
}

/// Runs an `audit` subcommand.
pub async fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Query { client, filter, page_size, cursor, all } => {
            query(&client, &filter, page_size, cursor, all).await
        }
        AuditCommand::Export { client, filter, out } => export(&client, &filter, out).await,
        AuditCommand::Report { client, subject, controller } => report(&client, subject, controller).await,
        AuditCommand::Checkpoint { client, refresh, consistency_from } => {
            checkpoint(&client, refresh, consistency_from).await
        }
        AuditCommand::Witness { client } => witness(&client).await,
        AuditCommand::Verify { export, key, checkpoints } => {
            let summary = haven_trust::export::verify_files(&export, &key, &checkpoints)
                .map_err(|e| anyhow!("verification FAILED: {e}"))?;
            println!("{}", summary.describe());
            Ok(())
        }
    }
}

async fn query(
    client: &ClientArgs,
    filter: &FilterArgs,
    page_size: u32,
    mut cursor: u64,
    all: bool,
) -> anyhow::Result<()> {
    let mut audit = AuditClient::new(client.channel().await?);
    let filter = filter.to_proto()?;
    let mut entries = Vec::new();
    let next = loop {
        let resp = audit
            .query(client.request(AuditQueryRequest { filter: Some(filter.clone()), page_size, cursor })?)
            .await
            .map_err(status)?
            .into_inner();
        entries.extend(resp.entries);
        if !all || resp.next_cursor == 0 {
            break resp.next_cursor;
        }
        cursor = resp.next_cursor;
    };
    if client.json {
        let list: Vec<AuditEntry> = entries.iter().map(entry).collect();
        println!("{}", serde_json::json!({ "entries": list, "next_cursor": next }));
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
    table(&["SEQ", "TIME", "ACTION", "ACTOR", "COUNTERPARTY", "SUBJECT", "OBJECT", "DECISION", "OUTCOME"], &rows);
    if next != 0 {
        println!("more: --cursor {next}");
    }
    Ok(())
}

async fn export(client: &ClientArgs, filter: &FilterArgs, out: Option<PathBuf>) -> anyhow::Result<()> {
    let mut audit = AuditClient::new(client.channel().await?);
    let mut stream = audit
        .export(client.request(AuditExportRequest { filter: Some(filter.to_proto()?) })?)
        .await
        .map_err(status)?
        .into_inner();
    let mut sink: Box<dyn Write> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut bytes = 0usize;
    while let Some(chunk) = stream.message().await.map_err(status)? {
        bytes += chunk.data.len();
        sink.write_all(&chunk.data).context("cannot write the export")?;
    }
    sink.flush().context("cannot write the export")?;
    if let Some(path) = out {
        eprintln!(
            "wrote {bytes} bytes to {}; check it with `haven-node audit verify {} --key CERTS_DIR/gateway/signing.crt`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

async fn report(client: &ClientArgs, subject: String, controller: Option<String>) -> anyhow::Result<()> {
    let mut audit = AuditClient::new(client.channel().await?);
    let request = SubjectAccessRequest { subject_pseudonym: subject, controller: controller.unwrap_or_default() };
    let resp = audit.subject_access_report(client.request(request)?).await.map_err(status)?.into_inner();
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
        println!(
            "{}",
            serde_json::json!({ "subject_pseudonym": resp.subject_pseudonym, "controller": resp.controller, "disclosures": list })
        );
        return Ok(());
    }
    println!(
        "disclosures by {} about its subject {}: {}",
        resp.controller,
        resp.subject_pseudonym,
        resp.disclosures.len()
    );
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
    table(&["DATE", "WHAT", "RECIPIENT", "PURPOSE", "FIELDS RELEASED", "CONSENT", "MESSAGE"], &rows);
    Ok(())
}

async fn checkpoint(client: &ClientArgs, refresh: bool, consistency_from: Option<u64>) -> anyhow::Result<()> {
    let mut audit = AuditClient::new(client.channel().await?);
    let cp: SignedCheckpoint =
        audit.get_checkpoint(client.request(GetCheckpointRequest { refresh })?).await.map_err(status)?.into_inner();
    let proof = match consistency_from {
        Some(first) if first < cp.tree_size && first > 0 => Some(
            audit
                .get_consistency_proof(
                    client.request(ConsistencyProofRequest { first_size: first, second_size: cp.tree_size })?,
                )
                .await
                .map_err(status)?
                .into_inner(),
        ),
        _ => None,
    };
    let checkpoint = from_proto(&cp);
    if client.json {
        print!("{}", Line::Checkpoint(&checkpoint).to_json_line());
        if let Some(p) = &proof {
            let line = ConsistencyLine {
                first_size: p.first_size,
                second_size: p.second_size,
                hashes: p.hashes.iter().map(hex::encode).collect(),
            };
            print!("{}", Line::Consistency(&line).to_json_line());
        }
        return Ok(());
    }
    println!(
        "tree size:  {}\nroot hash:  {}\nsigned at:  {}\nkey id:     {}",
        checkpoint.tree_size,
        checkpoint.root_hash,
        when(checkpoint.timestamp_micros),
        checkpoint.key_id
    );
    if let Some(p) = proof {
        println!("consistency proof from size {} ({} hashes):", p.first_size, p.hashes.len());
        for h in p.hashes {
            println!("  {}", hex::encode(h));
        }
    }
    Ok(())
}

async fn witness(client: &ClientArgs) -> anyhow::Result<()> {
    let mut node = NodeClient::new(client.channel().await?);
    let r = node.witness_status(client.request(WitnessStatusRequest {})?).await.map_err(status)?.into_inner();
    let latest = r.latest.as_ref().map(from_proto);
    if client.json {
        println!(
            "{}",
            serde_json::json!({
                "state": r.state,
                "detail": r.detail,
                "checked_at_micros": r.checked_at_micros,
                "latest": latest,
            })
        );
        return Ok(());
    }
    println!("state:      {}\ndetail:     {}\nchecked at: {}", r.state, or_dash(&r.detail), when(r.checked_at_micros));
    if let Some(cp) = latest {
        println!("witnessed:  size {}, root {}, signed at {}", cp.tree_size, cp.root_hash, when(cp.timestamp_micros));
    }
    Ok(())
}
