//! Directions from the user's real answers (method.md, "Beyond the paper"; StyleVector, arXiv
//! 2503.05213; the mean of differences, arXiv 2502.02716).
//!
//! For history items i = 1..m, the same prompt `q_i` is read twice: followed by the user's real output
//! `y_i` and by the model's own greedy answer `a_i` (items where the two agree carry no contrast and are
//! skipped). Per layer l, with `Phi_l` the MLP output pooled over the answer's tokens:
//!
//! ```text
//! d_l,i   = Phi_l(q_i + y_i) - Phi_l(q_i + a_i)
//! c_l     = mean_i d_l,i / || mean_i d_l,i ||              the user's direction
//! agree_l = mean over pairs i != j of cos(d_l,i, d_l,j)     near 0: the items do not agree
//! s_l     = median over the answers' tokens of ||x_l||      the layer's typical MLP-output norm
//! ```
//!
//! The edit adds `gamma * s_l * c_l` to the MLP output of the chosen layers ([`crate::steer::Additive`]).
//!
//! The same contrast read at the output gives the `words` way ([`word_bias`]): a logit bias toward the
//! tokens the user's real answers use and the model's own do not, `ln((df_user(t) + 1) / (df_own(t) + 1))`
//! with `df` the number of contrast items whose answer holds token t in either of its spellings (as a
//! reply's first word and after a space). As `df` counts presence, each token's bias holds until the
//! reply has used it ([`crate::llm::GenerateOptions::bias_until_used`]).
//! This module is the arithmetic; [`super::pipeline::Personalizer`] reads the texts through the model.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::apply::{Strengths, profile_plan};
use super::params::{FitParams, LayerChoice, PairAnswers, mid_band};
use super::pipeline::{
    FIT_VERSION, FitReport, PersonalizeError, Personalizer, Prepared, QuerySource, pair_hashes,
    query_plan,
};
use super::prompts::{self, PROMPT_VERSION, TaskFamily};
use crate::llm::Token;
use crate::steer::{dot, median};
use crate::store::{
    HistoryItem, LayerDirections, Owner, Pair, PairKey, Profile, User, history_hash, unix_now,
};

/// One layer's real-answer direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAlign {
    /// Decoder layer index.
    pub layer: usize,
    /// `c_l`: unit direction (all zero when the differences cancel out).
    pub c: Vec<f32>,
    /// `agree_l`: mean pairwise cosine of the items' differences (0 with fewer than 2 items).
    pub agree: f32,
    /// `s_l`: median MLP-output norm over the answers' tokens.
    pub scale: f32,
}

/// `mean_i d_i / ||mean_i d_i||`, or `None` when there are no differences or their mean is zero.
pub fn mean_direction<R: AsRef<[f32]>>(diffs: &[R]) -> Option<Vec<f32>> {
    let first = diffs.first()?.as_ref();
    let mut m = vec![0.0f64; first.len()];
    for d in diffs {
        for (acc, &v) in m.iter_mut().zip(d.as_ref()) {
            *acc += f64::from(v);
        }
    }
    let norm = m.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return None;
    }
    Some(m.into_iter().map(|v| (v / norm) as f32).collect())
}

