//! The CHAMELEON pipeline end to end through the real CLI, on SmolLM2 and a fixture user.

mod common;

use common::ok;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chameleon::store::{ModelIdentity, Owner, Store};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/personalize/gardener.jsonl"
);

/// Small but real settings, so that the suite stays fast on 2 cores.
const INSIGHT_TOKENS: &str = "32";
const FAST: &[&str] = &[
    "--answer-tokens",
    "16",
    "--insight-tokens",
    INSIGHT_TOKENS,
    "--max-queries",
    "4",
];

fn run(db: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chameleon"));
    cmd.arg("--db").arg(db).args(args).args([
        "--model",
        common::smollm().to_str().unwrap(),
        "--threads",
        common::THREADS,
    ]);
    cmd.output().expect("run chameleon")
}

fn store_cmd(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

fn user_with_history(dir: &Path, name: &str, lines: Option<usize>) -> PathBuf {
    let db = dir.join("chameleon.db");
    ok(store_cmd(&db, &["user", "add", name]));
    let file = match lines {
        None => PathBuf::from(FIXTURE),
        Some(n) => {
            let text: Vec<&str> = std::fs::read_to_string(FIXTURE)
                .unwrap()
                .leak()
                .lines()
                .take(n)
                .collect();
            let f = dir.join("few.jsonl");
            std::fs::write(&f, text.join("\n")).unwrap();
            f
        }
    };
    ok(store_cmd(
        &db,
        &["history", "import", "--user", name, file.to_str().unwrap()],
    ));
    db
}

fn fit(db: &Path, user: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["fit", "--user", user, "--json"];
    for flag in FAST.chunks(2) {
        if !extra.contains(&flag[0]) {
            args.extend_from_slice(flag);
        }
    }
    if !extra.contains(&"--k") {
        args.extend_from_slice(&["--k", "5"]);
    }
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(run(db, &args))).unwrap()
}

fn identity() -> ModelIdentity {
    let m = chameleon::llm::Model::load(&common::smollm(), &Default::default()).unwrap();
    ModelIdentity {
        fingerprint: m.fingerprint().unwrap().to_string(),
        n_layer: 30,
        hidden: 576,
    }
}

