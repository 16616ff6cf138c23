//! The gateway's and a node's trust files at start-up and on reload: a CRL that is empty, foreign or
//! older than one accepted before is refused (across restarts too); a key that is not its
//! certificate's, or a certificate in the wrong place, stops the process with the file named; a
//! refused reload is logged and audited and changes nothing; and a reload whose audit entry cannot be
//! written changes nothing either.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use haven_gateway::app::{Gateway, StartError};
use haven_gateway::config::Config;
use haven_node::link::{GatewayLink, LinkConfig, LinkError};
use haven_tests::net::{Db, TestNet, copy_policies, db, fresh_database, policies_dir};
use haven_trust::audit::AuditEntry;
use haven_trust::clock::SystemClock;
use haven_trust::ids::OrgId;
use haven_trust::pki::{CertsDir, PkiError};

fn org(id: &str) -> OrgId {
    OrgId::parse(id).unwrap()
}

/// Every audit entry the gateway has written so far.
async fn entries(net: &TestNet) -> Vec<AuditEntry> {
    let pool = net.gateway.store().pool();
    let size = haven_gateway::audit::size(pool).await.unwrap();
    haven_gateway::audit::read_range(pool, 0, size).await.unwrap()
}

/// The `trust_reload_rejected` entries' reasons, in order.
async fn trust_refusals(net: &TestNet) -> Vec<String> {
    entries(net).await.into_iter().filter(|e| e.action == "trust_reload_rejected").map(|e| e.reason).collect()
}

