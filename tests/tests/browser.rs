//! The console in a real browser: Debian's Chromium, headless, driven through chromedriver (WebDriver),
//! against real nodes and a real gateway over mTLS. Each scenario saves a PNG of each screen under
//! `target/tmp/console-screens/`, and runs axe-core (from the npm package in `tests/browser/`, loaded
//! into the page by the test, never shipped) on every page it visits: no serious or critical violation
//! may remain.
//!
//! The node's database is always SQLite, so these tests do not depend on the gateway's database; they
//! run in both suites all the same. In CI (`CI` set) a missing browser or a missing axe-core fails the
//! test; elsewhere the test says what to install and passes without running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use haven_proto::v1::*;
use haven_tests::net::{TestNet, TestNode};
use haven_trust::clock::{Clock, SystemClock};
use haven_trust::ids::Role;
use tokio::io::{AsyncBufReadExt, BufReader};

const PASSWORD: &str = "correct horse battery";
/// How long a step may take. Generous: a CI machine with two cores runs a gateway, several nodes and a
/// browser at once.
const WAIT: Duration = Duration::from_secs(45);

/// One scenario at a time: each runs its own browser, and several at once on a small machine starve
/// the nodes they drive.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running chromedriver, stopped when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// What the browser tests need and where it is; `None` (after saying what to install) outside CI
/// when something is missing. In CI a missing piece fails the test.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let chromedriver = PathBuf::from("/usr/bin/chromedriver");
    let axe = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/node_modules/axe-core/axe.min.js");
    let mut missing = Vec::new();
    if !chromedriver.exists() || !Path::new("/usr/bin/chromium").exists() {
        missing.push("Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)");
    }
    if !axe.exists() {
        missing.push("axe-core (npm ci --prefix tests/browser)");
    }
    if missing.is_empty() {
        return Some((chromedriver, axe));
    }
    let message = format!("the browser tests need {}", missing.join(" and "));
    assert!(!in_ci(), "{message}");
    eprintln!("skipping: {message}");
    None
}

/// Starts chromedriver on a free loopback port and waits until it says it is ready.
async fn chromedriver(binary: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("chromedriver output") {
            if line.contains("started successfully") {
                return;
            }
        }
        panic!("chromedriver ended before it was ready");
    })
    .await
    .expect("chromedriver is ready in time");
    // Drain the rest so chromedriver never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Driver { _child: child, url: format!("http://127.0.0.1:{port}") }
}

/// A headless Chromium session, `width` pixels wide.
async fn browser(driver: &Driver, width: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    // A window is never narrower than about 500 pixels; a phone's width is emulated instead.
    let mut options = serde_json::json!({
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--lang=en-US", "--window-size=1280,900"],
    });
    if width < 1280 {
        options["mobileEmulation"] =
            serde_json::json!({ "deviceMetrics": { "width": width, "height": 780, "pixelRatio": 1 } });
    }
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(&driver.url).await.expect("a browser session")
}

/// One person in one browser, with the page checks every scenario makes.
struct Person {
    client: Client,
    base: String,
    axe: String,
    shots: PathBuf,
}

