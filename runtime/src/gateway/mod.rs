//! The runtime's HTTP surface (DESIGN.md §5): health, readiness, Prometheus metrics,
//! and a small JSON API over the agent network.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the runtime has joined its groups and its set-up (the configured subscriptions) is in effect, 503 before and while stopping |
//! | `GET /metrics` | Prometheus text |
//! | `POST /v1/agents/{type}/{key}` | RPC: body = JSON data, header `ce-type` = message type, optional `?timeoutMs=`; 200 with the reply (its type in `ce-type`), 204 for an empty reply, 400 bad input, 404 unknown agent type, 502 handler error, 503 stopping, 504 timeout |
//! | `POST /v1/topics/{type}/{source}` | publish; 202 |
//! | `GET /v1/registry` | agent types with their runtime, and subscriptions |
//! | `GET /v1/agents` | agent ids active in this process |
//! | `GET /.well-known/agent-card.json`, `POST /a2a[/{type}]` | A2A v1.0 ([`a2a`]) |
//! | `POST /mcp` | MCP, Streamable HTTP, stateless ([`mcp`]) |
//!
//! The body is JSON (`Content-Type` absent, JSON, or curl's default form type);
//! another explicit content type is passed through as is. Errors are JSON: `{"error": "...", "kind": "..."}`. With a bearer token configured,
//! `/v1` routes need `Authorization: Bearer <token>`. A `traceparent` (and `tracestate`)
//! header on `POST /v1/...` makes the message part of the caller's trace.

pub mod a2a;
pub mod catalog;
pub mod jsonrpc;
pub mod mcp;
pub mod prometheus;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::api::{AgentRuntime, SendOptions};
use crate::context::OutgoingEvent;
use crate::error::RuntimeError;
use crate::ids::{AgentId, TopicId};
use crate::kafka::KafkaAgentRuntime;
use crate::message::{JSON, Payload, is_json};
use crate::protocol::wire;
use crate::subscription::Subscription;
use crate::trace::{self, TraceContext};

/// What the routes share.
#[derive(Clone)]
pub struct Gateway {
    runtime: KafkaAgentRuntime,
    bearer_token: Option<String>,
    stopping: CancellationToken,
    /// Set when the caller's set-up is done (see [`Gateway::set_up`]).
    set_up: Arc<AtomicBool>,
    rpcs: TaskTracker,
    /// The hosted agent types as A2A and MCP show them.
    agents: Arc<Vec<catalog::AgentInfo>>,
    /// A2A tasks, once loaded ([`Gateway::load_tasks`]).
    task_log: Arc<OnceLock<Arc<a2a::task_log::TaskLog>>>,
    /// Largest request body.
    max_body: usize,
    /// Figures of the `llm` agents, when the caller hosts any.
    llm_metrics: Option<Arc<crate::llm::LlmMetrics>>,
    /// Durable steps of HTTP agents in flight.
    http_steps: Arc<crate::http_steps::StepSessions>,
    /// Why the runtime cannot start yet (e.g. Kafka refused its credentials).
    problem: Arc<std::sync::Mutex<Option<String>>>,
}

impl Gateway {
    /// A gateway over `runtime`; `stopping` turns readiness off and refuses new work.
    /// Readiness stays off until [`Gateway::set_up`] is called.
    pub fn new(
        runtime: KafkaAgentRuntime,
        bearer_token: Option<String>,
        stopping: CancellationToken,
    ) -> Self {
        let max_body = runtime.config().max_message_bytes;
        Self {
            runtime,
            bearer_token: bearer_token.filter(|t| !t.is_empty()),
            stopping,
            set_up: Arc::default(),
            rpcs: TaskTracker::new(),
            agents: Arc::default(),
            task_log: Arc::default(),
            max_body,
            llm_metrics: None,
            http_steps: Arc::default(),
            problem: Arc::default(),
        }
    }

    /// Records why the runtime cannot start (`None`: no problem); `/readyz` shows it.
    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// The agent types A2A and MCP offer (the A2A skills, the MCP tools).
    pub fn with_agents(mut self, agents: Vec<catalog::AgentInfo>) -> Self {
        self.agents = Arc::new(agents);
        self
    }

    /// Serves the durable steps of the HTTP agents whose requests `steps` opened
    /// (`/v1/steps/...`, see [`crate::http_steps`]).
    pub fn with_http_steps(mut self, steps: Arc<crate::http_steps::StepSessions>) -> Self {
        self.http_steps = steps;
        self
    }

