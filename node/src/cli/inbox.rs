//! `haven-node inbox [--kind referral|alert] [--watch]`: what arrived at your organization (referrals,
//! alerts, the other party's status changes, delivery notices and consent withdrawals), newest first;
//! `--watch` prints each new arrival as the node stores it.

use std::collections::BTreeMap;

use haven_proto::v1::{InboxItem, MessageStatus, item, sender_notice};
use serde::Serialize;

use super::client::{ClientArgs, Session};
use super::error::CliError;
use super::fields;
use super::kind::{Kind, inbox_request, status_name};
use super::output::{self, Out, Table};

/// `haven-node inbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct InboxArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only referrals or only alerts (status changes and notices are left out).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Keep running and print each new arrival as it comes (Ctrl-C to stop).
    #[arg(long)]
    pub watch: bool,
    /// At most this many items, newest first.
    #[arg(long, default_value_t = 50, conflicts_with = "watch")]
    pub limit: u32,
}

/// One received item, the same shape whatever its kind, so scripts can read every line alike.
#[derive(Debug, Serialize)]
pub struct InboxRow {
    pub item_id: String,
    pub received_at: String,
    /// delivery, status, sender_notice or consent_withdrawn.
    pub item_kind: String,
    /// The message the item is about (empty for a consent withdrawal, which names several).
    pub message_id: String,
    /// referral or alert, for a delivery.
    pub kind: String,
    /// The other organization: the sender of a delivery, the party that changed a status, or the
    /// recipient a delivery notice is about.
    pub org: String,
    /// The person there who acted.
    pub person: String,
    pub purpose: String,
    /// Your organization's pseudonym for the subject (empty for a de-identified alert).
    pub subject: String,
    /// A delivery's status here (delivered, accepted, ...), a status change's new status, or what a
    /// notice reports (delivered, cancelled, expired, withdrawn).
    pub status: String,
    /// A decline reason or close outcome; a notice's or a withdrawal's reason.
    pub code: String,
    /// True once the survivor's consent for a delivery was withdrawn: its field values are hidden.
    pub withdrawn: bool,
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Fields of the original message your organization did not receive.
    pub withheld_fields: Vec<String>,
    /// For a consent withdrawal: the messages it covers.
    pub withdrawn_message_ids: Vec<String>,
}

/// A received item as a row.
pub fn row(i: &InboxItem) -> InboxRow {
    let mut r = InboxRow {
        item_id: i.item_id.clone(),
        received_at: output::rfc3339(i.received_at_micros),
        item_kind: i.item_kind.clone(),
        message_id: String::new(),
        kind: String::new(),
        org: String::new(),
        person: String::new(),
        purpose: String::new(),
        subject: String::new(),
        status: String::new(),
        code: String::new(),
        withdrawn: i.withdrawn,
        fields: BTreeMap::new(),
        withheld_fields: Vec::new(),
        withdrawn_message_ids: Vec::new(),
    };
    match i.item.as_ref().and_then(|it| it.body.as_ref()) {
        Some(item::Body::Delivery(d)) => {
            r.message_id = d.message_id.clone();
            r.kind = d.kind.clone();
            r.org = d.sender.clone();
            r.person = d.sender_person.clone();
            r.purpose = d.purpose.clone();
            r.subject = d.subject_pseudonym.clone();
            r.status = status_name(i.status, "");
            r.fields = fields::all_to_json(&d.fields);
            r.withheld_fields = d.withheld_fields.clone();
        }
        Some(item::Body::Status(s)) => {
            r.message_id = s.message_id.clone();
            r.org = s.from_org.clone();
            r.person = s.from_person.clone();
            r.status = status_name(s.status, "");
            r.code = s.code.clone();
        }
        Some(item::Body::SenderNotice(n)) => {
            r.message_id = n.message_id.clone();
            r.org = n.recipient.clone();
            r.status = match sender_notice::Kind::try_from(n.kind) {
                Ok(sender_notice::Kind::Delivered) => "delivered",
                Ok(sender_notice::Kind::Cancelled) => "cancelled",
                Ok(sender_notice::Kind::Expired) => "expired",
                Ok(sender_notice::Kind::Rejected) => "rejected",
                _ => "unknown",
            }
            .into();
            r.code = n.reason.clone();
        }
        Some(item::Body::ConsentWithdrawn(w)) => {
            r.subject = w.subject_pseudonym.clone();
            r.status = MessageStatus::Withdrawn.as_str_name().to_ascii_lowercase();
            r.code = w.reason.clone();
            r.withdrawn_message_ids = w.message_ids.clone();
        }
        None => {}
    }
    r
}

