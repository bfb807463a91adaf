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

/// `PRAGMA application_id` of a chameleon store ("Cham"): set on creation, so another program's
/// SQLite file is never taken for one (see `sqlite3`'s `magic.txt` for the ids other formats use).
pub const APPLICATION_ID: i32 = 0x4368_616d;

/// What an existing file is, read before anything in it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No tables and no application id: a new file, chameleon's to create.
    Empty,
    /// A chameleon store at this schema version (stores written before application ids are
    /// recognised by their tables and get the id on their next migration).
    Chameleon { version: i64, stamped: bool },
}

/// Identify the database on `conn` without writing to it: chameleon's (at a version this binary
/// knows), or empty.
///
/// # Errors
/// [`StoreError::NotOurs`] naming what disagreed (the application id, a table, the version);
/// [`StoreError::TooNew`] for a chameleon store of a newer version.
pub fn identify(conn: &Connection, path: &Path) -> Result<Identity, StoreError> {
    let known = current_version();
    let not_ours = |reason: String| StoreError::NotOurs {
        path: path.to_path_buf(),
        reason,
    };
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if app_id == APPLICATION_ID {
        if version > known {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known,
            });
        }
        return Ok(Identity::Chameleon {
            version,
            stamped: true,
        });
    }
    if app_id != 0 {
        return Err(not_ours(format!(
            "its application id is {app_id:#010x}, not chameleon's ({APPLICATION_ID:#010x})"
        )));
    }
    let found = schema_objects(conn)?;
    if found.is_empty() && version == 0 {
        return Ok(Identity::Empty);
    }
    let chameleon_version = (1..=known).contains(&version);
    let expected = expected_objects(if chameleon_version { version } else { known })?;
    if let Some((kind, name)) = found.iter().find(|o| !expected.contains(o)) {
        return Err(not_ours(format!(
            "it has a {kind} `{name}` that a chameleon store does not"
        )));
    }
    if !chameleon_version {
        return Err(not_ours(format!(
            "it has no chameleon application id and its schema version is {version}"
        )));
    }
    if let Some((kind, name)) = expected.iter().find(|o| !found.contains(o)) {
        return Err(not_ours(format!(
            "it lacks the {kind} `{name}` of a chameleon store of version {version}"
        )));
    }
    Ok(Identity::Chameleon {
        version,
        stamped: false,
    })
}

/// The tables, indexes, views and triggers in a database, as `(type, name)`, SQLite's own left out.
fn schema_objects(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
    )?;
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

/// The objects a chameleon store of `version` has: its migrations run in memory.
fn expected_objects(version: i64) -> rusqlite::Result<Vec<(String, String)>> {
    let conn = Connection::open_in_memory()?;
    let n = usize::try_from(version).unwrap_or(0).min(MIGRATIONS.len());
    for m in &MIGRATIONS[..n] {
        conn.execute_batch(m)?;
    }
    schema_objects(&conn)
}

/// Bring the database up to [`current_version`], in one exclusive transaction, and stamp it with
/// [`APPLICATION_ID`]. Call [`identify`] first: this re-identifies under the lock (another process
/// may have created or migrated the file in between) and changes nothing in a file that is not
/// chameleon's.
///
/// A database at the current version is left untouched (nothing is written).
///
/// # Errors
/// As [`identify`]; [`StoreError::Migration`] when a migration fails, in which case none of them is
/// applied.
pub fn migrate(conn: &mut Connection, path: &Path, seen: &Identity) -> Result<(), StoreError> {
    let known = current_version();
    if matches!(seen, Identity::Chameleon { version, stamped: true } if *version == known) {
        // most opens: a current store, no write lock needed
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let start = match identify(&tx, path)? {
        Identity::Empty => 0,
        Identity::Chameleon { version, .. } => usize::try_from(version).unwrap_or(0),
    };
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(migration)
            .map_err(|e| StoreError::Migration {
                path: path.to_path_buf(),
                version: i as i64 + 1,
                detail: sqlite_message(&e),
            })?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.commit()?;
    Ok(())
}

/// SQLite's own message of an error, without the statement it came from.
fn sqlite_message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}
