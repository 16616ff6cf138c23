//! The scenarios. Each (except `baseline`) starts its own gateway process on a fresh database, so no
//! scenario inherits another's queue or audit log, and its peak RSS is its own. Clients are real node
//! clients: a [`GatewayLink`] per organization (its own mTLS connection and person tokens), the real
//! [`Node`] for the `e2e` recipient, and raw delivery streams for `many-orgs`.
//!
//! - `baseline`: the echo of [`super::echo`], with the same client, payload and concurrency;
//! - `submit`: referrals from `harbor` to `maple-house` for housing; nothing consumes them. Each
//!   operation in flight has its own subject and consent, as on a network with many survivors;
//! - `e2e`: the same referrals, delivered to `maple-house`'s node, which stores each before it
//!   acknowledges; latency runs from the sender's call to the recipient's durable store. Measured
//!   closed-loop (the maximum), then open-loop at half that rate;
//! - `fanout`: de-identified alerts from `harbor` to every permitted liaison (50);
//! - `many-orgs`: the queue filled with deliveries for offline organizations (alerts to the 50
//!   liaisons, none connected), 1,000 organizations' delivery streams connected from this one
//!   process, their idle cost, then referrals from five NGOs to five shelters among them, timed from
//!   the sender's call to the item's arrival on the shelter's stream; RSS with everything connected.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use haven_node::app::{Node, NodeConfig, NodeState};
use haven_node::link::{GatewayLink, LinkConfig};
use haven_proto::v1 as pb;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_trust::clock::{Clock, SystemClock};
use haven_trust::ids::{OrgId, OrgType, PersonId, Role};
use haven_trust::receipt::{CollectionMethod, ConsentReceipt, RECEIPT_VERSION};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

use haven_tests::sender::Sender;

use super::echo;
use super::load::{self, Load, Window};
use super::network::{BenchNet, Db, FreshDb, MANY_SENDERS, Proc};
use super::report::{Figures, Probe, status_mib};

/// How the scenarios run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: usize,
    pub window: Window,
    /// Deliveries `many-orgs` queues for offline organizations before it measures.
    pub queued: usize,
    /// How long an end-to-end operation may wait for its delivery.
    pub e2e_timeout: Duration,
}

/// The bench network, where its data goes, and how to run.
pub struct Bench {
    pub net: BenchNet,
    pub db: Db,
    pub settings: Settings,
}

/// The sender of every referral and alert.
const SENDER: &str = "harbor";
/// The recipient of `submit` and `e2e`.
const RECIPIENT: &str = "maple-house";
/// The person acting at the sender.
const PERSON: &str = "casey-caseworker";
/// Recipients of one bench alert: the sample's two liaisons and the bench's 48.
const ALERT_RECIPIENTS: usize = 2 + super::network::EXTRA_LIAISONS;

