//! What an evaluation found: each method's row (LaMP's metrics, its difference from `instruct` with a
//! bootstrap interval), every answer, and the report as markdown.

use std::collections::BTreeMap;

use serde::Serialize;

use super::lamp::{Task, TaskKind, label_set};
use super::metrics::{PairedDelta, paired_bootstrap};

/// One answer of one method to one question.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Method name.
    pub method: &'static str,
    /// Question id.
    pub id: String,
    /// The question's user key.
    pub user: String,
    /// The model's text.
    pub raw: String,
    /// The answer scored ([`extract_answer`] of `raw`).
    pub answer: String,
    /// The gold output.
    pub gold: String,
    /// Seconds to answer (as measured when it was answered, also for answers reused from the store).
    pub seconds: f64,
    /// For the edited methods: whether a profile was applied (false: too few pairs differed, so the
    /// answer is `instruct`'s). Absent for the methods that never edit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiled: Option<bool>,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRow {
    /// Method name.
    pub method: &'static str,
    /// The task's two metrics, by LaMP's names.
    pub metrics: Vec<(&'static str, f64)>,
    /// Answers outside the label list (classification) or not a rating (ratings); `None` for text.
    pub invalid: Option<usize>,
    /// Questions answered.
    pub answered: usize,
    /// Mean seconds to answer a question.
    pub seconds_per_question: f64,
    /// Seconds spent fitting profiles in this run (0 when every profile came from the store).
    pub fit_seconds: f64,
    /// Users this method answered unedited because their history gave fewer than 2 usable pairs.
    pub no_profile: usize,
    /// Against `instruct` on the same questions, when `instruct` was among the methods (and this
    /// method is not it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_instruct: Option<VsInstruct>,
}

/// One method against `instruct`, question by question.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct VsInstruct {
    /// The metric compared: the task's first (accuracy, MAE or ROUGE-1), a mean over questions.
    pub metric: &'static str,
    /// Method minus `instruct`, with its 95% bootstrap interval over questions ([`BOOTSTRAP`]).
    pub paired: PairedDelta,
    /// The difference relative to `instruct`'s score; `None` when that score is 0.
    pub relative: Option<f64>,
    /// Questions whose raw answer differs from `instruct`'s (for `no-model`, which writes no text,
    /// whose extracted answer does).
    pub changed: usize,
    /// For an edited method where some users had no profile: the same comparison on the questions of
    /// the users that had one (the others are answered as `instruct`, so they only dilute it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiled: Option<ProfiledSubset>,
}

/// [`VsInstruct`] restricted to the questions of the users with a profile.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProfiledSubset {
    /// Users with a profile.
    pub users: usize,
    /// Their questions.
    pub questions: usize,
    /// The method's metric on those questions.
    pub method: f64,
    /// `instruct`'s metric on those questions.
    pub instruct: f64,
    /// Method minus `instruct` on those questions, with its bootstrap interval.
    pub paired: PairedDelta,
}

/// Resamples and seed of the bootstrap behind [`VsInstruct`]: fixed, so a report is reproducible.
pub const BOOTSTRAP: (usize, u64) = (2000, 0);

/// What an evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The data set's directory name.
    pub set: String,
    /// The split answered.
    pub split: String,
    /// LaMP task name.
    pub task: &'static str,
    /// The model's file name.
    pub model: String,
    /// The model's fingerprint.
    pub fingerprint: String,
    /// The GPU the layers ran on ([`Model::gpu_backend`]); absent on the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Questions answered per method.
    pub questions: usize,
    /// Distinct users among them.
    pub users: usize,
    /// The options of the run.
    pub options: serde_json::Value,
    /// One row per method.
    pub rows: Vec<MethodRow>,
    /// How many users `auto` answered each way.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, usize>,
    /// Every answer.
    pub predictions: Vec<Prediction>,
}

