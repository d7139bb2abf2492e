//! What a handler knows about the message it handles, and how it talks back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;

use crate::durable::Steps;
use crate::error::RuntimeError;
use crate::ids::{AgentId, TopicId};
use crate::message::{Message, Payload};
use crate::trace::TraceContext;

/// An RPC as handed to a transport.
#[derive(Debug, Clone)]
pub struct OutgoingRpc {
    /// The request.
    pub payload: Payload,
    /// Who handles it.
    pub recipient: AgentId,
    /// The calling agent, if an agent calls.
    pub sender: Option<AgentId>,
    /// Overrides the runtime's default RPC timeout.
    pub timeout: Option<Duration>,
    /// Cancels the wait for the reply.
    pub cancellation: Option<CancellationToken>,
    /// Trace context of the caller.
    pub trace: Option<TraceContext>,
    /// The request's id (the handler's `ctx.message_id`, the CloudEvents `id`), as
    /// the caller gives it; a fresh UUID when `None`.
    pub message_id: Option<String>,
}

/// A publish as handed to a transport.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    /// The event.
    pub payload: Payload,
    /// Where it is published.
    pub topic: TopicId,
    /// The publishing agent, if an agent publishes.
    pub sender: Option<AgentId>,
    /// Trace context of the publisher.
    pub trace: Option<TraceContext>,
    /// The event's id (every recipient's `ctx.message_id`), as the publisher gives
    /// it; a fresh UUID when `None`.
    pub message_id: Option<String>,
}

/// How messages leave an agent: implemented by each runtime.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends an RPC and waits for the reply, the handler's error, or the timeout.
    async fn send(&self, rpc: OutgoingRpc) -> Result<Option<Payload>, RuntimeError>;
    /// Publishes an event; returns once it is durably accepted.
    async fn publish(&self, event: OutgoingEvent) -> Result<(), RuntimeError>;
}

/// The context of one message being handled.
#[derive(Clone)]
pub struct MessageContext {
    /// The agent handling the message.
    pub recipient: AgentId,
    /// The agent that sent it, if an agent did.
    pub sender: Option<AgentId>,
    /// The topic it was published to (events only).
    pub topic: Option<TopicId>,
    /// Whether the sender waits for a reply.
    pub is_rpc: bool,
    /// Unique id of the message (the CloudEvent id).
    pub message_id: String,
    /// Cancelled when the runtime gives up on the message (deadline passed, shutdown).
    pub cancellation: CancellationToken,
    /// Trace context of the message.
    pub trace: TraceContext,
    transport: Arc<dyn Transport>,
    /// Durable steps of this message (`durable`); no journal unless the runtime gives one.
    steps: Steps,
}

impl std::fmt::Debug for MessageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageContext")
            .field("recipient", &self.recipient)
            .field("sender", &self.sender)
            .field("topic", &self.topic)
            .field("is_rpc", &self.is_rpc)
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

/// Where a message came from, for building its context.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The agent handling the message.
    pub recipient: AgentId,
    /// The agent that sent it.
    pub sender: Option<AgentId>,
    /// The topic (events).
    pub topic: Option<TopicId>,
    /// Whether a reply is awaited.
    pub is_rpc: bool,
    /// The message id.
    pub message_id: String,
    /// Trace context of the incoming record.
    pub trace: Option<TraceContext>,
}

impl Delivery {
    /// The span of handling this delivery (RPC request or event): the runtime's unit
    /// of work in a trace. Debug level, so it costs nothing unless a subscriber (the
    /// binary's OpenTelemetry layer, `RUST_LOG=debug`) wants it. Where the record came
    /// from (`messaging.*`) and the outcome are recorded by the runtime that handles it
    /// (`trace::record_outcome`).
    pub(crate) fn handling_span(&self, message_type: &str) -> tracing::Span {
        let (kind, otel_kind) = if self.is_rpc {
            ("rpc", "server")
        } else {
            ("event", "consumer")
        };
        tracing::debug_span!(
            "switchboard.handle",
            otel.kind = otel_kind,
            otel.status_code = Empty,
            otel.status_message = Empty,
            messaging.system = Empty,
            messaging.operation.type = "process",
            messaging.destination.name = Empty,
            messaging.destination.partition.id = Empty,
            messaging.kafka.offset = Empty,
            messaging.message.id = %self.message_id,
            switchboard.agent.type = self.recipient.agent_type(),
            switchboard.agent.key = self.recipient.key(),
            switchboard.message.type = message_type,
            switchboard.message.kind = kind,
            switchboard.topic = self.topic.as_ref().map(tracing::field::display),
            switchboard.outcome = Empty,
        )
    }
}

