//! Several users served at once (what `chameleon serve --parallel N` does): aggregate decode speed of N
//! sequences in one batch, each with its own profile's plan, against the same batch with no plans
//! (the cost of per-row edits) and against the same users served one after another in one context
//! with the plan swapped between them (what a server with one profile per context must do).
//!
//! Every figure is a ratio measured in the same run, rounds alternating the variants so drift on a
//! shared machine hits all of them alike. Run: `cargo bench --profile dev --bench batch`
//! (SmolLM2-135M; `CHAMELEON_BENCH_MODEL=PATH` for another model, `CHAMELEON_BENCH_ROUNDS=N` for
//! more rounds than 3).

mod common;

use std::sync::Arc;
use std::time::Instant;

use chameleon::llm::{BatchRow, ContextParams, Model, ModelParams, Token};
use chameleon::steer::{EditPlan, LayerEdit};
use common::unit;

const TOKENS: usize = 64;
/// Rounds per variant unless `CHAMELEON_BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 3;

/// A user's plan: three middle layers, as the demo's profile.
fn plan(model: &Model, user: u64) -> Arc<EditPlan> {
    let d = model.n_embd();
    let mid = model.n_layer() / 2;
    let edits = [mid - 2, mid, mid + 2]
        .iter()
        .map(|&layer| {
            LayerEdit::projection(
                layer,
                unit(d, user * 1000 + layer as u64),
                unit(d, user * 1000 + 500 + layer as u64),
                1.0,
                1.0,
            )
        })
        .collect();
    Arc::new(EditPlan::new(model.n_layer(), d, edits).expect("valid plan"))
}

fn argmax(v: &[f32]) -> Token {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a })
        .0 as Token
}

/// Seconds a run took: until every user had their first token (the mean over users), and of the
/// decode steps after it.
#[derive(Clone, Copy)]
struct Times {
    first_token: f64,
    decode: f64,
}

/// Decode `TOKENS` tokens for every sequence in one batch per step (greedy), after a one-batch
/// prefill: every user's first token comes from the prefill.
fn batched(model: &Model, prompt: &[Token], plans: &[Arc<EditPlan>], threads: usize) -> Times {
    let n = plans.len();
    let mut ctx = model
        .new_context(&ContextParams {
            n_ctx: (2 * (prompt.len() + TOKENS) * n) as u32,
            n_seq: n as u32,
            n_threads: Some(threads),
            ..Default::default()
        })
        .expect("context");
    let mut rows = Vec::new();
    let mut last = Vec::new();
    for (seq, plan) in plans.iter().enumerate() {
        for (pos, &token) in prompt.iter().enumerate() {
            rows.push(BatchRow {
                token,
                pos,
                seq: seq as i32,
                output: pos + 1 == prompt.len(),
                plan: plan.clone(),
            });
        }
        last.push(rows.len() - 1);
    }
    let arrived = Instant::now();
    ctx.decode_rows(&rows).expect("prefill");
    let mut next: Vec<Token> = last
        .iter()
        .map(|&r| argmax(ctx.row_logits(r).unwrap()))
        .collect();
    let first_token = arrived.elapsed().as_secs_f64();
    let start = Instant::now();
    for step in 0..TOKENS {
        let rows: Vec<BatchRow> = plans
            .iter()
            .enumerate()
            .map(|(seq, plan)| BatchRow {
                token: next[seq],
                pos: prompt.len() + step,
                seq: seq as i32,
                output: true,
                plan: plan.clone(),
            })
            .collect();
        ctx.decode_rows(&rows).expect("decode");
        next = (0..n).map(|i| argmax(ctx.row_logits(i).unwrap())).collect();
    }
    Times {
        first_token,
        decode: start.elapsed().as_secs_f64(),
    }
}

/// The same users one after another in one context: plan swapped, cache cleared, prompt read, then
/// `TOKENS` decoded. All arrive at once, so a user's first token waits for everyone served before
/// them; the decode time excludes the prompts, as in `batched`.
fn one_by_one(model: &Model, prompt: &[Token], plans: &[Arc<EditPlan>], threads: usize) -> Times {
    let mut ctx = model
        .new_context(&ContextParams {
            n_ctx: (2 * (prompt.len() + TOKENS)) as u32,
            n_threads: Some(threads),
            ..Default::default()
        })
        .expect("context");
    let mut total = 0.0;
    let mut first_tokens = 0.0;
    let arrived = Instant::now();
    for plan in plans {
        ctx.set_plan(plan.clone()).expect("plan");
        ctx.clear();
        ctx.eval(prompt, false).expect("prompt");
        let mut tok = argmax(&ctx.last_logits());
        first_tokens += arrived.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..TOKENS {
            ctx.eval(&[tok], false).expect("decode");
            tok = argmax(&ctx.last_logits());
        }
        total += start.elapsed().as_secs_f64();
    }
    Times {
        first_token: first_tokens / plans.len() as f64,
        decode: total,
    }
}

fn main() {
    let path = std::env::var_os("CHAMELEON_BENCH_MODEL").map_or_else(
        || chameleon::paths::fetched_model("smollm2-135m"),
        Into::into,
    );
    chameleon::llm::set_verbose(false);
    let model = Model::load(&path, &ModelParams::default()).expect("model");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let prompt = model
        .tokenize(
            &model
                .chat_prompt(None, "Plan my Saturday in the city.")
                .unwrap(),
            true,
            true,
        )
        .unwrap();
    let rounds = std::env::var("CHAMELEON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&r| r > 0)
        .unwrap_or(ROUNDS);
    let none = Arc::new(EditPlan::empty(model.n_layer(), model.n_embd()));
    println!(
        "{} decoded tokens per user, median of {rounds} rounds, {threads} threads, {}",
        TOKENS,
        path.display()
    );
    println!(
        "| users | batched, own profiles (tok/s) | vs batched, no profiles | vs one after another \
         | time to first token, batched, own / no profiles (ms) | one after another (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in [1usize, 2, 4, 8] {
        let plans: Vec<Arc<EditPlan>> = (0..n as u64).map(|u| plan(&model, u + 1)).collect();
        let nones = vec![none.clone(); n];
        let (mut own, mut plain, mut serial) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // alternate the order so drift hits every variant alike
            if round % 2 == 0 {
                own.push(batched(&model, &prompt, &plans, threads));
                plain.push(batched(&model, &prompt, &nones, threads));
                serial.push(one_by_one(&model, &prompt, &plans, threads));
            } else {
                serial.push(one_by_one(&model, &prompt, &plans, threads));
                plain.push(batched(&model, &prompt, &nones, threads));
                own.push(batched(&model, &prompt, &plans, threads));
            }
        }
        let med = |v: &[Times], f: fn(&Times) -> f64| {
            let mut v: Vec<f64> = v.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let decode = |t: &Times| t.decode;
        let first = |t: &Times| t.first_token * 1e3;
        let tokens = (n * TOKENS) as f64;
        println!(
            "| {n} | {:.0} | {:.2}x | {:.2}x | {:.0} / {:.0} | {:.0} |",
            tokens / med(&own, decode),
            med(&plain, decode) / med(&own, decode),
            med(&serial, decode) / med(&own, decode),
            med(&own, first),
            med(&plain, first),
            med(&serial, first),
        );
    }
}
