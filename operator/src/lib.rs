//! The Switchboard operator: reconciles `AgentRuntime` and `AgentSubscription`
//! resources into Kafka topics and runtime pods.
//!
//! Each reconcile is a pipeline: dereference -> validate + build (pure) -> apply
//! (server-side apply, field manager `switchboard-operator`) -> status, written once
//! and only when it changed.

pub mod agent_runtime;
pub mod apply;
pub mod cli;
pub mod client;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod error;
pub mod http;
pub mod kafka;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod subscription;

pub use context::Context;
pub use error::{Error, Result};
