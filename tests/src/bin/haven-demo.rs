#![forbid(unsafe_code)]
//! `haven-demo`: brings up the sample network on loopback — development certificates, the gateway on
//! SQLite and one node per organization, each a separate process — checks that every node reaches the
//! gateway as its organization, and prints how to talk to them.
//!
//! The processes are this same binary started with a hidden role (`gateway` or `node`), so one
//! `cargo run --bin haven-demo` needs nothing else built.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use haven_node::people::People;
use haven_node::store::NodeStore;
use haven_proto::v1 as pb;
use haven_proto::v1::WhoAmIRequest;
use haven_proto::v1::node_client::NodeClient;
use haven_tests::procs::{READY, ready_addr};
use haven_trust::clock::SystemClock;
use haven_trust::ids::{OrgId, PersonId, Role};
use haven_trust::pki::CertsDir;
use haven_trust::registry::Registry;

#[derive(Parser)]
#[command(name = "haven-demo", about = "Run Haven's sample network on this machine")]
struct Cli {
    /// Leave the network running and print the commands to explore it.
    #[arg(long)]
    keep_running: bool,
    /// Where certificates, databases and users files go (git-ignored).
    #[arg(long, default_value = ".haven-dev")]
    dir: PathBuf,
    /// The policy bundle.
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    #[command(subcommand)]
    role: Option<RoleCmd>,
}

