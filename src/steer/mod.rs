//! The CHAMELEON edit and its exports.
//!
//! At a selected layer every token's MLP output `x` is edited as
//! `x <- x + alpha <x,p> p`, then `x <- x - beta <x,n> n` (method.md, stage 6), with `p` the personal and
//! `n` the generic direction, both unit length. The edit is linear:
//! `x <- (I - beta n n^T)(I + alpha p p^T) x`, so for architectures whose MLP output is `W_down h` it is
//! also a rank-2 update of `W_down` ([`EditPlan::rank2_factors`]), exportable as a LoRA adapter ([`crate::adapters`]).
//!
//! A layer may also carry an additive edit, `x <- x + gamma * scale * c` (method.md, "Directions from
//! real answers"): `c` a unit direction, `scale` the layer's typical MLP-output norm, so `gamma` means
//! the same at every layer and in every model. Adding a constant to the MLP output is adding it to the
//! residual stream after the layer, which is what llama.cpp's control vectors do
//! ([`EditPlan::control_vector`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// The edit of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerEdit {
    /// Decoder layer index (0-based).
    pub layer: usize,
    /// Personal direction `p` (unit length, or all zero for no personal edit).
    pub p: Vec<f32>,
    /// Generic direction `n` (unit length, or all zero for no generic edit).
    pub n: Vec<f32>,
    /// Strength of the personal direction.
    pub alpha: f32,
    /// Strength of the generic direction's removal.
    pub beta: f32,
    /// The additive edit, applied after the projections: `x += gamma * scale * c`. `c` is empty for
    /// none, else unit length.
    pub add: Additive,
}

/// The additive part of a layer's edit: `x += gamma * scale * c`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Additive {
    /// Unit direction (empty: no additive edit).
    pub c: Vec<f32>,
    /// The layer's typical MLP-output norm, so that `gamma` is comparable across layers and models.
    pub scale: f32,
    /// Strength, in units of `scale`.
    pub gamma: f32,
}

impl Additive {
    /// No additive edit.
    pub fn none() -> Additive {
        Additive::default()
    }

    /// True when the additive edit changes nothing.
    pub fn is_none(&self) -> bool {
        self.c.is_empty() || self.gamma == 0.0 || self.scale == 0.0
    }

    /// The vector added to every MLP output of the layer: `gamma * scale * c` (empty for none).
    pub fn vector(&self) -> Vec<f32> {
        if self.is_none() {
            return Vec::new();
        }
        let k = self.gamma * self.scale;
        self.c.iter().map(|&v| k * v).collect()
    }
}

impl LayerEdit {
    /// The paper's projection edit alone.
    pub fn projection(layer: usize, p: Vec<f32>, n: Vec<f32>, alpha: f32, beta: f32) -> LayerEdit {
        LayerEdit {
            layer,
            p,
            n,
            alpha,
            beta,
            add: Additive::none(),
        }
    }

    /// The additive edit alone (`hidden` values; no projection).
    pub fn additive(layer: usize, c: Vec<f32>, scale: f32, gamma: f32) -> LayerEdit {
        let hidden = c.len();
        LayerEdit {
            layer,
            p: vec![0.0; hidden],
            n: vec![0.0; hidden],
            alpha: 0.0,
            beta: 0.0,
            add: Additive { c, scale, gamma },
        }
    }

    /// True when the projection part changes something (a strength and a direction that are not 0).
    pub fn projects(&self) -> bool {
        (self.alpha != 0.0 && self.p.iter().any(|&v| v != 0.0))
            || (self.beta != 0.0 && self.n.iter().any(|&v| v != 0.0))
    }

    /// Apply the edit to one vector in place.
    #[inline]
    pub fn apply(&self, x: &mut [f32]) {
        debug_assert_eq!(x.len(), self.p.len());
        if self.alpha != 0.0 {
            let s = self.alpha * dot(x, &self.p);
            axpy(s, &self.p, x);
        }
        if self.beta != 0.0 {
            let s = -self.beta * dot(x, &self.n);
            axpy(s, &self.n, x);
        }
        if !self.add.c.is_empty() && self.add.gamma != 0.0 {
            axpy(self.add.gamma * self.add.scale, &self.add.c, x);
        }
    }
}

