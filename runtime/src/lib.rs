//! Switchboard runtime: AutoGen-style agents over Apache Kafka.
//!
//! The vocabulary follows AutoGen: agents are addressed by [`AgentId`] (`type/key`),
//! events are published to a [`TopicId`] (`type/source`) and routed to agent types by
//! [`Subscription`]s. An [`Agent`] handles one message at a time and may keep state.
//! [`InMemoryRuntime`] runs agents in one process (for unit tests); the Kafka runtime
//! runs them across many. Every Kafka topic name is defined once, in [`topics`].

pub mod admin;
pub mod agent;
pub mod api;
pub mod builtins;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod context;
pub mod error;
pub mod gateway;
pub mod http_agent;
pub mod ids;
pub mod kafka;
mod local;
pub mod memory;
pub mod message;
pub mod partitioner;
pub mod serve;
pub mod subscription;
pub mod telemetry;
pub mod topics;
pub mod trace;
pub mod wire;

pub use agent::{
    Agent, AgentError, AgentErrorKind, AgentFactory, Handler, HandlerResult, IntoReply, Routes,
};
pub use api::{AgentMetadata, AgentRuntime, AgentRuntimeExt, SendOptions};
pub use config::{ConfigError, KafkaConfig, SaslMechanism, SecurityProtocol};
pub use context::MessageContext;
pub use error::RuntimeError;
pub use ids::{AgentId, IdError, TopicId};
pub use kafka::{KafkaAgentRuntime, WorkerConfig};
pub use memory::InMemoryRuntime;
pub use message::{Message, Payload};
pub use subscription::Subscription;
pub use topics::TopicNames;
