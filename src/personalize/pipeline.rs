//! The pipeline end to end: from a user's stored history to a stored profile.
//!
//! Stage by stage (method.md): select the k most representative items (PCA over the model's own
//! mean-pooled embeddings), write a personal and a neutral insight, answer queries twice (personalised and
//! neutral), capture the pooled MLP outputs of every pair text at every layer, fit per-layer directions
//! (SVD for `p`, CCS for `n`), choose the layers, store the profile.
//!
//! Every prompt of one user starts with the same history block, so the block is read once and its KV
//! cache reused for the insights, every answer and every capture ([`Context::load_prefix`]). Insights and
//! pairs are stored as they are made, keyed by model fingerprint, prompt version and history hash: an
//! interrupted fit resumes where it stopped, and a re-run reuses them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::fit::{FitError, fit_all, select_layers};
use super::params::{
    FitParams, LayerChoice, Mode, PairAnswers, Pooling, Route, check_params, mid_band,
};
use super::prompts::{self, Item, PROMPT_VERSION, TaskFamily};
use super::select::{SelectError, select_representative};
use crate::llm::{CaptureRequest, Context, ContextParams, GenerateOptions, LlmError, Model, Token};
use crate::steer::{EditPlan, PlanError};
use crate::store::{
    HistoryId, HistoryItem, InsightKey, InsightKind, LayerDirections, ModelIdentity, Owner, Pair,
    PairKey, Profile, Store, StoreError, User, history_hash, unix_now,
};

/// How stage 1 embeds an item (`input`, newline, `output`; mean-pooled over the model's last layer),
/// stored with the embedding; change it when that changes.
const EMBED_METHOD: &str = "item-mean-v1";

/// Items embedded between two writes to the store.
const EMBED_BATCH: usize = 16;

/// The version of the fit's own rules (which queries make pairs, how directions are found), recorded
/// with each profile: the evaluation refits profiles of another version. 2: queries are tried until
/// `max_queries` pairs differ. 3: free-text pair answers are tidied and a pair whose personalised reply
/// is no answer is dropped ([`prompts::free_text_answer`], [`prompts::no_answer`]); the other families'
/// stored pairs are read again as they are, so their refits give the profiles they had. 4: a neutral
/// insight that is a refusal is read as the generic behaviour ([`prompts::settled_insight`]), so the
/// pairs of the users that had one are written again (their key holds the insights' text); the other
/// users' refits give the profiles they had. 5: a query shown with two histories makes two stored
/// pairs ([`pair_hashes`]); before, the store kept only the last, so a refit could find fewer pairs
/// that differ than the fit that wrote them. 6: a free-text personalised reply that opens with the
/// tweet's @handles and then declines is no answer too, and stored pairs are read by the current rule.
/// 7: real-answer profiles record the `words` bias ([`super::align::word_bias`]). 8: that bias counts
/// both spellings of an answer's tokens (a reply's first word has no space before it), and the policy
/// scores each way on the prompt it is applied with (no answer lead). 9: the policy scores free text
/// by ROUGE-1 of each way's generated answer (it was the likelihood alone), and an `auto` fit builds
/// only what its chosen way uses (no direction for a prompt way or `words`). 10: the `words` bias
/// holds only until its token is in the reply ([`crate::llm::GenerateOptions::bias_until_used`]), where
/// it is applied and where the policy scores it. (Version 10 also covers the policy's per-family
/// reference, `words@2` for labels: the scores and profiles are those of before, only the way decided
/// from the scores differs, and a policy decided so records its `family`.)
pub const FIT_VERSION: u32 = 10;

/// Offline queries tried per wanted pair, at most: a model that answers a query the same way with and
/// without the insight gives a pair that is dropped, and the next query is tried instead.
const QUERY_TRIES: usize = 2;

/// Where one offline pair query comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuerySource {
    /// The i-th history item that stage 1 did not select; the selected items are the history.
    Unselected(usize),
    /// The i-th selected item; the other selected items are the history.
    LeaveOneOut(usize),
}

/// The offline queries in the order they are tried (method.md stage 3): the unselected items first, then
/// each selected item left out of the history (when at least one other item remains as history).
pub(super) fn query_plan(n_unselected: usize, n_selected: usize) -> Vec<QuerySource> {
    let leave_one_out = if n_selected >= 2 { n_selected } else { 0 };
    (0..n_unselected)
        .map(QuerySource::Unselected)
        .chain((0..leave_one_out).map(QuerySource::LeaveOneOut))
        .collect()
}

/// Errors of a fit.
#[derive(Debug, thiserror::Error)]
pub enum PersonalizeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("user `{0}` has no history")]
    NoHistory(String),
    #[error("group `{0}` has no members")]
    EmptyGroup(String),
    #[error(
        "only {got} usable pairs for `{owner}` (pairs whose two answers are identical or empty are dropped); at least 2 are needed"
    )]
    TooFewPairs { owner: String, got: usize },
    #[error(
        "only {got} of {tried} history items of `{owner}` have a model answer that differs from the user's; at least 2 are needed"
    )]
    TooFewContrasts {
        owner: String,
        got: usize,
        tried: usize,
    },
    #[error("invalid fit parameters: {0}")]
    Params(String),
    #[error("interrupted; what was generated so far is stored and the next run resumes from it")]
    Interrupted,
}

impl PersonalizeError {
    /// A `hint:` line for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            PersonalizeError::Store(e) => e.hint(),
            PersonalizeError::Llm(e) => e.hint(),
            PersonalizeError::NoHistory(u) => Some(format!(
                "add items with `chameleon history add --user {u} ...` or `chameleon history import --user {u} FILE`"
            )),
            PersonalizeError::TooFewPairs { .. } => Some(
                "add more history items (each unselected item is a query), raise `--max-queries`, or use a \
                 larger model: small models often give the same answer whatever they are told about the user"
                    .into(),
            ),
            PersonalizeError::TooFewContrasts { .. } => Some(
                "add more history items (up to `--max-queries` are read): where the model already \
                 answers as the user does, there is nothing to align"
                    .into(),
            ),
            PersonalizeError::EmptyGroup(g) => Some(format!(
                "add members with `chameleon group add {g} USER...`"
            )),
            _ => None,
        }
    }
}

