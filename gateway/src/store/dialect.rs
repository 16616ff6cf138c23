//! Where the two dialects differ in the statements the gateway builds: which dialect a store speaks
//! ([`Dialect`], fixed when it opens), how placeholders are written, how many rows one statement
//! takes, and the one helper that runs a statement over many rows (multi-row `INSERT`s and
//! `UPDATE ... FROM (VALUES ...)`).

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};

use super::Tx;

/// Which database a store runs on, and so which SQL dialect it speaks. Chosen once, from the URL, when
/// the store opens ([`super::Store::dialect`]); every transaction carries it ([`Tx::dialect`]), so no
/// statement asks the connection which database it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Writes `n` terms `(first = ? AND second = ?)` joined by `OR` (numbered `$1, $2, ...` on
/// PostgreSQL): a lookup of `n` keys of two columns, which SQLite plans as one index search per term.
pub(crate) fn push_pair_terms(sql: &mut String, dialect: Dialect, first: &str, second: &str, n: usize) {
    for i in 0..n {
        if i > 0 {
            sql.push_str(" OR ");
        }
        match dialect {
            Dialect::Sqlite => sql.push_str(&format!("({first} = ? AND {second} = ?)")),
            Dialect::Postgres => sql.push_str(&format!("({first} = ${} AND {second} = ${})", 2 * i + 1, 2 * i + 2)),
        }
    }
}

/// Writes the placeholders of row `row` of a multi-row statement of `columns` columns: `($1, $2, ...)`,
/// or `(?, ?, ...)` on SQLite, which looks each named placeholder up by a linear scan of all of them,
/// so that a statement of thousands of `$N` binds would cost quadratic time to bind.
pub(crate) fn push_row(sql: &mut String, dialect: Dialect, row: usize, columns: usize) {
    sql.push('(');
    for c in 0..columns {
        if c > 0 {
            sql.push_str(", ");
        }
        match dialect {
            Dialect::Sqlite => sql.push('?'),
            Dialect::Postgres => {
                sql.push('$');
                sql.push_str(&(row * columns + c + 1).to_string());
            }
        }
    }
    sql.push(')');
}

/// The most rows (or keys) one statement takes on SQLite: see [`chunks`].
const SQLITE_MAX_CHUNK: usize = 64;

/// Rows per INSERT on PostgreSQL. sqlx does not set TCP_NODELAY, and a statement whose bind message
/// outgrows about 8 KiB meets Nagle's algorithm and the server's delayed ACK: a 40 ms stall per
/// statement (measured: 64-row inserts at 1,400 entries/s, 8-row inserts at 25,000/s). Small statements
/// in one transaction cost one round trip each and no stall.
pub(crate) const PG_INSERT_CHUNK: usize = 8;

/// The bytes of payload one statement carries at most on PostgreSQL, where its rows say how large they
/// are ([`insert_weighed`]; a row larger than this alone goes alone): well inside one TLS record
/// (16 KiB) with the statement's other parameters, for the reason [`PG_INSERT_CHUNK`] gives. Sealed
/// copies are a few KiB each, so eight of them would not fit.
pub(crate) const PG_STATEMENT_BYTES: usize = 12 * 1024;

/// The chunks a statement of many rows (or keys) takes `rows` in: on PostgreSQL, `pg` at a time.
///
/// On SQLite a compiled statement is cached by its text, which changes with its number of rows; a
/// statement that is not cached is parsed again each time, and parsing was 18 % of the SQLite writer's
/// time under load and 30 % with one caller. So there the chunks are powers of two, largest first, up
/// to [`SQLITE_MAX_CHUNK`]: `n` rows take `n / 64` statements plus one per bit set in `n % 64`, a
/// connection keeps at most seven shapes of each statement, and every statement is kept prepared.
/// (sqlx keeps the 100 most recently used statements per connection, so under a load that uses
/// every shape of every kind the rarest shapes are parsed again now and then.)
pub(crate) fn chunks<T>(rows: &[T], dialect: Dialect, pg: usize) -> Chunks<'_, T> {
    Chunks { rest: rows, dialect, pg: pg.max(1), weight: None }
}

/// The iterator of [`chunks`].
pub(crate) struct Chunks<'r, T> {
    rest: &'r [T],
    dialect: Dialect,
    pg: usize,
    /// On PostgreSQL, each row's payload bytes, of which a chunk takes at most [`PG_STATEMENT_BYTES`].
    weight: Option<fn(&T) -> usize>,
}

impl<T> Chunks<'_, T> {
    /// On PostgreSQL, chunks of at most [`PG_STATEMENT_BYTES`] by `weight` too (at least one row each).
    pub(crate) fn weighed(self, weight: fn(&T) -> usize) -> Self {
        Chunks { weight: Some(weight), ..self }
    }
}

impl<'r, T> Iterator for Chunks<'r, T> {
    type Item = &'r [T];

    fn next(&mut self) -> Option<&'r [T]> {
        if self.rest.is_empty() {
            return None;
        }
        let n = match self.dialect {
            Dialect::Sqlite => 1 << self.rest.len().min(SQLITE_MAX_CHUNK).ilog2(),
            Dialect::Postgres => {
                let most = self.rest.len().min(self.pg);
                match self.weight {
                    None => most,
                    Some(weight) => {
                        let mut bytes = weight(&self.rest[0]);
                        let mut n = 1;
                        while n < most && bytes + weight(&self.rest[n]) <= PG_STATEMENT_BYTES {
                            bytes += weight(&self.rest[n]);
                            n += 1;
                        }
                        n
                    }
                }
            }
        };
        let (chunk, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(chunk)
    }
}

