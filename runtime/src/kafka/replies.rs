//! This process's reply channel: a topic of its own, assigned at its end before the
//! runtime is ready, so no reply is missed and none is ever read by another process.
//! Replies nobody waits for (late, after a timeout) are dropped, never a crash. An
//! orphaned consumer is replaced by one that goes on after the last reply read
//! (`tailing`): replies written meanwhile are read then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::guard::ClientKind;
use super::tailing::Tail;
use crate::config::KafkaConfig;
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::message::{CodecError, Payload};
use crate::protocol::wire::{Body, Envelope, RpcFailure};
use crate::trace;

/// What an RPC ends with.
pub(crate) type RpcOutcome = Result<Option<Payload>, RuntimeError>;

type Pending = HashMap<String, (AgentId, oneshot::Sender<RpcOutcome>)>;

/// The reply channel and the RPCs waiting on it.
pub(crate) struct ReplyChannel {
    topic: String,
    pending: Arc<Mutex<Pending>>,
    task: JoinHandle<()>,
}

impl ReplyChannel {
    /// Assigns `topic` (single partition) at its current end and starts reading.
    pub(crate) async fn open(
        kafka: &KafkaConfig,
        topic: &str,
        group_id: &str,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> Result<Self, RuntimeError> {
        let mut tail = Tail::create(&kafka.consumer_config(group_id), ClientKind::Replies, topic)?;
        let end = {
            let c = tail.current().get();
            let t = topic.to_owned();
            tokio::task::spawn_blocking(move || {
                super::tailing::retry_blocking(timeout, |attempt| {
                    Ok(c.fetch_watermarks(&t, 0, attempt)?)
                })
            })
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))??
            .1
        };
        // An explicit offset, not Offset::End: End is resolved lazily and a reply
        // arriving before that would be skipped.
        tail.assign(&[(0, Offset::Offset(end))])?;
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let waiting = Arc::clone(&pending);
        let task = tokio::spawn(tail.run(shutdown, move |m| on_reply(&waiting, m)));
        Ok(Self {
            topic: topic.to_owned(),
            pending,
            task,
        })
    }

    /// The reply channel's topic.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts waiting for the reply to `request_id`.
    pub(crate) fn expect(
        &self,
        request_id: &str,
        recipient: &AgentId,
    ) -> oneshot::Receiver<RpcOutcome> {
        let (tx, rx) = oneshot::channel();
        self.pending()
            .insert(request_id.to_owned(), (recipient.clone(), tx));
        rx
    }

    /// Stops waiting for `request_id` (timed out, cancelled, or never sent).
    pub(crate) fn forget(&self, request_id: &str) {
        self.pending().remove(request_id);
    }

    /// RPCs waiting right now.
    pub(crate) fn waiting(&self) -> usize {
        self.pending().len()
    }

    /// Ends every waiting RPC with `Stopped` and stops reading.
    pub(crate) fn close(&self) {
        for (_, (_, tx)) in self.pending().drain() {
            let _ = tx.send(Err(RuntimeError::Stopped));
        }
        self.task.abort();
    }
}

/// Hands one record of the reply channel to the RPC waiting for it.
fn on_reply(pending: &Mutex<Pending>, message: &BorrowedMessage<'_>) {
    let envelope = match Envelope::decode(message.headers(), message.payload()) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(offset = message.offset(), error = %e, "undecodable record on the reply channel");
            return;
        }
    };
    let (request_id, outcome) = match envelope.body {
        Body::Response {
            request_id,
            payload,
        } => (request_id, Ok(payload)),
        Body::Error {
            request_id,
            failure,
        } => (request_id, Err(failure)),
        _ => {
            tracing::warn!(
                offset = message.offset(),
                "non-reply record on the reply channel"
            );
            return;
        }
    };
    // The reply's own span, a child of the handler's: the trace shows when the
    // caller got the answer.
    let span = tracing::debug_span!(
        "switchboard.reply",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = message.topic(),
        messaging.kafka.offset = message.offset(),
        switchboard.request.id = %request_id,
        switchboard.outcome = if outcome.is_ok() { "ok" } else { "error" },
    );
    trace::start_span(&span, envelope.trace.as_ref());
    let _entered = span.enter();
    let waiter = pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&request_id);
    match waiter {
        Some((agent, tx)) => {
            let _ = tx.send(outcome.map_err(|f| failure_to_error(f, agent)));
        }
        None => {
            tracing::debug!(%request_id, "reply for an RPC nobody waits for (late or duplicate)")
        }
    }
}

/// Turns an `error` record back into the error the responder had.
pub(crate) fn failure_to_error(failure: RpcFailure, agent: AgentId) -> RuntimeError {
    match failure.kind.as_str() {
        "unknown_message_type" => RuntimeError::UnknownMessageType {
            agent: agent.to_string(),
            message_type: failure.error,
        },
        "decode" => RuntimeError::Codec(CodecError::Invalid {
            type_name: failure.message_type.unwrap_or_default(),
            reason: failure.error,
        }),
        "unknown_agent_type" => RuntimeError::UnknownAgentType(agent.agent_type().to_owned()),
        "not_local" => RuntimeError::NotLocal(agent),
        "expired" => RuntimeError::Timeout {
            agent,
            after: Duration::ZERO,
        },
        "stopped" => RuntimeError::Stopped,
        "rejected" => RuntimeError::Rejected {
            agent: agent.to_string(),
            reason: failure.error,
        },
        _ => RuntimeError::Handler {
            agent: agent.to_string(),
            message: failure.error,
        },
    }
}

/// The `error` record for a failed RPC.
pub(crate) fn error_to_failure(error: &RuntimeError) -> RpcFailure {
    if let RuntimeError::Codec(CodecError::Invalid { type_name, reason }) = error {
        return RpcFailure {
            kind: "decode".to_owned(),
            error: reason.clone(),
            message_type: Some(type_name.clone()),
        };
    }
    let (kind, text) = match error {
        RuntimeError::UnknownMessageType { message_type, .. } => {
            ("unknown_message_type", message_type.clone())
        }
        RuntimeError::UnknownAgentType(_) => ("unknown_agent_type", error.to_string()),
        RuntimeError::NotLocal(_) => ("not_local", error.to_string()),
        RuntimeError::Timeout { .. } => ("expired", error.to_string()),
        RuntimeError::Stopped => ("stopped", error.to_string()),
        RuntimeError::Rejected { reason, .. } => ("rejected", reason.clone()),
        RuntimeError::Handler { message, .. } => ("handler", message.clone()),
        other => ("handler", other.to_string()),
    };
    RpcFailure {
        kind: kind.to_owned(),
        error: text,
        message_type: None,
    }
}
