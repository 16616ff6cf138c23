//! The web console over HTTP, against a real node, gateway and database: what the console sends
//! (status codes, headers, cookies) and what it refuses (a wrong password too often, an expired
//! session, a form without its token or from another origin, a page the role may not see, markup in a
//! field value). The browser scenarios are in `browser.rs`.

use std::sync::Arc;
use std::time::Duration;

use haven_proto::v1::*;
use haven_tests::fixtures::{self, DAY, consent_request, record_consent, send, text};
use haven_tests::net::{TestNet, TestNode};
use haven_tests::web::Web;
use haven_trust::clock::{Clock, ManualClock, SharedClock, SystemClock};
use haven_trust::ids::{PersonId, Role};
use http::StatusCode;
use sha2::Digest;

const PASSWORD: &str = "correct horse battery";

/// Records a consent at harbor and sends maple-house a referral under it with the given first name;
/// waits until maple-house holds it. Returns the message id.
async fn referral_to_maple(harbor: &TestNode, maple: &TestNode, first_name: &str) -> String {
    let labels = ["identifying", "contact", "operational"];
    let req = consent_request(&["housing"], &["shelter"], &labels, SystemClock.now_micros() + 30 * DAY);
    let (consent, subject) = record_consent(harbor, req).await;
    let mut env = fixtures::referral("maple-house", "housing", &subject, &consent);
    env.fields.insert("survivor_first_name".into(), text(first_name));
    let mut arrivals = maple.state.arrivals.subscribe();
    let sent = send(harbor, "casey", env).await.expect("sent");
    let id = sent.message_id.clone();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let item = arrivals.recv().await.expect("arrivals");
            if let Some(Item { body: Some(item::Body::Delivery(d)), .. }) = &item.item
                && d.message_id == id
            {
                return;
            }
        }
    })
    .await
    .expect("the referral reaches maple-house within 20 s");
    sent.message_id
}

/// Posts the referral form.
async fn post(web: &mut Web, fields: Vec<(String, String)>) -> haven_tests::web::Page {
    post_form(web, "/referrals/new", fields).await
}

async fn views(node: &TestNode, message_id: &str) -> Vec<haven_node::access::Access> {
    let mut conn = node.state.store.pool().acquire().await.unwrap();
    let rows = haven_node::access::of_message(&mut conn, message_id).await.unwrap();
    rows.into_iter().filter(|a| a.action == "viewed").collect()
}

#[tokio::test]
async fn a_caseworker_signs_in_lists_the_inbox_without_values_and_opening_a_referral_records_the_view() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    maple.set_password("sam", PASSWORD).await;
    let id = referral_to_maple(&harbor, &maple, "Rosa (fictional)").await;

    let mut web = Web::new(maple.console);
    let signed = web.sign_in("sam", PASSWORD).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    let cookie =
        signed.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    let session = cookie.iter().find(|c| c.starts_with("haven-session=")).expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");

    let inbox = web.get("/inbox").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.body.contains(&id), "the inbox lists the referral");
    assert!(!inbox.body.contains("Rosa"), "a list never shows field values");
    for (header, want) in
        [("cache-control", "no-store"), ("x-content-type-options", "nosniff"), ("referrer-policy", "same-origin")]
    {
        assert_eq!(inbox.header(header), want, "{header}");
    }
    let csp = inbox.header("content-security-policy");
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(views(&maple, &id).await.is_empty(), "listing is not viewing");

    let opened = web.get(&format!("/messages/{id}")).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.body);
    assert!(opened.body.contains("Rosa (fictional)"));
    assert_eq!(opened.header("cache-control"), "no-store");
    let seen = views(&maple, &id).await;
    assert_eq!(seen.len(), 1, "one view recorded: {seen:?}");
    assert_eq!((seen[0].person.as_str(), seen[0].role.as_str()), ("sam", "caseworker"));
    assert!(seen[0].fields.contains(&"survivor_first_name".to_owned()), "{:?}", seen[0].fields);
    assert!(seen[0].source.starts_with("console 127.0.0.1"), "{}", seen[0].source);
    assert!(!seen[0].subject.is_empty(), "the recipient-scoped pseudonym is recorded");

    // A decline chooses its reason from the schema's codes, shown as words; no close before accepting.
    assert!(opened.body.contains("<option value=\"no_capacity\">No space or capacity now</option>"), "{}", opened.body);
    assert!(!opened.body.contains("value=\"closed\""), "a referral not accepted cannot be closed");

    // Accepting it, from the page's own form, changes its state at the gateway and here.
    let csrf = opened.hidden("csrf").expect("the page carries its form token");
    let sender = opened.hidden("sender").expect("the sender");
    let accepted = web
        .post(&format!("/messages/{id}/status"), &[("csrf", &csrf), ("sender", &sender), ("status", "accepted")])
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    let again = web.get(&format!("/messages/{id}")).await;
    assert!(again.body.contains("accepted"), "{}", again.body);
    assert!(again.body.contains("<option value=\"housed\">Survivor housed</option>"), "now it may be closed");
    assert!(again.body.contains("<tr data-step=\"accepted\">"), "the timeline shows the acceptance");
    assert!(web.get("/inbox?state=accepted").await.body.contains(&id), "the state filter finds it");
    assert!(!web.get("/inbox?state=declined").await.body.contains(&id), "and only in its state");

    // Signing out ends the session on the server: the old cookie no longer signs in.
    let kept = web.cookies.clone();
    let out = web.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    web.cookies = kept;
    let after = web.get("/inbox").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.location(), "/sign-in?ended=1");
}

#[tokio::test]
async fn markup_in_a_field_value_renders_as_inert_text() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    maple.set_password("sam", PASSWORD).await;
    let hostile = r#"<script>alert(1)</script><img src=x onerror="alert(2)">"#;
    let id = referral_to_maple(&harbor, &maple, hostile).await;

    let mut web = Web::new(maple.console);
    web.sign_in("sam", PASSWORD).await;
    let page = web.get(&format!("/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("<script>alert"), "no live script tag");
    assert!(!page.body.contains("<img src=x"), "no live img tag");
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(2)&quot;&gt;"));
}

#[tokio::test]
async fn wrong_passwords_make_a_name_wait_and_unknown_names_are_refused_alike() {
    let net = TestNet::start().await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    maple.set_password("sam", PASSWORD).await;
    let mut web = Web::new(maple.console);

    let unknown = web.sign_in("nobody-here", "whatever password").await;
    let wrong = web.sign_in("sam", "not the password").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let message = |p: &haven_tests::web::Page| {
        let at = p.body.find("role=\"alert\"").expect("an error is shown");
        p.body[at..at + p.body[at..].find("</p>").unwrap()].to_owned()
    };
    assert_eq!(message(&unknown), message(&wrong), "an unknown name reads like a wrong password");

    for _ in 0..4 {
        assert_eq!(web.sign_in("sam", "not the password").await.status, StatusCode::UNAUTHORIZED);
    }
    // Five failures: now even the right password waits, with a clear message and the time to wait for.
    let waits = web.sign_in("sam", PASSWORD).await;
    assert_eq!(waits.status, StatusCode::TOO_MANY_REQUESTS, "{}", waits.body);
    assert!(waits.body.contains("Too many failed sign-ins for this name"), "{}", waits.body);
    assert!(waits.body.contains("UTC"), "it says until when");
    // Another name from the same address is not held up by sam's failures.
    let other = web.sign_in("someone-else", "not the password").await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);

    // The failures and the refusal are in the node's access log.
    let mut conn = maple.state.store.pool().acquire().await.unwrap();
    let log = haven_node::access::recent(&mut conn, 100).await.unwrap();
    let count = |action: &str| log.iter().filter(|a| a.action == action && a.person == "sam").count();
    assert_eq!(count("sign_in_failed"), 5, "{log:?}");
    // The attempt made to wait is logged, but does not count as a failure (it would extend the wait).
    assert_eq!(count("sign_in_waited"), 1, "{log:?}");
}

