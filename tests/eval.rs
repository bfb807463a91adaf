//! `chameleon eval` end to end on a 2-user LaMP fixture with SmolLM2: every method answers every
//! question, the table has its shape, and a second run reuses every stored answer.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/lamp/tiny_lamp2"
);
const METHODS: [&str; 16] = [
    "instruct",
    "history-prompt",
    "insight-prompt",
    "chameleon",
    "chameleon-online",
    "chameleon-group",
    "p-only",
    "n-only",
    "other-user",
    "null-edit",
    "align",
    "align-other-user",
    "labels",
    "labels-other-user",
    "auto",
    "no-model",
];

fn eval(db: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(db)
        .args(["eval", "--data", DATA])
        .args(if extra.contains(&"--methods") {
            vec![]
        } else {
            vec!["--methods".to_string(), METHODS.join(",")]
        })
        .arg("--out")
        .arg(out)
        .args([
            "--model",
            common::smollm().to_str().unwrap(),
            "--threads",
            // the one long test of this file runs alone: both cores (see `common::N_THREADS`)
            "2",
        ])
        // small but real settings, so the suite stays fast on 2 cores
        .args([
            "--answer-tokens",
            "12",
            "--insight-tokens",
            "24",
            "--max-queries",
            "3",
            "--layers",
            "8,10,12",
            "--group-size",
            "all",
            "--reply-tokens",
            "10",
        ])
        // a profile fitted from a 3-item history is weak: at the paper's strength 1 it moves no answer
        // of this fixture, at 4 the edit shows (the test checks that edits reach the answers)
        .args(if extra.contains(&"--alpha") {
            vec![]
        } else {
            vec!["--alpha", "4", "--beta", "4"]
        })
        .args(extra)
        .output()
        .expect("run chameleon")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn every_method_answers_every_question_and_reruns_reuse_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (db, out) = (dir.path().join("eval.db"), dir.path().join("pred.json"));
    let scores = dir.path().join("scores.jsonl");
    let table = ok(&eval(
        &db,
        &out,
        &["--label-scores", scores.to_str().unwrap()],
    ));

    // the table: a heading, a header row, a rule, one row per method in the order asked
    let lines: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(lines.len(), 2 + METHODS.len(), "{table}");
    assert_eq!(
        lines[0],
        "| method | accuracy | f1 | out of labels | s/question | fit s | no profile \
         | Δ accuracy vs instruct [95% CI] | relative | changed |"
    );
    let mut accuracy = std::collections::BTreeMap::new();
    for (line, method) in lines[2..].iter().zip(METHODS) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 12, "{line}");
        assert_eq!(cells[1], method, "{table}");
        let acc: f64 = cells[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{line}");
        accuracy.insert(method, acc);
        let invalid: usize = cells[4].parse().unwrap();
        assert!(invalid <= 4, "{line}");
    }
    assert!(table.contains("4 questions, 2 users"), "{table}");

    // the predictions: every method answered every question
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    // the thread count the answers were decoded with is on record (it can change greedy answers)
    assert_eq!(doc["options"]["threads"], 2, "{}", doc["options"]);
    let preds = doc["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), METHODS.len() * 4);
    for method in METHODS {
        let mut ids: Vec<&str> = preds
            .iter()
            .filter(|p| p["method"] == method)
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["2001", "2002", "2003", "2004"], "{method}");
    }
    for p in preds {
        assert!(!p["raw"].as_str().unwrap().is_empty(), "empty answer: {p}");
    }
    // edited methods say whether a profile was applied, and agree with the table's "no profile" users;
    // the others never say
    for (line, method) in lines[2..].iter().zip(METHODS) {
        let ps: Vec<_> = preds.iter().filter(|p| p["method"] == method).collect();
        if [
            "instruct",
            "history-prompt",
            "insight-prompt",
            "no-model",
            "labels",
            "labels-other-user",
            "auto",
        ]
        .contains(&method)
        {
            assert!(ps.iter().all(|p| p.get("profiled").is_none()), "{method}");
            continue;
        }
        let no_profile: usize = line
            .split('|')
            .map(str::trim)
            .nth(7)
            .unwrap()
            .parse()
            .unwrap();
        let mut without: Vec<&str> = ps
            .iter()
            .filter(|p| !p["profiled"].as_bool().expect("edited methods say"))
            .map(|p| p["user"].as_str().unwrap())
            .collect();
        without.sort_unstable();
        without.dedup();
        assert_eq!(without.len(), no_profile, "{method}: {line}");
        // with one of the two users profiled, a line compares the method on that user's questions
        assert_eq!(
            table.contains(&format!("{method}, users with a profile (1 of 2, ")),
            no_profile == 1,
            "{table}"
        );
    }
    // `other-user` lends each user's profile to the next user with one: with both users profiled, both
    // are edited by the other's; with one, nobody has a profile to borrow
    let profiled_users = |m: &str| {
        let mut u: Vec<&str> = preds
            .iter()
            .filter(|p| p["method"] == m && p["profiled"] == true)
            .map(|p| p["user"].as_str().unwrap())
            .collect();
        u.sort_unstable();
        u.dedup();
        u.len()
    };
    let own = profiled_users("chameleon");
    assert_eq!(profiled_users("other-user"), if own == 2 { 2 } else { 0 });
    // `null-edit` applies each user's own profile, at its fixed strength
    assert_eq!(profiled_users("null-edit"), own);
    // `align-other-user` lends the real-answer directions the same way
    let aligned = profiled_users("align");
    assert_eq!(
        profiled_users("align-other-user"),
        if aligned == 2 { 2 } else { 0 }
    );

    // `no-model` answers each question with a tag from that question's own profile, without the model
    let questions: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(DATA).join("dev_questions.json")).unwrap())
            .unwrap();
    for q in questions.as_array().unwrap() {
        let p = preds
            .iter()
            .find(|p| p["method"] == "no-model" && p["id"] == q["id"])
            .unwrap();
        let tags: Vec<&serde_json::Value> = q["profile"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["tag"])
            .collect();
        assert!(tags.contains(&&p["answer"]), "{p} not one of {tags:?}");
        assert_eq!(p["seconds"], 0.0, "{p}");
        // `labels` answers with one of the user's own tags too, chosen by the model
        let l = preds
            .iter()
            .find(|p| p["method"] == "labels" && p["id"] == q["id"])
            .unwrap();
        assert!(tags.contains(&&l["answer"]), "{l} not one of {tags:?}");
    }
    // `--label-scores`: a line per question, every LaMP-2 tag scored three ways; `labels` (at weight
    // 0) answered the user's own tag that the dump's `full` scores highest
    let dumped: Vec<serde_json::Value> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dumped.len(), 4);
    for d in &dumped {
        let n = d["labels"].as_array().unwrap().len();
        assert!(n >= 15, "{d}");
        for field in ["counts", "tokens", "full", "cf", "bare"] {
            assert_eq!(d[field].as_array().unwrap().len(), n, "{field}: {d}");
        }
        let f = |i: usize| d["full"][i].as_f64().unwrap();
        let best = (0..n)
            .filter(|&i| d["counts"][i].as_u64().unwrap() > 0)
            .max_by(|&a, &b| f(a).total_cmp(&f(b)).then(b.cmp(&a)))
            .unwrap();
        let l = preds
            .iter()
            .find(|p| p["method"] == "labels" && p["id"] == d["id"])
            .unwrap();
        assert_eq!(l["raw"], d["labels"][best], "{d}");
    }
    // `labels-other-user` answers with the other user's tags: each of its answers is a tag of a
    // question of the other user
    for p in preds.iter().filter(|p| p["method"] == "labels-other-user") {
        let other: Vec<&serde_json::Value> = questions
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["user_id"] != p["user"])
            .flat_map(|q| q["profile"].as_array().unwrap().iter().map(|i| &i["tag"]))
            .collect();
        assert!(other.contains(&&p["answer"]), "{p} not one of {other:?}");
    }

    // the edit changes answers: some edited answer differs from its unedited one
    let value = |m: &str, id: &str, field: &str| {
        preds
            .iter()
            .find(|p| p["method"] == m && p["id"] == id)
            .unwrap()[field]
            .clone()
    };
    let raw = |m: &str, id: &str| value(m, id, "raw");
    let ids = ["2001", "2002", "2003", "2004"];
    assert!(
        [
            "chameleon",
            "chameleon-online",
            "chameleon-group",
            "p-only",
            "n-only",
            "align"
        ]
        .iter()
        .any(|m| ids.iter().any(|id| raw(m, id) != raw("instruct", id))),
        "no edit changed any answer"
    );

    // the comparison with `instruct`: its own row has none; every other row's difference is its
    // accuracy minus `instruct`'s, inside its interval, and "changed" counts the raw answers that differ
    for (line, method) in lines[2..].iter().zip(METHODS) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if method == "instruct" {
            assert_eq!(cells[8..11], ["-", "-", "-"], "{line}");
            continue;
        }
        let (delta, interval) = cells[8].split_once(' ').expect("Δ [low, high]");
        let delta: f64 = delta.parse().unwrap();
        let (low, high) = interval
            .trim_matches(['[', ']'])
            .split_once(", ")
            .expect("[low, high]");
        let (low, high): (f64, f64) = (low.parse().unwrap(), high.parse().unwrap());
        assert!(
            (delta - (accuracy[method] - accuracy["instruct"])).abs() < 0.0015,
            "{line}"
        );
        assert!(low <= delta && delta <= high, "{line}");
        // `no-model` writes no text: its answers are compared
        let field = if method == "no-model" {
            "answer"
        } else {
            "raw"
        };
        let changed = ids
            .iter()
            .filter(|id| value(method, id, field) != value("instruct", id, field))
            .count();
        assert_eq!(cells[10], format!("{changed}/4"), "{line}");
    }
    let rows = doc["rows"].as_array().unwrap();
    assert!(rows[0].get("vs_instruct").is_none());
    assert_eq!(rows[1]["vs_instruct"]["metric"], "accuracy");

    // a second run answers nothing anew and generates nothing: same predictions, same stored rows
    let counts = || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        ["insights", "pairs", "profiles", "eval_answers"].map(|t| {
            conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
        })
    };
    let before = counts();
    ok(&eval(&db, &out, &[]));
    let doc2: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["predictions"], doc2["predictions"]);
    assert_eq!(before, counts());

    // a user without a profile is answered as `instruct`, from `instruct`'s stored answers
    for p in preds.iter().filter(|p| p["profiled"] == false) {
        assert_eq!(p["raw"], raw("instruct", p["id"].as_str().unwrap()), "{p}");
    }

    // other strengths reuse the fitted profiles: only the edited answers of users with a profile are
    // new, the unedited methods' answers do not depend on them
    let edited = preds
        .iter()
        .filter(|p| p["method"] == "chameleon" && p["profiled"] == true)
        .count();
    ok(&eval(
        &db,
        &out,
        &[
            "--methods",
            "instruct,insight-prompt,chameleon",
            "--alpha",
            "0.5",
            "--beta",
            "0.5",
        ],
    ));
    let after = counts();
    assert_eq!(after[..3], before[..3], "a strength change fitted again");
    assert_eq!(after[3], before[3] + edited as i64);
}