/// A direction of a plan is unit (within [`UNIT_TOLERANCE`]) or exactly zero ("no direction").
fn check_unit_or_zero(layer: usize, which: &'static str, v: &[f32]) -> Result<(), PlanError> {
    let norm = norm64(v);
    if norm == 0.0 || (norm - 1.0).abs() <= f64::from(UNIT_TOLERANCE) {
        Ok(())
    } else {
        Err(PlanError::NotUnit { layer, which, norm })
    }
}

fn check_strength(
    layer: usize,
    which: &'static str,
    value: f32,
    range: std::ops::RangeInclusive<f32>,
) -> Result<(), PlanError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(PlanError::BadStrength {
        layer,
        which,
        value,
        min: *range.start(),
        max: *range.end(),
    })
}

/// Which layers to edit and how: one [`LayerEdit`] per edited layer.
///
/// A plan is immutable once built; the engine holds it behind an `Arc`, so switching users costs a
/// pointer swap. Every plan gets a process-unique [`id`](EditPlan::id): the engine keys its KV cache by
/// it, so states computed under different plans never mix.
#[derive(Debug)]
pub struct EditPlan {
    id: u64,
    hidden: usize,
    /// `by_layer[l]` is the index into `edits` of layer `l`'s edit, if any.
    by_layer: Vec<Option<usize>>,
    edits: Vec<LayerEdit>,
}

/// Errors in building an edit plan.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("layer {layer} is out of range: the model has {n_layer} layers")]
    LayerOutOfRange { layer: usize, n_layer: usize },
    #[error("layer {layer} is edited twice")]
    DuplicateLayer { layer: usize },
    #[error("direction of layer {layer} has {got} values, the model's hidden size is {hidden}")]
    WrongSize {
        layer: usize,
        got: usize,
        hidden: usize,
    },
    #[error("direction of layer {layer} has a non-finite value")]
    NotFinite { layer: usize },
    #[error("the {which} direction of layer {layer} has norm {}, not 1 (or 0: no direction)", show(*norm))]
    NotUnit {
        layer: usize,
        which: &'static str,
        norm: f64,
    },
    #[error("the {which} of layer {layer} is {value}, outside [{min}, {max}]")]
    BadStrength {
        layer: usize,
        which: &'static str,
        value: f32,
        min: f32,
        max: f32,
    },
}

/// How far from 1 a unit direction's norm may be (f32 rounding of a normalised vector of a few
/// thousand values is far below this; a direction stored as f32 and read back keeps it).
pub const UNIT_TOLERANCE: f32 = 1e-3;

/// The largest strength (`alpha`, `beta`, `gamma`) a plan takes: the paper uses 1, sweeps go to 8;
/// far beyond that an edit only breaks the model.
pub const MAX_STRENGTH: f32 = 100.0;

/// The largest per-layer scale of an additive edit: MLP-output norms of the models chameleon runs are
/// in the tens to thousands.
pub const MAX_SCALE: f32 = 1e6;

static NEXT_PLAN_ID: AtomicU64 = AtomicU64::new(1);

/// A strength that steers nothing: five orders of magnitude below the paper's 1, yet large enough to
/// change f32s of the MLP output (SmolLM2's logits stay bit for bit at 1e-9 and move at 1e-7). A
/// quantised model's matrix products round their inputs to 8 bits, so such a change still moves the
/// logits by a few percent: an edit at this strength measures what rounding alone does.
pub const NULL_STRENGTH: f32 = 1e-5;

impl EditPlan {
    /// The plan that edits nothing (id 0: identical to running without a plan).
    pub fn empty(n_layer: usize, hidden: usize) -> Self {
        EditPlan {
            id: 0,
            hidden,
            by_layer: vec![None; n_layer],
            edits: Vec::new(),
        }
    }

