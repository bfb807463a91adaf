//! The command line: clap definitions, shared flag groups, one file per subcommand.
//!
//! Data goes to stdout, progress and logs to stderr. Errors are `anyhow` here and nowhere below;
//! library errors carry their own hints through [`hint_for`].

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// `println!` for what a command prints as its result, returning the write's error instead of
/// panicking: a reader that closes the pipe (`chameleon info | head -1`) ends the command quietly
/// (`main` treats a broken pipe as success, as ripgrep does).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` as [`outln!`] is `println!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod chat;
mod eval;
mod export;
mod fit;
pub mod generate;
mod group;
mod history;
mod info;
mod profile;
mod store;
mod user;

/// Personalise a local LLM for one person, on their own machine (CHAMELEON on llama.cpp).
#[derive(Debug, Parser)]
#[command(name = "chameleon", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Show llama.cpp's own log output (silenced by default).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// The SQLite database [default: `$CHAMELEON_DB`, else `~/.local/share/chameleon/chameleon.db`].
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// A file holding the store's key (mode 0600), looked at after `$CHAMELEON_DB_KEY` and the
    /// keystore.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "CHAMELEON_KEY_FILE",
        hide_env_values = true
    )]
    pub key_file: Option<PathBuf>,
}

impl Global {
    /// The database path. Precedence: `--db` > `$CHAMELEON_DB` > platform data dir.
    pub fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(crate::paths::default_db)
    }

    /// Where the store's key may be found (`--key-file`, the keystore).
    pub fn key_options(&self) -> crate::store::crypt::KeyOptions {
        crate::store::crypt::KeyOptions::new(self.key_file.clone())
    }

    /// Open the store these flags name, with its key if it is encrypted.
    ///
    /// # Errors
    /// As [`crate::store::Store::open_with`].
    pub fn open_store(&self) -> Result<crate::store::Store, crate::store::StoreError> {
        crate::store::Store::open_with(&self.db_path(), &self.key_options())
    }
}

/// Flags of every subcommand that runs a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF model file [default: `$CHAMELEON_MODEL`, else the model fetched by `models/fetch.sh`].
    #[arg(long, short, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// CPU threads for llama.cpp [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Layers to offload to the GPU in CUDA/Metal/Vulkan builds: -1 = all, 0 = none (CPU only).
    /// CPU builds ignore it.
    #[arg(
        long,
        value_name = "N",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    pub gpu_layers: i32,
    /// Context size in tokens.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub ctx: u32,
}

impl ModelArgs {
    /// The model path. Precedence: `--model` > `$CHAMELEON_MODEL` > fetched default model.
    pub fn model_path(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(crate::paths::default_model)
    }

    /// Load the model these flags name.
    ///
    /// # Errors
    /// When the file is missing or is not a model llama.cpp can load.
    pub fn load(&self, global: &Global) -> anyhow::Result<crate::llm::Model> {
        crate::llm::set_verbose(global.verbose);
        let params = crate::llm::ModelParams {
            gpu_layers: self.gpu_layers,
        };
        Ok(crate::llm::Model::load(&self.model_path(), &params)?)
    }

