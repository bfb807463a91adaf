//! Groups of users: the personalize stage pools a group's members and fits one profile for all of them.

use rusqlite::{Connection, OptionalExtension, params};

use super::user::find_user;
use super::{GroupId, Store, StoreError, User, check_name, unix_now};

/// A group and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembers {
    /// Row id.
    pub id: GroupId,
    /// Unique name.
    pub name: String,
    /// Member names, sorted.
    pub members: Vec<String>,
}

impl Store {
    /// Add users to a group, creating the group if it does not exist; one transaction.
    ///
    /// Returns how many of the users were not members before.
    ///
    /// # Errors
    /// [`StoreError::InvalidName`] for a group name that cannot be stored; [`StoreError::UnknownUser`]
    /// for a user that does not exist (nothing is written).
    pub fn add_to_group<S: AsRef<str>>(
        &self,
        group: &str,
        users: &[S],
    ) -> Result<usize, StoreError> {
        check_name("group", group)?;
        let tx = self.begin_write()?;
        let members = find_users(&tx, users)?;
        let group_id = group_or_create(&tx, group)?;
        let mut added = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?1, ?2)",
            )?;
            for user in &members {
                added += stmt.execute(params![group_id, user.id])?;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// Remove users from a group; one transaction. The group stays, even when it is left empty.
    ///
    /// Returns how many of the users were members.
    ///
    /// # Errors
    /// [`StoreError::UnknownGroup`], [`StoreError::UnknownUser`] (nothing is written).
    pub fn remove_from_group<S: AsRef<str>>(
        &self,
        group: &str,
        users: &[S],
    ) -> Result<usize, StoreError> {
        let tx = self.begin_write()?;
        let group_id =
            find_group(&tx, group)?.ok_or_else(|| StoreError::UnknownGroup(group.to_string()))?;
        let members = find_users(&tx, users)?;
        let mut removed = 0;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")?;
            for user in &members {
                removed += stmt.execute(params![group_id, user.id])?;
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Delete a group with its memberships and its profiles (the users stay). Returns how many members
    /// it had.
    ///
    /// # Errors
    /// [`StoreError::UnknownGroup`].
    pub fn delete_group(&self, group: &str) -> Result<usize, StoreError> {
        let tx = self.begin_write()?;
        let group_id =
            find_group(&tx, group)?.ok_or_else(|| StoreError::UnknownGroup(group.to_string()))?;
        let members = tx.execute("DELETE FROM group_members WHERE group_id = ?1", [group_id])?;
        // profiles and their layers go by `ON DELETE CASCADE`
        tx.execute("DELETE FROM groups WHERE id = ?1", [group_id])?;
        tx.commit()?;
        Ok(members)
    }

    /// The members of a group, ordered by name.
    ///
    /// # Errors
    /// [`StoreError::UnknownGroup`].
    pub fn group_members(&self, group: &str) -> Result<Vec<User>, StoreError> {
        let group_id = find_group(&self.conn, group)?
            .ok_or_else(|| StoreError::UnknownGroup(group.to_string()))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT u.id, u.name, u.created FROM users u JOIN group_members m ON m.user_id = u.id
             WHERE m.group_id = ?1 ORDER BY u.name",
        )?;
        let users = stmt
            .query_map([group_id], |row| {
                Ok(User {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    created: row.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(users)
    }

    /// Every group with its members, ordered by name.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn groups(&self) -> Result<Vec<GroupMembers>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name FROM groups ORDER BY name")?;
        let groups: Vec<(GroupId, String)> = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(groups.len());
        for (id, name) in groups {
            let members = self
                .group_members(&name)?
                .into_iter()
                .map(|u| u.name)
                .collect();
            out.push(GroupMembers { id, name, members });
        }
        Ok(out)
    }
}

pub(super) fn find_group(conn: &Connection, name: &str) -> rusqlite::Result<Option<GroupId>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM groups WHERE name = ?1")?;
    stmt.query_row([name], |row| row.get(0)).optional()
}

/// The group with this (checked) name, created if missing.
pub(super) fn group_or_create(conn: &Connection, name: &str) -> rusqlite::Result<GroupId> {
    match find_group(conn, name)? {
        Some(id) => Ok(id),
        None => conn.query_row(
            "INSERT INTO groups (name, created) VALUES (?1, ?2) RETURNING id",
            params![name, unix_now()],
            |row| row.get(0),
        ),
    }
}

/// Look up every name; the first unknown one is an error.
fn find_users<S: AsRef<str>>(conn: &Connection, names: &[S]) -> Result<Vec<User>, StoreError> {
    names
        .iter()
        .map(|name| {
            let name = name.as_ref();
            find_user(conn, name)?.ok_or_else(|| StoreError::UnknownUser(name.to_string()))
        })
        .collect()
}
