//! The organization's people, kept in the node's database: each with a role, the node tokens the
//! command line signs in with, and, once set, a password (checked by [`crate::password`]).
//!
//! Every call is signed in against the database itself, never against a copy, so every change is in
//! force on the very next call: one made in this process and one made by `haven-node users` beside a
//! running node alike. A change also bumps a version in the same transaction; a running node follows
//! it ([`People::follow`]) so that a long call, an inbox watch, ends as soon as its person is removed,
//! disabled or changes role.
//!
//! Tokens are 256-bit random values, so their SHA-256 is all that is kept: there is nothing to
//! brute-force. Disabling a person or changing their role revokes every token they hold (a revoked
//! token is refused with that reason); removing a person deletes their tokens.
//!
//! Earlier versions kept people in a users file ([`crate::users`]). A node whose database has never
//! imported one imports it once, on first start ([`People::import_once`]), and never reads it again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::watch;
use tonic::Status;

use haven_trust::clock::SharedClock;
use haven_trust::ids::{PersonId, Role};

use crate::store::NodeStore;
use crate::users::Users;
pub use crate::users::{mint_token, token_sha256};

/// How often a running node looks for changes made by another process (`haven-node users`) to end
/// the inbox watches they concern. Ordinary calls do not wait for it: each is signed in against the
/// database.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// How many names an "unknown person" error lists.
const LISTED_NAMES: i64 = 20;

/// A signed-in person: who they are and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: PersonId,
    pub role: Role,
}

/// A person as `haven-node users list` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: PersonId,
    pub role: Role,
    pub disabled: bool,
    /// Whether a password is set; the hash itself is never shown.
    pub has_password: bool,
    /// Tokens that still sign in: issued and not revoked.
    pub tokens: i64,
}

/// What a password is checked against ([`crate::password::Passwords::verify`]).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub person: Person,
    pub disabled: bool,
    /// The argon2id PHC string; `None` while no password is set.
    pub password_hash: Option<String>,
}

/// A person added, or given a new token, by [`People::add`].
#[derive(Debug)]
pub struct Added {
    /// The new token: shown to the administrator once, never stored.
    pub token: String,
    /// Whether the person was already on this node (their earlier tokens are now revoked).
    pub replaced: bool,
}

/// What [`People::import_once`] did with the users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    /// The file was imported now, this many people; it is never read again.
    Imported { count: usize },
    /// Decided at an earlier start (imported, or not read): nothing to say.
    Done,
    /// The database already held people, added with `haven-node users` before any import, so the file
    /// is not read, now or later.
    NotRead { held: i64 },
    /// No file and nobody in the database: nobody can sign in until `haven-node users add`. The file
    /// is still imported at a later start if it appears while the database holds nobody.
    Nobody,
}

/// Why a change to the people could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    /// No person of that name on this node; `held` lists (some of) the names it holds.
    #[error("no person `{name}` on this node (it holds: {held})")]
    Unknown { name: PersonId, held: String },
    /// The users file to import could not be read or parsed; nothing was imported.
    #[error("users file: {0}")]
    UsersFile(String),
    /// A row holds a value this node cannot read: the database was changed by something else.
    #[error("the node database holds {0}; it was changed by something other than haven-node")]
    Damaged(String),
    #[error("node database: {0}")]
    Store(#[from] sqlx::Error),
}

fn person(name: String, role: String) -> Result<Person, PeopleError> {
    let name = PersonId::parse(&name).map_err(|e| PeopleError::Damaged(format!("a person named badly: {e}")))?;
    let role = Role::parse(&role).map_err(|e| PeopleError::Damaged(format!("person `{name}`: {e}")))?;
    Ok(Person { name, role })
}

/// The node's people, in its database. Cheap to clone: clones share the database and the change
/// signal.
#[derive(Clone)]
pub struct People {
    store: NodeStore,
    clock: SharedClock,
    /// The newest people version this process has seen (see [`People::follow`]).
    changed: Arc<watch::Sender<i64>>,
}

