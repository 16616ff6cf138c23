//! The audit_log table and its `audit_head` row: appending entries in the caller's transaction, with
//! gap-free positions in commit order, and reading them back as their leaves see them (see `audit`
//! for the Merkle tree over them).

use haven_trust::audit::{AuditEntry, Encoding};
use sqlx::Row;

use super::dialect::insert_many;
use super::{StoreError, Tx};

/// Appends entries in the caller's transaction and returns the first assigned `seq`.
///
/// `seq` comes from the single `audit_head` row, which stays locked until the transaction ends: if the
/// transaction rolls back, neither the entries nor their positions exist; if it commits, both do, and
/// positions are gap-free in commit order. The string beside each entry is the subject as the
/// counterparty knows it (its recipient-scoped pseudonym), for that counterparty's privacy officer: it
/// becomes the entry's `counterparty_subject`, which the leaf binds. Every entry is written with the
/// newest encoding.
pub async fn append(tx: &mut Tx<'_>, entries: &mut [(AuditEntry, String)]) -> Result<u64, StoreError> {
    append_encoded(tx, entries, Encoding::default()).await
}

/// [`append`] with the leaves built in `encoding`. The gateway writes only the newest; an older one
/// reproduces the entries an earlier gateway wrote, for the tests that check they still verify.
pub async fn append_encoded(
    tx: &mut Tx<'_>,
    entries: &mut [(AuditEntry, String)],
    encoding: Encoding,
) -> Result<u64, StoreError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let n = i64::try_from(entries.len()).unwrap_or(i64::MAX);
    let row = sqlx::query("UPDATE audit_head SET next_seq = next_seq + $1 WHERE id = 1 RETURNING next_seq")
        .bind(n)
        .fetch_one(&mut **tx)
        .await?;
    let end: i64 = row.try_get(0)?;
    let first = end - n;
    for (i, (entry, counterparty_subject)) in entries.iter_mut().enumerate() {
        entry.seq = u64::try_from(first + i as i64).unwrap_or(0);
        entry.counterparty_subject.clone_from(counterparty_subject);
        entry.encoding_version = encoding;
    }
    // One multi-row INSERT per chunk: the round trips, not the rows, are what an append costs.
    insert_many(tx, INSERT_HEAD, INSERT_COLUMNS, &*entries, |q, (entry, _)| {
        q.bind(i64::try_from(entry.seq).unwrap_or(i64::MAX))
            .bind(entry.time_micros)
            .bind(entry.actor_org.as_str())
            .bind(entry.actor_person.as_str())
            .bind(entry.actor_role.as_str())
            .bind(entry.action.as_str())
            .bind(entry.object_id.as_str())
            .bind(entry.counterparty.as_str())
            .bind(entry.subject.as_str())
            .bind(entry.purpose.as_str())
            .bind(entry.consent_id.as_str())
            .bind(list(&entry.rule_ids))
            .bind(entry.bundle_version.as_str())
            .bind(entry.decision.as_str())
            .bind(entry.reason.as_str())
            .bind(list(&entry.released_fields))
            .bind(list(&entry.withheld_fields))
            .bind(entry.outcome.as_str())
            .bind(entry.correlation_id.as_str())
            .bind(entry.source_node.as_str())
            .bind(entry.counterparty_subject.as_str())
            .bind(i64::from(entry.encoding_version.version()))
            .bind(entry.leaf_hash().to_vec())
    })
    .await?;
    Ok(u64::try_from(first).unwrap_or(0))
}

/// The columns of an `audit_log` row, in the order [`append`] binds them.
const INSERT_HEAD: &str = "INSERT INTO audit_log (seq, time_micros, actor_org, actor_person, actor_role, action, object_id, counterparty, subject, purpose, consent_id, rule_ids, bundle_version, decision, reason, released_fields, withheld_fields, outcome, correlation_id, source_node, counterparty_subject, encoding_version, leaf_hash) VALUES";
const INSERT_COLUMNS: usize = 23;
/// Appends one entry with no counterparty-scoped subject.
pub async fn append_one(tx: &mut Tx<'_>, entry: AuditEntry) -> Result<u64, StoreError> {
    append(tx, &mut [(entry, String::new())]).await
}

