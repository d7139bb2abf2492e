//! A client of remote MCP servers (Streamable HTTP, spec 2026-07-28, stateless), for
//! agents that call MCP tools: [`McpClient::list_tools`] and [`McpClient::call_tool`].
//! The `mcp` agent kind ([`factory`]) is one MCP tool as a Switchboard agent type.
//!
//! Every request is self-contained, as the 2026-07-28 revision has it: the protocol
//! version, client info and capabilities in `params._meta`, and the `MCP-Protocol-Version`,
//! `Mcp-Method` (and `Mcp-Name`) headers. The answer may be JSON or a short SSE stream
//! (servers switch to SSE for slow handlers); both are read. Servers that only speak the
//! earlier, session-based revisions answer -32022 or -32601, which is reported as such
//! (no fallback to the `initialize` handshake).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::agent::{Agent, AgentError, AgentFactory, HandlerResult};
use crate::config_file::McpAgentSettings;
use crate::context::MessageContext;
use crate::gateway::catalog::{DATA_TYPE, TEXT_TYPE};
use crate::message::{Payload, is_json};

/// The revision spoken.
pub const PROTOCOL_VERSION: &str = "2026-07-28";

/// A failed MCP exchange.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The server could not be reached or answered something that is not MCP.
    #[error("MCP server {url}: {reason}")]
    Transport {
        /// The server.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered a JSON-RPC error.
    #[error("MCP server {url} answered error {code}: {message}")]
    Rpc {
        /// The server.
        url: String,
        /// JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
    },
}

/// One tool a server offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    pub input_schema: Value,
}

/// A tool's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// Content blocks (`{"type": "text", "text": ..}`, ...).
    pub content: Vec<Value>,
    /// Structured content, when the tool gave one.
    pub structured: Option<Value>,
    /// The tool failed (its reason is in `content`).
    pub is_error: bool,
}

impl ToolResult {
    /// The text blocks, joined by newlines.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|c| c["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A client of one MCP server.
#[derive(Clone)]
pub struct McpClient {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("McpClient").field("url", &self.url).finish()
    }
}

/// The JSON-RPC response to request `id` in an SSE body (`data:` lines, events split by
/// blank lines), skipping notifications.
fn response_in_sse(body: &str, id: &Value) -> Option<Value> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|l| l.strip_prefix(' ').unwrap_or(l))
                .collect();
            serde_json::from_str::<Value>(&data.join("\n")).ok()
        })
        .find(|m| m.get("id") == Some(id))
}

