//! Encryption at rest: the store's key, where it comes from, and the file-level operations that
//! encrypt, decrypt and rekey a store.
//!
//! The store is SQLCipher (AES-256 pages with a per-page HMAC-SHA512), built into the binary. A
//! plaintext store is an ordinary SQLite file; an encrypted one opens only with its key, which
//! [`super::Store::open_with`] applies before any other statement.
//!
//! Where the key comes from, in this order (the first that has one wins):
//! 1. `CHAMELEON_DB_KEY` (scripts, CI);
//! 2. the operating system's keystore, the entry for this database's absolute path (Secret Service
//!    on Linux, Keychain on macOS, Credential Manager on Windows; `CHAMELEON_KEYSTORE=off` skips it);
//! 3. the key file named by `--key-file` (or `CHAMELEON_KEY_FILE`), which must be mode 0600.
//!
//! A key is 64 hex digits (a raw 256-bit key, used as is: no stretching on every open) or anything
//! else, read as a passphrase (stretched by SQLCipher's PBKDF2). chameleon never prints, logs or passes a
//! key on a command line; the one place it writes one is the recovery file the user asks for.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use zeroize::Zeroizing;

/// The environment variable holding a key.
pub const KEY_ENV: &str = "CHAMELEON_DB_KEY";
/// The environment variable that turns the keystore off (`off`).
pub const KEYSTORE_ENV: &str = "CHAMELEON_KEYSTORE";
/// The keystore's service name for chameleon's entries.
const KEYSTORE_SERVICE: &str = "chameleon";
/// How long a keystore may take to answer before it counts as unavailable (a locked keyring can
/// wait for a prompt nobody sees).
const KEYSTORE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a key file may hold.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A store's key. Its text is wiped from memory when dropped and never shown by `Debug`.
#[derive(Clone)]
pub struct DbKey(Zeroizing<String>);

impl fmt::Debug for DbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_raw() {
            "DbKey(raw, redacted)"
        } else {
            "DbKey(passphrase, redacted)"
        })
    }
}

impl DbKey {
    /// A key from its text: 64 hex digits are a raw key, anything else a passphrase. Surrounding
    /// whitespace (a file's trailing newline) is not part of it.
    ///
    /// # Errors
    /// When the text is empty or holds a control character.
    pub fn parse(text: &str) -> Result<DbKey, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        Ok(DbKey(Zeroizing::new(text.to_string())))
    }

    /// A fresh random 256-bit raw key from the operating system's random source.
    ///
    /// # Errors
    /// When the operating system has no random bytes to give.
    pub fn random() -> Result<DbKey, KeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        let mut hex = Zeroizing::new(String::with_capacity(64));
        for b in bytes.iter() {
            hex.push_str(&format!("{b:02x}"));
        }
        Ok(DbKey(hex))
    }

    /// Whether this is a raw 256-bit key (64 hex digits) rather than a passphrase.
    pub fn is_raw(&self) -> bool {
        self.0.len() == 64 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The key's text, as a key file or the keystore holds it.
    fn text(&self) -> &str {
        &self.0
    }

    /// What `PRAGMA key` takes: `x'HEX'` for a raw key (SQLCipher uses it as is), the passphrase
    /// otherwise.
    fn pragma_text(&self) -> Zeroizing<String> {
        if self.is_raw() {
            Zeroizing::new(format!("x'{}'", &*self.0))
        } else {
            self.0.clone()
        }
    }
}

/// Where a key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `CHAMELEON_DB_KEY`.
    Env,
    /// The operating system's keystore.
    Keystore,
    /// A key file.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "${KEY_ENV}"),
            KeySource::Keystore => f.write_str("the keystore"),
            KeySource::File(p) => write!(f, "key file `{}`", p.display()),
        }
    }
}

/// Problems with a key or with where it is kept.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key's text is empty.
    #[error("the key is empty")]
    Empty,
    /// The key's text holds a control character.
    #[error("the key holds a control character")]
    ControlCharacter,
    /// No random bytes.
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
    /// A key file others may read.
    #[error("key file `{path}` can be read by other users (mode {mode:04o})")]
    FileMode { path: PathBuf, mode: u32 },
    /// A key file that cannot be read or written.
    #[error("key file `{path}`: {detail}")]
    File { path: PathBuf, detail: String },
    /// The keystore failed or did not answer.
    #[error("the keystore is not available: {0}")]
    Keystore(String),
}