/// Lists are stored as JSON arrays of strings.
fn list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Reads a stored list back.
pub fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// Reads entries `[from, to)` in order, as stored.
pub async fn read_range(pool: &sqlx::AnyPool, from: u64, to: u64) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq"
    )))
    .bind(i64::try_from(from).unwrap_or(i64::MAX))
    .bind(i64::try_from(to).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

/// The columns [`entry_from_row`] reads.
pub const ENTRY_COLUMNS: &str = "seq, time_micros, actor_org, actor_person, actor_role, action, object_id, counterparty, subject, purpose, consent_id, rule_ids, bundle_version, decision, reason, released_fields, withheld_fields, outcome, correlation_id, source_node, counterparty_subject, encoding_version";

/// Decodes an `audit_log` row as its leaf sees it: an entry of encoding version 2 is read without the
/// `counterparty_subject` stored beside it, which its leaf does not bind.
pub fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEntry, StoreError> {
    let s = |name: &str| -> Result<String, StoreError> { Ok(row.try_get::<String, _>(name)?) };
    let version: i64 = row.try_get("encoding_version")?;
    let encoding =
        u8::try_from(version).ok().and_then(Encoding::of_version).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "encoding_version".into(),
            source: format!("{version} is not an entry encoding this gateway knows (2, 3)").into(),
        })?;
    Ok(AuditEntry {
        seq: u64::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(0),
        time_micros: row.try_get("time_micros")?,
        actor_org: s("actor_org")?,
        actor_person: s("actor_person")?,
        actor_role: s("actor_role")?,
        action: s("action")?,
        object_id: s("object_id")?,
        counterparty: s("counterparty")?,
        subject: s("subject")?,
        purpose: s("purpose")?,
        consent_id: s("consent_id")?,
        rule_ids: parse_list(&s("rule_ids")?),
        bundle_version: s("bundle_version")?,
        decision: s("decision")?,
        reason: s("reason")?,
        released_fields: parse_list(&s("released_fields")?),
        withheld_fields: parse_list(&s("withheld_fields")?),
        outcome: s("outcome")?,
        correlation_id: s("correlation_id")?,
        source_node: s("source_node")?,
        counterparty_subject: if encoding.binds_counterparty_subject() {
            s("counterparty_subject")?
        } else {
            String::new()
        },
        encoding_version: encoding,
    })
}

/// How many entries the log holds.
pub async fn size(pool: &sqlx::AnyPool) -> Result<u64, StoreError> {
    let row = sqlx::query("SELECT next_seq FROM audit_head WHERE id = 1").fetch_one(pool).await?;
    Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
}

/// The entries of a subject access report for `controller`'s subject `subject`, in seq order: the
/// controller's queued submissions, cancellations, expiries and withdrawal notices about the subject,
/// and the recipients' deliveries of those submissions' messages (see `audit::query::disclosures`).
pub async fn disclosures(pool: &sqlx::AnyPool, controller: &str, subject: &str) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE (actor_org = $1 AND subject = $2 AND ((action = 'submitted' AND outcome = 'queued') OR action IN ('cancelled', 'expired', 'withdrawal_notified'))) OR (action IN ('delivered', 'viewed') AND counterparty = $1 AND outcome <> 'refused' AND object_id IN (SELECT object_id FROM audit_log WHERE actor_org = $1 AND subject = $2 AND action = 'submitted' AND outcome = 'queued' AND object_id <> '')) ORDER BY seq"
    )))
    .bind(controller)
    .bind(subject)
    .fetch_all(pool)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

/// A column an audit query may match exactly.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Column {
    ActorPerson,
    Action,
    Decision,
    ObjectId,
    ConsentId,
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::ActorPerson => "actor_person",
            Column::Action => "action",
            Column::Decision => "decision",
            Column::ObjectId => "object_id",
            Column::ConsentId => "consent_id",
        }
    }
}

/// A value bound to a query.
enum Bind {
    Int(i64),
    Text(String),
}

/// A read of audit entries by seq range and conditions, each added with `AND`: a WHERE clause with
/// `$N` placeholders and the values to bind.
pub(crate) struct Select {
    sql: String,
    binds: Vec<Bind>,
}

