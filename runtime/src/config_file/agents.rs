//! `agents:` of the config file: one entry per hosted agent type, and the settings of
//! each kind (builtin, http, code, llm, a2a, mcp), with the checks of one entry.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::llm_config::LlmSettings;

/// One entry of `agents:`: exactly one of `builtin`, `http`, `code`, `llm`, `a2a` and `mcp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentEntry {
    /// Agent type name.
    #[serde(rename = "type")]
    pub agent_type: String,
    /// A built-in agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<Builtin>,
    /// Settings of the `relay` builtin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelaySettings>,
    /// An agent behind HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAgentSettings>,
    /// An agent the hosting program registers itself (e.g. an AutoGen agent under
    /// `python -m switchboard serve`); `switchboard-runtime run` refuses such entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeAgent>,
    /// A model-backed agent (OpenAI-compatible Chat Completions, tools, memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSettings>,
    /// A remote A2A agent this agent type forwards every message to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a: Option<A2aAgentSettings>,
    /// One tool of a remote MCP server this agent type calls with every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpAgentSettings>,
    /// What the agent does: its A2A skill's and MCP tool's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The message types it accepts (A2A and MCP callers may send only these, and
    /// the MCP tool's input schema is built from them); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_types: Vec<MessageTypeEntry>,
}

/// `a2a:` of an agent forwarding to a remote A2A agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct A2aAgentSettings {
    /// The remote agent's JSON-RPC endpoint (its card's `supportedInterfaces[].url`).
    pub url: String,
    /// Environment variable holding the bearer token for the remote (the operator
    /// sets it from the agent's `a2a.secretRef`); unset: no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How long one message may take, polling included, milliseconds.
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
}

/// `mcp:` of an agent calling one tool of a remote MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpAgentSettings {
    /// The server's Streamable HTTP endpoint (e.g. `http://host:8000/mcp`).
    pub url: String,
    /// The tool called.
    pub tool: String,
    /// Environment variable holding the bearer token for the server (the operator sets
    /// it from the agent's `mcp.secretRef`); unset: no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How long one call may take, milliseconds.
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
}

/// One entry of `mcpServers:`: a remote MCP server the agents' tools may call
/// (`llm.tools[].mcp.server` names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpServerEntry {
    /// The name tools refer to it by.
    pub name: String,
    /// Its Streamable HTTP endpoint (e.g. `http://host:8000/mcp`).
    pub url: String,
    /// Environment variable holding the bearer token for the server (the operator sets
    /// it from `mcpServers[].secretRef`); unset: no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How long one call may take, milliseconds.
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
}

impl McpServerEntry {
    /// Checks of entry `i` of `mcpServers`.
    pub(super) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let at = |f: &str| format!("mcpServers[{i}].{f}");
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                at("name"),
                &self.name,
                "must be letters, digits, '-' or '_'",
            ));
        }
        if !is_http_url(&self.url) {
            return Err(ConfigError::invalid(
                at("url"),
                &self.url,
                "must be an absolute http(s) URL",
            ));
        }
        Ok(())
    }
}

/// One entry of `agents[].messageTypes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageTypeEntry {
    /// The message type name (`ce-type`).
    pub name: String,
    /// JSON Schema of the message's data (the MCP tool's `message` input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// `code: {}` of an agent registered by the hosting program. Empty: the program
/// knows how to make the agent; the entry declares the type, so the operator, the
/// registry and subscriptions know it, and the program is checked to register it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeAgent {}

impl AgentEntry {
    /// Whether the hosting program, not the file, provides this agent.
    pub fn is_code(&self) -> bool {
        self.code.is_some()
    }
}

/// Built-in agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    /// Replies with the message it got (same type, same data).
    Echo,
    /// Counts every message per key in its state; RPCs reply `{"count": n}`.
    Counter,
    /// Publishes every message it gets to `relay.publish.topicType`, source = its key.
    Relay,
}

