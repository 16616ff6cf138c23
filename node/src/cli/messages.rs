//! What referrals and alerts share on the command line: sending an envelope and reporting each
//! recipient's outcome, listing what was sent, showing one message, and changing a message's status
//! (accept, decline, close, acknowledge, withdraw).

use haven_proto::v1::{
    Envelope, GetMessageRequest, ListSentRequest, MessageStatus, RecipientOutcome, RecipientStatus, SendRequest,
    SendResponse, SentMessage, UpdateStatusRequest, recipient_outcome,
};
use haven_trust::ids::OrgId;
use serde::Serialize;
use uuid::Uuid;

use super::client::{ClientArgs, Session};
use super::error::CliError;
use super::fields::{self, FIELD_HELP, FieldArg};
use super::inbox::{self, InboxRow};
pub use super::kind::{Kind, inbox_request, status_name};
use super::output::{self, Out, Table};

/// What every send takes besides its recipients and purpose.
#[derive(Debug, Clone, clap::Args)]
pub struct MessageArgs {
    #[arg(long = "field", short = 'f', value_name = "NAME=VALUE", required = true, value_parser = fields::parse, help = FIELD_HELP)]
    pub fields: Vec<FieldArg>,
    /// The message's UUIDv7, to resend a message safely: the same id with the same content is sent
    /// once. The node makes one when it is left out.
    #[arg(long, value_name = "UUIDv7", value_parser = uuid_v7)]
    pub message_id: Option<Uuid>,
}

fn uuid_v7(s: &str) -> Result<Uuid, String> {
    let id = Uuid::parse_str(s).map_err(|e| format!("`{s}` is not a UUID: {e}"))?;
    if id.get_version_num() != 7 {
        return Err(format!("`{s}` is a version {} UUID; a message id is a UUIDv7", id.get_version_num()));
    }
    Ok(id)
}

/// `referral list` and `alert list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// List what other organizations sent you instead of what you sent.
    #[arg(long)]
    pub received: bool,
    /// At most this many messages, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// `referral show` (and the message an `alert` id names).
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The message id.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// A recipient's answer to a message it received: accept, decline, close, acknowledge.
#[derive(Debug, Clone, clap::Args)]
pub struct AnswerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The message id, as the inbox shows it.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The organization that sent it (message ids are unique per sender).
    #[arg(long, value_name = "ORG")]
    pub sender: OrgId,
    /// A UUID naming this change, so a retried command is applied once. The node makes one when it is
    /// left out.
    #[arg(long, value_name = "UUID")]
    pub update_id: Option<Uuid>,
}

/// One recipient's outcome of a send.
#[derive(Debug, Serialize)]
pub struct OutcomeRow {
    pub recipient: String,
    /// queued, denied or quota_exceeded.
    pub outcome: String,
    /// Why a recipient was denied: a stable code such as `consent_purpose_not_covered`.
    pub reason_code: String,
    /// What the reason is about: the denying rule, the label not covered, ...
    pub reason_detail: String,
    pub rule_ids: Vec<String>,
    pub released_fields: Vec<String>,
    /// Fields in the message that this recipient does not receive.
    pub withheld_fields: Vec<String>,
    pub delivery_id: String,
}

/// The reply to a send.
#[derive(Debug, Serialize)]
pub struct SendRow {
    pub message_id: String,
    /// submitted (the gateway answered) or pending (the gateway could not be reached, or answered that
    /// it cannot take the message now; the node retries).
    pub state: String,
    /// For a pending message, which of the two it was, with the gateway's address or its reason.
    pub pending_reason: String,
    pub bundle_version: String,
    pub outcomes: Vec<OutcomeRow>,
}

/// One recipient of a sent message, as the sender's node knows it.
#[derive(Debug, Serialize)]
pub struct RecipientRow {
    pub recipient: String,
    /// sent, delivered, accepted, declined, closed, withdrawn, revoked, expired, acknowledged or denied.
    pub status: String,
    /// The decline reason or close outcome the recipient gave.
    pub code: String,
    /// Why it was denied, cancelled or expired.
    pub reason: String,
    /// Who at the recipient made the last change (for alerts: who acknowledged).
    pub by_person: String,
    pub updated_at: String,
}