/// A gateway configuration over an existing certificate directory and database.
fn config(certs: &Path, database: &str) -> Config {
    let mut config = Config::new(certs.to_owned(), policies_dir(), database.to_owned());
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

/// Opens a second gateway on `net`'s files, as a restart would.
async fn restart(net: &TestNet) -> Result<Gateway, StartError> {
    Gateway::open(config(&net.certs.0, &net.database), Arc::new(SystemClock)).await
}

fn revoked_count(net: &TestNet) -> usize {
    net.gateway.trust().revoked_serials.len()
}

#[tokio::test]
async fn an_emptied_crl_is_refused_on_reload_and_at_start_and_the_revocation_holds() {
    let net = TestNet::start().await;
    haven_certs::revoke(net.certs.0.as_path(), &org("maple-house"), haven_certs::CertKind::Tls).unwrap();
    net.gateway.reload(None).await.expect("the new CRL is accepted");
    assert_eq!(revoked_count(&net), 1);

    std::fs::write(net.certs.crl(), b"").unwrap();
    let err = net.gateway.reload(None).await.expect_err("an empty CRL file is refused");
    assert!(matches!(err, StartError::Pki(PkiError::EmptyCrl { .. })), "{err}");
    assert!(err.to_string().contains("crl.pem"), "names the file: {err}");
    assert_eq!(revoked_count(&net), 1, "the revocation still holds");
    assert_eq!(trust_refusals(&net).await, ["crl_empty"]);

    // A file with no PEM block at all is the same thing.
    std::fs::write(net.certs.crl(), b"not a CRL\n").unwrap();
    assert!(matches!(net.gateway.reload(None).await, Err(StartError::Pki(PkiError::EmptyCrl { .. }))));

    let err = restart(&net).await.err().expect("a restart with an empty CRL is refused");
    assert!(matches!(err, StartError::Pki(PkiError::EmptyCrl { .. })), "{err}");
    net.stop().await;
}

#[tokio::test]
async fn an_older_or_missing_crl_is_refused_on_reload_and_after_a_restart() {
    let net = TestNet::start().await;
    let old = std::fs::read(net.certs.crl()).unwrap();
    haven_certs::revoke(net.certs.0.as_path(), &org("maple-house"), haven_certs::CertKind::Tls).unwrap();
    net.gateway.reload(None).await.expect("the new CRL is accepted");
    let newest = std::fs::read(net.certs.crl()).unwrap();

    std::fs::write(net.certs.crl(), &old).unwrap();
    let err = net.gateway.reload(None).await.expect_err("an older CRL is refused");
    assert!(matches!(err, StartError::CrlOlder { .. }), "{err}");
    assert!(err.to_string().contains("older than the one this gateway accepted"), "{err}");
    assert_eq!(revoked_count(&net), 1, "the revocation still holds");
    let err = restart(&net).await.err().expect("a restart with an older CRL is refused");
    assert!(matches!(err, StartError::CrlOlder { .. }), "{err}");

    std::fs::remove_file(net.certs.crl()).unwrap();
    let err = net.gateway.reload(None).await.expect_err("a missing CRL is refused once one was accepted");
    assert!(matches!(err, StartError::CrlMissing { .. }), "{err}");
    let err = restart(&net).await.err().expect("a restart without the CRL is refused");
    assert!(matches!(err, StartError::CrlMissing { .. }), "{err}");
    assert_eq!(trust_refusals(&net).await, ["crl_older", "crl_missing"]);

    // The newest one is accepted again.
    std::fs::write(net.certs.crl(), &newest).unwrap();
    net.gateway.reload(None).await.expect("the newest CRL reloads");
    assert_eq!(revoked_count(&net), 1);
    net.stop().await;
}

#[tokio::test]
async fn a_crl_the_network_ca_did_not_sign_or_bad_der_is_refused_and_audited() {
    let net = TestNet::start().await;
    // Another development network: its CA has the same name, but not the same key.
    let other = tempfile::tempdir().unwrap();
    haven_certs::init(&policies_dir().join("orgs.toml"), other.path(), false).unwrap();
    haven_certs::revoke(other.path(), &org("maple-house"), haven_certs::CertKind::Tls).unwrap();
    std::fs::copy(CertsDir(other.path().to_owned()).crl(), net.certs.crl()).unwrap();
    let err = net.gateway.reload(None).await.expect_err("a foreign CRL is refused");
    assert!(matches!(err, StartError::Pki(PkiError::ForeignCrl { .. })), "{err}");
    assert_eq!(revoked_count(&net), 0);

    std::fs::write(net.certs.crl(), "-----BEGIN X509 CRL-----\nAAAAAAAA\n-----END X509 CRL-----\n").unwrap();
    let err = net.gateway.reload(None).await.expect_err("bad DER is refused");
    assert!(err.to_string().contains("crl.pem"), "names the file: {err}");
    assert_eq!(trust_refusals(&net).await, ["crl_not_the_cas", "crl_malformed"]);
    net.stop().await;
}

#[tokio::test]
async fn a_junk_tls_key_refuses_the_reload_names_the_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_policies(&policies);
    let net = TestNet::start_with(policies.clone(), Arc::new(SystemClock)).await;
    let before = net.gateway.bundle().version_id().to_owned();
    // A changed bundle that would be accepted, beside a junk key.
    let purposes = policies.join("purposes.toml");
    let text = std::fs::read_to_string(&purposes).unwrap();
    std::fs::write(&purposes, format!("{text}\n# reviewed again\n")).unwrap();
    let key = net.certs.gateway_tls_key();
    let good_key = std::fs::read(&key).unwrap();
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n").unwrap();
    let err = net.gateway.reload(None).await.expect_err("a junk key is refused");
    assert!(err.to_string().contains("tls.key"), "names the file: {err}");
    assert_eq!(net.gateway.bundle().version_id(), before, "nothing changed, the bundle included");
    assert_eq!(trust_refusals(&net).await, ["file_malformed"]);

    // Another party's key beside the gateway's certificate.
    std::fs::copy(net.certs.org_tls_key(&org("harbor")), &key).unwrap();
    let err = net.gateway.reload(None).await.expect_err("a mismatched key is refused");
    assert!(matches!(err, StartError::Pki(PkiError::KeyMismatch { .. })), "{err}");

    std::fs::write(&key, good_key).unwrap();
    let (old, new) = net.gateway.reload(None).await.expect("the good key reloads");
    assert_eq!(old, before);
    assert_ne!(new, before, "and the waiting bundle with it");
    net.stop().await;
}

/// Makes every insert into the audit log fail, as a database that cannot be written would, until
/// [`database_back`] is called.
async fn database_down(net: &TestNet) {
    let pool = net.gateway.store().pool();
    let statements: &[&str] = match db() {
        Db::Sqlite => &[
            "CREATE TRIGGER test_database_down BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'the database is down for this test'); END",
        ],
        Db::Postgres => &[
            "CREATE FUNCTION test_database_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the database is down for this test'; END $$",
            "CREATE TRIGGER test_database_down BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION test_database_down()",
        ],
    };
    for s in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*s)).execute(pool).await.unwrap();
    }
}

