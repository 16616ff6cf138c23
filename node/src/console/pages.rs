//! The console's pages. Templates are `maud` expressions: the compiler checks them, and every value is
//! escaped unless it is marked otherwise (nothing here is), so a field value holding `<script>` or an
//! `onerror=` attribute is shown as text. No inline script or style: the CSP forbids both.

use maud::{DOCTYPE, Markup, html};

use haven_proto::v1 as pb;

use super::assets::{ASSETS, Assets};
use super::i18n::{Lang, Msg};
use crate::access::Access;
use crate::network::Wording;
use crate::people::{Listed, Person};
use haven_trust::ids::Role;

/// What the frame of every page needs.
pub struct Frame<'a> {
    pub lang: Lang,
    /// The signed-in person and their CSRF token; `None` on the sign-in page.
    pub who: Option<(&'a Person, &'a str)>,
    /// The page's path, for the language switch to return to.
    pub here: &'a str,
    /// A standing audit-witness alarm, shown in red at the top of every page.
    pub alarm: Option<String>,
}

/// Formats microseconds since the epoch as `2026-12-03 10:32 UTC`.
pub fn when(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).ok())
        .unwrap_or_default()
}

/// A whole page.
pub fn page(frame: &Frame, title: &str, body: Markup) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    html! {
        (DOCTYPE)
        html lang=(frame.lang.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · " (t(Msg::Haven)) }
                link rel="stylesheet" href=(Assets::path(&ASSETS.css));
                script src=(Assets::path(&ASSETS.htmx)) defer {}
                script src=(Assets::path(&ASSETS.script)) defer {}
            }
            body data-events="/events" {
                a.skip href="#main" { (t(Msg::SkipToContent)) }
                @if let Some(alarm) = &frame.alarm {
                    div.alarm role="alert" { (alarm) }
                }
                header.bar {
                    p.brand { (t(Msg::Haven)) }
                    @if let Some((who, csrf)) = frame.who {
                        nav aria-label=(t(Msg::Haven)) {
                            ul {
                                @if crate::actions::may_read_mail(who).is_ok() {
                                    li { a href="/inbox" { (t(Msg::Inbox)) } }
                                    li { a href="/sent" { (t(Msg::Sent)) } }
                                }
                                @if crate::consent::may_manage(who).is_ok() {
                                    li { a href="/consents" { (t(Msg::Consents)) } }
                                    li { a href="/referrals/new" { (t(Msg::NewReferral)) } }
                                }
                                @if crate::actions::may_send(who).is_ok() {
                                    li { a href="/alerts/new" { (t(Msg::NewAlert)) } }
                                }
                                @if crate::actions::may_administer(who).is_ok() {
                                    li { a href="/people" { (t(Msg::People)) } }
                                    li { a href="/health" { (t(Msg::Health)) } }
                                }
                                @if matches!(who.role, Role::Auditor | Role::Admin | Role::PrivacyOfficer) {
                                    li { a href="/verification" { (t(Msg::Verification)) } }
                                }
                                @if matches!(who.role, Role::Auditor | Role::PrivacyOfficer) {
                                    li { a href="/audit" { (t(Msg::Audit)) } }
                                    li { a href="/report" { (t(Msg::Report)) } }
                                }
                            }
                        }
                        div.who {
                            span { (t(Msg::SignedInAs)) " " strong { (who.name.as_str()) } " (" (who.role.as_str()) ")" }
                            form.inline method="post" action="/sign-out" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.quiet type="submit" { (t(Msg::SignOut)) }
                            }
                        }
                    }
                    (language_switch(frame))
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn language_switch(frame: &Frame) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    html! {
        form.inline.lang method="get" action="/language" {
            label for="lang" { (t(Msg::Language)) }
            select #lang name="lang" {
                @for lang in Lang::ALL {
                    option value=(lang.tag()) selected[lang == frame.lang] lang=(lang.tag()) { (lang.name()) }
                }
            }
            input type="hidden" name="back" value=(frame.here);
            " "
            button.quiet type="submit" { (t(Msg::Change)) }
        }
    }
}

/// What the sign-in page says above its form.
pub enum SignInNote {
    None,
    Wrong,
    Disabled,
    Ended,
    /// Too many failures for the name, or from the address; wait until the time given.
    Wait {
        for_name: bool,
        until: String,
    },
    CrossSite,
}

/// The sign-in page.
pub fn sign_in(frame: &Frame, token: &str, name: &str, note: SignInNote) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let error = match &note {
        SignInNote::None | SignInNote::Ended => None,
        SignInNote::Wrong => Some(html! { (t(Msg::WrongNameOrPassword)) }),
        SignInNote::Disabled => Some(html! { (t(Msg::PersonDisabled)) }),
        SignInNote::CrossSite => Some(html! { (t(Msg::RefusedCrossSite)) }),
        SignInNote::Wait { for_name, until } => Some(html! {
            (t(if *for_name { Msg::TooManyForName } else { Msg::TooManyForAddress }))
            " " (t(Msg::TryAgainAfter)) " " strong { (until) } "."
        }),
    };
    let body = html! {
        @if matches!(note, SignInNote::Ended) {
            p.note role="status" { (t(Msg::SessionEnded)) }
        }
        p { (t(Msg::SignInIntro)) }
        @if let Some(error) = &error {
            p.error #sign-in-error role="alert" { (error) }
        }
        form method="post" action="/sign-in" {
            input type="hidden" name="token" value=(token);
            div.field {
                label for="name" { (t(Msg::Name)) }
                input #name type="text" name="name" value=(name) autocomplete="username" required
                    autocapitalize="none" spellcheck="false"
                    aria-describedby=[error.as_ref().map(|_| "sign-in-error")];
            }
            div.field {
                label for="password" { (t(Msg::Password)) }
                input #password type="password" name="password" autocomplete="current-password" required
                    aria-describedby=[error.as_ref().map(|_| "sign-in-error")];
            }
            button type="submit" { (t(Msg::SignIn)) }
        }
    };
    page(frame, t(Msg::SignIn), body)
}

/// The second step of signing in.
pub fn code(frame: &Frame, csrf: &str, wrong: bool) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let body = html! {
        p { (t(Msg::CodeIntro)) }
        (code_form(frame.lang, "/sign-in/code", csrf, wrong))
    };
    page(frame, t(Msg::SecondFactor), body)
}

/// The form that takes a second-factor code, with its error tied to the field.
fn code_form(lang: Lang, action: &str, csrf: &str, wrong: bool) -> Markup {
    let t = |m: Msg| m.text(lang);
    html! {
        @if wrong { p.error #code-error role="alert" { (t(Msg::WrongCode)) } }
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            div.field {
                label for="code" { (t(Msg::Code)) }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required
                    autocapitalize="none" spellcheck="false" aria-describedby=[wrong.then_some("code-error")];
            }
            button type="submit" { (t(Msg::Continue)) }
        }
    }
}

/// Enrolling a second factor: the QR code, the key as text, and the confirming code.
pub fn enroll(frame: &Frame, csrf: &str, qr_svg: &str, key: &str, wrong: bool) -> Markup {
    use base64::Engine;
    let t = |m: Msg| m.text(frame.lang);
    let qr = format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(qr_svg));
    let body = html! {
        p { (t(Msg::EnrollIntro)) }
        img.qr src=(qr) alt=(t(Msg::QrAlt)) width="220" height="220";
        p { (t(Msg::Key)) ": " code #totp-key { (key) } }
        (code_form(frame.lang, "/account/second-factor", csrf, wrong))
    };
    page(frame, t(Msg::EnrollTitle), body)
}

/// The recovery codes, shown once.
pub fn recovery_codes(frame: &Frame, codes: &[String]) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let body = html! {
        p { (t(Msg::RecoveryIntro)) }
        ul #recovery-codes { @for c in codes { li { code { (c) } } } }
        p { a.button href="/" { (t(Msg::Continue)) } }
    };
    page(frame, t(Msg::RecoveryTitle), body)
}