impl KeyError {
    /// A `hint:` line for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            KeyError::FileMode { path, .. } => Some(format!(
                "make it private to you: `chmod 600 {}`",
                path.display()
            )),
            KeyError::Keystore(_) => Some(format!(
                "keep the key in a file instead (`--key-file PATH`, mode 0600) or in `${KEY_ENV}`; \
                 `{KEYSTORE_ENV}=off` skips the keystore"
            )),
            KeyError::Empty | KeyError::ControlCharacter => Some(
                "a key is 64 hex digits (a raw 256-bit key) or a passphrase on one line".into(),
            ),
            KeyError::File { .. } | KeyError::Random(_) => None,
        }
    }
}

/// How a store may find its key: the key file, and whether to ask the keystore.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// `--key-file`: the last place a key is looked for.
    pub key_file: Option<PathBuf>,
    /// Whether the operating system's keystore is asked (not with `CHAMELEON_KEYSTORE=off`).
    pub keystore: bool,
}

impl KeyOptions {
    /// The keystore unless `CHAMELEON_KEYSTORE=off`, and this key file.
    pub fn new(key_file: Option<PathBuf>) -> KeyOptions {
        let off = std::env::var(KEYSTORE_ENV)
            .is_ok_and(|v| matches!(v.trim(), "off" | "0" | "no" | "false"));
        KeyOptions {
            key_file,
            keystore: !off,
        }
    }

    /// A key given explicitly, without the keystore: `CHAMELEON_DB_KEY`, then the key file.
    ///
    /// # Errors
    /// A key file that cannot be read or is not private, or a key that cannot be used.
    pub fn explicit_key(&self) -> Result<Option<(DbKey, KeySource)>, KeyError> {
        if let Some(key) = env_key()? {
            return Ok(Some((key, KeySource::Env)));
        }
        match &self.key_file {
            Some(path) => Ok(Some((read_key_file(path)?, KeySource::File(path.clone())))),
            None => Ok(None),
        }
    }

    /// The key for the store at `db`, in the order of the module documentation; `None` when no place
    /// has one, with why the keystore could not be asked if it could not (a keystore that fails is
    /// passed over, so a key file still opens the store on a machine without one).
    ///
    /// # Errors
    /// A key that cannot be used, or a key file that cannot be read or is not private.
    pub fn resolve(&self, db: &Path) -> Result<Resolved, KeyError> {
        if let Some(key) = env_key()? {
            return Ok(Resolved::Found(key, KeySource::Env));
        }
        let mut keystore_problem = None;
        if self.keystore {
            match keystore_get(db) {
                Ok(Some(key)) => return Ok(Resolved::Found(key, KeySource::Keystore)),
                Ok(None) => {}
                Err(KeyError::Keystore(why)) => keystore_problem = Some(why),
                Err(e) => keystore_problem = Some(e.to_string()),
            }
        }
        match &self.key_file {
            Some(path) => Ok(Resolved::Found(
                read_key_file(path)?,
                KeySource::File(path.clone()),
            )),
            None => Ok(Resolved::Missing { keystore_problem }),
        }
    }
}

/// What [`KeyOptions::resolve`] found.
#[derive(Debug)]
pub enum Resolved {
    /// A key, and where it came from.
    Found(DbKey, KeySource),
    /// No key anywhere; why the keystore could not be asked, if it could not.
    Missing { keystore_problem: Option<String> },
}

/// `CHAMELEON_DB_KEY`, when set and not empty.
///
/// # Errors
/// A key that cannot be used.
pub fn env_key() -> Result<Option<DbKey>, KeyError> {
    match std::env::var(KEY_ENV) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(DbKey::parse(&Zeroizing::new(v))?)),
        _ => Ok(None),
    }
}