impl People {
    /// The people in `store`'s database.
    pub async fn new(store: NodeStore, clock: SharedClock) -> Result<People, PeopleError> {
        let version = version(store.pool()).await?;
        Ok(People { store, clock, changed: Arc::new(watch::channel(version).0) })
    }

    /// Imports the users file at `file` if this database has never decided about one and holds
    /// nobody; see [`Import`] for what else it may find. A file that cannot be read or parsed imports
    /// nobody and is an error.
    pub async fn import_once(&self, file: &Path) -> Result<Import, PeopleError> {
        let now = self.clock.now_micros();
        let mut tx = self.store.pool().begin().await?;
        // A write first, so this transaction holds the database's write lock from here on: a node
        // starting and a `haven-node users` command cannot both import.
        let claimed = sqlx::query(
            "INSERT INTO people_import (id, at_micros, file, imported) VALUES (1, $1, $2, 0) ON CONFLICT (id) DO NOTHING",
        )
        .bind(now)
        .bind(file.display().to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(Import::Done);
        }
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM person").fetch_one(&mut *tx).await?;
        if held > 0 {
            tx.commit().await?;
            return Ok(if file.exists() { Import::NotRead { held } } else { Import::Done });
        }
        if !file.exists() {
            // Nothing decided: a file that appears before anyone is added is still imported.
            tx.rollback().await?;
            return Ok(Import::Nobody);
        }
        let users = Users::load(file).map_err(|e| PeopleError::UsersFile(e.to_string()))?;
        for u in &users.user {
            sqlx::query(
                "INSERT INTO person (name, role, disabled, password_hash, created_at_micros, changed_at_micros) \
                 VALUES ($1, $2, $3, NULL, $4, $4)",
            )
            .bind(u.name.as_str())
            .bind(u.role.as_str())
            .bind(i64::from(u.disabled))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // A person the file lists as disabled comes in with their token revoked, as disabling
            // does from now on.
            sqlx::query(
                "INSERT INTO person_token (token_sha256, person, issued_at_micros, revoked_at_micros) VALUES ($1, $2, $3, $4)",
            )
            .bind(u.token_sha256.to_ascii_lowercase())
            .bind(u.name.as_str())
            .bind(now)
            .bind(u.disabled.then_some(now))
            .execute(&mut *tx)
            .await?;
        }
        let count = users.user.len();
        sqlx::query("UPDATE people_import SET imported = $1 WHERE id = 1")
            .bind(i64::try_from(count).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        let v = bump(&mut tx).await?;
        tx.commit().await?;
        self.saw(v);
        Ok(Import::Imported { count })
    }

    /// The person signed in on a request, from `authorization: Bearer <node token>`: every Node and
    /// Audit method of the node starts here. A removed person's token is unknown; a disabled person,
    /// and a token revoked by a change of role or by disabling, are refused with that reason.
    pub async fn sign_in(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Person, Status> {
        let raw = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("sign in: send `authorization: Bearer <your node token>`"))?;
        let token = raw
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization header must be `Bearer <your node token>`"))?;
        let row: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT p.name, p.role, p.disabled, t.revoked_at_micros FROM person_token t \
             JOIN person p ON p.name = t.person WHERE t.token_sha256 = $1",
        )
        .bind(token_sha256(token))
        .fetch_optional(self.store.pool())
        .await
        .map_err(crate::store::status)?;
        let Some((name, role, disabled, revoked)) = row else {
            return Err(Status::unauthenticated(
                "unknown node token; ask your administrator for one (`haven-node users add`)",
            ));
        };
        let person = person(name, role).map_err(|e| {
            tracing::error!(error = %e, "signing a person in");
            Status::internal("this node's list of people is damaged; its operator must look at its log")
        })?;
        if disabled != 0 {
            return Err(Status::unauthenticated(format!(
                "person `{}` is disabled on this node; ask your administrator",
                person.name
            )));
        }
        if revoked.is_some() {
            return Err(Status::unauthenticated(format!(
                "this node token of `{}` was revoked when their role changed or they were disabled; ask your administrator for a new one (`haven-node users add`)",
                person.name
            )));
        }
        Ok(person)
    }

