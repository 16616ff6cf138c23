//! Reading TOML contract files with errors that point at `file:line:col`.
//!
//! The registry, the network parameters and the sharing rules are reviewed like a legal agreement, so a
//! mistake in them must be reported where a reviewer can find it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The largest contract file accepted. Real bundles are a few kilobytes; anything near this size is a
/// mistake or an attack, and is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A problem located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: PathBuf,
    /// 1-based line, 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column, 0 when the problem concerns the whole file.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)
        }
    }
}

impl std::error::Error for Located {}

/// A contract file read into memory, kept so that later checks can point into it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// Reads a file, refusing one that is missing, too large or not UTF-8.
    pub fn read(path: &Path) -> Result<Self, Located> {
        let whole = |message: String| Located { file: path.to_owned(), line: 0, col: 0, message };
        let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(whole(format!(
                "file is {} bytes, over the {} byte limit for a contract file",
                meta.len(),
                MAX_FILE_BYTES
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| whole(format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to())))?;
        Ok(Self { path: path.to_owned(), text })
    }

    /// Parses the file as TOML into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Located> {
        toml::from_str(&self.text).map_err(|e| {
            let (line, col) = e.span().map(|s| self.line_col(s.start)).unwrap_or((0, 0));
            Located { file: self.path.clone(), line, col, message: e.message().trim().to_owned() }
        })
    }

    /// A problem at a byte offset of this file.
    pub fn at(&self, offset: usize, message: impl Into<String>) -> Located {
        let (line, col) = self.line_col(offset);
        Located { file: self.path.clone(), line, col, message: message.into() }
    }

    /// A problem with the whole file.
    pub fn whole(&self, message: impl Into<String>) -> Located {
        Located { file: self.path.clone(), line: 0, col: 0, message: message.into() }
    }

    /// The 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let col = before.rfind('\n').map_or(before.chars().count(), |nl| before[nl + 1..].chars().count()) + 1;
        (line, col)
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn near_miss<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.len() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_miss_finds_typos_but_not_strangers() {
        let labels = ["identifying", "contact", "sensitive", "operational", "location"];
        assert_eq!(near_miss("identifiying", labels), Some("identifying"));
        assert_eq!(near_miss("banana", labels), None);
    }

    #[test]
    fn parse_errors_point_at_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        std::fs::write(&path, "a = 1\nb = = 2\n").unwrap();
        let src = SourceFile::read(&path).unwrap();
        let err = src.parse::<toml::Table>().unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(err.to_string().contains("x.toml:2:"), "{err}");
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        std::fs::write(&path, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let err = SourceFile::read(&path).unwrap_err();
        assert!(err.message.contains("byte limit"), "{err}");
    }
}
