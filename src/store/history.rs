//! A user's history: the items the pipeline learns the user from.
//!
//! An item is what the user was given (`input`: a movie description, a review) and what they answered
//! (`output`: the tag they chose, the star rating, their tweet). The input may be empty: some histories
//! are just the user's own writing. Items come back ordered by time, then by the order they were added.

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::{HistoryId, InputPlace, InputProblem, Store, StoreError, UserId, unix_now};

/// Longest `input` or `output` of an item, in bytes (64 KiB): far above any real history item (a LaMP
/// review is at most a few KiB) and small enough that a runaway file is caught early.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Longest task kind, in bytes.
pub const MAX_TASK_BYTES: usize = 64;
/// Longest source id, in bytes.
pub const MAX_SOURCE_ID_BYTES: usize = 256;
/// The task kind of items that do not name one.
pub const TASK_GENERAL: &str = "general";

/// A history item to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    /// Task kind: 1 to [`MAX_TASK_BYTES`] ASCII letters, digits, `-`, `_` or `.`.
    pub task: String,
    /// What the user was given; may be empty.
    pub input: String,
    /// What the user answered; never empty.
    pub output: String,
    /// Seconds since the Unix epoch; `None` means now.
    pub time: Option<i64>,
    /// The item's id in the file it came from.
    pub source_id: Option<String>,
}

/// A stored history item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    /// Row id; also the order of items added at the same time.
    pub id: HistoryId,
    /// Whose item it is.
    pub user: UserId,
    /// Task kind.
    pub task: String,
    /// What the user was given.
    pub input: String,
    /// What the user answered.
    pub output: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// The item's id in the file it came from.
    pub source_id: Option<String>,
}

/// One history item as JSON: a line of a history file, an entry of an export, a line of
/// `chameleon history list`. Only `input` and `output` are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// What the user was given.
    pub input: String,
    /// What the user answered.
    pub output: String,
    /// Task kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    /// The item's id in its source; a JSON string or number.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub id: Option<String>,
}

impl HistoryRecord {
    /// The item to store, with `default_task` when the record names none.
    pub fn into_item(self, default_task: &str) -> NewItem {
        NewItem {
            task: self.task.unwrap_or_else(|| default_task.to_string()),
            input: self.input,
            output: self.output,
            time: self.time,
            source_id: self.id,
        }
    }
}

impl From<&HistoryItem> for HistoryRecord {
    fn from(item: &HistoryItem) -> Self {
        HistoryRecord {
            input: item.input.clone(),
            output: item.output.clone(),
            task: Some(item.task.clone()),
            time: Some(item.time),
            id: item.source_id.clone(),
        }
    }
}

/// Read an optional JSON string or number as a string (LaMP ids and scores are strings, other files
/// use numbers).
pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(de)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string or a number, found `{other}`"
        ))),
    }
}

/// What is wrong with one history item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// A required field is empty.
    #[error("`{field}` is empty")]
    Empty { field: &'static str },
    /// A field is over its limit.
    #[error("`{field}` is {len} bytes, over the limit of {limit} bytes")]
    TooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    /// The task kind has characters a task kind may not have.
    #[error("task kind `{0}` is not valid")]
    BadTask(String),
}

impl ItemError {
    /// A `hint:` line for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            ItemError::Empty { .. } => {
                Some("every item needs a non-empty `output`; drop or fill the item".into())
            }
            ItemError::TooLong {
                field: "input" | "output",
                ..
            } => Some(format!(
                "`input` and `output` are limited to {} KiB each; shorten or split the item",
                MAX_FIELD_BYTES / 1024
            )),
            ItemError::TooLong { .. } => None,
            ItemError::BadTask(_) => Some(format!(
                "a task kind is 1 to {MAX_TASK_BYTES} ASCII letters, digits, `-`, `_` or `.`"
            )),
        }
    }
}

impl NewItem {
    /// Check the item against the store's limits.
    ///
    /// # Errors
    /// The first problem found: an empty `output`, a field over its limit, a bad task kind.
    pub fn check(&self) -> Result<(), ItemError> {
        let too_long = |field, len: usize, limit| {
            if len > limit {
                Err(ItemError::TooLong { field, len, limit })
            } else {
                Ok(())
            }
        };
        if self.output.trim().is_empty() {
            return Err(ItemError::Empty { field: "output" });
        }
        too_long("input", self.input.len(), MAX_FIELD_BYTES)?;
        too_long("output", self.output.len(), MAX_FIELD_BYTES)?;
        if let Some(id) = &self.source_id {
            too_long("id", id.len(), MAX_SOURCE_ID_BYTES)?;
        }
        let task_ok = !self.task.is_empty()
            && self.task.len() <= MAX_TASK_BYTES
            && self
                .task
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !task_ok {
            return Err(ItemError::BadTask(self.task.clone()));
        }
        Ok(())
    }
}