/// A message this node sent.
#[derive(Debug, Serialize)]
pub struct SentRow {
    pub message_id: String,
    pub kind: String,
    pub purpose: String,
    /// pending, submitted or failed.
    pub state: String,
    pub created_at: String,
    /// Why the gateway refused it as a whole, for a failed send; why it is still waiting, for a
    /// pending one.
    pub error: String,
    pub recipients: Vec<RecipientRow>,
}

/// One message, sent or received.
#[derive(Debug, Serialize)]
#[serde(tag = "direction", rename_all = "lowercase")]
pub enum MessageRow {
    Sent(SentRow),
    Received(InboxRow),
}

/// One step of a message's life (see `TimelineStep` in the wire protocol).
#[derive(Debug, Serialize)]
pub struct StepRow {
    pub at: String,
    pub step: String,
    /// The recipient of a sent message, or the sender of a received one.
    pub counterparty: String,
    pub code: String,
    /// The organization that took the step; empty when it was this one.
    pub by_org: String,
    pub by_person: String,
}

/// One message and its timeline.
#[derive(Debug, Serialize)]
pub struct ShownMessage {
    #[serde(flatten)]
    pub message: MessageRow,
    pub timeline: Vec<StepRow>,
}

/// A status change this person made.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    pub message_id: String,
    /// The other party: the sender for a recipient's answer, the recipient (or empty: all) for a withdrawal.
    pub counterparty: String,
    pub status: String,
    pub code: String,
    /// True when the same change had been recorded before (nothing changed this time).
    pub replayed: bool,
}

fn outcome_row(o: &RecipientOutcome) -> OutcomeRow {
    let d = o.decision.clone().unwrap_or_default();
    let outcome = match recipient_outcome::Outcome::try_from(o.outcome) {
        Ok(recipient_outcome::Outcome::Queued) => "queued",
        Ok(recipient_outcome::Outcome::Denied) => "denied",
        Ok(recipient_outcome::Outcome::QuotaExceeded) => "quota_exceeded",
        _ => "unknown",
    };
    OutcomeRow {
        recipient: o.recipient.clone(),
        outcome: outcome.into(),
        reason_code: d.reason_code,
        reason_detail: d.reason_detail,
        rule_ids: d.rule_ids,
        released_fields: d.released_fields,
        withheld_fields: d.withheld_fields,
        delivery_id: o.delivery_id.clone(),
    }
}

fn send_row(r: SendResponse) -> SendRow {
    SendRow {
        outcomes: r.outcomes.iter().map(outcome_row).collect(),
        message_id: r.message_id,
        state: r.state,
        pending_reason: r.pending_reason,
        bundle_version: r.bundle_version,
    }
}

fn recipient_row(r: &RecipientStatus) -> RecipientRow {
    RecipientRow {
        recipient: r.recipient.clone(),
        status: status_name(r.status, &r.reason),
        code: r.code.clone(),
        reason: r.reason.clone(),
        by_person: r.by_person.clone(),
        updated_at: output::rfc3339(r.updated_at_micros),
    }
}

/// A sent message as a row.
pub fn sent_row(m: &SentMessage) -> SentRow {
    SentRow {
        message_id: m.message_id.clone(),
        kind: m.kind.clone(),
        purpose: m.purpose.clone(),
        state: m.state.clone(),
        created_at: output::rfc3339(m.created_at_micros),
        error: m.error.clone(),
        recipients: m.recipients.iter().map(recipient_row).collect(),
    }
}

