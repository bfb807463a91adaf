//! Each user's way of personalising, chosen on their own held-out history (method.md, "A policy per
//! user").
//!
//! The user's newest history items are held out (LaMP's own time split), everything is fitted on the
//! rest, and every candidate way of answering is scored on the held-out items: by the task's metric
//! on the way's own greedy reply (accuracy for labels, the absolute error for ratings, ROUGE-1 of
//! the whole reply for free text), ties broken by the mean log-likelihood of the user's real
//! output, teacher-forced, per token. Free text is scored by ROUGE, not by the likelihood: on LaMP-7
//! the direction raised the likelihood of the users' tweets while its replies lost ROUGE
//! (docs/evaluation.md, "SmolLM2-135M, LaMP-7"). The best way is kept when it beats the task
//! family's reference way (chosen on the train split: `frequent` for labels, `labels@0` for ratings,
//! `none` for free text) beyond the items' own noise; when every way scores the same, nothing is
//! personalised; in between, the reference is used, and the policy says why. [`choose`] is that
//! rule, pure; [`Personalizer::choose_policy`] scores through the model.

use serde::{Deserialize, Serialize};

use std::time::Instant;

use super::params::{FitParams, Route};
use super::pipeline::{FIT_VERSION, FitReport, PersonalizeError, Personalizer, user_prompt};
use super::prompts::PROMPT_VERSION;
use super::prompts::{self, TaskFamily};
use crate::llm::{LlmError, Model};
use crate::retrieval::{Bm25, bm25_tokens};
use crate::store::{HistoryItem, Owner, Profile, User, unix_now};

/// A way of answering for one user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "way", rename_all = "kebab-case")]
pub enum Way {
    /// No personalisation: the selected history and the request, as `instruct`.
    #[default]
    None,
    /// The personal insight before the request.
    Insight,
    /// The history items nearest the request (BM25) as the history block.
    Retrieval,
    /// The user's real-answer direction added at strength `gamma`.
    Align {
        /// Strength, in units of each layer's typical MLP-output norm.
        gamma: f32,
    },
    /// The insight before the request and the real-answer direction added.
    InsightAlign {
        /// Strength of the direction.
        gamma: f32,
    },
    /// The real-answer contrast read at the output: a logit bias toward the tokens the user's answers
    /// use and the model's own do not ([`super::align::word_bias`]), times `strength`.
    Words {
        /// Multiplies the bias (0: the prior alone, `prior@P`).
        strength: f32,
        /// Multiplies the user's answer prior added to the bias ([`super::align::history_prior`]:
        /// the log of how often their history answers each label); 0, the default, adds none.
        #[serde(default, skip_serializing_if = "is_zero")]
        prior: f32,
    },
    /// One of the answers the user's history gives (labels, ratings), the one the model finds
    /// likeliest plus `prior` times the log of how often the user gave it ([`super::labels`]);
    /// nothing is generated.
    Labels {
        /// Weight of the user's counts against the model's log-probability.
        prior: f32,
        /// Strength of the `words` bias on the logits the answers are scored with (0: none).
        #[serde(default, skip_serializing_if = "is_zero")]
        words: f32,
    },
    /// The answer the user's history gives most often, among equally frequent ones the one it gives
    /// first: the `labels` way with the counts' weight beyond any score ([`super::labels::pick`]
    /// with an infinite weight); the model is not asked.
    Frequent,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

impl Way {
    /// A short name for reports: `none`, `insight`, `retrieval`, `align@1`, `insight+align@1`,
    /// `words@2`, `prior@1`, `words@2+prior@1`, `labels@1`, `frequent`.
    pub fn name(&self) -> String {
        match self {
            Way::None => "none".into(),
            Way::Insight => "insight".into(),
            Way::Retrieval => "retrieval".into(),
            Way::Align { gamma } => format!("align@{gamma}"),
            Way::InsightAlign { gamma } => format!("insight+align@{gamma}"),
            Way::Words { strength, prior } if *prior == 0.0 => format!("words@{strength}"),
            Way::Words { strength, prior } if *strength == 0.0 => format!("prior@{prior}"),
            Way::Words { strength, prior } => format!("words@{strength}+prior@{prior}"),
            Way::Labels { prior, words } if *words == 0.0 => format!("labels@{prior}"),
            Way::Labels { prior, words } => format!("labels@{prior}+words@{words}"),
            Way::Frequent => "frequent".into(),
        }
    }

    /// The strength of the logit bias, for the `words` way (and `prior@P`, whose strength is 0) and
    /// the `labels` way (which scores its answers under it).
    pub fn words(&self) -> Option<f32> {
        match self {
            Way::Words { strength, .. } => Some(*strength),
            Way::Labels { words, .. } => Some(*words),
            _ => None,
        }
    }

    /// Whether the way reads the `words` bias its profile records (a `words` way of nonzero strength).
    pub fn reads_words(&self) -> bool {
        self.words().is_some_and(|s| s != 0.0)
    }

    /// The strength of the user's answer prior in the bias (0 for every way but `words` and `prior`).
    pub fn prior(&self) -> f32 {
        match self {
            Way::Words { prior, .. } => *prior,
            _ => 0.0,
        }
    }

    /// The weight of the user's counts, for the `labels` way (which answers with one of the user's
    /// own answers instead of generating); infinite for `frequent`.
    pub fn labels(&self) -> Option<f32> {
        match self {
            Way::Labels { prior, .. } => Some(*prior),
            Way::Frequent => Some(f32::INFINITY),
            _ => None,
        }
    }

    /// The weight of the answer prior where a reply is generated (`chat`, the server): the `prior`
    /// way's own, and a `labels` way answers as its twin `prior@P`, `frequent` as
    /// `prior@`[`FREQUENT_AS_PRIOR`].
    pub fn generated_prior(&self) -> f32 {
        match self.labels() {
            Some(p) if p.is_finite() => self.prior() + p,
            Some(_) => FREQUENT_AS_PRIOR,
            None => self.prior(),
        }
    }

    /// The strength of the edit, for ways that edit the model.
    pub fn gamma(&self) -> Option<f32> {
        match self {
            Way::Align { gamma } | Way::InsightAlign { gamma } => Some(*gamma),
            _ => None,
        }
    }

