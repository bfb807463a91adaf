//! Careless and hostile input, through the real binary: paths that are not regular files, SQLite files
//! that are not chameleon's, profiles that would break the model, two processes creating one store,
//! a reader that closes the pipe, and `forget` while another process reads. Each case checks the exit
//! code, the message, and that nothing changed where nothing should.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::ok;
use rusqlite::Connection;

/// The binary with `--db db` and `args`.
fn cmd(db: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chameleon"));
    c.arg("--db").arg(db).args(args);
    c
}

/// Wait for `child` at most `secs`; a child still running then is killed and the test fails (the
/// class of bug is "hangs forever").
fn finish(mut child: Child, secs: u64, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` still ran after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Run with a deadline; stdout and stderr captured.
fn run_within(c: &mut Command, secs: u64, what: &str) -> Output {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, secs, what)
}

/// A failure whose stderr has `needle` and no panic.
fn fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "wanted `{needle}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo");
}

// ---- 1. reads that never end or never start ----

#[test]
fn devices_fifos_and_directories_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    ok(cmd(&db, &["user", "add", "alice"]).output().unwrap());

    let zero = dir.path().join("z.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let out = run_within(
        cmd(&db, &["history", "import", "--user", "alice"]).arg(&zero),
        30,
        "history import of /dev/zero",
    );
    fails_with(&out, "is a character device, not a regular file");

    let fifo = dir.path().join("f.gguf");
    mkfifo(&fifo);
    let out = run_within(
        cmd(&db, &["info", "--model"]).arg(&fifo),
        30,
        "info --model FIFO",
    );
    fails_with(&out, "is a FIFO (named pipe), not a regular file");
    let out = run_within(
        cmd(&db, &["history", "import", "--user", "alice"]).arg(&fifo),
        30,
        "history import of a FIFO",
    );
    fails_with(&out, "FIFO");
    let out = run_within(cmd(&db, &["import"]).arg(&fifo), 30, "import of a FIFO");
    fails_with(&out, "FIFO");
    let out = run_within(&mut cmd(&fifo, &["user", "list"]), 30, "--db FIFO");
    fails_with(&out, "FIFO");
    let out = run_within(
        cmd(&db, &["eval", "--data"])
            .arg(dir.path())
            .args(["--model"])
            .arg(&fifo),
        30,
        "eval --model FIFO",
    );
    assert!(!out.status.success());

    let out = run_within(
        cmd(&db, &["history", "import", "--user", "alice"]).arg(dir.path()),
        30,
        "history import of a directory",
    );
    fails_with(&out, "is a directory");
    // nothing was stored
    let list = ok(cmd(&db, &["user", "list"]).output().unwrap());
    assert_eq!(list.trim(), "alice\t0");
}

#[test]
fn a_lamp_split_that_is_a_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("dev_questions.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("dev_outputs.json")).unwrap();
    let err = chameleon::eval::lamp::LampSet::load(dir.path(), "dev").unwrap_err();
    assert!(err.to_string().contains("character device"), "{err}");
}

// ---- 2. SQLite files that are not chameleon's ----

/// The bytes of a file and whether SQLite's side files exist.
fn snapshot(db: &Path) -> (Vec<u8>, bool) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    (std::fs::read(db).unwrap(), wal.exists())
}

