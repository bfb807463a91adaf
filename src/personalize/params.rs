//! Every parameter of a fit (method.md's **choices**), recorded with each profile, and their checks.

use serde::{Deserialize, Serialize};

use super::PersonalizeError;
use super::fit::{CcsParams, PersonalDirection};

/// Where the pair queries come from (method.md stage 3, **choice**).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The user's own history items that were not selected as the k-item history.
    Offline,
    /// Offline, plus the queries being answered now (as the paper does).
    Online,
}

/// Which token positions are pooled into one vector per text (method.md stage 4, **choice**).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// Mean over the answer's tokens.
    Mean,
    /// The answer's last token.
    Last,
}

/// What each answer of a pair holds (method.md stage 3, **choice**).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PairAnswers {
    /// The answer in the task's output space only: a tag, a rating (free text: the text).
    #[default]
    Label,
    /// The answer, then the model's one-sentence reason for it, written under the same instruction
    /// ("comedy, because ..."). A model often picks the same tag whether it is told about the user or not
    /// (SmolLM2-135M and Qwen2.5-Coder-1.5B mostly do), which leaves no pair; the reasons still differ in
    /// what they say about the user. Free text is answered as with `label`.
    Reasoned,
}

impl PairAnswers {
    fn is_label(&self) -> bool {
        *self == PairAnswers::Label
    }
}

/// Which layers to edit (method.md stage 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerChoice {
    /// The running-mean rule over CCS losses.
    Auto,
    /// The running-mean rule, at most this many layers.
    Max(usize),
    /// The running-mean rule over the middle half of the layers (L/4 up to 3L/4), at most this many.
    /// The default: with the few pairs one user gives, CCS separates every layer almost perfectly and
    /// ranks the last layers first, where doubling the personal direction breaks generation.
    Mid(usize),
    /// Exactly these layers.
    List(Vec<usize>),
}

impl std::str::FromStr for LayerChoice {
    type Err = String;

    /// `auto`, `max:N`, `mid:N`, or a comma list such as `3,4,10`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(LayerChoice::Auto);
        }
        if let Some(n) = s.strip_prefix("mid:") {
            return n
                .parse()
                .map(LayerChoice::Mid)
                .map_err(|_| format!("`{n}` is not a layer count"));
        }
        if let Some(n) = s.strip_prefix("max:") {
            return n
                .parse()
                .map(LayerChoice::Max)
                .map_err(|_| format!("`{n}` is not a layer count"));
        }
        s.split(',')
            .map(|x| {
                x.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("`{x}` is not a layer number"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(LayerChoice::List)
    }
}

/// Every parameter of a fit; recorded with the profile. Defaults are method.md's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitParams {
    /// History items kept by the PCA selection.
    pub k: usize,
    /// Where pair queries come from.
    pub mode: Mode,
    /// Queries added in online mode.
    pub online_queries: Vec<String>,
    /// Most pairs per user whose two answers differ (offline queries are tried until then, at most
    /// [`QUERY_TRIES`] per wanted pair).
    pub max_queries: usize,
    /// Pooling of each pair text.
    pub pooling: Pooling,
    /// Layers to edit.
    pub layers: LayerChoice,
    /// Strength of the personal direction.
    pub alpha: f32,
    /// Strength of the generic direction's removal.
    pub beta: f32,
    /// Tokens per insight.
    pub insight_tokens: usize,
    /// Tokens per pair answer (and per reason, with [`PairAnswers::Reasoned`]).
    pub answer_tokens: usize,
    /// What each answer of a pair holds. Left out of the recorded parameters when it is the default, so
    /// profiles fitted before it existed still match their parameters.
    #[serde(default, skip_serializing_if = "PairAnswers::is_label")]
    pub pair_answers: PairAnswers,
    /// What the personal direction is fitted on; left out of the recorded parameters when it is the
    /// paper's, as `pair_answers` is.
    #[serde(default, skip_serializing_if = "PersonalDirection::is_svd")]
    pub personal_direction: PersonalDirection,
    /// Which directions the fit finds: the paper's (pairs, SVD and CCS) or the user's real answers
    /// against the model's own ([`super::align`]). Left out of the recorded parameters when it is the
    /// paper's.
    #[serde(default, skip_serializing_if = "Route::is_paper")]
    pub route: Route,
    /// Strength of the additive edit of the `align` route, in units of each layer's typical
    /// MLP-output norm. Left out of the recorded parameters when it is the default, so the paper's
    /// profiles keep the parameters they were recorded with.
    #[serde(default = "default_gamma", skip_serializing_if = "is_default_gamma")]
    pub gamma: f32,
    /// CCS settings; its seed is the fit's seed.
    pub ccs: CcsParams,
}

/// The `align` route's default strength, chosen on the train split (docs/evaluation.md, "Directions
/// from real answers"): on SmolLM2's LaMP-2 train questions 0.25 and 0.5 left accuracy where it was,
/// 1 and more pushed answers out of the label list.
pub const DEFAULT_GAMMA: f32 = 0.5;

fn default_gamma() -> f32 {
    DEFAULT_GAMMA
}

fn is_default_gamma(g: &f32) -> bool {
    *g == DEFAULT_GAMMA
}

