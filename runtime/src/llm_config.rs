//! `llm:` of an agent entry: a model-backed agent declared in configuration (the
//! agent itself is `llm`, behind the `server` feature). One definition, used by the
//! config file, the operator and the agent.
//!
//! ```yaml
//! agents:
//!   - type: assistant
//!     llm:
//!       model:
//!         endpoint: "https://api.openai.com/v1"  # POST {endpoint}/chat/completions
//!         model: gpt-4o-mini
//!         apiKeyEnv: SWITCHBOARD_LLM_API_KEY_ASSISTANT   # the key itself never is in the file
//!       systemPrompt: "You are a helpful assistant."
//!       tools:
//!         - { agent: echo, description: "Repeats its input" }   # RPC to echo/<key>
//!         - { mcp: { server: docs, tool: lookup } }              # mcpServers[].name
//!         - { publish: { topicType: notes } }                     # event to notes/<key>
//!       maxIterations: 8
//!       maxToolCalls: 16
//!       maxTokensPerTurn: 20000
//!       maxConcurrentCalls: 4
//!       temperature: 0.2
//!       memory: { maxMessages: 20 }
//! mcpServers:
//!   - { name: docs, url: "http://127.0.0.1:8000/mcp", tokenEnv: DOCS_TOKEN }
//! ```

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::ids::validate_agent_type;

/// `llm:` of an agent entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmSettings {
    /// Which model, where.
    pub model: ModelSettings,
    /// The system message of every model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// What the model may call: agent types, MCP tools, publishing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSettings>,
    /// Model calls per message at most: a turn that still asks for tools after this
    /// many fails with an error saying so.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u32,
    /// Tool calls per message at most: a turn whose model asks for more fails with an
    /// error saying so (before the extra calls are made). Unset: bounded by
    /// `maxIterations` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_calls: Option<u32>,
    /// Tokens (prompt + completion, as the server reports them) per message at most:
    /// a turn that has used more fails with an error saying so, without a further
    /// model call. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_turn: Option<u64>,
    /// Model calls of this agent type in flight at once in one process; further calls
    /// wait for a free slot. Unset: bounded by `runtime.maxConcurrency` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_calls: Option<u32>,
    /// Sampling temperature sent to the model (0-2); the model's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Conversation memory per agent key.
    #[serde(default)]
    pub memory: MemorySettings,
}

/// Validation rejects NaN temperatures, so equality is reflexive.
impl Eq for LlmSettings {}

/// `llm.model:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSettings {
    /// Base URL of an OpenAI-compatible API (`https://api.openai.com/v1`, a vLLM,
    /// Ollama, LiteLLM, ... server); requests go to `{endpoint}/chat/completions`.
    pub endpoint: String,
    /// The model name sent in every request.
    pub model: String,
    /// Environment variable holding the API key (sent as `Authorization: Bearer`);
    /// the operator fills it from the Secret named in the AgentRuntime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Timeout of one model request, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of a model request that failed with 429, 5xx or a connection error,
    /// with exponential backoff (or the server's `Retry-After`).
    #[serde(default = "default_retries")]
    pub retries: u32,
}

/// One entry of `llm.tools:`: exactly one of `agent`, `mcp` and `publish`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolSettings {
    /// An agent type: the RPC goes to `<agent>/<this agent's key>` with the model's
    /// arguments (a JSON object) as data. When that type is declared in the same file
    /// with exactly one `messageTypes` entry, the message has that type and the tool's
    /// parameters are its schema; otherwise the type is `switchboard.llm.ToolCall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A tool of an MCP server in the file's `mcpServers` (parameters: the tool's
    /// `inputSchema` from the server's `tools/list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpToolRef>,
    /// Publishing an event: the model's arguments are published to
    /// `<topicType>/<this agent's key>` as `switchboard.llm.Published`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishTool>,
    /// What the tool does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `llm.tools[].mcp:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpToolRef {
    /// `name` of an entry of the file's `mcpServers`.
    pub server: String,
    /// The tool's name on that server.
    pub tool: String,
}

/// `llm.tools[].publish:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishTool {
    /// The topic type published to (the topic source is the agent's key).
    pub topic_type: String,
}

