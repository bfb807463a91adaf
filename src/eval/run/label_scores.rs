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
        let tokens = self.load(&prefix, &suffix)?;
        let (_, cf) = crate::personalize::labels::choose(
            &mut self.ctx,
            self.model,
            &tokens,
            &all,
            0.0,
            None,
            &[],
        )?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| EvalError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        for &qi in &user.questions {
            let q = &ask.set.questions[qi];
            let (prefix, suffix) =
                self.prompt(Method::Labels, ask.task, ask.opts, material, q, &answering)?;
            let tokens = self.load(&prefix, &suffix)?;
            let (_, full) = crate::personalize::labels::choose(
                &mut self.ctx,
                self.model,
                &tokens,
                &all,
                0.0,
                None,
                &[],
            )?;
            let bare_prompt = self.model.chat_prompt(None, &question_text(q))?;
            let tokens = self.load("", &bare_prompt)?;
            let (_, bare) = crate::personalize::labels::choose(
                &mut self.ctx,
                self.model,
                &tokens,
                &all,
                0.0,
                None,
                &[],
            )?;
            let line = serde_json::json!({
                "user": user.key, "id": q.id, "gold": q.gold,
                "labels": all.iter().map(|(l, _)| l).collect::<Vec<_>>(),
                "counts": all.iter().map(|(_, n)| n).collect::<Vec<_>>(),
                "tokens": all.iter().map(|(l, _)| self.model.tokenize(l, false, false).map(|t| t.len()).unwrap_or(0)).collect::<Vec<_>>(),
                "full": full, "cf": cf, "bare": bare,
            });
            writeln!(file, "{line}").map_err(|source| EvalError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }
}