    /// Whether the way only changes the prompt (no edit, no bias, nothing chosen instead of
    /// generated): `none`, `insight`, `retrieval`.
    pub fn prompt_only(&self) -> bool {
        matches!(self, Way::None | Way::Insight | Way::Retrieval)
    }

    /// Whether the insight goes in the prompt.
    pub fn insight(&self) -> bool {
        matches!(self, Way::Insight | Way::InsightAlign { .. })
    }

    /// Whether the history block holds the retrieved items.
    pub fn retrieval(&self) -> bool {
        matches!(self, Way::Retrieval)
    }
}

impl std::str::FromStr for Way {
    type Err = String;

    /// `none`, `insight`, `retrieval`, `align@G`, `insight+align@G`, `words@S`, `prior@P`,
    /// `words@S+prior@P`, `labels@P`, `labels@P+words@S`, `frequent` (`@G` may be left out: the default strength,
    /// [`super::DEFAULT_GAMMA`]; `@S` and `@P`: 1).
    fn from_str(s: &str) -> Result<Way, String> {
        if let Some((labels, words)) = s.split_once("+words")
            && labels.starts_with("labels")
        {
            let (Way::Labels { prior, .. }, Way::Words { strength, .. }) = (
                labels.parse::<Way>()?,
                format!("words{words}").parse::<Way>()?,
            ) else {
                return Err(format!("`{s}` is not a way"));
            };
            return Ok(Way::Labels {
                prior,
                words: strength,
            });
        }
        if let Some((words, prior)) = s.split_once("+prior") {
            let (Way::Words { strength, .. }, Way::Words { prior, .. }) = (
                words.parse::<Way>()?,
                format!("prior{prior}").parse::<Way>()?,
            ) else {
                return Err(format!(
                    "`{s}` is not a way: only `words@S` takes `+prior@P`"
                ));
            };
            return Ok(Way::Words { strength, prior });
        }
        let (head, given) = match s.split_once('@') {
            Some((h, g)) => (
                h,
                Some(
                    g.parse::<f32>()
                        .ok()
                        .filter(|g| g.is_finite())
                        .ok_or_else(|| format!("`{g}` is not a strength"))?,
                ),
            ),
            None => (s, None),
        };
        let gamma = given.unwrap_or(super::DEFAULT_GAMMA);
        match head {
            "none" => Ok(Way::None),
            "insight" => Ok(Way::Insight),
            "retrieval" => Ok(Way::Retrieval),
            "align" => Ok(Way::Align { gamma }),
            "insight+align" => Ok(Way::InsightAlign { gamma }),
            "words" => Ok(Way::Words {
                strength: given.unwrap_or(1.0),
                prior: 0.0,
            }),
            "prior" => Ok(Way::Words {
                strength: 0.0,
                prior: given.unwrap_or(1.0),
            }),
            "labels" => Ok(Way::Labels {
                prior: given.unwrap_or(1.0),
                words: 0.0,
            }),
            "frequent" if given.is_none() => Ok(Way::Frequent),
            _ => Err(format!(
                "`{s}` is not a way: none, insight, retrieval, align@G, insight+align@G, words@S, \
                 prior@P, words@S+prior@P, labels@P, labels@P+words@S, frequent"
            )),
        }
    }
}

/// How a policy is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyParams {
    /// At most this many of the newest items are held out.
    pub held_out: usize,
    /// At least this many items stay to fit on.
    pub min_fit: usize,
    /// The ways compared.
    pub candidates: Vec<Way>,
    /// The reference of label tasks: the way a user of a label task is answered unless another way
    /// beats it beyond the held-out items' noise, and when too few items are held out to tell. For
    /// free text the reference is `none`. Not part of what is scored, so a cached policy can be
    /// decided again under another reference ([`Policy::decide`]).
    pub label_reference: Way,
    /// The reference of rating tasks, as [`PolicyParams::label_reference`] is of label tasks.
    #[serde(default)]
    pub rating_reference: Way,
    /// Label tasks keep their reference whatever the held-out scores say (but `none` when every way
    /// scores the same; an `auto` fit whose reference is a `words` way with no bias answers `none`):
    /// on the train split no choice made on five held-out labels beat it (docs/evaluation.md).
    pub label_keeps_reference: bool,
    /// Free text is sent only to a way that changes the prompt (`insight`, `retrieval`), and only
    /// beyond this many standard errors of the held-out items' noise: on LaMP-7's train split the
    /// direction's and the `words` ways' held-out wins lost ROUGE on the questions after them
    /// (docs/evaluation.md). 0 (policies decided before the rule): every way, at one standard error.
    #[serde(default)]
    pub free_text_margin: f64,
}

impl PolicyParams {
    /// The reference way of a task family (see [`PolicyParams::label_reference`]).
    pub fn reference(&self, family: TaskFamily) -> Way {
        match family {
            TaskFamily::Classification => self.label_reference,
            TaskFamily::Rating => self.rating_reference,
            TaskFamily::FreeText => Way::None,
        }
    }
}

/// The strength of the `words` way chosen on the train split (docs/evaluation.md: 1 / 2 / 4 / 8),
/// and label tasks' reference until `frequent` replaced it; `eval`'s `words` methods use it by default.
pub const WORDS_STRENGTH: f32 = 2.0;

/// The weight of the counts with which `frequent`, where a reply must be generated (chat, the
/// server), answers as `prior@P`: the largest weight tried on the train split, where `labels@16`
/// answered nearly as the count alone (docs/evaluation.md).
pub const FREQUENT_AS_PRIOR: f32 = 16.0;

/// The weight of the counts in rating tasks' reference way, `labels@0`: the model's choice among the
/// scores the user has given (docs/evaluation.md: chosen on the train split, where it beat `prior@1`
/// and the user's median score).
pub const RATING_REFERENCE_PRIOR: f32 = 0.0;

/// The standard errors by which a prompt way must beat `none` on free text
/// ([`PolicyParams::free_text_margin`]; docs/evaluation.md: chosen on LaMP-7's train split).
pub const FREE_TEXT_MARGIN: f64 = 2.0;

