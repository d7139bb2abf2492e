//! The `llm` agent kind: a model-backed agent declared in configuration
//! (`llm_config`), talking to an OpenAI-compatible Chat Completions API (`chat`).
//!
//! A message to `assistant/alice` is one turn: its text becomes a `user` message
//! after Alice's conversation so far (the agent's state, so it survives restarts
//! and moves with the agent); the model is called with the system prompt, the
//! conversation and the tools; each tool call it asks for is an RPC to
//! `<tool agent>/alice` whose reply goes back to the model as a `tool` message; the
//! turn ends with the first answer without tool calls, which is the reply. Every
//! model call and every tool call is a durable step (`crate::durable`): when the
//! message is handled again after a crash, completed calls are not made again.
//!
//! - Input: a JSON string, a JSON object with a `content` (or `text`) string, or
//!   any other JSON (its text); non-JSON payloads as UTF-8 text.
//! - Reply: [`ANSWER_TYPE`] `{"content", "modelCalls", "usage": {"promptTokens",
//!   "completionTokens"}}`.
//! - Tools get [`TOOL_CALL_TYPE`] messages whose data is the model's arguments (a JSON
//!   object); a tool's reply (its JSON, or its text) is the `tool` message. A call to
//!   an unknown tool, with arguments that are not a JSON object, or that fails is
//!   answered to the model with `{"error": "..."}`, so it can recover.
//! - More than `maxIterations` model calls in one turn fail the turn with an error
//!   saying so; the conversation is then not updated.

pub mod chat;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::agent::{Agent, AgentError, AgentFactory, HandlerResult};
use crate::context::MessageContext;
use crate::ids::AgentId;
use crate::llm_config::{LlmSettings, tool_name};
use crate::message::Payload;
use chat::{ChatClient, ChatMessage, ModelReply, ToolCall, Usage};

/// Message type of tool calls sent to tool agents.
pub const TOOL_CALL_TYPE: &str = "switchboard.llm.ToolCall";
/// Message type of the agent's replies.
pub const ANSWER_TYPE: &str = "switchboard.llm.Answer";

/// The factory of `llm` agents with `settings`; `api_key` was read from the variable
/// `settings.model.apiKeyEnv` names.
pub fn factory(
    http: reqwest::Client,
    settings: LlmSettings,
    api_key: Option<String>,
) -> AgentFactory {
    let client = ChatClient::new(http, &settings.model, api_key, settings.temperature);
    let tools: Vec<(String, String)> = settings
        .tools
        .iter()
        .map(|t| (tool_name(&t.agent), t.agent.clone()))
        .collect();
    let definitions: Vec<Value> = settings
        .tools
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": tool_name(&t.agent),
                "description": t.description.clone().unwrap_or_else(|| format!("Ask the {} agent", t.agent)),
                "parameters": {"type": "object", "additionalProperties": true},
            }})
        })
        .collect();
    let shared = Arc::new(Shared {
        client,
        settings,
        tools,
        definitions,
    });
    AgentFactory::new(move |_| LlmAgent {
        shared: Arc::clone(&shared),
        memory: Memory::default(),
    })
}

/// What every agent of one `llm` type shares.
struct Shared {
    client: ChatClient,
    settings: LlmSettings,
    /// Tool function name -> agent type.
    tools: Vec<(String, String)>,
    /// `tools` of every request.
    definitions: Vec<Value>,
}

/// The agent's state: the conversation so far.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Memory {
    messages: Vec<ChatMessage>,
}

/// One `llm` agent instance (one key).
struct LlmAgent {
    shared: Arc<Shared>,
    memory: Memory,
}

#[async_trait]
impl Agent for LlmAgent {
    async fn on_message(&mut self, message: Payload, ctx: &MessageContext) -> HandlerResult {
        let shared = &self.shared;
        let mut messages = self.memory.messages.clone();
        messages.push(ChatMessage::text("user", user_text(&message)));
        let system = shared
            .settings
            .system_prompt
            .as_ref()
            .map(|p| ChatMessage::text("system", p.clone()));
        let mut usage = Usage::default();
        let max = shared.settings.max_iterations;
        let mut last_tools = Vec::new();
        for call in 0..max {
            let request: Vec<ChatMessage> = system.iter().chain(messages.iter()).cloned().collect();
            let reply: ModelReply = ctx.step("model", model_call(shared, &request, ctx)).await?;
            if let Some(u) = reply.usage {
                usage.prompt_tokens += u.prompt_tokens;
                usage.completion_tokens += u.completion_tokens;
            }
            let mut assistant = reply.message;
            assistant.role = "assistant".to_owned();
            let calls = assistant.tool_calls.clone();
            messages.push(assistant.clone());
            if calls.is_empty() {
                self.memory.messages = truncate(messages, shared.settings.memory.max_messages);
                let answer = json!({
                    "content": assistant.content.unwrap_or_default(),
                    "modelCalls": call + 1,
                    "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens},
                });
                return Ok(Some(Payload::json(ANSWER_TYPE, &answer)));
            }
            last_tools = calls.iter().map(|c| c.function.name.clone()).collect();
            for c in &calls {
                let result: String = ctx
                    .step("tool", async {
                        Ok::<_, AgentError>(tool_call(shared, c, ctx).await)
                    })
                    .await?;
                messages.push(ChatMessage::tool_result(&c.id, result));
            }
        }
        Err(AgentError::new(format!(
            "llm agent {} stopped after maxIterations={max} model calls: the model still asked for tools ({})",
            ctx.recipient,
            last_tools.join(", ")
        )))
    }

