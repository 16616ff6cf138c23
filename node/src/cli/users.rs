//! `haven-node users add|remove|disable|enable`: the people who may use this node, kept in its users
//! file. These commands edit the file only; a running node puts it in force when it gets SIGHUP.

use std::path::{Path, PathBuf};

use haven_trust::ids::{PersonId, Role};

use super::error::CliError;
use super::output::Out;
use crate::users::Users;

/// What every change ends with: the file is not yet in force on a running node.
const APPLY: &str = "a running node applies the file when it gets SIGHUP (`kill -HUP <pid of haven-node serve>`)";

/// The `users` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsersCommand {
    /// Add a person (or give them a new token) and print their token once.
    Add {
        #[command(flatten)]
        file: UsersFile,
        #[arg(long)]
        name: PersonId,
        #[arg(long)]
        role: Role,
    },
    /// Remove a person: their token is refused once the node re-reads the file.
    Remove {
        #[command(flatten)]
        file: UsersFile,
        /// The person, as listed in the file.
        #[arg(value_name = "NAME")]
        name: PersonId,
    },
    /// Disable a person, keeping their entry and token: refused until enabled again.
    Disable {
        #[command(flatten)]
        file: UsersFile,
        /// The person, as listed in the file.
        #[arg(value_name = "NAME")]
        name: PersonId,
    },
    /// Enable a disabled person again, with the token they had.
    Enable {
        #[command(flatten)]
        file: UsersFile,
        /// The person, as listed in the file.
        #[arg(value_name = "NAME")]
        name: PersonId,
    },
}

/// The users file a command edits.
#[derive(Debug, Clone, clap::Args)]
pub struct UsersFile {
    /// The users file (the one `haven-node serve --users` reads).
    #[arg(long = "file", env = "HAVEN_USERS", default_value = "users.toml")]
    pub path: PathBuf,
}

/// Runs a `users` subcommand.
pub fn run(cmd: &UsersCommand, out: Out<'_>) -> Result<(), CliError> {
    match cmd {
        UsersCommand::Add { file, name, role } => {
            let path = &file.path;
            let mut users = if path.exists() { load(path)? } else { Users::default() };
            let token = users.add(name.clone(), *role);
            save(&users, path)?;
            writeln!(out, "added {name} ({role}) to {}; {APPLY}", path.display())?;
            writeln!(out, "token (shown once): {token}")?;
        }
        UsersCommand::Remove { file, name } => {
            let path = &file.path;
            let mut users = load(path)?;
            let removed = users.remove(name).ok_or_else(|| unknown(&users, name, path))?;
            save(&users, path)?;
            writeln!(out, "removed {name} ({}) from {}; {APPLY}", removed.role, path.display())?;
        }
        UsersCommand::Disable { file, name } => set_disabled(&file.path, name, true, out)?,
        UsersCommand::Enable { file, name } => set_disabled(&file.path, name, false, out)?,
    }
    Ok(())
}

fn set_disabled(path: &Path, name: &PersonId, disabled: bool, out: Out<'_>) -> Result<(), CliError> {
    let mut users = load(path)?;
    let changed = users.set_disabled(name, disabled).ok_or_else(|| unknown(&users, name, path))?;
    let done = if disabled { "disabled" } else { "enabled" };
    if !changed {
        writeln!(out, "{name} is already {done} in {}; nothing changed", path.display())?;
        return Ok(());
    }
    save(&users, path)?;
    writeln!(out, "{done} {name} in {}; {APPLY}", path.display())?;
    Ok(())
}

fn load(path: &Path) -> Result<Users, CliError> {
    Users::load(path).map_err(|e| CliError::File(e.to_string()))
}

fn save(users: &Users, path: &Path) -> Result<(), CliError> {
    users.save(path).map_err(|e| CliError::File(format!("cannot write {}: {e}", path.display())))
}

/// How many of the file's names a "no such person" error lists.
const LISTED_NAMES: usize = 20;

/// A name the file does not list, with (some of) the names it does.
fn unknown(users: &Users, name: &PersonId, path: &Path) -> CliError {
    let mut listed = users.user.iter().take(LISTED_NAMES).map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ");
    if users.user.is_empty() {
        listed = "nobody".to_owned();
    } else if users.user.len() > LISTED_NAMES {
        listed.push_str(&format!(" and {} more", users.user.len() - LISTED_NAMES));
    }
    CliError::NotFound(format!("no person `{name}` in {} (it lists: {listed})", path.display()))
}
