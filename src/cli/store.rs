//! `chameleon store`: encryption at rest (encrypt, decrypt, rekey, a recovery key) and the store's
//! status.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::Global;
use crate::store::crypt::{
    self, DbKey, FileState, KEY_ENV, KeySource, Resolved, env_key, keystore_delete, keystore_set,
    read_key_file, write_key_file,
};
use crate::store::{Store, StoreError};

/// Encrypt, decrypt or rekey the store; write a recovery key; show its status.
#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Whether the store is encrypted, where its key comes from, its schema version and sizes (never
    /// the key).
    Status {
        /// As a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Encrypt a plaintext store with a new random 256-bit key, kept in the keystore (or in the
    /// `--key-file` named, created mode 0600 if missing; or the key in `$CHAMELEON_DB_KEY`).
    Encrypt,
    /// Decrypt the store back to a plaintext SQLite file (to leave chameleon, or to read it with
    /// other tools); its keystore entry is removed.
    Decrypt,
    /// Re-encrypt the store with a new random key, kept where the old one was (the keystore), or in
    /// `--new-key-file`.
    Rekey {
        /// Keep the new key in this file (created mode 0600; an existing private key file's key is
        /// used instead).
        #[arg(long, value_name = "PATH")]
        new_key_file: Option<PathBuf>,
    },
    /// Write the store's key to a new file (mode 0600) to keep somewhere safe, off this machine:
    /// `--key-file FILE` opens the store with it when the keystore is lost.
    RecoveryKey {
        /// The file to create (never overwritten).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
}

/// Run `chameleon store`.
///
/// # Errors
/// A store that cannot be opened, a key that cannot be found or kept, a rewrite that fails (the
/// store is then unchanged).
pub fn run(args: StoreArgs, global: &Global) -> anyhow::Result<()> {
    let db = global.db_path();
    match args.command {
        StoreCommand::Status { json } => status(&db, global, json),
        StoreCommand::Encrypt => encrypt(&db, global),
        StoreCommand::Decrypt => decrypt(&db, global),
        StoreCommand::Rekey { new_key_file } => rekey(&db, global, new_key_file),
        StoreCommand::RecoveryKey { out } => recovery_key(&db, global, &out),
    }
}

const LOSS_WARNING: &str = "Without the key the store cannot be opened by anyone, you included: write a recovery key \
now (`chameleon store recovery-key --out FILE`) and keep it off this machine.";

const BLOCKS_WARNING: &str = "The plaintext file was replaced, but an SSD or a copy-on-write filesystem may keep its old \
blocks until they are reused, and backups made before now are still plaintext.";

fn encrypt(db: &Path, global: &Global) -> anyhow::Result<()> {
    if crypt::file_state(db)? == FileState::Encrypted {
        anyhow::bail!(
            "`{}` is encrypted already\nhint: `chameleon store rekey` gives it a new key",
            db.display()
        );
    }
    let store = Store::open_keyed(db, None)?;
    let options = global.key_options();
    // the new key, and where it is kept
    let (key, source, created_file) = if let Some(key) = env_key()? {
        (key, KeySource::Env, false)
    } else if let Some(path) = &options.key_file {
        if path.exists() {
            (read_key_file(path)?, KeySource::File(path.clone()), false)
        } else {
            let key = DbKey::random()?;
            write_key_file(path, &key)?;
            (key, KeySource::File(path.clone()), true)
        }
    } else if options.keystore {
        (DbKey::random()?, KeySource::Keystore, false)
    } else {
        anyhow::bail!(
            "no place to keep the key: the keystore is off (`${}`)\nhint: name a key file with \
             `--key-file PATH` (created mode 0600), or set `${KEY_ENV}`",
            crypt::KEYSTORE_ENV
        );
    };
    let result = store.rewrite(Some(&key), || {
        if source == KeySource::Keystore {
            keystore_set(db, &key)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        if created_file && let KeySource::File(path) = &source {
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    eprintln!(
        "encrypted `{}` (SQLCipher, AES-256); its key is in {source}.\n{LOSS_WARNING}\n{BLOCKS_WARNING}",
        db.display()
    );
    Ok(())
}

fn decrypt(db: &Path, global: &Global) -> anyhow::Result<()> {
    let store = open_encrypted(db, global)?;
    let source = store.key_source().cloned();
    store.rewrite(None, || Ok(()))?;
    let after = match &source {
        Some(KeySource::Keystore) => match keystore_delete(db) {
            Ok(()) => "its keystore entry was removed".to_string(),
            Err(e) => format!("its keystore entry could not be removed ({e})"),
        },
        Some(KeySource::File(p)) => format!("the key file `{}` is no longer needed", p.display()),
        _ => format!("`${KEY_ENV}` is no longer needed (unset it, or the store is refused)"),
    };
    eprintln!(
        "decrypted `{}`: it is a plaintext SQLite file now; {after}",
        db.display()
    );
    Ok(())
}

fn rekey(db: &Path, global: &Global, new_key_file: Option<PathBuf>) -> anyhow::Result<()> {
    let options = global.key_options();
    let (old_key, old_source) = match options.resolve(db)? {
        Resolved::Found(key, source) => (key, source),
        Resolved::Missing { keystore_problem } => {
            return Err(StoreError::Locked {
                path: db.to_path_buf(),
                keystore_problem,
            }
            .into());
        }
    };
    if crypt::file_state(db)? != FileState::Encrypted {
        anyhow::bail!(
            "`{}` is not encrypted\nhint: `chameleon store encrypt` encrypts it",
            db.display()
        );
    }
    let store = Store::open_keyed(db, Some((&old_key, old_source.clone())))?;
    let (new_key, new_source, created_file) = match &new_key_file {
        Some(path) if path.exists() => (read_key_file(path)?, KeySource::File(path.clone()), false),
        Some(path) => {
            let key = DbKey::random()?;
            write_key_file(path, &key)?;
            (key, KeySource::File(path.clone()), true)
        }
        None if old_source == KeySource::Keystore => (DbKey::random()?, KeySource::Keystore, false),
        None => anyhow::bail!(
            "the key came from {old_source}, which chameleon does not write\nhint: name where the new key \
             goes with `--new-key-file PATH`"
        ),
    };
    let result = store.rewrite(Some(&new_key), || {
        if new_source == KeySource::Keystore {
            keystore_set(db, &new_key)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        if new_source == KeySource::Keystore {
            // the copy was not put in place: the old key opens the store again
            let _ = keystore_set(db, &old_key);
        }
        if created_file && let KeySource::File(path) = &new_source {
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    if old_source == KeySource::Keystore && new_source != KeySource::Keystore {
        let _ = keystore_delete(db);
    }
    eprintln!(
        "rekeyed `{}`: its new key is in {new_source}; the old key no longer opens it (old recovery \
         keys included: write a new one with `chameleon store recovery-key --out FILE`)",
        db.display()
    );
    Ok(())
}

fn recovery_key(db: &Path, global: &Global, out: &Path) -> anyhow::Result<()> {
    let key = match global.key_options().resolve(db)? {
        Resolved::Found(key, source) if crypt::file_state(db)? == FileState::Encrypted => {
            // only a key that opens the store is worth writing down
            drop(Store::open_keyed(db, Some((&key, source)))?);
            key
        }
        Resolved::Found(..) => anyhow::bail!(
            "`{}` is not encrypted: it has no key to recover\nhint: `chameleon store encrypt` encrypts it",
            db.display()
        ),
        Resolved::Missing { keystore_problem } => {
            return Err(StoreError::Locked {
                path: db.to_path_buf(),
                keystore_problem,
            }
            .into());
        }
    };
    write_key_file(out, &key)?;
    eprintln!(
        "wrote the key of `{}` to `{}` (mode 0600). Keep it off this machine (a password manager, or on \
         paper); `--key-file {}` opens the store with it.",
        db.display(),
        out.display(),
        out.display()
    );
    Ok(())
}

fn status(db: &Path, global: &Global, json: bool) -> anyhow::Result<()> {
    let state = crypt::file_state(db)?;
    let size = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        std::fs::metadata(PathBuf::from(name)).map_or(0, |m| m.len())
    };
    let (bytes, wal, shm) = (size(""), size("-wal"), size("-shm"));
    // a plaintext or missing store is not created by looking at it
    let opened = match state {
        FileState::New => None,
        FileState::Plain | FileState::Other => Some(Store::open_keyed(db, None)),
        FileState::Encrypted => Some(global.open_store()),
    };
    let (encryption, key_source, schema, users, cipher) = match opened {
        None => ("none (no store yet)".to_string(), None, None, None, None),
        Some(Ok(store)) => {
            let source = store.key_source().map(ToString::to_string);
            let encryption = match &source {
                Some(_) => "SQLCipher (AES-256, HMAC-SHA512 per page)".to_string(),
                None => "none: a plaintext SQLite file".to_string(),
            };
            let cipher = source
                .as_ref()
                .map(|_| store.cipher_version())
                .transpose()?;
            (
                encryption,
                source,
                Some(store.schema_version()?),
                Some(store.users()?.len()),
                cipher,
            )
        }
        Some(Err(e @ (StoreError::Locked { .. } | StoreError::WrongKey { .. }))) => (
            format!("encrypted, not opened: {e}"),
            None,
            None,
            None,
            None,
        ),
        Some(Err(e)) => return Err(e.into()),
    };
    if json {
        let value = serde_json::json!({
            "path": db,
            "encrypted": state == FileState::Encrypted,
            "encryption": encryption,
            "key_source": key_source,
            "cipher_version": cipher,
            "schema_version": schema,
            "users": users,
            "bytes": {"db": bytes, "wal": wal, "shm": shm},
        });
        serde_json::to_writer_pretty(std::io::stdout().lock(), &value)?;
        outln!()?;
        return Ok(());
    }
    outln!("store       {}", db.display())?;
    outln!("encryption  {encryption}")?;
    if let Some(source) = key_source {
        outln!("key         from {source}")?;
    }
    if let Some(cipher) = cipher {
        outln!("sqlcipher   {cipher}")?;
    }
    if let Some(schema) = schema {
        outln!("schema      version {schema}")?;
    }
    if let Some(users) = users {
        outln!("users       {users}")?;
    }
    outln!(
        "size        {} (wal {}, shm {})",
        crate::files::Size(bytes),
        crate::files::Size(wal),
        crate::files::Size(shm)
    )?;
    Ok(())
}

/// The store at `db`, which must be encrypted, opened with its key.
fn open_encrypted(db: &Path, global: &Global) -> anyhow::Result<Store> {
    if crypt::file_state(db)? != FileState::Encrypted {
        anyhow::bail!(
            "`{}` is not encrypted\nhint: nothing to do; `chameleon store status` shows it",
            db.display()
        );
    }
    Ok(global.open_store()?)
}