/// Tokens the model read or wrote during a fit.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TokenCounts {
    /// History-block tokens evaluated (once per distinct history thanks to prefix reuse).
    pub prefix: usize,
    /// Prompt tokens evaluated after a prefix.
    pub suffix: usize,
    /// Tokens generated.
    pub generated: usize,
    /// Tokens evaluated for captures (after the prefix).
    pub captured: usize,
    /// History-block tokens that re-reading the block for every prompt and capture would have cost.
    pub prefix_without_reuse: usize,
}

impl TokenCounts {
    /// Everything processed.
    pub fn total(&self) -> usize {
        self.prefix + self.suffix + self.generated + self.captured
    }

    /// What the same fit would process without prefix reuse.
    pub fn total_without_reuse(&self) -> usize {
        self.prefix_without_reuse + self.suffix + self.generated + self.captured
    }
}

/// What a fit did.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// Whose profile.
    pub owner: String,
    /// Layers chosen for editing.
    pub selected_layers: Vec<usize>,
    /// Usable pairs the directions were fitted on.
    pub pairs: usize,
    /// Pairs dropped because both answers were identical.
    pub dropped_pairs: usize,
    /// Insights and pairs found in the store instead of generated.
    pub reused: usize,
    /// History items embedded now (stage 1); the others' embeddings came from the store.
    pub embedded: usize,
    /// Token counts.
    pub tokens: TokenCounts,
    /// Seconds per stage.
    pub seconds: Vec<(String, f64)>,
    /// `--route auto`: the way chosen and every candidate's held-out scores, so a user sees why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::policy::Policy>,
}

/// One user's prepared material: the selected history, insights, pairs.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub(super) family: TaskFamily,
    /// The dominant task kind of the history (labels come from it).
    pub(super) kind: String,
    pub(super) selected: Vec<HistoryItem>,
    /// Per pair: the history it was generated with (indices into `selected`), and the pair.
    pub(super) pairs: Vec<(Vec<usize>, Pair)>,
}

/// What every way of answering for one user builds on: the selected history and the personal insight
/// (stages 1 and 2). The evaluation uses it to give every method the same prompt.
#[derive(Debug, Clone)]
pub struct Material {
    /// The task family of the user's history.
    pub family: TaskFamily,
    /// The k representative items, in history order.
    pub selected: Vec<HistoryItem>,
    /// What characterises the user (stage 2).
    pub personal_insight: String,
}

/// Per layer, a text's pooled MLP output and the MLP-output norm of each of its answer's tokens.
pub(super) type PooledAndNorms = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Runs fits for one model and one store.
pub struct Personalizer<'a> {
    pub(super) model: &'a Model,
    pub(super) store: &'a Store,
    ctx: Context<'a>,
    embedder: Option<Context<'a>>,
    ctx_params: ContextParams,
    interrupt: Option<Arc<AtomicBool>>,
    progress: bool,
    pub(super) tokens: TokenCounts,
    pub(super) reused: usize,
    pub(super) embedded: usize,
    /// The prefix currently in `ctx`'s KV cache.
    loaded_prefix: Option<Vec<Token>>,
    /// Seconds spent per stage of `prepare` (select, insights, pairs), summed over users.
    pub(super) stage_secs: [f64; 3],
    /// Reuse the history block's KV cache across prompts (off only to measure what reuse saves).
    prefix_reuse: bool,
    /// Write a line per group member to stderr as its pairs are ready (for logs, where bars are hidden).
    member_lines: bool,
    /// The newest history items a fit leaves out (a policy choice scores on them).
    pub(super) hold_out: usize,
    /// Logit bias of the following generations and scores (a policy scoring the `words` way).
    pub(super) bias: Vec<(crate::llm::Token, f32)>,
    /// Seconds of the last policy choice: its fit on the history before the held-out items, and the
    /// candidates' scores on them.
    pub(super) policy_secs: [f64; 2],
    /// Where the current stage's bar is shown to another thread (a server's fit state).
    progress_slot: Option<ProgressSlot>,
}

/// The bar of the stage a fit is in, readable from another thread: its message is the stage, its
/// position and length the progress through it.
pub type ProgressSlot = Arc<std::sync::Mutex<Option<ProgressBar>>>;

impl<'a> Personalizer<'a> {
    /// A personalizer on `model`, storing into `store`.
    ///
    /// # Errors
    /// When the context cannot be created.
    pub fn new(
        model: &'a Model,
        store: &'a Store,
        ctx_params: ContextParams,
    ) -> Result<Self, PersonalizeError> {
        let ctx = model.new_context(&ctx_params)?;
        Ok(Personalizer {
            model,
            store,
            ctx,
            embedder: None,
            ctx_params,
            interrupt: None,
            progress: true,
            tokens: TokenCounts::default(),
            reused: 0,
            embedded: 0,
            loaded_prefix: None,
            stage_secs: [0.0; 3],
            prefix_reuse: true,
            member_lines: false,
            hold_out: 0,
            bias: Vec::new(),
            policy_secs: [0.0; 2],
            progress_slot: None,
        })
    }

    /// Stop cleanly at the next step when `flag` becomes true (Ctrl-C).
    pub fn with_interrupt(mut self, flag: Arc<AtomicBool>) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Re-read the history block for every prompt and capture instead of reusing its KV cache. Same
    /// results up to float rounding, more tokens; for benchmarks.
    pub fn with_prefix_reuse(mut self, on: bool) -> Self {
        self.prefix_reuse = on;
        self
    }

