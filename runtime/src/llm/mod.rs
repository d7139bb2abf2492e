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
//! - Tools (`tools`): agent types, MCP tools and publishing; a tool's result (its JSON,
//!   or its text) is the `tool` message. A call to an unknown tool, with arguments
//!   that are not a JSON object, or that fails is answered to the model with
//!   `{"error": "..."}`, so it can recover.
//! - Budgets: more than `maxIterations` model calls, more than `maxToolCalls` tool
//!   calls or more than `maxTokensPerTurn` tokens in one turn fail the turn with an
//!   error saying so (the conversation is then not updated); `maxConcurrentCalls`
//!   bounds the model calls of the type in flight in the process.
//! - Figures: [`LlmMetrics`] on `/metrics`, spans per model and tool call.

pub mod chat;
pub mod metrics;
pub mod tools;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::agent::{Agent, AgentError, AgentFactory, HandlerResult};
use crate::context::MessageContext;
use crate::llm_config::LlmSettings;
use crate::message::Payload;
use chat::{ChatClient, ChatMessage, ModelReply, ToolCall, Usage};
pub use metrics::LlmMetrics;
use metrics::{Outcome, Stop};
pub use tools::{McpServer, PUBLISHED_TYPE, TOOL_CALL_TYPE, Tools};

/// Message type of the agent's replies.
pub const ANSWER_TYPE: &str = "switchboard.llm.Answer";

/// The factory of `llm` agents of type `agent_type` with `settings` and `tools`;
/// `api_key` was read from the variable `settings.model.apiKeyEnv` names; figures go
/// to `metrics`.
pub fn factory(
    http: reqwest::Client,
    agent_type: &str,
    settings: LlmSettings,
    api_key: Option<String>,
    tools: Tools,
    metrics: Arc<LlmMetrics>,
) -> AgentFactory {
    let client = ChatClient::new(http, &settings.model, api_key, settings.temperature);
    let calls = settings
        .max_concurrent_calls
        .map(|n| Arc::new(Semaphore::new(n as usize)));
    let shared = Arc::new(Shared {
        agent_type: agent_type.to_owned(),
        client,
        settings,
        tools,
        calls,
        metrics,
    });
    AgentFactory::new(move |_| LlmAgent {
        shared: Arc::clone(&shared),
        memory: Memory::default(),
    })
}

