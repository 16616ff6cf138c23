//! Files only their owner may read: the private keys a server loads, and the databases that hold
//! survivors' data. Databases are created owner-only and tightened when found looser; a key file
//! found looser is reported (the operator owns it), so the server can warn and still start.

use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Read and write for the owner, nothing for anyone else.
pub const MODE: u32 = 0o600;

/// Permission bits that let the file's group or other users at it.
const OTHERS: u32 = 0o077;

/// A file whose group or other users may read or change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loose {
    pub path: PathBuf,
    /// Its permission bits (`0o644`, say).
    pub mode: u32,
}

impl fmt::Display for Loose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has mode {:04o}, so users other than its owner may read or change it; run `chmod 600 {}`",
            self.path.display(),
            self.mode,
            self.path.display()
        )
    }
}

fn mode_of(path: &Path) -> io::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// The files among `paths` that users other than their owner may read or change. A file that cannot be
/// looked at is left out: loading it reports why.
pub fn loose(paths: &[PathBuf]) -> Vec<Loose> {
    paths
        .iter()
        .filter_map(|path| match mode_of(path) {
            Ok(mode) if mode & OTHERS != 0 => Some(Loose { path: path.clone(), mode }),
            _ => None,
        })
        .collect()
}

/// Creates `path` empty with mode 0600 unless it exists; returns whether it created it. The mode is
/// set after creating, so it does not depend on the process's umask.
pub fn create(path: &Path) -> io::Result<bool> {
    match OpenOptions::new().write(true).create_new(true).mode(MODE).open(path) {
        Ok(file) => {
            file.set_permissions(Permissions::from_mode(MODE))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the SQLite database file at `db` owner-only before SQLite opens it (SQLite gives its
/// `-wal` and `-shm` files the same mode), and tightens the database, its log and its index where an
/// older version, a copy or a loose umask left them open to others. Returns the files it tightened,
/// with the modes they had, for the caller to report; an error names the file it failed on.
pub fn database_files(db: &Path) -> Result<Vec<Loose>, (PathBuf, io::Error)> {
    create(db).map_err(|e| (db.to_owned(), e))?;
    let mut tightened = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        match tighten(&path) {
            Ok(Some(mode)) => tightened.push(Loose { path, mode }),
            Ok(None) => {}
            Err(e) => return Err((path, e)),
        }
    }
    Ok(tightened)
}

/// Sets mode 0600 on `path` if its group or other users may get at it; returns the mode it had then.
/// A missing file is left missing.
pub fn tighten(path: &Path) -> io::Result<Option<u32>> {
    let mode = match mode_of(path) {
        Ok(mode) => mode,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if mode & OTHERS == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, Permissions::from_mode(MODE))?;
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn files_others_may_read_are_named_and_owner_only_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (open, group, closed, missing) =
            (dir.path().join("a.key"), dir.path().join("b.key"), dir.path().join("c.key"), dir.path().join("d.key"));
        for (path, mode) in [(&open, 0o644), (&group, 0o640), (&closed, 0o600)] {
            fs::write(path, b"key").unwrap();
            set(path, mode);
        }
        let found = loose(&[open.clone(), group.clone(), closed, missing]);
        assert_eq!(found, vec![Loose { path: open.clone(), mode: 0o644 }, Loose { path: group, mode: 0o640 }]);
        assert!(found[0].to_string().contains("mode 0644"), "{}", found[0]);
        assert!(found[0].to_string().contains(&format!("chmod 600 {}", open.display())), "{}", found[0]);
    }

    #[test]
    fn created_files_are_owner_only_and_looser_ones_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("haven.db");
        assert!(create(&db).unwrap());
        assert_eq!(mode_of(&db).unwrap(), MODE);
        assert!(!create(&db).unwrap(), "an existing file is kept");
        assert_eq!(tighten(&db).unwrap(), None, "already owner-only");
        set(&db, 0o644);
        assert_eq!(tighten(&db).unwrap(), Some(0o644));
        assert_eq!(mode_of(&db).unwrap(), MODE);
        assert_eq!(tighten(&dir.path().join("absent")).unwrap(), None);
    }
}