#[tokio::test]
async fn a_session_ends_when_idle_too_long_when_too_old_and_when_the_role_changes() {
    let net = TestNet::start().await;
    let clock = ManualClock::starting_now();
    let shared: SharedClock = Arc::new(clock.clone());
    let maple = net.node_with_clock("maple-house", &[("sam", Role::Caseworker)], shared).await;
    maple.set_password("sam", PASSWORD).await;

    let mut web = Web::new(maple.console);
    web.sign_in("sam", PASSWORD).await;
    assert_eq!(web.get("/inbox").await.status, StatusCode::OK);
    clock.advance_secs(14 * 60);
    assert_eq!(web.get("/inbox").await.status, StatusCode::OK, "14 minutes idle: still signed in");
    clock.advance_secs(15 * 60 + 1);
    let idle = web.get("/inbox").await;
    assert_eq!((idle.status, idle.location()), (StatusCode::SEE_OTHER, "/sign-in?ended=1"), "idle for 15 minutes");
    let notice = web.get("/sign-in?ended=1").await;
    assert!(notice.body.contains("Your session has ended"), "{}", notice.body);

    // Busy all day: the session still ends 8 hours after sign-in.
    web.sign_in("sam", PASSWORD).await;
    for _ in 0..(8 * 60 / 10) {
        clock.advance_secs(10 * 60);
        assert_eq!(web.get("/inbox").await.status, StatusCode::OK);
    }
    clock.advance_secs(60);
    assert_eq!(web.get("/inbox").await.location(), "/sign-in?ended=1", "8 hours after sign-in");

    // A role change ends the session at once.
    web.sign_in("sam", PASSWORD).await;
    assert_eq!(web.get("/inbox").await.status, StatusCode::OK);
    maple.state.people.set_role(&PersonId::parse("sam").unwrap(), Role::Liaison).await.unwrap();
    assert_eq!(web.get("/inbox").await.location(), "/sign-in?ended=1");
    // So does disabling the person; and a disabled person cannot sign in again.
    web.sign_in("sam", PASSWORD).await;
    assert_eq!(web.get("/inbox").await.status, StatusCode::OK);
    maple.state.people.set_disabled(&PersonId::parse("sam").unwrap(), true).await.unwrap();
    assert_eq!(web.get("/inbox").await.location(), "/sign-in?ended=1");
    let refused = web.sign_in("sam", PASSWORD).await;
    assert!(refused.body.contains("disabled"), "{}", refused.body);
}

#[tokio::test]
async fn forms_without_their_token_or_from_another_origin_are_refused_and_change_nothing() {
    let net = TestNet::start().await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    maple.set_password("sam", PASSWORD).await;
    let mut web = Web::new(maple.console);

    // The sign-in form itself: without its token, or posted from elsewhere.
    web.get("/sign-in").await;
    let no_token = web.post("/sign-in", &[("name", "sam"), ("password", PASSWORD)]).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    assert!(!web.cookies.contains_key("haven-session"));
    let form = web.get("/sign-in").await;
    let token = form.hidden("token").unwrap();
    web.origin = "http://evil.example.net".into();
    let cross = web.post("/sign-in", &[("name", "sam"), ("password", PASSWORD), ("token", &token)]).await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(!web.cookies.contains_key("haven-session"));
    // `Origin: null` passes only with Sec-Fetch-Site: same-origin.
    let form = web.get("/sign-in").await;
    let token = form.hidden("token").unwrap();
    let fields = [("name", "sam"), ("password", PASSWORD), ("token", token.as_str())];
    let null_cross = web.post_with("/sign-in", &fields, &[("origin", "null"), ("sec-fetch-site", "cross-site")]).await;
    assert_eq!(null_cross.status, StatusCode::FORBIDDEN);
    assert!(!web.cookies.contains_key("haven-session"));
    // (Each refusal renders the form again with a new token.)
    let token = null_cross.hidden("token").unwrap();
    let fields = [("name", "sam"), ("password", PASSWORD), ("token", token.as_str())];
    let null_same = web.post_with("/sign-in", &fields, &[("origin", "null"), ("sec-fetch-site", "same-origin")]).await;
    assert_eq!(null_same.status, StatusCode::SEE_OTHER, "{}", null_same.body);

    // Signed in: signing out without the session's token, or from elsewhere, leaves the session alone.
    let inbox = web.get("/inbox").await;
    let csrf = inbox.hidden("csrf").unwrap();
    web.origin = maple.console_url();
    assert_eq!(web.post("/sign-out", &[("csrf", "forged")]).await.status, StatusCode::FORBIDDEN);
    web.origin = "http://evil.example.net".into();
    assert_eq!(web.post("/sign-out", &[("csrf", &csrf)]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(web.get("/inbox").await.status, StatusCode::OK, "still signed in");
}

#[tokio::test]
async fn an_auditor_is_refused_survivor_data_with_a_readable_page() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker), ("ada", Role::Auditor)]).await;
    maple.set_password("ada", PASSWORD).await;
    let secret = maple.enroll_second_factor("ada").await;
    let id = referral_to_maple(&harbor, &maple, "Rosa (fictional)").await;
    let mut web = Web::new(maple.console);
    let code = haven_node::totp::code(&secret, SystemClock.now_secs());
    assert_eq!(web.sign_in_with_code("ada", PASSWORD, &code).await.location(), "/");
    for path in ["/inbox".to_owned(), format!("/messages/{id}")] {
        let page = web.get(&path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("Your role may not do this"), "{}", page.body);
        assert!(page.body.contains("needs role caseworker"), "the reason is given: {}", page.body);
        assert!(!page.body.contains("Rosa"));
    }
    assert!(views(&maple, &id).await.is_empty(), "a refused view is not a view");
    // The navigation does not offer what the role lacks.
    let home = web.get("/sent").await;
    assert!(!home.body.contains("href=\"/inbox\""), "{}", home.body);
}