#[test]
fn another_programs_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();

    // a database of tables of its own
    let foreign = dir.path().join("foo.db");
    let c = Connection::open(&foreign).unwrap();
    c.execute_batch("CREATE TABLE foo (x INTEGER); INSERT INTO foo VALUES (1);")
        .unwrap();
    drop(c);
    let before = snapshot(&foreign);
    let out = cmd(&foreign, &["user", "add", "alice"]).output().unwrap();
    fails_with(&out, "is not a chameleon store: it has a table `foo`");
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));
    assert_eq!(snapshot(&foreign), before, "the file changed");

    // another program's application id, even without tables
    let tagged = dir.path().join("tagged.db");
    let c = Connection::open(&tagged).unwrap();
    c.pragma_update(None, "application_id", 0x0f05_5112)
        .unwrap();
    drop(c);
    let before = snapshot(&tagged);
    let out = cmd(&tagged, &["user", "list"]).output().unwrap();
    fails_with(&out, "its application id is 0x0f055112");
    assert_eq!(snapshot(&tagged), before);

    // chameleon's id and a newer version: refused before the journal mode changes
    let newer = dir.path().join("newer.db");
    let c = Connection::open(&newer).unwrap();
    c.pragma_update(
        None,
        "application_id",
        chameleon::store::schema::APPLICATION_ID,
    )
    .unwrap();
    c.pragma_update(None, "user_version", 999).unwrap();
    drop(c);
    let before = snapshot(&newer);
    let out = cmd(&newer, &["user", "list"]).output().unwrap();
    fails_with(&out, "schema version 999, newer than this chameleon knows");
    assert_eq!(snapshot(&newer), before);
    let mode: String = Connection::open(&newer)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");

    // chameleon's id over a schema that disagrees: the migration fails in one line, without its SQL,
    // and leaves nothing behind
    let odd = dir.path().join("odd.db");
    let c = Connection::open(&odd).unwrap();
    c.execute_batch("CREATE TABLE users (x INTEGER);").unwrap();
    c.pragma_update(
        None,
        "application_id",
        chameleon::store::schema::APPLICATION_ID,
    )
    .unwrap();
    drop(c);
    let out = cmd(&odd, &["user", "list"]).output().unwrap();
    fails_with(&out, "cannot bring");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("table users already exists"), "{stderr}");
    assert!(!stderr.contains("CREATE"), "{stderr}");
    let tables: i64 = Connection::open(&odd)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1);
}

#[test]
fn a_store_without_the_application_id_is_recognised_by_its_tables_and_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    ok(cmd(&db, &["user", "add", "alice"]).output().unwrap());
    let id = |db: &Path| -> i32 {
        Connection::open(db)
            .unwrap()
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(id(&db), chameleon::store::schema::APPLICATION_ID);
    // as a store written before application ids: recognised, and stamped on open
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "application_id", 0)
        .unwrap();
    assert_eq!(
        ok(cmd(&db, &["user", "list"]).output().unwrap()).trim(),
        "alice\t0"
    );
    assert_eq!(id(&db), chameleon::store::schema::APPLICATION_ID);
    // ... but not with a table of someone else's beside chameleon's
    let c = Connection::open(&db).unwrap();
    c.pragma_update(None, "application_id", 0).unwrap();
    c.execute_batch("CREATE TABLE notes (t TEXT)").unwrap();
    drop(c);
    fails_with(
        &cmd(&db, &["user", "list"]).output().unwrap(),
        "it has a table `notes` that a chameleon store does not",
    );
}

// ---- 3. profiles that break the model ----

/// An export of `name` with the given profiles (a model of 2 layers of size 4).
fn export_with(name: &str, profiles: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({
        "format": "chameleon-user",
        "version": 1,
        "user": {"name": name, "created": 1},
        "history": [{"input": "q", "output": "a"}],
        "profiles": profiles,
    })
}

fn profile(fingerprint: &str, p1: [f32; 4]) -> serde_json::Value {
    serde_json::json!({
        "model": {"fingerprint": fingerprint, "n_layer": 2, "hidden": 4},
        "selected_layers": [1],
        "layers": [
            {"layer": 0, "p": [0.0, 0.0, 0.0, 0.0], "n": [0.0, 0.0, 0.0, 0.0], "ccs_loss": 0.0},
            {"layer": 1, "p": p1, "n": [0.0, 1.0, 0.0, 0.0], "ccs_loss": 0.1},
        ],
        "params": {},
        "created": 2,
    })
}

fn import(db: &Path, dir: &Path, doc: &serde_json::Value) -> Output {
    let file = dir.join("export.json");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    cmd(db, &["import"]).arg(&file).output().unwrap()
}