/// The key in a key file: its first line. The file must be a regular file that only its owner may
/// read or write (mode 0600 or stricter).
///
/// # Errors
/// [`KeyError::FileMode`] when group or others have any access; [`KeyError::File`] when it cannot be
/// read or holds no key.
pub fn read_key_file(path: &Path) -> Result<DbKey, KeyError> {
    let file_err = |detail: String| KeyError::File {
        path: path.to_path_buf(),
        detail,
    };
    crate::files::check_regular(path).map_err(|e| file_err(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| file_err(e.to_string()))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::FileMode {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let bytes = Zeroizing::new(
        crate::files::read_limited(path, MAX_KEY_FILE_BYTES, "a key file")
            .map_err(|e| file_err(e.to_string()))?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| file_err("it is not UTF-8 text".into()))?;
    DbKey::parse(text.lines().next().unwrap_or("")).map_err(|e| file_err(e.to_string()))
}

/// Write `key` to a new file at `path` with mode 0600, synced to disk; an existing file is never
/// overwritten.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn write_key_file(path: &Path, key: &DbKey) -> Result<(), KeyError> {
    let file_err = |e: std::io::Error| KeyError::File {
        path: path.to_path_buf(),
        detail: if e.kind() == std::io::ErrorKind::AlreadyExists {
            "it exists already (a key file is never overwritten)".into()
        } else {
            e.to_string()
        },
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(file_err)?;
    file.write_all(key.text().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(file_err)
}

// ---- the operating system's keystore ----

/// The keystore account of the store at `db`: its absolute path.
fn keystore_account(db: &Path) -> String {
    let abs = std::fs::canonicalize(db)
        .unwrap_or_else(|_| std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf()));
    format!("store:{}", abs.display())
}

/// Run a keystore call on its own thread, giving up after [`KEYSTORE_TIMEOUT`].
fn with_timeout<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, KeyError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(KEYSTORE_TIMEOUT) {
        Ok(r) => r.map_err(KeyError::Keystore),
        Err(_) => Err(KeyError::Keystore(format!(
            "it did not answer in {} s (a locked keyring waiting for a prompt?)",
            KEYSTORE_TIMEOUT.as_secs()
        ))),
    }
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
mod os {
    pub fn get(account: String) -> Result<Option<String>, String> {
        let entry =
            keyring::Entry::new(super::KEYSTORE_SERVICE, &account).map_err(|e| e.to_string())?;
        match entry.get_password() {
            Ok(v) => Ok(Some(v)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn set(account: String, secret: zeroize::Zeroizing<String>) -> Result<(), String> {
        let entry =
            keyring::Entry::new(super::KEYSTORE_SERVICE, &account).map_err(|e| e.to_string())?;
        entry.set_password(&secret).map_err(|e| e.to_string())
    }

    pub fn delete(account: String) -> Result<(), String> {
        let entry =
            keyring::Entry::new(super::KEYSTORE_SERVICE, &account).map_err(|e| e.to_string())?;
        match entry.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod os {
    const NONE: &str = "this platform has no keystore chameleon can use";
    pub fn get(_: String) -> Result<Option<String>, String> {
        Err(NONE.into())
    }
    pub fn set(_: String, _: zeroize::Zeroizing<String>) -> Result<(), String> {
        Err(NONE.into())
    }
    pub fn delete(_: String) -> Result<(), String> {
        Err(NONE.into())
    }
}

/// The keystore's key for the store at `db`, if it holds one.
fn keystore_get(db: &Path) -> Result<Option<DbKey>, KeyError> {
    let account = keystore_account(db);
    match with_timeout(move || os::get(account))? {
        Some(text) => DbKey::parse(&Zeroizing::new(text)).map(Some),
        None => Ok(None),
    }
}

/// Keep `key` in the keystore as the key of the store at `db`.
///
/// # Errors
/// When the keystore fails or does not answer.
pub fn keystore_set(db: &Path, key: &DbKey) -> Result<(), KeyError> {
    let account = keystore_account(db);
    let secret = key.0.clone();
    with_timeout(move || os::set(account, secret))
}

/// Remove the keystore's key of the store at `db` (nothing when there is none).
///
/// # Errors
/// When the keystore fails or does not answer.
pub fn keystore_delete(db: &Path) -> Result<(), KeyError> {
    let account = keystore_account(db);
    with_timeout(move || os::delete(account))
}

// ---- what a file is, and the key on a connection ----

/// What the first bytes of a database file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// No file, or an empty one: a new store.
    New,
    /// An ordinary SQLite file.
    Plain,
    /// Whole pages of what looks random: a SQLCipher file (whose first bytes are a random salt), or
    /// random bytes, which only the key tells apart.
    Encrypted,
    /// Neither: text, or not whole pages. SQLite's own error says what it is not.
    Other,
}

/// What the file at `path` holds, from its header.
///
/// # Errors
/// When the file exists but cannot be read.
pub fn file_state(path: &Path) -> std::io::Result<FileState> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::New),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    // a random salt is all printable ASCII once in about 10^7 files; SQLCipher writes whole pages
    // (512 bytes at least)
    let text = head[..n]
        .iter()
        .all(|&b| b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b));
    Ok(match n {
        0 => FileState::New,
        _ if &head[..n] == b"SQLite format 3\0" => FileState::Plain,
        _ if !text && len.is_multiple_of(512) => FileState::Encrypted,
        _ => FileState::Other,
    })
}

/// Apply `key` to a fresh connection (it must be the first statement on it).
pub(super) fn apply_key(conn: &Connection, key: &DbKey) -> rusqlite::Result<()> {
    quiet(conn)?;
    conn.pragma_update(None, "key", &*key.pragma_text())
}

/// Keep SQLCipher's own log off stderr: a wrong key is reported once, as chameleon's error.
pub(super) fn quiet(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA cipher_log_level = NONE", [], |_| Ok(()))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(()),
            e => Err(e),
        })
}

/// Copy everything in the open store `src` into a new file `dst` (mode 0600) encrypted with `key`,
/// or in plaintext with `None`, synced to disk. The schema version and application id go with it.
///
/// # Errors
/// When `dst` exists or SQLite fails.
pub(super) fn export_copy(
    src: &Connection,
    dst: &Path,
    key: Option<&DbKey>,
) -> Result<(), super::StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(dst).map_err(|e| super::StoreError::Open {
        path: dst.to_path_buf(),
        source: e.into(),
    })?;
    let pragma = key.map_or_else(|| Zeroizing::new(String::new()), DbKey::pragma_text);
    let dst_text = dst.to_string_lossy().into_owned();
    src.execute(
        "ATTACH DATABASE ?1 AS target KEY ?2",
        (&dst_text, pragma.as_str()),
    )?;
    let copied = (|| -> rusqlite::Result<()> {
        src.query_row("SELECT sqlcipher_export('target')", [], |_| Ok(()))?;
        let version: i64 = src.pragma_query_value(Some("main"), "user_version", |r| r.get(0))?;
        let app: i64 = src.pragma_query_value(Some("main"), "application_id", |r| r.get(0))?;
        src.pragma_update(Some("target"), "user_version", version)?;
        src.pragma_update(Some("target"), "application_id", app)?;
        Ok(())
    })();
    let detached = src.execute("DETACH DATABASE target", []);
    copied?;
    detached?;
    std::fs::File::open(dst)
        .and_then(|f| f.sync_all())
        .map_err(|e| super::StoreError::Open {
            path: dst.to_path_buf(),
            source: e.into(),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_raw_and_anything_else_a_passphrase() {
        let raw = DbKey::parse(&"ab".repeat(32)).unwrap();
        assert!(raw.is_raw());
        assert_eq!(&*raw.pragma_text(), &format!("x'{}'", "ab".repeat(32)));
        let pass = DbKey::parse("correct horse battery staple\n").unwrap();
        assert!(!pass.is_raw());
        assert_eq!(&*pass.pragma_text(), "correct horse battery staple");
        // 63 hex digits, or a non-hex letter, make a passphrase
        assert!(!DbKey::parse(&"a".repeat(63)).unwrap().is_raw());
        assert!(
            !DbKey::parse(&format!("{}g", "a".repeat(63)))
                .unwrap()
                .is_raw()
        );
        assert!(matches!(DbKey::parse(" \n"), Err(KeyError::Empty)));
        assert!(matches!(
            DbKey::parse("a\u{7}b"),
            Err(KeyError::ControlCharacter)
        ));
    }

    #[test]
    fn random_keys_are_raw_and_differ() {
        let (a, b) = (DbKey::random().unwrap(), DbKey::random().unwrap());
        assert!(a.is_raw() && b.is_raw());
        assert_ne!(a.text(), b.text());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = DbKey::parse("secret-passphrase").unwrap();
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = DbKey::random().unwrap();
        write_key_file(&path, &key).unwrap();
        assert_eq!(read_key_file(&path).unwrap().text(), key.text());
        // never overwritten
        assert!(write_key_file(&path, &key).is_err());
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_key_file(&path).unwrap_err();
            assert!(matches!(err, KeyError::FileMode { .. }), "{mode:o}");
            assert!(err.hint().unwrap().contains("chmod 600"));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_key_file(&path).is_ok());
    }

    #[test]
    fn file_state_reads_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        assert_eq!(file_state(&path).unwrap(), FileState::New);
        std::fs::write(&path, b"").unwrap();
        assert_eq!(file_state(&path).unwrap(), FileState::New);
        std::fs::write(&path, b"SQLite format 3\0rest").unwrap();
        assert_eq!(file_state(&path).unwrap(), FileState::Plain);
        std::fs::write(&path, [7u8; 4096]).unwrap();
        assert_eq!(file_state(&path).unwrap(), FileState::Encrypted);
        std::fs::write(&path, [7u8; 4000]).unwrap();
        assert_eq!(file_state(&path).unwrap(), FileState::Other);
        std::fs::write(&path, "name,tag\nalice,comedy\n".repeat(512)).unwrap();
        assert_eq!(file_state(&path).unwrap(), FileState::Other);
    }
}
