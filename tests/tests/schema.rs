//! The storage contract is one contract on both databases: the SQLite and the PostgreSQL migration lists
//! end in the same schema, table by table, but for the differences listed in [`ALLOWED`], each with its
//! reason.
//!
//! It runs with the PostgreSQL suite (`HAVEN_TEST_DB=postgres`, as `.ci/run` does), where both databases
//! are migrated and read back from their catalogs; the SQLite suite needs nothing beside the checkout,
//! so there it says it is skipped.
//!
//! Compared, per table: its columns (a common type, nullability as enforced, default), primary key,
//! unique constraints, foreign keys, the number of CHECK constraints (the dialects print expressions
//! differently, so only the count is compared), indexes other than those backing a constraint
//! (columns in order, descending columns, explicit collations, uniqueness, whether partial), triggers by
//! name and the events they guard; and, beside the tables, views, sequences, functions and types.
//! Engine internals are left out: SQLite's `sqlite_*` tables, and on PostgreSQL everything outside the
//! gateway's schema. `haven_migrations` is compared like the others: one statement in `migrate.rs`
//! creates it on both.

use std::collections::BTreeMap;
use std::path::Path;

use haven_gateway::store::Store;
use haven_tests::net::{Db, fresh_database_on};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row, SqliteConnection};

/// A difference between the dialects' schemas that is meant, and why. It must match a difference
/// exactly (table, what, both sides as the failure message prints them), and it must still occur.
struct Allowed {
    table: &'static str,
    what: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    why: &'static str,
}

/// The "table" of objects that belong to no table: functions, sequences, views, types.
const SCHEMA: &str = "(schema)";

const SINGLE_ROW_KEY: &str = "the key of a single-row table, held to 1 by CHECK (id = 1): INTEGER PRIMARY KEY \
    makes it SQLite's 64-bit rowid and PostgreSQL's INTEGER is 32 bits, which never matters for the value 1";
const SQLITE_NULLABLE_KEY: &str = "SQLite lets a PRIMARY KEY column of a rowid table hold NULL unless it is \
    declared NOT NULL (kept from its early versions); PostgreSQL's keys are NOT NULL. The gateway always binds \
    a value there, and SQLite can add NOT NULL only by rebuilding the table (audit_log is append-only). New \
    tables declare their key columns NOT NULL on SQLite";
const PENDING_ORDER: &str = "PostgreSQL reads a stream's pending items ordered by item_id in the \"C\" collation, an \
    order only outbox_pending_c gives, so the read keeps its plan whatever the statistics say (migrations 6 \
    and 7); SQLite compares text bytewise already and keeps outbox_pending";
const ONE_EVENT_PER_SQLITE_TRIGGER: &str = "a SQLite trigger fires on one event, so SQLite refuses UPDATE and \
    DELETE with a trigger each, where PostgreSQL's one trigger fires on UPDATE OR DELETE; the table's trigger \
    events show that both refuse both";
const TRUNCATE: &str = "PostgreSQL's TRUNCATE fires no row trigger, so a statement trigger refuses it; SQLite has \
    no TRUNCATE, and its DELETE without WHERE fires the DELETE trigger (SQLite does not truncate a table with \
    triggers)";
const TRIGGER_FUNCTION: &str = "a PostgreSQL trigger calls a function, where a SQLite trigger holds its body";

