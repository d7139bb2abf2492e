//! MCP server at `/mcp` (Streamable HTTP, spec 2026-07-28, stateless; docs/a2a-mcp.md):
//! every hosted agent type is a tool, and `tools/call` is an RPC to it.
//!
//! Each `POST /mcp` carries one JSON-RPC request and gets one `application/json` answer;
//! there are no sessions (no `Mcp-Session-Id`) and no server-initiated messages, so
//! `GET /mcp` is 405. Methods: `server/discover` (2026-07-28), `initialize` (the
//! handshake of earlier revisions, which current SDKs still fall back to), `ping`,
//! `tools/list`, `tools/call`. A notification gets 202 and no body.
//!
//! Errors: a JSON-RPC error for a bad request (no or unknown tool, `arguments` not an
//! object -32602, unknown method -32601, an unsupported protocol version -32022 with
//! the supported list); a tool result with `isError: true` for arguments that do not
//! fit the tool's input schema (checked against the declared message type's schema,
//! `crate::json_schema`) and when the call reached the agent and failed (the handler's
//! error, a timeout), so a model sees why.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Gateway;
use super::catalog::AgentInfo;
use super::jsonrpc::{self, RpcError, RpcRequest};
use crate::api::{AgentRuntime, SendOptions};
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::message::{Payload, is_json};

/// The stateless revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Revisions reachable through `initialize`, oldest first.
pub const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The protocol version is not one this server speaks.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// Where 2026-07-28 requests carry their protocol version.
const VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";
/// How long clients may cache the tool list and discovery (the agents of a running
/// runtime do not change).
const TTL_MS: u64 = 60_000;
/// The key of calls that name none.
const DEFAULT_KEY: &str = "default";

/// `GET` and `DELETE /mcp`: a stateless server has no stream and no session.
pub(super) async fn not_allowed() -> Response {
    let mut r = (
        StatusCode::METHOD_NOT_ALLOWED,
        "this MCP server is stateless: POST one JSON-RPC request per call",
    )
        .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// `POST /mcp`.
pub(super) async fn post(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    if !gw.bearer_ok(&headers) {
        return super::a2a::unauthorized();
    }
    let request = match jsonrpc::read_request(&headers, body, gw.max_body).await {
        Ok(r) => r,
        Err((id, e)) => return e.into_response_for(&id),
    };
    if request.id.is_none() {
        // Notifications (e.g. `notifications/initialized`) need no answer.
        return StatusCode::ACCEPTED.into_response();
    }
    let id = request.reply_id();
    match call(&gw, &headers, request).await {
        Ok(result) => jsonrpc::result_response(&id, result),
        Err(e) => e.into_response_for(&id),
    }
}

/// The protocol version a request names (`_meta`, else the `MCP-Protocol-Version` header).
fn requested_version<'a>(
    params: &'a Map<String, Value>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    params
        .get("_meta")
        .and_then(|m| m.get(VERSION_META_KEY))
        .and_then(Value::as_str)
        .or_else(|| {
            headers
                .get("mcp-protocol-version")
                .and_then(|v| v.to_str().ok())
        })
}

fn unsupported_version(requested: &str) -> RpcError {
    let mut supported: Vec<&str> = HANDSHAKE_VERSIONS.to_vec();
    supported.push(MODERN_VERSION);
    RpcError::new(
        UNSUPPORTED_PROTOCOL_VERSION,
        format!("protocol version {requested:?} is not supported"),
    )
    .with_data(json!({ "supported": supported, "requested": requested }))
}