#[tokio::test]
async fn the_console_speaks_spanish_when_asked_and_assets_are_embedded_and_cached_by_hash() {
    let net = TestNet::start().await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    let mut web = Web::new(maple.console);
    let english = web.get("/sign-in").await;
    assert!(english.body.contains("<html lang=\"en\""));
    let chosen = web.get("/language?lang=es&back=/sign-in").await;
    assert_eq!(chosen.location(), "/sign-in");
    let spanish = web.get("/sign-in").await;
    assert!(spanish.body.contains("<html lang=\"es\"") && spanish.body.contains("Iniciar sesión"));
    // The language switch returns only to this console.
    assert_eq!(web.get("/language?lang=es&back=//evil.example.net/").await.location(), "/");

    let css = english.body.split("href=\"/assets/").nth(1).and_then(|s| s.split('"').next()).expect("stylesheet");
    let asset = web.get(&format!("/assets/{css}")).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert!(asset.header("cache-control").contains("immutable"));
    assert!(asset.header("content-type").starts_with("text/css"));
    assert_eq!(web.get("/assets/console.0000000000000000.css").await.status, StatusCode::NOT_FOUND);
    for script in english.body.split("<script src=\"").skip(1) {
        assert!(script.starts_with("/assets/"), "scripts come from this console only: {script}");
    }
    assert!(!english.body.contains("style=\""), "no inline styles");
}

#[tokio::test]
async fn a_privacy_officer_enrolls_a_second_factor_first_then_signs_in_with_a_code_never_the_same_one_twice() {
    let net = TestNet::start().await;
    let clock = ManualClock::starting_now();
    let shared: SharedClock = Arc::new(clock.clone());
    let maple = net.node_with_clock("maple-house", &[("pat", Role::PrivacyOfficer)], shared.clone()).await;
    maple.set_password("pat", PASSWORD).await;
    let factor = haven_node::totp::SecondFactor::new(maple.state.store.clone(), shared.clone());
    let pat = PersonId::parse("pat").unwrap();
    let mut web = Web::new(maple.console);

    // The password alone leads to the enrollment, and nothing else opens.
    let signed = web.sign_in("pat", PASSWORD).await;
    assert_eq!(signed.location(), "/account/second-factor");
    assert_eq!(web.get("/inbox").await.location(), "/sign-in/code");
    assert_eq!(web.get("/sign-in/code").await.location(), "/account/second-factor");
    let enroll = web.get("/account/second-factor").await;
    assert_eq!(enroll.status, StatusCode::OK);
    assert!(enroll.body.contains("data:image/svg+xml;base64,"), "a QR code");
    let secret = factor.pending(&pat).await.unwrap().expect("a pending secret");
    assert!(enroll.body.contains(&haven_node::totp::base32(&secret)), "the key, to type");
    let csrf = enroll.hidden("csrf").unwrap();

    let wrong = web.post("/account/second-factor", &[("csrf", &csrf), ("code", "000000")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let now = || shared.now_secs();
    let right = haven_node::totp::code(&secret, now());
    let enrolled = web.post("/account/second-factor", &[("csrf", &csrf), ("code", &right)]).await;
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.body);
    let recovery: Vec<String> =
        enrolled.body.split("<li><code>").skip(1).map(|s| s.split('<').next().unwrap().to_owned()).collect();
    assert_eq!(recovery.len(), 10, "ten recovery codes, shown once");
    assert_eq!(web.get("/inbox").await.status, StatusCode::OK, "enrolled and signed in");

    // Next time: password, then a code. The code just used is refused (no replay).
    let csrf = web.get("/inbox").await.hidden("csrf").unwrap();
    web.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(web.sign_in("pat", PASSWORD).await.location(), "/sign-in/code");
    let form = web.get("/sign-in/code").await;
    let csrf = form.hidden("csrf").unwrap();
    let replay = web.post("/sign-in/code", &[("csrf", &csrf), ("code", &right)]).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "a code is never accepted twice");
    assert_eq!(web.get("/inbox").await.location(), "/sign-in/code");
    clock.advance_secs(30);
    let next = haven_node::totp::code(&secret, now());
    let ok = web.post("/sign-in/code", &[("csrf", &csrf), ("code", &next)]).await;
    assert_eq!(ok.location(), "/");
    assert_eq!(web.get("/inbox").await.status, StatusCode::OK);

    // A recovery code works once.
    for attempt in 0..2 {
        let csrf = web.get("/inbox").await.hidden("csrf");
        if let Some(csrf) = csrf {
            web.post("/sign-out", &[("csrf", &csrf)]).await;
        }
        web.sign_in("pat", PASSWORD).await;
        let csrf = web.get("/sign-in/code").await.hidden("csrf").unwrap();
        let used = web.post("/sign-in/code", &[("csrf", &csrf), ("code", &recovery[0])]).await;
        if attempt == 0 {
            assert_eq!(used.location(), "/", "a recovery code signs in: {}", used.body);
        } else {
            assert_eq!(used.status, StatusCode::UNAUTHORIZED, "a recovery code works once");
        }
    }
    // A session that never finishes its second step lapses after 5 minutes.
    clock.advance_secs(5 * 60 + 1);
    assert_eq!(web.get("/sign-in/code").await.location(), "/sign-in?ended=1");

    // A lost phone: `users reset-second-factor` ends pat's sessions, and pat enrolls again.
    clock.advance_secs(30);
    let code = haven_node::totp::code(&secret, now());
    assert_eq!(web.sign_in_with_code("pat", PASSWORD, &code).await.location(), "/");
    assert!(factor.reset(&pat).await.unwrap());
    assert_eq!(web.get("/inbox").await.location(), "/sign-in?ended=1");
    assert_eq!(web.sign_in("pat", PASSWORD).await.location(), "/account/second-factor");
}