async fn database_back(net: &TestNet) {
    let sql = match db() {
        Db::Sqlite => "DROP TRIGGER test_database_down",
        Db::Postgres => "DROP TRIGGER test_database_down ON audit_log",
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(net.gateway.store().pool()).await.unwrap();
}

#[tokio::test]
async fn a_reload_whose_audit_entry_cannot_be_written_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_policies(&policies);
    let net = TestNet::start_with(policies.clone(), Arc::new(SystemClock)).await;
    let before = net.gateway.bundle().version_id().to_owned();
    let purposes = policies.join("purposes.toml");
    let text = std::fs::read_to_string(&purposes).unwrap();
    std::fs::write(&purposes, format!("{text}\n# reviewed again\n")).unwrap();
    haven_certs::revoke(net.certs.0.as_path(), &org("maple-house"), haven_certs::CertKind::Tls).unwrap();

    database_down(&net).await;
    let err = net.gateway.reload(None).await.expect_err("no audit entry, no reload");
    assert!(matches!(err, StartError::Store(_)), "{err}");
    assert_eq!(net.gateway.bundle().version_id(), before, "the bundle did not change");
    assert_eq!(revoked_count(&net), 0, "nor did the CRL");

    database_back(&net).await;
    let (old, new) = net.gateway.reload(None).await.expect("reloads once the database is back");
    assert_eq!(old, before);
    assert_eq!(net.gateway.bundle().version_id(), new);
    assert_eq!(revoked_count(&net), 1);
    let reloaded: Vec<_> = entries(&net).await.into_iter().filter(|e| e.action == "policy_reloaded").collect();
    assert_eq!(reloaded.len(), 1, "exactly the reload that took effect is recorded");
    net.stop().await;
}

/// A fresh development network's certificate directory, and a database for a gateway on it.
async fn fresh_network() -> (tempfile::TempDir, CertsDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertsDir(dir.path().join("certs"));
    haven_certs::init(&policies_dir().join("orgs.toml"), &certs.0, false).unwrap();
    let database = fresh_database(dir.path()).await;
    (dir, certs, database)
}

#[tokio::test]
async fn the_gateway_refuses_to_start_with_identity_files_that_do_not_match() {
    let (_dir, certs, database) = fresh_network().await;
    let open = || Gateway::open(config(&certs.0, &database), Arc::new(SystemClock));
    let harbor = org("harbor");

    // A signing key that is not the signing certificate's.
    let signing_key = std::fs::read(certs.gateway_signing_key()).unwrap();
    std::fs::copy(certs.org_signing_key(&harbor), certs.gateway_signing_key()).unwrap();
    let err = open().await.err().expect("a mismatched signing key stops the start");
    assert!(matches!(err, StartError::Pki(PkiError::KeyMismatch { .. })), "{err}");
    assert!(err.to_string().contains("signing.key is not the private key of"), "{err}");
    std::fs::write(certs.gateway_signing_key(), signing_key).unwrap();

    // An organization's TLS certificate (with its own key) in the gateway's place.
    let (tls_crt, tls_key) =
        (std::fs::read(certs.gateway_tls_cert()).unwrap(), std::fs::read(certs.gateway_tls_key()).unwrap());
    std::fs::copy(certs.org_tls_cert(&harbor), certs.gateway_tls_cert()).unwrap();
    std::fs::copy(certs.org_tls_key(&harbor), certs.gateway_tls_key()).unwrap();
    let err = open().await.err().expect("an organization's certificate is not the gateway's");
    assert!(matches!(err, StartError::Pki(PkiError::WrongHolder { .. })), "{err}");
    assert!(err.to_string().contains("haven://org/harbor"), "{err}");

    // The gateway's signing certificate and key as its TLS identity.
    std::fs::copy(certs.gateway_signing_cert(), certs.gateway_tls_cert()).unwrap();
    std::fs::copy(certs.gateway_signing_key(), certs.gateway_tls_key()).unwrap();
    let err = open().await.err().expect("a signing certificate cannot serve TLS");
    assert!(matches!(err, StartError::Pki(PkiError::WrongPurpose { .. })), "{err}");
    assert!(err.to_string().contains("serverAuth"), "{err}");

    std::fs::write(certs.gateway_tls_cert(), tls_crt).unwrap();
    std::fs::write(certs.gateway_tls_key(), tls_key).unwrap();
    open().await.expect("the right files start");
}

#[tokio::test]
async fn a_node_refuses_mismatched_identity_files_and_a_cleartext_gateway() {
    let (_dir, certs, _database) = fresh_network().await;
    let harbor = org("harbor");
    let good = LinkConfig::from_certs_dir("https://localhost:7443".into(), &certs, harbor.clone());
    let clock = Arc::new(SystemClock);
    assert!(GatewayLink::new(&good, clock.clone()).is_ok());

    let http = LinkConfig { gateway_url: "http://localhost:7443".into(), ..good.clone() };
    let err = GatewayLink::new(&http, clock.clone()).err().expect("http is refused");
    assert!(matches!(err, LinkError::NotHttps(_)), "{err}");
    assert!(err.to_string().contains("must use https://"), "{err}");
    for url in ["grpc://localhost:7443", "localhost:7443", "https://"] {
        let other = LinkConfig { gateway_url: url.into(), ..good.clone() };
        assert!(GatewayLink::new(&other, clock.clone()).is_err(), "{url} is refused");
    }

    let mismatched = LinkConfig { signing_key: certs.org_signing_key(&org("maple-house")), ..good.clone() };
    let err = GatewayLink::new(&mismatched, clock.clone()).err().expect("another organization's signing key");
    assert!(matches!(err, LinkError::Identity(PkiError::KeyMismatch { .. })), "{err}");

    let other_org = LinkConfig {
        tls_cert: certs.org_tls_cert(&org("maple-house")),
        tls_key: certs.org_tls_key(&org("maple-house")),
        ..good.clone()
    };
    let err = GatewayLink::new(&other_org, clock.clone()).err().expect("another organization's certificate");
    assert!(matches!(err, LinkError::Identity(PkiError::WrongHolder { .. })), "{err}");

    let swapped = LinkConfig {
        tls_cert: good.signing_cert.clone(),
        tls_key: good.signing_key.clone(),
        signing_cert: good.tls_cert.clone(),
        signing_key: good.tls_key.clone(),
        ..good.clone()
    };
    let err = GatewayLink::new(&swapped, clock).err().expect("signing and TLS swapped");
    assert!(matches!(err, LinkError::Identity(PkiError::WrongPurpose { .. })), "{err}");
}

