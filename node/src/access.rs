//! The node's access log: what the organization's own people did at their node. Every time survivor
//! data is shown to a person (a received message's fields, in the console or by `referral show`), a
//! `viewed` row names the person, their role, the message, the recipient-scoped pseudonym and the
//! field names shown, never the values. Assignments of received referrals, each keeping and opening
//! of a signed consent form's scan, sign-ins, failed sign-ins, sign-ins made to wait and sign-outs are
//! kept here too, and the console's sign-in limits count the failures.

use sqlx::{Row, SqliteConnection};

use crate::people::Person;

/// How much of a name given at a failed sign-in is kept (it may be anything).
const GIVEN_NAME_CHARS: usize = 64;

/// A name given at sign-in, as kept: its first [`GIVEN_NAME_CHARS`] characters.
fn given(name: &str) -> String {
    name.chars().take(GIVEN_NAME_CHARS).collect()
}

/// Where a person acted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The node's gRPC API (the command line).
    Api,
    /// The web console, from this client address.
    Console(String),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Api => "api".into(),
            Source::Console(address) => format!("console {address}"),
        }
    }

    fn address(&self) -> &str {
        match self {
            Source::Api => "",
            Source::Console(address) => address,
        }
    }
}

/// Survivor data shown to a person: which message, whose (the pseudonym) and which fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub message_id: String,
    pub subject: String,
    pub fields: Vec<String>,
}

/// A row of the access log, as the console and tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub at_micros: i64,
    pub person: String,
    pub role: String,
    pub action: String,
    pub message_id: String,
    pub subject: String,
    pub fields: Vec<String>,
    pub source: String,
}

/// Records that `shown` was shown to `who`, in the caller's transaction (so a view is kept with
/// whatever the same action changed, or not at all).
pub async fn viewed(
    conn: &mut SqliteConnection,
    who: &Person,
    shown: &[Shown],
    source: &Source,
    now: i64,
) -> Result<(), sqlx::Error> {
    for s in shown {
        sqlx::query("INSERT INTO access_log (at_micros, person, role, action, message_id, subject, fields, source, address, view_id) VALUES ($1, $2, $3, 'viewed', $4, $5, $6, $7, $8, $9)")
            .bind(now)
            .bind(who.name.as_str())
            .bind(who.role.as_str())
            .bind(&s.message_id)
            .bind(&s.subject)
            .bind(s.fields.join(","))
            .bind(source.label())
            .bind(source.address())
            .bind(uuid::Uuid::new_v4().to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Records that `who` assigned a received message to `to` ('' for nobody), in the caller's transaction.
pub async fn assigned(
    conn: &mut SqliteConnection,
    who: &Person,
    message_id: &str,
    to: &str,
    source: &Source,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO access_log (at_micros, person, role, action, message_id, source, address, detail) VALUES ($1, $2, $3, 'assigned', $4, $5, $6, $7)")
        .bind(now)
        .bind(who.name.as_str())
        .bind(who.role.as_str())
        .bind(message_id)
        .bind(source.label())
        .bind(source.address())
        .bind(to)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records that `who` kept (`scan_kept`) or opened (`scan_opened`) the scan of consent `consent_id`'s
/// signed form, in the caller's transaction.
pub async fn consent_scan(
    conn: &mut SqliteConnection,
    who: &Person,
    action: &'static str,
    consent_id: &str,
    source: &Source,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO access_log (at_micros, person, role, action, source, address, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(now)
        .bind(who.name.as_str())
        .bind(who.role.as_str())
        .bind(action)
        .bind(source.label())
        .bind(source.address())
        .bind(consent_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a sign-in event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    SignedIn,
    /// A wrong password, an unknown name, or a disabled person: counted by the sign-in limits.
    Failed,
    /// Refused before any check because the name or the address must wait; not counted, so trying
    /// during the wait does not make it longer.
    Waited,
    SignedOut,
}

impl SignIn {
    fn as_str(self) -> &'static str {
        match self {
            SignIn::SignedIn => "signed_in",
            SignIn::Failed => "sign_in_failed",
            SignIn::Waited => "sign_in_waited",
            SignIn::SignedOut => "signed_out",
        }
    }
}

/// Records a sign-in, a failed one (under the name given, cut short) or a sign-out.
pub async fn sign_in(
    conn: &mut SqliteConnection,
    name: &str,
    role: &str,
    event: SignIn,
    source: &Source,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO access_log (at_micros, person, role, action, source, address) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now)
    .bind(given(name))
    .bind(role)
    .bind(event.as_str())
    .bind(source.label())
    .bind(source.address())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Failed sign-ins counted by one name or one address since `since`: how many, and when the oldest
/// was (a wait ends when it leaves the window).
pub async fn failures(
    conn: &mut SqliteConnection,
    counted: Counted,
    key: &str,
    since: i64,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    let (sql, key) = match counted {
        Counted::Name => (
            "SELECT COUNT(*), MIN(at_micros) FROM access_log WHERE person = $1 AND action = 'sign_in_failed' AND at_micros >= $2",
            given(key),
        ),
        Counted::Address => (
            "SELECT COUNT(*), MIN(at_micros) FROM access_log WHERE address = $1 AND action = 'sign_in_failed' AND at_micros >= $2",
            key.to_owned(),
        ),
    };
    sqlx::query_as(sql).bind(key).bind(since).fetch_one(&mut *conn).await
}

/// What failed sign-ins are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Name,
    Address,
}

/// The newest rows of the access log about one message, newest first.
pub async fn of_message(conn: &mut SqliteConnection, message_id: &str) -> Result<Vec<Access>, sqlx::Error> {
    let rows = sqlx::query("SELECT at_micros, person, role, action, message_id, subject, fields, source FROM access_log WHERE message_id = $1 ORDER BY id DESC LIMIT 200")
        .bind(message_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(access).collect()
}

/// The newest rows of the access log, newest first.
pub async fn recent(conn: &mut SqliteConnection, limit: i64) -> Result<Vec<Access>, sqlx::Error> {
    let rows = sqlx::query("SELECT at_micros, person, role, action, message_id, subject, fields, source FROM access_log ORDER BY id DESC LIMIT $1")
        .bind(limit.clamp(1, 1000))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(access).collect()
}

fn access(r: &sqlx::sqlite::SqliteRow) -> Result<Access, sqlx::Error> {
    let fields: String = r.try_get("fields")?;
    Ok(Access {
        at_micros: r.try_get("at_micros")?,
        person: r.try_get("person")?,
        role: r.try_get("role")?,
        action: r.try_get("action")?,
        message_id: r.try_get("message_id")?,
        subject: r.try_get("subject")?,
        fields: fields.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
        source: r.try_get("source")?,
    })
}
