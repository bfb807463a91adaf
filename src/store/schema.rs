//! The schema, as an append-only list of migrations.
//!
//! `PRAGMA user_version` records how many entries of [`MIGRATIONS`] a database has applied. Opening a
//! database applies the missing ones in one exclusive transaction, so a database is always at some
//! entry's end, never halfway through one. Never edit, reorder or delete an entry once it has shipped:
//! append a new one (an `ALTER TABLE`, a new table, a data fix).
//!
//! All times are seconds since the Unix epoch. Vectors are little-endian `f32` blobs.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The migrations, oldest first. Entry `i` brings a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema
    r#"
    CREATE TABLE users (
        id      INTEGER PRIMARY KEY,
        name    TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL
    ) STRICT;

    -- one item of a user's history: what they were asked (`input`) and what they answered or chose
    -- (`output`); `source_id` is the item's id in the file it came from, if any
    CREATE TABLE history (
        id        INTEGER PRIMARY KEY,
        user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        task      TEXT NOT NULL,
        input     TEXT NOT NULL,
        output    TEXT NOT NULL,
        time      INTEGER NOT NULL,
        source_id TEXT
    ) STRICT;
    CREATE INDEX history_by_user ON history (user_id, time, id);

    CREATE TABLE groups (
        id      INTEGER PRIMARY KEY,
        name    TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE group_members (
        group_id INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, user_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX group_members_by_user ON group_members (user_id);

    -- keyed like the computation that made them: same user, model, prompt and history, same insight
    CREATE TABLE insights (
        id             INTEGER PRIMARY KEY,
        user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        fingerprint    TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('personal', 'neutral')),
        prompt_version INTEGER NOT NULL,
        history_hash   TEXT NOT NULL,
        text           TEXT NOT NULL,
        created        INTEGER NOT NULL,
        UNIQUE (user_id, fingerprint, kind, prompt_version, history_hash)
    ) STRICT;

    CREATE TABLE pairs (
        id             INTEGER PRIMARY KEY,
        user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        fingerprint    TEXT NOT NULL,
        prompt_version INTEGER NOT NULL,
        history_hash   TEXT NOT NULL,
        query          TEXT NOT NULL,
        personal       TEXT NOT NULL,
        neutral        TEXT NOT NULL,
        created        INTEGER NOT NULL,
        UNIQUE (user_id, fingerprint, prompt_version, history_hash, query)
    ) STRICT;

    -- owned by exactly one user or one group; one profile per owner and model
    CREATE TABLE profiles (
        id              INTEGER PRIMARY KEY,
        user_id         INTEGER REFERENCES users (id) ON DELETE CASCADE,
        group_id        INTEGER REFERENCES groups (id) ON DELETE CASCADE,
        fingerprint     TEXT NOT NULL,
        n_layer         INTEGER NOT NULL CHECK (n_layer > 0),
        hidden          INTEGER NOT NULL CHECK (hidden > 0),
        selected_layers TEXT NOT NULL, -- JSON array of layer indices
        params          TEXT NOT NULL, -- JSON: the fit's parameters
        created         INTEGER NOT NULL,
        CHECK ((user_id IS NULL) <> (group_id IS NULL))
    ) STRICT;
    CREATE UNIQUE INDEX profiles_by_user ON profiles (user_id, fingerprint) WHERE user_id IS NOT NULL;
    CREATE UNIQUE INDEX profiles_by_group ON profiles (group_id, fingerprint) WHERE group_id IS NOT NULL;

    CREATE TABLE profile_layers (
        id         INTEGER PRIMARY KEY,
        profile_id INTEGER NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
        layer      INTEGER NOT NULL,
        p          BLOB NOT NULL, -- personal direction, `hidden` little-endian f32
        n          BLOB NOT NULL, -- generic direction, `hidden` little-endian f32
        ccs_loss   REAL NOT NULL,
        UNIQUE (profile_id, layer)
    ) STRICT;
    "#,
    // 2: the evaluation's answers, so that a killed run resumes and extra methods reuse the rest
    r#"
    -- `run` is a hash of everything that decides the answer: model, data set, split, method, its
    -- parameters, prompt version; the question's user is in the data set, not here
    CREATE TABLE eval_answers (
        run      TEXT NOT NULL,
        question TEXT NOT NULL,
        raw      TEXT NOT NULL,
        seconds  REAL NOT NULL,
        created  INTEGER NOT NULL,
        PRIMARY KEY (run, question)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 3: item embeddings (stage 1), so a re-fit embeds only the items added since
    r#"
    -- `method` names the model and how the text was embedded; private like the item itself, and
    -- removed with it
    CREATE TABLE embeddings (
        history_id INTEGER NOT NULL REFERENCES history (id) ON DELETE CASCADE,
        method     TEXT NOT NULL,
        vector     BLOB NOT NULL, -- little-endian f32
        PRIMARY KEY (history_id, method)
    ) STRICT, WITHOUT ROWID;
    "#,
];

/// The schema version this binary writes: the number of migrations.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Bring the database up to [`current_version`], in one exclusive transaction.
///
/// A database at the current version is left untouched (nothing is written).
///
/// # Errors
/// [`StoreError::TooNew`] when the database's version is newer than this binary's;
/// [`StoreError::Sqlite`] when a migration fails, in which case none of them is applied.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let known = current_version();
    let too_new = |found| StoreError::TooNew {
        path: path.to_path_buf(),
        found,
        known,
    };
    // a cheap read first: most opens find the schema current and need no write lock at all
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > known {
        return Err(too_new(found));
    }
    if found == known {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    // read again under the lock: another process may have migrated in between
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > known {
        return Err(too_new(found));
    }
    let start = usize::try_from(found).unwrap_or(0);
    for migration in &MIGRATIONS[start..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}
