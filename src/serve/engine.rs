//! The worker: one thread owns the model, its context and a store connection, and answers up to
//! `--parallel` requests at once, each in a sequence of its own, all decoded in one batch with every
//! token row edited by its own user's plan. A sequence's KV cells are computed under its plan only,
//! so states of two plans never mix.
//!
//! In-graph mode (`--apply lora`, or `auto` on a GPU, where the callback costs about 1 ms a token): a
//! profile whose edit only adds vectors (`align`/`auto` routes) runs as llama.cpp's control vector,
//! inside the graph. A control vector holds for the whole context, so a batch then carries the
//! requests of one such profile at a time; requests wait in arrival order for the running ones to
//! finish before the next profile's vector is installed. Requests without an edit, and the paper's
//! projection edits (a LoRA adapter would have to be loaded into the shared model), keep the per-row
//! callback, with no vector installed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

use super::api::Usage;
use crate::llm::{
    BatchRow, ChatMessage, ContextParams, GenerateOptions, Model, SeqSampler, TextStream, Token,
};
use crate::personalize::{Strengths, profile_plan, prompt_part_for, stored_profile};
use crate::steer::EditPlan;
use crate::store::{Owner, Store};

/// What a request asks the model.
#[derive(Debug)]
pub enum Input {
    /// Messages, through the model's chat template.
    Chat(Vec<ChatMessage>),
    /// A prompt as is.
    Raw(String),
}

/// One request, queued for the worker.
#[derive(Debug)]
pub struct Job {
    /// The user whose profile answers (an existing user), or none.
    pub user: Option<String>,
    pub input: Input,
    pub opts: GenerateOptions,
    /// Where the answer goes; a closed channel (the client left) skips or ends the job.
    pub events: mpsc::UnboundedSender<Event>,
}

/// What the worker reports about a job, in order: `Start`, any `Text`, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Start(Applied),
    Text(String),
    Done { usage: Usage, finish: &'static str },
    Failed(String),
}

/// How a request was personalised: the `chameleon` object of a response, and its
/// `x-chameleon-profile` header.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    /// The user the request was answered for.
    pub user: Option<String>,
    /// Whether the user's profile was applied.
    pub profile: bool,
    /// Whether it edited the model.
    pub edit: bool,
    /// The profile's way of answering (`align`/`auto` profiles), when it has one.
    pub way: Option<String>,
    /// Why no profile was applied, when one might have been expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Applied {
    /// The `x-chameleon-profile` header: `none`, or `user=NAME; edit=yes; way=WAY`.
    pub fn header(&self) -> String {
        match (&self.user, self.profile) {
            (Some(user), true) => {
                let mut h = format!("user={user}; edit={}", if self.edit { "yes" } else { "no" });
                if let Some(w) = &self.way {
                    h.push_str(&format!("; way={w}"));
                }
                h
            }
            _ => "none".into(),
        }
    }
}

/// Counters of the worker's batches, shown by `/health`: they prove several users shared a batch.
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches decoded.
    pub batches: AtomicU64,
    /// The most sequences one batch carried.
    pub max_sequences: AtomicU64,
    /// Times a profile's control vector was installed (in-graph mode).
    pub vector_switches: AtomicU64,
    /// Sequences running now.
    pub running: AtomicU64,
}

/// What the worker needs to start.
pub struct EngineConfig {
    pub model: Arc<Model>,
    /// The context of one sequence (`n_ctx` is per sequence).
    pub context: ContextParams,
    /// Sequences decoded together.
    pub parallel: usize,
    pub db: PathBuf,
    /// Where the store's key may be found.
    pub keys: crate::store::crypt::KeyOptions,
    pub log_prompts: bool,
    pub stats: Arc<Stats>,
    /// Run additive edits as llama.cpp's control vector, one profile per batch (module docs).
    pub in_graph: bool,
}

/// One request being answered: its sequence in the shared context.
struct Slot {
    seq: i32,
    events: mpsc::UnboundedSender<Event>,
    /// The user's edit: what the sequence's cells are computed under.
    plan: Arc<EditPlan>,
    /// In-graph mode: the edit runs as this control vector instead of per row; `None`: per row.
    vector: Option<Arc<Vec<f32>>>,
    /// Tokens to feed next: the prompt (or what is left of it), then each sampled token.
    pending: Vec<Token>,
    /// Position of the next token in the sequence.
    pos: usize,
    /// Every token fed to the sequence so far, in order (its KV cells hold exactly these).
    fed: Vec<Token>,
    /// The prompt's leading tokens taken from an earlier request's cells.
    cached: usize,
    n_prompt: usize,
    max_tokens: usize,
    generated: usize,
    sampler: SeqSampler,
    text: TextStream,
}