    /// Context parameters these flags describe.
    pub fn context_params(&self) -> crate::llm::ContextParams {
        crate::llm::ContextParams {
            n_ctx: self.ctx,
            n_threads: self.threads,
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a model's architecture, layers, hidden size, chat template and fingerprint.
    Info(info::InfoArgs),
    /// Fit a user's or a group's profile (the CHAMELEON pipeline).
    Fit(fit::FitArgs),
    /// Talk with the model, personalised for a user.
    Chat(chat::ChatArgs),
    /// Answer one prompt.
    Generate(generate::GenerateArgs),
    /// Add, list or forget users.
    User(user::UserArgs),
    /// Encrypt, decrypt or rekey the store, write a recovery key, show its status.
    Store(store::StoreArgs),
    /// Add, import or list a user's history.
    History(history::HistoryArgs),
    /// Add users to groups, remove them, list groups.
    Group(group::GroupArgs),
    /// Export a fitted profile (as a LoRA adapter for stock llama.cpp).
    Profile(profile::ProfileCmdArgs),
    /// Everything stored about a user, as JSON on stdout.
    Export(export::ExportArgs),
    /// Import a user written by `chameleon export`.
    Import(export::ImportArgs),
    /// Evaluate on LaMP-format data: CHAMELEON against its baselines, with LaMP's metrics.
    Eval(eval::EvalArgs),
    /// Serve the OpenAI HTTP API locally; every request answered through its user's profile.
    Serve(crate::serve::ServeArgs),
    /// Print a shell completion script: `chameleon completions bash > ~/.local/share/bash-completion/completions/chameleon`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Run a parsed command line.
///
/// # Errors
/// Whatever the subcommand reports; `main` prints it with its causes.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::llm::set_verbose(cli.global.verbose);
    match cli.command {
        Command::Info(args) => info::run(args, &cli.global),
        Command::Fit(args) => fit::run(args, &cli.global),
        Command::Chat(args) => chat::run(args, &cli.global),
        Command::Generate(args) => generate::run(args, &cli.global),
        Command::User(args) => user::run(args, &cli.global),
        Command::Store(args) => store::run(args, &cli.global),
        Command::History(args) => history::run(args, &cli.global),
        Command::Group(args) => group::run(args, &cli.global),
        Command::Profile(args) => profile::run(args, &cli.global),
        Command::Export(args) => export::run_export(args, &cli.global),
        Command::Import(args) => export::run_import(args, &cli.global),
        Command::Eval(args) => eval::run(args, &cli.global),
        Command::Serve(args) => crate::serve::run(args, &cli.global),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "chameleon", &mut out);
            use std::io::Write as _;
            std::io::stdout().lock().write_all(&out)?;
            Ok(())
        }
    }
}

/// The version the llama.cpp bindings were built from (checked against Cargo.lock by a test).
pub const LLAMA_CPP_SYS_VERSION: &str = "0.1.161";

/// `--version`'s long text: chameleon, the llama.cpp build and the backends compiled in, with the
/// devices they found.
pub fn long_version() -> String {
    let mut backends = vec!["CPU"];
    for (on, name) in [
        (cfg!(feature = "cuda"), "CUDA"),
        (cfg!(feature = "metal"), "Metal"),
        (cfg!(feature = "vulkan"), "Vulkan"),
        (cfg!(feature = "openmp"), "OpenMP"),
    ] {
        if on {
            backends.push(name);
        }
    }
    let devices: Vec<String> = crate::llm::devices()
        .into_iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect();
    format!(
        "{}\nllama.cpp: llama-cpp-sys-2 {LLAMA_CPP_SYS_VERSION}\nbackends: {}\ndevices: {}",
        env!("CARGO_PKG_VERSION"),
        backends.join(", "),
        devices.join(", ")
    )
}

/// A flag that turns true on Ctrl-C, for long jobs that stop cleanly at their next step; a second
/// Ctrl-C kills the process the usual way.
pub fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current step (Ctrl-C again to kill)");
    });
    flag
}

/// A `hint:` line for errors the user can fix, found anywhere in the error's chain.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        let hint = if let Some(e) = cause.downcast_ref::<crate::llm::LlmError>() {
            e.hint()
        } else if let Some(e) = cause.downcast_ref::<crate::store::StoreError>() {
            e.hint()
        } else if let Some(e) = cause.downcast_ref::<crate::store::crypt::KeyError>() {
            e.hint()
        } else if let Some(e) = cause.downcast_ref::<crate::personalize::PersonalizeError>() {
            e.hint()
        } else if let Some(e) = cause.downcast_ref::<crate::eval::EvalError>() {
            e.hint()
        } else {
            None
        };
        if hint.is_some() {
            return hint;
        }
    }
    None
}
