//! Stage 5: which layers to edit, from the layers' best CCS losses.
//!
//! The paper's heuristic, as method.md states its intent: sort the layers by CCS loss, ascending; take the
//! running mean `m_i` of the i smallest losses for i = 1..L; find the largest jump `m_{i+1} - m_i`; edit the
//! i layers before it. Low CCS loss means the probe found a consistent, confident split, so these are the
//! layers where the generic direction is clearest.
//!
//! Edge cases, decided here:
//! - equal losses sort by layer index, so the order and the result are deterministic;
//! - equal jumps go to the earliest, i.e. the fewest layers: when every loss is the same (no jump at all)
//!   one layer is edited, the lowest-indexed one. Without a signal, editing least is the cautious choice;
//! - a single finite layer is selected; no layers select nothing;
//! - a NaN or infinite loss marks a layer whose fit failed: it is never selected and does not enter the means.

/// The layers to edit, ascending, chosen by the running-mean rule from each layer's CCS loss
/// (`ccs_losses[l]` for layer l). `max` caps the count, keeping the lowest-loss layers of the chosen set.
pub fn select_layers(ccs_losses: &[f32], max: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ccs_losses.len())
        .filter(|&l| ccs_losses[l].is_finite())
        .collect();
    order.sort_by(|&a, &b| ccs_losses[a].total_cmp(&ccs_losses[b]).then(a.cmp(&b)));
    let count = if order.len() <= 1 {
        order.len()
    } else {
        // Running means in f64: m_i for i = 1..=L, then the first largest m_{i+1} - m_i.
        let mut sum = 0.0f64;
        let means: Vec<f64> = order
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                sum += f64::from(ccs_losses[l]);
                sum / (i + 1) as f64
            })
            .collect();
        let mut best = (0, f64::NEG_INFINITY);
        for (i, pair) in means.windows(2).enumerate() {
            let jump = pair[1] - pair[0];
            if jump > best.1 {
                best = (i, jump);
            }
        }
        best.0 + 1
    };
    let mut chosen = order[..count.min(max.unwrap_or(usize::MAX))].to_vec();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CURVE: [f32; 8] = [0.1, 0.11, 0.12, 0.5, 0.55, 0.6, 0.62, 0.65];

    #[test]
    fn picks_the_layers_before_the_largest_jump() {
        assert_eq!(select_layers(&CURVE, None), vec![0, 1, 2]);
    }

    #[test]
    fn input_order_does_not_matter() {
        // the same curve scattered over the layers: the same losses must be chosen, at their new indices
        let perm = [5, 0, 7, 2, 6, 1, 4, 3];
        let mut losses = [0.0f32; 8];
        for (src, &dst) in perm.iter().enumerate() {
            losses[dst] = CURVE[src];
        }
        let mut expected: Vec<usize> = perm[..3].to_vec();
        expected.sort_unstable();
        assert_eq!(select_layers(&losses, None), expected);
    }

    #[test]
    fn max_caps_the_count_keeping_the_lowest_losses() {
        let losses = [0.5, 0.12, 0.6, 0.1, 0.11, 0.55];
        assert_eq!(select_layers(&losses, None), vec![1, 3, 4]);
        assert_eq!(select_layers(&losses, Some(2)), vec![3, 4]);
        assert_eq!(select_layers(&losses, Some(10)), vec![1, 3, 4]);
        assert_eq!(select_layers(&losses, Some(0)), Vec::<usize>::new());
    }

    #[test]
    fn a_late_jump_selects_many_layers() {
        // the jump is after six low layers, not after the first
        let losses = [0.2, 0.21, 0.22, 0.23, 0.24, 0.25, 0.9, 0.95];
        assert_eq!(select_layers(&losses, None), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(select_layers(&[], None), Vec::<usize>::new());
        assert_eq!(select_layers(&[0.3], None), vec![0]);
        assert_eq!(
            select_layers(&[0.4; 5], None),
            vec![0],
            "all equal: the fewest layers, lowest index"
        );
        assert_eq!(
            select_layers(&[0.5, f32::NAN, 0.1, 0.11, f32::INFINITY], None),
            vec![2, 3]
        );
        assert_eq!(select_layers(&[f32::NAN, 0.2], None), vec![1]);
    }

    proptest! {
        /// The chosen layers are the `count` lowest-loss layers for some count >= 1, ascending, within `max`.
        #[test]
        fn choice_is_a_prefix_of_the_loss_order(losses in prop::collection::vec(0.0f32..1.0, 1..40), max in 0usize..50) {
            let chosen = select_layers(&losses, Some(max));
            prop_assert!(chosen.len() <= max);
            prop_assert!(chosen.windows(2).all(|w| w[0] < w[1]));
            let free = select_layers(&losses, None);
            prop_assert!(!free.is_empty());
            let worst = free.iter().map(|&l| losses[l]).fold(f32::NEG_INFINITY, f32::max);
            let outside = (0..losses.len()).filter(|l| !free.contains(l)).map(|l| losses[l]);
            prop_assert!(outside.clone().all(|x| x >= worst));
        }
    }
}
