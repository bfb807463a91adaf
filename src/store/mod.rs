//! The private store: everything chameleon keeps about its users, in one local SQLite file.
//!
//! The store is responsible for the users and their history, the groups they pool into, and what the
//! pipeline derives from a history: the two insights, the synthetic preference pairs and the fitted
//! profiles (per-layer personal and generic directions). Nothing here talks to a model or to the network:
//! SQLite is linked in (`rusqlite`, bundled) and the file is the only thing written.
//!
//! The schema is an append-only list of migrations ([`schema`]) applied in one exclusive transaction and
//! tracked in `PRAGMA user_version`; a database newer than this binary is refused with a hint. A store
//! is stamped with `PRAGMA application_id` ([`schema::APPLICATION_ID`]); what a file is gets checked
//! before anything in it changes, so another program's SQLite file is refused, never taken over.
//!
//! Durability and privacy, set on every connection by [`Store::open`]:
//! - `journal_mode = WAL`, `synchronous = FULL`: a committed write survives a crash or power loss;
//! - every multi-row write (an import, a forget, a profile) is one transaction: all of it or none;
//! - `foreign_keys = ON`, so no row outlives the user or group it belongs to;
//! - `secure_delete = ON`, so forgotten text is overwritten in the file, not merely unlinked;
//! - a database file the store creates gets mode `0600`, and a missing directory is created `0700`
//!   (SQLite gives its `-wal` and `-shm` files the database file's mode).
//!
//! A fitted profile is bound to the model it was fitted with: [`Store::load_profile`] refuses to hand it
//! to a model with another [`ModelIdentity`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, Transaction, TransactionBehavior};

pub mod crypt;
mod embedding;
mod eval;
mod export;
mod group;
mod history;
mod import;
mod insight;
mod profile;
pub mod schema;
mod user;

pub use eval::EvalAnswer;
pub use export::{
    EXPORT_FORMAT, EXPORT_VERSION, ExportedInsight, ExportedPair, ExportedUser, Imported,
    UserExport,
};
pub use group::GroupMembers;
pub use history::{
    HistoryItem, HistoryRecord, ItemError, MAX_FIELD_BYTES, MAX_SOURCE_ID_BYTES, MAX_TASK_BYTES,
    NewItem, TASK_GENERAL, history_hash,
};
pub use import::{
    InputPlace, InputProblem, ReadOptions, lamp_item, read_export_file, read_history_file, task,
};
pub use insight::{InsightKey, InsightKind, Pair, PairKey};
pub use profile::{LayerDirections, ModelIdentity, Owner, Profile, ProfileError};
pub use user::{Forgotten, User, UserSummary};

/// How long a write waits for another process holding the database before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest user or group name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file or its directory could not be created or opened.
    #[error("cannot open database `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: OpenError,
    },
    /// The database was written by a newer chameleon.
    #[error(
        "database `{path}` has schema version {found}, newer than this chameleon knows ({known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// The file is a SQLite database of another program, or of an unknown schema.
    #[error("`{path}` is not a chameleon store: {reason}")]
    NotOurs { path: PathBuf, reason: String },
    /// A schema migration failed (none of it was applied).
    #[error("cannot bring `{path}` to schema version {version}: {detail}")]
    Migration {
        path: PathBuf,
        version: i64,
        detail: String,
    },
    /// An encrypted store, and no key for it anywhere.
    #[error(
        "`{path}` is encrypted (or is not a database), and no key for it was found{}",
        keystore_problem.as_ref().map_or(String::new(), |p| format!(" (the keystore: {p})"))
    )]
    Locked {
        path: PathBuf,
        keystore_problem: Option<String>,
    },
    /// The key does not open the store.
    #[error("the key from {origin} does not open `{path}`")]
    WrongKey {
        path: PathBuf,
        origin: crypt::KeySource,
    },
    /// A key was given for a store that is not encrypted.
    #[error("`{path}` is not encrypted, but a key was given ({origin})")]
    NotEncrypted {
        path: PathBuf,
        origin: crypt::KeySource,
    },
    /// A key that cannot be read or used.
    #[error(transparent)]
    Key(#[from] crypt::KeyError),
    /// A query failed.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// A file could not be read (missing, not a regular file, too large).
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// No user has this name.
    #[error("no user `{0}`")]
    UnknownUser(String),
    /// A user with this name exists already.
    #[error("user `{0}` already exists")]
    UserExists(String),
    /// An import would overwrite an existing user.
    #[error("user `{0}` already exists; importing would replace everything stored about them")]
    ImportWouldReplace(String),
    /// No group has this name.
    #[error("no group `{0}`")]
    UnknownGroup(String),
    /// A user or group name that cannot be stored.
    #[error("{what} name `{name}` is not valid: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// Bad input: a history item, a history file, an export file.
    #[error("{place}: {problem}")]
    BadInput {
        place: InputPlace,
        problem: InputProblem,
    },
    /// A profile that cannot be saved as given.
    #[error("cannot save the profile of {owner}: {problem}")]
    InvalidProfile { owner: Owner, problem: ProfileError },
    /// The stored profile was fitted for a model of another shape.
    #[error(
        "the profile of {owner} was fitted for a model with {stored_layers} layers of size {stored_hidden}, \
         this model has {expected_layers} layers of size {expected_hidden}"
    )]
    ProfileShape {
        owner: Owner,
        fingerprint: String,
        stored_layers: usize,
        stored_hidden: usize,
        expected_layers: usize,
        expected_hidden: usize,
    },
    /// The stored profile was fitted for another model of the same shape.
    #[error(
        "the profile of {owner} was fitted for model `{stored}`, not for this model `{expected}`"
    )]
    ProfileModel {
        owner: Owner,
        stored: String,
        expected: String,
    },
    /// A stored profile that does not decode (the file was altered outside chameleon).
    #[error("the stored profile of {owner} is damaged: {detail}")]
    CorruptProfile { owner: Owner, detail: String },
}