/// Mean pairwise cosine of the differences, over pairs `i < j` (a zero difference counts as cosine 0);
/// 0 with fewer than two. Near 1 when the items agree on a direction, near 0 for unrelated ones.
pub fn agreement<R: AsRef<[f32]>>(diffs: &[R]) -> f32 {
    let norms: Vec<f32> = diffs
        .iter()
        .map(|d| dot(d.as_ref(), d.as_ref()).sqrt())
        .collect();
    let (mut sum, mut n) = (0.0f64, 0usize);
    for i in 0..diffs.len() {
        for j in i + 1..diffs.len() {
            let den = norms[i] * norms[j];
            if den > 0.0 {
                sum += f64::from(dot(diffs[i].as_ref(), diffs[j].as_ref()) / den);
            }
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

/// Every layer's [`LayerAlign`] from the items' differences: `diffs[l]` holds the items' `d_l,i`, and
/// `norms[l]` the per-token MLP-output norms seen at layer l (empty: scale 0).
pub fn align_layers(diffs: &[Vec<Vec<f32>>], norms: &[Vec<f32>]) -> Vec<LayerAlign> {
    diffs
        .iter()
        .enumerate()
        .map(|(layer, d)| {
            let hidden = d.first().map_or(0, Vec::len);
            LayerAlign {
                layer,
                c: mean_direction(d).unwrap_or_else(|| vec![0.0; hidden]),
                agree: agreement(d),
                scale: norms
                    .get(layer)
                    .filter(|n| !n.is_empty())
                    .map_or(0.0, |n| median(n.clone())),
            }
        })
        .collect()
}

/// The `words` logit bias from the contrast items' tokens, `(real, own)` per item: for every token in
/// either, `ln((df_real + 1) / (df_own + 1))`, where `df` counts the items whose answer holds the
/// token (once per item, so a long answer does not outweigh a short one). Tokens both sides use
/// equally often get no bias and are left out; the result is in token order.
pub fn word_bias<R: AsRef<[Token]>>(items: &[(R, R)]) -> Vec<(Token, f32)> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut df: BTreeMap<Token, (u32, u32)> = BTreeMap::new();
    for (real, own) in items {
        for t in real.as_ref().iter().collect::<BTreeSet<_>>() {
            df.entry(*t).or_default().0 += 1;
        }
        for t in own.as_ref().iter().collect::<BTreeSet<_>>() {
            df.entry(*t).or_default().1 += 1;
        }
    }
    df.into_iter()
        .filter(|(_, (r, o))| r != o)
        .map(|(t, (r, o))| (t, ((f64::from(r) + 1.0) / (f64::from(o) + 1.0)).ln() as f32))
        .collect()
}

/// The user's answer prior from their history's answers (tokens per item): for every token, `ln(1 +
/// df)`, where `df` counts the items whose answer holds it (once per item). Between two one-token
/// labels the difference is the log of their counts' ratio, so at strength 1 it is the user's label
/// frequencies as a prior on the reply (what the `no-model` floor counts, weighed against the
/// model's own reading instead of replacing it). In token order.
pub fn answer_prior<R: AsRef<[Token]>>(answers: &[R]) -> Vec<(Token, f32)> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut df: BTreeMap<Token, u32> = BTreeMap::new();
    for a in answers {
        for t in a.as_ref().iter().collect::<BTreeSet<_>>() {
            *df.entry(*t).or_default() += 1;
        }
    }
    df.into_iter()
        .map(|(t, n)| (t, (f64::from(n) + 1.0).ln() as f32))
        .collect()
}

/// [`answer_prior`] of the first token of `history`'s answers, in both the spellings a reply may use
/// (as its first word and after a space), for tasks whose answer is a label or a rating (empty for
/// free text, where no answer repeats). Only the first token: that is where a reply chooses its
/// label, and the rest of a label's tokens (" on", " a", " book") are shared with other words and
/// labels, so a prior on them would push the reply around after the choice.
///
/// # Errors
/// Tokenizing failing.
pub fn history_prior(
    model: &crate::llm::Model,
    history: &[HistoryItem],
) -> Result<Vec<(Token, f32)>, crate::llm::LlmError> {
    let kind = super::pipeline::dominant_kind(history);
    let family = TaskFamily::from_kind(&kind);
    if family == TaskFamily::FreeText {
        return Ok(Vec::new());
    }
    let labels = prompts::labels_for_kind(&kind);
    let first = |text: &str| -> Result<Option<Token>, crate::llm::LlmError> {
        Ok(model.tokenize(text, false, false)?.first().copied())
    };
    let mut answers = Vec::with_capacity(history.len());
    for h in history.iter().filter(|h| h.task == kind) {
        let a = prompts::pair_answer(family, labels, &h.output);
        let a = a.trim();
        if !a.is_empty() {
            answers.push(
                [first(a)?, first(&format!(" {a}"))?]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<Token>>(),
            );
        }
    }
    Ok(answer_prior(&answers))
}

/// `a + scale * b` token by token, in token order (tokens whose sum is 0 left out).
pub fn add_bias(a: &[(Token, f32)], b: &[(Token, f32)], scale: f32) -> Vec<(Token, f32)> {
    let mut sum: std::collections::BTreeMap<Token, f32> = std::collections::BTreeMap::new();
    let scaled = b.iter().map(|&(t, v)| (t, v * scale));
    for (t, v) in a.iter().copied().chain(scaled) {
        *sum.entry(t).or_default() += v;
    }
    sum.into_iter().filter(|(_, v)| *v != 0.0).collect()
}

/// The tokens of an answer as a reply may spell it: as the reply's first word (no space before it,
/// as `generate`, `chat` and `serve` start a reply) and after a space (as after the lead `Tag:`).
/// BPE vocabularies give the two spellings different tokens ("comedy" and " comedy"), and a bias
/// read from one spelling alone misses the other, so the `words` bias counts both (once per item).
fn answer_spellings(
    model: &crate::llm::Model,
    answer: &str,
) -> Result<Vec<Token>, crate::llm::LlmError> {
    let a = answer.trim_start();
    let mut tokens = model.tokenize(a, false, false)?;
    tokens.extend(model.tokenize(&format!(" {a}"), false, false)?);
    Ok(tokens)
}

/// The `n` layers of `band` whose items agree most, in layer order (layers with a zero direction are
/// never chosen).
pub fn most_agreeing(layers: &[LayerAlign], band: std::ops::Range<usize>, n: usize) -> Vec<usize> {
    let mut ranked: Vec<&LayerAlign> = layers
        .iter()
        .filter(|l| band.contains(&l.layer) && l.c.iter().any(|&v| v != 0.0))
        .collect();
    ranked.sort_by(|a, b| b.agree.total_cmp(&a.agree).then(a.layer.cmp(&b.layer)));
    let mut out: Vec<usize> = ranked.iter().take(n).map(|l| l.layer).collect();
    out.sort_unstable();
    out
}

// ---- reading the texts through the model ----

/// How many of the user's history items a fit reads, at most, and in what order: the same offline
/// queries as the paper's pairs ([`query_plan`]: the items stage 1 did not select, then each selected
/// item left out of the history it is shown with), so an item is never in its own prompt.
fn contrast_items(n_unselected: usize, n_selected: usize, max: usize) -> Vec<QuerySource> {
    query_plan(n_unselected, n_selected)
        .into_iter()
        .take(max)
        .collect()
}

/// Whether the model's answer says what the user's does (labels compare without case).
fn same_answer(family: TaskFamily, real: &str, own: &str) -> bool {
    let (r, o) = (real.trim(), own.trim());
    match family {
        TaskFamily::FreeText => r == o,
        TaskFamily::Classification | TaskFamily::Rating => r.eq_ignore_ascii_case(o),
    }
}

/// A contrast item before the model answers it: the history it is shown with, the query, the user's
/// real answer and where the pair is stored.
struct ContrastJob {
    hist: Vec<usize>,
    query: String,
    real: String,
    key: PairKey,
}

/// One history item read as a contrast: the history it is shown with, the query, the user's real
/// answer and the model's own.
struct Contrast {
    hist: Vec<usize>,
    query: String,
    real: String,
    own: String,
}

impl Personalizer<'_> {
    /// The `align` route of a fit (method.md, "Directions from real answers"): every member's history
    /// items answered by the model, each answer read after the item's prompt next to the user's real
    /// one, and per layer the mean of the differences. Stored as the owner's profile.
    pub(super) fn fit_align(
        &mut self,
        owner: Owner,
        users: &[User],
        params: &FitParams,
    ) -> Result<(FitReport, Profile), PersonalizeError> {
        self.fit_contrasts(owner, users, params, true)
    }

    /// [`Self::fit_align`], or with `direction` false only the contrasts' `words` bias: the model's
    /// own answers are made, but no activation is read and the profile holds no direction (what an
    /// `auto` profile whose way is `words` needs).
    pub(super) fn fit_contrasts(
        &mut self,
        owner: Owner,
        users: &[User],
        params: &FitParams,
        direction: bool,
    ) -> Result<(FitReport, Profile), PersonalizeError> {
        let n_layer = self.model.n_layer();
        let layers: Vec<usize> = (0..n_layer).collect();
        self.stage_secs = [0.0; 3];
        let mut diffs: Vec<Vec<Vec<f32>>> = vec![Vec::new(); n_layer];
        let mut norms: Vec<Vec<f32>> = vec![Vec::new(); n_layer];
        let (mut tried, mut same) = (0usize, 0usize);
        let mut capture_secs = 0.0;
        let mut words: Vec<(Vec<Token>, Vec<Token>)> = Vec::new();
        let mut shown: Vec<i64> = Vec::new();
        for user in users {
            let (prep, _, rest) = self.prepare_material(user, params, false)?;
            if shown.is_empty() {
                shown = prep.selected.iter().map(|h| h.id.get()).collect();
            }
            let jobs = self.contrast_jobs(user, &prep, &rest, params)?;
            let lead = prompts::answer_lead(prep.family);
            // each item's answer and captures in turn, so its history block is read once for both
            let bar = self.bar(jobs.len(), "contrasts");
            for job in &jobs {
                let t = Instant::now();
                let c = self.own_answer(&prep, job, params)?;
                self.stage_secs[2] += t.elapsed().as_secs_f64();
                bar.inc(1);
                tried += 1;
                if c.real.trim().is_empty()
                    || c.own.trim().is_empty()
                    || same_answer(prep.family, &c.real, &c.own)
                {
                    same += 1;
                    continue;
                }
                self.check_interrupt()?;
                words.push((
                    answer_spellings(self.model, &c.real)?,
                    answer_spellings(self.model, &c.own)?,
                ));
                if !direction {
                    continue;
                }
                let t = Instant::now();
                let (prefix, suffix) = self.pair_prompt(&prep, &c.hist, &c.query, None)?;
                self.ensure_prefix(&prefix)?;
                let query = format!("{suffix}{lead}");
                let (vr, nr) =
                    self.capture_answer_norms(&query, &c.real, &layers, params.pooling)?;
                let (vo, no) =
                    self.capture_answer_norms(&query, &c.own, &layers, params.pooling)?;
                for l in 0..n_layer {
                    diffs[l].push(vr[l].iter().zip(&vo[l]).map(|(a, b)| a - b).collect());
                    norms[l].extend_from_slice(&nr[l]);
                    norms[l].extend_from_slice(&no[l]);
                }
                capture_secs += t.elapsed().as_secs_f64();
            }
            bar.finish_and_clear();
        }
        let used = words.len();
        if used < 2 {
            return Err(PersonalizeError::TooFewContrasts {
                owner: owner.to_string(),
                got: used,
                tried,
            });
        }
        let mut seconds: Vec<(String, f64)> = ["select", "insights", "answers"]
            .iter()
            .zip(self.stage_secs)
            .map(|(n, s)| (n.to_string(), s))
            .collect();
        let mut recorded = serde_json::json!({
            "fit": params,
            "prompt_version": PROMPT_VERSION,
            "fit_version": FIT_VERSION,
            "align": { "items": used, "tried": tried },
            "words": word_bias(&words),
            "members": users.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
            // the first member's representative items: the history block its ways show
            "selected": shown,
        });
        if !direction {
            // the `words` bias alone: no layer, no direction
            let profile = Profile {
                model: self.identity()?,
                selected_layers: Vec::new(),
                layers: Vec::new(),
                params: recorded,
                created: unix_now(),
            };
            return Ok((
                self.align_report(owner, Vec::new(), used, same, seconds),
                profile,
            ));
        }
        seconds.push(("capture".to_string(), capture_secs));
        let t = Instant::now();
        let fitted = align_layers(&diffs, &norms);
        let selected = match &params.layers {
            LayerChoice::Mid(n) => most_agreeing(&fitted, mid_band(n_layer), *n),
            // layer 0 is left out: a control vector cannot steer it
            LayerChoice::Auto => most_agreeing(&fitted, 1..n_layer, 1),
            LayerChoice::Max(n) => most_agreeing(&fitted, 1..n_layer, *n),
            LayerChoice::List(l) => {
                let mut l = l.clone();
                l.sort_unstable();
                l.dedup();
                l
            }
        };
        seconds.push(("fit".to_string(), t.elapsed().as_secs_f64()));
        let hidden = self.model.n_embd();
        let profile = Profile {
            model: self.identity()?,
            selected_layers: selected.clone(),
            layers: fitted
                .iter()
                .map(|l| LayerDirections {
                    layer: l.layer,
                    p: l.c.clone(),
                    n: vec![0.0; hidden],
                    ccs_loss: 0.0,
                })
                .collect(),
            params: {
                recorded["align"]["agree"] = fitted.iter().map(|l| l.agree).collect();
                recorded["align"]["scale"] = fitted.iter().map(|l| l.scale).collect();
                recorded
            },
            created: unix_now(),
        };
        // the plan is checked before the profile is stored, so a stored profile always applies
        profile_plan(&profile, &Strengths::default())?;
        Ok((
            self.align_report(owner, selected, used, same, seconds),
            profile,
        ))
    }

    pub(super) fn align_report(
        &self,
        owner: Owner,
        selected_layers: Vec<usize>,
        used: usize,
        same: usize,
        seconds: Vec<(String, f64)>,
    ) -> FitReport {
        FitReport {
            owner: owner.to_string(),
            selected_layers,
            pairs: used,
            dropped_pairs: same,
            reused: self.reused,
            embedded: self.embedded,
            tokens: self.tokens,
            seconds,
            policy: None,
        }
    }

    /// The contrast items of `user` (at most `max_queries`), each with the history it is shown with and
    /// the key its answer pair is stored under (the user's pair key with `/align`), so an interrupted
    /// fit resumes and a refit reuses the answers.
    fn contrast_jobs(
        &self,
        user: &User,
        prep: &Prepared,
        rest: &[HistoryItem],
        params: &FitParams,
    ) -> Result<Vec<ContrastJob>, PersonalizeError> {
        let labels = prompts::labels_for_kind(&prep.kind);
        let all: Vec<usize> = (0..prep.selected.len()).collect();
        let items: Vec<(Vec<usize>, &HistoryItem)> =
            contrast_items(rest.len(), prep.selected.len(), params.max_queries)
                .into_iter()
                .map(|source| match source {
                    QuerySource::Unselected(i) => (all.clone(), &rest[i]),
                    QuerySource::LeaveOneOut(i) => (
                        all.iter().copied().filter(|&j| j != i).collect(),
                        &prep.selected[i],
                    ),
                })
                .collect();
        let queries: Vec<(Vec<usize>, String)> = items
            .iter()
            .map(|(h, item)| (h.clone(), prompts::item_query(prep.family, item, labels)))
            .collect();
        let base = format!(
            "{}/align/answer_tokens={}",
            history_hash(&prep.selected),
            params.answer_tokens
        );
        let query_refs: Vec<&(Vec<usize>, String)> = queries.iter().collect();
        let fingerprint = self
            .model
            .fingerprint()
            .map(str::to_string)
            .unwrap_or_default();
        Ok(pair_hashes(&base, &query_refs, all.len())
            .into_iter()
            .zip(items.iter().zip(queries))
            .map(|(history_hash, ((_, item), (hist, query)))| ContrastJob {
                key: PairKey {
                    user: user.id,
                    fingerprint: fingerprint.clone(),
                    prompt_version: PROMPT_VERSION,
                    history_hash,
                },
                real: prompts::pair_answer(prep.family, labels, &item.output),
                hist,
                query,
            })
            .collect())
    }

    /// The model's own greedy answer to a contrast item (`neutral`, beside the user's real answer as
    /// `personal`), read from the store when an earlier fit made it, else made and stored.
    fn own_answer(
        &mut self,
        prep: &Prepared,
        job: &ContrastJob,
        params: &FitParams,
    ) -> Result<Contrast, PersonalizeError> {
        let labels = prompts::labels_for_kind(&prep.kind);
        let stored = self
            .store
            .pairs(&job.key)?
            .into_iter()
            .find(|p| p.query == job.query);
        let own = if let Some(p) = stored {
            self.reused += 1;
            p.neutral
        } else {
            self.check_interrupt()?;
            let (prefix, suffix) = self.pair_prompt(prep, &job.hist, &job.query, None)?;
            self.ensure_prefix(&prefix)?;
            let label_params = FitParams {
                pair_answers: PairAnswers::Label,
                ..params.clone()
            };
            let own = self.pair_answer(prep, labels, &suffix, &label_params)?;
            self.store.put_pair(
                &job.key,
                &Pair {
                    query: job.query.clone(),
                    personal: job.real.clone(),
                    neutral: own.clone(),
                },
            )?;
            own
        };
        Ok(Contrast {
            hist: job.hist.clone(),
            query: job.query.clone(),
            real: job.real.clone(),
            own,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalize::fit::test_util::{cosine, gaussian, unit};
    use rand::SeedableRng;

    /// A planted direction plus noise per item is recovered by the mean difference, and the items
    /// agree; pure noise gives agreement near zero.
    #[test]
    fn a_planted_direction_is_recovered_and_noise_does_not_agree() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let d = 256;
        let planted = unit(&gaussian(&mut rng, d));
        let diffs: Vec<Vec<f32>> = (0..12)
            .map(|_| {
                let noise = gaussian(&mut rng, d);
                // signal of length 4 against noise of length ~16 (sqrt(256)) per item
                planted
                    .iter()
                    .zip(&noise)
                    .map(|(p, n)| 4.0 * p + 0.25 * n)
                    .collect()
            })
            .collect();
        let c = mean_direction(&diffs).unwrap();
        assert!((dot(&c, &c).sqrt() - 1.0).abs() < 1e-5);
        assert!(cosine(&c, &planted) > 0.9, "{}", cosine(&c, &planted));
        let agree = agreement(&diffs);
        assert!(agree > 0.5, "planted agreement {agree}");

        let noise: Vec<Vec<f32>> = (0..12).map(|_| gaussian(&mut rng, d)).collect();
        let a = agreement(&noise);
        assert!(a.abs() < 0.05, "noise agreement {a}");
    }

    #[test]
    fn word_bias_favours_the_users_tokens_once_per_item() {
        // the user says 7 twice where the model says 9; both say 1; 5 is said three times in one item
        let items = [
            (vec![1, 7], vec![1, 9]),
            (vec![1, 7, 5, 5, 5], vec![1, 9]),
            (vec![2], vec![3]),
        ];
        let bias = word_bias(&items);
        let get = |t: Token| bias.iter().find(|(k, _)| *k == t).map(|(_, b)| *b);
        assert_eq!(get(1), None, "both sides use it alike");
        assert!((get(7).unwrap() - 3f32.ln()).abs() < 1e-6);
        assert!((get(9).unwrap() + 3f32.ln()).abs() < 1e-6);
        assert!(
            (get(5).unwrap() - 2f32.ln()).abs() < 1e-6,
            "counted once per item"
        );
        assert!((get(2).unwrap() - 2f32.ln()).abs() < 1e-6);
        assert!(bias.windows(2).all(|w| w[0].0 < w[1].0), "token order");
        assert!(word_bias::<Vec<Token>>(&[]).is_empty());
    }

    #[test]
    fn the_prior_is_the_log_of_each_tokens_count_plus_one() {
        // token 4 in three answers (twice in one), 6 in one; a label's prior ratio is its count ratio
        let answers = [vec![4, 4], vec![4, 6], vec![4]];
        let prior = answer_prior(&answers);
        assert_eq!(prior.len(), 2);
        assert!((prior[0].1 - 4f32.ln()).abs() < 1e-6 && prior[0].0 == 4);
        assert!((prior[1].1 - 2f32.ln()).abs() < 1e-6 && prior[1].0 == 6);
        assert!(answer_prior::<Vec<Token>>(&[]).is_empty());
        let sum = add_bias(&[(1, 0.5), (2, 1.0)], &[(2, -0.5), (3, 1.0)], 2.0);
        assert_eq!(sum, [(1, 0.5), (3, 2.0)], "a zero sum is left out");
    }

    #[test]
    fn degenerate_inputs() {
        assert!(mean_direction::<Vec<f32>>(&[]).is_none());
        assert!(mean_direction(&[vec![1.0, 2.0], vec![-1.0, -2.0]]).is_none());
        assert_eq!(agreement(&[vec![1.0, 0.0]]), 0.0);
        // opposite differences disagree completely; a zero difference counts as 0
        assert!((agreement(&[vec![1.0, 0.0], vec![-1.0, 0.0]]) + 1.0).abs() < 1e-6);
        assert!(
            (agreement(&[vec![1.0, 0.0], vec![0.0, 0.0], vec![1.0, 0.0]]) - 1.0 / 3.0).abs() < 1e-6
        );
    }

    #[test]
    fn layers_get_direction_agreement_and_median_norm() {
        let diffs = vec![
            vec![vec![3.0, 4.0], vec![3.0, 4.0]],
            vec![vec![1.0, 0.0], vec![-1.0, 0.0]],
        ];
        let norms = vec![vec![1.0, 5.0, 2.0], vec![]];
        let got = align_layers(&diffs, &norms);
        assert_eq!(got[0].c, vec![0.6, 0.8]);
        assert!((got[0].agree - 1.0).abs() < 1e-6);
        assert_eq!(got[0].scale, 2.0);
        assert_eq!(got[1].c, vec![0.0, 0.0]);
        assert_eq!(got[1].scale, 0.0);
        // layer 1 cancels out: never chosen, even when asked for two
        assert_eq!(most_agreeing(&got, 0..2, 2), vec![0]);
        assert!(most_agreeing(&got, 1..2, 1).is_empty());
    }
}
