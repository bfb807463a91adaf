//! Encryption at rest, through the real `chameleon` binary and real SQLCipher files: no user text in
//! the encrypted bytes, round trips through every kind of command, wrong and missing keys that change
//! nothing, private key files, and the store's promises (crash safety, forget, modes) kept encrypted.

mod common;
mod store_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chameleon::store::crypt::{DbKey, KeySource};
use chameleon::store::{NewItem, Store};
use tempfile::TempDir;

const KEY: &str = "3c1f8a0b9e2d4c6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";
const TOKEN: &str = "zq7xj-marmalade-lighthouse";

struct Scratch {
    dir: TempDir,
    db: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chameleon.db");
        Scratch { dir, db }
    }

    /// `chameleon --db <db> args...`, with the key in `$CHAMELEON_DB_KEY` when given, and never the
    /// keystore (a test must not touch the user's keyring).
    fn run<S: AsRef<str>>(&self, key: Option<&str>, args: &[S]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chameleon"));
        cmd.arg("--db")
            .arg(&self.db)
            .args(args.iter().map(AsRef::as_ref))
            .env_remove("CHAMELEON_DB")
            .env_remove("CHAMELEON_DB_KEY")
            .env_remove("CHAMELEON_KEY_FILE")
            .env("CHAMELEON_KEYSTORE", "off");
        if let Some(key) = key {
            cmd.env("CHAMELEON_DB_KEY", key);
        }
        cmd.output().unwrap()
    }

    fn ok<S: AsRef<str>>(&self, key: Option<&str>, args: &[S]) -> String {
        let out = self.run(key, args);
        assert!(
            out.status.success(),
            "`chameleon {}` failed:\n{}",
            join(args),
            stderr(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails<S: AsRef<str>>(&self, key: Option<&str>, args: &[S]) -> String {
        let out = self.run(key, args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "`chameleon {}` should fail",
            join(args)
        );
        stderr(&out)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The database and its `-wal`/`-shm` files, and every other file in the directory, with their
    /// bytes: equal snapshots mean nothing on disk changed.
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    /// Whether the database or its `-wal`/`-shm` files hold `needle`.
    fn bytes_hold(&self, needle: &str) -> bool {
        ["", "-wal", "-shm"].iter().any(|suffix| {
            let mut name = self.db.as_os_str().to_owned();
            name.push(suffix);
            store_common::file_contains(Path::new(&name), needle.as_bytes())
        })
    }
}

fn join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn history_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/history.json")
}

/// A user with history, a group, and the token in one item.
fn fill(t: &Scratch, key: Option<&str>) {
    t.ok(key, &["user", "add", "alice"]);
    t.ok(
        key,
        &[
            "history",
            "import",
            "--user",
            "alice",
            s(&history_fixture()),
        ],
    );
    t.ok(
        key,
        &[
            "history",
            "add",
            "--user",
            "alice",
            "--input",
            "a secret?",
            "--output",
            TOKEN,
        ],
    );
    t.ok(key, &["user", "add", "bob"]);
    t.ok(key, &["group", "add", "readers", "alice", "bob"]);
}

/// Written through the store while it is open (frames in the write-ahead log, not yet checkpointed)
/// and after it is closed: the text is in none of the database's files.
#[test]
fn an_encrypted_store_holds_none_of_the_users_text() {
    let t = Scratch::new();
    let key = DbKey::parse(KEY).unwrap();
    {
        let store = Store::open_keyed(&t.db, Some((&key, KeySource::Env))).unwrap();
        let user = store.create_user("alice").unwrap();
        let item = NewItem {
            input: "what did you think of it?".into(),
            output: TOKEN.into(),
            task: "general".into(),
            time: Some(1_700_000_000),
            source_id: None,
        };
        store.add_history(user.id, &[item]).unwrap();
        let wal = std::fs::metadata(t.path("chameleon.db-wal")).map_or(0, |m| m.len());
        assert!(wal > 0, "the write should still be in the write-ahead log");
        assert!(
            !t.bytes_hold(TOKEN),
            "the text is in the open store's files"
        );
        assert!(!t.bytes_hold("alice"));
    }
    assert!(
        !t.bytes_hold(TOKEN),
        "the text is in the closed store's files"
    );
    // and the same through the binary, with a checkpoint by the last close
    let out = t.ok(Some(KEY), &["history", "list", "--user", "alice"]);
    assert!(out.contains(TOKEN));
    assert!(!t.bytes_hold(TOKEN));
    assert_eq!(store_common::mode(&t.db), 0o600);

    // a plaintext store holds it, which is what makes the check above mean something
    let plain = Scratch::new();
    fill(&plain, None);
    assert!(plain.bytes_hold(TOKEN));
}

#[test]
fn encrypt_every_command_rekey_decrypt_round_trip() {
    let t = Scratch::new();
    fill(&t, None);
    let before = store_common::dump(&t.db);
    let export_before = t.ok(None, &["export", "--user", "alice"]);

    // encrypt into a new key file: the file is made private, the store unreadable without it
    let k1 = t.path("store.key");
    let err = t.run(None, &["--key-file", s(&k1), "store", "encrypt"]);
    assert!(err.status.success(), "{}", stderr(&err));
    assert!(stderr(&err).contains("recovery-key"), "{}", stderr(&err));
    assert_eq!(store_common::mode(&k1), 0o600);
    assert_eq!(store_common::mode(&t.db), 0o600);
    assert!(!t.bytes_hold(TOKEN));
    let k1_text = std::fs::read_to_string(&k1).unwrap();
    assert_eq!(store_common::dump_keyed(&t.db, k1_text.trim()), before);
    let status = t.ok(None, &["--key-file", s(&k1), "store", "status"]);
    assert!(
        status.contains("SQLCipher") && status.contains("store.key"),
        "{status}"
    );
    assert!(!status.contains(k1_text.trim()), "status shows the key");

    // every kind of command opens it with the key file
    let kf = s(&k1).to_string();
    let with = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["--key-file".to_string(), kf.clone()];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    assert!(t.ok(None, &with(&["user", "list"])).contains("alice"));
    assert!(
        t.ok(None, &with(&["history", "list", "--user", "alice"]))
            .contains(TOKEN)
    );
    assert_eq!(
        t.ok(None, &with(&["export", "--user", "alice"])),
        export_before
    );
    assert!(t.ok(None, &with(&["group", "list"])).contains("readers"));
    let exported = t.path("alice.json");
    std::fs::write(&exported, &export_before).unwrap();
    t.ok(None, &with(&["user", "forget", "alice"]));
    t.ok(None, &with(&["import", s(&exported)]));
    assert_eq!(
        t.ok(None, &with(&["export", "--user", "alice"])),
        export_before
    );
    // a command that loads the model reads the encrypted store too (alice has no profile, which it
    // can only know from the store)
    let model = common::smollm();
    let err = t.fails(
        None,
        &with(&[
            "generate",
            "--model",
            s(&model),
            "--threads",
            common::THREADS,
            "--user",
            "alice",
            "--max-tokens",
            "2",
            "--prompt",
            "Hello",
        ]),
    );
    assert!(err.contains("has no profile for this model"), "{err}");
    // (the group goes with alice's forget; the rest is as before)
    t.ok(None, &with(&["group", "add", "readers", "alice", "bob"]));
    let after_commands = store_common::dump_keyed(&t.db, k1_text.trim());

    // rekey into a second file: the old key fails, the file unchanged by the failure
    let k2 = t.path("new.key");
    t.ok(None, &with(&["store", "rekey", "--new-key-file", s(&k2)]));
    let k2_text = std::fs::read_to_string(&k2).unwrap();
    assert_ne!(k1_text, k2_text);
    assert_eq!(
        store_common::dump_keyed(&t.db, k2_text.trim()),
        after_commands
    );
    let snapshot = t.snapshot();
    let err = t.fails(None, &with(&["user", "list"]));
    assert!(err.contains("does not open"), "{err}");
    assert_eq!(t.snapshot(), snapshot);

    // a recovery key opens it; decrypting gives the same rows in a plaintext file
    let rec = t.path("recovery.key");
    t.ok(
        None,
        &[
            "--key-file",
            s(&k2),
            "store",
            "recovery-key",
            "--out",
            s(&rec),
        ],
    );
    assert_eq!(store_common::mode(&rec), 0o600);
    assert!(
        t.fails(
            None,
            &[
                "--key-file",
                s(&k2),
                "store",
                "recovery-key",
                "--out",
                s(&rec)
            ]
        )
        .contains("never overwritten")
    );
    t.ok(None, &["--key-file", s(&rec), "store", "decrypt"]);
    assert_eq!(store_common::dump(&t.db), after_commands);
    assert!(t.bytes_hold(TOKEN));
    assert!(t.ok(None, &["store", "status"]).contains("plaintext"));
}

#[test]
fn a_wrong_or_missing_key_fails_cleanly_and_changes_nothing() {
    let t = Scratch::new();
    fill(&t, Some(KEY));
    let snapshot = t.snapshot();
    let wrong = "0".repeat(64);
    for (key, args, expected) in [
        (Some(wrong.as_str()), vec!["user", "list"], "does not open"),
        (
            Some("a passphrase instead"),
            vec!["history", "list", "--user", "alice"],
            "does not open",
        ),
        (None, vec!["user", "list"], "no key for it was found"),
        (
            None,
            vec!["user", "add", "carol"],
            "no key for it was found",
        ),
        (None, vec!["store", "decrypt"], "no key for it was found"),
    ] {
        let err = t.fails(key, &args);
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("hint:"), "{err}");
        assert!(!err.contains("file is not a database"), "{err}");
        assert!(!err.contains("ERROR CORE"), "SQLCipher's own log: {err}");
        assert_eq!(
            t.snapshot(),
            snapshot,
            "`{}` changed the files",
            args.join(" ")
        );
    }
    // status says what it can without the key, and changes nothing either
    let status = t.ok(None, &["store", "status"]);
    assert!(status.contains("encrypted, not opened"), "{status}");
    assert_eq!(t.snapshot(), snapshot);

    // a key given for a plaintext store is refused rather than silently unused
    let plain = Scratch::new();
    fill(&plain, None);
    let err = plain.fails(Some(KEY), &["user", "list"]);
    assert!(
        err.contains("is not encrypted") && err.contains("store encrypt"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn key_files_others_can_read_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = Scratch::new();
    let key = t.path("k");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = t.fails(None, &["--key-file", s(&key), "store", "encrypt"]);
        assert!(err.contains("can be read by other users"), "{err}");
        assert!(err.contains(&format!("chmod 600 {}", s(&key))), "{err}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    t.ok(None, &["--key-file", s(&key), "store", "encrypt"]);
    // the key file's key is the store's key (a passphrase or raw key the user wrote themselves)
    t.ok(Some(KEY), &["user", "list"]);
}

/// Without a key file and with no keystore to ask (no D-Bus session here), encrypting is refused
/// with a hint, promptly, and the store stays as it was.
#[test]
fn no_keystore_is_an_error_with_a_hint_not_a_hang() {
    let t = Scratch::new();
    fill(&t, None);
    let snapshot = t.snapshot();
    let out = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(&t.db)
        .args(["store", "encrypt"])
        .env_remove("CHAMELEON_DB_KEY")
        .env_remove("CHAMELEON_KEY_FILE")
        .env_remove("CHAMELEON_KEYSTORE")
        .env_remove("DISPLAY")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", s(&t.path("no-bus"))),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("keystore is not available"), "{err}");
    assert!(err.contains("--key-file"), "{err}");
    assert_eq!(t.snapshot(), snapshot);
}

/// `forget` on an encrypted store: no row left, and (decrypted afterwards) not a byte of the text.
#[test]
fn forget_leaves_nothing_in_an_encrypted_store() {
    let t = Scratch::new();
    fill(&t, Some(KEY));
    t.ok(Some(KEY), &["user", "forget", "alice"]);
    assert!(!t.ok(Some(KEY), &["user", "list"]).contains("alice"));
    let dump = store_common::dump_keyed(&t.db, KEY);
    assert!(!dump.contains(TOKEN) && !dump.contains("alice"), "{dump}");
    let rec = t.path("rec");
    std::fs::write(&rec, KEY).unwrap();
    std::fs::set_permissions(&rec, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    t.ok(None, &["--key-file", s(&rec), "store", "decrypt"]);
    assert!(
        !t.bytes_hold(TOKEN),
        "forgotten text survives in the decrypted file"
    );
}

/// SIGKILL in the middle of a large import into an encrypted store: it reopens with its key, intact,
/// with all of the import or none of it.
#[test]
fn an_encrypted_import_killed_midway_stores_all_or_nothing() {
    const N: usize = 100_000;
    let t = Scratch::new();
    t.ok(Some(KEY), &["user", "add", "alice"]);
    let mut jsonl = String::with_capacity(N * 160);
    for i in 0..N {
        let line = serde_json::json!({
            "input": format!("generated question {i}: what would you like to read next?"),
            "output": format!("generated answer {i}: something long and slow, with maps"),
        });
        jsonl.push_str(&line.to_string());
        jsonl.push('\n');
    }
    let file = t.path("large.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    let wal = t.path("chameleon.db-wal");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(&t.db)
        .args(["history", "import", "--user", "alice", s(&file)])
        .env("CHAMELEON_DB_KEY", KEY)
        .env("CHAMELEON_KEYSTORE", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut killed_midway = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if wal_len > 2 << 20 || start.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap();
            killed_midway = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait().unwrap();
    assert!(
        killed_midway,
        "the import finished before it could be killed"
    );
    let key = DbKey::parse(KEY).unwrap();
    let store = Store::open_keyed(&t.db, Some((&key, KeySource::Env))).unwrap();
    let alice = store.require_user("alice").unwrap();
    let n = store.history_len(alice.id).unwrap();
    assert!(n == 0 || n == N, "{n} items: all of the import or none");
    drop(store);
    let dump = store_common::dump_keyed(&t.db, KEY);
    assert!(dump.starts_with("user_version"));
}

/// The default path: `store encrypt` with no key given keeps a random key in the OS keystore, every
/// command then finds it there, `rekey` replaces it and `decrypt` removes it. Run against a real Secret
/// Service (gnome-keyring in a private D-Bus session, which `make test` installs).
#[cfg(target_os = "linux")]
#[test]
fn the_keystore_keeps_the_key_from_encrypt_to_decrypt() {
    let t = Scratch::new();
    let script = r#"
set -e
eval "$(printf 'test-password' | gnome-keyring-daemon --unlock --components=secrets)"
c() { "$BIN" --db "$DB" "$@"; }
c user add maya
c history add --user maya --input q --output "$TOKEN"
c store encrypt
echo "status: $(c store status | grep '^key')"
echo "history: $(c history list --user maya)"
c store recovery-key --out "$DIR/recovery.key"
CHAMELEON_KEYSTORE=off c --key-file "$DIR/recovery.key" user list >/dev/null && echo "recovery opens"
c store rekey
CHAMELEON_KEYSTORE=off c --key-file "$DIR/recovery.key" user list >/dev/null 2>&1 || echo "old recovery refused"
echo "after rekey: $(c user list)"
c store decrypt
echo "decrypted: $(c store status | grep '^encryption')"
"#;
    let home = t.path("home");
    std::fs::create_dir(&home).unwrap();
    let out = Command::new("dbus-run-session")
        .args(["--", "bash", "-c", script])
        .env("BIN", env!("CARGO_BIN_EXE_chameleon"))
        .env("DB", &t.db)
        .env("DIR", t.dir.path())
        .env("TOKEN", TOKEN)
        // a keyring of its own, never the user's
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("CHAMELEON_DB_KEY")
        .env_remove("CHAMELEON_KEY_FILE")
        .env_remove("CHAMELEON_KEYSTORE")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .expect(
            "dbus-run-session runs (Debian: apt install dbus-daemon gnome-keyring; make test does)",
        );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("its key is in the keystore"), "{text}");
    assert!(
        text.contains("status: key         from the keystore"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "history: {{\"input\":\"q\",\"output\":\"{TOKEN}\""
        )),
        "{text}"
    );
    assert!(text.contains("recovery opens"), "{text}");
    assert!(text.contains("old recovery refused"), "{text}");
    assert!(text.contains("after rekey: maya\t1"), "{text}");
    assert!(text.contains("its keystore entry was removed"), "{text}");
    assert!(text.contains("decrypted: encryption  none"), "{text}");
    assert_eq!(store_common::mode(&t.path("recovery.key")), 0o600);
}
