//! `a2a` agents: a local agent type whose every message is forwarded to a remote A2A
//! agent (JSON-RPC binding, v1.0), whose result is the reply (docs/a2a-mcp.md, "Calling
//! remote A2A agents").
//!
//! The message goes as a blocking `SendMessage` with `contextId` = this agent's key, so one
//! local agent instance is one remote conversation; the payload becomes one part (a JSON
//! `{"text": s}` a text part, other JSON a data part, other UTF-8 a text part with its
//! media type) and its type travels in `metadata.messageType`. A remote task that answers
//! `working` is polled with `GetTask` until it ends or the timeout passes. A completed
//! task's first artifact is the reply (its `metadata.messageType`, if any, is the reply's
//! type; a Switchboard server puts it there); `failed`, `rejected`, `canceled` and the
//! input-asking states are handler errors carrying the remote's reason.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::agent::{Agent, AgentError, AgentFactory, HandlerResult};
use crate::config_file::A2aAgentSettings;
use crate::context::MessageContext;
use crate::gateway::a2a::model::{Content, Dialect, Part, TaskState, parse_part};
use crate::gateway::a2a::render::render_part;
use crate::gateway::catalog::{DATA_TYPE, TEXT_TYPE};
use crate::message::{Payload, is_json};

/// How often a remote task still working is polled.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// The factory of agents forwarding to `settings.url`; `token` is the bearer token.
pub fn factory(
    client: reqwest::Client,
    settings: A2aAgentSettings,
    token: Option<String>,
) -> AgentFactory {
    AgentFactory::new(move |_| A2aAgent {
        client: client.clone(),
        settings: settings.clone(),
        token: token.clone(),
    })
}

/// An agent whose handler is a remote A2A agent.
pub struct A2aAgent {
    client: reqwest::Client,
    settings: A2aAgentSettings,
    token: Option<String>,
}

impl std::fmt::Debug for A2aAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("A2aAgent")
            .field("url", &self.settings.url)
            .finish()
    }
}

/// The A2A message part carrying `payload`.
pub fn part_of(payload: &Payload) -> Result<Part, AgentError> {
    if is_json(&payload.content_type) {
        let value: Value = serde_json::from_slice(&payload.data)
            .map_err(|e| AgentError::new(format!("the message is not valid JSON: {e}")))?;
        return Ok(match value {
            Value::Object(ref o) if o.len() == 1 && o.get("text").is_some_and(Value::is_string) => {
                Part::text(o["text"].as_str().unwrap_or_default())
            }
            other => Part::data(other),
        });
    }
    let text = std::str::from_utf8(&payload.data)
        .map_err(|_| AgentError::new("binary messages cannot be sent to an A2A agent"))?;
    let mut part = Part::text(text);
    part.media_type = Some(payload.content_type.clone());
    Ok(part)
}

/// What a remote answer means.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The reply (`None`: the task completed with no artifact).
    Reply(Option<Payload>),
    /// Not finished yet: poll this task id.
    Pending(String),
}

fn text_of_status(task: &Value) -> String {
    task["status"]["message"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reply in `parts`, typed by `message_type` when the remote named one.
fn payload_of_parts(
    parts: &[Value],
    message_type: Option<&str>,
) -> Result<Option<Payload>, AgentError> {
    let parts: Vec<Part> = parts
        .iter()
        .map(|p| parse_part(p).map_err(|e| AgentError::new(format!("the remote's answer: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(Some(match parts.as_slice() {
        [] => return Ok(None),
        [one] => match &one.content {
            Content::Text(t) => {
                Payload::json(message_type.unwrap_or(TEXT_TYPE), &json!({ "text": t }))
            }
            Content::Data(d) => Payload::json(message_type.unwrap_or(DATA_TYPE), d),
            _ => Payload::json(
                DATA_TYPE,
                &json!({ "parts": [render_part(one, Dialect::V1)] }),
            ),
        },
        many => Payload::json(
            DATA_TYPE,
            &json!({ "parts": many.iter().map(|p| render_part(p, Dialect::V1)).collect::<Vec<_>>() }),
        ),
    }))
}

/// Reads a JSON-RPC answer to `SendMessage` or `GetTask` (v1.0 or v0.3 shapes).
pub fn outcome(answer: &Value) -> Result<Outcome, AgentError> {
    if let Some(e) = answer.get("error") {
        return Err(AgentError::new(format!(
            "the remote A2A agent answered error {}: {}",
            e["code"],
            e["message"].as_str().unwrap_or_default()
        )));
    }
    let result = answer
        .get("result")
        .ok_or_else(|| AgentError::new("the remote's answer has neither result nor error"))?;
    // v1.0 wraps SendMessage results ({"task"} / {"message"}); GetTask and v0.3 do not.
    let (task, message) = match (
        result.get("task"),
        result.get("message"),
        result["kind"].as_str(),
    ) {
        (Some(t), _, _) => (Some(t), None),
        (None, Some(m), _) => (None, Some(m)),
        (None, None, Some("message")) => (None, Some(result)),
        _ => (Some(result), None),
    };
    if let Some(m) = message {
        let parts = m["parts"].as_array().cloned().unwrap_or_default();
        let message_type = m["metadata"]["messageType"].as_str();
        return payload_of_parts(&parts, message_type).map(Outcome::Reply);
    }
    let task = task.unwrap_or(result);
    let state_text = task["status"]["state"].as_str().unwrap_or_default();
    let state = TaskState::parse(state_text).ok_or_else(|| {
        AgentError::new(format!(
            "the remote task has an unknown state {state_text:?}"
        ))
    })?;
    match state {
        TaskState::Completed => {
            let Some(artifact) = task["artifacts"].as_array().and_then(|a| a.first()) else {
                return Ok(Outcome::Reply(None));
            };
            let parts = artifact["parts"].as_array().cloned().unwrap_or_default();
            payload_of_parts(&parts, artifact["metadata"]["messageType"].as_str())
                .map(Outcome::Reply)
        }
        TaskState::Submitted | TaskState::Working => {
            let id = task["id"]
                .as_str()
                .ok_or_else(|| AgentError::new("the remote task has no id"))?;
            Ok(Outcome::Pending(id.to_owned()))
        }
        other => Err(AgentError::new(format!(
            "the remote A2A task ended {}: {}",
            other.v03_name(),
            text_of_status(task)
        ))),
    }
}

impl A2aAgent {
    async fn call(
        &self,
        method: &str,
        params: Value,
        deadline: Instant,
    ) -> Result<Value, AgentError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let body = json!({ "jsonrpc": "2.0", "id": uuid::Uuid::new_v4().to_string(), "method": method, "params": params });
        let mut request = self
            .client
            .post(&self.settings.url)
            .timeout(left)
            .header("A2A-Version", "1.0")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let url = &self.settings.url;
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                AgentError::new(format!(
                    "A2A agent {url} did not answer within {:?}",
                    self.timeout()
                ))
            } else {
                AgentError::new(format!("A2A agent {url} unreachable: {e}"))
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            AgentError::new(format!("A2A agent {url}: reading the answer failed: {e}"))
        })?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            AgentError::new(format!(
                "A2A agent {url} answered HTTP {status} without JSON-RPC: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
            ))
        })?;
        // A JSON-RPC error with an HTTP error status (401, 413, ...): say both.
        if !status.is_success() {
            return Err(AgentError::new(format!(
                "A2A agent {url} answered HTTP {status}: {}",
                answer["error"]["message"]
                    .as_str()
                    .unwrap_or("no reason given")
            )));
        }
        Ok(answer)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms)
    }
}

