//! The HTTP side: routes, the API key, which user a request is for, and the responses (whole or as
//! server-sent events).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::api::{ApiError, ChatRequest, Common, CompletionRequest, Prompt, Usage, token_limit};
use super::engine::{Applied, Event, Input, Job};
use crate::llm::{ChatMessage, GenerateOptions};
use crate::store::Store;

/// The largest request body: a long conversation fits many times over.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// What every handler shares.
pub struct AppState {
    pub jobs: mpsc::Sender<Job>,
    pub ready: Arc<AtomicBool>,
    /// The id `/v1/models` lists (the model file's stem); `<id>:<user>` names a user.
    pub model_id: String,
    /// SHA-256 of each API key (none: no key is required), and the user a key is bound to.
    pub api_keys: Vec<([u8; 32], Option<String>)>,
    pub store: Mutex<Store>,
    pub stats: Arc<super::engine::Stats>,
    /// `max_tokens` when a request gives none, and the most a request may ask for.
    pub default_tokens: usize,
    pub max_tokens: usize,
    pub next_id: AtomicU64,
    /// The personal-data endpoints (`--allow-writes`).
    pub writes: Arc<super::writes::Writes>,
}

/// The router of `chameleon serve`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/chameleon/users", post(add_user))
        .route(
            "/v1/chameleon/users/{name}",
            axum::routing::delete(forget_user),
        )
        .route("/v1/chameleon/users/{name}/history", post(add_history))
        .route(
            "/v1/chameleon/users/{name}/fit",
            post(start_fit).get(fit_state),
        )
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        let s = &state.stats;
        axum::Json(json!({
            "status": "ok",
            "running": s.running.load(Ordering::Relaxed),
            "batches": s.batches.load(Ordering::Relaxed),
            "max_sequences_in_a_batch": s.max_sequences.load(Ordering::Relaxed),
            "vector_switches": s.vector_switches.load(Ordering::Relaxed),
        }))
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "loading model"})),
        )
            .into_response()
    }
}

