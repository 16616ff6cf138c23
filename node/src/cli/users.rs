//! `haven-node users add|passwd|role|disable|enable|remove|reset-second-factor|list`: the people who may use this node,
//! kept in its database. Run beside the node, on the same database file; every change is in force in
//! a running node at once, with no restart and no signal. A password is read from standard input,
//! never from an argument, which other users of the machine can see in the process list.

use std::path::PathBuf;

use haven_trust::clock::SystemClock;
use haven_trust::ids::{PersonId, Role};

use super::error::CliError;
use super::output::{Out, Table};
use crate::password::{Password, Passwords};
use crate::people::{Import, People, PeopleError};
use crate::store::NodeStore;

/// Where a command reads a password from: standard input in the binary, bytes in tests.
pub type In<'a> = &'a mut (dyn std::io::BufRead + Send);

/// The `users` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsersCommand {
    /// Add a person and print their token once. For a person already on this node: set their role,
    /// enable them and print a new token (their earlier tokens are revoked).
    Add {
        #[command(flatten)]
        db: NodeDatabase,
        #[arg(long)]
        name: PersonId,
        #[arg(long)]
        role: Role,
        /// Also set their password, read as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a person's password, read as one line from standard input.
    Passwd {
        #[command(flatten)]
        db: NodeDatabase,
        #[arg(value_name = "NAME")]
        name: PersonId,
    },
    /// Change a person's role; their tokens are revoked (`users add` gives a new one).
    Role {
        #[command(flatten)]
        db: NodeDatabase,
        #[arg(value_name = "NAME")]
        name: PersonId,
        #[arg(value_name = "ROLE")]
        role: Role,
    },
    /// Remove a person and their tokens.
    Remove {
        #[command(flatten)]
        db: NodeDatabase,
        #[arg(value_name = "NAME")]
        name: PersonId,
    },
    /// Disable a person: refused until enabled again; their tokens are revoked.
    Disable {
        #[command(flatten)]
        db: NodeDatabase,
        #[arg(value_name = "NAME")]
        name: PersonId,
    },
    /// Enable a disabled person again (with a password they had; `users add` gives a new token).
    Enable {
        #[command(flatten)]
        db: NodeDatabase,
        #[arg(value_name = "NAME")]
        name: PersonId,
    },
    /// Remove a person's console second factor (a lost phone) and end their console sessions; they
    /// enroll again at their next sign-in, and their recovery codes no longer work.
    ResetSecondFactor {
        #[command(flatten)]
        db: NodeDatabase,
        #[arg(value_name = "NAME")]
        name: PersonId,
    },
    /// List the people on this node: role, state, whether a password is set, tokens in force.
    List {
        #[command(flatten)]
        db: NodeDatabase,
    },
}

impl UsersCommand {
    /// Whether the command reads a password from standard input.
    pub fn reads_password(&self) -> bool {
        matches!(self, UsersCommand::Add { password_stdin: true, .. } | UsersCommand::Passwd { .. })
    }
}

/// The node database a command changes.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeDatabase {
    /// The node's database (the file `haven-node serve --database` opens).
    #[arg(long, env = "HAVEN_NODE_DATABASE", default_value = "haven-node.db")]
    pub database: String,
    /// The users file of earlier versions (`haven-node serve --users`). A database that has never
    /// imported one, and holds nobody, imports it first, as the node does on its first start.
    #[arg(long, env = "HAVEN_USERS", default_value = "users.toml")]
    pub users: PathBuf,
}

/// Runs a `users` subcommand; a password comes from `input`, notices about the users file go to `err`.
pub async fn run(cmd: &UsersCommand, input: In<'_>, out: Out<'_>, err: Out<'_>) -> Result<(), CliError> {
    let (db, creates) = match cmd {
        UsersCommand::Add { db, .. } => (db, true),
        UsersCommand::Passwd { db, .. }
        | UsersCommand::Role { db, .. }
        | UsersCommand::Remove { db, .. }
        | UsersCommand::Disable { db, .. }
        | UsersCommand::Enable { db, .. }
        | UsersCommand::ResetSecondFactor { db, .. }
        | UsersCommand::List { db } => (db, false),
    };
    // Read before the database is touched, so a refused password changes nothing.
    let password = if cmd.reads_password() {
        Some(Password::read_line(input).map_err(|e| CliError::Refused(e.to_string()))?)
    } else {
        None
    };
    let (store, people) = open(db, creates, err).await?;
    let result = change(cmd, &db.database, &store, &people, password, out).await;
    store.pool().close().await;
    result
}