/// Runs `head`, then the placeholders of a chunk of `rows` (`columns` each), then `tail`, once per
/// chunk (see [`chunks`]; on PostgreSQL `pg` rows at a time), `bind` binding one row; returns how many
/// rows the statements changed. Every statement of many rows goes through here: multi-row inserts
/// (`head` ends in `VALUES`, `tail` is empty) and `UPDATE ... FROM (VALUES ...) AS v ...`.
pub(crate) async fn with_rows<'r, R>(
    tx: &mut Tx<'_>,
    head: &str,
    columns: usize,
    tail: &str,
    pg: usize,
    rows: &'r [R],
    bind: impl Fn(Query<'r, Any, AnyArguments>, &'r R) -> Query<'r, Any, AnyArguments>,
) -> Result<u64, sqlx::Error> {
    let chunks = chunks(rows, tx.dialect(), pg);
    run_chunks(tx, head, columns, tail, chunks, bind).await
}

/// Runs `head`, the placeholders of each chunk and `tail`, binding each row of the chunk.
async fn run_chunks<'r, R>(
    tx: &mut Tx<'_>,
    head: &str,
    columns: usize,
    tail: &str,
    chunks: Chunks<'r, R>,
    bind: impl Fn(Query<'r, Any, AnyArguments>, &'r R) -> Query<'r, Any, AnyArguments>,
) -> Result<u64, sqlx::Error> {
    let dialect = tx.dialect();
    let mut affected = 0;
    for chunk in chunks {
        let mut sql = String::with_capacity(head.len() + tail.len() + chunk.len() * columns * 5);
        sql.push_str(head);
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { " " } else { ", " });
            push_row(&mut sql, dialect, i, columns);
        }
        sql.push_str(tail);
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            q = bind(q, row);
        }
        affected += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(affected)
}

/// Inserts `rows` with multi-row statements of `columns` columns each (`head` ends in `VALUES`),
/// [`PG_INSERT_CHUNK`] rows a statement on PostgreSQL.
pub(crate) async fn insert_many<'r, R>(
    tx: &mut Tx<'_>,
    head: &str,
    columns: usize,
    rows: &'r [R],
    bind: impl Fn(Query<'r, Any, AnyArguments>, &'r R) -> Query<'r, Any, AnyArguments>,
) -> Result<(), sqlx::Error> {
    with_rows(tx, head, columns, "", PG_INSERT_CHUNK, rows, bind).await?;
    Ok(())
}

/// [`insert_many`] for rows that carry payloads of their own size (`weight`, in bytes): on PostgreSQL a
/// statement also takes at most [`PG_STATEMENT_BYTES`] of them.
pub(crate) async fn insert_weighed<'r, R>(
    tx: &mut Tx<'_>,
    head: &str,
    columns: usize,
    rows: &'r [R],
    weight: fn(&R) -> usize,
    bind: impl Fn(Query<'r, Any, AnyArguments>, &'r R) -> Query<'r, Any, AnyArguments>,
) -> Result<(), sqlx::Error> {
    let chunks = chunks(rows, tx.dialect(), PG_INSERT_CHUNK).weighed(weight);
    run_chunks(tx, head, columns, "", chunks, bind).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize, dialect: Dialect, pg: usize) -> Vec<usize> {
        let rows: Vec<usize> = (0..n).collect();
        let got: Vec<&[usize]> = chunks(&rows, dialect, pg).collect();
        assert_eq!(got.concat(), rows, "every row once, in order");
        got.iter().map(|c| c.len()).collect()
    }

    /// On SQLite a statement of many rows comes in a few shapes only (powers of two up to the
    /// limit), so each is compiled once per connection; on PostgreSQL in chunks of the given size.
    #[test]
    fn sqlite_chunks_are_powers_of_two_largest_first() {
        assert!(sizes(0, Dialect::Sqlite, 8).is_empty());
        assert_eq!(sizes(1, Dialect::Sqlite, 8), [1]);
        assert_eq!(sizes(23, Dialect::Sqlite, 8), [16, 4, 2, 1]);
        assert_eq!(sizes(64, Dialect::Sqlite, 8), [64]);
        assert_eq!(sizes(200, Dialect::Sqlite, 8), [64, 64, 64, 8]);
        assert_eq!(sizes(23, Dialect::Postgres, 8), [8, 8, 7]);
        assert_eq!(sizes(3, Dialect::Postgres, 0), [1, 1, 1], "a chunk size of zero is taken as one");
        for n in 0..=300 {
            let s = sizes(n, Dialect::Sqlite, 8);
            assert!(s.iter().all(|c| c.is_power_of_two() && *c <= SQLITE_MAX_CHUNK), "{n}: {s:?}");
            assert!(s.len() <= n / SQLITE_MAX_CHUNK + 6, "{n} rows in {} statements", s.len());
        }
    }

    /// On PostgreSQL, rows that say their size fill a statement up to [`PG_STATEMENT_BYTES`] (and at
    /// most the row count); a row larger than that goes alone. SQLite takes no notice.
    #[test]
    fn weighed_rows_fill_a_postgres_statement_up_to_its_bytes() {
        let kib = |n: &usize| *n * 1024;
        let rows = [5, 5, 2, 20, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4];
        let got: Vec<&[usize]> = chunks(&rows, Dialect::Postgres, 8).weighed(kib).collect();
        assert_eq!(got, [&[5, 5, 2][..], &[20], &[1, 1, 1, 1, 1, 1, 1, 1], &[1, 4]]);
        let sqlite: Vec<usize> = chunks(&rows, Dialect::Sqlite, 8).weighed(kib).map(<[usize]>::len).collect();
        assert_eq!(sqlite, [8, 4, 2]);
    }
}
