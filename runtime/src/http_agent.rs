//! HTTP agents: agents written in any language, behind a URL (DESIGN.md §5).
//!
//! For each message the runtime POSTs a CloudEvent in HTTP binary content mode to the
//! agent's URL: attributes in `ce-*` headers, `Content-Type`, body = the data.
//!
//! | header | value |
//! |---|---|
//! | `ce-specversion` | `1.0` |
//! | `ce-id` | the message id |
//! | `ce-source` | the sender's agent id, else `topic/<type>/<source>` for events, else `client` |
//! | `ce-type` | the message type |
//! | `ce-agrecipient`, `ce-agrecipienttype`, `ce-agrecipientkey` | the agent handling it |
//! | `ce-agagentsendertype`, `ce-agagentsenderkey` | the sending agent, if any |
//! | `ce-agtopictype`, `ce-agtopicsource` | the topic, for events |
//! | `ce-agisrpc` | `true` when the sender waits for a reply |
//! | `traceparent`, `tracestate` | W3C trace context of the message |
//! | `switchboard-steps` | where the agent journals durable steps of this message ([`crate::http_steps`]) |
//!
//! The answer: 2xx with a `ce-type` header is the reply (its body the data, its
//! `Content-Type` the content type, JSON by default); 204, or 2xx with an empty body
//! and no `ce-type`, is "no reply"; any other status is a handler error carrying the
//! status and body. Connection errors and 5xx answers are retried with exponential
//! backoff (`retries` times); a request that timed out is not retried, since the agent
//! may have acted on it. Connections are pooled per host, one pool per process.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument;

use crate::agent::{Agent, AgentError, AgentFactory, HandlerResult};
use crate::config_file::HttpAgentSettings;
use crate::context::MessageContext;
use crate::http_steps::{STEPS_HEADER, StepSessions};
use crate::message::{JSON, Payload};

/// Longest error body quoted in a handler error.
const MAX_ERROR_BODY: usize = 1024;
/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A pooled HTTP client shared by every HTTP agent of the process.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .connect_timeout(Duration::from_secs(5))
        .build()
}

/// The factory of HTTP agents posting to `settings.url` through `client`; each request
/// gets a durable-steps URL from `steps` (when its base URL is known).
pub fn factory(
    client: reqwest::Client,
    settings: HttpAgentSettings,
    steps: Arc<StepSessions>,
) -> AgentFactory {
    AgentFactory::new(move |_| HttpAgent {
        client: client.clone(),
        settings: settings.clone(),
        steps: Arc::clone(&steps),
    })
}

/// An agent whose handler is an HTTP endpoint.
#[derive(Debug)]
pub struct HttpAgent {
    client: reqwest::Client,
    settings: HttpAgentSettings,
    steps: Arc<StepSessions>,
}

/// One attempt's failure: whether another attempt may help.
enum Failure {
    Retryable(String),
    Final(String),
}

impl HttpAgent {
    fn request(&self, message: &Payload, ctx: &MessageContext) -> reqwest::RequestBuilder {
        let source = match (&ctx.sender, &ctx.topic) {
            (Some(sender), _) => sender.to_string(),
            (None, Some(topic)) => format!("topic/{}/{}", topic.topic_type(), topic.source()),
            (None, None) => "client".to_owned(),
        };
        let mut req = self
            .client
            .post(&self.settings.url)
            .timeout(Duration::from_millis(self.settings.timeout_ms))
            .header("ce-specversion", "1.0")
            .header("ce-id", &ctx.message_id)
            .header("ce-source", source)
            .header("ce-type", &message.type_name)
            .header("ce-agrecipient", ctx.recipient.to_string())
            .header("ce-agrecipienttype", ctx.recipient.agent_type())
            .header("ce-agrecipientkey", ctx.recipient.key())
            .header("ce-agisrpc", if ctx.is_rpc { "true" } else { "false" })
            .header("traceparent", ctx.trace.traceparent())
            .header(reqwest::header::CONTENT_TYPE, &message.content_type)
            .body(message.data.clone());
        if let Some(sender) = &ctx.sender {
            req = req
                .header("ce-agagentsendertype", sender.agent_type())
                .header("ce-agagentsenderkey", sender.key());
        }
        if let Some(topic) = &ctx.topic {
            req = req
                .header("ce-agtopictype", topic.topic_type())
                .header("ce-agtopicsource", topic.source());
        }
        if let Some(state) = &ctx.trace.tracestate {
            req = req.header("tracestate", state);
        }
        req
    }

