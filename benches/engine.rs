//! Decode and prompt speed with the edit hook, as a ratio to plain llama.cpp decoding.
//!
//! Plain medians on shared machines swing 10-15% between runs, so every figure here is *paired*: a
//! plain context (no eval callback registered at all) and a test context alternate token by token
//! (decode) or prompt by prompt (prompt processing), the order flipping each step, and we report the
//! median of the per-step ratios `plain time / test time` (1.00x = as fast as plain llama.cpp).
//!
//! Run: `cargo bench --bench engine` (SmolLM2-135M; `CHAMELEON_BENCH_MODEL=PATH` for another model;
//! on a GPU build `CHAMELEON_BENCH_GPU_LAYERS=-1` offloads every layer, so the hook's copies between
//! device and host memory are in the measured time).
//! Sizes: 128 decoded tokens (a typical short answer) and a 256-token prompt (a history block).

use std::sync::Arc;
use std::time::Instant;

mod common;

use chameleon::adapters::lora::export_lora;
use chameleon::llm::{Context, ContextParams, LoraId, Model, ModelParams};
use chameleon::steer::{EditPlan, LayerEdit};
use common::unit;

const DECODE_TOKENS: usize = 128;
const PROMPT_TOKENS: usize = 256;
const ROUNDS: usize = 3;
const PROMPT_REPEATS: usize = 15;

