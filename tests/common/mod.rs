//! Helpers shared by the integration tests: the fetched models and the CLI binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a model fetched by `models/fetch.sh NAME`; panics with the fix when it is missing, so a
/// test never passes for lack of its model.
pub fn model_path(name: &str) -> PathBuf {
    let path = chameleon::paths::fetched_model(name);
    assert!(
        path.exists(),
        "model `{name}` not found at {}; run `models/fetch.sh {name}` (or `make test`, which fetches it)",
        path.display()
    );
    path
}

/// llama.cpp threads per context in the tests. `make test` runs two tests at once on CI's two cores,
/// and llama.cpp's workers spin while they wait for each other: two contexts of two threads each on
/// two cores stall one another, which made the suite several times slower than one thread each.
pub const N_THREADS: usize = 1;
/// [`N_THREADS`] as the CLI's `--threads` argument.
pub const THREADS: &str = "1";

/// The default model (SmolLM2-135M-Instruct).
pub fn smollm() -> PathBuf {
    model_path("smollm2-135m")
}

/// Run the `chameleon` binary with `args`.
pub fn chameleon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .args(args)
        .output()
        .expect("run the chameleon binary")
}

/// A deterministic pseudo-random unit vector of length `d`.
pub fn unit(d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..d)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// The stdout of a command that must have succeeded (its stderr in the panic otherwise).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