/// Every difference between the dialects' schemas that is meant. Any other fails the test.
const ALLOWED: &[Allowed] = &[
    // The single-row tables' keys.
    Allowed {
        table: "audit_head",
        what: "column id",
        sqlite: "integer not null",
        postgres: "integer32 not null",
        why: SINGLE_ROW_KEY,
    },
    Allowed {
        table: "merkle_head",
        what: "column id",
        sqlite: "integer not null",
        postgres: "integer32 not null",
        why: SINGLE_ROW_KEY,
    },
    Allowed {
        table: "accepted_crl",
        what: "column id",
        sqlite: "integer not null",
        postgres: "integer32 not null",
        why: SINGLE_ROW_KEY,
    },
    // Primary keys that SQLite does not hold NOT NULL.
    Allowed {
        table: "haven_migrations",
        what: "column version",
        sqlite: "integer nullable",
        postgres: "integer not null",
        why: SQLITE_NULLABLE_KEY,
    },
    Allowed {
        table: "audit_log",
        what: "column seq",
        sqlite: "integer nullable",
        postgres: "integer not null",
        why: SQLITE_NULLABLE_KEY,
    },
    Allowed {
        table: "consents",
        what: "column consent_id",
        sqlite: "text nullable",
        postgres: "text not null",
        why: SQLITE_NULLABLE_KEY,
    },
    Allowed {
        table: "deliveries",
        what: "column delivery_id",
        sqlite: "text nullable",
        postgres: "text not null",
        why: SQLITE_NULLABLE_KEY,
    },
    Allowed {
        table: "outbox",
        what: "column item_id",
        sqlite: "text nullable",
        postgres: "text not null",
        why: SQLITE_NULLABLE_KEY,
    },
    Allowed {
        table: "stream_leases",
        what: "column org",
        sqlite: "text nullable",
        postgres: "text not null",
        why: SQLITE_NULLABLE_KEY,
    },
    // The queue's pending-items index.
    Allowed {
        table: "outbox",
        what: "index outbox_pending",
        sqlite: "(org, state, item_id)",
        postgres: "absent",
        why: PENDING_ORDER,
    },
    Allowed {
        table: "outbox",
        what: "index outbox_pending_c",
        sqlite: "absent",
        postgres: "(org, state, item_id COLLATE \"C\")",
        why: PENDING_ORDER,
    },
    // The append-only triggers: the audit log.
    Allowed {
        table: "audit_log",
        what: "trigger audit_log_no_delete",
        sqlite: "present",
        postgres: "absent",
        why: ONE_EVENT_PER_SQLITE_TRIGGER,
    },
    Allowed {
        table: "audit_log",
        what: "trigger audit_log_no_truncate",
        sqlite: "absent",
        postgres: "present",
        why: TRUNCATE,
    },
    Allowed {
        table: "audit_log",
        what: "trigger events",
        sqlite: "BEFORE DELETE, BEFORE UPDATE",
        postgres: "BEFORE DELETE, BEFORE TRUNCATE, BEFORE UPDATE",
        why: TRUNCATE,
    },
    // The Merkle tree's subtrees.
    Allowed {
        table: "merkle_node",
        what: "trigger merkle_node_no_delete",
        sqlite: "present",
        postgres: "absent",
        why: ONE_EVENT_PER_SQLITE_TRIGGER,
    },
    Allowed {
        table: "merkle_node",
        what: "trigger merkle_node_no_truncate",
        sqlite: "absent",
        postgres: "present",
        why: TRUNCATE,
    },
    Allowed {
        table: "merkle_node",
        what: "trigger events",
        sqlite: "BEFORE DELETE, BEFORE UPDATE",
        postgres: "BEFORE DELETE, BEFORE TRUNCATE, BEFORE UPDATE",
        why: TRUNCATE,
    },
    // The signed checkpoints.
    Allowed {
        table: "audit_checkpoint",
        what: "trigger audit_checkpoint_no_delete",
        sqlite: "present",
        postgres: "absent",
        why: ONE_EVENT_PER_SQLITE_TRIGGER,
    },
    Allowed {
        table: "audit_checkpoint",
        what: "trigger audit_checkpoint_no_truncate",
        sqlite: "absent",
        postgres: "present",
        why: TRUNCATE,
    },
    Allowed {
        table: "audit_checkpoint",
        what: "trigger events",
        sqlite: "BEFORE DELETE, BEFORE UPDATE",
        postgres: "BEFORE DELETE, BEFORE TRUNCATE, BEFORE UPDATE",
        why: TRUNCATE,
    },
    // The tree's size, which only moves forward.
    Allowed {
        table: "merkle_head",
        what: "trigger merkle_head_no_delete",
        sqlite: "present",
        postgres: "absent",
        why: ONE_EVENT_PER_SQLITE_TRIGGER,
    },
    Allowed {
        table: "merkle_head",
        what: "trigger merkle_head_no_truncate",
        sqlite: "absent",
        postgres: "present",
        why: TRUNCATE,
    },
    Allowed {
        table: "merkle_head",
        what: "trigger events",
        sqlite: "BEFORE DELETE, BEFORE UPDATE",
        postgres: "BEFORE DELETE, BEFORE TRUNCATE, BEFORE UPDATE",
        why: TRUNCATE,
    },
    // The functions PostgreSQL's triggers call.
    Allowed {
        table: SCHEMA,
        what: "function audit_log_refuse",
        sqlite: "absent",
        postgres: "plpgsql",
        why: TRIGGER_FUNCTION,
    },
    Allowed {
        table: SCHEMA,
        what: "function merkle_refuse",
        sqlite: "absent",
        postgres: "plpgsql",
        why: TRIGGER_FUNCTION,
    },
    Allowed {
        table: SCHEMA,
        what: "function merkle_head_forward_only",
        sqlite: "absent",
        postgres: "plpgsql",
        why: TRIGGER_FUNCTION,
    },
    Allowed {
        table: "key_log",
        what: "trigger key_log_no_delete",
        sqlite: "present",
        postgres: "absent",
        why: ONE_EVENT_PER_SQLITE_TRIGGER,
    },
    Allowed {
        table: "key_log",
        what: "trigger key_log_no_truncate",
        sqlite: "absent",
        postgres: "present",
        why: TRUNCATE,
    },
    Allowed {
        table: "key_log",
        what: "trigger events",
        sqlite: "BEFORE DELETE, BEFORE UPDATE",
        postgres: "BEFORE DELETE, BEFORE TRUNCATE, BEFORE UPDATE",
        why: TRUNCATE,
    },
    Allowed {
        table: "key_log_checkpoint",
        what: "trigger key_log_checkpoint_no_delete",
        sqlite: "present",
        postgres: "absent",
        why: ONE_EVENT_PER_SQLITE_TRIGGER,
    },
    Allowed {
        table: "key_log_checkpoint",
        what: "trigger key_log_checkpoint_no_truncate",
        sqlite: "absent",
        postgres: "present",
        why: TRUNCATE,
    },
    Allowed {
        table: "key_log_checkpoint",
        what: "trigger events",
        sqlite: "BEFORE DELETE, BEFORE UPDATE",
        postgres: "BEFORE DELETE, BEFORE TRUNCATE, BEFORE UPDATE",
        why: TRUNCATE,
    },
    Allowed {
        table: SCHEMA,
        what: "function key_log_refuse",
        sqlite: "absent",
        postgres: "plpgsql",
        why: TRIGGER_FUNCTION,
    },
];

