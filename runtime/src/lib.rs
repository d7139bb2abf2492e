//! Switchboard runtime: AutoGen-style agents over Apache Kafka.
//!
//! The vocabulary follows AutoGen: agents are addressed by [`AgentId`] (`type/key`),
//! events are published to a [`TopicId`] (`type/source`) and routed to agent types by
//! [`Subscription`]s. An [`Agent`] handles one message at a time and may keep state.
//! [`InMemoryRuntime`] runs agents in one process (for unit tests); the Kafka runtime
//! runs them across many. Every Kafka topic, group and record is defined once, in
//! [`protocol`].
//!
//! # Layout (in reading order)
//! - The agent API: [`ids`] (agent and topic ids), [`message`] (typed messages and
//!   their [`Payload`]), [`agent`] (the [`Agent`] trait, typed routes, handler
//!   errors), [`context`] (what a handler can do while it runs), [`durable`] (steps
//!   of a handler that run once per message), [`subscription`],
//!   [`api`] (the [`AgentRuntime`] trait both runtimes implement), [`error`].
//! - Runtimes: [`memory`] (in-process, for tests), [`kafka`] (over Kafka; its module
//!   doc lists its parts), with `local` (agent instances and mailboxes, shared by both).
//! - What crosses Kafka: [`protocol`] (topic and group names, registry records, the
//!   record format, the partitioner), [`admin`] (creating and growing topics),
//!   [`trace`] (W3C trace context on records and spans), [`acls`] (the Kafka ACLs a
//!   runtime and the operator need, from the same names), [`access`] (checking them at
//!   start and naming the cause when the broker refuses).
//! - Configuration: [`config`] (Kafka connection and security), [`config_file`] (the
//!   runtime's YAML file, as the operator writes it), [`llm_config`] (its `llm:` agent
//!   entries), [`defaults`] (each default once), [`json_schema`] (the schema subset of
//!   declared message types, and its validator).
//! - The server, behind the default `server` feature: [`serve`] (hosting the agents of
//!   a config file), [`builtins`], [`http_agent`] (and [`http_steps`], their durable
//!   steps), [`llm`] (model-backed agents),
//!   [`a2a_agent`] (remote A2A agents), [`mcp_client`] (remote MCP tools), [`gateway`]
//!   (HTTP API, probes, metrics, the A2A and MCP servers), [`telemetry`] (logs and
//!   OTLP), [`cli`] (the `switchboard-runtime`
//!   binary's verbs).

pub mod access;
pub mod acls;
pub mod admin;
pub mod agent;
pub mod api;
pub mod config;
pub mod config_file;
pub mod context;
pub mod defaults;
pub mod durable;
pub mod error;
pub mod ids;
pub mod json_schema;
pub mod kafka;
pub mod llm_config;
mod local;
pub mod memory;
pub mod message;
pub mod protocol;
pub mod subscription;
pub mod trace;

#[cfg(feature = "server")]
pub mod a2a_agent;
#[cfg(feature = "server")]
pub mod builtins;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod gateway;
#[cfg(feature = "server")]
pub mod http_agent;
#[cfg(feature = "server")]
pub mod http_steps;
#[cfg(feature = "server")]
pub mod llm;
#[cfg(feature = "server")]
pub mod mcp_client;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "server")]
pub mod telemetry;

pub use agent::{
    Agent, AgentError, AgentErrorKind, AgentFactory, Handler, HandlerResult, IntoReply, Routes,
};
pub use api::{AgentMetadata, AgentRuntime, AgentRuntimeExt, SendOptions};
pub use config::{ConfigError, GroupProtocol, KafkaConfig, SaslMechanism, SecurityProtocol};
pub use context::MessageContext;
pub use error::RuntimeError;
pub use ids::{AgentId, IdError, TopicId};
pub use kafka::{KafkaAgentRuntime, WorkerConfig};
pub use memory::InMemoryRuntime;
pub use message::{Message, Payload};
pub use protocol::topics::TopicNames;
pub use subscription::Subscription;
