//! `haven-node keys`: the organization's sealing keys (role admin). `init` makes the first key pair,
//! `rotate` a new one beside the others, `withdraw KEY_ID` withdraws one, and `list` shows them. The
//! private half of each key stays at the node, in a 0600 file beside the signing key; the statement
//! publishing its public half goes to the gateway's key log (see `docs/key-log.md`).

use haven_proto::v1::{
    KeyLogRequest, MakeSealingKeyRequest, SealingKeyInfo, SealingKeyResponse, SealingKeysRequest,
    WithdrawSealingKeyRequest,
};
use haven_trust::audit::Checkpoint;
use serde::Serialize;

use super::client::{ClientArgs, Session};
use super::error::CliError;
use super::output::{self, Out, Table};

/// The `keys` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Make the organization's first sealing key pair and publish it (refused if one exists).
    Init(ClientArgs),
    /// Make a new sealing key pair and publish it; the older keys stay until withdrawn.
    Rotate(ClientArgs),
    /// Withdraw a key: senders stop sealing to it once the withdrawal is in the key log.
    Withdraw {
        /// The key's id, as `keys list` shows it (x25519:...).
        #[arg(value_name = "KEY_ID")]
        kid: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The organization's sealing keys, newest first.
    List(ClientArgs),
    /// The whole key log as this node verified it, as JSON lines (`{"entry": ...}`, then the
    /// `{"checkpoint": ...}` that covers them): what `haven-gateway keylog verify` checks offline.
    Log(ClientArgs),
}

/// One key, as printed.
#[derive(Debug, Serialize)]
pub struct KeyRow {
    pub kid: String,
    pub state: String,
    pub not_before: String,
    pub not_after: String,
    pub created_at: String,
    pub created_by: String,
    /// Its position in the key log, once published.
    pub published_seq: Option<i64>,
    pub withdrawn_seq: Option<i64>,
    /// Why the statement is not in the key log yet (the node registers it later).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pending_reason: String,
}

fn row(k: &SealingKeyInfo, pending_reason: String) -> KeyRow {
    let seq = |s: i64| (s >= 0).then_some(s);
    KeyRow {
        kid: k.kid.clone(),
        state: k.state.clone(),
        not_before: output::rfc3339(k.not_before.saturating_mul(1_000_000)),
        not_after: output::rfc3339(k.not_after.saturating_mul(1_000_000)),
        created_at: output::rfc3339(k.created_at_micros),
        created_by: k.created_by.clone(),
        published_seq: seq(k.published_seq),
        withdrawn_seq: seq(k.withdrawn_seq),
        pending_reason,
    }
}

/// Runs a `keys` subcommand.
pub async fn run(cmd: &KeysCommand, out: Out<'_>) -> Result<(), CliError> {
    match cmd {
        KeysCommand::Init(client) => make(client, true, "made", out).await,
        KeysCommand::Rotate(client) => make(client, false, "made", out).await,
        KeysCommand::Withdraw { kid, client } => {
            let s = Session::open(client).await?;
            let resp = s
                .client()
                .withdraw_sealing_key(s.signed(WithdrawSealingKeyRequest { kid: kid.clone() }))
                .await?
                .into_inner();
            print_one(client, resp, "withdrew", out)
        }
        KeysCommand::Log(client) => {
            let s = Session::open(client).await?;
            let mut entries = Vec::new();
            let mut checkpoint = None;
            loop {
                let request = s.signed(KeyLogRequest { from_seq: entries.len() as u64, limit: 0 });
                let page = s.client().key_log(request).await?.into_inner();
                checkpoint = checkpoint.or(page.checkpoint);
                if page.entries.is_empty() {
                    break;
                }
                entries.extend(page.entries.into_iter().map(crate::keylog::export_entry));
            }
            write!(out, "{}", haven_trust::keylog::export_text(entries, checkpoint.as_ref().map(Checkpoint::from)))?;
            Ok(())
        }
        KeysCommand::List(client) => {
            let s = Session::open(client).await?;
            let keys = s.client().sealing_keys(s.signed(SealingKeysRequest {})).await?.into_inner().keys;
            let rows: Vec<KeyRow> = keys.iter().map(|k| row(k, String::new())).collect();
            if client.json {
                for r in &rows {
                    output::json_line(out, r)?;
                }
                return Ok(());
            }
            let mut table = Table::new(&["KEY", "STATE", "FROM", "UNTIL", "LOG", "MADE BY"]);
            for r in &rows {
                let log = match (r.published_seq, r.withdrawn_seq) {
                    (_, Some(w)) => format!("withdrawn at {w}"),
                    (Some(p), None) => format!("published at {p}"),
                    (None, None) => "-".into(),
                };
                table.row(vec![
                    r.kid.clone(),
                    r.state.clone(),
                    r.not_before.clone(),
                    r.not_after.clone(),
                    log,
                    r.created_by.clone(),
                ]);
            }
            Ok(table.write(out, "no sealing keys yet: `haven-node keys init` makes the first")?)
        }
    }
}

async fn make(client: &ClientArgs, only_if_none: bool, done: &str, out: Out<'_>) -> Result<(), CliError> {
    let s = Session::open(client).await?;
    let resp = s.client().make_sealing_key(s.signed(MakeSealingKeyRequest { only_if_none })).await?.into_inner();
    print_one(client, resp, done, out)
}

fn print_one(client: &ClientArgs, resp: SealingKeyResponse, done: &str, out: Out<'_>) -> Result<(), CliError> {
    let key = resp.key.unwrap_or_default();
    let r = row(&key, resp.pending_reason);
    if client.json {
        return Ok(output::json_line(out, &r)?);
    }
    writeln!(out, "{done} sealing key {} ({})", r.kid, r.state)?;
    if !r.pending_reason.is_empty() {
        writeln!(
            out,
            "the gateway has not taken its statement yet ({}); the node registers it on its next key-log round",
            r.pending_reason
        )?;
    }
    Ok(())
}