/// A setting the gateway cannot run with stops the start before anything is opened, with every such
/// setting named and how to set it; so does a certificate or policy folder that does not exist.
#[tokio::test]
async fn the_gateway_refuses_to_start_with_a_setting_out_of_range_or_a_missing_folder() {
    let (dir, certs, database) = fresh_network().await;
    let mut bad = config(&certs.0, &database);
    bad.max_message_bytes = 0;
    bad.request_timeout = std::time::Duration::ZERO;
    let err = Gateway::open(bad, Arc::new(SystemClock)).await.err().expect("a zero message limit stops the start");
    assert!(matches!(err, StartError::Config(_)), "{err}");
    assert_eq!(err.code(), "config_invalid");
    let text = err.to_string();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("max_message_bytes = 0 is out of range: it must be from 65536 to 268435456 bytes (default 4194304); set it with --max-message-bytes, HAVEN_MAX_MESSAGE_BYTES or `max_message_bytes` in --config"), "{text}");
    assert!(text.contains("request_timeout_secs = 0 is out of range"), "{text}");

    let missing = dir.path().join("no-such-policies");
    let mut bad = config(&certs.0, &database);
    bad.policies = missing.clone();
    let err = Gateway::open(bad, Arc::new(SystemClock)).await.err().expect("a missing policy folder stops the start");
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
    assert!(
        err.to_string().starts_with(&format!("--policies {}: the folder does not exist", missing.display())),
        "{err}"
    );

    Gateway::open(config(&certs.0, &database), Arc::new(SystemClock)).await.expect("the defaults start");
}

/// A database the gateway cannot migrate stops the start in the server's own words: on PostgreSQL its
/// message, SQLSTATE code, detail and hint, never `at line N` (a line of PostgreSQL's C source, which
/// means nothing to an operator).
#[tokio::test]
async fn a_database_error_reads_as_the_servers_message_code_detail_and_hint() {
    use haven_gateway::store::{Store, StoreError};
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let conflicting = "CREATE TABLE audit_log (something_else INTEGER)";
    match db() {
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&database).await.unwrap();
            sqlx::raw_sql(conflicting).execute(&mut conn).await.unwrap();
        }
        Db::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{database}?mode=rwc")).await.unwrap();
            sqlx::raw_sql(conflicting).execute(&mut conn).await.unwrap();
        }
    }
    let err = Store::open(&database).await.expect_err("the first migration cannot create audit_log");
    let text = err.to_string();
    assert!(text.starts_with("migration 1 (audit_log) failed: "), "{text}");
    assert!(text.contains("already exists"), "{text}");
    if db() == Db::Sqlite {
        return;
    }
    assert!(text.ends_with("PostgreSQL: relation \"audit_log\" already exists (SQLSTATE 42P07)"), "{text}");

    let other = fresh_database(dir.path()).await;
    let store = Store::open(&other).await.unwrap();
    let failed = |e: sqlx::Error| StoreError::Sql(e).to_string();
    let e = sqlx::query("SELECT no_such_function(1)").execute(store.pool()).await.unwrap_err();
    let text = failed(e);
    assert!(
        text.starts_with("database error: PostgreSQL: function no_such_function(integer) does not exist (SQLSTATE 42883); hint: No function matches"),
        "{text}"
    );
    let e = sqlx::query(
        "INSERT INTO haven_migrations (version, name, checksum, applied_at_micros) VALUES (1, 'x', 'x', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap_err();
    let text = failed(e);
    assert!(text.contains("(SQLSTATE 23505, table haven_migrations, constraint haven_migrations_pkey); detail: Key (version)=(1) already exists."), "{text}");
    assert!(!text.contains(" at line "), "{text}");
    store.close().await;
}
