//! Switchboard runtime: AutoGen-style agents over Apache Kafka.
//!
//! The vocabulary follows AutoGen: agents are addressed by [`AgentId`] (`type/key`),
//! events are published to a [`TopicId`] (`type/source`). Every Kafka topic name the
//! runtime and the operator use is defined once, in [`topics`].

pub mod admin;
pub mod config;
pub mod ids;
pub mod topics;

pub use config::{ConfigError, KafkaConfig, SaslMechanism, SecurityProtocol};
pub use ids::{AgentId, IdError, TopicId};
pub use topics::TopicNames;
