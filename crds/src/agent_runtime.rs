//! `AgentRuntime`: a set of runtime pods hosting agent types over one Kafka prefix.

// kube's repeated `printcolumn(...)` attributes trip this lint by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Container, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::llm_agent::LlmAgentSpec;

/// Desired state of an AgentRuntime: which agents to host, on how many pods, over
/// which Kafka cluster and topic prefix.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "AgentRuntime",
    namespaced,
    shortname = "ar",
    category = "switchboard",
    status = "AgentRuntimeStatus",
    derive = "PartialEq",
    doc = "AgentRuntime runs Switchboard runtime pods hosting a set of agent types, with the Kafka topics they use.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))")
        .message("replicas and autoscaling are mutually exclusive"),
    validation = Rule::new("self.agents.all(a, self.agents.exists_one(b, b.type == a.type))")
        .message("agent types must be unique within an AgentRuntime")
        .field_path(".agents"),
    validation = Rule::new("!self.agents.exists(a, has(a.code)) || (has(self.template) && has(self.template.command))")
        .message("agents with code: {} are registered by the runtime's program: set template.command to run it")
        .field_path(".template"),
    validation = Rule::new("self.agents.all(a, !has(a.llm) || !has(a.llm.tools) || a.llm.tools.all(t, !has(t.mcp) || (has(self.mcpServers) && self.mcpServers.exists(s, s.name == t.mcp.server))))")
        .message("an llm tool's mcp.server must be the name of an entry of mcpServers")
        .field_path(".agents")
)]
#[serde(rename_all = "camelCase")]
pub struct AgentRuntimeSpec {
    /// Container image of the runtime. Defaults to the operator's --runtime-image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of runtime pods (default 1). Mutually exclusive with autoscaling. For
    /// CPU or custom-metric scaling, set replicas and point a HorizontalPodAutoscaler
    /// at this AgentRuntime: it writes replicas through the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Let the operator size the Deployment from the inbox consumer lag:
    /// ceil(lag / lagPerReplica) within [minReplicas, maxReplicas] and never above the
    /// inbox partition count; up at once, down after the lower figure held for the
    /// operator's stabilization window (5 minutes by default). Mutually exclusive with
    /// replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// The Kafka cluster and topic prefix this runtime joins.
    pub kafka: KafkaSpec,
    /// Partitioning, replication and configs of the runtime's topics.
    #[serde(default)]
    pub topics: TopicsSpec,
    /// The agent types this runtime hosts. A type belongs to exactly one runtime per prefix.
    #[schemars(length(min = 1, max = 64))]
    pub agents: Vec<AgentSpec>,
    /// Remote MCP servers whose tools the `llm` agents may call (`llm.tools[].mcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(o, o.name == s.name))")
        .message("mcpServers names must be unique"))]
    pub mcp_servers: Vec<McpServerSpec>,
    /// Overrides for the runtime pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodOverrides>,
    /// What happens to the Kafka topics when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Lag-based autoscaling, done by the operator itself (no HPA involved).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest runtime pods, also with no lag at all.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most runtime pods; the inbox partition count caps it further (a pod without a
    /// partition would have nothing to consume).
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Target consumer lag (records not yet processed) per pod. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub lag_per_replica: Option<i64>,
}

/// Kafka connection for the runtime.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.groupRemoteAssignor) || (has(self.groupProtocol) && self.groupProtocol == 'consumer')")
        .message("groupRemoteAssignor is only allowed with groupProtocol consumer")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Comma-separated HOST:PORT list of brokers.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// Prefix of every topic; runtimes sharing a prefix form one agent network.
    /// Defaults to `switchboard.<namespace>`. Characters `[A-Za-z0-9._-]`, not starting
    /// or ending with `.`, at most 179 characters (room for the runtime suffixes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 179))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]([A-Za-z0-9._-]*[A-Za-z0-9_-])?$')")
        .message("topicPrefix must be a Kafka topic name: characters [A-Za-z0-9._-], not starting or ending with '.'"))]
    pub topic_prefix: Option<String>,
    /// TLS and SASL settings. Plaintext when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<KafkaSecurity>,
    /// Consumer group protocol of the runtime's inbox and events groups: `consumer`
    /// (KIP-848, Kafka 4.0+) or `classic`. Default: the runtime's (docs/tuning.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_protocol: Option<GroupProtocol>,
    /// Broker-side partition assignor with `groupProtocol: consumer`. Default: the
    /// broker's (`uniform`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_remote_assignor: Option<RemoteAssignor>,
}

/// Consumer group protocols (Kafka's `group.protocol`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// Classic JoinGroup/SyncGroup rebalances, cooperative-sticky assignment.
    Classic,
    /// KIP-848: broker-side assignment, no group-wide rebalance barrier.
    Consumer,
}

