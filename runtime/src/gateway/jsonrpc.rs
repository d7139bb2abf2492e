//! JSON-RPC 2.0 over HTTP, as the A2A and MCP endpoints speak it: reading one request
//! from a body (with the body limit, content type and envelope checks every bad request
//! deserves a protocol error for), and writing results and errors.
//!
//! Errors travel in a JSON-RPC error object; the HTTP status is 200 for errors about
//! the call itself (unknown method, bad params, unknown task) and a 4xx for errors about
//! the HTTP request (wrong token 401, wrong content type 415, body too large 413), so
//! proxies and plain HTTP clients see those too.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// One JSON-RPC error, with the HTTP status it is sent with.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// Human-readable reason.
    pub message: String,
    /// Optional structured detail.
    pub data: Option<Value>,
    /// HTTP status of the answer.
    pub status: StatusCode,
}

impl RpcError {
    /// An error answered with HTTP 200 (the call failed, the HTTP request was fine).
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
            status: StatusCode::OK,
        }
    }

    /// `-32602` invalid params.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    /// `-32603` internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }

    /// `-32601` for `method`.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("method not found: {method}"))
    }

    /// With this HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// With this `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The error object.
    pub fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }

    /// The whole response for request `id`.
    pub fn into_response_for(self, id: &Value) -> Response {
        let body = json!({ "jsonrpc": "2.0", "id": id, "error": self.to_json() });
        (self.status, axum::Json(body)).into_response()
    }
}

/// A request as received: its id (`Null` for notifications and unreadable requests),
/// method and params.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    /// The request id; `None` for a notification (no `id` member).
    pub id: Option<Value>,
    /// The method name.
    pub method: String,
    /// The params (`Null` when absent).
    pub params: Value,
}

impl RpcRequest {
    /// The id to answer with (`null` for notifications).
    pub fn reply_id(&self) -> Value {
        self.id.clone().unwrap_or(Value::Null)
    }
}

/// Reads `body` (at most `limit` bytes) as one JSON-RPC request. The error carries the
/// request id when one could be read, else `null`.
pub async fn read_request(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<RpcRequest, (Value, RpcError)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !is_json_content_type(content_type) {
        return Err((
            Value::Null,
            RpcError::new(
                INVALID_REQUEST,
                format!("content type {content_type} is not supported: send application/json"),
            )
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        (
            Value::Null,
            RpcError::new(
                INVALID_REQUEST,
                format!("request body is larger than the limit of {limit} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
        )
    })?;
    parse_request(&bytes)
}

fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Parses one JSON-RPC 2.0 request object. Batches are refused: neither A2A nor MCP
/// (since 2025-06-18) uses them.
pub fn parse_request(bytes: &Bytes) -> Result<RpcRequest, (Value, RpcError)> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        (
            Value::Null,
            RpcError::new(PARSE_ERROR, format!("invalid JSON: {e}")),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            RpcError::new(
                INVALID_REQUEST,
                "a request must be one JSON object (batches are not supported)",
            ),
        ));
    };
    let id = object.remove("id");
    // An id must be a string, a number or null; anything else cannot be echoed back.
    let reply_id = match &id {
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Null)) => v.clone(),
        Some(_) => {
            return Err((
                Value::Null,
                RpcError::new(INVALID_REQUEST, "id must be a string, a number or null"),
            ));
        }
        None => Value::Null,
    };
    let invalid = |message: &str| (reply_id.clone(), RpcError::new(INVALID_REQUEST, message));
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("jsonrpc must be \"2.0\""));
    }
    let method = match object.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(invalid("method must be a non-empty string")),
    };
    let params = object.remove("params").unwrap_or(Value::Null);
    if !matches!(params, Value::Object(_) | Value::Array(_) | Value::Null) {
        return Err(invalid("params must be an object or an array"));
    }
    Ok(RpcRequest { id, method, params })
}

/// A success response for request `id`.
pub fn result_response(id: &Value, result: Value) -> Response {
    axum::Json(result_envelope(id, result)).into_response()
}

/// `{"jsonrpc": "2.0", "id": id, "result": result}`.
pub fn result_envelope(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RpcRequest, (Value, RpcError)> {
        parse_request(&Bytes::from(text.to_owned()))
    }

    #[test]
    fn each_malformed_request_gets_its_code() {
        assert_eq!(parse("{not json").unwrap_err().1.code, PARSE_ERROR);
        assert_eq!(parse("[1]").unwrap_err().1.code, INVALID_REQUEST);
        let (id, e) = parse(r#"{"jsonrpc":"1.0","id":7,"method":"x"}"#).unwrap_err();
        assert_eq!((id, e.code), (json!(7), INVALID_REQUEST));
        let (id, e) = parse(r#"{"jsonrpc":"2.0","id":"a","method":3}"#).unwrap_err();
        assert_eq!((id, e.code), (json!("a"), INVALID_REQUEST));
        let (_, e) = parse(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        let (_, e) = parse(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
    }

    #[test]
    fn a_good_request_and_a_notification_parse() {
        let r =
            parse(r#"{"jsonrpc":"2.0","id":"r1","method":"GetTask","params":{"id":"t"}}"#).unwrap();
        assert_eq!(
            (r.reply_id(), r.method.as_str(), r.params),
            (json!("r1"), "GetTask", json!({"id": "t"}))
        );
        let n = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(n.id, None);
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(is_json_content_type("application/a2a+json"));
        assert!(!is_json_content_type("text/plain"));
    }
}
