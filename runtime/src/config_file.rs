//! The runtime's configuration file (DESIGN.md §5): what `switchboard-runtime run
//! --config FILE` reads, and what the operator writes into the runtime's ConfigMap.
//! One definition, used by both. Field names are camelCase, as in Kubernetes.
//!
//! ```yaml
//! kafka: { bootstrapServers: "127.0.0.1:9092", topicPrefix: demo }
//! runtime: { name: rt1, createTopics: true, maxConcurrency: 256 }
//! agents:
//!   - { type: echo,    builtin: echo }
//!   - { type: counter, builtin: counter }
//!   - { type: relay,   builtin: relay, relay: { publish: { topicType: out } } }
//!   - type: py
//!     http: { url: "http://127.0.0.1:8081/agents/py" }
//!     description: "Answers questions"        # A2A skill / MCP tool description
//!     messageTypes:                            # what A2A and MCP callers may send
//!       - { name: demo.Ask, schema: { type: object, required: [q] } }
//!   - { type: planner, code: {} }    # registered by the program itself
//!   - { type: assistant, llm: { model: { endpoint: "http://127.0.0.1:8000/v1", model: m } } }
//!   - { type: researcher, a2a: { url: "https://research.example/a2a", tokenEnv: TOKEN } }
//!   - { type: weather, mcp: { url: "http://127.0.0.1:8000/mcp", tool: get_weather } }
//! mcpServers:                          # MCP servers `llm` tools may call by name
//!   - { name: docs, url: "http://127.0.0.1:8000/mcp", tokenEnv: DOCS_TOKEN }
//! subscriptions:
//!   - { topicType: alerts, agentType: counter }
//!   - { topicTypePrefix: "team.", agentType: relay }
//!   - { topicType: orders, agentType: counter, source: { kafkaTopic: orders, keyFrom: "header:tenant" } }
//! http: { listen: "0.0.0.0:8080" }
//! ```
//!
//! Environment variables override the file: `SWITCHBOARD_BOOTSTRAP_SERVERS`,
//! `SWITCHBOARD_TOPIC_PREFIX`, `SWITCHBOARD_RUNTIME_NAME`, `SWITCHBOARD_CREATE_TOPICS`,
//! `SWITCHBOARD_HTTP_LISTEN`, `SWITCHBOARD_HTTP_TOKEN`, `SWITCHBOARD_GROUP_PROTOCOL`,
//! `SWITCHBOARD_GROUP_REMOTE_ASSIGNOR`, and the Kafka credentials
//! `SWITCHBOARD_SASL_USERNAME` / `SWITCHBOARD_SASL_PASSWORD` (which belong in a
//! Secret, never in the file).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, KafkaConfig, SaslCredentials};
use crate::defaults;
use crate::ids::validate_agent_type;
use crate::kafka::WorkerConfig;
use crate::subscription::{Subscription, SubscriptionSource};

mod agents;
pub use agents::{
    A2aAgentSettings, AgentEntry, Builtin, CodeAgent, HttpAgentSettings, McpAgentSettings,
    McpServerEntry, MessageTypeEntry, RelayPublish, RelaySettings,
};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeConfigFile {
    /// Kafka connection.
    pub kafka: KafkaSection,
    /// The runtime's identity and limits.
    pub runtime: RuntimeSection,
    /// Hosted agent types.
    #[serde(default)]
    pub agents: Vec<AgentEntry>,
    /// Subscriptions this runtime adds at start.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionEntry>,
    /// Remote MCP servers the agents' tools may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServerEntry>,
    /// The HTTP API (health, metrics, gateway).
    #[serde(default)]
    pub http: HttpSection,
}

/// `kafka:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSection {
    /// `HOST:PORT[,HOST:PORT...]`.
    #[serde(default)]
    pub bootstrap_servers: String,
    /// Topic prefix of the agent network.
    #[serde(default)]
    pub topic_prefix: String,
    /// Kafka `client.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// TLS/SASL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySection>,
    /// librdkafka producer properties (e.g. `linger.ms`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub producer: BTreeMap<String, String>,
    /// librdkafka consumer properties (e.g. `fetch.wait.max.ms`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumer: BTreeMap<String, String>,
    /// Group protocol of the inbox and events groups: `classic` or `consumer`
    /// (KIP-848); unset: the default (`KafkaConfig::group_protocol`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_protocol: Option<String>,
    /// Broker-side assignor with `groupProtocol: consumer` (`uniform`, `range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_remote_assignor: Option<String>,
}