/// Broker-side assignors of the consumer protocol (`group.remote.assignor`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RemoteAssignor {
    /// Spreads partitions evenly, sticky.
    Uniform,
    /// Kafka's range assignment (co-partitioned topics land together).
    Range,
}

/// Transport security and authentication.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.sasl) == (self.protocol == 'SASL_PLAINTEXT' || self.protocol == 'SASL_SSL')")
        .message("kafka.security.sasl is required with SASL_PLAINTEXT/SASL_SSL and forbidden otherwise"),
    validation = Rule::new("!has(self.tls) || self.protocol == 'SSL' || self.protocol == 'SASL_SSL'")
        .message("kafka.security.tls is only allowed with SSL or SASL_SSL"),
)]
pub struct KafkaSecurity {
    /// Kafka security.protocol.
    pub protocol: SecurityProtocol,
    /// SASL mechanism and the Secret holding the credentials (SASL protocols only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
    /// CA bundle for verifying the brokers (TLS protocols only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// Kafka security.protocol values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

/// SASL settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaslSpec {
    /// SASL mechanism.
    pub mechanism: SaslMechanism,
    /// Secret in the same namespace with the username and password.
    pub secret_ref: CredentialsSecretRef,
}

/// SASL mechanisms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    /// PLAIN (use with TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM-SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// A Secret holding SASL credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret name.
    pub name: String,
    /// Key of the username. Default `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,
    /// Key of the password. Default `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
}

/// TLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret in the same namespace holding the CA certificate (PEM).
    pub ca_secret_ref: SecretKeyRef,
    /// Secret in the same namespace holding this runtime's client certificate and
    /// private key (PEM) for mTLS, e.g. a `kubernetes.io/tls` Secret. The key is
    /// mounted as a file, never put into the environment or the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<ClientCertSecretRef>,
}

/// A Secret holding a client certificate and its private key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertSecretRef {
    /// Secret name.
    pub name: String,
    /// Key of the certificate (PEM). Default `tls.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_key: Option<String>,
    /// Key of the private key (PEM, unencrypted). Default `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_key: Option<String>,
}

/// One key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret. Default `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Topic settings applied to the runtime's inbox, state and dlq topics and to the
/// prefix's shared registry and events topics.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicsSpec {
    /// Partitions of the inbox and state topics (and of events when created here).
    /// Bounds useful replicas. May grow, never shrink.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    #[x_kube(validation = Rule::new("self >= oldSelf")
        .message("topics.partitions may grow but never shrink (Kafka cannot remove partitions)"))]
    pub partitions: i32,
    /// Replication factor when creating topics. Unset: the broker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replication_factor: Option<i32>,
    /// Extra topic configs (e.g. `retention.ms`) applied to the runtime's topics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// How long an ended A2A task is kept, seconds (default 86400; `i64`, since the API
    /// server knows no `uint64` format): then every replica
    /// forgets it and a tombstone removes it from the `P.<runtime>.tasks` topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub task_retention_seconds: Option<i64>,
}

fn default_partitions() -> i32 {
    3
}

impl Default for TopicsSpec {
    fn default() -> Self {
        Self {
            partitions: default_partitions(),
            replication_factor: None,
            config: BTreeMap::new(),
            task_retention_seconds: None,
        }
    }
}

/// One hosted agent type: a built-in agent, an HTTP agent, an agent the runtime's
/// program registers itself (`code: {}`), a model-backed agent (`llm`), a remote A2A
/// agent, or one tool of a remote MCP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("[has(self.builtin), has(self.http), has(self.code), has(self.llm), has(self.a2a), has(self.mcp)].filter(k, k).size() == 1")
        .message("exactly one of builtin, http, code, llm, a2a and mcp is required"),
    validation = Rule::new("!has(self.relay) || (has(self.builtin) && self.builtin == 'relay')")
        .message("relay settings are only for the relay builtin")
        .field_path(".relay"),
    validation = Rule::new("!has(self.builtin) || self.builtin != 'relay' || has(self.relay)")
        .message("the relay builtin needs relay.publish.topicType")
        .field_path(".relay")
)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Agent type name, unique within the prefix: 1-63 characters of `[A-Za-z0-9_.-]`.
    #[serde(rename = "type")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_.-]+$')")
        .message("agent type must be 1-63 characters of [A-Za-z0-9_.-]"))]
    pub agent_type: String,
    /// A built-in agent implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinAgent>,
    /// Settings of the built-in `relay` agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelaySpec>,
    /// An agent served over HTTP (any language); each message is POSTed as a CloudEvent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAgentSpec>,
    /// An agent the runtime's own program registers (for example an AutoGen agent in
    /// Python under `python -m switchboard serve`): `code: {}`. The entry declares the
    /// type to the operator, the registry and subscriptions; the pod fails to start
    /// if its program does not register it. Needs `template.command` (the program) and
    /// usually `image` (an image that has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeAgentSpec>,
    /// A model-backed agent: an OpenAI-compatible Chat Completions model, other agent
    /// types as tools, conversation memory per key; every model and tool call is a
    /// durable step (not repeated when a message is redelivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmAgentSpec>,
    /// A remote A2A agent: every message is sent to it (A2A `SendMessage`, JSON-RPC
    /// binding) and its result is the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a: Option<A2aAgentSpec>,
    /// One tool of a remote MCP server (Streamable HTTP, 2026-07-28): every message is
    /// the tool's arguments, and its result is the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpAgentSpec>,
    /// What the agent does: the description of its A2A skill and MCP tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub description: Option<String>,
    /// The message types the agent accepts. A2A and MCP callers may send only these
    /// (none listed: any), and the MCP tool's input schema is built from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_types: Vec<MessageTypeSpec>,
}

