//! `chameleon eval`: every method on every question of a LaMP split, scored with LaMP's metrics.
//!
//! All methods that show history show the same k items (stage 1's selection) in the same history block
//! ([`user_prompt`]), followed by the question's input as LaMP words it:
//!
//! | method | prompt | edit |
//! |---|---|---|
//! | `instruct` | history block + input | none |
//! | `history-prompt` | LaMP's BM25-retrieved profile items folded into the input | none |
//! | `insight-prompt` | history block + personal insight + input | none |
//! | `chameleon` | as `instruct` | the user's profile (offline fit) |
//! | `chameleon-online` | as `instruct` | a profile fitted with the user's questions as extra queries |
//! | `chameleon-group` | as `instruct` | one profile fitted on train-split users |
//! | `p-only`, `n-only` | as `instruct` | the user's profile, one direction only |
//! | `other-user` | as `instruct` | the next profiled user's profile |
//! | `null-edit` | as `instruct` | the user's profile at a strength of 1e-5: steers nothing |
//! | `align` | as `instruct` | the user's real-answer direction (`--route align`), added |
//! | `align-other-user` | as `instruct` | the next aligned user's real-answer direction |
//! | `words` | as `instruct` | no edit: the user's `words` logit bias ([`WORDS_STRENGTH`]) |
//! | `words-other-user` | as `instruct` | the next aligned user's `words` bias |
//! | `auto` | the user's policy, chosen on their own held-out history | the policy's |
//! | `no-model` | no model: the profile's most frequent tag, median score, or the input itself | |
//!
//! Users, their history, insights, pairs and profiles go into the store like any user's, so a re-run
//! reuses them; every answer is stored under a key of what decided it, so a killed run resumes and an
//! added method only answers what is new.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use sha2::{Digest, Sha256};

mod label_scores;
mod policy;

use super::baseline::no_model_answer;
use super::lamp::{LampError, LampSet, Question, Task, TaskKind};
use super::method::donors;
pub use super::method::{Method, WORDS_STRENGTH};
use super::metrics::{MetricError, extract_answer, per_question, score};
use super::prompts::history_prompt;
use super::report::{EvalReport, MethodRow, Prediction, compare_with_instruct, invalid_answers};
use crate::llm::{Context, ContextParams, GenerateOptions, LlmError, Model, Token};
use crate::personalize::labels::FREQUENT_TIES;
use crate::personalize::policy::{UserContext, way_prompt};
use crate::personalize::prompts::{PROMPT_VERSION, clip_chars, personalised_instruction};
use crate::personalize::{
    FIT_VERSION, FitParams, LayerChoice, Material, Mode, PersonalizeError, Personalizer, Route,
    Strengths, Way, profile_plan, user_prompt,
};
use crate::steer::EditPlan;
use crate::store::{
    EvalAnswer, HistoryItem, NewItem, Owner, Profile, Store, StoreError, lamp_item,
};

/// Version of the evaluation's own prompts and answer handling; part of every answer's key.
pub const EVAL_VERSION: u32 = 1;

/// The log line's estimate of what is left of the per-user pass, at the pace so far (`secs` for the
/// first `done` of `of` users; a resumed run's cached users are quick, so it starts low): empty once
/// every user is done.
fn eta(secs: f64, done: usize, of: usize) -> String {
    if done == 0 || done >= of {
        return String::new();
    }
    let left = secs / done as f64 * (of - done) as f64;
    if left < 90.0 {
        format!(", about {left:.0} s to go")
    } else {
        format!(", about {:.0} min to go", left / 60.0)
    }
}

/// How many train users the group profile is fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupSize {
    /// This many, drawn with the seed.
    Count(usize),
    /// Every user of the group split.
    All,
}

impl std::str::FromStr for GroupSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(GroupSize::All),
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!(
                    "`{n}` is not a group size: give a count of at least 1, or `all`"
                )),
                Ok(n) => Ok(GroupSize::Count(n)),
            },
        }
    }
}

impl std::fmt::Display for GroupSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupSize::Count(n) => write!(f, "{n}"),
            GroupSize::All => f.write_str("all"),
        }
    }
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Directory with `<split>_questions.json` and `<split>_outputs.json`.
    pub data: PathBuf,
    /// The split answered (`dev`).
    pub split: String,
    /// The split the group profile is fitted on (`train`).
    pub group_split: String,
    /// Methods to run, in report order.
    pub methods: Vec<Method>,
    /// Answer only the first N questions of the split.
    pub limit: Option<usize>,
    /// Train users in the group profile.
    pub group_size: GroupSize,
    /// Seed of the group draw and of every fit.
    pub seed: u64,
    /// Parameters of every fit and of the history selection (`k`).
    pub fit: FitParams,
    /// Layers of the `align` methods' fits (`fit.layers` is the paper's).
    pub align_layers: LayerChoice,
    /// Most tokens per answer; by default 16 for labels, 8 for ratings, 64 for text.
    pub answer_tokens: Option<usize>,
    /// Strength of the `words` and `words-other-user` methods' bias ([`WORDS_STRENGTH`] by default).
    pub words_strength: f32,
    /// Weight of the user's answer prior added to the `words` methods' bias (0: none); the `labels`
    /// method's weight of the user's counts.
    pub prior_strength: f32,
    /// Strength of the `words` bias the `labels` method scores under (0: none).
    pub labels_words: f32,
    /// Where the `labels` method writes every question's per-answer scores (JSON lines), read three
    /// ways: after the user's prompt, after it with the request `N/A`, and after the request alone.
    pub label_scores: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
}

/// Why an evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Lamp(#[from] LampError),
    #[error(transparent)]
    Personalize(#[from] PersonalizeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("profile item {item} of question `{question}`: {problem}")]
    Item {
        question: String,
        item: usize,
        problem: String,
    },
    #[error(
        "the store already has user `{user}` with a different history ({stored} items, the data has {data})"
    )]
    HistoryMismatch {
        user: String,
        stored: usize,
        data: usize,
    },
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no methods to run")]
    NoMethods,
    #[error("no questions to answer")]
    NoQuestions,
    #[error(
        "interrupted; every answer and fit so far is stored, and the same command resumes from there"
    )]
    Interrupted,
}

