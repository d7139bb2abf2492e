//! A2A tasks as inbox RPCs: the methods of the JSON-RPC binding.
//!
//! `SendMessage` writes the task `working` to the tasks topic and sends the RPC at once
//! (the record is enqueued first, so it precedes the final record in the log); when the
//! reply, the handler's error or the timeout comes, the final record (`completed` with
//! the reply as artifact, or `failed`) is written and read back through the log. The RPC
//! runs in a task owned by the gateway, so a client that hangs up (or asked
//! `returnImmediately`) does not abandon it, and stopping waits for it.
//!
//! `CancelTask` writes `canceled`, from any replica; the replica waiting for the reply
//! reads it from the log and stops waiting. The agent's handler is not interrupted (a
//! turn runs to its end); its late reply is dropped, since the first terminal record wins.
//! A task whose waiting replica died without a final record shows as `failed` once its
//! deadline has passed by [`STALE_AFTER`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::UNSUPPORTED_OPERATION;
use super::mapping::{Refusal, artifact_of, payload_of};
use super::model::{self, A2aMessage, Dialect, Task, TaskState, View, event, render_task};
use super::task_log::{TaskLog, TaskRecord};
use super::{CONTENT_TYPE_NOT_SUPPORTED, PUSH_NOT_SUPPORTED, TASK_NOT_CANCELABLE, TASK_NOT_FOUND};
use crate::api::{AgentRuntime, SendOptions};
use crate::error::RuntimeError;
use crate::gateway::Gateway;
use crate::gateway::catalog::AgentInfo;
use crate::gateway::jsonrpc::{RpcError, result_envelope, result_response};
use crate::ids::AgentId;
use crate::message::Payload;

/// How long past its deadline a `working` task whose waiter wrote nothing shows as failed.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// Largest `ListTasks` page.
const MAX_PAGE: usize = 100;
/// Default `ListTasks` page.
const DEFAULT_PAGE: usize = 50;
/// Events a stream buffers for a slow client.
const STREAM_BUFFER: usize = 16;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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