    async fn attempt(
        &self,
        message: &Payload,
        ctx: &MessageContext,
    ) -> Result<Option<Payload>, Failure> {
        let url = &self.settings.url;
        // Open while this attempt is in flight: the agent journals steps through it.
        let session = self.steps.open(ctx);
        let mut request = self.request(message, ctx);
        if let Some(s) = &session {
            request = request.header(STEPS_HEADER, &s.url);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                Failure::Final(format!(
                    "HTTP agent {url} did not answer within {} ms",
                    self.settings.timeout_ms
                ))
            } else {
                Failure::Retryable(format!("HTTP agent {url} unreachable: {e}"))
            }
        })?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (reply_type, content_type) = (
            header("ce-type"),
            header(reqwest::header::CONTENT_TYPE.as_str()),
        );
        let body: Bytes = response.bytes().await.map_err(|e| {
            Failure::Retryable(format!("HTTP agent {url}: reading the answer failed: {e}"))
        })?;
        if !status.is_success() {
            let text =
                String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]).into_owned();
            let msg = format!("HTTP agent {url} answered {status}: {text}");
            return Err(if status.is_server_error() {
                Failure::Retryable(msg)
            } else {
                Failure::Final(msg)
            });
        }
        match reply_type {
            Some(type_name) if status != reqwest::StatusCode::NO_CONTENT => Ok(Some(Payload {
                type_name,
                content_type: content_type.unwrap_or_else(|| JSON.to_owned()),
                data: body,
            })),
            _ if status == reqwest::StatusCode::NO_CONTENT || body.is_empty() => Ok(None),
            _ => Err(Failure::Final(format!(
                "HTTP agent {url} answered {status} with a body but no ce-type header"
            ))),
        }
    }
}

#[async_trait]
impl Agent for HttpAgent {
    async fn on_message(&mut self, message: Payload, ctx: &MessageContext) -> HandlerResult {
        // One span per message, carrying the trace id, so the agent's logs and the
        // runtime's correlate with the trace the message belongs to.
        let span = tracing::debug_span!(
            "http_agent",
            agent = %ctx.recipient,
            message_type = %message.type_name,
            trace_id = %ctx.trace.trace_id_hex(),
        );
        self.deliver(&message, ctx).instrument(span).await
    }
}