#[derive(Subcommand)]
enum RoleCmd {
    #[command(hide = true)]
    Gateway {
        dir: PathBuf,
        policies: PathBuf,
        /// Defaults to DIR/gateway.db.
        #[arg(long)]
        database: Option<String>,
        /// The delivery streams' heartbeat (and lease renewal) interval; a stream's lease lives twice
        /// as long. Defaults to the gateway's own default.
        #[arg(long)]
        heartbeat_secs: Option<u64>,
    },
    #[command(hide = true)]
    Node { dir: PathBuf, org: OrgId, gateway: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haven-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.role {
        Some(RoleCmd::Gateway { dir, policies, database, heartbeat_secs }) => {
            rt.block_on(run_gateway(&dir, &policies, database, heartbeat_secs))
        }
        Some(RoleCmd::Node { dir, org, gateway }) => rt.block_on(run_node(&dir, org, gateway)),
        None => rt.block_on(story(&cli.dir, &cli.policies, cli.keep_running)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haven-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn quiet_logs(name: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    tracing::debug!(process = name, "starting");
}

async fn run_gateway(
    dir: &Path,
    policies: &Path,
    database: Option<String>,
    heartbeat_secs: Option<u64>,
) -> anyhow::Result<()> {
    quiet_logs("gateway");
    let database = database.unwrap_or_else(|| dir.join("gateway.db").display().to_string());
    let mut config = haven_gateway::config::Config::new(dir.join("certs"), policies.to_owned(), database);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    if let Some(s) = heartbeat_secs {
        anyhow::ensure!(s > 0, "--heartbeat-secs must be at least 1");
        config.heartbeat = Duration::from_secs(s);
    }
    let gateway = haven_gateway::app::Gateway::open(config, Arc::new(SystemClock)).await?;
    let listener = gateway.bind().await?;
    println!("{READY}{}", listener.local_addr()?);
    gateway.serve_until_signal(listener).await?;
    Ok(())
}

async fn run_node(dir: &Path, org: OrgId, gateway: String) -> anyhow::Result<()> {
    quiet_logs("node");
    let node_dir = dir.join("nodes").join(org.as_str());
    let link = haven_node::link::LinkConfig::from_certs_dir(gateway, &CertsDir(dir.join("certs")), org);
    let config = haven_node::app::NodeConfig {
        first_sealing_key: true,
        link,
        database: node_dir.join("node.db").display().to_string(),
        users: node_dir.join("users.toml"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        api_tls: None,
        console: Some(haven_tests::net::loopback_console()),
    };
    let node = haven_node::app::Node::open(config, Arc::new(SystemClock)).await?;
    if let Some((addr, _)) = node.console() {
        std::fs::write(node_dir.join("console.addr"), addr.to_string())?;
    }
    let listener = node.bind().await?;
    println!("{READY}{}", listener.local_addr()?);
    node.serve_until_signal(listener).await?;
    Ok(())
}

/// A child process that is stopped with SIGTERM when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, args: &[&str]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let addr = match ready_addr(&mut child, Duration::from_secs(60)) {
        Ok(addr) => addr,
        Err(e) => {
            let _ = child.kill();
            bail!("{name} {e}");
        }
    };
    Ok(Proc { child, addr })
}

/// A new demo password: four random words' worth of letters, easy to type from the screen.
fn demo_password() -> String {
    use rand::Rng;
    const WORDS: [&str; 16] = [
        "maple", "river", "lantern", "harbor", "meadow", "copper", "willow", "pebble", "orchard", "sparrow", "candle",
        "garden", "ribbon", "thistle", "amber", "cobalt",
    ];
    let mut rng = rand::rng();
    (0..4).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join("-")
}

/// The people of each demo organization: (person, role).
fn people(org_type: &str) -> Vec<(&'static str, Role)> {
    match org_type {
        "law_enforcement" => vec![("lee-liaison", Role::Liaison), ("pat-privacy", Role::PrivacyOfficer)],
        "auditor" => vec![("avery-auditor", Role::Auditor)],
        "operator" => vec![("omar-admin", Role::Admin)],
        _ => vec![("casey-caseworker", Role::Caseworker), ("pat-privacy", Role::PrivacyOfficer)],
    }
}

async fn story(dir: &Path, policies: &Path, keep_running: bool) -> anyhow::Result<()> {
    let dir_s = dir.display().to_string();
    let pol_s = policies.display().to_string();
    println!("Haven demo: a fictional anti-trafficking network on this machine\n");
    let report = haven_certs::init(&policies.join("orgs.toml"), &dir.join("certs"), false)
        .context("making development certificates")?;
    println!("1. Development PKI in {}/certs ({} new certificates)", dir_s, report.issued.len());
    let registry = Registry::load(&policies.join("orgs.toml"), Some(&dir.join("certs/pins.toml")))
        .map_err(|e| anyhow::anyhow!(e.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n")))?;

    // Each person is added to their node's database before the node starts, as `haven-node users add`
    // adds them; a rerun on the same directory gives everyone a new token.
    let mut tokens = Vec::new();
    let mut signins = Vec::new();
    for org in registry.iter() {
        let node_dir = dir.join("nodes").join(org.id.as_str());
        std::fs::create_dir_all(&node_dir)?;
        let store = NodeStore::open(&node_dir.join("node.db").display().to_string()).await?;
        let node_people = People::new(store.clone(), Arc::new(SystemClock)).await?;
        let passwords = haven_node::password::Passwords::new(node_people.clone());
        for (person, role) in people(org.org_type.as_str()) {
            let name = PersonId::parse(person)?;
            let added = node_people.add(&name, role, None).await?;
            let password = demo_password();
            let parsed = haven_node::password::Password::parse(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
            passwords.set(&name, &parsed).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            // Everyone gets a second factor, printed below, so that a person can add it to an
            // authenticator app (or compute its codes) and sign in as any role.
            let secret = haven_node::totp::new_secret();
            haven_node::totp::SecondFactor::new(store.clone(), Arc::new(SystemClock))
                .enroll_directly(&name, &secret)
                .await?;
            tokens.push((org.id.clone(), person, role, added.token));
            signins.push((org.id.clone(), person, role, password, haven_node::totp::base32(&secret)));
        }
        store.pool().close().await;
    }

    let gateway = spawn("gateway", &["gateway", &dir_s, &pol_s])?;
    println!("2. Gateway on https://{} (mTLS, SQLite at {}/gateway.db)", gateway.addr, dir_s);
    let url = format!("https://localhost:{}", gateway.addr.port());
    let mut nodes = Vec::new();
    for org in registry.iter() {
        nodes.push((org.id.clone(), spawn(&format!("node {}", org.id), &["node", &dir_s, org.id.as_str(), &url])?));
    }
    println!("3. {} nodes, one per organization, each its own process:\n", nodes.len());
    println!("   {:<18} {:<16} {:<22} {:<18} role", "organization", "type", "node API", "person");
    let mut failures = 0;
    for (org_id, proc_) in &nodes {
        let entry = registry.get(org_id).context("org")?;
        let (_, person, role, token) = tokens.iter().find(|t| &t.0 == org_id).context("token")?;
        let seen = whoami(proc_.addr, token).await;
        let ok = seen.as_ref().is_ok_and(|c| c.org_id == org_id.as_str() && c.person == *person);
        if !ok {
            failures += 1;
        }
        println!(
            "   {:<18} {:<16} http://{:<15} {:<18} {} {}",
            org_id,
            entry.org_type,
            proc_.addr,
            person,
            role,
            match &seen {
                Ok(_) if ok => "✓ gateway confirms identity".to_owned(),
                Ok(c) => format!("✗ gateway saw {}/{}", c.org_id, c.person),
                Err(e) => format!("✗ {e}"),
            }
        );
    }
    if failures > 0 {
        bail!("{failures} node(s) could not reach the gateway as their organization");
    }
    println!("\nEvery node reached the gateway over mutual TLS and signed a person token the gateway verified.");
    let people: Vec<Person> = tokens
        .iter()
        .filter_map(|(org, person, _, token)| {
            nodes.iter().find(|(o, _)| o == org).map(|(_, p)| Person {
                org: org.to_string(),
                name: person.to_string(),
                token: token.clone(),
                node: p.addr,
            })
        })
        .collect();
    let mut nodes = nodes;
    story_steps(&people, &mut nodes, dir).await?;
    if keep_running {
        let tokens_file = dir.join("tokens.txt");
        let text: String = tokens.iter().map(|(o, p, r, t)| format!("{o}\t{p}\t{r}\t{t}\n")).collect();
        std::fs::write(&tokens_file, text)?;
        let (org, _, _, token) = &tokens[0];
        let node = people.iter().find(|p| p.org == org.as_str()).map(|p| p.node).context("node")?;
        println!("\nThe network keeps running. Open an organization's web console and sign in as one of its people:\n");
        println!(
            "   {:<18} {:<28} {:<18} {:<16} {:<30} second-step key (TOTP, SHA-1, 6 digits, 30 s)",
            "organization", "console", "person", "role", "password"
        );
        for (org, person, role, password, key) in &signins {
            let console = std::fs::read_to_string(dir.join("nodes").join(org.as_str()).join("console.addr"))
                .map(|a| format!("http://{}", a.trim()))
                .unwrap_or_else(|_| "(no console)".into());
            println!("   {:<18} {:<28} {:<18} {:<16} {:<30} {}", org, console, person, role.as_str(), password, key);
        }
        println!("\nAfter the password, the console asks for the code an authenticator app makes from the key.");
        println!("People's node tokens, for the command line, are in {}.", tokens_file.display());
        println!("Try:\n  cargo run -q --bin haven-node -- whoami --node http://{node} --token {token}");
        println!("Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(nodes);
    drop(gateway);
    println!("\nDemo finished: all steps behaved as expected.");
    Ok(())
}

async fn whoami(addr: SocketAddr, token: &str) -> anyhow::Result<haven_proto::v1::Caller> {
    let mut client = NodeClient::connect(format!("http://{addr}")).await?;
    // The node's own stream may still be connecting; the call itself goes straight to the gateway.
    let mut last = None;
    for _ in 0..50 {
        let mut req = tonic::Request::new(WhoAmIRequest {});
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
        match client.who_am_i(req).await {
            Ok(r) => return r.into_inner().caller.context("no caller"),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => bail!("{:?}: {}", s.code(), s.message()),
        }
    }
    bail!("gateway unavailable: {:?}", last.map(|s| s.message().to_owned()))
}

/// A person of the demo network and the node they use.
struct Person {
    org: String,
    name: String,
    token: String,
    node: SocketAddr,
}

fn who<'a>(people: &'a [Person], org: &str, name: &str) -> anyhow::Result<&'a Person> {
    people.iter().find(|p| p.org == org && p.name == name).with_context(|| format!("no {name} at {org}"))
}

impl Person {
    async fn client(&self) -> anyhow::Result<NodeClient<tonic::transport::Channel>> {
        Ok(NodeClient::connect(format!("http://{}", self.node)).await?)
    }

    fn req<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("authorization", format!("Bearer {}", self.token).parse()?);
        Ok(r)
    }

    /// Waits (bounded) until this person's inbox holds an item matching `pred`.
    async fn wait_for(&self, what: &str, pred: impl Fn(&pb::InboxItem) -> bool) -> anyhow::Result<pb::InboxItem> {
        let mut watch = self.client().await?.watch_inbox(self.req(pb::InboxRequest::default())?).await?.into_inner();
        let listed = self
            .client()
            .await?
            .inbox(self.req(pb::InboxRequest { kind: String::new(), limit: 1000 })?)
            .await?
            .into_inner();
        if let Some(i) = listed.items.into_iter().find(|i| pred(i)) {
            return Ok(i);
        }
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match watch.message().await {
                    Ok(Some(i)) if pred(&i) => return Ok(i),
                    Ok(Some(_)) => continue,
                    Ok(None) => bail!("the node closed the watch"),
                    Err(e) => bail!("{}", e.message()),
                }
            }
        })
        .await
        .with_context(|| format!("{what} did not arrive within 30 s"))?
    }

    /// Waits (bounded) until a sent message's recipient reaches `want`.
    async fn wait_status(
        &self,
        message_id: &str,
        recipient: &str,
        want: pb::MessageStatus,
    ) -> anyhow::Result<pb::RecipientStatus> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut watch = self.client().await?.watch_inbox(self.req(pb::InboxRequest::default())?).await?.into_inner();
        loop {
            let m = self
                .client()
                .await?
                .get_message(self.req(pb::GetMessageRequest { message_id: message_id.into() })?)
                .await?
                .into_inner();
            if let Some(r) = m.sent.and_then(|s| s.recipients.into_iter().find(|r| r.recipient == recipient))
                && r.status == want as i32
            {
                return Ok(r);
            }
            // Status notices arrive as inbox items; wait for the next one (or re-check shortly).
            if tokio::time::timeout_at(deadline, async {
                let _ = tokio::time::timeout(Duration::from_millis(300), watch.message()).await;
            })
            .await
            .is_err()
            {
                bail!("{recipient} did not reach {} within 30 s", want.as_str_name());
            }
        }
    }
}

fn text(s: &str) -> pb::FieldValue {
    pb::FieldValue { value: Some(pb::field_value::Value::Text(s.into())) }
}

fn delivery(i: &pb::InboxItem) -> Option<&pb::Delivery> {
    match &i.item {
        Some(pb::Item { body: Some(pb::item::Body::Delivery(d)), .. }) => Some(d),
        _ => None,
    }
}

fn referral(to: &str, purpose: &str, subject: &str, consent: &str, extra: &[(&str, &str)]) -> pb::Envelope {
    let mut fields = std::collections::HashMap::from([
        ("urgency".to_owned(), text("high")),
        ("safe_to_contact_by".to_owned(), text("through_caseworker")),
        ("survivor_first_name".to_owned(), text("Rosa (fictional)")),
        ("preferred_language".to_owned(), text("es")),
    ]);
    for (k, v) in extra {
        fields.insert((*k).to_owned(), text(v));
    }
    pb::Envelope {
        kind: "referral".into(),
        recipients: vec![to.into()],
        purpose: purpose.into(),
        subject_pseudonym: subject.into(),
        consent_id: consent.into(),
        fields,
        ..Default::default()
    }
}

/// Which of `values` occur, as raw bytes, in any of `files` (a missing file holds nothing).
fn values_in(files: &[PathBuf], values: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else { continue };
        for v in values {
            if bytes.windows(v.len()).any(|w| w == v.as_bytes()) {
                found.push(format!("{v} in {}", file.display()));
            }
        }
    }
    found
}