/// What a tool entry calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolTarget<'a> {
    /// An agent type.
    Agent(&'a str),
    /// An MCP tool.
    Mcp(&'a McpToolRef),
    /// Publishing to a topic type.
    Publish(&'a str),
}

impl ToolSettings {
    /// A tool calling agent type `agent`.
    pub fn agent(agent: impl Into<String>) -> Self {
        Self {
            agent: Some(agent.into()),
            ..Self::default()
        }
    }

    /// What this entry calls; `None` unless exactly one kind is set (see `validate`).
    pub fn target(&self) -> Option<ToolTarget<'_>> {
        match (&self.agent, &self.mcp, &self.publish) {
            (Some(a), None, None) => Some(ToolTarget::Agent(a)),
            (None, Some(m), None) => Some(ToolTarget::Mcp(m)),
            (None, None, Some(p)) => Some(ToolTarget::Publish(&p.topic_type)),
            _ => None,
        }
    }

    /// The function name the model sees: the agent type, the MCP tool's name, or
    /// `publish_<topicType>`, as a valid function name ([`tool_name`]).
    pub fn function_name(&self) -> String {
        match self.target() {
            Some(ToolTarget::Agent(a)) => tool_name(a),
            Some(ToolTarget::Mcp(m)) => tool_name(&m.tool),
            Some(ToolTarget::Publish(t)) => tool_name(&format!("publish_{t}")),
            None => String::new(),
        }
    }
}

/// `llm.memory:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemorySettings {
    /// Messages kept per agent key (user, assistant and tool messages; the system
    /// prompt is not counted). Older turns are dropped whole; 0 keeps nothing.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            max_messages: default_max_messages(),
        }
    }
}

/// Default of `maxIterations`.
pub const DEFAULT_MAX_ITERATIONS: u32 = 8;
/// Default of `model.timeoutMs`.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Default of `model.retries`.
pub const DEFAULT_RETRIES: u32 = 3;
/// Default of `memory.maxMessages`.
pub const DEFAULT_MAX_MESSAGES: usize = 20;