/// `kafka.security:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecuritySection {
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`.
    pub protocol: String,
    /// SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`); credentials come
    /// from `SWITCHBOARD_SASL_USERNAME` / `SWITCHBOARD_SASL_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// PEM file of the CA for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_location: Option<String>,
    /// PEM file of the client certificate for mTLS (with `keyLocation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_location: Option<String>,
    /// PEM file of the client's private key for mTLS (with `certLocation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_location: Option<String>,
}

/// `runtime:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeSection {
    /// Runtime name (a DNS label); replicas share it.
    #[serde(default)]
    pub name: String,
    /// Create missing topics at start.
    #[serde(default = "yes")]
    pub create_topics: bool,
    /// Handlers running at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Partitions of topics created at start.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics created at start (broker default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// Default RPC timeout, milliseconds.
    #[serde(default = "default_rpc_timeout_ms")]
    pub rpc_timeout_ms: u64,
    /// Larger records are dead-lettered.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Deliver an event straight to its agent when this replica owns the agent's inbox
    /// partition (`WorkerConfig::local_delivery`); `false`: always through the inbox.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub local_delivery: bool,
    /// Journal durable steps in the state topic (`WorkerConfig::durable_steps`);
    /// `false`: steps of a redelivered message run again.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub durable_steps: bool,
    /// How long an ended A2A task is kept, milliseconds: then every replica forgets it
    /// and a tombstone removes it from the tasks topic (docs/a2a-mcp.md).
    #[serde(default = "default_task_retention_ms")]
    pub task_retention_ms: u64,
}

fn yes() -> bool {
    true
}
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if"
)]
fn is_true(b: &bool) -> bool {
    *b
}
fn default_concurrency() -> usize {
    defaults::MAX_CONCURRENCY
}
fn default_partitions() -> i32 {
    defaults::PARTITIONS
}
fn default_rpc_timeout_ms() -> u64 {
    defaults::RPC_TIMEOUT.as_millis() as u64
}
fn default_task_retention_ms() -> u64 {
    defaults::TASK_RETENTION.as_millis() as u64
}
fn default_max_message_bytes() -> usize {
    defaults::MAX_MESSAGE_BYTES
}

/// One entry of `subscriptions:`: exactly one of `topicType` and `topicTypePrefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionEntry {
    /// Exact topic type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_type: Option<String>,
    /// Topic type prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_type_prefix: Option<String>,
    /// Receiving agent type.
    pub agent_type: String,
    /// An existing Kafka topic read instead of the events topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceEntry>,
}

/// `source:` of a subscription (docs/protocol.md, "Source topics").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceEntry {
    /// The Kafka topic read.
    pub kafka_topic: String,
    /// `key` (default) or `header:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<String>,
}

/// `http:` of the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address of the HTTP API.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token required on `/v1` routes (prefer `SWITCHBOARD_HTTP_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
}

fn default_listen() -> String {
    "0.0.0.0:8080".to_owned()
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            bearer_token: None,
        }
    }
}

