//! `chameleon serve`: a local server that speaks OpenAI's HTTP API (as llama-server, Ollama and LM
//! Studio do), so the assistants people use can talk to it unchanged, and that answers every request
//! through the profile of the user it is for.
//!
//! One worker thread owns the model and its context ([`engine`]) and decodes up to `--parallel`
//! requests together, each token row edited by its own user's plan; the HTTP side ([`routes`], axum
//! on a small tokio runtime) parses requests, decides whose profile answers, queues the job (a
//! bounded queue: full is a 503 with `Retry-After`) and streams the answer back.

pub mod api;
pub mod engine;
pub mod routes;
pub mod writes;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use crate::cli::{Global, ModelArgs};
use crate::store::Store;

/// How long a shutdown waits for running requests before it cancels them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// `chameleon serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on. Anything but a loopback address needs an API key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the ready line names it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require this key (`Authorization: Bearer KEY`) on every `/v1` request.
    #[arg(
        long,
        value_name = "KEY",
        env = "CHAMELEON_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Read API keys from this file, one per line: `KEY` alone, or `KEY USER` to bind the key to a
    /// user (requests with it are answered for that user, whatever they claim). Blank lines and lines
    /// starting with `#` are skipped.
    #[arg(long, value_name = "PATH", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// Requests answered at once, each in its own sequence, decoded together in one batch (every
    /// token row edited by its own user's profile). `--ctx` is per request.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub parallel: usize,
    /// How edits run. `hook`: the eval callback edits each token row with its own user's profile,
    /// so any users share a batch; on a GPU it costs about 1 ms a token (docs/measured.md, "On a
    /// GPU"). `lora`: a profile that adds vectors (`--route align`/`auto`) runs as llama.cpp's
    /// control vector inside the graph, at no cost, and a batch then holds one such profile's
    /// requests at a time (others wait their turn); the paper's edits and requests without a
    /// profile keep the hook. `auto`: `lora` when the model's layers run on a GPU, else `hook`.
    #[arg(long, value_enum, default_value_t = crate::cli::generate::Apply::Auto)]
    pub apply: crate::cli::generate::Apply,
    /// Requests that may wait for the model; beyond them a request gets 503 with `Retry-After`.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub queue: usize,
    /// Write each request's prompt to the log (off: prompts and history stay out of logs).
    #[arg(long)]
    pub log_prompts: bool,
    /// Let clients add users and history, start fits and forget users over the API
    /// (`/v1/chameleon/users/...`); off: stored data is read, never changed. Chats are never stored.
    #[arg(long)]
    pub allow_writes: bool,
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The API keys from `--api-key`, `$CHAMELEON_API_KEY` or `--api-key-file`, each with the user it is
/// bound to, if any.
fn api_keys(args: &ServeArgs) -> anyhow::Result<Vec<(String, Option<String>)>> {
    if let Some(k) = &args.api_key {
        anyhow::ensure!(!k.trim().is_empty(), "the API key is empty");
        return Ok(vec![(k.trim().to_string(), None)]);
    }
    let Some(path) = &args.api_key_file else {
        return Ok(Vec::new());
    };
    let bytes = crate::files::read_limited(path, 1 << 20, "an API key file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("`{}` is not UTF-8 text", path.display()))?;
    let keys: Vec<(String, Option<String>)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((key, user)) => (key.to_string(), Some(user.trim().to_string())),
            None => (l.to_string(), None),
        })
        .collect();
    anyhow::ensure!(
        !keys.is_empty(),
        "`{}` holds no API key\nhint: one per line: `KEY` or `KEY USER`",
        path.display()
    );
    Ok(keys)
}