/// SQLite's declared column types (upper-cased), by the common type they store. INTEGER and BIGINT
/// both have INTEGER affinity and hold 64-bit integers, as PostgreSQL's BIGINT does. BLOB holds bytes as
/// given, as BYTEA does. SQLite has no boolean: a BOOLEAN column holds 0 or 1.
const SQLITE_TYPES: &[(&str, &str)] =
    &[("TEXT", "text"), ("INTEGER", "integer"), ("BIGINT", "integer"), ("BLOB", "bytes"), ("BOOLEAN", "boolean")];

/// PostgreSQL's column types (`pg_type.typname`), by the common type. INTEGER (int4) is 32 bits, so it
/// is kept apart from the 64-bit integers: a column narrower on PostgreSQL than on SQLite shows.
const POSTGRES_TYPES: &[(&str, &str)] =
    &[("text", "text"), ("int8", "integer"), ("int4", "integer32"), ("bytea", "bytes"), ("bool", "boolean")];

#[tokio::test]
async fn sqlite_and_postgres_migrations_end_in_the_same_schema() {
    if haven_tests::net::db() != Db::Postgres {
        println!("SKIPPED: compares against PostgreSQL; run with HAVEN_TEST_DB=postgres");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = fresh_database_on(Db::Sqlite, dir.path()).await;
    let postgres_url = fresh_database_on(Db::Postgres, dir.path()).await;
    for url in [&sqlite_url, &postgres_url] {
        let store = Store::open(url).await.unwrap_or_else(|e| panic!("migrating {url}: {e}"));
        store.close().await;
    }
    let sqlite = sqlite_schema(Path::new(&sqlite_url)).await;
    let postgres = postgres_schema(&postgres_url).await;
    assert!(sqlite.contains_key("audit_log") && postgres.contains_key("audit_log"), "the migrations ran");

    let differences = differences(&sqlite, &postgres);
    let unexpected: Vec<&Difference> = differences.iter().filter(|d| !ALLOWED.iter().any(|a| d.is(a))).collect();
    let stale: Vec<&Allowed> = ALLOWED.iter().filter(|a| !differences.iter().any(|d| d.is(a))).collect();
    let mut report = String::new();
    if !unexpected.is_empty() {
        report += &format!(
            "the SQLite and PostgreSQL migrations end in schemas that differ in {} way(s) that ALLOWED does not \
             name; make the dialects agree with a new migration, or, if a difference is meant, add it to ALLOWED \
             with its reason:\n",
            unexpected.len()
        );
        for d in &unexpected {
            report += &format!("  {} | {} | sqlite: {} | postgres: {}\n", d.table, d.what, d.sqlite, d.postgres);
        }
    }
    if !stale.is_empty() {
        report += &format!("{} allowed difference(s) no longer occur; remove them from ALLOWED:\n", stale.len());
        for a in &stale {
            report += &format!(
                "  {} | {} | sqlite: {} | postgres: {} (allowed because {})\n",
                a.table, a.what, a.sqlite, a.postgres, a.why
            );
        }
    }
    for a in ALLOWED.iter().filter(|a| a.why.trim().len() < 20) {
        report += &format!("allowed difference {} | {} says too little about why it is meant\n", a.table, a.what);
    }
    assert!(report.is_empty(), "{report}");
}

/// A foreign key as SQLite lists it, one row per column.
struct ForeignKey {
    from: Vec<String>,
    to_table: String,
    to: Vec<String>,
    on_update: String,
    on_delete: String,
}

/// An index as PostgreSQL's catalog lists it, one row per key column.
struct Index {
    unique: bool,
    columns: Vec<String>,
    method: String,
    partial: bool,
}

/// One dialect's schema: per table (and [`SCHEMA`] for the rest), each aspect compared, such as
/// `column seq` or `index audit_log_actor`, with how it reads in the common terms.
type Schema = BTreeMap<String, BTreeMap<String, String>>;

/// One aspect of one table that reads differently on the two dialects; `absent` where a side lacks it.
#[derive(Debug)]
struct Difference {
    table: String,
    what: String,
    sqlite: String,
    postgres: String,
}

impl Difference {
    fn is(&self, a: &Allowed) -> bool {
        self.table == a.table && self.what == a.what && self.sqlite == a.sqlite && self.postgres == a.postgres
    }
}

/// Every difference, table by table. A table only one side has is one difference, its contents unlisted.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<Difference> {
    let absent = BTreeMap::new();
    let mut out = Vec::new();
    let tables: std::collections::BTreeSet<&String> = sqlite.keys().chain(postgres.keys()).collect();
    for table in tables {
        let (s, p) = (sqlite.get(table), postgres.get(table));
        if table != SCHEMA && (s.is_none() || p.is_none()) {
            let side = |t: Option<&BTreeMap<String, String>>| if t.is_some() { "present" } else { "absent" };
            out.push(Difference {
                table: table.clone(),
                what: "table".into(),
                sqlite: side(s).into(),
                postgres: side(p).into(),
            });
            continue;
        }
        let (s, p) = (s.unwrap_or(&absent), p.unwrap_or(&absent));
        let aspects: std::collections::BTreeSet<&String> = s.keys().chain(p.keys()).collect();
        for what in aspects {
            let (sv, pv) = (s.get(what), p.get(what));
            if sv != pv {
                let side = |v: Option<&String>| v.cloned().unwrap_or_else(|| "absent".into());
                out.push(Difference { table: table.clone(), what: what.clone(), sqlite: side(sv), postgres: side(pv) });
            }
        }
    }
    out
}