    /// Adds a person with a new token. For a person already on this node, sets their role, enables
    /// them and gives them a new token, revoking every token they held. A password hash, when given,
    /// is set in the same transaction; without one, a password already set stays.
    pub async fn add(&self, name: &PersonId, role: Role, password_hash: Option<&str>) -> Result<Added, PeopleError> {
        let now = self.clock.now_micros();
        let token = mint_token();
        let mut tx = self.store.pool().begin().await?;
        let v = bump(&mut tx).await?;
        let replaced = exists(&mut tx, name).await?;
        sqlx::query(
            "INSERT INTO person (name, role, disabled, password_hash, created_at_micros, changed_at_micros) \
             VALUES ($1, $2, 0, $3, $4, $4) \
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, disabled = 0, \
             password_hash = COALESCE(excluded.password_hash, person.password_hash), changed_at_micros = excluded.changed_at_micros",
        )
        .bind(name.as_str())
        .bind(role.as_str())
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        revoke_tokens(&mut tx, name, now).await?;
        sqlx::query("INSERT INTO person_token (token_sha256, person, issued_at_micros) VALUES ($1, $2, $3)")
            .bind(token_sha256(&token))
            .bind(name.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.saw(v);
        Ok(Added { token, replaced })
    }

    /// Removes a person: their tokens are deleted with them. Returns the role they had.
    pub async fn remove(&self, name: &PersonId) -> Result<Role, PeopleError> {
        let (mut tx, v, found) = self.change(name).await?;
        sqlx::query("DELETE FROM person_token WHERE person = $1").bind(name.as_str()).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM person WHERE name = $1").bind(name.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        self.saw(v);
        Ok(found.person.role)
    }

    /// Disables or enables a person. Disabling revokes every token they hold; enabling gives none
    /// back (`add` gives a new one). Returns whether anything changed.
    pub async fn set_disabled(&self, name: &PersonId, disabled: bool) -> Result<bool, PeopleError> {
        let now = self.clock.now_micros();
        let (mut tx, v, found) = self.change(name).await?;
        if found.disabled == disabled {
            return Ok(false);
        }
        sqlx::query("UPDATE person SET disabled = $2, changed_at_micros = $3 WHERE name = $1")
            .bind(name.as_str())
            .bind(i64::from(disabled))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if disabled {
            revoke_tokens(&mut tx, name, now).await?;
        }
        tx.commit().await?;
        self.saw(v);
        Ok(true)
    }

    /// Changes a person's role, revoking every token they hold. Returns the role they had, or `None`
    /// when they already had this one (nothing changed, nothing revoked).
    pub async fn set_role(&self, name: &PersonId, role: Role) -> Result<Option<Role>, PeopleError> {
        let now = self.clock.now_micros();
        let (mut tx, v, found) = self.change(name).await?;
        if found.person.role == role {
            return Ok(None);
        }
        sqlx::query("UPDATE person SET role = $2, changed_at_micros = $3 WHERE name = $1")
            .bind(name.as_str())
            .bind(role.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        revoke_tokens(&mut tx, name, now).await?;
        tx.commit().await?;
        self.saw(v);
        Ok(Some(found.person.role))
    }

    /// Sets a person's password hash (an argon2id PHC string from
    /// [`crate::password::Passwords::hash`]).
    pub async fn set_password_hash(&self, name: &PersonId, password_hash: &str) -> Result<(), PeopleError> {
        let now = self.clock.now_micros();
        let mut tx = self.store.pool().begin().await?;
        let v = bump(&mut tx).await?;
        let set = sqlx::query("UPDATE person SET password_hash = $2, changed_at_micros = $3 WHERE name = $1")
            .bind(name.as_str())
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if set == 0 {
            drop(tx);
            return Err(self.unknown(name).await);
        }
        tx.commit().await?;
        self.saw(v);
        Ok(())
    }

    /// What a password for `name` is checked against; `None` when no such person.
    pub async fn credentials(&self, name: &PersonId) -> Result<Option<Credentials>, PeopleError> {
        let mut conn = self.store.pool().acquire().await?;
        self.find(&mut conn, name).await
    }

    /// Everyone on this node, by name.
    pub async fn list(&self) -> Result<Vec<Listed>, PeopleError> {
        let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT p.name, p.role, p.disabled, p.password_hash IS NOT NULL, \
             (SELECT COUNT(*) FROM person_token t WHERE t.person = p.name AND t.revoked_at_micros IS NULL) \
             FROM person p ORDER BY p.name",
        )
        .fetch_all(self.store.pool())
        .await?;
        rows.into_iter()
            .map(|(name, role, disabled, has_password, tokens)| {
                let p = person(name, role)?;
                Ok(Listed {
                    name: p.name,
                    role: p.role,
                    disabled: disabled != 0,
                    has_password: has_password != 0,
                    tokens,
                })
            })
            .collect()
    }

    /// Changes as they are seen: the value is the people version, and it moves whenever someone was
    /// added, removed, disabled, enabled or given a new role, token or password.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.changed.subscribe()
    }