fn org(id: &str) -> anyhow::Result<OrgId> {
    Ok(OrgId::parse(id)?)
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

impl Bench {
    /// A gateway process on a fresh database; its log goes to `<dir>/<label>-gateway.log`.
    async fn gateway(&self, label: &str) -> anyhow::Result<(Proc, FreshDb)> {
        let db = self.db.fresh(self.net.dir.path(), label).await?;
        let args = [
            "gateway".as_ref(),
            self.net.certs.0.as_os_str(),
            self.net.policies.as_os_str(),
            "--database".as_ref(),
            db.url.as_ref(),
        ];
        let log = self.net.dir.path().join(format!("{label}-gateway.log"));
        match Proc::spawn(&format!("gateway ({label})"), &args, &log) {
            Ok(p) => Ok((p, db)),
            Err(e) => {
                db.drop_now().await;
                Err(e)
            }
        }
    }

    /// An organization's link to the server at `url`.
    fn link(&self, url: &str, org: &OrgId) -> anyhow::Result<GatewayLink> {
        let config = LinkConfig::from_certs_dir(url.to_owned(), &self.net.certs, org.clone());
        Ok(GatewayLink::new(&config, Arc::new(SystemClock))?)
    }

    fn figures(&self, name: &str, load: Load, probe: &Probe) -> Figures {
        let pid = probe.pid;
        let mut extra = BTreeMap::new();
        if load.dropped > 0 {
            extra.insert("dropped".to_owned(), json!(load.dropped));
        }
        Figures {
            name: name.to_owned(),
            ops: load.ops,
            errors: load.errors,
            first_error: load.first_error,
            window: load.window,
            latency: load.latency,
            server_cpu_s: load.server_cpu_s,
            database_cpu_s: load.database_cpu_s,
            server_peak_rss_mib: status_mib(pid, "VmHWM"),
            extra,
            ratio_to_baseline: None,
        }
    }
}

fn text(s: &str) -> pb::FieldValue {
    pb::FieldValue { value: Some(pb::field_value::Value::Text(s.into())) }
}

/// A typical referral: the demo's, with a sensitive field the shelter does not receive.
fn referral(to: &OrgId, subject: &str, consent_id: &str) -> pb::Envelope {
    pb::Envelope {
        message_id: Uuid::now_v7().to_string(),
        kind: "referral".into(),
        recipients: vec![to.to_string()],
        purpose: "housing".into(),
        subject_pseudonym: subject.into(),
        consent_id: consent_id.into(),
        fields: HashMap::from([
            ("urgency".to_owned(), text("high")),
            ("safe_to_contact_by".to_owned(), text("through_caseworker")),
            ("survivor_first_name".to_owned(), text("Rosa (fictional)")),
            ("preferred_language".to_owned(), text("es")),
            ("medical_notes".to_owned(), text("fictional notes")),
        ]),
        ..Default::default()
    }
}

/// The demo's de-identified safety alert, to every permitted liaison.
fn alert() -> pb::Envelope {
    pb::Envelope {
        kind: "alert".into(),
        all_permitted_recipients: true,
        purpose: "safety_alert".into(),
        fields: HashMap::from([
            ("incident_type".to_owned(), text("suspicious_recruitment")),
            ("location_area".to_owned(), text("North bus terminal (fictional)")),
            ("reporter_contact".to_owned(), text("555-0100")),
        ]),
        ..Default::default()
    }
}

/// Registers a 30-day consent of a new subject at `link`'s organization, as its caseworker would
/// through the node: the receipt signed with the organization's key. Returns (consent id, subject).
async fn register_consent(link: &GatewayLink, purposes: &[&str], types: &[&str]) -> anyhow::Result<(String, String)> {
    let now = SystemClock.now();
    let receipt = ConsentReceipt {
        version: RECEIPT_VERSION,
        consent_id: Uuid::new_v4().to_string(),
        subject: haven_node::consent::mint_pseudonym(),
        controller: link.signer().org().clone(),
        purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
        recipient_orgs: Vec::new(),
        recipient_types: types.iter().map(|t| OrgType::parse(t)).collect::<Result<_, _>>()?,
        labels: ["identifying", "contact", "operational", "location", "sensitive"].map(String::from).to_vec(),
        fields: Vec::new(),
        valid_from: now - time::Duration::minutes(1),
        valid_until: now + time::Duration::days(30),
        method: CollectionMethod::Written,
        evidence_sha256: "be".repeat(32),
        language: "en".into(),
        recorded_by: PersonId::parse(PERSON)?,
        issued_at: now,
        supersedes: None,
    };
    let jws = link.signer().sign(&receipt)?;
    let person = PersonId::parse(PERSON)?;
    // The link connects lazily; give a gateway that has just started a moment.
    let mut last = String::new();
    for _ in 0..50 {
        let req = link
            .request(&person, Role::Caseworker, pb::RegisterConsentRequest { receipt_jws: jws.clone() })
            .map_err(|s| anyhow::anyhow!(status_text(&s)))?;
        match GatewayClient::new(link.channel()).register_consent(req).await {
            Ok(r) => return Ok((r.into_inner().consent_id, receipt.subject)),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                last = status_text(&s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => bail!("registering a consent: {}", status_text(&s)),
        }
    }
    bail!("registering a consent: the gateway stayed unavailable ({last})")
}

/// One referral per operation in flight from `link`'s organization to `to`, each about its own
/// subject under its own consent: many survivors, as on a real network. (Submissions under one
/// consent take turns: each locks the consent's row so that a revocation cannot race it.)
async fn referrals(link: &GatewayLink, to: &OrgId, n: usize) -> anyhow::Result<Vec<pb::Envelope>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let (consent_id, subject) = register_consent(link, &["housing"], &["shelter"]).await?;
        out.push(referral(to, &subject, &consent_id));
    }
    Ok(out)
}

