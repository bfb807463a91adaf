//! Users: created by name, found by name, forgotten completely.

use std::fmt;

use rusqlite::{Connection, OptionalExtension, Row};

use super::{Store, StoreError, UserId, check_name, unix_now};

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: UserId,
    /// Unique name.
    pub name: String,
    /// When the user was added, seconds since the Unix epoch.
    pub created: i64,
}

/// A user with counts, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// The user.
    pub user: User,
    /// Number of history items.
    pub history: usize,
    /// Names of the groups the user is a member of, sorted.
    pub groups: Vec<String>,
}

/// What [`Store::forget_user`] removed: rows per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// The forgotten user's name.
    pub name: String,
    /// Rows of `users` (1).
    pub users: usize,
    /// Rows of `history`.
    pub history: usize,
    /// Rows of `embeddings` (of the user's history items).
    pub embeddings: usize,
    /// Rows of `group_members`.
    pub group_members: usize,
    /// Rows of `insights`.
    pub insights: usize,
    /// Rows of `pairs`.
    pub pairs: usize,
    /// Rows of `profiles`: the user's own and those of the groups they were in.
    pub profiles: usize,
    /// Rows of `profile_layers` of those profiles.
    pub profile_layers: usize,
    /// Whether the removed rows' bytes are gone from the files when `forget` returns. False when
    /// another process kept reading the store through the wait: SQLite then keeps the old pages until
    /// that reader closes, and a later checkpoint overwrites them.
    pub erased: bool,
}

impl Forgotten {
    /// Rows removed, per table, in a fixed order.
    pub fn per_table(&self) -> [(&'static str, usize); 8] {
        [
            ("users", self.users),
            ("history", self.history),
            ("embeddings", self.embeddings),
            ("group_members", self.group_members),
            ("insights", self.insights),
            ("pairs", self.pairs),
            ("profiles", self.profiles),
            ("profile_layers", self.profile_layers),
        ]
    }
}

impl fmt::Display for Forgotten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "forgot user `{}`: removed", self.name)?;
        for (i, (table, n)) in self.per_table().into_iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep} {n} from `{table}`")?;
        }
        if !self.erased {
            write!(
                f,
                "\nnote: another process is reading the store, so the removed text stays in the file \
                 until that process closes it (chameleon overwrites it on its next write after that)"
            )?;
        }
        Ok(())
    }
}

impl Store {
    /// Add a user.
    ///
    /// # Errors
    /// [`StoreError::InvalidName`] for a name that cannot be stored; [`StoreError::UserExists`] when the
    /// name is taken.
    pub fn create_user(&self, name: &str) -> Result<User, StoreError> {
        check_name("user", name)?;
        if self.user(name)?.is_some() {
            return Err(StoreError::UserExists(name.to_string()));
        }
        create_user(&self.conn, name, unix_now())
    }

