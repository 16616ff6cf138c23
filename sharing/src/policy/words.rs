//! Words shown to people: the labels and descriptions of purposes, message kinds, fields, field
//! values and status codes, in every language the network writes in.
//!
//! In a policy file a text is either one string, in the network's first language, or a table by
//! language tag:
//!
//! ```toml
//! label = { en = "Housing", es = "Vivienda" }
//! ```
//!
//! `network.toml` lists the languages (`languages = ["en", "es"]`, default `["en"]`). A bundle whose
//! texts miss one of them is refused, each gap named at its place, because a survivor's consent form
//! printed half in another language is not consent they could read.

use std::collections::BTreeMap;
use std::path::Path;

use haven_trust::source::{Located, SourceFile};
use serde::Deserialize;
use toml::Spanned;

/// The longest text, in characters (a description; a label is one line of at most 100).
const MAX_TEXT_CHARS: usize = 2_000;

/// A text in one or more languages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Words {
    /// Text by language tag. The empty tag holds a plain string until the bundle names its first
    /// language ([`Words::settle`]).
    by_language: BTreeMap<String, String>,
    /// The network's first language, once settled.
    first: Option<String>,
    /// Where the text is written (1-based line and column; 0 when made in memory).
    line: usize,
    col: usize,
}

/// A text as written: one string, or a table by language tag.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawWords {
    One(String),
    Many(BTreeMap<String, String>),
}

/// What a text names, for the problems that concern it: `purpose `housing` label`.
pub(crate) struct Label<'a> {
    pub what: &'a str,
    /// One line of at most 100 characters, rather than a paragraph.
    pub one_line: bool,
}

impl Words {
    /// A text in the network's first language, made in memory.
    pub fn plain(text: impl Into<String>) -> Words {
        Words { by_language: BTreeMap::from([(String::new(), text.into())]), ..Words::default() }
    }

    /// Reads a text as written, with a problem for an empty or overlong text or a malformed tag.
    pub(crate) fn read(
        src: &SourceFile,
        raw: Spanned<RawWords>,
        label: Label<'_>,
        problems: &mut Vec<Located>,
    ) -> Words {
        let (line, col) = src.line_col(raw.span().start);
        let at = raw.span().start;
        let by_language = match raw.into_inner() {
            RawWords::One(text) => BTreeMap::from([(String::new(), text)]),
            RawWords::Many(map) if map.is_empty() => {
                problems.push(src.at(at, format!("{} is an empty table; give a text per language", label.what)));
                map
            }
            RawWords::Many(map) => map,
        };
        for (tag, text) in &by_language {
            if !tag.is_empty() && !is_language_tag(tag) {
                problems.push(src.at(
                    at,
                    format!(
                        "{}: `{tag}` is not a language tag (a BCP 47 tag such as `en`, `es` or `es-MX`)",
                        label.what
                    ),
                ));
            }
            let max = if label.one_line { 100 } else { MAX_TEXT_CHARS };
            let chars = text.chars().count();
            if text.trim().is_empty() || chars > max || (label.one_line && text.contains(['\n', '\r'])) {
                let shape = if label.one_line { "one line of 1 to 100 characters" } else { "1 to 2000 characters" };
                let lang = if tag.is_empty() { String::new() } else { format!(" (`{tag}`)") };
                problems.push(src.at(at, format!("{}{lang} must be {shape}", label.what)));
            }
        }
        Words { by_language, first: None, line, col }
    }

    /// Names the network's languages: a plain string becomes the first language's text. Returns the
    /// languages this text lacks.
    pub(crate) fn settle(&mut self, languages: &[String]) -> Vec<String> {
        let Some(first) = languages.first() else { return Vec::new() };
        if let Some(text) = self.by_language.remove("") {
            self.by_language.entry(first.clone()).or_insert(text);
        }
        self.first = Some(first.clone());
        languages.iter().filter(|l| !self.by_language.contains_key(*l)).cloned().collect()
    }

    /// The text in `language`, else in its primary language (`es` for `es-MX`).
    pub fn get(&self, language: &str) -> Option<&str> {
        let primary = language.split('-').next().unwrap_or(language);
        self.by_language.get(language).or_else(|| self.by_language.get(primary)).map(String::as_str)
    }

    /// The text in `language`, else in the network's first language.
    pub fn text(&self, language: &str) -> &str {
        self.get(language).unwrap_or_else(|| self.main())
    }