    /// Build a plan for a model with `n_layer` layers of hidden size `hidden`.
    ///
    /// # Errors
    /// A layer out of range or given twice, a direction of the wrong size or with NaN/inf.
    pub fn new(n_layer: usize, hidden: usize, edits: Vec<LayerEdit>) -> Result<Self, PlanError> {
        let mut by_layer = vec![None; n_layer];
        for (i, e) in edits.iter().enumerate() {
            if e.layer >= n_layer {
                return Err(PlanError::LayerOutOfRange {
                    layer: e.layer,
                    n_layer,
                });
            }
            if by_layer[e.layer].is_some() {
                return Err(PlanError::DuplicateLayer { layer: e.layer });
            }
            for (which, v) in [("personal", &e.p), ("generic", &e.n)] {
                if v.len() != hidden {
                    return Err(PlanError::WrongSize {
                        layer: e.layer,
                        got: v.len(),
                        hidden,
                    });
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(PlanError::NotFinite { layer: e.layer });
                }
                check_unit_or_zero(e.layer, which, v)?;
            }
            check_strength(e.layer, "alpha", e.alpha, -MAX_STRENGTH..=MAX_STRENGTH)?;
            check_strength(e.layer, "beta", e.beta, -MAX_STRENGTH..=MAX_STRENGTH)?;
            let a = &e.add;
            if !a.c.is_empty() {
                if a.c.len() != hidden {
                    return Err(PlanError::WrongSize {
                        layer: e.layer,
                        got: a.c.len(),
                        hidden,
                    });
                }
                if a.c.iter().any(|x| !x.is_finite()) {
                    return Err(PlanError::NotFinite { layer: e.layer });
                }
                let norm = norm64(&a.c);
                if (norm - 1.0).abs() > f64::from(UNIT_TOLERANCE) {
                    return Err(PlanError::NotUnit {
                        layer: e.layer,
                        which: "additive",
                        norm,
                    });
                }
                check_strength(e.layer, "gamma", a.gamma, -MAX_STRENGTH..=MAX_STRENGTH)?;
                check_strength(e.layer, "scale", a.scale, 0.0..=MAX_SCALE)?;
            }
            by_layer[e.layer] = Some(i);
        }
        let id = if edits.is_empty() {
            0
        } else {
            NEXT_PLAN_ID.fetch_add(1, Ordering::Relaxed)
        };
        Ok(EditPlan {
            id,
            hidden,
            by_layer,
            edits,
        })
    }

    /// The same edits with every strength that is not 0 set to `strength` (a direction switched off
    /// stays off), under a new id. At [`NULL_STRENGTH`] it steers nothing, and what it still changes
    /// is rounding.
    pub fn at_strength(&self, strength: f32) -> EditPlan {
        let set = |s: f32| if s == 0.0 { 0.0 } else { strength };
        let edits: Vec<LayerEdit> = self
            .edits
            .iter()
            .map(|e| LayerEdit {
                alpha: set(e.alpha),
                beta: set(e.beta),
                add: Additive {
                    gamma: set(e.add.gamma),
                    ..e.add.clone()
                },
                ..e.clone()
            })
            .collect();
        EditPlan::new(self.n_layer(), self.hidden, edits)
            .expect("the same layers and directions as a plan already built")
    }

    /// Process-unique id; 0 for a plan that edits nothing.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether `other` edits exactly as this plan does (same layers, directions and strengths),
    /// whatever their ids: a state computed under one may be continued under the other.
    pub fn same_edit(&self, other: &EditPlan) -> bool {
        self.id == other.id
            || (self.hidden == other.hidden
                && self.by_layer == other.by_layer
                && self.edits == other.edits)
    }

    /// Hidden size the plan was built for.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Number of layers of the model the plan was built for.
    pub fn n_layer(&self) -> usize {
        self.by_layer.len()
    }

    /// True when the plan edits nothing.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// The edits, in the order given.
    pub fn edits(&self) -> &[LayerEdit] {
        &self.edits
    }

    /// True when some layer has an additive edit.
    pub fn adds(&self) -> bool {
        self.edits.iter().any(|e| !e.add.is_none())
    }

    /// True when some layer has a projection edit.
    pub fn projects(&self) -> bool {
        self.edits.iter().any(LayerEdit::projects)
    }

    /// The additive edits as llama.cpp's control vector: `n_embd` values per layer for layers
    /// `1..n_layer` (layer 0 cannot be steered by a control vector), zero where a layer adds nothing.
    /// `None` when an additive edit sits at layer 0.
    pub fn control_vector(&self) -> Option<Vec<f32>> {
        let n = self.n_layer();
        let mut data = vec![0.0f32; self.hidden * n.saturating_sub(1)];
        for e in &self.edits {
            let v = e.add.vector();
            if v.is_empty() {
                continue;
            }
            if e.layer == 0 {
                return None;
            }
            data[(e.layer - 1) * self.hidden..e.layer * self.hidden].copy_from_slice(&v);
        }
        Some(data)
    }

    /// The edit of `layer`, if the plan edits it.
    #[inline]
    pub fn layer(&self, layer: usize) -> Option<&LayerEdit> {
        self.by_layer
            .get(layer)
            .copied()
            .flatten()
            .map(|i| &self.edits[i])
    }