/// The task as a client should see it now: `working` past its deadline is `failed`.
fn effective(mut record: TaskRecord, now: u64) -> TaskRecord {
    if !record.task.state.is_terminal()
        && now
            > record
                .deadline_ms
                .saturating_add(STALE_AFTER.as_millis() as u64)
    {
        record.task.state = TaskState::Failed;
        record.task.status_message = Some(
            "no replica waits for this task's reply any more (the one running it stopped \
             before the reply came)"
                .into(),
        );
    }
    record
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
        if let Some(task_id) = &message.task_id {
            return Err(match log.get(task_id).await.map_err(|e| unavailable(&e))? {
                None => not_found(task_id),
                Some(_) => RpcError::new(
                    UNSUPPORTED_OPERATION,
                    "a task is one request and its reply: send a new message (no taskId) with \
                     the same contextId to continue the conversation",
                ),
            });
        }
        let agent = self.agent(&message)?;
        let context_id = message
            .context_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
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
        let task_id = uuid::Uuid::new_v4().to_string();
        message.task_id = Some(task_id.clone());
        message.context_id = Some(context_id.clone());
        let now = now_ms();
        let record = TaskRecord {
            task: Task {
                id: task_id,
                context_id,
                state: TaskState::Working,
                status_message: None,
                timestamp: model::rfc3339(now),
                artifacts: Vec::new(),
                history: vec![message],
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
        Ok(self.respond(model::send_result(&record.task, self.dialect, view)))
    }

    pub async fn send_streaming(&self) -> Result<Response, RpcError> {
        let log = self.log()?;
        // Subscribed before the task starts, so no change is missed.
        let changes = log.changes();
        let (started, _) = self.start().await?;
        let working = started.working.clone();
        Ok(stream(log, changes, working, self.dialect, self.id.clone()))
    }

    pub async fn subscribe(&self) -> Result<Response, RpcError> {
        let log = self.log()?;
        let id = self.task_id()?;
        let changes = log.changes();
        let record = log
            .get(id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| not_found(id))?;
        Ok(stream(
            log,
            changes,
            effective(record, now_ms()),
            self.dialect,
            self.id.clone(),
        ))
    }

    pub async fn get(&self) -> Result<Response, RpcError> {
        let log = self.log()?;
        let id = self.task_id()?;
        let record = log
            .get(id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| not_found(id))?;
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
        let record = log
            .get(id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| not_found(id))?;
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

/// A task started by [`start_task`].
struct Started {
    /// The task as first written.
    working: TaskRecord,
    /// Resolves once the `working` record is in Kafka.
    durable: oneshot::Receiver<Result<(), RuntimeError>>,
    /// The task as the log decided it, once it ended.
    done: tokio::task::JoinHandle<Result<TaskRecord, RuntimeError>>,
}

/// Writes `working` and sends its RPC, in a task the gateway owns.
fn start_task(
    gw: &Gateway,
    log: Arc<TaskLog>,
    working: TaskRecord,
    recipient: AgentId,
    payload: Payload,
    timeout: Duration,
) -> Result<Started, RpcError> {
    let written = log.write(&working).map_err(|e| unavailable(&e))?;
    let (durable_tx, durable) = oneshot::channel();
    let token = CancellationToken::new();
    log.running(&working.task.id, token.clone());
    let runtime = gw.runtime.clone();
    let record = working.clone();
    let done = gw.rpcs.spawn(async move {
        let options = SendOptions {
            timeout: Some(timeout),
            cancellation: Some(token),
            ..SendOptions::default()
        };
        let first = async {
            let r = written.await.map(|_| ());
            let _ = durable_tx.send(
                r.as_ref()
                    .map(|_| ())
                    .map_err(|e| RuntimeError::Unavailable(e.to_string())),
            );
            r
        };
        let (first, reply) =
            tokio::join!(first, runtime.send_payload(payload, &recipient, options));
        log.finished(&record.task.id);
        first?;
        let mut last = record;
        last.task.timestamp = model::rfc3339(now_ms());
        match reply {
            Ok(Some(reply)) => match artifact_of(&last.task.id, &reply) {
                Ok(artifact) => {
                    last.task.state = TaskState::Completed;
                    last.task.artifacts.push(artifact);
                }
                Err(why) => {
                    last.task.state = TaskState::Failed;
                    last.task.status_message = Some(why);
                }
            },
            Ok(None) => last.task.state = TaskState::Completed,
            // A terminal record (a client's cancel) read from the log ended the wait.
            Err(RuntimeError::Cancelled(_)) => {
                return log.get(&last.task.id).await?.ok_or_else(|| {
                    RuntimeError::Unavailable("canceled task not read back".into())
                });
            }
            Err(e @ (RuntimeError::Rejected { .. } | RuntimeError::UnknownMessageType { .. })) => {
                last.task.state = TaskState::Rejected;
                last.task.status_message = Some(e.to_string());
            }
            Err(e) => {
                last.task.state = TaskState::Failed;
                last.task.status_message = Some(e.to_string());
            }
        }
        log.write_and_read(&last).await
    });
    Ok(Started {
        working,
        durable,
        done,
    })
}

/// An SSE stream of a task's events until it ends: the task, then status updates, then
/// its artifacts and the final status. Each event is a JSON-RPC response to `rpc_id`.
fn stream(
    log: Arc<TaskLog>,
    mut changes: broadcast::Receiver<TaskRecord>,
    first: TaskRecord,
    dialect: Dialect,
    rpc_id: Value,
) -> Response {
    let (tx, rx) = mpsc::channel::<Value>(STREAM_BUFFER);
    tokio::spawn(async move {
        let id = first.task.id.clone();
        let give_up =
            Duration::from_millis(first.deadline_ms.saturating_sub(now_ms())) + STALE_AFTER;
        let send = |v: Value| {
            let tx = tx.clone();
            async move { tx.send(v).await.is_ok() }
        };
        if !send(event::task(&first.task, dialect)).await {
            return;
        }
        let mut current = first;
        let deadline = tokio::time::Instant::now() + give_up;
        while !current.task.state.is_terminal() {
            let next = tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep_until(deadline) => Some(effective(current.clone(), u64::MAX)),
                r = changes.recv() => match r {
                    Ok(r) if r.task.id == id => Some(r),
                    Ok(_) => None,
                    // Fell behind: the log's view is the truth.
                    Err(broadcast::error::RecvError::Lagged(_)) => log.local(&id),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            let Some(next) = next else { continue };
            if next.task.state.is_terminal() {
                current = next;
                break;
            }
            if next.task.state != current.task.state
                && !send(event::status(&next.task, dialect)).await
            {
                return;
            }
            current = next;
        }
        for a in &current.task.artifacts {
            if !send(event::artifact(&current.task, a, dialect)).await {
                return;
            }
        }
        send(event::status(&current.task, dialect)).await;
    });
    let events = futures::stream::unfold((rx, rpc_id), |(mut rx, rpc_id)| async move {
        let value = rx.recv().await?;
        let event = Event::default().data(result_envelope(&rpc_id, value).to_string());
        Some((Ok::<_, Infallible>(event), (rx, rpc_id)))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_working_task_past_its_deadline_shows_as_failed() {
        let record = TaskRecord {
            task: Task {
                id: "t".into(),
                context_id: "c".into(),
                state: TaskState::Working,
                status_message: None,
                timestamp: model::rfc3339(0),
                artifacts: Vec::new(),
                history: Vec::new(),
            },
            agent_type: "echo".into(),
            instance: "i".into(),
            deadline_ms: 1_000,
        };
        assert_eq!(
            effective(record.clone(), 1_000).task.state,
            TaskState::Working
        );
        let late = effective(record.clone(), 1_000 + STALE_AFTER.as_millis() as u64 + 1);
        assert_eq!(late.task.state, TaskState::Failed);
        let mut done = record;
        done.task.state = TaskState::Completed;
        assert_eq!(effective(done, u64::MAX).task.state, TaskState::Completed);
    }
}
