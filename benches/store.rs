//! Store benchmarks: history import throughput and profile load time, on real files in a temp dir.
//!
//! Run with `cargo bench --bench store`. Every write runs with `synchronous = FULL`, so the numbers
//! include the fsyncs a real import pays. Each benchmark runs on a plaintext store and on an encrypted
//! one (SQLCipher, a raw 256-bit key) in the same run, so their ratio is the cost of encryption.

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chameleon::store::crypt::{DbKey, KeySource};
use chameleon::store::{self, LayerDirections, ModelIdentity, Owner, Profile, ReadOptions, Store};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// 100k items: a heavy user's whole history (years of chat turns, a LaMP user's profile is ~10-500
/// items), large enough that per-item cost dominates the fixed cost of one transaction.
const IMPORT_ITEMS: usize = 100_000;

/// Profile shapes of the models the project runs: (name, layers, hidden size).
const PROFILE_SHAPES: [(&str, usize, usize); 2] = [
    // SmolLM2-135M, the default model: the profile loaded on every `generate`
    ("smollm2-135m 30x576", 30, 576),
    // Qwen2.5-1.5B-sized: the largest profile a laptop user is likely to load
    ("qwen2.5-1.5b 28x1536", 28, 1536),
];

fn write_history_file(path: &Path, n: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let record = serde_json::json!({
            "input": format!("Which tag fits this movie? A quiet drama about a lighthouse keeper, number {i}."),
            "output": if i % 3 == 0 { "true story" } else { "thought-provoking" },
            "id": i,
        });
        writeln!(out, "{record}").unwrap();
    }
    out.flush().unwrap();
}

/// The two kinds of store every benchmark runs on.
const KINDS: [(&str, bool); 2] = [("plaintext", false), ("encrypted", true)];

/// A fresh store with one user, in its own temp dir; encrypted with a raw key when asked.
fn fresh_store(encrypted: bool) -> (tempfile::TempDir, Store, store::UserId) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let store = if encrypted {
        let key = DbKey::random().unwrap();
        Store::open_keyed(&path, Some((&key, KeySource::Env))).unwrap()
    } else {
        Store::open_keyed(&path, None).unwrap()
    };
    let user = store.create_user("bench").unwrap();
    (dir, store, user.id)
}

fn import(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.jsonl");
    write_history_file(&file, IMPORT_ITEMS);
    let items = store::read_history_file(&file, &ReadOptions::default()).unwrap();

    let mut group = c.benchmark_group("import");
    group.throughput(Throughput::Elements(IMPORT_ITEMS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (kind, encrypted) in KINDS {
        // what `chameleon history import` does: read, parse and check the file, then one transaction
        group.bench_function(format!("file 100k items, {kind}"), |b| {
            b.iter_batched(
                || fresh_store(encrypted),
                |(_dir, store, user)| {
                    let items = store::read_history_file(&file, &ReadOptions::default()).unwrap();
                    black_box(store.add_history(user, &items).unwrap());
                },
                BatchSize::PerIteration,
            );
        });
        // the write alone (the pipeline's own loaders hand items over in memory)
        group.bench_function(format!("write 100k items, {kind}"), |b| {
            b.iter_batched(
                || fresh_store(encrypted),
                |(_dir, store, user)| black_box(store.add_history(user, &items).unwrap()),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn unit(v: impl Iterator<Item = f32>) -> Vec<f32> {
    let v: Vec<f32> = v.collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn profile(n_layer: usize, hidden: usize) -> Profile {
    Profile {
        model: ModelIdentity {
            fingerprint: format!("bench-{n_layer}x{hidden}"),
            n_layer,
            hidden,
        },
        selected_layers: (0..n_layer).step_by(3).collect(),
        layers: (0..n_layer)
            .map(|layer| LayerDirections {
                layer,
                // unit directions, as a store accepts them
                p: unit((0..hidden).map(|i| ((layer * hidden + i) as f32).sin())),
                n: unit((0..hidden).map(|i| ((layer * hidden + i) as f32).cos())),
                ccs_loss: 0.1 + layer as f32 * 1e-3,
            })
            .collect(),
        params: serde_json::json!({"k": 10, "pooling": "mean", "ccs_epochs": 1000, "ccs_restarts": 10}),
        created: 0,
    }
}

fn load_profile(c: &mut Criterion) {
    let mut group = c.benchmark_group("load_profile");
    for (name, n_layer, hidden) in PROFILE_SHAPES {
        for (kind, encrypted) in KINDS {
            let (_dir, store, _user) = fresh_store(encrypted);
            let owner = Owner::User("bench".into());
            let p = profile(n_layer, hidden);
            store.save_profile(&owner, &p).unwrap();
            group.bench_function(format!("{name}, {kind}"), |b| {
                b.iter(|| black_box(store.load_profile(&owner, &p.model).unwrap()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, import, load_profile);
criterion_main!(benches);
