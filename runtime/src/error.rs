//! Errors of the runtime API.

use std::time::Duration;

use rdkafka::error::KafkaError;

use crate::admin::AdminError;
use crate::config::ConfigError;
use crate::ids::{AgentId, IdError};
use crate::message::CodecError;

/// What went wrong in a runtime call. Every variant names the agent, type or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The type was registered twice in this runtime.
    #[error("agent type {0:?} is already registered in this runtime")]
    DuplicateAgentType(String),
    /// Another runtime of the same prefix hosts the type.
    #[error("agent type {agent_type:?} is already hosted by runtime {owner:?}")]
    AgentTypeTaken {
        /// The contested type.
        agent_type: String,
        /// The runtime that holds it.
        owner: String,
    },
    /// The same agent id was registered twice.
    #[error("agent {0} is already registered")]
    DuplicateAgentInstance(AgentId),
    /// A type was registered with two different agent classes, or as a factory
    /// after instances (or the reverse).
    #[error(
        "agent type {agent_type:?} is registered as {existing}; cannot also register {attempted}"
    )]
    AgentTypeConflict {
        /// The type.
        agent_type: String,
        /// How it is registered now.
        existing: String,
        /// What was attempted.
        attempted: String,
    },
    /// No runtime of the prefix hosts the type.
    #[error("no runtime hosts agent type {0:?}")]
    UnknownAgentType(String),
    /// This process cannot create the agent (not hosted here).
    #[error("agent {0} is not hosted by this process")]
    NotLocal(AgentId),
    /// The agent exists but is of another Rust type than asked for.
    #[error("agent {id} is a {actual}, not a {expected}")]
    WrongAgentClass {
        /// The agent.
        id: AgentId,
        /// The type asked for.
        expected: &'static str,
        /// The registered type.
        actual: String,
    },
    /// The recipient has no handler for the message type.
    #[error("agent {agent} has no handler for message type {message_type:?}")]
    UnknownMessageType {
        /// The recipient.
        agent: String,
        /// The unhandled type.
        message_type: String,
    },
    /// The runtime refused the message before any handler saw it (e.g. too large).
    #[error("message to agent {agent} was rejected: {reason}")]
    Rejected {
        /// The recipient.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The handler returned an error; `message` is its text.
    #[error("handler of agent {agent} failed: {message}")]
    Handler {
        /// The agent whose handler failed.
        agent: String,
        /// The handler's error text.
        message: String,
    },
    /// No reply within the deadline.
    #[error("RPC to {agent} timed out after {after:?}")]
    Timeout {
        /// The recipient.
        agent: AgentId,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The caller cancelled the RPC.
    #[error("RPC to {0} was cancelled")]
    Cancelled(AgentId),
    /// An agent sent an RPC to itself, which would deadlock its turn.
    #[error("agent {0} cannot send an RPC to itself")]
    SelfRpc(AgentId),
    /// No subscription with this id.
    #[error("no subscription with id {0:?}")]
    UnknownSubscription(String),
    /// An identifier was invalid.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A configuration value was invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Kafka refused or failed a request; `context` says which.
    #[error("kafka: {}{source}", with_colon(.context))]
    Kafka {
        /// What the runtime was doing, e.g. `producing to P.events`.
        context: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// A topic administration request failed (creating topics, reading partition counts).
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// Kafka did not get to the state needed in time (a topic not usable, a record
    /// not read back); the text names the topic or record.
    #[error("kafka: {0}")]
    Unavailable(String),
    /// A task of the runtime itself failed (a blocking Kafka call panicked).
    #[error("runtime task failed: {0}")]
    Task(String),
    /// The runtime is stopping or stopped.
    #[error("the runtime is stopped")]
    Stopped,
}

impl RuntimeError {
    /// A short, bounded label for metrics (never an agent or type name).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::DuplicateAgentType(_)
            | Self::AgentTypeTaken { .. }
            | Self::DuplicateAgentInstance(_)
            | Self::AgentTypeConflict { .. } => "registration",
            Self::UnknownAgentType(_) | Self::NotLocal(_) | Self::UnknownSubscription(_) => {
                "unknown_target"
            }
            Self::WrongAgentClass { .. } => "wrong_class",
            Self::UnknownMessageType { .. } => "unknown_message_type",
            Self::Handler { .. } => "handler",
            Self::Rejected { .. } => "rejected",
            Self::Timeout { .. } => "timeout",
            Self::Cancelled(_) => "cancelled",
            Self::SelfRpc(_) => "self_rpc",
            Self::Id(_) | Self::Config(_) => "invalid_input",
            Self::Codec(_) => "codec",
            Self::Kafka { .. } | Self::Admin(_) | Self::Unavailable(_) => "kafka",
            Self::Task(_) => "internal",
            Self::Stopped => "stopped",
        }
    }
}

impl RuntimeError {
    /// A Kafka error with what the runtime was doing.
    pub fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }
}

impl From<KafkaError> for RuntimeError {
    fn from(source: KafkaError) -> Self {
        Self::kafka(String::new(), source)
    }
}

fn with_colon(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    }
}
