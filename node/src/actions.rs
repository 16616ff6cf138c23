//! What the organization's people do at their node: one function per action, each taking only the
//! handles it needs (the store, the gateway link, the clock) and the signed-in person, and each doing
//! the action's one permission check. The gRPC `Node` service ([`crate::api`]) and the web console
//! ([`crate::console`]) are thin callers of these functions, so the two can never disagree about who
//! may do what.
//!
//! Showing survivor data to a person is an access: every action that returns a received message's
//! field values records a `viewed` row in the node's access log ([`crate::access`]) before it answers.

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::*;
use haven_trust::clock::SharedClock;
use haven_trust::ids::{PersonId, Role};
use tonic::Status;

use crate::access::{self, Shown, Source};
use crate::consent;
use crate::failure::retryable;
use crate::link::GatewayLink;
use crate::mailbox;
use crate::network::Network;
use crate::password::{Password, Passwords};
use crate::people::{Listed, People, PeopleError, Person};
use crate::seal::Sending;
use crate::state::StreamState;
use crate::store::{NodeStore, status as db};
use crate::witness::{Witness, WitnessReport};

/// Reading what the organization received (the inbox and its messages) is for the people who act on
/// it. Auditors and administrators see the trail and the node, never survivor data.
pub fn may_read_mail(who: &Person) -> Result<(), Status> {
    if matches!(who.role, Role::Caseworker | Role::PrivacyOfficer | Role::Liaison) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "reading the organization's messages needs role caseworker, privacy_officer or liaison, not {}",
            who.role
        )))
    }
}

/// How much of each received message a listing holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Metadata only: no field values, so nothing is shown and nothing is recorded.
    Metadata,
    /// Field values too: each delivery that carries any is recorded as viewed.
    Fields,
}

/// Which part of the inbox a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listing<'a> {
    /// A message kind or an item kind; everything when empty.
    pub kind: &'a str,
    /// Only the items assigned to the person listing ("mine").
    pub mine: bool,
    /// Only deliveries in this local state (`delivered`, `accepted`, ..., or `withdrawn` for a
    /// withdrawn consent); everything when empty.
    pub state: &'a str,
}

/// The inbox, newest first.
pub async fn inbox(
    store: &NodeStore,
    clock: &SharedClock,
    who: &Person,
    source: &Source,
    listing: Listing<'_>,
    limit: u32,
    detail: Detail,
) -> Result<Vec<InboxItem>, Status> {
    may_read_mail(who)?;
    let limit = if limit == 0 { 50 } else { limit };
    let person = if listing.mine { who.name.as_str() } else { "" };
    let mut items = mailbox::inbox(store, listing.kind, person, listing.state, limit).await.map_err(db)?;
    match detail {
        Detail::Metadata => {
            for item in &mut items {
                if let Some(Item { body: Some(item::Body::Delivery(d)), .. }) = &mut item.item {
                    d.fields.clear();
                }
            }
        }
        Detail::Fields => {
            let shown: Vec<Shown> = items.iter().filter_map(shown).collect();
            record_views(store, clock, who, source, &shown).await?;
        }
    }
    Ok(items)
}

/// One message by id: a sent one with each recipient's status, or a received one with its fields
/// (recorded as viewed; a withdrawn one shows none).
pub async fn open_message(
    store: &NodeStore,
    clock: &SharedClock,
    who: &Person,
    source: &Source,
    message_id: &str,
) -> Result<MessageView, Status> {
    may_read_mail(who)?;
    if let Some(sent) = mailbox::sent(store, message_id).await.map_err(db)? {
        let timeline = mailbox::timeline(store, message_id).await.map_err(db)?;
        return Ok(MessageView { direction: "sent".into(), sent: Some(sent), received: None, timeline });
    }
    if let Some(received) = mailbox::received(store, message_id).await.map_err(db)? {
        let shown: Vec<Shown> = shown(&received).into_iter().collect();
        record_views(store, clock, who, source, &shown).await?;
        let timeline = mailbox::timeline(store, message_id).await.map_err(db)?;
        return Ok(MessageView { direction: "received".into(), sent: None, received: Some(received), timeline });
    }
    Err(Status::not_found(format!("no message `{}` on this node", haven_trust::untrusted::shown(message_id))))
}

/// The survivor data a received item shows, if any.
fn shown(item: &InboxItem) -> Option<Shown> {
    match &item.item {
        Some(Item { body: Some(item::Body::Delivery(d)), .. }) if !d.fields.is_empty() => {
            let mut fields: Vec<String> = d.fields.keys().cloned().collect();
            fields.sort();
            Some(Shown { message_id: d.message_id.clone(), subject: d.subject_pseudonym.clone(), fields })
        }
        _ => None,
    }
}

