//! Stages 4 and 5: the per-layer directions and the choice of layers to edit.
//!
//! Input is what the capture stage records: for every layer, the pooled MLP outputs of the K personalised
//! pair texts and of the K neutral ones (row i of each forming pair i). For each layer this module finds
//! - the personal direction `theta_P` ([`personal_direction`], [`svd`]): the top right singular vector of the
//!   personalised rows (the paper), or of the personalised-minus-neutral rows ([`PersonalDirection`]);
//! - the generic direction `theta_N` and its CCS loss ([`fit_ccs`], [`ccs`]): a contrast-consistent probe
//!   trained on the pairs;
//!
//! and then, from all layers' CCS losses, the layers to edit ([`select_layers`], [`layers`]). Everything here
//! is plain arithmetic over rows of `f32`; no model is involved.

pub mod ccs;
pub mod layers;
pub mod svd;

pub use ccs::{CcsFit, CcsParams, CcsValidParams, fit_ccs};
pub use layers::select_layers;
pub use svd::personal_direction;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::personalize::select::ShapeError;

/// Why a direction could not be fitted.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FitError {
    /// A set of vectors is not a matrix.
    #[error("the {what} are not a matrix")]
    Shape {
        /// Which set: "personalised rows" or "neutral rows".
        what: &'static str,
        /// What is wrong with it.
        #[source]
        source: ShapeError,
    },
    /// The two sets of a CCS fit differ in length, so they do not form pairs.
    #[error("{neutral} neutral rows but {personalised} personalised rows; CCS needs them in pairs")]
    PairCount {
        /// Number of neutral rows.
        neutral: usize,
        /// Number of personalised rows.
        personalised: usize,
    },
    /// The two sets of a CCS fit have different dimensions.
    #[error(
        "neutral rows have {neutral} values but personalised rows have {personalised}; capture both at the same layer"
    )]
    Dim {
        /// Length of a neutral row.
        neutral: usize,
        /// Length of a personalised row.
        personalised: usize,
    },
    /// Centring a single pair leaves nothing to fit.
    #[error("CCS with centring needs at least 2 pairs, got {got}; generate more pairs")]
    TooFewPairs {
        /// Number of pairs given.
        got: usize,
    },
    /// Every value the personal direction is fitted on is zero.
    #[error(
        "every row the personal direction is fitted on is zero, so there is no personal direction"
    )]
    ZeroMatrix,
    /// The trained probe has zero or non-finite weights.
    #[error("the CCS probe collapsed to zero or non-finite weights")]
    DegenerateProbe,
    /// A CCS setting is out of range.
    #[error("CCS setting `{name}` is `{value}` but must be {expected}")]
    InvalidParam {
        /// The setting's name.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The personalised and neutral captures cover different numbers of layers.
    #[error("{personalised} layers of personalised rows but {neutral} layers of neutral rows")]
    LayerCount {
        /// Layers with personalised rows.
        personalised: usize,
        /// Layers with neutral rows.
        neutral: usize,
    },
    /// Fitting one layer failed.
    #[error("layer {layer}")]
    Layer {
        /// The layer's index.
        layer: usize,
        /// Why it failed.
        #[source]
        source: Box<FitError>,
    },
}

/// Which rows the personal direction is the top singular vector of (method.md stage 4, **choice**).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PersonalDirection {
    /// The personalised rows, uncentred: the paper's `theta_P`. With a handful of pairs this is mostly
    /// the dominant direction of the layer's output on the task's prompt, nearly the same for every user.
    #[default]
    Svd,
    /// The differences of each pair, personalised minus neutral: what the personal instruction adds to
    /// the answer. Uncentred, so a shift shared by the pairs is kept.
    Contrast,
}

impl PersonalDirection {
    /// Whether this is the default (the paper's), which recorded parameters leave out.
    pub fn is_svd(&self) -> bool {
        *self == PersonalDirection::Svd
    }
}

/// The directions of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerFit {
    /// `theta_P`: unit personal direction ([`personal_direction`]).
    pub personal: Vec<f32>,
    /// `theta_N`: unit generic direction ([`CcsFit::direction`]).
    pub generic: Vec<f32>,
    /// The best restart's final CCS loss, the input of [`select_layers`].
    pub ccs_loss: f32,
}

