//! The `chameleon` binary: parse arguments, call the library, map errors to exit codes.

use std::io::Write;
use std::process::ExitCode;

/// Whether an error is a write to a closed pipe: an `io::Error`, or one that a JSON writer wrapped
/// (serde_json's error does not list the `io::Error` among its sources).
fn is_broken_pipe(cause: &(dyn std::error::Error + 'static)) -> bool {
    let pipe = |kind| kind == std::io::ErrorKind::BrokenPipe;
    cause
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| pipe(e.kind()))
        || cause
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind)
            .is_some_and(pipe)
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    // `--version` names the llama.cpp build and its backends (found at run time, so the text is built
    // here rather than by the derive)
    let wants_version = std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V");
    let mut command = chameleon::cli::Cli::command();
    if wants_version {
        let text: &'static str = Box::leak(chameleon::cli::long_version().into_boxed_str());
        command = command.version(text);
    }
    let cli = match chameleon::cli::Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match chameleon::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // a closed stdout (`chameleon export ... | head`) is not a failure
            if err.chain().any(is_broken_pipe) {
                return ExitCode::SUCCESS;
            }
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {err}");
            for cause in err.chain().skip(1) {
                let _ = writeln!(stderr, "  caused by: {cause}");
            }
            if let Some(hint) = chameleon::cli::hint_for(&err) {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
