//! The A2A v1.0 server on the runtime's HTTP listener (docs/a2a-mcp.md): agent cards
//! and the JSON-RPC binding, with tasks durable in Kafka.
//!
//! | route | what |
//! |---|---|
//! | `GET /.well-known/agent-card.json` | the runtime's card, one skill per hosted agent type |
//! | `GET /a2a/{type}/.well-known/agent-card.json` | one agent type's card |
//! | `POST /a2a` | JSON-RPC; the agent type from `message.metadata.agentType` (or the only one) |
//! | `POST /a2a/{type}` | JSON-RPC to that agent type |
//!
//! Methods: `SendMessage`, `SendStreamingMessage`, `GetTask`, `ListTasks`, `CancelTask`,
//! `SubscribeToTask`, and the v0.3 names `message/send`, `message/stream`, `tasks/get`,
//! `tasks/cancel`, `tasks/resubscribe` (answered in v0.3 shapes). An `A2A-Version` header
//! (`1.0` or `0.3`) picks the answer's shapes; another version is refused (-32009).
//! A task is one RPC into the agent's inbox ([`tasks`]); the task's `contextId` is the
//! agent key, so one conversation stays with one agent instance and its state.
//! The cards are public (they name the bearer scheme); the JSON-RPC routes need the
//! gateway's bearer token when one is configured.

pub mod card;
pub mod mapping;
pub mod model;
pub mod render;
mod runner;
pub mod task_log;
mod tasks;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use self::model::Dialect;
use super::Gateway;
use super::jsonrpc::{self, RpcError, RpcRequest};

/// The task does not exist.
pub const TASK_NOT_FOUND: i64 = -32001;
/// The task is in a terminal state.
pub const TASK_NOT_CANCELABLE: i64 = -32002;
/// Push notifications are not offered.
pub const PUSH_NOT_SUPPORTED: i64 = -32003;
/// The operation is not supported.
pub const UNSUPPORTED_OPERATION: i64 = -32004;
/// A part's content type is not supported.
pub const CONTENT_TYPE_NOT_SUPPORTED: i64 = -32005;
/// No extended card.
pub const EXTENDED_CARD_NOT_CONFIGURED: i64 = -32007;
/// The `A2A-Version` asked for is not spoken.
pub const VERSION_NOT_SUPPORTED: i64 = -32009;

/// `scheme://host` as the client reached us (the `Host` header).
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// `GET /.well-known/agent-card.json`.
pub(super) async fn runtime_card(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let ctx = card::CardContext {
        runtime: &gw.runtime.config().runtime_name,
        base_url: &base,
        bearer: gw.bearer_token.is_some(),
    };
    axum::Json(card::runtime_card(&ctx, &gw.agents)).into_response()
}

/// `GET /a2a/{type}/.well-known/agent-card.json`.
pub(super) async fn agent_card(
    State(gw): State<Gateway>,
    Path(agent_type): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(agent) = gw.agents.iter().find(|a| a.agent_type == agent_type) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "error": format!("agent type {agent_type:?} is not hosted by this runtime"),
                "kind": "unknown_agent_type",
            })),
        )
            .into_response();
    };
    let base = base_url(&headers);
    let ctx = card::CardContext {
        runtime: &gw.runtime.config().runtime_name,
        base_url: &base,
        bearer: gw.bearer_token.is_some(),
    };
    axum::Json(card::agent_card(&ctx, agent)).into_response()
}

/// `POST /a2a`.
pub(super) async fn rpc_any(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    endpoint(gw, None, headers, body).await
}

/// `POST /a2a/{type}`.
pub(super) async fn rpc_typed(
    State(gw): State<Gateway>,
    Path(agent_type): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    endpoint(gw, Some(agent_type), headers, body).await
}

/// The dialect an `A2A-Version` header asks for; `Ok(None)`: no header.
fn version_dialect(headers: &HeaderMap) -> Result<Option<Dialect>, String> {
    let Some(v) = headers.get("a2a-version") else {
        return Ok(None);
    };
    match v.to_str().map(str::trim) {
        Ok("" | "0.3" | "0.3.0") => Ok(Some(Dialect::V03)),
        Ok("1.0" | "1" | "1.0.0" | "1.0.1") => Ok(Some(Dialect::V1)),
        Ok(other) => Err(format!(
            "A2A-Version {other:?} is not supported: this server speaks 1.0 and 0.3"
        )),
        Err(_) => Err("A2A-Version is not readable text".into()),
    }
}