/// Fits one layer: `personal` and `neutral` hold the K pooled vectors of the personalised and the neutral
/// pair texts (row i of each is pair i); `which` says what the personal direction is fitted on.
///
/// # Errors
///
/// Any [`FitError`] of [`personal_direction`] or [`fit_ccs`] (the CCS checks come first, so rows that do
/// not pair up are named as such).
pub fn fit_layer<R: AsRef<[f32]>>(
    personal: &[R],
    neutral: &[R],
    which: PersonalDirection,
    params: &CcsValidParams,
) -> Result<LayerFit, FitError> {
    let ccs = fit_ccs(neutral, personal, params)?;
    let p = match which {
        PersonalDirection::Svd => personal_direction(personal)?,
        PersonalDirection::Contrast => {
            let diffs: Vec<Vec<f32>> = personal
                .iter()
                .zip(neutral)
                .map(|(p, n)| {
                    p.as_ref()
                        .iter()
                        .zip(n.as_ref())
                        .map(|(a, b)| a - b)
                        .collect()
                })
                .collect();
            personal_direction(&diffs)?
        }
    };
    Ok(LayerFit {
        personal: p,
        generic: ccs.direction,
        ccs_loss: ccs.loss,
    })
}

/// Fits every layer: `personal[l]` and `neutral[l]` are layer l's rows as for [`fit_layer`]. Every layer uses
/// the same `which` and `params` (seed included), so `fit_all(..)[l]` equals `fit_layer` on layer l alone.
///
/// # Errors
///
/// [`FitError::LayerCount`] when the two captures cover different numbers of layers; otherwise the first
/// failing layer's error wrapped in [`FitError::Layer`].
pub fn fit_all<L, R>(
    personal: &[L],
    neutral: &[L],
    which: PersonalDirection,
    params: &CcsValidParams,
) -> Result<Vec<LayerFit>, FitError>
where
    L: AsRef<[R]>,
    R: AsRef<[f32]>,
{
    if personal.len() != neutral.len() {
        return Err(FitError::LayerCount {
            personalised: personal.len(),
            neutral: neutral.len(),
        });
    }
    personal
        .iter()
        .zip(neutral)
        .enumerate()
        .map(|(layer, (p, n))| {
            fit_layer(p.as_ref(), n.as_ref(), which, params).map_err(|e| FitError::Layer {
                layer,
                source: Box::new(e),
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod test_util {
    use rand::RngExt;

    /// `n` standard normal draws (Box-Muller), deterministic for a seeded `rng`.
    pub(crate) fn gaussian<G: rand::Rng>(rng: &mut G, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect()
    }

    pub(crate) fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
            * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    }

    /// `k` rows `c_i u + sigma * noise`, with `c_i` of both signs and magnitudes 1..3.
    pub(crate) fn planted_rows<G: rand::Rng>(
        rng: &mut G,
        u: &[f32],
        k: usize,
        sigma: f32,
    ) -> Vec<Vec<f32>> {
        (0..k)
            .map(|_| {
                let c =
                    rng.random_range(1.0f32..3.0) * if rng.random::<bool>() { 1.0 } else { -1.0 };
                let noise = gaussian(rng, u.len());
                u.iter()
                    .zip(&noise)
                    .map(|(&x, &e)| c * x + sigma * e)
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{cosine, gaussian, planted_rows, unit};
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Rows of every layer: `[layer][pair][dimension]`.
    type LayerRows = Vec<Vec<Vec<f32>>>;

    /// Per-layer captures: personalised rows share a planted personal direction; the neutral rows are the
    /// personalised ones moved along a second direction with a random sign per pair.
    fn captures(layers: usize, k: usize, d: usize, seed: u64) -> (LayerRows, LayerRows, Vec<f32>) {
        let (p, n, u, _) = captures_with_contrast(layers, k, d, seed);
        (p, n, u)
    }

    /// As [`captures`], and the direction `g` the pairs differ along.
    fn captures_with_contrast(
        layers: usize,
        k: usize,
        d: usize,
        seed: u64,
    ) -> (LayerRows, LayerRows, Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let u = unit(&gaussian(&mut rng, d));
        let g = unit(&gaussian(&mut rng, d));
        let (mut pers, mut neut) = (Vec::new(), Vec::new());
        for _ in 0..layers {
            let p = planted_rows(&mut rng, &u, k, 0.05);
            let n: Vec<Vec<f32>> = p
                .iter()
                .map(|row| {
                    let s = if rand::RngExt::random::<bool>(&mut rng) {
                        1.0
                    } else {
                        -1.0
                    };
                    row.iter().zip(&g).map(|(&x, &y)| x + 2.0 * s * y).collect()
                })
                .collect();
            pers.push(p);
            neut.push(n);
        }
        (pers, neut, u, g)
    }

    #[test]
    fn fit_all_matches_fit_layer_and_finds_the_personal_direction() {
        let (pers, neut, u) = captures(3, 12, 32, 1);
        let params = CcsParams::default()
            .epochs(100)
            .restarts(2)
            .check()
            .unwrap();
        let all = fit_all(&pers, &neut, PersonalDirection::Svd, &params).unwrap();
        assert_eq!(all.len(), 3);
        for (l, fit) in all.iter().enumerate() {
            assert_eq!(
                fit,
                &fit_layer(&pers[l], &neut[l], PersonalDirection::Svd, &params).unwrap()
            );
            assert!(cosine(&fit.personal, &u).abs() > 0.99);
            assert!(fit.ccs_loss.is_finite());
        }
    }

    #[test]
    fn the_contrast_direction_is_what_the_pairs_differ_in() {
        let (pers, neut, u, g) = captures_with_contrast(2, 12, 32, 4);
        let params = CcsParams::default().epochs(50).restarts(1).check().unwrap();
        let svd = fit_all(&pers, &neut, PersonalDirection::Svd, &params).unwrap();
        let contrast = fit_all(&pers, &neut, PersonalDirection::Contrast, &params).unwrap();
        for (s, c) in svd.iter().zip(&contrast) {
            // the rows lie along u, but they differ only along g
            assert!(cosine(&s.personal, &u).abs() > 0.99);
            assert!(cosine(&c.personal, &g).abs() > 0.99);
            assert!(cosine(&c.personal, &u).abs() < 0.5);
            // the generic direction does not depend on the choice
            assert_eq!(s.generic, c.generic);
        }
        // a pair whose two rows are equal adds nothing; all of them equal leaves no direction
        let same = fit_layer(&pers[0], &pers[0], PersonalDirection::Contrast, &params);
        assert!(matches!(same, Err(FitError::ZeroMatrix)), "{same:?}");
    }

    #[test]
    fn fit_all_names_the_failing_layer() {
        let (mut pers, neut, _) = captures(3, 6, 8, 2);
        pers[2][4].pop();
        let params = CcsParams::default().epochs(1).restarts(1).check().unwrap();
        match fit_all(&pers, &neut, PersonalDirection::Svd, &params) {
            Err(FitError::Layer { layer: 2, source }) => {
                assert!(matches!(*source, FitError::Shape { .. }))
            }
            other => panic!("expected a layer 2 error, got {other:?}"),
        }
        assert!(matches!(
            fit_all(&pers[..2], &neut, PersonalDirection::Svd, &params),
            Err(FitError::LayerCount {
                personalised: 2,
                neutral: 3
            })
        ));
    }

    /// Timing of the realistic per-user shape: 30 layers, d = 576 (SmolLM2-135M-ish), K = 20 pairs, default
    /// parameters (1000 epochs x 10 restarts). Run with
    /// `cargo test --lib personalize::fit::tests::time_fit_all -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn time_fit_all() {
        let (pers, neut, _) = captures(30, 20, 576, 3);
        let params = CcsParams::default().check().unwrap();
        let start = std::time::Instant::now();
        let fits = fit_all(&pers, &neut, PersonalDirection::Svd, &params).unwrap();
        let elapsed = start.elapsed();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        eprintln!(
            "fit_all: 30 layers, d = 576, K = 20, default params: {elapsed:.2?} on {threads} threads"
        );
        let losses: Vec<f32> = fits.iter().map(|f| f.ccs_loss).collect();
        eprintln!("selected layers: {:?}", select_layers(&losses, None));
    }
}
