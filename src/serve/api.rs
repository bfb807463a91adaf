//! The wire format: OpenAI's chat and text completions, as llama-server and the official clients
//! speak them. Unknown request fields are ignored (clients send many); what chameleon cannot do is
//! refused with OpenAI's error shape rather than silently dropped.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The fields chat and text completions share (the ones chameleon reads).
#[derive(Debug, Deserialize)]
pub struct Common {
    pub model: Option<String>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub user: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_completion_tokens: Option<i64>,
    #[serde(flatten)]
    pub common: Common,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub common: Common,
}

/// A completion's prompt: one string (a list of one string is accepted too).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// One chat message; `content` is a string or a list of text parts.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Content {
    #[default]
    None,
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl Content {
    /// The text of the message; a part that is not text is refused.
    pub fn text(&self) -> Result<String, ApiError> {
        match self {
            Content::None => Ok(String::new()),
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.as_str()),
                    (kind, _) => Err(ApiError::invalid(
                        format!("message parts of type `{kind}` are not supported: only text"),
                        Some("messages"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|t| t.join("")),
        }
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// OpenAI's `cached_tokens`: the prompt's leading tokens read from an earlier request's cache.
    pub prompt_tokens_details: PromptTokensDetails,
}

/// The part of `usage` that says how much of the prompt came from the cache.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails::default(),
        }
    }

    /// The same, with `cached` of the prompt's tokens read from the cache.
    #[must_use]
    pub fn cached(mut self, cached: usize) -> Usage {
        self.prompt_tokens_details.cached_tokens = cached;
        self
    }
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: a request that cannot be answered as it is.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    /// 404: a user named explicitly who does not exist.
    pub fn unknown_user(name: &str, how: &'static str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "no user `{name}` (named by {how}); list users with `chameleon user list`, or add \
                 one with `chameleon user add {name}`"
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("user_not_found"),
        }
    }

    /// 401: a missing or wrong API key.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong API key: send `Authorization: Bearer <key>`".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 503: the queue is full or the model is not loaded yet.
    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("overloaded"),
        }
    }

    /// 500: the model failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The same error with another message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// A token limit from `max_tokens` / `max_completion_tokens`: absent gives `default`, below 0 is
/// refused, above `cap` is cut to it.
pub fn token_limit(
    value: Option<i64>,
    param: &'static str,
    default: usize,
    cap: usize,
) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v < 0 => Err(ApiError::invalid(
            format!("`{param}` must be 0 or more, not {v}"),
            Some(param),
        )),
        Some(v) => Ok(usize::try_from(v).unwrap_or(usize::MAX).min(cap)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_clients_send_them() {
        let r: ChatRequest = serde_json::from_value(json!({
            "model": "m:alice",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}
            ],
            "stop": "\n",
            "frequency_penalty": 0.5,
            "n": 1
        }))
        .unwrap();
        assert_eq!(r.messages[1].content.text().unwrap(), "hi there");
        assert_eq!(r.common.stop.unwrap().into_vec(), vec!["\n"]);
        assert_eq!(r.common.model.as_deref(), Some("m:alice"));
        let image: ChatRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
        }))
        .unwrap();
        assert!(image.messages[0].content.text().is_err());
    }

    #[test]
    fn token_limits() {
        assert_eq!(token_limit(None, "max_tokens", 7, 100).unwrap(), 7);
        assert_eq!(token_limit(Some(500), "max_tokens", 7, 100).unwrap(), 100);
        let e = token_limit(Some(-1), "max_tokens", 7, 100).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["param"], "max_tokens");
    }
}