/// `relay:` of a relay agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelaySettings {
    /// Where to publish.
    pub publish: RelayPublish,
}

/// `relay.publish:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayPublish {
    /// Topic type to publish to.
    pub topic_type: String,
}

/// `http:` of an HTTP agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAgentSettings {
    /// URL each message is POSTed to.
    pub url: String,
    /// Per-request timeout, milliseconds.
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of a failed request (connection errors and 5xx), with backoff.
    #[serde(default = "default_http_retries")]
    pub retries: u32,
}

fn default_http_timeout_ms() -> u64 {
    30_000
}
fn default_http_retries() -> u32 {
    2
}

/// An absolute `http://` or `https://` URL with a host.
fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

impl AgentEntry {
    /// Checks what serde cannot in entry `i`: exactly one kind, the kind's own
    /// fields. Errors name the field by its path, e.g. `agents[2].http.url`.
    pub(super) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let at = |f: &str| format!("agents[{i}].{f}");
        for (j, m) in self.message_types.iter().enumerate() {
            let field = at(&format!("messageTypes[{j}]"));
            if m.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    &m.name,
                    "must not be empty",
                ));
            }
            if m.schema.as_ref().is_some_and(|s| !s.is_object()) {
                return Err(ConfigError::invalid(
                    format!("{field}.schema"),
                    &m.name,
                    "must be a JSON Schema object",
                ));
            }
            if let Some(Err(why)) = m.schema.as_ref().map(crate::json_schema::check_supported) {
                return Err(ConfigError::invalid(
                    format!("{field}.schema"),
                    &m.name,
                    &why,
                ));
            }
        }
        let kinds = [
            self.builtin.is_some(),
            self.http.is_some(),
            self.code.is_some(),
            self.llm.is_some(),
            self.a2a.is_some(),
            self.mcp.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => {
                return Err(ConfigError::invalid(
                    at("builtin"),
                    "",
                    "one of builtin, http, code, llm, a2a or mcp is required",
                ));
            }
            1 => {}
            _ => {
                return Err(ConfigError::invalid(
                    // The field named is the later kind of the pair.
                    at([
                        ("mcp", self.mcp.is_some()),
                        ("a2a", self.a2a.is_some()),
                        ("llm", self.llm.is_some()),
                        ("code", self.code.is_some()),
                    ]
                    .iter()
                    .find(|(_, set)| *set)
                    .map_or("http", |(f, _)| f)),
                    &self.agent_type,
                    "builtin, http, code, llm, a2a and mcp are exclusive",
                ));
            }
        }
        if let Some(l) = &self.llm {
            l.validate(&at("llm"))?;
        }
        if self.relay.is_some() && self.builtin != Some(Builtin::Relay) {
            return Err(ConfigError::invalid(
                at("relay"),
                &self.agent_type,
                "is only for the relay builtin",
            ));
        }
        if let Some(r) = &self.a2a
            && !is_http_url(&r.url)
        {
            return Err(ConfigError::invalid(
                at("a2a.url"),
                &r.url,
                "must be an absolute http(s) URL",
            ));
        }
        if let Some(m) = &self.mcp {
            if !is_http_url(&m.url) {
                return Err(ConfigError::invalid(
                    at("mcp.url"),
                    &m.url,
                    "must be an absolute http(s) URL",
                ));
            }
            if m.tool.trim().is_empty() {
                return Err(ConfigError::invalid(
                    at("mcp.tool"),
                    &m.tool,
                    "must not be empty",
                ));
            }
        }
        match (&self.builtin, &self.http) {
            (Some(Builtin::Relay), None) if self.relay.is_none() => {
                return Err(ConfigError::invalid(
                    at("relay.publish.topicType"),
                    "",
                    "is required for the relay builtin",
                ));
            }
            (_, Some(h)) if !is_http_url(&h.url) => {
                return Err(ConfigError::invalid(
                    at("http.url"),
                    &h.url,
                    "must be an absolute http(s) URL",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}