impl MessageContext {
    /// Builds the context a runtime hands to a handler.
    pub fn new(
        delivery: Delivery,
        cancellation: CancellationToken,
        transport: Arc<dyn Transport>,
    ) -> Self {
        let trace = delivery
            .trace
            .as_ref()
            .map_or_else(TraceContext::new_root, TraceContext::child);
        Self::with_trace(delivery, cancellation, transport, trace)
    }

    /// As [`MessageContext::new`], with the trace context of the handling span.
    pub(crate) fn with_trace(
        delivery: Delivery,
        cancellation: CancellationToken,
        transport: Arc<dyn Transport>,
        trace: TraceContext,
    ) -> Self {
        Self {
            recipient: delivery.recipient,
            sender: delivery.sender,
            topic: delivery.topic,
            is_rpc: delivery.is_rpc,
            message_id: delivery.message_id,
            cancellation,
            trace,
            transport,
            steps: Steps::default(),
        }
    }

    /// This context with `steps` journaled by the runtime (see [`crate::durable`]).
    pub(crate) fn with_steps(mut self, steps: Steps) -> Self {
        self.steps = steps;
        self
    }

    /// Runs `work` as durable step `name` of this message: if the step completed
    /// when this message was handled before, its journaled result is returned and
    /// `work` does not run; otherwise `work` runs and its successful result is
    /// journaled before this returns. A failed step is not journaled (it runs again
    /// next time). Side effects of `work` must be idempotent or keyed: a step that was
    /// interrupted before its result was journaled runs again. Steps are numbered per
    /// name in call order, so call them in the same order for the same message; see
    /// [`crate::durable`] and docs/protocol.md ("Durable steps").
    pub async fn step<T, E, F>(&self, name: &str, work: F) -> Result<T, E>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        E: From<RuntimeError>,
        F: std::future::Future<Output = Result<T, E>>,
    {
        self.steps
            .run(&self.recipient, &self.message_id, name, work)
            .await
    }

    /// For hosts that run a step's work outside Rust (the Python package's
    /// `switchboard.step`): the number of this call of step `name` and, when it
    /// completed when this message was handled before, its journaled result. When
    /// there is none, run the work and pass its result to [`MessageContext::record_step`]
    /// before going on; see [`MessageContext::step`] for the guarantees.
    pub fn begin_step(&self, name: &str) -> Result<(u32, Option<serde_json::Value>), RuntimeError> {
        self.steps.begin(name)
    }

    /// The journaled result of call `n` of step `name` of this message, for hosts that
    /// number a step's calls themselves (HTTP agents, [`crate::http_steps`], where a
    /// retried request starts again at 0).
    pub fn journaled_step(
        &self,
        name: &str,
        n: u32,
    ) -> Result<Option<serde_json::Value>, RuntimeError> {
        self.steps.lookup(name, n)
    }

    /// Journals `value` as the result of call `n` of step `name` (from
    /// [`MessageContext::begin_step`]); returns once it is durable.
    pub async fn record_step(
        &self,
        name: &str,
        n: u32,
        value: &serde_json::Value,
    ) -> Result<(), RuntimeError> {
        self.steps.record(name, n, value).await
    }

    /// Sends an RPC from this agent and waits for the reply. Calling yourself fails
    /// fast: you would wait for a turn that only comes after your own.
    pub async fn send_message<M: Message>(
        &self,
        message: &M,
        recipient: &AgentId,
    ) -> Result<Option<Payload>, RuntimeError> {
        self.send_payload(Payload::encode(message)?, recipient, None)
            .await
    }

    /// As [`MessageContext::send_message`] with an encoded payload and optional timeout.
    pub async fn send_payload(
        &self,
        payload: Payload,
        recipient: &AgentId,
        timeout: Option<Duration>,
    ) -> Result<Option<Payload>, RuntimeError> {
        if *recipient == self.recipient {
            return Err(RuntimeError::SelfRpc(recipient.clone()));
        }
        self.transport
            .send(OutgoingRpc {
                payload,
                recipient: recipient.clone(),
                sender: Some(self.recipient.clone()),
                timeout,
                cancellation: Some(self.cancellation.child_token()),
                trace: Some(self.trace.clone()),
                message_id: None,
            })
            .await
    }

    /// Publishes an event from this agent; returns once Kafka accepted it, so the
    /// message being handled is only committed after its outputs are safe.
    pub async fn publish_message<M: Message>(
        &self,
        message: &M,
        topic: &TopicId,
    ) -> Result<(), RuntimeError> {
        self.publish_payload(Payload::encode(message)?, topic).await
    }

    /// As [`MessageContext::publish_message`] with an encoded payload.
    pub async fn publish_payload(
        &self,
        payload: Payload,
        topic: &TopicId,
    ) -> Result<(), RuntimeError> {
        self.transport
            .publish(OutgoingEvent {
                payload,
                topic: topic.clone(),
                sender: Some(self.recipient.clone()),
                trace: Some(self.trace.clone()),
                message_id: None,
            })
            .await
    }
}
