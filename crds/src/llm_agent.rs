//! `llm:` of an `AgentRuntime` agent: a model-backed agent declared in the resource
//! (OpenAI-compatible Chat Completions, other agent types as tools, conversation
//! memory per agent key). The operator turns it into the runtime config file's
//! `llm:` entry, with the API key taken from a Secret into the pod's environment.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A model-backed agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LlmAgentSpec {
    /// Which model, where, and the Secret with its API key.
    pub model: LlmModelSpec,
    /// The system message of every model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// What the model may call: agent types (by RPC), tools of the AgentRuntime's
    /// `mcpServers`, and publishing events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tools: Vec<LlmToolSpec>,
    /// Model calls per message at most (1-100); a turn still asking for tools after
    /// that fails with an error saying so. Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_iterations: Option<i32>,
    /// Tool calls per message at most (1-1000); a turn whose model asks for more fails
    /// with an error saying so, before the extra calls. Unset: bounded by
    /// maxIterations only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_tool_calls: Option<i32>,
    /// Tokens per message at most (prompt + completion as the model server reports
    /// them); a turn over it fails with an error saying so, without a further model
    /// call. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens_per_turn: Option<i64>,
    /// Model calls of this agent type in flight at once per pod (1-10000); further
    /// calls wait. Unset: bounded by the runtime's concurrency only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent_calls: Option<i32>,
    /// Sampling temperature (0-2); the model's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// Conversation memory per agent key, kept in the agent's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<LlmMemorySpec>,
}

/// The model of an `llm` agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LlmModelSpec {
    /// Base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1`;
    /// requests go to `<endpoint>/chat/completions`.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https?://[^/].*$')")
        .message("endpoint must be an absolute http(s) URL"))]
    pub endpoint: String,
    /// Model name sent in every request.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Secret (same namespace) with the API key, sent as `Authorization: Bearer`.
    /// It reaches the pod as an environment variable, never the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<ApiKeySecretRef>,
    /// Timeout of one model request in seconds (1-600). Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<i32>,
    /// Retries of a request that failed with 429, 5xx or a connection error (0-10),
    /// with exponential backoff or the server's `Retry-After`. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<i32>,
}

/// The Secret key holding an API key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySecretRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the Secret. Default `apiKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A tool of an `llm` agent: exactly one of `agent`, `mcp` and `publish`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("[has(self.agent), has(self.mcp), has(self.publish)].filter(x, x).size() == 1")
    .message("a tool is exactly one of agent, mcp and publish"))]
#[serde(rename_all = "camelCase")]
pub struct LlmToolSpec {
    /// An agent type, called by RPC at `<agent>/<this agent's key>` with the model's
    /// arguments (a JSON object). When the type is in this AgentRuntime with exactly
    /// one `messageTypes` entry, the message has that type and the tool's parameters
    /// are its schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub agent: Option<String>,
    /// A tool of one of the AgentRuntime's `mcpServers` (its parameters: the server's
    /// `inputSchema` for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<LlmMcpToolSpec>,
    /// Publishing an event: the model's arguments go to `<topicType>/<this agent's
    /// key>` as a `switchboard.llm.Published` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<LlmPublishToolSpec>,
    /// What the tool does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An MCP tool of an `llm` agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmMcpToolSpec {
    /// `name` of an entry of the AgentRuntime's `mcpServers`.
    #[schemars(length(min = 1, max = 63))]
    pub server: String,
    /// The tool's name on that server.
    #[schemars(length(min = 1, max = 128))]
    pub tool: String,
}

/// The `publish` tool of an `llm` agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmPublishToolSpec {
    /// The topic type published to; the topic source is the agent's key.
    #[schemars(length(min = 1, max = 253))]
    pub topic_type: String,
}

/// Conversation memory of an `llm` agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmMemorySpec {
    /// Messages kept per agent key (0-1000; older turns are dropped whole). Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_messages: Option<i32>,
}
