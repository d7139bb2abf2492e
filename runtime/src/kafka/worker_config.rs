//! Settings of one runtime process: which network (prefix), which runtime, limits.

use std::time::Duration;

use crate::config::{ConfigError, KafkaConfig};
use crate::defaults;
use crate::protocol::topics::{TopicNames, instance_prefix, validate_runtime_name};

/// Everything a [`super::KafkaAgentRuntime`] needs; validate once with
/// [`WorkerConfig::validate`] (the runtime does it on construction).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Kafka connection and client tuning.
    pub kafka: KafkaConfig,
    /// Topic prefix: runtimes sharing it form one agent network.
    pub topic_prefix: String,
    /// This runtime's name; its replicas share it (and its inbox).
    pub runtime_name: String,
    /// Unique per process; names the reply channel. Default: `<runtime>.` + random
    /// (least-privilege ACLs rely on that prefix).
    pub instance_id: String,
    /// Create missing topics at start (development); the operator turns it off.
    pub create_topics: bool,
    /// Partitions of topics created here (inbox, state, dlq, events).
    pub partitions: i32,
    /// Replication factor of topics created here; `None`: the broker's default.
    pub replication_factor: Option<i32>,
    /// Handlers running at once in this process.
    pub max_concurrency: usize,
    /// Default RPC timeout.
    pub rpc_timeout: Duration,
    /// Pause an inbox partition at this many records in flight.
    pub max_in_flight_per_partition: usize,
    /// Records with a larger value are dead-lettered.
    pub max_message_bytes: usize,
    /// How often each replica writes its heartbeat to the registry.
    pub heartbeat_interval: Duration,
    /// A runtime with no heartbeat for this long loses its agent types.
    pub liveness_timeout: Duration,
    /// How long stop and revocation wait for in-flight handlers.
    pub drain_timeout: Duration,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
    /// Deliver an event straight to the agent's mailbox when this replica owns its
    /// inbox partition, instead of forwarding it through the inbox topic (same order
    /// and commit rules; see `handoff`). Off: every delivery takes the inbox.
    pub local_delivery: bool,
    /// Journal the results of durable steps (`ctx.step`) so that a redelivered
    /// message replays them; off: every step runs again on redelivery.
    pub durable_steps: bool,
}

