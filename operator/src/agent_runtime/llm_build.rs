//! The `llm` agents of an `AgentRuntime` in what the operator builds (pure): their
//! config file entries, and the pod environment variables that carry their API keys
//! from Secrets. The key is never written into the ConfigMap: the entry names the
//! variable (`apiKeyEnv`), the Deployment fills it with a `secretKeyRef`.

use serde_json::{Value, json};
use switchboard_crds::agent_runtime::AgentSpec;
use switchboard_crds::agent_runtime::McpServerSpec;
use switchboard_crds::llm_agent::LlmAgentSpec;
use switchboard_runtime::config_file::McpServerEntry;
use switchboard_runtime::llm_config::{
    DEFAULT_MAX_ITERATIONS, DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS, LlmSettings, McpToolRef,
    MemorySettings, ModelSettings, PublishTool, ToolSettings,
};

/// Default key of the API key in its Secret.
pub const DEFAULT_API_KEY_KEY: &str = "apiKey";

/// The environment variable carrying the API key of agent type `agent_type`:
/// `SWITCHBOARD_LLM_API_KEY_<TYPE>`, upper case, other characters as `_`.
pub fn api_key_env(agent_type: &str) -> String {
    let suffix: String = agent_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SWITCHBOARD_LLM_API_KEY_{suffix}")
}

/// The config file's `llm:` for an agent of type `agent_type`.
pub fn llm_settings(agent_type: &str, spec: &LlmAgentSpec) -> LlmSettings {
    let m = &spec.model;
    LlmSettings {
        model: ModelSettings {
            endpoint: m.endpoint.clone(),
            model: m.model.clone(),
            api_key_env: m
                .api_key_secret_ref
                .as_ref()
                .map(|_| api_key_env(agent_type)),
            timeout_ms: m
                .timeout_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(DEFAULT_TIMEOUT_MS, |s| s * 1000),
            retries: m
                .retries
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(DEFAULT_RETRIES),
        },
        system_prompt: spec.system_prompt.clone(),
        tools: spec
            .tools
            .iter()
            .map(|t| ToolSettings {
                agent: t.agent.clone(),
                mcp: t.mcp.as_ref().map(|m| McpToolRef {
                    server: m.server.clone(),
                    tool: m.tool.clone(),
                }),
                publish: t.publish.as_ref().map(|p| PublishTool {
                    topic_type: p.topic_type.clone(),
                }),
                description: t.description.clone(),
            })
            .collect(),
        max_iterations: spec
            .max_iterations
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_ITERATIONS),
        max_tool_calls: spec.max_tool_calls.and_then(|n| u32::try_from(n).ok()),
        max_tokens_per_turn: spec.max_tokens_per_turn.and_then(|n| u64::try_from(n).ok()),
        max_concurrent_calls: spec
            .max_concurrent_calls
            .and_then(|n| u32::try_from(n).ok()),
        temperature: spec.temperature,
        memory: spec
            .memory
            .as_ref()
            .and_then(|m| m.max_messages)
            .and_then(|n| usize::try_from(n).ok())
            .map_or_else(MemorySettings::default, |max_messages| MemorySettings {
                max_messages,
            }),
    }
}

/// The environment variable carrying the bearer token of `mcpServers[i]`.
pub fn mcp_server_token_env(i: usize) -> String {
    format!("SWITCHBOARD_MCP_SERVER_TOKEN_{i}")
}

/// The config file's `mcpServers`.
pub fn mcp_servers(servers: &[McpServerSpec]) -> Vec<McpServerEntry> {
    servers
        .iter()
        .enumerate()
        .map(|(i, m)| McpServerEntry {
            name: m.name.clone(),
            url: m.url.clone(),
            token_env: m.secret_ref.as_ref().map(|_| mcp_server_token_env(i)),
            timeout_ms: u64::try_from(m.timeout_seconds.unwrap_or(30)).unwrap_or(30) * 1000,
        })
        .collect()
}

/// The pod env entries of the MCP servers' tokens, from their Secrets.
pub fn mcp_server_token_env_vars(servers: &[McpServerSpec]) -> Vec<Value> {
    servers
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let r = m.secret_ref.as_ref()?;
            let key = r.key.as_deref().unwrap_or("token");
            Some(json!({ "name": mcp_server_token_env(i), "valueFrom": { "secretKeyRef": { "name": r.name, "key": key } } }))
        })
        .collect()
}