impl Select {
    /// Entries with `from_seq <= seq < to_seq` (no upper bound without `to_seq`).
    pub(crate) fn new(from_seq: u64, to_seq: Option<u64>) -> Self {
        let mut s = Select { sql: String::from("WHERE 1 = 1"), binds: Vec::new() };
        let from = s.bind(Bind::Int(i64::try_from(from_seq).unwrap_or(i64::MAX)));
        s.and(format!("seq >= {from}"));
        if let Some(to) = to_seq {
            let to = s.bind(Bind::Int(i64::try_from(to).unwrap_or(i64::MAX)));
            s.and(format!("seq < {to}"));
        }
        s
    }

    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    fn and(&mut self, clause: String) {
        self.sql.push_str(" AND ");
        self.sql.push_str(&clause);
    }

    /// Written at or after `micros`.
    pub(crate) fn time_from(&mut self, micros: i64) {
        let t = self.bind(Bind::Int(micros));
        self.and(format!("time_micros >= {t}"));
    }

    /// Written before `micros`.
    pub(crate) fn time_until(&mut self, micros: i64) {
        let t = self.bind(Bind::Int(micros));
        self.and(format!("time_micros < {t}"));
    }

    /// `org` is the actor or the counterparty.
    pub(crate) fn involving(&mut self, org: &str) {
        let o = self.bind(Bind::Text(org.to_owned()));
        self.and(format!("(actor_org = {o} OR counterparty = {o})"));
    }

    /// `org` is the actor.
    pub(crate) fn actor(&mut self, org: &str) {
        let o = self.bind(Bind::Text(org.to_owned()));
        self.and(format!("actor_org = {o}"));
    }

    /// `column` holds `value`.
    pub(crate) fn equals(&mut self, column: Column, value: &str) {
        let v = self.bind(Bind::Text(value.to_owned()));
        self.and(format!("{} = {v}", column.name()));
    }

    /// The subject is `subject` (as its controller knows it).
    pub(crate) fn subject(&mut self, subject: &str) {
        let s = self.bind(Bind::Text(subject.to_owned()));
        self.and(format!("subject = {s}"));
    }

    /// The subject is `subject` as `org` is shown it: its own pseudonym in its own entries, the one it
    /// was given (the counterparty subject) in others' entries.
    pub(crate) fn subject_seen_by(&mut self, org: &str, subject: &str) {
        let o = self.bind(Bind::Text(org.to_owned()));
        let s = self.bind(Bind::Text(subject.to_owned()));
        self.and(format!("((actor_org = {o} AND subject = {s}) OR (actor_org <> {o} AND counterparty_subject = {s}))"));
    }

    /// At most `limit` entries, in seq order, each with its `counterparty_subject` as stored (which an
    /// entry of encoding 2 is read without).
    pub(crate) async fn fetch(
        mut self,
        pool: &sqlx::AnyPool,
        limit: u32,
    ) -> Result<Vec<(AuditEntry, String)>, StoreError> {
        let limit_param = self.bind(Bind::Int(i64::from(limit)));
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM audit_log {} ORDER BY seq LIMIT {limit_param}", self.sql);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in self.binds {
            q = match b {
                Bind::Int(i) => q.bind(i),
                Bind::Text(t) => q.bind(t),
            };
        }
        let rows = q.fetch_all(pool).await?;
        rows.iter().map(|row| Ok((entry_from_row(row)?, row.try_get::<String, _>("counterparty_subject")?))).collect()
    }
}

/// Whether a `viewed` record with this id from `org` is already in the log.
pub async fn view_recorded(pool: &sqlx::AnyPool, org: &str, view_id: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'viewed' AND actor_org = $1 AND correlation_id = $2",
    )
    .bind(org)
    .bind(view_id)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Whether `org` already reported an integrity failure of message `message_id` from `sender`.
pub async fn integrity_failure_recorded(
    pool: &sqlx::AnyPool,
    org: &str,
    message_id: &str,
    sender: &str,
) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'integrity_failure' AND actor_org = $1 AND object_id = $2 AND counterparty = $3",
    )
    .bind(org)
    .bind(message_id)
    .bind(sender)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}
