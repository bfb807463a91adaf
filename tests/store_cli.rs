//! The store's commands, driven through the real `chameleon` binary on real database files.

mod store_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chameleon::store::{
    InsightKey, InsightKind, LayerDirections, ModelIdentity, Owner, Pair, PairKey, Profile, Store,
};
use serde_json::Value;
use tempfile::TempDir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store")
        .join(name)
}

/// A scratch directory with a database path in it.
struct Scratch {
    dir: TempDir,
    db: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db").join("chameleon.db");
        Scratch { dir, db }
    }

    /// Run `chameleon --db <db> args...`.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_chameleon"))
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .env_remove("CHAMELEON_DB")
            .output()
            .unwrap()
    }

    /// Run and require success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`chameleon {}` failed:\n{}",
            args.join(" "),
            stderr(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run and require failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "`chameleon {}` should fail",
            args.join(" ")
        );
        assert_eq!(out.status.code(), Some(1));
        stderr(&out)
    }

    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn user_add_list_forget() {
    let t = Scratch::new();
    t.ok(&["user", "add", "bob"]);
    t.ok(&["user", "add", "alice"]);
    let err = t.fails(&["user", "add", "alice"]);
    assert!(err.contains("error: user `alice` already exists"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    t.ok(&[
        "history", "add", "--user", "alice", "--input", "q", "--output", "a",
    ]);
    assert_eq!(t.ok(&["user", "list"]), "alice\t1\nbob\t0\n");

    let out = t.run(&["user", "forget", "alice"]);
    assert!(out.status.success());
    let report = stderr(&out);
    assert!(
        report.contains("forgot user `alice`: removed 1 from `users`, 1 from `history`"),
        "{report}"
    );
    assert_eq!(t.ok(&["user", "list"]), "bob\t0\n");
    let err = t.fails(&["user", "forget", "alice"]);
    assert!(err.contains("error: no user `alice`"), "{err}");
    let err = t.fails(&["export", "--user", "alice"]);
    assert!(err.contains("error: no user `alice`"), "{err}");
    assert!(
        err.contains("hint: list users with `chameleon user list`"),
        "{err}"
    );
}

#[test]
fn history_add_and_list_in_time_order() {
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    t.ok(&[
        "history", "add", "--user", "alice", "--input", "first", "--output", "one",
    ]);
    t.ok(&[
        "history", "add", "--user", "alice", "--input", "", "--output", "two", "--task", "note",
    ]);
    let items = json_lines(&t.ok(&["history", "list", "--user", "alice"]));
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["input"], "first");
    assert_eq!(items[0]["task"], "general");
    assert_eq!(items[1]["input"], "");
    assert_eq!(items[1]["task"], "note");
    assert!(items[0]["time"].as_i64().unwrap() <= items[1]["time"].as_i64().unwrap());
}

#[test]
fn history_import_json_array_and_json_lines() {
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    let out = t.run(&[
        "history",
        "import",
        "--user",
        "alice",
        s(&fixture("history.json")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imported 3 items"),
        "{}",
        stderr(&out)
    );
    t.ok(&[
        "history",
        "import",
        "--user",
        "alice",
        "--task",
        "chat",
        s(&fixture("history.jsonl")),
    ]);
    let items = json_lines(&t.ok(&["history", "list", "--user", "alice"]));
    let outputs: Vec<_> = items
        .iter()
        .map(|i| i["output"].as_str().unwrap())
        .collect();
    // ordered by time; the line without a time was stamped at import, after the fixtures' 2023 times
    assert_eq!(
        outputs,
        [
            "Lentil soup, no cilantro.",
            "Tide pools: tiny, fragile, full of crabs.",
            "Rainy days are for long novels.",
            "Something short with a cafe at the end, please.",
            "An old noir, black and white.",
        ]
    );
    assert_eq!(
        items[0]["task"], "chat",
        "`--task` names the kind of items without one"
    );
    assert_eq!(items[1]["task"], "summary");
    assert_eq!(items[1]["id"], "a-1");
    assert_eq!(items[3]["id"], "3", "numeric ids are kept as text");
    assert_eq!(items[4]["task"], "movie-pick");
    assert_eq!(items[4]["id"], "17");

    // `history list` prints what `history import` reads
    let listed = t.file(
        "listed.jsonl",
        t.ok(&["history", "list", "--user", "alice"]),
    );
    t.ok(&["user", "add", "bob"]);
    t.ok(&["history", "import", "--user", "bob", s(&listed)]);
    let bob = t.ok(&["history", "list", "--user", "bob"]);
    assert_eq!(bob, t.ok(&["history", "list", "--user", "alice"]));
}

#[test]
fn history_import_lamp_profiles() {
    let t = Scratch::new();
    t.ok(&["user", "add", "film"]);
    t.ok(&[
        "history",
        "import",
        "--user",
        "film",
        "--lamp-user-id",
        "u-film",
        s(&fixture("lamp2_questions.json")),
    ]);
    let items = json_lines(&t.ok(&["history", "list", "--user", "film"]));
    // two questions of `u-film` share one profile: each item once, in file order; `u-other` is not taken
    let ids: Vec<_> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["90011", "90012", "90013"]);
    assert_eq!(
        items[0]["input"],
        "A girl finds a door in a tree that opens onto a sea of clouds."
    );
    assert_eq!(items[0]["output"], "fantasy");
    assert_eq!(items[0]["task"], "lamp-2-movie-tag");

    t.ok(&["user", "add", "reviews"]);
    t.ok(&[
        "history",
        "import",
        "--user",
        "reviews",
        "--lamp-user-id",
        "u-reviews",
        s(&fixture("lamp3_questions.json")),
    ]);
    let items = json_lines(&t.ok(&["history", "list", "--user", "reviews"]));
    assert_eq!(
        items[0]["input"],
        "Warm sound, and the case survived a bus trip."
    );
    assert_eq!(items[0]["output"], "5");
    assert_eq!(items[1]["output"], "1", "a numeric score reads as its text");
    assert_eq!(items[1]["task"], "lamp-3-review-rating");

    t.ok(&["user", "add", "tweets"]);
    t.ok(&[
        "history",
        "import",
        "--user",
        "tweets",
        "--lamp-user-id",
        "u-tweets",
        s(&fixture("lamp7_questions.json")),
    ]);
    let items = json_lines(&t.ok(&["history", "list", "--user", "tweets"]));
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["input"], "", "a tweet has no prompt");
    assert_eq!(
        items[0]["output"],
        "@citytransit third delay this week, my coffee is colder than the platform"
    );
    assert_eq!(items[0]["task"], "lamp-7-tweet");
}

/// Fill a database through the library with what the CLI cannot make: insights, pairs, a profile.
fn add_derived(db: &Path, name: &str) {
    let store = Store::open(db).unwrap();
    let user = store.require_user(name).unwrap();
    let hash = chameleon::store::history_hash(&store.history(user.id).unwrap());
    let key = InsightKey {
        user: user.id,
        fingerprint: "fp-smol".into(),
        kind: InsightKind::Personal,
        prompt_version: 3,
        history_hash: hash.clone(),
    };
    store
        .put_insight(&key, "prefers films with a twist")
        .unwrap();
    let pkey = PairKey {
        user: user.id,
        fingerprint: "fp-smol".into(),
        prompt_version: 3,
        history_hash: hash,
    };
    let pair = Pair {
        query: "a film?".into(),
        personal: "a twisty one".into(),
        neutral: "a popular one".into(),
    };
    store.put_pairs(&pkey, &[pair]).unwrap();
    let hidden = 16;
    let layers = (0..3)
        .map(|layer| LayerDirections {
            layer,
            // unit directions (what a profile holds), with a negative zero and subnormals in `n`
            // that must survive bit for bit
            p: {
                let v: Vec<f32> = (0..hidden).map(|i| (i as f32 * 0.1).sin() / 3.0).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            },
            n: (0..hidden)
                .map(|i| match i {
                    0 => -0.0,
                    1 => 1.0,
                    _ => f32::from_bits(i as u32),
                })
                .collect(),
            ccs_loss: 0.25 / (layer + 1) as f32,
        })
        .collect();
    let profile = Profile {
        model: ModelIdentity {
            fingerprint: "fp-smol".into(),
            n_layer: 3,
            hidden,
        },
        selected_layers: vec![0, 2],
        layers,
        params: serde_json::json!({"k": 10, "pooling": "mean", "ccs_restarts": 10}),
        created: 1_700_000_000,
    };
    store
        .save_profile(&Owner::User(name.into()), &profile)
        .unwrap();
}

#[test]
fn export_then_import_round_trips_everything() {
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    t.ok(&[
        "history",
        "import",
        "--user",
        "alice",
        s(&fixture("history.json")),
    ]);
    add_derived(&t.db, "alice");
    let exported = t.ok(&["export", "--user", "alice"]);
    let doc: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(doc["user"]["name"], "alice");
    assert_eq!(doc["history"].as_array().unwrap().len(), 3);
    assert_eq!(doc["insights"][0]["text"], "prefers films with a twist");
    assert_eq!(doc["pairs"][0]["personal"], "a twisty one");
    assert_eq!(
        doc["profiles"][0]["layers"][2]["p"]
            .as_array()
            .unwrap()
            .len(),
        16
    );
    assert_eq!(
        doc["profiles"][0]["layers"][0]["n"][0]
            .as_f64()
            .unwrap()
            .to_bits(),
        (-0.0f64).to_bits()
    );

    let file = t.file("alice.json", &exported);
    let other = Scratch::new();
    let out = other.run(&["import", s(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("imported user `alice`: 3 into `history`, 1 into `insights`, 1 into `pairs`, 1 into `profiles`")
    );
    assert_eq!(
        other.ok(&["export", "--user", "alice"]),
        exported,
        "an imported user exports identically"
    );

    // the user exists now: refused without `--replace`, and nothing changes
    let before = store_common::dump(&other.db);
    let err = other.fails(&["import", s(&file)]);
    assert!(err.contains("error: user `alice` already exists"), "{err}");
    assert!(err.contains("hint: pass `--replace`"), "{err}");
    assert_eq!(store_common::dump(&other.db), before);
    other.ok(&[
        "history", "add", "--user", "alice", "--input", "extra", "--output", "item",
    ]);
    let out = other.run(&["import", "--replace", s(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("replaced user `alice`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        other.ok(&["export", "--user", "alice"]),
        exported,
        "the extra item is gone"
    );
}

/// Each bad input: its error names the file and the place, the exit code is 1, and the database is
/// exactly as before (the valid items before the bad one are not stored either).
#[test]
fn bad_history_files_are_refused_whole() {
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    t.ok(&[
        "history", "add", "--user", "alice", "--input", "kept", "--output", "kept",
    ]);
    let good = r#"{"input": "q", "output": "a"}"#;
    let mut utf8 = format!("{good}\n").into_bytes();
    utf8.extend_from_slice(b"{\"input\": \"caf\xe9\", \"output\": \"a\"}\n");
    let huge = serde_json::json!([{"input": "q", "output": "a"}, {"input": "x".repeat(64 * 1024 + 1), "output": "a"}]);
    /// (file name, contents, extra arguments, what stderr must contain)
    type Case<'a> = (&'a str, Vec<u8>, Vec<&'a str>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "malformed.json",
            format!("[\n  {good},\n  {{\"input\": \"q\" \"output\": \"a\"}}\n]").into_bytes(),
            vec![],
            vec!["malformed.json`, line 3: malformed JSON: expected `,` or `}`".into()],
        ),
        (
            "missing.json",
            format!("[{good}, {{\"input\": \"q\"}}]").into_bytes(),
            vec![],
            vec!["missing.json`, item 2: malformed JSON: missing field `output`".into()],
        ),
        (
            "empty-output.jsonl",
            format!("{good}\n\n{{\"input\": \"q\", \"output\": \" \"}}\n").into_bytes(),
            vec![],
            vec!["empty-output.jsonl`, line 3: `output` is empty".into(), "hint: every item needs".into()],
        ),
        (
            "oversized.json",
            huge.to_string().into_bytes(),
            vec![],
            vec![
                "oversized.json`, item 2: `input` is 65537 bytes, over the limit of 65536 bytes".into(),
                "hint: `input` and `output` are limited to 64 KiB each".into(),
            ],
        ),
        (
            "latin1.jsonl",
            utf8,
            vec![],
            vec!["latin1.jsonl`, line 2: invalid UTF-8 at byte 44".into(), "hint: convert the file to UTF-8".into()],
        ),
        ("empty.json", b"[]".to_vec(), vec![], vec!["empty.json`: no history items".into()]),
        ("blank.jsonl", b"\n\n".to_vec(), vec![], vec!["blank.jsonl`: no history items".into()]),
        (
            "csv.txt",
            b"input,output\nq,a\n".to_vec(),
            vec![],
            vec!["csv.txt`: expected a JSON array or JSON lines".into()],
        ),
        (
            "bad-task.json",
            format!("[{good}, {{\"input\": \"q\", \"output\": \"a\", \"task\": \"two words\"}}]").into_bytes(),
            vec![],
            vec!["bad-task.json`, item 2: task kind `two words` is not valid".into()],
        ),
        (
            "lamp.json",
            std::fs::read(fixture("lamp2_questions.json")).unwrap(),
            vec![],
            vec!["lamp.json`: this is a LaMP questions file".into(), "hint: pick the user".into()],
        ),
        (
            "lamp-nobody.json",
            std::fs::read(fixture("lamp2_questions.json")).unwrap(),
            vec!["--lamp-user-id", "nobody"],
            vec!["lamp-nobody.json`: no question has `user_id` `nobody`".into()],
        ),
        (
            "lamp-unknown.json",
            std::fs::read(fixture("lamp_unknown_item.json")).unwrap(),
            vec!["--lamp-user-id", "u-news"],
            vec![
                "lamp-unknown.json`, question 1 (`id` `9301`), profile, item 1: unrecognised LaMP profile item with keys"
                    .into(),
            ],
        ),
        (
            "not-lamp.json",
            format!("[{good}]").into_bytes(),
            vec!["--lamp-user-id", "u-film"],
            vec!["not-lamp.json`: `--lamp-user-id` applies to LaMP questions files only".into()],
        ),
    ];
    let before = store_common::dump(&t.db);
    for (name, contents, extra, expected) in cases {
        let file = t.file(name, contents);
        let mut args = vec!["history", "import", "--user", "alice", s(&file)];
        args.extend(extra);
        let err = t.fails(&args);
        assert!(err.starts_with("error: `"), "{name}: {err}");
        for want in expected {
            assert!(err.contains(&want), "{name}: expected `{want}` in\n{err}");
        }
        assert_eq!(
            store_common::dump(&t.db),
            before,
            "{name} changed the database"
        );
    }

    // an unknown user, and a file that does not exist
    let err = t.fails(&[
        "history",
        "import",
        "--user",
        "nobody",
        s(&fixture("history.json")),
    ]);
    assert!(err.contains("error: no user `nobody`"), "{err}");
    let err = t.fails(&[
        "history",
        "import",
        "--user",
        "alice",
        "/nonexistent/items.json",
    ]);
    assert!(
        err.contains("error: `/nonexistent/items.json` does not exist"),
        "{err}"
    );
    assert!(err.contains("hint: check the path"), "{err}");
    let err = t.fails(&[
        "history", "add", "--user", "alice", "--input", "q", "--output", "",
    ]);
    assert!(
        err.contains("error: the new item: `output` is empty"),
        "{err}"
    );
    assert_eq!(store_common::dump(&t.db), before);
}

#[test]
fn bad_export_files_are_refused_whole() {
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    t.ok(&[
        "history",
        "import",
        "--user",
        "alice",
        s(&fixture("history.json")),
    ]);
    add_derived(&t.db, "alice");
    let doc: Value = serde_json::from_str(&t.ok(&["export", "--user", "alice"])).unwrap();
    t.ok(&["user", "forget", "alice"]);
    let before = store_common::dump(&t.db);

    let mut bad_item = doc.clone();
    bad_item["history"][1]["output"] = "".into();
    let mut newer = doc.clone();
    newer["version"] = 99.into();
    let mut bad_profile = doc.clone();
    bad_profile["profiles"][0]["layers"][1]["p"]
        .as_array_mut()
        .unwrap()
        .pop();
    let mut typo = doc.clone();
    typo["histroy"] = Value::Array(vec![]);
    let cases = [
        (
            "bad-item.json",
            bad_item,
            "bad-item.json`, history, item 2: `output` is empty",
        ),
        (
            "newer.json",
            newer,
            "newer.json`: not a chameleon export of version 1 (found format `chameleon-user`, version 99)",
        ),
        (
            "bad-profile.json",
            bad_profile,
            "layer 1: `p` has 15 values, the model's hidden size is 16",
        ),
        (
            "typo.json",
            typo,
            "typo.json`, line 1: malformed JSON: unknown field `histroy`",
        ),
    ];
    for (name, value, want) in cases {
        let file = t.file(name, value.to_string());
        let err = t.fails(&["import", s(&file)]);
        assert!(err.contains(want), "{name}: expected `{want}` in\n{err}");
        assert_eq!(
            store_common::dump(&t.db),
            before,
            "{name} changed the database"
        );
    }
    let file = t.file("truncated.json", &doc.to_string()[..200]);
    let err = t.fails(&["import", s(&file)]);
    assert!(
        err.contains("truncated.json`, line 1: malformed JSON: EOF while parsing"),
        "{err}"
    );
    assert_eq!(store_common::dump(&t.db), before);
}

#[test]
fn a_newer_database_is_refused_with_a_hint() {
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    let newer = chameleon::store::schema::current_version() + 1;
    rusqlite::Connection::open(&t.db)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = t.fails(&["user", "list"]);
    assert!(
        err.contains(&format!(
            "has schema version {newer}, newer than this chameleon knows"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: it was written by a newer chameleon"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn the_cli_creates_a_private_database() {
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    assert_eq!(store_common::mode(t.db.parent().unwrap()), 0o700);
    assert_eq!(store_common::mode(&t.db), 0o600);
}

/// SIGKILL in the middle of a large import: the database reopens intact (`integrity_check` is `ok`)
/// with all of the user's items or none, never some.
#[test]
fn an_import_killed_midway_stores_all_or_nothing() {
    const N: usize = 200_000;
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    t.ok(&[
        "history",
        "add",
        "--user",
        "alice",
        "--input",
        "before",
        "--output",
        "the import",
    ]);
    let mut jsonl = String::with_capacity(N * 200);
    for i in 0..N {
        let line = serde_json::json!({
            "input": format!("generated question {i}: what would you like to read next, and why?"),
            "output": format!("generated answer {i}: something long and slow, with maps in the front"),
            "id": i,
        });
        jsonl.push_str(&line.to_string());
        jsonl.push('\n');
    }
    let file = t.file("large.jsonl", jsonl);
    let wal = t.db.with_file_name("chameleon.db-wal");

    let mut child = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(&t.db)
        .args(["history", "import", "--user", "alice", s(&file)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // kill once the transaction has spilled pages into the write-ahead log, or after 5 s at the latest
    let start = Instant::now();
    let mut killed_midway = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if wal_len > 4 << 20 || start.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap(); // SIGKILL on unix
            eprintln!(
                "killed after {:?}, with {wal_len} bytes of write-ahead log",
                start.elapsed()
            );
            killed_midway = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait().unwrap();
    assert!(
        killed_midway,
        "the import finished before it could be killed; make the file larger"
    );

    let store = Store::open(&t.db).unwrap();
    assert_eq!(store_common::integrity(&t.db), "ok");
    let alice = store.require_user("alice").unwrap();
    let n = store.history_len(alice.id).unwrap();
    eprintln!("after the kill: {n} items");
    assert!(
        n == 1 || n == 1 + N,
        "{n} items: a killed import must store all of its items or none"
    );

    // and the same import, left alone, stores everything
    let out = t.run(&["history", "import", "--user", "alice", s(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = if n == 1 { 1 + N } else { 1 + 2 * N };
    assert_eq!(store.history_len(alice.id).unwrap(), expected);
}

/// `chameleon group` is wired in `src/cli/mod.rs` by the lead; until then this test only checks that
/// the command is absent rather than broken.
#[test]
fn groups_from_the_command_line() {
    let t = Scratch::new();
    for name in ["alice", "bob", "carol"] {
        t.ok(&["user", "add", name]);
    }
    t.ok(&["group", "add", "family", "bob", "alice"]);
    t.ok(&["group", "add", "work", "carol"]);
    assert_eq!(t.ok(&["group", "list"]), "family\talice bob\nwork\tcarol\n");
    let before = store_common::dump(&t.db);
    let err = t.fails(&["group", "add", "family", "carol", "nobody"]);
    assert!(err.contains("error: no user `nobody`"), "{err}");
    assert_eq!(
        store_common::dump(&t.db),
        before,
        "an unknown member adds no one"
    );
    t.ok(&["group", "remove", "family", "alice"]);
    assert_eq!(t.ok(&["group", "list"]), "family\tbob\nwork\tcarol\n");
    let err = t.fails(&["group", "remove", "nogroup", "bob"]);
    assert!(err.contains("error: no group `nogroup`"), "{err}");
    t.ok(&["user", "forget", "carol"]);
    assert_eq!(t.ok(&["group", "list"]), "family\tbob\nwork\t\n");
    t.ok(&["group", "delete", "work"]);
    assert_eq!(t.ok(&["group", "list"]), "family\tbob\n");
}

/// `user show` says what the model concluded about a user and what their profile is, in words and as
/// JSON; a user without either is told how to get them.
#[test]
fn user_show_tells_what_is_stored_about_a_user() {
    let t = Scratch::new();
    t.ok(&["user", "add", "alice"]);
    let empty = t.ok(&["user", "show", "alice"]);
    assert!(empty.contains("0 history items"), "{empty}");
    assert!(
        empty.contains("no insights yet") && empty.contains("no profile yet"),
        "{empty}"
    );
    t.ok(&[
        "history",
        "import",
        "--user",
        "alice",
        s(&fixture("history.json")),
    ]);
    add_derived(&t.db, "alice");
    let shown = t.ok(&["user", "show", "alice"]);
    assert!(shown.contains("3 history items"), "{shown}");
    assert!(
        shown.contains("what the model concluded about them (model fp-smol)"),
        "{shown}"
    );
    assert!(shown.contains("prefers films with a twist"), "{shown}");
    assert!(shown.contains("editing layers [0, 2]"), "{shown}");
    let json: Value = serde_json::from_str(&t.ok(&["user", "show", "alice", "--json"])).unwrap();
    assert_eq!(json["history"], 3);
    assert_eq!(json["insights"][0]["text"], "prefers films with a twist");
    assert_eq!(
        json["profiles"][0]["edited_layers"],
        serde_json::json!([0, 2])
    );
    let err = t.fails(&["user", "show", "nobody"]);
    assert!(err.contains("no user `nobody`"), "{err}");
}
