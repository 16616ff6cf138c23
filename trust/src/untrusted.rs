//! Untrusted text in error messages: how much of it an error repeats, and how many problems one
//! reply lists.
//!
//! A refusal names what was wrong so the operator can fix it, but a caller chooses the text it sends,
//! and a gRPC status travels in HTTP/2 headers that clients refuse past 16 KiB. So an error repeats at
//! most [`SHOWN_CHARS`] characters of any value it was given, with control characters escaped (a name
//! cannot start a new log line or move a terminal's cursor), and lists at most [`LISTED_PROBLEMS`]
//! problems followed by a count of the rest. The full list goes to the log and to the offline tools,
//! which have no such limit.

use std::fmt;

/// The most characters of an untrusted value an error repeats.
pub const SHOWN_CHARS: usize = 64;
/// The most problems one error message lists.
pub const LISTED_PROBLEMS: usize = 20;
/// The longest status message the gateway or a node sends, in bytes: a last bound for messages built
/// from many parts, well under the 16 KiB a client accepts in its headers.
pub const MAX_STATUS_BYTES: usize = 4096;

/// Displays an untrusted value: at most [`SHOWN_CHARS`] characters, then `…` if there was more,
/// with control characters escaped.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(SHOWN_CHARS) {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_fmt(format_args!("{c}"))?;
            }
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// An untrusted value as an owned string, shown as [`Shown`] displays it.
pub fn shown(value: &str) -> String {
    Shown(value).to_string()
}

/// Joins problems with `sep`, listing at most [`LISTED_PROBLEMS`] and then how many more there were.
pub fn list_problems<T: fmt::Display>(problems: &[T], sep: &str) -> String {
    let mut out = problems.iter().take(LISTED_PROBLEMS).map(ToString::to_string).collect::<Vec<_>>().join(sep);
    if problems.len() > LISTED_PROBLEMS {
        let rest = problems.len() - LISTED_PROBLEMS;
        out.push_str(&format!("{sep}and {rest} more problem{}", if rest == 1 { "" } else { "s" }));
    }
    out
}

/// Cuts a message to at most [`MAX_STATUS_BYTES`] bytes at a character boundary, saying so.
pub fn bounded(mut message: String) -> String {
    if message.len() <= MAX_STATUS_BYTES {
        return message;
    }
    let mut end = MAX_STATUS_BYTES - 40;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(" … (message cut; see the log)");
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_cut_and_marked() {
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert_eq!(s.chars().count(), SHOWN_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(shown("maple-house"), "maple-house");
        assert_eq!(shown(&"é".repeat(SHOWN_CHARS)), "é".repeat(SHOWN_CHARS));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
    }

    #[test]
    fn at_most_twenty_problems_are_listed_with_a_count_of_the_rest() {
        let problems: Vec<String> = (0..10_000).map(|i| format!("problem {i}")).collect();
        let s = list_problems(&problems, "; ");
        assert!(s.starts_with("problem 0; problem 1;"));
        assert!(s.contains("problem 19; and 9980 more problems"), "{s}");
        assert!(!s.contains("problem 20;"));
        assert_eq!(list_problems(&problems[..2], "; "), "problem 0; problem 1");
        assert_eq!(list_problems(&problems[..21], "; ").matches("and 1 more problem").count(), 1);
    }

    #[test]
    fn a_long_message_is_bounded_at_a_character_boundary() {
        let s = bounded("é".repeat(MAX_STATUS_BYTES));
        assert!(s.len() <= MAX_STATUS_BYTES);
        assert!(s.ends_with("(message cut; see the log)"));
        assert_eq!(bounded("short".into()), "short");
    }
}
