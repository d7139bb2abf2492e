//! This process's reply channel: a topic of its own, assigned at its end before the
//! runtime is ready, so no reply is missed and none is ever read by another process.
//! Replies nobody waits for (late, after a timeout) are dropped, never a crash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
        let consumer: StreamConsumer = kafka.consumer_config(group_id).create()?;
        let consumer = Arc::new(consumer);
        let end = {
            let c = Arc::clone(&consumer);
            let t = topic.to_owned();
            tokio::task::spawn_blocking(move || {
                super::tailing::retry_blocking(timeout, || Ok(c.fetch_watermarks(&t, 0, timeout)?))
            })
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))??
            .1
        };
        // An explicit offset, not Offset::End: End is resolved lazily and a reply
        // arriving before that would be skipped.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(end))?;
        consumer.assign(&tpl)?;
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let task = tokio::spawn(read_replies(consumer, Arc::clone(&pending), shutdown));
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

async fn read_replies(
    consumer: Arc<StreamConsumer>,
    pending: Arc<Mutex<Pending>>,
    shutdown: CancellationToken,
) {
    while let Some(message) =
        super::tailing::next_record(&consumer, &shutdown, "reply channel").await
    {
        let envelope = match Envelope::decode(message.headers(), message.payload()) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(offset = message.offset(), error = %e, "undecodable record on the reply channel");
                continue;
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
                continue;
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