/// A refusal or an error, as a page.
pub fn problem(frame: &Frame, title: Msg, detail: &str) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    page(
        frame,
        t(title),
        html! {
            @if !detail.is_empty() { p.error role="alert" { (detail) } }
            p { a href="/" { (t(Msg::BackToInbox)) } }
        },
    )
}

fn kind_label(lang: Lang, kind: &str) -> String {
    match kind {
        "referral" => Msg::Referral.text(lang).to_owned(),
        "alert" => Msg::Alert.text(lang).to_owned(),
        other => other.to_owned(),
    }
}

fn status_word(lang: Lang, status: i32) -> String {
    words_of(
        lang,
        &pb::MessageStatus::try_from(status).map(|s| s.as_str_name().to_ascii_lowercase()).unwrap_or_default(),
    )
}

/// A status or step name in the person's language (the name itself where the catalog has none).
fn words_of(lang: Lang, name: &str) -> String {
    super::i18n::status_words(name).map_or_else(|| name.to_owned(), |m| m.text(lang).to_owned())
}

/// The inbox page: filters, then the live list.
/// The local states an inbox listing can be filtered by.
pub const STATES: [&str; 6] = ["delivered", "accepted", "declined", "closed", "acknowledged", "withdrawn"];

pub fn inbox(frame: &Frame, w: Wording, kind: &str, mine: bool, state: &str, items: &[pb::InboxItem]) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let live = format!(
        "/inbox/items?kind={}&state={}{}",
        urlencode(kind),
        urlencode(state),
        if mine { "&mine=1" } else { "" }
    );
    let body = html! {
        p { (t(Msg::InboxIntro)) }
        form.filters method="get" action="/inbox" {
            div {
                label for="kind" { (t(Msg::Kind)) }
                select #kind name="kind" {
                    option value="" selected[kind.is_empty()] { (t(Msg::AllKinds)) }
                    option value="referral" selected[kind == "referral"] { (t(Msg::Referral)) }
                    option value="alert" selected[kind == "alert"] { (t(Msg::Alert)) }
                }
            }
            div {
                label for="state" { (t(Msg::State)) }
                select #state name="state" {
                    option value="" selected[state.is_empty()] { (t(Msg::AllStates)) }
                    @for st in STATES { option value=(st) selected[state == st] { (words_of(frame.lang, st)) } }
                }
            }
            div {
                input #mine type="checkbox" name="mine" value="1" checked[mine];
                " "
                label.inline for="mine" { (t(Msg::Mine)) }
            }
            button type="submit" { (t(Msg::Filter)) }
        }
        p.muted { (t(Msg::LiveUpdates)) }
        div #inbox-items data-live=(live) aria-live="polite" {
            (inbox_items(frame.lang, w, items))
        }
    };
    page(frame, t(Msg::Inbox), body)
}

/// The inbox list alone (the live region's content): metadata, never field values.
pub fn inbox_items(lang: Lang, w: Wording, items: &[pb::InboxItem]) -> Markup {
    let t = |m: Msg| m.text(lang);
    html! {
        @if items.is_empty() {
            p { (t(Msg::NothingHere)) }
        } @else {
            table.list {
                thead { tr { th { (t(Msg::Received)) } th { (t(Msg::Kind)) } th { (t(Msg::From)) } th { (t(Msg::Purpose)) } th { (t(Msg::State)) } th { (t(Msg::Message)) } th { (t(Msg::AssignedTo)) } } }
                tbody {
                    @for item in items {
                        tr {
                            td { (when(item.received_at_micros)) }
                            @match item.item.as_ref().and_then(|i| i.body.as_ref()) {
                                Some(pb::item::Body::Delivery(d)) => {
                                    td { (kind_label(lang, &d.kind)) }
                                    td { (d.sender) }
                                    td { (w.purpose(&d.purpose)) }
                                    td.state {
                                        @if item.withdrawn { (t(Msg::ConsentWithdrawnNotice)) } @else { (status_word(lang, item.status)) }
                                    }
                                    td { a href=(format!("/messages/{}", urlencode(&d.message_id))) { (t(Msg::Open)) span.skip { " " (d.message_id) } } }
                                }
                                Some(pb::item::Body::ConsentWithdrawn(w)) => {
                                    td { (t(Msg::ConsentWithdrawnNotice)) }
                                    td {} td {} td {}
                                    td { (w.message_ids.join(", ")) }
                                }
                                Some(pb::item::Body::Status(s)) => {
                                    td { (t(Msg::StatusNotice)) }
                                    td { (s.from_org) }
                                    td {}
                                    td.state { (status_word(lang, s.status)) }
                                    td { a href=(format!("/messages/{}", urlencode(&s.message_id))) { (t(Msg::Open)) span.skip { " " (s.message_id) } } }
                                }
                                Some(pb::item::Body::SenderNotice(n)) => {
                                    td { (t(Msg::DeliveryNotice)) }
                                    td { (n.recipient) }
                                    td {}
                                    td.state { (words_of(lang, &sender_notice_word(n.kind))) @if !n.reason.is_empty() { " (" (n.reason) ")" } }
                                    td { a href=(format!("/messages/{}", urlencode(&n.message_id))) { (t(Msg::Open)) span.skip { " " (n.message_id) } } }
                                }
                                None => { td { (item.item_kind) } td {} td {} td {} td {} }
                            }
                            td { (item.assigned_to) }
                        }
                    }
                }
            }
        }
    }
}

/// A received message: its metadata, its fields (or that they were withdrawn), and the actions the
/// recipient may take.
pub fn received(frame: &Frame, csrf: &str, message: &ReceivedMessage) -> Markup {
    let ReceivedMessage { item, views, staff, timeline: steps, wording: w } = *message;
    let t = |m: Msg| m.text(frame.lang);
    let Some(pb::Item { body: Some(pb::item::Body::Delivery(d)), .. }) = &item.item else {
        return problem(frame, Msg::NotFound, "");
    };
    let mut fields: Vec<(&String, &pb::FieldValue)> = d.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let action = format!("/messages/{}/status", urlencode(&d.message_id));
    let body = html! {
        dl.fields {
            dt { (t(Msg::Message)) } dd { (d.message_id) }
            dt { (t(Msg::Kind)) } dd { (kind_label(frame.lang, &d.kind)) }
            dt { (t(Msg::From)) } dd { (d.sender) " (" (d.sender_person) ")" }
            dt { (t(Msg::Purpose)) } dd { (w.purpose(&d.purpose)) }
            @if !d.subject_pseudonym.is_empty() { dt { (t(Msg::Subject)) } dd { (d.subject_pseudonym) } }
            dt { (t(Msg::Received)) } dd { (when(item.received_at_micros)) }
            dt { (t(Msg::State)) } dd.state #message-state { (status_word(frame.lang, item.status)) }
        }
        h2 { (t(Msg::Fields)) }
        @if item.withdrawn {
            p.note role="status" { (t(Msg::DataWithdrawn)) }
        } @else {
            dl.fields #message-fields {
                @for (name, value) in &fields {
                    dt { (w.field_named(&d.kind, name)) } dd { (field_text(w, &d.kind, name, value)) }
                }
            }
            @if !d.withheld_fields.is_empty() {
                p.muted { (t(Msg::Withheld)) ": " (d.withheld_fields.iter().map(|f| w.field_named(&d.kind, f)).collect::<Vec<_>>().join(", ")) }
            }
            p.muted { (t(Msg::ViewRecorded)) }
        }
        @if d.kind == "alert" && item.status != pb::MessageStatus::Acknowledged as i32 {
            form.actions method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="sender" value=(d.sender);
                button type="submit" name="status" value="acknowledged" { (t(Msg::Acknowledge)) }
            }
        }
        @if d.kind == "referral" {
            form.actions method="post" action=(format!("/messages/{}/assign", urlencode(&d.message_id))) {
                input type="hidden" name="csrf" value=(csrf);
                div {
                    label for="assign-to" { (t(Msg::AssignedTo)) }
                    select #assign-to name="to" {
                        option value="" { (t(Msg::Nobody)) }
                        @for p in staff { option value=(p) selected[*p == item.assigned_to] { (p) } }
                    }
                }
                button.quiet type="submit" { (t(Msg::Assign)) }
            }
        }
        @let status = pb::MessageStatus::try_from(item.status).unwrap_or(pb::MessageStatus::Unspecified);
        @if !item.withdrawn && d.kind == "referral" && matches!(status, pb::MessageStatus::Delivered | pb::MessageStatus::Sent | pb::MessageStatus::Unspecified) {
            form.actions method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="sender" value=(d.sender);
                button type="submit" name="status" value="accepted" { (t(Msg::Accept)) }
            }
            (status_code_form(frame.lang, csrf, &action, CodeForm { sender: &d.sender, choices: &w.codes(&d.kind, "declined"), status: "declined", id: "decline-code" }))
        }
        @if !item.withdrawn && d.kind == "referral" && status == pb::MessageStatus::Accepted {
            (status_code_form(frame.lang, csrf, &action, CodeForm { sender: &d.sender, choices: &w.codes(&d.kind, "closed"), status: "closed", id: "close-code" }))
        }
        (timeline(frame.lang, w, &d.kind, steps))
        @if !views.is_empty() {
            h2 { (t(Msg::AccessLog)) }
            table.list {
                thead { tr { th { (t(Msg::When)) } th { (t(Msg::Name)) } th { (t(Msg::Fields)) } } }
                tbody {
                    @for v in views {
                        tr { td { (when(v.at_micros)) } td { (v.person) " (" (v.role) ")" } td { (v.fields.join(", ")) } }
                    }
                }
            }
        }
    };
    page(frame, &format!("{} {}", kind_label(frame.lang, &d.kind), short(&d.message_id)), body)
}