/// A column in the common terms: `text not null default ''`.
fn column(ty: String, not_null: bool, default: Option<String>) -> String {
    let null = if not_null { "not null" } else { "nullable" };
    match default {
        Some(d) => format!("{ty} {null} default {d}"),
        None => format!("{ty} {null}"),
    }
}

/// An index in the common terms: `unique (a, b DESC, c COLLATE "C") using hash partial`.
fn index(unique: bool, columns: &[String], method: &str, partial: bool) -> String {
    let mut out = format!("{}({})", if unique { "unique " } else { "" }, columns.join(", "));
    if method != "btree" {
        out += &format!(" using {method}");
    }
    if partial {
        out += " partial";
    }
    out
}

/// The words of SQL text outside string literals, quoted identifiers and comments, upper-cased.
fn sql_words(sql: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c.to_ascii_uppercase());
            continue;
        }
        if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        match c {
            '\'' | '"' | '`' => {
                // A doubled quote inside is two quoted runs back to back: skipping both is the same.
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '[' => for _ in chars.by_ref().take_while(|&d| d != ']') {},
            '-' if chars.peek() == Some(&'-') => for _ in chars.by_ref().take_while(|&d| d != '\n') {},
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                for d in chars.by_ref() {
                    if star && d == '/' {
                        break;
                    }
                    star = d == '*';
                }
            }
            _ => {}
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The timing and event of a SQLite trigger from its `CREATE TRIGGER` text: `BEFORE UPDATE`.
fn sqlite_trigger_event(sql: &str) -> String {
    let words = sql_words(sql);
    let Some(at) = words.iter().position(|w| matches!(w.as_str(), "DELETE" | "INSERT" | "UPDATE")) else {
        return format!("unreadable trigger: {sql}");
    };
    let timing = match at.checked_sub(1).map(|i| words[i].as_str()) {
        Some("AFTER") => "AFTER",
        Some("OF") => "INSTEAD OF",
        _ => "BEFORE",
    };
    format!("{timing} {}", words[at])
}

/// A common type for a dialect's type name, or one that names the unmapped type (and so differs).
fn common_type(map: &[(&str, &str)], dialect: &str, name: &str) -> String {
    map.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, common)| (*common).to_owned())
        .unwrap_or_else(|| format!("unmapped {dialect} type `{name}`"))
}

