//! How a stored profile is applied: the edit plan of its route and strengths, and for `align`/`auto`
//! profiles the way of answering their policy chose.

use super::PersonalizeError;
use super::params::{DEFAULT_GAMMA, Route};
use super::policy::{Policy, UserContext, Way, way_content};
use super::prompts::TaskFamily;
use crate::llm::{Model, Token};
use crate::steer::{EditPlan, LayerEdit};
use crate::store::{HistoryItem, ModelIdentity, Owner, Profile, Store};

/// Strengths to apply a profile with, overriding those it was fitted with (`None`: the recorded one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Strengths {
    /// The paper's personal strength.
    pub alpha: Option<f32>,
    /// The paper's generic strength.
    pub beta: Option<f32>,
    /// The `align` route's additive strength.
    pub gamma: Option<f32>,
    /// The way to answer, instead of the one an `auto` profile's policy chose.
    pub way: Option<Way>,
}

/// The `words` logit bias a profile fitted from real answers records
/// ([`super::align::word_bias`]), times `strength`; empty for any other profile.
pub fn profile_words(profile: &Profile, strength: f32) -> Vec<(Token, f32)> {
    profile
        .params
        .get("words")
        .and_then(|v| serde_json::from_value::<Vec<(Token, f32)>>(v.clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, b)| b.is_finite())
        .map(|(t, b)| (t, b * strength))
        .collect()
}

/// `bias` with the user's answer prior from `history` added at `strength` (none at 0;
/// [`super::align::history_prior`]).
///
/// # Errors
/// Tokenizing failing.
pub fn with_prior(
    model: &Model,
    bias: Vec<(Token, f32)>,
    strength: f32,
    history: &[HistoryItem],
) -> Result<Vec<(Token, f32)>, crate::llm::LlmError> {
    if strength == 0.0 {
        return Ok(bias);
    }
    let prior = super::align::history_prior(model, history)?;
    Ok(super::align::add_bias(&bias, &prior, strength))
}

/// The policy an `auto` profile records, if any.
pub fn profile_policy(profile: &Profile) -> Option<Policy> {
    serde_json::from_value(profile.params.get("policy")?.clone()).ok()
}

/// The way `profile` answers: `way` when given, else its policy's (`auto`), the direction at its
/// strength (`align`), or `None` for the paper's projection edit, which is no way of the policy.
pub fn profile_way(profile: &Profile, way: Option<Way>) -> Option<Way> {
    match profile_route(profile) {
        Route::Paper => None,
        Route::Auto => way.or_else(|| profile_policy(profile).map(|p| p.way)),
        Route::Align => way.or_else(|| {
            let gamma = profile
                .params
                .pointer("/fit/gamma")
                .and_then(serde_json::Value::as_f64)
                .map_or(DEFAULT_GAMMA, |g| g as f32);
            Some(Way::Align { gamma })
        }),
    }
}