    /// The text in the network's first language (a plain string before the bundle is settled).
    pub fn main(&self) -> &str {
        let first = self.first.as_deref().unwrap_or_default();
        self.by_language
            .get(first)
            .or_else(|| self.by_language.get(""))
            .or_else(|| self.by_language.values().next())
            .map_or("", String::as_str)
    }

    /// Every text, by language tag (the empty tag for a plain string not yet settled).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_language.iter().map(|(l, t)| (l.as_str(), t.as_str()))
    }

    /// Where the text is written: 1-based line and column, 0 when made in memory.
    pub(crate) fn place(&self) -> (usize, usize) {
        (self.line, self.col)
    }
}

/// Settles every text of the purposes and the schema in the network's `languages`, and names each
/// text that lacks one of them, at its place in `purposes_file` or `schema_file`.
pub(crate) fn settle(
    languages: &[String],
    purposes: &mut super::Purposes,
    schema: &mut super::Schema,
    purposes_file: &Path,
    schema_file: &Path,
) -> Vec<Located> {
    let mut problems = Vec::new();
    let listed = languages.join(", ");
    let mut check = |file: &Path, what: &str, words: &mut Words| {
        let missing = words.settle(languages);
        if !missing.is_empty() {
            let (line, col) = words.place();
            let missing: Vec<String> = missing.iter().map(|l| format!("`{l}`")).collect();
            let message = format!(
                "{what} has no {} text (network.toml lists the languages {listed}; every label and description needs each)",
                missing.join(", ")
            );
            problems.push(Located { file: file.to_owned(), line, col, message });
        }
    };
    purposes.each_words(&mut |what, words| check(purposes_file, what, words));
    schema.each_words(&mut |what, words| check(schema_file, what, words));
    problems
}

/// Whether `tag` has the shape of a BCP 47 language tag: a 2 or 3 letter lowercase language, then
/// optional subtags of 1 to 8 letters or digits (`es`, `es-MX`, `zh-Hant`).
pub fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let lang_ok = parts.next().is_some_and(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()));
    lang_ok && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SourceFile {
        SourceFile { path: "purposes.toml".into(), text: "x".into() }
    }

    fn read(raw: RawWords, one_line: bool) -> (Words, Vec<Located>) {
        let mut problems = Vec::new();
        let w = Words::read(&src(), Spanned::new(0..1, raw), Label { what: "label", one_line }, &mut problems);
        (w, problems)
    }

    #[test]
    fn a_plain_string_becomes_the_first_language_and_gaps_are_named() {
        let (mut w, problems) = read(RawWords::One("Housing".into()), true);
        assert!(problems.is_empty());
        assert_eq!(w.main(), "Housing");
        let missing = w.settle(&["en".into(), "es".into()]);
        assert_eq!(missing, vec!["es".to_owned()]);
        assert_eq!(w.get("en"), Some("Housing"));
        assert_eq!(w.get("es"), None);
        assert_eq!(w.text("es"), "Housing", "a missing language falls back to the first");
    }

    #[test]
    fn a_table_gives_each_language_and_a_region_falls_back_to_its_language() {
        let map = BTreeMap::from([("en".to_owned(), "Housing".to_owned()), ("es".to_owned(), "Vivienda".to_owned())]);
        let (mut w, problems) = read(RawWords::Many(map), true);
        assert!(problems.is_empty());
        assert!(w.settle(&["es".into(), "en".into()]).is_empty());
        assert_eq!(w.main(), "Vivienda", "the first language of the network is the main text");
        assert_eq!(w.get("es-MX"), Some("Vivienda"));
        assert_eq!(w.get("fr"), None);
    }

    #[test]
    fn bad_tags_empty_texts_and_multi_line_labels_are_refused() {
        let map = BTreeMap::from([("Spanish".to_owned(), "Vivienda".to_owned()), ("en".to_owned(), " ".to_owned())]);
        let (_, problems) = read(RawWords::Many(map), true);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{text:?}");
        assert!(text.iter().any(|p| p.contains("`Spanish` is not a language tag")), "{text:?}");
        assert!(text.iter().any(|p| p.contains("(`en`) must be one line of 1 to 100")), "{text:?}");
        let (_, problems) = read(RawWords::One("two\nlines".into()), true);
        assert_eq!(problems.len(), 1);
        let (_, problems) = read(RawWords::Many(BTreeMap::new()), false);
        assert!(problems[0].to_string().contains("empty table"), "{problems:?}");
    }

    #[test]
    fn language_tags() {
        for ok in ["en", "es", "es-MX", "zh-Hant", "ast", "sr-Latn-RS"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "e", "EN", "english", "es_MX", "es-", "es-toolongsubtag"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }
}
