//! Calendar dates on the command line (`YYYY-MM-DD`, UTC), and the instants a consent window runs
//! between: a window covers its first and last day whole.

use time::{Date, OffsetDateTime, macros::format_description};

/// Parses `YYYY-MM-DD`.
pub fn parse(s: &str) -> Result<Date, String> {
    Date::parse(s, format_description!("[year]-[month]-[day]"))
        .map_err(|_| format!("`{s}` is not a date as YYYY-MM-DD (for example 2026-01-31)"))
}

/// The first instant of `day`, UTC, in microseconds since the epoch.
pub fn start_micros(day: Date) -> i64 {
    micros(day.midnight().assume_utc())
}

/// The first instant after `day`, UTC: a consent `--until 2026-06-30` covers all of 30 June.
pub fn end_micros(day: Date) -> i64 {
    match day.next_day() {
        Some(next) => start_micros(next),
        None => micros(day.with_hms(23, 59, 59).map(|t| t.assume_utc()).unwrap_or(OffsetDateTime::UNIX_EPOCH)),
    }
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_covers_its_last_day_whole() {
        let d = parse("2026-06-30").unwrap();
        assert_eq!(start_micros(d), 1_782_777_600_000_000);
        assert_eq!(end_micros(d) - start_micros(d), 86_400_000_000);
    }
}