#[async_trait]
impl Agent for A2aAgent {
    async fn on_message(&mut self, message: Payload, ctx: &MessageContext) -> HandlerResult {
        let deadline = Instant::now() + self.timeout();
        let part = render_part(&part_of(&message)?, Dialect::V1);
        let params = json!({
            "message": {
                "messageId": ctx.message_id,
                "contextId": ctx.recipient.key(),
                "role": "ROLE_USER",
                "parts": [part],
                "metadata": { "messageType": message.type_name },
            },
        });
        let mut answer = self.call("SendMessage", params, deadline).await?;
        loop {
            match outcome(&answer)? {
                Outcome::Reply(reply) => return Ok(reply),
                Outcome::Pending(id) => {
                    if Instant::now() + POLL_EVERY >= deadline {
                        return Err(AgentError::new(format!(
                            "the remote A2A task {id} did not end within {:?}",
                            self.timeout()
                        )));
                    }
                    tokio::time::sleep(POLL_EVERY).await;
                    answer = self.call("GetTask", json!({ "id": id }), deadline).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_parts() {
        assert_eq!(
            part_of(&Payload::json("t", &json!({"text": "hi"}))).unwrap(),
            Part::text("hi")
        );
        assert_eq!(
            part_of(&Payload::json("t", &json!({"n": 1})))
                .unwrap()
                .content,
            Content::Data(json!({"n": 1}))
        );
    }

    #[test]
    fn remote_answers_become_replies_or_errors() {
        let done = json!({"jsonrpc": "2.0", "id": 1, "result": {"task": {"id": "t", "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"artifactId": "a", "parts": [{"data": {"count": 3}}], "metadata": {"messageType": "x.Count"}}]}}});
        let Outcome::Reply(Some(p)) = outcome(&done).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.type_name.as_str(), &p.data[..]),
            ("x.Count", &br#"{"count":3}"#[..])
        );
        let text = json!({"result": {"kind": "task", "id": "t", "status": {"state": "completed"},
            "artifacts": [{"artifactId": "a", "parts": [{"kind": "text", "text": "hello"}]}]}});
        let Outcome::Reply(Some(p)) = outcome(&text).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.type_name.as_str(), &p.data[..]),
            (TEXT_TYPE, &br#"{"text":"hello"}"#[..])
        );
        let message = json!({"result": {"message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "direct"}]}}});
        assert!(matches!(
            outcome(&message).unwrap(),
            Outcome::Reply(Some(_))
        ));
        let working =
            json!({"result": {"task": {"id": "t9", "status": {"state": "TASK_STATE_WORKING"}}}});
        assert_eq!(outcome(&working).unwrap(), Outcome::Pending("t9".into()));
        let failed = json!({"result": {"id": "t", "status": {"state": "TASK_STATE_FAILED",
            "message": {"messageId": "s", "role": "ROLE_AGENT", "parts": [{"text": "boom"}]}}}});
        assert!(
            outcome(&failed)
                .unwrap_err()
                .message()
                .contains("failed: boom")
        );
        let error = json!({"error": {"code": -32001, "message": "task not found"}});
        assert!(outcome(&error).unwrap_err().message().contains("-32001"));
        let empty =
            json!({"result": {"task": {"id": "t", "status": {"state": "TASK_STATE_COMPLETED"}}}});
        assert_eq!(outcome(&empty).unwrap(), Outcome::Reply(None));
    }
}