#[test]
fn fit_stores_unit_directions_and_the_profile_changes_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = user_with_history(dir.path(), "gardener", None);
    let report = fit(&db, "gardener", &["--layers", "8,10,12", "--seed", "3"]);
    assert_eq!(report["selected_layers"], serde_json::json!([8, 10, 12]));
    assert!(report["pairs"].as_u64().unwrap() >= 2);
    let t = &report["tokens"];
    assert!(
        t["prefix_without_reuse"].as_u64() > t["prefix"].as_u64(),
        "prefix reuse must save tokens: {t}"
    );

    let store = Store::open(&db).unwrap();
    let profile = store
        .load_profile(&Owner::User("gardener".into()), &identity())
        .unwrap()
        .expect("stored");
    assert_eq!(profile.selected_layers, vec![8, 10, 12]);
    assert_eq!(profile.layers.len(), 30);
    for l in &profile.layers {
        for v in [&l.p, &l.n] {
            assert_eq!(v.len(), 576);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "layer {}: norm {norm}", l.layer);
        }
        assert!(l.ccs_loss.is_finite());
    }
    assert_eq!(profile.params["fit"]["ccs"]["seed"], 3);

    let ask = [
        "generate",
        "--prompt",
        "What should I do this weekend?",
        "--max-tokens",
        "24",
        "--user",
        "gardener",
    ];
    let edited = ok(run(&db, &ask));
    let mut plain_args = ask.to_vec();
    plain_args.push("--no-edit");
    let plain = ok(run(&db, &plain_args));
    assert_ne!(edited, plain, "the profile did not change the answer");
    // on a CPU build `auto` runs the edit through the hook; `lora` runs the same edit as an adapter
    // inside llama.cpp's graph (what `auto` picks on a GPU) and changes the answer as well
    let with = |apply: &str| {
        let mut a = ask.to_vec();
        a.extend_from_slice(&["--apply", apply]);
        ok(run(&db, &a))
    };
    assert_eq!(with("hook"), edited);
    let adapted = with("lora");
    eprintln!("hook: {edited}\nlora: {adapted}\nplain: {plain}");
    assert_ne!(
        adapted, plain,
        "the profile as an adapter did not change the answer"
    );
    // the profile exports as a LoRA adapter that llama.cpp loads
    let lora = db.with_file_name("gardener.gguf");
    ok(run(
        &db,
        &[
            "profile",
            "export",
            "--user",
            "gardener",
            "--lora",
            lora.to_str().unwrap(),
        ],
    ));
    let mut m = chameleon::llm::Model::load(&common::smollm(), &Default::default()).unwrap();
    m.load_lora(&lora).expect("the exported adapter loads");
    // `profile inspect` measures the edit's reach on a prompt; twice the strength reaches further
    let reach = |extra: &[&str]| {
        let mut args = vec![
            "profile",
            "inspect",
            "--user",
            "gardener",
            "--json",
            "--prompt",
            "What should I do this weekend?",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str::<serde_json::Value>(&ok(run(&db, &args))).unwrap()
    };
    let (one, two) = (reach(&[]), reach(&["--alpha", "2", "--beta", "2"]));
    let layers = one["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{one}");
    for (a, b) in layers.iter().zip(two["layers"].as_array().unwrap()) {
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
        assert!(f(a, "mlp_share") > 0.0 && f(a, "along_p") > 0.0 && f(a, "along_p") <= 1.0);
        assert!(
            f(a, "moved") > 0.0 && f(b, "moved") > f(a, "moved"),
            "{a} vs {b}"
        );
        assert_eq!(f(a, "mlp_share"), f(b, "mlp_share"));
    }
    assert!(one["output_moved"].as_f64().unwrap() > 0.0);
    // the rounding reading applies the same edit at a fixed strength: the asked strength is not in it
    let rounding = one["output_moved_by_rounding"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&rounding), "{one}");
    assert_eq!(two["output_moved_by_rounding"].as_f64().unwrap(), rounding);
    // another model's fingerprint is refused
    let other = ModelIdentity {
        fingerprint: "0".repeat(64),
        ..identity()
    };
    assert!(
        store
            .load_profile(&Owner::User("gardener".into()), &other)
            .is_err()
    );
}