    /// Follows changes made by other processes until `stop` turns true, so that [`People::subscribe`]
    /// sees them too (changes made through this process are seen as they commit).
    pub async fn follow(self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(FOLLOW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                changed = stop.changed() => if changed.is_err() {
                    return;
                },
                _ = every.tick() => match version(self.store.pool()).await {
                    Ok(v) => self.saw(v),
                    // Quiet: the calls themselves report a database in trouble.
                    Err(e) => tracing::debug!(error = %e, "reading the people version"),
                },
            }
        }
    }

    fn saw(&self, version: i64) {
        self.changed.send_if_modified(|seen| {
            let newer = version > *seen;
            if newer {
                *seen = version;
            }
            newer
        });
    }

    /// Begins a change to the person `name`: the transaction, with the people version already moved
    /// (rolled back with it if the change is not committed), and what is stored of them. A person this
    /// node does not hold is an error naming who it does hold.
    async fn change(
        &self,
        name: &PersonId,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Sqlite>, i64, Credentials), PeopleError> {
        let mut tx = self.store.pool().begin().await?;
        let v = bump(&mut tx).await?;
        match self.find(&mut tx, name).await? {
            Some(found) => Ok((tx, v, found)),
            None => {
                drop(tx);
                Err(self.unknown(name).await)
            }
        }
    }

    async fn find(&self, conn: &mut SqliteConnection, name: &PersonId) -> Result<Option<Credentials>, PeopleError> {
        let row: Option<(String, String, i64, Option<String>)> =
            sqlx::query_as("SELECT name, role, disabled, password_hash FROM person WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        row.map(|(name, role, disabled, password_hash)| {
            Ok(Credentials { person: person(name, role)?, disabled: disabled != 0, password_hash })
        })
        .transpose()
    }

    /// The error for a name this node does not hold, listing (some of) those it does.
    async fn unknown(&self, name: &PersonId) -> PeopleError {
        let held = match self.names().await {
            Ok(held) => held,
            Err(e) => return e,
        };
        PeopleError::Unknown { name: name.clone(), held }
    }

    async fn names(&self) -> Result<String, PeopleError> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM person ORDER BY name LIMIT $1")
            .bind(LISTED_NAMES)
            .fetch_all(self.store.pool())
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM person").fetch_one(self.store.pool()).await?;
        let mut held = names.join(", ");
        if names.is_empty() {
            held = "nobody".to_owned();
        } else if total > LISTED_NAMES {
            held.push_str(&format!(" and {} more", total - LISTED_NAMES));
        }
        Ok(held)
    }
}

async fn version(pool: &sqlx::SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM people_version WHERE id = 1").fetch_one(pool).await
}

/// Bumps the people version. Every change does this first: being a write, it takes the database's
/// write lock before the change reads anything, so two changes never interleave.
async fn bump(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("UPDATE people_version SET version = version + 1 WHERE id = 1 RETURNING version")
        .fetch_one(&mut *conn)
        .await
}

