//! A test model server speaking the OpenAI Chat Completions wire format: `POST
//! /v1/chat/completions` with `model`, `messages` (roles `system`, `user`,
//! `assistant` with `tool_calls`, `tool` with `tool_call_id`), `tools`, `stream`; a
//! reply is a `chat.completion` object with `choices[0].message` (`content` and/or
//! `tool_calls`, `arguments` as a JSON string), `finish_reason` and `usage`; with
//! `stream: true` it is Server-Sent Events of `chat.completion.chunk` objects with
//! `delta`s, ending with `data: [DONE]`.
//!
//! Replies are scripted per conversation position, not per request count, so a
//! replayed or repeated request gets the same reply: a [`Rule`] matches the text of
//! the request's last `user` message and the *step*, the number of `assistant`
//! messages after it (0 for the first model call of a turn, 1 after the first tool
//! round, ...). Every request is recorded, with its step, so tests count exactly
//! which calls the model saw. This is test infrastructure on 127.0.0.1 (an ephemeral
//! port), not a mock of Switchboard code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the model answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A final answer; `{{tool_results}}` in it is replaced by the contents of the
    /// request's `tool` messages after the last assistant message, joined by `; `.
    Text(String),
    /// Calls of tools: `(function name, arguments object)`.
    ToolCalls(Vec<(String, Value)>),
    /// An HTTP error status with an OpenAI-style error body and, optionally, a
    /// `Retry-After` header (seconds).
    Status(u16, Option<u64>),
    /// 200 with a body that is not JSON.
    Malformed,
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The last user message contains this (empty: any).
    pub user_contains: String,
    /// The step it answers (`None`: every step).
    pub step: Option<usize>,
    /// The answer.
    pub reply: Reply,
    /// The first request this rule answers waits until [`ModelServer::release`]
    /// (or the client goes away) before answering; later ones answer at once.
    pub hold_first: bool,
}

impl Rule {
    /// Answers step `step` of turns whose user message contains `user_contains`.
    pub fn at(user_contains: &str, step: usize, reply: Reply) -> Self {
        Self {
            user_contains: user_contains.to_owned(),
            step: Some(step),
            reply,
            hold_first: false,
        }
    }

    /// Answers every step of such turns.
    pub fn always(user_contains: &str, reply: Reply) -> Self {
        Self {
            step: None,
            ..Self::at(user_contains, 0, reply)
        }
    }

