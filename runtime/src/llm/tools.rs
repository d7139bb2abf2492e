//! The tools of an `llm` agent: what the model is offered (`tools` of each request,
//! with a JSON Schema of the arguments) and what a call does.
//!
//! - `agent`: an RPC to `<agent type>/<this agent's key>`. When the type is declared in
//!   the same config file with exactly one message type, the message has that type
//!   and the parameters are its schema (so the model is told what the agent takes);
//!   otherwise it is a [`TOOL_CALL_TYPE`] message and the parameters any object.
//! - `mcp`: `tools/call` of a tool of a server in `mcpServers`; its parameters are the
//!   `inputSchema` the server lists, read at the first turn (and again at later turns
//!   until the server has answered once).
//! - `publish`: the arguments published to `<topicType>/<this agent's key>` as a
//!   [`PUBLISHED_TYPE`] event.
//!
//! A failing call is answered to the model as `{"error": "..."}`, so it can recover;
//! a call is never retried here (the durable step around it is journaled only when it
//! returns, and an RPC or tool call that failed is reported, not repeated).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tracing::Instrument as _;

use crate::config_file::{AgentEntry, McpServerEntry};
use crate::context::MessageContext;
use crate::ids::{AgentId, TopicId};
use crate::llm_config::{LlmSettings, ToolTarget};
use crate::mcp_client::McpClient;
use crate::message::Payload;

/// Message type of tool calls sent to tool agents that declare no single type.
pub const TOOL_CALL_TYPE: &str = "switchboard.llm.ToolCall";
/// Message type of events published by the `publish` tool.
pub const PUBLISHED_TYPE: &str = "switchboard.llm.Published";

/// Parameters of a tool that takes any JSON object.
fn any_object(what: &str) -> Value {
    json!({"type": "object", "additionalProperties": true, "description": what})
}

/// What one tool does.
#[derive(Debug)]
enum Kind {
    Agent {
        agent_type: String,
        message_type: String,
        parameters: Value,
    },
    Mcp {
        client: McpClient,
        tool: String,
        /// The server's `inputSchema` and description, once it answered `tools/list`.
        listed: OnceCell<(Value, Option<String>)>,
    },
    Publish {
        topic_type: String,
    },
}

/// One tool offered to the model.
#[derive(Debug)]
struct Tool {
    /// Function name (unique per agent, checked by the config's validation).
    name: String,
    /// Configured description.
    description: Option<String>,
    kind: Kind,
}

/// The tools of one `llm` agent type.
#[derive(Debug, Default)]
pub struct Tools {
    tools: Vec<Tool>,
}

/// An MCP server of the file, with its bearer token.
#[derive(Debug, Clone)]
pub struct McpServer {
    /// Its entry.
    pub entry: McpServerEntry,
    /// The token read from `entry.token_env`.
    pub token: Option<String>,
}

