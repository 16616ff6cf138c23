//! Bringing up a gateway (and its clients) for a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use haven_gateway::app::Gateway;
use haven_gateway::config::Config;
use haven_node::link::{GatewayLink, LinkConfig};
use haven_trust::clock::{SharedClock, SystemClock};
use haven_trust::ids::OrgId;
use haven_trust::pki::CertsDir;
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The repository's `policies/` directory.
pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Copies the repository's policy bundle into `dest`, so a test can change it.
pub fn copy_policies(dest: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                copy(&p, &to.join(e.file_name()));
            } else {
                std::fs::copy(&p, to.join(e.file_name())).expect("copy");
            }
        }
    }
    copy(&policies_dir(), dest);
}

/// Which database the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The database selected by `HAVEN_TEST_DB`.
pub fn db() -> Db {
    match std::env::var("HAVEN_TEST_DB").as_deref() {
        Ok("postgres") => Db::Postgres,
        Ok("sqlite") | Err(_) => Db::Sqlite,
        Ok(other) => panic!("HAVEN_TEST_DB must be `sqlite` or `postgres`, not `{other}`"),
    }
}

/// A fresh, empty database URL for one test, on the database `HAVEN_TEST_DB` selects.
pub async fn fresh_database(dir: &Path) -> String {
    fresh_database_on(db(), dir).await
}

/// A fresh, empty database URL for one test on `db`, whatever `HAVEN_TEST_DB` says: a SQLite file in
/// `dir`, or a new database on the PostgreSQL server named by `HAVEN_TEST_PG`. A server that cannot be
/// reached fails the test.
pub async fn fresh_database_on(db: Db, dir: &Path) -> String {
    match db {
        Db::Sqlite => dir.join("gateway.db").display().to_string(),
        Db::Postgres => {
            let admin =
                std::env::var("HAVEN_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let name = format!("haven_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                panic!("this test needs PostgreSQL at {admin} (HAVEN_TEST_PG names another server): {e}")
            });
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin);
            format!("{base}/{name}")
        }
    }
}

/// A DNS name the test network's gateway certificate carries beside `localhost`, as
/// `haven-certs init --gateway-name` puts it there.
pub const GATEWAY_NAME: &str = "gateway.haven.test";

