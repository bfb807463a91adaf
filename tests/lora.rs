//! The rank-2 LoRA export reproduces the runtime edit in stock llama.cpp's adapter path.

mod common;

use std::sync::Arc;

use chameleon::adapters::lora::{ExportError, export_lora};
use chameleon::llm::{CaptureRequest, ContextParams, Model, ModelParams, mlp_node};
use chameleon::steer::{EditPlan, LayerEdit};

fn softmax(l: &[f32]) -> Vec<f64> {
    let m = l.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f64> = l.iter().map(|&x| f64::from(x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| a * (a / b.max(1e-30)).ln())
        .sum()
}

#[test]
fn the_adapter_reproduces_the_runtime_edit() {
    let path = common::smollm();
    let probe = Model::load(&path, &ModelParams::default()).unwrap();
    let (n_layer, d) = (probe.n_layer(), probe.n_embd());
    let layers = [6, 14];
    // p along the layer's own mean MLP output, as the SVD direction of a real profile is: an edit with a
    // visible effect on the next-token distribution
    let text = probe
        .tokenize("A quiet evening with a good book and tea.", true, false)
        .unwrap();
    let mut pc = probe
        .new_context(&ContextParams {
            n_ctx: 256,
            n_threads: Some(common::N_THREADS),
            ..Default::default()
        })
        .unwrap();
    let cap = pc
        .capture(
            &text,
            &CaptureRequest {
                layers: layers.to_vec(),
            },
        )
        .unwrap();
    let mean_dir = |l: usize| {
        let m = cap.mean(l, 0..cap.n_pos()).unwrap();
        let n = m.iter().map(|x| x * x).sum::<f32>().sqrt();
        m.into_iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let edits = layers
        .iter()
        .map(|&layer| LayerEdit {
            layer,
            p: mean_dir(layer),
            n: common::unit(d, 50 + layer as u64),
            alpha: 1.0,
            beta: 1.0,
            add: Default::default(),
        })
        .collect();
    drop(pc);
    let plan = Arc::new(EditPlan::new(n_layer, d, edits).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("profile.gguf");
    assert_eq!(
        export_lora(&path, "llama", probe.mlp_node(), &plan, &out).unwrap(),
        2
    );
    drop(probe);

    let mut model = Model::load(&path, &ModelParams::default()).unwrap();
    let lora = model
        .load_lora(&out)
        .expect("stock llama.cpp loads the adapter");
    let params = ContextParams {
        n_ctx: 512,
        n_threads: Some(common::N_THREADS),
        ..Default::default()
    };
    let tokens = model
        .tokenize(
            "The lighthouse keeper counted the ships every night.",
            true,
            false,
        )
        .unwrap();
    let req = CaptureRequest {
        layers: layers.to_vec(),
    };

    let mut plain = model.new_context(&params).unwrap();
    let plain_cap = plain.capture(&tokens, &req).unwrap();
    plain.eval(&tokens, false).unwrap();
    let plain_logits = plain.last_logits();

    let mut edit = model.new_context(&params).unwrap();
    edit.set_plan(plan).unwrap();
    let edit_cap = edit.capture(&tokens, &req).unwrap();
    edit.eval(&tokens, false).unwrap();
    let edit_logits = edit.last_logits();

    let mut adapted = model.new_context(&params).unwrap();
    adapted.set_lora(Some((lora, 1.0))).unwrap();
    let lora_cap = adapted.capture(&tokens, &req).unwrap();
    adapted.eval(&tokens, false).unwrap();
    let lora_logits = adapted.last_logits();

    for &l in &layers {
        let (e, a, p) = (
            edit_cap.rows(l).unwrap(),
            lora_cap.rows(l).unwrap(),
            plain_cap.rows(l).unwrap(),
        );
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let diff = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let rel = diff(e, a) / norm(e);
        let moved = diff(e, p) / norm(e);
        // the first edited layer sees the same input under both, so its MLP output must agree to ~1e-3
        // (llama.cpp rounds activations to Q8 inside matrix products, so not exactly); later layers also
        // carry that rounding of every earlier adapted layer (measured 3e-2 at layer 14 vs 1e-1 moved)
        eprintln!("layer {l}: adapter vs edit {rel:.2e}, plain vs edit {moved:.2e}");
        assert!(
            rel < moved / 2.0,
            "layer {l}: adapter {rel} not closer to the edit than plain {moved}"
        );
        if l == layers[0] {
            assert!(
                rel < 2e-3,
                "layer {l}: adapter vs edit relative difference {rel}"
            );
        }
    }
    let (pe, pa, pp) = (
        softmax(&edit_logits),
        softmax(&lora_logits),
        softmax(&plain_logits),
    );
    let (kl_adapter, kl_plain) = (kl(&pe, &pa), kl(&pe, &pp));
    eprintln!("KL(edit||adapter) {kl_adapter:.2e}, KL(edit||plain) {kl_plain:.2e}");
    assert!(
        kl_adapter < kl_plain / 10.0,
        "KL(edit||adapter) {kl_adapter} vs KL(edit||plain) {kl_plain}"
    );
}

#[test]
fn export_is_refused_for_a_post_mlp_norm_architecture() {
    let plan = EditPlan::new(
        18,
        640,
        vec![LayerEdit {
            layer: 1,
            p: vec![0.0; 640],
            n: vec![0.0; 640],
            alpha: 1.0,
            beta: 1.0,
            add: Default::default(),
        }],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = export_lora(
        &common::model_path("gemma3-270m"),
        "gemma3",
        mlp_node("gemma3"),
        &plan,
        &dir.path().join("x.gguf"),
    )
    .unwrap_err();
    assert!(matches!(err, ExportError::PostNorm { .. }), "{err}");
    assert!(err.to_string().contains("runtime edit"));
    assert!(!dir.path().join("x.gguf").exists());
}
