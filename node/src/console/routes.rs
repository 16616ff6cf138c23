//! The console's routes. Each handler signs the person in from their session, calls one person action
//! ([`crate::actions`], which checks the role), and renders a page. A state-changing request must
//! pass the `Origin` check and carry its form's token first.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures::Stream;
use maud::Markup;
use serde::Deserialize;

use haven_proto::v1 as pb;
use haven_trust::ids::PersonId;

use super::i18n::{Lang, Msg};
use super::pages::{self, Frame, SignInNote};
use super::session::{self, Session, Stage};
use super::{Console, Peer};
use crate::access::{self, Counted, SignIn, Source};
use crate::actions::{self, Detail, Listing};
use crate::network::Wording;
use crate::password::SignInError;
use crate::people::Person;
use crate::totp::{self, Checked};
use sha2::Digest;

/// The language cookie.
const LANG_COOKIE: &str = "haven-lang";

/// The console's routes, with the security headers on every response.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-in/code", get(code_page).post(code))
        .route("/account/second-factor", get(enroll_page).post(enroll))
        .route("/sign-out", post(sign_out))
        .route("/language", get(language))
        .route("/inbox", get(inbox))
        .route("/inbox/items", get(inbox_items))
        .route("/sent", get(sent))
        .route("/sent/items", get(sent_items))
        .route("/messages/{id}", get(message))
        .route("/messages/{id}/recipients", get(recipients))
        .route("/messages/{id}/status", post(message_status))
        .route("/messages/{id}/assign", post(message_assign))
        .route("/events", get(events))
        .route("/people", get(people).post(add_person))
        .route("/people/{name}/{change}", post(person_change))
        .route("/consents", get(consents))
        .route(
            "/consents/new",
            get(consent_new)
                .post(consent_form)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD_BYTES + 64 * 1024)),
        )
        .route("/consents/{id}", get(consent_show))
        .route("/consents/{id}/renew", get(consent_renew))
        .route("/consents/{id}/scan", get(consent_scan))
        .route("/consents/{id}/copy", get(consent_copy))
        .route("/consents/{id}/revoke", post(consent_revoke))
        .route("/referrals/new", get(new_referral).post(referral_form))
        .route("/alerts/new", get(new_alert).post(alert_form))
        .route("/audit", get(audit))
        .route("/audit/entries/{seq}", get(audit_entry))
        .route("/audit/export", get(audit_export))
        .route("/report", get(report))
        .route("/health", get(health))
        .route("/verification", get(verification))
        .route("/keys", post(make_key))
        .route("/keys/{kid}/withdraw", post(withdraw_key))
        .route("/keys/log", get(key_log_download))
        .route("/assets/{name}", get(super::assets::serve))
        .fallback(not_found)
        .layer(axum::middleware::map_response(super::security_headers))
        .with_state(console)
}

/// The person's language: their choice (a cookie), else their browser's.
fn lang_of(headers: &HeaderMap) -> Lang {
    session::cookie(headers, LANG_COOKIE).and_then(Lang::parse).unwrap_or_else(|| {
        Lang::from_accept_language(headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or(""))
    })
}

fn client(console: &Console, parts: &Parts) -> IpAddr {
    let peer = parts.extensions.get::<Peer>().map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
    console.origin.client(peer, &parts.headers)
}

/// A signed-in request: the session, the person's language, where they are.
pub struct Signed {
    pub session: Session,
    pub lang: Lang,
    pub client: IpAddr,
    /// The request's path and query, for the language switch.
    pub here: String,
    /// The session id from the cookie (the live-update stream checks the session again with it).
    session_id: String,
}

impl Signed {
    fn source(&self) -> Source {
        Source::Console(self.client.to_string())
    }

    fn frame<'a>(&'a self, console: &Console) -> Frame<'a> {
        Frame {
            lang: self.lang,
            who: Some((&self.session.person, &self.session.csrf)),
            here: &self.here,
            alarm: alarm(console),
        }
    }
}

/// The witness's standing alarm, if any, for the top of every page.
fn alarm(console: &Console) -> Option<String> {
    let report = console.witness.report();
    report.state.is_alarm().then(|| format!("Audit witness alarm ({}): {}", report.state.as_str(), report.detail))
}

/// Signs a request in from its session cookie. Unless `halfway` is allowed, a session still waiting
/// for its second factor is sent to finish it.
async fn signed_in(parts: &Parts, console: &Console, halfway: bool) -> Result<Signed, Response> {
    let lang = lang_of(&parts.headers);
    let here = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    // The live-update stream checks the session without keeping it alive.
    let touch = parts.uri.path() != "/events";
    let ended = match session::cookie(&parts.headers, console.origin.session_cookie()) {
        None => None,
        Some(id) => match console.sessions.find(id, touch).await {
            Ok(Ok(session)) if halfway || session.stage == Stage::Full => {
                let (client, session_id) = (client(console, parts), id.to_owned());
                return Ok(Signed { session, lang, client, here, session_id });
            }
            Ok(Ok(_)) => return Err(go(parts, "/sign-in/code")),
            Ok(Err(ended)) => Some(ended),
            Err(e) => return Err(server_error(console, lang, &e.to_string())),
        },
    };
    Err(go(parts, if ended.is_some() { "/sign-in?ended=1" } else { "/sign-in" }))
}

/// A redirect; to an htmx request, the header that makes htmx load the page.
fn go(parts: &Parts, to: &'static str) -> Response {
    if parts.headers.contains_key("hx-request") {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert("hx-redirect", HeaderValue::from_static(to));
        return r;
    }
    Redirect::to(to).into_response()
}

impl FromRequestParts<Arc<Console>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Signed, Response> {
        signed_in(parts, console, false).await
    }
}

/// A session at any stage: for the second factor's own pages.
pub struct Halfway(pub Signed);

impl FromRequestParts<Arc<Console>> for Halfway {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Halfway, Response> {
        signed_in(parts, console, true).await.map(Halfway)
    }
}

/// A form that carries its CSRF token.
pub trait Tokened {
    fn csrf(&self) -> &str;
}

/// A state-changing request: signed in (at any stage when `HALFWAY`), from the console's own origin,
/// carrying its session's token, and its form. Every post handler takes one, so none can skip the
/// checks.
pub struct Posted<T, const HALFWAY: bool = false> {
    pub signed: Signed,
    pub form: T,
    /// The files of a `multipart/form-data` post (a consent form's scan), by field name.
    pub files: Vec<Upload>,
}

/// A file posted with a form.
pub struct Upload {
    pub field: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The largest file a form may carry: a scanned consent form (a few pages, or a phone photo).
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;

impl<T, const HALFWAY: bool> axum::extract::FromRequest<Arc<Console>> for Posted<T, HALFWAY>
where
    T: serde::de::DeserializeOwned + Tokened + Send,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, console: &Arc<Console>) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let signed = signed_in(&parts, console, HALFWAY).await?;
        let headers = parts.headers.clone();
        // The origin first: a cross-site post is refused before its body is read.
        if !console.origin.allows(&headers) {
            return Err(problem(console, signed.lang, Some(&signed), StatusCode::FORBIDDEN, Msg::RefusedCrossSite, ""));
        }
        let bad = |e: String| refused(console, &signed, &tonic::Status::invalid_argument(e));
        let request = axum::extract::Request::from_parts(parts, body);
        let multipart = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        let (form, files) = if multipart {
            let (pairs, files) = read_multipart(request).await.map_err(bad)?;
            let encoded = serde_urlencoded::to_string(&pairs).map_err(|e| bad(e.to_string()))?;
            (serde_urlencoded::from_str::<T>(&encoded).map_err(|e| bad(e.to_string()))?, files)
        } else {
            let Form(form) = Form::<T>::from_request(request, &()).await.map_err(|e| bad(e.body_text()))?;
            (form, Vec::new())
        };
        if !session::same_secret(form.csrf(), &signed.session.csrf) {
            return Err(problem(console, signed.lang, Some(&signed), StatusCode::FORBIDDEN, Msg::RefusedCrossSite, ""));
        }
        Ok(Posted { signed, form, files })
    }
}