async fn sqlite_schema(path: &Path) -> Schema {
    let mut conn: SqliteConnection =
        SqliteConnectOptions::new().filename(path).read_only(true).connect().await.expect("open the SQLite database");
    let mut schema = Schema::new();
    schema.insert(SCHEMA.into(), BTreeMap::new());
    let relations = sqlx::query(
        "SELECT name, type, wr, strict FROM pragma_table_list WHERE schema = 'main' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut tables = Vec::new();
    for r in relations {
        let (name, kind): (String, String) = (r.get("name"), r.get("type"));
        if kind == "table" {
            tables.push((name, r.get::<i64, _>("wr") == 1, r.get::<i64, _>("strict") == 1));
        } else {
            schema.get_mut(SCHEMA).unwrap().insert(format!("{kind} {name}"), "present".into());
        }
    }
    for (table, without_rowid, strict) in tables {
        let mut aspects = BTreeMap::new();
        let columns =
            sqlx::query("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid")
                .bind(&table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let mut key: Vec<(i64, String)> =
            columns.iter().filter(|c| c.get::<i64, _>("pk") > 0).map(|c| (c.get("pk"), c.get("name"))).collect();
        key.sort();
        for c in &columns {
            let (name, declared): (String, String) = (c.get("name"), c.get("type"));
            let declared = declared.to_ascii_uppercase();
            let in_key = c.get::<i64, _>("pk") > 0;
            // SQLite enforces NOT NULL on a key column only when declared, in a WITHOUT ROWID or STRICT
            // table, or for INTEGER PRIMARY KEY, which is the rowid.
            let rowid = in_key && key.len() == 1 && declared == "INTEGER" && !without_rowid;
            let not_null = c.get::<i64, _>("notnull") == 1 || (in_key && (without_rowid || strict || rowid));
            let ty = common_type(SQLITE_TYPES, "SQLite", &declared);
            aspects.insert(format!("column {name}"), column(ty, not_null, c.get("dflt_value")));
        }
        let key: Vec<String> = key.into_iter().map(|(_, n)| n).collect();
        aspects
            .insert("primary key".into(), if key.is_empty() { "none".into() } else { format!("({})", key.join(", ")) });

        let indexes = sqlx::query("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?)")
            .bind(&table)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for i in indexes {
            let (name, origin): (String, String) = (i.get("name"), i.get("origin"));
            let columns: Vec<String> =
                sqlx::query("SELECT name, \"desc\", coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno")
                    .bind(&name)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|c| {
                        let mut col = c.get::<Option<String>, _>("name").unwrap_or_else(|| "<expression>".into());
                        if c.get::<String, _>("coll") != "BINARY" {
                            col += &format!(" COLLATE {}", c.get::<String, _>("coll"));
                        }
                        if c.get::<i64, _>("desc") == 1 {
                            col += " DESC";
                        }
                        col
                    })
                    .collect();
            match origin.as_str() {
                // The primary key's own index.
                "pk" => {}
                "u" => {
                    aspects.insert(format!("unique ({})", columns.join(", ")), "constraint".into());
                }
                _ => {
                    let rendered =
                        index(i.get::<i64, _>("unique") == 1, &columns, "btree", i.get::<i64, _>("partial") == 1);
                    aspects.insert(format!("index {name}"), rendered);
                }
            }
        }

        let foreign_keys = sqlx::query(
            "SELECT id, \"table\", \"from\", \"to\", on_update, on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(&table)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for f in foreign_keys {
            let e = by_id.entry(f.get("id")).or_insert_with(|| ForeignKey {
                from: Vec::new(),
                to_table: f.get("table"),
                to: Vec::new(),
                on_update: f.get("on_update"),
                on_delete: f.get("on_delete"),
            });
            e.from.push(f.get("from"));
            e.to.push(f.get::<Option<String>, _>("to").unwrap_or_else(|| "<its primary key>".into()));
        }
        for ForeignKey { from, to_table, to, on_update, on_delete } in by_id.into_values() {
            aspects.insert(
                format!("foreign key ({}) references {to_table} ({})", from.join(", "), to.join(", ")),
                format!("on update {on_update}, on delete {on_delete}"),
            );
        }

        let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?")
            .bind(&table)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let checks = sql_words(&sql).iter().filter(|w| *w == "CHECK").count();
        aspects.insert("check constraints".into(), checks.to_string());

        let triggers = sqlx::query("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?")
            .bind(&table)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let mut events = std::collections::BTreeSet::new();
        for t in triggers {
            aspects.insert(format!("trigger {}", t.get::<String, _>("name")), "present".into());
            events.insert(sqlite_trigger_event(&t.get::<String, _>("sql")));
        }
        aspects.insert("trigger events".into(), events.into_iter().collect::<Vec<_>>().join(", "));
        schema.insert(table, aspects);
    }
    conn.close().await.unwrap();
    schema
}

/// PostgreSQL's foreign key actions (`confupdtype`, `confdeltype`) in SQLite's words.
fn postgres_action(code: &str) -> String {
    match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        other => other,
    }
    .into()
}

