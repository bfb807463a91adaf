//! `auto`'s policy per user in `eval`: chosen once, kept in the store like an answer.

use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{Ask, EvalError, Evaluator};
use crate::eval::lamp::TaskKind;
use crate::personalize::FIT_VERSION;
use crate::personalize::policy::{Policy, Way, default_policy_params};
use crate::personalize::prompts::TaskFamily;
use crate::store::EvalAnswer;

impl Evaluator<'_> {
    /// `name`'s policy for `auto`: its scores are stored like an answer, under a key of what decides
    /// them (the scope, the fit parameters, the candidates; the user as the "question"), so a re-run
    /// or a sweep of other methods does not score them again; the way is decided from them under the
    /// current references ([`Policy::decide`]), which are not part of the key.
    pub(super) fn policy(&mut self, ask: &Ask<'_>, name: &str) -> Result<Policy, EvalError> {
        let params = default_policy_params(ask.align_fit.gamma);
        // what the scores depend on, in the shape the key had before the references existed (its
        // `default` was `none`), so that scores stored then are found
        let key_of = |candidates: &[Way]| {
            let scored = serde_json::json!({
                "held_out": params.held_out,
                "min_fit": params.min_fit,
                "candidates": candidates,
                "default": Way::None,
            });
            let doc = serde_json::json!({
                "common": ask.common,
                "policy": scored,
                "fit": ask.align_fit,
                "fit_version": FIT_VERSION,
            });
            format!(
                "policy/{}",
                crate::digest::hex(&Sha256::digest(doc.to_string().as_bytes()))
            )
        };
        let key = key_of(&params.candidates);
        if let Some(stored) = self.store.eval_answer(&key, name)?
            && let Ok(policy) = serde_json::from_str::<Policy>(&stored.raw)
        {
            let family = policy.family.unwrap_or(match ask.task.kind() {
                TaskKind::Classification => TaskFamily::Classification,
                TaskKind::Rating => TaskFamily::Rating,
                TaskKind::Generation => TaskFamily::FreeText,
            });
            // the history's length is only named in a too-few report; the store knows it
            let history = match self.store.user(name)? {
                Some(u) => self.store.history(u.id)?.len(),
                None => 0,
            };
            return Ok(Policy::decide(
                family,
                history,
                policy.held_out,
                policy.scores,
                &params,
            ));
        }
        // the ways with a prior came later, the `labels` ways after them, and `frequent` last: scores
        // stored among an earlier candidate list are reused, and only the ways added since are read
        let without_frequent: Vec<Way> = params
            .candidates
            .iter()
            .copied()
            .filter(|w| *w != Way::Frequent)
            .collect();
        let without_labels: Vec<Way> = without_frequent
            .iter()
            .copied()
            .filter(|w| w.labels().is_none())
            .collect();
        let without_prior: Vec<Way> = without_labels
            .iter()
            .copied()
            .filter(|w| w.prior() == 0.0)
            .collect();
        let mut known = Vec::new();
        for before in [without_frequent, without_labels, without_prior] {
            if before.len() == params.candidates.len() {
                continue;
            }
            if let Some(stored) = self.store.eval_answer(&key_of(&before), name)?
                && let Ok(p) = serde_json::from_str::<Policy>(&stored.raw)
            {
                known = p.scores;
                break;
            }
        }
        let t = Instant::now();
        let policy = self
            .personalizer
            .choose_policy_with(name, ask.align_fit, &params, &known)?;
        let answer = EvalAnswer {
            raw: serde_json::to_string(&policy).expect("a policy serialises"),
            seconds: t.elapsed().as_secs_f64(),
        };
        self.store.put_eval_answer(&key, name, &answer)?;
        Ok(policy)
    }
}
