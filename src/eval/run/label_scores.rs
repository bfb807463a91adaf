//! `eval --label-scores`: every label's scores per question, read three ways, for choosing offline
//! how the `labels` way scores its answers (docs/evaluation.md).

use std::io::Write;
use std::path::Path;

use super::{Answering, Ask, EvalError, EvalUser, Evaluator, Method, question_text};
use crate::eval::lamp::label_set;
use crate::personalize::Material;

impl Evaluator<'_> {
    /// Append to `path` one JSON line per question of `user`: the task's labels (or the user's own
    /// answers when the task has no label set), how often the user gave each, the gold answer, and
    /// each label's summed log-probability after the user's prompt (`full`), after the same prompt
    /// with the request `N/A` (`cf`, one read per user), and after the request alone, no history
    /// (`bare`): the material of offline choices of how to score the `labels` way.
    pub(super) fn write_label_scores(
        &mut self,
        ask: &Ask<'_>,
        user: &EvalUser,
        material: Option<&Material>,
        labels: &[(String, usize)],
        path: &Path,
    ) -> Result<(), EvalError> {
        let mut all: Vec<(String, usize)> = labels.to_vec();
        for l in label_set(ask.task).unwrap_or_default() {
            if !all.iter().any(|(a, _)| a.eq_ignore_ascii_case(l)) {
                all.push(((*l).to_string(), 0));
            }
        }
        let tokens = all
            .iter()
            .map(|(l, _)| self.model.tokenize(l, false, false).map(|t| t.len()))
            .collect::<Result<Vec<_>, _>>()?;
        let answering = Answering::default();
        let mut cf_q = ask.set.questions[user.questions[0]].clone();
        cf_q.input = "N/A".into();
        let (prefix, suffix) = self.prompt(
            Method::Labels,
            ask.task,
            ask.opts,
            material,
            &cf_q,
            &answering,
        )?;
        self.ctx.clear_plan();
        let cf = self.scores_after(&prefix, &suffix, &all)?;
        let write_error = |source| EvalError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(write_error)?;
        for &qi in &user.questions {
            let q = &ask.set.questions[qi];
            let (prefix, suffix) =
                self.prompt(Method::Labels, ask.task, ask.opts, material, q, &answering)?;
            let full = self.scores_after(&prefix, &suffix, &all)?;
            let bare =
                self.scores_after("", &self.model.chat_prompt(None, &question_text(q))?, &all)?;
            let line = serde_json::json!({
                "user": user.key, "id": q.id, "gold": q.gold,
                "labels": all.iter().map(|(l, _)| l).collect::<Vec<_>>(),
                "counts": all.iter().map(|(_, n)| n).collect::<Vec<_>>(),
                "tokens": tokens,
                "full": full, "cf": cf, "bare": bare,
            });
            writeln!(file, "{line}").map_err(write_error)?;
        }
        Ok(())
    }

    /// Every answer's summed log-probability after `prefix + suffix` (the prefix's cache reused).
    fn scores_after(
        &mut self,
        prefix: &str,
        suffix: &str,
        answers: &[(String, usize)],
    ) -> Result<Vec<f64>, EvalError> {
        let tokens = self.load(prefix, suffix)?;
        let (_, scores) = crate::personalize::labels::choose(
            &mut self.ctx,
            self.model,
            &tokens,
            answers,
            0.0,
            None,
            &[],
        )?;
        Ok(scores)
    }
}