/// A JSON response, or the error in OpenAI's shape.
fn json_reply(result: Result<(StatusCode, Value), ApiError>) -> Response {
    match result {
        Ok((status, value)) => (status, axum::Json(value)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Run `f` on the store, for a caller allowed to change user `name`.
fn with_store<T>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let store = state
        .store
        .lock()
        .map_err(|_| ApiError::internal("the store is unavailable"))?;
    f(&store)
}

async fn add_user(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    json_reply(
        async {
            let bound = authorize(&state, &headers)?;
            let req: super::writes::UserRequest = parse(&read_body(&headers, body).await?)?;
            state.writes.check(bound.as_deref(), &req.name)?;
            let v = with_store(&state, |s| state.writes.add_user(s, &req.name))?;
            Ok((StatusCode::CREATED, v))
        }
        .await,
    )
}

async fn add_history(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    json_reply(
        async {
            let bound = authorize(&state, &headers)?;
            state.writes.check(bound.as_deref(), &name)?;
            let req = parse(&read_body(&headers, body).await?)?;
            let v = with_store(&state, |s| state.writes.add_history(s, &name, req))?;
            Ok((StatusCode::OK, v))
        }
        .await,
    )
}

async fn start_fit(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    json_reply(
        async {
            let bound = authorize(&state, &headers)?;
            state.writes.check(bound.as_deref(), &name)?;
            let bytes = read_body(&headers, body).await?;
            let req = if bytes.iter().all(u8::is_ascii_whitespace) {
                super::writes::FitRequest::default()
            } else {
                parse(&bytes)?
            };
            let v = with_store(&state, |s| state.writes.start_fit(s, &name, req))?;
            Ok((StatusCode::ACCEPTED, v))
        }
        .await,
    )
}

async fn fit_state(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    json_reply((|| {
        let bound = authorize(&state, &headers)?;
        if let Some(b) = bound.as_deref().filter(|b| *b != name) {
            return Err(
                ApiError::unknown_user(&name, "the path").with_message(format!(
                    "this API key is bound to user `{b}`: it may not read user `{name}`"
                )),
            );
        }
        with_store(&state, |s| state.writes.fit_state(s, &name))
    })())
}

async fn forget_user(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    json_reply((|| {
        let bound = authorize(&state, &headers)?;
        state.writes.check(bound.as_deref(), &name)?;
        let v = with_store(&state, |s| state.writes.forget(s, &name))?;
        Ok((StatusCode::OK, v))
    })())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Who may call: no key required, or a key that matches, with the user it is bound to. Keys are
/// compared as SHA-256 digests in constant time, each of them, so neither a key's bytes nor its length
/// nor which key matched shows in the timing.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if state.api_keys.is_empty() {
        return Ok(None);
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let got = sha256(given.trim().as_bytes());
    let mut found = None;
    for (want, user) in &state.api_keys {
        let diff = want.iter().zip(&got).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(user.clone());
        }
    }
    found.ok_or_else(ApiError::unauthorized)
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let bound = match authorize(&state, &headers) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let users = match state.store.lock().map(|s| s.users()) {
        Ok(Ok(users)) => users,
        _ => return ApiError::internal("cannot read the store").into_response(),
    };
    let entry =
        |id: String| json!({"id": id, "object": "model", "created": 0, "owned_by": "chameleon"});
    let mut data = vec![entry(state.model_id.clone())];
    // a key bound to a user lists that user only: other users' names are not its business
    data.extend(
        users
            .iter()
            .filter(|u| bound.as_ref().is_none_or(|b| *b == u.user.name))
            .map(|u| entry(format!("{}:{}", state.model_id, u.user.name))),
    );
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Which user a request is for, in the precedence the README gives: the user its API key is bound to
/// (the credential, not the caller's claim), the OpenAI `user` field, the `X-Chameleon-User` header,
/// the model id `<model>:<user>`. A user named by the key, the header or the model id must exist (404
/// otherwise); an unknown `user` field (clients fill it with ids of their own) is
/// answered without a profile, and the response says so.
fn resolve_user(
    state: &AppState,
    headers: &HeaderMap,
    bound: Option<&str>,
    user_field: Option<&str>,
    model: Option<&str>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let exists = |name: &str| -> Result<bool, ApiError> {
        let store = state
            .store
            .lock()
            .map_err(|_| ApiError::internal("the store is unavailable"))?;
        store
            .user(name)
            .map(|u| u.is_some())
            .map_err(|e| ApiError::internal(format!("cannot read the store: {e}")))
    };
    if let Some(name) = bound {
        return if exists(name)? {
            Ok((Some(name.to_string()), None))
        } else {
            Err(ApiError::unknown_user(name, "the API key"))
        };
    }
    if let Some(name) = user_field.filter(|n| !n.is_empty()) {
        return if exists(name)? {
            Ok((Some(name.to_string()), None))
        } else {
            Ok((
                None,
                Some(format!(
                    "no user `{name}` (the `user` field): answered without a profile"
                )),
            ))
        };
    }
    let header = headers
        .get("x-chameleon-user")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if let Some(name) = header {
        return if exists(name)? {
            Ok((Some(name.to_string()), None))
        } else {
            Err(ApiError::unknown_user(name, "the X-Chameleon-User header"))
        };
    }
    let prefix = format!("{}:", state.model_id);
    if let Some(name) = model
        .and_then(|m| m.strip_prefix(&prefix))
        .filter(|n| !n.is_empty())
    {
        return if exists(name)? {
            Ok((Some(name.to_string()), None))
        } else {
            Err(ApiError::unknown_user(name, "the model id"))
        };
    }
    Ok((None, None))
}

fn too_large() -> ApiError {
    let mut err = ApiError::invalid(
        format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
        None,
    );
    err.status = StatusCode::PAYLOAD_TOO_LARGE;
    err
}

/// The request body, at most [`MAX_BODY_BYTES`]: one that announces more is refused before a byte of
/// it is read.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())
}

/// A JSON body of type `T`, or a 400 in OpenAI's shape.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid: {e}"), None))
}

