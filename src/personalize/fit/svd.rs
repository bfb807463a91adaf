//! The personal direction `theta_P`: the top right singular vector of the raw K x d matrix of the
//! personalised texts' pooled MLP outputs (no centring, as in the paper).
//!
//! The top right singular vector of `A` is the top eigenvector of `A^T A`. Which side is decomposed depends on
//! the shape:
//! - when `min(K, d) <= EXACT_MAX` (the per-user case: K of 5-200 pairs), the smaller Gram matrix
//!   (`A A^T`, K x K, or `A^T A`, d x d) is formed in f64 and decomposed exactly with nalgebra; from the top
//!   eigenvector `u` of `A A^T` the direction is `A^T u / ||A^T u||`;
//! - otherwise (group scale: thousands of pooled pairs at d >= 576) power iteration `v <- A^T (A v)` runs on
//!   the rows directly, O(K d) per step and no Gram matrix. It starts from the mean row, which for raw hidden
//!   states is already close to the answer because their mean dominates the spectrum.
//!
//! **Sign convention.** A singular vector's sign is arbitrary; the returned one makes the summed projection
//! of the rows positive, `sum_i <a_i, p> > 0`, so `p` points the way the personalised texts lie. If that sum
//! is exactly zero the largest-magnitude component is made positive (the lowest index among equals). The edit
//! does not depend on the sign; the convention only makes fits comparable and reproducible.

use nalgebra::{DMatrix, SymmetricEigen};

use super::FitError;
use crate::personalize::select::Dense;

/// Largest `min(K, d)` decomposed exactly; above it power iteration is used.
const EXACT_MAX: usize = 384;
/// Power iteration stops when `1 - |cos|` between successive iterates falls below this.
const POWER_TOL: f64 = 1e-15;
/// Power iteration gives up improving after this many steps (the result is then the last iterate).
const POWER_MAX_ITERS: usize = 5000;

/// The personal direction of one layer: the top right singular vector of the K x d matrix whose rows are
/// `rows`, with unit length and the sign convention of the module docs.
///
/// # Errors
///
/// [`FitError::Shape`] when the rows are empty, ragged or not finite; [`FitError::ZeroMatrix`] when every
/// value is zero, so there is no direction.
pub fn personal_direction<R: AsRef<[f32]>>(rows: &[R]) -> Result<Vec<f32>, FitError> {
    let a = Dense::from_rows(rows).map_err(|source| FitError::Shape {
        what: "personalised rows",
        source,
    })?;
    direction(&a, a.rows.min(a.cols) <= EXACT_MAX)
}

pub(super) fn direction(a: &Dense, exact: bool) -> Result<Vec<f32>, FitError> {
    if a.data.iter().all(|&v| v == 0.0) {
        return Err(FitError::ZeroMatrix);
    }
    let mut v = if exact { exact_top(a) } else { power_top(a) };
    orient(a, &mut v);
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    Ok(v.iter().map(|&x| (x / norm) as f32).collect())
}

fn exact_top(a: &Dense) -> Vec<f64> {
    let (k, d) = (a.rows, a.cols);
    let m = DMatrix::from_fn(k, d, |i, j| f64::from(a.data[i * d + j]));
    if k <= d {
        let eig = SymmetricEigen::new(&m * m.transpose());
        let u = eig
            .eigenvectors
            .column(top_index(eig.eigenvalues.as_slice()));
        let v = m.transpose() * u;
        v.iter().copied().collect()
    } else {
        let eig = SymmetricEigen::new(m.transpose() * &m);
        eig.eigenvectors
            .column(top_index(eig.eigenvalues.as_slice()))
            .iter()
            .copied()
            .collect()
    }
}