/// Seals `env` as the sender's node would (message id included), submits it and checks that `want`
/// recipients were queued. Sealing is in the figures, as it is at a node.
async fn submit(
    sender: &Sender,
    link: &GatewayLink,
    person: &PersonId,
    env: pb::Envelope,
    want: usize,
) -> Result<(), String> {
    let sealed = sender.seal(person, Role::Caseworker, &env).await.map_err(|s| status_text(&s))?;
    let req = link.request(person, Role::Caseworker, sealed).map_err(|s| status_text(&s))?;
    let resp = GatewayClient::new(link.channel()).submit(req).await.map_err(|s| status_text(&s))?.into_inner();
    let queued = pb::recipient_outcome::Outcome::Queued as i32;
    let n = resp.outcomes.iter().filter(|o| o.outcome == queued).count();
    if n != want {
        let why = resp
            .outcomes
            .iter()
            .find(|o| o.outcome != queued)
            .and_then(|o| o.decision.as_ref().map(|d| format!("{}: {}", o.recipient, d.reason_code)))
            .unwrap_or_default();
        return Err(format!("{n} of {} recipients queued, {want} expected ({why})", resp.outcomes.len()));
    }
    Ok(())
}

/// A sealing sender for `link`'s organization, after publishing a sealing key for each of `recipients`
/// (organizations with no node in the benchmark, as `haven-node keys init` would for theirs).
async fn sender_for(b: &Bench, url: &str, link: &GatewayLink, recipients: &[OrgId]) -> anyhow::Result<Arc<Sender>> {
    for r in recipients {
        haven_tests::sender::publish_key(&b.link(url, r)?)
            .await
            .map_err(|s| anyhow::anyhow!("a sealing key for {r}: {}", status_text(&s)))?;
    }
    Ok(Arc::new(Sender::new(link.clone()).await.map_err(|s| anyhow::anyhow!("the sender: {}", status_text(&s)))?))
}

/// The liaisons of the bench network: the sample's two and the bench's own.
fn liaisons() -> anyhow::Result<Vec<OrgId>> {
    let mut out = vec![org("metro-police")?, org("county-sheriff")?];
    for i in 1..=super::network::EXTRA_LIAISONS {
        out.push(org(&format!("bench-le-{i:02}"))?);
    }
    Ok(out)
}

/// Operations waiting for their message to reach its recipient, by message id.
#[derive(Clone, Default)]
struct Waiters {
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>,
    /// How often the arrival feed fell behind and the recipient's database was read instead.
    lags: Arc<AtomicU64>,
}

impl Waiters {
    fn expect(&self, message_id: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(message_id.to_owned(), tx);
        }
        rx
    }

    fn forget(&self, message_id: &str) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(message_id);
        }
    }

    fn arrived(&self, message_id: &str, at: Instant) {
        let tx = self.waiting.lock().ok().and_then(|mut w| w.remove(message_id));
        if let Some(tx) = tx {
            let _ = tx.send(at);
        }
    }

    fn waiting_ids(&self) -> Vec<String> {
        self.waiting.lock().map(|w| w.keys().cloned().collect()).unwrap_or_default()
    }
}

/// Submits a referral and waits until the recipient has it; returns when it arrived.
async fn submit_and_wait(
    sender: &Sender,
    link: &GatewayLink,
    person: &PersonId,
    mut env: pb::Envelope,
    waiters: &Waiters,
    timeout: Duration,
) -> Result<Instant, String> {
    let id = Uuid::now_v7().to_string();
    env.message_id = id.clone();
    let arrived = waiters.expect(&id);
    if let Err(e) = submit(sender, link, person, env, 1).await {
        waiters.forget(&id);
        return Err(e);
    }
    match tokio::time::timeout(timeout, arrived).await {
        Ok(Ok(at)) => Ok(at),
        _ => {
            waiters.forget(&id);
            Err(format!("message {id} did not reach its recipient within {} s", timeout.as_secs()))
        }
    }
}