/// The candidate set and references of `fit --route auto` (docs/evaluation.md: chosen on the train
/// split).
pub fn default_policy_params(gamma: f32) -> PolicyParams {
    PolicyParams {
        held_out: 5,
        min_fit: 4,
        candidates: vec![
            Way::None,
            Way::Insight,
            Way::Retrieval,
            Way::Align { gamma: gamma / 2.0 },
            Way::Align { gamma },
            Way::Align { gamma: 2.0 * gamma },
            Way::InsightAlign { gamma },
            Way::Words {
                strength: 1.0,
                prior: 0.0,
            },
            Way::Words {
                strength: WORDS_STRENGTH,
                prior: 0.0,
            },
            Way::Words {
                strength: 4.0,
                prior: 0.0,
            },
            Way::Words {
                strength: 0.0,
                prior: 1.0,
            },
            Way::Words {
                strength: 0.0,
                prior: 2.0,
            },
            Way::Labels {
                prior: 0.0,
                words: 0.0,
            },
            Way::Labels {
                prior: 2.0,
                words: 0.0,
            },
            Way::Frequent,
        ],
        label_reference: Way::Frequent,
        rating_reference: Way::Labels {
            prior: RATING_REFERENCE_PRIOR,
            words: 0.0,
        },
        label_keeps_reference: true,
        free_text_margin: FREE_TEXT_MARGIN,
    }
}

/// One candidate's scores on the held-out items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// The way scored.
    pub way: Way,
    /// Mean task metric over the held-out items (accuracy; minus the absolute error for ratings;
    /// ROUGE-1 F for free text); `None` in policies of fit versions before 9 for free text.
    pub metric: Option<f64>,
    /// The task metric per item, in the held-out items' order.
    #[serde(default)]
    pub per_item_metric: Vec<f64>,
    /// Mean over held-out items of the per-token log-likelihood of the user's real output.
    pub log_likelihood: f64,
    /// The same per item, in the held-out items' order.
    pub per_item: Vec<f64>,
}

/// A user's chosen way and the evidence for it, stored with the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// The way chosen.
    pub way: Way,
    /// Newest history items held out to score the candidates.
    pub held_out: usize,
    /// Why the reference was kept instead of the best candidate, if it was.
    pub fallback: Option<String>,
    /// Every candidate's scores, in the order compared.
    pub scores: Vec<CandidateScore>,
    /// The task family of the user's history (policies decided before the per-family references
    /// lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<TaskFamily>,
}

impl Policy {
    /// The policy of these scores under `params`' reference for the family ([`choose`]); `history`
    /// counts the user's items, for the report when too few were held out to compare.
    pub fn decide(
        family: TaskFamily,
        history: usize,
        held_out: usize,
        scores: Vec<CandidateScore>,
        params: &PolicyParams,
    ) -> Policy {
        let reference = params.reference(family);
        let (way, fallback) = if held_out < 2 {
            (
                reference,
                Some(format!(
                    "{history} history items leave {held_out} to hold out: too few to compare"
                )),
            )
        } else if family == TaskFamily::Classification && params.label_keeps_reference {
            keep(&scores, reference)
        } else if family == TaskFamily::FreeText && params.free_text_margin > 0.0 {
            choose_prompt_way(&scores, reference, params.free_text_margin)
        } else {
            choose(&scores, reference)
        };
        Policy {
            way,
            held_out,
            fallback,
            scores,
            family: Some(family),
        }
    }
}

/// The rule: rank by metric (where there is one), then log-likelihood; keep the best if it beats the
/// `reference` way beyond the held-out items' noise (the mean of the paired differences above their
/// standard error): on the metric when it is ahead there, else on the likelihood. With 5 items a
/// label task needs two answers more than the reference and none fewer, so that the best of many
/// candidates is not kept for one lucky item. When every candidate scores exactly the same, `none`
/// (nothing to gain); otherwise the reference, and why. A reference that was not scored (a `words`
/// way for a user with no bias) is `none`. Fewer than 2 held-out items: the reference.
pub fn choose(scores: &[CandidateScore], reference: Way) -> (Way, Option<String>) {
    choose_beyond(scores, reference, 1.0)
}

/// The rule for free text ([`PolicyParams::free_text_margin`]): [`choose_beyond`] among the ways that
/// only change the prompt, by `margin` standard errors; the report names a way that scored ahead of
/// every prompt way but is not one.
pub fn choose_prompt_way(
    scores: &[CandidateScore],
    reference: Way,
    margin: f64,
) -> (Way, Option<String>) {
    let prompt: Vec<CandidateScore> = scores
        .iter()
        .filter(|s| s.way.prompt_only())
        .cloned()
        .collect();
    let (way, why) = choose_beyond(&prompt, reference, margin);
    let other = best_unless_all_equal(scores)
        .filter(|b| !b.way.prompt_only())
        .filter(|b| prompt.iter().all(|p| score_key(b) > score_key(p)));
    match other {
        Some(b) => (
            way,
            Some(format!(
                "`{}` scored ahead, but free text is answered by a prompt way or none \
                 (docs/evaluation.md){}",
                b.way.name(),
                why.map_or_else(String::new, |w| format!("; {w}"))
            )),
        ),
        None => (way, why),
    }
}

/// [`choose`] with the best kept only beyond `margin` standard errors of the paired differences.
fn choose_beyond(scores: &[CandidateScore], reference: Way, margin: f64) -> (Way, Option<String>) {
    let n = scores.first().map_or(0, |s| s.per_item.len());
    if n < 2 {
        return (
            reference,
            Some(format!(
                "{n} held-out item{}: too few to compare",
                if n == 1 { "" } else { "s" }
            )),
        );
    }
    let Some(best) = best_unless_all_equal(scores) else {
        return (Way::None, None);
    };
    let Some(refs) = scores
        .iter()
        .find(|s| s.way == reference)
        .or_else(|| scores.iter().find(|s| s.way == Way::None))
    else {
        return (best.way, None);
    };
    if best.way == refs.way {
        return (refs.way, None);
    }
    let (what, (mean, se)) = if best.metric.unwrap_or(0.0) > refs.metric.unwrap_or(0.0) {
        (
            "on the task's metric",
            paired_gain(&best.per_item_metric, &refs.per_item_metric),
        )
    } else {
        (
            "in nats a token",
            paired_gain(&best.per_item, &refs.per_item),
        )
    };
    if mean > margin * se {
        (best.way, None)
    } else {
        (
            refs.way,
            Some(format!(
                "`{}` is ahead of `{}` by {mean:.3} {what}, inside its noise ({}{se:.3})",
                best.way.name(),
                refs.way.name(),
                if margin == 1.0 {
                    String::new()
                } else {
                    format!("{margin} x ")
                }
            )),
        )
    }
}