/// Index of the largest eigenvalue, the lowest index among equals.
fn top_index(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

fn power_top(a: &Dense) -> Vec<f64> {
    let (k, d) = (a.rows, a.cols);
    // Start from the mean row; if it vanishes, from the row with the largest norm.
    let mut v = vec![0.0f64; d];
    for i in 0..k {
        for (acc, &x) in v.iter_mut().zip(a.row(i)) {
            *acc += f64::from(x);
        }
    }
    if normalize(&mut v) == 0.0 {
        let big = (0..k)
            .map(|i| {
                (
                    i,
                    a.row(i)
                        .iter()
                        .map(|&x| f64::from(x) * f64::from(x))
                        .sum::<f64>(),
                )
            })
            .fold(
                (0, -1.0),
                |best, cur| if cur.1 > best.1 { cur } else { best },
            )
            .0;
        v.iter_mut()
            .zip(a.row(big))
            .for_each(|(t, &x)| *t = f64::from(x));
        normalize(&mut v);
    }
    let mut next = vec![0.0f64; d];
    for _ in 0..POWER_MAX_ITERS {
        next.iter_mut().for_each(|x| *x = 0.0);
        for i in 0..k {
            let row = a.row(i);
            let s: f64 = row.iter().zip(&v).map(|(&x, y)| f64::from(x) * y).sum();
            next.iter_mut()
                .zip(row)
                .for_each(|(t, &x)| *t += s * f64::from(x));
        }
        normalize(&mut next);
        let cos: f64 = next.iter().zip(&v).map(|(x, y)| x * y).sum();
        std::mem::swap(&mut v, &mut next);
        if 1.0 - cos.abs() < POWER_TOL {
            break;
        }
    }
    v
}

/// Scales `v` to unit length and returns its former norm (leaves a zero vector alone).
fn normalize(v: &mut [f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    norm
}

/// Applies the sign convention: summed row projection positive, else largest component positive.
fn orient(a: &Dense, v: &mut [f64]) {
    let total: f64 = (0..a.rows)
        .map(|i| {
            a.row(i)
                .iter()
                .zip(v.iter())
                .map(|(&x, y)| f64::from(x) * y)
                .sum::<f64>()
        })
        .sum();
    let flip = if total != 0.0 {
        total < 0.0
    } else {
        let big = (0..v.len()).fold(
            0,
            |best, i| if v[i].abs() > v[best].abs() { i } else { best },
        );
        v[big] < 0.0
    };
    if flip {
        v.iter_mut().for_each(|x| *x = -*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalize::fit::test_util::{cosine, gaussian, planted_rows, unit};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn recovers_a_planted_direction() {
        // rows = c_i u + noise, with c_i of both signs: the raw (uncentred) top singular vector is u.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let u = unit(&gaussian(&mut rng, 256));
        let rows = planted_rows(&mut rng, &u, 20, 0.05);
        let p = personal_direction(&rows).unwrap();
        let cos = cosine(&p, &u);
        assert!(cos.abs() > 0.99, "|cos| = {cos}");
        let norm: f32 = p.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn power_iteration_agrees_with_the_exact_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let u = unit(&gaussian(&mut rng, 96));
        for k in [12, 150] {
            // both k < d (Gram of rows) and k > d (Gram of columns) for the exact path
            let rows = planted_rows(&mut rng, &u, k, 0.05);
            let a = Dense::from_rows(&rows).unwrap();
            let exact = direction(&a, true).unwrap();
            let power = direction(&a, false).unwrap();
            assert!(cosine(&exact, &u).abs() > 0.99);
            let agree = cosine(&exact, &power);
            assert!(agree > 1.0 - 1e-6, "k = {k}: exact vs power cos = {agree}");
        }
    }

    #[test]
    fn sign_points_along_the_rows() {
        // All rows on the positive side of -u: the returned direction must be -u, not u.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let u = unit(&gaussian(&mut rng, 64));
        let rows: Vec<Vec<f32>> = (0..10)
            .map(|i| {
                let noise = gaussian(&mut rng, 64);
                u.iter()
                    .zip(&noise)
                    .map(|(&x, &e)| -(2.0 + i as f32 * 0.1) * x + 0.05 * e)
                    .collect()
            })
            .collect();
        for exact in [true, false] {
            let p = direction(&Dense::from_rows(&rows).unwrap(), exact).unwrap();
            assert!(cosine(&p, &u) < -0.99, "exact = {exact}");
        }
    }

    #[test]
    fn degenerate_input_is_an_error() {
        assert!(matches!(
            personal_direction(&vec![vec![0.0f32; 8]; 3]),
            Err(FitError::ZeroMatrix)
        ));
        let none: Vec<Vec<f32>> = Vec::new();
        assert!(matches!(
            personal_direction(&none),
            Err(FitError::Shape { .. })
        ));
        assert!(matches!(
            personal_direction(&[vec![1.0f32, 2.0], vec![3.0]]),
            Err(FitError::Shape { .. })
        ));
    }
}