/// Reads a `multipart/form-data` body: its text fields as pairs, its non-empty files apart. A file
/// over [`MAX_UPLOAD_BYTES`] (the route's body limit) or a malformed body is refused with its reason.
async fn read_multipart(request: axum::extract::Request) -> Result<(Vec<(String, String)>, Vec<Upload>), String> {
    use axum::extract::Multipart;
    let mut multipart =
        <Multipart as axum::extract::FromRequest<()>>::from_request(request, &()).await.map_err(|e| e.body_text())?;
    let why = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the file is over the {} MiB limit; scan the form at a lower resolution, or as a PDF",
                MAX_UPLOAD_BYTES / (1024 * 1024)
            )
        } else {
            e.body_text()
        }
    };
    let (mut pairs, mut files) = (Vec::new(), Vec::new());
    while let Some(field) = multipart.next_field().await.map_err(why)? {
        let name = field.name().unwrap_or_default().to_owned();
        if field.file_name().is_some() {
            let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
            let bytes = field.bytes().await.map_err(why)?;
            if !bytes.is_empty() {
                files.push(Upload { field: name, content_type, bytes: bytes.to_vec() });
            }
        } else {
            pairs.push((name, field.text().await.map_err(why)?));
        }
    }
    Ok((pairs, files))
}

/// A connection to the node's database, or the error page.
async fn connection(console: &Console, lang: Lang) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, Response> {
    console.store.pool().acquire().await.map_err(|e| server_error(console, lang, &e.to_string()))
}