    async fn save_state(&mut self) -> Result<Option<Value>, AgentError> {
        serde_json::to_value(&self.memory)
            .map(Some)
            .map_err(AgentError::new)
    }

    async fn load_state(&mut self, state: Value) -> Result<(), AgentError> {
        self.memory = serde_json::from_value(state).map_err(AgentError::new)?;
        Ok(())
    }
}

/// One model call, in a span named by the OpenTelemetry GenAI conventions.
async fn model_call(
    shared: &Shared,
    request: &[ChatMessage],
    ctx: &MessageContext,
) -> Result<ModelReply, AgentError> {
    let span = tracing::debug_span!(
        "chat",
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = shared.client.model(),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
    );
    let result = shared
        .client
        .complete(request, &shared.definitions, &ctx.cancellation)
        .instrument(span.clone())
        .await;
    match &result {
        Ok(r) => {
            if let Some(u) = r.usage {
                span.record("gen_ai.usage.input_tokens", u.prompt_tokens);
                span.record("gen_ai.usage.output_tokens", u.completion_tokens);
            }
        }
        Err(e) => {
            span.record("error.type", tracing::field::display(e));
        }
    }
    result.map_err(|e| AgentError::new(format!("llm agent {}: {e}", ctx.recipient)))
}

/// Runs one tool call; failures become `{"error": ...}` for the model.
async fn tool_call(shared: &Shared, call: &ToolCall, ctx: &MessageContext) -> String {
    let error = |m: String| json!({ "error": m }).to_string();
    let name = &call.function.name;
    let Some((_, agent)) = shared.tools.iter().find(|(n, _)| n == name) else {
        let known: Vec<&str> = shared.tools.iter().map(|(n, _)| n.as_str()).collect();
        return error(format!(
            "unknown tool {name:?}; the tools are: {}",
            known.join(", ")
        ));
    };
    let args = if call.function.arguments.trim().is_empty() {
        Ok(json!({}))
    } else {
        serde_json::from_str::<Value>(&call.function.arguments)
    };
    let args = match args {
        Ok(v) if v.is_object() => v,
        _ => return error(format!("the arguments of {name} must be a JSON object")),
    };
    let recipient = match AgentId::new(agent.as_str(), ctx.recipient.key()) {
        Ok(id) => id,
        Err(e) => return error(e.to_string()),
    };
    let span = tracing::debug_span!(
        "execute_tool",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %name,
        gen_ai.tool.call.id = %call.id,
    );
    let reply = ctx
        .send_payload(Payload::json(TOOL_CALL_TYPE, &args), &recipient, None)
        .instrument(span)
        .await;
    match reply {
        Ok(None) => "{}".to_owned(),
        Ok(Some(p)) => match p.decode_json::<Value>() {
            Ok(v) => v.to_string(),
            Err(_) => String::from_utf8_lossy(&p.data).into_owned(),
        },
        Err(e) => error(format!("{name} failed: {e}")),
    }
}

/// The user text of an incoming message.
fn user_text(message: &Payload) -> String {
    match message.decode_json::<Value>() {
        Ok(Value::String(s)) => s,
        Ok(Value::Object(o)) => match o.get("content").or_else(|| o.get("text")) {
            Some(Value::String(s)) => s.clone(),
            _ => Value::Object(o).to_string(),
        },
        Ok(v) => v.to_string(),
        Err(_) => String::from_utf8_lossy(&message.data).into_owned(),
    }
}

/// The last `max` messages at most, starting at a user message (a turn is kept or
/// dropped whole, so no `tool` message loses the call it answers).
fn truncate(messages: Vec<ChatMessage>, max: usize) -> Vec<ChatMessage> {
    if messages.len() <= max {
        return messages;
    }
    let from = messages.len() - max;
    match messages[from..].iter().position(|m| m.role == "user") {
        Some(i) => messages[from + i..].to_vec(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
