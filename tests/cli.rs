//! What a command-line user expects: completions that a shell accepts, a `--version` that names the
//! llama.cpp build and its backends, and every `chameleon ...` line the README shows parses.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use clap::Parser;

#[test]
fn completions_are_scripts_the_shell_accepts() {
    let out = common::chameleon(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_chameleon"));
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    bash.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let checked = bash.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = common::chameleon(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn version_names_the_llama_cpp_build_and_backends() {
    let out = common::chameleon(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("chameleon {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("backends: CPU"), "{text}");
    assert!(text.contains("devices: CPU"), "{text}");
    // the bindings' version it names is the one Cargo.lock builds
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let want = format!(
        "name = \"llama-cpp-sys-2\"\nversion = \"{}\"",
        chameleon::cli::LLAMA_CPP_SYS_VERSION
    );
    assert!(
        lock.contains(&want),
        "Cargo.lock builds another llama-cpp-sys-2"
    );
    assert!(
        text.contains(chameleon::cli::LLAMA_CPP_SYS_VERSION),
        "{text}"
    );
}

/// The words of one shell command line: quotes removed, stopping at a comment, a pipe or a
/// redirection.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, '#' | '|' | '>' | '<') if cur.is_empty() && !any => break,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

#[test]
fn every_command_the_readme_and_the_usage_guide_show_parses() {
    let readme = ["README.md", "docs/usage.md"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("{}/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let mut in_block = false;
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        let full = std::mem::take(&mut pending) + line;
        if full.starts_with("chameleon ") {
            lines.push(full);
        }
    }
    assert!(lines.len() > 20, "found only {} commands", lines.len());
    for line in &lines {
        // a synopsis's optional parts (`[--limit N]`) are left out
        let mut plain = String::new();
        let mut depth = 0;
        for c in line.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                c if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        let args = words(&plain);
        if let Err(e) = chameleon::cli::Cli::try_parse_from(&args) {
            // `--version`/`--help` end parsing with a "display" error, which is not one
            assert!(
                matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ),
                "a documented command does not parse: {line}\n{e}"
            );
        }
    }
}

#[test]
fn user_list_speaks_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let db = db.to_str().unwrap();
    common::ok(common::chameleon(&["--db", db, "user", "add", "ann"]));
    common::ok(common::chameleon(&[
        "--db", db, "group", "add", "fam", "ann",
    ]));
    let text = common::ok(common::chameleon(&["--db", db, "user", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[0]["name"], "ann");
    assert_eq!(v[0]["history"], 0);
    assert_eq!(v[0]["groups"][0], "fam");
    assert!(v[0]["created"].as_i64().unwrap() > 0);
}

/// `NO_COLOR` turns colour off everywhere, even where colour is forced (`CLICOLOR_FORCE`, which is
/// what makes the check able to fail: forced alone, help and usage errors are coloured).
#[test]
fn no_color_is_honoured() {
    let run = |args: &[&str], no_color: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chameleon"));
        cmd.args(args)
            .env("CLICOLOR_FORCE", "1")
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().unwrap();
        [out.stdout, out.stderr].concat()
    };
    let escapes = |bytes: &[u8]| bytes.iter().filter(|&&b| b == 0x1b).count();
    for args in [
        &["--help"][..],
        &["user", "no-such-command"],
        &["fit", "--help"],
    ] {
        assert!(
            escapes(&run(args, false)) > 0,
            "{args:?}: no colour even when forced"
        );
        assert_eq!(
            escapes(&run(args, true)),
            0,
            "{args:?}: colour with NO_COLOR"
        );
    }
    // chameleon's own errors are never coloured
    let out = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .args(["--db", "/", "user", "list"])
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));
    assert_eq!(escapes(&out.stderr), 0);
}
