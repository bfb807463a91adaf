//! Several users in one batch: `Context::decode_rows` edits each token row with its own sequence's
//! plan. Checked against each sequence decoded alone, with the real model (SmolLM2, llama arch).
//!
//! A batch of several sequences is not bit-identical to one sequence alone (llama.cpp's kernels sum
//! in another order for another batch shape), so the check is two-sided: the difference with plans
//! must stay within what batching does to plain, unedited sequences (measured here, in the same
//! run), and must be far below what the plans themselves change (so a plan leaking into another
//! sequence's rows would show).

mod common;

use std::sync::Arc;

use chameleon::llm::{BatchRow, Context, ContextParams, Model, Token};
use chameleon::steer::{EditPlan, LayerEdit};

fn model() -> Model {
    Model::load(&common::smollm(), &Default::default()).unwrap()
}

fn plan(model: &Model, layers: &[usize], alpha: f32, seed: u64) -> Arc<EditPlan> {
    let d = model.n_embd();
    let edits = layers
        .iter()
        .map(|&layer| {
            LayerEdit::projection(
                layer,
                common::unit(d, seed + layer as u64),
                vec![0.0; d],
                alpha,
                0.0,
            )
        })
        .collect();
    Arc::new(EditPlan::new(model.n_layer(), d, edits).unwrap())
}

fn ctx(model: &Model, n_seq: u32) -> Context<'_> {
    model
        .new_context(&ContextParams {
            n_ctx: 2048,
            n_threads: Some(common::N_THREADS),
            n_seq,
            ..Default::default()
        })
        .unwrap()
}

/// The logits after `tokens`, decoded alone under `plan`, and after one more token, `next`.
fn solo(model: &Model, tokens: &[Token], next: Token, plan: &Arc<EditPlan>) -> [Vec<f32>; 2] {
    let mut c = ctx(model, 1);
    c.set_plan(plan.clone()).unwrap();
    c.eval(tokens, false).unwrap();
    let first = c.last_logits();
    c.eval(&[next], false).unwrap();
    [first, c.last_logits()]
}

/// The same for every prompt at once: the prompts in one batch, then one token of each sequence in
/// a batch of one row per sequence (as a server's decode steps are), each under its own plan.
fn batched(
    model: &Model,
    prompts: &[Vec<Token>],
    next: Token,
    plans: &[Arc<EditPlan>],
) -> Vec<[Vec<f32>; 2]> {
    let mut c = ctx(model, prompts.len() as u32);
    let mut rows = Vec::new();
    let mut last = Vec::new();
    for (seq, (tokens, plan)) in prompts.iter().zip(plans).enumerate() {
        for (pos, &token) in tokens.iter().enumerate() {
            rows.push(BatchRow {
                token,
                pos,
                seq: seq as i32,
                output: pos + 1 == tokens.len(),
                plan: plan.clone(),
            });
        }
        last.push(rows.len() - 1);
    }
    c.decode_rows(&rows).unwrap();
    let first: Vec<Vec<f32>> = last
        .iter()
        .map(|&row| c.row_logits(row).unwrap().to_vec())
        .collect();
    let step: Vec<BatchRow> = prompts
        .iter()
        .zip(plans)
        .enumerate()
        .map(|(seq, (tokens, plan))| BatchRow {
            token: next,
            pos: tokens.len(),
            seq: seq as i32,
            output: true,
            plan: plan.clone(),
        })
        .collect();
    c.decode_rows(&step).unwrap();
    first
        .into_iter()
        .enumerate()
        .map(|(i, f)| [f, c.row_logits(i).unwrap().to_vec()])
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Decode `prompts` alone and together, plain and under `plans`, and compare (see the module doc).
fn check(m: &Model, prompts: &[Vec<Token>], plans: &[Arc<EditPlan>]) {
    let none = Arc::new(EditPlan::empty(m.n_layer(), m.n_embd()));
    // the same next token for every sequence keeps the inputs of both runs identical
    let next = m.tokenize(" The", false, false).unwrap()[0];

    // what batching alone does: the same sequences, unedited
    let plain_solo: Vec<[Vec<f32>; 2]> = prompts.iter().map(|p| solo(m, p, next, &none)).collect();
    let nones = vec![none.clone(); prompts.len()];
    let plain_batch = batched(m, prompts, next, &nones);
    let rounding = |step: usize| {
        plain_solo
            .iter()
            .zip(&plain_batch)
            .map(|(a, b)| max_diff(&a[step], &b[step]))
            .fold(0.0, f32::max)
    };

    let edited_solo: Vec<[Vec<f32>; 2]> = prompts
        .iter()
        .zip(plans)
        .map(|(p, plan)| solo(m, p, next, plan))
        .collect();
    let edited_batch = batched(m, prompts, next, plans);
    for step in 0..2 {
        let bound = rounding(step);
        for (i, (s, b)) in edited_solo.iter().zip(&edited_batch).enumerate() {
            let gap = max_diff(&s[step], &b[step]);
            let effect = max_diff(&s[step], &plain_solo[i][step]);
            eprintln!(
                "step {step}, sequence {i}: batched vs alone {gap:.5}, plain batching {bound:.5}, \
                 plan effect {effect:.3}"
            );
            // within twice what batching does to plain sequences (a floor for a batch that happens to
            // round identically)
            assert!(
                gap <= (2.0 * bound).max(1e-3),
                "step {step}, sequence {i}: {gap} vs {bound}"
            );
            if !plans[i].is_empty() {
                // the plan matters far more than the batching, so a plan on the wrong rows would show
                assert!(
                    effect > 3.0 * gap.max(bound).max(1e-3),
                    "step {step}, sequence {i}: effect {effect}, gap {gap}"
                );
            }
        }
    }
}

fn chat_tokens(m: &Model, text: &str) -> Vec<Token> {
    m.tokenize(&m.chat_prompt(None, text).unwrap(), true, true)
        .unwrap()
}

/// Three different prompts, two plans (the last layer among the edited: it computes only the rows
/// with outputs) and one unedited sequence. On SmolLM2 this batch rounds exactly as the sequences
/// alone.
#[test]
fn each_row_is_edited_with_its_own_sequences_plan() {
    let m = model();
    let prompts: Vec<Vec<Token>> = [
        "Recommend a film for tonight.",
        "What should I read next on a long train ride?",
        "Plan my Saturday.",
    ]
    .iter()
    .map(|p| chat_tokens(&m, p))
    .collect();
    let none = Arc::new(EditPlan::empty(m.n_layer(), m.n_embd()));
    let plans = [
        plan(&m, &[8, 10, 12, 29], 6.0, 1),
        plan(&m, &[10, 14, 29], 6.0, 77),
        none,
    ];
    check(&m, &prompts, &plans);
}

/// Four copies of one prompt, two users' plans and two unedited: this batch does round differently
/// from one sequence alone (measured here: under a logit), and every edited row stays within that
/// while its plan moves the logits several times further.
#[test]
fn identical_prompts_of_two_users_and_two_plain_requests() {
    let m = model();
    let p = chat_tokens(&m, "Name a film for a rainy evening.");
    let none = Arc::new(EditPlan::empty(m.n_layer(), m.n_embd()));
    let alice = plan(&m, &[10, 11, 12], 8.0, 1);
    let carol = plan(&m, &[9, 11, 13], 8.0, 40);
    check(
        &m,
        &[p.clone(), p.clone(), p.clone(), p],
        &[alice, none.clone(), carol, none],
    );
}
