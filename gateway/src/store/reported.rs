//! How a database error reads to an operator. sqlx shows a PostgreSQL error as its message followed by
//! `at line N`, the line of the PostgreSQL server's own C source that raised it, which means nothing to
//! an operator; what helps is the server's message, its SQLSTATE code, and its detail and hint.

use std::fmt;

use sqlx::postgres::PgDatabaseError;

/// Shows a database error for an operator: `{}` of [`reported`] gives, for a PostgreSQL error,
/// `PostgreSQL: <message> (SQLSTATE <code>); detail: ...; hint: ...`, and sqlx's own text otherwise.
pub struct Reported<'a>(pub &'a sqlx::Error);

/// [`Reported`] of `e`, for `format!` and error attributes.
pub fn reported(e: &sqlx::Error) -> Reported<'_> {
    Reported(e)
}

impl fmt::Display for Reported<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pg = match self.0 {
            sqlx::Error::Database(db) => db.try_downcast_ref::<PgDatabaseError>(),
            _ => None,
        };
        let Some(pg) = pg else { return write!(f, "{}", self.0) };
        write!(f, "PostgreSQL: {} (SQLSTATE {}", one_line(pg.message()), pg.code())?;
        if let Some(table) = pg.table() {
            write!(f, ", table {table}")?;
        }
        if let Some(constraint) = pg.constraint() {
            write!(f, ", constraint {constraint}")?;
        }
        f.write_str(")")?;
        if let Some(detail) = pg.detail() {
            write!(f, "; detail: {}", one_line(detail))?;
        }
        if let Some(hint) = pg.hint() {
            write!(f, "; hint: {}", one_line(hint))?;
        }
        Ok(())
    }
}

/// The server's text on one line, so a log line stays one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
