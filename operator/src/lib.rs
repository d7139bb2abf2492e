//! The Switchboard operator: reconciles `AgentRuntime` and `AgentSubscription`
//! resources into Kafka topics and runtime pods.
//!
//! Each reconcile is a pipeline: dereference -> validate + build (pure) -> apply
//! (server-side apply, field manager `switchboard-operator`) -> status, written once
//! and only when it changed.
//!
//! # Layout (in reading order)
//! - [`run`] — the operator process minus its command line (HTTP endpoints, leader
//!   election, both controllers, orderly stop); [`controller`] runs the controllers.
//! - [`agent_runtime`] — reconciling an AgentRuntime: `build` (pure: spec -> desired
//!   objects, topics, config file), `status` (pure conditions), `autoscale`, and the
//!   apply/topics/status pipeline in its `mod.rs`.
//! - [`subscription`] — reconciling an AgentSubscription into a registry record.
//! - [`reply_gc`] — deleting reply-channel topics of processes whose heartbeats stopped.
//! - Kubernetes glue: [`apply`] (server-side apply, skipped when unchanged),
//!   [`client`], [`leader`], [`conditions`] (types and reasons).
//! - Kafka: [`kafka`] (topics and registry records behind a trait, for tests); topic
//!   names, specs and record formats come from `switchboard_runtime::protocol`.
//! - [`context`], [`error`] (bounded metric labels, backoff by class), [`metrics`],
//!   [`http`] (`/metrics`, `/healthz`).

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
pub mod reply_gc;
pub mod run;
pub mod subscription;

pub use context::Context;
pub use error::{Error, Result};