fn server_info(gw: &Gateway) -> Value {
    json!({
        "name": format!("switchboard-{}", gw.runtime.config().runtime_name),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

fn instructions(gw: &Gateway) -> String {
    format!(
        "Each tool is a Switchboard agent type of runtime {}: tools/call sends `message` to \
         the agent with key `key` (one key, one agent instance with its own state) and returns \
         its reply.",
        gw.runtime.config().runtime_name
    )
}

fn tool(agent: &AgentInfo) -> Value {
    json!({
        "name": agent.agent_type,
        "title": agent.agent_type,
        "description": agent.description,
        "inputSchema": agent.input_schema(),
    })
}

async fn call(gw: &Gateway, headers: &HeaderMap, request: RpcRequest) -> Result<Value, RpcError> {
    if let Some(named) = headers.get("mcp-method").and_then(|v| v.to_str().ok())
        && named != request.method
    {
        return Err(RpcError::new(
            jsonrpc::INVALID_REQUEST,
            format!(
                "the Mcp-Method header ({named}) differs from the body's method ({})",
                request.method
            ),
        ));
    }
    let params = match request.params {
        Value::Object(o) => o,
        Value::Null => Map::new(),
        _ => return Err(RpcError::invalid_params("params must be an object")),
    };
    let modern = match requested_version(&params, headers) {
        Some(v) if v == MODERN_VERSION => true,
        Some(v) if HANDSHAKE_VERSIONS.contains(&v) => false,
        // `initialize` proposes a version in its params; answered below.
        Some(_) | None if request.method == "initialize" => false,
        Some(v) => return Err(unsupported_version(v)),
        None => false,
    };
    // Results of the stateless revision say they are complete; older clients ignore it.
    let complete = |mut v: Value| {
        if modern {
            v["resultType"] = json!("complete");
        }
        v
    };
    match request.method.as_str() {
        "server/discover" => Ok(json!({
            "resultType": "complete",
            "supportedVersions": [MODERN_VERSION],
            "capabilities": { "tools": { "listChanged": false } },
            "instructions": instructions(gw),
            "cacheScope": "public",
            "ttlMs": TTL_MS,
            "_meta": { "io.modelcontextprotocol/serverInfo": server_info(gw) },
        })),
        "initialize" => {
            let proposed = params.get("protocolVersion").and_then(Value::as_str);
            let version = proposed
                .filter(|v| HANDSHAKE_VERSIONS.contains(v))
                .unwrap_or(HANDSHAKE_VERSIONS[HANDSHAKE_VERSIONS.len() - 1]);
            Ok(json!({
                "protocolVersion": version,
                "capabilities": { "tools": { "listChanged": false } },
                "serverInfo": server_info(gw),
                "instructions": instructions(gw),
            }))
        }
        "ping" => Ok(complete(json!({}))),
        "tools/list" => {
            let tools: Vec<Value> = gw.agents.iter().map(tool).collect();
            let mut result = json!({ "tools": tools });
            if modern {
                result["cacheScope"] = json!("public");
                result["ttlMs"] = json!(TTL_MS);
            }
            Ok(complete(result))
        }
        "tools/call" => call_tool(gw, &params).await.map(complete),
        other => Err(RpcError::method_not_found(other)),
    }
}

/// Why a tool call is not sent.
enum Refused {
    /// The request itself is wrong (no or unknown tool, `arguments` not an object): a
    /// JSON-RPC -32602 error.
    Protocol(RpcError),
    /// The arguments do not fit the tool's input schema: a tool result with `isError`,
    /// so a model sees why and can correct them (spec 2025-11-25 on, SEP-1303).
    Input(String),
}

impl From<RpcError> for Refused {
    fn from(e: RpcError) -> Self {
        Self::Protocol(e)
    }
}

/// A tool call's message and recipient, or why it is refused.
fn tool_message(gw: &Gateway, params: &Map<String, Value>) -> Result<(AgentId, Payload), Refused> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("name (the tool) is required"))?;
    let agent = gw
        .agents
        .iter()
        .find(|a| a.agent_type == name)
        .ok_or_else(|| RpcError::invalid_params(format!("unknown tool: {name}")))?;
    let input = |why: String| Refused::Input(format!("invalid arguments for tool {name}: {why}"));
    let arguments = match params.get("arguments") {
        Some(Value::Object(a)) => a,
        None | Some(Value::Null) => {
            return Err(input("message: is required".into()));
        }
        Some(_) => return Err(RpcError::invalid_params("arguments must be an object").into()),
    };
    let message = arguments
        .get("message")
        .ok_or_else(|| input("message: is required".into()))?;
    let type_name = match arguments.get("messageType") {
        None | Some(Value::Null) => agent.default_type(super::catalog::DATA_TYPE),
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(input("messageType: expected string".into())),
    };
    if !agent.accepts(type_name) {
        return Err(input(format!(
            "messageType: {type_name:?} is not a type the tool takes"
        )));
    }
    let key = match arguments.get("key") {
        None | Some(Value::Null) => DEFAULT_KEY,
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Err(input("key: expected string".into())),
    };
    if let Some(other) = arguments
        .keys()
        .find(|k| !["message", "messageType", "key"].contains(&k.as_str()))
    {
        return Err(input(format!("{other}: is not an allowed property")));
    }
    if let Some(schema) = agent
        .message_types
        .iter()
        .find(|m| m.name == type_name)
        .and_then(|m| m.schema.as_ref())
    {
        crate::json_schema::validate(schema, message, "message").map_err(input)?;
    }
    let recipient = AgentId::new(name, key).map_err(|e| input(format!("key: {e}")))?;
    Ok((recipient, Payload::json(type_name, message)))
}

/// A tool result that reports an error.
fn error_result(text: String) -> Value {
    json!({
        "content": [{ "type": "text", "text": text }],
        "isError": true,
    })
}

async fn call_tool(gw: &Gateway, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let (recipient, payload) = match tool_message(gw, params) {
        Ok(m) => m,
        Err(Refused::Protocol(e)) => return Err(e),
        Err(Refused::Input(why)) => return Ok(error_result(why)),
    };
    if gw.stopping.is_cancelled() {
        return Err(RpcError::internal("the runtime is stopping")
            .with_status(StatusCode::SERVICE_UNAVAILABLE));
    }
    // Owned by the gateway, so a client that hangs up does not abandon the RPC half-way.
    let runtime = gw.runtime.clone();
    let reply = gw
        .rpcs
        .spawn(async move {
            runtime
                .send_payload(payload, &recipient, SendOptions::default())
                .await
        })
        .await
        .map_err(|e| RpcError::internal(e.to_string()))?;
    Ok(match reply {
        Ok(Some(reply)) => reply_result(&reply),
        Ok(None) => json!({ "content": [], "isError": false }),
        Err(RuntimeError::Stopped) => {
            return Err(RpcError::internal("the runtime is stopping")
                .with_status(StatusCode::SERVICE_UNAVAILABLE));
        }
        Err(e) => error_result(e.to_string()),
    })
}

/// A reply as a tool result: its text, and JSON objects as `structuredContent` too.
fn reply_result(reply: &Payload) -> Value {
    let text = String::from_utf8_lossy(&reply.data).into_owned();
    let mut result = json!({
        "content": [{ "type": "text", "text": text }],
        "isError": false,
        "_meta": { "switchboard/messageType": reply.type_name },
    });
    if is_json(&reply.content_type)
        && let Ok(value @ Value::Object(_)) = serde_json::from_slice::<Value>(&reply.data)
    {
        result["structuredContent"] = value;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_meta_or_the_header() {
        let params: Map<String, Value> =
            serde_json::from_value(json!({"_meta": {VERSION_META_KEY: MODERN_VERSION}})).unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(requested_version(&params, &headers), Some(MODERN_VERSION));
        headers.insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
        assert_eq!(requested_version(&Map::new(), &headers), Some("2025-06-18"));
        let e = unsupported_version("1999-01-01");
        assert_eq!(e.code, UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(e.data.unwrap()["supported"][4], MODERN_VERSION);
    }

    #[test]
    fn replies_become_tool_results() {
        let r = reply_result(&Payload::json("x.C", &json!({"count": 1})));
        assert_eq!(r["content"][0]["text"], r#"{"count":1}"#);
        assert_eq!(r["structuredContent"], json!({"count": 1}));
        let r = reply_result(&Payload::json("x.S", &json!("hi")));
        assert!(
            r.get("structuredContent").is_none(),
            "only objects are structured content"
        );
    }
}
