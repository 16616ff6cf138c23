//! The queue's limits and bad frames: the per-(sender, recipient) quota, delivery expiry with an
//! injected clock, and acknowledgements a node must not be able to make.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use haven_proto::v1::gateway_client::GatewayClient;
use haven_proto::v1::*;
use haven_tests::fixtures::{self, DAY, consent_request, record_consent, text};
use haven_tests::net::{TestNet, TestNode, copy_policies, policies_dir};
use haven_trust::clock::{Clock, ManualClock, SharedClock, SystemClock};
use haven_trust::ids::{PersonId, Role};
use sqlx::Row;
use tonic::Code;

async fn consent(node: &TestNode, clock: &dyn Clock) -> (String, String) {
    let labels = ["identifying", "contact", "operational"];
    record_consent(node, consent_request(&["housing"], &["shelter"], &labels, clock.now_micros() + 90 * DAY)).await
}

fn referral(subject: &str, consent: &str) -> Envelope {
    let mut env = fixtures::referral("maple-house", "housing", subject, consent);
    env.fields = HashMap::from([("urgency".into(), text("low")), ("safe_to_contact_by".into(), text("phone_call"))]);
    env
}

async fn send(node: &TestNode, env: Envelope) -> SendResponse {
    fixtures::send(node, "casey", env).await.unwrap()
}

#[tokio::test]
async fn beyond_the_quota_a_recipient_is_refused_and_nothing_queued_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_policies(&policies);
    let network = std::fs::read_to_string(policies.join("network.toml")).unwrap();
    std::fs::write(policies.join("network.toml"), network.replace("queue_quota = 10000", "queue_quota = 2")).unwrap();
    let net = TestNet::start_with(policies, Arc::new(SystemClock)).await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (c, s) = consent(&harbor, &SystemClock).await;
    for _ in 0..2 {
        let r = send(&harbor, referral(&s, &c)).await;
        assert_eq!(r.outcomes[0].outcome, recipient_outcome::Outcome::Queued as i32);
    }
    let r = send(&harbor, referral(&s, &c)).await;
    assert_eq!(r.outcomes[0].outcome, recipient_outcome::Outcome::QuotaExceeded as i32);
    assert_eq!(r.outcomes[0].decision.as_ref().unwrap().reason_code, "quota_exceeded");
    let pending = sqlx::query("SELECT COUNT(*) FROM outbox WHERE org = 'maple-house' AND state = 'pending'")
        .fetch_one(net.gateway.store().pool())
        .await
        .unwrap()
        .get::<i64, _>(0);
    assert_eq!(pending, 2, "the queued copies stay");
    harbor.stop().await;
    net.stop().await;
}

#[tokio::test]
async fn an_undelivered_copy_expires_after_the_ttl_and_the_sender_sees_it() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = Arc::new(clock.clone());
    let net = TestNet::start_with(policies_dir(), shared.clone()).await;
    let harbor = net.node_with_clock("harbor", &[("casey", Role::Caseworker)], shared.clone()).await;
    let (c, s) = consent(&harbor, &clock).await;
    let sent = send(&harbor, referral(&s, &c)).await;
    assert_eq!(net.gateway.expire_deliveries().await.unwrap(), 0, "not yet");
    clock.advance_secs(31 * 86_400);
    assert_eq!(net.gateway.expire_deliveries().await.unwrap(), 1);
    let payload =
        sqlx::query("SELECT state, length(payload) FROM outbox WHERE org = 'maple-house' AND item_kind = 'delivery'")
            .fetch_one(net.gateway.store().pool())
            .await
            .unwrap();
    assert_eq!(payload.get::<String, _>(0), "expired");
    assert_eq!(payload.get::<i64, _>(1), 0, "the payload is gone with the expiry");
    // The subject access report says the copy was queued, then expired: it never reached its recipient.
    let report = haven_gateway::audit::query::disclosures(
        net.gateway.store().pool(),
        "harbor",
        &s,
        haven_gateway::audit::query::NamesShown::All,
    )
    .await
    .unwrap();
    let fate: Vec<(&str, &str, &str)> =
        report.iter().map(|d| (d.action.as_str(), d.recipient.as_str(), d.message_id.as_str())).collect();
    assert_eq!(
        fate,
        vec![("queued", "maple-house", sent.message_id.as_str()), ("expired", "maple-house", sent.message_id.as_str())]
    );
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = harbor
                .client()
                .await
                .get_message(harbor.as_person("casey", GetMessageRequest { message_id: sent.message_id.clone() }))
                .await
                .unwrap()
                .into_inner();
            let r = m.sent.unwrap().recipients.remove(0);
            if r.status == MessageStatus::Expired as i32 {
                return r;
            }
            let mut w = harbor
                .client()
                .await
                .watch_inbox(harbor.as_person("casey", InboxRequest::default()))
                .await
                .unwrap()
                .into_inner();
            let _ = tokio::time::timeout(Duration::from_millis(500), w.message()).await;
        }
    })
    .await
    .expect("the sender learns of the expiry within 20 s");
    assert_eq!(status.reason, "ttl");
    harbor.stop().await;
    net.stop().await;
}

