//! The methods of A2A's JSON-RPC binding: validating each call and answering it from
//! the task log; a task itself is run by [`super::runner`].
//!
//! `CancelTask` writes `canceled`, from any replica; the replica waiting for the reply
//! reads it from the log and stops waiting, and the replica running the turn cancels
//! the handler's context (`TaskLog`'s `on_cancel`); a late reply is dropped, since the
//! first terminal record wins.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use serde_json::{Map, Value, json};

use super::UNSUPPORTED_OPERATION;
use super::mapping::{Refusal, payload_of};
use super::model::{self, A2aMessage, Dialect, Task, TaskState};
use super::render::{self, View, render_task};
use super::runner::{Started, effective, now_ms, start_task, stream};
use super::task_log::{TaskLog, TaskRecord};
use super::{CONTENT_TYPE_NOT_SUPPORTED, PUSH_NOT_SUPPORTED, TASK_NOT_CANCELABLE, TASK_NOT_FOUND};
use crate::error::RuntimeError;
use crate::gateway::Gateway;
use crate::gateway::catalog::AgentInfo;
use crate::gateway::jsonrpc::{RpcError, result_response};
use crate::ids::AgentId;

/// Largest `ListTasks` page.
const MAX_PAGE: usize = 100;
/// Default `ListTasks` page.
const DEFAULT_PAGE: usize = 50;
/// One JSON-RPC call: who, in which dialect, with which params.
pub(super) struct Call<'a> {
    pub gw: &'a Gateway,
    pub agent_type: Option<&'a str>,
    pub dialect: Dialect,
    pub id: &'a Value,
    pub params: &'a Map<String, Value>,
}

fn not_found(id: &str) -> RpcError {
    RpcError::new(TASK_NOT_FOUND, format!("task {id:?} not found"))
}

fn unavailable(e: &RuntimeError) -> RpcError {
    RpcError::internal(format!("the task store is unavailable: {e}"))
        .with_status(axum::http::StatusCode::SERVICE_UNAVAILABLE)
}