/// Why [`Store::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Creating the directory or the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// SQLite refused the file.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// The same error, with `file` as the place of bad input that names no file (for input read from
    /// a file and checked later, such as an export).
    #[must_use]
    pub fn in_file(self, file: &Path) -> StoreError {
        match self {
            StoreError::BadInput { mut place, problem } if place.file.is_none() => {
                place.file = Some(file.to_path_buf());
                StoreError::BadInput { place, problem }
            }
            other => other,
        }
    }

    /// A `hint:` line for the user, when there is something they can do.
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::Open { path, source: OpenError::Sqlite(e) }
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) =>
            {
                Some(format!(
                    "`{}` is not a chameleon database; point `--db` (or `$CHAMELEON_DB`) at another file",
                    path.display()
                ))
            }
            StoreError::Open { source: OpenError::Sqlite(e), .. } if is_busy(e) => Some(BUSY_HINT.into()),
            StoreError::Open { .. } => {
                Some("check the path and its permissions, or choose another file with `--db PATH`".into())
            }
            StoreError::NotOurs { .. } => Some(
                "chameleon keeps its data in a file of its own: choose a new or chameleon file with `--db PATH`"
                    .into(),
            ),
            StoreError::Migration { .. } => Some(
                "the file was changed outside chameleon; nothing was applied. Use another file with `--db PATH`"
                    .into(),
            ),
            StoreError::TooNew { .. } => Some(
                "it was written by a newer chameleon: upgrade chameleon, or use another database with `--db PATH`"
                    .into(),
            ),
            StoreError::Locked { .. } => Some(format!(
                "give its key: `${}`, the keystore, or `--key-file PATH` (a recovery key file works)",
                crypt::KEY_ENV
            )),
            StoreError::WrongKey { .. } => Some(format!(
                "check `${}`, the keystore entry or `--key-file`; the file was not changed",
                crypt::KEY_ENV
            )),
            StoreError::NotEncrypted { .. } => Some(format!(
                "encrypt it with `chameleon store encrypt`, or unset `${}` and drop `--key-file`",
                crypt::KEY_ENV
            )),
            StoreError::Key(e) => e.hint(),
            StoreError::Sqlite(e) if is_busy(e) => Some(BUSY_HINT.into()),
            StoreError::UnknownUser(name) => Some(format!(
                "list users with `chameleon user list`, or add this one with `chameleon user add {name}`"
            )),
            StoreError::UserExists(name) => Some(format!(
                "choose another name, or remove the stored one first with `chameleon user forget {name}`"
            )),
            StoreError::ImportWouldReplace(_) => {
                Some("pass `--replace` to replace the stored user with the file's contents".into())
            }
            StoreError::UnknownGroup(_) => Some("list groups with `chameleon group list`".into()),
            StoreError::InvalidName { .. } => Some(format!(
                "a name is 1 to {MAX_NAME_BYTES} bytes, without control characters or surrounding spaces"
            )),
            StoreError::BadInput { problem, .. } => problem.hint(),
            StoreError::ProfileShape { fingerprint, .. } => Some(format!(
                "a profile only fits the model it was fitted with (`{fingerprint}`): load that model, \
                 or fit a new profile with this one"
            )),
            StoreError::ProfileModel { stored, .. } => Some(format!(
                "a profile only fits the model it was fitted with (`{stored}`): load that model, \
                 or fit a new profile with this one"
            )),
            StoreError::CorruptProfile { .. } => Some("fit the profile again to replace the damaged one".into()),
            StoreError::File(e) => e.hint(),
            StoreError::Sqlite(_) | StoreError::InvalidProfile { .. } => None,
        }
    }
}