    /// The user with this name, if any.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(find_user(&self.conn, name)?)
    }

    /// The id of the user with this name, if any.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn user_id(&self, name: &str) -> Result<Option<UserId>, StoreError> {
        Ok(self.user(name)?.map(|u| u.id))
    }

    /// The user with this name, which must exist.
    ///
    /// # Errors
    /// [`StoreError::UnknownUser`] when there is none.
    pub fn require_user(&self, name: &str) -> Result<User, StoreError> {
        self.user(name)?
            .ok_or_else(|| StoreError::UnknownUser(name.to_string()))
    }

    /// The user with this name, added first if there is none (for loaders that bring their own users,
    /// such as the LaMP evaluation).
    ///
    /// # Errors
    /// [`StoreError::InvalidName`] for a name that cannot be stored.
    pub fn user_or_create(&self, name: &str) -> Result<User, StoreError> {
        match self.user(name)? {
            Some(user) => Ok(user),
            None => self.create_user(name),
        }
    }

    /// Every user with their history size and groups, ordered by name.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn users(&self) -> Result<Vec<UserSummary>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT u.id, u.name, u.created,
                    (SELECT count(*) FROM history h WHERE h.user_id = u.id),
                    (SELECT json_group_array(name) FROM
                        (SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id
                         WHERE m.user_id = u.id ORDER BY g.name))
             FROM users u ORDER BY u.name",
        )?;
        let rows = stmt.query_map([], |row| {
            let groups: String = row.get(4)?;
            Ok((user_row(row)?, row.get::<_, i64>(3)?, groups))
        })?;
        let mut users = Vec::new();
        for row in rows {
            let (user, history, groups) = row?;
            let groups = serde_json::from_str(&groups).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            users.push(UserSummary {
                user,
                history: history as usize,
                groups,
            });
        }
        Ok(users)
    }

    /// Remove every row about a user, in one transaction: their history and its embeddings, insights,
    /// pairs, group memberships and profiles, and the profiles of every group they were a member of (those were
    /// fitted on their data). Deleted content is overwritten (`secure_delete`) and the write-ahead log is
    /// checkpointed and truncated, so the text does not linger in the files.
    ///
    /// # Errors
    /// [`StoreError::UnknownUser`] when there is no such user; nothing is removed on any error.
    pub fn forget_user(&self, name: &str) -> Result<Forgotten, StoreError> {
        let tx = self.begin_write()?;
        let user =
            find_user(&tx, name)?.ok_or_else(|| StoreError::UnknownUser(name.to_string()))?;
        let mut forgotten = forget(&tx, &user)?;
        tx.commit()?;
        forgotten.erased = self.truncate_wal();
        Ok(forgotten)
    }

    /// Copy the write-ahead log into the database and empty it, so deleted rows' bytes (overwritten
    /// in the log by `secure_delete`) are overwritten in the database file too. Waits for readers in
    /// other processes up to the busy timeout; whether the checkpoint completed (a reader that stays
    /// keeps the old pages alive, and a later checkpoint finishes the job).
    pub(super) fn truncate_wal(&self) -> bool {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            })
            .is_ok_and(|busy| busy == 0)
    }
}

/// Insert a user inside the caller's transaction (the name is checked and free).
pub(super) fn create_user(conn: &Connection, name: &str, created: i64) -> Result<User, StoreError> {
    let mut stmt =
        conn.prepare_cached("INSERT INTO users (name, created) VALUES (?1, ?2) RETURNING id")?;
    let id = stmt.query_row(rusqlite::params![name, created], |row| row.get(0))?;
    Ok(User {
        id,
        name: name.to_string(),
        created,
    })
}

pub(super) fn find_user(conn: &Connection, name: &str) -> rusqlite::Result<Option<User>> {
    let mut stmt = conn.prepare_cached("SELECT id, name, created FROM users WHERE name = ?1")?;
    stmt.query_row([name], user_row).optional()
}

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        created: row.get(2)?,
    })
}

/// Delete every row about `user` inside the caller's transaction, counting them per table.
pub(super) fn forget(conn: &Connection, user: &User) -> rusqlite::Result<Forgotten> {
    let id = user.id;
    // the profiles to drop: the user's own and those of the groups they are in (so before the memberships)
    const DOOMED: &str = "SELECT id FROM profiles WHERE user_id = ?1
        UNION SELECT p.id FROM profiles p JOIN group_members m ON m.group_id = p.group_id WHERE m.user_id = ?1";
    let profile_layers = conn.execute(
        &format!("DELETE FROM profile_layers WHERE profile_id IN ({DOOMED})"),
        [id],
    )?;
    let profiles = conn.execute(
        &format!("DELETE FROM profiles WHERE id IN ({DOOMED})"),
        [id],
    )?;
    let forgotten = Forgotten {
        name: user.name.clone(),
        embeddings: conn.execute(
            "DELETE FROM embeddings WHERE history_id IN (SELECT id FROM history WHERE user_id = ?1)",
            [id],
        )?,
        history: conn.execute("DELETE FROM history WHERE user_id = ?1", [id])?,
        group_members: conn.execute("DELETE FROM group_members WHERE user_id = ?1", [id])?,
        insights: conn.execute("DELETE FROM insights WHERE user_id = ?1", [id])?,
        pairs: conn.execute("DELETE FROM pairs WHERE user_id = ?1", [id])?,
        profiles,
        profile_layers,
        users: conn.execute("DELETE FROM users WHERE id = ?1", [id])?,
        // until the caller's checkpoint says otherwise
        erased: false,
    };
    Ok(forgotten)
}