/// Run the server until Ctrl-C or SIGTERM.
///
/// # Errors
/// A non-loopback address without a key; an address in use; a store that cannot be opened; a model
/// that cannot be loaded (reported after the listener is up, as `/health` turns from 503 to 200).
pub fn run(args: ServeArgs, global: &Global) -> anyhow::Result<()> {
    let keys = api_keys(&args)?;
    if keys.is_empty() && !is_loopback(&args.host) {
        anyhow::bail!(
            "`--host {}` would let anyone who can reach this machine read and use every stored \
             profile\nhint: set an API key (`--api-key`, `--api-key-file` or `$CHAMELEON_API_KEY`), or \
             listen on 127.0.0.1",
            args.host
        );
    }
    let db = global.db_path();
    // the store is checked before anything listens: a wrong `--db` is an error at once
    let store_keys = global.key_options();
    let store = Store::open_with(&db, &store_keys)?;
    let model_path = args.model.model_path();
    crate::files::check_regular(&model_path).map_err(crate::llm::LlmError::File)?;
    let model_id = model_path
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let context = args.model.context_params();
    let ready = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(writes::Writes::new(
        args.allow_writes,
        db.clone(),
        store_keys.clone(),
        crate::llm::ContextParams {
            hook: true,
            ..context.clone()
        },
    ));
    let stats = Arc::new(engine::Stats::default());
    let (jobs, job_rx) = tokio::sync::mpsc::channel(args.queue.max(1));
    let state = Arc::new(routes::AppState {
        jobs,
        ready: ready.clone(),
        model_id: model_id.clone(),
        api_keys: keys
            .into_iter()
            .map(|(k, user)| {
                use sha2::Digest;
                (sha2::Sha256::digest(k.as_bytes()).into(), user)
            })
            .collect(),
        store: Mutex::new(store),
        stats: stats.clone(),
        default_tokens: 512,
        max_tokens: context.n_ctx as usize,
        next_id: AtomicU64::new(1),
        writes: writes.clone(),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let host: IpAddr = if args.host == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            args.host
                .parse()
                .map_err(|_| anyhow::anyhow!("`--host {}` is not an IP address", args.host))?
        };
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(host, args.port))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {host}:{}: {e}\nhint: choose another port with `--port`",
                    args.port
                )
            })?;
        let addr = listener.local_addr()?;
        eprintln!("chameleon serve: loading {} ...", model_path.display());

        let model_args = args.model.clone();
        let global = global.clone();
        let log_prompts = args.log_prompts;
        let parallel = args.parallel.max(1);
        let apply = args.apply;
        let worker_ready = ready.clone();
        let worker_writes = writes.clone();
        let worker = std::thread::Builder::new()
            .name("chameleon-model".into())
            .spawn(move || -> anyhow::Result<()> {
                let model = Arc::new(model_args.load(&global)?);
                let _ = worker_writes.model.set(model.clone());
                let in_graph = apply.vectors_in_graph(model.on_gpu());
                if in_graph {
                    eprintln!(
                        "chameleon serve: vector edits run in llama.cpp's graph, one profile per batch"
                    );
                }
                let config = engine::EngineConfig {
                    model,
                    context,
                    parallel,
                    db,
                    keys: store_keys,
                    log_prompts,
                    stats,
                    in_graph,
                };
                engine::run(config, job_rx, worker_ready, || {
                    eprintln!(
                        "chameleon serve: ready on http://{addr}/v1 (model `{model_id}`; users by the \
                         `user` field, the X-Chameleon-User header or `{model_id}:USER`)"
                    );
                })
            })?;

        let app = routes::router(state);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await
        });
        let worker_failed = tokio::task::spawn_blocking(move || worker.join());
        tokio::pin!(worker_failed);
        let outcome = tokio::select! {
            () = shutdown_signal() => Ok(()),
            joined = &mut worker_failed => match joined {
                Ok(Ok(Err(e))) => Err(e),
                _ => Err(anyhow::anyhow!("the model worker stopped")),
            },
        };
        eprintln!("chameleon serve: stopping");
        let _ = stop_tx.send(());
        // running requests get a bounded time to finish; then they are cancelled with the process
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
        outcome
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listens_without_a_key() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("::1"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("0.0.0.0"));
        assert!(!is_loopback("192.168.1.2"));
    }
}
