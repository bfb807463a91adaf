//! The store's library API on real SQLite files: migrations, round trips, profiles bound to their
//! model, forgetting, permissions.

mod store_common;

use std::path::{Path, PathBuf};

use chameleon::store::{
    self, InsightKey, InsightKind, LayerDirections, ModelIdentity, NewItem, Owner, Pair, PairKey,
    Profile, Store, StoreError, UserExport,
};
use proptest::prelude::*;
use tempfile::TempDir;

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chameleon.db");
    (dir, path)
}

fn item(input: &str, output: &str) -> NewItem {
    NewItem {
        task: store::TASK_GENERAL.into(),
        input: input.into(),
        output: output.into(),
        time: None,
        source_id: None,
    }
}

fn model(fingerprint: &str, n_layer: usize, hidden: usize) -> ModelIdentity {
    ModelIdentity {
        fingerprint: fingerprint.into(),
        n_layer,
        hidden,
    }
}

/// `v` scaled to norm 1, or `v` itself when it is zero (a stored direction is one or the other).
fn unit_or_zero(v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return v;
    }
    v.into_iter()
        .map(|x| (f64::from(x) / norm) as f32)
        .collect()
}

/// A profile with a direction at every layer, values derived from `seed`, layers 1 and 2 selected.
fn profile(model: ModelIdentity, seed: f32) -> Profile {
    let layers = (0..model.n_layer)
        .map(|layer| LayerDirections {
            layer,
            p: unit_or_zero(
                (0..model.hidden)
                    .map(|i| seed + (layer * 1000 + i) as f32 * 1e-3)
                    .collect(),
            ),
            n: unit_or_zero((0..model.hidden).map(|i| -seed - i as f32 * 1e-4).collect()),
            ccs_loss: 0.1 + layer as f32 * 0.01,
        })
        .collect();
    Profile {
        selected_layers: vec![1, 2]
            .into_iter()
            .filter(|&l| l < model.n_layer)
            .collect(),
        layers,
        params: serde_json::json!({"k": 10, "pooling": "mean"}),
        created: 1_700_000_000,
        model,
    }
}

/// Bit-for-bit equality of two profiles (`PartialEq` on `f32` calls `-0.0` and `0.0` equal).
fn assert_same_bits(a: &Profile, b: &Profile) {
    assert_eq!(a.model, b.model);
    assert_eq!(a.selected_layers, b.selected_layers);
    assert_eq!(a.params, b.params);
    assert_eq!(a.created, b.created);
    assert_eq!(a.layers.len(), b.layers.len());
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.layer, y.layer);
        assert_eq!(
            x.ccs_loss.to_bits(),
            y.ccs_loss.to_bits(),
            "layer {} ccs loss",
            x.layer
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x.p), bits(&y.p), "layer {} p", x.layer);
        assert_eq!(bits(&x.n), bits(&y.n), "layer {} n", x.layer);
    }
}

// ---------------------------------------------------------------------------------------------------
// migrations

// `eval_answers` holds the evaluation's answers to benchmark questions, keyed by run and question id; it
// references no user (LaMP users live in their own `eval.db` by default)
const TABLES: [&str; 10] = [
    "embeddings",
    "eval_answers",
    "group_members",
    "groups",
    "history",
    "insights",
    "pairs",
    "profile_layers",
    "profiles",
    "users",
];

#[test]
fn migrates_an_empty_file_to_the_current_schema() {
    let (_dir, path) = temp_db();
    std::fs::File::create(&path).unwrap(); // zero bytes: what `touch` leaves
    Store::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, store::schema::current_version());
    assert_eq!(version as usize, store::schema::MIGRATIONS.len());
    assert_eq!(store_common::tables(&conn), TABLES);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "the journal mode is stored in the file");
}

#[test]
fn reopening_a_current_database_changes_nothing() {
    let (_dir, path) = temp_db();
    {
        let store = Store::open(&path).unwrap();
        let alice = store.create_user("alice").unwrap();
        store.add_history(alice.id, &[item("q", "a")]).unwrap();
    }
    let schema_version = |path: &Path| -> i64 {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.pragma_query_value(None, "schema_version", |r| r.get(0))
            .unwrap()
    };
    let before_schema = schema_version(&path);
    let before = store_common::dump(&path);
    for _ in 0..3 {
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store
                .history(store.require_user("alice").unwrap().id)
                .unwrap()
                .len(),
            1
        );
    }
    assert_eq!(
        schema_version(&path),
        before_schema,
        "a re-open must not touch the schema"
    );
    assert_eq!(store_common::dump(&path), before);
}