fn default_max_iterations() -> u32 {
    DEFAULT_MAX_ITERATIONS
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
fn default_max_messages() -> usize {
    DEFAULT_MAX_MESSAGES
}

impl LlmSettings {
    /// Checks what serde cannot; `at` prefixes field paths (`agents[2].llm`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let field = |f: &str| format!("{at}.{f}");
        let e = &self.model.endpoint;
        let ok = (e.starts_with("http://") || e.starts_with("https://"))
            && e.split("://")
                .nth(1)
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !ok {
            return Err(ConfigError::invalid(
                field("model.endpoint"),
                e,
                "must be an absolute http(s) URL",
            ));
        }
        if self.model.model.is_empty() {
            return Err(ConfigError::invalid(
                field("model.model"),
                "",
                "is required",
            ));
        }
        if let Some(v) = &self.model.api_key_env
            && (v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(ConfigError::invalid(
                field("model.apiKeyEnv"),
                v,
                "must be an environment variable name",
            ));
        }
        if self.max_iterations == 0 {
            return Err(ConfigError::invalid(
                field("maxIterations"),
                "0",
                "must be at least 1",
            ));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ConfigError::invalid(
                field("temperature"),
                t.to_string(),
                "must be between 0 and 2",
            ));
        }
        for (f, v) in [
            ("maxToolCalls", self.max_tool_calls.map(u64::from)),
            ("maxTokensPerTurn", self.max_tokens_per_turn),
            (
                "maxConcurrentCalls",
                self.max_concurrent_calls.map(u64::from),
            ),
        ] {
            if v == Some(0) {
                return Err(ConfigError::invalid(field(f), "0", "must be at least 1"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.tools.iter().enumerate() {
            let at = |f: &str| field(&format!("tools[{i}].{f}"));
            match t.target() {
                None => {
                    return Err(ConfigError::invalid(
                        at("agent"),
                        "",
                        "exactly one of agent, mcp and publish is required",
                    ));
                }
                Some(ToolTarget::Agent(a)) => validate_agent_type(a)
                    .map_err(|e| ConfigError::invalid(at("agent"), a, e.to_string()))?,
                Some(ToolTarget::Mcp(m)) => {
                    if m.server.is_empty() {
                        return Err(ConfigError::invalid(at("mcp.server"), "", "is required"));
                    }
                    if m.tool.is_empty() {
                        return Err(ConfigError::invalid(at("mcp.tool"), "", "is required"));
                    }
                }
                Some(ToolTarget::Publish(topic)) => {
                    crate::ids::TopicId::new(topic, "k").map_err(|e| {
                        ConfigError::invalid(at("publish.topicType"), topic, e.to_string())
                    })?;
                }
            }
            let name = t.function_name();
            if !names.insert(name.clone()) {
                return Err(ConfigError::invalid(
                    field(&format!("tools[{i}]")),
                    name,
                    "is a tool name listed twice (two entries map to the same function name)",
                ));
            }
        }
        Ok(())
    }
}

/// The function name a tool agent type has for the model: OpenAI function names
/// are `[a-zA-Z0-9_-]{1,64}`, so other characters become `_`.
pub fn tool_name(agent_type: &str) -> String {
    agent_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> LlmSettings {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_validation_name_the_field() {
        let s = parse("model: {endpoint: 'http://127.0.0.1:1/v1', model: m}");
        assert_eq!(
            (s.max_iterations, s.memory.max_messages, s.model.retries),
            (8, 20, 3)
        );
        s.validate("agents[0].llm").unwrap();
        let bad = parse("model: {endpoint: 'localhost/v1', model: m}");
        assert_eq!(bad.validate("a").unwrap_err().field, "a.model.endpoint");
        let bad = parse("{model: {endpoint: 'http://h/v1', model: m}, temperature: 3}");
        assert_eq!(bad.validate("a").unwrap_err().field, "a.temperature");
        let bad = parse("{model: {endpoint: 'http://h/v1', model: m}, maxIterations: 0}");
        assert_eq!(bad.validate("a").unwrap_err().field, "a.maxIterations");
        let bad = parse(
            "{model: {endpoint: 'http://h/v1', model: m}, tools: [{agent: a.b}, {agent: a_b}]}",
        );
        assert_eq!(bad.validate("a").unwrap_err().field, "a.tools[1]");
        let bad = parse(
            "{model: {endpoint: 'http://h/v1', model: m}, tools: [{agent: a, publish: {topicType: t}}]}",
        );
        assert_eq!(bad.validate("a").unwrap_err().field, "a.tools[0].agent");
        let bad = parse("{model: {endpoint: 'http://h/v1', model: m}, tools: [{}]}");
        assert_eq!(bad.validate("a").unwrap_err().field, "a.tools[0].agent");
        let bad = parse(
            "{model: {endpoint: 'http://h/v1', model: m}, tools: [{mcp: {server: '', tool: x}}]}",
        );
        assert_eq!(
            bad.validate("a").unwrap_err().field,
            "a.tools[0].mcp.server"
        );
        let bad = parse("{model: {endpoint: 'http://h/v1', model: m}, maxToolCalls: 0}");
        assert_eq!(bad.validate("a").unwrap_err().field, "a.maxToolCalls");
        let bad = parse("model: {endpoint: 'http://h/v1', model: m, apiKeyEnv: 'sk-123 secret'}");
        assert_eq!(bad.validate("a").unwrap_err().field, "a.model.apiKeyEnv");
        assert!(
            serde_yaml::from_str::<LlmSettings>("model: {endpoint: x, model: m, apiKey: k}")
                .is_err()
        );
    }

    #[test]
    fn tool_names_are_valid_function_names() {
        assert_eq!(tool_name("search.web:v2"), "search_web_v2");
        assert_eq!(tool_name("echo"), "echo");
        let s = parse(
            "{model: {endpoint: 'http://h/v1', model: m}, tools: [{agent: echo}, \
             {mcp: {server: docs, tool: look.up}}, {publish: {topicType: team.notes}}]}",
        );
        let names: Vec<String> = s.tools.iter().map(ToolSettings::function_name).collect();
        assert_eq!(names, ["echo", "look_up", "publish_team_notes"]);
    }
}