/// Sends an envelope and reports each recipient's outcome. Denied recipients are an answer, not an
/// error: the command succeeds and says why each was refused.
pub async fn send(
    client: &ClientArgs,
    out: Out<'_>,
    mut envelope: Envelope,
    message: &MessageArgs,
) -> Result<(), CliError> {
    envelope.fields = fields::collect(&message.fields)?;
    envelope.message_id = message.message_id.map(|u| u.to_string()).unwrap_or_default();
    let kind = envelope.kind.clone();
    let s = Session::open(client).await?;
    let resp = s.client().send(s.signed(SendRequest { envelope: Some(envelope) })).await?.into_inner();
    let row = send_row(resp);
    if client.json {
        return Ok(output::json_line(out, &row)?);
    }
    if row.state == "pending" {
        writeln!(
            out,
            "{kind} {id} is pending: {why}. The node keeps it in its outbox and retries with the same message \
             id; follow it with `haven-node {kind} show {id}`.",
            id = row.message_id,
            why =
                if row.pending_reason.is_empty() { "the gateway has not accepted it yet" } else { &row.pending_reason },
        )?;
        return Ok(());
    }
    writeln!(out, "{kind} {} submitted (policy {})", row.message_id, output::or_dash(&row.bundle_version))?;
    let mut table = Table::new(&["RECIPIENT", "OUTCOME", "WHY / WHAT"]);
    for o in &row.outcomes {
        let detail = match o.outcome.as_str() {
            "queued" if o.withheld_fields.is_empty() => "all fields released".to_owned(),
            "queued" => format!("withheld: {}", o.withheld_fields.join(", ")),
            _ if o.reason_detail.is_empty() => output::or_dash(&o.reason_code),
            _ => format!("{}: {}", o.reason_code, o.reason_detail),
        };
        table.row(vec![o.recipient.clone(), o.outcome.clone(), detail]);
    }
    table.write(out, "no recipient was named or permitted")?;
    let refused = row.outcomes.iter().filter(|o| o.outcome != "queued").count();
    if refused > 0 {
        writeln!(out, "{refused} of {} recipients refused: nothing was queued for them.", row.outcomes.len())?;
    }
    Ok(())
}

/// Lists sent messages of one kind, or (with `--received`) received ones.
pub async fn list(args: &ListArgs, out: Out<'_>, kind: Kind) -> Result<(), CliError> {
    if args.received {
        return inbox::list(&args.client, out, Some(kind), args.limit).await;
    }
    let s = Session::open(&args.client).await?;
    let req = ListSentRequest { kind: kind.as_str().into(), limit: args.limit };
    let messages = s.client().list_sent(s.signed(req)).await?.into_inner().messages;
    let rows: Vec<SentRow> = messages.iter().map(sent_row).collect();
    if args.client.json {
        for r in &rows {
            output::json_line(out, r)?;
        }
        return Ok(());
    }
    let mut table = Table::new(&["MESSAGE", "CREATED", "PURPOSE", "STATE", "RECIPIENT", "STATUS", "BY", "DETAIL"]);
    for (m, raw) in rows.iter().zip(&messages) {
        let created = output::when(raw.created_at_micros);
        if m.recipients.is_empty() {
            table.row(vec![
                m.message_id.clone(),
                created.clone(),
                m.purpose.clone(),
                m.state.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                match (m.state.as_str(), m.error.is_empty()) {
                    ("pending", true) => "waiting for the gateway; the node retries".into(),
                    ("pending", false) => format!("waiting ({}); the node retries", m.error),
                    _ => output::or_dash(&m.error),
                },
            ]);
        }
        for r in &m.recipients {
            table.row(vec![
                m.message_id.clone(),
                created.clone(),
                m.purpose.clone(),
                m.state.clone(),
                r.recipient.clone(),
                r.status.clone(),
                output::or_dash(&r.by_person),
                output::or_dash(if r.code.is_empty() { &r.reason } else { &r.code }),
            ]);
        }
    }
    table.write(out, &format!("no {}s sent yet", kind.as_str()))?;
    Ok(())
}

