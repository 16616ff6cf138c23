//! The `haven-node` commands (referral, alert, inbox, consent, whoami, and users), run in process
//! through `haven_node::cli::run` (the binary's own code path) against real nodes and a real gateway
//! over mTLS: what they print, as tables and as JSON lines, and what their exit codes mean.
//!
//! Waiting is always on a real event: an `inbox --watch --json` started before the send reports each
//! arrival, within a bounded time.

use std::io::{self, Write};
use std::time::Duration;

use haven_node::cli;
use haven_tests::net::{TestNet, TestNode};
use haven_trust::ids::Role;
use serde_json::Value;
use tokio::sync::mpsc;

/// What one command printed, and its exit code.
struct Run {
    code: u8,
    out: String,
    err: String,
}

impl Run {
    /// The output's JSON lines.
    fn json(&self) -> Vec<Value> {
        self.out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
    }

    /// The single JSON object a command printed.
    fn one(&self) -> Value {
        let mut rows = self.json();
        assert_eq!(rows.len(), 1, "expected one JSON line, got:\n{}", self.out);
        rows.remove(0)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.out, self.err)
    }
}

/// Runs `haven-node ARGS...` in process.
async fn haven_node(args: &[&str]) -> Run {
    let argv = std::iter::once("haven-node").chain(args.iter().copied());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(argv, &mut out, &mut err).await;
    Run { code, out: String::from_utf8_lossy(&out).into_owned(), err: String::from_utf8_lossy(&err).into_owned() }
}

/// How `person` reaches `node`: `--node URL --token TOKEN`.
fn signed_in(node: &TestNode, person: &str) -> Vec<String> {
    vec!["--node".into(), format!("http://{}", node.addr), "--token".into(), node.token(person).to_owned()]
}

/// Runs a command as `person` at `node`.
async fn as_person(node: &TestNode, person: &str, args: &[&str]) -> Run {
    let login = signed_in(node, person);
    let all: Vec<&str> = args.iter().copied().chain(login.iter().map(String::as_str)).collect();
    haven_node(&all).await
}

/// A writer that hands each complete line to a channel, so a test can read a running command's output.
struct LineSink {
    tx: mpsc::UnboundedSender<String>,
    buf: Vec<u8>,
}

impl Write for LineSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let _ = self.tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A running `haven-node inbox --watch --json`.
struct Watch {
    lines: mpsc::UnboundedReceiver<String>,
    errors: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<u8>,
}

impl Watch {
    /// Starts the watch and returns once the node has it open: from then on every arrival is printed.
    async fn start(node: &TestNode, person: &str) -> Watch {
        let (out_tx, lines) = mpsc::unbounded_channel();
        let (err_tx, mut errors) = mpsc::unbounded_channel();
        let argv: Vec<String> = ["haven-node", "inbox", "--watch", "--json"]
            .iter()
            .map(|s| s.to_string())
            .chain(signed_in(node, person))
            .collect();
        let task = tokio::spawn(async move {
            let mut out = LineSink { tx: out_tx, buf: Vec::new() };
            let mut err = LineSink { tx: err_tx, buf: Vec::new() };
            cli::run(argv, &mut out, &mut err).await
        });
        let first = tokio::time::timeout(Duration::from_secs(10), errors.recv())
            .await
            .expect("the watch opens within 10 s")
            .expect("the watch says it is open");
        assert!(first.starts_with("watching "), "unexpected first line from the watch: {first}");
        Watch { lines, errors, task }
    }

    /// The first printed arrival that matches `pred`, within 20 s.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.lines.recv().await {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if pred(&v) {
                    return Some(v);
                }
            }
            None
        })
        .await
        .unwrap_or_else(|_| panic!("{what} did not arrive within 20 s"));
        found.unwrap_or_else(|| {
            let mut why = Vec::new();
            while let Ok(l) = self.errors.try_recv() {
                why.push(l);
            }
            panic!("the watch ended before {what} arrived: {}", why.join("\n"))
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A date `days` from today, as `--until` takes it.
fn in_days(days: i64) -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(days)).to_string()
}