#[test]
fn refuses_a_database_from_a_newer_chameleon() {
    let (_dir, path) = temp_db();
    Store::open(&path).unwrap();
    let newer = store::schema::current_version() + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let before = store_common::dump(&path);

    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, known, .. } if found == newer && known == newer - 1),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("newer than this chameleon knows"),
        "{err}"
    );
    assert!(
        err.hint().unwrap().contains("upgrade chameleon"),
        "{:?}",
        err.hint()
    );
    assert_eq!(
        store_common::dump(&path),
        before,
        "a refused database is left as it was"
    );
}

#[test]
fn a_failing_migration_applies_nothing() {
    let (_dir, path) = temp_db();
    // a stray `users` table under chameleon's application id makes the first migration fail halfway
    // through its statements (without the id the file is refused before any migration)
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE users (x)").unwrap();
    conn.pragma_update(
        None,
        "application_id",
        chameleon::store::schema::APPLICATION_ID,
    )
    .unwrap();
    drop(conn);
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::Migration { version: 1, .. }),
        "{err:?}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(
        store_common::tables(&conn),
        ["users"],
        "no table of the failed migration may remain"
    );
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 0);
}

#[test]
fn refuses_a_file_that_is_not_a_database() {
    let (_dir, path) = temp_db();
    std::fs::write(&path, "name,tag\nalice,comedy\n".repeat(100)).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        err.hint().unwrap().contains("is not a chameleon database"),
        "{:?}",
        err.hint()
    );
}

// ---------------------------------------------------------------------------------------------------
// permissions

#[cfg(unix)]
#[test]
fn creates_the_file_0600_inside_a_new_0700_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new").join("nested").join("chameleon.db");
    let store = Store::open(&path).unwrap();
    let alice = store.create_user("alice").unwrap();
    store.add_history(alice.id, &[item("q", "a")]).unwrap();
    assert_eq!(store_common::mode(&dir.path().join("new")), 0o700);
    assert_eq!(store_common::mode(path.parent().unwrap()), 0o700);
    assert_eq!(store_common::mode(&path), 0o600);
    // while the store is open, SQLite's side files exist and copy the database file's mode
    for side in ["chameleon.db-wal", "chameleon.db-shm"] {
        let side = path.with_file_name(side);
        assert!(side.exists(), "{} should exist in WAL mode", side.display());
        assert_eq!(store_common::mode(&side), 0o600, "{}", side.display());
    }
}

// ---------------------------------------------------------------------------------------------------
// round trips

fn finite_f32() -> impl Strategy<Value = f32> {
    use proptest::num::f32 as f;
    prop_oneof![
        4 => f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
        1 => Just(-0.0f32),
        1 => (1u32..0x0080_0000, any::<bool>()).prop_map(|(m, neg)| f32::from_bits(m | (u32::from(neg) << 31))),
    ]
}

/// A random profile: `n_layer` 1..40, `hidden` 1..64, directions at a random subset of layers, a random
/// subset of those selected, vectors with negative zeros and subnormals.
fn any_profile() -> impl Strategy<Value = Profile> {
    (1usize..40, 1usize..64).prop_flat_map(|(n_layer, hidden)| {
        let layer = (
            proptest::collection::vec(finite_f32(), hidden),
            proptest::collection::vec(finite_f32(), hidden),
            // a loss is a mean of squares: never negative (a REAL column keeps every f32 but the sign of zero)
            finite_f32().prop_map(f32::abs),
            any::<bool>(),
            any::<bool>(),
        );
        (
            proptest::collection::vec(layer, n_layer),
            "[0-9a-f]{1,64}",
            any::<i64>(),
            any::<u8>(),
        )
            .prop_map(move |(per_layer, fingerprint, created, k)| {
                let mut layers = Vec::new();
                let mut selected_layers = Vec::new();
                for (layer, (p, n, ccs_loss, present, selected)) in
                    per_layer.into_iter().enumerate()
                {
                    if present {
                        layers.push(LayerDirections {
                            layer,
                            p: unit_or_zero(p),
                            n: unit_or_zero(n),
                            ccs_loss,
                        });
                        if selected {
                            selected_layers.push(layer);
                        }
                    }
                }
                Profile {
                    model: ModelIdentity {
                        fingerprint,
                        n_layer,
                        hidden,
                    },
                    selected_layers,
                    layers,
                    params: serde_json::json!({"k": k, "alpha": 1.0}),
                    created,
                }
            })
    })
}