/// A PostgreSQL column default with its cast dropped (`''::text` is `''`) and outer parentheses too.
fn postgres_default(d: String) -> String {
    let d = match d.rsplit_once("::") {
        Some((value, cast)) if cast.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '_') => value,
        _ => d.as_str(),
    };
    d.strip_prefix('(').and_then(|d| d.strip_suffix(')')).unwrap_or(d).to_owned()
}

/// The schema the gateway migrates into: the connection's current schema.
const IN_SCHEMA: &str = "current_schema()::text::regnamespace";

async fn postgres_schema(url: &str) -> Schema {
    let mut conn = PgConnection::connect(url).await.expect("connect to the PostgreSQL database");
    let mut schema = Schema::new();
    schema.insert(SCHEMA.into(), BTreeMap::new());
    let q = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql.replace("IN_SCHEMA", IN_SCHEMA)));

    let others = q("SELECT 'function ' || p.proname AS what, l.lanname::text AS how FROM pg_proc p \
                    JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = IN_SCHEMA \
                    UNION ALL SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' WHEN 'f' THEN 'foreign table ' \
                    ELSE 'view ' END || c.relname, 'present' FROM pg_class c \
                    WHERE c.relnamespace = IN_SCHEMA AND c.relkind IN ('S', 'v', 'm', 'f') \
                    UNION ALL SELECT 'type ' || t.typname, 'present' FROM pg_type t \
                    WHERE t.typnamespace = IN_SCHEMA AND t.typtype IN ('e', 'd', 'r', 'm')"
        .into())
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for o in others {
        schema.get_mut(SCHEMA).unwrap().insert(o.get("what"), o.get("how"));
    }

    let columns = q("SELECT c.relname::text AS table_name, a.attname::text AS name, t.typname::text AS type_name, \
                     a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default_value \
                     FROM pg_class c \
                     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                     JOIN pg_type t ON t.oid = a.atttypid \
                     LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
                     WHERE c.relnamespace = IN_SCHEMA AND c.relkind IN ('r', 'p')"
        .into())
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for c in columns {
        let aspects = schema.entry(c.get("table_name")).or_default();
        let ty = common_type(POSTGRES_TYPES, "PostgreSQL", &c.get::<String, _>("type_name"));
        let default = c.get::<Option<String>, _>("default_value").map(postgres_default);
        aspects.insert(format!("column {}", c.get::<String, _>("name")), column(ty, c.get("not_null"), default));
        aspects.entry("primary key".into()).or_insert_with(|| "none".into());
        aspects.entry("check constraints".into()).or_insert_with(|| "0".into());
        aspects.entry("trigger events".into()).or_default();
    }

    let columns_of = |key: &str, rel: &str| {
        format!(
            "(SELECT string_agg(a.attname::text, ', ' ORDER BY k.ord) FROM unnest(con.{key}) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = con.{rel} AND a.attnum = k.attnum)"
        )
    };
    let constraints = q(format!(
        "SELECT c.relname::text AS table_name, con.conname::text AS name, con.contype::text AS kind, \
         {} AS columns, r.relname::text AS referenced, {} AS referenced_columns, \
         con.confupdtype::text AS on_update, con.confdeltype::text AS on_delete \
         FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid LEFT JOIN pg_class r ON r.oid = con.confrelid \
         WHERE c.relnamespace = IN_SCHEMA AND con.contype <> 'n'",
        columns_of("conkey", "conrelid"),
        columns_of("confkey", "confrelid"),
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for k in constraints {
        let aspects = schema.entry(k.get("table_name")).or_default();
        let columns: String = k.get::<Option<String>, _>("columns").unwrap_or_default();
        match k.get::<String, _>("kind").as_str() {
            "p" => {
                aspects.insert("primary key".into(), format!("({columns})"));
            }
            "u" => {
                aspects.insert(format!("unique ({columns})"), "constraint".into());
            }
            "f" => {
                let what = format!(
                    "foreign key ({columns}) references {} ({})",
                    k.get::<String, _>("referenced"),
                    k.get::<Option<String>, _>("referenced_columns").unwrap_or_default()
                );
                let how = format!(
                    "on update {}, on delete {}",
                    postgres_action(&k.get::<String, _>("on_update")),
                    postgres_action(&k.get::<String, _>("on_delete"))
                );
                aspects.insert(what, how);
            }
            "c" => {
                let n: usize = aspects.get("check constraints").and_then(|n| n.parse().ok()).unwrap_or(0);
                aspects.insert("check constraints".into(), (n + 1).to_string());
            }
            other => {
                aspects.insert(format!("constraint {}", k.get::<String, _>("name")), format!("kind {other}"));
            }
        }
    }

    // Indexes other than those backing a primary key, unique or exclusion constraint, one row per key
    // column. A collation shows only where it is not the column's own.
    let index_columns = q("SELECT t.relname::text AS table_name, c.relname::text AS name, i.indisunique AS is_unique, \
                           i.indpred IS NOT NULL AS partial, am.amname::text AS method, \
                           CASE WHEN i.indkey[k.n - 1] = 0 THEN '<expression>' ELSE a.attname::text END AS col, \
                           (i.indoption[k.n - 1] & 1) = 1 AS descending, \
                           CASE WHEN i.indcollation[k.n - 1] IN (0, COALESCE(a.attcollation, 100)) THEN NULL \
                           ELSE coll.collname::text END AS collation \
                           FROM pg_index i \
                           JOIN pg_class c ON c.oid = i.indexrelid \
                           JOIN pg_class t ON t.oid = i.indrelid \
                           JOIN pg_am am ON am.oid = c.relam \
                           CROSS JOIN LATERAL generate_series(1, i.indnkeyatts) AS k(n) \
                           LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.n - 1] \
                           LEFT JOIN pg_collation coll ON coll.oid = i.indcollation[k.n - 1] \
                           WHERE t.relnamespace = IN_SCHEMA AND NOT EXISTS (SELECT 1 FROM pg_constraint con \
                           WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')) \
                           ORDER BY t.relname, c.relname, k.n"
        .into())
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut indexes: BTreeMap<(String, String), Index> = BTreeMap::new();
    for r in index_columns {
        let e = indexes.entry((r.get("table_name"), r.get("name"))).or_insert_with(|| Index {
            unique: r.get("is_unique"),
            columns: Vec::new(),
            method: r.get("method"),
            partial: r.get("partial"),
        });
        let mut col: String = r.get("col");
        if let Some(collation) = r.get::<Option<String>, _>("collation") {
            col += &format!(" COLLATE \"{collation}\"");
        }
        if r.get::<bool, _>("descending") {
            col += " DESC";
        }
        e.columns.push(col);
    }
    for ((table, name), Index { unique, columns, method, partial }) in indexes {
        schema.entry(table).or_default().insert(format!("index {name}"), index(unique, &columns, &method, partial));
    }

    // tgtype's bits: 2 BEFORE, 64 INSTEAD OF (else AFTER); 4 INSERT, 8 DELETE, 16 UPDATE, 32 TRUNCATE.
    let triggers = q("SELECT c.relname::text AS table_name, tg.tgname::text AS name, tg.tgtype::int4 AS bits \
                      FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid \
                      WHERE NOT tg.tgisinternal AND c.relnamespace = IN_SCHEMA"
        .into())
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut events: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for t in triggers {
        let table: String = t.get("table_name");
        let bits: i32 = t.get("bits");
        let timing = if bits & 2 != 0 {
            "BEFORE"
        } else if bits & 64 != 0 {
            "INSTEAD OF"
        } else {
            "AFTER"
        };
        for (bit, event) in [(4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE")] {
            if bits & bit != 0 {
                events.entry(table.clone()).or_default().insert(format!("{timing} {event}"));
            }
        }
        schema.entry(table).or_default().insert(format!("trigger {}", t.get::<String, _>("name")), "present".into());
    }
    for (table, events) in events {
        schema
            .entry(table)
            .or_default()
            .insert("trigger events".into(), events.into_iter().collect::<Vec<_>>().join(", "));
    }
    conn.close().await.unwrap();
    schema
}
