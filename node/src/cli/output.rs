//! How commands print: aligned tables and `key: value` blocks for people, one JSON object per line for
//! scripts (`--json`), and times in UTC.

use std::io::{self, Write};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Where a command writes what it has to say.
pub type Out<'a> = &'a mut (dyn Write + Send);

/// A table: a header row, then rows, columns padded to the widest cell. The last column is not padded,
/// so long details do not push trailing spaces.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the table; an empty one says so instead, in `empty`.
    pub fn write(&self, out: Out<'_>, empty: &str) -> io::Result<()> {
        if self.rows.len() == 1 {
            return writeln!(out, "{empty}");
        }
        write_rows(out, &self.rows)
    }
}

/// Writes rows with columns padded to the widest cell among them.
pub fn write_rows(out: Out<'_>, rows: &[Vec<String>]) -> io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes `key: value` lines with the values aligned; empty values are left out.
pub fn write_block(out: Out<'_>, pairs: &[(&str, String)]) -> io::Result<()> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        writeln!(out, "{:<width$} {v}", format!("{k}:"))?;
    }
    Ok(())
}

/// Writes one JSON object on its own line (JSON Lines), then flushes so a reader sees it at once.
pub fn json_line<T: Serialize>(out: Out<'_>, row: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, row).map_err(io::Error::other)?;
    writeln!(out)?;
    out.flush()
}

/// A time for scripts: RFC 3339 in UTC, or empty when unset (0).
pub fn rfc3339(micros: i64) -> String {
    if micros == 0 {
        return String::new();
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// A time for people: to the second, in UTC, or `-` when unset.
pub fn when(micros: i64) -> String {
    if micros == 0 {
        return "-".into();
    }
    let seconds = micros.div_euclid(1_000_000);
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// `-` for an empty cell, so columns stay readable.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_owned() }
}

/// A list as one cell: `a, b, c`, or `-` when empty.
pub fn list(items: &[String]) -> String {
    or_dash(&items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up_and_the_last_is_not_padded() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        let mut out = Vec::new();
        t.write(&mut out, "none").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A          LONGER\nwide cell  x\n");
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(when(1_700_000_000_123_456), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(when(0), "-");
    }
}