async fn exists(conn: &mut SqliteConnection, name: &PersonId) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM person WHERE name = $1")
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

async fn revoke_tokens(conn: &mut SqliteConnection, name: &PersonId, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE person_token SET revoked_at_micros = $2 WHERE person = $1 AND revoked_at_micros IS NULL")
        .bind(name.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use haven_trust::clock::SystemClock;

    use super::*;

    fn name(n: &str) -> PersonId {
        PersonId::parse(n).unwrap()
    }

    fn bearer(token: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("authorization", format!("Bearer {token}").parse().unwrap());
        m
    }

    async fn people() -> (tempfile::TempDir, People) {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("node.db").display().to_string()).await.unwrap();
        let people = People::new(store, Arc::new(SystemClock)).await.unwrap();
        (dir, people)
    }

    #[tokio::test]
    async fn a_token_signs_in_only_its_person_and_only_its_hash_is_kept() {
        let (_dir, people) = people().await;
        let casey = people.add(&name("casey"), Role::Caseworker, None).await.unwrap();
        assert!(!casey.replaced);
        let p = people.sign_in(&bearer(&casey.token)).await.unwrap();
        assert_eq!(p, Person { name: name("casey"), role: Role::Caseworker });
        let e = people.sign_in(&bearer("hvn_wrong")).await.unwrap_err();
        assert!(e.message().contains("unknown node token"), "{e:?}");
        let kept: Vec<String> =
            sqlx::query_scalar("SELECT token_sha256 FROM person_token").fetch_all(people.store.pool()).await.unwrap();
        assert_eq!(kept, [token_sha256(&casey.token)]);
    }

    /// Disabling revokes: enabled again, the person is refused with their old token (told it was
    /// revoked) until they are given a new one.
    #[tokio::test]
    async fn disabling_revokes_the_tokens_and_enabling_gives_none_back() {
        let (_dir, people) = people().await;
        let old = people.add(&name("casey"), Role::Caseworker, None).await.unwrap().token;
        assert!(people.set_disabled(&name("casey"), true).await.unwrap());
        assert!(!people.set_disabled(&name("casey"), true).await.unwrap(), "already disabled");
        let e = people.sign_in(&bearer(&old)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("`casey` is disabled"), "{e:?}");
        assert!(people.set_disabled(&name("casey"), false).await.unwrap());
        let e = people.sign_in(&bearer(&old)).await.unwrap_err();
        assert!(e.message().contains("was revoked"), "{e:?}");
        let new = people.add(&name("casey"), Role::Caseworker, None).await.unwrap();
        assert!(new.replaced);
        assert_eq!(people.sign_in(&bearer(&new.token)).await.unwrap().name, name("casey"));
    }

    #[tokio::test]
    async fn a_change_of_role_revokes_the_tokens_and_the_same_role_changes_nothing() {
        let (_dir, people) = people().await;
        let token = people.add(&name("casey"), Role::Caseworker, None).await.unwrap().token;
        assert_eq!(people.set_role(&name("casey"), Role::Caseworker).await.unwrap(), None);
        assert!(people.sign_in(&bearer(&token)).await.is_ok(), "the same role revokes nothing");
        assert_eq!(people.set_role(&name("casey"), Role::PrivacyOfficer).await.unwrap(), Some(Role::Caseworker));
        let e = people.sign_in(&bearer(&token)).await.unwrap_err();
        assert!(e.message().contains("was revoked"), "{e:?}");
    }

    #[tokio::test]
    async fn an_unknown_name_is_refused_naming_who_is_there_and_changes_nothing() {
        let (_dir, people) = people().await;
        for n in ["sam", "casey"] {
            people.add(&name(n), Role::Caseworker, None).await.unwrap();
        }
        let before = *people.subscribe().borrow();
        for e in [
            people.remove(&name("nobody")).await.unwrap_err(),
            people.set_disabled(&name("nobody"), true).await.unwrap_err(),
            people.set_role(&name("nobody"), Role::Auditor).await.unwrap_err(),
            people.set_password_hash(&name("nobody"), "$argon2id$x").await.unwrap_err(),
        ] {
            assert_eq!(e.to_string(), "no person `nobody` on this node (it holds: casey, sam)");
        }
        assert_eq!(version(people.store.pool()).await.unwrap(), before, "nothing was changed");
    }

    #[tokio::test]
    async fn every_change_moves_the_version_that_watches_follow() {
        let (_dir, people) = people().await;
        let mut changes = people.subscribe();
        people.add(&name("casey"), Role::Caseworker, None).await.unwrap();
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        people.set_disabled(&name("casey"), true).await.unwrap();
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        // A change through another handle on the same database, as `haven-node users` makes it, is
        // seen once followed.
        let other = People::new(people.store.clone(), Arc::new(SystemClock)).await.unwrap();
        other.remove(&name("casey")).await.unwrap();
        assert!(!changes.has_changed().unwrap());
        let (stop, stopped) = watch::channel(false);
        let follower = tokio::spawn(people.clone().follow(stopped));
        changes.changed().await.unwrap();
        stop.send(true).unwrap();
        follower.await.unwrap();
    }

    /// The file is imported once: its tokens sign in (a person it lists as disabled is imported
    /// disabled, token revoked), and later calls read it no more, even once everyone is removed.
    #[tokio::test]
    async fn the_users_file_is_imported_once() {
        let (dir, people) = people().await;
        let file = dir.path().join("users.toml");
        assert_eq!(people.import_once(&file).await.unwrap(), Import::Nobody, "no file yet: nothing decided");
        let mut users = Users::default();
        let casey = users.add(name("casey"), Role::Caseworker);
        let lee = users.add(name("lee"), Role::Liaison);
        users.set_disabled(&name("lee"), true);
        users.save(&file).unwrap();

        assert_eq!(people.import_once(&file).await.unwrap(), Import::Imported { count: 2 });
        assert_eq!(people.sign_in(&bearer(&casey)).await.unwrap().name, name("casey"));
        assert!(people.sign_in(&bearer(&lee)).await.unwrap_err().message().contains("`lee` is disabled"));
        people.set_disabled(&name("lee"), false).await.unwrap();
        assert!(people.sign_in(&bearer(&lee)).await.unwrap_err().message().contains("was revoked"));

        people.remove(&name("casey")).await.unwrap();
        people.remove(&name("lee")).await.unwrap();
        assert_eq!(people.import_once(&file).await.unwrap(), Import::Done);
        assert!(people.list().await.unwrap().is_empty(), "removed people are not imported again");
    }

    /// People added before any import keep the file out, and the node says so once.
    #[tokio::test]
    async fn a_database_that_already_holds_people_does_not_read_the_file() {
        let (dir, people) = people().await;
        let file = dir.path().join("users.toml");
        let mut users = Users::default();
        let old = users.add(name("casey"), Role::Caseworker);
        users.save(&file).unwrap();
        people.add(&name("sam"), Role::Caseworker, None).await.unwrap();
        assert_eq!(people.import_once(&file).await.unwrap(), Import::NotRead { held: 1 });
        assert_eq!(people.import_once(&file).await.unwrap(), Import::Done, "said once");
        assert!(people.sign_in(&bearer(&old)).await.is_err());
    }

    #[tokio::test]
    async fn the_listing_shows_roles_states_passwords_and_live_tokens() {
        let (_dir, people) = people().await;
        people.add(&name("sam"), Role::Liaison, Some("$argon2id$fictional")).await.unwrap();
        people.add(&name("casey"), Role::Caseworker, None).await.unwrap();
        people.add(&name("casey"), Role::Caseworker, None).await.unwrap();
        people.set_disabled(&name("sam"), true).await.unwrap();
        let listed = people.list().await.unwrap();
        assert_eq!(
            listed,
            [
                Listed { name: name("casey"), role: Role::Caseworker, disabled: false, has_password: false, tokens: 1 },
                Listed { name: name("sam"), role: Role::Liaison, disabled: true, has_password: true, tokens: 0 },
            ]
        );
    }
}
