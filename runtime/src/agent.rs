//! The agent programming model: the [`Agent`] trait and a typed handler router.
//!
//! ```
//! use std::sync::LazyLock;
//! use async_trait::async_trait;
//! use serde::{Deserialize, Serialize};
//! use switchboard_runtime::{Agent, AgentError, Handler, HandlerResult, Message, MessageContext, Payload, Routes};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping { n: u32 }
//! impl Message for Ping { const TYPE_NAME: &'static str = "example.Ping"; }
//! #[derive(Serialize, Deserialize)]
//! struct Pong { n: u32 }
//! impl Message for Pong { const TYPE_NAME: &'static str = "example.Pong"; }
//!
//! #[derive(Default)]
//! struct Ponger;
//!
//! #[async_trait]
//! impl Handler<Ping> for Ponger {
//!     type Reply = Pong;
//!     async fn handle(&mut self, ping: Ping, _ctx: &MessageContext) -> Result<Pong, AgentError> {
//!         Ok(Pong { n: ping.n + 1 })
//!     }
//! }
//!
//! static ROUTES: LazyLock<Routes<Ponger>> = LazyLock::new(|| Routes::new().handle::<Ping>());
//!
//! #[async_trait]
//! impl Agent for Ponger {
//!     async fn on_message(&mut self, msg: Payload, ctx: &MessageContext) -> HandlerResult {
//!         ROUTES.dispatch(self, msg, ctx).await
//!     }
//! }
//! ```

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::context::MessageContext;
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::message::{CodecError, Message, Payload};

/// What a handler returns: an optional reply.
pub type HandlerResult = Result<Option<Payload>, AgentError>;

/// A failed handler. Converts from any error, so handlers can use `?`.
pub struct AgentError {
    kind: AgentErrorKind,
    message: String,
    keep_input: bool,
}

/// Why a handler failed; decides where the message goes (caller, dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentErrorKind {
    /// The handler's own failure.
    Handler,
    /// No route for the message type.
    UnknownMessageType,
    /// The message body did not decode into its type.
    Decode,
}