fn any_item() -> impl Strategy<Value = NewItem> {
    (
        "[A-Za-z0-9._-]{1,64}",
        any::<String>(),
        any::<String>().prop_filter("a non-blank output", |s| !s.trim().is_empty()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<String>().prop_map(|s| s.chars().take(60).collect::<String>())),
    )
        .prop_map(|(task, input, output, time, source_id)| NewItem {
            task,
            input,
            output,
            time,
            source_id,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Invariant: every history item the store accepts comes back exactly as given (any Unicode, control
    /// characters and NULs included), with the time it was given or the time it was added.
    #[test]
    fn any_history_item_round_trips(items in proptest::collection::vec(any_item(), 1..8)) {
        let (_dir, path) = temp_db();
        let store = Store::open(&path).unwrap();
        let user = store.create_user("u").unwrap();
        let before = store::unix_now();
        store.add_history(user.id, &items).unwrap();
        let after = store::unix_now();
        let stored = store.history(user.id).unwrap();
        prop_assert_eq!(stored.len(), items.len());
        // stored order is (time, insertion); match each stored item back to its input by id order
        let mut by_id = stored.clone();
        by_id.sort_by_key(|s| s.id);
        for (given, got) in items.iter().zip(&by_id) {
            prop_assert_eq!(&got.task, &given.task);
            prop_assert_eq!(&got.input, &given.input);
            prop_assert_eq!(&got.output, &given.output);
            prop_assert_eq!(&got.source_id, &given.source_id);
            match given.time {
                Some(t) => prop_assert_eq!(got.time, t),
                None => prop_assert!((before..=after).contains(&got.time)),
            }
        }
        let order: Vec<_> = stored.iter().map(|s| (s.time, s.id)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        prop_assert_eq!(order, sorted, "history comes back ordered by time, then id");
    }

    /// Invariant: a saved profile loads back bit for bit (negative zeros and subnormals included),
    /// with its layers in order.
    #[test]
    fn any_profile_round_trips_bit_for_bit(profile in any_profile()) {
        let (_dir, path) = temp_db();
        let store = Store::open(&path).unwrap();
        store.create_user("u").unwrap();
        let owner = Owner::User("u".into());
        store.save_profile(&owner, &profile).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let loaded = store.load_profile(&owner, &profile.model).unwrap().unwrap();
        assert_same_bits(&loaded, &profile);
    }

    /// Invariant: an export written as JSON and read back is the same document, vectors bit for bit.
    #[test]
    fn any_profile_survives_export_as_json(profile in any_profile()) {
        let (_dir, path) = temp_db();
        let store = Store::open(&path).unwrap();
        let user = store.create_user("u").unwrap();
        store.add_history(user.id, &[item("q", "a")]).unwrap();
        store.save_profile(&Owner::User("u".into()), &profile).unwrap();
        let json = serde_json::to_string(&store.export_user("u").unwrap()).unwrap();
        let doc: UserExport = serde_json::from_str(&json).unwrap();
        assert_same_bits(&doc.profiles[0], &profile);

        let (_dir2, path2) = temp_db();
        let other = Store::open(&path2).unwrap();
        other.import_user(&doc, false).unwrap();
        let loaded = other.load_profile(&Owner::User("u".into()), &profile.model).unwrap().unwrap();
        assert_same_bits(&loaded, &profile);
    }
}

// ---------------------------------------------------------------------------------------------------
// profiles bound to their model

#[test]
fn a_profile_is_refused_for_another_model() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    store.create_user("alice").unwrap();
    let alice = Owner::User("alice".into());
    assert!(
        store
            .load_profile(&alice, &model("smol", 30, 576))
            .unwrap()
            .is_none(),
        "no profile yet"
    );
    store
        .save_profile(&alice, &profile(model("smol", 30, 576), 0.5))
        .unwrap();

    // the shape is checked before the fingerprint: same fingerprint, wrong shape is a shape error
    for expected in [
        model("smol", 30, 64),
        model("smol", 28, 576),
        model("qwen", 28, 1536),
    ] {
        let err = store.load_profile(&alice, &expected).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::ProfileShape {
                    stored_layers: 30,
                    stored_hidden: 576,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("30 layers of size 576"), "{err}");
        assert!(err.hint().unwrap().contains("`smol`"), "{:?}", err.hint());
    }
    let err = store
        .load_profile(&alice, &model("other", 30, 576))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::ProfileModel { stored, expected, .. } if stored == "smol" && expected == "other"),
        "{err:?}"
    );
    assert!(
        err.hint().unwrap().contains("fit a new profile"),
        "{:?}",
        err.hint()
    );

    // a second model gets its own profile; each model loads its own
    store
        .save_profile(&alice, &profile(model("qwen", 28, 1536), 0.25))
        .unwrap();
    assert_eq!(
        store
            .load_profile(&alice, &model("smol", 30, 576))
            .unwrap()
            .unwrap()
            .model
            .hidden,
        576
    );
    assert_eq!(
        store
            .load_profile(&alice, &model("qwen", 28, 1536))
            .unwrap()
            .unwrap()
            .model
            .hidden,
        1536
    );
    assert_eq!(store.profiles(&alice).unwrap().len(), 2);

    // saving again for the same model replaces
    let newer = profile(model("smol", 30, 576), 0.75);
    store.save_profile(&alice, &newer).unwrap();
    assert_eq!(store.profiles(&alice).unwrap().len(), 2);
    assert_same_bits(
        &store.load_profile(&alice, &newer.model).unwrap().unwrap(),
        &newer,
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let layers: i64 = conn
        .query_row("SELECT count(*) FROM profile_layers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(layers, 30 + 28, "the replaced profile's layers are gone");
}

#[test]
fn profiles_of_unknown_owners_and_invalid_profiles_are_refused() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    let m = model("smol", 4, 8);
    let err = store
        .save_profile(&Owner::User("nobody".into()), &profile(m.clone(), 0.1))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownUser(ref n) if n == "nobody"),
        "{err:?}"
    );
    let err = store
        .load_profile(&Owner::Group("nobody".into()), &m)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownGroup(ref n) if n == "nobody"),
        "{err:?}"
    );

    store.create_user("alice").unwrap();
    let mut bad = profile(m.clone(), 0.1);
    bad.layers[3].p.pop();
    let err = store
        .save_profile(&Owner::User("alice".into()), &bad)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("layer 3: `p` has 7 values, the model's hidden size is 8"),
        "{err}"
    );
    assert!(
        store
            .profiles(&Owner::User("alice".into()))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_group_owns_its_profile() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    for name in ["alice", "bob", "carol"] {
        store.create_user(name).unwrap();
    }
    assert_eq!(store.add_to_group("family", &["alice", "bob"]).unwrap(), 2);
    assert_eq!(
        store.add_to_group("family", &["bob", "carol"]).unwrap(),
        1,
        "bob was a member already"
    );
    let members: Vec<_> = store
        .group_members("family")
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(members, ["alice", "bob", "carol"]);

    let group = Owner::Group("family".into());
    let p = profile(model("smol", 3, 5), -0.0);
    store.save_profile(&group, &p).unwrap();
    assert_same_bits(&store.load_profile(&group, &p.model).unwrap().unwrap(), &p);
    assert!(
        store
            .load_profile(&Owner::User("alice".into()), &p.model)
            .unwrap()
            .is_none()
    );

    assert_eq!(
        store
            .remove_from_group("family", &["carol", "carol"])
            .unwrap(),
        1
    );
    assert_eq!(store.groups().unwrap()[0].members, ["alice", "bob"]);

    // an unknown user writes nothing, not even the new group
    let err = store
        .add_to_group("work", &["alice", "nobody"])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownUser(ref n) if n == "nobody"),
        "{err:?}"
    );
    assert_eq!(store.groups().unwrap().len(), 1);

    assert_eq!(store.delete_group("family").unwrap(), 2);
    assert!(store.groups().unwrap().is_empty());
    assert_eq!(
        store_common::counts(&path)
            .iter()
            .find(|(t, _)| t == "profiles")
            .unwrap()
            .1,
        0
    );
    assert_eq!(
        store.users().unwrap().len(),
        3,
        "deleting a group keeps its users"
    );
}