#[test]
fn profiles_with_huge_non_unit_or_bad_scale_directions_are_refused_at_import() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    for (p1, needle) in [
        (
            [1e30, 0.0, 0.0, 0.0],
            "layer 1: `p` has norm 1.000e30, not 1",
        ),
        ([2.0, 0.0, 0.0, 0.0], "layer 1: `p` has norm 2, not 1"),
    ] {
        let out = import(
            &db,
            dir.path(),
            &export_with("mallory", &[profile("m", p1)]),
        );
        fails_with(&out, needle);
    }
    let mut bad_scale = profile("m", [1.0, 0.0, 0.0, 0.0]);
    bad_scale["params"] = serde_json::json!({"align": {"scale": [1.0, 1e30]}});
    fails_with(
        &import(&db, dir.path(), &export_with("mallory", &[bad_scale])),
        "layer 1: the additive scale",
    );
    // nothing of the refused imports was stored
    assert_eq!(ok(cmd(&db, &["user", "list"]).output().unwrap()).trim(), "");

    // zero is "no direction", unit is fine; a profile given twice is stored once and counted once
    let good = profile("m", [0.0, 0.0, 0.6, 0.8]);
    let out = import(
        &db,
        dir.path(),
        &export_with("alice", &[good.clone(), good]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 into `profiles`"), "{stderr}");
    let stored: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM profiles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 1);
}