#[test]
fn a_missing_split_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(dir.path().join("eval.db"))
        .args([
            "eval",
            "--data",
            DATA,
            "--split",
            "test",
            "--methods",
            "instruct",
        ])
        .args(["--model", common::smollm().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("test_") && err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

/// `frequent` (`labels` at an infinite weight) is the count alone: on this fixture, where every
/// user's tags are a full tie, it answers exactly as `no-model` does (the tag given first), and
/// another user's counts answer with theirs.
#[test]
fn frequent_answers_as_the_count_does() {
    let dir = tempfile::tempdir().unwrap();
    let (db, out) = (dir.path().join("eval.db"), dir.path().join("pred.json"));
    ok(&eval(
        &db,
        &out,
        &[
            "--methods",
            "labels,labels-other-user,no-model",
            "--prior-strength",
            "inf",
        ],
    ));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let preds = doc["predictions"].as_array().unwrap();
    let answer = |method: &str, id: &str| {
        preds
            .iter()
            .find(|p| p["method"] == method && p["id"] == id)
            .unwrap_or_else(|| panic!("{method} answered {id}"))["answer"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for id in ["2001", "2002", "2003", "2004"] {
        assert_eq!(
            answer("labels", id),
            answer("no-model", id),
            "question {id}"
        );
    }
    assert_eq!(answer("labels", "2001"), "sci-fi");
    assert_eq!(answer("labels", "2003"), "true story");
    assert_eq!(answer("labels-other-user", "2001"), "true story");
    assert_eq!(answer("labels-other-user", "2003"), "sci-fi");
    assert_eq!(doc["options"]["prior_strength"], "inf");
}
