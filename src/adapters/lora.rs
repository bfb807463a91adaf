//! The edit as a rank-2 LoRA adapter on `ffn_down` (method.md stage 6).
//!
//! For architectures whose MLP output is `W_down h` with no norm after it, editing the output with
//! `E = I + U V^T` ([`EditPlan::rank2_factors`]) is the same as replacing `W_down` by
//! `W_down + U (V^T W_down)`: a LoRA pair with `B = U` (`n_embd x 2`) and `A = V^T W_down` (`2 x n_ff`).
//! With `adapter.lora.alpha = 2` (the rank), llama.cpp's scale is 1 and the adapter reproduces the edit up
//! to llama.cpp's activation quantization inside matrix products.

use std::path::Path;

use crate::llm::{LlmError, Matrix, MlpNode, read_matrices, write_lora};
use crate::steer::{EditPlan, axpy, dot};

/// Errors of the export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "`{arch}` has a norm after the MLP (`{node}`), so the edit is not a weight update of `ffn_down`; \
         use the runtime edit (`chameleon generate --user ...`) instead"
    )]
    PostNorm { arch: String, node: &'static str },
    #[error("the profile edits no layer")]
    Empty,
    #[error(
        "the profile adds a vector to the MLP output, which a LoRA adapter of `ffn_down` cannot hold; \
         export it as a control vector (`chameleon export --control-vector`)"
    )]
    Additive,
    #[error("`{name}` is {rows}x{cols}, expected {n_embd} rows")]
    Shape {
        name: String,
        rows: usize,
        cols: usize,
        n_embd: usize,
    },
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// The LoRA factors of one layer's edit: `(A, B)` with `A = V^T W` (`2 x n_ff`) and `B = U`
/// (`n_embd x 2`), for `w` the layer's `W_down` as `n_embd x n_ff`.
pub fn lora_factors(plan: &EditPlan, layer: usize, w: &Matrix) -> Option<(Matrix, Matrix)> {
    let edit = plan.layer(layer)?;
    let (u, v) = EditPlan::rank2_factors(edit);
    let (n_embd, n_ff) = (w.rows, w.cols);
    // A[k][j] = sum_i v_k[i] W[i][j]
    let mut a = vec![0f32; 2 * n_ff];
    for (k, vk) in v.iter().enumerate() {
        let row = &mut a[k * n_ff..(k + 1) * n_ff];
        for (i, &vi) in vk.iter().enumerate() {
            if vi != 0.0 {
                axpy(vi, &w.data[i * n_ff..(i + 1) * n_ff], row);
            }
        }
    }
    // B[i][k] = u_k[i]
    let mut b = vec![0f32; n_embd * 2];
    for i in 0..n_embd {
        b[i * 2] = u[0][i];
        b[i * 2 + 1] = u[1][i];
    }
    debug_assert!(dot(&u[1], &u[1]).is_finite());
    Some((
        Matrix {
            rows: 2,
            cols: n_ff,
            data: a,
        },
        Matrix {
            rows: n_embd,
            cols: 2,
            data: b,
        },
    ))
}

/// Write `plan` as a LoRA adapter for the model file `model_path` (architecture `arch`, MLP node `node`).
///
/// # Errors
/// [`ExportError::PostNorm`] for architectures where the edit is not a weight update; I/O and GGUF errors.
pub fn export_lora(
    model_path: &Path,
    arch: &str,
    node: MlpNode,
    plan: &EditPlan,
    out: &Path,
) -> Result<usize, ExportError> {
    if node.post_norm {
        return Err(ExportError::PostNorm {
            arch: arch.to_string(),
            node: node.name,
        });
    }
    if plan.is_empty() {
        return Err(ExportError::Empty);
    }
    if plan.adds() {
        return Err(ExportError::Additive);
    }
    let names: Vec<String> = plan
        .edits()
        .iter()
        .map(|e| format!("blk.{}.ffn_down.weight", e.layer))
        .collect();
    let weights = read_matrices(model_path, &names)?;
    let mut tensors = Vec::new();
    for (e, (w, name)) in plan.edits().iter().zip(weights.iter().zip(&names)) {
        if w.rows != plan.hidden() {
            return Err(ExportError::Shape {
                name: name.clone(),
                rows: w.rows,
                cols: w.cols,
                n_embd: plan.hidden(),
            });
        }
        let (a, b) = lora_factors(plan, e.layer, w).expect("the plan edits this layer");
        tensors.push((format!("{name}.lora_a"), a));
        tensors.push((format!("{name}.lora_b"), b));
    }
    write_lora(out, arch, 2.0, &tensors)?;
    Ok(plan.edits().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::LayerEdit;

    /// The LoRA factors reproduce the edit of `W h`: `W h + B (A h) == edit(W h)`.
    #[test]
    fn lora_update_equals_the_edit_on_random_matrices() {
        let (n_embd, n_ff) = (7, 11);
        let mut s = 12345u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let w = Matrix {
            rows: n_embd,
            cols: n_ff,
            data: (0..n_embd * n_ff).map(|_| rnd()).collect(),
        };
        let unit = |v: Vec<f32>| {
            let n = dot(&v, &v).sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let p = unit((0..n_embd).map(|_| rnd()).collect());
        let n = unit((0..n_embd).map(|_| rnd()).collect());
        let plan = EditPlan::new(
            3,
            n_embd,
            vec![LayerEdit {
                layer: 1,
                p,
                n,
                alpha: 1.3,
                beta: 0.7,
                add: Default::default(),
            }],
        )
        .unwrap();
        let (a, b) = lora_factors(&plan, 1, &w).unwrap();
        assert!(lora_factors(&plan, 0, &w).is_none());
        let h: Vec<f32> = (0..n_ff).map(|_| rnd()).collect();
        let wh: Vec<f32> = (0..n_embd)
            .map(|i| dot(&w.data[i * n_ff..(i + 1) * n_ff], &h))
            .collect();
        let ah: Vec<f32> = (0..2)
            .map(|k| dot(&a.data[k * n_ff..(k + 1) * n_ff], &h))
            .collect();
        let lora: Vec<f32> = (0..n_embd)
            .map(|i| wh[i] + b.data[i * 2] * ah[0] + b.data[i * 2 + 1] * ah[1])
            .collect();
        let mut edited = wh.clone();
        plan.apply_rows(1, &mut edited);
        for i in 0..n_embd {
            assert!(
                (lora[i] - edited[i]).abs() < 1e-5,
                "{i}: {} vs {}",
                lora[i],
                edited[i]
            );
        }
    }
}