/// A decline or a close: the status, and the code the kind lists for it.
struct CodeForm<'a> {
    sender: &'a str,
    /// The codes to choose from, with their words; empty: a code is typed.
    choices: &'a [(&'a str, &'a str)],
    status: &'a str,
    id: &'a str,
}

/// The form that declines or closes a referral, with its reason or outcome as words.
fn status_code_form(lang: Lang, csrf: &str, action: &str, f: CodeForm) -> Markup {
    let t = |m: Msg| m.text(lang);
    let (legend, label, button) = if f.status == "closed" {
        (Msg::CloseWith, Msg::Outcome, Msg::Close)
    } else {
        (Msg::DeclineWith, Msg::Reason, Msg::Decline)
    };
    html! {
        form.actions method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="sender" value=(f.sender);
            input type="hidden" name="status" value=(f.status);
            div {
                label for=(f.id) { (t(label)) }
                @if f.choices.is_empty() {
                    input id=(f.id) type="text" name="code" required;
                } @else {
                    select id=(f.id) name="code" required {
                        option value="" { (t(Msg::Choose)) }
                        @for (code, words) in f.choices { option value=(code) { (words) } }
                    }
                }
            }
            button.quiet type="submit" aria-label=(t(legend)) { (t(button)) }
        }
    }
}

/// A message's timeline: each step, who took it and when.
fn timeline(lang: Lang, w: Wording, kind: &str, steps: &[pb::TimelineStep]) -> Markup {
    let t = |m: Msg| m.text(lang);
    html! {
        @if !steps.is_empty() {
            h2 #timeline-title { (t(Msg::Timeline)) }
            table.list #timeline aria-labelledby="timeline-title" {
                thead { tr { th { (t(Msg::When)) } th { (t(Msg::Step)) } th { (t(Msg::With)) } th { (t(Msg::By)) } th { (t(Msg::Reason)) } } }
                tbody {
                    @for s in steps {
                        tr data-step=(s.step) {
                            td { (when(s.at_micros)) }
                            td.state { (words_of(lang, &s.step)) }
                            td { (s.counterparty) }
                            td { (s.by_person) @if !s.by_org.is_empty() { " (" (s.by_org) ")" } }
                            td { (step_code(lang, w, kind, s)) }
                        }
                    }
                }
            }
        }
    }
}

/// A step's code as words: a decline's reason or a close's outcome from the schema, a denial's reason
/// from the catalog, else the code.
fn step_code(lang: Lang, w: Wording, kind: &str, s: &pb::TimelineStep) -> String {
    match s.step.as_str() {
        "declined" | "closed" => w.code(kind, &s.step, &s.code).to_owned(),
        "denied" => deny_text(lang, &s.code),
        _ => s.code.clone(),
    }
}

/// A gateway refusal code in plain words where the catalog has them, else the code.
fn deny_text(lang: Lang, code: &str) -> String {
    super::i18n::deny_words(code).map_or_else(|| code.to_owned(), |m| m.text(lang).to_owned())
}

/// A received message and what its page shows beside it.
#[derive(Clone, Copy)]
pub struct ReceivedMessage<'a> {
    pub item: &'a pb::InboxItem,
    pub views: &'a [Access],
    pub staff: &'a [String],
    pub timeline: &'a [pb::TimelineStep],
    pub wording: Wording<'a>,
}

/// A sent message: each recipient's status, who changed it and when.
pub fn sent_message(
    frame: &Frame,
    csrf: &str,
    w: Wording,
    sent: &pb::SentMessage,
    steps: &[pb::TimelineStep],
) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let live = format!("/messages/{}/recipients", urlencode(&sent.message_id));
    let body = html! {
        dl.fields {
            dt { (t(Msg::Message)) } dd { (sent.message_id) }
            dt { (t(Msg::Kind)) } dd { (kind_label(frame.lang, &sent.kind)) }
            dt { (t(Msg::Purpose)) } dd { (w.purpose(&sent.purpose)) }
            dt { (t(Msg::Created)) } dd { (when(sent.created_at_micros)) }
            dt { (t(Msg::State)) } dd.state { (words_of(frame.lang, &sent.state)) }
        }
        @if sent.state == "pending" {
            p.note role="status" { (t(Msg::PendingAtNode)) @if !sent.error.is_empty() { " (" (sent.error) ")" } }
        }
        h2 { (t(Msg::Recipients)) }
        div #recipients data-live=(live) aria-live="polite" { (recipients(frame.lang, w, sent)) }
        @let open: Vec<&pb::RecipientStatus> = sent.recipients.iter().filter(|r| {
            matches!(pb::MessageStatus::try_from(r.status), Ok(pb::MessageStatus::Sent | pb::MessageStatus::Delivered | pb::MessageStatus::Accepted))
        }).collect();
        @if sent.kind == "referral" && !open.is_empty() {
            form.actions method="post" action=(format!("/messages/{}/status", urlencode(&sent.message_id))) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="status" value="withdrawn";
                div {
                    label for="withdraw-from" { (t(Msg::Recipient)) }
                    select #withdraw-from name="recipient" { @for r in &open { option value=(r.recipient) { (r.recipient) } } }
                }
                button.quiet type="submit" { (t(Msg::Withdraw)) }
            }
        }
        (timeline(frame.lang, w, &sent.kind, steps))
    };
    page(frame, &format!("{} {}", kind_label(frame.lang, &sent.kind), short(&sent.message_id)), body)
}

/// A sent message's recipients (a live region).
pub fn recipients(lang: Lang, w: Wording, sent: &pb::SentMessage) -> Markup {
    let t = |m: Msg| m.text(lang);
    html! {
        @if sent.recipients.is_empty() {
            p { (t(Msg::NothingHere)) }
        } @else {
            table.list {
                thead { tr { th { (t(Msg::Recipient)) } th { (t(Msg::State)) } th { (t(Msg::StatusChangedBy)) } th { (t(Msg::When)) } } }
                tbody {
                    @for r in &sent.recipients {
                        tr {
                            td { (r.recipient) }
                            @let status = crate::mailbox::recipient_status(r.status, &r.reason);
                            td.state data-recipient=(r.recipient) data-status=(status) {
                                (words_of(lang, &status))
                                @if !r.code.is_empty() { " · " (w.code(&sent.kind, &status, &r.code)) }
                                @if !r.reason.is_empty() {
                                    " · " (deny_text(lang, &r.reason))
                                }
                            }
                            td { (r.by_person) }
                            td { (when(r.updated_at_micros)) }
                        }
                    }
                }
            }
        }
    }
}