async fn change(
    cmd: &UsersCommand,
    database: &str,
    store: &NodeStore,
    people: &People,
    password: Option<Password>,
    out: Out<'_>,
) -> Result<(), CliError> {
    let failed = |e: PeopleError| failure(e, database);
    let passwords = Passwords::new(people.clone());
    match cmd {
        UsersCommand::Add { name, role, .. } => {
            let hash = match &password {
                Some(p) => Some(passwords.hash(p).await.map_err(|e| CliError::File(e.to_string()))?),
                None => None,
            };
            let added = people.add(name, *role, hash.as_deref()).await.map_err(failed)?;
            let with_password = if hash.is_some() { ", with the password given" } else { "" };
            if added.replaced {
                writeln!(
                    out,
                    "gave {name} ({role}{with_password}) a new token in {database}; their earlier tokens are revoked"
                )?;
            } else {
                writeln!(out, "added {name} ({role}{with_password}) to {database}")?;
            }
            writeln!(out, "token (shown once): {}", added.token)?;
        }
        UsersCommand::Passwd { name, .. } => {
            let Some(password) = &password else { return Err(CliError::Refused("no password given".into())) };
            let hash = passwords.hash(password).await.map_err(|e| CliError::File(e.to_string()))?;
            people.set_password_hash(name, &hash).await.map_err(failed)?;
            writeln!(out, "set the password of {name} in {database}")?;
        }
        UsersCommand::Role { name, role, .. } => match people.set_role(name, *role).await.map_err(failed)? {
            Some(was) => writeln!(
                out,
                "{name} is now {role} (was {was}) in {database}; their tokens are revoked: `haven-node users add --name {name} --role {role}` gives a new one"
            )?,
            None => writeln!(out, "{name} is already {role} in {database}; nothing changed")?,
        },
        UsersCommand::Remove { name, .. } => {
            let role = people.remove(name).await.map_err(failed)?;
            writeln!(out, "removed {name} ({role}) from {database}; their tokens are refused from now on")?;
        }
        UsersCommand::Disable { name, .. } => {
            if people.set_disabled(name, true).await.map_err(failed)? {
                writeln!(
                    out,
                    "disabled {name} in {database}; they are refused from now on and their tokens are revoked"
                )?;
            } else {
                writeln!(out, "{name} is already disabled in {database}; nothing changed")?;
            }
        }
        UsersCommand::Enable { name, .. } => {
            if people.set_disabled(name, false).await.map_err(failed)? {
                writeln!(
                    out,
                    "enabled {name} in {database}; their earlier tokens stay revoked: `haven-node users add --name {name} --role ...` gives a new one"
                )?;
            } else {
                writeln!(out, "{name} is already enabled in {database}; nothing changed")?;
            }
        }
        UsersCommand::ResetSecondFactor { name, .. } => {
            if people.credentials(name).await.map_err(failed)?.is_none() {
                let held = people.list().await.map_err(failed)?.iter().map(|p| p.name.to_string()).collect::<Vec<_>>();
                return Err(failure(PeopleError::Unknown { name: name.clone(), held: held.join(", ") }, database));
            }
            let factor = crate::totp::SecondFactor::new(store.clone(), std::sync::Arc::new(SystemClock));
            if factor.reset(name).await.map_err(|e| CliError::File(format!("{database}: {e}")))? {
                writeln!(
                    out,
                    "removed the second factor of {name} in {database} and ended their console sessions; they enroll again at their next sign-in"
                )?;
            } else {
                writeln!(out, "{name} has no second factor in {database}; nothing changed")?;
            }
        }
        UsersCommand::List { .. } => {
            let mut table = Table::new(&["NAME", "ROLE", "STATE", "PASSWORD", "TOKENS"]);
            for p in people.list().await.map_err(failed)? {
                table.row(vec![
                    p.name.to_string(),
                    p.role.to_string(),
                    (if p.disabled { "disabled" } else { "enabled" }).to_owned(),
                    (if p.has_password { "set" } else { "none" }).to_owned(),
                    p.tokens.to_string(),
                ]);
            }
            table
                .write(out, &format!("nobody on this node yet ({database}): add people with `haven-node users add`"))?;
        }
    }
    Ok(())
}

/// Opens the node database, importing the users file first where the node would. Only `add` makes a
/// database that does not exist yet: for the others a missing file is a wrong `--database`.
async fn open(db: &NodeDatabase, creates: bool, err: Out<'_>) -> Result<(NodeStore, People), CliError> {
    let path = &db.database;
    if !creates && !std::path::Path::new(path).exists() {
        return Err(CliError::File(format!(
            "no node database at {path}: give --database (or HAVEN_NODE_DATABASE) the file `haven-node serve --database` uses"
        )));
    }
    let store = NodeStore::open(path).await.map_err(|e| CliError::File(e.to_string()))?;
    let people = People::new(store.clone(), std::sync::Arc::new(SystemClock)).await.map_err(|e| failure(e, path))?;
    let file = db.users.display();
    match people.import_once(&db.users).await.map_err(|e| failure(e, path))? {
        Import::Imported { count } => writeln!(
            err,
            "haven-node: imported {count} people from the users file {file} into {path}; the file is no longer read (remove it once `haven-node users list` shows everyone)"
        )?,
        Import::NotRead { held } => writeln!(
            err,
            "haven-node: the users file {file} is not read: {path} already holds {held} people (`haven-node users list`)"
        )?,
        Import::Done | Import::Nobody => {}
    }
    Ok((store, people))
}

/// A failed change, as the administrator should see it.
fn failure(e: PeopleError, database: &str) -> CliError {
    match e {
        PeopleError::Unknown { name, held } => {
            CliError::NotFound(format!("no person `{name}` in {database} (it holds: {held})"))
        }
        PeopleError::UsersFile(e) => CliError::File(format!("users file: {e}")),
        e => CliError::File(format!("{database}: {e}")),
    }
}