/// Which directions a fit finds (method.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// The paper's: synthetic pairs from the insights, `p` by SVD, `n` by CCS, a projection edit.
    #[default]
    Paper,
    /// Directions from the user's real answers against the model's own (mean of differences), an
    /// additive edit.
    Align,
    /// `align`'s directions, and a policy: the way of answering (no personalisation, the insight or
    /// retrieved history in the prompt, the direction at a few strengths, prompt and direction, the
    /// user's words, the prior of their answers, the choice among their answers) chosen on the
    /// user's own held-out history ([`super::policy`]).
    Auto,
}

impl Route {
    /// Whether this is the paper's route, which recorded parameters leave out.
    pub fn is_paper(&self) -> bool {
        *self == Route::Paper
    }
}

impl Default for FitParams {
    fn default() -> Self {
        FitParams {
            k: 10,
            mode: Mode::Offline,
            online_queries: Vec::new(),
            max_queries: 12,
            pooling: Pooling::Mean,
            layers: LayerChoice::Mid(3),
            alpha: 1.0,
            beta: 1.0,
            insight_tokens: 96,
            answer_tokens: 48,
            pair_answers: PairAnswers::Label,
            personal_direction: PersonalDirection::Svd,
            route: Route::Paper,
            gamma: DEFAULT_GAMMA,
            ccs: CcsParams::default(),
        }
    }
}

pub(super) fn check_params(p: &FitParams, n_layer: usize) -> Result<(), PersonalizeError> {
    let bad = |m: String| Err(PersonalizeError::Params(m));
    if p.k == 0 {
        return bad("`k` must be at least 1".into());
    }
    if p.max_queries < 2 {
        return bad("`max_queries` must be at least 2".into());
    }
    if !(p.alpha.is_finite() && p.beta.is_finite()) {
        return bad("`alpha` and `beta` must be finite".into());
    }
    if p.answer_tokens == 0 || p.insight_tokens == 0 {
        return bad("token limits must be at least 1".into());
    }
    match &p.layers {
        LayerChoice::List(l) if l.is_empty() => bad("the layer list is empty".into()),
        LayerChoice::List(l) if l.iter().any(|&x| x >= n_layer) => bad(format!(
            "layers must be below {n_layer}, the model's layer count"
        )),
        LayerChoice::Max(0) => bad("`max:N` needs N >= 1".into()),
        LayerChoice::Mid(0) => bad("`mid:N` needs N >= 1".into()),
        _ => Ok(()),
    }
}

/// The middle half of `n_layer` layers: `L/4 .. ceil(3L/4)` (at least one layer).
pub(super) fn mid_band(n_layer: usize) -> std::ops::Range<usize> {
    let lo = n_layer / 4;
    let hi = (3 * n_layer).div_ceil(4).max(lo + 1).min(n_layer);
    lo..hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_choices_leave_recorded_params_unchanged() {
        let label = serde_json::to_value(FitParams::default()).unwrap();
        assert!(label.get("pair_answers").is_none(), "{label}");
        assert!(label.get("personal_direction").is_none(), "{label}");
        // parameters recorded before the field existed still read back
        let back: FitParams = serde_json::from_value(label).unwrap();
        assert_eq!(back, FitParams::default());
        // another choice is recorded by name and reads back
        let reasoned = FitParams {
            pair_answers: PairAnswers::Reasoned,
            ..FitParams::default()
        };
        let contrast = FitParams {
            personal_direction: PersonalDirection::Contrast,
            ..FitParams::default()
        };
        for (params, field, name) in [
            (reasoned, "pair_answers", "reasoned"),
            (contrast, "personal_direction", "contrast"),
        ] {
            let v = serde_json::to_value(&params).unwrap();
            assert_eq!(v[field], name);
            assert_eq!(serde_json::from_value::<FitParams>(v).unwrap(), params);
        }
    }

    #[test]
    fn layer_choice_parses() {
        assert_eq!("auto".parse::<LayerChoice>().unwrap(), LayerChoice::Auto);
        assert_eq!("max:4".parse::<LayerChoice>().unwrap(), LayerChoice::Max(4));
        assert_eq!(
            "3, 7,9".parse::<LayerChoice>().unwrap(),
            LayerChoice::List(vec![3, 7, 9])
        );
        assert_eq!("mid:3".parse::<LayerChoice>().unwrap(), LayerChoice::Mid(3));
        assert!("three".parse::<LayerChoice>().is_err());
        assert!("max:x".parse::<LayerChoice>().is_err());
    }

    #[test]
    fn mid_band_is_the_middle_half() {
        assert_eq!(mid_band(30), 7..23);
        assert_eq!(mid_band(24), 6..18);
        assert_eq!(mid_band(1), 0..1);
        assert_eq!(mid_band(2), 0..2);
    }

    #[test]
    fn params_are_checked() {
        let ok = FitParams::default();
        assert!(check_params(&ok, 30).is_ok());
        let mut p = ok.clone();
        p.k = 0;
        assert!(check_params(&p, 30).is_err());
        let mut p = ok.clone();
        p.layers = LayerChoice::List(vec![30]);
        assert!(check_params(&p, 30).is_err());
        let mut p = ok;
        p.layers = LayerChoice::Max(0);
        assert!(check_params(&p, 30).is_err());
    }
}