/// The sent list.
pub fn sent_list(frame: &Frame, w: Wording, messages: &[pb::SentMessage]) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let body = html! {
        div #sent-items data-live="/sent/items" aria-live="polite" { (sent_items(frame.lang, w, messages)) }
    };
    page(frame, t(Msg::Sent), body)
}

/// The sent list alone (a live region).
pub fn sent_items(lang: Lang, w: Wording, messages: &[pb::SentMessage]) -> Markup {
    let t = |m: Msg| m.text(lang);
    html! {
        @if messages.is_empty() {
            p { (t(Msg::NoMessagesSent)) }
        } @else {
            table.list {
                thead { tr { th { (t(Msg::Created)) } th { (t(Msg::Kind)) } th { (t(Msg::Purpose)) } th { (t(Msg::Recipients)) } th { (t(Msg::Message)) } } }
                tbody {
                    @for m in messages {
                        tr {
                            td { (when(m.created_at_micros)) }
                            td { (kind_label(lang, &m.kind)) }
                            td { (w.purpose(&m.purpose)) }
                            td {
                                @for r in &m.recipients { span { (r.recipient) ": " (words_of(lang, &crate::mailbox::recipient_status(r.status, &r.reason))) } br; }
                                @if m.state == "pending" { span { (t(Msg::PendingAtNode)) } }
                            }
                            td { a href=(format!("/messages/{}", urlencode(&m.message_id))) { (t(Msg::Open)) span.skip { " " (m.message_id) } } }
                        }
                    }
                }
            }
        }
    }
}

/// A field value as text, with an enum's or a list's values as the schema's words.
fn field_text(w: Wording, kind: &str, field: &str, value: &pb::FieldValue) -> String {
    use pb::field_value::Value;
    match &value.value {
        Some(Value::Text(s)) => w.value_named(kind, field, s).to_owned(),
        Some(Value::Integer(i)) => i.to_string(),
        Some(Value::Date(d)) => d.clone(),
        Some(Value::List(l)) => l.items.iter().map(|v| w.value_named(kind, field, v)).collect::<Vec<_>>().join(", "),
        None => String::new(),
    }
}

fn sender_notice_word(kind: i32) -> String {
    pb::sender_notice::Kind::try_from(kind).map(|k| k.as_str_name().to_ascii_lowercase()).unwrap_or_default()
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Percent-encodes a path or query component.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The node's people, with the changes an administrator may make.
pub fn people(frame: &Frame, csrf: &str, people: &[Listed], notice: Option<&str>) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let roles = [Role::Caseworker, Role::Liaison, Role::PrivacyOfficer, Role::Auditor, Role::Admin];
    let body = html! {
        @if let Some(n) = notice { p.note role="status" { (n) } }
        table.list #people {
            thead { tr { th { (t(Msg::Name)) } th { (t(Msg::Role)) } th { (t(Msg::State)) } th { (t(Msg::NewPassword)) } th { (t(Msg::SecondFactor)) } } }
            tbody {
                @for p in people {
                    @let name = p.name.as_str();
                    @let path = format!("/people/{}", urlencode(name));
                    tr {
                        td { (name) }
                        td {
                            form.inline method="post" action=(format!("{path}/role")) {
                                input type="hidden" name="csrf" value=(csrf);
                                label.skip for=(format!("role-{name}")) { (t(Msg::Role)) " " (name) }
                                select id=(format!("role-{name}")) name="role" {
                                    @for r in roles { option value=(r.as_str()) selected[r == p.role] { (r.as_str()) } }
                                }
                                " "
                                button.quiet type="submit" { (t(Msg::ChangeRole)) }
                            }
                        }
                        td {
                            (if p.disabled { t(Msg::Disabled) } else { t(Msg::Enabled) }) " "
                            form.inline method="post" action=(format!("{path}/disabled")) {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="disabled" value=(if p.disabled { "false" } else { "true" });
                                button.quiet type="submit" { (if p.disabled { t(Msg::Enable) } else { t(Msg::Disable) }) " " span.skip { (name) } }
                            }
                        }
                        td {
                            form.inline method="post" action=(format!("{path}/password")) {
                                input type="hidden" name="csrf" value=(csrf);
                                label.skip for=(format!("password-{name}")) { (t(Msg::NewPassword)) " " (name) }
                                input type="password" id=(format!("password-{name}")) name="password" autocomplete="new-password" minlength="12";
                                " "
                                button.quiet type="submit" { (t(Msg::ResetPassword)) }
                            }
                        }
                        td {
                            form.inline method="post" action=(format!("{path}/second-factor")) {
                                input type="hidden" name="csrf" value=(csrf);
                                button.quiet type="submit" { (t(Msg::ResetSecondFactor)) " " span.skip { (name) } }
                            }
                        }
                    }
                }
            }
        }
        h2 { (t(Msg::AddPerson)) }
        form method="post" action="/people" {
            input type="hidden" name="csrf" value=(csrf);
            div.field { label for="new-name" { (t(Msg::Name)) } input #new-name type="text" name="name" required autocapitalize="none" spellcheck="false"; }
            div.field {
                label for="new-role" { (t(Msg::Role)) }
                select #new-role name="role" { @for r in roles { option value=(r.as_str()) { (r.as_str()) } } }
            }
            div.field {
                label for="new-password" { (t(Msg::Password)) }
                input #new-password type="password" name="password" autocomplete="new-password" required minlength="12" aria-describedby="password-hint";
                p.muted #password-hint { (t(Msg::PasswordHint)) }
            }
            button type="submit" { (t(Msg::Add)) }
        }
    };
    page(frame, t(Msg::People), body)
}