impl EvalReport {
    /// The report as a markdown table with a one-line heading.
    pub fn markdown(&self) -> String {
        let names: Vec<&str> = self
            .rows
            .first()
            .map(|r| r.metrics.iter().map(|m| m.0).collect())
            .unwrap_or_default();
        let invalid = match self.rows.first().and_then(|r| r.invalid) {
            Some(_)
                if self.task.parse::<Task>().map(Task::kind) == Ok(TaskKind::Classification) =>
            {
                "out of labels"
            }
            Some(_) => "unparsable",
            None => "",
        };
        let on = self
            .backend
            .as_ref()
            .map_or_else(String::new, |b| format!(" on {b}"));
        let mut s = format!(
            "{} {} ({}), {} questions, {} users, model {}{on}\n\n| method |",
            self.set, self.split, self.task, self.questions, self.users, self.model
        );
        for n in &names {
            s.push_str(&format!(" {n} |"));
        }
        if !invalid.is_empty() {
            s.push_str(&format!(" {invalid} |"));
        }
        s.push_str(" s/question | fit s | no profile |");
        let compared = self
            .rows
            .iter()
            .find_map(|r| r.vs_instruct)
            .map(|v| v.metric);
        if let Some(metric) = compared {
            s.push_str(&format!(
                " Δ {metric} vs instruct [95% CI] | relative | changed |"
            ));
        }
        s.push_str("\n|---|");
        let extra = if compared.is_some() { 3 } else { 0 };
        for _ in 0..names.len() + usize::from(!invalid.is_empty()) + 3 + extra {
            s.push_str("---:|");
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |", r.method));
            for (_, v) in &r.metrics {
                s.push_str(&format!(" {v:.3} |"));
            }
            if let Some(n) = r.invalid {
                s.push_str(&format!(" {n} |"));
            }
            s.push_str(&format!(
                " {:.2} | {:.0} | {} |",
                r.seconds_per_question, r.fit_seconds, r.no_profile
            ));
            match (compared, r.vs_instruct) {
                (None, _) => {}
                (Some(_), None) => s.push_str(" - | - | - |"),
                (Some(_), Some(v)) => s.push_str(&format!(
                    " {:+.3} [{:+.3}, {:+.3}] | {} | {}/{} |",
                    v.paired.delta,
                    v.paired.low,
                    v.paired.high,
                    v.relative
                        .map_or_else(|| "-".to_string(), |r| format!("{:+.0}%", 100.0 * r)),
                    v.changed,
                    r.answered
                )),
            }
            s.push('\n');
        }
        for r in &self.rows {
            if let Some(v) = r.vs_instruct
                && let Some(p) = v.profiled
            {
                s.push_str(&format!(
                    "\n{}, users with a profile ({} of {}, {} questions): {} {:.3} vs instruct {:.3}, \
                     Δ {:+.3} [{:+.3}, {:+.3}]",
                    r.method,
                    p.users,
                    self.users,
                    p.questions,
                    v.metric,
                    p.method,
                    p.instruct,
                    p.paired.delta,
                    p.paired.low,
                    p.paired.high
                ));
            }
        }
        if self
            .rows
            .iter()
            .any(|r| r.vs_instruct.is_some_and(|v| v.profiled.is_some()))
        {
            s.push('\n');
        }
        if !self.policies.is_empty() {
            let ways: Vec<String> = self
                .policies
                .iter()
                .map(|(w, n)| format!("{w} {n}"))
                .collect();
            s.push_str(&format!("\nauto's ways, users: {}\n", ways.join(", ")));
        }
        s
    }
}

/// `preds` (each question scoring `each` of `metric`) against `instruct`'s answers to the same
/// questions (`base`, scoring `base_each`); `None` when there are no questions. `changed` counts raw
/// answers that differ, or with `by_answer` extracted ones.
pub(super) fn compare_with_instruct(
    metric: &'static str,
    by_answer: bool,
    preds: &[Prediction],
    each: &[f64],
    base: &[Prediction],
    base_each: &[f64],
) -> Option<VsInstruct> {
    let (bootstrap, seed) = BOOTSTRAP;
    let diffs: Vec<f64> = each.iter().zip(base_each).map(|(a, b)| a - b).collect();
    let mean = |v: &[f64], of: &[usize]| of.iter().map(|&i| v[i]).sum::<f64>() / of.len() as f64;
    // the questions of users with a profile, when only some had one
    let mine: Vec<usize> = (0..preds.len())
        .filter(|&i| preds[i].profiled == Some(true))
        .collect();
    let profiled = if mine.is_empty() || mine.len() == preds.len() {
        None
    } else {
        let sub: Vec<f64> = mine.iter().map(|&i| diffs[i]).collect();
        let mut users: Vec<&str> = mine.iter().map(|&i| preds[i].user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        paired_bootstrap(&sub, bootstrap, seed).map(|paired| ProfiledSubset {
            users: users.len(),
            questions: mine.len(),
            method: mean(each, &mine),
            instruct: mean(base_each, &mine),
            paired,
        })
    };
    let all: Vec<usize> = (0..base_each.len()).collect();
    let base_mean = mean(base_each, &all);
    paired_bootstrap(&diffs, bootstrap, seed).map(|paired| VsInstruct {
        metric,
        paired,
        relative: (base_mean != 0.0).then(|| paired.delta / base_mean),
        changed: preds
            .iter()
            .zip(base)
            .filter(|(a, b)| {
                if by_answer {
                    a.answer != b.answer
                } else {
                    a.raw != b.raw
                }
            })
            .count(),
        profiled,
    })
}

/// Answers LaMP scores as wrong for their form: outside the label list, or not a 1-5 rating.
pub(super) fn invalid_answers(task: Task, answers: &[&str]) -> Option<usize> {
    match (task.kind(), label_set(task)) {
        (TaskKind::Classification, Some(labels)) => Some(
            answers
                .iter()
                .filter(|a| !labels.contains(&a.trim()))
                .count(),
        ),
        (TaskKind::Rating, _) => Some(
            answers
                .iter()
                .filter(|a| !matches!(a.trim(), "1" | "2" | "3" | "4" | "5"))
                .count(),
        ),
        _ => None,
    }
}