/// Records the view of one item a watch is about to show (nothing, if it shows no survivor data).
pub async fn inbox_item_shown(
    store: &NodeStore,
    clock: &SharedClock,
    who: &Person,
    source: &Source,
    item: &InboxItem,
) -> Result<(), Status> {
    let shown: Vec<Shown> = shown(item).into_iter().collect();
    record_views(store, clock, who, source, &shown).await
}

async fn record_views(
    store: &NodeStore,
    clock: &SharedClock,
    who: &Person,
    source: &Source,
    shown: &[Shown],
) -> Result<(), Status> {
    if shown.is_empty() {
        return Ok(());
    }
    let mut conn = store.pool().acquire().await.map_err(db)?;
    access::viewed(&mut conn, who, shown, source, clock.now_micros()).await.map_err(db)
}

/// Messages this organization sent, newest first.
pub async fn list_sent(store: &NodeStore, who: &Person, kind: &str, limit: u32) -> Result<Vec<SentMessage>, Status> {
    may_read_mail(who)?;
    let limit = if limit == 0 { 50 } else { limit };
    mailbox::sent_list(store, kind, limit).await.map_err(db)
}

/// Sends a referral or an alert: recorded at the node first (so it survives an outage and is retried
/// with the same id), then decided here, sealed to each recipient and submitted. The gateway decides
/// again, on the field names; what goes is what both decisions release.
pub async fn send(kit: &Sending, who: &Person, mut env: Envelope) -> Result<SendResponse, Status> {
    may_send(who)?;
    if env.message_id.is_empty() {
        env.message_id = uuid::Uuid::now_v7().to_string();
    }
    // The values are checked against the schema before anything is kept: a wrong value is named now.
    // A gateway that cannot be asked for the bundle leaves the send pending, checked when it is sealed.
    match kit.bundles.current(&kit.store, &kit.link).await {
        Ok(bundle) => {
            crate::seal::parse(&env, kit.link.signer().org(), &bundle)?;
        }
        Err(s) if retryable(&s) => {}
        Err(s) => return Err(kit.link.relay(s)),
    }
    let earlier = mailbox::record_sent(&kit.store, &env, who.name.as_str(), who.role.as_str(), kit.clock.now_micros())
        .await
        .map_err(db)?;
    if earlier.is_some_and(|e| e != env) {
        return Err(Status::already_exists(format!(
            "message id {} was used for another message at this node; a retry must carry the same content, and a new message a new id (or none)",
            env.message_id
        )));
    }
    submit(kit, env, who).await
}

/// Sending (and previewing a send) is for the people who act on survivors' behalf.
pub fn may_send(who: &Person) -> Result<(), Status> {
    if matches!(who.role, Role::Caseworker | Role::PrivacyOfficer | Role::Liaison) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "sending needs role caseworker, privacy_officer or liaison, not {}",
            who.role
        )))
    }
}

/// Seals a recorded send (once: the sealed request is kept, and every retry sends the same bytes),
/// submits it and records the outcome. A gateway that cannot be reached, or answers that it cannot
/// take the message now (UNAVAILABLE, or RESOURCE_EXHAUSTED when its database disk is full), leaves it
/// pending, with the reason. A gateway whose bundle changed since the sealing (`bundle_changed`) gets
/// the message sealed again under the new bundle, with the same id, once.
pub async fn submit(kit: &Sending, env: Envelope, who: &Person) -> Result<SendResponse, Status> {
    let message_id = env.message_id.clone();
    let mut resealed = false;
    loop {
        let request = match mailbox::sealed_submit(&kit.store, &message_id).await.map_err(db)? {
            Some(r) => r,
            None => match seal_and_keep(kit, &env, who).await {
                Ok(r) => r,
                Err(s) if retryable(&s) => return pending(kit, &message_id, &s).await,
                Err(s) => {
                    mailbox::record_failure(&kit.store, &message_id, s.message()).await.map_err(db)?;
                    return Err(s);
                }
            },
        };
        let mut gw = GatewayClient::new(kit.link.channel());
        match gw.submit(kit.link.request(&who.name, who.role, request)?).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                mailbox::record_outcome(&kit.store, &resp, kit.clock.now_micros()).await.map_err(db)?;
                return Ok(SendResponse {
                    message_id,
                    state: "submitted".into(),
                    outcomes: resp.outcomes,
                    bundle_version: resp.bundle_version,
                    pending_reason: String::new(),
                });
            }
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    && s.message().starts_with("bundle_changed")
                    && !resealed =>
            {
                tracing::info!(%message_id, "the network's policy changed since this message was sealed; sealing it again under the new one");
                kit.bundles.refresh(&kit.store, &kit.link).await.map_err(|s| kit.link.relay(s))?;
                mailbox::forget_sealed(&kit.store, &message_id).await.map_err(db)?;
                resealed = true;
            }
            // The policy changed again (a second reload, or replicas on different bundles): the send
            // waits and is sealed again on the next retry.
            Err(s) if retryable(&s) || is_bundle_changed(&s) => {
                mailbox::forget_sealed(&kit.store, &message_id).await.map_err(db)?;
                return pending(kit, &message_id, &s).await;
            }
            Err(s) => {
                mailbox::record_failure(&kit.store, &message_id, s.message()).await.map_err(db)?;
                return Err(kit.link.relay(s));
            }
        }
    }
}

