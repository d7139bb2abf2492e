//! `AgentSubscription`: routes events of a topic type to an agent type.

// kube's repeated `printcolumn(...)` attributes trip this lint by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::agent_runtime::KafkaSpec;

/// Delivers events published to a topic type (or type prefix) to an agent type hosted
/// by an AgentRuntime; the event's topic source becomes the recipient agent's key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "AgentSubscription",
    namespaced,
    shortname = "asub",
    category = "switchboard",
    status = "AgentSubscriptionStatus",
    derive = "PartialEq",
    doc = "AgentSubscription delivers events of a topic type to an agent type of an AgentRuntime.",
    printcolumn(
        name = "Runtime",
        type_ = "string",
        json_path = ".spec.runtimeRef.name"
    ),
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.agentType"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.topicType) != has(self.topicTypePrefix)")
    .message("exactly one of topicType and topicTypePrefix is required"))]
#[serde(rename_all = "camelCase")]
pub struct AgentSubscriptionSpec {
    /// The AgentRuntime (same namespace) hosting the agent type.
    pub runtime_ref: RuntimeRef,
    /// The agent type receiving the events (hosted by the referenced runtime).
    #[schemars(length(min = 1, max = 63))]
    pub agent_type: String,
    /// Exact topic type to match. Exactly one of topicType and topicTypePrefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_type: Option<String>,
    /// Topic type prefix to match. Exactly one of topicType and topicTypePrefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_type_prefix: Option<String>,
    /// Bind an existing Kafka topic as the event source of this subscription: its
    /// records (CloudEvents or plain JSON/bytes) are delivered to the agent type
    /// instead of events from the network's events topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SubscriptionSource>,
}

/// Reference to an AgentRuntime in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRef {
    /// AgentRuntime name.
    pub name: String,
}

/// An existing Kafka topic read as events, in the runtime's events consumer group
/// (from its end offsets the first time). A plain record's topic type is `topicType`,
/// or the Kafka topic name under `topicTypePrefix`; a CloudEvents record keeps its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSource {
    /// The Kafka topic to read (must exist; Ready says when the runtime reads it).
    #[schemars(length(min = 1, max = 249))]
    pub kafka_topic: String,
    /// Where a plain record's topic source (the recipient agent's key) comes from:
    /// `key` (the record key, default) or `header:<name>`. A record without it is
    /// dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<String>,
}

/// Observed state of an AgentSubscription.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSubscriptionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Id of the subscription record in the registry topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// Where the record was written (copied from the runtime at accept time), so it
    /// can be tombstoned even after the AgentRuntime is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryLocation>,
    /// Accepted, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The registry topic a subscription record was written to, and how to reach it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryLocation {
    /// Registry topic name.
    pub topic: String,
    /// The runtime's Kafka settings at accept time (Secret names, never secrets).
    pub kafka: KafkaSpec,
}