/// The pod env entries of every `llm` agent's API key; `Err((index, other))` when
/// two agent types map to the same variable name.
pub fn api_key_env_vars(agents: &[AgentSpec]) -> Result<Vec<Value>, (usize, String)> {
    let mut vars: Vec<(String, &str)> = Vec::new();
    let mut env = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let Some(r) = a
            .llm
            .as_ref()
            .and_then(|l| l.model.api_key_secret_ref.as_ref())
        else {
            continue;
        };
        let var = api_key_env(&a.agent_type);
        if let Some((_, other)) = vars.iter().find(|(v, _)| *v == var) {
            return Err((i, (*other).to_owned()));
        }
        vars.push((var.clone(), &a.agent_type));
        let key = r.key.as_deref().unwrap_or(DEFAULT_API_KEY_KEY);
        env.push(
            json!({ "name": var, "valueFrom": { "secretKeyRef": { "name": r.name, "key": key } } }),
        );
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::super::build::tests::env_secret;
    use super::super::build::{BuildSettings, CONFIG_KEY, build};
    use super::*;
    use switchboard_crds::AgentRuntime;
    use switchboard_runtime::config_file::RuntimeConfigFile;

    fn runtime(agents: Value) -> AgentRuntime {
        serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1",
            "kind": "AgentRuntime",
            "metadata": { "name": "rt1", "namespace": "team-a", "uid": "u-1", "generation": 1 },
            "spec": { "kafka": { "bootstrapServers": "kafka:9092" }, "agents": agents },
        }))
        .unwrap()
    }

    fn settings() -> BuildSettings {
        BuildSettings {
            default_image: "img:1".into(),
        }
    }

    #[test]
    fn llm_agents_reach_the_config_map_and_their_api_key_only_the_env() {
        let ar = runtime(json!([
            { "type": "echo", "builtin": "echo" },
            { "type": "assistant.v1", "llm": {
                "model": { "endpoint": "https://models.example/v1", "model": "m",
                           "apiKeySecretRef": { "name": "openai" }, "timeoutSeconds": 5 },
                "systemPrompt": "Be brief.", "tools": [{ "agent": "echo" }],
                "maxIterations": 4, "temperature": 0.3, "memory": { "maxMessages": 6 } } },
        ]));
        let d = build(&ar, &settings()).unwrap();
        let text = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        let cfg = RuntimeConfigFile::from_yaml(text).unwrap();
        cfg.validate().unwrap();
        let llm = cfg.agents[1].llm.as_ref().unwrap();
        assert_eq!(
            llm.model.api_key_env.as_deref(),
            Some("SWITCHBOARD_LLM_API_KEY_ASSISTANT_V1")
        );
        assert_eq!(
            (llm.model.timeout_ms, llm.model.retries),
            (5000, DEFAULT_RETRIES)
        );
        assert_eq!((llm.max_iterations, llm.memory.max_messages), (4, 6));
        assert_eq!(llm.temperature, Some(0.3));
        assert_eq!(llm.tools[0].agent.as_deref(), Some("echo"));
        assert!(
            !text.contains("openai"),
            "the Secret is not named in the ConfigMap: {text}"
        );
        assert_eq!(
            env_secret(&d, "SWITCHBOARD_LLM_API_KEY_ASSISTANT_V1"),
            ("openai".to_owned(), DEFAULT_API_KEY_KEY.to_owned())
        );
    }

    #[test]
    fn mcp_servers_and_tool_kinds_reach_the_config_map_and_tokens_only_the_env() {
        let mut ar = runtime(json!([
            { "type": "assistant", "llm": {
                "model": { "endpoint": "https://models.example/v1", "model": "m" },
                "tools": [{ "mcp": { "server": "docs", "tool": "lookup" } },
                          { "publish": { "topicType": "notes" } }],
                "maxToolCalls": 5, "maxTokensPerTurn": 9000, "maxConcurrentCalls": 2 } },
        ]));
        ar.spec.mcp_servers = serde_json::from_value(json!([
            { "name": "docs", "url": "http://docs:8000/mcp", "secretRef": { "name": "docs-token" },
              "timeoutSeconds": 7 },
        ]))
        .unwrap();
        let d = build(&ar, &settings()).unwrap();
        let text = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        let cfg = RuntimeConfigFile::from_yaml(text).unwrap();
        cfg.validate().unwrap();
        let llm = cfg.agents[0].llm.as_ref().unwrap();
        assert_eq!(llm.tools[0].mcp.as_ref().unwrap().tool, "lookup");
        assert_eq!(llm.tools[1].publish.as_ref().unwrap().topic_type, "notes");
        assert_eq!(
            (
                llm.max_tool_calls,
                llm.max_tokens_per_turn,
                llm.max_concurrent_calls
            ),
            (Some(5), Some(9000), Some(2))
        );
        let server = &cfg.mcp_servers[0];
        assert_eq!((server.name.as_str(), server.timeout_ms), ("docs", 7000));
        assert_eq!(
            server.token_env.as_deref(),
            Some("SWITCHBOARD_MCP_SERVER_TOKEN_0")
        );
        assert!(!text.contains("docs-token"), "{text}");
        assert_eq!(
            env_secret(&d, "SWITCHBOARD_MCP_SERVER_TOKEN_0"),
            ("docs-token".to_owned(), "token".to_owned())
        );
    }

    #[test]
    fn colliding_key_variables_and_bad_llm_settings_are_spec_errors() {
        let model =
            json!({ "endpoint": "http://m/v1", "model": "m", "apiKeySecretRef": { "name": "s" } });
        let ar = runtime(json!([
            { "type": "a.b", "llm": { "model": model } },
            { "type": "a_b", "llm": { "model": model } },
        ]));
        let e = build(&ar, &settings()).unwrap_err();
        assert_eq!(e.field, "agents[1].type", "{e:?}");
        let ar = runtime(
            json!([{ "type": "a", "llm": { "model": { "endpoint": "m/v1", "model": "m" } } }]),
        );
        let e = build(&ar, &settings()).unwrap_err();
        assert!(e.field.contains("llm.model.endpoint"), "{e:?}");
    }
}