const BUSY_HINT: &str =
    "another chameleon process is writing to the database; try again when it is done";

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Defines a row id newtype that SQLite reads and writes as an integer.
macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(i64);

        impl $name {
            /// The integer SQLite stores.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.0))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                i64::column_result(value).map($name)
            }
        }
    };
}

row_id!(
    /// Row id of a user.
    UserId
);
row_id!(
    /// Row id of a history item.
    HistoryId
);
row_id!(
    /// Row id of a group.
    GroupId
);
row_id!(
    /// Row id of a fitted profile.
    ProfileId
);

/// An open store: one connection to one database file.
///
/// Methods take `&self`; a method that writes several rows opens its own transaction, so calls must not
/// be nested inside each other (none is).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Where the key came from; `None` for a plaintext store.
    key: Option<crypt::KeySource>,
}

impl Store {
    /// Open the database at `path` as [`Store::open_with`] does, with the keystore and no key file.
    ///
    /// # Errors
    /// As [`Store::open_with`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, &crypt::KeyOptions::new(None))
    }

    /// Open the database at `path`, creating it (and a missing directory) if needed, and bring its schema
    /// up to date.
    ///
    /// An encrypted store is opened with the key `keys` finds ([`crypt`]). A new store is encrypted
    /// when a key is given explicitly (`CHAMELEON_DB_KEY` or a key file), plaintext otherwise; a
    /// plaintext store is refused when a key is given, so a key never silently goes unused.
    ///
    /// A new database file is created with mode `0600`, a missing directory with `0700`; existing ones
    /// keep their modes.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the directory or file cannot be created or is not a SQLite database;
    /// [`StoreError::Locked`], [`StoreError::WrongKey`], [`StoreError::NotEncrypted`] and
    /// [`StoreError::Key`] for keys; [`StoreError::TooNew`] when a newer chameleon wrote the schema;
    /// [`StoreError::Migration`] when a migration fails (nothing of it is applied).
    pub fn open_with(path: &Path, keys: &crypt::KeyOptions) -> Result<Store, StoreError> {
        let state = prepare_file(path)?;
        let key = match state {
            crypt::FileState::New => keys.explicit_key()?,
            // SQLite's own error says what the file is not
            crypt::FileState::Other => None,
            crypt::FileState::Plain => match keys.explicit_key()? {
                Some((_, source)) => {
                    return Err(StoreError::NotEncrypted {
                        path: path.to_path_buf(),
                        origin: source,
                    });
                }
                None => None,
            },
            crypt::FileState::Encrypted => match keys.resolve(path)? {
                crypt::Resolved::Found(key, source) => Some((key, source)),
                crypt::Resolved::Missing { keystore_problem } => {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                        keystore_problem,
                    });
                }
            },
        };
        match key {
            Some((key, source)) => Store::open_keyed(path, Some((&key, source))),
            None => Store::open_keyed(path, None),
        }
    }

    /// Open the database at `path` with this key (`None`: plaintext), creating it if needed; what
    /// [`Store::open_with`] does once it has found the key.
    ///
    /// # Errors
    /// As [`Store::open_with`].
    pub fn open_keyed(
        path: &Path,
        key: Option<(&crypt::DbKey, crypt::KeySource)>,
    ) -> Result<Store, StoreError> {
        let open_err = |source: OpenError| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        prepare_file(path)?;
        let mut conn = Connection::open(path).map_err(|e| open_err(e.into()))?;
        let source = match key {
            Some((key, source)) => {
                // the key before any other statement; whether it is right shows at the first read
                crypt::apply_key(&conn, key).map_err(|e| open_err(e.into()))?;
                Some(source)
            }
            None => None,
        };
        // from the first statement on, a lock held by another process is waited for
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_err(e.into()))?;
        if let Some(source) = &source {
            let read = conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()));
            if let Err(e) = read {
                return Err(
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
                        StoreError::WrongKey {
                            path: path.to_path_buf(),
                            origin: source.clone(),
                        }
                    } else {
                        open_err(e.into())
                    },
                );
            }
        }
        // what the file is, before anything in it changes (the journal mode included)
        // (one read transaction: the pragmas and the tables from one snapshot, even while another
        // process creates the store)
        let seen = {
            let snapshot = conn.unchecked_transaction()?;
            let seen = schema::identify(&snapshot, path);
            snapshot.finish()?;
            seen
        }
        .map_err(|e| match e {
            StoreError::Sqlite(e) => open_err(e.into()),
            other => other,
        })?;
        retry_busy(|| configure(&conn)).map_err(|e| open_err(e.into()))?;
        schema::migrate(&mut conn, path, &seen)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            key: source,
        })
    }

    /// Where this store's key came from; `None` when the store is not encrypted.
    pub fn key_source(&self) -> Option<&crypt::KeySource> {
        self.key.as_ref()
    }

    /// The schema version (`PRAGMA user_version`).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// SQLCipher's version (the library that reads and writes the file).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn cipher_version(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA cipher_version", [], |r| r.get(0))?)
    }

    /// Rewrite the whole store into a new file encrypted with `key` (plaintext with `None`) and put it
    /// in this file's place: the copy is written beside it (mode 0600) and synced, checked, and renamed
    /// over the old file in one step, so a crash leaves either the old store or the new one. The old
    /// file's `-wal` and `-shm` go with it. No other process may use the store meanwhile (it is locked
    /// exclusively first). `before_swap` runs once the copy is written and checked, just before the
    /// rename (where a caller keeps the new key): when it fails, the copy is removed and nothing changes.
    ///
    /// # Errors
    /// When another process holds the store, or writing, checking or renaming the copy fails (the old
    /// store is then untouched), or `before_swap` fails.
    pub fn rewrite(
        self,
        key: Option<&crypt::DbKey>,
        before_swap: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let open_err = |source: OpenError| StoreError::Open {
            path: path.clone(),
            source,
        };
        self.conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        self.conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let tmp = sibling(&path, ".rewrite");
        // a copy left by an interrupted rewrite (the lock is ours, so no rewrite is running)
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(open_err(e.into())),
            _ => {}
        }
        let copied = crypt::export_copy(&self.conn, &tmp, key)
            .and_then(|()| {
                let check = Store::open_keyed(&tmp, key.map(|k| (k, crypt::KeySource::Env)))?;
                let ok: String = check
                    .conn
                    .query_row("PRAGMA quick_check", [], |r| r.get(0))?;
                if ok != "ok" {
                    return Err(StoreError::Migration {
                        path: tmp.clone(),
                        version: check.schema_version()?,
                        detail: format!("the copy does not check: {ok}"),
                    });
                }
                Ok(())
            })
            .and_then(|()| before_swap());
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(sibling(&tmp, suffix));
            }
            return Err(e);
        }
        drop(self);
        for suffix in ["-wal", "-shm"] {
            match std::fs::remove_file(sibling(&path, suffix)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(open_err(e.into()));
                }
                _ => {}
            }
        }
        std::fs::rename(&tmp, &path).map_err(|e| open_err(e.into()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| open_err(e.into()))?;
        }
        Ok(())
    }

    /// The database file this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Start a write transaction. `IMMEDIATE` takes the write lock up front, so a busy database fails (or
    /// waits) here rather than halfway through the writes.
    fn begin_write(&self) -> rusqlite::Result<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
    }
}