    /// The first matching request is held (see [`Rule::hold_first`]).
    pub fn held(mut self) -> Self {
        self.hold_first = true;
        self
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The last user message's text.
    pub user: String,
    /// Its step (assistant messages after the last user message).
    pub step: usize,
    /// The JSON body.
    pub body: Value,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    /// Rules whose first request was held already.
    held: Vec<bool>,
    /// Errors answered before any rule: the first requests get these.
    fail_first: VecDeque<Reply>,
    seen: Vec<Seen>,
    holding: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    release: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running model server; stops when dropped.
pub struct ModelServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ModelServer {
    /// Starts a server with `rules` on 127.0.0.1 (ephemeral port).
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start(rules: Vec<Rule>) -> Self {
        Self::start_on("127.0.0.1:0", rules)
            .await
            .expect("bind the model server")
    }

    /// Starts a server with `rules` on `listen` (a loopback `IP:PORT`).
    ///
    /// # Errors
    /// When it cannot bind.
    pub async fn start_on(listen: &str, rules: Vec<Rule>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                held: vec![false; rules.len()],
                rules,
                ..Inner::default()
            }),
            release: Notify::new(),
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The base URL clients are configured with (`.../v1`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The first `n` requests are answered with `reply` (e.g. a 500), whatever they are.
    pub fn fail_first(&self, n: usize, reply: Reply) {
        self.shared
            .lock()
            .fail_first
            .extend((0..n).map(|_| reply.clone()));
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// Requests so far.
    pub fn count(&self) -> usize {
        self.shared.lock().seen.len()
    }

    /// Requests so far for step `step` of turns whose user message contains `user`.
    pub fn count_at(&self, user: &str, step: usize) -> usize {
        self.shared
            .lock()
            .seen
            .iter()
            .filter(|s| s.user.contains(user) && s.step == step)
            .count()
    }

    /// Requests being held now.
    pub fn holding(&self) -> usize {
        self.shared.lock().holding
    }

    /// Lets held requests answer.
    pub fn release(&self) {
        self.shared.release.notify_waiters();
    }
}

/// The placeholder of [`Reply::Text`].
pub const TOOL_RESULTS: &str = "{{tool_results}}";

/// The `tool` messages after the last assistant message, joined by `; `.
fn last_tool_results(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let from = messages
        .iter()
        .rposition(|m| m["role"] == "assistant")
        .map_or(0, |i| i + 1);
    messages[from..]
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rules from a JSON script: `[{"user": "contains", "step": 0, "text": "..."} |
/// {"user": .., "step": .., "toolCalls": [{"name": .., "arguments": {..}}]}]`; without
/// `step` a rule answers every step.
///
/// # Errors
/// When the script is not such a list; names the entry.
pub fn rules_from_script(script: &Value) -> Result<Vec<Rule>, String> {
    let entries = script.as_array().ok_or("the script must be a JSON list")?;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let user = e["user"].as_str().unwrap_or_default();
            let reply = match (e.get("text"), e.get("toolCalls")) {
                (Some(Value::String(t)), None) => Reply::Text(t.clone()),
                (None, Some(Value::Array(calls))) => Reply::ToolCalls(
                    calls
                        .iter()
                        .map(|c| {
                            let name = c["name"].as_str().ok_or_else(|| {
                                format!("script[{i}].toolCalls: every call needs a name")
                            })?;
                            Ok((
                                name.to_owned(),
                                c.get("arguments").cloned().unwrap_or(json!({})),
                            ))
                        })
                        .collect::<Result<_, String>>()?,
                ),
                _ => return Err(format!("script[{i}]: exactly one of text and toolCalls")),
            };
            Ok(match e.get("step").and_then(Value::as_u64) {
                Some(step) => Rule::at(user, usize::try_from(step).unwrap_or(usize::MAX), reply),
                None => Rule::always(user, reply),
            })
        })
        .collect()
}

/// The last user message's text and the step (assistant messages after it).
fn position(body: &Value) -> (String, usize) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages.iter().rposition(|m| m["role"] == "user");
    let user = last_user
        .and_then(|i| messages[i]["content"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let step = last_user.map_or(0, |i| {
        messages[i + 1..]
            .iter()
            .filter(|m| m["role"] == "assistant")
            .count()
    });
    (user, step)
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return error(
            400,
            "invalid_request_error",
            "request body is not JSON",
            None,
        );
    };
    if !body["model"].is_string() || !body["messages"].is_array() {
        return error(
            400,
            "invalid_request_error",
            "model and messages are required",
            None,
        );
    }
    let (user, step) = position(&body);
    let (reply, hold) = {
        let mut inner = shared.lock();
        inner.seen.push(Seen {
            user: user.clone(),
            step,
            body: body.clone(),
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        if let Some(r) = inner.fail_first.pop_front() {
            (Some(r), false)
        } else {
            let found = inner
                .rules
                .iter()
                .position(|r| user.contains(&r.user_contains) && r.step.is_none_or(|s| s == step));
            match found {
                Some(i) => {
                    let hold = inner.rules[i].hold_first && !inner.held[i];
                    inner.held[i] = true;
                    (Some(inner.rules[i].reply.clone()), hold)
                }
                None => (None, false),
            }
        }
    };
    if hold {
        shared.lock().holding += 1;
        // Bounded: a test that forgets to release still ends.
        let _ = tokio::time::timeout(Duration::from_secs(60), shared.release.notified()).await;
        shared.lock().holding -= 1;
    }
    let Some(reply) = reply else {
        return error(
            400,
            "invalid_request_error",
            &format!("no scripted reply for user {user:?} at step {step}"),
            None,
        );
    };
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let stream = body["stream"] == true;
    match reply {
        Reply::Status(code, retry_after) => {
            error(code, "server_error", "scripted failure", retry_after)
        }
        Reply::Malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"id\": \"chatcmpl-x\", \"choices\": [",
        )
            .into_response(),
        Reply::Text(text) => {
            let text = if text.contains(TOOL_RESULTS) {
                text.replace(TOOL_RESULTS, &last_tool_results(&body))
            } else {
                text
            };
            completion(&model, step, json!(text), None, stream)
        }
        Reply::ToolCalls(calls) => {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    json!({
                        "id": format!("call_{step}_{i}"),
                        "type": "function",
                        "function": {"name": name, "arguments": args.to_string()},
                    })
                })
                .collect();
            completion(&model, step, Value::Null, Some(calls), stream)
        }
    }
}

fn error(code: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = secs.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// A `chat.completion` (or its SSE chunks when `stream`).
fn completion(
    model: &str,
    step: usize,
    content: Value,
    tool_calls: Option<Vec<Value>>,
    stream: bool,
) -> Response {
    let id = format!("chatcmpl-{step}");
    let finish = if tool_calls.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if !stream {
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if let Some(calls) = &tool_calls {
            message["tool_calls"] = json!(calls);
        }
        let body = json!({
            "id": id, "object": "chat.completion", "created": 1_764_547_200, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage,
        });
        return axum::Json(body).into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": 1_764_547_200, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(text) = content.as_str() {
        // Two content deltas, as real servers split text.
        let mid = text.len() / 2;
        let mid = (mid..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        events.push(chunk(json!({"content": &text[..mid]}), Value::Null));
        events.push(chunk(json!({"content": &text[mid..]}), Value::Null));
    }
    for (i, call) in tool_calls.iter().flatten().enumerate() {
        // The first delta of a call names it; its arguments follow as a fragment.
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                   "function": {"name": call["function"]["name"], "arguments": ""}}]}),
            Value::Null,
        ));
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": call["function"]["arguments"]}}]}),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!(finish)));
    let mut last = chunk(json!({}), Value::Null);
    last["choices"] = json!([]);
    last["usage"] = usage;
    events.push(last);
    let mut text = String::new();
    for e in events {
        text.push_str(&format!("data: {e}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        text,
    )
        .into_response()
}