/// `baseline`: the echo process, called like the gateway (same link, token header, payload and
/// concurrency).
pub async fn baseline(b: &Bench) -> anyhow::Result<Vec<Figures>> {
    let log = b.net.dir.path().join("baseline-echo.log");
    let server = Proc::spawn("echo server", &["echo".as_ref(), b.net.certs.0.as_os_str()], &log)?;
    let link = b.link(&server.url(), &org(SENDER)?)?;
    let person = PersonId::parse(PERSON)?;
    let env = referral(&org(RECIPIENT)?, &haven_node::consent::mint_pseudonym(), &Uuid::new_v4().to_string());
    let call = {
        let (link, person, env) = (link.clone(), person.clone(), env.clone());
        move |_| {
            let (link, person, mut env) = (link.clone(), person.clone(), env.clone());
            async move {
                env.message_id = Uuid::now_v7().to_string();
                let req = link.request(&person, Role::Caseworker, env).map_err(|s| status_text(&s))?;
                echo::call(link.channel(), req).await.map_err(|s| status_text(&s))?;
                Ok(Instant::now())
            }
        }
    };
    // One call first, so a broken server fails here rather than as a run of errors.
    let mut ready = Err(String::new());
    for _ in 0..50 {
        ready = call(0).await;
        if ready.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Err(e) = ready {
        bail!("the echo server does not answer: {e}");
    }
    let probe = Probe::process(server.pid());
    let load = load::closed_loop(b.settings.concurrency, b.settings.window, &probe, call).await;
    let mut f = b.figures("baseline", load, &probe);
    f.extra.insert("payload_bytes".into(), json!(prost::Message::encoded_len(&env)));
    server.stop().await;
    Ok(vec![f])
}

/// `submit`: referrals queued for a recipient that is not connected.
pub async fn submit_only(b: &Bench) -> anyhow::Result<Vec<Figures>> {
    let (gw, db) = b.gateway("submit").await?;
    let probe = Probe { pid: gw.pid(), postgres: db.postgres() };
    let result = async {
        let link = b.link(&gw.url(), &org(SENDER)?)?;
        let envs = referrals(&link, &org(RECIPIENT)?, b.settings.concurrency).await?;
        let sender = sender_for(b, &gw.url(), &link, &[org(RECIPIENT)?]).await?;
        let person = PersonId::parse(PERSON)?;
        let load = load::closed_loop(b.settings.concurrency, b.settings.window, &probe, move |i| {
            let env = envs[(i % envs.len() as u64) as usize].clone();
            let (link, person, mut env, sender) = (link.clone(), person.clone(), env, sender.clone());
            async move {
                env.message_id = Uuid::now_v7().to_string();
                submit(&sender, &link, &person, env, 1).await?;
                Ok(Instant::now())
            }
        })
        .await;
        Ok(vec![b.figures("submit", load, &probe)])
    }
    .await;
    gw.stop().await;
    db.drop_now().await;
    result
}

/// The recipient's node, running in this process.
struct InProcessNode {
    state: Arc<NodeState>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessNode {
    /// Starts `org`'s node against the gateway at `url` and waits until its delivery stream is open.
    async fn start(b: &Bench, url: &str, org: &OrgId, label: &str) -> anyhow::Result<InProcessNode> {
        let dir = b.net.dir.path().join("nodes").join(format!("{label}-{org}"));
        std::fs::create_dir_all(&dir)?;
        let mut users = haven_node::users::Users::default();
        users.add(PersonId::parse("sam-caseworker")?, Role::Caseworker);
        users.save(&dir.join("users.toml"))?;
        let config = NodeConfig {
            first_sealing_key: true,
            link: LinkConfig::from_certs_dir(url.to_owned(), &b.net.certs, org.clone()),
            database: dir.join("node.db").display().to_string(),
            users: dir.join("users.toml"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_tls: None,
            console: None,
        };
        let node = Node::open(config, Arc::new(SystemClock)).await?;
        let state = node.state.clone();
        let listener = node.bind().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            if let Err(e) = node
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
            {
                eprintln!("haven-bench: the recipient node stopped: {e}");
            }
        });
        let mut stream = state.stream.clone();
        tokio::time::timeout(Duration::from_secs(30), stream.wait_for(|s| s.connected))
            .await
            .context("the recipient node's delivery stream did not open within 30 s")?
            .context("the recipient node stopped")?;
        Ok(InProcessNode { state, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Resolves waiters from the node's arrival feed (each item is announced after the node committed
/// it). If the feed falls behind, the node's database says which waiting messages are stored.
async fn watch_arrivals(state: Arc<NodeState>, waiters: Waiters) {
    use tokio::sync::broadcast::error::RecvError;
    let mut feed = state.arrivals.subscribe();
    loop {
        match feed.recv().await {
            Ok(item) => {
                if let Some(pb::Item { body: Some(pb::item::Body::Delivery(d)), .. }) = &item.item {
                    waiters.arrived(&d.message_id, Instant::now());
                }
            }
            Err(RecvError::Lagged(_)) => {
                waiters.lags.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                for id in waiters.waiting_ids() {
                    let stored = sqlx::query("SELECT 1 FROM inbox WHERE message_id = $1 AND item_kind = 'delivery'")
                        .bind(&id)
                        .fetch_optional(state.store.pool())
                        .await;
                    if let Ok(Some(_)) = stored {
                        waiters.arrived(&id, now);
                    }
                }
            }
            Err(RecvError::Closed) => break,
        }
    }
}

/// `e2e`: referrals delivered to the recipient's node, which stores each before acknowledging.
pub async fn e2e(b: &Bench) -> anyhow::Result<Vec<Figures>> {
    let (gw, db) = b.gateway("e2e").await?;
    let probe = Probe { pid: gw.pid(), postgres: db.postgres() };
    let result = async {
        let node = InProcessNode::start(b, &gw.url(), &org(RECIPIENT)?, "e2e").await?;
        let waiters = Waiters::default();
        let watcher = tokio::spawn(watch_arrivals(node.state.clone(), waiters.clone()));
        let link = b.link(&gw.url(), &org(SENDER)?)?;
        let envs = Arc::new(referrals(&link, &org(RECIPIENT)?, b.settings.concurrency).await?);
        // The recipient's node published its own key when it started.
        let sender = sender_for(b, &gw.url(), &link, &[]).await?;
        let person = PersonId::parse(PERSON)?;
        let timeout = b.settings.e2e_timeout;
        let op = {
            let waiters = waiters.clone();
            move |i| {
                let env = envs[(i % envs.len() as u64) as usize].clone();
                let (link, person, waiters, sender) = (link.clone(), person.clone(), waiters.clone(), sender.clone());
                async move { submit_and_wait(&sender, &link, &person, env, &waiters, timeout).await }
            }
        };
        let closed = load::closed_loop(b.settings.concurrency, b.settings.window, &probe, op.clone()).await;
        let mut max = b.figures("e2e", closed, &probe);
        let half = max.throughput() / 2.0;
        let mut figures = Vec::new();
        if half > 0.0 {
            let open = load::fixed_rate(half, 10_000, b.settings.window, &probe, op).await;
            let mut f = b.figures("e2e@half-rate", open, &probe);
            f.extra.insert("offered_per_s".into(), json!((half * 10.0).round() / 10.0));
            figures.push(f);
        }
        max.extra.insert("arrival_feed_lags".into(), json!(waiters.lags.load(Ordering::Relaxed)));
        figures.insert(0, max);
        watcher.abort();
        node.stop().await;
        Ok(figures)
    }
    .await;
    gw.stop().await;
    db.drop_now().await;
    result
}

/// `fanout`: de-identified alerts, each queued for 50 liaisons; nothing consumes them.
pub async fn fanout(b: &Bench) -> anyhow::Result<Vec<Figures>> {
    let (gw, db) = b.gateway("fanout").await?;
    let probe = Probe { pid: gw.pid(), postgres: db.postgres() };
    let result = async {
        let link = b.link(&gw.url(), &org(SENDER)?)?;
        let person = PersonId::parse(PERSON)?;
        // The first alert checks the fan-out (and connects).
        let mut first = Err(String::new());
        let mut sender = None;
        for _ in 0..50 {
            let s = match sender.clone() {
                Some(s) => s,
                None => match sender_for(b, &gw.url(), &link, &liaisons()?).await {
                    Ok(s) => {
                        sender = Some(s.clone());
                        s
                    }
                    Err(e) => {
                        first = Err(e.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let mut env = alert();
            env.message_id = Uuid::now_v7().to_string();
            first = submit(&s, &link, &person, env, ALERT_RECIPIENTS).await;
            if first.as_ref().is_ok() || !first.as_ref().is_err_and(|e| e.starts_with("Unavailable")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Err(e) = first {
            bail!("the first alert: {e}");
        }
        let sender = sender.context("no sender")?;
        let load = load::closed_loop(b.settings.concurrency, b.settings.window, &probe, move |_| {
            let (link, person, sender) = (link.clone(), person.clone(), sender.clone());
            async move {
                let mut env = alert();
                env.message_id = Uuid::now_v7().to_string();
                submit(&sender, &link, &person, env, ALERT_RECIPIENTS).await?;
                Ok(Instant::now())
            }
        })
        .await;
        let mut f = b.figures("fanout", load, &probe);
        f.extra.insert("recipients_per_alert".into(), json!(ALERT_RECIPIENTS));
        f.extra.insert(
            "deliveries_queued_per_s".into(),
            json!((f.throughput() * ALERT_RECIPIENTS as f64 * 10.0).round() / 10.0),
        );
        Ok(vec![f])
    }
    .await;
    gw.stop().await;
    db.drop_now().await;
    result
}

/// One simulated node: a raw delivery stream that acknowledges each item as it comes (it stores
/// nothing; the gateway's side of the work is the same as for a real node).
async fn raw_stream(
    link: GatewayLink,
    waiters: Waiters,
    connected: Arc<AtomicUsize>,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) {
    use pb::{gateway_frame, node_frame};
    let (tx, rx) = mpsc::channel::<pb::NodeFrame>(128);
    let hello = pb::NodeFrame { frame: Some(node_frame::Frame::Hello(pb::Hello { witnessed_tree_size: 0 })) };
    let _ = tx.send(hello).await;
    let req = match link.request(&PersonId::node(), Role::Node, tokio_stream::wrappers::ReceiverStream::new(rx)) {
        Ok(r) => r,
        Err(s) => {
            let _ = ready.send(Err(status_text(&s)));
            return;
        }
    };
    let mut inbound = match GatewayClient::new(link.channel()).deliveries(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let _ = ready.send(Err(status_text(&s)));
            return;
        }
    };
    let mut ready = Some(ready);
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(pb::GatewayFrame { frame: Some(gateway_frame::Frame::Welcome(_)) })) => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Ok(Some(pb::GatewayFrame { frame: Some(gateway_frame::Frame::Item(item)) })) => {
                    if let Some(pb::item::Body::Delivery(d)) = &item.body {
                        waiters.arrived(&d.message_id, Instant::now());
                    }
                    let ack = pb::NodeFrame { frame: Some(node_frame::Frame::Ack(pb::Ack { item_id: item.item_id })) };
                    if tx.send(ack).await.is_err() {
                        break;
                    }
                }
                Ok(Some(pb::GatewayFrame { frame: Some(gateway_frame::Frame::Heartbeat(_)) })) => {
                    let hb = pb::NodeFrame { frame: Some(node_frame::Frame::Heartbeat(Default::default())) };
                    let _ = tx.send(hb).await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            },
            _ = stop.changed() => break,
        }
    }
    match ready {
        Some(r) => {
            let _ = r.send(Err("the gateway closed the stream before its welcome".into()));
        }
        None => {
            connected.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `many-orgs`: the queue holds `queued` deliveries for offline organizations, every `many-orgs`
/// organization has its delivery stream open, and five NGOs send referrals to five shelters.
pub async fn many_orgs(b: &Bench) -> anyhow::Result<Vec<Figures>> {
    let many = &b.net.many;
    if many.len() < 2 * MANY_SENDERS {
        bail!("many-orgs needs at least {} organizations (--orgs)", 2 * MANY_SENDERS);
    }
    let (gw, db) = b.gateway("many-orgs").await?;
    let probe = Probe { pid: gw.pid(), postgres: db.postgres() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let result = async {
        let pid = gw.pid();
        let url = gw.url();
        let mut extra = BTreeMap::new();

        // 1. Fill the queue: alerts to the 50 liaisons, none of which is connected.
        let started = Instant::now();
        let harbor = b.link(&url, &org(SENDER)?)?;
        let person = PersonId::parse(PERSON)?;
        let alerts = b.settings.queued.div_ceil(ALERT_RECIPIENTS);
        let shelters: Vec<OrgId> = many[MANY_SENDERS..2 * MANY_SENDERS].to_vec();
        let mut keyed = liaisons()?;
        keyed.extend(shelters);
        let harbor_sender = sender_for(b, &url, &harbor, &keyed).await?;
        // Fewer writers than the measured scenarios: this is set-up, and on SQLite a crowd of writers
        // can starve one past its busy timeout. A submission refused as unavailable committed
        // nothing, so it is sent again.
        let results: Vec<Result<u32, String>> = futures::stream::iter(0..alerts)
            .map(|_| {
                let (link, person, sender) = (harbor.clone(), person.clone(), harbor_sender.clone());
                async move {
                    let mut retries = 0;
                    loop {
                        let mut env = alert();
                        env.message_id = Uuid::now_v7().to_string();
                        match submit(&sender, &link, &person, env, ALERT_RECIPIENTS).await {
                            Ok(()) => return Ok(retries),
                            Err(e) if e.starts_with("Unavailable") && retries < 5 => {
                                retries += 1;
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            })
            .buffer_unordered(b.settings.concurrency.min(8))
            .collect()
            .await;
        let mut retries = 0;
        for r in results {
            retries += r.map_err(|e| anyhow::anyhow!("filling the queue: {e}"))?;
        }
        extra.insert("queue_fill_retries".into(), json!(retries));
        extra.insert("queued_deliveries".into(), json!(alerts * ALERT_RECIPIENTS));
        extra.insert("queue_fill_s".into(), json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0));

        // 2. Connect every organization's stream, 50 handshakes at a time.
        let started = Instant::now();
        let waiters = Waiters::default();
        let connected = Arc::new(AtomicUsize::new(0));
        let mut links = Vec::with_capacity(many.len());
        for chunk in many.chunks(50) {
            let mut readies = Vec::with_capacity(chunk.len());
            for o in chunk {
                let link = b.link(&url, o)?;
                let (ready_tx, ready_rx) = oneshot::channel();
                tokio::spawn(raw_stream(link.clone(), waiters.clone(), connected.clone(), ready_tx, stop_rx.clone()));
                readies.push((o.clone(), ready_rx));
                links.push(link);
            }
            for (o, r) in readies {
                match tokio::time::timeout(Duration::from_secs(60), r).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => bail!("{o}'s delivery stream: {e}"),
                    _ => bail!("{o}'s delivery stream did not open within 60 s"),
                }
            }
        }
        extra.insert("streams".into(), json!(connected.load(Ordering::Relaxed)));
        extra.insert("connect_s".into(), json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0));

        // 3. Idle: what 1,000 open streams cost the gateway when nothing happens.
        let idle = b.settings.window.measure.min(Duration::from_secs(5));
        let before = super::report::cpu_secs(pid);
        tokio::time::sleep(idle).await;
        if let (Some(a), Some(z)) = (before, super::report::cpu_secs(pid)) {
            extra
                .insert("idle_cpu_pct_of_a_core".into(), json!(((z - a) / idle.as_secs_f64() * 1000.0).round() / 10.0));
        }
        extra.insert("rss_mib_idle_all_connected".into(), json!(status_mib(pid, "VmRSS").map(|m| m.round())));

        // 4. Traffic among ten of them: NGO i refers to shelter i and waits for the shelter's stream.
        let mut senders = Vec::new();
        for link in links.iter().take(MANY_SENDERS) {
            senders.push(sender_for(b, &url, link, &[]).await?);
        }
        let mut pairs = Vec::new();
        for w in 0..b.settings.concurrency {
            let i = w % MANY_SENDERS;
            let (consent_id, subject) = register_consent(&links[i], &["housing"], &["shelter"]).await?;
            pairs.push((
                senders[i].clone(),
                links[i].clone(),
                referral(&many[MANY_SENDERS + i], &subject, &consent_id),
            ));
        }
        let timeout = b.settings.e2e_timeout;
        let load = load::closed_loop(b.settings.concurrency, b.settings.window, &probe, {
            let waiters = waiters.clone();
            move |i| {
                let (sender, link, env) = pairs[(i % pairs.len() as u64) as usize].clone();
                let (person, waiters) = (person.clone(), waiters.clone());
                async move { submit_and_wait(&sender, &link, &person, env, &waiters, timeout).await }
            }
        })
        .await;

        // 5. Memory with every stream open and the queue full.
        let mut f = b.figures("many-orgs", load, &probe);
        extra.insert("rss_mib_all_connected".into(), json!(status_mib(pid, "VmRSS").map(|m| m.round())));
        extra.insert("streams_at_end".into(), json!(connected.load(Ordering::Relaxed)));
        f.extra.extend(extra);
        Ok(vec![f])
    }
    .await;
    let _ = stop_tx.send(true);
    gw.stop().await;
    db.drop_now().await;
    result
}
