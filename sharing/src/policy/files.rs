//! How policy files are read: TOML kept with every value's position, each entry of a list parsed on its
//! own so one bad rule does not hide the next, serde's messages reworded with a near miss, and TOML
//! datetimes turned into instants.

use haven_trust::source::{Located, SourceFile, near_miss};
use serde::de::DeserializeOwned;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};
use toml::value::{Datetime, Offset};

/// A TOML value with its position in the file.
pub(crate) type Node<'a> = Spanned<DeValue<'a>>;

/// Parses a file's TOML syntax, keeping every value's position.
pub(crate) fn parse_document(src: &SourceFile) -> Result<Spanned<DeTable<'_>>, Located> {
    DeTable::parse(&src.text).map_err(|e| locate(src, &e, 0))
}

/// Parses a whole file into `T`, with the reworded message on the first problem.
pub(crate) fn parse_whole<T: DeserializeOwned>(src: &SourceFile) -> Result<T, Located> {
    let doc = parse_document(src)?;
    let span = doc.span();
    deserialize(src, &Spanned::new(span, DeValue::Table(doc.into_inner())))
}

/// Deserializes one value, locating any problem inside it.
pub(crate) fn deserialize<T: DeserializeOwned>(src: &SourceFile, node: &Node<'_>) -> Result<T, Located> {
    T::deserialize(ValueDeserializer::from(node.clone())).map_err(|e| locate(src, &e, node.span().start))
}

fn locate(src: &SourceFile, e: &toml::de::Error, fallback: usize) -> Located {
    let at = e.span().map_or(fallback, |s| s.start);
    src.at(at, reword(e.message().trim()))
}

/// Problems in reading order: by file, then line, then column.
pub(crate) fn in_order(mut problems: Vec<Located>) -> Vec<Located> {
    problems.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    problems
}

/// The value of a top-level key.
pub(crate) fn get<'d, 'a>(table: &'d DeTable<'a>, key: &str) -> Option<&'d Node<'a>> {
    table.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(_, v)| v)
}

/// Reports every key of `table` that is not in `known`.
pub(crate) fn check_keys(
    src: &SourceFile,
    table: &DeTable<'_>,
    known: &[&str],
    where_: &str,
    problems: &mut Vec<Located>,
) {
    for (key, _) in table.iter() {
        let name: &str = key.get_ref();
        if !known.contains(&name) {
            problems.push(src.at(
                key.span().start,
                format!(
                    "unknown key `{name}` in {where_}{}; known keys: {}",
                    did_you_mean(name, known.iter().copied()),
                    known.join(", ")
                ),
            ));
        }
    }
}

/// The entries of an array of tables (`[[rule]]`), or a problem if `key` holds something else.
pub(crate) fn items<'n, 'a>(
    src: &SourceFile,
    key: &str,
    node: &'n Node<'a>,
    problems: &mut Vec<Located>,
) -> &'n [Node<'a>] {
    match node.get_ref() {
        DeValue::Array(items) => items,
        other => {
            problems.push(src.at(
                node.span().start,
                format!("`{key}` must be a list of tables written `[[{key}]]`, not a {}", other.type_str()),
            ));
            &[]
        }
    }
}

/// The entries of a table (`[purpose.housing]`, `[kind.referral]`), or a problem if `key` holds
/// something else.
pub(crate) fn entries<'n, 'a>(
    src: &SourceFile,
    key: &str,
    node: &'n Node<'a>,
    problems: &mut Vec<Located>,
) -> Vec<(&'n Spanned<DeString<'a>>, &'n Node<'a>)> {
    match node.get_ref() {
        DeValue::Table(table) => table.iter().collect(),
        other => {
            problems.push(src.at(
                node.span().start,
                format!("`{key}` must be a table of named entries (`[{key}.<name>]`), not a {}", other.type_str()),
            ));
            Vec::new()
        }
    }
}

/// ` (did you mean `x`?)` when one candidate is a likely typo of `word`, else nothing.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    near_miss(word, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

/// Rewords serde's messages for the people who edit policy files: a TOML *key* is not a message field,
/// and a typo deserves its near miss.
pub(crate) fn reword(message: &str) -> String {
    if message == "duplicate key" {
        return "duplicate key: it is already set earlier in the same table".to_owned();
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return format!("missing key `{rest}");
    }
    for (prefix, noun) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        let Some(rest) = message.strip_prefix(prefix) else { continue };
        let Some(end) = rest.find('`') else { continue };
        let word = &rest[..end];
        let tail = rest[end + 1..].trim_start_matches(',').trim();
        let candidates: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let hint = did_you_mean(word, candidates.iter().copied());
        return format!("unknown {noun} `{word}`{hint}; {tail}");
    }
    message.to_owned()
}

/// The instant a TOML datetime names. A bare date means midnight UTC; a date and time must carry its
/// offset, because a rule that starts "at 9:00" somewhere unknown starts at no definite moment.
pub(crate) fn instant(dt: &Datetime) -> Result<OffsetDateTime, String> {
    let Some(d) = dt.date else {
        return Err(format!("`{dt}` has no date; write a date (2025-01-01) or an instant (2025-01-01T00:00:00Z)"));
    };
    let month = time::Month::try_from(d.month).map_err(|e| format!("`{dt}`: {e}"))?;
    let date = time::Date::from_calendar_date(i32::from(d.year), month, d.day).map_err(|e| format!("`{dt}`: {e}"))?;
    let (clock, offset) = match (dt.time, dt.offset) {
        (None, _) => (time::Time::MIDNIGHT, UtcOffset::UTC),
        (Some(_), None) => {
            return Err(format!(
                "`{dt}` has no UTC offset, so it names no definite moment; add one, for example `{dt}Z`"
            ));
        }
        (Some(t), Some(o)) => {
            let clock = time::Time::from_hms_nano(t.hour, t.minute, t.second, t.nanosecond)
                .map_err(|e| format!("`{dt}`: {e}"))?;
            let offset = match o {
                Offset::Z => UtcOffset::UTC,
                Offset::Custom { minutes } => {
                    UtcOffset::from_whole_seconds(i32::from(minutes) * 60).map_err(|e| format!("`{dt}`: {e}"))?
                }
            };
            (clock, offset)
        }
    };
    Ok(PrimitiveDateTime::new(date, clock).assume_offset(offset))
}

/// An instant written the way policy files write it (RFC 3339).
pub(crate) fn show_instant(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// Whether `s` is a plain identifier: a lowercase letter, then lowercase letters, digits and `_`.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_get_their_near_miss() {
        let m = reword("unknown field `purpose`, expected one of `id`, `purposes`, `kind`");
        assert_eq!(m, "unknown key `purpose` (did you mean `purposes`?); expected one of `id`, `purposes`, `kind`");
        let m = reword("unknown variant `alow`, expected `allow` or `deny`");
        assert_eq!(m, "unknown value `alow` (did you mean `allow`?); expected `allow` or `deny`");
        assert_eq!(reword("missing field `id`"), "missing key `id`");
    }

    #[test]
    fn datetimes_need_an_offset_unless_they_are_dates() {
        let dt: Datetime = "2025-01-01".parse().unwrap();
        assert_eq!(instant(&dt).unwrap(), time::macros::datetime!(2025-01-01 0:00 UTC));
        let dt: Datetime = "2025-01-01T09:00:00+02:00".parse().unwrap();
        assert_eq!(instant(&dt).unwrap(), time::macros::datetime!(2025-01-01 7:00 UTC));
        let dt: Datetime = "2025-01-01T09:00:00".parse().unwrap();
        assert!(instant(&dt).unwrap_err().contains("no UTC offset"));
    }
}