impl Call<'_> {
    fn log(&self) -> Result<Arc<TaskLog>, RpcError> {
        self.gw.task_log.get().cloned().ok_or_else(|| {
            RpcError::internal("the task store is not loaded yet (the runtime is starting)")
                .with_status(axum::http::StatusCode::SERVICE_UNAVAILABLE)
        })
    }

    fn str_param(&self, key: &str) -> Result<Option<&str>, RpcError> {
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(RpcError::invalid_params(format!("{key} must be a string"))),
        }
    }

    /// The stored task `params.id` names (the log read to its end first).
    async fn stored_task(&self, log: &TaskLog) -> Result<TaskRecord, RpcError> {
        let id = self.task_id()?;
        log.get(id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| not_found(id))
    }

    fn task_id(&self) -> Result<&str, RpcError> {
        self.str_param("id")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| RpcError::invalid_params("id (the task id) is required"))
    }

    fn history_length(&self, of: &Map<String, Value>) -> Result<Option<usize>, RpcError> {
        match of.get("historyLength") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                RpcError::invalid_params("historyLength must be a non-negative integer")
            }),
        }
    }

    fn respond(&self, result: Value) -> Response {
        result_response(self.id, result)
    }

    /// The agent a message goes to.
    fn agent(&self, message: &A2aMessage) -> Result<&AgentInfo, RpcError> {
        let from_metadata = |m: Option<&Value>| {
            m.and_then(|m| m.get("agentType"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let named = self
            .agent_type
            .map(str::to_owned)
            .or_else(|| from_metadata(message.metadata.as_ref()))
            .or_else(|| from_metadata(self.params.get("metadata")));
        let agents = &self.gw.agents;
        match named {
            Some(t) => agents.iter().find(|a| a.agent_type == t).ok_or_else(|| {
                RpcError::invalid_params(format!("agent type {t:?} is not hosted by this runtime"))
            }),
            None if agents.len() == 1 => Ok(&agents[0]),
            None => Err(RpcError::invalid_params(
                "name the agent type: POST /a2a/<type>, or message.metadata.agentType",
            )),
        }
    }

    /// Validates a `SendMessage` and starts its task.
    async fn start(&self) -> Result<(Started, bool), RpcError> {
        let log = self.log()?;
        let message = self
            .params
            .get("message")
            .ok_or_else(|| RpcError::invalid_params("message is required"))?;
        let mut message = model::parse_message(message).map_err(RpcError::invalid_params)?;
        let config = match self.params.get("configuration") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(c)) => c.clone(),
            Some(_) => return Err(RpcError::invalid_params("configuration must be an object")),
        };
        if config.contains_key("taskPushNotificationConfig")
            || config.contains_key("pushNotificationConfig")
        {
            return Err(RpcError::new(
                PUSH_NOT_SUPPORTED,
                "push notifications are not supported",
            ));
        }
        let return_immediately = config.get("returnImmediately").and_then(Value::as_bool)
            == Some(true)
            || config.get("blocking").and_then(Value::as_bool) == Some(false);
        // A message naming a task answers its `input-required`.
        let continued = match &message.task_id {
            None => None,
            Some(task_id) => match log.get(task_id).await.map_err(|e| unavailable(&e))? {
                None => return Err(not_found(task_id)),
                Some(r)
                    if effective(r.clone(), now_ms()).task.state == TaskState::InputRequired =>
                {
                    if message
                        .context_id
                        .as_ref()
                        .is_some_and(|c| *c != r.task.context_id)
                    {
                        return Err(RpcError::invalid_params(format!(
                            "message.contextId differs from task {task_id:?}'s contextId {:?}",
                            r.task.context_id
                        )));
                    }
                    Some(r)
                }
                Some(r) => {
                    return Err(RpcError::new(
                        UNSUPPORTED_OPERATION,
                        format!(
                            "task {task_id:?} is {} and takes no more messages (only an \
                             input-required task does): send a new message (no taskId) with \
                             the same contextId to continue the conversation",
                            r.task.state.v03_name()
                        ),
                    ));
                }
            },
        };
        let agent = match &continued {
            Some(r) => self
                .gw
                .agents
                .iter()
                .find(|a| a.agent_type == r.agent_type)
                .ok_or_else(|| {
                    RpcError::invalid_params(format!(
                        "task's agent type {:?} is not hosted by this runtime",
                        r.agent_type
                    ))
                })?,
            None => self.agent(&message)?,
        };
        if let (Some(r), Some(named)) = (&continued, self.agent_type)
            && named != r.agent_type
        {
            return Err(RpcError::invalid_params(format!(
                "task belongs to agent type {:?}, not {named:?}",
                r.agent_type
            )));
        }
        let context_id = match &continued {
            Some(r) => r.task.context_id.clone(),
            None => message
                .context_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        };
        let recipient = AgentId::new(&agent.agent_type, &context_id).map_err(|e| {
            RpcError::invalid_params(format!("contextId cannot be an agent key: {e}"))
        })?;
        let payload = payload_of(&message, agent).map_err(|r| match r {
            Refusal::ContentType(m) => RpcError::new(CONTENT_TYPE_NOT_SUPPORTED, m),
            Refusal::Invalid(m) => RpcError::invalid_params(m),
        })?;
        let timeout = message
            .metadata
            .as_ref()
            .and_then(|m| m.get("timeoutMs"))
            .and_then(Value::as_u64)
            .map_or(self.gw.runtime.config().rpc_timeout, Duration::from_millis);
        if self.gw.stopping.is_cancelled() {
            return Err(RpcError::internal("the runtime is stopping")
                .with_status(axum::http::StatusCode::SERVICE_UNAVAILABLE));
        }
        let task_id = continued
            .as_ref()
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), |r| r.task.id.clone());
        message.task_id = Some(task_id.clone());
        message.context_id = Some(context_id.clone());
        let now = now_ms();
        let (artifacts, mut history) = continued
            .map(|r| (r.task.artifacts, r.task.history))
            .unwrap_or_default();
        history.push(message);
        let record = TaskRecord {
            task: Task {
                id: task_id,
                context_id,
                state: TaskState::Working,
                status_message: None,
                timestamp: model::rfc3339(now),
                artifacts,
                history,
            },
            agent_type: agent.agent_type.clone(),
            instance: self.gw.runtime.config().instance_id.clone(),
            deadline_ms: now + timeout.as_millis() as u64,
        };
        let started = start_task(self.gw, log, record, recipient, payload, timeout)?;
        Ok((started, return_immediately))
    }

    pub async fn send(&self) -> Result<Response, RpcError> {
        let view = View {
            history_length: self.history_length(
                self.params
                    .get("configuration")
                    .and_then(Value::as_object)
                    .unwrap_or(&Map::new()),
            )?,
            artifacts: true,
        };
        let (started, return_immediately) = self.start().await?;
        let record = if return_immediately {
            // Answer once the task is in the log, so GetTask on any replica finds it.
            match started.durable.await {
                Ok(Ok(())) => started.working,
                Ok(Err(e)) => return Err(unavailable(&e)),
                Err(_) => return Err(RpcError::internal("the task ended before it was written")),
            }
        } else {
            started
                .done
                .await
                .map_err(|_| RpcError::internal("the task's runner ended without an answer"))?
                .map_err(|e| unavailable(&e))?
        };
        Ok(self.respond(render::send_result(&record.task, self.dialect, view)))
    }

    pub async fn send_streaming(&self) -> Result<Response, RpcError> {
        let log = self.log()?;
        // Subscribed before the task starts, so no change is missed.
        let changes = log.changes();
        let (started, _) = self.start().await?;
        let working = started.working.clone();
        Ok(stream(
            self.gw,
            log,
            changes,
            working,
            self.dialect,
            self.id.clone(),
        ))
    }

    pub async fn subscribe(&self) -> Result<Response, RpcError> {
        let log = self.log()?;
        let changes = log.changes();
        let record = self.stored_task(&log).await?;
        Ok(stream(
            self.gw,
            log,
            changes,
            effective(record, now_ms()),
            self.dialect,
            self.id.clone(),
        ))
    }

    pub async fn get(&self) -> Result<Response, RpcError> {
        let log = self.log()?;
        let record = self.stored_task(&log).await?;
        let view = View {
            history_length: self.history_length(self.params)?,
            artifacts: true,
        };
        Ok(self.respond(render_task(
            &effective(record, now_ms()).task,
            self.dialect,
            view,
        )))
    }

    pub async fn list(&self) -> Result<Response, RpcError> {
        let log = self.log()?;
        let context = self.str_param("contextId")?.filter(|c| !c.is_empty());
        let status = match self.str_param("status")? {
            None | Some("" | "TASK_STATE_UNSPECIFIED") => None,
            Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
                RpcError::invalid_params(format!("status {s:?} is not a task state"))
            })?),
        };
        let page_size = match self.params.get("pageSize") {
            None | Some(Value::Null) => DEFAULT_PAGE,
            Some(v) => match v.as_u64() {
                Some(0) => DEFAULT_PAGE,
                Some(n) if n as usize <= MAX_PAGE => n as usize,
                _ => {
                    return Err(RpcError::invalid_params(format!(
                        "pageSize must be an integer from 1 to {MAX_PAGE}"
                    )));
                }
            },
        };
        let start = match self.str_param("pageToken")?.filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => t
                .parse::<usize>()
                .map_err(|_| RpcError::invalid_params("pageToken is not one this server gave"))?,
        };
        let after = self.str_param("statusTimestampAfter")?;
        let artifacts = self.params.get("includeArtifacts").and_then(Value::as_bool) == Some(true);
        let view = View {
            history_length: self.history_length(self.params)?,
            artifacts,
        };
        let now = now_ms();
        let mut tasks: Vec<Task> = log
            .all()
            .await
            .map_err(|e| unavailable(&e))?
            .into_iter()
            .map(|r| effective(r, now).task)
            .filter(|t| context.is_none_or(|c| t.context_id == c))
            .filter(|t| status.is_none_or(|s| t.state == s))
            .filter(|t| after.is_none_or(|a| t.timestamp.as_str() > a))
            .collect();
        // Newest first; RFC 3339 UTC timestamps sort as text.
        tasks.sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then_with(|| a.id.cmp(&b.id)));
        let total = tasks.len();
        let page: Vec<Value> = tasks
            .iter()
            .skip(start)
            .take(page_size)
            .map(|t| render_task(t, self.dialect, view))
            .collect();
        let next = if start + page_size < total {
            (start + page_size).to_string()
        } else {
            String::new()
        };
        Ok(self.respond(json!({
            "tasks": page,
            "nextPageToken": next,
            "pageSize": page_size,
            "totalSize": total,
        })))
    }

    pub async fn cancel(&self) -> Result<Response, RpcError> {
        let log = self.log()?;
        let id = self.task_id()?;
        let record = self.stored_task(&log).await?;
        let record = effective(record, now_ms());
        let not_cancelable = |state: TaskState| {
            RpcError::new(
                TASK_NOT_CANCELABLE,
                format!("task {id:?} is {} and cannot be canceled", state.v03_name()),
            )
        };
        if record.task.state.is_terminal() {
            return Err(not_cancelable(record.task.state));
        }
        let mut canceled = record;
        canceled.task.state = TaskState::Canceled;
        canceled.task.status_message = Some("canceled by a client".into());
        canceled.task.timestamp = model::rfc3339(now_ms());
        let decided = log
            .write_and_read(&canceled)
            .await
            .map_err(|e| unavailable(&e))?;
        // The reply may have been written first: then the task completed.
        if decided.task.state != TaskState::Canceled {
            return Err(not_cancelable(decided.task.state));
        }
        Ok(self.respond(render_task(&decided.task, self.dialect, View::FULL)))
    }
}