    /// Edit `rows` (row-major, `hidden` values per row) of `layer` in place. No-op for unedited layers.
    #[inline]
    pub fn apply_rows(&self, layer: usize, rows: &mut [f32]) {
        if let Some(e) = self.layer(layer) {
            for x in rows.chunks_exact_mut(self.hidden) {
                e.apply(x);
            }
        }
    }

    /// The edit of `layer` as a rank-2 update `E = I + U V^T` (`U`, `V`: `hidden x 2`, column-major as
    /// two vectors each), so that `E x = x + U (V^T x)` equals [`LayerEdit::apply`] exactly in real
    /// arithmetic. `(I - b n n^T)(I + a p p^T) = I + a p p^T - b n n^T - a b <n,p> n p^T`, hence
    /// `U = [a p - a b <n,p> n, -b n]`, `V = [p, n]`.
    pub fn rank2_factors(edit: &LayerEdit) -> ([Vec<f32>; 2], [Vec<f32>; 2]) {
        let (a, b) = (edit.alpha, edit.beta);
        let np = dot(&edit.n, &edit.p);
        let u0: Vec<f32> = edit
            .p
            .iter()
            .zip(&edit.n)
            .map(|(&p, &n)| a * p - a * b * np * n)
            .collect();
        let u1: Vec<f32> = edit.n.iter().map(|&n| -b * n).collect();
        ([u0, u1], [edit.p.clone(), edit.n.clone()])
    }
}

/// How far one layer's edit reaches on some text: medians over its token positions, so that a few
/// outlier positions (the first token's activations are often huge) do not decide it (`chameleon profile
/// inspect`). The edit only scales components along `p` and `n`, so its effect on the network is set by
/// how much of the MLP output lies along them and how large the MLP output is next to the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Reach {
    /// Decoder layer index.
    pub layer: usize,
    /// `||x|| / ||h||`: the MLP output `x` next to the residual stream `h` after the layer.
    pub mlp_share: f32,
    /// `|<x,p>| / ||x||`: the share of the MLP output along the personal direction.
    pub along_p: f32,
    /// `|<x,n>| / ||x||`: the share along the generic direction.
    pub along_n: f32,
    /// `||edit(x) - x|| / ||h||`: how far the edit moves the residual stream.
    pub moved: f32,
}

/// [`Reach`] of `edit` on the unedited MLP outputs `mlp` and residual stream `resid` of the same positions
/// (row-major, `edit.p.len()` values per row). Positions with a zero vector are skipped; `None` when
/// none is left or the lengths disagree.
pub fn reach(edit: &LayerEdit, mlp: &[f32], resid: &[f32]) -> Option<Reach> {
    let d = edit.p.len();
    if d == 0 || mlp.len() != resid.len() || !mlp.len().is_multiple_of(d) {
        return None;
    }
    let mut cols: [Vec<f32>; 4] = Default::default();
    let mut y = vec![0.0f32; d];
    for (x, h) in mlp.chunks_exact(d).zip(resid.chunks_exact(d)) {
        let (nx, nh) = (dot(x, x).sqrt(), dot(h, h).sqrt());
        if nx == 0.0 || nh == 0.0 {
            continue;
        }
        y.copy_from_slice(x);
        edit.apply(&mut y);
        let diff: f32 = y.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
        cols[0].push(nx / nh);
        cols[1].push(dot(x, &edit.p).abs() / nx);
        cols[2].push(dot(x, &edit.n).abs() / nx);
        cols[3].push(diff.sqrt() / nh);
    }
    if cols[0].is_empty() {
        return None;
    }
    let [a, b, c, e] = cols.map(median);
    Some(Reach {
        layer: edit.layer,
        mlp_share: a,
        along_p: b,
        along_n: c,
        moved: e,
    })
}