/// The hash that keys what the pipeline derives from a set of history items (insights, pairs): the
/// lower-case hex SHA-256 of each item's `input` and `output`, in the order given, each field preceded
/// by its length in bytes as a little-endian `u64` so that no two different lists hash alike.
pub fn history_hash<'a>(items: impl IntoIterator<Item = &'a HistoryItem>) -> String {
    let mut hasher = Sha256::new();
    for item in items {
        for field in [&item.input, &item.output] {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
    }
    crate::digest::hex(&hasher.finalize())
}

impl Store {
    /// Add items to a user's history: all of them in one transaction, or none.
    ///
    /// Every item is checked before anything is written. Returns how many were added.
    ///
    /// # Errors
    /// [`StoreError::BadInput`] naming the first bad item (counted from 1); [`StoreError::Sqlite`] when
    /// the write fails (for example a user id that does not exist).
    pub fn add_history(&self, user: UserId, items: &[NewItem]) -> Result<usize, StoreError> {
        for (i, item) in items.iter().enumerate() {
            item.check().map_err(|problem| StoreError::BadInput {
                place: InputPlace::item(i + 1),
                problem: InputProblem::Item(problem),
            })?;
        }
        let tx = self.begin_write()?;
        insert_history(&tx, user, items)?;
        tx.commit()?;
        Ok(items.len())
    }

    /// A user's history, ordered by time, then by the order the items were added.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn history(&self, user: UserId) -> Result<Vec<HistoryItem>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, user_id, task, input, output, time, source_id FROM history
             WHERE user_id = ?1 ORDER BY time, id",
        )?;
        let items = stmt
            .query_map([user], history_row)?
            .collect::<Result<_, _>>()?;
        Ok(items)
    }

    /// One history item by id.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn history_item(&self, id: HistoryId) -> Result<Option<HistoryItem>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, user_id, task, input, output, time, source_id FROM history WHERE id = ?1",
        )?;
        Ok(stmt.query_row([id], history_row).optional()?)
    }

    /// How many history items a user has.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn history_len(&self, user: UserId) -> Result<usize, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT count(*) FROM history WHERE user_id = ?1")?;
        let n: i64 = stmt.query_row([user], |row| row.get(0))?;
        Ok(n as usize)
    }
}

/// Insert checked items inside the caller's transaction.
pub(super) fn insert_history(
    conn: &rusqlite::Connection,
    user: UserId,
    items: &[NewItem],
) -> rusqlite::Result<()> {
    let now = unix_now();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO history (user_id, task, input, output, time, source_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for item in items {
        stmt.execute(params![
            user,
            item.task,
            item.input,
            item.output,
            item.time.unwrap_or(now),
            item.source_id
        ])?;
    }
    Ok(())
}

fn history_row(row: &Row<'_>) -> rusqlite::Result<HistoryItem> {
    Ok(HistoryItem {
        id: row.get(0)?,
        user: row.get(1)?,
        task: row.get(2)?,
        input: row.get(3)?,
        output: row.get(4)?,
        time: row.get(5)?,
        source_id: row.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(input: &str, output: &str) -> HistoryItem {
        HistoryItem {
            id: HistoryId(1),
            user: UserId(1),
            task: TASK_GENERAL.into(),
            input: input.into(),
            output: output.into(),
            time: 0,
            source_id: None,
        }
    }

    #[test]
    fn history_hash_separates_fields_and_keeps_order() {
        let a = history_hash(&[item("ab", "c")]);
        let b = history_hash(&[item("a", "bc")]);
        assert_ne!(
            a, b,
            "moving a byte between input and output must change the hash"
        );
        let xy = history_hash(&[item("x", "1"), item("y", "2")]);
        let yx = history_hash(&[item("y", "2"), item("x", "1")]);
        assert_ne!(xy, yx);
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // the empty list is the SHA-256 of nothing
        assert_eq!(
            history_hash(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn check_names_the_problem() {
        let ok = NewItem {
            task: "lamp-2.movie_tag".into(),
            input: String::new(),
            output: "x".into(),
            time: None,
            source_id: None,
        };
        assert_eq!(ok.check(), Ok(()));
        let empty = NewItem {
            output: " \n".into(),
            ..ok.clone()
        };
        assert_eq!(empty.check(), Err(ItemError::Empty { field: "output" }));
        let long = NewItem {
            input: "a".repeat(MAX_FIELD_BYTES + 1),
            ..ok.clone()
        };
        assert_eq!(
            long.check(),
            Err(ItemError::TooLong {
                field: "input",
                len: MAX_FIELD_BYTES + 1,
                limit: MAX_FIELD_BYTES
            })
        );
        let at_limit = NewItem {
            input: "a".repeat(MAX_FIELD_BYTES),
            ..ok.clone()
        };
        assert_eq!(at_limit.check(), Ok(()));
        let task = NewItem {
            task: "movie tags".into(),
            ..ok
        };
        assert_eq!(task.check(), Err(ItemError::BadTask("movie tags".into())));
    }
}