/// The node's health.
pub fn health(
    frame: &Frame,
    csrf: &str,
    h: &crate::actions::Health,
    certificates: &[(String, i64)],
    keys: &[crate::sealing::SealingKey],
) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let body = html! {
        dl.fields #health {
            dt { (t(Msg::StreamToGateway)) }
            dd #stream-state {
                @if h.stream.connected { (t(Msg::Connected)) } @else { (t(Msg::NotConnected)) @if !h.stream.last_error.is_empty() { " (" (h.stream.last_error) ")" } }
            }
            dt { (t(Msg::LastArrival)) } dd { @match h.last_arrival_micros { Some(m) => (when(m)), None => (t(Msg::Never)) } }
            dt { (t(Msg::PendingSends)) } dd #pending-sends { (h.pending_sends) }
            dt { (t(Msg::BundleVersion)) } dd { (h.bundle_version) }
            dt { (t(Msg::WitnessState)) } dd { (h.witness.state.as_str()) }
        }
        h2 { (t(Msg::Certificates)) }
        table.list {
            thead { tr { th { (t(Msg::Name)) } th { (t(Msg::Expires)) } } }
            tbody { @for (name, not_after) in certificates { tr { td { (name) } td { (when(not_after.saturating_mul(1_000_000))) } } } }
        }
        h2 #keys { (t(Msg::SealingKeys)) }
        p { (t(Msg::SealingKeysIntro)) " " a href="/keys/log" { (t(Msg::KeyLogDownload)) } }
        @if keys.is_empty() { p.note { (t(Msg::NoSealingKey)) } } @else {
            table.list #sealing-keys {
                thead { tr { th { (t(Msg::Key)) } th { (t(Msg::State)) } th { (t(Msg::Expires)) } th { (t(Msg::Action)) } } }
                tbody {
                    @for k in keys {
                        tr data-kid=(k.kid) {
                            td { code { (k.kid) } }
                            td.state { (k.state()) }
                            td { (when(k.not_after.saturating_mul(1_000_000))) }
                            td {
                                @if k.withdrawn_at_micros.is_none() {
                                    form.inline method="post" action=(format!("/keys/{}/withdraw", urlencode(&k.kid))) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button.quiet type="submit" aria-label=(format!("{} {}", t(Msg::Withdraw), k.kid)) { (t(Msg::Withdraw)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        form.actions method="post" action="/keys" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { (t(if keys.is_empty() { Msg::MakeFirstKey } else { Msg::RotateKey })) }
        }
    };
    page(frame, t(Msg::Health), body)
}

/// What the node's audit witness found: the newest checkpoint and whether it was consistent.
pub fn verification(frame: &Frame, report: &crate::witness::WitnessReport, now_micros: i64) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let body = html! {
        h2 { (t(Msg::NewestCheckpoint)) }
        @match &report.latest {
            Some(cp) => {
                dl.fields #checkpoint {
                    dt { (t(Msg::TreeSize)) } dd { (cp.tree_size) }
                    dt { (t(Msg::RootHash)) } dd { code { (hex::encode(&cp.root_hash)) } }
                    dt { (t(Msg::SignedAt)) } dd { (when(cp.timestamp_micros)) " (" (age(now_micros - cp.timestamp_micros)) ")" }
                }
            }
            None => p { (t(Msg::NothingHere)) },
        }
        h2 { (t(Msg::WitnessState)) }
        dl.fields #witness {
            dt { (t(Msg::State)) }
            dd.state #witness-state {
                (report.state.as_str())
                @if report.state == crate::witness::WitnessState::Ok { " — " (t(Msg::WitnessOk)) }
                @if !report.detail.is_empty() { br; span.muted { (report.detail) } }
            }
            dt { (t(Msg::LastChecked)) } dd { @if report.checked_at_micros > 0 { (when(report.checked_at_micros)) } @else { (t(Msg::Never)) } }
        }
    };
    page(frame, t(Msg::Verification), body)
}

/// A duration as people read it: seconds, minutes, hours or days.
fn age(micros: i64) -> String {
    let s = (micros / 1_000_000).max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// What the referral form holds: the choices made so far, kept across preview and errors.
#[derive(Debug, Default, Clone)]
pub struct Draft {
    /// `referral` or `alert`.
    pub kind: String,
    /// An alert to every organization a rule permits.
    pub all_permitted: bool,
    pub message_id: String,
    pub consent: String,
    pub purpose: String,
    pub recipients: Vec<String>,
    /// Field name to the values typed or chosen (several for a list).
    pub fields: std::collections::HashMap<String, Vec<String>>,
}

impl Draft {
    fn value(&self, field: &str) -> &str {
        self.fields.get(field).and_then(|v| v.first()).map_or("", String::as_str)
    }

    fn has(&self, field: &str, value: &str) -> bool {
        self.fields.get(field).is_some_and(|v| v.iter().any(|x| x == value))
    }
}

/// What the referral form is built from.
#[derive(Clone, Copy)]
pub struct ReferralForm<'a> {
    pub info: &'a pb::NetworkInfoResponse,
    pub own_org: &'a str,
    pub consents: &'a [crate::actions::HeldConsent],
    pub draft: &'a Draft,
}

/// The new-referral form, with problems beside their fields and, once asked for, the preview.
pub fn new_referral(
    frame: &Frame,
    csrf: &str,
    form: &ReferralForm,
    problems: &[(String, String)],
    preview: Option<&pb::DecideResponse>,
) -> Markup {
    let ReferralForm { info, own_org, consents, draft } = *form;
    let t = |m: Msg| m.text(frame.lang);
    let w = Wording::new(info, frame.lang.tag());
    let fields_of =
        |names: &[String]| names.iter().map(|f| w.field_named(&draft.kind, f)).collect::<Vec<_>>().join(", ");
    let problem_of = |field: &str| problems.iter().find(|(f, _)| f == field).map(|(_, p)| p.as_str());
    let general: Vec<&str> = problems.iter().filter(|(f, _)| f.is_empty()).map(|(_, p)| p.as_str()).collect();
    let alert = draft.kind == "alert";
    let kind = info.kinds.iter().find(|k| k.name == draft.kind);
    let action = if alert { "/alerts/new" } else { "/referrals/new" };
    let body = html! {
        p { (t(if alert { Msg::NewAlertIntro } else { Msg::NewReferralIntro })) }
        @if !problems.is_empty() {
            div.error role="alert" #form-problems {
                p { (t(Msg::FixFields)) }
                @for g in &general { p { (g) } }
            }
        }
        @if let Some(p) = preview {
            section #preview aria-labelledby="preview-title" {
                h2 #preview-title { (t(Msg::PreviewTitle)) }
                p.note role="status" { (t(Msg::NothingSentYet)) }
                table.list {
                    thead { tr { th { (t(Msg::Recipient)) } th { (t(Msg::State)) } th { (t(Msg::Fields)) } } }
                    tbody {
                        @for o in &p.outcomes {
                            @let d = o.decision.clone().unwrap_or_default();
                            tr data-recipient=(o.recipient) {
                                td { (org_name(info, &o.recipient)) }
                                @if d.allowed {
                                    td.state { (t(Msg::WillReceive)) }
                                    td {
                                        (fields_of(&d.released_fields))
                                        @if !d.withheld_fields.is_empty() { br; span.muted { (t(Msg::WithheldFields)) ": " (fields_of(&d.withheld_fields)) } }
                                    }
                                } @else {
                                    td.state { (t(Msg::Denied)) }
                                    td {
                                        @if let Some(words) = super::i18n::deny_words(&d.reason_code) { (words.text(frame.lang)) br; }
                                        span.muted { (d.reason_code) @if !d.reason_detail.is_empty() { ": " (d.reason_detail) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if consents.is_empty() && !alert {
            p.note { (t(Msg::NoConsents)) }
        }
        form method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="message_id" value=(draft.message_id);
            @if !alert { div.field {
                label for="consent" { (t(Msg::Consent)) }
                select #consent name="consent" required aria-describedby=[problem_of("consent").map(|_| "consent-problem")] {
                    option value="" { (t(Msg::Choose)) }
                    @for c in consents {
                        option value=(c.consent_id) selected[c.consent_id == draft.consent] {
                            (c.subject) " · " (c.state) " · " (short(&c.consent_id))
                        }
                    }
                }
                @if let Some(p) = problem_of("consent") { p.error #consent-problem { (p) } }
            } }
            fieldset.field {
                legend { (t(Msg::Recipients)) }
                @if alert {
                    div {
                        input type="checkbox" name="all_permitted" value="true" id="to-all" checked[draft.all_permitted];
                        " "
                        label.inline for="to-all" { (t(Msg::AllPermitted)) }
                    }
                }
                @for o in info.organizations.iter().filter(|o| o.id != own_org) {
                    div {
                        input type="checkbox" name="recipient" value=(o.id) id=(format!("to-{}", o.id)) checked[draft.recipients.contains(&o.id)];
                        " "
                        label.inline for=(format!("to-{}", o.id)) { (o.name) " (" (o.r#type) ")" }
                    }
                }
                @if let Some(p) = problem_of("recipient") { p.error { (p) } }
            }
            div.field {
                label for="purpose" { (t(Msg::Purpose)) }
                select #purpose name="purpose" required {
                    option value="" { (t(Msg::Choose)) }
                    @for p in &info.purposes {
                        option value=(p.id) selected[p.id == draft.purpose] { (w.purpose(&p.id)) " — " (w.purpose_description(&p.id)) }
                    }
                }
                @if let Some(p) = problem_of("purpose") { p.error { (p) } }
            }
            @if let Some(kind) = kind {
                h2 { (t(Msg::Fields)) }
                @for f in &kind.fields {
                    (field_input(frame.lang, w, f, draft, problem_of(&f.name)))
                }
            }
            div.actions {
                button.quiet type="submit" name="step" value="preview" { (t(Msg::Preview)) }
                @if preview.is_some() {
                    button type="submit" name="step" value="send" { (t(Msg::Send)) }
                }
            }
        }
    };
    page(frame, t(if alert { Msg::NewAlert } else { Msg::NewReferral }), body)
}

fn org_name<'a>(info: &'a pb::NetworkInfoResponse, id: &'a str) -> &'a str {
    info.organizations.iter().find(|o| o.id == id).map_or(id, |o| o.name.as_str())
}

/// One field of the form, by its schema type, with its problem tied to it.
fn field_input(lang: Lang, w: Wording, f: &pb::FieldInfo, draft: &Draft, problem: Option<&str>) -> Markup {
    let id = format!("f-{}", f.name);
    let name = format!("f.{}", f.name);
    let described = problem.map(|_| format!("{id}-problem"));
    let description = w.field_description(f);
    let hint = (!description.is_empty()).then(|| format!("{id}-hint"));
    let describedby = [described.clone(), hint.clone()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let describedby = (!describedby.is_empty()).then_some(describedby);
    html! {
        div.field {
            @if f.r#type == "list" {
                fieldset {
                    legend { (w.field(f)) @if f.required { " (" (Msg::Required.text(lang)) ")" } }
                    @for v in &f.values {
                        div {
                            input type="checkbox" name=(name) value=(v) id=(format!("{id}-{v}")) checked[draft.has(&f.name, v)];
                            " "
                            label.inline for=(format!("{id}-{v}")) { (w.value(f, v)) }
                        }
                    }
                }
            } @else {
                label for=(id) { (w.field(f)) @if f.required { " (" (Msg::Required.text(lang)) ")" } }
                @match f.r#type.as_str() {
                    "enum" => {
                        select id=(id) name=(name) required[f.required] aria-describedby=[describedby.clone()] aria-invalid=[problem.map(|_| "true")] {
                            option value="" { (Msg::Choose.text(lang)) }
                            @for v in &f.values { option value=(v) selected[draft.value(&f.name) == v] { (w.value(f, v)) } }
                        }
                    }
                    "integer" => {
                        input id=(id) name=(name) type="number" value=(draft.value(&f.name)) min=[f.min] max=[f.max]
                            required[f.required] aria-describedby=[describedby.clone()] aria-invalid=[problem.map(|_| "true")];
                    }
                    "date" => {
                        input id=(id) name=(name) type="date" value=(draft.value(&f.name))
                            required[f.required] aria-describedby=[describedby.clone()] aria-invalid=[problem.map(|_| "true")];
                    }
                    _ => {
                        input id=(id) name=(name) type="text" value=(draft.value(&f.name))
                            maxlength=[(f.max_len > 0).then_some(f.max_len)]
                            required[f.required] aria-describedby=[describedby.clone()] aria-invalid=[problem.map(|_| "true")];
                    }
                }
            }
            @if let Some(h) = &hint { p.muted id=(h) { (description) } }
            @if let (Some(p), Some(pid)) = (problem, &described) { p.error id=(pid) { (p) } }
        }
    }
}

/// The labels a consent can grant, with what each means to a survivor.
pub const LABELS: [(&str, Msg); 5] = [
    ("identifying", Msg::LabelIdentifying),
    ("contact", Msg::LabelContact),
    ("sensitive", Msg::LabelSensitive),
    ("operational", Msg::LabelOperational),
    ("location", Msg::LabelLocation),
];

/// A consent's details as typed, kept across the steps of recording it.
#[derive(Debug, Default, Clone)]
pub struct ConsentDraft {
    pub subject: String,
    pub purposes: Vec<String>,
    pub types: Vec<String>,
    pub labels: Vec<String>,
    /// `YYYY-MM-DD`.
    pub valid_until: String,
    pub method: String,
    pub language: String,
    pub evidence: String,
    /// For a renewal: the consent this one supersedes.
    pub supersedes: String,
}

fn consent_hidden(d: &ConsentDraft) -> Markup {
    html! {
        input type="hidden" name="subject" value=(d.subject);
        @for p in &d.purposes { input type="hidden" name="purpose" value=(p); }
        @for t in &d.types { input type="hidden" name="type" value=(t); }
        @for l in &d.labels { input type="hidden" name="label" value=(l); }
        input type="hidden" name="valid_until" value=(d.valid_until);
        input type="hidden" name="method" value=(d.method);
        input type="hidden" name="language" value=(d.language);
        @if !d.supersedes.is_empty() { input type="hidden" name="supersedes" value=(d.supersedes); }
    }
}

/// The consents this organization recorded.
pub fn consents(frame: &Frame, subject: &str, held: &[crate::actions::HeldConsent]) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let body = html! {
        p { a.button href="/consents/new" { (t(Msg::RecordConsent)) } }
        form.filters method="get" action="/consents" {
            div {
                label for="subject" { (t(Msg::Subject)) }
                input #subject type="text" name="subject" value=(subject) autocapitalize="none" spellcheck="false";
            }
            button type="submit" { (t(Msg::Search)) }
        }
        @if held.is_empty() { p { (t(Msg::NothingHere)) } } @else {
            table.list {
                thead { tr { th { (t(Msg::Subject)) } th { (t(Msg::State)) } th { (t(Msg::When)) } th { (t(Msg::Consent)) } } }
                tbody {
                    @for c in held {
                        tr {
                            td { (c.subject) }
                            td.state { (c.state) }
                            td { (when(c.updated_at_micros)) }
                            td { a href=(format!("/consents/{}", urlencode(&c.consent_id))) { (t(Msg::Open)) span.skip { " " (c.consent_id) } } }
                        }
                    }
                }
            }
        }
    };
    page(frame, t(Msg::Consents), body)
}

/// Step one: the consent's details.
pub fn consent_new(
    frame: &Frame,
    csrf: &str,
    info: &pb::NetworkInfoResponse,
    d: &ConsentDraft,
    problems: &[(String, String)],
) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let problem_of = |field: &str| problems.iter().find(|(f, _)| f == field).map(|(_, p)| p.as_str());
    let w = Wording::new(info, frame.lang.tag());
    let mut types: Vec<&str> = info
        .organizations
        .iter()
        .map(|o| o.r#type.as_str())
        .filter(|t| !matches!(*t, "auditor" | "operator"))
        .collect();
    types.sort();
    types.dedup();
    // The survivor's language: one the console prints in and the network has words in (every language
    // the console prints in when the two share none: the bundle's words then fall back to its first).
    let shared: Vec<Lang> =
        Lang::ALL.into_iter().filter(|l| info.languages.iter().any(|n| Lang::parse(n) == Some(*l))).collect();
    let languages = if shared.is_empty() { Lang::ALL.to_vec() } else { shared };
    let renewal = !d.supersedes.is_empty();
    let body = html! {
        @if renewal { p.note { (t(Msg::RenewIntro)) " " code { (d.supersedes) } } }
        p { (t(Msg::ConsentIntro)) }
        @if !problems.is_empty() { p.error role="alert" { (t(Msg::FixFields)) } }
        form method="post" action="/consents/new" novalidate {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="step" value="print";
            @if renewal {
                input type="hidden" name="supersedes" value=(d.supersedes);
                input type="hidden" name="subject" value=(d.subject);
            } @else {
                div.field {
                    label for="subject" { (t(Msg::SubjectOptional)) }
                    input #subject type="text" name="subject" value=(d.subject) autocapitalize="none" spellcheck="false";
                }
            }
            fieldset.field {
                legend { (t(Msg::Purposes)) }
                @for p in &info.purposes {
                    div { input type="checkbox" name="purpose" value=(p.id) id=(format!("purpose-{}", p.id)) checked[d.purposes.contains(&p.id)]; " " label.inline for=(format!("purpose-{}", p.id)) { (w.purpose(&p.id)) " — " (w.purpose_description(&p.id)) } }
                }
                @if let Some(p) = problem_of("purpose") { p.error { (p) } }
            }
            fieldset.field {
                legend { (t(Msg::RecipientTypes)) }
                @for ty in &types {
                    div { input type="checkbox" name="type" value=(ty) id=(format!("type-{ty}")) checked[d.types.iter().any(|x| x == ty)]; " " label.inline for=(format!("type-{ty}")) { (ty) } }
                }
                @if let Some(p) = problem_of("type") { p.error { (p) } }
            }
            fieldset.field {
                legend { (t(Msg::Labels)) }
                @for (label, words) in LABELS {
                    div { input type="checkbox" name="label" value=(label) id=(format!("label-{label}")) checked[d.labels.iter().any(|x| x == label)]; " " label.inline for=(format!("label-{label}")) { (label) " — " (words.text(frame.lang)) } }
                }
                @if let Some(p) = problem_of("label") { p.error { (p) } }
            }
            div.field {
                label for="valid_until" { (t(Msg::ValidUntil)) }
                input #valid_until type="date" name="valid_until" value=(d.valid_until) required aria-describedby=[problem_of("valid_until").map(|_| "valid-until-problem")];
                @if let Some(p) = problem_of("valid_until") { p.error #valid-until-problem { (p) } }
            }
            div.field {
                label for="method" { (t(Msg::Method)) }
                select #method name="method" {
                    @for m in ["written", "verbal_witnessed", "electronic"] { option value=(m) selected[d.method == m] { (m) } }
                }
            }
            div.field {
                label for="language" { (t(Msg::SurvivorLanguage)) }
                select #language name="language" {
                    @for l in &languages { option value=(l.tag()) selected[d.language == l.tag()] lang=(l.tag()) { (l.name()) } }
                }
            }
            button type="submit" { (t(Msg::PrintForm)) }
        }
    };
    page(frame, t(if renewal { Msg::RenewConsent } else { Msg::RecordConsent }), body)
}

/// What a consent says, in the survivor's language: the body of the form to sign and of the copy.
fn consent_terms(lang: Lang, info: &pb::NetworkInfoResponse, d: &ConsentDraft) -> Markup {
    let t = |m: Msg| m.text(lang);
    let w = Wording::new(info, lang.tag());
    html! {
        dl.fields {
            dt { (t(Msg::CopyWhat)) }
            dd { ul { @for (label, words) in LABELS { @if d.labels.iter().any(|l| l == label) { li { (words.text(lang)) } } } } }
            dt { (t(Msg::CopyWith)) }
            dd { ul { @for ty in &d.types { li { (ty) } } } }
            dt { (t(Msg::CopyWhy)) }
            dd { ul { @for p in &d.purposes { li { strong { (w.purpose(p)) } ": " (w.purpose_description(p)) } } } }
            dt { (t(Msg::CopyUntil)) } dd { (d.valid_until) }
        }
        p { (t(Msg::CopyWithdraw)) }
    }
}

/// Step two: the form to print and sign, then the scan's hash and the recording.
pub fn consent_print(
    frame: &Frame,
    csrf: &str,
    info: &pb::NetworkInfoResponse,
    d: &ConsentDraft,
    problem: Option<&str>,
) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let lang = Lang::parse(&d.language).unwrap_or(frame.lang);
    let body = html! {
        section.printable lang=(lang.tag()) {
            h2 { (Msg::CopyTitle.text(lang)) }
            (consent_terms(lang, info, d))
            p { "____________________________" br; (Msg::Name.text(lang)) " · " (Msg::When.text(lang)) }
        }
        form.actions method="post" action="/consents/new" enctype="multipart/form-data" novalidate {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="step" value="record";
            (consent_hidden(d))
            div.field {
                label for="scan" { (t(Msg::ScanUpload)) }
                input #scan type="file" name="scan" accept="application/pdf,image/*"
                    aria-describedby=[problem.map(|_| "evidence-problem")] aria-invalid=[problem.map(|_| "true")];
            }
            div.field {
                label for="evidence" { (t(Msg::EvidenceHash)) }
                input #evidence type="text" name="evidence" value=(d.evidence) pattern="[0-9a-fA-F]{64}" autocomplete="off" spellcheck="false"
                    aria-describedby=[problem.map(|_| "evidence-problem")] aria-invalid=[problem.map(|_| "true")];
                @if let Some(p) = problem { p.error #evidence-problem { (p) } }
            }
            button type="submit" { (t(Msg::Record)) }
        }
    };
    page(frame, t(Msg::PrintForm), body)
}

/// A recorded consent: what it says, its state, and what may be done with it.
/// Whether the node keeps the scan of a consent's signed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanState {
    Kept,
    /// It was uploaded but could not be kept (the consent is recorded with its hash).
    NotKept,
    None,
}

pub fn consent_show(frame: &Frame, csrf: &str, record: &pb::ConsentRecord, scan: ScanState) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let id = urlencode(&record.consent_id);
    let body = html! {
        @if scan == ScanState::NotKept { p.error role="alert" { (t(Msg::ScanNotKept)) } }
        dl.fields {
            dt { (t(Msg::Consent)) } dd { (record.consent_id) }
            dt { (t(Msg::State)) } dd.state #consent-state { (record.state) @if !record.revocation_reason.is_empty() { " (" (record.revocation_reason) ")" } }
        }
        p {
            a.button href=(format!("/consents/{id}/copy")) { (t(Msg::SurvivorCopy)) } " "
            a.button href=(format!("/consents/{id}/copy?discreet=1")) { (t(Msg::DiscreetCopy)) } " "
            a.button href=(format!("/referrals/new?consent={id}")) { (t(Msg::NewReferral)) }
            @if record.state == "given" { " " a.button href=(format!("/consents/{id}/renew")) { (t(Msg::RenewConsent)) } }
            @if scan == ScanState::Kept { " " a.button href=(format!("/consents/{id}/scan")) { (t(Msg::ScanDownload)) } }
        }
        pre.receipt { (record.receipt_json) }
        @if !matches!(record.state.as_str(), "revoked" | "withdrawn" | "expired" | "superseded") {
            form.actions method="post" action=(format!("/consents/{id}/revoke")) {
                input type="hidden" name="csrf" value=(csrf);
                div {
                    label for="reason" { (t(Msg::RevokeReason)) }
                    select #reason name="reason" { @for r in ["withdrawn_by_subject", "revoked_by_org", "recorded_in_error"] { option value=(r) { (r) } } }
                }
                button type="submit" { (t(Msg::Revoke)) }
            }
        }
    };
    page(frame, t(Msg::Consent), body)
}

/// The survivor's copy, in the consent's language; the discreet one names no organization and no
/// purpose: only the reference, the dates and the organization's phone number.
pub fn consent_copy(
    frame: &Frame,
    info: &pb::NetworkInfoResponse,
    record: &pb::ConsentRecord,
    d: &ConsentDraft,
    discreet: bool,
    phone: Option<&str>,
) -> Markup {
    let lang = Lang::parse(&d.language).unwrap_or(frame.lang);
    let t = |m: Msg| m.text(lang);
    let fingerprint = hex::encode(sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        record.receipt_jws.as_bytes(),
    )));
    let body = html! {
        section.printable lang=(lang.tag()) #copy {
            @if discreet {
                p { (t(Msg::CopyDiscreetIntro)) }
                dl.fields {
                    dt { (t(Msg::Reference)) } dd { (record.consent_id) }
                    dt { (t(Msg::From2)) } dd { (when(record.registered_at_micros).get(..10).unwrap_or_default()) }
                    dt { (t(Msg::CopyUntil)) } dd { (d.valid_until) }
                }
                @if let Some(phone) = phone { p { (t(Msg::CopyCall)) " " strong { (phone) } "." } }
            } @else {
                h2 { (t(Msg::CopyTitle)) }
                (consent_terms(lang, info, d))
                dl.fields {
                    dt { (t(Msg::Reference)) } dd { (record.consent_id) }
                    dt { (t(Msg::CopyReceipt)) } dd { code.wrap { (fingerprint) } }
                }
                @if let Some(phone) = phone { p { (t(Msg::CopyCall)) " " strong { (phone) } "." } }
            }
        }
    };
    let title = if discreet { Msg::DiscreetCopy } else { Msg::SurvivorCopy };
    page(frame, title.text(frame.lang), body)
}

/// A consent's details, from its receipt as the gateway returns it (empty when it cannot be read).
pub fn draft_of(record: &pb::ConsentRecord) -> ConsentDraft {
    let Ok(r) = serde_json::from_str::<haven_trust::receipt::ConsentReceipt>(&record.receipt_json) else {
        return ConsentDraft::default();
    };
    let types = r.recipient_types.iter().map(|t| t.as_str().to_owned());
    ConsentDraft {
        subject: r.subject,
        purposes: r.purposes,
        types: types.chain(r.recipient_orgs.iter().map(ToString::to_string)).collect(),
        labels: r.labels,
        valid_until: r.valid_until.date().to_string(),
        method: r.method.as_str().to_owned(),
        language: r.language,
        evidence: r.evidence_sha256,
        supersedes: String::new(),
    }
}

/// What an audit search asked for, kept in the form and in the links.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct AuditSearch {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub person: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub message_id: String,
    #[serde(default)]
    pub cursor: u64,
}

