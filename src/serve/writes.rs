//! Personal data over the API, for assistants that keep a user's profile current (`--allow-writes`):
//! add a user and history items, start a fit that runs in the background, read its state, forget a
//! user. Chats are never stored: history arrives only through these endpoints.
//!
//! A fit runs on its own thread with its own llama.cpp context on the server's model, so chat keeps
//! answering meanwhile (sharing the cores); one fit runs at a time, and a user being fitted cannot be
//! forgotten until the fit ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::ApiError;
use crate::llm::{ContextParams, Model};
use crate::personalize::{FitParams, Personalizer, ProgressSlot, Route};
use crate::store::crypt::KeyOptions;
use crate::store::{NewItem, Store, StoreError, TASK_GENERAL, unix_now};

/// What the write endpoints share.
pub struct Writes {
    /// `--allow-writes`.
    pub allowed: bool,
    pub db: PathBuf,
    pub keys: KeyOptions,
    /// The fit's context (the server's per-sequence context, with the capture hook).
    pub context: ContextParams,
    /// The server's model, once the worker has loaded it.
    pub model: OnceLock<Arc<Model>>,
    fits: Mutex<HashMap<String, FitState>>,
}

/// Where a user's fit stands.
#[derive(Clone)]
enum FitState {
    Running {
        route: Route,
        started: i64,
        since: Instant,
        progress: ProgressSlot,
    },
    Done {
        route: Route,
        finished: i64,
        report: Value,
    },
    Failed {
        route: Route,
        finished: i64,
        error: String,
    },
}

/// `POST /v1/chameleon/users/{name}/history`.
#[derive(Debug, Deserialize)]
pub struct HistoryRequest {
    pub items: Vec<HistoryItemRequest>,
}

/// One history item as a client sends it.
#[derive(Debug, Deserialize)]
pub struct HistoryItemRequest {
    #[serde(default)]
    pub input: String,
    pub output: String,
    pub task: Option<String>,
    /// Seconds since the Unix epoch (now when absent).
    pub time: Option<i64>,
}

/// `POST /v1/chameleon/users/{name}/fit` (every field optional).
#[derive(Debug, Default, Deserialize)]
pub struct FitRequest {
    pub route: Option<Route>,
    pub k: Option<usize>,
    pub seed: Option<u64>,
}

/// `POST /v1/chameleon/users`.
#[derive(Debug, Deserialize)]
pub struct UserRequest {
    pub name: String,
}

impl Writes {
    pub fn new(allowed: bool, db: PathBuf, keys: KeyOptions, context: ContextParams) -> Writes {
        Writes {
            allowed,
            db,
            keys,
            context,
            model: OnceLock::new(),
            fits: Mutex::new(HashMap::new()),
        }
    }

    /// 403 unless the server was started with `--allow-writes`, and unless the caller's key (when it
    /// is bound to a user) is that user's.
    pub fn check(&self, bound: Option<&str>, name: &str) -> Result<(), ApiError> {
        if !self.allowed {
            return Err(forbidden(
                "this server does not change stored data: start it with `chameleon serve --allow-writes`",
            ));
        }
        if let Some(b) = bound
            && b != name
        {
            return Err(forbidden(format!(
                "this API key is bound to user `{b}`: it may not change user `{name}`"
            )));
        }
        Ok(())
    }

    /// Add a user.
    pub fn add_user(&self, store: &Store, name: &str) -> Result<Value, ApiError> {
        store.create_user(name).map_err(store_error)?;
        Ok(json!({"object": "chameleon.user", "name": name, "created": true}))
    }

    /// Add history items to a user, all or none.
    pub fn add_history(
        &self,
        store: &Store,
        name: &str,
        req: HistoryRequest,
    ) -> Result<Value, ApiError> {
        let user = store.require_user(name).map_err(store_error)?;
        if req.items.is_empty() {
            return Err(ApiError::invalid("`items` is empty", Some("items")));
        }
        let items: Vec<NewItem> = req
            .items
            .into_iter()
            .map(|i| NewItem {
                task: i.task.unwrap_or_else(|| TASK_GENERAL.to_string()),
                input: i.input,
                output: i.output,
                time: i.time,
                source_id: None,
            })
            .collect();
        let added = store.add_history(user.id, &items).map_err(store_error)?;
        let total = store.history_len(user.id).map_err(store_error)?;
        Ok(json!({"object": "chameleon.history", "user": name, "added": added, "history": total}))
    }

    /// Forget a user, as `chameleon user forget` does (refused while the user is being fitted).
    pub fn forget(&self, store: &Store, name: &str) -> Result<Value, ApiError> {
        if matches!(
            self.fits.lock().ok().and_then(|f| f.get(name).cloned()),
            Some(FitState::Running { .. })
        ) {
            return Err(conflict(format!(
                "user `{name}` is being fitted: forget them when the fit has ended (GET its state)"
            )));
        }
        let f = store.forget_user(name).map_err(store_error)?;
        if let Ok(mut fits) = self.fits.lock() {
            fits.remove(name);
        }
        Ok(json!({
            "object": "chameleon.forgotten",
            "user": name,
            "rows": {
                "users": f.users, "history": f.history, "embeddings": f.embeddings,
                "group_members": f.group_members, "insights": f.insights, "pairs": f.pairs,
                "profiles": f.profiles, "profile_layers": f.profile_layers,
            },
            "erased": f.erased,
        }))
    }