/// What an idle sequence's cells hold once its request is done: the tokens, computed under `plan`. A
/// later request with the same edit whose prompt starts with some of them (the next turn of a
/// conversation) continues from there instead of reading them again.
struct SeqCache {
    plan: Arc<EditPlan>,
    tokens: Vec<Token>,
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Give `slot` a sequence that no running slot uses: the idle one whose cache, computed under the
/// same edit, shares the longest prefix with its prompt (that prefix is kept and skipped, always
/// leaving one prompt token to read for the logits), else an empty one, else any (emptied).
fn place(
    slot: &mut Slot,
    running: &[Slot],
    caches: &mut [Option<SeqCache>],
    ctx: &mut crate::llm::Context<'_>,
) {
    let free: Vec<usize> = (0..caches.len())
        .filter(|&s| running.iter().all(|r| r.seq != s as i32))
        .collect();
    let best = free
        .iter()
        .filter_map(|&s| {
            let c = caches[s].as_ref()?;
            c.plan
                .same_edit(&slot.plan)
                .then(|| (s, common_prefix(&c.tokens, &slot.pending)))
        })
        .filter(|&(_, n)| n > 0)
        .max_by_key(|&(_, n)| n);
    let seq = match best {
        Some((s, n)) => {
            let keep = n.min(slot.pending.len() - 1);
            ctx.truncate_seq(s as i32, keep);
            slot.fed = slot.pending.drain(..keep).collect();
            slot.pos = keep;
            slot.cached = keep;
            s
        }
        None => {
            let s = free
                .iter()
                .copied()
                .find(|&s| caches[s].is_none())
                .or_else(|| free.first().copied())
                .unwrap_or(0);
            ctx.remove_seq(s as i32);
            s
        }
    };
    caches[seq] = None;
    slot.seq = seq as i32;
}

/// Run the worker on this thread until every sender of `jobs` is gone; once the context exists,
/// `ready` turns true and `on_ready` runs.
///
/// Continuous batching: up to `parallel` requests run at once, each in its own sequence of one
/// context; every step decodes one batch holding the next token of every running sequence and
/// chunks of new prompts, each row edited with its own user's plan ([`Context::decode_rows`]). A new
/// request joins at the next step; a finished one leaves its cells to the next request that continues
/// it under the same edit (a conversation's next turn reads only its new tokens).
///
/// # Errors
/// The context or the store cannot be opened.
pub fn run(
    config: EngineConfig,
    mut jobs: mpsc::Receiver<Job>,
    ready: Arc<AtomicBool>,
    on_ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let EngineConfig {
        model,
        context,
        parallel,
        db,
        keys,
        log_prompts,
        stats,
        in_graph,
    } = config;
    let parallel = parallel.max(1);
    let per_seq = context.n_ctx as usize;
    let params = ContextParams {
        n_ctx: context.n_ctx.saturating_mul(parallel as u32),
        n_seq: parallel as u32,
        hook: true,
        ..context
    };
    let mut ctx = model.new_context(&params)?;
    let budget = params.n_batch.clamp(1, params.n_ctx) as usize;
    let store = Store::open_with(&db, &keys)?;
    let none = Arc::new(EditPlan::empty(model.n_layer(), model.n_embd()));
    ready.store(true, Ordering::SeqCst);
    on_ready();
    let mut slots: Vec<Slot> = Vec::new();
    // admitted, waiting for the control vector of the running batch to change (in-graph mode)
    let mut held: std::collections::VecDeque<Slot> = std::collections::VecDeque::new();
    let mut installed: Option<Arc<Vec<f32>>> = None;
    let mut caches: Vec<Option<SeqCache>> = (0..parallel).map(|_| None).collect();
    let mut served = 0u64;
    let mut open = true;
    loop {
        // admit new requests: wait for one when idle, take what is queued otherwise
        while open && slots.len() + held.len() < parallel {
            let job = if slots.is_empty() && held.is_empty() {
                match jobs.blocking_recv() {
                    Some(j) => j,
                    None => {
                        open = false;
                        break;
                    }
                }
            } else {
                match jobs.try_recv() {
                    Ok(j) => j,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            if job.events.is_closed() {
                continue;
            }
            served += 1;
            let events = job.events.clone();
            match admit(
                &model,
                &ctx,
                &store,
                job,
                per_seq,
                &none,
                served,
                log_prompts,
                in_graph,
            ) {
                Ok(Some(slot)) => held.push_back(slot),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("request {served}: {e:#}");
                    let _ = events.send(Event::Failed(format!("{e:#}")));
                }
            }
        }
        held.retain(|slot| !slot.events.is_closed());
        // start the admitted requests in arrival order while they share the installed vector (or
        // none); the first that needs another waits, and so do those after it, until the running
        // requests are done and its vector can be installed
        while slots.len() < parallel
            && let Some(front) = held.front()
        {
            if front.vector != installed {
                if !slots.is_empty() {
                    break;
                }
                let vector = front.vector.clone();
                // the cells of every sequence were computed under the old vector
                if let Err(e) = ctx.set_control_vector(vector.as_deref().map(Vec::as_slice)) {
                    let slot = held.pop_front().expect("front exists");
                    eprintln!("control vector: {e}");
                    let _ = slot.events.send(Event::Failed(format!("{e}")));
                    continue;
                }
                caches.iter_mut().for_each(|c| *c = None);
                installed = vector;
                stats.vector_switches.fetch_add(1, Ordering::Relaxed);
            }
            let mut slot = held.pop_front().expect("front exists");
            place(&mut slot, &slots, &mut caches, &mut ctx);
            slots.push(slot);
        }
        if slots.is_empty() {
            if open || !held.is_empty() {
                continue;
            }
            return Ok(());
        }
        // a client that left frees its sequence
        slots.retain(|slot| {
            let gone = slot.events.is_closed();
            if gone {
                ctx.remove_seq(slot.seq);
            }
            !gone
        });
        stats.running.store(slots.len() as u64, Ordering::Relaxed);
        if slots.is_empty() {
            continue;
        }

        // one batch: the prompts still to read (prefill), or else the next token of every running
        // sequence (decode), never both, so a new prompt's many rows do not change how the running
        // sequences' single rows are computed. Either way each row is edited with its own sequence's
        // plan. llama.cpp still rounds a batch of several sequences slightly differently from one
        // alone (tests/batch.rs measures it), so a greedy answer can differ from a solo run's.
        let prefill = slots.iter().any(|s| s.pending.len() > 1);
        let mut rows = Vec::new();
        let mut out_row: Vec<Option<usize>> = vec![None; slots.len()];
        for i in 0..slots.len() {
            let slot = &mut slots[i];
            if prefill != (slot.pending.len() > 1) {
                continue;
            }
            let room = budget - rows.len();
            if room == 0 {
                break;
            }
            let take = slot.pending.len().min(room);
            slot.fed.extend_from_slice(&slot.pending[..take]);
            for (k, &token) in slot.pending[..take].iter().enumerate() {
                let last = k + 1 == slot.pending.len();
                rows.push(BatchRow {
                    token,
                    pos: slot.pos + k,
                    seq: slot.seq,
                    output: last,
                    // a vector edit is in the graph already
                    plan: if slot.vector.is_some() {
                        none.clone()
                    } else {
                        slot.plan.clone()
                    },
                });
                if last {
                    out_row[i] = Some(rows.len() - 1);
                }
            }
            slot.pos += take;
            slot.pending.drain(..take);
        }
        let sequences = rows
            .iter()
            .map(|r| r.seq)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.max_sequences.fetch_max(sequences, Ordering::Relaxed);
        if let Err(e) = ctx.decode_rows(&rows) {
            // a failed batch fails every request in it
            for slot in slots.drain(..) {
                let _ = slot.events.send(Event::Failed(format!("{e}")));
                ctx.remove_seq(slot.seq);
            }
            eprintln!("batch failed: {e}");
            continue;
        }

        // sample each sequence whose prompt is in, stream its text, retire the finished
        let mut finished = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(row) = out_row[i] else {
                continue;
            };
            let tok = ctx.sample_row(&slot.sampler, row);
            let finish = if model.is_eog(tok) {
                Some("stop")
            } else {
                slot.generated += 1;
                let (piece, stopped) = slot.text.push(&model, tok);
                if let Some(piece) = piece {
                    let _ = slot.events.send(Event::Text(piece.to_string()));
                }
                if stopped {
                    Some("stop")
                } else if slot.generated >= slot.max_tokens {
                    Some("length")
                } else {
                    slot.pending.push(tok);
                    None
                }
            };
            if let Some(finish) = finish {
                finished.push((i, finish));
            }
        }
        for (i, finish) in finished.into_iter().rev() {
            let slot = slots.swap_remove(i);
            // the cells stay, for a next turn of the same conversation under the same edit
            caches[slot.seq as usize] = Some(SeqCache {
                plan: slot.plan.clone(),
                tokens: slot.fed,
            });
            let (rest, _, tokens) = slot.text.finish();
            if !rest.is_empty() {
                let _ = slot.events.send(Event::Text(rest));
            }
            let _ = slot.events.send(Event::Done {
                usage: Usage::new(slot.n_prompt, tokens.len()).cached(slot.cached),
                finish,
            });
        }
        stats.running.store(slots.len() as u64, Ordering::Relaxed);
    }
}

/// Prepare a job: its user's plan and prompt (its sequence is chosen by [`place`]); `None` when it is answered at once
/// (`max_tokens` 0). The `Start` event is sent here.
#[allow(clippy::too_many_arguments)]
fn admit(
    model: &Model,
    ctx: &crate::llm::Context<'_>,
    store: &Store,
    job: Job,
    per_seq: usize,
    none: &Arc<EditPlan>,
    n: u64,
    log_prompts: bool,
    in_graph: bool,
) -> anyhow::Result<Option<Slot>> {
    let mut applied = Applied {
        user: job.user.clone(),
        ..Applied::default()
    };
    let mut part = None;
    let mut plan = none.clone();
    if let Some(name) = &job.user {
        match stored_profile(store, model, &Owner::User(name.clone()))? {
            None => applied.note = Some("the user has no profile for this model".into()),
            Some(profile) => {
                let p = profile_plan(&profile, &Strengths::default())?;
                applied.profile = true;
                applied.edit = !p.is_empty();
                part = prompt_part_for(store, model, name, &profile, None)?;
                applied.way = part.as_ref().map(|p| p.way().name());
                plan = Arc::new(p);
            }
        }
    }
    let prompt = match job.input {
        Input::Raw(text) => text,
        Input::Chat(mut messages) => {
            // the way's history block and insight go in the last user turn, as its policy was scored
            if let (Some(part), Some(last)) =
                (&part, messages.iter_mut().rev().find(|m| m.role == "user"))
            {
                last.content = part.content(&last.content);
            }
            model.apply_chat_template(&messages, true)?
        }
    };
    let tokens = ctx.tokenize_prompt(&prompt)?;
    if tokens.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    if tokens.len() >= per_seq {
        anyhow::bail!(
            "the prompt has {} tokens; a request's context holds {per_seq} (`--ctx`)",
            tokens.len()
        );
    }
    let who = job.user.as_deref().unwrap_or("-");
    if log_prompts {
        eprintln!("request {n} for {who}: {prompt:?}");
    } else {
        eprintln!("request {n} for {who}: {}", applied.header());
    }
    let _ = job.events.send(Event::Start(applied));
    let max_tokens = job.opts.max_tokens.min(per_seq - tokens.len());
    if max_tokens == 0 {
        let _ = job.events.send(Event::Done {
            usage: Usage::new(tokens.len(), 0),
            finish: "length",
        });
        return Ok(None);
    }
    let vector = if in_graph && plan.adds() && !plan.projects() {
        plan.control_vector().map(Arc::new)
    } else {
        None
    };
    Ok(Some(Slot {
        seq: 0,
        events: job.events,
        plan,
        vector,
        n_prompt: tokens.len(),
        pending: tokens,
        pos: 0,
        fed: Vec::new(),
        cached: 0,
        max_tokens,
        generated: 0,
        sampler: SeqSampler::new(
            &GenerateOptions {
                logit_bias: part.as_ref().map(|p| p.logit_bias()).unwrap_or_default(),
                bias_until_used: true,
                ..job.opts.clone()
            },
            model.info().n_vocab,
        ),
        text: TextStream::new(&job.opts.stop),
    }))
}
