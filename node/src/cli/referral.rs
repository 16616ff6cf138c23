//! `haven-node referral send|list|show|accept|decline|close|withdraw`: refer a survivor to another
//! organization under their consent, and follow the referral through its closed loop.

use haven_proto::v1::{Envelope, MessageStatus, UpdateStatusRequest};
use haven_trust::ids::OrgId;
use uuid::Uuid;

use super::client::ClientArgs;
use super::error::CliError;
use super::messages::{self, AnswerArgs, Kind, ListArgs, MessageArgs, ShowArgs};
use super::output::Out;

/// The `referral` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ReferralCommand {
    /// Refer a survivor to one or more organizations; prints each recipient's outcome.
    Send(SendArgs),
    /// Referrals you sent, newest first, with each recipient's status (--received: sent to you).
    List(ListArgs),
    /// One referral, sent or received: each recipient's status, or the fields you received.
    Show(ShowArgs),
    /// Accept a referral you received.
    Accept(AnswerArgs),
    /// Decline a referral you received, with a reason code.
    Decline {
        #[command(flatten)]
        answer: AnswerArgs,
        /// A reason code the network's schema lists, for example no_capacity or not_eligible.
        #[arg(long, value_name = "CODE")]
        reason: String,
    },
    /// Close a referral you accepted, with an outcome code.
    Close {
        #[command(flatten)]
        answer: AnswerArgs,
        /// An outcome code the network's schema lists, for example housed or service_provided.
        #[arg(long, value_name = "CODE")]
        outcome: String,
    },
    /// Withdraw a referral you sent, from one recipient or from all of them.
    Withdraw {
        #[command(flatten)]
        client: ClientArgs,
        /// The message id `referral send` printed.
        #[arg(value_name = "ID")]
        id: String,
        /// Withdraw only this recipient's copy (default: every recipient's).
        #[arg(long, value_name = "ORG")]
        to: Option<OrgId>,
        /// A UUID naming this change, so a retried command is applied once.
        #[arg(long, value_name = "UUID")]
        update_id: Option<Uuid>,
    },
}

/// `referral send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The receiving organization's id (repeat for several).
    #[arg(long = "to", value_name = "ORG", required = true)]
    pub to: Vec<OrgId>,
    /// Why: a purpose from policies/purposes.toml (housing, medical, legal_aid, counselling, ...).
    #[arg(long)]
    pub purpose: String,
    /// The survivor's pseudonym, as `consent record` printed it.
    #[arg(long, value_name = "PSEUDONYM")]
    pub subject: Option<String>,
    /// The consent this referral relies on.
    #[arg(long = "consent", value_name = "ID")]
    pub consent: Option<String>,
    #[command(flatten)]
    pub message: MessageArgs,
}

/// Runs a `referral` subcommand.
pub async fn run(cmd: &ReferralCommand, out: Out<'_>) -> Result<(), CliError> {
    match cmd {
        ReferralCommand::Send(a) => {
            let envelope = Envelope {
                kind: Kind::Referral.as_str().into(),
                recipients: a.to.iter().map(ToString::to_string).collect(),
                purpose: a.purpose.clone(),
                subject_pseudonym: a.subject.clone().unwrap_or_default(),
                consent_id: a.consent.clone().unwrap_or_default(),
                ..Default::default()
            };
            messages::send(&a.client, out, envelope, &a.message).await
        }
        ReferralCommand::List(a) => messages::list(a, out, Kind::Referral).await,
        ReferralCommand::Show(a) => messages::show(a, out).await,
        ReferralCommand::Accept(a) => {
            let req = messages::answer(a, MessageStatus::Accepted, String::new());
            messages::update_status(&a.client, out, req, &format!("accepted referral {} from {}", a.id, a.sender)).await
        }
        ReferralCommand::Decline { answer, reason } => {
            let req = messages::answer(answer, MessageStatus::Declined, reason.clone());
            let done = format!("declined referral {} from {}", answer.id, answer.sender);
            messages::update_status(&answer.client, out, req, &done).await
        }
        ReferralCommand::Close { answer, outcome } => {
            let req = messages::answer(answer, MessageStatus::Closed, outcome.clone());
            let done = format!("closed referral {} from {}", answer.id, answer.sender);
            messages::update_status(&answer.client, out, req, &done).await
        }
        ReferralCommand::Withdraw { client, id, to, update_id } => {
            let req = UpdateStatusRequest {
                message_id: id.clone(),
                recipient: to.as_ref().map(ToString::to_string).unwrap_or_default(),
                sender: String::new(),
                status: MessageStatus::Withdrawn as i32,
                code: String::new(),
                update_id: update_id.map(|u| u.to_string()).unwrap_or_default(),
            };
            let from = to.as_ref().map_or_else(|| "every recipient".to_owned(), ToString::to_string);
            messages::update_status(client, out, req, &format!("withdrew referral {id} from {from}")).await
        }
    }
}