// ---------------------------------------------------------------------------------------------------
// insights and pairs

#[test]
fn insights_and_pairs_are_keyed_by_model_prompt_and_history() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    let alice = store.create_user("alice").unwrap();
    store
        .add_history(alice.id, &[item("q1", "a1"), item("q2", "a2")])
        .unwrap();
    let history = store.history(alice.id).unwrap();
    let hash = store::history_hash(&history);
    assert_ne!(hash, store::history_hash(&history[..1]));

    let key = InsightKey {
        user: alice.id,
        fingerprint: "smol".into(),
        kind: InsightKind::Personal,
        prompt_version: 1,
        history_hash: hash.clone(),
    };
    assert_eq!(store.insight(&key).unwrap(), None);
    store.put_insight(&key, "likes short answers").unwrap();
    store
        .put_insight(
            &InsightKey {
                kind: InsightKind::Neutral,
                ..key.clone()
            },
            "plain and generic",
        )
        .unwrap();
    assert_eq!(
        store.insight(&key).unwrap().as_deref(),
        Some("likes short answers")
    );
    for other in [
        InsightKey {
            fingerprint: "qwen".into(),
            ..key.clone()
        },
        InsightKey {
            prompt_version: 2,
            ..key.clone()
        },
        InsightKey {
            history_hash: store::history_hash(&history[..1]),
            ..key.clone()
        },
    ] {
        assert_eq!(store.insight(&other).unwrap(), None, "{other:?}");
    }
    store.put_insight(&key, "likes very short answers").unwrap();
    assert_eq!(
        store.insight(&key).unwrap().as_deref(),
        Some("likes very short answers"),
        "put replaces"
    );

    let pkey = PairKey {
        user: alice.id,
        fingerprint: "smol".into(),
        prompt_version: 1,
        history_hash: hash,
    };
    let pair = |q: &str, p: &str| Pair {
        query: q.into(),
        personal: p.into(),
        neutral: format!("neutral {q}"),
    };
    store
        .put_pairs(&pkey, &[pair("b", "pb"), pair("a", "pa")])
        .unwrap();
    store.put_pair(&pkey, &pair("c", "pc")).unwrap();
    store.put_pair(&pkey, &pair("b", "pb2")).unwrap();
    let got = store.pairs(&pkey).unwrap();
    assert_eq!(
        got,
        [pair("b", "pb2"), pair("a", "pa"), pair("c", "pc")],
        "first-stored order, same query replaced"
    );
    assert!(
        store
            .pairs(&PairKey {
                prompt_version: 2,
                ..pkey
            })
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------------
// forgetting

/// A marker that appears in everything stored about the forgotten user and nowhere else.
const MARKER: &str = "zq7-secret-of-alice";

#[test]
fn forget_leaves_no_row_and_no_byte_about_the_user() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    let name = format!("alice-{MARKER}");
    let alice = store.create_user(&name).unwrap();
    let bob = store.create_user("bob").unwrap();
    let items: Vec<_> = (0..50)
        .map(|i| {
            item(
                &format!("question {i} {MARKER}"),
                &format!("answer {MARKER}"),
            )
        })
        .collect();
    store.add_history(alice.id, &items).unwrap();
    store
        .add_history(bob.id, &[item("bob's question", "bob's answer")])
        .unwrap();
    let hash = store::history_hash(&store.history(alice.id).unwrap());
    for kind in [InsightKind::Personal, InsightKind::Neutral] {
        let key = InsightKey {
            user: alice.id,
            fingerprint: "smol".into(),
            kind,
            prompt_version: 1,
            history_hash: hash.clone(),
        };
        store
            .put_insight(&key, &format!("{kind} insight {MARKER}"))
            .unwrap();
    }
    let pkey = PairKey {
        user: alice.id,
        fingerprint: "smol".into(),
        prompt_version: 1,
        history_hash: hash,
    };
    let pairs: Vec<_> = (0..5)
        .map(|i| Pair {
            query: format!("q{i} {MARKER}"),
            personal: format!("p {MARKER}"),
            neutral: format!("n {MARKER}"),
        })
        .collect();
    store.put_pairs(&pkey, &pairs).unwrap();
    let vectors: Vec<_> = store
        .history(alice.id)
        .unwrap()
        .iter()
        .chain(&store.history(bob.id).unwrap())
        .map(|h| (h.id, vec![0.5f32; 8]))
        .collect();
    let rows: Vec<_> = vectors.iter().map(|(id, v)| (*id, v.as_slice())).collect();
    store.put_embeddings("smol/item-mean-v1", &rows).unwrap();
    let m = model("smol", 4, 8);
    store
        .save_profile(&Owner::User(name.clone()), &profile(m.clone(), 0.5))
        .unwrap();
    store
        .save_profile(&Owner::User("bob".into()), &profile(m.clone(), 0.25))
        .unwrap();
    store
        .add_to_group("family", &[name.as_str(), "bob"])
        .unwrap();
    store.add_to_group("bobs", &["bob"]).unwrap();
    store
        .save_profile(&Owner::Group("family".into()), &profile(m.clone(), 0.125))
        .unwrap();
    store
        .save_profile(&Owner::Group("bobs".into()), &profile(m.clone(), 0.0625))
        .unwrap();

    let forgotten = store.forget_user(&name).unwrap();
    assert_eq!(
        forgotten.per_table(),
        [
            ("users", 1),
            ("history", 50),
            ("embeddings", 50),
            ("group_members", 1),
            ("insights", 2),
            ("pairs", 5),
            ("profiles", 2), // alice's own and the family's, fitted on her data
            ("profile_layers", 8),
        ]
    );
    assert!(forgotten.to_string().starts_with(&format!(
        "forgot user `{name}`: removed 1 from `users`, 50 from `history`"
    )));

    // every table, found through sqlite_master: no reference to her id, no text about her
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables = store_common::tables(&conn);
    assert_eq!(
        tables, TABLES,
        "a new table must be added to forget_user and to this test"
    );
    for table in &tables {
        for row in store_common::rows(&conn, table) {
            for (column, value) in row {
                assert!(
                    !value.contains(MARKER),
                    "`{table}`.`{column}` still holds {value}"
                );
                if column == "user_id" {
                    assert_ne!(
                        value,
                        alice.id.to_string(),
                        "`{table}` still refers to the forgotten user"
                    );
                }
            }
        }
    }
    // bob and his group are intact
    let bobs = store.history(bob.id).unwrap();
    assert_eq!(bobs.len(), 1);
    let ids: Vec<_> = vectors.iter().map(|(id, _)| *id).collect();
    let left = store.embeddings("smol/item-mean-v1", &ids, 8).unwrap();
    assert_eq!(left.keys().collect::<Vec<_>>(), vec![&bobs[0].id]);
    assert!(
        store
            .load_profile(&Owner::User("bob".into()), &m)
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .load_profile(&Owner::Group("bobs".into()), &m)
            .unwrap()
            .is_some()
    );
    assert_eq!(store.group_members("family").unwrap().len(), 1);

    // secure_delete and the truncated log: the text is gone from the files, not just unlinked
    for file in [path.clone(), path.with_file_name("chameleon.db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            let found = bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
            assert!(
                !found,
                "{} still contains the forgotten text",
                file.display()
            );
        }
    }

    let err = store.export_user(&name).unwrap_err();
    assert!(matches!(err, StoreError::UnknownUser(_)), "{err:?}");
    assert!(matches!(
        store.forget_user(&name).unwrap_err(),
        StoreError::UnknownUser(_)
    ));
}