#[test]
fn a_profile_changed_in_the_file_is_refused_at_load_naming_the_layer() {
    use chameleon::store::{LayerDirections, ModelIdentity, Owner, Profile, Store, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let store = Store::open(&db).unwrap();
    store.create_user("alice").unwrap();
    let model = ModelIdentity {
        fingerprint: "m".into(),
        n_layer: 2,
        hidden: 4,
    };
    let layer = |l: usize| LayerDirections {
        layer: l,
        p: vec![1.0, 0.0, 0.0, 0.0],
        n: vec![0.0; 4],
        ccs_loss: 0.0,
    };
    let owner = Owner::User("alice".into());
    store
        .save_profile(
            &owner,
            &Profile {
                model: model.clone(),
                selected_layers: vec![1],
                layers: vec![layer(0), layer(1)],
                params: serde_json::json!({}),
                created: 1,
            },
        )
        .unwrap();
    assert!(store.load_profile(&owner, &model).unwrap().is_some());
    let huge: Vec<u8> = [1e30f32, 0.0, 0.0, 0.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    Connection::open(&db)
        .unwrap()
        .execute("UPDATE profile_layers SET p = ?1 WHERE layer = 1", [huge])
        .unwrap();
    let err = store.load_profile(&owner, &model).unwrap_err();
    assert!(matches!(err, StoreError::CorruptProfile { .. }), "{err}");
    assert!(err.to_string().contains("layer 1"), "{err}");
}

// ---- 4. two processes creating one store ----

/// Many rounds of several processes opening one new store at once: every one succeeds (a 2% failure
/// rate would show in 200 rounds of 4 with near certainty; before the fix it failed about
/// once in 400 rounds).
#[test]
fn processes_creating_one_new_store_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..200 {
        let db = dir.path().join(format!("r{round}/c.db"));
        let children: Vec<Child> = (0..4)
            .map(|i| {
                let args: &[&str] = if i % 2 == 0 {
                    &["user", "list"]
                } else {
                    &["group", "list"]
                };
                cmd(&db, args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = finish(child, 60, "concurrent first open");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

// ---- 5. a reader that closes the pipe ----

/// Start `c` with stdout a pipe whose reading end is closed at once: the command must end quietly.
fn with_closed_stdout(mut c: Command, what: &str) {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    let mut err = child.stderr.take().unwrap();
    let out = finish(child, 120, what);
    err.read_to_string(&mut stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    assert!(stderr.trim().is_empty(), "{what}: {stderr}");
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    ok(cmd(&db, &["user", "add", "alice"]).output().unwrap());
    // a history larger than a pipe's buffer, so the writes meet the closed pipe
    let items: Vec<serde_json::Value> = (0..400)
        .map(|i| serde_json::json!({"input": format!("question {i} {}", "x".repeat(200)), "output": "y"}))
        .collect();
    let file = dir.path().join("h.json");
    std::fs::write(&file, serde_json::to_vec(&items).unwrap()).unwrap();
    ok(cmd(&db, &["history", "import", "--user", "alice"])
        .arg(&file)
        .output()
        .unwrap());

    let model = common::smollm();
    let mut info = cmd(&db, &["info", "--model"]);
    info.arg(&model);
    with_closed_stdout(info, "info");
    let mut json = cmd(&db, &["info", "--json", "--model"]);
    json.arg(&model);
    with_closed_stdout(json, "info --json");
    with_closed_stdout(cmd(&db, &["export", "--user", "alice"]), "export");
    with_closed_stdout(
        cmd(&db, &["history", "list", "--user", "alice"]),
        "history list",
    );
    with_closed_stdout(cmd(&db, &["user", "list"]), "user list");
}

// ---- 6. forget while another process reads ----

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The store's files hold `marker` somewhere.
fn on_disk(db: &Path, marker: &[u8]) -> bool {
    ["", "-wal"].iter().any(|suffix| {
        std::fs::read(format!("{}{suffix}", db.display())).is_ok_and(|b| contains(&b, marker))
    })
}

#[test]
fn forget_with_a_reader_open_says_when_the_bytes_go() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let marker = "zq-private-marker-7781";
    let file = dir.path().join("h.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!([{"input": marker, "output": marker}])).unwrap(),
    )
    .unwrap();
    for name in ["alice", "bob"] {
        ok(cmd(&db, &["user", "add", name]).output().unwrap());
        ok(cmd(&db, &["history", "import", "--user", name])
            .arg(&file)
            .output()
            .unwrap());
    }

    // a reader that stays past the wait: forget succeeds and says the bytes stay until it closes
    let reader = Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let n: i64 = reader
        .query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    let out = cmd(&db, &["user", "forget", "alice"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("another process is reading the store"),
        "{stderr}"
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);

    // a reader that finishes within the wait: forget waits for it, and the bytes are gone
    let reader = Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
        .unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        reader.execute_batch("COMMIT").unwrap();
    });
    let out = cmd(&db, &["user", "forget", "bob"]).output().unwrap();
    closer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("another process"), "{stderr}");
    assert!(
        !on_disk(&db, marker.as_bytes()),
        "the forgotten text is still in the files"
    );
}

// ---- parsers of our own formats: arbitrary input is an error, never a panic ----

mod parsers {
    use chameleon::store::{ReadOptions, read_export_file, read_history_file};
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "[a-z_]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("input".to_string()),
                        Just("output".to_string()),
                        Just("format".to_string()),
                        Just("version".to_string()),
                        Just("user".to_string()),
                        Just("profiles".to_string()),
                        Just("id".to_string()),
                        Just("profile".to_string()),
                        Just("user_id".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every reader of a file of ours, on `bytes`: each returns, Ok or Err.
    fn read_all(bytes: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.json");
        std::fs::write(&f, bytes).unwrap();
        let _ = read_history_file(&f, &ReadOptions::default());
        let _ = read_history_file(
            &f,
            &ReadOptions {
                lamp_user_id: Some("1".into()),
                ..ReadOptions::default()
            },
        );
        let _ = read_export_file(&f);
        for split in ["dev_questions.json", "dev_outputs.json"] {
            std::fs::write(dir.path().join(split), bytes).unwrap();
        }
        let _ = chameleon::eval::lamp::LampSet::load(dir.path(), "dev");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            read_all(&bytes);
        }

        #[test]
        fn arbitrary_json_never_panics(v in json_value(), lines in any::<bool>()) {
            let text = match (&v, lines) {
                (serde_json::Value::Array(items), true) => items
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => v.to_string(),
            };
            read_all(text.as_bytes());
        }
    }
}