/// Shows one message, sent or received, with its status history.
pub async fn show(args: &ShowArgs, out: Out<'_>) -> Result<(), CliError> {
    let s = Session::open(&args.client).await?;
    let view = s.client().get_message(s.signed(GetMessageRequest { message_id: args.id.clone() })).await?.into_inner();
    let row = match (view.sent, view.received) {
        (Some(sent), _) => MessageRow::Sent(sent_row(&sent)),
        (None, Some(received)) => MessageRow::Received(inbox::row(&received)),
        (None, None) => return Err(CliError::Answer(format!("message {} came back empty", args.id))),
    };
    let timeline: Vec<StepRow> = view
        .timeline
        .iter()
        .map(|t| StepRow {
            at: output::rfc3339(t.at_micros),
            step: t.step.clone(),
            counterparty: t.counterparty.clone(),
            code: t.code.clone(),
            by_org: t.by_org.clone(),
            by_person: t.by_person.clone(),
        })
        .collect();
    if args.client.json {
        return Ok(output::json_line(out, &ShownMessage { message: row, timeline })?);
    }
    match &row {
        MessageRow::Sent(m) => {
            output::write_block(
                out,
                &[
                    ("message", m.message_id.clone()),
                    ("direction", "sent".into()),
                    ("kind", m.kind.clone()),
                    ("purpose", m.purpose.clone()),
                    ("state", m.state.clone()),
                    ("created", m.created_at.clone()),
                    (if m.state == "pending" { "waiting" } else { "refused" }, m.error.clone()),
                ],
            )?;
            if m.state == "pending" {
                writeln!(out, "the gateway has not accepted it yet; the node retries with the same message id")?;
            }
            let mut table = Table::new(&["RECIPIENT", "STATUS", "BY", "UPDATED", "CODE", "REASON"]);
            for r in &m.recipients {
                table.row(vec![
                    r.recipient.clone(),
                    r.status.clone(),
                    output::or_dash(&r.by_person),
                    output::or_dash(&r.updated_at),
                    output::or_dash(&r.code),
                    output::or_dash(&r.reason),
                ]);
            }
            writeln!(out)?;
            table.write(out, "no recipient outcomes yet")?;
        }
        MessageRow::Received(r) => inbox::write_detail(out, r)?,
    }
    let mut table = Table::new(&["WHEN", "STEP", "WITH", "BY", "CODE"]);
    for t in &timeline {
        let by = match (t.by_org.as_str(), t.by_person.as_str()) {
            ("", p) => p.to_owned(),
            (o, "") => o.to_owned(),
            (o, p) => format!("{p} ({o})"),
        };
        table.row(vec![
            t.at.clone(),
            t.step.clone(),
            output::or_dash(&t.counterparty),
            output::or_dash(&by),
            output::or_dash(&t.code),
        ]);
    }
    writeln!(out)?;
    table.write(out, "no timeline steps recorded")?;
    Ok(())
}

/// Changes a message's status and says what happened.
pub async fn update_status(
    client: &ClientArgs,
    out: Out<'_>,
    req: UpdateStatusRequest,
    done: &str,
) -> Result<(), CliError> {
    let s = Session::open(client).await?;
    let counterparty =
        if req.status == MessageStatus::Withdrawn as i32 { req.recipient.clone() } else { req.sender.clone() };
    let (message_id, code) = (req.message_id.clone(), req.code.clone());
    let resp = s.client().update_status(s.signed(req)).await?.into_inner();
    let row =
        StatusRow { message_id, counterparty, status: status_name(resp.status, ""), code, replayed: resp.replayed };
    if client.json {
        return Ok(output::json_line(out, &row)?);
    }
    let with_code = if row.code.is_empty() { String::new() } else { format!(" ({})", row.code) };
    writeln!(out, "{done}{with_code}: now {}", row.status)?;
    if row.replayed {
        writeln!(out, "(this change had already been recorded; nothing changed)")?;
    }
    Ok(())
}

/// The status update a recipient's answer asks for.
pub fn answer(args: &AnswerArgs, status: MessageStatus, code: String) -> UpdateStatusRequest {
    UpdateStatusRequest {
        message_id: args.id.clone(),
        recipient: String::new(),
        sender: args.sender.to_string(),
        status: status as i32,
        code,
        update_id: args.update_id.map(|u| u.to_string()).unwrap_or_default(),
    }
}
