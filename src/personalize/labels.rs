//! The `labels@P` way: for tasks whose answers repeat (a label, a rating), the reply is one of the
//! answers the user's own history gives, the one the model finds likeliest after the request, weighed
//! by how often the user gave it:
//!
//! ```text
//! answer = argmax over the user's answers l of   log p(l | prompt)  +  P * ln(1 + n_l)
//! ```
//!
//! `log p(l | prompt)` is the model's teacher-forced log-probability of a reply that opens with `l`
//! (its tokens summed), `n_l` the history items that answer `l`. At `P = 0` it is the model's own
//! choice among the user's answers; as `P` grows it becomes the user's most frequent answer (the
//! `no-model` floor of docs/evaluation.md). At `P = inf` (`frequent`) it is that floor exactly: the
//! most frequent answer, among equally frequent ones the one the history gives first, and the model
//! is not asked. Nothing is generated: the reply is the label itself. Free text has no answers that
//! repeat, and no `labels` way.

use std::collections::HashMap;

use super::pipeline::dominant_kind;
use super::prompts::{self, TaskFamily};
use crate::llm::{Context, LlmError, Model, Token};
use crate::store::HistoryItem;

/// The answers of `history` (its dominant task's items, read as replies are read: the label in the
/// task's list, the rating) with how many items give each, most frequent first (ties in the order
/// the history first gives them). Empty for free text.
pub fn user_labels(history: &[HistoryItem]) -> Vec<(String, usize)> {
    let kind = dominant_kind(history);
    count_answers(
        &kind,
        history
            .iter()
            .filter(|h| h.task == kind)
            .map(|h| h.output.as_str()),
    )
}

/// [`user_labels`] of the outputs of items of task `kind`.
fn count_answers<'o>(kind: &str, outputs: impl Iterator<Item = &'o str>) -> Vec<(String, usize)> {
    let family = TaskFamily::from_kind(kind);
    if family == TaskFamily::FreeText {
        return Vec::new();
    }
    let labels = prompts::labels_for_kind(kind);
    let mut order: Vec<String> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for output in outputs {
        let a = prompts::pair_answer(family, labels, output);
        let a = a.trim();
        if a.is_empty() {
            continue;
        }
        let n = counts.entry(a.to_string()).or_default();
        if *n == 0 {
            order.push(a.to_string());
        }
        *n += 1;
    }
    let mut out: Vec<(String, usize)> = order
        .into_iter()
        .map(|a| {
            let n = counts[&a];
            (a, n)
        })
        .collect();
    // stable: equal counts keep the history's order
    out.sort_by_key(|x| std::cmp::Reverse(x.1));
    out
}

/// How `frequent` breaks a tie among equally frequent answers (part of `eval`'s answer keys, so that
/// answers stored under the earlier rule, the model's choice among them, are not read as these).
pub const FREQUENT_TIES: &str = "first given";

/// Index of the answer with the best `score + prior * ln(1 + count)` (the earlier, more frequent one
/// on a tie); with an infinite `prior` (`frequent`), the most frequent answer, the earlier among
/// equally frequent ones, whatever the scores (which may then be empty). `None` when there is none.
///
/// `frequent` leaves ties to the history's order, not to the model: on LaMP-2's train split the
/// model's tie-breaks gained 2 answers of 80 (both models' first 40 questions), within noise, and a
/// way the model weighs in is kept only beyond noise (docs/evaluation.md).
pub fn pick(scores: &[f64], counts: &[usize], prior: f32) -> Option<usize> {
    if prior.is_infinite() {
        return counts
            .iter()
            .enumerate()
            .max_by(|(i, a), (j, b)| a.cmp(b).then(j.cmp(i)))
            .map(|(i, _)| i);
    }
    let key = |s: f64, n: usize| s + f64::from(prior) * (n as f64).ln_1p();
    scores
        .iter()
        .zip(counts)
        .map(|(&s, &n)| key(s, n))
        .enumerate()
        .max_by(|(i, a), (j, b)| a.total_cmp(b).then(j.cmp(i)))
        .map(|(i, _)| i)
}

/// The `frequent` answer of `labels` ([`user_labels`]' counts): the most frequent, among equally
/// frequent ones the earlier; no model. `None` when there is none.
pub fn frequent(labels: &[(String, usize)]) -> Option<&str> {
    let counts: Vec<usize> = labels.iter().map(|(_, n)| *n).collect();
    pick(&[], &counts, f32::INFINITY).map(|i| labels[i].0.as_str())
}

