//! Where chameleon keeps its files, resolved in one place.
//!
//! Precedence everywhere: command-line flag > environment variable > platform default.

use std::path::PathBuf;

use directories::ProjectDirs;

/// The name of the default model, as `models/fetch.sh` names it.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

fn project_dirs() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", "chameleon")
}

/// Folder the fetch script puts models in: `$CHAMELEON_MODEL_DIR`, else `$XDG_CACHE_HOME/chameleon/models`
/// (`~/.cache/chameleon/models` on Linux). Keep this in step with `models/fetch.sh`.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHAMELEON_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("chameleon").join("models");
    }
    match project_dirs() {
        Some(dirs) => dirs.cache_dir().join("models"),
        None => PathBuf::from(".").join("models"),
    }
}

/// Path of a fetched model by its short name (`smollm2-135m`, `gemma3-270m`, ...).
pub fn fetched_model(name: &str) -> PathBuf {
    model_dir().join(format!("{name}.gguf"))
}

/// The model used when `--model` is not given: `$CHAMELEON_MODEL`, else the fetched default model.
pub fn default_model() -> PathBuf {
    match std::env::var_os("CHAMELEON_MODEL").filter(|m| !m.is_empty()) {
        Some(m) => PathBuf::from(m),
        None => fetched_model(DEFAULT_MODEL),
    }
}

/// The database used when `--db` is not given: `$CHAMELEON_DB`, else the platform data dir
/// (`~/.local/share/chameleon/chameleon.db` on Linux).
pub fn default_db() -> PathBuf {
    if let Some(db) = std::env::var_os("CHAMELEON_DB").filter(|d| !d.is_empty()) {
        return PathBuf::from(db);
    }
    match project_dirs() {
        Some(dirs) => dirs.data_dir().join("chameleon.db"),
        None => PathBuf::from("chameleon.db"),
    }
}
