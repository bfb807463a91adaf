//! What the model wrote about a user: the two insights and the synthetic preference pairs.
//!
//! Both are keyed like the computation that made them (user, model fingerprint, prompt version, hash of
//! the history used), so a stored result is reused exactly when running again would reproduce it, and a
//! change of model, prompt or history misses the cache instead of reusing stale text.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, UserId, unix_now};

/// Which of the two insights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InsightKind {
    /// The user's characteristics and preferences.
    Personal,
    /// What a generic answer, ignoring the user, looks like.
    Neutral,
}

impl InsightKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            InsightKind::Personal => "personal",
            InsightKind::Neutral => "neutral",
        }
    }
}

impl fmt::Display for InsightKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for InsightKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for InsightKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "personal" => Ok(InsightKind::Personal),
            "neutral" => Ok(InsightKind::Neutral),
            other => Err(FromSqlError::Other(
                format!("unknown insight kind `{other}`").into(),
            )),
        }
    }
}

/// What an insight is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InsightKey {
    /// Whose insight.
    pub user: UserId,
    /// The model that wrote it.
    pub fingerprint: String,
    /// Personal or neutral.
    pub kind: InsightKind,
    /// Version of the prompt template.
    pub prompt_version: u32,
    /// [`history_hash`](super::history_hash) of the history items the prompt showed.
    pub history_hash: String,
}

/// What a set of pairs is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PairKey {
    /// Whose pairs.
    pub user: UserId,
    /// The model that wrote them.
    pub fingerprint: String,
    /// Version of the prompt templates.
    pub prompt_version: u32,
    /// [`history_hash`](super::history_hash) of the history items the prompts showed.
    pub history_hash: String,
}

/// One synthetic preference pair: a query answered twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The query both answers respond to.
    pub query: String,
    /// The answer written with the personal insight.
    pub personal: String,
    /// The answer written with the neutral insight.
    pub neutral: String,
}

impl Pair {
    /// Whether the pair can teach the fit something: both answers non-empty and different (ignoring
    /// surrounding whitespace). Other pairs are dropped.
    pub fn differs(&self) -> bool {
        let (p, n) = (self.personal.trim(), self.neutral.trim());
        !p.is_empty() && !n.is_empty() && p != n
    }
}

impl Store {
    /// Store an insight, replacing one with the same key.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the write fails (for example an unknown user id).
    pub fn put_insight(&self, key: &InsightKey, text: &str) -> Result<(), StoreError> {
        put_insight(&self.conn, key, text, unix_now())?;
        Ok(())
    }

    /// The insight with this key, if one is stored.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn insight(&self, key: &InsightKey) -> Result<Option<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT text FROM insights
             WHERE user_id = ?1 AND fingerprint = ?2 AND kind = ?3 AND prompt_version = ?4 AND history_hash = ?5",
        )?;
        let text = stmt
            .query_row(
                params![
                    key.user,
                    key.fingerprint,
                    key.kind,
                    key.prompt_version,
                    key.history_hash
                ],
                |row| row.get(0),
            )
            .optional()?;
        Ok(text)
    }

    /// Store one pair under `key`, replacing a pair with the same query. Storing pairs one by one as
    /// they are generated lets an interrupted run keep what it made.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the write fails.
    pub fn put_pair(&self, key: &PairKey, pair: &Pair) -> Result<(), StoreError> {
        put_pair(&self.conn, key, pair, unix_now())?;
        Ok(())
    }

    /// Store pairs under `key` in one transaction, each replacing a pair with the same query.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the write fails (nothing is stored).
    pub fn put_pairs(&self, key: &PairKey, pairs: &[Pair]) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        let now = unix_now();
        for pair in pairs {
            put_pair(&tx, key, pair, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The pairs stored under `key`, in the order they were first stored; empty when there are none.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the query fails.
    pub fn pairs(&self, key: &PairKey) -> Result<Vec<Pair>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT query, personal, neutral FROM pairs
             WHERE user_id = ?1 AND fingerprint = ?2 AND prompt_version = ?3 AND history_hash = ?4
             ORDER BY id",
        )?;
        let pairs = stmt
            .query_map(
                params![
                    key.user,
                    key.fingerprint,
                    key.prompt_version,
                    key.history_hash
                ],
                |row| {
                    Ok(Pair {
                        query: row.get(0)?,
                        personal: row.get(1)?,
                        neutral: row.get(2)?,
                    })
                },
            )?
            .collect::<Result<_, _>>()?;
        Ok(pairs)
    }
}

pub(super) fn put_insight(
    conn: &rusqlite::Connection,
    key: &InsightKey,
    text: &str,
    created: i64,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO insights (user_id, fingerprint, kind, prompt_version, history_hash, text, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (user_id, fingerprint, kind, prompt_version, history_hash)
         DO UPDATE SET text = excluded.text, created = excluded.created",
    )?;
    stmt.execute(params![
        key.user,
        key.fingerprint,
        key.kind,
        key.prompt_version,
        key.history_hash,
        text,
        created
    ])?;
    Ok(())
}

pub(super) fn put_pair(
    conn: &rusqlite::Connection,
    key: &PairKey,
    pair: &Pair,
    created: i64,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO pairs (user_id, fingerprint, prompt_version, history_hash, query, personal, neutral, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (user_id, fingerprint, prompt_version, history_hash, query)
         DO UPDATE SET personal = excluded.personal, neutral = excluded.neutral, created = excluded.created",
    )?;
    stmt.execute(params![
        key.user,
        key.fingerprint,
        key.prompt_version,
        key.history_hash,
        pair.query,
        pair.personal,
        pair.neutral,
        created
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Pair;

    fn pair(personal: &str, neutral: &str) -> Pair {
        Pair {
            query: "q".into(),
            personal: personal.into(),
            neutral: neutral.into(),
        }
    }

    #[test]
    fn a_pair_needs_two_different_answers() {
        assert!(pair("classic", "comedy").differs());
        assert!(!pair("classic", " classic\n").differs());
        // an empty answer (the reply held none in the task's output space) teaches nothing
        assert!(!pair("", "comedy").differs());
        assert!(!pair("classic", "  ").differs());
        assert!(!pair("", "").differs());
    }
}