const HEADER: [&str; 7] = ["RECEIVED", "ITEM", "MESSAGE", "FROM", "PURPOSE", "STATUS", "DETAIL"];

/// The table cells of one item.
fn cells(r: &InboxRow, received_micros: i64) -> Vec<String> {
    let (item, detail) = match r.item_kind.as_str() {
        "delivery" => {
            let detail = if r.withdrawn {
                "consent withdrawn: field values hidden".to_owned()
            } else if r.withheld_fields.is_empty() {
                format!("{} fields", r.fields.len())
            } else {
                format!("{} fields; withheld: {}", r.fields.len(), r.withheld_fields.join(", "))
            };
            (output::or_dash(&r.kind), detail)
        }
        "status" => ("status".to_owned(), output::or_dash(&r.code)),
        "sender_notice" => ("notice".to_owned(), output::or_dash(&r.code)),
        "consent_withdrawn" => (
            "withdrawal".to_owned(),
            format!("{}; covers: {}", output::or_dash(&r.code), output::list(&r.withdrawn_message_ids)),
        ),
        other => (other.to_owned(), String::new()),
    };
    let from = match (r.org.is_empty(), r.person.is_empty()) {
        (true, _) => "-".to_owned(),
        (false, true) => r.org.clone(),
        (false, false) => format!("{} ({})", r.org, r.person),
    };
    vec![
        output::when(received_micros),
        item,
        output::or_dash(&r.message_id),
        from,
        output::or_dash(&r.purpose),
        output::or_dash(&r.status),
        detail,
    ]
}

/// Lists received items.
pub async fn list(client: &ClientArgs, out: Out<'_>, kind: Option<Kind>, limit: u32) -> Result<(), CliError> {
    let s = Session::open(client).await?;
    let items = s.client().inbox(s.signed(inbox_request(kind, limit))).await?.into_inner().items;
    if client.json {
        for i in &items {
            output::json_line(out, &row(i))?;
        }
        return Ok(());
    }
    let mut table = Table::new(&HEADER);
    for i in &items {
        table.row(cells(&row(i), i.received_at_micros));
    }
    table.write(out, "nothing received")?;
    Ok(())
}

/// Prints each new arrival until the node ends the watch. `err` gets one line once the watch is open,
/// so a person (or a test) knows that what arrives from then on will be printed.
pub async fn watch(client: &ClientArgs, out: Out<'_>, err: Out<'_>, kind: Option<Kind>) -> Result<(), CliError> {
    let s = Session::open(client).await?;
    let mut stream = s.client().watch_inbox(s.signed(inbox_request(kind, 0))).await?.into_inner();
    writeln!(err, "watching {} for new arrivals (Ctrl-C to stop)", client.node)?;
    err.flush()?;
    if !client.json {
        output::write_rows(out, &[HEADER.iter().map(|h| (*h).to_owned()).collect()])?;
        out.flush()?;
    }
    while let Some(i) = stream.message().await? {
        if client.json {
            output::json_line(out, &row(&i))?;
        } else {
            writeln!(out, "{}", cells(&row(&i), i.received_at_micros).join("  "))?;
            out.flush()?;
        }
    }
    Err(CliError::WatchEnded)
}

/// `inbox` as the command line asked.
pub async fn run(args: &InboxArgs, out: Out<'_>, err: Out<'_>) -> Result<(), CliError> {
    if args.watch {
        watch(&args.client, out, err, args.kind).await
    } else {
        list(&args.client, out, args.kind, args.limit).await
    }
}

/// One received message in full, for `referral show`.
pub fn write_detail(out: Out<'_>, r: &InboxRow) -> std::io::Result<()> {
    let from = if r.person.is_empty() { r.org.clone() } else { format!("{} ({})", r.org, r.person) };
    output::write_block(
        out,
        &[
            ("message", r.message_id.clone()),
            ("direction", "received".into()),
            ("kind", r.kind.clone()),
            ("from", from),
            ("purpose", r.purpose.clone()),
            ("subject", r.subject.clone()),
            ("status", r.status.clone()),
            ("received", r.received_at.clone()),
            ("withheld", r.withheld_fields.join(", ")),
        ],
    )?;
    if r.withdrawn {
        writeln!(out, "\nThe survivor's consent was withdrawn: the field values are hidden.")?;
        return Ok(());
    }
    writeln!(out)?;
    let mut table = Table::new(&["FIELD", "VALUE"]);
    for (name, value) in &r.fields {
        let shown = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        };
        table.row(vec![name.clone(), shown]);
    }
    table.write(out, "no fields")
}