/// Which route fitted `profile` (its recorded parameters; the paper's when none is recorded).
pub fn profile_route(profile: &Profile) -> Route {
    profile
        .params
        .get("fit")
        .and_then(|f| f.get("route"))
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

/// The edit plan of a stored profile: its selected layers, with the strengths it was fitted with
/// unless `strengths` overrides them. A paper profile projects (`alpha`, `beta`); an `align` profile
/// adds `gamma * scale_l * c_l`, with each layer's scale as the fit recorded it.
///
/// # Errors
/// [`PersonalizeError::Plan`] when the profile does not fit the model's shape or its directions are
/// not what the edit needs; [`PersonalizeError::Params`] for an `align` profile without its scales.
pub fn profile_plan(
    profile: &Profile,
    strengths: &Strengths,
) -> Result<EditPlan, PersonalizeError> {
    let fit = profile.params.get("fit");
    let recorded = |key: &str| {
        fit.and_then(|f| f.get(key))
            .and_then(serde_json::Value::as_f64)
            .map(|v| v as f32)
    };
    let selected = profile
        .layers
        .iter()
        .filter(|l| profile.selected_layers.contains(&l.layer));
    let edits = match profile_route(profile) {
        Route::Paper => {
            let alpha = strengths.alpha.or_else(|| recorded("alpha")).unwrap_or(1.0);
            let beta = strengths.beta.or_else(|| recorded("beta")).unwrap_or(1.0);
            selected
                .map(|l| LayerEdit::projection(l.layer, l.p.clone(), l.n.clone(), alpha, beta))
                .collect()
        }
        route @ (Route::Align | Route::Auto) => {
            let way = match route {
                Route::Auto => strengths
                    .way
                    .or_else(|| profile_policy(profile).map(|p| p.way)),
                _ => strengths.way,
            };
            let gamma = match way {
                // the policy's way (or the one asked for) decides whether there is an edit
                Some(way) => match way.gamma() {
                    Some(g) => strengths.gamma.unwrap_or(g),
                    None => {
                        return Ok(EditPlan::new(
                            profile.model.n_layer,
                            profile.model.hidden,
                            Vec::new(),
                        )?);
                    }
                },
                None => strengths
                    .gamma
                    .or_else(|| recorded("gamma"))
                    .unwrap_or(DEFAULT_GAMMA),
            };
            if profile.layers.is_empty() {
                let chosen = profile_policy(profile).map(|p| p.way.name());
                return Err(PersonalizeError::Params(format!(
                    "the profile holds no direction{}; fit with `--route align` to apply one",
                    chosen.map_or_else(String::new, |w| format!(
                        ": its policy chose `{w}`, and a fit builds only what its way uses"
                    ))
                )));
            }
            let scales: Vec<f32> = profile
                .params
                .pointer("/align/scale")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .ok_or_else(|| {
                    PersonalizeError::Params(
                        "the profile was fitted from real answers but records no layer scales"
                            .into(),
                    )
                })?;
            selected
                .map(|l| {
                    let scale = scales.get(l.layer).copied().ok_or_else(|| {
                        PersonalizeError::Params(format!(
                            "the profile records no scale for layer {}",
                            l.layer
                        ))
                    })?;
                    Ok(LayerEdit::additive(l.layer, l.p.clone(), scale, gamma))
                })
                .collect::<Result<Vec<_>, PersonalizeError>>()?
        }
    };
    Ok(EditPlan::new(
        profile.model.n_layer,
        profile.model.hidden,
        edits,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LayerDirections, ModelIdentity};

    #[test]
    fn profile_plan_uses_selected_layers_and_recorded_strengths() {
        let d = 3;
        let profile = Profile {
            model: ModelIdentity {
                fingerprint: "f".into(),
                n_layer: 4,
                hidden: d,
            },
            selected_layers: vec![1, 3],
            layers: (0..4)
                .map(|layer| LayerDirections {
                    layer,
                    p: vec![1.0, 0.0, 0.0],
                    n: vec![0.0, 1.0, 0.0],
                    ccs_loss: 0.1,
                })
                .collect(),
            params: serde_json::json!({"fit": {"alpha": 2.0, "beta": 0.5}}),
            created: 0,
        };
        let plan = profile_plan(&profile, &Strengths::default()).unwrap();
        assert_eq!(
            plan.edits().iter().map(|e| e.layer).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(plan.edits()[0].alpha, 2.0);
        assert_eq!(plan.edits()[0].beta, 0.5);
        let plan = profile_plan(
            &profile,
            &Strengths {
                alpha: Some(3.0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plan.edits()[1].alpha, 3.0);
    }

    #[test]
    fn a_profile_without_a_direction_applies_its_way_and_refuses_an_edit() {
        let policy = Policy {
            way: Way::Retrieval,
            held_out: 5,
            fallback: None,
            scores: Vec::new(),
            family: None,
        };
        let profile = Profile {
            model: ModelIdentity {
                fingerprint: "f".into(),
                n_layer: 4,
                hidden: 3,
            },
            selected_layers: Vec::new(),
            layers: Vec::new(),
            params: serde_json::json!({"fit": {"route": "auto"}, "policy": policy}),
            created: 0,
        };
        // its own way edits nothing
        let plan = profile_plan(&profile, &Strengths::default()).unwrap();
        assert!(plan.edits().is_empty());
        // an edit asked for: an error that says how to get a direction
        let err = profile_plan(
            &profile,
            &Strengths {
                way: Some(Way::Align { gamma: 1.0 }),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`retrieval`") && err.contains("--route align"),
            "{err}"
        );
    }
}

/// What an `align` or `auto` profile adds to a request's text, the way its policy was scored: the
/// user's representative history (or the items nearest the request), and the insight where the way
/// shows it.
#[derive(Debug)]
pub struct PromptPart {
    way: Way,
    bias: Vec<(Token, f32)>,
    family: TaskFamily,
    selected: Vec<HistoryItem>,
    history: Vec<HistoryItem>,
    k: usize,
    insight: String,
    labels: Vec<(String, usize)>,
    /// The `words` bias alone, which a `labels` way scores its answers under.
    words: Vec<(Token, f32)>,
}

impl PromptPart {
    /// The user turn for `request`.
    pub fn content(&self, request: &str) -> String {
        let user = UserContext {
            family: self.family,
            selected: &self.selected,
            history: &self.history,
            k: self.k,
            insight: &self.insight,
        };
        way_content(self.way, &user, request)
    }

    /// The way applied.
    pub fn way(&self) -> Way {
        self.way
    }

    /// For the `labels` way, the answers of the user's history it chooses among (with their counts)
    /// the counts' weight and the `words` bias they are scored under ([`super::labels::choose`]);
    /// `None` for every other way.
    pub fn labels(&self) -> Option<LabelChoice<'_>> {
        self.way.labels().map(|prior| LabelChoice {
            labels: &self.labels,
            prior,
            words: &self.words,
        })
    }

    /// The logit bias of the way (`words`; empty for every other way), for
    /// [`crate::llm::GenerateOptions::logit_bias`]. A `labels` way, where a reply is generated (chat,
    /// the server), biases toward the user's answers as `prior@P` does.
    pub fn logit_bias(&self) -> Vec<(Token, f32)> {
        self.bias.clone()
    }
}

/// What a `labels` way chooses among and how ([`super::labels::choose`]).
#[derive(Debug, Clone, Copy)]
pub struct LabelChoice<'p> {
    /// The answers of the user's history, with how many items give each.
    pub labels: &'p [(String, usize)],
    /// The weight of the counts.
    pub prior: f32,
    /// The `words` bias the answers are scored under.
    pub words: &'p [(Token, f32)],
}

/// The stored profile of `owner` for `model`, if there is one.
///
/// # Errors
/// An unknown owner; a damaged profile; a model whose file cannot be read.
pub fn stored_profile(
    store: &Store,
    model: &Model,
    owner: &Owner,
) -> Result<Option<Profile>, PersonalizeError> {
    let identity = ModelIdentity {
        fingerprint: model.fingerprint()?.to_string(),
        n_layer: model.n_layer(),
        hidden: model.n_embd(),
    };
    Ok(store.load_profile(owner, &identity)?)
}

/// What user `name`'s profile adds to a request's text under its way (`way` overrides the policy's):
/// `None` for the paper's profiles (an edit only).
///
/// # Errors
/// A store that cannot be read; tokenizing the history failing.
pub fn prompt_part_for(
    store: &Store,
    model: &Model,
    name: &str,
    profile: &Profile,
    way: Option<Way>,
) -> Result<Option<PromptPart>, PersonalizeError> {
    if let (Some(asked), Some(policy)) = (way, profile_policy(profile))
        && asked.reads_words()
        && !policy.way.reads_words()
        && profile.params.get("words").is_none()
    {
        return Err(PersonalizeError::Params(format!(
            "the profile holds no `words` bias: its policy chose `{}`, and a fit builds only what \
             its way uses; fit with `--route align` to apply `{}`",
            policy.way.name(),
            asked.name()
        )));
    }
    let Some(way) = profile_way(profile, way) else {
        return Ok(None);
    };
    let user = store.require_user(name)?;
    let history = store.history(user.id)?;
    let ids: Vec<i64> = profile
        .params
        .get("selected")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let selected = history
        .iter()
        .filter(|h| ids.contains(&h.id.get()))
        .cloned()
        .collect();
    let kind = history.first().map(|h| h.task.clone()).unwrap_or_default();
    let words = way
        .words()
        .map(|s| profile_words(profile, s))
        .unwrap_or_default();
    // the prior counts the history the store holds now, as retrieval reads it; a `labels` way that
    // must generate (chat, the server) answers as its twin `prior@P`
    let bias = with_prior(model, words.clone(), way.generated_prior(), &history)?;
    let labels = if way.labels().is_some() {
        super::labels::user_labels(&history)
    } else {
        Vec::new()
    };
    Ok(Some(PromptPart {
        way,
        bias,
        family: TaskFamily::from_kind(&kind),
        selected,
        k: profile
            .params
            .pointer("/fit/k")
            .and_then(serde_json::Value::as_u64)
            .map_or(10, |k| k as usize),
        insight: profile
            .params
            .get("insight")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string(),
        history,
        labels,
        words,
    }))
}
