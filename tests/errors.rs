//! Bad model files give clear errors through the real CLI, and never a crash.

mod common;

use std::io::Write;

fn info(path: &std::path::Path) -> (bool, String) {
    let out = common::chameleon(&["info", "--model", path.to_str().unwrap()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_failure(stderr: &str, code_ok: bool, needle: &str) {
    assert!(!code_ok, "must exit non-zero");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
}

#[test]
fn missing_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = info(&dir.path().join("nope.gguf"));
    assert_clean_failure(&err, ok, "not found");
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn truncated_gguf() {
    let src = std::fs::read(common::smollm()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for keep in [src.len() / 2, 4096, 10] {
        let path = dir.path().join(format!("cut-{keep}.gguf"));
        std::fs::write(&path, &src[..keep]).unwrap();
        let (ok, err) = info(&path);
        assert!(!ok);
        assert!(
            err.contains("truncated") || err.contains("not a valid GGUF"),
            "{keep}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn non_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.gguf");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(b"this is not a model at all\n")
        .unwrap();
    let (ok, err) = info(&path);
    assert_clean_failure(&err, ok, "is not a GGUF model");
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let (ok, err) = info(&empty);
    assert_clean_failure(&err, ok, "is not a GGUF model");
}

#[test]
fn info_reports_the_model() {
    let out = common::chameleon(&["info", "--model", common::smollm().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("architecture:  llama"), "{stdout}");
    assert!(stdout.contains("layers:        30"));
    assert!(stdout.contains("hidden size:   576"));
    assert!(stdout.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"));
    // the devices of this build: the CPU at least, and on a CPU build the hint for a GPU one
    let devices = stdout
        .lines()
        .find(|l| l.starts_with("devices:"))
        .unwrap_or_default();
    assert!(devices.contains("CPU ("), "{stdout}");
    if !chameleon::llm::gpu_offload() {
        assert!(stdout.contains("--features cuda"), "{stdout}");
    }
    // llama.cpp's log is silenced by default
    assert!(
        out.stderr.is_empty(),
        "stderr not quiet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generate_answers_on_stdout() {
    let out = common::chameleon(&[
        "generate",
        "--model",
        common::smollm().to_str().unwrap(),
        "--prompt",
        "What is 2+2?",
        "--max-tokens",
        "12",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}