impl RuntimeConfigFile {
    /// Parses YAML; errors name the offending field path.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            ConfigError::invalid("config", "", format!("{e}{at}"))
        })
    }

    /// Serialises to YAML (what the operator writes into the ConfigMap).
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_yaml::to_string(self).map_err(|e| ConfigError::invalid("config", "", e.to_string()))
    }

    /// Applies `SWITCHBOARD_*` overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("SWITCHBOARD_BOOTSTRAP_SERVERS") {
            self.kafka.bootstrap_servers = v;
        }
        if let Some(v) = get("SWITCHBOARD_TOPIC_PREFIX") {
            self.kafka.topic_prefix = v;
        }
        if let Some(v) = get("SWITCHBOARD_RUNTIME_NAME") {
            self.runtime.name = v;
        }
        if let Some(v) = get("SWITCHBOARD_CREATE_TOPICS") {
            self.runtime.create_topics = v.parse().map_err(|_| {
                ConfigError::invalid("SWITCHBOARD_CREATE_TOPICS", &v, "must be true or false")
            })?;
        }
        if let Some(v) = get("SWITCHBOARD_HTTP_LISTEN") {
            self.http.listen = v;
        }
        if let Some(v) = get("SWITCHBOARD_HTTP_TOKEN") {
            self.http.bearer_token = Some(v);
        }
        if let Some(v) = get("SWITCHBOARD_GROUP_PROTOCOL") {
            v.parse::<crate::config::GroupProtocol>()
                .map_err(|e| ConfigError {
                    field: "SWITCHBOARD_GROUP_PROTOCOL".into(),
                    ..e
                })?;
            self.kafka.group_protocol = Some(v);
        }
        if let Some(v) = get("SWITCHBOARD_GROUP_REMOTE_ASSIGNOR") {
            self.kafka.group_remote_assignor = Some(v);
        }
        Ok(())
    }

    /// Checks what serde cannot: names, exactly-one-of rules, references. Errors
    /// name the field by its path, e.g. `agents[2].http.url`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrapServers",
                "",
                "is required",
            ));
        }
        crate::protocol::topics::validate_prefix(&self.kafka.topic_prefix).map_err(|e| {
            ConfigError {
                field: "kafka.topicPrefix".into(),
                ..e
            }
        })?;
        crate::protocol::topics::validate_runtime_name(&self.runtime.name)?;
        if self.runtime.task_retention_ms < 1000 {
            return Err(ConfigError::invalid(
                "runtime.taskRetentionMs",
                self.runtime.task_retention_ms,
                "must be at least 1000 (ms)",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            let at = |f: &str| format!("agents[{i}].{f}");
            validate_agent_type(&a.agent_type)
                .map_err(|e| ConfigError::invalid(at("type"), &a.agent_type, e.to_string()))?;
            if !seen.insert(a.agent_type.as_str()) {
                return Err(ConfigError::invalid(
                    at("type"),
                    &a.agent_type,
                    "is declared twice",
                ));
            }
            a.validate(i)?;
        }
        let mut servers = std::collections::BTreeSet::new();
        for (i, m) in self.mcp_servers.iter().enumerate() {
            m.validate(i)?;
            if !servers.insert(m.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("mcpServers[{i}].name"),
                    &m.name,
                    "is declared twice",
                ));
            }
        }
        for (i, a) in self.agents.iter().enumerate() {
            let Some(l) = &a.llm else { continue };
            for (j, t) in l.tools.iter().enumerate() {
                if let Some(m) = &t.mcp
                    && !servers.contains(m.server.as_str())
                {
                    return Err(ConfigError::invalid(
                        format!("agents[{i}].llm.tools[{j}].mcp.server"),
                        &m.server,
                        "is not the name of an entry of mcpServers",
                    ));
                }
            }
        }
        for (i, s) in self.subscriptions.iter().enumerate() {
            self.subscription(i, s)?;
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "http.listen",
                &self.http.listen,
                "must be IP:PORT",
            ));
        }
        Ok(())
    }

    fn subscription(&self, i: usize, s: &SubscriptionEntry) -> Result<Subscription, ConfigError> {
        let sub = self.route(i, s)?;
        if let Some(src) = &s.source {
            self.source_of(i, src, &sub)?;
        }
        Ok(sub)
    }

    fn source_of(
        &self,
        i: usize,
        src: &SourceEntry,
        sub: &Subscription,
    ) -> Result<SubscriptionSource, ConfigError> {
        let at = |f: &str| format!("subscriptions[{i}].source.{f}");
        let source =
            SubscriptionSource::new(&src.kafka_topic, src.key_from.as_deref()).map_err(|e| {
                let field = if e.starts_with("kafkaTopic") {
                    "kafkaTopic"
                } else {
                    "keyFrom"
                };
                let value = match field {
                    "kafkaTopic" => src.kafka_topic.clone(),
                    _ => src.key_from.clone().unwrap_or_default(),
                };
                ConfigError::invalid(at(field), value, e)
            })?;
        source
            .check(sub)
            .map_err(|e| ConfigError::invalid(at("kafkaTopic"), &src.kafka_topic, e))?;
        Ok(source)
    }

    fn route(&self, i: usize, s: &SubscriptionEntry) -> Result<Subscription, ConfigError> {
        let at = |f: &str| format!("subscriptions[{i}].{f}");
        if !self.agents.iter().any(|a| a.agent_type == s.agent_type) {
            return Err(ConfigError::invalid(
                at("agentType"),
                &s.agent_type,
                "is not one of this runtime's agents",
            ));
        }
        match (&s.topic_type, &s.topic_type_prefix) {
            (Some(t), None) => Subscription::for_type(t, &s.agent_type)
                .map_err(|e| ConfigError::invalid(at("topicType"), t, e.to_string())),
            (None, Some(p)) => Subscription::for_prefix(p, &s.agent_type)
                .map_err(|e| ConfigError::invalid(at("topicTypePrefix"), p, e.to_string())),
            _ => Err(ConfigError::invalid(
                at("topicType"),
                "",
                "exactly one of topicType and topicTypePrefix is required",
            )),
        }
    }

    /// The subscriptions declared without a `source`, with fresh ids.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>, ConfigError> {
        self.subscriptions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.source.is_none())
            .map(|(i, s)| self.subscription(i, s))
            .collect()
    }

    /// The subscriptions declared with a `source` (an existing Kafka topic), with
    /// fresh ids.
    pub fn source_subscriptions(
        &self,
    ) -> Result<Vec<(Subscription, SubscriptionSource)>, ConfigError> {
        self.subscriptions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let src = s.source.as_ref()?;
                Some(
                    self.route(i, s)
                        .and_then(|sub| Ok((sub.clone(), self.source_of(i, src, &sub)?))),
                )
            })
            .collect()
    }

    /// The runtime settings, reading SASL credentials through `get`.
    pub fn worker_config(
        &self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<WorkerConfig, ConfigError> {
        let mut kafka = KafkaConfig::new(&self.kafka.bootstrap_servers);
        if let Some(id) = &self.kafka.client_id {
            kafka.client_id = id.clone();
        }
        if let Some(sec) = &self.kafka.security {
            kafka.security_protocol = sec.protocol.parse()?;
            kafka.ssl_ca_location = sec.ca_location.clone();
            kafka.ssl_certificate_location = sec.cert_location.clone();
            kafka.ssl_key_location = sec.key_location.clone();
            if let Some(m) = &sec.sasl_mechanism {
                kafka.sasl = Some(SaslCredentials {
                    mechanism: m.parse().map_err(|e: ConfigError| ConfigError {
                        field: "kafka.security.saslMechanism".into(),
                        ..e
                    })?,
                    username: get("SWITCHBOARD_SASL_USERNAME").unwrap_or_default(),
                    password: get("SWITCHBOARD_SASL_PASSWORD").unwrap_or_default(),
                });
            }
        }
        kafka.producer = self.kafka.producer.clone();
        kafka.consumer = self.kafka.consumer.clone();
        if let Some(p) = &self.kafka.group_protocol {
            kafka.group_protocol = p.parse()?;
        }
        kafka.group_remote_assignor = self.kafka.group_remote_assignor.clone();
        let mut cfg = WorkerConfig::new(kafka, &self.kafka.topic_prefix, &self.runtime.name);
        cfg.create_topics = self.runtime.create_topics;
        cfg.max_concurrency = self.runtime.max_concurrency;
        cfg.partitions = self.runtime.partitions;
        cfg.replication_factor = self.runtime.replication_factor;
        cfg.rpc_timeout = Duration::from_millis(self.runtime.rpc_timeout_ms);
        cfg.max_message_bytes = self.runtime.max_message_bytes;
        cfg.local_delivery = self.runtime.local_delivery;
        cfg.durable_steps = self.runtime.durable_steps;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
kafka: { bootstrapServers: "127.0.0.1:9092", topicPrefix: demo }
runtime: { name: rt1, createTopics: true, maxConcurrency: 256 }
agents:
  - { type: echo,    builtin: echo }
  - { type: counter, builtin: counter }
  - { type: relay,   builtin: relay, relay: { publish: { topicType: out } } }
  - type: py
    http: { url: "http://127.0.0.1:8081/agents/py" }
    description: "Answers questions"
    messageTypes:
      - { name: demo.Ask, schema: { type: object, required: [q] } }
subscriptions:
  - { topicType: alerts, agentType: counter }
  - { topicTypePrefix: "team.", agentType: relay }
  - { topicType: orders, agentType: counter, source: { kafkaTopic: shop.orders, keyFrom: "header:tenant" } }
http: { listen: "0.0.0.0:8080" }
"#;

    fn err(yaml: &str) -> ConfigError {
        let parsed = RuntimeConfigFile::from_yaml(yaml);
        match parsed {
            Err(e) => e,
            Ok(c) => c.validate().unwrap_err(),
        }
    }

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let cfg = RuntimeConfigFile::from_yaml(EXAMPLE).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.agents.len(), 4);
        assert_eq!(cfg.agents[3].message_types[0].name, "demo.Ask");
        assert_eq!(
            cfg.agents[3].message_types[0].schema,
            Some(serde_json::json!({"type": "object", "required": ["q"]}))
        );
        assert_eq!(cfg.subscriptions().unwrap().len(), 2);
        let sourced = cfg.source_subscriptions().unwrap();
        assert_eq!(sourced.len(), 1);
        assert_eq!(sourced[0].1.kafka_topic, "shop.orders");
        assert_eq!(sourced[0].1.key_from.to_string(), "header:tenant");
        let again = RuntimeConfigFile::from_yaml(&cfg.to_yaml().unwrap()).unwrap();
        assert_eq!(again, cfg);
        let worker = cfg.worker_config(|_| None).unwrap();
        assert_eq!(
            (worker.runtime_name.as_str(), worker.topic_prefix.as_str()),
            ("rt1", "demo")
        );
        assert!(worker.local_delivery, "on unless turned off");
        let off = EXAMPLE.replace("maxConcurrency: 256", "localDelivery: false");
        let off = RuntimeConfigFile::from_yaml(&off).unwrap();
        assert!(!off.worker_config(|_| None).unwrap().local_delivery);
        assert!(off.to_yaml().unwrap().contains("localDelivery: false"));
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let e = err(&EXAMPLE.replace("builtin: echo", "builtin: ech0"));
        assert!(
            e.to_string().contains("agents[0]") && e.to_string().contains("ech0"),
            "{e}"
        );
        let e = err(&EXAMPLE.replace("http://127.0.0.1:8081/agents/py", "127.0.0.1:8081"));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("agents[3].http.url", "127.0.0.1:8081")
        );
        let e = err(&EXAMPLE.replace("runtime: { name: rt1, ", "runtime: { "));
        assert_eq!(e.field, "runtime.name");
        let e = err(&EXAMPLE.replace("agentType: counter", "agentType: nobody"));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("subscriptions[0].agentType", "nobody")
        );
        let e = err(&EXAMPLE.replace("header:tenant", "value"));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("subscriptions[2].source.keyFrom", "value")
        );
        let e = err(&EXAMPLE.replace("kafkaTopic: shop.orders", "kafkaTopic: \"a b\""));
        assert_eq!(e.field, "subscriptions[2].source.kafkaTopic");
        let remote = EXAMPLE.replace(
            "- { type: echo,    builtin: echo }",
            "- { type: echo, a2a: { url: \"http://127.0.0.1:1/a2a/x\", tokenEnv: T } }",
        );
        let cfg = RuntimeConfigFile::from_yaml(&remote).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.agents[0].a2a.as_ref().unwrap().timeout_ms, 30_000);
        let e = err(&remote.replace("http://127.0.0.1:1/a2a/x", "a2a/x"));
        assert_eq!(e.field, "agents[0].a2a.url");
        let e = err(&EXAMPLE.replace(
            "builtin: echo }",
            "builtin: echo, a2a: { url: \"http://h/a\" } }",
        ));
        assert_eq!(e.field, "agents[0].a2a", "{e}");
        let tool = EXAMPLE.replace(
            "- { type: echo,    builtin: echo }",
            "- { type: echo, mcp: { url: \"http://127.0.0.1:1/mcp\", tool: \"\" } }",
        );
        assert_eq!(err(&tool).field, "agents[0].mcp.tool");
        let e = err(&EXAMPLE.replace("schema: { type: object, required: [q] }", "schema: 3"));
        assert_eq!(e.field, "agents[3].messageTypes[0].schema");
        let e = err(&EXAMPLE.replace(
            "schema: { type: object, required: [q] }",
            "schema: { type: object, properties: { q: { pattern: \"^a\" } } }",
        ));
        assert_eq!(e.field, "agents[3].messageTypes[0].schema");
        assert!(e.reason.contains("properties.q.pattern"), "{e}");
        let e = err(&EXAMPLE.replace("maxConcurrency: 256", "taskRetentionMs: 10"));
        assert_eq!(e.field, "runtime.taskRetentionMs");
        let e = err(&EXAMPLE.replace("maxConcurrency", "maxConcurency"));
        assert!(e.to_string().contains("maxConcurency"), "{e}");
    }

    #[test]
    fn llm_entries_are_a_fourth_exclusive_kind() {
        let llm = "  - { type: assistant, llm: { model: { endpoint: \"http://127.0.0.1:1/v1\", model: m, apiKeyEnv: KEY } } }\n";
        let yaml = EXAMPLE.replace("subscriptions:\n", &format!("{llm}subscriptions:\n"));
        let cfg = RuntimeConfigFile::from_yaml(&yaml).unwrap();
        cfg.validate().unwrap();
        let again = RuntimeConfigFile::from_yaml(&cfg.to_yaml().unwrap()).unwrap();
        assert_eq!(again, cfg);
        let e = err(&yaml.replace(
            "type: assistant, llm:",
            "type: assistant, builtin: echo, llm:",
        ));
        assert_eq!(e.field, "agents[4].llm");
        let e = err(&yaml.replace("model: m,", "model: \"\","));
        assert_eq!(e.field, "agents[4].llm.model.model");
        let off = RuntimeConfigFile::from_yaml(
            &EXAMPLE.replace("maxConcurrency: 256", "durableSteps: false"),
        )
        .unwrap();
        assert!(!off.worker_config(|_| None).unwrap().durable_steps);
    }

    #[test]
    fn llm_mcp_tools_name_a_declared_server() {
        let llm = "  - { type: assistant, llm: { model: { endpoint: \"http://127.0.0.1:1/v1\", model: m }, tools: [{ mcp: { server: docs, tool: lookup } }] } }\n";
        let yaml = EXAMPLE.replace("subscriptions:\n", &format!("{llm}subscriptions:\n"));
        let e = err(&yaml);
        assert_eq!(e.field, "agents[4].llm.tools[0].mcp.server");
        let with =
            format!("{yaml}mcpServers:\n  - {{ name: docs, url: \"http://127.0.0.1:1/mcp\" }}\n");
        let cfg = RuntimeConfigFile::from_yaml(&with).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.mcp_servers[0].timeout_ms, 30_000);
        let again = RuntimeConfigFile::from_yaml(&cfg.to_yaml().unwrap()).unwrap();
        assert_eq!(again, cfg);
        let twice = format!("{with}  - {{ name: docs, url: \"http://127.0.0.1:2/mcp\" }}\n");
        assert_eq!(err(&twice).field, "mcpServers[1].name");
        let bad_url = with.replace("http://127.0.0.1:1/mcp", "127.0.0.1:1/mcp");
        assert_eq!(err(&bad_url).field, "mcpServers[0].url");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut cfg = RuntimeConfigFile::from_yaml(EXAMPLE).unwrap();
        cfg.apply_env(|k| match k {
            "SWITCHBOARD_BOOTSTRAP_SERVERS" => Some("k1:9093".into()),
            "SWITCHBOARD_TOPIC_PREFIX" => Some("other".into()),
            "SWITCHBOARD_GROUP_PROTOCOL" => Some("consumer".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.kafka.bootstrap_servers, "k1:9093");
        assert_eq!(cfg.kafka.topic_prefix, "other");
        let kafka = cfg.worker_config(|_| None).unwrap().kafka;
        assert_eq!(kafka.group_protocol, crate::config::GroupProtocol::Consumer);
        let e = cfg
            .apply_env(|k| (k == "SWITCHBOARD_GROUP_PROTOCOL").then(|| "eager".into()))
            .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("SWITCHBOARD_GROUP_PROTOCOL", "eager")
        );
        let yaml = EXAMPLE.replace(
            "topicPrefix: demo }",
            "topicPrefix: demo, groupProtocol: classic, groupRemoteAssignor: range }",
        );
        let e = RuntimeConfigFile::from_yaml(&yaml)
            .unwrap()
            .worker_config(|_| None)
            .unwrap_err();
        assert_eq!(e.field, "kafka.groupRemoteAssignor");
    }
}