impl Person {
    async fn new(driver: &Driver, node: &TestNode, axe: &Path, width: u32) -> Person {
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screens");
        std::fs::create_dir_all(&shots).unwrap();
        Person {
            client: browser(driver, width).await,
            base: node.console_url(),
            axe: std::fs::read_to_string(axe).expect("axe-core"),
            shots,
        }
    }

    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.expect("page loads");
    }

    async fn sign_in(&self, name: &str) {
        self.password(name).await;
        self.client.wait().at_most(WAIT).for_element(Locator::Css("header .who")).await.expect("signed in");
    }

    async fn password(&self, name: &str) {
        self.goto("/sign-in").await;
        self.client.find(Locator::Id("name")).await.unwrap().send_keys(name).await.unwrap();
        self.client.find(Locator::Id("password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
        self.client.find(Locator::Css("main button[type=submit]")).await.unwrap().click().await.unwrap();
    }

    /// Signs in with the password, then the code an authenticator app would show for `secret`.
    async fn sign_in_with_code(&self, name: &str, secret: &[u8], shot: &str) {
        self.password(name).await;
        let field = self.client.wait().at_most(WAIT).for_element(Locator::Id("code")).await.expect("asked for a code");
        self.check(shot).await;
        field.send_keys(&haven_node::totp::code(secret, SystemClock.now_secs())).await.unwrap();
        self.client.find(Locator::Css("main button[type=submit]")).await.unwrap().click().await.unwrap();
        self.left("/sign-in/code").await;
    }

    /// Waits until the browser has navigated away from `path` (the page it was on still shows its own
    /// heading until the next one loads, so waiting for an element would not do).
    async fn left(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now_at = self.client.current_url().await.map(|u| u.path().to_owned()).unwrap_or_default();
            if now_at != path {
                self.client.wait().at_most(WAIT).for_element(Locator::Css("main h1")).await.unwrap();
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "still at {path} after {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the screen as `name` and runs axe-core on the page.
    async fn check(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        // WebDriver runs the script itself, outside the page's CSP; the page never loads it.
        let script = format!(
            "{}\nconst done = arguments[arguments.length - 1];\naxe.run(document, {{ resultTypes: ['violations'] }}).then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id + ': ' + v.help + ' ' + v.nodes.map(n => n.target.join(' ')).join(', ')))).catch(e => done(['axe failed: ' + e]));",
            self.axe
        );
        let found = self.client.execute_async(&script, vec![]).await.expect("axe runs");
        let found: Vec<String> = serde_json::from_value(found).unwrap_or_default();
        assert!(found.is_empty(), "{name}: serious or critical accessibility violations: {found:#?}");
    }

    /// Waits until the page's live-update stream is open (the console's script marks the body).
    async fn live(&self) {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("body[data-events-open]"))
            .await
            .expect("the live-update stream opens");
    }

    async fn text_of(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.expect(css).text().await.unwrap()
    }

    /// Waits until the element `css` holds `want`, without navigating.
    async fn wait_text(&self, css: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut seen = String::new();
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = e.text().await
            {
                if text.contains(want) {
                    return;
                }
                seen = text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{css}` did not show `{want}` within {WAIT:?} (it shows `{seen}`)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_referral_appears_live_at_the_shelter_is_opened_and_accepted_and_the_ngo_sees_it_without_a_reload() {
    let Some((chromedriver_bin, axe)) = prerequisites() else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    harbor.set_password("casey", PASSWORD).await;
    maple.set_password("sam", PASSWORD).await;
    let driver = chromedriver(&chromedriver_bin).await;

    // The shelter's caseworker signs in and waits on the inbox.
    let sam = Person::new(&driver, &maple, &axe, 1280).await;
    sam.goto("/sign-in").await;
    sam.check("sign-in").await;
    sam.sign_in("sam").await;
    sam.goto("/inbox").await;
    assert!(sam.text_of("#inbox-items").await.contains("Nothing here yet"));
    sam.live().await;

    // At the NGO, casey fills in a referral, previews it (the shelter will receive it, the police are
    // denied), and sends it.
    // First the survivor's consent: the form printed in her language, signed, its scan's hash typed,
    // recorded, and her copy printed.
    let casey = Person::new(&driver, &harbor, &axe, 1280).await;
    casey.sign_in("casey").await;
    casey.goto("/consents/new").await;
    let c = &casey.client;
    for id in ["purpose-housing", "type-shelter", "label-identifying", "label-contact", "label-operational"] {
        c.find(Locator::Id(id)).await.unwrap().click().await.unwrap();
    }
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(90)).date().to_string();
    c.execute("document.getElementById('valid_until').value = arguments[0];", vec![serde_json::json!(until)])
        .await
        .unwrap();
    casey.check("new-consent").await;
    c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
    c.wait().at_most(WAIT).for_element(Locator::Id("evidence")).await.expect("the form to print");
    casey.check("consent-form").await;
    c.find(Locator::Id("evidence")).await.unwrap().send_keys(&"ef".repeat(32)).await.unwrap();
    c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
    casey.wait_text("#copy", "Your consent to share information").await;
    casey.check("consent-copy").await;
    let consent_id =
        c.current_url().await.unwrap().path().trim_start_matches("/consents/").trim_end_matches("/copy").to_owned();

    casey.goto("/referrals/new").await;
    let c = &casey.client;
    c.find(Locator::Id("consent")).await.unwrap().select_by_value(&consent_id).await.unwrap();
    c.find(Locator::Id("to-maple-house")).await.unwrap().click().await.unwrap();
    c.find(Locator::Id("to-metro-police")).await.unwrap().click().await.unwrap();
    c.find(Locator::Id("purpose")).await.unwrap().select_by_value("housing").await.unwrap();
    c.find(Locator::Id("f-survivor_first_name")).await.unwrap().send_keys("Rosa (fictional)").await.unwrap();
    c.find(Locator::Id("f-safe_to_contact_by")).await.unwrap().select_by_value("through_caseworker").await.unwrap();
    c.find(Locator::Id("f-urgency")).await.unwrap().select_by_value("high").await.unwrap();
    casey.check("new-referral").await;
    c.find(Locator::Css("button[value=preview]")).await.unwrap().click().await.unwrap();
    casey.wait_text("#preview tr[data-recipient='maple-house']", "will receive").await;
    casey.wait_text("#preview tr[data-recipient='metro-police']", "denied").await;
    casey.check("referral-preview").await;
    c.find(Locator::Css("button[value=send]")).await.unwrap().click().await.unwrap();
    let id = casey
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("td[data-recipient='maple-house']"))
        .await
        .expect("the sent referral's page");
    drop(id);
    let url = casey.client.current_url().await.unwrap();
    let id = url.path().trim_start_matches("/messages/").to_owned();
    casey.live().await;
    casey.client.execute("window.havenMarker = 'kept';", vec![]).await.unwrap();

    // It appears in the open inbox by itself.
    let link = format!("a[href='/messages/{id}']");
    sam.client.wait().at_most(WAIT).for_element(Locator::Css(&link)).await.expect("the referral appears live");
    assert!(!sam.text_of("#inbox-items").await.contains("Rosa"), "the list shows no field values");
    sam.check("inbox").await;

    // Casey's page follows the referral: delivered.
    casey.wait_text("td[data-recipient='maple-house']", "delivered").await;
    casey.check("sent-message").await;

    // Sam opens it (a recorded view) and accepts it.
    sam.client.find(Locator::Css(&link)).await.unwrap().click().await.unwrap();
    sam.wait_text("#message-fields", "Rosa (fictional)").await;
    sam.check("received-referral").await;
    sam.client.find(Locator::Css("button[value=accepted]")).await.unwrap().click().await.unwrap();
    sam.wait_text("#message-state", "accepted").await;
    let mut conn = maple.state.store.pool().acquire().await.unwrap();
    let views = haven_node::access::of_message(&mut conn, &id).await.unwrap();
    assert!(views.iter().any(|v| v.action == "viewed" && v.person == "sam"), "{views:?}");

    // Casey's page shows it accepted, and it was not reloaded to get there.
    casey.wait_text("td[data-recipient='maple-house']", "accepted").await;
    let marker = casey.client.execute("return window.havenMarker;", vec![]).await.unwrap();
    assert_eq!(marker, serde_json::json!("kept"), "the page updated in place");

    // The survivor withdraws consent: the shelter's page shows the withdrawal and hides the values.
    let revoke = RevokeConsentRequest { consent_id: consent_id.clone(), reason: "withdrawn_by_subject".into() };
    let mut arrivals = maple.state.arrivals.subscribe();
    harbor.client().await.revoke_consent(harbor.as_person("casey", revoke)).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while arrivals.recv().await.expect("arrivals").item_kind != "consent_withdrawn" {}
    })
    .await
    .expect("the withdrawal reaches the shelter in time");
    sam.goto(&format!("/messages/{id}")).await;
    let main = sam.text_of("main").await;
    assert!(main.contains("Data withdrawn"), "{main}");
    assert!(!main.contains("Rosa"), "withdrawn values are hidden");
    sam.check("withdrawn-referral").await;

    sam.client.close().await.unwrap();
    casey.client.close().await.unwrap();
}

#[tokio::test]
async fn the_console_works_at_360_pixels_and_by_keyboard_alone() {
    let Some((chromedriver_bin, axe)) = prerequisites() else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let net = TestNet::start().await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    maple.set_password("sam", PASSWORD).await;
    let driver = chromedriver(&chromedriver_bin).await;
    let sam = Person::new(&driver, &maple, &axe, 360).await;

    // Signing in by keyboard alone: Tab to each control, type, Enter.
    sam.goto("/sign-in").await;
    let active = || async {
        sam.client.execute("return document.activeElement.id || document.activeElement.tagName;", vec![]).await.unwrap()
    };
    let body = sam.client.find(Locator::Css("body")).await.unwrap();
    let mut reached = Vec::new();
    for _ in 0..8 {
        body.send_keys("\u{E004}").await.unwrap(); // Tab
        let now = active().await;
        reached.push(now.clone());
        if now == serde_json::json!("name") {
            break;
        }
    }
    assert_eq!(reached.last(), Some(&serde_json::json!("name")), "Tab reaches the name field: {reached:?}");
    let name = sam.client.find(Locator::Id("name")).await.unwrap();
    name.send_keys("sam\u{E004}").await.unwrap();
    assert_eq!(active().await, serde_json::json!("password"));
    sam.client.find(Locator::Id("password")).await.unwrap().send_keys(&format!("{PASSWORD}\u{E007}")).await.unwrap();
    sam.client.wait().at_most(WAIT).for_element(Locator::Css("header .who")).await.expect("signed in by keyboard");
    sam.goto("/inbox").await;
    let inner = sam.client.execute("return window.innerWidth;", vec![]).await.unwrap();
    assert_eq!(inner, serde_json::json!(360), "the page is laid out 360 px wide");
    sam.check("inbox-360px").await;
    let overflow = sam
        .client
        .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![])
        .await
        .unwrap();
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "no sideways scrolling at 360 px: {overflow}");
    // Focus is visible: the focused control draws an outline.
    let body = sam.client.find(Locator::Css("body")).await.unwrap();
    body.send_keys("\u{E004}").await.unwrap();
    let outline =
        sam.client.execute("return getComputedStyle(document.activeElement).outlineStyle;", vec![]).await.unwrap();
    assert_ne!(outline, serde_json::json!("none"), "the focused control shows it");
    sam.client.close().await.unwrap();
}

#[tokio::test]
async fn an_auditor_and_an_administrator_sign_in_with_a_second_factor_and_do_their_work() {
    let Some((chromedriver_bin, axe)) = prerequisites() else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let net = TestNet::start().await;
    let maple =
        net.node("maple-house", &[("ada", Role::Auditor), ("omar", Role::Admin), ("pat", Role::PrivacyOfficer)]).await;
    for p in ["ada", "omar", "pat"] {
        maple.set_password(p, PASSWORD).await;
    }
    let ada_key = maple.enroll_second_factor("ada").await;
    let omar_key = maple.enroll_second_factor("omar").await;
    let driver = chromedriver(&chromedriver_bin).await;

    let ada = Person::new(&driver, &maple, &axe, 1280).await;
    ada.sign_in_with_code("ada", &ada_key, "second-step").await;
    assert!(ada.client.current_url().await.unwrap().path().ends_with("/verification"));
    ada.wait_text("#witness-state", "").await;
    ada.check("verification").await;
    let today = time::OffsetDateTime::now_utc().date().to_string();
    ada.goto(&format!("/audit?from={today}&until={today}")).await;
    ada.check("audit-search").await;
    if let Ok(first) = ada.client.find(Locator::Css("#audit-entries a")).await {
        first.click().await.unwrap();
        ada.client.wait().at_most(WAIT).for_element(Locator::Id("proof-state")).await.unwrap();
        ada.check("audit-entry").await;
    }
    ada.client.close().await.unwrap();

    let omar = Person::new(&driver, &maple, &axe, 1280).await;
    omar.sign_in_with_code("omar", &omar_key, "second-step-admin").await;
    omar.goto("/health").await;
    omar.check("health").await;
    omar.goto("/people").await;
    omar.client.find(Locator::Id("new-name")).await.unwrap().send_keys("rita").await.unwrap();
    omar.client.find(Locator::Id("new-password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    omar.client.find(Locator::Css("form[action='/people'] button[type=submit]")).await.unwrap().click().await.unwrap();
    omar.wait_text("#people", "rita").await;
    omar.check("people").await;
    omar.client.close().await.unwrap();

    // A privacy officer with no second factor is sent to enroll, and scans nothing: the key is on the page.
    let pat = Person::new(&driver, &maple, &axe, 1280).await;
    pat.password("pat").await;
    let key = pat.client.wait().at_most(WAIT).for_element(Locator::Id("totp-key")).await.expect("enrollment");
    pat.check("enroll").await;
    let key = key.text().await.unwrap();
    let factor = haven_node::totp::SecondFactor::new(maple.state.store.clone(), maple.state.clock.clone());
    let pending = factor.pending(&haven_trust::ids::PersonId::parse("pat").unwrap()).await.unwrap().unwrap();
    assert_eq!(key, haven_node::totp::base32(&pending));
    let code = haven_node::totp::code(&pending, SystemClock.now_secs());
    pat.client.find(Locator::Id("code")).await.unwrap().send_keys(&code).await.unwrap();
    pat.client.find(Locator::Css("main button[type=submit]")).await.unwrap().click().await.unwrap();
    pat.wait_text("main", "recovery codes").await;
    pat.check("recovery-codes").await;
    pat.client.close().await.unwrap();
}

#[tokio::test]
async fn a_liaison_acknowledges_an_alert_and_the_sender_sees_who_did() {
    let Some((chromedriver_bin, axe)) = prerequisites() else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let police = net.node("metro-police", &[("lee", Role::Liaison)]).await;
    harbor.set_password("casey", PASSWORD).await;
    police.set_password("lee", PASSWORD).await;
    let driver = chromedriver(&chromedriver_bin).await;

    // Casey sends a de-identified alert to every organization a rule permits, after a preview.
    let casey = Person::new(&driver, &harbor, &axe, 1280).await;
    casey.sign_in("casey").await;
    casey.goto("/alerts/new").await;
    let c = &casey.client;
    c.find(Locator::Id("f-incident_type")).await.unwrap().select_by_value("immediate_danger").await.unwrap();
    c.find(Locator::Id("f-location_area")).await.unwrap().send_keys("Dock 4, Eastport (fictional)").await.unwrap();
    c.find(Locator::Id("f-reporter_contact")).await.unwrap().send_keys("via harbor desk").await.unwrap();
    casey.check("new-alert").await;
    c.find(Locator::Css("button[value=preview]")).await.unwrap().click().await.unwrap();
    casey.wait_text("#preview tr[data-recipient='metro-police']", "will receive").await;
    let row = casey.text_of("#preview tr[data-recipient='metro-police']").await;
    assert!(row.contains("Reporter's contact"), "the contact is shown as withheld: {row}");
    casey.check("alert-preview").await;
    let mut arrivals = police.state.arrivals.subscribe();
    c.find(Locator::Css("button[value=send]")).await.unwrap().click().await.unwrap();
    casey.client.wait().at_most(WAIT).for_element(Locator::Css("td[data-recipient='metro-police']")).await.unwrap();
    let id = casey.client.current_url().await.unwrap().path().trim_start_matches("/messages/").to_owned();
    casey.live().await;
    tokio::time::timeout(WAIT, async { while arrivals.recv().await.unwrap().item_kind != "delivery" {} })
        .await
        .expect("the alert reaches the police");

    // Lee opens it and acknowledges it with one action.
    let lee = Person::new(&driver, &police, &axe, 1280).await;
    lee.sign_in("lee").await;
    lee.goto(&format!("/messages/{id}")).await;
    let fields = lee.text_of("#message-fields").await;
    assert!(fields.contains("Dock 4") && !fields.contains("harbor desk"), "{fields}");
    lee.check("received-alert").await;
    lee.client.find(Locator::Css("button[value=acknowledged]")).await.unwrap().click().await.unwrap();
    lee.wait_text("#message-state", "acknowledged").await;

    // Casey's page shows who acknowledged, without a reload.
    casey.wait_text("td[data-recipient='metro-police']", "acknowledged").await;
    let row = casey.text_of("#recipients").await;
    assert!(row.contains("lee"), "the sender sees who acknowledged: {row}");
    casey.check("alert-acknowledged").await;
    casey.client.close().await.unwrap();
    lee.client.close().await.unwrap();
}