fn html(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

fn problem(
    console: &Console,
    lang: Lang,
    who: Option<&Signed>,
    code: StatusCode,
    title: Msg,
    detail: &str,
) -> Response {
    let frame = match who {
        Some(s) => s.frame(console),
        None => Frame { lang, who: None, here: "/", alarm: None },
    };
    (code, html(pages::problem(&frame, title, detail))).into_response()
}

fn server_error(console: &Console, lang: Lang, error: &str) -> Response {
    tracing::error!(%error, "the console could not answer a request");
    problem(console, lang, None, StatusCode::INTERNAL_SERVER_ERROR, Msg::ServerError, "")
}

/// An action's refusal as a page with the matching HTTP status and the action's own reason.
fn refused(console: &Console, signed: &Signed, s: &tonic::Status) -> Response {
    use tonic::Code;
    let (code, title) = match s.code() {
        Code::PermissionDenied | Code::Unauthenticated => (StatusCode::FORBIDDEN, Msg::Forbidden),
        Code::NotFound => (StatusCode::NOT_FOUND, Msg::NotFound),
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => {
            (StatusCode::BAD_REQUEST, Msg::BadRequest)
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
            (StatusCode::SERVICE_UNAVAILABLE, Msg::Unavailable)
        }
        _ => {
            tracing::error!(error = %s.message(), "a console action failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Msg::ServerError)
        }
    };
    let detail = if code == StatusCode::INTERNAL_SERVER_ERROR { "" } else { s.message() };
    problem(console, signed.lang, Some(signed), code, title, detail)
}

/// Each role's first page.
async fn home(signed: Signed) -> Redirect {
    let who = &signed.session.person;
    if actions::may_read_mail(who).is_ok() {
        Redirect::to("/inbox")
    } else if actions::may_administer(who).is_ok() {
        Redirect::to("/health")
    } else {
        Redirect::to("/verification")
    }
}

async fn not_found(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    problem(&console, lang_of(&headers), None, StatusCode::NOT_FOUND, Msg::NotFound, "")
}

#[derive(Deserialize)]
struct SignInQuery {
    #[serde(default)]
    ended: Option<String>,
}

async fn sign_in_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<SignInQuery>,
) -> Response {
    let note = if q.ended.is_some() { SignInNote::Ended } else { SignInNote::None };
    sign_in_form(&console, lang_of(&headers), "", note, StatusCode::OK)
}

/// The sign-in form with a new token, set in a cookie beside it (checked on post).
fn sign_in_form(console: &Console, lang: Lang, name: &str, note: SignInNote, code: StatusCode) -> Response {
    let token = session::random_token();
    let frame = Frame { lang, who: None, here: "/sign-in", alarm: None };
    let mut r = (code, html(pages::sign_in(&frame, &token, name, note))).into_response();
    set_cookie(&mut r, console.origin.cookie(console.origin.sign_in_cookie(), &token, Some(3600)));
    r
}

/// Adds a `Set-Cookie` header (cookie values here are tokens and tags, always valid header text).
fn set_cookie(r: &mut Response, cookie: String) {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
}

async fn sign_in(
    State(console): State<Arc<Console>>,
    PeerOf(peer): PeerOf,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let lang = lang_of(&headers);
    let name = form.name.trim();
    let token_ok = session::cookie(&headers, console.origin.sign_in_cookie())
        .is_some_and(|cookie| !form.token.is_empty() && session::same_secret(cookie, &form.token));
    if !console.origin.allows(&headers) || !token_ok {
        return sign_in_form(&console, lang, name, SignInNote::CrossSite, StatusCode::FORBIDDEN);
    }
    let address = console.origin.client(peer, &headers).to_string();
    let source = Source::Console(address.clone());
    let now = console.clock.now_micros();
    let since = now - session::FAILURE_WINDOW_MICROS;
    let mut conn = match connection(&console, lang).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // The limits are checked before any hash: a name or an address that waits costs nothing.
    let mut waiting = None;
    for (counted, key, limit) in [
        (Counted::Name, name, session::FAILURES_PER_NAME),
        (Counted::Address, address.as_str(), session::FAILURES_PER_ADDRESS),
    ] {
        match access::failures(&mut conn, counted, key, since).await {
            Ok((count, oldest)) if count >= limit => {
                waiting = Some((counted, oldest.unwrap_or(now)));
                break;
            }
            Ok(_) => {}
            Err(e) => return server_error(&console, lang, &e.to_string()),
        }
    }
    if let Some((counted, oldest)) = waiting {
        let until = pages::when(oldest + session::FAILURE_WINDOW_MICROS + 60_000_000);
        if let Err(e) = access::sign_in(&mut conn, name, "", SignIn::Waited, &source, now).await {
            return server_error(&console, lang, &e.to_string());
        }
        let note = SignInNote::Wait { for_name: counted == Counted::Name, until };
        return sign_in_form(&console, lang, name, note, StatusCode::TOO_MANY_REQUESTS);
    }
    drop(conn);
    let verified = console.passwords.verify(name, &form.password).await;
    let mut conn = match connection(&console, lang).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = console.clock.now_micros();
    match verified {
        Ok(person) => {
            // The second factor comes next for a person who enrolled one, or whose role requires it.
            let enrolled = match console.second_factor.enrolled(&person.name).await {
                Ok(e) => e,
                Err(e) => return server_error(&console, lang, &e.to_string()),
            };
            let (stage, next) = if enrolled {
                (Stage::Password, "/sign-in/code")
            } else if totp::required(person.role) {
                (Stage::Password, "/account/second-factor")
            } else {
                (Stage::Full, "/")
            };
            let id = match console.sessions.start(&person, stage).await {
                Ok((id, _)) => id,
                Err(e) => return server_error(&console, lang, &e.to_string()),
            };
            if stage == Stage::Full
                && let Err(e) = access::sign_in(
                    &mut conn,
                    person.name.as_str(),
                    person.role.as_str(),
                    SignIn::SignedIn,
                    &source,
                    now,
                )
                .await
            {
                return server_error(&console, lang, &e.to_string());
            }
            let mut r = Redirect::to(next).into_response();
            set_cookie(&mut r, console.origin.cookie(console.origin.session_cookie(), &id, None));
            set_cookie(&mut r, console.origin.cookie(console.origin.sign_in_cookie(), "", Some(0)));
            r
        }
        Err(SignInError::Refused) | Err(SignInError::Disabled(_)) => {
            let disabled = matches!(verified, Err(SignInError::Disabled(_)));
            if let Err(e) = access::sign_in(&mut conn, name, "", SignIn::Failed, &source, now).await {
                return server_error(&console, lang, &e.to_string());
            }
            let note = if disabled { SignInNote::Disabled } else { SignInNote::Wrong };
            sign_in_form(&console, lang, name, note, StatusCode::UNAUTHORIZED)
        }
        Err(e) => server_error(&console, lang, &e.to_string()),
    }
}

/// The connection's peer address, as an extractor.
pub struct PeerOf(pub std::net::SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerOf {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<PeerOf, Infallible> {
        Ok(PeerOf(parts.extensions.get::<Peer>().map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0)))
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// A form with repeated names (checkboxes), as posted.
#[derive(Deserialize)]
#[serde(transparent)]
struct Pairs(Vec<(String, String)>);

impl Tokened for Pairs {
    fn csrf(&self) -> &str {
        self.0.iter().find(|(k, _)| k == "csrf").map_or("", |(_, v)| v.as_str())
    }
}

macro_rules! tokened {
    ($($form:ty),*) => {$(
        impl Tokened for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        }
    )*};
}
tokened!(CsrfForm, StatusForm, CodeForm, PersonForm);

async fn sign_out(State(console): State<Arc<Console>>, posted: Posted<CsrfForm>) -> Response {
    let signed = posted.signed;
    let person = &signed.session.person;
    let ended = console.sessions.end(&signed.session).await;
    let logged = match console.store.pool().acquire().await {
        Ok(mut conn) => {
            access::sign_in(
                &mut conn,
                person.name.as_str(),
                person.role.as_str(),
                SignIn::SignedOut,
                &signed.source(),
                console.clock.now_micros(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = ended.and(logged) {
        return server_error(&console, signed.lang, &e.to_string());
    }
    let mut r = Redirect::to("/sign-in").into_response();
    set_cookie(&mut r, console.origin.cookie(console.origin.session_cookie(), "", Some(0)));
    r
}

#[derive(Deserialize)]
struct LanguageQuery {
    #[serde(default)]
    lang: String,
    #[serde(default)]
    back: String,
}

/// Sets the language cookie and goes back to a page of this console (never elsewhere).
async fn language(State(console): State<Arc<Console>>, Query(q): Query<LanguageQuery>) -> Response {
    let back = if q.back.starts_with('/') && !q.back.starts_with("//") && !q.back.contains('\\') {
        q.back.as_str()
    } else {
        "/"
    };
    let mut r = Redirect::to(back).into_response();
    if let Some(lang) = Lang::parse(&q.lang) {
        set_cookie(&mut r, console.origin.cookie(LANG_COOKIE, lang.tag(), Some(365 * 24 * 3600)));
    }
    r
}

#[derive(Deserialize)]
struct KindQuery {
    #[serde(default)]
    kind: String,
    /// Only what is assigned to the person ("mine").
    #[serde(default)]
    mine: Option<String>,
    #[serde(default)]
    state: String,
}

async fn inbox_list(console: &Console, signed: &Signed, q: &KindQuery) -> Result<Vec<pb::InboxItem>, Response> {
    let kind = if matches!(q.kind.as_str(), "referral" | "alert") { q.kind.as_str() } else { "" };
    let state = if pages::STATES.contains(&q.state.as_str()) { q.state.as_str() } else { "" };
    let listing = Listing { kind, mine: q.mine.is_some(), state };
    actions::inbox(
        &console.store,
        &console.clock,
        &signed.session.person,
        &signed.source(),
        listing,
        100,
        Detail::Metadata,
    )
    .await
    .map_err(|s| refused(console, signed, &s))
}

/// The network's description for the words of purposes, fields and codes: the node's copy, or a
/// fetch bounded so that a gateway that is down costs a page at most two seconds. Without it, pages
/// show identifiers.
async fn network_words(console: &Console, who: &Person) -> Option<Arc<pb::NetworkInfoResponse>> {
    let fetch = actions::network_info(&console.network, &console.link, who);
    tokio::time::timeout(std::time::Duration::from_secs(2), fetch).await.ok()?.ok()
}

async fn inbox(State(console): State<Arc<Console>>, signed: Signed, Query(q): Query<KindQuery>) -> Response {
    let info = network_words(&console, &signed.session.person).await;
    let w = Wording::of(info.as_deref(), signed.lang.tag());
    match inbox_list(&console, &signed, &q).await {
        Ok(items) => html(pages::inbox(&signed.frame(&console), w, &q.kind, q.mine.is_some(), &q.state, &items)),
        Err(r) => r,
    }
}

async fn inbox_items(State(console): State<Arc<Console>>, signed: Signed, Query(q): Query<KindQuery>) -> Response {
    let info = network_words(&console, &signed.session.person).await;
    let w = Wording::of(info.as_deref(), signed.lang.tag());
    match inbox_list(&console, &signed, &q).await {
        Ok(items) => html(pages::inbox_items(signed.lang, w, &items)),
        Err(r) => r,
    }
}

async fn sent_list(console: &Console, signed: &Signed) -> Result<Vec<pb::SentMessage>, Response> {
    actions::list_sent(&console.store, &signed.session.person, "", 100).await.map_err(|s| refused(console, signed, &s))
}

async fn sent(State(console): State<Arc<Console>>, signed: Signed) -> Response {
    let info = network_words(&console, &signed.session.person).await;
    let w = Wording::of(info.as_deref(), signed.lang.tag());
    match sent_list(&console, &signed).await {
        Ok(messages) => html(pages::sent_list(&signed.frame(&console), w, &messages)),
        Err(r) => r,
    }
}

async fn sent_items(State(console): State<Arc<Console>>, signed: Signed) -> Response {
    let info = network_words(&console, &signed.session.person).await;
    let w = Wording::of(info.as_deref(), signed.lang.tag());
    match sent_list(&console, &signed).await {
        Ok(messages) => html(pages::sent_items(signed.lang, w, &messages)),
        Err(r) => r,
    }
}

/// A message: a received one's fields (the view is recorded) or a sent one's recipients.
async fn message(State(console): State<Arc<Console>>, signed: Signed, Path(id): Path<String>) -> Response {
    let who = &signed.session.person;
    let view = match actions::open_message(&console.store, &console.clock, who, &signed.source(), &id).await {
        Ok(v) => v,
        Err(s) => return refused(&console, &signed, &s),
    };
    let frame = signed.frame(&console);
    let info = network_words(&console, who).await;
    let w = Wording::of(info.as_deref(), signed.lang.tag());
    match (view.sent, view.received) {
        (Some(sent), _) => html(pages::sent_message(&frame, &signed.session.csrf, w, &sent, &view.timeline)),
        (None, Some(received)) => {
            let views = match console.store.pool().acquire().await {
                Ok(mut conn) => access::of_message(&mut conn, &id).await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let views: Vec<_> = views.into_iter().filter(|a| a.action == "viewed").collect();
            let staff: Vec<String> = match console.people.list().await {
                Ok(list) => list
                    .into_iter()
                    .filter(|p| {
                        !p.disabled && actions::may_read_mail(&Person { name: p.name.clone(), role: p.role }).is_ok()
                    })
                    .map(|p| p.name.to_string())
                    .collect(),
                Err(_) => Vec::new(),
            };
            let page = pages::ReceivedMessage {
                item: &received,
                views: &views,
                staff: &staff,
                timeline: &view.timeline,
                wording: w,
            };
            html(pages::received(&frame, &signed.session.csrf, &page))
        }
        (None, None) => problem(&console, signed.lang, Some(&signed), StatusCode::NOT_FOUND, Msg::NotFound, ""),
    }
}

/// A sent message's recipients (its live region). Sent messages hold no survivor data.
async fn recipients(State(console): State<Arc<Console>>, signed: Signed, Path(id): Path<String>) -> Response {
    let who = &signed.session.person;
    if let Err(s) = actions::may_read_mail(who) {
        return refused(&console, &signed, &s);
    }
    match crate::mailbox::sent(&console.store, &id).await {
        Ok(Some(sent)) => {
            let info = network_words(&console, who).await;
            html(pages::recipients(signed.lang, Wording::of(info.as_deref(), signed.lang.tag()), &sent))
        }
        Ok(None) => problem(&console, signed.lang, Some(&signed), StatusCode::NOT_FOUND, Msg::NotFound, ""),
        Err(e) => server_error(&console, signed.lang, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct StatusForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    sender: String,
    /// For a withdrawal: the recipient whose copy the sender withdraws.
    #[serde(default)]
    recipient: String,
}

/// Accept, decline or close a received referral, acknowledge a received alert, or withdraw a sent
/// referral from one recipient.
async fn message_status(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    Posted { signed, form, .. }: Posted<StatusForm>,
) -> Response {
    let status = match form.status.as_str() {
        "accepted" => pb::MessageStatus::Accepted,
        "declined" => pb::MessageStatus::Declined,
        "closed" => pb::MessageStatus::Closed,
        "acknowledged" => pb::MessageStatus::Acknowledged,
        "withdrawn" => pb::MessageStatus::Withdrawn,
        _ => {
            let s = tonic::Status::invalid_argument("choose accept, decline, close, acknowledge or withdraw");
            return refused(&console, &signed, &s);
        }
    };
    let request = pb::UpdateStatusRequest {
        message_id: id.clone(),
        sender: form.sender,
        recipient: form.recipient,
        status: status as i32,
        code: form.code.trim().to_owned(),
        ..Default::default()
    };
    let who = &signed.session.person;
    match actions::update_status(&console.store, &console.link, &console.clock, who, request).await {
        Ok(_) => Redirect::to(&format!("/messages/{}", pages::urlencode(&id))).into_response(),
        Err(s) => refused(&console, &signed, &s),
    }
}

/// The live-update stream: an `arrival` event (no data beyond the item's kind) whenever something
/// is stored in the inbox. It never extends the session, and it ends (with an `ended` event) as soon
/// as the session does.
async fn events(State(console): State<Arc<Console>>, signed: Signed) -> Response {
    if let Err(s) = actions::may_read_mail(&signed.session.person) {
        return refused(&console, &signed, &s);
    }
    let stream = live(console, signed.session_id);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(20))).into_response()
}

fn live(console: Arc<Console>, session_id: String) -> impl Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(8);
    let mut arrivals = console.arrivals.subscribe();
    let mut people = console.people.subscribe();
    let mut ended = console.sessions.subscribe();
    let mut stopping = console.stopping.clone();
    tokio::spawn(async move {
        let mut recheck = tokio::time::interval(Duration::from_secs(30));
        loop {
            let event = tokio::select! {
                _ = tx.closed() => return,
                _ = stopping.changed() => return,
                r = arrivals.recv() => match r {
                    Ok(item) => Some(Event::default().event("arrival").data(item.item_kind)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(Event::default().event("arrival").data("lagged")),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = people.changed() => None,
                _ = ended.changed() => None,
                _ = recheck.tick() => None,
            };
            match event {
                Some(e) => {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                None => match console.sessions.find(&session_id, false).await {
                    Ok(Ok(_)) => {}
                    _ => {
                        let _ = tx.send(Event::default().event("ended").data("")).await;
                        return;
                    }
                },
            }
        }
    });
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

/// The second step of signing in: a code from the person's authenticator app, or a recovery code.
async fn code_page(State(console): State<Arc<Console>>, Halfway(signed): Halfway) -> Response {
    if signed.session.stage == Stage::Full {
        return Redirect::to("/").into_response();
    }
    match console.second_factor.enrolled(&signed.session.person.name).await {
        Ok(true) => html(pages::code(&signed.frame(&console), &signed.session.csrf, false)),
        Ok(false) => Redirect::to("/account/second-factor").into_response(),
        Err(e) => server_error(&console, signed.lang, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

async fn code(State(console): State<Arc<Console>>, Posted { signed, form, .. }: Posted<CodeForm, true>) -> Response {
    if signed.session.stage == Stage::Full {
        return Redirect::to("/").into_response();
    }
    let person = signed.session.person.clone();
    let now = console.clock.now_micros();
    let mut conn = match connection(&console, signed.lang).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // Wrong codes count with wrong passwords: five for one name within the window, and it waits.
    let since = now - session::FAILURE_WINDOW_MICROS;
    match access::failures(&mut conn, Counted::Name, person.name.as_str(), since).await {
        Ok((by_name, _)) if by_name >= session::FAILURES_PER_NAME => {
            let _ = console.sessions.end(&signed.session).await;
            return Redirect::to("/sign-in").into_response();
        }
        Ok(_) => {}
        Err(e) => return server_error(&console, signed.lang, &e.to_string()),
    }
    match console.second_factor.check(&person.name, &form.code).await {
        Ok(Checked::Accepted | Checked::Recovered) => finish_sign_in(&console, &signed, &mut conn).await,
        Ok(Checked::Refused) => {
            if let Err(e) =
                access::sign_in(&mut conn, person.name.as_str(), "", SignIn::Failed, &signed.source(), now).await
            {
                return server_error(&console, signed.lang, &e.to_string());
            }
            (StatusCode::UNAUTHORIZED, html(pages::code(&signed.frame(&console), &signed.session.csrf, true)))
                .into_response()
        }
        Err(e) => server_error(&console, signed.lang, &e.to_string()),
    }
}

/// Completes a sign-in after its second factor: a new session id, fully signed in, logged.
async fn finish_sign_in(console: &Console, signed: &Signed, conn: &mut sqlx::SqliteConnection) -> Response {
    let person = &signed.session.person;
    let id = match console.sessions.promote(&signed.session).await {
        Ok((id, _)) => id,
        Err(e) => return server_error(console, signed.lang, &e.to_string()),
    };
    let now = console.clock.now_micros();
    let source = signed.source();
    if let Err(e) =
        access::sign_in(conn, person.name.as_str(), person.role.as_str(), SignIn::SignedIn, &source, now).await
    {
        return server_error(console, signed.lang, &e.to_string());
    }
    let mut r = Redirect::to("/").into_response();
    set_cookie(&mut r, console.origin.cookie(console.origin.session_cookie(), &id, None));
    r
}

/// Enrolling a second factor: the QR code and the secret of a new enrollment, and the form that
/// confirms it with a code.
async fn enroll_page(State(console): State<Arc<Console>>, Halfway(signed): Halfway) -> Response {
    let person = &signed.session.person;
    if signed.session.stage == Stage::Password {
        match console.second_factor.enrolled(&person.name).await {
            Ok(true) => return Redirect::to("/sign-in/code").into_response(),
            Ok(false) => {}
            Err(e) => return server_error(&console, signed.lang, &e.to_string()),
        }
    }
    enroll_form(&console, &signed, false).await
}

async fn enroll_form(console: &Console, signed: &Signed, wrong: bool) -> Response {
    let person = &signed.session.person;
    let secret = match console.second_factor.pending(&person.name).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => console.second_factor.begin(&person.name).await,
        Err(e) => Err(e),
    };
    let secret = match secret {
        Ok(s) => s,
        Err(e) => return server_error(console, signed.lang, &e.to_string()),
    };
    let uri = totp::otpauth_uri(console.link.signer().org().as_str(), &person.name, &secret);
    let qr = totp::qr_svg(&uri).unwrap_or_default();
    let frame = signed.frame(console);
    let code = if wrong { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    (code, html(pages::enroll(&frame, &signed.session.csrf, &qr, &totp::base32(&secret), wrong))).into_response()
}

async fn enroll(State(console): State<Arc<Console>>, Posted { signed, form, .. }: Posted<CodeForm, true>) -> Response {
    let person = signed.session.person.clone();
    let codes = match console.second_factor.confirm(&person.name, &form.code).await {
        Ok(Some(codes)) => codes,
        Ok(None) => return enroll_form(&console, &signed, true).await,
        Err(e) => return server_error(&console, signed.lang, &e.to_string()),
    };
    let mut r = html(pages::recovery_codes(&signed.frame(&console), &codes));
    if signed.session.stage == Stage::Password {
        let mut conn = match connection(&console, signed.lang).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let finished = finish_sign_in(&console, &signed, &mut conn).await;
        if !finished.status().is_redirection() {
            return finished;
        }
        // The recovery codes are shown now, with the new session's cookie.
        for cookie in finished.headers().get_all(header::SET_COOKIE) {
            r.headers_mut().append(header::SET_COOKIE, cookie.clone());
        }
    }
    r
}

async fn people(State(console): State<Arc<Console>>, signed: Signed, Query(q): Query<NoticeQuery>) -> Response {
    match actions::people(&console.people, &signed.session.person).await {
        Ok(list) => {
            let notice = q.done.is_some().then(|| Msg::Done.text(signed.lang));
            html(pages::people(&signed.frame(&console), &signed.session.csrf, &list, notice))
        }
        Err(s) => refused(&console, &signed, &s),
    }
}

#[derive(Deserialize)]
struct NoticeQuery {
    #[serde(default)]
    done: Option<String>,
}

#[derive(Deserialize)]
struct PersonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    disabled: String,
}

/// Back to the people page after a change, saying it was done.
fn people_done<T>(console: &Console, signed: &Signed, result: Result<T, tonic::Status>) -> Response {
    match result {
        Ok(_) => Redirect::to("/people?done=1").into_response(),
        Err(s) => refused(console, signed, &s),
    }
}

async fn add_person(State(console): State<Arc<Console>>, Posted { signed, form, .. }: Posted<PersonForm>) -> Response {
    let who = &signed.session.person;
    let added =
        actions::add_person(&console.people, &console.passwords, who, &form.name, &form.role, &form.password).await;
    people_done(&console, &signed, added)
}

/// A change to one person: `/people/{name}/role`, `/people/{name}/disabled` or
/// `/people/{name}/password`.
async fn person_change(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path((name, what)): Path<(String, String)>,
    Posted { signed, form, .. }: Posted<PersonForm>,
) -> Response {
    let who = &signed.session.person;
    let name = match PersonId::parse(&name) {
        Ok(n) => n,
        Err(e) => return refused(&console, &signed, &tonic::Status::invalid_argument(format!("name: {e}"))),
    };
    let changed = match what.as_str() {
        "role" => actions::set_role(&console.people, who, &name, &form.role).await.map(|_| ()),
        "disabled" => actions::set_disabled(&console.people, who, &name, form.disabled == "true").await.map(|_| ()),
        "password" => actions::reset_password(&console.people, &console.passwords, who, &name, &form.password).await,
        "second-factor" => actions::reset_second_factor(&console.people, &console.second_factor, who, &name).await,
        _ => return not_found(State(console), headers).await,
    };
    people_done(&console, &signed, changed)
}

async fn health(State(console): State<Arc<Console>>, signed: Signed) -> Response {
    let who = &signed.session.person;
    let health = actions::health(&console.store, &console.stream, &console.witness, who).await;
    let keys = actions::sealing_keys(&console.store, who).await;
    match (health, keys) {
        (Ok(h), Ok(keys)) => {
            html(pages::health(&signed.frame(&console), &signed.session.csrf, &h, &console.certificates, &keys))
        }
        (Err(s), _) | (_, Err(s)) => refused(&console, &signed, &s),
    }
}

fn sealing(console: &Console) -> actions::SealingHandles<'_> {
    actions::SealingHandles {
        store: &console.store,
        link: &console.link,
        clock: &console.clock,
        folder: &console.sealing_keys,
    }
}

/// Makes a sealing key: the organization's first, or a new one beside the others.
async fn make_key(State(console): State<Arc<Console>>, posted: Posted<CsrfForm>) -> Response {
    let signed = posted.signed;
    match actions::make_sealing_key(sealing(&console), &signed.session.person, false).await {
        Ok(_) => Redirect::to("/health#keys").into_response(),
        Err(s) => refused(&console, &signed, &s),
    }
}

async fn withdraw_key(
    State(console): State<Arc<Console>>,
    Path(kid): Path<String>,
    posted: Posted<CsrfForm>,
) -> Response {
    let signed = posted.signed;
    match actions::withdraw_sealing_key(sealing(&console), &signed.session.person, &kid).await {
        Ok(_) => Redirect::to("/health#keys").into_response(),
        Err(s) => refused(&console, &signed, &s),
    }
}

/// The key log as this node verified it, as the JSON lines `haven-gateway keylog verify` checks
/// (public keys only).
async fn key_log_download(State(console): State<Arc<Console>>, signed: Signed) -> Response {
    match crate::keylog::export_lines(&console.store).await {
        Ok(text) => (
            [
                (http::header::CONTENT_TYPE, "application/jsonl; charset=utf-8"),
                (http::header::CONTENT_DISPOSITION, "attachment; filename=\"haven-keylog.jsonl\""),
            ],
            text,
        )
            .into_response(),
        Err(e) => server_error(&console, signed.lang, &e.to_string()),
    }
}

async fn verification(State(console): State<Arc<Console>>, signed: Signed) -> Response {
    match actions::verification(&console.witness, &signed.session.person) {
        Ok(report) => html(pages::verification(&signed.frame(&console), &report, console.clock.now_micros())),
        Err(s) => refused(&console, &signed, &s),
    }
}

/// What a message form needs from the node: the network's description and, for a referral, the
/// consents held.
async fn message_context(
    console: &Console,
    signed: &Signed,
    kind: &str,
) -> Result<(Arc<pb::NetworkInfoResponse>, Vec<actions::HeldConsent>), Response> {
    let who = &signed.session.person;
    let refuse = |s: tonic::Status| refused(console, signed, &s);
    // An alert needs no consent; a referral relies on one the organization recorded.
    let consents = if kind == "alert" {
        actions::may_send(who).map_err(refuse)?;
        Vec::new()
    } else {
        actions::consents_held(&console.store, who).await.map_err(refuse)?
    };
    let info = network(console, signed).await?;
    Ok((info, consents))
}

#[derive(Deserialize)]
struct NewReferralQuery {
    #[serde(default)]
    consent: String,
}

async fn new_referral(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Query(q): Query<NewReferralQuery>,
) -> Response {
    let (info, consents) = match message_context(&console, &signed, "referral").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let draft = pages::Draft { kind: "referral".into(), consent: q.consent, ..Default::default() };
    let own = console.link.signer().org().to_string();
    let form = pages::ReferralForm { info: &info, own_org: &own, consents: &consents, draft: &draft };
    html(pages::new_referral(&signed.frame(&console), &signed.session.csrf, &form, &[], None))
}

/// The alert form: every field of the alert kind, sent by default to every organization a rule permits.
async fn new_alert(State(console): State<Arc<Console>>, signed: Signed) -> Response {
    let (info, _) = match message_context(&console, &signed, "alert").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let draft = pages::Draft {
        kind: "alert".into(),
        all_permitted: true,
        purpose: "safety_alert".into(),
        ..Default::default()
    };
    let own = console.link.signer().org().to_string();
    let form = pages::ReferralForm { info: &info, own_org: &own, consents: &[], draft: &draft };
    html(pages::new_referral(&signed.frame(&console), &signed.session.csrf, &form, &[], None))
}

async fn alert_form(State(console): State<Arc<Console>>, posted: Posted<Pairs>) -> Response {
    message_form(&console, posted, "alert").await
}

async fn referral_form(State(console): State<Arc<Console>>, posted: Posted<Pairs>) -> Response {
    message_form(&console, posted, "referral").await
}

/// A message form posted (a referral or an alert): checked with the schema, then previewed (the
/// gateway's decision for each recipient) or, once previewed, sent.
async fn message_form(console: &Console, posted: Posted<Pairs>, kind: &str) -> Response {
    let (signed, Pairs(pairs)) = (posted.signed, posted.form);
    let value = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    let (info, consents) = match message_context(console, &signed, kind).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut draft = pages::Draft {
        kind: kind.to_owned(),
        all_permitted: kind == "alert" && value("all_permitted") == "true",
        message_id: value("message_id"),
        consent: value("consent"),
        purpose: value("purpose"),
        recipients: pairs.iter().filter(|(k, _)| k == "recipient").map(|(_, v)| v.clone()).collect(),
        fields: Default::default(),
    };
    for (k, v) in &pairs {
        if let Some(field) = k.strip_prefix("f.")
            && !v.trim().is_empty()
        {
            draft.fields.entry(field.to_owned()).or_default().push(v.trim().to_owned());
        }
    }
    if uuid::Uuid::parse_str(&draft.message_id).map_or(true, |id| id.get_version_num() != 7) {
        draft.message_id = uuid::Uuid::now_v7().to_string();
    }
    let (env, mut problems) = envelope_of(&info, &consents, &draft);
    if problems.is_empty() {
        match crate::network::schema_of(&info) {
            Ok(schema) => problems.extend(crate::network::check_fields(&schema, kind, &env.fields)),
            Err(e) => problems.push((String::new(), format!("the network's schema cannot be read: {e}"))),
        }
    }
    let own = console.link.signer().org().to_string();
    let frame = signed.frame(console);
    let form = pages::ReferralForm { info: &info, own_org: &own, consents: &consents, draft: &draft };
    let render = |problems: &[(String, String)], preview: Option<&pb::DecideResponse>| {
        pages::new_referral(&frame, &signed.session.csrf, &form, problems, preview)
    };
    if !problems.is_empty() {
        return (StatusCode::BAD_REQUEST, html(render(&problems, None))).into_response();
    }
    let who = &signed.session.person;
    if value("step") == "send" {
        return match actions::send(&console.sending, who, env).await {
            Ok(sent) => Redirect::to(&format!("/messages/{}", pages::urlencode(&sent.message_id))).into_response(),
            Err(s) => {
                let problems = [(String::new(), s.message().to_owned())];
                (StatusCode::BAD_REQUEST, html(render(&problems, None))).into_response()
            }
        };
    }
    match actions::preview(&console.sending, &console.network, who, env).await {
        Ok(decided) => html(render(&[], Some(&decided))),
        Err(s) if s.code() == tonic::Code::InvalidArgument || s.code() == tonic::Code::FailedPrecondition => {
            let problems = [(String::new(), s.message().to_owned())];
            (StatusCode::BAD_REQUEST, html(render(&problems, None))).into_response()
        }
        Err(s) => refused(console, &signed, &s),
    }
}

/// The envelope a referral form describes, and what is missing or malformed before the schema is asked.
fn envelope_of(
    info: &pb::NetworkInfoResponse,
    consents: &[actions::HeldConsent],
    draft: &pages::Draft,
) -> (pb::Envelope, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let alert = draft.kind == "alert";
    let consent = consents.iter().find(|c| c.consent_id == draft.consent);
    if consent.is_none() && !alert {
        problems.push(("consent".to_owned(), "choose the consent this referral relies on".to_owned()));
    }
    if draft.recipients.is_empty() && !draft.all_permitted {
        problems.push(("recipient".to_owned(), "choose at least one recipient".to_owned()));
    }
    if !info.purposes.iter().any(|p| p.id == draft.purpose) {
        problems.push(("purpose".to_owned(), format!("choose the purpose of the {}", draft.kind)));
    }
    let mut fields = std::collections::HashMap::new();
    let kind = info.kinds.iter().find(|k| k.name == draft.kind);
    for f in kind.map(|k| k.fields.as_slice()).unwrap_or_default() {
        let Some(values) = draft.fields.get(&f.name) else { continue };
        use pb::field_value::Value;
        let value = match f.r#type.as_str() {
            "integer" => match values[0].parse::<i64>() {
                Ok(i) => Value::Integer(i),
                Err(_) => {
                    problems.push((f.name.clone(), format!("field `{}` must be a whole number", f.name)));
                    continue;
                }
            },
            "date" => Value::Date(values[0].clone()),
            "list" => Value::List(pb::StringList { items: values.clone() }),
            _ => Value::Text(values[0].clone()),
        };
        fields.insert(f.name.clone(), pb::FieldValue { value: Some(value) });
    }
    let env = pb::Envelope {
        message_id: draft.message_id.clone(),
        kind: draft.kind.clone(),
        recipients: if draft.all_permitted { Vec::new() } else { draft.recipients.clone() },
        all_permitted_recipients: draft.all_permitted,
        purpose: draft.purpose.clone(),
        subject_pseudonym: consent.map(|c| c.subject.clone()).unwrap_or_default(),
        consent_id: draft.consent.clone(),
        fields,
        ..Default::default()
    };
    (env, problems)
}

#[derive(Deserialize)]
struct ConsentsQuery {
    #[serde(default)]
    subject: String,
}

/// The consents this organization recorded; with a subject, that subject's consents as the gateway
/// holds them (`haven-node consent list --subject`).
async fn consents(State(console): State<Arc<Console>>, signed: Signed, Query(q): Query<ConsentsQuery>) -> Response {
    let who = &signed.session.person;
    let subject = q.subject.trim();
    let held = if subject.is_empty() {
        actions::consents_held(&console.store, who).await
    } else {
        let request =
            pb::ListConsentsRequest { subject_pseudonym: subject.to_owned(), page_size: 500, ..Default::default() };
        match crate::consent::may_manage(who) {
            Ok(()) => actions::list_consents(&console.link, who, request).await.map(|list| {
                list.consents
                    .iter()
                    .map(|c| actions::HeldConsent {
                        consent_id: c.consent_id.clone(),
                        subject: crate::consent::subject_of(c),
                        state: c.state.clone(),
                        updated_at_micros: c.state_changed_at_micros.max(c.registered_at_micros),
                    })
                    .collect()
            }),
            Err(s) => Err(s),
        }
    };
    match held {
        Ok(held) => html(pages::consents(&signed.frame(&console), subject, &held)),
        Err(s) => refused(&console, &signed, &s),
    }
}

async fn consent_new(State(console): State<Arc<Console>>, signed: Signed) -> Response {
    let who = &signed.session.person;
    if let Err(s) = crate::consent::may_manage(who) {
        return refused(&console, &signed, &s);
    }
    let info = match network(&console, &signed).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let draft = pages::ConsentDraft { language: signed.lang.tag().to_owned(), ..Default::default() };
    html(pages::consent_new(&signed.frame(&console), &signed.session.csrf, &info, &draft, &[]))
}

/// A renewal: the consent form filled in from the consent it supersedes, to print, sign and record
/// again (`haven-node consent renew`).
async fn consent_renew(State(console): State<Arc<Console>>, signed: Signed, Path(id): Path<String>) -> Response {
    let record = match consent_record(&console, &signed, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let info = match network(&console, &signed).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let draft = pages::ConsentDraft {
        supersedes: record.consent_id.clone(),
        valid_until: String::new(),
        evidence: String::new(),
        ..pages::draft_of(&record)
    };
    html(pages::consent_new(&signed.frame(&console), &signed.session.csrf, &info, &draft, &[]))
}

/// The kept scan of a consent's signed form, as a download (its opening is recorded).
async fn consent_scan(State(console): State<Arc<Console>>, signed: Signed, Path(id): Path<String>) -> Response {
    let who = &signed.session.person;
    match actions::open_consent_scan(&console.store, &console.clock, who, &signed.source(), &id).await {
        Ok(scan) => {
            // Served as a download of an opaque type: a scan is never rendered in the console's origin.
            let name =
                format!("consent-{}-scan", id.chars().filter(char::is_ascii_alphanumeric).take(36).collect::<String>());
            (
                [
                    (http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
                    (
                        http::header::HeaderName::from_static("x-scan-content-type"),
                        scan.content_type.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect(),
                    ),
                ],
                scan.bytes,
            )
                .into_response()
        }
        Err(s) => refused(&console, &signed, &s),
    }
}

/// The consent form posted: step `print` checks the details and shows the form to print and sign;
/// step `record` takes the signed scan's hash and records the consent.
async fn consent_form(State(console): State<Arc<Console>>, posted: Posted<Pairs>) -> Response {
    let (signed, Pairs(pairs), files) = (posted.signed, posted.form, posted.files);
    let who = &signed.session.person;
    if let Err(s) = crate::consent::may_manage(who) {
        return refused(&console, &signed, &s);
    }
    let info = match network(&console, &signed).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let value = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    let all = |k: &str| pairs.iter().filter(|(n, _)| n == k).map(|(_, v)| v.trim().to_owned()).collect::<Vec<_>>();
    let draft = pages::ConsentDraft {
        subject: value("subject"),
        purposes: all("purpose"),
        types: all("type"),
        labels: all("label"),
        valid_until: value("valid_until"),
        method: value("method"),
        language: value("language"),
        evidence: value("evidence").to_ascii_lowercase(),
        supersedes: value("supersedes"),
    };
    let mut problems = Vec::new();
    if draft.purposes.is_empty() {
        problems.push(("purpose".to_owned(), "choose at least one purpose".to_owned()));
    }
    if draft.types.is_empty() {
        problems.push(("type".to_owned(), "choose at least one kind of organization".to_owned()));
    }
    if draft.labels.is_empty() {
        problems.push(("label".to_owned(), "choose what may be shared".to_owned()));
    }
    let until = time::Date::parse(&draft.valid_until, time::macros::format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.with_hms(23, 59, 59).map(|t| t.assume_utc().unix_timestamp()).unwrap_or(0) * 1_000_000);
    match until {
        Some(u) if u > console.clock.now_micros() => {}
        Some(_) => problems.push(("valid_until".to_owned(), "the end date must be in the future".to_owned())),
        None => problems.push((
            "valid_until".to_owned(),
            "give the date the consent ends (consent is always time-limited)".to_owned(),
        )),
    }
    let frame = signed.frame(&console);
    if !problems.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            html(pages::consent_new(&frame, &signed.session.csrf, &info, &draft, &problems)),
        )
            .into_response();
    }
    if value("step") != "record" {
        return html(pages::consent_print(&frame, &signed.session.csrf, &info, &draft, None));
    }
    let mut draft = draft;
    let scan = files.into_iter().find(|f| f.field == "scan").map(|f| crate::consent::Scan {
        sha256: hex::encode(sha2::Sha256::digest(&f.bytes)),
        content_type: f.content_type,
        bytes: f.bytes,
    });
    let problem = match &scan {
        Some(s) if !draft.evidence.is_empty() && draft.evidence != s.sha256 => Some(
            "the SHA-256 typed is not the uploaded scan's; upload the scan alone, or type the hash of the scan you keep",
        ),
        Some(s) => {
            draft.evidence = s.sha256.clone();
            None
        }
        None if draft.evidence.len() != 64 || !draft.evidence.bytes().all(|b| b.is_ascii_hexdigit()) => Some(
            "upload the signed form's scan, or type the 64 hexadecimal characters of its SHA-256 (for example from `sha256sum scan.pdf`)",
        ),
        None => None,
    };
    if let Some(problem) = problem {
        return (
            StatusCode::BAD_REQUEST,
            html(pages::consent_print(&frame, &signed.session.csrf, &info, &draft, Some(problem))),
        )
            .into_response();
    }
    let request = pb::RecordConsentRequest {
        subject_pseudonym: draft.subject.clone(),
        purposes: draft.purposes.clone(),
        recipient_types: draft.types.clone(),
        labels: draft.labels.clone(),
        valid_until_micros: until.unwrap_or_default(),
        method: draft.method.clone(),
        evidence_sha256: draft.evidence.clone(),
        language: draft.language.clone(),
        ..Default::default()
    };
    let recorded = if draft.supersedes.is_empty() {
        actions::record_consent(&console.store, &console.link, &console.clock, who, request).await
    } else {
        let renewal = pb::RenewConsentRequest { supersedes: draft.supersedes.clone(), consent: Some(request) };
        actions::renew_consent(&console.store, &console.link, &console.clock, who, renewal).await
    };
    match recorded {
        Ok(record) => {
            let id = pages::urlencode(&record.consent_id);
            if let (Some(scan), true) = (&scan, console.keep_scans) {
                let kept = actions::keep_consent_scan(
                    &console.store,
                    &console.clock,
                    who,
                    &signed.source(),
                    &record.consent_id,
                    scan,
                )
                .await;
                if let Err(e) = kept {
                    // The consent is recorded (with the scan's hash) whatever happens to the scan.
                    tracing::error!(error = %e.message(), consent = %record.consent_id, "a consent scan could not be kept");
                    return Redirect::to(&format!("/consents/{id}?scan=not_kept")).into_response();
                }
            }
            Redirect::to(&format!("/consents/{id}/copy")).into_response()
        }
        Err(s) if s.code() == tonic::Code::InvalidArgument => (
            StatusCode::BAD_REQUEST,
            html(pages::consent_print(&frame, &signed.session.csrf, &info, &draft, Some(s.message()))),
        )
            .into_response(),
        Err(s) => refused(&console, &signed, &s),
    }
}

/// The network's description for a page that cannot do without it, or the refusal page.
async fn network(console: &Console, signed: &Signed) -> Result<Arc<pb::NetworkInfoResponse>, Response> {
    let who = &signed.session.person;
    actions::network_info(&console.network, &console.link, who).await.map_err(|s| refused(console, signed, &s))
}

async fn consent_record(console: &Console, signed: &Signed, id: &str) -> Result<pb::ConsentRecord, Response> {
    let who = &signed.session.person;
    crate::consent::may_manage(who).map_err(|s| refused(console, signed, &s))?;
    let request = pb::GetConsentRequest { consent_id: id.to_owned() };
    actions::get_consent(&console.link, who, request).await.map_err(|s| refused(console, signed, &s))
}

#[derive(Deserialize)]
struct ShowQuery {
    #[serde(default)]
    scan: String,
}

async fn consent_show(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let record = match consent_record(&console, &signed, &id).await {
        Ok(record) => record,
        Err(r) => return r,
    };
    let scan = match crate::consent::has_scan(&console.store, &record.consent_id).await {
        Ok(true) => pages::ScanState::Kept,
        Ok(false) if q.scan == "not_kept" => pages::ScanState::NotKept,
        Ok(false) => pages::ScanState::None,
        Err(e) => return server_error(&console, signed.lang, &e.to_string()),
    };
    html(pages::consent_show(&signed.frame(&console), &signed.session.csrf, &record, scan))
}

#[derive(Deserialize)]
struct CopyQuery {
    #[serde(default)]
    discreet: Option<String>,
}

async fn consent_copy(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<CopyQuery>,
) -> Response {
    let record = match consent_record(&console, &signed, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let info = match network(&console, &signed).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let draft = pages::draft_of(&record);
    let frame = signed.frame(&console);
    html(pages::consent_copy(&frame, &info, &record, &draft, q.discreet.is_some(), console.help_phone.as_deref()))
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}
tokened!(RevokeForm);

async fn consent_revoke(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    Posted { signed, form, .. }: Posted<RevokeForm>,
) -> Response {
    let request = pb::RevokeConsentRequest { consent_id: id.clone(), reason: form.reason };
    let who = &signed.session.person;
    match actions::revoke_consent(&console.store, &console.link, &console.clock, who, request).await {
        Ok(_) => Redirect::to(&format!("/consents/{}", pages::urlencode(&id))).into_response(),
        Err(s) => refused(&console, &signed, &s),
    }
}

/// Microseconds at the start of a `YYYY-MM-DD` day (UTC), plus `days`.
fn day_micros(date: &str, days: i64) -> Option<i64> {
    let d = time::Date::parse(date.trim(), time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    let start = d.midnight().assume_utc().unix_timestamp() + days * 86_400;
    Some(start * 1_000_000)
}

/// The filter an audit search describes; a missing or unreadable date is refused with its reason.
fn audit_filter(q: &pages::AuditSearch) -> Result<pb::AuditFilter, tonic::Status> {
    let (Some(from), Some(until)) = (day_micros(&q.from, 0), day_micros(&q.until, 1)) else {
        return Err(tonic::Status::invalid_argument(
            "give both dates of the range, as YYYY-MM-DD: a search always has one",
        ));
    };
    if until <= from {
        return Err(tonic::Status::invalid_argument("the range ends before it starts"));
    }
    Ok(pb::AuditFilter {
        from_micros: from,
        until_micros: until,
        org: q.org.trim().to_owned(),
        person: q.person.trim().to_owned(),
        action: q.action.trim().to_owned(),
        subject: q.subject.trim().to_owned(),
        message_id: q.message_id.trim().to_owned(),
        ..Default::default()
    })
}

async fn audit(State(console): State<Arc<Console>>, signed: Signed, Query(q): Query<pages::AuditSearch>) -> Response {
    let frame = signed.frame(&console);
    if q.from.is_empty() && q.until.is_empty() {
        return html(pages::audit(&frame, &q, None, None));
    }
    let filter = match audit_filter(&q) {
        Ok(f) => f,
        Err(s) => {
            return (StatusCode::BAD_REQUEST, html(pages::audit(&frame, &q, None, Some(s.message())))).into_response();
        }
    };
    match actions::audit_query(&console.link, &signed.session.person, filter, q.cursor).await {
        Ok(found) => html(pages::audit(&frame, &q, Some(&found), None)),
        Err(s) => refused(&console, &signed, &s),
    }
}

#[derive(Deserialize)]
struct EntryQuery {
    #[serde(default)]
    at: i64,
}

/// One entry, found by its sequence number and time, with its inclusion proof checked.
async fn audit_entry(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(seq): Path<u64>,
    Query(q): Query<EntryQuery>,
) -> Response {
    let who = &signed.session.person;
    let filter =
        pb::AuditFilter { from_micros: q.at.max(1), until_micros: q.at.saturating_add(1).max(2), ..Default::default() };
    let found = match actions::audit_query(&console.link, who, filter, 0).await {
        Ok(f) => f,
        Err(s) => return refused(&console, &signed, &s),
    };
    let Some(entry) = found.entries.into_iter().find(|e| e.seq == seq) else {
        return problem(&console, signed.lang, Some(&signed), StatusCode::NOT_FOUND, Msg::NotFound, "");
    };
    match actions::inclusion(&console.link, &console.witness, who, &entry).await {
        Ok(proof) => html(pages::audit_entry(&signed.frame(&console), &entry, &proof)),
        Err(s) => refused(&console, &signed, &s),
    }
}

/// The export of a search, streamed to the browser as a download.
async fn audit_export(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Query(q): Query<pages::AuditSearch>,
) -> Response {
    let filter = match audit_filter(&q) {
        Ok(f) => f,
        Err(s) => return refused(&console, &signed, &s),
    };
    let chunks = match actions::audit_export(&console.link, &signed.session.person, filter).await {
        Ok(c) => c,
        Err(s) => return refused(&console, &signed, &s),
    };
    let body = futures::StreamExt::map(chunks, |chunk| {
        chunk.map(|c| axum::body::Bytes::from(c.data)).map_err(|s| std::io::Error::other(s.message().to_owned()))
    });
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl")),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"haven-audit-export.jsonl\""),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ReportQuery {
    #[serde(default)]
    subject: String,
    /// The organization whose pseudonym it is (an auditor names it; a privacy officer's is their own).
    #[serde(default)]
    controller: String,
}

async fn report(State(console): State<Arc<Console>>, signed: Signed, Query(q): Query<ReportQuery>) -> Response {
    let frame = signed.frame(&console);
    if q.subject.trim().is_empty() {
        if let Err(s) = actions::may_report(&signed.session.person) {
            return refused(&console, &signed, &s);
        }
        return html(pages::report(&frame, "", &q.controller, None, None));
    }
    match actions::subject_access_report(&console.link, &signed.session.person, &q.subject, &q.controller).await {
        Ok(found) => html(pages::report(&frame, &q.subject, &q.controller, Some(&found), None)),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            let page = pages::report(&frame, &q.subject, &q.controller, None, Some(s.message()));
            (StatusCode::BAD_REQUEST, html(page)).into_response()
        }
        Err(s) => refused(&console, &signed, &s),
    }
}

#[derive(Deserialize)]
struct AssignForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
}
tokened!(AssignForm);

/// Assigns a received referral to a person of the organization.
async fn message_assign(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    Posted { signed, form, .. }: Posted<AssignForm>,
) -> Response {
    let who = &signed.session.person;
    match actions::assign(&console.store, &console.people, &console.clock, who, &signed.source(), &id, &form.to).await {
        Ok(()) => Redirect::to(&format!("/messages/{}", pages::urlencode(&id))).into_response(),
        Err(s) => refused(&console, &signed, &s),
    }
}
