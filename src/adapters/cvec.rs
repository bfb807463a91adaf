//! The additive edit as a stock llama.cpp control vector (`--control-vector FILE`).
//!
//! llama.cpp adds a control vector's `direction.N` to the output of layer N after the MLP's residual
//! add; adding a constant there is adding it to the MLP output, which is what the additive edit
//! `x += gamma * scale * c` does ([`crate::steer::Additive`]). So the file holds, per layer with an additive
//! edit, `gamma * scale * c` at the profile's strength. Layer 0 cannot be steered by a control vector.

use std::path::Path;

use crate::llm::{LlmError, write_control_vector};
use crate::steer::EditPlan;

/// Errors of the export.
#[derive(Debug, thiserror::Error)]
pub enum CvecError {
    #[error("the profile adds no vector at any layer: it is not a control vector")]
    NothingAdded,
    #[error("the profile adds a vector at layer 0, which llama.cpp's control vectors cannot steer")]
    LayerZero,
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// The `(layer, vector)` pairs of `plan`'s additive edits, the tensors of its control vector.
///
/// # Errors
/// [`CvecError::NothingAdded`] when no layer adds a vector, [`CvecError::LayerZero`] when layer 0 does.
pub fn directions(plan: &EditPlan) -> Result<Vec<(usize, Vec<f32>)>, CvecError> {
    let out: Vec<(usize, Vec<f32>)> = plan
        .edits()
        .iter()
        .map(|e| (e.layer, e.add.vector()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if out.is_empty() {
        return Err(CvecError::NothingAdded);
    }
    if out.iter().any(|(l, _)| *l == 0) {
        return Err(CvecError::LayerZero);
    }
    Ok(out)
}

/// Write `plan`'s additive edits as a control vector GGUF at `out`; `model_hint` names the
/// architecture (llama.cpp's convention). Returns the number of layers written.
///
/// # Errors
/// See [`directions`]; I/O errors of the write.
pub fn export_control_vector(
    plan: &EditPlan,
    model_hint: &str,
    out: &Path,
) -> Result<usize, CvecError> {
    let dirs = directions(plan)?;
    write_control_vector(out, model_hint, &dirs)?;
    Ok(dirs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::LayerEdit;

    #[test]
    fn directions_are_the_added_vectors_and_layer_zero_is_refused() {
        let plan = EditPlan::new(
            4,
            2,
            vec![
                LayerEdit::additive(2, vec![0.6, 0.8], 10.0, 0.5),
                LayerEdit::projection(3, vec![1.0, 0.0], vec![0.0, 0.0], 1.0, 0.0),
            ],
        )
        .unwrap();
        let d = directions(&plan).unwrap();
        assert_eq!(d, vec![(2, vec![3.0, 4.0])]);
        let cv = plan.control_vector().unwrap();
        // layers 1..4, two values each: layer 2 at [2..4]
        assert_eq!(cv, vec![0.0, 0.0, 3.0, 4.0, 0.0, 0.0]);
        let zero =
            EditPlan::new(4, 2, vec![LayerEdit::additive(0, vec![1.0, 0.0], 1.0, 1.0)]).unwrap();
        assert!(matches!(directions(&zero), Err(CvecError::LayerZero)));
        assert!(zero.control_vector().is_none());
        let none = EditPlan::new(
            4,
            2,
            vec![LayerEdit::projection(
                1,
                vec![1.0, 0.0],
                vec![0.0, 0.0],
                1.0,
                0.0,
            )],
        )
        .unwrap();
        assert!(matches!(directions(&none), Err(CvecError::NothingAdded)));
    }
}