impl AuditSearch {
    /// The query string of this search (without the cursor).
    pub fn query(&self) -> String {
        [
            ("from", &self.from),
            ("until", &self.until),
            ("org", &self.org),
            ("person", &self.person),
            ("action", &self.action),
            ("subject", &self.subject),
            ("message_id", &self.message_id),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// The audit search, its results and the export.
pub fn audit(frame: &Frame, q: &AuditSearch, found: Option<&pb::AuditQueryResponse>, problem: Option<&str>) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let text_field = |id: &str, label: Msg, value: &str| {
        html! {
            div { label for=(id) { (t(label)) } input id=(id) type="text" name=(id) value=(value) autocapitalize="none" spellcheck="false"; }
        }
    };
    let body = html! {
        p { (t(Msg::AuditIntro)) }
        @if let Some(p) = problem { p.error role="alert" #audit-problem { (p) } }
        form.filters method="get" action="/audit" {
            div { label for="from" { (t(Msg::FromDate)) } input #from type="date" name="from" value=(q.from) required aria-describedby=[problem.map(|_| "audit-problem")]; }
            div { label for="until" { (t(Msg::UntilDate)) } input #until type="date" name="until" value=(q.until) required; }
            (text_field("org", Msg::Organization, &q.org))
            (text_field("person", Msg::Name, &q.person))
            (text_field("action", Msg::Action, &q.action))
            (text_field("subject", Msg::Subject, &q.subject))
            (text_field("message_id", Msg::Message, &q.message_id))
            button type="submit" { (t(Msg::Search)) }
        }
        @if let Some(found) = found {
            @if found.entries.is_empty() { p { (t(Msg::NothingHere)) } } @else {
                table.list #audit-entries {
                    thead { tr { th { "#" } th { (t(Msg::When)) } th { (t(Msg::Organization)) } th { (t(Msg::Name)) } th { (t(Msg::Action)) } th { (t(Msg::Message)) } th { (t(Msg::State)) } } }
                    tbody {
                        @for e in &found.entries {
                            tr {
                                td { a href=(format!("/audit/entries/{}?at={}", e.seq, e.time_micros)) { (e.seq) } }
                                td { (when(e.time_micros)) }
                                td { (e.actor_org) }
                                td { (e.actor_person) " (" (e.actor_role) ")" }
                                td { (e.action) }
                                td { (e.object_id) }
                                td { (e.decision) }
                            }
                        }
                    }
                }
                @if found.next_cursor > 0 {
                    p { a href=(format!("/audit?{}&cursor={}", q.query(), found.next_cursor)) { (t(Msg::NextPage)) } }
                }
            }
            h2 { (t(Msg::Export)) }
            p { a.button href=(format!("/audit/export?{}", q.query())) download="haven-audit-export.jsonl" { (t(Msg::Export)) } }
            p { (t(Msg::ExportHow)) }
            pre.receipt { "haven-gateway audit verify haven-audit-export.jsonl --key CERTS_DIR/gateway/signing.crt" }
        }
    };
    page(frame, t(Msg::Audit), body)
}

/// One audit entry, every field, and whether its inclusion proof verifies.
pub fn audit_entry(frame: &Frame, e: &pb::AuditEntry, proof: &crate::actions::Inclusion) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let rows: [(&str, String); 16] = [
        ("seq", e.seq.to_string()),
        ("time", when(e.time_micros)),
        ("actor_org", e.actor_org.clone()),
        ("actor_person", e.actor_person.clone()),
        ("actor_role", e.actor_role.clone()),
        ("action", e.action.clone()),
        ("object_id", e.object_id.clone()),
        ("counterparty", e.counterparty.clone()),
        ("subject", e.subject.clone()),
        ("purpose", e.purpose.clone()),
        ("consent_id", e.consent_id.clone()),
        ("decision", e.decision.clone()),
        ("reason", e.reason.clone()),
        ("released_fields", e.released_fields.join(", ")),
        ("withheld_fields", e.withheld_fields.join(", ")),
        ("bundle_version", e.bundle_version.clone()),
    ];
    let body = html! {
        p #proof .state {
            (t(Msg::Proof)) ": "
            @match proof {
                crate::actions::Inclusion::Verified { tree_size } => span #proof-state { (t(Msg::ProofVerified)) " " (tree_size) },
                crate::actions::Inclusion::Failed(why) => span.error #proof-state { (t(Msg::ProofFailed)) ": " (why) },
                crate::actions::Inclusion::NotYet => span #proof-state { (t(Msg::ProofNotYet)) },
            }
        }
        dl.fields { @for (k, v) in &rows { @if !v.is_empty() { dt { (k) } dd { (v) } } } }
    };
    page(frame, &format!("{} {}", t(Msg::Entry), e.seq), body)
}

/// The subject access report: disclosures of one subject, on screen and printable.
pub fn report(
    frame: &Frame,
    subject: &str,
    controller: &str,
    found: Option<&pb::SubjectAccessResponse>,
    problem: Option<&str>,
) -> Markup {
    let t = |m: Msg| m.text(frame.lang);
    let body = html! {
        p { (t(Msg::ReportIntro)) }
        @if let Some(p) = problem { p.error role="alert" { (p) } }
        form.filters method="get" action="/report" {
            div { label for="subject" { (t(Msg::Subject)) } input #subject type="text" name="subject" value=(subject) required autocapitalize="none" spellcheck="false"; }
            @if frame.who.is_some_and(|(who, _)| who.role == Role::Auditor) {
                div { label for="controller" { (t(Msg::Controller)) } input #controller type="text" name="controller" value=(controller) autocapitalize="none" spellcheck="false"; }
            }
            button type="submit" { (t(Msg::Search)) }
        }
        @if let Some(r) = found {
            section.printable #report {
                @if r.disclosures.is_empty() { p { (t(Msg::NothingHere)) } } @else {
                    table.list {
                        thead { tr { th { (t(Msg::When)) } th { (t(Msg::Recipient)) } th { (t(Msg::Purpose)) } th { (t(Msg::Fields)) } th { (t(Msg::State)) } } }
                        tbody {
                            @for d in &r.disclosures {
                                tr {
                                    td { (when(d.time_micros)) }
                                    td { (d.recipient) }
                                    td { (d.purpose) }
                                    td { (d.released_fields.join(", ")) }
                                    td {
                                        @if d.action == "viewed" {
                                            (t(Msg::ViewedBy)) " "
                                            @if d.viewer.is_empty() { (d.viewer_role) } @else { (d.viewer) " (" (d.viewer_role) ")" }
                                        } @else { (d.action) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(frame, t(Msg::Report), body)
}