/// Opens `org`'s delivery stream by hand and returns the sender of frames and the inbound stream.
async fn raw_stream(
    net: &TestNet,
    org: &str,
) -> (tokio::sync::mpsc::Sender<NodeFrame>, tonic::Streaming<GatewayFrame>) {
    let link = net.link(org);
    let (tx, rx) = tokio::sync::mpsc::channel::<NodeFrame>(8);
    let req = link.request(&PersonId::node(), Role::Node, tokio_stream::wrappers::ReceiverStream::new(rx)).unwrap();
    let stream = GatewayClient::new(link.channel()).deliveries(req).await.unwrap().into_inner();
    (tx, stream)
}

async fn closed_with(mut stream: tonic::Streaming<GatewayFrame>) -> tonic::Status {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("closed without a status"),
                Err(s) => return s,
            }
        }
    })
    .await
    .expect("the stream closes within 10 s")
}

#[tokio::test]
async fn acknowledgements_for_unknown_foreign_or_malformed_items_and_empty_frames_close_the_stream() {
    let net = TestNet::start().await;
    let harbor = net.node("harbor", &[("casey", Role::Caseworker)]).await;
    let (c, s) = consent(&harbor, &SystemClock).await;
    send(&harbor, referral(&s, &c)).await;
    let maple_item: String = sqlx::query("SELECT item_id FROM outbox WHERE org = 'maple-house'")
        .fetch_one(net.gateway.store().pool())
        .await
        .unwrap()
        .get(0);
    harbor.stop().await;

    let (tx, stream) = raw_stream(&net, "northstar").await;
    tx.send(NodeFrame { frame: Some(node_frame::Frame::Ack(Ack { item_id: uuid::Uuid::now_v7().to_string() })) })
        .await
        .unwrap();
    assert_eq!(closed_with(stream).await.code(), Code::NotFound);

    let (tx, stream) = raw_stream(&net, "northstar").await;
    tx.send(NodeFrame { frame: Some(node_frame::Frame::Ack(Ack { item_id: maple_item.clone() })) }).await.unwrap();
    assert_eq!(closed_with(stream).await.code(), Code::PermissionDenied);

    let (tx, stream) = raw_stream(&net, "northstar").await;
    tx.send(NodeFrame { frame: None }).await.unwrap();
    assert_eq!(closed_with(stream).await.code(), Code::InvalidArgument);

    // Not an item id at all (with a NUL byte PostgreSQL would refuse to store): refused before it
    // reaches a shared commit, where it would fail the other acknowledgements and submissions in it.
    let (tx, stream) = raw_stream(&net, "northstar").await;
    tx.send(NodeFrame { frame: Some(node_frame::Frame::Ack(Ack { item_id: "not-an-item\0".into() })) }).await.unwrap();
    let status = closed_with(stream).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("is not an item id"), "{status:?}");

    let still = sqlx::query("SELECT state FROM outbox WHERE item_id = $1")
        .bind(maple_item.as_str())
        .fetch_one(net.gateway.store().pool())
        .await
        .unwrap()
        .get::<String, _>(0);
    assert_eq!(still, "pending", "a foreign acknowledgement changes nothing");
    net.stop().await;
}

/// On PostgreSQL every session of the gateway plans each statement for the values it is given: a
/// generic plan kept from the statistics of a nearly empty table could scan a whole table long after
/// it has grown (`store::postgres_session`).
#[tokio::test]
async fn every_postgres_session_plans_each_statement_for_its_values() {
    use haven_gateway::store::Store;
    use haven_tests::net::{Db, db, fresh_database};

    if db() != Db::Postgres {
        eprintln!("skipped: a PostgreSQL setting; run with HAVEN_TEST_DB=postgres");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database(dir.path()).await).await.unwrap();
    // Two connections held at once are two sessions.
    let mut first = store.pool().acquire().await.unwrap();
    let mut second = store.pool().acquire().await.unwrap();
    for conn in [&mut first, &mut second] {
        let mode: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&mut **conn).await.unwrap();
        assert_eq!(mode, "force_custom_plan");
    }
    let own: i64 = sqlx::query_scalar("SELECT pg_backend_pid()::bigint").fetch_one(&mut *first).await.unwrap();
    let other: i64 = sqlx::query_scalar("SELECT pg_backend_pid()::bigint").fetch_one(&mut *second).await.unwrap();
    assert_ne!(own, other, "two sessions");
}