#[tokio::test]
async fn an_administrator_manages_people_in_the_console_and_each_change_is_in_force_at_once() {
    let net = TestNet::start().await;
    let maple = net.node("maple-house", &[("omar", Role::Admin), ("sam", Role::Caseworker)]).await;
    maple.set_password("omar", PASSWORD).await;
    maple.set_password("sam", PASSWORD).await;
    let secret = maple.enroll_second_factor("omar").await;
    let mut admin = Web::new(maple.console);
    let code = haven_node::totp::code(&secret, SystemClock.now_secs());
    assert_eq!(admin.sign_in_with_code("omar", PASSWORD, &code).await.location(), "/");
    assert_eq!(admin.get("/").await.location(), "/health", "an administrator starts at the node's health");

    let page = admin.get("/people").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(">sam<"), "{}", page.body);
    let csrf = page.hidden("csrf").unwrap();

    // Add a person with a password; they can sign in at once.
    let short = admin
        .post("/people", &[("csrf", &csrf), ("name", "rita"), ("role", "caseworker"), ("password", "short")])
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body.contains("at least 12"), "{}", short.body);
    let added = admin
        .post("/people", &[("csrf", &csrf), ("name", "rita"), ("role", "caseworker"), ("password", PASSWORD)])
        .await;
    assert_eq!(added.location(), "/people?done=1", "{}", added.body);
    let again =
        admin.post("/people", &[("csrf", &csrf), ("name", "rita"), ("role", "auditor"), ("password", PASSWORD)]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "an existing name is not re-added");
    let mut rita = Web::new(maple.console);
    assert_eq!(rita.sign_in("rita", PASSWORD).await.location(), "/");
    assert_eq!(rita.get("/inbox").await.status, StatusCode::OK);

    // A change of role ends rita's session at once; a caseworker may not administer.
    let role = admin.post("/people/rita/role", &[("csrf", &csrf), ("role", "liaison")]).await;
    assert_eq!(role.location(), "/people?done=1");
    assert_eq!(rita.get("/inbox").await.location(), "/sign-in?ended=1");
    let mut sam = Web::new(maple.console);
    sam.sign_in("sam", PASSWORD).await;
    assert_eq!(sam.get("/people").await.status, StatusCode::FORBIDDEN);
    let sam_csrf = sam.get("/inbox").await.hidden("csrf").unwrap();
    let forbidden = sam.post("/people/rita/disabled", &[("csrf", &sam_csrf), ("disabled", "true")]).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    // Disabling, and a new password; an administrator cannot lock themselves out.
    let disabled = admin.post("/people/rita/disabled", &[("csrf", &csrf), ("disabled", "true")]).await;
    assert_eq!(disabled.location(), "/people?done=1");
    assert!(rita.sign_in("rita", PASSWORD).await.body.contains("disabled"));
    admin.post("/people/rita/disabled", &[("csrf", &csrf), ("disabled", "false")]).await;
    let reset = admin.post("/people/rita/password", &[("csrf", &csrf), ("password", "a brand new passphrase")]).await;
    assert_eq!(reset.location(), "/people?done=1");
    assert_eq!(rita.sign_in("rita", "a brand new passphrase").await.location(), "/");
    let myself = admin.post("/people/omar/disabled", &[("csrf", &csrf), ("disabled", "true")]).await;
    assert_eq!(myself.status, StatusCode::BAD_REQUEST);
    assert!(myself.body.contains("you cannot disable yourself"), "{}", myself.body);
    let unknown = admin.post("/people/nobody/password", &[("csrf", &csrf), ("password", PASSWORD)]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // A lost phone: the administrator resets rita's second factor, which ends her session.
    let key = maple.enroll_second_factor("rita").await;
    let mut rita = Web::new(maple.console);
    let code = haven_node::totp::code(&key, SystemClock.now_secs());
    assert_eq!(rita.sign_in_with_code("rita", "a brand new passphrase", &code).await.location(), "/");
    let reset = admin.post("/people/rita/second-factor", &[("csrf", &csrf)]).await;
    assert_eq!(reset.location(), "/people?done=1", "{}", reset.body);
    assert_eq!(rita.get("/inbox").await.location(), "/sign-in?ended=1");
    assert_eq!(rita.sign_in("rita", "a brand new passphrase").await.location(), "/", "a caseworker needs none");

    // The node's health and the witness's verification status.
    let health = admin.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert!(health.body.contains("id=\"pending-sends\">0<"), "{}", health.body);
    assert!(
        health.body.contains("TLS (") && health.body.contains("signing ("),
        "certificate expiries: {}",
        health.body
    );
    assert_eq!(admin.get("/verification").await.status, StatusCode::OK);
    assert_eq!(sam.get("/verification").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_caseworker_previews_a_referral_then_sends_it_and_a_wrong_field_is_named_beside_it_with_nothing_sent() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    harbor.set_password("casey", PASSWORD).await;
    let labels = ["identifying", "contact", "operational"];
    let req = consent_request(&["housing"], &["shelter"], &labels, SystemClock.now_micros() + 30 * DAY);
    let (consent, _subject) = record_consent(&harbor, req).await;

    let mut web = Web::new(harbor.console);
    web.sign_in("casey", PASSWORD).await;
    let form = web.get("/referrals/new").await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains(&format!("value=\"{consent}\"")), "the consent is offered");
    assert!(form.body.contains("name=\"f.household_size\" type=\"number\""), "fields come from the schema");
    let csrf = form.hidden("csrf").unwrap();
    let base = |step: &str, size: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf.as_str()),
            ("step", step),
            ("consent", consent.as_str()),
            ("recipient", "maple-house"),
            ("recipient", "metro-police"),
            ("purpose", "housing"),
            ("f.survivor_first_name", "Rosa (fictional)"),
            ("f.safe_to_contact_by", "through_caseworker"),
            ("f.urgency", "high"),
            ("f.household_size", size),
            ("f.needs", "housing"),
            ("f.needs", "interpretation"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };

    // A wrong type, and a value out of range: named beside the field, nothing sent.
    let wrong = post(&mut web, base("preview", "three")).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.body.contains("id=\"f-household_size-problem\""), "{}", wrong.body);
    assert!(wrong.body.contains("must be a whole number"), "{}", wrong.body);
    let range = post(&mut web, base("send", "99")).await;
    assert_eq!(range.status, StatusCode::BAD_REQUEST);
    assert!(range.body.contains("outside its range"), "{}", range.body);
    let sent = harbor.client().await.list_sent(harbor.as_person("casey", ListSentRequest::default())).await.unwrap();
    assert!(sent.into_inner().messages.is_empty(), "nothing was stored or sent");

    // The preview: the shelter will receive, the police are denied; nothing is sent yet.
    let preview = post(&mut web, base("preview", "3")).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let row = |who: &str| {
        let at = preview.body.find(&format!("data-recipient=\"{who}\"")).expect("a row per recipient");
        preview.body[at..at + preview.body[at..].find("</tr>").unwrap()].to_owned()
    };
    // Fields are named by the schema's labels, in the person's language.
    assert!(row("maple-house").contains("will receive") && row("maple-house").contains("First name"));
    assert!(row("metro-police").contains("denied"), "{}", row("metro-police"));
    let message_id = preview.hidden("message_id").unwrap();
    let sent = harbor.client().await.list_sent(harbor.as_person("casey", ListSentRequest::default())).await.unwrap();
    assert!(sent.into_inner().messages.is_empty(), "a preview sends nothing");

    // Send, with the id the preview made: the page shows it queued for the shelter.
    let mut send = base("send", "3");
    send.push(("message_id".into(), message_id.clone()));
    let mut arrivals = maple.state.arrivals.subscribe();
    let done = post(&mut web, send).await;
    assert_eq!(done.location(), format!("/messages/{message_id}"), "{}", done.body);
    let page = web.get(done.location()).await;
    assert!(
        page.body.contains("data-recipient=\"maple-house\" data-status=\"sent\">")
            || page.body.contains("data-recipient=\"maple-house\" data-status=\"delivered\">"),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-recipient=\"metro-police\" data-status=\"denied\">"), "{}", page.body);
    tokio::time::timeout(Duration::from_secs(20), async {
        while arrivals.recv().await.unwrap().item_kind != "delivery" {}
    })
    .await
    .expect("the shelter receives it");

    // The sender withdraws it from the shelter, from its page.
    let page = web.get(&format!("/messages/{message_id}")).await;
    assert!(
        page.body.contains("<option value=\"maple-house\">"),
        "the withdraw form offers the shelter: {}",
        page.body
    );
    let withdrawn = web
        .post(
            &format!("/messages/{message_id}/status"),
            &[("csrf", &csrf), ("status", "withdrawn"), ("recipient", "maple-house")],
        )
        .await;
    assert_eq!(withdrawn.status, StatusCode::SEE_OTHER, "{}", withdrawn.body);
    let page = web.get(&format!("/messages/{message_id}")).await;
    assert!(page.body.contains("data-recipient=\"maple-house\" data-status=\"withdrawn\">"), "{}", page.body);
    // The timeline: each step with who and when, the denial's reason in plain words.
    let timeline = &page.body[page.body.find("id=\"timeline\"").expect("a timeline")..];
    for step in ["sent", "queued", "denied", "withdrawn"] {
        assert!(timeline.contains(&format!("<tr data-step=\"{step}\">")), "{step}: {timeline}");
    }
    assert!(timeline.contains("No sharing rule lets your organization"), "{timeline}");
}

