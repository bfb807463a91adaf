//! Stage 1: keep the k most representative history items (PCA).
//!
//! Every history item arrives as one embedding `e_i` (N rows of m values). The rows are centred, the top-k
//! principal directions `W` of the centred matrix are found, and each item is scored by the length of its
//! projection onto them, `||z_i|| = ||(e_i - mean) W||`. The k items with the largest scores are kept (the
//! paper only says "top k"; this is the **choice** recorded in method.md). When `N <= k` every item is kept.
//!
//! N is small (5-200 items) and m large (576-1536 dimensions), so the principal directions come from the
//! eigen-decomposition of the N x N Gram matrix `X X^T` of the centred rows `X` rather than from an m x m
//! covariance: with `X X^T = U diag(lambda) U^T`, the unit principal directions are `X^T u_j / sqrt(lambda_j)`.
//! Directions whose eigenvalue is numerically zero carry no variance and are dropped, so asking for more
//! directions than the data's rank is harmless.
//!
//! This module also owns [`ShapeError`] and the row-major matrix helper that the fitting stage shares: both
//! stages take their vectors as rows (`&[Vec<f32>]` or anything that is `AsRef<[f32]>`).

use nalgebra::{DMatrix, SymmetricEigen};
use thiserror::Error;

/// A list of vectors that is not a well-formed matrix.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ShapeError {
    /// There are no rows at all.
    #[error("there are no rows")]
    Empty,
    /// The first row has no values.
    #[error("the rows have no values (zero dimensions)")]
    NoColumns,
    /// A row's length differs from the first row's.
    #[error(
        "row {row} has {len} values but row 0 has {expected}; every row must come from the same model"
    )]
    Ragged {
        /// Index of the offending row.
        row: usize,
        /// Its length.
        len: usize,
        /// The length of row 0.
        expected: usize,
    },
    /// A value is NaN or infinite.
    #[error("row {row}, value {col} is not finite (`{value}`)")]
    NonFinite {
        /// Index of the offending row.
        row: usize,
        /// Index of the value inside the row.
        col: usize,
        /// The value itself.
        value: f32,
    },
}

/// A dense row-major `rows x cols` matrix of `f32`, built from validated rows.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    pub(crate) data: Vec<f32>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl Dense {
    /// Copies `rows` into one contiguous buffer, checking that they are non-empty, equally long and finite.
    pub(crate) fn from_rows<R: AsRef<[f32]>>(rows: &[R]) -> Result<Self, ShapeError> {
        let first = rows.first().ok_or(ShapeError::Empty)?.as_ref();
        let cols = first.len();
        if cols == 0 {
            return Err(ShapeError::NoColumns);
        }
        let mut data = Vec::with_capacity(rows.len() * cols);
        for (row, values) in rows.iter().enumerate() {
            let values = values.as_ref();
            if values.len() != cols {
                return Err(ShapeError::Ragged {
                    row,
                    len: values.len(),
                    expected: cols,
                });
            }
            if let Some((col, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ShapeError::NonFinite { row, col, value });
            }
            data.extend_from_slice(values);
        }
        Ok(Self {
            data,
            rows: rows.len(),
            cols,
        })
    }

    /// Row `i` as a slice.
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// Why the history could not be scored.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SelectError {
    /// The embeddings do not form an N x m matrix.
    #[error("the history embeddings are not a matrix")]
    Shape(#[from] ShapeError),
}

/// Relative size under which an eigenvalue of the Gram matrix counts as zero (no variance along it).
const RANK_TOL: f64 = 1e-10;

/// Indices of the `k` most representative history items, most representative first.
///
/// `embeddings` holds one row per history item (N x m). The items are ranked by the length of their
/// projection onto the top-`k` principal directions of the centred rows (see the module docs), in descending
/// order; equal scores go to the lower index, so the result is deterministic. Identical rows get bit-identical
/// scores, so duplicates are ranked by index (both copies may be kept; remove duplicate texts upstream if that
/// is not wanted). If `N <= k` every index is returned in its original order; `k = 0` returns nothing.
///
/// # Errors
///
/// [`SelectError::Shape`] when there are no rows, the rows have no values or different lengths, or a value is
/// not finite.
pub fn select_representative<R: AsRef<[f32]>>(
    embeddings: &[R],
    k: usize,
) -> Result<Vec<usize>, SelectError> {
    let e = Dense::from_rows(embeddings)?;
    if e.rows <= k {
        return Ok((0..e.rows).collect());
    }
    let scores = scores(&e, k);
    let mut order: Vec<usize> = (0..e.rows).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    Ok(order)
}