/// Sampling options from a request's fields (`max_tokens`: the limit the endpoint reads, named
/// `param` in errors).
fn options(
    state: &AppState,
    max_tokens: Option<i64>,
    param: &'static str,
    c: Common,
) -> Result<GenerateOptions, ApiError> {
    let Common {
        temperature,
        top_p,
        seed,
        stop,
        ..
    } = c;
    let temperature = temperature.unwrap_or(0.8);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            format!("`temperature` must be between 0 and 2, not {temperature}"),
            Some("temperature"),
        ));
    }
    let top_p = top_p.unwrap_or(0.95);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            format!("`top_p` must be in (0, 1], not {top_p}"),
            Some("top_p"),
        ));
    }
    let seed = match seed {
        Some(s) => s as u32,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    };
    Ok(GenerateOptions {
        max_tokens: token_limit(max_tokens, param, state.default_tokens, state.max_tokens)?,
        temperature,
        top_p,
        seed,
        stop: stop.map(super::api::Stop::into_vec).unwrap_or_default(),
        logit_bias: Vec::new(),
        ..Default::default()
    })
}

/// Queue a job; its events arrive on the returned receiver. 503 when the queue is full.
fn submit(
    state: &AppState,
    user: Option<String>,
    input: Input,
    opts: GenerateOptions,
) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
    if !state.ready.load(Ordering::SeqCst) {
        return Err(ApiError::busy(
            "the model is still loading; try again shortly",
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    state
        .jobs
        .try_send(Job {
            user,
            input,
            opts,
            events: tx,
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                ApiError::busy("the server's queue is full; try again shortly")
            }
            mpsc::error::TrySendError::Closed(_) => ApiError::internal("the model worker stopped"),
        })?;
    Ok(rx)
}

/// Which endpoint a response is for.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Text,
}

/// The request's body and key, then `input` of it: the endpoints differ only there.
async fn endpoint(
    state: &AppState,
    kind: Kind,
    headers: HeaderMap,
    body: Body,
    input: impl FnOnce(&[u8]) -> Result<(Input, Common, Option<(i64, &'static str)>), ApiError>,
) -> Response {
    let asked = async {
        let bound = authorize(state, &headers)?;
        let body = read_body(&headers, body).await?;
        let (input, c, limit) = input(&body)?;
        let (limit, param) = match limit {
            Some((v, param)) => (Some(v), param),
            None => (c.max_tokens, "max_tokens"),
        };
        let (user, note) = resolve_user(
            state,
            &headers,
            bound.as_deref(),
            c.user.as_deref(),
            c.model.as_deref(),
        )?;
        let (stream, include_usage) = (
            c.stream,
            c.stream_options.as_ref().is_some_and(|o| o.include_usage),
        );
        let opts = options(state, limit, param, c)?;
        Ok::<_, ApiError>(Asked {
            user,
            note,
            input,
            opts,
            stream,
            include_usage,
        })
    };
    match asked.await {
        Ok(asked) => respond(state, kind, asked).await,
        Err(e) => e.into_response(),
    }
}

async fn chat(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    endpoint(&state, Kind::Chat, headers, body, |body| {
        let req: ChatRequest = parse(body)?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid("`messages` is empty", Some("messages")));
        }
        let messages = req
            .messages
            .iter()
            .map(|m| Ok(ChatMessage::new(&m.role, m.content.text()?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        let limit = req
            .max_completion_tokens
            .map(|v| (v, "max_completion_tokens"));
        Ok((Input::Chat(messages), req.common, limit))
    })
    .await
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    endpoint(&state, Kind::Text, headers, body, |body| {
        let req: CompletionRequest = parse(body)?;
        let prompt = match req.prompt {
            Prompt::One(p) => p,
            Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
            Prompt::Many(_) => {
                return Err(ApiError::invalid(
                    "`prompt` must be one string (several prompts per request are not supported)",
                    Some("prompt"),
                ));
            }
        };
        Ok((Input::Raw(prompt), req.common, None))
    })
    .await
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A parsed request: whose, what, how.
struct Asked {
    user: Option<String>,
    /// Why the request is answered without a profile, when the request named someone.
    note: Option<String>,
    input: Input,
    opts: GenerateOptions,
    stream: bool,
    include_usage: bool,
}

/// Queue the job and answer: one JSON body, or a stream of chunks.
async fn respond(state: &AppState, kind: Kind, asked: Asked) -> Response {
    let Asked {
        user,
        note,
        input,
        opts,
        stream,
        include_usage,
    } = asked;
    let mut rx = match submit(state, user, input, opts) {
        Ok(rx) => rx,
        Err(e) => return e.into_response(),
    };
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let id = match kind {
        Kind::Chat => format!("chatcmpl-{n}"),
        Kind::Text => format!("cmpl-{n}"),
    };
    // the worker says how the request is personalised before its first token
    let mut applied = match rx.recv().await {
        Some(Event::Start(a)) => a,
        Some(Event::Failed(e)) => return ApiError::internal(e).into_response(),
        _ => return ApiError::internal("the model worker stopped").into_response(),
    };
    if applied.note.is_none() {
        applied.note = note;
    }
    let header =
        HeaderValue::from_str(&applied.header()).unwrap_or(HeaderValue::from_static("none"));
    let base = Base {
        id,
        created: unix_now(),
        model: state.model_id.clone(),
        kind,
        applied,
    };
    let mut response = if stream {
        stream_response(base, rx, include_usage).into_response()
    } else {
        whole_response(base, rx).await
    };
    response.headers_mut().insert("x-chameleon-profile", header);
    response
}

/// What every chunk and body of one response repeats.
struct Base {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    applied: Applied,
}

impl Base {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn choice(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "finish_reason": finish})
            }
            Kind::Text => {
                json!({"index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": null})
            }
        }
    }

    fn chunk(&self, choices: Vec<Value>, usage: Option<Usage>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "chameleon": self.applied,
        });
        if let Some(u) = usage {
            v["usage"] = json!(u);
        }
        v
    }
}