impl WorkerConfig {
    /// Defaults for runtime `runtime_name` on prefix `topic_prefix`.
    pub fn new(
        kafka: KafkaConfig,
        topic_prefix: impl Into<String>,
        runtime_name: impl Into<String>,
    ) -> Self {
        let runtime_name = runtime_name.into();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            kafka,
            topic_prefix: topic_prefix.into(),
            // `<runtime>.` first: least-privilege ACLs grant a runtime its reply
            // channels and restore groups by that prefix (docs/security.md).
            instance_id: format!("{}{}", instance_prefix(&runtime_name), &suffix[..10]),
            runtime_name,
            create_topics: true,
            partitions: defaults::PARTITIONS,
            replication_factor: None,
            max_concurrency: defaults::MAX_CONCURRENCY,
            rpc_timeout: defaults::RPC_TIMEOUT,
            max_in_flight_per_partition: defaults::MAX_IN_FLIGHT_PER_PARTITION,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            liveness_timeout: defaults::LIVENESS_TIMEOUT,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            commit_interval: defaults::COMMIT_INTERVAL,
            local_delivery: true,
            durable_steps: true,
        }
    }

    /// Reads [`KafkaConfig::from_env`] plus `SWITCHBOARD_TOPIC_PREFIX`,
    /// `SWITCHBOARD_RUNTIME_NAME` (required), `SWITCHBOARD_CREATE_TOPICS`,
    /// `SWITCHBOARD_PARTITIONS`, `SWITCHBOARD_MAX_CONCURRENCY`, `SWITCHBOARD_RPC_TIMEOUT_MS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`WorkerConfig::from_env`], reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let kafka = KafkaConfig::from_lookup(&get)?;
        let name = get("SWITCHBOARD_RUNTIME_NAME")
            .ok_or_else(|| ConfigError::invalid("SWITCHBOARD_RUNTIME_NAME", "", "is required"))?;
        let prefix = get("SWITCHBOARD_TOPIC_PREFIX").unwrap_or_else(|| "switchboard".to_owned());
        let mut cfg = Self::new(kafka, prefix, name);
        if let Some(v) = get("SWITCHBOARD_CREATE_TOPICS") {
            cfg.create_topics = parse(&v, "SWITCHBOARD_CREATE_TOPICS")?;
        }
        if let Some(v) = get("SWITCHBOARD_PARTITIONS") {
            cfg.partitions = parse(&v, "SWITCHBOARD_PARTITIONS")?;
        }
        if let Some(v) = get("SWITCHBOARD_MAX_CONCURRENCY") {
            cfg.max_concurrency = parse(&v, "SWITCHBOARD_MAX_CONCURRENCY")?;
        }
        if let Some(v) = get("SWITCHBOARD_RPC_TIMEOUT_MS") {
            cfg.rpc_timeout = Duration::from_millis(parse(&v, "SWITCHBOARD_RPC_TIMEOUT_MS")?);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field; errors name it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked_names().map(|_| ())
    }

    /// Checks every field and returns the topic names of the prefix (the one place the
    /// runtime validates its prefix).
    pub(crate) fn checked_names(&self) -> Result<TopicNames, ConfigError> {
        self.kafka.validate()?;
        let names = TopicNames::new(&self.topic_prefix)?;
        validate_runtime_name(&self.runtime_name)?;
        if self.instance_id.is_empty()
            || !self
                .instance_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::invalid(
                "runtime.instanceId",
                &self.instance_id,
                "must be [A-Za-z0-9._-]+",
            ));
        }
        if self.partitions < 1 {
            return Err(ConfigError::invalid(
                "topics.partitions",
                self.partitions,
                "must be at least 1",
            ));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError::invalid(
                "runtime.maxConcurrency",
                0,
                "must be at least 1",
            ));
        }
        if self.rpc_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "runtime.rpcTimeout",
                "0",
                "must be positive",
            ));
        }
        if self.liveness_timeout <= self.heartbeat_interval * 2 {
            return Err(ConfigError::invalid(
                "runtime.livenessTimeout",
                format!("{:?}", self.liveness_timeout),
                "must exceed two heartbeat intervals",
            ));
        }
        Ok(names)
    }
}

fn parse<T: std::str::FromStr>(value: &str, field: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::invalid(field, value, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_env_requires_a_runtime_name_and_names_bad_values() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let err = WorkerConfig::from_lookup(env(&[("SWITCHBOARD_BOOTSTRAP_SERVERS", "k:9092")]))
            .unwrap_err();
        assert_eq!(err.field, "SWITCHBOARD_RUNTIME_NAME");
        let err = WorkerConfig::from_lookup(env(&[
            ("SWITCHBOARD_BOOTSTRAP_SERVERS", "k:9092"),
            ("SWITCHBOARD_RUNTIME_NAME", "rt1"),
            ("SWITCHBOARD_MAX_CONCURRENCY", "lots"),
        ]))
        .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.value.as_str()),
            ("SWITCHBOARD_MAX_CONCURRENCY", "lots")
        );
        let cfg = WorkerConfig::from_lookup(env(&[
            ("SWITCHBOARD_BOOTSTRAP_SERVERS", "k:9092"),
            ("SWITCHBOARD_RUNTIME_NAME", "rt1"),
            ("SWITCHBOARD_TOPIC_PREFIX", "demo"),
        ]))
        .unwrap();
        assert!(cfg.instance_id.starts_with("rt1."), "{}", cfg.instance_id);
        assert_eq!(cfg.topic_prefix, "demo");
    }
}