impl Tools {
    /// The tools of `settings`; `agents` is the config file's agent list (for declared
    /// message types), `servers` its MCP servers. Validation has checked that every
    /// tool has one kind and every MCP tool names a server; a tool that still does not
    /// is left out.
    pub fn new(
        http: &reqwest::Client,
        settings: &LlmSettings,
        agents: &[AgentEntry],
        servers: &[McpServer],
    ) -> Self {
        let tools = settings
            .tools
            .iter()
            .filter_map(|t| {
                let kind = match t.target()? {
                    ToolTarget::Agent(agent_type) => {
                        let declared = agents
                            .iter()
                            .find(|a| a.agent_type == agent_type)
                            .map(|a| a.message_types.as_slice())
                            .unwrap_or_default();
                        let (message_type, parameters) = match declared {
                            [only] => (
                                only.name.clone(),
                                only.schema.clone().unwrap_or_else(|| {
                                    any_object(&format!("the {} message", only.name))
                                }),
                            ),
                            _ => (
                                TOOL_CALL_TYPE.to_owned(),
                                any_object("the request, as a JSON object"),
                            ),
                        };
                        Kind::Agent {
                            agent_type: agent_type.to_owned(),
                            message_type,
                            parameters,
                        }
                    }
                    ToolTarget::Mcp(m) => {
                        let server = servers.iter().find(|s| s.entry.name == m.server)?;
                        Kind::Mcp {
                            client: McpClient::new(
                                http.clone(),
                                &server.entry.url,
                                server.token.clone(),
                                Duration::from_millis(server.entry.timeout_ms),
                            ),
                            tool: m.tool.clone(),
                            listed: OnceCell::new(),
                        }
                    }
                    ToolTarget::Publish(topic_type) => Kind::Publish {
                        topic_type: topic_type.to_owned(),
                    },
                };
                Some(Tool {
                    name: t.function_name(),
                    description: t.description.clone(),
                    kind,
                })
            })
            .collect();
        Self { tools }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The function names.
    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name.as_str()).collect()
    }

    /// `tools` of a request. MCP tools whose server has not answered `tools/list` yet
    /// are asked now; one that cannot be listed is offered with any-object parameters
    /// (and asked again next turn).
    pub async fn definitions(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.tools.len());
        for t in &self.tools {
            let (parameters, listed_description) = match &t.kind {
                Kind::Agent { parameters, .. } => (parameters.clone(), None),
                Kind::Publish { topic_type } => (
                    any_object(&format!("the event published to {topic_type}")),
                    None,
                ),
                Kind::Mcp {
                    client,
                    tool,
                    listed,
                } => match listed
                    .get_or_try_init(|| async {
                        let tools = client.list_tools().await?;
                        let found = tools.into_iter().find(|x| &x.name == tool);
                        match found {
                            Some(x) => Ok((x.input_schema, x.description)),
                            None => Err(crate::mcp_client::McpError::Rpc {
                                url: client.url().to_owned(),
                                code: -32602,
                                message: format!("the server lists no tool {tool:?}"),
                            }),
                        }
                    })
                    .await
                {
                    Ok((schema, description)) => (schema.clone(), description.clone()),
                    Err(e) => {
                        tracing::warn!(tool = %tool, error = %e,
                            "could not list the MCP tool; offering it without its schema");
                        (any_object("the tool's arguments"), None)
                    }
                },
            };
            let description = t
                .description
                .clone()
                .or(listed_description)
                .unwrap_or_else(|| match &t.kind {
                    Kind::Agent { agent_type, .. } => format!("Ask the {agent_type} agent"),
                    Kind::Mcp { tool, .. } => format!("The MCP tool {tool}"),
                    Kind::Publish { topic_type } => {
                        format!("Publish an event to the {topic_type} topic")
                    }
                });
            out.push(json!({"type": "function", "function": {
                "name": t.name,
                "description": description,
                "parameters": parameters,
            }}));
        }
        out
    }

    /// Runs call `name(arguments)` for the agent `ctx.recipient`; `Err` is the message
    /// for the model (`{"error": ...}` is made of it by the caller).
    pub async fn call(
        &self,
        name: &str,
        arguments: Value,
        ctx: &MessageContext,
    ) -> Result<String, String> {
        let Some(t) = self.tools.iter().find(|t| t.name == name) else {
            return Err(format!(
                "unknown tool {name:?}; the tools are: {}",
                self.names().join(", ")
            ));
        };
        let key = ctx.recipient.key();
        match &t.kind {
            Kind::Agent {
                agent_type,
                message_type,
                ..
            } => {
                let recipient =
                    AgentId::new(agent_type.as_str(), key).map_err(|e| e.to_string())?;
                let reply = ctx
                    .send_payload(Payload::json(message_type, &arguments), &recipient, None)
                    .instrument(tracing::debug_span!("rpc", recipient = %recipient))
                    .await
                    .map_err(|e| format!("{name} failed: {e}"))?;
                Ok(match reply {
                    None => "{}".to_owned(),
                    Some(p) => match p.decode_json::<Value>() {
                        Ok(v) => v.to_string(),
                        Err(_) => String::from_utf8_lossy(&p.data).into_owned(),
                    },
                })
            }
            Kind::Mcp { client, tool, .. } => {
                let result = client
                    .call_tool(tool, arguments)
                    .await
                    .map_err(|e| format!("{name} failed: {e}"))?;
                if result.is_error {
                    return Err(format!("{name} failed: {}", result.text()));
                }
                Ok(match result.structured {
                    Some(s) => s.to_string(),
                    None => result.text(),
                })
            }
            Kind::Publish { topic_type } => {
                let topic = TopicId::new(topic_type.as_str(), key).map_err(|e| e.to_string())?;
                ctx.publish_payload(Payload::json(PUBLISHED_TYPE, &arguments), &topic)
                    .await
                    .map_err(|e| format!("{name} failed: {e}"))?;
                Ok(json!({"published": {"topicType": topic_type, "source": key}}).to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::MessageTypeEntry;

    fn settings(yaml: &str) -> LlmSettings {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[tokio::test]
    async fn agent_tools_take_the_declared_message_type_and_its_schema() {
        let schema =
            json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]});
        let agents = vec![
            AgentEntry {
                agent_type: "search".into(),
                message_types: vec![MessageTypeEntry {
                    name: "demo.Search".into(),
                    schema: Some(schema.clone()),
                }],
                ..AgentEntry::default()
            },
            AgentEntry {
                agent_type: "echo".into(),
                ..AgentEntry::default()
            },
        ];
        let s = settings(
            "{model: {endpoint: 'http://h/v1', model: m}, tools: [{agent: search}, {agent: echo, description: Repeats}, {publish: {topicType: notes}}]}",
        );
        let tools = Tools::new(&reqwest::Client::new(), &s, &agents, &[]);
        let defs = tools.definitions().await;
        assert_eq!(defs[0]["function"]["parameters"], schema);
        assert_eq!(defs[0]["function"]["description"], "Ask the search agent");
        assert_eq!(defs[1]["function"]["parameters"]["type"], "object");
        assert_eq!(defs[1]["function"]["description"], "Repeats");
        assert_eq!(defs[2]["function"]["name"], "publish_notes");
        match &tools.tools[0].kind {
            Kind::Agent { message_type, .. } => assert_eq!(message_type, "demo.Search"),
            other => panic!("{other:?}"),
        }
        match &tools.tools[1].kind {
            Kind::Agent { message_type, .. } => assert_eq!(message_type, TOOL_CALL_TYPE),
            other => panic!("{other:?}"),
        }
    }
}