/// A remote A2A agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct A2aAgentSpec {
    /// The remote agent's JSON-RPC endpoint (its agent card's `supportedInterfaces[].url`
    /// with `protocolBinding: JSONRPC`).
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("a2a.url must be an http(s) URL"))]
    pub url: String,
    /// Secret key holding the bearer token sent to the remote agent. Default key `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// How long one message may take, in seconds (1-3600). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
}

/// A remote MCP server (Streamable HTTP) whose tools agents may call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpServerSpec {
    /// The name tools refer to it by (letters, digits, `-`, `_`).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]+$')")
        .message("mcpServers[].name must be letters, digits, '-' or '_'"))]
    pub name: String,
    /// The server's Streamable HTTP endpoint, e.g. `http://tools:8000/mcp`.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("mcpServers[].url must be an http(s) URL"))]
    pub url: String,
    /// Secret key holding the bearer token sent to the server. Default key `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// How long one call may take, in seconds (1-3600). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
}

/// One tool of a remote MCP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpAgentSpec {
    /// The server's Streamable HTTP endpoint, e.g. `http://tools:8000/mcp`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("mcp.url must be an http(s) URL"))]
    pub url: String,
    /// The tool's name.
    #[schemars(length(min = 1, max = 128))]
    pub tool: String,
    /// Secret key holding the bearer token sent to the server. Default key `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// How long one call may take, in seconds (1-3600). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
}

/// One message type an agent accepts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageTypeSpec {
    /// The message type name (the `ce-type` of its records).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// JSON Schema of the message's data (the MCP tool's `message` input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_object")]
    pub schema: Option<serde_json::Value>,
}

/// A JSON object kept as written (a JSON Schema document).
fn any_json_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// `code: {}`: the agent comes from the runtime's program; nothing to configure here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeAgentSpec {}

/// Built-in agents.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinAgent {
    /// Replies with the message it got.
    Echo,
    /// Counts messages per key in its state; replies `{"count": n}`.
    Counter,
    /// Publishes every message it gets to a topic.
    Relay,
}

/// Where the relay agent publishes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelaySpec {
    /// Topic to publish to; the source is the relay agent's key.
    pub publish: RelayTarget,
}

/// A topic type to publish to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayTarget {
    /// Topic type.
    pub topic_type: String,
}

/// An HTTP agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpAgentSpec {
    /// URL the runtime POSTs each message to (typically a sidecar on localhost).
    pub url: String,
    /// Per-request timeout in seconds (1-3600). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
}

/// Overrides for the runtime pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Command (entrypoint) of the runtime container, for images whose program hosts
    /// the agents, e.g. `[python, -m, switchboard, serve, --agents, team:register]`.
    /// Default `[switchboard-runtime]`. The container gets `SWITCHBOARD_CONFIG` (the
    /// mounted config file's path); `$(SWITCHBOARD_CONFIG)` expands in command and args.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments of the runtime container. Default `[run, --config, $(SWITCHBOARD_CONFIG)]`
    /// without `command`, none with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Resources of the runtime container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables of the runtime container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Extra containers in the pod, e.g. HTTP agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<Container>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What happens to the Kafka topics when the AgentRuntime is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the topics (and their data).
    #[default]
    Retain,
    /// Delete the runtime's inbox, state and dlq topics.
    Delete,
}

/// Observed state of an AgentRuntime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRuntimeStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Runtime pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Runtime pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the runtime pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The Kafka topics and their partition counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicStatus>,
    /// Inbox records the runtime has not processed yet, summed over partitions: end
    /// offset minus the runtime's committed offset, or minus the earliest retained
    /// offset where its consumer group never committed. Refreshed at every resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Ready, TopicsReady, Available, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One topic as found in Kafka.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
}