    /// Write one line to stderr per group member when its pairs are ready, also without progress bars
    /// (default: only with them). A new member takes minutes, and a log file shows no bar.
    pub fn with_member_lines(mut self, on: bool) -> Self {
        self.member_lines = on;
        self
    }

    /// Show progress bars on stderr (default: on; hidden anyway when stderr is not a terminal).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Keep each stage's bar in `slot` as the stage starts, for a reader on another thread.
    pub fn with_progress_slot(mut self, slot: ProgressSlot) -> Self {
        self.progress_slot = Some(slot);
        self
    }

    pub(super) fn check_interrupt(&self) -> Result<(), PersonalizeError> {
        if self
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            return Err(PersonalizeError::Interrupted);
        }
        Ok(())
    }

    pub(super) fn bar(&self, len: usize, msg: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(
            Some(len as u64),
            if self.progress {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(msg.to_string());
        if let Some(slot) = &self.progress_slot
            && let Ok(mut current) = slot.lock()
        {
            *current = Some(bar.clone());
        }
        bar
    }

    pub(super) fn identity(&self) -> Result<ModelIdentity, PersonalizeError> {
        Ok(ModelIdentity {
            fingerprint: self.model.fingerprint()?.to_string(),
            n_layer: self.model.n_layer(),
            hidden: self.model.n_embd(),
        })
    }

    /// Fit one user's profile and store it.
    ///
    /// # Errors
    /// See [`PersonalizeError`].
    pub fn fit_user(
        &mut self,
        name: &str,
        params: &FitParams,
    ) -> Result<FitReport, PersonalizeError> {
        let user = self.store.require_user(name)?;
        self.fit(Owner::User(name.to_string()), &[user], params)
    }

    /// Fit one profile on the pooled pairs of every member of a group, and store it as the group's.
    ///
    /// # Errors
    /// See [`PersonalizeError`].
    pub fn fit_group(
        &mut self,
        group: &str,
        params: &FitParams,
    ) -> Result<FitReport, PersonalizeError> {
        let members = self.store.group_members(group)?;
        if members.is_empty() {
            return Err(PersonalizeError::EmptyGroup(group.to_string()));
        }
        self.fit(Owner::Group(group.to_string()), &members, params)
    }

    /// Stages 1 and 2 for one user (reusing stored insights): the selected history and the insights.
    ///
    /// # Errors
    /// See [`PersonalizeError`].
    pub fn material(
        &mut self,
        name: &str,
        params: &FitParams,
    ) -> Result<Material, PersonalizeError> {
        let user = self.store.require_user(name)?;
        let (prep, insights, _) = self.prepare_material(&user, params, false)?;
        let [personal_insight, _] = insights;
        Ok(Material {
            family: prep.family,
            selected: prep.selected,
            personal_insight,
        })
    }

    fn fit(
        &mut self,
        owner: Owner,
        users: &[User],
        params: &FitParams,
    ) -> Result<FitReport, PersonalizeError> {
        let (report, profile) = self.fit_unsaved(owner.clone(), users, params)?;
        self.store.save_profile(&owner, &profile)?;
        Ok(report)
    }

    /// A fit whose profile is returned, not stored (insights and answers are stored as they are made).
    pub(super) fn fit_unsaved(
        &mut self,
        owner: Owner,
        users: &[User],
        params: &FitParams,
    ) -> Result<(FitReport, Profile), PersonalizeError> {
        check_params(params, self.model.n_layer())?;
        self.tokens = TokenCounts::default();
        self.reused = 0;
        self.embedded = 0;
        match params.route {
            Route::Align => return self.fit_align(owner, users, params),
            Route::Auto => return self.fit_auto(owner, users, params),
            Route::Paper => {}
        }
        let ccs = params.ccs.clone().check()?;
        let mut seconds = Vec::new();
        let n_layer = self.model.n_layer();
        let layers: Vec<usize> = (0..n_layer).collect();

        // stages 1-3 per user
        self.stage_secs = [0.0; 3];
        let mut prepared = Vec::with_capacity(users.len());
        // a line per member (between the per-user bars, which are cleared by then)
        let member_lines = users.len() > 1 && (self.member_lines || self.progress);
        let started = Instant::now();
        for (i, user) in users.iter().enumerate() {
            let prep = self.prepare(user, params)?;
            if member_lines {
                let differ = prep.pairs.iter().filter(|(_, p)| p.differs()).count();
                eprintln!(
                    "{owner}: member {}/{} ({}) ready, {differ} of {} pairs differ, {:.0} s",
                    i + 1,
                    users.len(),
                    user.name,
                    prep.pairs.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            prepared.push((user, prep));
        }
        for (name, secs) in ["select", "insights", "pairs"].iter().zip(self.stage_secs) {
            seconds.push((name.to_string(), secs));
        }

        // stage 4: capture
        let t = Instant::now();
        let total: usize = prepared.iter().map(|(_, p)| p.pairs.len()).sum();
        let bar = self.bar(total, "capture");
        let mut personal: Vec<Vec<Vec<f32>>> = vec![Vec::new(); n_layer];
        let mut neutral: Vec<Vec<Vec<f32>>> = vec![Vec::new(); n_layer];
        let mut dropped = 0;
        for (_, prep) in &prepared {
            for (hist, pair) in &prep.pairs {
                bar.inc(1);
                if !pair.differs() {
                    dropped += 1;
                    continue;
                }
                self.check_interrupt()?;
                let (prefix, query) = self.pair_prompt(prep, hist, &pair.query, None)?;
                self.ensure_prefix(&prefix)?;
                let vp = self.capture_answer(&query, &pair.personal, &layers, params.pooling)?;
                let vn = self.capture_answer(&query, &pair.neutral, &layers, params.pooling)?;
                for l in 0..n_layer {
                    personal[l].push(vp[l].clone());
                    neutral[l].push(vn[l].clone());
                }
            }
        }
        bar.finish_and_clear();
        let usable = personal[0].len();
        if usable < 2 {
            return Err(PersonalizeError::TooFewPairs {
                owner: owner.to_string(),
                got: usable,
            });
        }
        seconds.push(("capture".to_string(), t.elapsed().as_secs_f64()));

        // stages 4-5: directions and layers
        let t = Instant::now();
        let bar = self.bar(1, "fit");
        let fits = fit_all(&personal, &neutral, params.personal_direction, &ccs)?;
        bar.finish_and_clear();
        let losses: Vec<f32> = fits.iter().map(|f| f.ccs_loss).collect();
        let selected = match &params.layers {
            LayerChoice::Auto => select_layers(&losses, None),
            LayerChoice::Max(n) => select_layers(&losses, Some(*n)),
            LayerChoice::Mid(n) => {
                let band = mid_band(n_layer);
                let masked: Vec<f32> = losses
                    .iter()
                    .enumerate()
                    .map(|(l, &x)| if band.contains(&l) { x } else { f32::NAN })
                    .collect();
                select_layers(&masked, Some(*n))
            }
            LayerChoice::List(l) => {
                let mut l = l.clone();
                l.sort_unstable();
                l.dedup();
                l
            }
        };
        seconds.push(("fit".to_string(), t.elapsed().as_secs_f64()));

        let profile = Profile {
            model: self.identity()?,
            selected_layers: selected.clone(),
            layers: fits
                .into_iter()
                .enumerate()
                .map(|(layer, f)| LayerDirections {
                    layer,
                    p: f.personal,
                    n: f.generic,
                    ccs_loss: f.ccs_loss,
                })
                .collect(),
            params: serde_json::json!({
                "fit": params,
                "prompt_version": PROMPT_VERSION,
                "fit_version": FIT_VERSION,
                "pairs": usable,
                "members": users.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
            }),
            created: unix_now(),
        };
        let report = FitReport {
            owner: owner.to_string(),
            selected_layers: selected,
            pairs: usable,
            dropped_pairs: dropped,
            reused: self.reused,
            embedded: self.embedded,
            tokens: self.tokens,
            seconds,
            policy: None,
        };
        Ok((report, profile))
    }

    /// Stages 1-3 for one user, reusing what the store has.
    fn prepare(&mut self, user: &User, params: &FitParams) -> Result<Prepared, PersonalizeError> {
        let (mut prep, insights, rest) = self.prepare_material(user, params, true)?;
        let fingerprint = self.model.fingerprint()?.to_string();
        let hash = history_hash(&prep.selected);
        let all: Vec<usize> = (0..prep.selected.len()).collect();
        let labels = prompts::labels_for_kind(&prep.kind);

        // stage 3: queries and pairs; a query is stored as the text the model is shown
        let t = Instant::now();
        let candidates: Vec<(Vec<usize>, String)> = query_plan(rest.len(), prep.selected.len())
            .into_iter()
            .map(|source| match source {
                QuerySource::Unselected(i) => (
                    all.clone(),
                    prompts::item_query(prep.family, &rest[i], labels),
                ),
                QuerySource::LeaveOneOut(i) => (
                    all.iter().copied().filter(|&j| j != i).collect(),
                    prompts::item_query(prep.family, &prep.selected[i], labels),
                ),
            })
            .collect();
        let mut online_queries: Vec<(Vec<usize>, String)> = Vec::new();
        if params.mode == Mode::Online {
            // requests being answered now are shown as they are
            for q in &params.online_queries {
                online_queries.push((all.clone(), q.clone()));
            }
        }
        let pair_key = PairKey {
            user: user.id,
            fingerprint,
            prompt_version: PROMPT_VERSION,
            history_hash: pair_cache_key(
                &hash,
                params.answer_tokens,
                params.pair_answers,
                prep.family,
                &insights,
            ),
        };
        let queries: Vec<&(Vec<usize>, String)> =
            candidates.iter().chain(&online_queries).collect();
        let keys: Vec<PairKey> = pair_hashes(&pair_key.history_hash, &queries, all.len())
            .into_iter()
            .map(|history_hash| PairKey {
                history_hash,
                ..pair_key.clone()
            })
            .collect();
        let mut stored: HashMap<String, HashMap<String, Pair>> = HashMap::new();
        for key in &keys {
            if !stored.contains_key(&key.history_hash) {
                let pairs = self.store.pairs(key)?;
                stored.insert(
                    key.history_hash.clone(),
                    pairs.into_iter().map(|p| (p.query.clone(), p)).collect(),
                );
            }
        }
        let n_candidates = candidates.len();
        let tries = candidates.len().min(params.max_queries * QUERY_TRIES);
        let bar = self.bar(tries + online_queries.len(), "pairs");
        let mut usable = 0;
        let offline = candidates
            .into_iter()
            .zip(&keys)
            .take(tries)
            .map(|(q, k)| (q, k, true));
        let online = online_queries
            .into_iter()
            .zip(&keys[n_candidates..])
            .map(|(q, k)| (q, k, false));
        for ((hist, query), key, is_offline) in offline.chain(online) {
            // offline queries until `max_queries` pairs differ or the tries run out; every online query
            if is_offline && usable == params.max_queries {
                continue;
            }
            let pair = if let Some(p) = stored[&key.history_hash].get(&query) {
                self.reused += 1;
                let mut p = p.clone();
                // stored under an earlier rule: read as it would be written now
                if prep.family == TaskFamily::FreeText && prompts::no_answer(&p.personal) {
                    p.personal.clear();
                }
                p
            } else {
                self.check_interrupt()?;
                let (prefix, personal_suffix) = self.pair_prompt(
                    &prep,
                    &hist,
                    &query,
                    Some(&prompts::personalised_instruction(&insights[0])),
                )?;
                self.ensure_prefix(&prefix)?;
                let mut personal = self.pair_answer(&prep, labels, &personal_suffix, params)?;
                if prep.family == TaskFamily::FreeText && prompts::no_answer(&personal) {
                    personal.clear(); // the pair is dropped ([`prompts::no_answer`])
                }
                self.check_interrupt()?;
                let (_, neutral_suffix) = self.pair_prompt(
                    &prep,
                    &hist,
                    &query,
                    Some(&prompts::neutral_instruction(&insights[1])),
                )?;
                let neutral = self.pair_answer(&prep, labels, &neutral_suffix, params)?;
                let (personal, neutral) = match params.pair_answers {
                    PairAnswers::Label => (personal, neutral),
                    PairAnswers::Reasoned => prompts::reasoned_pair(personal, neutral),
                };
                let pair = Pair {
                    query,
                    personal,
                    neutral,
                };
                self.store.put_pair(key, &pair)?;
                stored
                    .get_mut(&key.history_hash)
                    .expect("every key looked up")
                    .insert(pair.query.clone(), pair.clone());
                pair
            };
            usable += usize::from(pair.differs());
            prep.pairs.push((hist, pair));
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.stage_secs[2] += t.elapsed().as_secs_f64();
        Ok(prep)
    }

    /// One answer of a pair, after the prompt `suffix` (which holds the instruction and the query). Both
    /// answers start with the same lead (a tag, a rating), so only what follows it differs; with
    /// [`PairAnswers::Reasoned`] the model then goes on after "{answer}, because".
    pub(super) fn pair_answer(
        &mut self,
        prep: &Prepared,
        labels: Option<&[&str]>,
        suffix: &str,
        params: &FitParams,
    ) -> Result<String, PersonalizeError> {
        let lead = prompts::answer_lead(prep.family);
        let reply = self.generate_text(&format!("{suffix}{lead}"), params.answer_tokens)?;
        let answer = prompts::pair_answer(prep.family, labels, &reply);
        if params.pair_answers == PairAnswers::Label
            || prep.family == TaskFamily::FreeText
            || answer.is_empty()
        {
            return Ok(answer);
        }
        let so_far = format!("{suffix}{lead} {answer}{}", prompts::REASON_LEAD);
        let reason = self.generate_text(&so_far, params.answer_tokens)?;
        Ok(prompts::reasoned_answer(&answer, &reason, labels))
    }

    /// Stages 1 and 2 for one user: the prepared material without pairs, the personal insight and,
    /// with `neutral` (the paper's pairs), the neutral one, and the items that were not selected
    /// (offline queries).
    pub(super) fn prepare_material(
        &mut self,
        user: &User,
        params: &FitParams,
        neutral: bool,
    ) -> Result<(Prepared, [String; 2], Vec<HistoryItem>), PersonalizeError> {
        let mut history = self.store.history(user.id)?;
        // the newest items held out by a policy choice are not seen
        history.truncate(history.len().saturating_sub(self.hold_out));
        if history.is_empty() {
            return Err(PersonalizeError::NoHistory(user.name.clone()));
        }
        let kind = dominant_kind(&history);
        let family = TaskFamily::from_kind(&kind);

        // stage 1: representative items
        let t = Instant::now();
        let mut chosen: Vec<usize> = if history.len() <= params.k {
            (0..history.len()).collect()
        } else {
            let emb = self.item_embeddings(&history)?;
            select_representative(&emb, params.k)?
        };
        chosen.sort_unstable(); // history order

        let selected: Vec<HistoryItem> = chosen.iter().map(|&i| history[i].clone()).collect();
        let rest: Vec<&HistoryItem> = (0..history.len())
            .filter(|i| !chosen.contains(i))
            .map(|i| &history[i])
            .collect();
        let fingerprint = self.model.fingerprint()?.to_string();
        let hash = history_hash(&selected);
        let all: Vec<usize> = (0..selected.len()).collect();
        self.stage_secs[0] += t.elapsed().as_secs_f64();

        // stage 2: insights, with the whole selected history
        let t = Instant::now();
        let prep = Prepared {
            family,
            kind,
            selected,
            pairs: Vec::new(),
        };
        // the neutral insight only the paper's pairs read; left empty for the other routes
        let mut insights = [String::new(), String::new()];
        let kinds: &[InsightKind] = if neutral {
            &[InsightKind::Personal, InsightKind::Neutral]
        } else {
            &[InsightKind::Personal]
        };
        let bar = self.bar(kinds.len(), "insights");
        for (slot, &kind) in kinds.iter().enumerate() {
            let key = InsightKey {
                user: user.id,
                fingerprint: fingerprint.clone(),
                kind,
                prompt_version: PROMPT_VERSION,
                history_hash: insight_cache_key(&hash, params.insight_tokens),
            };
            if let Some(text) = self.store.insight(&key)? {
                self.reused += 1;
                insights[slot] = prompts::settled_insight(kind, family, &text);
            } else {
                self.check_interrupt()?;
                let request = match kind {
                    InsightKind::Personal => prompts::personal_insight_request(family),
                    InsightKind::Neutral => prompts::neutral_insight_request(family),
                };
                let (prefix, suffix) = self.split(&prep, &all, &request)?;
                self.ensure_prefix(&prefix)?;
                // the reply starts with the insight's lead; the model writes the rest
                let lead = prompts::insight_lead(kind);
                let rest = self.generate_text(&format!("{suffix}{lead}"), params.insight_tokens)?;
                let text = prompts::tidy_insight(kind, family, &format!("{lead}{rest}"));
                self.store.put_insight(&key, &text)?;
                insights[slot] = text;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.stage_secs[1] += t.elapsed().as_secs_f64();

        let rest = rest.into_iter().cloned().collect();
        Ok((prep, insights, rest))
    }

    /// `(prefix, suffix)` of the chat whose user turn is the history block (items `hist` of `prep`)
    /// followed by `after`.
    fn split(
        &self,
        prep: &Prepared,
        hist: &[usize],
        after: &str,
    ) -> Result<(String, String), PersonalizeError> {
        let items: Vec<&HistoryItem> = hist.iter().map(|&i| &prep.selected[i]).collect();
        Ok(user_prompt(self.model, prep.family, &items, after)?)
    }

    /// The prompt of one query (as stored: the text the model is shown): `instruction` (personalised or
    /// neutral) before the query, or none for the capture texts, which show both answers in the same
    /// neutral context.
    pub(super) fn pair_prompt(
        &self,
        prep: &Prepared,
        hist: &[usize],
        query: &str,
        instruction: Option<&str>,
    ) -> Result<(String, String), PersonalizeError> {
        let after = format!("{}{query}", instruction.unwrap_or(""));
        self.split(prep, hist, &after)
    }

    pub(super) fn ensure_prefix(&mut self, prefix: &str) -> Result<(), PersonalizeError> {
        let tokens = self.ctx.tokenize_prompt(prefix)?;
        if !self.prefix_reuse {
            // evaluated before every use instead (`read_prefix_again`)
            self.loaded_prefix = Some(tokens);
            return Ok(());
        }
        if self.loaded_prefix.as_ref() != Some(&tokens) || self.ctx.n_past() != tokens.len() {
            self.ctx.load_prefix(&tokens)?;
            self.tokens.prefix += tokens.len();
            self.loaded_prefix = Some(tokens);
        }
        Ok(())
    }

    /// Without prefix reuse, evaluate the history block again before each generation or capture.
    fn read_prefix_again(&mut self) -> Result<(), PersonalizeError> {
        if !self.prefix_reuse {
            let tokens = self.loaded_prefix.clone().unwrap_or_default();
            self.ctx.load_prefix(&tokens)?;
            self.tokens.prefix += tokens.len();
        }
        Ok(())
    }

    fn prefix_len(&self) -> usize {
        self.loaded_prefix.as_ref().map_or(0, Vec::len)
    }

    /// Install `plan` (or none) for the following generations, captures and scores; the KV cache is
    /// cleared when it was computed under another plan, and the prefix read again when next needed.
    pub(super) fn set_plan(&mut self, plan: Option<Arc<EditPlan>>) -> Result<(), PersonalizeError> {
        match plan {
            Some(p) => self.ctx.set_plan(p)?,
            None => self.ctx.clear_plan(),
        }
        Ok(())
    }

    /// [`Self::generate_text`] of `suffix`, and the mean per-token log-likelihood of `answer`
    /// teacher-forced after it, in one read of the suffix.
    pub(super) fn generate_and_score(
        &mut self,
        suffix: &str,
        max_tokens: usize,
        answer: &str,
    ) -> Result<(String, f64), PersonalizeError> {
        self.read_prefix_again()?;
        let q = self.model.tokenize(suffix, false, true)?;
        let a = self.model.tokenize(answer, false, false)?;
        let opts = GenerateOptions {
            max_tokens,
            logit_bias: self.bias.clone(),
            bias_until_used: true,
            ..Default::default()
        };
        let (g, lp) = self.ctx.generate_and_score_after_prefix(&q, &opts, &a)?;
        self.tokens.suffix += q.len();
        self.tokens.generated += g.tokens.len();
        self.tokens.captured += a.len();
        self.tokens.prefix_without_reuse += self.prefix_len();
        let mean = if lp.is_empty() {
            0.0
        } else {
            lp.iter().map(|&x| f64::from(x)).sum::<f64>() / lp.len() as f64
        };
        Ok((g.text, mean))
    }

    /// The `labels@prior` answer to `suffix` after the loaded prefix ([`super::labels::choose`]), and
    /// the mean per-token log-likelihood of `answer` teacher-forced after it, in one read of the
    /// suffix; `None` when `labels` is empty.
    pub(super) fn choose_and_score(
        &mut self,
        suffix: &str,
        labels: &[(String, usize)],
        prior: f32,
        answer: &str,
    ) -> Result<(Option<String>, f64), PersonalizeError> {
        self.read_prefix_again()?;
        let q = self.model.tokenize(suffix, false, true)?;
        let a = self.model.tokenize(answer, false, false)?;
        let (chosen, scores) = super::labels::choose(
            &mut self.ctx,
            self.model,
            &q,
            labels,
            prior,
            Some(&a),
            &self.bias,
        )?;
        self.tokens.suffix += q.len();
        self.tokens.captured += a.len();
        self.tokens.prefix_without_reuse += self.prefix_len();
        let mean = match (scores.last(), a.len()) {
            (Some(s), n) if n > 0 => s / n as f64,
            _ => 0.0,
        };
        Ok((chosen, mean))
    }

    /// Greedy continuation of `suffix` after the loaded prefix, as generated (leading space kept).
    pub(super) fn generate_text(
        &mut self,
        suffix: &str,
        max_tokens: usize,
    ) -> Result<String, PersonalizeError> {
        self.read_prefix_again()?;
        let tokens = self.model.tokenize(suffix, false, true)?;
        let opts = GenerateOptions {
            max_tokens,
            logit_bias: self.bias.clone(),
            bias_until_used: true,
            ..Default::default()
        };
        let g = self.ctx.generate_after_prefix(&tokens, &opts, |_| {})?;
        self.tokens.suffix += tokens.len();
        self.tokens.generated += g.tokens.len();
        self.tokens.prefix_without_reuse += self.prefix_len();
        Ok(g.text)
    }

    /// Pooled MLP outputs (one vector per layer) of `answer` read after the loaded prefix and `query`.
    pub(super) fn capture_answer(
        &mut self,
        query: &str,
        answer: &str,
        layers: &[usize],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, PersonalizeError> {
        Ok(self.capture_answer_norms(query, answer, layers, pooling)?.0)
    }

    /// [`Self::capture_answer`], and per layer the MLP-output norm of each of the answer's tokens.
    pub(super) fn capture_answer_norms(
        &mut self,
        query: &str,
        answer: &str,
        layers: &[usize],
        pooling: Pooling,
    ) -> Result<PooledAndNorms, PersonalizeError> {
        self.read_prefix_again()?;
        let mut tokens = self.model.tokenize(query, false, true)?;
        let start = tokens.len();
        let answer_tokens = self.model.tokenize(answer.trim(), false, false)?;
        tokens.extend_from_slice(&answer_tokens);
        let end = tokens.len();
        let cap = self.ctx.capture_after_prefix(
            &tokens,
            &CaptureRequest {
                layers: layers.to_vec(),
            },
        )?;
        self.tokens.captured += tokens.len();
        self.tokens.prefix_without_reuse += self.prefix_len();
        let range = if start < end {
            start..end
        } else {
            end - 1..end
        };
        let pooled = layers
            .iter()
            .map(|&l| match pooling {
                Pooling::Mean => cap
                    .mean(l, range.clone())
                    .expect("range inside the capture"),
                Pooling::Last => cap.last(l).expect("at least one position"),
            })
            .collect();
        let norms = layers
            .iter()
            .map(|&l| {
                range
                    .clone()
                    .filter_map(|pos| cap.row(l, pos))
                    .map(|x| crate::steer::dot(x, x).sqrt())
                    .collect()
            })
            .collect();
        Ok((pooled, norms))
    }

    /// Stage 1's embedding of every item of `history`, in order: those the store holds for this model,
    /// the rest computed and stored as they come (every [`EMBED_BATCH`] items, so an interrupted run
    /// keeps what it did).
    fn item_embeddings(
        &mut self,
        history: &[HistoryItem],
    ) -> Result<Vec<Vec<f32>>, PersonalizeError> {
        let method = format!("{}/{EMBED_METHOD}", self.model.fingerprint()?);
        let ids: Vec<HistoryId> = history.iter().map(|h| h.id).collect();
        let mut stored = self.store.embeddings(&method, &ids, self.model.n_embd())?;
        let bar = self.bar(history.len() - stored.len(), "embed");
        let mut fresh: Vec<(HistoryId, Vec<f32>)> = Vec::new();
        let mut out = Vec::with_capacity(history.len());
        for item in history {
            if let Some(v) = stored.remove(&item.id) {
                out.push(v);
                continue;
            }
            if let Err(e) = self.check_interrupt() {
                self.save_embeddings(&method, &mut fresh)?;
                return Err(e);
            }
            let v = self.embed(&format!("{}\n{}", item.input, item.output))?;
            fresh.push((item.id, v.clone()));
            self.embedded += 1;
            out.push(v);
            bar.inc(1);
            if fresh.len() >= EMBED_BATCH {
                self.save_embeddings(&method, &mut fresh)?;
            }
        }
        self.save_embeddings(&method, &mut fresh)?;
        bar.finish_and_clear();
        Ok(out)
    }

    fn save_embeddings(
        &self,
        method: &str,
        fresh: &mut Vec<(HistoryId, Vec<f32>)>,
    ) -> Result<(), PersonalizeError> {
        if !fresh.is_empty() {
            let rows: Vec<(HistoryId, &[f32])> =
                fresh.iter().map(|(id, v)| (*id, v.as_slice())).collect();
            self.store.put_embeddings(method, &rows)?;
            fresh.clear();
        }
        Ok(())
    }

    fn embed(&mut self, text: &str) -> Result<Vec<f32>, PersonalizeError> {
        if self.embedder.is_none() {
            let params = ContextParams {
                embeddings: true,
                hook: false,
                ..self.ctx_params.clone()
            };
            self.embedder = Some(self.model.new_context(&params)?);
        }
        let e = self.embedder.as_mut().expect("created above");
        Ok(e.embed(text)?)
    }
}

/// The chat prompt whose user turn is the history block of `items` followed by `after`, split into the
/// shared prefix (template start and history) and the rest. Every prompt of the pipeline and of the
/// evaluation's history methods is built here, so they all read the history the same way.
///
/// # Errors
/// [`LlmError::ChatTemplate`] when the model's template cannot render the turn.
pub fn user_prompt(
    model: &Model,
    family: TaskFamily,
    items: &[&HistoryItem],
    after: &str,
) -> Result<(String, String), LlmError> {
    let items: Vec<Item<'_>> = items
        .iter()
        .map(|h| Item {
            input: &h.input,
            output: &h.output,
        })
        .collect();
    let block = format!("{}\n", prompts::history_block(family, &items));
    prompts::split_chat(
        &block,
        after,
        |content| model.chat_prompt(None, content),
        || LlmError::ChatTemplate,
    )
}

/// The cache key of a user's insights: what the prompt showed and how long the insight may be, so a
/// fit with another `insight_tokens` writes new insights instead of reading shorter or longer ones.
fn insight_cache_key(history_hash: &str, insight_tokens: usize) -> String {
    format!("{history_hash}/insight_tokens={insight_tokens}")
}

/// The cache key of a user's pairs: what the prompts showed (history, both insights), how long an
/// answer may be, and how a reply becomes a pair answer.
fn pair_cache_key(
    history_hash: &str,
    answer_tokens: usize,
    answers: PairAnswers,
    family: TaskFamily,
    insights: &[String; 2],
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for text in insights {
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    let digest = crate::digest::hex(&h.finalize()[..8]);
    // label answers keep the key they had before reasons existed, so their stored pairs stay reused
    let form = match answers {
        PairAnswers::Label => "",
        PairAnswers::Reasoned => "/answers=reasoned",
    };
    // free-text answers are tidied, and pairs whose personalised reply is no answer dropped, since
    // version 3 was measured ([`prompts::free_text_answer`], [`prompts::no_answer`]); the other
    // families' pairs keep their key, so their stores stay reused
    let tidied = match family {
        TaskFamily::FreeText => "/free=tidy",
        TaskFamily::Classification | TaskFamily::Rating => "",
    };
    format!("{history_hash}/answer_tokens={answer_tokens}{form}{tidied}/insights={digest}")
}

/// The `history_hash` part of the cache key of each query's pair (`(history shown, query)`, `n`
/// selected items): `base`, except
/// for a query shown with more than one history (an item that is twice in the user's history, so
/// that leaving one out still shows the other; an online question that is also a history item), whose
/// pairs are as many different pairs, each stored under a key that says which history it was shown
/// with. A query keyed by its text alone kept only the last of them, so a fit read back from the
/// store used other pairs than the fit that wrote them.
pub(super) fn pair_hashes(base: &str, queries: &[&(Vec<usize>, String)], n: usize) -> Vec<String> {
    let mut histories: HashMap<&str, Vec<&[usize]>> = HashMap::new();
    for (hist, query) in queries {
        let seen = histories.entry(query.as_str()).or_default();
        if !seen.contains(&hist.as_slice()) {
            seen.push(hist);
        }
    }
    queries
        .iter()
        .map(|(hist, query)| {
            if histories[query.as_str()].len() > 1 {
                format!("{base}{}", shown_key(hist, n))
            } else {
                base.to_string()
            }
        })
        .collect()
}

/// What a pair's cache key adds when its query is shown with more than one history: which selected
/// item the history leaves out (`n` selected items in all), or none.
fn shown_key(hist: &[usize], n: usize) -> String {
    match (0..n).find(|i| !hist.contains(i)) {
        Some(left_out) if hist.len() + 1 == n => format!("/without={left_out}"),
        Some(_) => format!("/shown={hist:?}"),
        None => "/without=none".to_string(),
    }
}

pub(super) fn dominant_kind(history: &[HistoryItem]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for h in history {
        *counts.entry(h.task.as_str()).or_default() += 1;
    }
    let kind = counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(k, _)| k)
        .unwrap_or("");
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_come_from_unselected_items_then_leave_one_out() {
        use QuerySource::{LeaveOneOut as L, Unselected as U};
        assert_eq!(query_plan(2, 3), vec![U(0), U(1), L(0), L(1), L(2)]);
        assert_eq!(query_plan(0, 2), vec![L(0), L(1)]);
        // one selected item cannot be left out: there would be no history
        assert_eq!(query_plan(3, 1), vec![U(0), U(1), U(2)]);
        assert_eq!(query_plan(0, 1), vec![]);
    }

    #[test]
    fn a_query_shown_with_two_histories_gets_two_pair_keys() {
        // three selected items; items 0 and 2 are the same film (same query text), item 1 another;
        // an unselected item "u" is shown with the whole history, as is an online question "u"
        let q = |hist: &[usize], text: &str| (hist.to_vec(), text.to_string());
        let queries = [
            q(&[0, 1, 2], "u"),
            q(&[1, 2], "film"),
            q(&[0, 2], "other"),
            q(&[0, 1], "film"),
            q(&[0, 1, 2], "u"),
        ];
        let refs: Vec<_> = queries.iter().collect();
        let keys = pair_hashes("h", &refs, 3);
        // unique (query, history) pairs keep the plain key, so stores written before keep serving them
        assert_eq!(keys[0], "h");
        assert_eq!(keys[2], "h");
        assert_eq!(
            keys[4], "h",
            "the same query with the same history is the same pair"
        );
        assert_eq!(keys[1], "h/without=0");
        assert_eq!(keys[3], "h/without=2");
        assert_eq!(shown_key(&[0, 1, 2], 3), "/without=none");
        assert_eq!(shown_key(&[1], 3), "/shown=[1]");
    }

    #[test]
    fn cache_keys_follow_the_generation_settings() {
        let ins = ["likes tea".to_string(), "be neutral".to_string()];
        assert_ne!(insight_cache_key("h", 32), insight_cache_key("h", 64));
        assert_ne!(insight_cache_key("h", 32), insight_cache_key("g", 32));
        let label = PairAnswers::Label;
        const C: TaskFamily = TaskFamily::Classification;
        let k = pair_cache_key("h", 16, label, C, &ins);
        assert_eq!(k, pair_cache_key("h", 16, label, C, &ins));
        assert_ne!(k, pair_cache_key("h", 24, label, C, &ins));
        assert_ne!(k, pair_cache_key("g", 16, label, C, &ins));
        assert_ne!(k, pair_cache_key("h", 16, PairAnswers::Reasoned, C, &ins));
        let other = ["likes coffee".to_string(), "be neutral".to_string()];
        assert_ne!(k, pair_cache_key("h", 16, label, C, &other));
        // the two insights are kept apart: moving text from one to the other is another key
        let shifted = ["likes tea be".to_string(), "neutral".to_string()];
        assert_ne!(k, pair_cache_key("h", 16, label, C, &shifted));
        // label answers keep the key stores written before reasons existed hold
        assert!(k.starts_with("h/answer_tokens=16/insights="), "{k}");
        assert_eq!(k, pair_cache_key("h", 16, label, TaskFamily::Rating, &ins));
        // free-text pairs tidied by `free_text_answer` are not read from before it
        assert_ne!(
            k,
            pair_cache_key("h", 16, label, TaskFamily::FreeText, &ins)
        );
    }
}
