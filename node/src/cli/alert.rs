//! `haven-node alert send|list|ack`: de-identified safety alerts, fanned out to every recipient the
//! rules permit, and a liaison's acknowledgement (a person's act, separate from the transport's).

use haven_proto::v1::{Envelope, MessageStatus};
use haven_trust::ids::OrgId;

use super::client::ClientArgs;
use super::error::CliError;
use super::messages::{self, AnswerArgs, Kind, ListArgs, MessageArgs};
use super::output::Out;

/// The `alert` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AlertCommand {
    /// Send a safety alert to named organizations or (--all) to every one a rule permits.
    Send(SendArgs),
    /// Alerts you sent, newest first, with who acknowledged and when (--received: sent to you).
    List(ListArgs),
    /// Acknowledge an alert you received.
    Ack(AnswerArgs),
}

/// `alert send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A recipient organization's id (repeat for several).
    #[arg(long = "to", value_name = "ORG", required_unless_present = "all", conflicts_with = "all")]
    pub to: Vec<OrgId>,
    /// Send to every organization a rule permits, for example every law-enforcement liaison.
    #[arg(long)]
    pub all: bool,
    /// The purpose from policies/purposes.toml.
    #[arg(long, default_value = "safety_alert")]
    pub purpose: String,
    #[command(flatten)]
    pub message: MessageArgs,
}

/// Runs an `alert` subcommand.
pub async fn run(cmd: &AlertCommand, out: Out<'_>) -> Result<(), CliError> {
    match cmd {
        AlertCommand::Send(a) => {
            let envelope = Envelope {
                kind: Kind::Alert.as_str().into(),
                recipients: a.to.iter().map(ToString::to_string).collect(),
                all_permitted_recipients: a.all,
                purpose: a.purpose.clone(),
                ..Default::default()
            };
            messages::send(&a.client, out, envelope, &a.message).await
        }
        AlertCommand::List(a) => messages::list(a, out, Kind::Alert).await,
        AlertCommand::Ack(a) => {
            let req = messages::answer(a, MessageStatus::Acknowledged, String::new());
            messages::update_status(&a.client, out, req, &format!("acknowledged alert {} from {}", a.id, a.sender))
                .await
        }
    }
}