/// A stream's read of what it may send next walks the `outbox_pending` index even when the
/// statistics were taken while much of the queue was pending. A plan that walked the primary key
/// instead would pass every acknowledged item of every organization before the first pending one.
#[tokio::test]
async fn a_stream_reads_only_covered_items_through_its_index_whatever_the_statistics_say() {
    use haven_gateway::routing::queue;
    use haven_gateway::store::Store;
    use haven_tests::net::{Db, db, fresh_database};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database(dir.path()).await).await.unwrap();
    let postgres = db() == Db::Postgres;
    let empty = if postgres { "''::bytea" } else { "x''" };
    // 20,000 items of ten organizations, the newest 6,000 pending when the statistics are taken.
    let mut tx = store.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO outbox (item_id, org, item_kind, payload, queued_at_micros, expires_at_micros, state) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         SELECT 'item-' || (100000 + i), 'org' || (i % 10), 'delivery', {empty}, i, i + 1000000, \
                CASE WHEN i > 14000 THEN 'pending' ELSE 'acked' END FROM n"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(if postgres { "ANALYZE outbox" } else { "ANALYZE" }).execute(&mut *tx).await.unwrap();
    // Then all but the newest 100 are acknowledged: ten pending for each organization.
    sqlx::query("UPDATE outbox SET state = 'acked' WHERE item_id <= 'item-119900'").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    let plan: Vec<String> = if postgres {
        // The plan a prepared statement settles on, made without the parameters' values.
        let mut conn = store.pool().acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&mut *conn).await.unwrap();
        sqlx::query("SET plan_cache_mode = force_generic_plan").execute(&mut *conn).await.unwrap();
        let prepare = format!("PREPARE pending_read(text, text, bigint, bigint) AS {}", queue::SENDABLE_POSTGRES);
        sqlx::query(sqlx::AssertSqlSafe(prepare)).execute(&mut *conn).await.unwrap();
        let rows =
            sqlx::query("EXPLAIN EXECUTE pending_read('org3', '[]', 0, 64)").fetch_all(&mut *conn).await.unwrap();
        sqlx::query("DEALLOCATE pending_read").execute(&mut *conn).await.unwrap();
        // Back to the gateway's own setting, not the server's default.
        sqlx::query(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}"))).execute(&mut *conn).await.unwrap();
        rows.iter().map(|r| r.get::<String, _>(0)).collect()
    } else {
        let explain = format!("EXPLAIN QUERY PLAN {}", queue::SENDABLE_SQLITE);
        let query = sqlx::query(sqlx::AssertSqlSafe(explain)).bind("org3").bind("[]").bind(0_i64).bind(64_i64);
        let rows = query.fetch_all(store.pool()).await.unwrap();
        rows.iter().map(|r| r.get::<String, _>("detail")).collect()
    };
    let plan = plan.join("\n");
    let index = if postgres { "outbox_pending_c" } else { "outbox_pending" };
    assert!(plan.contains(index), "the read does not use {index}:\n{plan}");
    let sorts = ["outbox_pkey", "TEMP B-TREE", "Sort"];
    assert!(!sorts.iter().any(|s| plan.contains(s)), "the read walks the primary key or sorts:\n{plan}");

    // And it reads the right items: org3's ten pending ones, oldest first, less those passed over.
    let expected: Vec<String> = (19903..=20000).step_by(10).map(|i| format!("item-{}", 100000 + i)).collect();
    let read = |skip: Vec<String>| {
        let store = &store;
        async move {
            let items = queue::sendable(store, "org3", &skip, 100, 64).await.unwrap();
            store.settle(items).await.unwrap().into_iter().map(|p| p.item_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(read(vec![]).await, expected);
    assert_eq!(read(vec![expected[0].clone(), expected[4].clone()]).await, [&expected[1..4], &expected[5..]].concat());

    // Items under a consent go out only while it covers them (the read is at time 100): given and
    // within its window, or renewed; not past its window, revoked, not on record, or another
    // organization's (a consent covers only its controller's sends).
    let mut tx = store.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO consents (consent_id, controller, subject, receipt_jws, receipt_json, content_sha256, valid_from_micros, valid_until_micros, state, registered_at_micros, state_changed_at_micros) VALUES \
         ('c-given', 'org0', 'subject-a', '', '{}', 'h1', 0, 1000, 'given', 0, 0), \
         ('c-lapsed', 'org0', 'subject-b', '', '{}', 'h2', 0, 100, 'given', 0, 0), \
         ('c-renewed', 'org0', 'subject-c', '', '{}', 'h3', 0, 50, 'superseded', 0, 0), \
         ('c-revoked', 'org0', 'subject-d', '', '{}', 'h4', 0, 1000, 'revoked', 0, 0)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let under = [
        ("c-given", "org0"),
        ("c-lapsed", "org0"),
        ("c-renewed", "org0"),
        ("c-revoked", "org0"),
        ("c-unknown", "org0"),
        ("c-given", "org1"),
    ];
    for (item, (consent, sender)) in expected.iter().zip(under) {
        sqlx::query("UPDATE outbox SET consent_id = $1, sender = $2 WHERE item_id = $3")
            .bind(consent)
            .bind(sender)
            .bind(item.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let covered: Vec<String> = [0, 2, 6, 7, 8, 9].iter().map(|&i| expected[i].clone()).collect();
    assert_eq!(read(vec![]).await, covered);
}