    /// Start a fit of the user's profile on a thread of its own; 409 while another fit runs.
    pub fn start_fit(
        self: &Arc<Self>,
        store: &Store,
        name: &str,
        req: FitRequest,
    ) -> Result<Value, ApiError> {
        store.require_user(name).map_err(store_error)?;
        let Some(model) = self.model.get().cloned() else {
            return Err(ApiError::busy("the model is still loading"));
        };
        let route = req.route.unwrap_or_default();
        let mut params = FitParams {
            route,
            ..FitParams::default()
        };
        if let Some(k) = req.k {
            params.k = k;
        }
        if let Some(seed) = req.seed {
            params.ccs.seed = seed;
        }
        let progress: ProgressSlot = Arc::new(Mutex::new(None));
        {
            let mut fits = self
                .fits
                .lock()
                .map_err(|_| ApiError::internal("the fit table is unavailable"))?;
            if let Some((who, _)) = fits
                .iter()
                .find(|(_, s)| matches!(s, FitState::Running { .. }))
            {
                return Err(conflict(format!(
                    "a fit is running (user `{who}`): one runs at a time; try again when it has ended"
                )));
            }
            fits.insert(
                name.to_string(),
                FitState::Running {
                    route,
                    started: unix_now(),
                    since: Instant::now(),
                    progress: progress.clone(),
                },
            );
        }
        let this = Arc::clone(self);
        let who = name.to_string();
        let spawned = std::thread::Builder::new()
            .name("chameleon-fit".into())
            .spawn(move || {
                let outcome = (|| -> anyhow::Result<Value> {
                    let store = Store::open_with(&this.db, &this.keys)?;
                    let mut p = Personalizer::new(&model, &store, this.context.clone())?
                        .with_progress(false)
                        .with_progress_slot(progress);
                    let report = p.fit_user(&who, &params)?;
                    Ok(serde_json::to_value(&report)?)
                })();
                let state = match outcome {
                    Ok(report) => FitState::Done {
                        route,
                        finished: unix_now(),
                        report,
                    },
                    Err(e) => FitState::Failed {
                        route,
                        finished: unix_now(),
                        error: format!("{e:#}"),
                    },
                };
                if let Ok(mut fits) = this.fits.lock() {
                    fits.insert(who, state);
                }
            });
        if let Err(e) = spawned {
            if let Ok(mut fits) = self.fits.lock() {
                fits.remove(name);
            }
            return Err(ApiError::internal(format!("cannot start the fit: {e}")));
        }
        Ok(self.fit_state(store, name)?.1)
    }

    /// Where the user's fit stands: `running` (stage and progress), `done` (the fit's report),
    /// `failed` (why), or `none` since this server started (with whether a profile is stored).
    pub fn fit_state(&self, store: &Store, name: &str) -> Result<(StatusCode, Value), ApiError> {
        store.require_user(name).map_err(store_error)?;
        let state = self.fits.lock().ok().and_then(|f| f.get(name).cloned());
        let route_name = |r: Route| format!("{r:?}").to_lowercase();
        Ok(match state {
            Some(FitState::Running {
                route,
                started,
                since,
                progress,
            }) => {
                let bar = progress.lock().ok().and_then(|b| b.clone());
                let stage = bar.as_ref().map(|b| b.message().to_string());
                let (done, of) = bar
                    .as_ref()
                    .map_or((0, 0), |b| (b.position(), b.length().unwrap_or(0)));
                (
                    StatusCode::ACCEPTED,
                    json!({
                        "object": "chameleon.fit", "user": name, "state": "running",
                        "route": route_name(route), "started": started,
                        "seconds": since.elapsed().as_secs_f64(),
                        "stage": stage, "progress": {"done": done, "of": of},
                    }),
                )
            }
            Some(FitState::Done {
                route,
                finished,
                report,
            }) => (
                StatusCode::OK,
                json!({
                    "object": "chameleon.fit", "user": name, "state": "done",
                    "route": route_name(route), "finished": finished, "report": report,
                }),
            ),
            Some(FitState::Failed {
                route,
                finished,
                error,
            }) => (
                StatusCode::OK,
                json!({
                    "object": "chameleon.fit", "user": name, "state": "failed",
                    "route": route_name(route), "finished": finished, "error": error,
                }),
            ),
            None => (
                StatusCode::OK,
                json!({"object": "chameleon.fit", "user": name, "state": "none"}),
            ),
        })
    }
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: message.into(),
        kind: "permission_error",
        param: None,
        code: Some("writes_not_allowed"),
    }
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        message: message.into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("conflict"),
    }
}

/// A store error as an API error: unknown users 404, bad names and items 400, existing users 409.
fn store_error(e: StoreError) -> ApiError {
    match &e {
        StoreError::UnknownUser(name) => ApiError::unknown_user(name, "the path"),
        StoreError::UserExists(_) => conflict(e.to_string()),
        StoreError::InvalidName { .. } | StoreError::BadInput { .. } => {
            ApiError::invalid(e.to_string(), None)
        }
        _ => ApiError::internal(format!("the store failed: {e}")),
    }
}
