//! Running an A2A task: writing `working`, sending the RPC, writing the final record
//! ([`start_task`]), and following a task's records as an SSE stream ([`stream`]).
//!
//! The `working` record is enqueued before the RPC is sent, so it precedes the final
//! record in the log; the RPC runs in a task owned by the gateway, so a client that
//! hangs up (or asked `returnImmediately`) does not abandon it, and stopping waits for
//! it. A task whose waiting replica died without a final record shows as `failed` once
//! its deadline has passed by [`STALE_AFTER`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::mapping::artifact_of;
use super::model::{self, Dialect, TaskState};
use super::render::event;
pub(super) use super::task_log::{STALE_AFTER, now_ms};
use super::task_log::{TaskLog, TaskRecord};
use crate::api::{AgentRuntime, SendOptions};
use crate::error::RuntimeError;
use crate::gateway::Gateway;
use crate::gateway::catalog::INPUT_REQUIRED_TYPE;
use crate::gateway::jsonrpc::{RpcError, result_envelope};
use crate::ids::AgentId;
use crate::message::Payload;

/// Events a stream buffers for a slow client.
const STREAM_BUFFER: usize = 16;

/// The task as a client should see it now: `working` past its deadline is `failed`.
pub(super) fn effective(mut record: TaskRecord, now: u64) -> TaskRecord {
    if record.task.state.is_running()
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

/// What an `input-required` reply asks: its `{"text"}` (or JSON string), else its data.
fn question(reply: &Payload) -> String {
    match serde_json::from_slice::<Value>(&reply.data) {
        Ok(Value::String(s)) => s,
        Ok(Value::Object(o)) if o.get("text").is_some_and(Value::is_string) => {
            o["text"].as_str().unwrap_or_default().to_owned()
        }
        _ => String::from_utf8_lossy(&reply.data).into_owned(),
    }
}

/// A task started by [`start_task`].
pub(super) struct Started {
    /// The task as first written.
    pub working: TaskRecord,
    /// Resolves once the `working` record is in Kafka.
    pub durable: oneshot::Receiver<Result<(), RuntimeError>>,
    /// The task as the log decided it, once it ended.
    pub done: tokio::task::JoinHandle<Result<TaskRecord, RuntimeError>>,
}

fn unavailable(e: &RuntimeError) -> RpcError {
    RpcError::internal(format!("the task store is unavailable: {e}"))
        .with_status(axum::http::StatusCode::SERVICE_UNAVAILABLE)
}

/// Writes `working` and sends its RPC, in a task the gateway owns.
pub(super) fn start_task(
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
            cancellation: Some(token.clone()),
            // The request's message id is the task id, so a `CancelTask` read from the
            // log reaches the handler's turn wherever it runs (`KafkaAgentRuntime::interrupt`).
            message_id: Some(record.rpc_message_id()),
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
        if let Err(e) = first {
            log.finished(&record.task.id);
            return Err(e);
        }
        let mut last = record;
        last.task.timestamp = model::rfc3339(now_ms());
        match reply {
            Ok(Some(reply)) if reply.type_name == INPUT_REQUIRED_TYPE => {
                last.task.state = TaskState::InputRequired;
                last.task.status_message = Some(question(&reply));
            }
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
                log.finished(&last.task.id);
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
        let decided = if last.task.state.is_terminal() {
            log.write_decided(&last, &token).await
        } else {
            // `input-required`: not terminal, so read back by offset.
            log.write_and_read(&last).await
        };
        log.finished(&last.task.id);
        decided
    });
    Ok(Started {
        working,
        durable,
        done,
    })
}

/// An SSE stream of a task's events until it ends: the task, then status updates, then
/// its artifacts and the final status. Each event is a JSON-RPC response to `rpc_id`.
/// The follower ends with the task, when the client leaves, or past the task's deadline;
/// the gateway owns it, so stopping waits for it (bounded by the HTTP drain).
pub(super) fn stream(
    gw: &Gateway,
    log: Arc<TaskLog>,
    mut changes: broadcast::Receiver<TaskRecord>,
    first: TaskRecord,
    dialect: Dialect,
    rpc_id: Value,
) -> Response {
    let (tx, rx) = mpsc::channel::<Value>(STREAM_BUFFER);
    gw.rpcs.spawn(async move {
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
        // Until the task ends or waits for input (`input-required` ends a stream too).
        while current.task.state.is_running() {
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
            if !next.task.state.is_running() {
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
    use crate::gateway::a2a::model::Task;

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