    /// Adds the `llm` agents' figures to `/metrics`.
    pub fn with_llm_metrics(mut self, metrics: Arc<crate::llm::LlmMetrics>) -> Self {
        self.llm_metrics = Some(metrics);
        self
    }

    /// Starts reading the runtime's A2A tasks topic (call once the runtime started,
    /// so its topics exist); until then A2A task methods answer "unavailable".
    /// Ended tasks are kept for `retention` (`runtime.taskRetentionMs`).
    pub async fn load_tasks(
        &self,
        retention: Duration,
        shutdown: CancellationToken,
    ) -> Result<(), RuntimeError> {
        let config = self.runtime.config();
        let names = crate::protocol::topics::TopicNames::new(&config.topic_prefix)?;
        let log = a2a::task_log::TaskLog::load(
            &config.kafka,
            &names.tasks(&config.runtime_name),
            &names.tasks_group(&config.runtime_name, &config.instance_id),
            Duration::from_secs(10),
            a2a::task_log::Expiry {
                retention,
                instance: config.instance_id.clone(),
            },
            shutdown,
            {
                let runtime = self.runtime.clone();
                Box::new(move |record| {
                    if runtime.interrupt(&record.rpc_message_id(), record.deadline_ms) {
                        tracing::info!(task = %record.task.id, "canceled task's handler interrupted");
                    }
                })
            },
        )
        .await?;
        // A second call keeps the first log.
        let _ = self.task_log.set(Arc::new(log));
        Ok(())
    }

    /// Whether `headers` carry the bearer token (always, when none is configured).
    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.bearer_token else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
    }

    /// The runtime's set-up (its configured subscriptions) is in effect: readiness may
    /// turn on. An event is routed by the subscriptions its runtime knows when it reads
    /// the event, so a client told "ready" earlier could publish into a gap.
    pub fn set_up(&self) {
        self.set_up.store(true, Ordering::SeqCst);
    }

    /// The routes; request bodies are limited to the runtime's largest message.
    pub fn router(&self) -> Router {
        let max_body = self.runtime.config().max_message_bytes;
        let v1 = Router::new()
            .route("/v1/agents/{agent_type}/{key}", post(rpc))
            .route("/v1/topics/{topic_type}/{source}", post(publish))
            .route("/v1/registry", get(registry))
            .route("/v1/agents", get(active_agents))
            .route_layer(middleware::from_fn_with_state(self.clone(), authorize));
        // The steps URL is the capability (a random token valid while one request to an
        // HTTP agent is in flight), so no bearer token: agents do not have it.
        let steps = Router::new()
            .route("/v1/steps/{token}/{name}", post(step_begin))
            .route("/v1/steps/{token}/{name}/{n}", put(step_record));
        // A2A and MCP check the token themselves: their errors are JSON-RPC errors.
        let protocols = Router::new()
            .route("/.well-known/agent-card.json", get(a2a::runtime_card))
            .route(
                "/a2a/{agent_type}/.well-known/agent-card.json",
                get(a2a::agent_card),
            )
            .route("/a2a", post(a2a::rpc_any))
            .route("/a2a/{agent_type}", post(a2a::rpc_typed))
            .route(
                "/mcp",
                post(mcp::post)
                    .get(mcp::not_allowed)
                    .delete(mcp::not_allowed),
            );
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .merge(v1)
            .merge(steps)
            .merge(protocols)
            .layer(DefaultBodyLimit::max(max_body))
            .with_state(self.clone())
    }

    /// Waits (up to `limit`) for RPCs started by the gateway to end. They end by
    /// themselves at their deadline, so this only bounds how long stopping waits.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.rpcs.close();
        tokio::time::timeout(limit, self.rpcs.wait()).await.is_ok()
    }

    fn ready(&self) -> bool {
        self.set_up.load(Ordering::SeqCst)
            && !self.stopping.is_cancelled()
            && self.runtime.is_ready()
    }
}