impl AgentError {
    /// A handler failure with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            kind: AgentErrorKind::Handler,
            message: message.to_string(),
            keep_input: false,
        }
    }

    /// This failure also dead-letters the input of an RPC (an event's always is):
    /// for failures the caller's retry would meet again, e.g. an agent whose factory
    /// raised, so the message is kept with the reason for whoever mends the agent.
    #[must_use]
    pub fn keep_input(mut self) -> Self {
        self.keep_input = true;
        self
    }

    /// Whether [`keep_input`](Self::keep_input) was asked for.
    pub fn keeps_input(&self) -> bool {
        self.keep_input
    }

    /// No handler for `type_name`.
    pub fn unknown_message_type(type_name: &str) -> Self {
        Self {
            kind: AgentErrorKind::UnknownMessageType,
            message: format!("no handler for message type {type_name:?}"),
            keep_input: false,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> AgentErrorKind {
        self.kind
    }

    /// The error text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What the sender of a `message_type` message to `agent` sees when the handler
    /// failed with this error: the one mapping used by every runtime (Kafka and
    /// in-memory), so an agent's unit test sees the error production would.
    pub fn to_runtime_error(&self, agent: &AgentId, message_type: &str) -> RuntimeError {
        match self.kind {
            AgentErrorKind::UnknownMessageType => RuntimeError::UnknownMessageType {
                agent: agent.to_string(),
                message_type: message_type.to_owned(),
            },
            AgentErrorKind::Decode => RuntimeError::Codec(CodecError::Invalid {
                type_name: message_type.to_owned(),
                reason: self.message.clone(),
            }),
            AgentErrorKind::Handler => RuntimeError::Handler {
                agent: agent.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentError({:?}: {})", self.kind, self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for AgentError {
    fn from(e: E) -> Self {
        let (kind, message) = match (&e as &dyn std::error::Error).downcast_ref::<CodecError>() {
            // Only the decoder's complaint: the caller's error names the message type
            // itself (`to_runtime_error`), so it is not said twice.
            Some(CodecError::Invalid { reason, .. }) => (AgentErrorKind::Decode, reason.clone()),
            Some(other) => (AgentErrorKind::Decode, other.to_string()),
            None => (AgentErrorKind::Handler, e.to_string()),
        };
        Self {
            kind,
            message,
            keep_input: false,
        }
    }
}

/// An agent: handles one message at a time (the runtime guarantees it), may keep state.
#[async_trait]
pub trait Agent: Any + Send {
    /// Handles one message; `Ok(Some(reply))` answers an RPC, `Ok(None)` answers it
    /// with an empty reply. Replies to published events are dropped.
    async fn on_message(&mut self, message: Payload, ctx: &MessageContext) -> HandlerResult;

    /// The agent's state, persisted after any handler that changed it. `None`: stateless.
    async fn save_state(&mut self) -> Result<Option<Value>, AgentError> {
        Ok(None)
    }

    /// Restores state saved by [`Agent::save_state`], before the agent's next message.
    async fn load_state(&mut self, _state: Value) -> Result<(), AgentError> {
        Ok(())
    }
}

/// A message type an agent handles, with its reply.
#[async_trait]
pub trait Handler<M: Message>: Agent {
    /// The reply type: a [`Message`], `Option` of one, or `()` for none.
    type Reply: IntoReply;

    /// Handles one `M`.
    async fn handle(&mut self, message: M, ctx: &MessageContext)
    -> Result<Self::Reply, AgentError>;
}

/// What a typed handler may return.
pub trait IntoReply: Send {
    /// The encoded reply, if any.
    fn into_reply(self) -> Result<Option<Payload>, CodecError>;
}

impl IntoReply for () {
    fn into_reply(self) -> Result<Option<Payload>, CodecError> {
        Ok(None)
    }
}

impl<M: Message> IntoReply for M {
    fn into_reply(self) -> Result<Option<Payload>, CodecError> {
        Payload::encode(&self).map(Some)
    }
}

impl<M: Message> IntoReply for Option<M> {
    fn into_reply(self) -> Result<Option<Payload>, CodecError> {
        self.map(|m| Payload::encode(&m)).transpose()
    }
}

type DispatchFn<A> =
    for<'a> fn(&'a mut A, Payload, &'a MessageContext) -> BoxFuture<'a, HandlerResult>;

/// Routes messages to an agent's [`Handler`] impls by type name. Build it once (e.g.
/// in a `LazyLock`) and call [`Routes::dispatch`] from [`Agent::on_message`].
pub struct Routes<A> {
    entries: Vec<(&'static str, DispatchFn<A>)>,
}

impl<A: Agent> Default for Routes<A> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<A: Agent> Routes<A> {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes message type `M` to `A`'s `Handler<M>`.
    pub fn handle<M: Message>(mut self) -> Self
    where
        A: Handler<M>,
    {
        self.entries.push((M::TYPE_NAME, dispatch_to::<A, M>));
        self
    }

    /// The message type names routed.
    pub fn message_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(t, _)| *t)
    }

    /// Decodes `message` into its type and runs the matching handler. Unknown types
    /// are an [`AgentErrorKind::UnknownMessageType`] error, never a panic.
    pub async fn dispatch(
        &self,
        agent: &mut A,
        message: Payload,
        ctx: &MessageContext,
    ) -> HandlerResult {
        match self.entries.iter().find(|(t, _)| *t == message.type_name) {
            Some((_, f)) => f(agent, message, ctx).await,
            None => Err(AgentError::unknown_message_type(&message.type_name)),
        }
    }
}

fn dispatch_to<'a, A: Handler<M>, M: Message>(
    agent: &'a mut A,
    message: Payload,
    ctx: &'a MessageContext,
) -> BoxFuture<'a, HandlerResult> {
    Box::pin(async move {
        let decoded = message.decode::<M>()?;
        let reply = agent.handle(decoded, ctx).await?;
        Ok(reply.into_reply()?)
    })
}

type MakeAgent = dyn Fn(&AgentId) -> Box<dyn Agent> + Send + Sync;

/// Makes agents of one type on demand, one per key.
#[derive(Clone)]
pub struct AgentFactory {
    class: &'static str,
    make: Arc<MakeAgent>,
}

impl AgentFactory {
    /// A factory of `A`s; the closure gets the new agent's id.
    pub fn new<A: Agent>(make: impl Fn(&AgentId) -> A + Send + Sync + 'static) -> Self {
        Self {
            class: std::any::type_name::<A>(),
            make: Arc::new(move |id| Box::new(make(id))),
        }
    }

    /// The Rust type name of the agents made (for conflict checks and metadata).
    pub fn class(&self) -> &'static str {
        self.class
    }

    /// Makes the agent for `id`.
    pub fn make(&self, id: &AgentId) -> Box<dyn Agent> {
        (self.make)(id)
    }
}

impl fmt::Debug for AgentFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentFactory")
            .field("class", &self.class)
            .finish()
    }
}

/// A shared, lockable agent, as the runtimes hold it.
pub type SharedAgent = Arc<tokio::sync::Mutex<Box<dyn Agent>>>;

/// Locks `agent` as an `A`, or reports which class it really is.
pub async fn downcast_agent<A: Agent>(
    id: &AgentId,
    agent: SharedAgent,
    actual_class: &str,
) -> Result<tokio::sync::OwnedMappedMutexGuard<Box<dyn Agent>, A>, crate::RuntimeError> {
    let guard = agent.lock_owned().await;
    tokio::sync::OwnedMutexGuard::try_map(guard, |boxed| {
        (boxed.as_mut() as &mut dyn Any).downcast_mut::<A>()
    })
    .map_err(|_| crate::RuntimeError::WrongAgentClass {
        id: id.clone(),
        expected: std::any::type_name::<A>(),
        actual: actual_class.to_owned(),
    })
}