/// `path` with `suffix` appended to its file name (`chameleon.db` -> `chameleon.db-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Create a missing directory and file (see [`create_private`]), check that an existing path is a
/// regular file (SQLite would block reading a FIFO), and say what the file holds.
fn prepare_file(path: &Path) -> Result<crypt::FileState, StoreError> {
    let open_err = |source: OpenError| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if !create_private(path).map_err(|e| open_err(e.into()))? {
        crate::files::check_regular(path)?;
    }
    crypt::file_state(path).map_err(|e| open_err(e.into()))
}

/// Create the directory (`0700`) and the file (`0600`) if they are missing; whether the file was
/// created.
fn create_private(path: &Path) -> std::io::Result<bool> {
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Run `f` again while it fails with "database is locked", up to [`BUSY_TIMEOUT`]. SQLite waits on a
/// lock through the busy timeout, except where waiting could deadlock: two processes that both read
/// a new file and then both switch it to WAL get an immediate `SQLITE_BUSY` in one of them. Retrying
/// the whole step (it holds no lock when it fails) is what resolves that.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match f() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// The settings every connection runs with (see the module documentation for why).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "secure_delete", true)?;
    Ok(())
}

/// Seconds since the Unix epoch, the unit of every time in the store.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Check a user or group name.
fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("it is too long")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.trim() != name {
        Some("it starts or ends with a space")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidName {
            what,
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