/// An error answer: status plus `{"error", "kind"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let status = match &e {
            RuntimeError::Handler { .. } | RuntimeError::UnknownMessageType { .. } => {
                StatusCode::BAD_GATEWAY
            }
            RuntimeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RuntimeError::UnknownAgentType(_) | RuntimeError::NotLocal(_) => StatusCode::NOT_FOUND,
            RuntimeError::Id(_)
            | RuntimeError::Codec(_)
            | RuntimeError::Config(_)
            | RuntimeError::SelfRpc(_) => StatusCode::BAD_REQUEST,
            RuntimeError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.metric_label(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "kind": self.kind });
        (self.status, axum::Json(body)).into_response()
    }
}

async fn authorize(
    State(gw): State<Gateway>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !gw.bearer_ok(request.headers()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        ));
    }
    Ok(next.run(request).await)
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(gw): State<Gateway>) -> Response {
    if gw.ready() {
        (StatusCode::OK, "ready").into_response()
    } else if gw.stopping.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
    } else if let Some(p) = gw.problem.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {p}")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(gw): State<Gateway>) -> Response {
    // Lag is read from Kafka per scrape (two small requests), not kept up to date
    // between scrapes; a slow broker delays the scrape by at most twice this.
    gw.runtime
        .refresh_consumer_lag(Duration::from_secs(2))
        .await;
    let mut text = prometheus::render(
        &gw.runtime.metrics(),
        prometheus::ProcessGauges {
            active_agents: gw.runtime.active_agents().len(),
            ready: gw.ready(),
        },
    );
    if let Some(llm) = &gw.llm_metrics {
        llm.render(&mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

/// `POST /v1/steps/{token}/{name}`: the next call of step `name` of the HTTP agent
/// request `token`; `{"n", "done": true, "value"}` when it completed before.
async fn step_begin(
    State(gw): State<Gateway>,
    Path((token, name)): Path<(String, String)>,
) -> Response {
    match gw.http_steps.begin(&token, &name) {
        Ok(s) => {
            let mut body = serde_json::json!({ "n": s.n, "done": s.value.is_some() });
            if let Some(v) = s.value {
                body["value"] = v;
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => step_error(&e),
    }
}

/// `PUT /v1/steps/{token}/{name}/{n}` with the step's result (JSON): journals it.
async fn step_record(
    State(gw): State<Gateway>,
    Path((token, name, n)): Path<(String, String, u32)>,
    body: Bytes,
) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return step_error(&crate::http_steps::StepError::Invalid(format!(
                "the body (the result of step {name}/{n}) is not JSON: {e}"
            )));
        }
    };
    match gw.http_steps.record(&token, &name, n, &value).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => step_error(&e),
    }
}

fn step_error(e: &crate::http_steps::StepError) -> Response {
    use crate::http_steps::StepError;
    let status = match e {
        StepError::UnknownToken => StatusCode::NOT_FOUND,
        StepError::Invalid(_) => StatusCode::BAD_REQUEST,
        StepError::Journal(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        axum::Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

/// Query of an RPC.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcQuery {
    /// Overrides the runtime's default RPC timeout.
    timeout_ms: Option<u64>,
}

/// The message in a request: type from `ce-type`, content type, body.
fn payload_from(headers: &HeaderMap, body: Bytes) -> Result<Payload, ApiError> {
    let type_name = headers
        .get("ce-type")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("the ce-type header (the message type) is required")
        })?;
    // The body is JSON unless a client says otherwise; curl's default form type
    // counts as "did not say".
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|c| !c.starts_with("application/x-www-form-urlencoded"))
        .unwrap_or(JSON);
    if is_json(content_type)
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
    {
        return Err(ApiError::bad_request(format!(
            "the body is not valid JSON: {e}"
        )));
    }
    Ok(Payload {
        type_name: type_name.to_owned(),
        content_type: content_type.to_owned(),
        data: body,
    })
}

/// The W3C trace context a client sent (`traceparent`, `tracestate`); malformed
/// values are ignored, as the W3C spec asks.
fn incoming_trace(headers: &HeaderMap) -> Option<TraceContext> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    TraceContext::parse(
        text(wire::header::TRACEPARENT)?,
        text(wire::header::TRACESTATE),
    )
}

/// The caller's `ce-id` (CloudEvents binary mode), which becomes the message id the
/// handler sees; checked by the runtime.
fn incoming_message_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("ce-id")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::bad_request("ce-id must be printable ASCII".to_owned()))
        })
        .transpose()
}