fn is_bundle_changed(s: &Status) -> bool {
    s.code() == tonic::Code::FailedPrecondition && s.message().starts_with("bundle_changed")
}

/// Seals `env` under the bundle this node knows is in force, and keeps the sealed request.
async fn seal_and_keep(kit: &Sending, env: &Envelope, who: &Person) -> Result<SubmitRequest, Status> {
    let bundle = kit.bundles.current(&kit.store, &kit.link).await?;
    let (request, unsealed) = kit.sealer().seal(env, who, bundle).await?;
    for u in &unsealed {
        tracing::info!(message_id = %env.message_id, recipient = %u.recipient, why = %u.why, "no copy sealed for a recipient");
    }
    mailbox::keep_sealed(&kit.store, &env.message_id, request).await.map_err(db)
}

/// Leaves a send pending, with why, for [`retry_pending`].
async fn pending(kit: &Sending, message_id: &str, s: &Status) -> Result<SendResponse, Status> {
    // Whether the gateway was reached decides what the person (and the operator) should look at: the
    // network and certificates, or the gateway's own trouble.
    let reason = kit.link.describe(s);
    tracing::warn!(%message_id, %reason, "the gateway did not accept the message; it stays pending and will be retried");
    mailbox::record_pending(&kit.store, message_id, &reason).await.map_err(db)?;
    Ok(SendResponse {
        message_id: message_id.to_owned(),
        state: "pending".into(),
        outcomes: Vec::new(),
        bundle_version: String::new(),
        pending_reason: reason,
    })
}

/// Waits for the next tick of a background round; false once the node is stopping.
pub(crate) async fn next_round(
    tick: &mut tokio::time::Interval,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tick.tick() => true,
        _ = shutdown.changed() => false,
    }
}

/// Retries pending sends with their original message ids, as the people who sent them, until the
/// gateway answers.
pub async fn retry_pending(kit: Sending, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    while next_round(&mut tick, &mut shutdown).await {
        let Ok(pending) = mailbox::pending_sends(&kit.store).await else { continue };
        for (env, person, role) in pending {
            let (Ok(name), Ok(role)) = (haven_trust::ids::PersonId::parse(&person), Role::parse(&role)) else {
                continue;
            };
            let who = Person { name, role };
            if submit(&kit, env, &who).await.map(|r| r.state == "pending").unwrap_or(false) {
                break;
            }
        }
    }
}

/// Changes a message's status at the gateway (accept, decline, close as recipient; withdraw as
/// sender), then mirrors it on the node's copy.
pub async fn update_status(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    who: &Person,
    mut r: UpdateStatusRequest,
) -> Result<UpdateStatusResponse, Status> {
    may_read_mail(who)?;
    if r.update_id.is_empty() {
        r.update_id = uuid::Uuid::new_v4().to_string();
    }
    let as_sender = r.status == MessageStatus::Withdrawn as i32;
    let counterparty = if as_sender { r.recipient.clone() } else { r.sender.clone() };
    let (message_id, code) = (r.message_id.clone(), r.code.clone());
    let mut gw = GatewayClient::new(link.channel());
    let resp = gw.update_status(link.request(&who.name, who.role, r)?).await.map_err(|s| link.relay(s))?.into_inner();
    let status = MessageStatus::try_from(resp.status).map(|s| s.as_str_name().to_ascii_lowercase()).unwrap_or_default();
    let change = mailbox::LocalChange {
        message_id: &message_id,
        counterparty: &counterparty,
        status: &status,
        code: &code,
        person: who.name.as_str(),
        now: clock.now_micros(),
        as_sender,
    };
    mailbox::local_status(store, change).await.map_err(db)?;
    Ok(resp)
}

