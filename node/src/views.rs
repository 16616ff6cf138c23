//! Reporting views to the gateway. Every `viewed` row of the node's access log ([`crate::access`]) is
//! sent to the gateway (`Gateway.ReportViews`) in a batch signed with the organization's signing key,
//! and retried until the gateway answers for it; the gateway writes each to the audit trail as a
//! `viewed` entry asserted by this organization. Views are reported late rather than never.

use haven_proto::v1::ReportViewsRequest;
use haven_proto::v1::gateway_client::GatewayClient;
use haven_trust::clock::SharedClock;
use haven_trust::ids::{PersonId, Role};
use haven_trust::views::{MAX_VIEWS_PER_BATCH, ViewBatch, ViewRecord};
use sqlx::Row;
use tonic::Status;

use crate::link::GatewayLink;
use crate::store::{NodeStore, status as db};

/// What one report did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reported {
    pub stored: usize,
    pub refused: usize,
}

/// Sends the views not yet reported (a batch at most) and marks those the gateway answered for.
pub async fn report_pending(store: &NodeStore, link: &GatewayLink, clock: &SharedClock) -> Result<Reported, Status> {
    let rows = sqlx::query("SELECT view_id, at_micros, person, role, message_id, subject, fields FROM access_log WHERE action = 'viewed' AND reported_at_micros IS NULL AND view_id <> '' ORDER BY id LIMIT $1")
        .bind(i64::try_from(MAX_VIEWS_PER_BATCH).unwrap_or(100))
        .fetch_all(store.pool())
        .await
        .map_err(db)?;
    if rows.is_empty() {
        return Ok(Reported::default());
    }
    let mut views = Vec::with_capacity(rows.len());
    for r in &rows {
        let fields: String = r.try_get("fields").map_err(db)?;
        views.push(ViewRecord {
            view_id: r.try_get("view_id").map_err(db)?,
            at_micros: r.try_get("at_micros").map_err(db)?,
            person: r.try_get("person").map_err(db)?,
            role: r.try_get("role").map_err(db)?,
            message_id: r.try_get("message_id").map_err(db)?,
            subject: r.try_get("subject").map_err(db)?,
            fields: fields.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
        });
    }
    let batch = ViewBatch { org: link.signer().org().clone(), views };
    let jws = link.signer().sign(&batch).map_err(|e| Status::internal(e.to_string()))?;
    let mut gw = GatewayClient::new(link.channel());
    let answer = gw
        .report_views(link.request(&PersonId::node(), Role::Node, ReportViewsRequest { batch_jws: jws })?)
        .await
        .map_err(|s| link.relay(s))?
        .into_inner();
    let now = clock.now_micros();
    let mut tx = store.pool().begin().await.map_err(db)?;
    let answered = answer
        .stored
        .iter()
        .map(|id| (id.as_str(), ""))
        .chain(answer.refused.iter().map(|r| (r.view_id.as_str(), r.reason.as_str())));
    for (view_id, refusal) in answered {
        sqlx::query("UPDATE access_log SET reported_at_micros = $1, report_refusal = $2 WHERE view_id = $3 AND action = 'viewed'")
            .bind(now)
            .bind(refusal)
            .bind(view_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    for r in &answer.refused {
        tracing::warn!(view_id = %r.view_id, reason = %r.reason, "the gateway refused a view record");
    }
    Ok(Reported { stored: answer.stored.len(), refused: answer.refused.len() })
}

/// Reports views every few seconds until `shutdown`, and at once after each batch that was full.
pub async fn run(
    store: NodeStore,
    link: GatewayLink,
    clock: SharedClock,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    while crate::actions::next_round(&mut tick, &mut shutdown).await {
        loop {
            match report_pending(&store, &link, &clock).await {
                Ok(r) if r.stored + r.refused >= MAX_VIEWS_PER_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e.message(), "views not reported yet; retrying");
                    break;
                }
            }
        }
    }
}