/// Records a consent for housing at shelters from the command line: (consent id, subject pseudonym).
async fn record_housing_consent(harbor: &TestNode) -> (String, String) {
    let until = in_days(30);
    let evidence = "ef".repeat(32);
    let r = as_person(
        harbor,
        "casey",
        &[
            "consent",
            "record",
            "--purpose",
            "housing",
            "--to-type",
            "shelter",
            "--label",
            "identifying",
            "contact",
            "operational",
            "location",
            "--until",
            &until,
            "--method",
            "written",
            "--evidence-sha256",
            &evidence,
            "--language",
            "en",
            "--json",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let c = r.one();
    assert_eq!(c["state"], "given", "{r:?}");
    (c["consent_id"].as_str().unwrap().to_owned(), c["subject"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_consented_referral_reaches_the_shelter_and_its_acceptance_comes_back() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let maple = net.node("maple-house", &[("sam", Role::Caseworker)]).await;
    let (consent_id, subject) = record_housing_consent(&harbor).await;

    let mut at_maple = Watch::start(&maple, "sam").await;
    let mut at_harbor = Watch::start(&harbor, "casey").await;
    let r = as_person(
        &harbor,
        "casey",
        &[
            "referral",
            "send",
            "--to",
            "maple-house",
            "--purpose",
            "housing",
            "--subject",
            &subject,
            "--consent",
            &consent_id,
            "--field",
            "urgency=high",
            "--field",
            "safe_to_contact_by=through_caseworker",
            "--field",
            "survivor_first_name=Rosa (fictional)",
            "--field",
            "needs:list=housing,counselling",
            "--field",
            "household_size:int=2",
            "--field",
            "medical_notes=fictional notes",
            "--json",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let sent = r.one();
    assert_eq!(sent["state"], "submitted");
    assert_eq!(sent["outcomes"][0]["outcome"], "queued", "{r:?}");
    assert_eq!(sent["outcomes"][0]["withheld_fields"], serde_json::json!(["medical_notes"]));
    let id = sent["message_id"].as_str().unwrap().to_owned();

    // The shelter receives it minimized, with typed fields and its own pseudonym for the survivor.
    let got = at_maple.until("the referral", |v| v["item_kind"] == "delivery" && v["message_id"] == id.as_str()).await;
    assert_eq!(got["org"], "harbor");
    assert_eq!(got["fields"]["survivor_first_name"], "Rosa (fictional)");
    assert_eq!(got["fields"]["household_size"], 2);
    assert_eq!(got["fields"]["needs"], serde_json::json!(["housing", "counselling"]));
    assert!(got["fields"].get("medical_notes").is_none(), "a shelter never receives sensitive fields");
    assert_ne!(got["subject"], subject.as_str(), "the recipient sees its own pseudonym");
    let listed = as_person(&maple, "sam", &["inbox", "--kind", "referral", "--json"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let row = listed.json().into_iter().find(|v| v["message_id"] == id.as_str()).expect("the inbox lists the referral");
    assert_eq!(row["status"], "delivered");
    assert_eq!(row["withheld_fields"], serde_json::json!(["medical_notes"]));
    let table = as_person(&maple, "sam", &["inbox"]).await;
    assert!(table.out.contains(&id) && table.out.contains("harbor (casey)"), "{table:?}");
    let shown = as_person(&maple, "sam", &["referral", "show", &id]).await;
    assert!(shown.out.contains("received") && shown.out.contains("Rosa (fictional)"), "{shown:?}");

    // Once the gateway has it delivered, the shelter accepts, and the sender sees who did.
    at_harbor
        .until("the delivery notice", |v| {
            v["item_kind"] == "sender_notice" && v["message_id"] == id.as_str() && v["status"] == "delivered"
        })
        .await;
    let accepted = as_person(&maple, "sam", &["referral", "accept", &id, "--sender", "harbor"]).await;
    assert_eq!(accepted.code, 0, "{accepted:?}");
    assert!(accepted.out.contains("now accepted"), "{accepted:?}");
    at_harbor
        .until("the acceptance", |v| {
            v["item_kind"] == "status" && v["message_id"] == id.as_str() && v["status"] == "accepted"
        })
        .await;
    let show = as_person(&harbor, "casey", &["referral", "show", &id, "--json"]).await;
    assert_eq!(show.code, 0, "{show:?}");
    let m = show.one();
    assert_eq!(m["direction"], "sent");
    assert_eq!(m["recipients"][0]["recipient"], "maple-house");
    assert_eq!(m["recipients"][0]["status"], "accepted");
    assert_eq!(m["recipients"][0]["by_person"], "sam");
    let human = as_person(&harbor, "casey", &["referral", "show", &id]).await;
    assert!(human.out.contains("maple-house") && human.out.contains("accepted"), "{human:?}");
    let list = as_person(&harbor, "casey", &["referral", "list"]).await;
    assert!(list.out.contains(&id) && list.out.contains("accepted"), "{list:?}");

    // Accepting twice is not a legal transition: refused, exit 3, with the gateway's reason.
    let again = as_person(&maple, "sam", &["referral", "accept", &id, "--sender", "harbor"]).await;
    assert_eq!(again.code, 3, "{again:?}");
    assert!(again.err.contains("FAILED_PRECONDITION"), "{again:?}");

    drop((at_maple, at_harbor));
    harbor.stop().await;
    maple.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn a_denied_recipient_is_reported_with_its_reason_and_the_send_still_succeeds() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent_id, subject) = record_housing_consent(&harbor).await;
    let message_id = uuid::Uuid::now_v7().to_string();
    let send = |json: bool| {
        let (consent_id, subject, message_id) = (consent_id.clone(), subject.clone(), message_id.clone());
        let harbor = &harbor;
        async move {
            let mut args = vec![
                "referral",
                "send",
                "--to",
                "maple-house",
                "--to",
                "metro-police",
                "--purpose",
                "housing",
                "--subject",
                &subject,
                "--consent",
                &consent_id,
                "-f",
                "urgency=high",
                "-f",
                "safe_to_contact_by=through_caseworker",
                "-f",
                "medical_notes=fictional notes",
                "--message-id",
                &message_id,
            ];
            if json {
                args.push("--json");
            }
            as_person(harbor, "casey", &args).await
        }
    };
    let human = send(false).await;
    assert_eq!(human.code, 0, "a send whose recipients were denied still succeeds: {human:?}");
    // The same message id and content is the same message: the reply comes back, nothing is queued twice.
    let replay = send(true).await;
    assert_eq!(replay.code, 0, "{replay:?}");
    let outcomes = replay.one()["outcomes"].as_array().cloned().unwrap();
    let police = outcomes.iter().find(|o| o["recipient"] == "metro-police").unwrap();
    assert_eq!(police["outcome"], "denied");
    let reason = police["reason_code"].as_str().unwrap();
    assert!(!reason.is_empty(), "a denial names its reason: {police}");
    let line = human.out.lines().find(|l| l.starts_with("metro-police")).unwrap_or_else(|| panic!("{human:?}"));
    assert!(line.contains("denied") && line.contains(reason), "the table names the reason: {human:?}");
    let line = human.out.lines().find(|l| l.starts_with("maple-house")).unwrap_or_else(|| panic!("{human:?}"));
    assert!(line.contains("queued") && line.contains("withheld: medical_notes"), "{human:?}");
    assert!(human.out.contains("1 of 2 recipients refused"), "{human:?}");
    harbor.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn an_alert_fans_out_and_the_liaisons_acknowledgement_comes_back() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let metro = net.node("metro-police", &[("lee", Role::Liaison)]).await;
    let mut at_metro = Watch::start(&metro, "lee").await;
    let mut at_harbor = Watch::start(&harbor, "casey").await;
    let r = as_person(
        &harbor,
        "casey",
        &[
            "alert",
            "send",
            "--all",
            "--field",
            "incident_type=suspicious_recruitment",
            "--field",
            "location_area=North bus terminal (fictional)",
            "--field",
            "reporter_contact=555-0100",
            "--field",
            "number_of_people:int=3",
            "--json",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let sent = r.one();
    let mut queued: Vec<&str> = sent["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == "queued")
        .filter_map(|o| o["recipient"].as_str())
        .collect();
    queued.sort();
    assert_eq!(queued, ["county-sheriff", "metro-police"]);
    let id = sent["message_id"].as_str().unwrap().to_owned();

    let got = at_metro.until("the alert", |v| v["item_kind"] == "delivery" && v["message_id"] == id.as_str()).await;
    assert_eq!(got["kind"], "alert");
    assert_eq!(got["subject"], "", "a de-identified alert carries no pseudonym");
    assert!(got["fields"].get("reporter_contact").is_none(), "no contact field goes to law enforcement");
    assert_eq!(got["fields"]["number_of_people"], 3);
    at_harbor
        .until("the delivery notice", |v| {
            v["item_kind"] == "sender_notice" && v["org"] == "metro-police" && v["message_id"] == id.as_str()
        })
        .await;
    let ack = as_person(&metro, "lee", &["alert", "ack", &id, "--sender", "harbor"]).await;
    assert_eq!(ack.code, 0, "{ack:?}");
    at_harbor.until("the acknowledgement", |v| v["item_kind"] == "status" && v["status"] == "acknowledged").await;
    let list = as_person(&harbor, "casey", &["alert", "list", "--json"]).await;
    let m = list.json().into_iter().find(|m| m["message_id"] == id.as_str()).unwrap_or_else(|| panic!("{list:?}"));
    let r = m["recipients"].as_array().unwrap().iter().find(|r| r["recipient"] == "metro-police").cloned().unwrap();
    assert_eq!(r["status"], "acknowledged");
    assert_eq!(r["by_person"], "lee");
    let received = as_person(&metro, "lee", &["alert", "list", "--received"]).await;
    assert!(received.out.contains(&id) && received.out.contains("acknowledged"), "{received:?}");
    drop((at_metro, at_harbor));
    harbor.stop().await;
    metro.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn consent_is_recorded_shown_renewed_and_revoked_from_the_command_line() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker), ("lee", Role::Liaison)]).await;
    let (consent_id, subject) = record_housing_consent(&harbor).await;
    let show = as_person(&harbor, "casey", &["consent", "show", &consent_id]).await;
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.out.contains("given") && show.out.contains(&subject) && show.out.contains("type shelter"), "{show:?}");

    let until = in_days(60);
    let evidence = "ab".repeat(32);
    let renew = as_person(
        &harbor,
        "casey",
        &[
            "consent",
            "renew",
            &consent_id,
            "--purpose",
            "housing",
            "--to",
            "maple-house",
            "--label",
            "identifying",
            "contact",
            "--until",
            &until,
            "--method",
            "verbal_witnessed",
            "--evidence-sha256",
            &evidence,
            "--language",
            "es-MX",
            "--json",
        ],
    )
    .await;
    assert_eq!(renew.code, 0, "{renew:?}");
    let renewed = renew.one();
    assert_eq!(renewed["supersedes"], consent_id.as_str());
    assert_eq!(renewed["subject"], subject.as_str(), "a renewal keeps the subject");
    assert_eq!(renewed["recipient_orgs"], serde_json::json!(["maple-house"]));
    let new_id = renewed["consent_id"].as_str().unwrap().to_owned();

    let list = as_person(&harbor, "casey", &["consent", "list", "--subject", &subject, "--json"]).await;
    let states: Vec<(String, String)> = list
        .json()
        .iter()
        .map(|c| (c["consent_id"].as_str().unwrap().to_owned(), c["state"].as_str().unwrap().to_owned()))
        .collect();
    assert!(states.contains(&(consent_id.clone(), "superseded".into())), "{list:?}");
    assert!(states.contains(&(new_id.clone(), "given".into())), "{list:?}");

    // Only caseworkers and privacy officers manage consent: exit 4, naming the code.
    let liaison = as_person(&harbor, "lee", &["consent", "revoke", &new_id, "--reason", "revoked_by_org"]).await;
    assert_eq!(liaison.code, 4, "{liaison:?}");
    assert!(liaison.err.contains("PERMISSION_DENIED"), "{liaison:?}");

    let revoke = as_person(&harbor, "casey", &["consent", "revoke", &new_id, "--reason", "withdrawn_by_subject"]).await;
    assert_eq!(revoke.code, 0, "{revoke:?}");
    assert!(revoke.out.contains("withdrawn (withdrawn_by_subject)"), "{revoke:?}");
    harbor.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn usage_errors_exit_2_and_say_what_is_wrong() {
    let cases: [(&[&str], &str); 6] = [
        (&["referral", "send", "--to", "maple-house", "--token", "t"], "--purpose"),
        (
            &["referral", "send", "--to", "maple-house", "--purpose", "housing", "--field", "urgency", "--token", "t"],
            "NAME=VALUE",
        ),
        (
            &[
                "referral",
                "send",
                "--to",
                "maple-house",
                "--purpose",
                "housing",
                "-f",
                "a=1",
                "--message-id",
                "6b1f4bd2-5d5c-4f25-9d43-3c1f5c7e2a10",
                "--token",
                "t",
            ],
            "UUIDv7",
        ),
        (
            &["alert", "send", "--all", "--to", "metro-police", "-f", "incident_type=missing_person", "--token", "t"],
            "--to",
        ),
        (&["consent", "revoke", "c-1", "--reason", "because", "--token", "t"], "withdrawn_by_subject"),
        (&["inbox", "--kind", "postcard", "--token", "t"], "referral"),
    ];
    for (args, expect) in cases {
        let r = haven_node(args).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.err.contains(expect), "{args:?}: expected `{expect}` in {r:?}");
    }
    // Checked after parsing but before anything is sent: a field given twice.
    let r = haven_node(&[
        "referral",
        "send",
        "--to",
        "maple-house",
        "--purpose",
        "housing",
        "-f",
        "urgency=high",
        "-f",
        "urgency=low",
        "--token",
        "t",
        "--node",
        "http://127.0.0.1:9",
    ])
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("--field urgency is given more than once"), "{r:?}");
}

#[tokio::test]
async fn a_bad_token_exits_4_and_an_unknown_message_exits_3() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let url = format!("http://{}", harbor.addr);
    let ok = as_person(&harbor, "casey", &["whoami"]).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.out.contains("harbor (ngo)") && ok.out.contains("casey"), "{ok:?}");

    let bad = haven_node(&["referral", "list", "--node", &url, "--token", "not-a-token"]).await;
    assert_eq!(bad.code, 4, "{bad:?}");
    assert!(bad.err.contains("UNAUTHENTICATED") && bad.err.contains("unknown node token"), "{bad:?}");
    assert!(bad.out.is_empty(), "{bad:?}");

    let missing = as_person(&harbor, "casey", &["referral", "show", "0190a5f1-0000-7000-8000-000000000000"]).await;
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(missing.err.contains("NOT_FOUND"), "{missing:?}");
    harbor.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn an_unreachable_node_exits_5() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let r = haven_node(&["inbox", "--node", &url, "--token", "t"]).await;
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.err.contains("cannot reach the node") && r.err.contains(&port.to_string()), "{r:?}");
}

#[tokio::test]
async fn plain_http_to_another_machine_is_refused_before_any_token_is_sent() {
    // Parsed and refused before any connection is attempted.
    for url in ["http://192.0.2.10:7600", "http://node.example.org:7600"] {
        let r = haven_node(&["inbox", "--node", url, "--token", "t"]).await;
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.err.contains("plain http to another machine"), "{r:?}");
    }
    for url in ["http://localhost:9", "http://[::1]:9", "http://127.0.0.2:9"] {
        let r = haven_node(&["inbox", "--node", url, "--token", "t"]).await;
        assert_eq!(r.code, 5, "loopback over http is allowed, and unreachable here: {r:?}");
    }
}

/// A send the gateway does not take stays pending, and says why: the gateway answered UNAVAILABLE
/// (here, its database is gone) with its reason, or it could not be reached at all (here, it is
/// stopped), with its address and the cause. Other commands relayed by the node say the same.
#[tokio::test]
async fn a_pending_send_says_whether_the_gateway_answered_unavailable_or_could_not_be_reached() {
    let net = TestNet::start().await;
    let gateway = net.url();
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (consent_id, subject) = record_housing_consent(&harbor).await;
    let send = |json: bool| {
        let (consent_id, subject) = (consent_id.clone(), subject.clone());
        let harbor = &harbor;
        async move {
            let mut args = vec![
                "referral",
                "send",
                "--to",
                "maple-house",
                "--purpose",
                "housing",
                "--subject",
                &subject,
                "--consent",
                &consent_id,
                "-f",
                "urgency=high",
                "-f",
                "safe_to_contact_by=through_caseworker",
            ];
            if json {
                args.push("--json");
            }
            as_person(harbor, "casey", &args).await
        }
    };

    net.gateway.store().close().await;
    let r = send(false).await;
    assert_eq!(r.code, 0, "a pending send is accepted by the node: {r:?}");
    let answered =
        format!("is pending: the gateway at {gateway} answered UNAVAILABLE: the gateway's database is unavailable");
    assert!(r.out.contains(&answered), "{r:?}");
    assert!(!r.out.contains("could not be reached"), "the gateway was reached: {r:?}");
    let id = r.out.split_whitespace().nth(1).unwrap().to_owned();
    let shown = as_person(&harbor, "casey", &["referral", "show", &id]).await;
    assert!(shown.out.contains("waiting:") && shown.out.contains("answered UNAVAILABLE"), "{shown:?}");
    let listed = as_person(&harbor, "casey", &["consent", "list"]).await;
    assert_eq!(listed.code, 5, "{listed:?}");
    assert!(
        listed.err.contains(&format!("the gateway at {gateway} answered UNAVAILABLE: the gateway's database")),
        "{listed:?}"
    );

    // The same organization's node, pointed at a port where no gateway listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("https://localhost:{port}");
    let cut_off = TestNode::start_at(
        &net.dir.path().join("cut-off"),
        &net.certs,
        nowhere.clone(),
        "harbor",
        &[("casey", Role::Caseworker)],
        std::sync::Arc::new(haven_trust::clock::SystemClock),
    )
    .await;
    let r = as_person(
        &cut_off,
        "casey",
        &["referral", "send", "--to", "maple-house", "--purpose", "housing", "-f", "urgency=high", "--json"],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let sent = r.one();
    assert_eq!(sent["state"], "pending");
    let reason = sent["pending_reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("cannot reach the gateway at {nowhere}: ")), "{reason}");
    assert!(reason.contains("tcp connect error") && reason.to_lowercase().contains("connection refused"), "{reason}");
    let who = as_person(&cut_off, "casey", &["whoami"]).await;
    assert_eq!(who.code, 5, "{who:?}");
    assert!(who.err.contains(&format!("cannot reach the gateway at {nowhere}: tcp connect error")), "{who:?}");
    cut_off.stop().await;
    harbor.stop().await;
    net.stop().await;
}

/// Runs `haven-node ARGS...` in process with `stdin` as its standard input.
async fn haven_node_with_input(args: &[&str], stdin: &str) -> Run {
    let argv = std::iter::once("haven-node").chain(args.iter().copied());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run_with_input(argv, &mut stdin.as_bytes(), &mut out, &mut err).await;
    Run { code, out: String::from_utf8_lossy(&out).into_owned(), err: String::from_utf8_lossy(&err).into_owned() }
}

/// The node database of `org`'s [`TestNode`] under `net`.
fn node_db(net: &TestNet, org: &str) -> String {
    net.dir.path().join("nodes").join(org).join("node.db").display().to_string()
}

/// The token a `users add` printed.
fn printed_token(r: &Run) -> String {
    let line = r.out.lines().find_map(|l| l.strip_prefix("token (shown once): ")).unwrap_or_else(|| panic!("{r:?}"));
    line.to_owned()
}

/// `users remove|disable|enable|role` change the node's database and say what they did; a person the
/// database does not hold exits 3 (not found) and changes nothing, and a database that is not there
/// exits 1. Each change is in force on the running node's very next call, with no reload: the removed
/// and the disabled person are refused, a change of role revokes the person's token, and enabling gives
/// no token back (the old one is refused as revoked) until `users add` gives a new one.
#[tokio::test]
async fn users_commands_change_the_node_database_and_each_change_is_in_force_at_once() {
    let net = TestNet::start().await;
    let harbor =
        net.node("harbor", &[("casey", Role::Caseworker), ("sam", Role::Caseworker), ("lee", Role::Liaison)]).await;
    let db = node_db(&net, "harbor");
    let users = |args: &[&str]| {
        let all: Vec<String> = std::iter::once("users")
            .chain(args.iter().copied())
            .chain(["--database", &db])
            .map(str::to_owned)
            .collect();
        async move { haven_node(&all.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let people = harbor.state.people.clone();
    let listed = || {
        let people = people.clone();
        async move {
            let listed = people.list().await.unwrap();
            listed.iter().map(|p| (p.name.to_string(), p.role, p.disabled)).collect::<Vec<_>>()
        }
    };
    let before = listed().await;

    // Unknown names: exit 3, nothing changed.
    for args in [
        &["remove", "nobody"][..],
        &["disable", "nobody"],
        &["enable", "nobody"],
        &["role", "nobody", "auditor"],
        &["reset-second-factor", "nobody"],
    ] {
        let r = users(args).await;
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(r.err.contains(&format!("no person `nobody` in {db} (it holds: casey, lee, sam)")), "{r:?}");
    }
    assert_eq!(listed().await, before, "a refused command changes nothing");
    let missing = haven_node(&["users", "remove", "sam", "--database", "/nonexistent/node.db"]).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.err.contains("no node database at /nonexistent/node.db"), "{missing:?}");

    let r = users(&["remove", "sam"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.starts_with(&format!("removed sam (caseworker) from {db}; ")), "{r:?}");
    let r = users(&["disable", "casey"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.starts_with(&format!("disabled casey in {db}; ")) && r.out.contains("tokens are revoked"), "{r:?}");
    let again = users(&["disable", "casey"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.out.contains("casey is already disabled"), "{again:?}");
    assert_eq!(
        listed().await,
        [("casey".to_owned(), Role::Caseworker, true), ("lee".to_owned(), Role::Liaison, false)]
    );

    // In force at once: no reload, no signal.
    let sam = as_person(&harbor, "sam", &["inbox"]).await;
    assert_eq!(sam.code, 4, "{sam:?}");
    assert!(sam.err.contains("unknown node token"), "{sam:?}");
    let casey = as_person(&harbor, "casey", &["inbox"]).await;
    assert_eq!(casey.code, 4, "{casey:?}");
    assert!(casey.err.contains("`casey` is disabled"), "{casey:?}");
    assert_eq!(as_person(&harbor, "lee", &["inbox"]).await.code, 0);

    // A change of role revokes the person's token; the same role changes nothing.
    let same = users(&["role", "lee", "liaison"]).await;
    assert!(same.out.contains("lee is already liaison"), "{same:?}");
    assert_eq!(as_person(&harbor, "lee", &["inbox"]).await.code, 0);
    let r = users(&["role", "lee", "privacy_officer"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.starts_with(&format!("lee is now privacy_officer (was liaison) in {db}; ")), "{r:?}");
    let lee = as_person(&harbor, "lee", &["inbox"]).await;
    assert_eq!(lee.code, 4, "{lee:?}");
    assert!(lee.err.contains("this node token of `lee` was revoked"), "{lee:?}");

    // Enabled again, casey's old token stays revoked; `users add` gives a new one, shown once.
    let r = users(&["enable", "casey"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.starts_with(&format!("enabled casey in {db}; ")), "{r:?}");
    let casey = as_person(&harbor, "casey", &["inbox"]).await;
    assert_eq!(casey.code, 4, "{casey:?}");
    assert!(casey.err.contains("was revoked"), "{casey:?}");
    let r = users(&["add", "--name", "casey", "--role", "caseworker"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.starts_with(&format!("gave casey (caseworker) a new token in {db}; ")), "{r:?}");
    let token = printed_token(&r);
    let node = format!("http://{}", harbor.addr);
    assert_eq!(haven_node(&["inbox", "--node", &node, "--token", &token]).await.code, 0, "casey's new token works");
    harbor.stop().await;
    net.stop().await;
}

/// `users add --password-stdin` and `users passwd` read the password as one line of standard input,
/// and refuse an empty or short one (exit 3, saying why, nothing changed). The node then signs the
/// person in with it: the right password passes; a wrong one, and a name the node does not know, get
/// the same error; a disabled person with the right password is told they are disabled.
#[tokio::test]
async fn passwords_are_read_from_standard_input_and_verified_by_the_node() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let db = node_db(&net, "harbor");
    let passwords = &harbor.state.passwords;

    let empty = haven_node_with_input(&["users", "passwd", "casey", "--database", &db], "\n").await;
    assert_eq!(empty.code, 3, "{empty:?}");
    assert!(
        empty.err.contains("refused: the password is empty: give one of at least 12 characters on standard input"),
        "{empty:?}"
    );
    let short = haven_node_with_input(&["users", "passwd", "casey", "--database", &db], "maple\n").await;
    assert_eq!(short.code, 3, "{short:?}");
    assert!(short.err.contains("the password is 5 characters long: give one of at least 12"), "{short:?}");
    let none = haven_node(&["users", "passwd", "casey", "--database", &db]).await;
    assert_eq!(none.code, 3, "{none:?}");
    assert!(none.err.contains("no password on standard input"), "{none:?}");
    assert!(harbor.state.people.list().await.unwrap().iter().all(|p| !p.has_password), "nothing was set");
    assert!(matches!(passwords.verify("casey", "maple").await, Err(haven_node::password::SignInError::Refused)));

    let set =
        haven_node_with_input(&["users", "passwd", "casey", "--database", &db], "blue kettle on the stove\n").await;
    assert_eq!(set.code, 0, "{set:?}");
    assert_eq!(set.out, format!("set the password of casey in {db}\n"));
    let casey = passwords.verify("casey", "blue kettle on the stove").await.expect("the right password");
    assert_eq!((casey.name.as_str(), casey.role), ("casey", Role::Caseworker));
    let wrong = passwords.verify("casey", "blue kettle on the stovE").await.unwrap_err();
    let unknown = passwords.verify("nobody", "blue kettle on the stove").await.unwrap_err();
    let not_a_name = passwords.verify("", "blue kettle on the stove").await.unwrap_err();
    for e in [&wrong, &unknown, &not_a_name] {
        assert!(matches!(e, haven_node::password::SignInError::Refused), "{e:?}");
        assert_eq!(e.to_string(), "wrong name or password");
    }

    // A person added with a password; disabled, the right password says so, a wrong one does not.
    let r = haven_node_with_input(
        &["users", "add", "--name", "sam", "--role", "liaison", "--password-stdin", "--database", &db],
        "green door at the end\n",
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.starts_with(&format!("added sam (liaison, with the password given) to {db}\n")), "{r:?}");
    printed_token(&r);
    assert_eq!(passwords.verify("sam", "green door at the end").await.unwrap().role, Role::Liaison);
    assert_eq!(haven_node(&["users", "disable", "sam", "--database", &db]).await.code, 0);
    let disabled = passwords.verify("sam", "green door at the end").await.unwrap_err();
    assert_eq!(disabled.to_string(), "person `sam` is disabled on this node; ask your administrator");
    assert_eq!(
        passwords.verify("sam", "green door at the End").await.unwrap_err().to_string(),
        "wrong name or password"
    );

    let listed = haven_node(&["users", "list", "--database", &db]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let rows: Vec<Vec<&str>> = listed.out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "ROLE", "STATE", "PASSWORD", "TOKENS"],
            vec!["casey", "caseworker", "enabled", "set", "1"],
            vec!["sam", "liaison", "disabled", "set", "0"],
        ]
    );
    harbor.stop().await;
    net.stop().await;
}

/// Every command family exits with the code the README's table promises: 5 when the node cannot be
/// reached; 4 when the gateway refuses the person (a caseworker reading the audit log); and, with the
/// gateway stopped, 5 for what needs the gateway, 0 for a send (kept pending) and for what the node
/// answers from its own records (the inbox, sent messages, the witness's report).
#[tokio::test]
async fn every_command_family_exits_as_the_readme_promises_when_the_node_or_the_gateway_fails() {
    let mut net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let some_id = "0190a5f1-0000-7000-8000-000000000000";
    let export = net.dir.path().join("export.jsonl").display().to_string();
    let referral = ["referral", "send", "--to", "maple-house", "--purpose", "housing", "-f", "urgency=high"];
    let alert =
        ["alert", "send", "--all", "-f", "incident_type=suspicious_recruitment", "-f", "number_of_people:int=3"];
    let audit_query = ["audit", "query"];
    let audit_export = ["audit", "export", "--out", &export];
    let audit_report = ["audit", "report", "--subject", "s-1", "--controller", "harbor"];
    let audit_checkpoint = ["audit", "checkpoint"];
    // (command, exit code with the gateway stopped)
    let families: [(&[&str], u8); 13] = [
        (&["whoami"], 5),
        (&referral, 0),
        (&alert, 0),
        (&["inbox"], 0),
        (&["referral", "list"], 0),
        (&["referral", "accept", some_id, "--sender", "maple-house"], 5),
        (&["consent", "list"], 5),
        (&["consent", "show", some_id], 5),
        (&audit_query, 5),
        (&audit_export, 5),
        (&audit_report, 5),
        (&audit_checkpoint, 5),
        (&["audit", "witness"], 0),
    ];

    // (a) Nothing listens at the node's address.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("http://127.0.0.1:{port}");
    for (args, _) in &families {
        let all: Vec<&str> = args.iter().copied().chain(["--node", &nowhere, "--token", "t"]).collect();
        let r = haven_node(&all).await;
        assert_eq!(r.code, 5, "{args:?} against a stopped node: {r:?}");
        assert!(r.err.starts_with("haven-node: cannot reach the node at "), "{args:?}: {r:?}");
    }

    // (b) The gateway refuses the person: a caseworker may not read the audit log (its checkpoints are
    // every node's to witness).
    for args in [&audit_query[..], &audit_export, &audit_report] {
        let r = as_person(&harbor, "casey", args).await;
        assert_eq!(r.code, 4, "{args:?} as a caseworker: {r:?}");
        assert!(r.err.starts_with("haven-node: not permitted (PERMISSION_DENIED): "), "{args:?}: {r:?}");
    }

    // (c) The gateway is stopped; the node keeps running.
    net.stop_keeping_files().await;
    for (args, code) in &families {
        let r = as_person(&harbor, "casey", args).await;
        assert_eq!(r.code, *code, "{args:?} with the gateway stopped: {r:?}");
        if *code == 5 {
            assert!(r.err.contains("(UNAVAILABLE): cannot reach the gateway at "), "{args:?}: {r:?}");
        }
    }
    let sent = as_person(&harbor, "casey", &["referral", "list", "--json"]).await;
    assert!(sent.json().iter().all(|m| m["state"] == "pending"), "the sends wait: {sent:?}");
    harbor.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn keys_init_rotate_withdraw_and_list_at_the_command_line() {
    // No organization has a key yet: an admin makes the first.
    let net = TestNet::start_without_keys().await;
    let harbor = net.node_without_sealing_key("harbor", &[("ada", Role::Admin), ("casey", Role::Caseworker)]).await;
    let init = as_person(&harbor, "ada", &["keys", "init"]).await;
    assert_eq!(init.code, 0, "{init:?}");
    assert!(init.out.starts_with("made sealing key x25519:") && init.out.contains("(published)"), "{init:?}");
    let again = as_person(&harbor, "ada", &["keys", "init"]).await;
    assert_eq!(again.code, 3, "{again:?}");
    assert!(again.err.contains("already has a sealing key; `haven-node keys rotate` makes a new one"), "{again:?}");
    let denied = as_person(&harbor, "casey", &["keys", "rotate"]).await;
    assert_eq!(denied.code, 4, "a caseworker does not make keys: {denied:?}");

    let rotated = as_person(&harbor, "ada", &["keys", "rotate", "--json"]).await;
    let new_kid = rotated.json()[0]["kid"].as_str().unwrap().to_owned();
    let listed = as_person(&harbor, "ada", &["keys", "list", "--json"]).await;
    let rows = listed.json();
    assert_eq!(rows.len(), 2, "{listed:?}");
    let old_kid = rows.iter().map(|r| r["kid"].as_str().unwrap()).find(|k| *k != new_kid).unwrap().to_owned();
    let withdrawn = as_person(&harbor, "ada", &["keys", "withdraw", &old_kid]).await;
    assert_eq!(withdrawn.code, 0, "{withdrawn:?}");
    assert!(withdrawn.out.contains("(withdrawn)"), "{withdrawn:?}");
    let table = as_person(&harbor, "ada", &["keys", "list"]).await;
    assert!(table.out.starts_with("KEY"), "{table:?}");
    assert!(table.out.contains("withdrawn at 2") && table.out.contains("published at 1"), "{table:?}");
    let unknown = as_person(&harbor, "ada", &["keys", "withdraw", "x25519:0"]).await;
    assert_eq!(unknown.code, 3, "{unknown:?}");

    // The key log as the node verified it, exported and checked offline with the gateway's signing
    // certificate and the CA's; an export changed after the fact fails, naming the line.
    harbor.state.key_log.check_now().await;
    let log = as_person(&harbor, "casey", &["keys", "log"]).await;
    assert_eq!(log.code, 0, "any person may read the public key log: {log:?}");
    assert_eq!(log.out.lines().count(), 4, "three entries and their checkpoint: {log:?}");
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("keylog.jsonl");
    std::fs::write(&export, &log.out).unwrap();
    let (key, ca) = (net.certs.gateway_signing_cert(), net.certs.ca_cert());
    let summary = haven_trust::keylog::verify_files(&export, &key, &ca).unwrap();
    assert_eq!((summary.entries, summary.checkpoints), (3, 1));
    let described = summary.describe();
    assert!(
        described.starts_with("OK: key log of 3 entries") && described.contains(&format!("withdrawn {old_kid}")),
        "{described}"
    );
    let first = log.out.lines().next().unwrap();
    let mut entry: Value = serde_json::from_str(first).unwrap();
    let at = entry["entry"]["registered_at_micros"].as_i64().unwrap();
    entry["entry"]["registered_at_micros"] = Value::from(at + 1);
    std::fs::write(&export, log.out.replacen(first, &entry.to_string(), 1)).unwrap();
    let err = haven_trust::keylog::verify_files(&export, &key, &ca).unwrap_err();
    assert!(
        err.contains("line 4: the checkpoint of size 3 signs root") && err.contains("the log was rewritten"),
        "{err}"
    );
}