/// The rule where the reference is kept ([`PolicyParams::label_keeps_reference`]): the reference,
/// with the best candidate named when it scored ahead; `none` when every candidate scores the same.
pub fn keep(scores: &[CandidateScore], reference: Way) -> (Way, Option<String>) {
    if scores.is_empty() {
        return (reference, None);
    }
    let Some(best) = best_unless_all_equal(scores) else {
        return (Way::None, None);
    };
    let Some(refs) = scores.iter().find(|s| s.way == reference) else {
        // the held-out fit had too few items for a bias; the whole history's fit may have one (an
        // `auto` fit answers `none` when it has not)
        return (
            reference,
            Some(format!(
                "`{}` was not scored: the items before the held-out ones gave it nothing",
                reference.name()
            )),
        );
    };
    let why = (score_key(best) > score_key(refs)).then(|| {
        format!(
            "`{}` scored ahead of `{}`, but label tasks keep `{}` (docs/evaluation.md: on the \
             train split no choice on five held-out labels beat it)",
            best.way.name(),
            refs.way.name(),
            refs.way.name()
        )
    });
    (refs.way, why)
}

/// How candidates rank: by the task's metric (0 where there is none), then the log-likelihood.
fn score_key(s: &CandidateScore) -> (f64, f64) {
    (s.metric.unwrap_or(0.0), s.log_likelihood)
}

/// The best-ranked candidate ([`score_key`]; the earlier, simpler way wins a tie), or `None` when
/// there is none or every candidate ranks the same.
fn best_unless_all_equal(scores: &[CandidateScore]) -> Option<&CandidateScore> {
    let best = scores
        .iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| {
            let (ka, kb) = (score_key(a), score_key(b));
            ka.0.total_cmp(&kb.0)
                .then(ka.1.total_cmp(&kb.1))
                .then(j.cmp(i))
        })
        .map(|(_, s)| s)?;
    (!scores.iter().all(|s| score_key(s) == score_key(best))).then_some(best)
}

/// Mean and standard error of the paired differences `a - b` (0, infinity with fewer than 2 pairs).
fn paired_gain(a: &[f64], b: &[f64]) -> (f64, f64) {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = diffs.len();
    if n < 2 {
        return (0.0, f64::INFINITY);
    }
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, (var / n as f64).sqrt())
}

/// The task metric of one answer against the user's real one: 1/0 for a label, minus the absolute
/// error for a rating (an answer that is not a rating scores -4, the worst), ROUGE-1 F for free text
/// (LaMP-4..7's first metric); `None` when the real answer is not in the task's space.
pub fn item_metric(family: TaskFamily, answer: &str, real: &str) -> Option<f64> {
    match family {
        TaskFamily::Classification => Some(f64::from(u8::from(
            answer.trim().eq_ignore_ascii_case(real.trim()),
        ))),
        TaskFamily::Rating => {
            let r: f64 = real.trim().parse().ok()?;
            Some(match answer.trim().parse::<f64>() {
                Ok(a) => -(a - r).abs(),
                Err(_) => -4.0,
            })
        }
        TaskFamily::FreeText => Some(crate::rouge::rouge1(real, answer).fmeasure),
    }
}

/// The `k` items of `items` nearest `query` by BM25 over their input and output, in history order.
pub fn retrieve<'h>(items: &'h [HistoryItem], query: &str, k: usize) -> Vec<&'h HistoryItem> {
    let docs: Vec<(&str, &str)> = items
        .iter()
        .map(|h| (h.input.as_str(), h.output.as_str()))
        .collect();
    nearest(&docs, query, k)
        .into_iter()
        .map(|i| &items[i])
        .collect()
}

/// Indices of the `k` documents (input, output) nearest `query` by BM25, in their order.
fn nearest(docs: &[(&str, &str)], query: &str, k: usize) -> Vec<usize> {
    let texts: Vec<String> = docs.iter().map(|(i, o)| format!("{i} {o}")).collect();
    let corpus: Vec<Vec<&str>> = texts.iter().map(|d| bm25_tokens(d)).collect();
    let mut top = Bm25::new(&corpus).top_n(&bm25_tokens(query), k);
    top.sort_unstable();
    top
}

/// What a way's prompt may show of a user.
#[derive(Debug, Clone, Copy)]
pub struct UserContext<'h> {
    /// The task family of their history.
    pub family: TaskFamily,
    /// The representative items (stage 1), the history block of every way but retrieval.
    pub selected: &'h [HistoryItem],
    /// The items retrieval picks from.
    pub history: &'h [HistoryItem],
    /// How many items retrieval shows.
    pub k: usize,
    /// The personal insight.
    pub insight: &'h str,
}

/// `(prefix, suffix)` of a request answered the way `way` asks: the history block (the selected
/// items, or the `k` items nearest the request), the insight when the way asks for it, then the
/// request.
///
/// # Errors
/// The chat template failing.
pub fn way_prompt(
    model: &Model,
    way: Way,
    user: &UserContext<'_>,
    request: &str,
) -> Result<(String, String), LlmError> {
    user_prompt(
        model,
        user.family,
        &shown_items(way, user, request),
        &after_history(way, user, request),
    )
}

/// The user turn of [`way_prompt`] as one text: the history block, a blank line's worth of
/// separation, the insight when the way asks for it, the request.
pub fn way_content(way: Way, user: &UserContext<'_>, request: &str) -> String {
    let items: Vec<prompts::Item<'_>> = shown_items(way, user, request)
        .into_iter()
        .map(|h| prompts::Item {
            input: &h.input,
            output: &h.output,
        })
        .collect();
    format!(
        "{}\n{}",
        prompts::history_block(user.family, &items),
        after_history(way, user, request)
    )
}

fn shown_items<'h>(way: Way, user: &UserContext<'h>, request: &str) -> Vec<&'h HistoryItem> {
    if way.retrieval() {
        retrieve(user.history, request, user.k)
    } else {
        user.selected.iter().collect()
    }
}