fn plan(model: &Model, layers: &[usize]) -> Arc<EditPlan> {
    let d = model.n_embd();
    let edits = layers
        .iter()
        .map(|&layer| LayerEdit {
            layer,
            p: unit(d, layer as u64),
            n: unit(d, 99 + layer as u64),
            alpha: 1.0,
            beta: 1.0,
            add: Default::default(),
        })
        .collect();
    Arc::new(EditPlan::new(model.n_layer(), d, edits).expect("valid plan"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Paired decode: returns (median ratio plain/test, plain tokens/s median).
fn decode_pair(plain: &mut Context<'_>, test: &mut Context<'_>, start: &[i32]) -> (f64, f64) {
    let mut ratios = Vec::new();
    let mut plain_times = Vec::new();
    for round in 0..ROUNDS {
        plain.clear();
        test.clear();
        plain.eval(start, false).unwrap();
        test.eval(start, false).unwrap();
        let mut tok = argmax(&plain.last_logits());
        for step in 0..DECODE_TOKENS {
            let (tp, tt) = if (step + round) % 2 == 0 {
                let tp = timed(|| plain.eval(&[tok], false).unwrap());
                (tp, timed(|| test.eval(&[tok], false).unwrap()))
            } else {
                let tt = timed(|| test.eval(&[tok], false).unwrap());
                (timed(|| plain.eval(&[tok], false).unwrap()), tt)
            };
            ratios.push(tp / tt);
            plain_times.push(tp);
            tok = argmax(&plain.last_logits());
        }
    }
    (median(ratios), 1.0 / median(plain_times))
}

/// Paired prompt processing: returns (median ratio plain/test, plain tokens/s median).
fn prompt_pair(plain: &mut Context<'_>, test: &mut Context<'_>, prompt: &[i32]) -> (f64, f64) {
    let mut ratios = Vec::new();
    let mut plain_times = Vec::new();
    for rep in 0..PROMPT_REPEATS {
        plain.clear();
        test.clear();
        let (tp, tt) = if rep % 2 == 0 {
            let tp = timed(|| plain.eval(prompt, false).unwrap());
            (tp, timed(|| test.eval(prompt, false).unwrap()))
        } else {
            let tt = timed(|| test.eval(prompt, false).unwrap());
            (timed(|| plain.eval(prompt, false).unwrap()), tt)
        };
        ratios.push(tp / tt);
        plain_times.push(tp);
    }
    (median(ratios), prompt.len() as f64 / median(plain_times))
}

fn argmax(v: &[f32]) -> i32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
        .map_or(0, |(i, _)| i as i32)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only under `cargo bench`
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let path = std::env::var_os("CHAMELEON_BENCH_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| chameleon::paths::fetched_model("smollm2-135m"));
    let gpu_layers = std::env::var("CHAMELEON_BENCH_GPU_LAYERS")
        .ok()
        .map_or(0, |v| {
            v.parse().expect("CHAMELEON_BENCH_GPU_LAYERS is an integer")
        });
    let mut model = Model::load(&path, &ModelParams { gpu_layers })
        .expect("load the model (run models/fetch.sh)");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let params = |hook| ContextParams {
        n_ctx: 1024,
        n_threads: Some(threads),
        hook,
        ..Default::default()
    };
    let text = "Personal history: I watch slow science fiction, I dislike loud action films, and I keep a \
                list of every film with a twist ending that I have ever seen. ";
    let mut prompt = model.tokenize(&text.repeat(20), true, false).unwrap();
    prompt.truncate(PROMPT_TOKENS);
    let start = &prompt[..16];

    let n = model.n_layer();
    let every: Vec<usize> = (0..n).collect();
    // the same edits as a rank-2 LoRA adapter on ffn_down, which llama.cpp applies inside its own
    // graph (no eval callback): possible where no norm follows the MLP (`profile export`)
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut adapter = |layers: &[usize], file: &str| -> Option<LoraId> {
        if model.mlp_node().post_norm {
            return None;
        }
        let out = dir.path().join(file);
        let arch = model.info().arch.clone();
        export_lora(&path, &arch, model.mlp_node(), &plan(&model, layers), &out)
            .expect("export the adapter");
        Some(model.load_lora(&out).expect("load the adapter"))
    };
    let lora_one = adapter(&[n / 2], "one.gguf");
    let lora_every = adapter(&every, "every.gguf");
    type Config = (&'static str, bool, Option<Arc<EditPlan>>, Option<LoraId>);
    let mut configs: Vec<Config> = vec![
        ("no hook (plain vs plain)", false, None, None),
        (
            "hook, empty plan",
            true,
            Some(Arc::new(EditPlan::empty(n, model.n_embd()))),
            None,
        ),
        ("edit 1 layer", true, Some(plan(&model, &[n / 2])), None),
        ("edit every layer", true, Some(plan(&model, &every)), None),
    ];
    if let (Some(one), Some(all)) = (lora_one, lora_every) {
        configs.push(("1 layer as LoRA adapter (no hook)", false, None, Some(one)));
        configs.push((
            "every layer as LoRA adapter (no hook)",
            false,
            None,
            Some(all),
        ));
    }
    let devices: Vec<String> = chameleon::llm::devices()
        .into_iter()
        .map(|d| d.description)
        .collect();
    println!(
        "model: {} ({}), {threads} threads, gpu layers {gpu_layers}, devices: {}",
        path.display(),
        model.info().description,
        devices.join(", ")
    );
    println!();
    println!(
        "| configuration | decode ({DECODE_TOKENS} tokens) vs plain | prompt ({PROMPT_TOKENS} tokens) vs plain | plain decode tok/s | plain prompt tok/s |"
    );
    println!("|---|---|---|---|---|");
    let mut plain = model.new_context(&params(false)).unwrap();
    for (name, hook, p, lora) in configs {
        let mut test = model.new_context(&params(hook)).unwrap();
        if let Some(p) = p {
            test.set_plan(p).unwrap();
        }
        if let Some(id) = lora {
            test.set_lora(Some((id, 1.0))).unwrap();
        }
        // warm up both
        plain.clear();
        test.clear();
        plain.eval(&prompt, false).unwrap();
        test.eval(&prompt, false).unwrap();
        let (dr, dtps) = decode_pair(&mut plain, &mut test, start);
        let (pr, ptps) = prompt_pair(&mut plain, &mut test, &prompt);
        println!("| {name} | {dr:.3}x | {pr:.3}x | {dtps:.0} | {ptps:.0} |");
    }
}