/// Records a survivor's consent: builds and signs the receipt, registers it, keeps a copy.
pub async fn record_consent(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    who: &Person,
    r: RecordConsentRequest,
) -> Result<ConsentRecord, Status> {
    consent::may_manage(who)?;
    let receipt = consent::receipt(link, clock, who, r, None)?;
    consent::register(store, link, clock, who, receipt, false).await
}

/// Renews a consent: a new receipt that supersedes the old one, for the same subject unless another
/// is named.
pub async fn renew_consent(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    who: &Person,
    r: RenewConsentRequest,
) -> Result<ConsentRecord, Status> {
    consent::may_manage(who)?;
    if r.supersedes.is_empty() {
        return Err(Status::invalid_argument("name the consent this renewal supersedes"));
    }
    let mut draft = r.consent.unwrap_or_default();
    if draft.subject_pseudonym.is_empty() {
        let mut gw = GatewayClient::new(link.channel());
        let old = gw
            .get_consent(link.request(&who.name, who.role, GetConsentRequest { consent_id: r.supersedes.clone() })?)
            .await
            .map_err(|s| link.relay(s))?
            .into_inner();
        draft.subject_pseudonym = consent::subject_of(&old);
    }
    let receipt = consent::receipt(link, clock, who, draft, Some(r.supersedes))?;
    consent::register(store, link, clock, who, receipt, true).await
}

/// Revokes a consent at the gateway (which withdraws what it covered) and keeps the node's copy in step.
pub async fn revoke_consent(
    store: &NodeStore,
    link: &GatewayLink,
    clock: &SharedClock,
    who: &Person,
    r: RevokeConsentRequest,
) -> Result<ConsentRecord, Status> {
    consent::may_manage(who)?;
    let mut gw = GatewayClient::new(link.channel());
    let record =
        gw.revoke_consent(link.request(&who.name, who.role, r)?).await.map_err(|s| link.relay(s))?.into_inner();
    consent::remember(store, clock, &record, &consent::subject_of(&record), who).await?;
    Ok(record)
}

/// Keeps the scan of a recorded consent's signed form, where the organization opted in.
pub async fn keep_consent_scan(
    store: &NodeStore,
    clock: &SharedClock,
    who: &Person,
    source: &Source,
    consent_id: &str,
    scan: &consent::Scan,
) -> Result<(), Status> {
    consent::may_manage(who)?;
    consent::keep_scan(store, clock, who, source, consent_id, scan).await.map_err(db)
}

/// The kept scan of a consent's signed form (survivor data: the opening is in the access log).
pub async fn open_consent_scan(
    store: &NodeStore,
    clock: &SharedClock,
    who: &Person,
    source: &Source,
    consent_id: &str,
) -> Result<consent::Scan, Status> {
    consent::may_manage(who)?;
    consent::open_scan(store, clock, who, source, consent_id).await.map_err(db)?.ok_or_else(|| {
        Status::not_found("this node keeps no scan of that consent's form (the organization may not keep scans)")
    })
}

/// The organization's sealing keys.
pub async fn sealing_keys(store: &NodeStore, who: &Person) -> Result<Vec<crate::sealing::SealingKey>, Status> {
    may_administer(who)?;
    crate::sealing::list(store).await.map_err(db)
}

/// Makes a sealing key (`keys init` with `only_if_none`, `keys rotate` without). Returns the key and,
/// when the gateway could not take its statement yet, why.
pub async fn make_sealing_key(
    keys: SealingHandles<'_>,
    who: &Person,
    only_if_none: bool,
) -> Result<(crate::sealing::SealingKey, Option<Status>), Status> {
    may_administer(who)?;
    crate::sealing::make(keys.store, keys.link, keys.clock, keys.folder, who.name.as_str(), only_if_none).await
}

/// Withdraws a sealing key.
pub async fn withdraw_sealing_key(
    keys: SealingHandles<'_>,
    who: &Person,
    kid: &str,
) -> Result<(crate::sealing::SealingKey, Option<Status>), Status> {
    may_administer(who)?;
    crate::sealing::withdraw(keys.store, keys.link, keys.clock, kid).await
}