impl HttpAgent {
    /// Posts `message`, retrying as configured, until an answer or cancellation.
    async fn deliver(&self, message: &Payload, ctx: &MessageContext) -> HandlerResult {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let outcome = tokio::select! {
                r = self.attempt(message, ctx) => r,
                () = ctx.cancellation.cancelled() => {
                    return Err(AgentError::new(format!("HTTP agent {}: cancelled", self.settings.url)));
                }
            };
            match outcome {
                Ok(reply) => return Ok(reply),
                Err(Failure::Final(msg)) => return Err(AgentError::new(msg)),
                Err(Failure::Retryable(msg)) if attempt >= self.settings.retries => {
                    return Err(AgentError::new(msg));
                }
                Err(Failure::Retryable(msg)) => {
                    attempt += 1;
                    tracing::debug!(agent = %ctx.recipient, attempt, error = %msg, "retrying an HTTP agent");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = ctx.cancellation.cancelled() => return Err(AgentError::new(msg)),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use serde_json::json;

    use super::*;
    use crate::api::{AgentRuntime, SendOptions};
    use crate::error::RuntimeError;
    use crate::ids::AgentId;
    use crate::memory::InMemoryRuntime;

    type Seen = Arc<Mutex<Vec<HeaderMap>>>;

    /// A fake HTTP agent: `/echo` answers with the request, `/quiet` 204, `/bad` 400,
    /// `/flaky` 503 twice then answers, `/slow` sleeps past the timeout.
    async fn fake_agent(seen: Seen, flaky: Arc<AtomicUsize>) -> String {
        let s = seen.clone();
        let app = Router::new()
            .route(
                "/echo",
                post(move |headers: HeaderMap, body: Bytes| {
                    let s = s.clone();
                    async move {
                        let t = headers["ce-type"].to_str().unwrap().to_owned();
                        s.lock().unwrap().push(headers);
                        ([("ce-type", format!("{t}.reply"))], body)
                    }
                }),
            )
            .route("/quiet", post(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/bad",
                post(|| async { (StatusCode::BAD_REQUEST, "no such thing").into_response() }),
            )
            .route(
                "/flaky",
                post(move || {
                    let n = flaky.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n < 2 {
                            StatusCode::SERVICE_UNAVAILABLE.into_response()
                        } else {
                            ([("ce-type", "ok")], "{}").into_response()
                        }
                    }
                }),
            )
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    StatusCode::NO_CONTENT
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    async fn runtime_with(base: &str, retries: u32) -> InMemoryRuntime {
        let rt = InMemoryRuntime::default();
        let client = client().unwrap();
        for path in ["echo", "quiet", "bad", "flaky", "slow"] {
            let settings = HttpAgentSettings {
                url: format!("{base}/{path}"),
                timeout_ms: 300,
                retries,
            };
            rt.register_factory(path, factory(client.clone(), settings, Arc::default()))
                .await
                .unwrap();
        }
        rt
    }

    async fn call(rt: &InMemoryRuntime, agent_type: &str) -> Result<Option<Payload>, RuntimeError> {
        rt.send_payload(
            Payload::json("demo.Hi", &json!({"n": 1})),
            &AgentId::new(agent_type, "k1").unwrap(),
            SendOptions::default(),
        )
        .await
    }

    #[tokio::test]
    async fn posts_cloudevents_and_maps_answers() {
        let seen = Seen::default();
        let base = fake_agent(seen.clone(), Arc::default()).await;
        let rt = runtime_with(&base, 2).await;

        let reply = call(&rt, "echo").await.unwrap().unwrap();
        assert_eq!(reply.type_name, "demo.Hi.reply");
        assert_eq!(&reply.data[..], br#"{"n":1}"#);
        let headers = seen.lock().unwrap()[0].clone();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-type", "demo.Hi"),
            ("ce-agrecipient", "echo/k1"),
            ("ce-agrecipienttype", "echo"),
            ("ce-agrecipientkey", "k1"),
            ("ce-agisrpc", "true"),
            ("content-type", "application/json"),
        ] {
            assert_eq!(headers[name], value, "{name}");
        }
        assert!(!headers["ce-id"].is_empty());
        assert!(headers["traceparent"].to_str().unwrap().starts_with("00-"));

        assert_eq!(call(&rt, "quiet").await.unwrap(), None, "204 is no reply");
        let err = call(&rt, "bad").await.unwrap_err().to_string();
        assert!(
            err.contains("400") && err.contains("no such thing"),
            "{err}"
        );
        let err = call(&rt, "slow").await.unwrap_err().to_string();
        assert!(err.contains("did not answer within 300 ms"), "{err}");
    }

    #[tokio::test]
    async fn server_errors_are_retried_then_reported() {
        let flaky = Arc::new(AtomicUsize::new(0));
        let base = fake_agent(Seen::default(), flaky.clone()).await;
        let rt = runtime_with(&base, 2).await;
        assert!(
            call(&rt, "flaky").await.unwrap().is_some(),
            "third try answers"
        );
        assert_eq!(flaky.load(Ordering::SeqCst), 3);

        flaky.store(0, Ordering::SeqCst);
        let rt = runtime_with(&base, 1).await;
        let err = call(&rt, "flaky").await.unwrap_err().to_string();
        assert!(err.contains("503"), "{err}");
        assert_eq!(flaky.load(Ordering::SeqCst), 2, "one try plus one retry");

        let rt = runtime_with("http://127.0.0.1:9", 1).await;
        let err = call(&rt, "echo").await.unwrap_err().to_string();
        assert!(err.contains("unreachable"), "{err}");
    }
}