/// The v0.3 names and the v1.0 method each stands for.
fn canonical(method: &str) -> Option<(&'static str, Dialect)> {
    Some(match method {
        "SendMessage" => ("SendMessage", Dialect::V1),
        "SendStreamingMessage" => ("SendStreamingMessage", Dialect::V1),
        "GetTask" => ("GetTask", Dialect::V1),
        "ListTasks" => ("ListTasks", Dialect::V1),
        "CancelTask" => ("CancelTask", Dialect::V1),
        "SubscribeToTask" => ("SubscribeToTask", Dialect::V1),
        "message/send" => ("SendMessage", Dialect::V03),
        "message/stream" => ("SendStreamingMessage", Dialect::V03),
        "tasks/get" => ("GetTask", Dialect::V03),
        "tasks/list" => ("ListTasks", Dialect::V03),
        "tasks/cancel" => ("CancelTask", Dialect::V03),
        "tasks/resubscribe" => ("SubscribeToTask", Dialect::V03),
        _ => return None,
    })
}

fn is_push_method(method: &str) -> bool {
    method.contains("PushNotificationConfig") || method.starts_with("tasks/pushNotificationConfig/")
}

async fn endpoint(
    gw: Gateway,
    agent_type: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !gw.bearer_ok(&headers) {
        return unauthorized();
    }
    let request = match jsonrpc::read_request(&headers, body, gw.max_body).await {
        Ok(r) => r,
        Err((id, e)) => return e.into_response_for(&id),
    };
    let id = request.reply_id();
    match call(&gw, agent_type, &headers, request).await {
        Ok(response) => response,
        Err(e) => e.into_response_for(&id),
    }
}

/// The answer to a wrong or missing bearer token: HTTP 401, JSON-RPC error body.
pub(super) fn unauthorized() -> Response {
    let mut r = RpcError::new(jsonrpc::INVALID_REQUEST, "missing or wrong bearer token")
        .with_status(StatusCode::UNAUTHORIZED)
        .into_response_for(&Value::Null);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    r
}

async fn call(
    gw: &Gateway,
    agent_type: Option<String>,
    headers: &HeaderMap,
    request: RpcRequest,
) -> Result<Response, RpcError> {
    let asked = version_dialect(headers).map_err(|e| RpcError::new(VERSION_NOT_SUPPORTED, e))?;
    if request.id.is_none() {
        return Err(RpcError::new(
            jsonrpc::INVALID_REQUEST,
            "A2A methods answer: send the request with an id",
        ));
    }
    let Some((method, by_name)) = canonical(&request.method) else {
        if is_push_method(&request.method) {
            return Err(RpcError::new(
                PUSH_NOT_SUPPORTED,
                "push notifications are not supported: stream, or poll GetTask",
            ));
        }
        if request.method == "GetExtendedAgentCard"
            || request.method == "agent/getAuthenticatedExtendedCard"
        {
            return Err(RpcError::new(
                EXTENDED_CARD_NOT_CONFIGURED,
                "this agent has no extended card",
            ));
        }
        return Err(RpcError::method_not_found(&request.method));
    };
    let dialect = asked.unwrap_or(by_name);
    let id = request.reply_id();
    let params = match request.params {
        Value::Object(o) => o,
        Value::Null => serde_json::Map::new(),
        _ => return Err(RpcError::invalid_params("params must be an object")),
    };
    let call = tasks::Call {
        gw,
        agent_type: agent_type.as_deref(),
        dialect,
        id: &id,
        params: &params,
    };
    match method {
        "SendMessage" => call.send().await,
        "SendStreamingMessage" => call.send_streaming().await,
        "GetTask" => call.get().await,
        "ListTasks" => call.list().await,
        "CancelTask" => call.cancel().await,
        _ => call.subscribe().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_of_both_versions_are_known() {
        assert_eq!(
            canonical("message/send"),
            Some(("SendMessage", Dialect::V03))
        );
        assert_eq!(
            canonical("SubscribeToTask"),
            Some(("SubscribeToTask", Dialect::V1))
        );
        assert_eq!(canonical("tasks/send"), None);
        assert!(is_push_method("CreateTaskPushNotificationConfig"));
        assert!(is_push_method("tasks/pushNotificationConfig/set"));
    }

    #[test]
    fn the_version_header_picks_the_dialect() {
        let mut h = HeaderMap::new();
        assert_eq!(version_dialect(&h), Ok(None));
        h.insert("a2a-version", "1.0".parse().unwrap());
        assert_eq!(version_dialect(&h), Ok(Some(Dialect::V1)));
        h.insert("a2a-version", "0.3".parse().unwrap());
        assert_eq!(version_dialect(&h), Ok(Some(Dialect::V03)));
        h.insert("a2a-version", "2.0".parse().unwrap());
        assert!(version_dialect(&h).is_err());
    }
}