/// What the sealing-key actions take.
#[derive(Clone, Copy)]
pub struct SealingHandles<'a> {
    pub store: &'a NodeStore,
    pub link: &'a GatewayLink,
    pub clock: &'a SharedClock,
    pub folder: &'a crate::sealing::KeyFolder,
}

/// One consent, as the gateway holds it.
pub async fn get_consent(link: &GatewayLink, who: &Person, r: GetConsentRequest) -> Result<ConsentRecord, Status> {
    let mut gw = GatewayClient::new(link.channel());
    Ok(gw.get_consent(link.request(&who.name, who.role, r)?).await.map_err(|s| link.relay(s))?.into_inner())
}

/// Consents by subject, as the gateway holds them.
pub async fn list_consents(
    link: &GatewayLink,
    who: &Person,
    r: ListConsentsRequest,
) -> Result<ListConsentsResponse, Status> {
    let mut gw = GatewayClient::new(link.channel());
    Ok(gw.list_consents(link.request(&who.name, who.role, r)?).await.map_err(|s| link.relay(s))?.into_inner())
}

/// The network's purposes, message kinds (with every field) and organizations.
pub async fn network_info(
    network: &Network,
    link: &GatewayLink,
    who: &Person,
) -> Result<std::sync::Arc<NetworkInfoResponse>, Status> {
    network.get(link, who).await
}