/// A running gateway with development certificates for the sample network.
pub struct TestNet {
    pub dir: TempDir,
    pub certs: CertsDir,
    pub gateway: Gateway,
    pub addr: SocketAddr,
    pub database: String,
    /// The gateway's clock; clients of this net mint their tokens with it.
    pub clock: SharedClock,
    /// The policy bundle the gateway serves.
    pub policies: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestNet {
    /// Makes certificates, opens a fresh database and serves a gateway on 127.0.0.1:0.
    pub async fn start() -> TestNet {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// The same, with a given clock.
    /// A network started from a copy of the repository's policies, in a folder (returned, kept as long
    /// as the test holds it) that the test may edit before a reload.
    pub async fn start_with_own_policies() -> (TempDir, TestNet) {
        let policies = tempfile::tempdir().expect("tempdir");
        copy_policies(policies.path());
        let net = Self::start_with(policies.path().to_owned(), Arc::new(haven_trust::clock::SystemClock)).await;
        (policies, net)
    }

    pub async fn start_with_clock(clock: SharedClock) -> TestNet {
        Self::start_with(policies_dir(), clock).await
    }

    /// The same, with a given policy directory and clock.
    pub async fn start_with(policies: PathBuf, clock: SharedClock) -> TestNet {
        Self::start_configured(policies, clock, |_| {}).await
    }

    /// The same, with the gateway's configuration adjusted by `adjust` before it opens.
    pub async fn start_configured(policies: PathBuf, clock: SharedClock, adjust: impl FnOnce(&mut Config)) -> TestNet {
        let net = Self::start_unkeyed(policies, clock, adjust).await;
        provision_sealing_keys(net.dir.path(), &net.certs, &net.url(), net.clock.clone()).await;
        net
    }

    /// A gateway on the sample bundle and the system clock, without the organizations' sealing keys: the
    /// key log starts empty, and each node makes its own key at its first start.
    pub async fn start_without_keys() -> TestNet {
        Self::start_unkeyed(policies_dir(), Arc::new(SystemClock), |_| {}).await
    }

    /// [`TestNet::start_configured`], without the organizations' sealing keys: the key log starts
    /// empty (for the key log's own tests).
    pub async fn start_unkeyed(policies: PathBuf, clock: SharedClock, adjust: impl FnOnce(&mut Config)) -> TestNet {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs_path = dir.path().join("certs");
        haven_certs::init_with_gateway_names(
            &policies_dir().join("orgs.toml"),
            &certs_path,
            false,
            &[GATEWAY_NAME.to_owned()],
        )
        .expect("dev PKI");
        let database = fresh_database(dir.path()).await;
        let (gateway, addr, stop, server) =
            serve_gateway(&certs_path, &policies, &database, clock.clone(), adjust).await;
        TestNet {
            dir,
            certs: CertsDir(certs_path),
            gateway,
            addr,
            database,
            clock,
            policies,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Writes a statement into the gateway's key log directly, with a checkpoint signed by the gateway's
    /// key, as an operator who holds the gateway's database and keys could: what a node must catch.
    pub async fn append_to_key_log_behind_its_checks(&self, jws: &str) {
        let pool = self.gateway.store().pool();
        let leaves: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT leaf_hash FROM key_log ORDER BY seq").fetch_all(pool).await.unwrap();
        let mut tree = haven_trust::merkle::MemoryTree::new();
        for l in &leaves {
            tree.push(l.as_slice().try_into().unwrap()).unwrap();
        }
        let seq = tree.size();
        let at = self.clock.now_micros();
        let sha = haven_trust::sealing::statement_sha256(jws);
        let leaf = haven_trust::keylog::leaf_hash(seq, at, &sha);
        tree.push(leaf).unwrap();
        sqlx::query("INSERT INTO key_log (seq, registered_at_micros, org, key_id, action, statement, statement_sha256, leaf_hash) VALUES ($1, $2, 'forged', 'x', 'publish', $3, $4, $5)")
            .bind(i64::try_from(seq).unwrap())
            .bind(at)
            .bind(jws)
            .bind(sha.to_vec())
            .bind(leaf.to_vec())
            .execute(pool)
            .await
            .unwrap();
        let key_pem = std::fs::read_to_string(self.certs.gateway_signing_key()).unwrap();
        let cert = haven_trust::pki::load_certs(&self.certs.gateway_signing_cert()).unwrap()[0].to_vec();
        let signer = haven_trust::audit::CheckpointSigner::new(&key_pem, &cert).unwrap();
        let cp = signer.sign_of(haven_trust::keylog::KEY_LOG_ORIGIN, tree.size(), &tree.root(), at);
        sqlx::query("INSERT INTO key_log_checkpoint (tree_size, timestamp_micros, root_hash, signature, key_id) VALUES ($1, $2, $3, $4, $5)")
            .bind(i64::try_from(cp.tree_size).unwrap())
            .bind(at)
            .bind(tree.root().to_vec())
            .bind(hex::decode(&cp.signature).unwrap())
            .bind(cp.key_id.clone())
            .execute(pool)
            .await
            .unwrap();
    }

    /// A second gateway serving this network on the same database, as a replica does: the same
    /// certificates, bundle and clock, its own connections, streams and listener (127.0.0.1:0).
    pub async fn replica(&self) -> Replica {
        let (gateway, addr, stop, server) =
            serve_gateway(&self.certs.0, &self.policies, &self.database, self.clock.clone(), |_| {}).await;
        Replica {
            gateway,
            addr,
            certs: self.certs.clone(),
            clock: self.clock.clone(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// The gateway URL.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// A node's link to this gateway, with the organization's dev certificates.
    pub fn link(&self, org: &str) -> GatewayLink {
        self.link_named(org, "localhost")
    }

    /// `org`'s link, checking that the gateway's certificate names `gateway_name`.
    pub fn link_named(&self, org: &str, gateway_name: &str) -> GatewayLink {
        let org = OrgId::parse(org).expect("org id");
        let mut config = LinkConfig::from_certs_dir(self.url(), &self.certs, org);
        config.gateway_name = gateway_name.to_owned();
        GatewayLink::new(&config, self.clock.clone()).expect("link")
    }

    /// A channel presenting an arbitrary client certificate (or none), trusting `ca`.
    pub async fn channel_with(
        &self,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls =
                tls.identity(Identity::from_pem(std::fs::read(cert).expect("cert"), std::fs::read(key).expect("key")));
        }
        Endpoint::from_shared(self.url()).expect("url").tls_config(tls)?.connect().await
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        self.stop_keeping_files().await;
    }

    /// Stops the server and waits for it, keeping its directory (and so its database files) until
    /// this is dropped.
    pub async fn stop_keeping_files(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

/// Opens a gateway on `database` and serves it on 127.0.0.1:0 until the returned sender fires.
async fn serve_gateway(
    certs: &Path,
    policies: &Path,
    database: &str,
    clock: SharedClock,
    adjust: impl FnOnce(&mut Config),
) -> (Gateway, SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut config = Config::new(certs.to_owned(), policies.to_owned(), database.to_owned());
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    adjust(&mut config);
    let gateway = Gateway::open(config, clock).await.expect("gateway starts");
    let listener = gateway.bind().await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let g = gateway.clone();
    let server = tokio::spawn(async move {
        let _ = g
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await;
    });
    (gateway, addr, stop, server)
}

/// A second gateway of a [`TestNet`], on the same database (see [`TestNet::replica`]).
pub struct Replica {
    pub gateway: Gateway,
    pub addr: SocketAddr,
    certs: CertsDir,
    clock: SharedClock,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Replica {
    /// This replica's URL.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// A node's link to this replica, with the organization's dev certificates.
    pub fn link(&self, org: &str) -> GatewayLink {
        let org = OrgId::parse(org).expect("org id");
        GatewayLink::new(&LinkConfig::from_certs_dir(self.url(), &self.certs, org), self.clock.clone()).expect("link")
    }

    /// Stops the replica and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

/// A web console on a free loopback port, plain HTTP, with a fictional help line: how test nodes and
/// the demo's nodes serve theirs.
pub fn loopback_console() -> haven_node::console::ConsoleConfig {
    haven_node::console::ConsoleConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: None,
        insecure_http: false,
        public_origin: None,
        help_phone: Some("+1 555 0100 (fictional)".into()),
        keep_scans: false,
    }
}

/// Makes each organization's sealing key at its node's database (`dir/nodes/<org>/node.db`, where
/// [`TestNode`] and a node process keep it) and registers it with the gateway at `url`, as an admin
/// running `haven-node keys init` before the node first serves would: senders can seal to every
/// organization from the start, and a node started later finds its key its own. An organization whose
/// node cannot connect (no pins) keeps its statement pending.
pub async fn provision_sealing_keys(dir: &Path, certs: &CertsDir, url: &str, clock: SharedClock) {
    let registry = haven_trust::registry::Registry::load(&policies_dir().join("orgs.toml"), None).expect("orgs.toml");
    let made = registry.iter().map(|o| {
        let (org, clock) = (o.id.clone(), clock.clone());
        async move {
            let node_dir = dir.join("nodes").join(org.as_str());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let store = haven_node::store::NodeStore::open(&node_dir.join("node.db").display().to_string())
                .await
                .expect("node database");
            let config = LinkConfig::from_certs_dir(url.to_owned(), certs, org.clone());
            let link = GatewayLink::new(&config, clock.clone()).expect("link");
            let folder = haven_node::sealing::KeyFolder::beside(&config.signing_key);
            haven_node::sealing::make(&store, &link, &clock, &folder, "ada", true).await.expect("a sealing key");
            store.pool().close().await;
        }
    });
    futures::future::join_all(made).await;
}

/// A node running in this process against a [`TestNet`], with people signed up.
pub struct TestNode {
    pub addr: SocketAddr,
    /// Where its web console listens (every test node serves one, on port 0).
    pub console: SocketAddr,
    pub state: Arc<haven_node::app::NodeState>,
    tokens: std::collections::HashMap<String, String>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestNet {
    /// Starts `org`'s node with the given people, on its own SQLite file.
    pub async fn node(&self, org: &str, people: &[(&str, haven_trust::ids::Role)]) -> TestNode {
        self.node_with_clock(org, people, Arc::new(SystemClock)).await
    }

    /// The same, with its console served as `console` says (for example keeping consent scans).
    pub async fn node_with_console(
        &self,
        org: &str,
        people: &[(&str, haven_trust::ids::Role)],
        console: haven_node::console::ConsoleConfig,
    ) -> TestNode {
        TestNode::start_with(self.dir.path(), &self.certs, self.url(), org, people, Arc::new(SystemClock), console)
            .await
    }

    /// The same, making no sealing key at start (as `haven-node serve --no-first-sealing-key`).
    pub async fn node_without_sealing_key(&self, org: &str, people: &[(&str, haven_trust::ids::Role)]) -> TestNode {
        TestNode::start_keyed(
            self.dir.path(),
            &self.certs,
            self.url(),
            org,
            people,
            Arc::new(SystemClock),
            loopback_console(),
            false,
        )
        .await
    }

    /// The same, with a given clock.
    pub async fn node_with_clock(
        &self,
        org: &str,
        people: &[(&str, haven_trust::ids::Role)],
        clock: SharedClock,
    ) -> TestNode {
        TestNode::start_at(self.dir.path(), &self.certs, self.url(), org, people, clock).await
    }
}

impl TestNode {
    /// Starts `org`'s node against the gateway at `url` (any gateway, for example a process), with the
    /// certificates in `certs` and its files in `dir/nodes/<org>`; the people are added to its database
    /// as `haven-node users add` adds them. Starting it again on the same `dir` reopens the same
    /// database (the people get new tokens, as `users add` of a person already there gives them).
    pub async fn start_at(
        dir: &Path,
        certs: &CertsDir,
        url: String,
        org: &str,
        people: &[(&str, haven_trust::ids::Role)],
        clock: SharedClock,
    ) -> TestNode {
        TestNode::start_with(dir, certs, url, org, people, clock, loopback_console()).await
    }

    /// [`TestNode::start_at`], with its console served as `console` says.
    pub async fn start_with(
        dir: &Path,
        certs: &CertsDir,
        url: String,
        org: &str,
        people: &[(&str, haven_trust::ids::Role)],
        clock: SharedClock,
        console: haven_node::console::ConsoleConfig,
    ) -> TestNode {
        TestNode::start_keyed(dir, certs, url, org, people, clock, console, true).await
    }

    /// [`TestNode::start_with`], making the organization's first sealing key at start or not.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_keyed(
        dir: &Path,
        certs: &CertsDir,
        url: String,
        org: &str,
        people: &[(&str, haven_trust::ids::Role)],
        clock: SharedClock,
        console: haven_node::console::ConsoleConfig,
        first_sealing_key: bool,
    ) -> TestNode {
        let org_id = OrgId::parse(org).expect("org id");
        let node_dir = dir.join("nodes").join(org);
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let config = haven_node::app::NodeConfig {
            first_sealing_key,
            link: LinkConfig::from_certs_dir(url, certs, org_id),
            database: node_dir.join("node.db").display().to_string(),
            users: node_dir.join("users.toml"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_tls: None,
            console: Some(console),
        };
        let node = haven_node::app::Node::open(config, clock).await.expect("node opens");
        let console = node.console().expect("the console is served").0;
        let state = node.state.clone();
        let mut tokens = std::collections::HashMap::new();
        for (name, role) in people {
            let name_id = haven_trust::ids::PersonId::parse(name).expect("person");
            let added = state.people.add(&name_id, *role, None).await.expect("person added");
            tokens.insert((*name).to_owned(), added.token);
        }
        let listener = node.bind().await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = node
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        TestNode { addr, console, state, tokens, stop: Some(stop), server: Some(server) }
    }
}

impl TestNode {
    /// A client of this node's API.
    pub async fn client(&self) -> haven_proto::v1::node_client::NodeClient<Channel> {
        haven_proto::v1::node_client::NodeClient::connect(format!("http://{}", self.addr)).await.expect("node client")
    }

    /// The console's URL (`http://127.0.0.1:PORT`), which is also its origin.
    pub fn console_url(&self) -> String {
        format!("http://{}", self.console)
    }

    /// Gives `person` a password, as `haven-node users passwd` does.
    pub async fn set_password(&self, person: &str, password: &str) {
        let name = haven_trust::ids::PersonId::parse(person).expect("person");
        let password = haven_node::password::Password::parse(password).expect("a valid password");
        self.state.passwords.set(&name, &password).await.expect("password set");
    }

    /// Enrolls `person` in the console's second factor with a new secret, as the demo does; returns
    /// the secret (to make codes with [`haven_node::totp::code`]).
    pub async fn enroll_second_factor(&self, person: &str) -> Vec<u8> {
        let name = haven_trust::ids::PersonId::parse(person).expect("person");
        let secret = haven_node::totp::new_secret();
        haven_node::totp::SecondFactor::new(self.state.store.clone(), self.state.clock.clone())
            .enroll_directly(&name, &secret)
            .await
            .expect("enrolled");
        secret
    }

    /// `person`'s node token, for clients that sign in themselves (the CLI).
    pub fn token(&self, person: &str) -> &str {
        self.tokens.get(person).unwrap_or_else(|| panic!("no person {person} on this node"))
    }

    /// A request signed in as `person`.
    pub fn as_person<T>(&self, person: &str, msg: T) -> tonic::Request<T> {
        let token = self.tokens.get(person).unwrap_or_else(|| panic!("no person {person} on this node"));
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        req
    }

    /// Stops the node and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}
