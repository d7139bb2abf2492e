//! The OpenAI Chat Completions API as the `llm` agent uses it: the wire types of
//! `POST {endpoint}/chat/completions` (non-streaming) and a client that retries 429,
//! 5xx and connection errors with exponential backoff, honouring `Retry-After`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::llm_config::ModelSettings;

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A server asking for longer than this is waited for this long only.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Longest error body quoted in an error.
const MAX_ERROR_BODY: usize = 512;

/// One message of a conversation (`messages[]`), as the API defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text; `None` for an assistant message that only calls tools.
    #[serde(default)]
    pub content: Option<String>,
    /// Tools an assistant message calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Which call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with `role` and text `content`.
    pub fn text(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The result of tool call `id`.
    pub fn tool_result(id: &str, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(id.to_owned()),
            ..Self::text("tool", content)
        }
    }
}

/// `tool_calls[]` of an assistant message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, echoed as the `tool` message's `tool_call_id`.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

fn function() -> String {
    "function".to_owned()
}

/// `tool_calls[].function`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments: a JSON object, encoded as a string.
    #[serde(default)]
    pub arguments: String,
}

/// `usage` of a completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// What one model call returned: the durable step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelReply {
    /// `choices[0].message`.
    pub message: ChatMessage,
    /// `usage`, when the server reports it.
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChatMessage,
}

/// Why a model call failed, for the handler's error.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The server answered with an error status (after retries, when retryable).
    #[error("model server answered {status} after {attempts} attempt(s): {body}")]
    Status {
        /// The last status.
        status: u16,
        /// Requests made.
        attempts: u32,
        /// The start of its body.
        body: String,
    },
    /// The server could not be reached or did not answer in time.
    #[error("model server unreachable after {attempts} attempt(s): {reason}")]
    Unreachable {
        /// Requests made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// 2xx with a body that is not a chat completion.
    #[error("model server returned a malformed completion: {0}")]
    Malformed(String),
    /// The message being handled was cancelled (deadline passed, shutdown).
    #[error("model call cancelled")]
    Cancelled,
}

/// A client of one model.
#[derive(Debug, Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    retries: u32,
    temperature: Option<f64>,
}

impl ChatClient {
    /// A client for `settings`, with the API key read already (never logged).
    pub fn new(
        http: reqwest::Client,
        settings: &ModelSettings,
        api_key: Option<String>,
        temperature: Option<f64>,
    ) -> Self {
        Self {
            http,
            url: format!(
                "{}/chat/completions",
                settings.endpoint.trim_end_matches('/')
            ),
            model: settings.model.clone(),
            api_key,
            timeout: Duration::from_millis(settings.timeout_ms),
            retries: settings.retries,
            temperature,
        }
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The request body for `messages` with `tools` (function definitions).
    pub fn body(&self, messages: &[ChatMessage], tools: &[Value]) -> Value {
        let mut body = json!({"model": self.model, "messages": messages});
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        body
    }

    /// One completion, retried on 429, 5xx and connection errors.
    pub async fn complete(
        &self,
        messages: &[ChatMessage],
        tools: &[Value],
        cancel: &CancellationToken,
    ) -> Result<ModelReply, ChatError> {
        // Encoded once: retries send the same bytes.
        let body = bytes::Bytes::from(self.body(messages, tools).to_string());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .post(&self.url)
                .timeout(self.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let sent = tokio::select! {
                r = request.send() => r,
                () = cancel.cancelled() => return Err(ChatError::Cancelled),
            };
            let wait = match sent {
                Err(e) => {
                    if attempt > self.retries {
                        return Err(ChatError::Unreachable {
                            attempts: attempt,
                            reason: e.to_string(),
                        });
                    }
                    backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        return parse(&text);
                    }
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    if !retryable || attempt > self.retries {
                        return Err(ChatError::Status {
                            status: status.as_u16(),
                            attempts: attempt,
                            body: text.chars().take(MAX_ERROR_BODY).collect(),
                        });
                    }
                    retry_after.unwrap_or_else(|| backoff(attempt))
                }
            };
            tracing::debug!(attempt, ?wait, url = %self.url, "retrying the model call");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(ChatError::Cancelled),
            }
        }
    }
}

fn parse(text: &str) -> Result<ModelReply, ChatError> {
    let completion: Completion =
        serde_json::from_str(text).map_err(|e| ChatError::Malformed(e.to_string()))?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ChatError::Malformed("no choices".to_owned()))?;
    Ok(ModelReply {
        message: choice.message,
        usage: completion.usage,
    })
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
}

/// `Retry-After` in seconds (the HTTP-date form falls back to our own backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_parse_and_malformed_ones_say_why() {
        let ok = r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"echo","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let r = parse(ok).unwrap();
        assert_eq!(r.message.tool_calls[0].function.name, "echo");
        assert_eq!(r.usage.unwrap().prompt_tokens, 3);
        assert!(matches!(
            parse("{\"choices\": ["),
            Err(ChatError::Malformed(_))
        ));
        assert!(
            matches!(parse("{\"choices\": []}"), Err(ChatError::Malformed(m)) if m == "no choices")
        );
    }

    #[test]
    fn retry_after_is_seconds_and_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(reqwest::header::RETRY_AFTER, "9999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn tool_messages_serialize_as_the_api_expects() {
        let m = serde_json::to_value(ChatMessage::tool_result("call_1", "{}")).unwrap();
        assert_eq!(
            m,
            json!({"role": "tool", "content": "{}", "tool_call_id": "call_1"})
        );
    }
}