/// What each recipient of `env` would receive, and what not and why, without sending anything: the
/// gateway's own decision (audited as a dry run). Fields are checked against the schema first, so a
/// wrong value is named before anything leaves the node.
pub async fn preview(kit: &Sending, network: &Network, who: &Person, env: Envelope) -> Result<DecideResponse, Status> {
    may_send(who)?;
    let bundle = kit.bundles.current(&kit.store, &kit.link).await.map_err(|s| kit.link.relay(s))?;
    let mut env = env;
    haven_sharing::envelope::parse(
        haven_sharing::envelope::RawEnvelope::from(env.clone()),
        &bundle,
        kit.link.signer().org(),
        false,
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    // What this node would not seal, it says too: the send would refuse those recipients.
    let mut local = env.clone();
    if local.message_id.is_empty() {
        local.message_id = uuid::Uuid::now_v7().to_string();
    }
    let (_, unsealed) = kit.sealer().seal(&local, who, bundle).await?;
    // The gateway decides on the names; the values never leave the node unsealed.
    env.field_names = env.fields.drain().map(|(name, _)| name).collect();
    env.field_names.sort();
    let link = &kit.link;
    let mut gw = GatewayClient::new(link.channel());
    let mut resp = gw
        .decide(link.request(&who.name, who.role, DecideRequest { envelope: Some(env) })?)
        .await
        .map_err(|s| link.relay(s))?
        .into_inner();
    for o in &mut resp.outcomes {
        let Some(u) = unsealed.iter().find(|u| u.recipient == o.recipient) else { continue };
        if let Some(d) = o.decision.as_mut().filter(|d| d.allowed) {
            d.allowed = false;
            d.withheld_fields.append(&mut d.released_fields);
            d.withheld_fields.sort();
            d.reason = DenyReason::NoSealedCopy as i32;
            d.reason_code = "no_sealed_copy".into();
            d.reason_detail = u.why.clone();
            o.outcome = recipient_outcome::Outcome::Denied as i32;
        }
    }
    network.saw(&resp.bundle_version).await;
    Ok(resp)
}

/// Who the gateway takes this person to be.
pub async fn who_am_i(link: &GatewayLink, who: &Person) -> Result<WhoAmIResponse, Status> {
    let mut gw = GatewayClient::new(link.channel());
    Ok(gw.who_am_i(link.request(&who.name, who.role, WhoAmIRequest {})?).await.map_err(|s| link.relay(s))?.into_inner())
}

/// What the node's audit witness last found.
pub fn witness_status(witness: &Witness, _who: &Person) -> WitnessReport {
    witness.report()
}

/// An auditor acknowledges the witness's standing alarm, with a note of what they found.
pub async fn acknowledge_witness_alarm(
    witness: &Witness,
    who: &Person,
    note: &str,
) -> Result<(u64, WitnessReport), Status> {
    if who.role != Role::Auditor {
        return Err(Status::permission_denied(format!(
            "acknowledging a witness alarm needs role auditor, not {}",
            who.role
        )));
    }
    if note.trim().is_empty() {
        return Err(Status::invalid_argument(
            "say what you found in the note (--note): it is kept with the alarm it acknowledges",
        ));
    }
    let (acknowledged, report) = witness.acknowledge(who.name.as_str(), note.trim()).await.map_err(db)?;
    if acknowledged == 0 {
        return Err(Status::failed_precondition(format!(
            "the witness has no standing alarm to acknowledge (it reports `{}`)",
            report.state.as_str()
        )));
    }
    Ok((acknowledged, report))
}

/// Administering the node (its people, its health) is for its administrators.
pub fn may_administer(who: &Person) -> Result<(), Status> {
    if who.role == Role::Admin {
        Ok(())
    } else {
        Err(Status::permission_denied(format!("administering this node needs role admin, not {}", who.role)))
    }
}

fn people_error(e: PeopleError) -> Status {
    match e {
        PeopleError::Unknown { .. } => Status::not_found(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// The node's people, for its administrators.
pub async fn people(people: &People, who: &Person) -> Result<Vec<Listed>, Status> {
    may_administer(who)?;
    people.list().await.map_err(people_error)
}

/// Adds a person with a password (a new name only: an existing person is changed, not re-added).
pub async fn add_person(
    people: &People,
    passwords: &Passwords,
    who: &Person,
    name: &str,
    role: &str,
    password: &str,
) -> Result<PersonId, Status> {
    may_administer(who)?;
    let name = PersonId::parse(name.trim()).map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
    let role = Role::parse(role).map_err(|e| Status::invalid_argument(format!("role: {e}")))?;
    if role == Role::Node {
        return Err(Status::invalid_argument(
            "role node is the node's own, for its delivery stream; choose a person's role",
        ));
    }
    let password = Password::parse(password).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if people.credentials(&name).await.map_err(people_error)?.is_some() {
        return Err(Status::already_exists(format!(
            "`{name}` is already on this node: change their role or password instead"
        )));
    }
    let hash = passwords.hash(&password).await.map_err(|e| Status::internal(e.to_string()))?;
    people.add(&name, role, Some(&hash)).await.map_err(people_error)?;
    Ok(name)
}

/// Refuses an administrator's change to their own account that would lock them out.
fn not_oneself(who: &Person, name: &PersonId, what: &str) -> Result<(), Status> {
    if &who.name == name {
        return Err(Status::failed_precondition(format!(
            "you cannot {what} yourself here; another administrator can, or `haven-node users` on the node's machine"
        )));
    }
    Ok(())
}

/// Changes a person's role: their sessions end and their tokens are revoked.
pub async fn set_role(people: &People, who: &Person, name: &PersonId, role: &str) -> Result<Option<Role>, Status> {
    may_administer(who)?;
    not_oneself(who, name, "change the role of")?;
    let role = Role::parse(role).map_err(|e| Status::invalid_argument(format!("role: {e}")))?;
    if role == Role::Node {
        return Err(Status::invalid_argument(
            "role node is the node's own, for its delivery stream; choose a person's role",
        ));
    }
    people.set_role(name, role).await.map_err(people_error)
}

/// Disables (or enables again) a person: disabling ends their sessions and revokes their tokens.
pub async fn set_disabled(people: &People, who: &Person, name: &PersonId, disabled: bool) -> Result<bool, Status> {
    may_administer(who)?;
    not_oneself(who, name, "disable")?;
    people.set_disabled(name, disabled).await.map_err(people_error)
}

/// Sets a person's password (a reset: the administrator tells them the new one).
pub async fn reset_password(
    people: &People,
    passwords: &Passwords,
    who: &Person,
    name: &PersonId,
    password: &str,
) -> Result<(), Status> {
    may_administer(who)?;
    let password = Password::parse(password).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if people.credentials(name).await.map_err(people_error)?.is_none() {
        return Err(Status::not_found(format!("no person `{name}` on this node")));
    }
    let hash = passwords.hash(&password).await.map_err(|e| Status::internal(e.to_string()))?;
    people.set_password_hash(name, &hash).await.map_err(people_error)
}

/// Removes a person's second factor (a lost phone) and ends their console sessions; they enroll again
/// at their next sign-in.
pub async fn reset_second_factor(
    people: &People,
    factor: &crate::totp::SecondFactor,
    who: &Person,
    name: &PersonId,
) -> Result<(), Status> {
    may_administer(who)?;
    if people.credentials(name).await.map_err(people_error)?.is_none() {
        return Err(Status::not_found(format!("no person `{name}` on this node")));
    }
    factor.reset(name).await.map_err(db)?;
    Ok(())
}

/// How the node is doing, for its administrators.
#[derive(Debug, Clone)]
pub struct Health {
    pub stream: StreamState,
    /// When the newest item arrived, if any did.
    pub last_arrival_micros: Option<i64>,
    /// Sends still waiting at the node for the gateway.
    pub pending_sends: i64,
    /// The policy bundle version the gateway named in its newest answer to a send.
    pub bundle_version: String,
    pub witness: WitnessReport,
}

/// The node's health: its stream, its newest arrival, its outbox, what its witness found.
pub async fn health(
    store: &NodeStore,
    stream: &tokio::sync::watch::Receiver<StreamState>,
    witness: &Witness,
    who: &Person,
) -> Result<Health, Status> {
    may_administer(who)?;
    let last_arrival_micros: Option<i64> =
        sqlx::query_scalar("SELECT MAX(received_at_micros) FROM inbox").fetch_one(store.pool()).await.map_err(db)?;
    let pending_sends: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sent WHERE state = 'pending'")
        .fetch_one(store.pool())
        .await
        .map_err(db)?;
    let bundle_version: Option<String> = sqlx::query_scalar(
        "SELECT bundle_version FROM sent WHERE bundle_version <> '' ORDER BY created_at_micros DESC LIMIT 1",
    )
    .fetch_optional(store.pool())
    .await
    .map_err(db)?;
    Ok(Health {
        stream: stream.borrow().clone(),
        last_arrival_micros,
        pending_sends,
        bundle_version: bundle_version.unwrap_or_default(),
        witness: witness.report(),
    })
}

/// What the node's audit witness found, for those who answer for the trail.
pub fn verification(witness: &Witness, who: &Person) -> Result<WitnessReport, Status> {
    if matches!(who.role, Role::Auditor | Role::Admin | Role::PrivacyOfficer) {
        Ok(witness.report())
    } else {
        Err(Status::permission_denied(format!(
            "the verification status needs role auditor, privacy_officer or admin, not {}",
            who.role
        )))
    }
}

/// A consent this organization recorded, as the node keeps it.
#[derive(Debug, Clone)]
pub struct HeldConsent {
    pub consent_id: String,
    pub subject: String,
    pub state: String,
    pub updated_at_micros: i64,
}

/// The consents this organization recorded, newest first: what a new referral relies on.
pub async fn consents_held(store: &NodeStore, who: &Person) -> Result<Vec<HeldConsent>, Status> {
    consent::may_manage(who)?;
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT consent_id, subject, state, updated_at_micros FROM consents ORDER BY updated_at_micros DESC LIMIT 500",
    )
    .fetch_all(store.pool())
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|(consent_id, subject, state, updated_at_micros)| HeldConsent {
            consent_id,
            subject,
            state,
            updated_at_micros,
        })
        .collect())
}

/// A page of the audit trail, as the gateway lets this person see it (an auditor: all of it; anyone
/// else: their organization's own entries). The gateway decides, and records the query.
pub async fn audit_query(
    link: &GatewayLink,
    who: &Person,
    filter: AuditFilter,
    cursor: u64,
) -> Result<AuditQueryResponse, Status> {
    if filter.from_micros == 0 || filter.until_micros == 0 {
        return Err(Status::invalid_argument("give a date range: a search of the audit trail always has one"));
    }
    let mut audit = haven_proto::v1::audit_client::AuditClient::new(link.channel());
    let request = AuditQueryRequest { filter: Some(filter), page_size: 50, cursor };
    Ok(audit.query(link.request(&who.name, who.role, request)?).await.map_err(|s| link.relay(s))?.into_inner())
}

/// Whether an entry is in the log the node's witness verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inclusion {
    /// Its inclusion proof verifies against the newest checkpoint the witness verified (of this size).
    Verified { tree_size: u64 },
    /// The proof does not verify: the entry is not what the log holds.
    Failed(String),
    /// The witness has verified no checkpoint that covers the entry yet.
    NotYet,
}

