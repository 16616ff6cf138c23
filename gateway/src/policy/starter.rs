//! The starter bundle for a real network (`policies/starter/`), built into the binary so that
//! `haven-gateway policy init DIR --orgs orgs.toml` can write it next to the operator's own registry.
//!
//! Its rules name organization types only (`type:ngo`, ...), never ids, so it checks clean with any
//! registry: unlike the sample bundle, whose rules name the sample organizations.

use std::path::{Path, PathBuf};

use haven_trust::registry::Registry;
use haven_trust::source::Located;

/// Every file of the starter bundle but the registry, by path relative to the bundle directory.
pub const FILES: &[(&str, &str)] = &[
    ("network.toml", include_str!("../../../policies/starter/network.toml")),
    ("purposes.toml", include_str!("../../../policies/starter/purposes.toml")),
    ("schema.toml", include_str!("../../../policies/starter/schema.toml")),
    ("rules/boundaries.toml", include_str!("../../../policies/starter/rules/boundaries.toml")),
    ("rules/law-enforcement.toml", include_str!("../../../policies/starter/rules/law-enforcement.toml")),
    ("rules/referrals.toml", include_str!("../../../policies/starter/rules/referrals.toml")),
];

/// The starter registry: placeholders to replace with the network's members.
pub const PLACEHOLDER_ORGS: &str = include_str!("../../../policies/starter/orgs.toml");

/// Writes the starter bundle into `dir` (created if missing), with `orgs` (an `orgs.toml`, checked
/// first) as its registry, or the placeholders without one. Nothing is written if `orgs` has a
/// problem or if any file to be written exists already. Returns the files written.
pub fn write(dir: &Path, orgs: Option<&Path>) -> Result<Vec<PathBuf>, Vec<Located>> {
    let whole = |file: &Path, message: String| Located { file: file.to_owned(), line: 0, col: 0, message };
    let registry_text = match orgs {
        Some(path) => {
            Registry::load(path, None)?;
            std::fs::read_to_string(path).map_err(|e| vec![whole(path, format!("cannot read: {e}"))])?
        }
        None => PLACEHOLDER_ORGS.to_owned(),
    };
    let files: Vec<(PathBuf, &str)> = std::iter::once(("orgs.toml", registry_text.as_str()))
        .chain(FILES.iter().copied())
        .map(|(name, text)| (dir.join(name), text))
        .collect();
    let taken: Vec<Located> = files
        .iter()
        .filter(|(path, _)| path.exists())
        .map(|(path, _)| {
            whole(path, "exists already; policy init writes a new bundle, so give an empty or new folder".into())
        })
        .collect();
    if !taken.is_empty() {
        return Err(taken);
    }
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| vec![whole(parent, format!("cannot create the folder: {e}"))])?;
        }
        std::fs::write(path, text).map_err(|e| vec![whole(path, format!("cannot write: {e}"))])?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}