#[test]
fn the_cache_serves_only_the_same_generation_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = user_with_history(dir.path(), "g", None);
    let first = fit(&db, "g", &[]);
    assert_eq!(first["reused"], 0);
    // the same settings again: both insights and every pair come from the store
    let again = fit(&db, "g", &[]);
    let pairs = again["pairs"].as_u64().unwrap() + again["dropped_pairs"].as_u64().unwrap();
    assert_eq!(again["reused"].as_u64().unwrap(), 2 + pairs, "{again}");
    // another personal direction is fitted from the same stored pairs; CCS, and so n, is unchanged
    let load = || {
        Store::open(&db)
            .unwrap()
            .load_profile(&Owner::User("g".into()), &identity())
            .unwrap()
            .unwrap()
    };
    let svd = load();
    assert!(svd.params["fit"].get("personal_direction").is_none());
    let contrast = fit(&db, "g", &["--personal-direction", "contrast"]);
    assert_eq!(
        contrast["reused"].as_u64().unwrap(),
        2 + pairs,
        "{contrast}"
    );
    let contrast = load();
    assert_eq!(contrast.params["fit"]["personal_direction"], "contrast");
    for (s, c) in svd.layers.iter().zip(&contrast.layers) {
        assert_eq!(s.n, c.n, "layer {}", s.layer);
        let cos: f32 = s.p.iter().zip(&c.p).map(|(a, b)| a * b).sum();
        assert!(cos.abs() < 0.999, "layer {}: the same p", s.layer);
    }
    // longer answers: the insights are reused, the pairs are written anew
    let longer = fit(&db, "g", &["--answer-tokens", "20"]);
    assert_eq!(longer["reused"], 2, "{longer}");
    // longer insights: both are written anew (they are keyed by their length); pairs are keyed by the
    // insights' text, so they are reused exactly when the tidied insights came out the same
    let wordier = fit(
        &db,
        "g",
        &["--insight-tokens", "40", "--ccs-normalize", "false"],
    );
    let insights = |tokens: &str| -> Vec<String> {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn
            .prepare("SELECT text FROM insights WHERE history_hash LIKE ?1 ORDER BY kind")
            .unwrap();
        stmt.query_map([format!("%/insight_tokens={tokens}")], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let (short, long) = (insights(INSIGHT_TOKENS), insights("40"));
    assert_eq!((short.len(), long.len()), (2, 2));
    let pairs = wordier["pairs"].as_u64().unwrap() + wordier["dropped_pairs"].as_u64().unwrap();
    let expected = if short == long { pairs } else { 0 };
    assert_eq!(wordier["reused"].as_u64().unwrap(), expected, "{wordier}");
    // the CCS choices are recorded with the profile
    let profile = load();
    assert_eq!(profile.params["fit"]["ccs"]["normalize"], false);
    assert_eq!(profile.params["fit"]["ccs"]["squared_min"], true);
}

#[test]
fn two_fits_with_the_same_seed_give_identical_vectors() {
    let vectors = |seed: &str| {
        let dir = tempfile::tempdir().unwrap();
        let db = user_with_history(dir.path(), "g", None);
        fit(&db, "g", &["--seed", seed]);
        let p = Store::open(&db)
            .unwrap()
            .load_profile(&Owner::User("g".into()), &identity())
            .unwrap()
            .unwrap();
        (
            p.selected_layers,
            p.layers
                .iter()
                .map(|l| (l.p.clone(), l.n.clone(), l.ccs_loss.to_bits()))
                .collect::<Vec<_>>(),
        )
    };
    let (a, b) = (vectors("11"), vectors("11"));
    assert!(a == b, "same seed, different profile");
}

#[test]
fn an_interrupted_fit_resumes_without_regenerating() {
    let dir = tempfile::tempdir().unwrap();
    let db = user_with_history(dir.path(), "g", None);
    let mut args: Vec<&str> = vec!["fit", "--user", "g", "--k", "5"];
    args.extend_from_slice(FAST);
    let mut child = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(&db)
        .args(&args)
        .args([
            "--model",
            common::smollm().to_str().unwrap(),
            "--threads",
            common::THREADS,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait until the first pair is stored, then press Ctrl-C
    let start = std::time::Instant::now();
    loop {
        let n: i64 = rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT count(*) FROM pairs", [], |r| r.get(0)))
            .unwrap_or(0);
        if n >= 1 {
            break;
        }
        assert!(start.elapsed().as_secs() < 300, "no pair was stored");
        assert!(
            child.try_wait().unwrap().is_none(),
            "fit ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("interrupted"), "{stderr}");
    let stored: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM pairs", [], |r| r.get(0))
        .unwrap();
    assert!(stored >= 1);
    // stage 1 was done before the first pair: every item's embedding is in the store
    let embedded: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM embeddings", [], |r| r.get(0))
        .unwrap();
    let items = std::fs::read_to_string(FIXTURE)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as i64;
    assert_eq!(embedded, items);

    let report = fit(&db, "g", &[]);
    assert_eq!(report["embedded"], 0, "{report}");
    // both insights and every stored pair came from the store
    assert!(
        report["reused"].as_u64().unwrap() >= 2 + stored as u64,
        "{report}"
    );
}

#[test]
fn no_history_and_short_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    ok(store_cmd(&db, &["user", "add", "empty"]));
    let out = run(&db, &["fit", "--user", "empty"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("has no history"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");

    // fewer items than k: all are kept, and pairs come from leave-one-out queries
    let dir = tempfile::tempdir().unwrap();
    let db = user_with_history(dir.path(), "few", Some(4));
    let report = fit(&db, "few", &["--k", "10", "--layers", "10"]);
    assert!(report["pairs"].as_u64().unwrap() >= 2, "{report}");
}

#[test]
fn reasoned_pairs_give_the_answer_then_the_reason_and_are_cached_apart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let films = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/personalize/film_tags.jsonl"
    );
    ok(store_cmd(&db, &["user", "add", "ed"]));
    ok(store_cmd(
        &db,
        &["history", "import", "--user", "ed", films],
    ));
    let reasoned = fit(&db, "ed", &["--k", "4", "--pair-answers", "reasoned"]);
    assert!(reasoned["pairs"].as_u64().unwrap() >= 2, "{reasoned}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT history_hash, personal, neutral FROM pairs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!rows.is_empty());
    let mut with_reason = 0;
    for (key, personal, neutral) in &rows {
        assert!(key.contains("/answers=reasoned/"), "{key}");
        for answer in [personal, neutral] {
            // one line: the answer (a tag) and, when the model gave one, its reason
            assert!(!answer.contains('\n'), "{answer:?}");
            if let Some((tag, reason)) = answer.split_once(", because ") {
                assert!(
                    !tag.trim().is_empty() && !reason.trim().is_empty(),
                    "{answer:?}"
                );
                with_reason += 1;
            }
        }
        // a pair has reasons on both sides or on neither
        assert_eq!(
            personal.contains(", because "),
            neutral.contains(", because "),
            "{personal:?} / {neutral:?}"
        );
    }
    assert!(with_reason > 0, "no answer holds a reason: {rows:?}");
    // label answers are other pairs: the insights are reused, every pair is written anew (under its
    // own key; the model may well give the same tag twice, and then too few pairs differ to fit)
    let mut args = vec!["fit", "--user", "ed", "--json", "--k", "4"];
    args.extend_from_slice(FAST);
    let out = run(&db, &args);
    if out.status.success() {
        let label: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(label["reused"], 2, "{label}");
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("usable pairs"), "{stderr}");
    }
    let label_pairs: i64 = conn
        .query_row(
            "SELECT count(*) FROM pairs WHERE history_hash NOT LIKE '%/answers=reasoned/%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(label_pairs > 0);
}

#[test]
fn a_group_profile_pools_members_and_serves_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let db = user_with_history(dir.path(), "gardener", None);
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/maya.jsonl");
    ok(store_cmd(&db, &["user", "add", "maya"]));
    ok(store_cmd(
        &db,
        &["history", "import", "--user", "maya", demo],
    ));
    ok(store_cmd(
        &db,
        &["group", "add", "club", "gardener", "maya"],
    ));

    let mut args = vec![
        "fit",
        "--group",
        "club",
        "--json",
        "--k",
        "5",
        "--layers",
        "9,11",
        "--max-queries",
        "2",
    ];
    args.extend_from_slice(&FAST[..4]);
    let out = run(&db, &args);
    // a log shows each member as its pairs are ready (no progress bar without a terminal)
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("member 1/2 (gardener) ready")
            && stderr.contains("member 2/2 (maya) ready"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    // pairs of both members are pooled: more than one member's cap of 2 queries
    assert!(report["pairs"].as_u64().unwrap() > 2, "{report}");
    let store = Store::open(&db).unwrap();
    let profile = store
        .load_profile(&Owner::Group("club".into()), &identity())
        .unwrap()
        .expect("stored");
    assert_eq!(
        profile.params["members"],
        serde_json::json!(["gardener", "maya"])
    );

    // a user the store has never seen is answered with the group's profile
    let ask = [
        "generate",
        "--prompt",
        "Plan my Sunday.",
        "--max-tokens",
        "16",
    ];
    let mut with_group = ask.to_vec();
    with_group.extend_from_slice(&["--profile", "group:club"]);
    assert_ne!(ok(run(&db, &with_group)), ok(run(&db, &ask)));
    // an unknown group is refused with a hint
    let out = run(&db, &["fit", "--group", "nobody"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no group `nobody`") && stderr.contains("hint: "),
        "{stderr}"
    );
}
