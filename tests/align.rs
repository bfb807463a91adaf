//! The `align` route on the real llama.cpp and SmolLM2: the additive edit is a control vector, its
//! export holds what the engine applies, and `fit --route align` stores a profile that `generate` applies.

mod common;

use common::ok;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use chameleon::adapters::cvec::export_control_vector;
use chameleon::llm::{Context, ContextParams, Model, read_matrices};
use chameleon::steer::{EditPlan, LayerEdit, NULL_STRENGTH};
use chameleon::store::{ModelIdentity, Owner, Store};

const LAYER: usize = 10;

fn ctx(model: &Model) -> Context<'_> {
    model
        .new_context(&ContextParams {
            n_ctx: 512,
            n_threads: Some(common::N_THREADS),
            hook: true,
            ..Default::default()
        })
        .unwrap()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn diff(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// The additive edit at layer 10, done by the hook on the MLP output, moves the residual stream after
/// the layer (`l_out-10`) by exactly `gamma * scale * c` at every position; llama.cpp's own control
/// vector with the plan's [`EditPlan::control_vector`] gives the same residual stream (up to the order
/// of two f32 additions) and, after 19 more layers of a Q4 model whose matrix products round their inputs
/// to 8 bits, logits far closer to the hook's than the edit's own move (the rounding floor measured in
/// docs/: an edit of 1e-5 still moves these logits 1-2%).
#[test]
fn the_additive_edit_moves_the_residual_by_its_vector_and_equals_a_control_vector() {
    let model = Model::load(&common::smollm(), &Default::default()).unwrap();
    let (n_layer, d) = (model.n_layer(), model.n_embd());
    let c = common::unit(d, 17);
    let (scale, gamma) = (4.0, 2.0);
    let plan = Arc::new(
        EditPlan::new(
            n_layer,
            d,
            vec![LayerEdit::additive(LAYER, c.clone(), scale, gamma)],
        )
        .unwrap(),
    );
    let toks = model
        .tokenize("The quick brown fox jumps over the lazy dog.", true, false)
        .unwrap();
    let names = [format!("l_out-{LAYER}"), "result_output".to_string()];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    let mut hook = ctx(&model);
    let plain = hook.probe(&toks, &names).unwrap();
    hook.set_plan(plan.clone()).unwrap();
    let edited = hook.probe(&toks, &names).unwrap();
    assert_eq!(plain[0].len(), toks.len() * d, "probe `{}` found", names[0]);

    // the residual stream after the layer moves by gamma * scale * c, at every position
    let v: Vec<f32> = c.iter().map(|x| gamma * scale * x).collect();
    for (pos, (e, p)) in edited[0].chunks(d).zip(plain[0].chunks(d)).enumerate() {
        let moved = diff(e, p);
        let err = norm(&diff(&moved, &v));
        assert!(
            err < 1e-3 * norm(&v),
            "position {pos}: moved by {} off the vector (|v| = {})",
            err,
            norm(&v)
        );
    }

    let mut cvec = ctx(&model);
    cvec.set_control_vector(Some(&plan.control_vector().unwrap()))
        .unwrap();
    let steered = cvec.probe(&toks, &names).unwrap();
    let resid_gap = norm(&diff(&steered[0], &edited[0]));
    assert!(
        resid_gap < 1e-4 * norm(&edited[0]),
        "control vector vs hook at the layer: {resid_gap}"
    );
    // the logits: a Q4 model rounds every matrix product's input to 8 bits, so two ways of adding the
    // same vector that differ in the last f32 bits still land on other rounding steps downstream.
    // The yardstick is that rounding floor, measured here as the move of the same edit at 1e-5,
    // which steers nothing (docs/measured.md: 1-2% of the logits' norm on SmolLM2)
    hook.set_plan(Arc::new(plan.at_strength(NULL_STRENGTH)))
        .unwrap();
    let floor = norm(&diff(&hook.probe(&toks, &names).unwrap()[1], &plain[1]));
    let own_move = norm(&diff(&edited[1], &plain[1]));
    let gap = norm(&diff(&steered[1], &edited[1]));
    eprintln!(
        "logits: edit moves {own_move}, control vector vs hook {gap}, rounding floor {floor}"
    );
    assert!(
        own_move > 3.0 * floor,
        "the edit must move the logits beyond rounding: {own_move} vs {floor}"
    );
    assert!(
        gap < 2.0 * floor,
        "control vector vs hook {gap}: more than rounding ({floor}) apart"
    );
    // removing the control vector gives the plain logits back
    cvec.set_control_vector(None).unwrap();
    let back = cvec.probe(&toks, &names).unwrap();
    assert_eq!(back[1], plain[1]);
}

/// The exported file holds `direction.N` (1-D, f32) with exactly the vector the engine adds.
#[test]
fn the_control_vector_export_holds_the_added_vectors() {
    let d = 576;
    let c = common::unit(d, 5);
    let plan = EditPlan::new(
        30,
        d,
        vec![
            LayerEdit::additive(7, c.clone(), 2.5, 1.5),
            LayerEdit::additive(12, common::unit(d, 6), 1.0, -1.0),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("profile.gguf");
    assert_eq!(export_control_vector(&plan, "llama", &out).unwrap(), 2);
    let m = read_matrices(&out, &["direction.7".into(), "direction.12".into()]).unwrap();
    assert_eq!((m[0].rows, m[0].cols), (1, d));
    let want: Vec<f32> = c.iter().map(|x| 2.5 * 1.5 * x).collect();
    assert_eq!(m[0].data, want);
    assert_eq!(m[1].data, plan.edits()[1].add.vector());
    assert!(read_matrices(&out, &["direction.8".into()]).is_err());
}

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/personalize/tagger.jsonl"
);

fn run(db: &Path, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chameleon"));
    cmd.arg("--db").arg(db).args(args);
    if !matches!(args.first(), Some(&"user") | Some(&"history")) {
        cmd.args([
            "--model",
            common::smollm().to_str().unwrap(),
            "--threads",
            common::THREADS,
        ]);
    }
    cmd.output().unwrap()
}

/// A store in `dir` with the fixture user `tagger` and their history.
fn tagger_db(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("c.db");
    ok(run(&db, &["user", "add", "tagger"]));
    ok(run(
        &db,
        &["history", "import", "--user", "tagger", FIXTURE],
    ));
    db
}

/// `fit --user USER --route ROUTE --k K --json` with small but real settings, its report.
fn fit_user(db: &Path, user: &str, route: &str, k: &str) -> serde_json::Value {
    let args = [
        "fit",
        "--user",
        user,
        "--route",
        route,
        "--json",
        "--k",
        k,
        "--insight-tokens",
        "16",
        "--answer-tokens",
        "8",
        "--layers",
        "mid:1",
    ];
    serde_json::from_str(&ok(run(db, &args))).unwrap()
}

/// `tagger`'s stored profile for SmolLM2.
fn tagger_profile(store: &Store) -> chameleon::store::Profile {
    let m = Model::load(&common::smollm(), &Default::default()).unwrap();
    let identity = ModelIdentity {
        fingerprint: m.fingerprint().unwrap().to_string(),
        n_layer: 30,
        hidden: 576,
    };
    store
        .load_profile(&Owner::User("tagger".into()), &identity)
        .unwrap()
        .expect("a stored profile")
}

/// `fit --route align` on a user whose real tags the model does not always give: a profile whose
/// selected layer has a unit direction, the per-layer agreement and scale recorded, the answers changed
/// by `generate`, and a control vector export; a paper-only flag (`--lora`) refuses it with a hint.
#[test]
fn fit_route_align_stores_a_profile_that_generate_applies() {
    let dir = tempfile::tempdir().unwrap();
    let db = tagger_db(dir.path());
    let report: serde_json::Value = fit_user(&db, "tagger", "align", "5");
    let used = report["pairs"].as_u64().unwrap();
    assert!(used >= 2, "{report}");
    assert_eq!(report["selected_layers"].as_array().unwrap().len(), 1);

    let store = Store::open(&db).unwrap();
    let p = tagger_profile(&store);
    let m = Model::load(&common::smollm(), &Default::default()).unwrap();
    assert_eq!(p.params["fit"]["route"], "align");
    assert_eq!(p.params["align"]["items"].as_u64().unwrap(), used);
    let agree = p.params["align"]["agree"].as_array().unwrap();
    let scale = p.params["align"]["scale"].as_array().unwrap();
    assert_eq!((agree.len(), scale.len()), (30, 30));
    let layer = p.selected_layers[0];
    assert!((7..23).contains(&layer), "mid band: {layer}");
    assert!(scale[layer].as_f64().unwrap() > 0.0);
    let c = &p.layers[layer].p;
    assert!((norm(c) - 1.0).abs() < 1e-4);
    // the chosen layer agrees at least as well as every other layer of the band
    let best = (7..23)
        .map(|l| agree[l].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(agree[layer].as_f64().unwrap(), best);

    // the `words` bias: read from the contrasts, in token order, finite
    let words: Vec<(i32, f32)> = serde_json::from_value(p.params["words"].clone()).unwrap();
    assert!(!words.is_empty(), "{}", p.params);
    assert!(words.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(words.iter().all(|(_, b)| b.is_finite() && *b != 0.0));
    // ... toward the user's tag however a reply spells it: as its first word (no space before it, as
    // `generate` starts a reply) and after a space (as after `Tag:`); the fixture's user says
    // `sci-fi` in 6 of 8 items
    let bias_of = |text: &str| {
        let t = m.tokenize(text, false, false).unwrap()[0];
        words.iter().find(|(k, _)| *k == t).map(|(_, b)| *b)
    };
    for spelling in ["sci-fi", " sci-fi"] {
        assert!(
            bias_of(spelling).is_some_and(|b| b > 0.0),
            "{spelling:?}: {words:?}"
        );
    }

    let ask = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--prompt",
            "Which tag fits Alien (1979)?",
            "--max-tokens",
            "16",
            "--user",
            "tagger",
        ];
        a.extend_from_slice(extra);
        ok(run(&db, &a))
    };
    let plain = ask(&["--no-edit"]);
    assert_eq!(plain, ask(&["--no-edit"]), "greedy answers repeat");
    assert_ne!(
        plain,
        ask(&["--gamma", "8"]),
        "a strong edit changes the answer"
    );
    // in llama.cpp's graph (a control vector) it runs too; equality with the hook is the logits test's
    // (a Q4 model's answers may flip on the f32 rounding of the two ways)
    assert!(!ask(&["--apply", "lora"]).trim().is_empty());
    // a real-answer profile holds the direction and the `words` bias, so it answers every way
    for way in ["none", "insight", "retrieval", "align@2", "words@4"] {
        assert!(!ask(&["--way", way]).trim().is_empty(), "{way}");
    }
    // the fixture's history is free text (no task named), where answers are not counted: the
    // `prior` way answers as `none`
    assert_eq!(ask(&["--way", "prior@20"]), ask(&["--way", "none"]));
    // ... and the `labels` way has no answers to choose among
    let refused = run(
        &db,
        &[
            "generate",
            "--prompt",
            "Which tag fits Alien (1979)?",
            "--user",
            "tagger",
            "--way",
            "labels@1",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--way none"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let out = dir.path().join("cv.gguf");
    ok(run(
        &db,
        &[
            "profile",
            "export",
            "--user",
            "tagger",
            "--control-vector",
            out.to_str().unwrap(),
        ],
    ));
    assert!(out.metadata().unwrap().len() > 576 * 4);
    let lora = run(
        &db,
        &[
            "profile",
            "export",
            "--user",
            "tagger",
            "--lora",
            dir.path().join("l.gguf").to_str().unwrap(),
        ],
    );
    assert!(!lora.status.success());
    assert!(String::from_utf8_lossy(&lora.stderr).contains("--control-vector"));
}

/// `choose_policy` holds out the newest items: nothing the scored candidates were fitted on (the
/// model's answers read as contrasts, the insight) comes from them, and every candidate is scored on
/// exactly those items. `fit --route auto` then stores the policy with the profile, and `generate`
/// follows it.
#[test]
fn the_policy_is_scored_on_held_out_items_that_no_fit_saw() {
    use chameleon::llm::ContextParams;
    use chameleon::personalize::{
        FitParams, LayerChoice, Personalizer, Route, default_policy_params,
    };

    let dir = tempfile::tempdir().unwrap();
    let db = tagger_db(dir.path());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(FIXTURE)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let store = Store::open(&db).unwrap();
    let model = Model::load(&common::smollm(), &Default::default()).unwrap();
    let mut p = Personalizer::new(
        &model,
        &store,
        ContextParams {
            n_ctx: 2048,
            n_threads: Some(common::N_THREADS),
            ..Default::default()
        },
    )
    .unwrap()
    .with_progress(false);
    let params = FitParams {
        k: 4,
        route: Route::Align,
        layers: LayerChoice::Mid(1),
        insight_tokens: 16,
        answer_tokens: 8,
        ..Default::default()
    };
    let candidates = default_policy_params(1.0);
    let policy = p.choose_policy("tagger", &params, &candidates).unwrap();
    // the newest items, as many as the candidates ask for while enough stay to fit on
    let held = candidates.held_out.min(lines.len() - candidates.min_fit);
    assert!(held >= 2);
    assert_eq!(policy.held_out, held);
    assert!(!policy.scores.is_empty());
    // free text repeats no answer to count: the `prior` ways are not scored
    assert!(policy.scores.iter().all(|s| s.way.prior() == 0.0));
    for s in &policy.scores {
        assert_eq!(s.per_item.len(), held, "{s:?}");
        assert!(s.log_likelihood.is_finite() && s.log_likelihood < 0.0);
        // free text: ROUGE-1 of the way's own answer against the real one, per held-out item
        assert_eq!(s.per_item_metric.len(), held, "{s:?}");
        assert!(s.per_item_metric.iter().all(|m| (0.0..=1.0).contains(m)));
        let mean = s.per_item_metric.iter().sum::<f64>() / held as f64;
        assert!(s.metric.is_some_and(|m| (m - mean).abs() < 1e-9), "{s:?}");
    }
    drop(p);
    // what the held-out fit stored: answers to queries from the items before the held-out ones only
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn.prepare("SELECT query FROM pairs").unwrap();
    let queries: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!queries.is_empty());
    for held in &lines[lines.len() - held..] {
        let input = held["input"].as_str().unwrap();
        assert!(
            queries.iter().all(|q| !q.contains(input)),
            "a held-out item was read by the fit: {input}"
        );
    }

    let report: serde_json::Value = fit_user(&db, "tagger", "auto", "4");
    assert_eq!(report["seconds"][0][0], "held-out fit");
    assert_eq!(report["seconds"][1][0], "held-out scores");
    let profile = tagger_profile(&store);
    let stored = chameleon::personalize::profile_policy(&profile).expect("a policy");
    assert_eq!(stored.scores.len(), policy.scores.len());
    // the report shows the choice and every candidate's held-out score, as stored
    assert_eq!(
        report["policy"]["scores"].as_array().map(Vec::len),
        Some(stored.scores.len()),
        "{report}"
    );
    assert_eq!(
        report["policy"]["way"],
        serde_json::to_value(stored.way).unwrap()
    );
    assert!(!profile.params["insight"].as_str().unwrap().is_empty());
    // generate answers with the policy, and with any way asked for
    let ask = |way: Option<&str>| {
        let mut args = vec![
            "generate",
            "--user",
            "tagger",
            "--prompt",
            "Which tag fits Alien?",
            "--max-tokens",
            "8",
        ];
        args.extend(way.map(|w| ["--way", w]).into_iter().flatten());
        run(&db, &args)
    };
    let shown = ask(None);
    assert!(shown.status.success());
    assert!(
        String::from_utf8_lossy(&shown.stderr).contains(&format!("way `{}`", stored.way.name())),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    // the fit builds what the chosen way uses: a direction only for an edit, a bias only for words
    assert_eq!(
        profile.layers.is_empty(),
        stored.way.gamma().is_none(),
        "{:?}",
        stored.way
    );
    if stored.way.gamma().is_none() && !stored.way.reads_words() {
        assert!(profile.params.get("words").is_none(), "{}", profile.params);
    }
    if stored.way.gamma().is_none() {
        // an edit the profile does not hold: a clear error that says how to get one
        let refused = ask(Some("align@2"));
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("--route align"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
}

/// The `prior` way's bias: the first token of each answer the history gives, in both spellings a
/// reply may use, weighted `ln(1 + n)` by how many items give it; nothing for free text.
#[test]
fn the_answer_prior_counts_the_first_token_of_each_label() {
    use chameleon::personalize::align::history_prior;
    use chameleon::store::NewItem;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p.db")).unwrap();
    let m = Model::load(&common::smollm(), &Default::default()).unwrap();
    let items = |task: &str, user: &str, tags: &[&str]| {
        let id = store.create_user(user).unwrap().id;
        let new: Vec<NewItem> = tags
            .iter()
            .enumerate()
            .map(|(i, t)| NewItem {
                task: task.into(),
                input: format!("film {i}"),
                output: (*t).into(),
                time: Some(i as i64),
                source_id: None,
            })
            .collect();
        store.add_history(id, &new).unwrap();
        store.history(id).unwrap()
    };
    let tags = ["sci-fi", "comedy", "sci-fi", "sci-fi", "romance", "sci-fi"];
    let prior = history_prior(&m, &items("lamp-2-movie-tag", "tagger", &tags)).unwrap();
    let first = |text: &str| m.tokenize(text, false, false).unwrap()[0];
    let bias = |t| prior.iter().find(|(k, _)| *k == t).map(|(_, b)| *b);
    for (tag, n) in [("sci-fi", 4f32), ("comedy", 1.0), ("romance", 1.0)] {
        for spelling in [tag.to_string(), format!(" {tag}")] {
            let b = bias(first(&spelling)).unwrap_or(0.0);
            assert!((b - (1.0 + n).ln()).abs() < 1e-5, "{spelling:?}: {prior:?}");
        }
    }
    assert!(prior.len() <= 6, "first tokens only: {prior:?}");
    let text = items("general", "writer", &["sci-fi", "sci-fi"]);
    assert!(history_prior(&m, &text).unwrap().is_empty());
}

/// The `labels` way answers with one of the user's own answers: the one whose tokens the model finds
/// likeliest after the prompt (each score the summed teacher-forced log-probability that
/// `score_after_prefix` gives), plus the counts' prior, so that a large prior gives the user's most
/// frequent answer (and `frequent`, with no model, exactly that). `generate --way labels@P` prints that answer; a user whose answers do not repeat
/// (free text) has none to choose among, which is a clear error.
#[test]
fn the_labels_way_chooses_among_the_users_own_answers() {
    use chameleon::personalize::labels::{choose, user_labels};

    let dir = tempfile::tempdir().unwrap();
    let tags = [
        "dark comedy",
        "dark comedy",
        "psychology",
        "dark comedy",
        "romance",
        "dark comedy",
        "psychology",
        "dark comedy",
    ];
    let films = dir.path().join("films.jsonl");
    let lines: Vec<String> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({
                "input": format!("Film {i}: two neighbours keep winning the same raffle."),
                "output": t,
                "task": "lamp-2-movie-tag",
            })
            .to_string()
        })
        .collect();
    std::fs::write(&films, lines.join("\n")).unwrap();
    let db = dir.path().join("c.db");
    ok(run(&db, &["user", "add", "ed"]));
    ok(run(
        &db,
        &["history", "import", "--user", "ed", films.to_str().unwrap()],
    ));
    let store = Store::open(&db).unwrap();
    let history = store.history(store.require_user("ed").unwrap().id).unwrap();
    let labels = user_labels(&history);
    let expected = [("dark comedy", 5), ("psychology", 2), ("romance", 1)];
    assert_eq!(
        labels,
        expected.map(|(l, n)| (l.to_string(), n)),
        "most frequent first"
    );

    let m = Model::load(&common::smollm(), &Default::default()).unwrap();
    let mut c = ctx(&m);
    let prompt = m
        .chat_prompt(
            None,
            "Which tag does this movie relate to? tags: [dark comedy, psychology, romance] \
             description: A lonely lighthouse keeper falls for the voice on the radio.",
        )
        .unwrap();
    let tokens = c.tokenize_prompt(&prompt).unwrap();
    c.clear();
    let (chosen, scores) = choose(&mut c, &m, &tokens, &labels, 0.0, None, &[]).unwrap();
    assert_eq!(scores.len(), 3);
    assert_eq!(c.n_past(), 0, "the cache is left as it was");
    for ((label, _), s) in labels.iter().zip(&scores) {
        let t = m.tokenize(label, false, false).unwrap();
        let lp = c.score_after_prefix(&tokens, &t, &[]).unwrap();
        let sum: f64 = lp.iter().map(|&x| f64::from(x)).sum();
        assert!(*s < 0.0 && (sum - s).abs() < 1e-3, "{label}: {s} vs {sum}");
    }
    let best = (0..3)
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
        .unwrap();
    assert_eq!(chosen.as_deref(), Some(labels[best].0.as_str()));
    let (counted, _) = choose(&mut c, &m, &tokens, &labels, 50.0, None, &[]).unwrap();
    assert_eq!(counted.as_deref(), Some("dark comedy"));
    // `frequent` is the count alone: the model is not asked
    let (frequent, none) = choose(&mut c, &m, &tokens, &labels, f32::INFINITY, None, &[]).unwrap();
    assert_eq!(frequent.as_deref(), Some("dark comedy"));
    assert!(none.is_empty(), "no scores without the model");

    // through the binary, on a real-answer profile
    fit_user(&db, "ed", "align", "4");
    let ask = |way: &str| {
        run(
            &db,
            &[
                "generate",
                "--user",
                "ed",
                "--way",
                way,
                "--prompt",
                "Which tag fits a film about a dentist who hates smiling?",
            ],
        )
    };
    assert_eq!(ok(ask("labels@50")).trim(), "dark comedy");
    assert_eq!(ok(ask("frequent")).trim(), "dark comedy");
    for way in ["labels@0", "labels@0+words@4"] {
        let free = ok(ask(way));
        assert!(
            expected.iter().any(|(l, _)| free.trim() == *l),
            "{way}: {free:?} is not one of the user's answers"
        );
    }
}