/// The score of every history item: `||z_i||`, the length of its centred embedding projected onto the
/// top-`k` principal directions (at most N of them, and only those with non-zero variance).
///
/// This is what [`select_representative`] ranks by, exposed so that a caller can record it. When every row
/// is the same all scores are zero.
///
/// # Errors
///
/// [`SelectError::Shape`] as for [`select_representative`].
pub fn representative_scores<R: AsRef<[f32]>>(
    embeddings: &[R],
    k: usize,
) -> Result<Vec<f64>, SelectError> {
    Ok(scores(&Dense::from_rows(embeddings)?, k))
}

fn scores(e: &Dense, k: usize) -> Vec<f64> {
    let (n, m) = (e.rows, e.cols);
    // Centre in f64. Identical input rows give bit-identical centred rows.
    let mut mean = vec![0.0f64; m];
    for i in 0..n {
        for (acc, &v) in mean.iter_mut().zip(e.row(i)) {
            *acc += f64::from(v);
        }
    }
    let inv_n = 1.0 / n as f64;
    mean.iter_mut().for_each(|v| *v *= inv_n);
    let x = DMatrix::from_fn(n, m, |i, j| f64::from(e.data[i * m + j]) - mean[j]);

    let gram = &x * x.transpose();
    let eig = SymmetricEigen::new(gram);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| {
        eig.eigenvalues[b]
            .total_cmp(&eig.eigenvalues[a])
            .then(a.cmp(&b))
    });
    let top = eig.eigenvalues[idx[0]].max(0.0);
    let kept: Vec<usize> = idx
        .into_iter()
        .take(k)
        .filter(|&j| top > 0.0 && eig.eigenvalues[j] > RANK_TOL * top)
        .collect();
    if kept.is_empty() {
        return vec![0.0; n];
    }

    // Unit principal directions W = X^T u_j / sqrt(lambda_j), stored direction by direction (m values each).
    let mut w = vec![0.0f64; kept.len() * m];
    for (c, &j) in kept.iter().enumerate() {
        let u = eig.eigenvectors.column(j);
        let scale = 1.0 / eig.eigenvalues[j].sqrt();
        let dir = &mut w[c * m..(c + 1) * m];
        for (i, &ui) in u.iter().enumerate() {
            for (col, d) in dir.iter_mut().enumerate() {
                *d += ui * x[(i, col)];
            }
        }
        dir.iter_mut().for_each(|d| *d *= scale);
    }

    // z_i = x_i W, computed row by row in a fixed order so that identical rows score identically.
    let mut row = vec![0.0f64; m];
    (0..n)
        .map(|i| {
            for (col, r) in row.iter_mut().enumerate() {
                *r = x[(i, col)];
            }
            w.chunks_exact(m)
                .map(|dir| {
                    let z: f64 = dir.iter().zip(&row).map(|(a, b)| a * b).sum();
                    z * z
                })
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn axis(m: usize, j: usize, s: f32) -> Vec<f32> {
        let mut v = vec![0.0; m];
        v[j] = s;
        v
    }

    /// Items spread along e0 (largest variance) and e1; one item far along e2 whose variance is the smallest
    /// of the three. With k = 2 the principal directions are e0 and e1, so the e2 outlier scores ~0 even
    /// though it is the second farthest item from the centre: plain distance would pick it, PCA must not.
    fn crafted() -> Vec<Vec<f32>> {
        let m = 5;
        vec![
            axis(m, 0, -1.0),
            axis(m, 1, 3.0), // c: the far item along e1
            axis(m, 0, -1.0),
            axis(m, 2, 3.2), // f: the e2 outlier, norm 3.2 > 3
            axis(m, 1, -1.5),
            axis(m, 0, 4.0), // a: the far item along e0
            axis(m, 0, -1.0),
            axis(m, 1, -1.5),
            axis(m, 0, -1.0),
        ]
    }

    #[test]
    fn picks_items_far_along_the_main_axes_not_far_overall() {
        let e = crafted();
        assert_eq!(select_representative(&e, 2).unwrap(), vec![5, 1]);
        let s = representative_scores(&e, 2).unwrap();
        assert!(
            (s[5] - 4.0).abs() < 1e-9 && (s[1] - 3.0).abs() < 1e-9,
            "{s:?}"
        );
        assert!(
            s[3] < 1e-9,
            "the e2 outlier must not project onto e0/e1: {s:?}"
        );
    }

    #[test]
    fn with_enough_directions_the_outlier_counts() {
        // k = 3 brings e2 in: the outlier (2.84 after centring) now makes the top three with a and c.
        let e = crafted();
        let picked = select_representative(&e, 3).unwrap();
        assert_eq!(picked[0], 5);
        assert!(picked.contains(&3) && picked.contains(&1), "{picked:?}");
    }

    #[test]
    fn n_at_most_k_keeps_everything_in_order() {
        let e = crafted();
        assert_eq!(select_representative(&e[..3], 5).unwrap(), vec![0, 1, 2]);
        assert_eq!(
            select_representative(&e, 9).unwrap(),
            (0..9).collect::<Vec<_>>()
        );
        assert_eq!(select_representative(&e, 0).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn duplicates_tie_exactly_and_the_lower_index_wins() {
        let mut e = crafted();
        e.push(e[5].clone()); // index 9 duplicates the best item
        let s = representative_scores(&e, 2).unwrap();
        assert_eq!(s[5].to_bits(), s[9].to_bits());
        assert_eq!(select_representative(&e, 1).unwrap(), vec![5]);
        assert_eq!(select_representative(&e, 2).unwrap(), vec![5, 9]);
    }

    #[test]
    fn identical_rows_score_zero_and_keep_the_first_k() {
        let e = vec![vec![0.5f32, -2.0, 7.0]; 6];
        assert_eq!(representative_scores(&e, 3).unwrap(), vec![0.0; 6]);
        assert_eq!(select_representative(&e, 3).unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn k_beyond_the_rank_ranks_by_centred_distance() {
        // Ten points in a 2-D plane of a 16-D space, k = 5 > rank 2: all variance is captured, so the score
        // is the distance from the centre.
        let m = 16;
        let e: Vec<Vec<f32>> = (0..10)
            .map(|i| {
                let t = i as f32;
                let mut v = vec![1.0; m];
                v[3] += (t * 0.7).cos() * (1.0 + t);
                v[9] += (t * 1.3).sin() * (2.0 + 0.5 * t);
                v
            })
            .collect();
        let s = representative_scores(&e, 5).unwrap();
        let mean: Vec<f64> = (0..m)
            .map(|j| e.iter().map(|r| f64::from(r[j])).sum::<f64>() / 10.0)
            .collect();
        for (row, score) in e.iter().zip(&s) {
            let dist = row
                .iter()
                .zip(&mean)
                .map(|(&a, b)| (f64::from(a) - b).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                (dist - score).abs() < 1e-6 * dist.max(1.0),
                "{dist} vs {score}"
            );
        }
        let mut by_dist: Vec<usize> = (0..10).collect();
        by_dist.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        assert_eq!(select_representative(&e, 5).unwrap(), by_dist[..5].to_vec());
    }

    #[test]
    fn malformed_input_is_an_error() {
        let none: Vec<Vec<f32>> = Vec::new();
        assert_eq!(
            select_representative(&none, 3),
            Err(SelectError::Shape(ShapeError::Empty))
        );
        let ragged = vec![vec![1.0f32, 2.0], vec![1.0], vec![0.0, 0.0]];
        assert_eq!(
            select_representative(&ragged, 1),
            Err(SelectError::Shape(ShapeError::Ragged {
                row: 1,
                len: 1,
                expected: 2
            }))
        );
        let nan = vec![vec![1.0f32, 2.0], vec![1.0, f32::NAN]];
        assert!(matches!(
            select_representative(&nan, 1),
            Err(SelectError::Shape(ShapeError::NonFinite {
                row: 1,
                col: 1,
                ..
            }))
        ));
        let empty_rows = vec![Vec::<f32>::new(); 3];
        assert_eq!(
            select_representative(&empty_rows, 1),
            Err(SelectError::Shape(ShapeError::NoColumns))
        );
    }

    proptest! {
        /// The selection is min(k, N) distinct valid indices, and for N > k they are in descending score order.
        #[test]
        fn selection_is_distinct_valid_and_ordered(
            n in 1usize..30, m in 1usize..12, k in 0usize..12, seed in any::<u64>()
        ) {
            let mut state = seed | 1;
            let e: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..m).map(|_| {
                    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                    (state % 2001) as f32 / 1000.0 - 1.0
                }).collect())
                .collect();
            let picked = select_representative(&e, k).unwrap();
            prop_assert_eq!(picked.len(), k.min(n));
            let mut sorted = picked.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), picked.len());
            prop_assert!(picked.iter().all(|&i| i < n));
            if n > k {
                let s = representative_scores(&e, k).unwrap();
                prop_assert!(picked.windows(2).all(|w| s[w[0]] >= s[w[1]]));
                let worst_kept = picked.last().map_or(f64::INFINITY, |&i| s[i]);
                prop_assert!((0..n).filter(|i| !picked.contains(i)).all(|i| s[i] <= worst_kept));
            }
        }
    }
}