/// Median of a non-empty list (the mean of the middle two for an even length).
pub(crate) fn median(mut v: Vec<f32>) -> f32 {
    v.sort_unstable_by(f32::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Euclidean norm, summed in f64: a hostile vector of 1e30s has norm 1e30 here, not f32's inf.
pub fn norm64(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// A number for an error message: plain when it is of ordinary size, else in scientific notation.
pub fn show(x: f64) -> String {
    if x == 0.0 || (1e-3..1e6).contains(&x.abs()) {
        format!("{}", (x * 1e4).round() / 1e4)
    } else {
        format!("{x:.3e}")
    }
}

/// Dot product, four accumulators so the compiler vectorises it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y += s * x`.
#[inline]
pub fn axpy(s: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += s * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reach_by_hand() {
        // p = e0, n = e1; x = (3, 4, 0), h = (0, 0, 10): |x| = 5, |h| = 10.
        let e = LayerEdit {
            layer: 4,
            p: vec![1.0, 0.0, 0.0],
            n: vec![0.0, 1.0, 0.0],
            alpha: 1.0,
            beta: 0.5,
            add: Default::default(),
        };
        let r = reach(&e, &[3.0, 4.0, 0.0], &[0.0, 0.0, 10.0]).unwrap();
        assert_eq!(r.layer, 4);
        assert!((r.mlp_share - 0.5).abs() < 1e-6);
        assert!((r.along_p - 0.6).abs() < 1e-6);
        assert!((r.along_n - 0.8).abs() < 1e-6);
        // edit(x) = (6, 2, 0): moved by (3, -2, 0), |.| = sqrt(13), over |h| = 10
        assert!((r.moved - 13f32.sqrt() / 10.0).abs() < 1e-6);
        // zero rows are skipped, mismatched lengths refused
        let r2 = reach(
            &e,
            &[3.0, 4.0, 0.0, 0.0, 0.0, 0.0],
            &[0.0, 0.0, 10.0, 1.0, 1.0, 1.0],
        )
        .unwrap();
        assert_eq!(r, r2);
        assert!(reach(&e, &[0.0; 3], &[1.0; 3]).is_none());
        // medians: one outlier position among three does not move them
        let x = [3.0, 4.0, 0.0, 3.0, 4.0, 0.0, 300.0, 0.0, 0.0];
        let h = [0.0, 0.0, 10.0, 0.0, 0.0, 10.0, 0.0, 0.0, 1.0];
        assert_eq!(reach(&e, &x, &h).unwrap(), r);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert!(reach(&e, &[1.0; 3], &[1.0; 6]).is_none());
    }

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = dot(&v, &v).sqrt().max(1e-6);
        v.into_iter().map(|x| x / n).collect()
    }

    fn vec_strategy(d: usize) -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(-1.0f32..1.0, d)
    }

    proptest! {
        /// The edit is linear: edit(a x + b y) = a edit(x) + b edit(y).
        #[test]
        fn edit_is_linear(p in vec_strategy(37), n in vec_strategy(37), x in vec_strategy(37),
                          y in vec_strategy(37), a in -3.0f32..3.0, b in -3.0f32..3.0,
                          alpha in 0.0f32..2.0, beta in 0.0f32..2.0) {
            let e = LayerEdit { layer: 0, p: unit(p), n: unit(n), alpha, beta, add: Default::default() };
            let mut lhs: Vec<f32> = x.iter().zip(&y).map(|(x, y)| a * x + b * y).collect();
            e.apply(&mut lhs);
            let (mut ex, mut ey) = (x.clone(), y.clone());
            e.apply(&mut ex);
            e.apply(&mut ey);
            for i in 0..37 {
                let rhs = a * ex[i] + b * ey[i];
                prop_assert!((lhs[i] - rhs).abs() < 1e-4, "{} vs {}", lhs[i], rhs);
            }
        }

        /// The rank-2 factors reproduce the edit: x + U (V^T x) == edit(x).
        #[test]
        fn rank2_equals_edit(p in vec_strategy(29), n in vec_strategy(29), x in vec_strategy(29),
                             alpha in 0.0f32..2.0, beta in 0.0f32..2.0) {
            let e = LayerEdit { layer: 0, p: unit(p), n: unit(n), alpha, beta, add: Default::default() };
            let (u, v) = EditPlan::rank2_factors(&e);
            let mut want = x.clone();
            e.apply(&mut want);
            let mut got = x.clone();
            for k in 0..2 {
                axpy(dot(&v[k], &x), &u[k], &mut got);
            }
            for i in 0..29 {
                prop_assert!((want[i] - got[i]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn zero_directions_leave_x_unchanged() {
        let e = LayerEdit {
            layer: 1,
            p: vec![0.0; 4],
            n: vec![0.0; 4],
            alpha: 1.0,
            beta: 1.0,
            add: Default::default(),
        };
        let plan = EditPlan::new(3, 4, vec![e]).unwrap();
        let mut rows = vec![1.0, -2.0, 3.5, 0.25, 7.0, 8.0, 9.0, 10.0];
        let before = rows.clone();
        plan.apply_rows(1, &mut rows);
        assert_eq!(rows, before);
    }

    #[test]
    fn edits_only_its_layer_and_known_values() {
        // p = e0, n = e1: x0 doubles (alpha 1), x1 vanishes (beta 1)
        let e = LayerEdit {
            layer: 2,
            p: vec![1.0, 0.0, 0.0],
            n: vec![0.0, 1.0, 0.0],
            alpha: 1.0,
            beta: 1.0,
            add: Default::default(),
        };
        let plan = EditPlan::new(4, 3, vec![e]).unwrap();
        let mut rows = vec![1.0, 2.0, 3.0];
        plan.apply_rows(1, &mut rows);
        assert_eq!(rows, vec![1.0, 2.0, 3.0]);
        plan.apply_rows(2, &mut rows);
        assert_eq!(rows, vec![2.0, 0.0, 3.0]);
    }

    #[test]
    fn bad_plans_are_refused() {
        let e = |layer, d| LayerEdit {
            layer,
            p: vec![0.0; d],
            n: vec![0.0; d],
            alpha: 1.0,
            beta: 1.0,
            add: Default::default(),
        };
        assert_eq!(
            EditPlan::new(2, 3, vec![e(2, 3)]).unwrap_err(),
            PlanError::LayerOutOfRange {
                layer: 2,
                n_layer: 2
            }
        );
        assert_eq!(
            EditPlan::new(2, 3, vec![e(1, 3), e(1, 3)]).unwrap_err(),
            PlanError::DuplicateLayer { layer: 1 }
        );
        assert_eq!(
            EditPlan::new(2, 3, vec![e(0, 4)]).unwrap_err(),
            PlanError::WrongSize {
                layer: 0,
                got: 4,
                hidden: 3
            }
        );
        let mut bad = e(0, 3);
        bad.p[1] = f32::NAN;
        assert_eq!(
            EditPlan::new(2, 3, vec![bad]).unwrap_err(),
            PlanError::NotFinite { layer: 0 }
        );
    }

    #[test]
    fn plan_ids_are_unique_and_empty_is_zero() {
        let e = LayerEdit {
            layer: 0,
            p: vec![1.0],
            n: vec![0.0],
            alpha: 1.0,
            beta: 1.0,
            add: Default::default(),
        };
        let a = EditPlan::new(1, 1, vec![e.clone()]).unwrap();
        let b = EditPlan::new(1, 1, vec![e]).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(EditPlan::new(1, 1, vec![]).unwrap().id(), 0);
        assert_eq!(EditPlan::empty(1, 1).id(), 0);
    }

    #[test]
    fn a_plan_at_another_strength_keeps_its_layers_directions_and_switched_off_directions() {
        let edit = |layer, alpha, beta| LayerEdit {
            layer,
            p: vec![0.6, 0.8],
            n: vec![0.0, 1.0],
            alpha,
            beta,
            add: Default::default(),
        };
        let plan = EditPlan::new(4, 2, vec![edit(1, 2.0, 0.0), edit(3, 0.0, 0.5)]).unwrap();
        let null = plan.at_strength(NULL_STRENGTH);
        assert_ne!(null.id(), plan.id());
        assert_eq!((null.n_layer(), null.hidden()), (4, 2));
        let got: Vec<_> = null
            .edits()
            .iter()
            .map(|e| (e.layer, e.alpha, e.beta, e.p.clone(), e.n.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (1, NULL_STRENGTH, 0.0, vec![0.6, 0.8], vec![0.0, 1.0]),
                (3, 0.0, NULL_STRENGTH, vec![0.6, 0.8], vec![0.0, 1.0]),
            ]
        );
        // the null strength barely moves a vector: far below any steering, not exactly nothing
        let mut x = vec![3.0, 4.0];
        null.apply_rows(1, &mut x);
        assert!(x != [3.0, 4.0] && (x[0] - 3.0).abs() < 1e-3 && (x[1] - 4.0).abs() < 1e-3);
    }
    proptest! {
        /// The additive edit moves every vector by the same `gamma * scale * c`, after the projections,
        /// and the move is linear in `gamma`.
        #[test]
        fn additive_edit_moves_every_vector_by_gamma_scale_c(
            c in vec_strategy(23), x in vec_strategy(23), y in vec_strategy(23),
            gamma in -4.0f32..4.0, scale in 0.0f32..50.0, p in vec_strategy(23), alpha in 0.0f32..2.0,
        ) {
            let c = unit(c);
            let e = LayerEdit::additive(3, c.clone(), scale, gamma);
            for v in [&x, &y] {
                let mut got = v.clone();
                e.apply(&mut got);
                for i in 0..23 {
                    prop_assert!((got[i] - v[i] - gamma * scale * c[i]).abs() < 1e-3);
                }
            }
            // twice the strength, twice the move
            let e2 = LayerEdit::additive(3, c.clone(), scale, 2.0 * gamma);
            let (mut a, mut b) = (x.clone(), x.clone());
            e.apply(&mut a);
            e2.apply(&mut b);
            for i in 0..23 {
                prop_assert!(((b[i] - x[i]) - 2.0 * (a[i] - x[i])).abs() < 1e-3);
            }
            // with a projection too: the projection first, then the shift
            let both = LayerEdit {
                add: Additive { c: c.clone(), scale, gamma },
                ..LayerEdit::projection(3, unit(p.clone()), vec![0.0; 23], alpha, 0.0)
            };
            let mut want = x.clone();
            LayerEdit::projection(3, unit(p), vec![0.0; 23], alpha, 0.0).apply(&mut want);
            axpy(gamma * scale, &c, &mut want);
            let mut got = x.clone();
            both.apply(&mut got);
            for i in 0..23 {
                prop_assert!((got[i] - want[i]).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn additive_plans_are_checked_and_rescaled() {
        let bad = |c: Vec<f32>, scale, gamma| {
            EditPlan::new(3, 2, vec![LayerEdit::additive(1, c, scale, gamma)]).unwrap_err()
        };
        assert!(matches!(
            bad(vec![2.0, 0.0], 1.0, 1.0),
            PlanError::NotUnit { layer: 1, .. }
        ));
        assert!(matches!(
            bad(vec![0.0, 0.0], 1.0, 1.0),
            PlanError::NotUnit { layer: 1, .. }
        ));
        assert!(matches!(
            bad(vec![1.0, 0.0], -1.0, 1.0),
            PlanError::BadStrength { layer: 1, .. }
        ));
        assert!(matches!(
            bad(vec![1.0, 0.0], 1.0, f32::NAN),
            PlanError::BadStrength { .. }
        ));
        assert!(matches!(
            bad(vec![1.0, 0.0, 0.0], 1.0, 1.0),
            PlanError::WrongSize { .. }
        ));
        assert!(matches!(
            bad(vec![f32::INFINITY, 0.0], 1.0, 1.0),
            PlanError::NotFinite { .. }
        ));
        assert!(matches!(
            bad(vec![1.0, 0.0], 1e30, 1.0),
            PlanError::BadStrength { which: "scale", .. }
        ));
        assert!(matches!(
            bad(vec![1.0, 0.0], 1.0, 1e4),
            PlanError::BadStrength { which: "gamma", .. }
        ));
        // the projection's directions: unit or exactly zero; its strengths bounded
        let proj = |p: Vec<f32>, alpha| {
            EditPlan::new(
                3,
                2,
                vec![LayerEdit::projection(2, p, vec![0.0; 2], alpha, 1.0)],
            )
        };
        assert!(proj(vec![0.6, 0.8], 1.0).is_ok());
        let err = proj(vec![1e30, 0.0], 1.0).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::NotUnit {
                    layer: 2,
                    which: "personal",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("layer 2"), "{err}");
        assert!(matches!(
            proj(vec![0.6, 0.8], f32::INFINITY).unwrap_err(),
            PlanError::BadStrength { which: "alpha", .. }
        ));
        let plan = EditPlan::new(
            3,
            2,
            vec![LayerEdit::additive(1, vec![0.6, 0.8], 10.0, 2.0)],
        )
        .unwrap();
        assert!(plan.adds() && !plan.projects());
        let null = plan.at_strength(NULL_STRENGTH);
        assert_eq!(null.edits()[0].add.gamma, NULL_STRENGTH);
        assert_eq!(null.edits()[0].add.scale, 10.0);
        let mut x = vec![1.0, 1.0];
        plan.apply_rows(1, &mut x);
        assert!((x[0] - 13.0).abs() < 1e-5 && (x[1] - 17.0).abs() < 1e-5);
    }
}