fn after_history(way: Way, user: &UserContext<'_>, request: &str) -> String {
    if way.insight() {
        format!(
            "{}{request}",
            prompts::personalised_instruction(user.insight)
        )
    } else {
        request.to_string()
    }
}

impl Personalizer<'_> {
    /// Choose `name`'s way of answering: hold out their newest items, fit on the rest (nothing is
    /// stored but insights and answers, which later fits reuse), and score every candidate on the
    /// held-out items ([`choose`]). `params` are the real-answer fit's.
    ///
    /// # Errors
    /// See [`PersonalizeError`].
    pub fn choose_policy(
        &mut self,
        name: &str,
        params: &FitParams,
        policy: &PolicyParams,
    ) -> Result<Policy, PersonalizeError> {
        self.choose_policy_with(name, params, policy, &[])
    }

    /// [`Self::choose_policy`], taking the scores in `known` (of the same user, fit and held-out
    /// items, as an earlier choice among fewer candidates made them) instead of scoring those ways
    /// again: scoring is deterministic, so only the ways added since are read through the model.
    ///
    /// # Errors
    /// See [`PersonalizeError`].
    pub fn choose_policy_with(
        &mut self,
        name: &str,
        params: &FitParams,
        policy: &PolicyParams,
        known: &[CandidateScore],
    ) -> Result<Policy, PersonalizeError> {
        let user = self.store.require_user(name)?;
        let history = self.store.history(user.id)?;
        let family = TaskFamily::from_kind(&super::pipeline::dominant_kind(&history));
        let held_out = policy
            .held_out
            .min(history.len().saturating_sub(policy.min_fit));
        if held_out < 2 {
            return Ok(Policy::decide(
                family,
                history.len(),
                held_out,
                Vec::new(),
                policy,
            ));
        }
        self.hold_out = held_out;
        let result = self.score_candidates(name, &history, held_out, params, policy, known);
        // whatever happened, later fits see the whole history, no edit and no bias
        self.hold_out = 0;
        self.bias.clear();
        self.set_plan(None)?;
        Ok(Policy::decide(
            family,
            history.len(),
            held_out,
            result?,
            policy,
        ))
    }

    /// The `auto` route: choose the user's policy ([`Self::choose_policy`]), then fit the real-answer
    /// direction on the whole history and record the policy, and the personal insight a prompt way
    /// shows, with it.
    pub(super) fn fit_auto(
        &mut self,
        owner: Owner,
        users: &[User],
        params: &FitParams,
    ) -> Result<(FitReport, Profile), PersonalizeError> {
        let [user] = users else {
            return Err(PersonalizeError::Params(
                "a policy is chosen on one user's own history; fit a group with `--route align`"
                    .into(),
            ));
        };
        self.policy_secs = [0.0; 2];
        let mut policy =
            self.choose_policy(&user.name, params, &default_policy_params(params.gamma))?;
        let [held_out_fit, held_out_scores] = self.policy_secs;
        let align_params = FitParams {
            route: Route::Align,
            ..params.clone()
        };
        // the final fit builds what the chosen way uses: the direction (answers and activations),
        // the `words` bias (answers only), or neither (the prompt ways need the selection and the
        // insight, which the material holds)
        self.stage_secs = [0.0; 3];
        let material = self.material(&user.name, &align_params)?;
        let prompt_only = |this: &Self| -> Result<(FitReport, Profile), PersonalizeError> {
            let [select, insights, _] = this.stage_secs;
            Ok((
                this.align_report(
                    owner.clone(),
                    Vec::new(),
                    0,
                    0,
                    vec![
                        ("select".to_string(), select),
                        ("insights".to_string(), insights),
                    ],
                ),
                Profile {
                    model: this.identity()?,
                    selected_layers: Vec::new(),
                    layers: Vec::new(),
                    params: serde_json::json!({
                        "selected": material.selected.iter().map(|h| h.id.get()).collect::<Vec<_>>(),
                    }),
                    created: unix_now(),
                },
            ))
        };
        let direction = policy.way.gamma().is_some();
        let fitted = if direction || policy.way.reads_words() {
            self.fit_contrasts(owner.clone(), users, &align_params, direction)
        } else {
            prompt_only(self)
        };
        let (mut report, mut profile) = match fitted {
            Ok(fitted) => fitted,
            // the model answers as the user everywhere: no direction and no bias, only the prompt
            // ways; a `words` way (the label tasks' reference, say) has nothing to bias
            Err(PersonalizeError::TooFewContrasts { .. }) if !direction => {
                if policy.way.reads_words() {
                    // what is left of the way without the contrast's bias: its prior, if any
                    let left = match (policy.way, policy.way.prior()) {
                        (Way::Labels { prior, .. }, _) => Way::Labels { prior, words: 0.0 },
                        (_, 0.0) => Way::None,
                        (_, prior) => Way::Words {
                            strength: 0.0,
                            prior,
                        },
                    };
                    policy.fallback = Some(format!(
                        "`{}` has no bias: the model already answers as the user; `{}`",
                        policy.way.name(),
                        left.name()
                    ));
                    policy.way = left;
                }
                prompt_only(self)?
            }
            Err(e) => return Err(e),
        };
        report.seconds.splice(
            0..0,
            [
                ("held-out fit".to_string(), held_out_fit),
                ("held-out scores".to_string(), held_out_scores),
            ],
        );
        let params_json = &mut profile.params;
        params_json["fit"] = serde_json::to_value(params).expect("params serialise");
        params_json["prompt_version"] = PROMPT_VERSION.into();
        params_json["fit_version"] = FIT_VERSION.into();
        params_json["policy"] = serde_json::to_value(&policy).expect("a policy serialises");
        report.policy = Some(policy.clone());
        params_json["insight"] = material.personal_insight.into();
        params_json["k"] = params.k.into();
        Ok((report, profile))
    }

    fn score_candidates(
        &mut self,
        name: &str,
        history: &[HistoryItem],
        held_out: usize,
        params: &FitParams,
        policy: &PolicyParams,
        known: &[CandidateScore],
    ) -> Result<Vec<CandidateScore>, PersonalizeError> {
        let align_params = FitParams {
            route: Route::Align,
            ..params.clone()
        };
        let t = Instant::now();
        let material = self.material(name, &align_params)?;
        let fit_items = &history[..history.len() - held_out];
        let tests = &history[history.len() - held_out..];
        let known_score = |way: Way| {
            known
                .iter()
                .find(|k| k.way == way && k.per_item.len() == held_out)
        };
        let profile: Option<Profile> = if policy
            .candidates
            .iter()
            .filter(|w| known_score(**w).is_none())
            .any(|w| w.gamma().is_some() || w.reads_words())
        {
            let user = self.store.require_user(name)?;
            match self.fit_unsaved(Owner::User(name.to_string()), &[user], &align_params) {
                Ok((_, p)) => Some(p),
                Err(PersonalizeError::TooFewContrasts { .. }) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        self.policy_secs[0] = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let family = material.family;
        let kind = super::pipeline::dominant_kind(history);
        let labels = prompts::labels_for_kind(&kind);
        // the ways are read in an order that shares each history block's cache: first those without
        // an edit (the selected block once for all but `retrieval`), then each strength's edit, whose
        // plan is built once and shared by every way that uses it; they are reported in the order
        // compared
        let mut order: Vec<usize> = (0..policy.candidates.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (policy.candidates[a], policy.candidates[b]);
            let gamma = |w: Way| w.gamma().unwrap_or(f32::NEG_INFINITY);
            gamma(a)
                .total_cmp(&gamma(b))
                .then(a.retrieval().cmp(&b.retrieval()))
        });
        // the prior of the items fitted on, read once for every way that adds it
        let prior = super::align::history_prior(self.model, fit_items)?;
        // the answers the `labels` ways choose among: those of the items fitted on
        let fit_labels = super::labels::user_labels(fit_items);
        let mut plans: Vec<(f32, std::sync::Arc<crate::steer::EditPlan>)> = Vec::new();
        let mut out: Vec<Option<CandidateScore>> = vec![None; policy.candidates.len()];
        for i in order {
            let way = policy.candidates[i];
            if let Some(k) = known_score(way) {
                out[i] = Some(k.clone());
                continue;
            }
            let plan = match (way.gamma(), &profile) {
                (None, _) => None,
                (Some(gamma), Some(p)) => {
                    if let Some((_, plan)) = plans.iter().find(|(g, _)| *g == gamma) {
                        Some(plan.clone())
                    } else {
                        let plan = std::sync::Arc::new(super::profile_plan(
                            p,
                            &super::Strengths {
                                gamma: Some(gamma),
                                ..Default::default()
                            },
                        )?);
                        plans.push((gamma, plan.clone()));
                        Some(plan)
                    }
                }
                // no direction could be fitted: the way cannot be scored
                (Some(_), None) => continue,
            };
            if (way.prior() != 0.0 && prior.is_empty())
                || (way.labels().is_some() && fit_labels.is_empty())
            {
                // nothing repeats in the user's answers (free text): the way is `none`'s twin
                continue;
            }
            let words = match (way.reads_words(), &profile) {
                (false, _) => Vec::new(),
                (true, Some(p)) => super::apply::profile_words(p, way.words().unwrap_or(0.0)),
                // no contrast to read the user's words from
                (true, None) => continue,
            };
            self.bias = super::align::add_bias(&words, &prior, way.prior());
            self.set_plan(plan)?;
            let mut per_item = Vec::with_capacity(tests.len());
            let mut metric = Vec::with_capacity(tests.len());
            for item in tests {
                self.check_interrupt()?;
                let request = prompts::item_query(family, item, labels);
                let real = prompts::pair_answer(family, labels, &item.output);
                let shown = UserContext {
                    family,
                    selected: &material.selected,
                    history: fit_items,
                    k: params.k,
                    insight: &material.personal_insight,
                };
                let (prefix, suffix) = way_prompt(self.model, way, &shown, &request)?;
                self.ensure_prefix(&prefix)?;
                // scored as the way is applied: the reply starts right after the assistant's turn
                // opens, with no answer lead (`generate`, `chat` and `serve` add none)
                let (reply, likelihood) = match way.labels() {
                    Some(p) => {
                        let (chosen, likelihood) =
                            self.choose_and_score(&suffix, &fit_labels, p, &real)?;
                        (chosen.unwrap_or_default(), likelihood)
                    }
                    None => self.generate_and_score(&suffix, params.answer_tokens, &real)?,
                };
                per_item.push(likelihood);
                // read as `eval` reads it: the label or rating found in the reply, or for free text
                // the whole reply, as the user sees it
                let (said, gold) = match family {
                    TaskFamily::FreeText => (reply.trim().to_string(), item.output.trim()),
                    _ => (prompts::pair_answer(family, labels, &reply), real.as_str()),
                };
                metric.extend(item_metric(family, &said, gold));
            }
            let n = per_item.len().max(1) as f64;
            out[i] = Some(CandidateScore {
                way,
                metric: (!metric.is_empty()).then(|| metric.iter().sum::<f64>() / n),
                log_likelihood: per_item.iter().sum::<f64>() / n,
                per_item,
                per_item_metric: metric,
            });
        }
        let out: Vec<CandidateScore> = out.into_iter().flatten().collect();
        self.bias.clear();
        self.set_plan(None)?;
        self.policy_secs[1] = t.elapsed().as_secs_f64();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(way: Way, metric: Option<f64>, per_item: &[f64]) -> CandidateScore {
        CandidateScore {
            way,
            metric,
            log_likelihood: per_item.iter().sum::<f64>() / per_item.len() as f64,
            per_item: per_item.to_vec(),
            per_item_metric: Vec::new(),
        }
    }

    #[test]
    fn every_candidate_the_same_means_no_personalisation() {
        let reference = Way::Align { gamma: 1.0 };
        let same = [
            score(Way::None, Some(0.5), &[-1.0, -2.0, -3.0]),
            score(Way::Insight, Some(0.5), &[-1.0, -2.0, -3.0]),
            score(Way::Align { gamma: 1.0 }, Some(0.5), &[-1.0, -2.0, -3.0]),
        ];
        assert_eq!(choose(&same, reference), (Way::None, None));
    }

    fn labelled(way: Way, hits: &[f64], per_item: &[f64]) -> CandidateScore {
        CandidateScore {
            metric: Some(hits.iter().sum::<f64>() / hits.len() as f64),
            per_item_metric: hits.to_vec(),
            ..score(way, None, per_item)
        }
    }

    #[test]
    fn a_clear_winner_is_kept_and_noise_keeps_none() {
        let ll = [-1.0; 5];
        let none = labelled(Way::None, &[0.0, 0.0, 1.0, 0.0, 0.0], &ll);
        // the metric decides first: two answers more than `none` and none fewer
        let two = labelled(
            Way::Words {
                strength: 2.0,
                prior: 0.0,
            },
            &[1.0, 1.0, 1.0, 0.0, 0.0],
            &[-1.5; 5],
        );
        assert_eq!(
            choose(&[none.clone(), two], Way::None).0,
            Way::Words {
                strength: 2.0,
                prior: 0.0
            }
        );
        // one answer more is one lucky item among many candidates: none, and why
        let one = labelled(Way::Retrieval, &[1.0, 0.0, 1.0, 0.0, 0.0], &ll);
        let (way, why) = choose(&[none.clone(), one], Way::None);
        assert_eq!(way, Way::None);
        assert!(why.unwrap().contains("task's metric"));
        // two more but one fewer: inside the noise
        let swap = labelled(Way::Retrieval, &[1.0, 1.0, 0.0, 0.0, 0.0], &[0.0; 5]);
        assert_eq!(choose(&[none, swap], Way::None).0, Way::None);
        // the same metric: the likelihood, when it is ahead on every item
        let by_ll = [
            score(Way::None, None, &[-2.0, -3.0, -2.5]),
            score(Way::Retrieval, None, &[-1.0, -2.0, -1.4]),
        ];
        assert_eq!(choose(&by_ll, Way::None), (Way::Retrieval, None));
        // ahead on average by one item's luck: inside the noise
        let lucky = [
            score(Way::None, None, &[-2.0, -2.0, -2.0]),
            score(Way::Retrieval, None, &[-0.5, -2.1, -2.1]),
        ];
        let (way, why) = choose(&lucky, Way::None);
        assert_eq!(way, Way::None);
        assert!(why.unwrap().contains("noise"));
        // `none` best: none
        let none_best = [
            score(Way::None, None, &[-1.0, -1.0]),
            score(Way::Insight, None, &[-2.0, -2.0]),
        ];
        assert_eq!(choose(&none_best, Way::None), (Way::None, None));
        // too few items: the reference
        let one = [
            score(Way::None, None, &[-1.0]),
            score(Way::Insight, None, &[0.0]),
        ];
        assert_eq!(choose(&one, Way::Insight).0, Way::Insight);
        assert_eq!(choose(&[], Way::Insight).0, Way::Insight);
    }

    #[test]
    fn another_reference_is_kept_unless_beaten_beyond_the_noise() {
        let words = Way::Words {
            strength: 2.0,
            prior: 0.0,
        };
        let ll = [-1.0; 5];
        let none = labelled(Way::None, &[0.0, 0.0, 1.0, 0.0, 0.0], &ll);
        let reference = labelled(words, &[0.0, 1.0, 0.0, 0.0, 0.0], &ll);
        // `none` ahead by one answer: inside the noise, the reference, and why
        let none_one = labelled(Way::None, &[0.0, 1.0, 1.0, 0.0, 0.0], &ll);
        let (way, why) = choose(&[none_one, reference.clone()], words);
        assert_eq!(way, words);
        assert!(why.unwrap().contains("ahead of `words@2`"));
        // a way two answers ahead of the reference and none behind: kept
        let retrieval = labelled(Way::Retrieval, &[1.0, 1.0, 0.0, 1.0, 0.0], &ll);
        assert_eq!(
            choose(&[none.clone(), reference.clone(), retrieval], words),
            (Way::Retrieval, None)
        );
        // `none` beyond the noise: none
        let none_far = labelled(Way::None, &[1.0, 1.0, 1.0, 0.0, 1.0], &ll);
        assert_eq!(
            choose(&[none_far, reference.clone()], words),
            (Way::None, None)
        );
        // the reference best: kept
        let reference_best = labelled(words, &[1.0, 0.0, 1.0, 0.0, 0.0], &ll);
        assert_eq!(
            choose(&[none.clone(), reference_best], words),
            (words, None)
        );
        // a user with no bias has no `words` scores: `none` is the reference
        let insight = labelled(Way::Insight, &[1.0, 0.0, 1.0, 0.0, 0.0], &ll);
        assert_eq!(choose(&[none, insight], words).0, Way::None);
    }

    #[test]
    fn label_tasks_keep_their_reference() {
        let words = Way::Words {
            strength: 2.0,
            prior: 0.0,
        };
        let ll = [-1.0; 5];
        let none = labelled(Way::None, &[1.0, 1.0, 1.0, 0.0, 1.0], &ll);
        let reference = labelled(words, &[0.0, 1.0, 0.0, 0.0, 0.0], &ll);
        // ahead beyond the noise, and still the reference, with the best named
        let (way, why) = keep(&[none.clone(), reference.clone()], words);
        assert_eq!(way, words);
        assert!(why.unwrap().contains("`none` scored ahead of `words@2`"));
        // a single candidate ranks the same as itself: none
        assert_eq!(
            keep(&[reference.clone(), none.clone()][1..], words).0,
            Way::None
        );
        // the reference best: kept, nothing to say
        let best = labelled(words, &[1.0, 1.0, 1.0, 1.0, 1.0], &ll);
        assert_eq!(keep(&[none.clone(), best], words), (words, None));
        // every candidate the same: none
        assert_eq!(
            keep(
                &[
                    none.clone(),
                    labelled(words, &[1.0, 1.0, 1.0, 0.0, 1.0], &ll)
                ],
                words
            ),
            (Way::None, None)
        );
        // no bias on the held-out fit, so no `words` scores: the reference, and why
        let insight = labelled(Way::Insight, &[1.0, 0.0, 1.0, 0.0, 0.0], &ll);
        let (way, why) = keep(&[none, insight], words);
        assert_eq!(way, words);
        assert!(why.unwrap().contains("not scored"));
    }

    #[test]
    fn a_policy_is_decided_per_family() {
        let params = default_policy_params(0.5);
        assert_eq!(
            params.reference(TaskFamily::Classification),
            params.label_reference
        );
        assert_eq!(params.reference(TaskFamily::FreeText), Way::None);
        let few = Policy::decide(TaskFamily::Rating, 5, 1, Vec::new(), &params);
        assert_eq!(few.way, params.rating_reference);
        assert_eq!(few.way.name(), "labels@0");
        assert!(few.fallback.unwrap().contains("too few"));
        let few = Policy::decide(TaskFamily::Classification, 5, 1, Vec::new(), &params);
        assert_eq!(few.way, params.label_reference);
    }

    #[test]
    fn free_text_takes_a_prompt_way_only_beyond_two_errors() {
        let params = default_policy_params(0.5);
        let rouge = |way: Way, m: &[f64]| CandidateScore {
            way,
            metric: Some(m.iter().sum::<f64>() / m.len() as f64),
            per_item_metric: m.to_vec(),
            log_likelihood: -1.0,
            per_item: vec![-1.0; m.len()],
        };
        let none = rouge(Way::None, &[0.30, 0.40, 0.20, 0.35, 0.30]);
        // ahead on every item, but an edit: free text is not sent to it
        let edit = rouge(Way::Align { gamma: 1.0 }, &[0.60, 0.70, 0.50, 0.65, 0.60]);
        // ahead by about 1.5 standard errors: enough for `choose`, not for free text
        let near = rouge(Way::Insight, &[0.35, 0.45, 0.20, 0.30, 0.40]);
        assert_eq!(
            choose(&[none.clone(), near.clone()], Way::None).0,
            Way::Insight
        );
        let p = Policy::decide(
            TaskFamily::FreeText,
            12,
            5,
            vec![none.clone(), edit.clone(), near],
            &params,
        );
        assert_eq!(p.way, Way::None);
        let why = p.fallback.unwrap();
        assert!(why.contains("`align@1` scored ahead"), "{why}");
        assert!(why.contains("2 x"), "{why}");
        // a prompt way clearly ahead is kept
        let clear = rouge(Way::Retrieval, &[0.50, 0.60, 0.40, 0.55, 0.52]);
        let p = Policy::decide(
            TaskFamily::FreeText,
            12,
            5,
            vec![none, edit, clear],
            &params,
        );
        assert_eq!(p.way, Way::Retrieval);
        // a policy decided before the rule (margin 0) keeps the old one
        let old = PolicyParams {
            free_text_margin: 0.0,
            ..params
        };
        let p = Policy::decide(
            TaskFamily::FreeText,
            12,
            5,
            vec![
                rouge(Way::None, &[0.3; 5]),
                rouge(Way::Align { gamma: 1.0 }, &[0.6; 5]),
            ],
            &old,
        );
        assert_eq!(p.way, Way::Align { gamma: 1.0 });
    }

    #[test]
    fn metrics_per_family() {
        assert_eq!(
            item_metric(TaskFamily::Classification, "Comedy", "comedy"),
            Some(1.0)
        );
        assert_eq!(
            item_metric(TaskFamily::Classification, "drama", "comedy"),
            Some(0.0)
        );
        assert_eq!(item_metric(TaskFamily::Rating, "4", "5"), Some(-1.0));
        assert_eq!(item_metric(TaskFamily::Rating, "", "5"), Some(-4.0));
        assert_eq!(item_metric(TaskFamily::FreeText, "a b", "b c"), Some(0.5));
        assert_eq!(
            item_metric(
                TaskFamily::FreeText,
                "@united Late AGAIN!",
                "late again @united"
            ),
            Some(1.0)
        );
        assert_eq!(
            item_metric(TaskFamily::FreeText, "", "late again"),
            Some(0.0)
        );
    }

    #[test]
    fn ways_parse_and_name() {
        for s in [
            "none",
            "insight",
            "retrieval",
            "align@0.5",
            "insight+align@2",
            "words@4",
            "prior@1",
            "words@2+prior@0.5",
            "labels@0",
            "labels@4",
            "labels@2+words@2",
            "frequent",
        ] {
            let w: Way = s.parse().unwrap();
            assert_eq!(w.name(), s);
            let stored = serde_json::to_value(w).unwrap();
            assert_eq!(serde_json::from_value::<Way>(stored).unwrap(), w);
        }
        assert!("frequent@2".parse::<Way>().is_err());
        assert_eq!(Way::Frequent.labels(), Some(f32::INFINITY));
        assert_eq!(
            "labels@2".parse::<Way>().unwrap().labels(),
            Some(2.0),
            "the weight of the user's counts"
        );
        assert_eq!("labels@2".parse::<Way>().unwrap().prior(), 0.0);
        assert!("align@1+prior@1".parse::<Way>().is_err());
        assert!("words@2+prior@x".parse::<Way>().is_err());
        // a way stored before the prior existed reads back with none, and one without a prior is
        // stored as it was (cached answers are keyed by it)
        let old: Way =
            serde_json::from_value(serde_json::json!({"way": "words", "strength": 2.0})).unwrap();
        assert_eq!(
            old,
            Way::Words {
                strength: 2.0,
                prior: 0.0
            }
        );
        assert_eq!(
            serde_json::to_value(old).unwrap(),
            serde_json::json!({"way": "words", "strength": 2.0})
        );
        assert_eq!(
            "align".parse::<Way>().unwrap(),
            Way::Align {
                gamma: crate::personalize::DEFAULT_GAMMA
            }
        );
        assert!("sideways".parse::<Way>().is_err());
        assert!("align@x".parse::<Way>().is_err());
        assert!("words@inf".parse::<Way>().is_err());
        assert_eq!(
            "words".parse::<Way>().unwrap(),
            Way::Words {
                strength: 1.0,
                prior: 0.0
            }
        );
        let json = serde_json::to_value(Way::InsightAlign { gamma: 2.0 }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"way": "insight-align", "gamma": 2.0})
        );
    }

    #[test]
    fn retrieval_keeps_the_nearest_items_in_history_order() {
        let docs = [
            ("what to cook", "lentil soup"),
            ("a film tonight", "Solaris"),
            ("what to read", "Solaris by Lem"),
            ("weekend plans", "repot tomatoes"),
            ("a podcast", "gardeners' question time"),
            ("a holiday", "the Dolomites"),
        ];
        assert_eq!(nearest(&docs, "a film like Solaris", 2), vec![1, 2]);
        assert_eq!(nearest(&docs, "weekend", 1), vec![3]);
    }
}