/// Checks an entry's inclusion proof, with `haven-trust`'s Merkle code, against the newest checkpoint
/// the node's own witness verified.
pub async fn inclusion(
    link: &GatewayLink,
    witness: &Witness,
    who: &Person,
    entry: &AuditEntry,
) -> Result<Inclusion, Status> {
    let Some(checkpoint) = witness.report().latest else { return Ok(Inclusion::NotYet) };
    if entry.seq >= checkpoint.tree_size {
        return Ok(Inclusion::NotYet);
    }
    let Ok(root) = <[u8; 32]>::try_from(checkpoint.root_hash.as_slice()) else {
        return Ok(Inclusion::Failed("the checkpoint's root is not 32 bytes".into()));
    };
    let mut audit = haven_proto::v1::audit_client::AuditClient::new(link.channel());
    let request = InclusionProofRequest { seq: entry.seq, tree_size: checkpoint.tree_size };
    let proof = audit
        .get_inclusion_proof(link.request(&who.name, who.role, request)?)
        .await
        .map_err(|s| link.relay(s))?
        .into_inner();
    let mut hashes = Vec::with_capacity(proof.hashes.len());
    for h in &proof.hashes {
        match <[u8; 32]>::try_from(h.as_slice()) {
            Ok(h) => hashes.push(h),
            Err(_) => return Ok(Inclusion::Failed("a proof hash is not 32 bytes".into())),
        }
    }
    let leaf = haven_trust::merkle::leaf_hash(&entry.canonical);
    Ok(match haven_trust::merkle::verify_inclusion(&leaf, entry.seq, checkpoint.tree_size, &hashes, &root) {
        Ok(()) => Inclusion::Verified { tree_size: checkpoint.tree_size },
        Err(e) => Inclusion::Failed(e.to_string()),
    })
}