#[test]
fn import_refuses_an_existing_user_unless_replacing() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    let alice = store.create_user("alice").unwrap();
    store.add_history(alice.id, &[item("q", "a")]).unwrap();
    let mut doc = store.export_user("alice").unwrap();
    doc.history.push(store::HistoryRecord {
        input: "q2".into(),
        output: "a2".into(),
        task: None,
        time: Some(5),
        id: Some("x".into()),
    });
    let before = store_common::dump(&path);
    let err = store.import_user(&doc, false).unwrap_err();
    assert!(
        matches!(err, StoreError::ImportWouldReplace(ref n) if n == "alice"),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("--replace"));
    assert_eq!(store_common::dump(&path), before);

    let imported = store.import_user(&doc, true).unwrap();
    assert_eq!(imported.history, 2);
    assert_eq!(imported.replaced.unwrap().history, 1);
    let alice = store.require_user("alice").unwrap();
    let outputs: Vec<_> = store
        .history(alice.id)
        .unwrap()
        .into_iter()
        .map(|i| i.output)
        .collect();
    assert_eq!(
        outputs,
        ["a2", "a"],
        "ordered by time: the imported item has time 5"
    );
}

#[test]
fn names_are_checked() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    for bad in ["", " alice", "a\tb", &"x".repeat(store::MAX_NAME_BYTES + 1)] {
        let err = store.create_user(bad).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidName { what: "user", .. }),
            "{bad:?}: {err:?}"
        );
    }
    assert!(store.users().unwrap().is_empty());
}