impl EvalError {
    /// A `hint:` line for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            EvalError::Personalize(e) => e.hint(),
            EvalError::Store(e) => e.hint(),
            EvalError::Llm(e) => e.hint(),
            EvalError::Lamp(LampError::NotFound { .. }) => Some(
                "`--data` is a directory with `<split>_questions.json` and `<split>_outputs.json`; \
                 `chameleon-group` also needs the split named by `--group-split` (`train`)"
                    .into(),
            ),
            EvalError::Lamp(LampError::File(e)) => e.hint(),
            EvalError::HistoryMismatch { .. } => Some(
                "the data changed since the store was filled; evaluate into a fresh database with `--db PATH`"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// How a method answers a user: through an edit (a profile and the strengths to apply it with;
/// `None`: unedited), and for `auto` their policy's way and the history retrieval picks from.
#[derive(Debug, Clone, Copy, Default)]
struct Answering<'h> {
    edit: Option<(&'h Profile, Strengths)>,
    /// A profile whose `words` bias applies, and its strength.
    words: Option<(&'h Profile, f32)>,
    /// A history whose answer prior is added to the bias, and its strength.
    prior: Option<(&'h [HistoryItem], f32)>,
    /// The answers the `labels` way chooses among, and the weight of their counts.
    labels: Option<(&'h [(String, usize)], f32)>,
    way: Option<Way>,
    history: &'h [HistoryItem],
}

impl<'h> Answering<'h> {
    fn edit(edit: Option<(&'h Profile, Strengths)>) -> Self {
        Answering {
            edit,
            ..Default::default()
        }
    }
}

/// A LaMP user as the store knows them.
struct EvalUser {
    /// The question's user key.
    key: String,
    /// The store's user name.
    name: String,
    /// The user's questions (indices into the set).
    questions: Vec<usize>,
}

/// What every answer of a run shares.
struct Ask<'s> {
    set: &'s LampSet,
    task: Task,
    opts: &'s EvalOptions,
    /// The part of every answer key that all methods share.
    common: &'s serde_json::Value,
    fit: &'s FitParams,
    /// The `align` methods' fit parameters.
    align_fit: &'s FitParams,
    answer_tokens: usize,
    bar: &'s ProgressBar,
}

/// Runs an evaluation.
pub struct Evaluator<'a> {
    model: &'a Model,
    store: &'a Store,
    ctx: Context<'a>,
    personalizer: Personalizer<'a>,
    interrupt: Arc<AtomicBool>,
    progress: bool,
    fingerprint: String,
    /// Prompt tokens now in `ctx`'s KV cache.
    loaded: Vec<Token>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `model` that keeps its users, fits and answers in `store`.
    ///
    /// # Errors
    /// When a context cannot be created or the model file cannot be fingerprinted.
    pub fn new(
        model: &'a Model,
        store: &'a Store,
        ctx_params: ContextParams,
        interrupt: Arc<AtomicBool>,
        progress: bool,
    ) -> Result<Self, EvalError> {
        let ctx = model.new_context(&ctx_params)?;
        let personalizer = Personalizer::new(model, store, ctx_params)?
            .with_interrupt(interrupt.clone())
            .with_progress(false)
            .with_member_lines(progress && !std::io::stderr().is_terminal());
        Ok(Evaluator {
            model,
            store,
            ctx,
            personalizer,
            interrupt,
            progress,
            fingerprint: model.fingerprint()?.to_string(),
            loaded: Vec::new(),
        })
    }

    fn check_interrupt(&self) -> Result<(), EvalError> {
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(EvalError::Interrupted);
        }
        Ok(())
    }

    /// Run every method of `opts` on the split and score it.
    ///
    /// # Errors
    /// See [`EvalError`]; an interrupted run has stored everything it did.
    pub fn run(&mut self, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
        if opts.methods.is_empty() {
            return Err(EvalError::NoMethods);
        }
        let data = opts
            .data
            .canonicalize()
            .unwrap_or_else(|_| opts.data.clone());
        let set_name = data
            .file_name()
            .map_or_else(|| "lamp".to_string(), |n| n.to_string_lossy().into_owned());
        let mut set = LampSet::load(&data, &opts.split)?;
        if let Some(n) = opts.limit {
            set.questions.truncate(n);
        }
        if set.questions.is_empty() {
            return Err(EvalError::NoQuestions);
        }
        let task = set.task;
        let users = self.import_users(&set_name, &set)?;

        let mut methods = opts.methods.clone();
        methods.dedup();
        let total = (methods.len() * set.questions.len()) as u64;
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if self.progress {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>16} [{bar:30}] {pos}/{len} answers, {elapsed} (eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );

        // without a terminal (a log file, CI) the bar is invisible: write a line per user instead
        let log_lines = self.progress && !std::io::stderr().is_terminal();
        let started = Instant::now();
        let mut fit_secs: BTreeMap<Method, f64> = BTreeMap::new();
        let mut no_profile: BTreeMap<Method, usize> = BTreeMap::new();
        // how many users `auto` answered each way
        let mut policies: BTreeMap<String, usize> = BTreeMap::new();
        let mut fit_params = opts.fit.clone();
        fit_params.ccs.seed = opts.seed;
        fit_params.route = Route::Paper;
        let align_params = FitParams {
            route: Route::Align,
            layers: opts.align_layers.clone(),
            ..fit_params.clone()
        };

        // the group profile, fitted once on train users
        let group_profile = if methods.contains(&Method::ChameleonGroup) {
            bar.set_prefix("group fit");
            let t = Instant::now();
            let p = self.group_profile(&set_name, opts, &fit_params, &bar)?;
            *fit_secs.entry(Method::ChameleonGroup).or_default() += t.elapsed().as_secs_f64();
            p
        } else {
            None
        };

        let answer_tokens = opts.answer_tokens.unwrap_or(match task.kind() {
            TaskKind::Classification => 16,
            TaskKind::Rating => 8,
            TaskKind::Generation => 64,
        });
        let backend = self.model.gpu_backend();
        let common = answer_scope(
            &self.fingerprint,
            backend.as_deref(),
            &set_name,
            &opts.split,
            answer_tokens,
        );

        let mut predictions: BTreeMap<Method, Vec<Option<Prediction>>> = methods
            .iter()
            .map(|&m| (m, vec![None; set.questions.len()]))
            .collect();
        if log_lines && group_profile.is_some() {
            eprintln!(
                "eval: group profile ready, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        let ask = Ask {
            set: &set,
            task,
            opts,
            common: &common,
            fit: &fit_params,
            align_fit: &align_params,
            answer_tokens,
            bar: &bar,
        };
        // `frequent` (`labels` at an infinite weight, no `words`) is the count alone: no insight
        let counts_only = opts.prior_strength.is_infinite()
            && opts.labels_words == 0.0
            && opts.label_scores.is_none();
        // each user's own profiles, kept for `other-user` and `align-other-user`
        let mut own_profiles: Vec<Option<Profile>> = Vec::with_capacity(users.len());
        let mut own_aligned: Vec<Option<Profile>> = Vec::with_capacity(users.len());
        for (ui, user) in users.iter().enumerate() {
            self.check_interrupt()?;
            bar.set_message(format!("user {}", user.key));
            let needs_material = methods.iter().any(|&m| match m {
                Method::HistoryPrompt | Method::NoModel => false,
                Method::Labels | Method::LabelsOtherUser => !counts_only,
                _ => true,
            });
            let material = if needs_material {
                bar.set_prefix("insights");
                Some(self.personalizer.material(&user.name, &fit_params)?)
            } else {
                None
            };
            let user_profile = if methods.iter().any(|m| m.uses_user_profile()) {
                bar.set_prefix("fit");
                let t = Instant::now();
                let owner = Owner::User(user.name.clone());
                let p = self.profile(&owner, &fit_params)?;
                let secs = t.elapsed().as_secs_f64();
                if let Some(&m) = methods.iter().find(|m| m.uses_user_profile()) {
                    *fit_secs.entry(m).or_default() += secs;
                }
                p
            } else {
                None
            };
            let align_profile = if methods.iter().any(|m| m.uses_align_profile())
                || (methods.contains(&Method::Labels) && opts.labels_words != 0.0)
            {
                bar.set_prefix("align fit");
                let t = Instant::now();
                // one profile per owner and model: the user's own slot holds the paper's
                let group = format!("{}#align", user.name);
                self.store
                    .add_to_group(&group, std::slice::from_ref(&user.name))?;
                let p = self.profile(&Owner::Group(group), &align_params)?;
                *fit_secs.entry(Method::Align).or_default() += t.elapsed().as_secs_f64();
                p
            } else {
                None
            };
            let online_profile = if methods.contains(&Method::ChameleonOnline) {
                bar.set_prefix("online fit");
                let t = Instant::now();
                let mut params = fit_params.clone();
                params.mode = Mode::Online;
                params.online_queries = user
                    .questions
                    .iter()
                    .map(|&i| question_text(&set.questions[i]).into_owned())
                    .collect();
                let group = format!("{}#online", user.name);
                self.store
                    .add_to_group(&group, std::slice::from_ref(&user.name))?;
                let p = self.profile(&Owner::Group(group), &params)?;
                *fit_secs.entry(Method::ChameleonOnline).or_default() += t.elapsed().as_secs_f64();
                p
            } else {
                None
            };

            // the user's history as the store holds it: the prior, the labels and retrieval read it
            let history = self
                .store
                .history(self.store.require_user(&user.name)?.id)?;
            let labels = crate::personalize::labels::user_labels(&history);
            for &method in &methods {
                // answered once every user's own profile is known, below
                if matches!(
                    method,
                    Method::OtherUser
                        | Method::AlignOtherUser
                        | Method::WordsOtherUser
                        | Method::LabelsOtherUser
                ) {
                    continue;
                }
                if method == Method::Labels {
                    if let Some(path) = &opts.label_scores {
                        self.write_label_scores(&ask, user, material.as_ref(), &labels, path)?;
                    }
                    let out = predictions.get_mut(&method).expect("every method");
                    let answering = Answering {
                        labels: Some((labels.as_slice(), opts.prior_strength)),
                        words: (opts.labels_words != 0.0)
                            .then(|| align_profile.as_ref().map(|p| (p, opts.labels_words)))
                            .flatten(),
                        ..Default::default()
                    };
                    self.answer_user(&ask, method, user, material.as_ref(), answering, out)?;
                    continue;
                }
                if method == Method::Words {
                    let words = align_profile.as_ref().map(|p| (p, opts.words_strength));
                    if words.is_none() {
                        *no_profile.entry(method).or_default() += 1;
                    }
                    let out = predictions.get_mut(&method).expect("every method");
                    let answering = Answering {
                        words,
                        prior: (opts.prior_strength != 0.0)
                            .then_some((history.as_slice(), opts.prior_strength)),
                        ..Default::default()
                    };
                    self.answer_user(&ask, method, user, material.as_ref(), answering, out)?;
                    continue;
                }
                bar.set_prefix(method.name());
                // the strengths asked for, whatever a reused profile was fitted with
                let s = strengths(&fit_params);
                let only = |alpha: f32, beta: f32| Strengths {
                    alpha: Some(alpha),
                    beta: Some(beta),
                    ..s
                };
                let edit = match method {
                    Method::Instruct
                    | Method::HistoryPrompt
                    | Method::InsightPrompt
                    | Method::NoModel => None,
                    Method::Auto => {
                        let policy = self.policy(&ask, &user.name)?;
                        if log_lines {
                            eprintln!(
                                "eval: user {} chose `{}`{}",
                                user.key,
                                policy.way.name(),
                                policy
                                    .fallback
                                    .as_ref()
                                    .map_or_else(String::new, |f| format!(" ({f})"))
                            );
                        }
                        *policies.entry(policy.way.name()).or_default() += 1;
                        let way = policy.way;
                        let edit = match (way.gamma(), &align_profile) {
                            (Some(g), Some(p)) => Some((
                                p,
                                Strengths {
                                    gamma: Some(g),
                                    ..Default::default()
                                },
                            )),
                            _ => None,
                        };
                        // no direction on the whole history: the way without its edit
                        let out = predictions.get_mut(&method).expect("every method");
                        let answering = Answering {
                            labels: way.labels().map(|p| (labels.as_slice(), p)),
                            edit,
                            words: way
                                .words()
                                .filter(|_| way.reads_words())
                                .and_then(|s| align_profile.as_ref().map(|p| (p, s))),
                            prior: (way.prior() != 0.0)
                                .then_some((history.as_slice(), way.prior())),
                            way: Some(way),
                            history: &history,
                        };
                        self.answer_user(&ask, method, user, material.as_ref(), answering, out)?;
                        continue;
                    }
                    Method::Chameleon => user_profile.as_ref().map(|p| (p, s)),
                    Method::OtherUser
                    | Method::AlignOtherUser
                    | Method::WordsOtherUser
                    | Method::LabelsOtherUser => {
                        unreachable!("answered after the users' own profiles")
                    }
                    Method::Words | Method::Labels => unreachable!("answered above"),
                    Method::POnly => user_profile
                        .as_ref()
                        .map(|p| (p, only(fit_params.alpha, 0.0))),
                    Method::NOnly => user_profile
                        .as_ref()
                        .map(|p| (p, only(0.0, fit_params.beta))),
                    Method::NullEdit => {
                        let n = crate::steer::NULL_STRENGTH;
                        user_profile.as_ref().map(|p| (p, only(n, n)))
                    }
                    Method::ChameleonOnline => online_profile.as_ref().map(|p| (p, s)),
                    Method::ChameleonGroup => group_profile.as_ref().map(|p| (p, s)),
                    Method::Align => align_profile.as_ref().map(|p| (p, s)),
                };
                if method.edits() && edit.is_none() {
                    *no_profile.entry(method).or_default() += 1;
                }
                let out = predictions.get_mut(&method).expect("every method");
                self.answer_user(
                    &ask,
                    method,
                    user,
                    material.as_ref(),
                    Answering::edit(edit),
                    out,
                )?;
            }
            own_profiles.push(user_profile);
            own_aligned.push(align_profile);
            if log_lines {
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "eval: user {}/{} done ({}), {}/{} answers, {secs:.0} s{}",
                    ui + 1,
                    users.len(),
                    user.key,
                    bar.position(),
                    total,
                    eta(secs, ui + 1, users.len())
                );
            }
        }
        for (method, profiles) in [
            (Method::OtherUser, &own_profiles),
            (Method::AlignOtherUser, &own_aligned),
            (Method::WordsOtherUser, &own_aligned),
        ] {
            if !methods.contains(&method) {
                continue;
            }
            bar.set_prefix(method.name());
            let profiled: Vec<bool> = profiles.iter().map(Option::is_some).collect();
            let s = strengths(&fit_params);
            for (user, donor) in users.iter().zip(donors(&profiled)) {
                self.check_interrupt()?;
                bar.set_message(format!("user {}", user.key));
                let material = self.personalizer.material(&user.name, &fit_params)?;
                let lent = donor.and_then(|d| profiles[d].as_ref());
                if lent.is_none() {
                    *no_profile.entry(method).or_default() += 1;
                }
                // the control lends the donor's whole signal: their bias and their answers' prior
                let donor_history = match donor {
                    Some(d) if method == Method::WordsOtherUser && opts.prior_strength != 0.0 => {
                        self.store
                            .history(self.store.require_user(&users[d].name)?.id)?
                    }
                    _ => Vec::new(),
                };
                let answering = if method == Method::WordsOtherUser {
                    Answering {
                        words: lent.map(|p| (p, opts.words_strength)),
                        prior: (lent.is_some() && opts.prior_strength != 0.0)
                            .then_some((donor_history.as_slice(), opts.prior_strength)),
                        ..Default::default()
                    }
                } else {
                    Answering::edit(lent.map(|p| (p, s)))
                };
                let out = predictions.get_mut(&method).expect("every method");
                self.answer_user(&ask, method, user, Some(&material), answering, out)?;
            }
            if log_lines {
                eprintln!(
                    "eval: {} done, {}/{} answers, {:.0} s",
                    method.name(),
                    bar.position(),
                    total,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if methods.contains(&Method::LabelsOtherUser) {
            let method = Method::LabelsOtherUser;
            bar.set_prefix(method.name());
            // every user has answers to lend
            for (user, donor) in users.iter().zip(donors(&vec![true; users.len()])) {
                self.check_interrupt()?;
                // with no one to lend answers, the control is asked as `instruct` is
                let material = if counts_only && donor.is_some() {
                    None
                } else {
                    Some(self.personalizer.material(&user.name, &fit_params)?)
                };
                let lent = match donor {
                    Some(d) => crate::personalize::labels::user_labels(
                        &self
                            .store
                            .history(self.store.require_user(&users[d].name)?.id)?,
                    ),
                    None => Vec::new(),
                };
                let answering = Answering {
                    labels: donor.map(|_| (lent.as_slice(), opts.prior_strength)),
                    ..Default::default()
                };
                let out = predictions.get_mut(&method).expect("every method");
                self.answer_user(&ask, method, user, material.as_ref(), answering, out)?;
            }
        }
        bar.finish_and_clear();

        let mut rows = Vec::new();
        let mut all = Vec::new();
        let per_method: Vec<(Method, Vec<Prediction>)> = methods
            .iter()
            .map(|&method| {
                let preds = predictions
                    .remove(&method)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p.expect("every question answered"))
                    .collect();
                (method, preds)
            })
            .collect();
        let golds: Vec<&str> = set.questions.iter().map(|q| q.gold.as_str()).collect();
        let baseline = per_method
            .iter()
            .find(|(m, _)| *m == Method::Instruct)
            .map(|(_, preds)| -> Result<_, EvalError> {
                let answers: Vec<&str> = preds.iter().map(|p| p.answer.as_str()).collect();
                Ok((preds.clone(), per_question(task, &answers, &golds)?))
            })
            .transpose()?;
        for (method, preds) in per_method {
            let answers: Vec<&str> = preds.iter().map(|p| p.answer.as_str()).collect();
            let scores = score(task, &answers, &golds)?;
            let vs_instruct = match &baseline {
                Some((base, base_each)) if method != Method::Instruct => compare_with_instruct(
                    scores.named()[0].0,
                    method == Method::NoModel,
                    &preds,
                    &per_question(task, &answers, &golds)?,
                    base,
                    base_each,
                ),
                _ => None,
            };
            rows.push(MethodRow {
                method: method.name(),
                metrics: scores.named().to_vec(),
                invalid: invalid_answers(task, &answers),
                answered: preds.len(),
                seconds_per_question: preds.iter().map(|p| p.seconds).sum::<f64>()
                    / preds.len() as f64,
                fit_seconds: fit_secs.get(&method).copied().unwrap_or(0.0),
                no_profile: no_profile.get(&method).copied().unwrap_or(0),
                vs_instruct,
            });
            all.extend(preds);
        }
        Ok(EvalReport {
            set: set_name,
            split: opts.split.clone(),
            task: task.file_name(),
            model: self
                .model
                .path()
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            fingerprint: self.fingerprint.clone(),
            backend,
            questions: set.questions.len(),
            users: users.len(),
            options: serde_json::json!({
                "methods": methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
                "limit": opts.limit,
                "group_size": opts.group_size.to_string(),
                "group_split": opts.group_split,
                "seed": opts.seed,
                "answer_tokens": answer_tokens,
                "words_strength": opts.words_strength,
                // JSON has no infinity: `frequent`'s weight is written as `--prior-strength` takes it
                "prior_strength": if opts.prior_strength.is_finite() {
                    serde_json::json!(opts.prior_strength)
                } else {
                    serde_json::json!("inf")
                },
                "threads": self.ctx.n_threads(),
                "fit": fit_params,
            }),
            rows,
            policies,
            predictions: all,
        })
    }

    /// Answer `user`'s questions with `method` into `out` (indexed by question), as `answering` says,
    /// taking every answer the store already holds.
    fn answer_user(
        &mut self,
        ask: &Ask<'_>,
        method: Method,
        user: &EvalUser,
        material: Option<&Material>,
        answering: Answering<'_>,
        out: &mut [Option<Prediction>],
    ) -> Result<(), EvalError> {
        let edit = answering.edit;
        let plan = edit
            .map(|(p, s)| profile_plan(p, &s).map(Arc::new))
            .transpose()?;
        let fit = if method.uses_align_profile() {
            ask.align_fit
        } else {
            ask.fit
        };
        let words = answering.words;
        let bias = words
            .map(|(p, s)| crate::personalize::profile_words(p, s))
            .unwrap_or_default();
        let bias = match answering.prior {
            Some((history, strength)) => {
                crate::personalize::with_prior(self.model, bias, strength, history)?
            }
            None => bias,
        };
        let run = match (answering.way, edit, words) {
            // `auto` answering `none`: `instruct`'s prompt, no edit, no bias: `instruct`'s answers
            (Some(Way::None), None, None) => run_key(ask.common, Method::Instruct, ask.fit, None),
            // `auto`: the way decides the prompt, and its edit or bias (if any) the rest
            (Some(way), edit, words) => {
                let mut what = serde_json::json!({
                    "way": way,
                    "profile": edit.map(|(p, _)| p).or(words.map(|(p, _)| p)).map(profile_identity),
                });
                if way == Way::Frequent {
                    // answers stored while the model broke `frequent`'s ties are not these
                    what["ties"] = FREQUENT_TIES.into();
                }
                run_key(ask.common, method, fit, Some(&what))
            }
            (None, _, words) if answering.labels.is_some() => {
                // an infinite weight (`frequent`) has no JSON number
                let weight = answering.labels.map_or(0.0, |(_, p)| p);
                let mut what = serde_json::json!({
                    "labels": if weight.is_finite() { weight.into() } else { serde_json::json!("frequent") },
                });
                if weight.is_infinite() {
                    what["ties"] = FREQUENT_TIES.into();
                }
                if let Some((p, strength)) = words {
                    what["words"] = strength.into();
                    what["profile"] = profile_identity(p);
                }
                // the control's answers depend on whose answers were lent
                if method == Method::LabelsOtherUser {
                    what["answers"] = serde_json::json!(answering.labels.map(|(l, _)| l));
                }
                run_key(ask.common, method, fit, Some(&what))
            }
            (None, _, words) if words.is_some() || answering.prior.is_some() => {
                let mut what = serde_json::json!({});
                if let Some((p, strength)) = words {
                    what["words"] = strength.into();
                    what["profile"] = profile_identity(p);
                }
                // keyed only when asked, so that answers stored before the prior are found
                if let Some((_, prior)) = answering.prior {
                    what["first_token_prior"] = prior.into();
                }
                run_key(ask.common, method, fit, Some(&what))
            }
            (None, edit, _) => match edit {
                Some((p, _)) => run_key(ask.common, method, fit, Some(&profile_identity(p))),
                // an edited method without a profile asks `instruct`'s prompt with no edit: it is
                // `instruct`, and shares its answers instead of generating them again
                None if method.edits() => run_key(ask.common, Method::Instruct, ask.fit, None),
                None => run_key(ask.common, method, ask.fit, None),
            },
        };
        for &qi in &user.questions {
            self.check_interrupt()?;
            let q = &ask.set.questions[qi];
            let stored = if method == Method::NoModel {
                Some(EvalAnswer {
                    raw: no_model_answer(ask.task, &q.input, &q.profile),
                    seconds: 0.0,
                })
            } else {
                self.store.eval_answer(&run, &q.id)?
            };
            let answer = match stored {
                Some(a) => a,
                None => {
                    let t = Instant::now();
                    let raw = match answering.labels {
                        // `frequent` is the count alone: no prompt to read
                        Some((labels, p)) if p.is_infinite() => {
                            let chosen = crate::personalize::labels::frequent(labels);
                            chosen.unwrap_or_default().to_owned()
                        }
                        Some((labels, p)) => {
                            let (prefix, suffix) =
                                self.prompt(method, ask.task, ask.opts, material, q, &answering)?;
                            self.choose_label(&prefix, &suffix, labels, p, &bias)?
                        }
                        None => {
                            let (prefix, suffix) =
                                self.prompt(method, ask.task, ask.opts, material, q, &answering)?;
                            self.answer(plan.as_ref(), &bias, &prefix, &suffix, ask.answer_tokens)?
                        }
                    };
                    let a = EvalAnswer {
                        raw,
                        seconds: t.elapsed().as_secs_f64(),
                    };
                    self.store.put_eval_answer(&run, &q.id, &a)?;
                    a
                }
            };
            out[qi] = Some(Prediction {
                method: method.name(),
                id: q.id.clone(),
                user: user.key.clone(),
                answer: extract_answer(ask.task, &answer.raw),
                raw: answer.raw,
                gold: q.gold.clone(),
                seconds: answer.seconds,
                profiled: method.edits().then_some(edit.is_some() || words.is_some()),
            });
            ask.bar.inc(1);
        }
        Ok(())
    }

    /// Store every user of `set` with their profile items as history (once; later runs find them).
    fn import_users(&self, set_name: &str, set: &LampSet) -> Result<Vec<EvalUser>, EvalError> {
        let mut order: Vec<String> = Vec::new();
        // per user key: question indices, history items, ids of the items taken
        type Gathered = (Vec<usize>, Vec<NewItem>, Vec<String>);
        let mut by_key: BTreeMap<String, Gathered> = BTreeMap::new();
        for (qi, q) in set.questions.iter().enumerate() {
            let key = q.user_key().to_string();
            let entry = by_key.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                Default::default()
            });
            entry.0.push(qi);
            for (i, item) in q.profile.iter().enumerate() {
                if entry.2.contains(&item.id) {
                    continue;
                }
                let new = lamp_item(&item.raw).map_err(|e| EvalError::Item {
                    question: q.id.clone(),
                    item: i + 1,
                    problem: e.to_string(),
                })?;
                entry.2.push(item.id.clone());
                entry.1.push(new);
            }
        }
        let mut users = Vec::with_capacity(order.len());
        for key in order {
            let (questions, items, _) = by_key.remove(&key).expect("key from order");
            let name = format!("lamp:{set_name}/{}/{key}", set.split);
            self.ensure_user(&name, &items)?;
            users.push(EvalUser {
                key,
                name,
                questions,
            });
        }
        Ok(users)
    }

    fn ensure_user(&self, name: &str, items: &[NewItem]) -> Result<(), EvalError> {
        let user = self.store.user_or_create(name)?;
        let stored = self.store.history_len(user.id)?;
        if stored == 0 {
            self.store.add_history(user.id, items)?;
        } else if stored != items.len() {
            return Err(EvalError::HistoryMismatch {
                user: name.to_string(),
                stored,
                data: items.len(),
            });
        }
        Ok(())
    }

    /// The owner's stored profile when it was fitted with `params` and the current prompts, else a
    /// new fit.
    /// `None` when the owner's history gives fewer than 2 usable pairs: the methods that edit then
    /// answer that user unedited, and the report counts them.
    fn profile(&mut self, owner: &Owner, params: &FitParams) -> Result<Option<Profile>, EvalError> {
        let identity = crate::store::ModelIdentity {
            fingerprint: self.fingerprint.clone(),
            n_layer: self.model.n_layer(),
            hidden: self.model.n_embd(),
        };
        // alpha and beta only scale the edit when it is applied (`profile_plan` overrides them), so a
        // profile fitted with other strengths is reused, not fitted again
        let wanted = without_strengths(&serde_json::to_value(params).expect("params serialise"));
        let fresh = |p: &Profile| {
            p.params.get("fit").map(without_strengths).as_ref() == Some(&wanted)
                && p.params.get("prompt_version") == Some(&serde_json::json!(PROMPT_VERSION))
                && p.params.get("fit_version") == Some(&serde_json::json!(FIT_VERSION))
        };
        if let Some(p) = self.store.load_profile(owner, &identity)?
            && fresh(&p)
        {
            return Ok(Some(p));
        }
        let fitted = match owner {
            Owner::User(name) => self.personalizer.fit_user(name, params),
            Owner::Group(name) => self.personalizer.fit_group(name, params),
        };
        match fitted {
            Ok(_) => Ok(self.store.load_profile(owner, &identity)?),
            Err(
                PersonalizeError::TooFewPairs { .. } | PersonalizeError::TooFewContrasts { .. },
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The group profile: `group_size` users of the group split, drawn with the seed.
    fn group_profile(
        &mut self,
        set_name: &str,
        opts: &EvalOptions,
        params: &FitParams,
        bar: &ProgressBar,
    ) -> Result<Option<Profile>, EvalError> {
        let train = LampSet::load(&opts.data, &opts.group_split)?;
        let users = self.import_users(set_name, &train)?;
        let mut names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        names.sort_unstable();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
        names.shuffle(&mut rng);
        let n = match opts.group_size {
            GroupSize::Count(n) => n.min(names.len()),
            GroupSize::All => names.len(),
        };
        names.truncate(n);
        let group = format!(
            "lamp:{set_name}/{}/group-{}-seed-{}",
            opts.group_split, opts.group_size, opts.seed
        );
        self.store.add_to_group(&group, &names)?;
        bar.set_message(format!("{n} train users"));
        self.profile(&Owner::Group(group), params)
    }

    /// `(prefix, suffix)` of `method`'s prompt for `q`; the prefix is the part shared by a user's
    /// questions (empty for `history-prompt`, whose prompt is per question).
    fn prompt(
        &self,
        method: Method,
        task: Task,
        opts: &EvalOptions,
        material: Option<&Material>,
        q: &Question,
        answering: &Answering<'_>,
    ) -> Result<(String, String), EvalError> {
        let input = question_text(q);
        if let Some(way) = answering.way {
            let m = material.expect("material for every method with history");
            let user = UserContext {
                family: m.family,
                selected: &m.selected,
                history: answering.history,
                k: opts.fit.k,
                insight: &m.personal_insight,
            };
            return Ok(way_prompt(self.model, way, &user, &input)?);
        }
        if method == Method::HistoryPrompt {
            let text = history_prompt(task, &input, &q.profile, opts.fit.k);
            return Ok((String::new(), self.model.chat_prompt(None, &text)?));
        }
        let m = material.expect("material for every method with history");
        let items: Vec<_> = m.selected.iter().collect();
        let after = if method == Method::InsightPrompt {
            format!("{}{}", personalised_instruction(&m.personal_insight), input)
        } else {
            input.into_owned()
        };
        Ok(user_prompt(self.model, m.family, &items, &after)?)
    }

    /// The `labels@prior` answer to `prefix + suffix` (unedited; the prefix's KV cache reused as
    /// [`Self::answer`] reuses it); empty when the user's history gives no answer to choose.
    fn choose_label(
        &mut self,
        prefix: &str,
        suffix: &str,
        labels: &[(String, usize)],
        prior: f32,
        bias: &[(Token, f32)],
    ) -> Result<String, EvalError> {
        self.ctx.clear_plan();
        let suffix_tokens = self.load(prefix, suffix)?;
        let (chosen, _) = crate::personalize::labels::choose(
            &mut self.ctx,
            self.model,
            &suffix_tokens,
            labels,
            prior,
            None,
            bias,
        )?;
        Ok(chosen.unwrap_or_default())
    }

    /// The suffix's tokens, with `prefix` in the KV cache (read only when it is not there already).
    fn load(&mut self, prefix: &str, suffix: &str) -> Result<Vec<Token>, EvalError> {
        let (prefix_tokens, suffix_tokens) = if prefix.is_empty() {
            (Vec::new(), self.ctx.tokenize_prompt(suffix)?)
        } else {
            (
                self.ctx.tokenize_prompt(prefix)?,
                self.model.tokenize(suffix, false, true)?,
            )
        };
        if self.loaded != prefix_tokens || self.ctx.n_past() != prefix_tokens.len() {
            self.ctx.load_prefix(&prefix_tokens)?;
            self.loaded = prefix_tokens;
        }
        Ok(suffix_tokens)
    }

    /// Greedy answer to `prefix + suffix` under `plan`, reusing the prefix's KV cache when it is
    /// already loaded under the same plan.
    fn answer(
        &mut self,
        plan: Option<&Arc<EditPlan>>,
        bias: &[(crate::llm::Token, f32)],
        prefix: &str,
        suffix: &str,
        max_tokens: usize,
    ) -> Result<String, EvalError> {
        match plan {
            Some(p) => self.ctx.set_plan(p.clone())?,
            None => self.ctx.clear_plan(),
        }
        let suffix_tokens = self.load(prefix, suffix)?;
        let opts = GenerateOptions {
            max_tokens,
            logit_bias: bias.to_vec(),
            bias_until_used: true,
            ..Default::default()
        };
        let g = self
            .ctx
            .generate_after_prefix(&suffix_tokens, &opts, |_| {})?;
        Ok(g.text.trim().to_string())
    }
}

/// What every answer of a run shares in its key: the model file, the GPU it ran on (if any), the set,
/// the split and the answer length. A CPU run has no `backend` field, so the keys of answers stored
/// before it existed stay valid; a GPU's answers never serve a CPU run or another GPU's (the two
/// backends disagree on 12 of SmolLM2's 74 LaMP-2 dev answers: docs/evaluation.md).
fn answer_scope(
    fingerprint: &str,
    gpu_backend: Option<&str>,
    set: &str,
    split: &str,
    answer_tokens: usize,
) -> serde_json::Value {
    let mut common = serde_json::json!({
        "eval_version": EVAL_VERSION,
        "prompt_version": PROMPT_VERSION,
        "model": fingerprint,
        "set": set,
        "split": split,
        "answer_tokens": answer_tokens,
    });
    if let Some(b) = gpu_backend {
        common["backend"] = b.into();
    }
    common
}

/// The key of a method's answers: a hash of everything that decides them, and nothing else, so that
/// a run that changes only how profiles are fitted or applied (strengths, pairs, directions) does not
/// answer the unedited methods again.
fn run_key(
    common: &serde_json::Value,
    method: Method,
    fit: &FitParams,
    profile: Option<&serde_json::Value>,
) -> String {
    // what of the fit parameters reaches the method's prompt or edit
    let fit = match method {
        // the k selected items (history-prompt: the k items BM25 ranks highest)
        Method::Instruct | Method::HistoryPrompt => serde_json::json!({ "k": fit.k }),
        // nothing: it reads only the question
        Method::NoModel => serde_json::json!({}),
        // and the personal insight, written from them
        Method::InsightPrompt => {
            serde_json::json!({ "k": fit.k, "insight_tokens": fit.insight_tokens })
        }
        // every parameter but the strengths, which it fixes
        Method::NullEdit => {
            without_strengths(&serde_json::to_value(fit).expect("params serialise"))
        }
        // every parameter, the strength applied included (written out even at its default, which
        // may change)
        Method::Align | Method::AlignOtherUser => {
            let mut v = serde_json::to_value(fit).expect("params serialise");
            v["gamma"] = fit.gamma.into();
            v
        }
        // every parameter, the strengths applied included
        _ => serde_json::to_value(fit).expect("params serialise"),
    };
    let doc = serde_json::json!({
        "common": common,
        "method": method.name(),
        "fit": fit,
        "profile": profile,
    });
    crate::digest::hex(&Sha256::digest(doc.to_string().as_bytes()))
}

/// What decides a profile's answers: its parameters and a digest of the edit it applies (the selected
/// layers and their directions), so that a profile fitted again with other results never serves the
/// answers of the old one, and one fitted again with the same results still does.
fn profile_identity(p: &Profile) -> serde_json::Value {
    let mut h = Sha256::new();
    for l in p
        .layers
        .iter()
        .filter(|l| p.selected_layers.contains(&l.layer))
    {
        h.update((l.layer as u64).to_le_bytes());
        for x in l.p.iter().chain(&l.n) {
            h.update(x.to_le_bytes());
        }
    }
    let digest = crate::digest::hex(&h.finalize());
    serde_json::json!({ "params": p.params, "edit": digest })
}

/// The default database of evaluations: `eval.db` next to the default database, so that LaMP users
/// never mix with real ones.
pub fn default_eval_db() -> PathBuf {
    let db = crate::paths::default_db();
    db.with_file_name("eval.db")
}

/// The default predictions file: `<set>-<split>.predictions.json` in the current directory.
pub fn default_out(data: &Path, split: &str) -> PathBuf {
    let set = data
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "lamp".into());
    PathBuf::from(format!("{set}-{split}.predictions.json"))
}

/// Most characters of a question's input shown to the model. LaMP-3 reviews run to 14,000 characters,
/// more than a 4096-token context holds next to the history; the task instruction comes first in every
/// LaMP input, so cutting the end keeps it. No LaMP-2 or LaMP-7 input of the shared sets is that long.
pub const MAX_QUESTION_CHARS: usize = 3000;

/// A question's input as the model is shown it (cut to [`MAX_QUESTION_CHARS`]).
fn question_text(q: &Question) -> std::borrow::Cow<'_, str> {
    clip_chars(&q.input, MAX_QUESTION_CHARS)
}

/// The strengths `fit` asks for, applied whatever a reused profile was fitted with.
fn strengths(fit: &FitParams) -> Strengths {
    Strengths {
        alpha: Some(fit.alpha),
        beta: Some(fit.beta),
        gamma: Some(fit.gamma),
        way: None,
    }
}

/// Fit parameters without `alpha`, `beta` and `gamma`, which do not change what a fit computes.
fn without_strengths(fit: &serde_json::Value) -> serde_json::Value {
    let mut v = fit.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("alpha");
        o.remove("beta");
        o.remove("gamma");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_extrapolates_the_pace_so_far_and_ends_empty() {
        assert_eq!(eta(120.0, 2, 5), ", about 3 min to go");
        assert_eq!(eta(30.0, 1, 3), ", about 60 s to go");
        assert_eq!(eta(500.0, 5, 5), "");
        assert_eq!(eta(0.0, 0, 5), "");
    }

    #[test]
    fn run_keys_follow_only_what_decides_the_answers() {
        let common = serde_json::json!({ "set": "s" });
        let base = FitParams::default();
        let key = |m: Method, f: &FitParams| run_key(&common, m, f, None);
        let edit_only = FitParams {
            alpha: 0.5,
            personal_direction: crate::personalize::PersonalDirection::Contrast,
            pair_answers: crate::personalize::PairAnswers::Reasoned,
            max_queries: 3,
            ..base.clone()
        };
        let more_insight = FitParams {
            insight_tokens: base.insight_tokens + 1,
            ..base.clone()
        };
        let other_k = FitParams {
            k: base.k + 1,
            ..base.clone()
        };
        for m in [Method::Instruct, Method::HistoryPrompt] {
            assert_eq!(key(m, &base), key(m, &edit_only), "{}", m.name());
            assert_eq!(key(m, &base), key(m, &more_insight), "{}", m.name());
            assert_ne!(key(m, &base), key(m, &other_k), "{}", m.name());
        }
        let m = Method::InsightPrompt;
        assert_eq!(key(m, &base), key(m, &edit_only));
        assert_ne!(key(m, &base), key(m, &more_insight));
        assert_ne!(key(m, &base), key(m, &other_k));
        for m in [
            Method::Chameleon,
            Method::POnly,
            Method::NOnly,
            Method::NullEdit,
        ] {
            assert_ne!(key(m, &base), key(m, &edit_only), "{}", m.name());
        }
        // the null edit fixes its strengths: the ones asked for do not reach its answers
        let stronger = FitParams {
            alpha: 2.0,
            beta: 3.0,
            ..base.clone()
        };
        assert_eq!(
            key(Method::NullEdit, &base),
            key(Method::NullEdit, &stronger)
        );
        assert_ne!(
            key(Method::Chameleon, &base),
            key(Method::Chameleon, &stronger)
        );
        assert_ne!(
            key(Method::Instruct, &base),
            key(Method::HistoryPrompt, &base)
        );
        assert_ne!(
            key(Method::Chameleon, &base),
            run_key(
                &common,
                Method::Chameleon,
                &base,
                Some(&serde_json::json!(1))
            )
        );
    }

    #[test]
    fn group_sizes_parse() {
        assert_eq!("all".parse::<GroupSize>().unwrap(), GroupSize::All);
        assert_eq!("20".parse::<GroupSize>().unwrap(), GroupSize::Count(20));
        assert!("0".parse::<GroupSize>().is_err());
        assert!("many".parse::<GroupSize>().is_err());
    }

    #[test]
    fn invalid_answers_by_task() {
        assert_eq!(
            invalid_answers(Task::LaMP2, &["comedy", "funny", "sci-fi"]),
            Some(1)
        );
        assert_eq!(invalid_answers(Task::LaMP3, &["5", "five", "0"]), Some(2));
        assert_eq!(invalid_answers(Task::LaMP7, &["anything"]), None);
    }

    #[test]
    fn a_profile_is_identified_by_its_params_and_its_edit() {
        use crate::store::{LayerDirections, ModelIdentity};
        let layer = |layer, x: f32| LayerDirections {
            layer,
            p: vec![x, 0.0],
            n: vec![0.0, 1.0],
            ccs_loss: 0.1,
        };
        let profile = |selected: f32, other: f32, created| Profile {
            model: ModelIdentity {
                fingerprint: "f".into(),
                n_layer: 2,
                hidden: 2,
            },
            selected_layers: vec![0],
            layers: vec![layer(0, selected), layer(1, other)],
            params: serde_json::json!({"fit": 1}),
            created,
        };
        let a = profile_identity(&profile(1.0, 1.0, 5));
        // fitted again with the same result, or differing only in a layer it does not edit: same answers
        assert_eq!(a, profile_identity(&profile(1.0, 1.0, 9)));
        assert_eq!(a, profile_identity(&profile(1.0, -1.0, 5)));
        // another edit: its own answers
        assert_ne!(a, profile_identity(&profile(-1.0, 1.0, 5)));
        let mut other_params = profile(1.0, 1.0, 5);
        other_params.params = serde_json::json!({"fit": 2});
        assert_ne!(a, profile_identity(&other_params));
    }

    #[test]
    fn answers_are_scoped_to_the_gpu_and_cpu_keys_stay_as_stored() {
        let cpu = answer_scope("f", None, "s", "dev", 16);
        // the scope answers were stored under before backends were told apart: CPU keys must not move
        assert_eq!(
            cpu,
            serde_json::json!({
                "eval_version": EVAL_VERSION,
                "prompt_version": PROMPT_VERSION,
                "model": "f",
                "set": "s",
                "split": "dev",
                "answer_tokens": 16,
            })
        );
        let gpu = answer_scope("f", Some("CUDA0 (NVIDIA H200), layers -1"), "s", "dev", 16);
        let other = answer_scope("f", Some("CUDA0 (NVIDIA H100), layers -1"), "s", "dev", 16);
        let f = FitParams::default();
        let key = |c: &serde_json::Value| run_key(c, Method::Instruct, &f, None);
        assert_ne!(key(&cpu), key(&gpu));
        assert_ne!(key(&gpu), key(&other));
    }

    #[test]
    fn run_keys_separate_methods_and_profiles() {
        let c = serde_json::json!({"model": "m"});
        let f = FitParams::default();
        let a = run_key(&c, Method::Instruct, &f, None);
        assert_eq!(a, run_key(&c, Method::Instruct, &f, None));
        assert_ne!(a, run_key(&c, Method::Chameleon, &f, None));
        let p1 = serde_json::json!({"fit": 1});
        let p2 = serde_json::json!({"fit": 2});
        assert_ne!(
            run_key(&c, Method::Chameleon, &f, Some(&p1)),
            run_key(&c, Method::Chameleon, &f, Some(&p2))
        );
    }

    #[test]
    fn strengths_do_not_call_for_a_new_fit() {
        let fit = |alpha: f32, k: usize| {
            serde_json::to_value(FitParams {
                alpha,
                beta: alpha,
                k,
                ..FitParams::default()
            })
            .unwrap()
        };
        assert_eq!(
            without_strengths(&fit(0.5, 10)),
            without_strengths(&fit(1.0, 10))
        );
        assert_ne!(
            without_strengths(&fit(1.0, 5)),
            without_strengths(&fit(1.0, 10))
        );
        assert!(without_strengths(&fit(1.0, 10)).get("alpha").is_none());
    }

    #[test]
    fn method_names_match_clap() {
        use clap::ValueEnum;
        for m in Method::ALL {
            assert_eq!(m.to_possible_value().unwrap().get_name(), m.name(), "{m:?}");
        }
    }
}