async fn whole_response(base: Base, mut rx: mpsc::UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { usage, finish }) => {
                let choice = match base.kind {
                    Kind::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }),
                    Kind::Text => {
                        json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null})
                    }
                };
                return axum::Json(json!({
                    "id": base.id,
                    "object": base.object(false),
                    "created": base.created,
                    "model": base.model,
                    "choices": [choice],
                    "usage": usage,
                    "chameleon": base.applied,
                }))
                .into_response();
            }
            Some(Event::Failed(e)) => return ApiError::internal(e).into_response(),
            Some(Event::Start(_)) => {}
            None => return ApiError::internal("the model worker stopped").into_response(),
        }
    }
}

/// Server-sent events: a first chunk (the role), one per piece of text, the finish, the usage when
/// asked for, then `data: [DONE]`.
fn stream_response(
    base: Base,
    rx: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    struct St {
        base: Base,
        rx: mpsc::UnboundedReceiver<Event>,
        first: bool,
        pending: std::collections::VecDeque<String>,
        done: bool,
        include_usage: bool,
    }
    let st = St {
        base,
        rx,
        first: true,
        pending: Default::default(),
        done: false,
        include_usage,
    };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(data) = st.pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), st));
            }
            if st.done {
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Text(t)) => {
                    let first = std::mem::replace(&mut st.first, false);
                    let chunk = st
                        .base
                        .chunk(vec![st.base.choice(Some(&t), first, None)], None);
                    st.pending.push_back(chunk.to_string());
                }
                Some(Event::Done { usage, finish }) => {
                    let first = std::mem::replace(&mut st.first, false);
                    let text = matches!(st.base.kind, Kind::Chat).then_some("");
                    let chunk = st.base.chunk(
                        vec![st.base.choice(text.filter(|_| first), first, Some(finish))],
                        None,
                    );
                    st.pending.push_back(chunk.to_string());
                    if st.include_usage {
                        st.pending
                            .push_back(st.base.chunk(Vec::new(), Some(usage)).to_string());
                    }
                    st.pending.push_back("[DONE]".into());
                    st.done = true;
                }
                Some(Event::Failed(e)) => {
                    st.pending
                        .push_back(ApiError::internal(e).body().to_string());
                    st.pending.push_back("[DONE]".into());
                    st.done = true;
                }
                Some(Event::Start(_)) => {}
                None => return None,
            }
        }
    });
    Sse::new(events)
}