impl McpClient {
    /// A client of the server at `url` (its Streamable HTTP endpoint), sending `token`
    /// as a bearer token; each request waits at most `timeout`.
    pub fn new(
        http: reqwest::Client,
        url: impl Into<String>,
        token: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            url: url.into(),
            token,
            timeout,
        }
    }

    /// The server's endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn transport(&self, reason: impl Into<String>) -> McpError {
        McpError::Transport {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    /// Sends one request; its `result`.
    async fn request(
        &self,
        method: &str,
        name: Option<&str>,
        mut params: Value,
    ) -> Result<Value, McpError> {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
            "io.modelcontextprotocol/clientInfo": { "name": "switchboard", "version": env!("CARGO_PKG_VERSION") },
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let id = json!(uuid::Uuid::new_v4().to_string());
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut req = self
            .http
            .post(&self.url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .header("MCP-Protocol-Version", PROTOCOL_VERSION)
            .header("Mcp-Method", method)
            .body(body.to_string());
        if let Some(n) = name {
            req = req.header("Mcp-Name", n);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let response = req.send().await.map_err(|e| {
            self.transport(if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                format!("unreachable: {e}")
            })
        })?;
        let status = response.status();
        let sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let text = response
            .text()
            .await
            .map_err(|e| self.transport(format!("reading the answer failed: {e}")))?;
        let answer = if sse {
            response_in_sse(&text, &id)
        } else {
            serde_json::from_str::<Value>(&text).ok()
        }
        .ok_or_else(|| {
            self.transport(format!(
                "HTTP {status} without a JSON-RPC answer: {}",
                &text[..text.len().min(300)]
            ))
        })?;
        if let Some(e) = answer.get("error") {
            return Err(McpError::Rpc {
                url: self.url.clone(),
                code: e["code"].as_i64().unwrap_or_default(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if !status.is_success() {
            return Err(self.transport(format!("HTTP {status}")));
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| self.transport("an answer with neither result nor error"))
    }

    /// The server's tools (following `nextCursor`).
    pub async fn list_tools(&self) -> Result<Vec<Tool>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let result = self.request("tools/list", None, params).await?;
            for t in result["tools"].as_array().into_iter().flatten() {
                let Some(name) = t["name"].as_str() else {
                    continue;
                };
                tools.push(Tool {
                    name: name.to_owned(),
                    description: t["description"].as_str().map(str::to_owned),
                    input_schema: t["inputSchema"].clone(),
                });
            }
            match result["nextCursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return Ok(tools),
            }
        }
    }

    /// Calls tool `name` with `arguments`.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<ToolResult, McpError> {
        let result = self
            .request(
                "tools/call",
                Some(name),
                json!({ "name": name, "arguments": arguments }),
            )
            .await?;
        Ok(ToolResult {
            content: result["content"].as_array().cloned().unwrap_or_default(),
            structured: result
                .get("structuredContent")
                .filter(|s| !s.is_null())
                .cloned(),
            is_error: result["isError"].as_bool().unwrap_or(false),
        })
    }
}

/// The factory of `mcp` agents: every message calls `settings.tool` with the message's
/// data (a JSON object) as arguments; the reply is the tool's structured content, else
/// `{"text": <its text content>}`; a tool error is a handler error.
pub fn factory(
    http: reqwest::Client,
    settings: McpAgentSettings,
    token: Option<String>,
) -> AgentFactory {
    let client = McpClient::new(
        http,
        &settings.url,
        token,
        Duration::from_millis(settings.timeout_ms),
    );
    AgentFactory::new(move |_| McpToolAgent {
        client: client.clone(),
        tool: settings.tool.clone(),
    })
}

/// One MCP tool as an agent.
#[derive(Debug)]
pub struct McpToolAgent {
    client: McpClient,
    tool: String,
}

/// The reply of a tool result.
pub fn reply_of(result: &ToolResult) -> Result<Payload, AgentError> {
    if result.is_error {
        return Err(AgentError::new(format!(
            "the MCP tool failed: {}",
            result.text()
        )));
    }
    Ok(match &result.structured {
        Some(s) => Payload::json(DATA_TYPE, s),
        None => Payload::json(TEXT_TYPE, &json!({ "text": result.text() })),
    })
}

#[async_trait]
impl Agent for McpToolAgent {
    async fn on_message(&mut self, message: Payload, _ctx: &MessageContext) -> HandlerResult {
        let arguments: Value = if is_json(&message.content_type) {
            serde_json::from_slice(&message.data)
                .map_err(|e| AgentError::new(format!("the message is not valid JSON: {e}")))?
        } else {
            return Err(AgentError::new(
                "an MCP tool takes a JSON object as its message",
            ));
        };
        if !arguments.is_object() {
            return Err(AgentError::new(
                "an MCP tool takes a JSON object (its arguments) as its message",
            ));
        }
        let result = self
            .client
            .call_tool(&self.tool, arguments)
            .await
            .map_err(AgentError::new)?;
        reply_of(&result).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_found_in_an_sse_body() {
        let body = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n\
                    : ping\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"r1\",\"result\":{\"ok\":true}}\n\n";
        let r = response_in_sse(body, &json!("r1")).unwrap();
        assert_eq!(r["result"]["ok"], true);
        assert!(response_in_sse(body, &json!("r2")).is_none());
    }

    #[test]
    fn tool_results_become_replies_or_errors() {
        let structured = ToolResult {
            content: vec![json!({"type": "text", "text": "{\"t\":3}"})],
            structured: Some(json!({"t": 3})),
            is_error: false,
        };
        assert_eq!(reply_of(&structured).unwrap().data, &br#"{"t":3}"#[..]);
        let text = ToolResult {
            content: vec![
                json!({"type": "text", "text": "a"}),
                json!({"type": "text", "text": "b"}),
            ],
            structured: None,
            is_error: false,
        };
        let p = reply_of(&text).unwrap();
        assert_eq!(
            (p.type_name.as_str(), &p.data[..]),
            (TEXT_TYPE, &br#"{"text":"a\nb"}"#[..])
        );
        let failed = ToolResult {
            is_error: true,
            ..text
        };
        assert!(reply_of(&failed).unwrap_err().message().contains("a\nb"));
    }
}