/// What every agent of one `llm` type shares.
struct Shared {
    agent_type: String,
    client: ChatClient,
    settings: LlmSettings,
    tools: Tools,
    /// `maxConcurrentCalls` slots, when set.
    calls: Option<Arc<Semaphore>>,
    metrics: Arc<LlmMetrics>,
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

impl Shared {
    /// The turn's error for a budget it ran out of.
    fn stop(&self, why: Stop, ctx: &MessageContext, detail: String) -> AgentError {
        self.metrics.stopped(&self.agent_type, why);
        AgentError::new(format!("llm agent {} {detail}", ctx.recipient))
    }
}

#[async_trait]
impl Agent for LlmAgent {
    async fn on_message(&mut self, message: Payload, ctx: &MessageContext) -> HandlerResult {
        let shared = &self.shared;
        let settings = &shared.settings;
        let mut messages = self.memory.messages.clone();
        messages.push(ChatMessage::text("user", user_text(&message)));
        let system = settings
            .system_prompt
            .as_ref()
            .map(|p| ChatMessage::text("system", p.clone()));
        let definitions = shared.tools.definitions().await;
        let mut usage = Usage::default();
        let mut tool_calls = 0u32;
        let max = settings.max_iterations;
        let mut last_tools = Vec::new();
        for call in 0..max {
            let request: Vec<ChatMessage> = system.iter().chain(messages.iter()).cloned().collect();
            let reply: ModelReply = ctx
                .step("model", model_call(shared, &request, &definitions, ctx))
                .await?;
            if let Some(u) = reply.usage {
                usage.prompt_tokens += u.prompt_tokens;
                usage.completion_tokens += u.completion_tokens;
            }
            let mut assistant = reply.message;
            assistant.role = "assistant".to_owned();
            let calls = assistant.tool_calls.clone();
            messages.push(assistant.clone());
            if calls.is_empty() {
                self.memory.messages = truncate(messages, settings.memory.max_messages);
                let answer = json!({
                    "content": assistant.content.unwrap_or_default(),
                    "modelCalls": call + 1,
                    "toolCalls": tool_calls,
                    "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens},
                });
                return Ok(Some(Payload::json(ANSWER_TYPE, &answer)));
            }
            let used = usage.prompt_tokens + usage.completion_tokens;
            if let Some(limit) = settings.max_tokens_per_turn
                && used > limit
            {
                return Err(shared.stop(
                    Stop::MaxTokens,
                    ctx,
                    format!(
                        "stopped after {used} tokens, over maxTokensPerTurn={limit}, \
                         with the model still asking for tools"
                    ),
                ));
            }
            let wanted = tool_calls.saturating_add(u32::try_from(calls.len()).unwrap_or(u32::MAX));
            if let Some(limit) = settings.max_tool_calls
                && wanted > limit
            {
                return Err(shared.stop(
                    Stop::MaxToolCalls,
                    ctx,
                    format!(
                        "stopped: the model asked for {wanted} tool calls in this turn, \
                         over maxToolCalls={limit}"
                    ),
                ));
            }
            tool_calls = wanted;
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
        Err(shared.stop(
            Stop::MaxIterations,
            ctx,
            format!(
                "stopped after maxIterations={max} model calls: the model still asked for tools ({})",
                last_tools.join(", ")
            ),
        ))
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

/// One model call, in a span named by the OpenTelemetry GenAI conventions; waits for
/// a `maxConcurrentCalls` slot first.
async fn model_call(
    shared: &Shared,
    request: &[ChatMessage],
    definitions: &[Value],
    ctx: &MessageContext,
) -> Result<ModelReply, AgentError> {
    let _slot = match &shared.calls {
        Some(s) => Some(
            Arc::clone(s)
                .acquire_owned()
                .await
                .map_err(AgentError::new)?,
        ),
        None => None,
    };
    let span = tracing::debug_span!(
        "chat",
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = shared.client.model(),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
    );
    let started = Instant::now();
    let result = shared
        .client
        .complete(request, definitions, &ctx.cancellation)
        .instrument(span.clone())
        .await;
    let model = shared.client.model();
    match &result {
        Ok(r) => {
            if let Some(u) = r.usage {
                span.record("gen_ai.usage.input_tokens", u.prompt_tokens);
                span.record("gen_ai.usage.output_tokens", u.completion_tokens);
            }
            shared.metrics.model_call(
                &shared.agent_type,
                model,
                Outcome::Ok,
                started.elapsed(),
                r.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            );
        }
        Err(e) => {
            span.record("error.type", tracing::field::display(e));
            shared.metrics.model_call(
                &shared.agent_type,
                model,
                Outcome::Error,
                started.elapsed(),
                None,
            );
        }
    }
    result.map_err(|e| AgentError::new(format!("llm agent {}: {e}", ctx.recipient)))
}

/// Runs one tool call; failures become `{"error": ...}` for the model.
async fn tool_call(shared: &Shared, call: &ToolCall, ctx: &MessageContext) -> String {
    let name = &call.function.name;
    let args = if call.function.arguments.trim().is_empty() {
        Ok(json!({}))
    } else {
        serde_json::from_str::<Value>(&call.function.arguments)
    };
    let result = match args {
        Ok(v) if v.is_object() => {
            let span = tracing::debug_span!(
                "execute_tool",
                gen_ai.operation.name = "execute_tool",
                gen_ai.tool.name = %name,
                gen_ai.tool.call.id = %call.id,
            );
            shared.tools.call(name, v, ctx).instrument(span).await
        }
        _ => Err(format!("the arguments of {name} must be a JSON object")),
    };
    let outcome = if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    // Unknown names are counted under one label, so a model cannot grow the label set.
    let label = if shared.tools.names().contains(&name.as_str()) {
        name.as_str()
    } else {
        "(unknown)"
    };
    shared.metrics.tool_call(&shared.agent_type, label, outcome);
    result.unwrap_or_else(|m| json!({ "error": m }).to_string())
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