async fn rpc(
    State(gw): State<Gateway>,
    Path((agent_type, key)): Path<(String, String)>,
    Query(query): Query<RpcQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if gw.stopping.is_cancelled() {
        return Err(RuntimeError::Stopped.into());
    }
    let recipient =
        AgentId::new(agent_type, key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let payload = payload_from(&headers, body)?;
    let span = tracing::debug_span!(
        "switchboard.gateway.rpc",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/agents/{type}/{key}",
        switchboard.agent.type = recipient.agent_type(),
        switchboard.agent.key = recipient.key(),
        switchboard.message.type = %payload.type_name,
    );
    let trace = trace::start_span(&span, incoming_trace(&headers).as_ref());
    let options = SendOptions {
        timeout: query.timeout_ms.map(Duration::from_millis),
        trace: Some(trace),
        message_id: incoming_message_id(&headers)?,
        ..SendOptions::default()
    };
    // The RPC runs in its own task, so a client that hangs up does not abandon it
    // half-way (it still ends at its deadline); the gateway's tracker owns it.
    let runtime = gw.runtime.clone();
    let call = gw.rpcs.spawn(
        async move { runtime.send_payload(payload, &recipient, options).await }.instrument(span),
    );
    let reply = call.await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })??;
    Ok(match reply {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(reply) => {
            let mut response = (StatusCode::OK, reply.data).into_response();
            let h = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&reply.type_name) {
                h.insert("ce-type", v);
            }
            if let Ok(v) = HeaderValue::from_str(&reply.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            response
        }
    })
}

async fn publish(
    State(gw): State<Gateway>,
    Path((topic_type, source)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if gw.stopping.is_cancelled() {
        return Err(RuntimeError::Stopped.into());
    }
    let topic =
        TopicId::new(topic_type, source).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let payload = payload_from(&headers, body)?;
    let span = tracing::debug_span!(
        "switchboard.gateway.publish",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/topics/{type}/{source}",
        switchboard.topic = %topic,
        switchboard.message.type = %payload.type_name,
    );
    let trace = trace::start_span(&span, incoming_trace(&headers).as_ref());
    let event = OutgoingEvent {
        payload,
        topic: topic.clone(),
        sender: None,
        trace: Some(trace),
        message_id: incoming_message_id(&headers)?,
    };
    gw.runtime
        .transport()
        .publish(event)
        .instrument(span)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "topic": topic.to_string() })),
    )
        .into_response())
}

/// One agent type in `GET /v1/registry`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentTypeView {
    /// The agent type.
    #[serde(rename = "type")]
    pub agent_type: String,
    /// The runtime hosting it.
    pub runtime: String,
}

/// One subscription in `GET /v1/registry`, in the config file's field names.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    /// Its id.
    pub id: String,
    /// Exact topic type matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_type: Option<String>,
    /// Topic type prefix matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_type_prefix: Option<String>,
    /// The receiving agent type.
    pub agent_type: String,
}

impl From<&Subscription> for SubscriptionView {
    fn from(s: &Subscription) -> Self {
        let (topic_type, topic_type_prefix) = match s {
            Subscription::Type { topic_type, .. } => (Some(topic_type.clone()), None),
            Subscription::TypePrefix { prefix, .. } => (None, Some(prefix.clone())),
        };
        Self {
            id: s.id().to_owned(),
            topic_type,
            topic_type_prefix,
            agent_type: s.agent_type().to_owned(),
        }
    }
}

/// `GET /v1/registry`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryView {
    /// Agent types and their runtimes.
    pub agent_types: Vec<AgentTypeView>,
    /// Subscriptions of the network.
    pub subscriptions: Vec<SubscriptionView>,
}

async fn registry(State(gw): State<Gateway>) -> axum::Json<RegistryView> {
    let subscriptions = gw.runtime.subscriptions().await;
    axum::Json(RegistryView {
        agent_types: gw
            .runtime
            .agent_types()
            .into_iter()
            .map(|(agent_type, runtime)| AgentTypeView {
                agent_type,
                runtime,
            })
            .collect(),
        subscriptions: subscriptions.iter().map(SubscriptionView::from).collect(),
    })
}

async fn active_agents(State(gw): State<Gateway>) -> axum::Json<serde_json::Value> {
    let mut ids: Vec<String> = gw
        .runtime
        .active_agents()
        .iter()
        .map(ToString::to_string)
        .collect();
    ids.sort();
    axum::Json(json!({ "agents": ids }))
}