async fn send(p: &Person, env: pb::Envelope) -> anyhow::Result<pb::SendResponse> {
    p.client()
        .await?
        .send(p.req(pb::SendRequest { envelope: Some(env) })?)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))
}

fn outcome(r: &pb::SendResponse, to: &str) -> anyhow::Result<(i32, String)> {
    let o = r.outcomes.iter().find(|o| o.recipient == to).with_context(|| format!("no outcome for {to}"))?;
    Ok((o.outcome, o.decision.as_ref().map(|d| d.reason_code.clone()).unwrap_or_default()))
}

async fn set_status(
    p: &Person,
    message_id: &str,
    sender: &str,
    status: pb::MessageStatus,
    code: &str,
) -> anyhow::Result<()> {
    let r = pb::UpdateStatusRequest {
        message_id: message_id.into(),
        sender: sender.into(),
        status: status as i32,
        code: code.into(),
        ..Default::default()
    };
    p.client().await?.update_status(p.req(r)?).await.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    Ok(())
}

/// The story of the README: every step checks what it claims.
async fn story_steps(people: &[Person], nodes: &mut Vec<(OrgId, Proc)>, dir: &Path) -> anyhow::Result<()> {
    let casey = who(people, "harbor", "casey-caseworker")?;
    let shelter = who(people, "maple-house", "casey-caseworker")?;
    let clinic = who(people, "riverside-clinic", "casey-caseworker")?;
    let liaison = who(people, "metro-police", "lee-liaison")?;
    let now = haven_trust::clock::Clock::now_micros(&SystemClock);

    println!("\nThe story (every name is fictional):");
    let consent = casey
        .client()
        .await?
        .record_consent(casey.req(pb::RecordConsentRequest {
            purposes: vec!["housing".into(), "medical".into(), "legal_aid".into()],
            recipient_types: vec!["shelter".into(), "clinic".into(), "legal_aid".into()],
            labels: vec!["identifying".into(), "contact".into(), "operational".into(), "sensitive".into()],
            valid_until_micros: now + 90 * 86_400_000_000,
            method: "written".into(),
            evidence_sha256: "5a".repeat(32),
            language: "es".into(),
            ..Default::default()
        })?)
        .await
        .map_err(|s| anyhow::anyhow!("recording consent: {}", s.message()))?
        .into_inner();
    let receipt: haven_trust::receipt::ConsentReceipt = serde_json::from_str(&consent.receipt_json)?;
    let subject = receipt.subject.clone();
    println!(
        " 1. A caseworker at Harbor Light records Rosa's written consent for housing, medical care and legal aid,"
    );
    println!(
        "    for 90 days. The node mints her pseudonym {subject} and signs the receipt; the gateway verifies and stores it."
    );

    let to_shelter = send(
        casey,
        referral("maple-house", "housing", &subject, &consent.consent_id, &[("medical_notes", "fictional notes")]),
    )
    .await?;
    let got = shelter
        .wait_for("the shelter referral", |i| delivery(i).is_some_and(|d| d.message_id == to_shelter.message_id))
        .await?;
    let d = delivery(&got).context("delivery")?;
    if d.fields.contains_key("medical_notes") || d.subject_pseudonym == subject {
        bail!("the shelter received a sensitive field or the controller's pseudonym");
    }
    set_status(shelter, &to_shelter.message_id, "harbor", pb::MessageStatus::Accepted, "").await?;
    casey.wait_status(&to_shelter.message_id, "maple-house", pb::MessageStatus::Accepted).await?;
    println!(
        " 2. She refers Rosa to Maple House. The shelter receives {} fields, not {:?} (sensitive), under its own",
        d.fields.len(),
        d.withheld_fields
    );
    println!("    pseudonym {}, and accepts. Harbor sees `accepted`.", d.subject_pseudonym);
    let values = ["Rosa (fictional)", "fictional notes"];
    let held = values_in(&[dir.join("gateway.db"), dir.join("gateway.db-wal")], &values);
    if !held.is_empty() {
        bail!("the gateway's database holds field values: {held:?}");
    }
    println!("    The gateway saw field names only: Harbor's node decided and sealed the values to Maple House's key");
    println!("    from the key log; the gateway checked the signed manifest and routed a copy it cannot open (none of");
    println!("    the values is in its database); Maple House's node verified the signature, then opened it.");

    let to_clinic = send(
        casey,
        referral("riverside-clinic", "medical", &subject, &consent.consent_id, &[("medical_notes", "fictional notes")]),
    )
    .await?;
    clinic
        .wait_for("the clinic referral", |i| delivery(i).is_some_and(|d| d.message_id == to_clinic.message_id))
        .await?;
    set_status(clinic, &to_clinic.message_id, "harbor", pb::MessageStatus::Accepted, "").await?;
    set_status(clinic, &to_clinic.message_id, "harbor", pb::MessageStatus::Closed, "service_provided").await?;
    let closed = casey.wait_status(&to_clinic.message_id, "riverside-clinic", pb::MessageStatus::Closed).await?;
    println!(" 3. A referral to Riverside Clinic is accepted, then closed with outcome `{}`.", closed.code);

    let alert = pb::Envelope {
        kind: "alert".into(),
        all_permitted_recipients: true,
        purpose: "safety_alert".into(),
        fields: std::collections::HashMap::from([
            ("incident_type".to_owned(), text("suspicious_recruitment")),
            ("location_area".to_owned(), text("North bus terminal (fictional)")),
            ("reporter_contact".to_owned(), text("555-0100")),
        ]),
        ..Default::default()
    };
    let sent_alert = send(casey, alert).await?;
    let got =
        liaison.wait_for("the alert", |i| delivery(i).is_some_and(|d| d.message_id == sent_alert.message_id)).await?;
    let d = delivery(&got).context("delivery")?;
    if !d.subject_pseudonym.is_empty() || d.fields.contains_key("reporter_contact") {
        bail!("the alert was not de-identified");
    }
    set_status(liaison, &sent_alert.message_id, "harbor", pb::MessageStatus::Acknowledged, "").await?;
    let ack = casey.wait_status(&sent_alert.message_id, "metro-police", pb::MessageStatus::Acknowledged).await?;
    println!(
        " 4. A de-identified safety alert reaches every law-enforcement liaison ({} of them), without the reporter's",
        sent_alert.outcomes.len()
    );
    println!("    contact. {} at Metro Police acknowledges it, and Harbor sees who did.", ack.by_person);

    let to_police = send(casey, referral("metro-police", "investigation", &subject, &consent.consent_id, &[])).await?;
    let (o, reason) = outcome(&to_police, "metro-police")?;
    if o != pb::recipient_outcome::Outcome::Denied as i32 {
        bail!("a referral to law enforcement without investigation consent was not denied");
    }
    println!(" 5. A referral to Metro Police for an investigation is denied: `{reason}` (Rosa never agreed to that).");

    let legal_idx = nodes.iter().position(|(o, _)| o.as_str() == "lantern-legal").context("legal node")?;
    drop(nodes.remove(legal_idx));
    let to_legal = send(casey, referral("lantern-legal", "legal_aid", &subject, &consent.consent_id, &[])).await?;
    let (o, _) = outcome(&to_legal, "lantern-legal")?;
    if o != pb::recipient_outcome::Outcome::Queued as i32 {
        bail!("the legal-aid referral was not queued");
    }
    casey
        .client()
        .await?
        .revoke_consent(casey.req(pb::RevokeConsentRequest {
            consent_id: consent.consent_id.clone(),
            reason: "withdrawn_by_subject".into(),
        })?)
        .await
        .map_err(|s| anyhow::anyhow!("revoking: {}", s.message()))?;
    casey.wait_status(&to_legal.message_id, "lantern-legal", pb::MessageStatus::Revoked).await?;
    shelter.wait_for("the withdrawal notice", |i| i.item_kind == "consent_withdrawn").await?;
    println!(
        " 6. Lantern Legal's node is stopped and a referral waits for it in the queue. Rosa withdraws her consent:"
    );
    println!(
        "    the waiting referral is cancelled (its sealed copy deleted) and Maple House, which holds her data, is told;"
    );
    println!("    its node now hides those fields from its staff.");

    let officer = who(people, "harbor", "pat-privacy")?;
    let mut audit = haven_proto::v1::audit_client::AuditClient::connect(format!("http://{}", officer.node)).await?;
    let report = audit
        .subject_access_report(
            officer.req(pb::SubjectAccessRequest { subject_pseudonym: subject.clone(), controller: String::new() })?,
        )
        .await
        .map_err(|s| anyhow::anyhow!("subject access report: {}", s.message()))?
        .into_inner();
    let mut recipients: Vec<&str> = report.disclosures.iter().map(|d| d.recipient.as_str()).collect();
    recipients.sort();
    recipients.dedup();
    for must in ["maple-house", "riverside-clinic"] {
        if !recipients.contains(&must) {
            bail!("the subject access report does not list {must}");
        }
    }
    println!(
        " 7. Harbor's privacy officer asks \"who has seen Rosa's data?\": {} disclosures, to {}.",
        report.disclosures.len(),
        recipients.join(", ")
    );
    for d in report.disclosures.iter().take(6) {
        let fields = if d.released_fields.is_empty() {
            String::new()
        } else {
            format!("fields: {}", d.released_fields.join(", "))
        };
        println!("      {:<17} {:<10} {:<10} {fields}", d.recipient, d.purpose, d.action);
    }

    let auditor = who(people, "audit-office", "avery-auditor")?;
    let mut audit = haven_proto::v1::audit_client::AuditClient::connect(format!("http://{}", auditor.node)).await?;
    let query = audit
        .query(auditor.req(pb::AuditQueryRequest { filter: None, page_size: 1000, cursor: 0 })?)
        .await
        .map_err(|s| anyhow::anyhow!("audit query: {}", s.message()))?
        .into_inner();
    let mut export = audit
        .export(auditor.req(pb::AuditExportRequest { filter: None })?)
        .await
        .map_err(|s| anyhow::anyhow!("audit export: {}", s.message()))?
        .into_inner();
    let path = dir.join("audit-export.jsonl");
    let mut bytes = Vec::new();
    while let Some(chunk) = export.message().await.map_err(|s| anyhow::anyhow!("audit export: {}", s.message()))? {
        bytes.extend_from_slice(&chunk.data);
    }
    std::fs::write(&path, &bytes)?;
    let key = dir.join("certs/gateway/signing.crt");
    let summary = haven_trust::export::verify_files(&path, &key, &[])
        .map_err(|e| anyhow::anyhow!("offline verification failed: {e}"))?;
    println!(
        " 8. The network auditor lists the trail ({} entries on the first page), exports it to {}",
        query.entries.len(),
        path.display()
    );
    println!("    and verifies it offline with only the gateway's public key:");
    println!("      {}", summary.describe());
    println!(
        "    (the same check: cargo run -q --bin haven-gateway -- audit verify {} --key {})",
        path.display(),
        key.display()
    );
    Ok(())
}
