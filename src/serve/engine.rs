//! The worker: one thread owns the model, its context and a store connection, and answers the queued
//! requests one after another, each through its own user's profile (the edit plan is swapped per
//! request; the context clears its KV cache whenever the plan changes, so states of two plans never
//! mix).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

use super::api::Usage;
use crate::cli::generate::{prompt_part_for, stored_profile};
use crate::llm::{ChatMessage, ContextParams, GenerateOptions, Model, StopReason};
use crate::personalize::{Strengths, profile_plan};
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

/// What the worker needs to start.
pub struct EngineConfig {
    pub model: Model,
    pub context: ContextParams,
    pub db: PathBuf,
    pub log_prompts: bool,
}

/// Run the worker on this thread until every sender of `jobs` is gone; `ready` turns true once the
/// context exists.
///
/// # Errors
/// The context or the store cannot be opened.
pub fn run(
    config: EngineConfig,
    mut jobs: mpsc::Receiver<Job>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let EngineConfig {
        model,
        mut context,
        db,
        log_prompts,
    } = config;
    context.hook = true;
    let mut ctx = model.new_context(&context)?;
    let store = Store::open(&db)?;
    ready.store(true, Ordering::SeqCst);
    let mut served = 0u64;
    while let Some(job) = jobs.blocking_recv() {
        if job.events.is_closed() {
            continue;
        }
        served += 1;
        if let Err(e) = answer(&model, &mut ctx, &store, job, served, log_prompts) {
            eprintln!("request {served}: {e:#}");
        }
    }
    Ok(())
}

/// Answer one job; a failure is reported to its client and returned for the log.
fn answer(
    model: &Model,
    ctx: &mut crate::llm::Context<'_>,
    store: &Store,
    job: Job,
    n: u64,
    log_prompts: bool,
) -> anyhow::Result<()> {
    let events = job.events.clone();
    let out = (|| -> anyhow::Result<()> {
        let mut applied = Applied {
            user: job.user.clone(),
            ..Applied::default()
        };
        let mut part = None;
        let mut plan = None;
        if let Some(name) = &job.user {
            match stored_profile(store, model, &Owner::User(name.clone()))? {
                None => applied.note = Some("the user has no profile for this model".into()),
                Some(profile) => {
                    let p = profile_plan(&profile, &Strengths::default())?;
                    applied.profile = true;
                    applied.edit = !p.is_empty();
                    part = prompt_part_for(store, name, &profile, None)?;
                    applied.way = part.as_ref().map(|p| p.way().name());
                    plan = Some(Arc::new(p));
                }
            }
        }
        match plan {
            Some(p) => ctx.set_plan(p)?,
            None => ctx.clear_plan(),
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
        let who = job.user.as_deref().unwrap_or("-");
        if log_prompts {
            eprintln!("request {n} for {who}: {prompt:?}");
        } else {
            eprintln!("request {n} for {who}: {}", applied.header());
        }
        let _ = events.send(Event::Start(applied));
        let g = ctx.generate(&prompt, &job.opts, |piece| {
            let _ = events.send(Event::Text(piece.to_string()));
        })?;
        let finish = match g.stop {
            StopReason::MaxTokens => "length",
            StopReason::EndOfGeneration | StopReason::StopString => "stop",
        };
        let _ = events.send(Event::Done {
            usage: Usage::new(g.n_prompt, g.tokens.len()),
            finish,
        });
        Ok(())
    })();
    if let Err(e) = &out {
        let _ = events.send(Event::Failed(format!("{e:#}")));
    }
    out
}