/// The `labels@prior` answer to `prompt` (read after the prefix already in `ctx`'s cache, which is
/// left as it was), and every answer's model score in `labels`' order; `extra` is scored beside them
/// (its summed log-probability comes last), so a caller that also wants the likelihood of another
/// reply reads the prompt once. `None` when `labels` is empty. `frequent` (an infinite `prior`)
/// needs no scores of the answers: only `extra`'s is returned, and with no `extra` nothing is read.
///
/// # Errors
/// Tokenizing or decoding failing.
pub fn choose(
    ctx: &mut Context<'_>,
    model: &Model,
    prompt: &[Token],
    labels: &[(String, usize)],
    prior: f32,
    extra: Option<&[Token]>,
    bias: &[(Token, f32)],
) -> Result<(Option<String>, Vec<f64>), LlmError> {
    if prior.is_infinite() {
        let scores = match extra {
            Some(e) => ctx.score_choices_after_prefix(prompt, &[e.to_vec()], bias)?,
            None => Vec::new(),
        };
        return Ok((frequent(labels).map(str::to_owned), scores));
    }
    let counts: Vec<usize> = labels.iter().map(|(_, n)| *n).collect();
    // each answer's tokens as a reply opens with it (no leading space, no special tokens)
    let mut choices = labels
        .iter()
        .map(|(l, _)| model.tokenize(l, false, false))
        .collect::<Result<Vec<_>, _>>()?;
    if choices.iter().any(Vec::is_empty) {
        return Err(LlmError::Callback(
            "an answer of the history has no tokens".into(),
        ));
    }
    if let Some(e) = extra {
        choices.push(e.to_vec());
    }
    if choices.is_empty() {
        return Ok((None, Vec::new()));
    }
    let scores = ctx.score_choices_after_prefix(prompt, &choices, bias)?;
    let best = pick(&scores[..labels.len()], &counts, prior);
    Ok((best.map(|i| labels[i].0.clone()), scores))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_users_answers_are_counted_most_frequent_first() {
        let h = [
            "comedy",
            "Tag: sci-fi",
            "sci-fi",
            "classic",
            "comedy",
            "Comedy is what it is",
        ];
        let l = count_answers("lamp2", h.into_iter());
        assert_eq!(
            l,
            [
                ("comedy".to_string(), 3),
                ("sci-fi".to_string(), 2),
                ("classic".to_string(), 1)
            ]
        );
        assert_eq!(
            count_answers("lamp3", ["5", "4", "5"].into_iter()),
            [("5".to_string(), 2), ("4".to_string(), 1)]
        );
        assert!(count_answers("tweet", ["so late again", "ok"].into_iter()).is_empty());
        assert!(user_labels(&[]).is_empty());
    }

    #[test]
    fn the_prior_moves_the_choice_from_the_model_to_the_count() {
        // the model prefers the rare answer by one nat; the user gave the other 7 times to 1
        let scores = [-3.0, -2.0];
        let counts = [7, 1];
        assert_eq!(pick(&scores, &counts, 0.0), Some(1));
        // ln 8 - ln 2 = 1.39 nats a unit of prior: past 0.72 the count wins
        assert_eq!(pick(&scores, &counts, 0.5), Some(1));
        assert_eq!(pick(&scores, &counts, 1.0), Some(0));
        assert_eq!(pick(&scores, &counts, 100.0), Some(0));
        // a tie goes to the earlier (more frequent) answer
        assert_eq!(pick(&[-1.0, -1.0], &[2, 2], 1.0), Some(0));
        assert_eq!(pick(&[], &[], 1.0), None);
    }

    #[test]
    fn frequent_takes_the_count_and_breaks_its_ties_by_the_historys_order() {
        // the model's 50 nats for the rare answer do not outweigh one more item
        assert_eq!(pick(&[-60.0, -10.0], &[3, 2], f32::INFINITY), Some(0));
        // among equally frequent answers the earlier, however the model scores them
        assert_eq!(
            pick(&[-9.0, -2.0, -1.0], &[3, 3, 1], f32::INFINITY),
            Some(0)
        );
        assert_eq!(
            pick(&[-1.0, -1.0, -9.0], &[1, 4, 4], f32::INFINITY),
            Some(1)
        );
        // no scores needed
        assert_eq!(pick(&[], &[2, 5, 5], f32::INFINITY), Some(1));
        assert_eq!(pick(&[], &[], f32::INFINITY), None);
        let l = count_answers(
            "lamp2",
            ["drama", "comedy", "comedy", "drama", "war"].into_iter(),
        );
        assert_eq!(frequent(&l), Some("drama"));
        assert_eq!(frequent(&[]), None);
    }
}
