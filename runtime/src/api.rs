//! The runtime API shared by the Kafka runtime and the in-memory runtime.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentFactory, SharedAgent, downcast_agent};
use crate::context::{OutgoingEvent, OutgoingRpc, Transport};
use crate::error::RuntimeError;
use crate::ids::{AgentId, TopicId};
use crate::message::{Message, Payload};
use crate::subscription::Subscription;
use crate::trace::TraceContext;

/// Options of one `send_message` call.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Overrides the runtime's default RPC timeout.
    pub timeout: Option<Duration>,
    /// Cancels the wait for the reply.
    pub cancellation: Option<CancellationToken>,
    /// Sends on behalf of this agent (sets the handler's `ctx.sender`).
    pub sender: Option<AgentId>,
    /// The trace the RPC belongs to (its `traceparent` is this span); default: the
    /// current tracing span when OpenTelemetry records it, else a new trace.
    pub trace: Option<TraceContext>,
    /// The request's id (the handler's `ctx.message_id`); default a fresh UUID.
    /// Checked by [`crate::ids::validate_message_id`].
    pub message_id: Option<String>,
}

/// What the runtime knows about one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMetadata {
    /// The agent's id.
    pub id: AgentId,
    /// The runtime hosting its type.
    pub runtime: String,
    /// The Rust type implementing it (for local agents), else empty.
    pub class: String,
    /// Whether this process holds the agent right now.
    pub local: bool,
}

/// An agent runtime: registers agents, routes RPCs and events, keeps state.
#[async_trait]
pub trait AgentRuntime: Send + Sync {
    /// Registers a factory for `agent_type`; agents are made on their first message.
    /// A type is hosted by exactly one runtime of the prefix.
    async fn register_factory(
        &self,
        agent_type: &str,
        factory: AgentFactory,
    ) -> Result<(), RuntimeError>;

    /// Registers one existing agent under `id` (its type is claimed as by a factory).
    async fn register_agent_instance_boxed(
        &self,
        agent: Box<dyn Agent>,
        class: &'static str,
        id: AgentId,
    ) -> Result<(), RuntimeError>;

    /// Adds a subscription, visible to every runtime of the prefix.
    async fn add_subscription(&self, subscription: Subscription) -> Result<(), RuntimeError>;

    /// Removes the subscription with `id`.
    async fn remove_subscription(&self, id: &str) -> Result<(), RuntimeError>;

    /// The subscriptions currently known.
    async fn subscriptions(&self) -> Vec<Subscription>;

    /// How messages leave this runtime (what handlers' contexts use too).
    fn transport(&self) -> &dyn Transport;

    /// Sends an RPC and waits for the reply (`None`: the handler returned nothing).
    async fn send_payload(
        &self,
        payload: Payload,
        recipient: &AgentId,
        options: SendOptions,
    ) -> Result<Option<Payload>, RuntimeError> {
        let rpc = OutgoingRpc {
            payload,
            recipient: recipient.clone(),
            sender: options.sender,
            timeout: options.timeout,
            cancellation: options.cancellation,
            trace: options.trace.or_else(crate::trace::current),
            message_id: options.message_id,
        };
        self.transport().send(rpc).await
    }

    /// Publishes an event to `topic`.
    async fn publish_payload(
        &self,
        payload: Payload,
        topic: &TopicId,
        sender: Option<AgentId>,
    ) -> Result<(), RuntimeError> {
        let event = OutgoingEvent {
            payload,
            topic: topic.clone(),
            sender,
            trace: crate::trace::current(),
            message_id: None,
        };
        self.transport().publish(event).await
    }

    /// Metadata of an agent.
    async fn agent_metadata(&self, id: &AgentId) -> Result<AgentMetadata, RuntimeError>;

    /// The agent's saved state (`Null` when stateless). Local agents only.
    async fn agent_save_state(&self, id: &AgentId) -> Result<Value, RuntimeError> {
        let (agent, _) = self.local_agent(id).await?;
        let state = agent.lock().await.save_state().await;
        state
            .map(|s| s.unwrap_or(Value::Null))
            .map_err(|e| RuntimeError::Handler {
                agent: id.to_string(),
                message: e.to_string(),
            })
    }

    /// Loads state into the agent (and persists it). Local agents only.
    async fn agent_load_state(&self, id: &AgentId, state: Value) -> Result<(), RuntimeError>;

    /// The local agent `id` (made by its factory if needed) with its class name.
    async fn local_agent(&self, id: &AgentId) -> Result<(SharedAgent, String), RuntimeError>;

    /// Stops gracefully: no new work, in-flight work finishes, offsets are committed.
    async fn stop(&self) -> Result<(), RuntimeError>;
}

/// Typed conveniences over [`AgentRuntime`].
#[async_trait]
pub trait AgentRuntimeExt: AgentRuntime {
    /// Registers a factory of `A`s for `agent_type`.
    async fn register<A, F>(&self, agent_type: &str, make: F) -> Result<(), RuntimeError>
    where
        A: Agent,
        F: for<'a> Fn(&'a AgentId) -> A + Send + Sync + 'static,
    {
        self.register_factory(agent_type, AgentFactory::new(make))
            .await
    }

    /// Registers one existing agent under `id`.
    async fn register_agent_instance<A: Agent>(
        &self,
        agent: A,
        id: AgentId,
    ) -> Result<(), RuntimeError> {
        self.register_agent_instance_boxed(Box::new(agent), std::any::type_name::<A>(), id)
            .await
    }

    /// Sends a typed RPC with the default timeout.
    async fn send_message<M: Message>(
        &self,
        message: &M,
        recipient: &AgentId,
    ) -> Result<Option<Payload>, RuntimeError> {
        self.send_payload(Payload::encode(message)?, recipient, SendOptions::default())
            .await
    }

    /// Publishes a typed event.
    async fn publish_message<M: Message>(
        &self,
        message: &M,
        topic: &TopicId,
    ) -> Result<(), RuntimeError> {
        self.publish_payload(Payload::encode(message)?, topic, None)
            .await
    }

    /// Locks the local agent `id` as an `A` (AutoGen's `try_get_underlying_agent_instance`).
    async fn try_get_underlying_agent_instance<A: Agent>(
        &self,
        id: &AgentId,
    ) -> Result<tokio::sync::OwnedMappedMutexGuard<Box<dyn Agent>, A>, RuntimeError> {
        let (agent, class) = self.local_agent(id).await?;
        downcast_agent::<A>(id, agent, &class).await
    }
}

impl<R: AgentRuntime + ?Sized> AgentRuntimeExt for R {}