#[tokio::test]
async fn a_consent_is_printed_signed_recorded_and_copied_for_the_survivor_in_her_language_then_revoked() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    harbor.set_password("casey", PASSWORD).await;
    let mut web = Web::new(harbor.console);
    web.sign_in("casey", PASSWORD).await;
    let form = web.get("/consents/new").await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let csrf = form.hidden("csrf").unwrap();
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(90)).date().to_string();
    let details = |step: &str, evidence: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf.as_str()),
            ("step", step),
            ("purpose", "housing"),
            ("type", "shelter"),
            ("label", "identifying"),
            ("label", "contact"),
            ("valid_until", until.as_str()),
            ("method", "written"),
            ("language", "es"),
            ("evidence", evidence),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    // Nothing chosen: each problem beside its field, nothing recorded.
    let empty = web.post("/consents/new", &[("csrf", &csrf), ("step", "print")]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(
        empty.body.contains("choose at least one purpose") && empty.body.contains("consent is always time-limited")
    );

    // The form to print, in Spanish.
    let printed = post_form(&mut web, "/consents/new", details("print", "")).await;
    assert_eq!(printed.status, StatusCode::OK, "{}", printed.body);
    assert!(printed.body.contains("<section class=\"printable\" lang=\"es\""), "{}", printed.body);
    assert!(printed.body.contains("Su consentimiento para compartir información"));
    assert!(printed.body.contains("su nombre y fecha de nacimiento"));
    // The purpose in the survivor's language, from the bundle's words.
    assert!(
        printed.body.contains("Vivienda") && printed.body.contains("Encontrar para la persona superviviente"),
        "{}",
        printed.body
    );
    assert!(!printed.body.contains("Finding the survivor"), "no English left on a Spanish form");

    // A hash that is not one: named, nothing recorded.
    let bad = post_form(&mut web, "/consents/new", details("record", "not-a-hash")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("64 hexadecimal characters"), "{}", bad.body);
    assert!(web.get("/consents").await.body.contains("Nothing here yet"));

    let hash = "ab".repeat(32);
    let recorded = post_form(&mut web, "/consents/new", details("record", &hash)).await;
    assert_eq!(recorded.status, StatusCode::SEE_OTHER, "{}", recorded.body);
    let copy_path = recorded.location().to_owned();
    let id = copy_path.trim_start_matches("/consents/").trim_end_matches("/copy").to_owned();
    let copy = web.get(&copy_path).await;
    assert!(copy.body.contains(&id), "the copy carries the consent id");
    assert!(copy.body.contains("Huella del recibo"), "in the consent's language: {}", copy.body);
    assert!(copy.body.contains("shelter") && copy.body.contains("+1 555 0100"));
    let discreet = web.get(&format!("{copy_path}?discreet=1")).await;
    assert!(discreet.body.contains(&id) && discreet.body.contains("+1 555 0100"));
    let section = &discreet.body[discreet.body.find("id=\"copy\"").unwrap()..];
    for named in ["shelter", "housing", "harbor", "Harbor", "vivienda"] {
        assert!(!section.contains(named), "the discreet copy names no organization or purpose: {named}");
    }

    // Revoked from its page.
    let shown = web.get(&format!("/consents/{id}")).await;
    assert!(shown.body.contains("id=\"consent-state\">given"), "{}", shown.body);
    let revoked =
        web.post(&format!("/consents/{id}/revoke"), &[("csrf", &csrf), ("reason", "withdrawn_by_subject")]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let after = web.get(&format!("/consents/{id}")).await;
    assert!(after.body.contains("id=\"consent-state\">withdrawn"), "{}", after.body);
}

/// The consent form's details, owned, for a step of recording it.
fn consent_details(csrf: &str, step: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(90)).date().to_string();
    let mut pairs: Vec<(String, String)> = [
        ("csrf", csrf),
        ("step", step),
        ("purpose", "housing"),
        ("type", "shelter"),
        ("label", "identifying"),
        ("valid_until", until.as_str()),
        ("method", "written"),
        ("language", "en"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    pairs
}

/// Records a consent through the console with an uploaded scan; returns the consent id.
async fn record_with_scan(web: &mut Web, csrf: &str, extra: &[(&str, &str)], scan: &[u8]) -> String {
    let printed = post_form(web, "/consents/new", consent_details(csrf, "print", extra)).await;
    assert_eq!(printed.status, StatusCode::OK, "{}", printed.body);
    assert!(printed.body.contains("enctype=\"multipart/form-data\"") && printed.body.contains("type=\"file\""));
    let pairs = consent_details(csrf, "record", extra);
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let recorded =
        web.post_multipart("/consents/new", &borrowed, ("scan", "signed-form.pdf", "application/pdf", scan)).await;
    assert_eq!(recorded.status, StatusCode::SEE_OTHER, "{}", recorded.body);
    recorded.location().trim_start_matches("/consents/").trim_end_matches("/copy").to_owned()
}

#[tokio::test]
async fn a_scan_is_hashed_by_the_node_and_kept_only_where_the_organization_opts_in_then_the_consent_is_renewed_and_listed_by_subject()
 {
    let net = TestNet::start().await;
    let keeping = haven_node::console::ConsoleConfig { keep_scans: true, ..haven_tests::net::loopback_console() };
    let harbor = net.node_with_console("harbor", &[("casey", Role::Caseworker)], keeping).await;
    harbor.set_password("casey", PASSWORD).await;
    let mut web = Web::new(harbor.console);
    web.sign_in("casey", PASSWORD).await;
    let csrf = web.get("/consents/new").await.hidden("csrf").unwrap();
    let scan = b"%PDF-1.4 fictional signed consent form of Ana Example (not a real person)";
    let digest = hex::encode(sha2::Sha256::digest(scan));

    // A typed hash that is not the scan's: refused beside the field, nothing recorded.
    let pairs = consent_details(&csrf, "record", &[("evidence", &"ab".repeat(32))]);
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mismatch = web.post_multipart("/consents/new", &borrowed, ("scan", "s.pdf", "application/pdf", scan)).await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST, "{}", mismatch.body);
    assert!(mismatch.body.contains("is not the uploaded scan"), "{}", mismatch.body);
    // A scan over the 10 MiB limit is refused, with nothing recorded.
    let huge = vec![b'x'; 11 * 1024 * 1024];
    let pairs = consent_details(&csrf, "record", &[]);
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let over = web.post_multipart("/consents/new", &borrowed, ("scan", "huge.pdf", "application/pdf", &huge)).await;
    assert!(over.status.is_client_error(), "{} {}", over.status, over.body);
    assert!(over.body.contains("over the 10 MiB limit"), "the page says why: {}", over.body);
    assert!(web.get("/consents").await.body.contains("Nothing here yet"));

    // The node hashes the scan: the receipt holds its SHA-256, and this organization keeps the scan.
    let id = record_with_scan(&mut web, &csrf, &[], scan).await;
    let record = harbor
        .client()
        .await
        .get_consent(harbor.as_person("casey", GetConsentRequest { consent_id: id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert!(record.receipt_json.contains(&digest), "{}", record.receipt_json);
    let shown = web.get(&format!("/consents/{id}")).await;
    assert!(shown.body.contains(&format!("/consents/{id}/scan")), "{}", shown.body);
    let download = web.get(&format!("/consents/{id}/scan")).await;
    assert_eq!(download.status, StatusCode::OK);
    assert!(download.header("content-disposition").starts_with("attachment"), "never rendered in the console");
    assert_eq!(download.header("content-type"), "application/octet-stream");
    assert_eq!(download.body.as_bytes(), scan);
    let mut conn = harbor.state.store.pool().acquire().await.unwrap();
    let log: Vec<(String, String)> =
        sqlx::query_as("SELECT action, detail FROM access_log WHERE action LIKE 'scan_%' ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(log, [("scan_kept".to_owned(), id.clone()), ("scan_opened".to_owned(), id.clone())]);

    // Renewed from its page: the new consent supersedes it, for the same subject.
    let renew = web.get(&format!("/consents/{id}/renew")).await;
    assert_eq!(renew.status, StatusCode::OK, "{}", renew.body);
    assert_eq!(renew.hidden("supersedes").as_deref(), Some(id.as_str()));
    let subject = renew.hidden("subject").unwrap();
    let renewed =
        record_with_scan(&mut web, &csrf, &[("supersedes", &id), ("subject", &subject)], b"second scan").await;
    assert_ne!(renewed, id);
    let old = web.get(&format!("/consents/{id}")).await;
    assert!(old.body.contains("id=\"consent-state\">superseded"), "{}", old.body);

    // Listed by subject: both, as the gateway holds them.
    let listed = web.get(&format!("/consents?subject={subject}")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert!(listed.body.contains(&id) && listed.body.contains(&renewed), "{}", listed.body);
    let other = web.get("/consents?subject=s_nobody").await;
    assert!(!other.body.contains(&id), "another subject lists neither");

    // An organization that did not opt in keeps only the hash.
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    maple.set_password("sam", PASSWORD).await;
    let mut web = Web::new(maple.console);
    web.sign_in("sam", PASSWORD).await;
    let csrf = web.get("/consents/new").await.hidden("csrf").unwrap();
    let id = record_with_scan(&mut web, &csrf, &[], scan).await;
    let shown = web.get(&format!("/consents/{id}")).await;
    assert!(!shown.body.contains("/scan\""), "no scan to download: {}", shown.body);
    assert_eq!(web.get(&format!("/consents/{id}/scan")).await.status, StatusCode::NOT_FOUND);
    let mut conn = maple.state.store.pool().acquire().await.unwrap();
    let kept: (i64,) = sqlx::query_as("SELECT count(*) FROM consent_scan").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(kept.0, 0, "the scan was hashed and discarded");
}

/// Posts a form given as owned pairs.
async fn post_form(web: &mut Web, path: &str, fields: Vec<(String, String)>) -> haven_tests::web::Page {
    let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    web.post(path, &borrowed).await
}

#[tokio::test]
async fn an_auditor_searches_the_trail_checks_an_entrys_inclusion_proof_and_downloads_an_export_that_verifies() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker), ("pat", Role::PrivacyOfficer)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    let office = net.node("audit-office", &[("ada", Role::Auditor)]).await;
    office.set_password("ada", PASSWORD).await;
    let secret = office.enroll_second_factor("ada").await;
    let id = referral_to_maple(&harbor, &maple, "Rosa (fictional)").await;

    // A checkpoint that covers the referral's entries, seen by the auditor's own witness.
    let mut audit =
        haven_proto::v1::audit_client::AuditClient::connect(format!("http://{}", office.addr)).await.unwrap();
    audit.get_checkpoint(office.as_person("ada", GetCheckpointRequest { refresh: true })).await.unwrap();
    office.state.witness.check_now().await;

    let mut web = Web::new(office.console);
    let code = haven_node::totp::code(&secret, SystemClock.now_secs());
    assert_eq!(web.sign_in_with_code("ada", PASSWORD, &code).await.location(), "/");
    let no_dates = web.get("/audit?from=&until=2026-01-01").await;
    assert_eq!(no_dates.status, StatusCode::BAD_REQUEST);
    assert!(no_dates.body.contains("a search always has one"), "{}", no_dates.body);
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let found = web.get(&format!("/audit?from={today}&until={today}&message_id={id}")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let link =
        found.body.split("<a href=\"/audit/entries/").nth(1).expect("an entry").split('"').next().unwrap().to_owned();
    let entry = web.get(&format!("/audit/entries/{}", link.replace("&amp;", "&"))).await;
    assert_eq!(entry.status, StatusCode::OK, "{}", entry.body);
    assert!(entry.body.contains("id=\"proof-state\">verified against the checkpoint of"), "{}", entry.body);

    // The export downloads, and verifies offline.
    let export = web.get(&format!("/audit/export?from={today}&until={today}")).await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(export.header("content-disposition").contains("attachment"));
    let path = net.dir.path().join("console-export.jsonl");
    std::fs::write(&path, export.body.as_bytes()).unwrap();
    let summary = haven_trust::export::verify_files(&path, &net.certs.gateway_signing_cert(), &[]);
    assert!(summary.is_ok(), "the export verifies offline: {summary:?}");

    // A caseworker may not search the trail, nor read the report.
    maple.set_password("sam", PASSWORD).await;
    let mut sam = Web::new(maple.console);
    sam.sign_in("sam", PASSWORD).await;
    assert_eq!(sam.get(&format!("/audit?from={today}&until={today}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(sam.get("/report").await.status, StatusCode::FORBIDDEN);

    // The privacy officer's report lists the disclosure.
    harbor.set_password("pat", PASSWORD).await;
    let pat_secret = harbor.enroll_second_factor("pat").await;
    let mut pat = Web::new(harbor.console);
    let code = haven_node::totp::code(&pat_secret, SystemClock.now_secs());
    pat.sign_in_with_code("pat", PASSWORD, &code).await;
    let sent = harbor
        .client()
        .await
        .get_message(harbor.as_person("casey", GetMessageRequest { message_id: id.clone() }))
        .await;
    assert!(sent.is_ok());
    let mut conn = harbor.state.store.pool().acquire().await.unwrap();
    let subject: String =
        sqlx::query_scalar("SELECT subject FROM consents LIMIT 1").fetch_one(&mut *conn).await.unwrap();
    let report = pat.get(&format!("/report?subject={subject}")).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert!(report.body.contains("maple-house") && report.body.contains("survivor_first_name"), "{}", report.body);
    // An auditor names the controller; without it the gateway says why it needs one.
    let unnamed = web.get(&format!("/report?subject={subject}")).await;
    assert_eq!(unnamed.status, StatusCode::BAD_REQUEST);
    assert!(unnamed.body.contains("controller is required"), "{}", unnamed.body);
    let audited = web.get(&format!("/report?subject={subject}&controller=harbor")).await;
    assert!(audited.body.contains("survivor_first_name"), "{}", audited.body);
}

/// Slow links: no page, with every asset it loads, transfers more than 100 KB, even uncompressed,
/// and nothing is loaded from elsewhere (no web fonts, no CDN).
#[tokio::test]
async fn no_page_with_its_assets_weighs_more_than_100_kb_and_nothing_comes_from_elsewhere() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    harbor.set_password("casey", PASSWORD).await;
    let mut web = Web::new(harbor.console);
    web.sign_in("casey", PASSWORD).await;
    for path in ["/sign-in", "/inbox", "/sent", "/consents/new", "/referrals/new", "/alerts/new"] {
        let page = web.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let mut total = page.body.len();
        for attr in ["src=\"", "href=\""] {
            for link in page.body.split(attr).skip(1).filter_map(|s| s.split('"').next()) {
                assert!(!link.starts_with("http") && !link.starts_with("//"), "{path} loads {link} from elsewhere");
                if link.starts_with("/assets/") {
                    total += web.get(link).await.body.len();
                }
            }
        }
        assert!(total < 100 * 1024, "{path} and its assets weigh {total} bytes");
    }
}

#[tokio::test]
async fn a_received_referral_is_assigned_to_a_colleague_who_finds_it_under_mine_and_the_assignment_is_logged() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let people = [("sam", Role::Caseworker), ("rita", Role::Caseworker), ("ada", Role::Auditor)];
    let maple = net.node("maple-house", &people).await;
    maple.set_password("sam", PASSWORD).await;
    maple.set_password("rita", PASSWORD).await;
    let id = referral_to_maple(&harbor, &maple, "Rosa (fictional)").await;

    let mut sam = Web::new(maple.console);
    sam.sign_in("sam", PASSWORD).await;
    let page = sam.get(&format!("/messages/{id}")).await;
    assert!(page.body.contains("<option value=\"rita\">rita</option>"), "colleagues who read mail are offered");
    assert!(!page.body.contains("<option value=\"ada\">"), "an auditor is not");
    let csrf = page.hidden("csrf").unwrap();
    let path = format!("/messages/{id}/assign");
    assert_eq!(sam.post(&path, &[("csrf", &csrf), ("to", "ada")]).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(sam.post(&path, &[("csrf", &csrf), ("to", "nobody-here")]).await.status, StatusCode::NOT_FOUND);
    let other =
        sam.post("/messages/01a24690-0000-7000-8000-000000000000/assign", &[("csrf", &csrf), ("to", "rita")]).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "a message this node never received");
    assert_eq!(sam.post(&path, &[("csrf", &csrf), ("to", "rita")]).await.status, StatusCode::SEE_OTHER);

    let mut rita = Web::new(maple.console);
    rita.sign_in("rita", PASSWORD).await;
    assert!(rita.get("/inbox?mine=1").await.body.contains(&id), "rita finds it under mine");
    assert!(!sam.get("/inbox?mine=1").await.body.contains(&id), "sam does not");
    let mut conn = maple.state.store.pool().acquire().await.unwrap();
    let logged: (String, String) =
        sqlx::query_as("SELECT person, detail FROM access_log WHERE action = 'assigned' AND message_id = $1")
            .bind(&id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(logged, ("sam".to_owned(), "rita".to_owned()));
}

#[tokio::test]
async fn views_reach_the_audit_trail_signed_by_the_recipient_and_the_report_lists_them_beside_the_disclosure() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker), ("pat", Role::PrivacyOfficer)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    let office = net.node("audit-office", &[("ada", Role::Auditor)]).await;
    let id = referral_to_maple(&harbor, &maple, "Rosa (fictional)").await;

    // Sam opens it at the shelter; the node reports the view, signed.
    maple.set_password("sam", PASSWORD).await;
    let mut sam = Web::new(maple.console);
    sam.sign_in("sam", PASSWORD).await;
    assert_eq!(sam.get(&format!("/messages/{id}")).await.status, StatusCode::OK);
    let s = &maple.state;
    let reported = haven_node::views::report_pending(&s.store, &s.link, &s.clock).await.unwrap();
    assert_eq!(reported, haven_node::views::Reported { stored: 1, refused: 0 });
    let again = haven_node::views::report_pending(&s.store, &s.link, &s.clock).await.unwrap();
    assert_eq!(again, haven_node::views::Reported::default(), "each view is reported once");

    // The privacy officer at the NGO sees the view beside the disclosure, without the staff name.
    harbor.set_password("pat", PASSWORD).await;
    let secret = harbor.enroll_second_factor("pat").await;
    let mut pat = Web::new(harbor.console);
    pat.sign_in_with_code("pat", PASSWORD, &haven_node::totp::code(&secret, SystemClock.now_secs())).await;
    let mut conn = harbor.state.store.pool().acquire().await.unwrap();
    let subject: String =
        sqlx::query_scalar("SELECT subject FROM consents LIMIT 1").fetch_one(&mut *conn).await.unwrap();
    let report = pat.get(&format!("/report?subject={subject}")).await;
    assert!(report.body.contains("viewed by caseworker"), "{}", report.body);
    assert!(!report.body.contains(">sam<") && !report.body.contains("sam ("), "staff names stay at their organization");
    // An auditor sees who.
    let mut audit =
        haven_proto::v1::audit_client::AuditClient::connect(format!("http://{}", office.addr)).await.unwrap();
    let r =
        audit
            .subject_access_report(office.as_person(
                "ada",
                SubjectAccessRequest { subject_pseudonym: subject.clone(), controller: "harbor".into() },
            ))
            .await
            .unwrap()
            .into_inner();
    let view = r.disclosures.iter().find(|d| d.action == "viewed").expect("the view is in the report");
    assert_eq!(
        (view.viewer.as_str(), view.viewer_role.as_str(), view.recipient.as_str()),
        ("sam", "caseworker", "maple-house")
    );
    assert!(view.released_fields.contains(&"survivor_first_name".to_owned()));

    // A view of a message the shelter never received is refused, and the refusal is audited.
    let mut conn = maple.state.store.pool().acquire().await.unwrap();
    sqlx::query("INSERT INTO access_log (at_micros, person, role, action, message_id, subject, fields, view_id) VALUES (1, 'sam', 'caseworker', 'viewed', $1, 'r_x', 'survivor_first_name', $2)")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&mut *conn)
        .await
        .unwrap();
    let refused = haven_node::views::report_pending(&s.store, &s.link, &s.clock).await.unwrap();
    assert_eq!(refused, haven_node::views::Reported { stored: 0, refused: 1 });
    let filter = AuditFilter { action: "viewed".into(), ..Default::default() };
    let entries = audit
        .query(office.as_person("ada", AuditQueryRequest { filter: Some(filter), page_size: 10, cursor: 0 }))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(entries.iter().any(|e| e.outcome == "refused" && e.reason == "not_received"), "{entries:?}");

    // Another organization's signature, or a batch for another organization, is refused outright.
    let forged = haven_trust::views::ViewBatch { org: maple.state.link.signer().org().clone(), views: Vec::new() };
    let jws = harbor.state.link.signer().sign(&forged).unwrap();
    let mut gw = haven_proto::v1::gateway_client::GatewayClient::new(maple.state.link.channel());
    let request =
        maple.state.link.request(&PersonId::node(), Role::Node, ReportViewsRequest { batch_jws: jws }).unwrap();
    let err = gw.report_views(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("signed by `harbor`"), "{}", err.message());
    let request = maple
        .state
        .link
        .request(&PersonId::node(), Role::Node, ReportViewsRequest { batch_jws: "garbage".into() })
        .unwrap();
    assert_eq!(gw.report_views(request).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// The gateway goes down between the preview and the send: the referral stays pending in the node's
/// outbox, and the page says so.
#[tokio::test]
async fn a_send_while_the_gateway_is_down_stays_pending_and_the_page_says_so() {
    let mut net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    harbor.set_password("casey", PASSWORD).await;
    let labels = ["identifying", "contact", "operational"];
    let req = consent_request(&["housing"], &["shelter"], &labels, SystemClock.now_micros() + 30 * DAY);
    let (consent, _) = record_consent(&harbor, req).await;
    let mut web = Web::new(harbor.console);
    web.sign_in("casey", PASSWORD).await;
    let csrf = web.get("/referrals/new").await.hidden("csrf").unwrap();
    let fields = |step: &str, id: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf.as_str()),
            ("step", step),
            ("message_id", id),
            ("consent", consent.as_str()),
            ("recipient", "maple-house"),
            ("purpose", "housing"),
            ("f.safe_to_contact_by", "through_caseworker"),
            ("f.urgency", "high"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let preview = post(&mut web, fields("preview", "")).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let id = preview.hidden("message_id").unwrap();

    net.stop_keeping_files().await;
    let sent = post(&mut web, fields("send", &id)).await;
    assert_eq!(sent.location(), format!("/messages/{id}"), "{}", sent.body);
    let page = web.get(sent.location()).await;
    assert!(page.body.contains("Waiting at this node"), "{}", page.body);
    let listed = harbor.client().await.list_sent(harbor.as_person("casey", ListSentRequest::default())).await.unwrap();
    assert_eq!(listed.into_inner().messages[0].state, "pending");
}

/// The live-update stream tells of arrivals with metadata only, and ends as soon as its session does.
#[tokio::test]
async fn the_event_stream_carries_no_field_values_and_ends_with_its_session() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    maple.set_password("sam", PASSWORD).await;
    let mut web = Web::new(maple.console);
    web.sign_in("sam", PASSWORD).await;
    let csrf = web.get("/inbox").await.hidden("csrf").unwrap();

    let mut listener = Web::new(maple.console);
    listener.cookies = web.cookies.clone();
    let before = maple.state.arrivals.receiver_count();
    let events = tokio::spawn(async move { listener.get("/events").await });
    // The stream subscribes to arrivals before it answers: once it has, an arrival is on it.
    tokio::time::timeout(Duration::from_secs(20), async {
        while maple.state.arrivals.receiver_count() <= before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stream opens");
    referral_to_maple(&harbor, &maple, "Rosa (fictional)").await;
    web.post("/sign-out", &[("csrf", &csrf)]).await;
    let page = tokio::time::timeout(Duration::from_secs(20), events)
        .await
        .expect("the stream ends once its session has")
        .unwrap();
    assert_eq!(page.header("content-type"), "text/event-stream");
    assert!(page.body.contains("event: arrival\ndata: delivery"), "{}", page.body);
    assert!(page.body.contains("event: ended"), "{}", page.body);
    assert!(!page.body.contains("Rosa"), "metadata only: {}", page.body);
}

/// Beside the limit per name, one per address: thirty failures from one address, under any names,
/// make that address wait too.
#[tokio::test]
async fn many_failures_from_one_address_make_the_address_wait_whatever_the_names() {
    let net = TestNet::start().await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    maple.set_password("sam", PASSWORD).await;
    let mut conn = maple.state.store.pool().acquire().await.unwrap();
    // Thirty failures from this address already in the log, each under another name (as a spray of
    // guesses leaves them); inserting them saves thirty password hashes.
    let now = SystemClock.now_micros();
    for i in 0..30 {
        let source = haven_node::access::Source::Console("127.0.0.1".into());
        let name = format!("guess-{i}");
        haven_node::access::sign_in(&mut conn, &name, "", haven_node::access::SignIn::Failed, &source, now)
            .await
            .unwrap();
    }
    let mut web = Web::new(maple.console);
    let waits = web.sign_in("sam", PASSWORD).await;
    assert_eq!(waits.status, StatusCode::TOO_MANY_REQUESTS, "{}", waits.body);
    assert!(waits.body.contains("from your network address"), "{}", waits.body);
}

#[tokio::test]
async fn an_administrator_makes_rotates_and_withdraws_sealing_keys_from_node_health() {
    // No organization has a key yet: an admin makes the first.
    let net = TestNet::start_without_keys().await;
    let maple = net.node_without_sealing_key("maple-house", &[("omar", Role::Admin), ("sam", Role::Caseworker)]).await;
    maple.set_password("omar", PASSWORD).await;
    maple.set_password("sam", PASSWORD).await;
    let secret = maple.enroll_second_factor("omar").await;
    let mut admin = Web::new(maple.console);
    let code = haven_node::totp::code(&secret, SystemClock.now_secs());
    admin.sign_in_with_code("omar", PASSWORD, &code).await;

    let page = admin.get("/health").await;
    assert!(page.body.contains("This organization has no sealing key yet"), "{}", page.body);
    let csrf = page.hidden("csrf").unwrap();
    assert_eq!(admin.post("/keys", &[("csrf", &csrf)]).await.location(), "/health#keys");
    assert_eq!(admin.post("/keys", &[("csrf", &csrf)]).await.location(), "/health#keys", "a rotation");
    let keys = maple.client().await.sealing_keys(maple.as_person("omar", SealingKeysRequest {})).await.unwrap();
    let keys = keys.into_inner().keys;
    assert_eq!(keys.iter().map(|k| k.state.as_str()).collect::<Vec<_>>(), ["published", "published"]);
    let old = &keys[1].kid;
    let withdrawn =
        admin.post(&format!("/keys/{}/withdraw", haven_node::console::pages::urlencode(old)), &[("csrf", &csrf)]).await;
    assert_eq!(withdrawn.location(), "/health#keys", "{}", withdrawn.body);
    let page = admin.get("/health").await;
    let row = &page.body[page.body.find(&format!("data-kid=\"{old}\"")).unwrap()..];
    assert!(row.contains("withdrawn"), "{row}");
    assert!(admin.post("/keys", &[]).await.status == StatusCode::FORBIDDEN, "a post without its token is refused");

    // The key log, as the node verified it, downloads for the offline verifier.
    maple.state.key_log.check_now().await;
    let log = admin.get("/keys/log").await;
    assert!(log.header("content-disposition").starts_with("attachment"));
    assert_eq!(log.body.lines().count(), 4, "{}", log.body);

    // A caseworker may not make keys.
    let mut sam = Web::new(maple.console);
    sam.sign_in("sam", PASSWORD).await;
    let csrf = sam.get("/inbox").await.hidden("csrf").unwrap();
    assert_eq!(sam.post("/keys", &[("csrf", &csrf)]).await.status, StatusCode::FORBIDDEN);
}