/// The subject access report is for those who answer for the organization's data, and auditors.
pub fn may_report(who: &Person) -> Result<(), Status> {
    if matches!(who.role, Role::PrivacyOfficer | Role::Auditor) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "the subject access report needs role privacy_officer or auditor, not {}",
            who.role
        )))
    }
}

/// "Who has seen this survivor's data?": what this organization disclosed about a subject, and what
/// became of it (the gateway's subject access report).
pub async fn subject_access_report(
    link: &GatewayLink,
    who: &Person,
    subject: &str,
    controller: &str,
) -> Result<SubjectAccessResponse, Status> {
    may_report(who)?;
    let mut audit = haven_proto::v1::audit_client::AuditClient::new(link.channel());
    let request =
        SubjectAccessRequest { subject_pseudonym: subject.trim().to_owned(), controller: controller.trim().to_owned() };
    Ok(audit
        .subject_access_report(link.request(&who.name, who.role, request)?)
        .await
        .map_err(|s| link.relay(s))?
        .into_inner())
}

/// An export of the entries `filter` selects, as the gateway streams it (JSON lines), for offline
/// verification with `haven-gateway audit verify`.
pub async fn audit_export(
    link: &GatewayLink,
    who: &Person,
    filter: AuditFilter,
) -> Result<tonic::Streaming<ExportChunk>, Status> {
    if filter.from_micros == 0 || filter.until_micros == 0 {
        return Err(Status::invalid_argument("give a date range: an export always has one"));
    }
    let mut audit = haven_proto::v1::audit_client::AuditClient::new(link.channel());
    let request = AuditExportRequest { filter: Some(filter) };
    Ok(audit.export(link.request(&who.name, who.role, request)?).await.map_err(|s| link.relay(s))?.into_inner())
}

/// Assigns a received referral to a person of the organization (or to nobody, with an empty name),
/// recorded in the node's access log.
pub async fn assign(
    store: &NodeStore,
    people: &People,
    clock: &SharedClock,
    who: &Person,
    source: &Source,
    message_id: &str,
    to: &str,
) -> Result<(), Status> {
    may_read_mail(who)?;
    let to = to.trim();
    if !to.is_empty() {
        let name = PersonId::parse(to).map_err(|e| Status::invalid_argument(format!("assign to: {e}")))?;
        let target = people.credentials(&name).await.map_err(people_error)?;
        match target {
            Some(c) if !c.disabled && may_read_mail(&c.person).is_ok() => {}
            Some(_) => {
                return Err(Status::failed_precondition(format!(
                    "`{name}` cannot take a referral: they are disabled or their role does not read the organization's messages"
                )));
            }
            None => return Err(Status::not_found(format!("no person `{name}` on this node"))),
        }
    }
    let mut tx = store.pool().begin().await.map_err(db)?;
    let changed = sqlx::query("UPDATE inbox SET assigned_to = $1 WHERE message_id = $2 AND item_kind = 'delivery'")
        .bind(to)
        .bind(message_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if changed.rows_affected() == 0 {
        return Err(Status::not_found(format!(
            "no received message `{}` on this node",
            haven_trust::untrusted::shown(message_id)
        )));
    }
    access::assigned(&mut tx, who, message_id, to, source, clock.now_micros()).await.map_err(db)?;
    tx.commit().await.map_err(db)
}
