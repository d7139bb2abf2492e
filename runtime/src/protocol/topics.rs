//! The one definition of every Kafka topic Switchboard uses (DESIGN.md §3): names,
//! and how each is created (partitions, compaction).
//!
//! A prefix `P` names one agent network; runtimes sharing a prefix on one cluster see
//! each other's agents.

use std::collections::BTreeMap;

use crate::config::ConfigError;

/// Kafka's own limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;
/// Longest suffix a runtime topic gets: `.<runtime>.inbox` with a 63-char runtime name.
const LONGEST_RUNTIME_SUFFIX: usize = 1 + 63 + 6;

/// Topic and consumer group names for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
}

impl TopicNames {
    /// Validates the prefix (Kafka topic characters, room left for our suffixes).
    pub fn new(prefix: impl Into<String>) -> Result<Self, ConfigError> {
        let prefix = prefix.into();
        validate_prefix(&prefix)?;
        Ok(Self { prefix })
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Compacted: agent type claims, subscriptions, runtime heartbeats.
    pub fn registry(&self) -> String {
        format!("{}.registry", self.prefix)
    }

    /// Every `publish_message`, keyed by topic source.
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// RPC requests and event deliveries for one runtime's agents, keyed by agent key.
    pub fn inbox(&self, runtime: &str) -> String {
        format!("{}.{runtime}.inbox", self.prefix)
    }

    /// Compacted agent state snapshots of one runtime, keyed by agent id.
    pub fn state(&self, runtime: &str) -> String {
        format!("{}.{runtime}.state", self.prefix)
    }

    /// Compacted A2A tasks of one runtime's agents (their latest state and
    /// artifacts), keyed by task id; every replica reads it all, so any replica
    /// answers `GetTask`, after restarts too.
    pub fn tasks(&self, runtime: &str) -> String {
        format!("{}.{runtime}.tasks", self.prefix)
    }

    /// Dead letters of one runtime.
    pub fn dlq(&self, runtime: &str) -> String {
        format!("{}.{runtime}.dlq", self.prefix)
    }

    /// The reply channel of one process (never shared with another process).
    pub fn reply(&self, instance: &str) -> String {
        format!("{}.reply.{instance}", self.prefix)
    }

    /// Every topic and consumer group of runtime `runtime` itself starts with this
    /// (`P.<runtime>.`; runtime names have no dots, so no other runtime's does).
    pub fn runtime_prefix(&self, runtime: &str) -> String {
        format!("{}.{runtime}.", self.prefix)
    }

    /// Every reply channel of the prefix starts with this (`P.reply.`): responders of
    /// any runtime write to them.
    pub fn replies_prefix(&self) -> String {
        format!("{}.reply.", self.prefix)
    }

    /// The reply channels of runtime `runtime`'s processes, whose instance ids start
    /// with [`instance_prefix`] (the default): `P.reply.<runtime>.`.
    pub fn runtime_replies_prefix(&self, runtime: &str) -> String {
        self.reply(&instance_prefix(runtime))
    }

    /// The state-restore groups of runtime `runtime`'s processes: `P.restore.<runtime>.`.
    pub fn runtime_restore_groups_prefix(&self, runtime: &str) -> String {
        self.restore_group(&instance_prefix(runtime))
    }

    /// The topics shared by every runtime of the prefix.
    pub fn shared(&self) -> [String; 2] {
        [self.registry(), self.events()]
    }

    /// The topics owned by one runtime.
    pub fn per_runtime(&self, runtime: &str) -> [String; 4] {
        [
            self.inbox(runtime),
            self.state(runtime),
            self.dlq(runtime),
            self.tasks(runtime),
        ]
    }

    /// Consumer group of runtime `runtime`'s inbox: its replicas share the partitions
    /// (the operator reads this group's lag).
    pub fn inbox_group(&self, runtime: &str) -> String {
        format!("{}.{runtime}.inbox", self.prefix)
    }

    /// Consumer group in which runtime `runtime` reads the events topic.
    pub fn events_group(&self, runtime: &str) -> String {
        format!("{}.{runtime}.events", self.prefix)
    }

    /// Consumer group of one process reading the registry (each process reads all of it).
    pub fn registry_group(&self, runtime: &str, instance: &str) -> String {
        format!("{}.{runtime}.registry.{instance}", self.prefix)
    }

    /// Consumer group of one process's reply channel.
    pub fn reply_group(&self, runtime: &str, instance: &str) -> String {
        format!("{}.{runtime}.reply.{instance}", self.prefix)
    }

    /// Consumer group of one process reading the tasks topic (assigned, never committed).
    pub fn tasks_group(&self, runtime: &str, instance: &str) -> String {
        format!("{}.{runtime}.tasks.{instance}", self.prefix)
    }

    /// Consumer group of one process restoring agent state (assigned, never committed).
    pub fn restore_group(&self, instance: &str) -> String {
        format!("{}.restore.{instance}", self.prefix)
    }

    /// The topics runtime `runtime` needs, as the operator (or a runtime with
    /// `createTopics`) creates them: `partitions` for every partitioned topic.
    pub fn runtime_specs(
        &self,
        runtime: &str,
        partitions: i32,
        replication_factor: Option<i32>,
    ) -> Vec<TopicSpec> {
        let rf = replication_factor.unwrap_or(-1);
        let n = partitions;
        vec![
            // One partition: a total order decides concurrent claims.
            // Hourly segments let compaction drop old heartbeats, keeping start-up reads short.
            TopicSpec::new(self.registry(), 1, rf)
                .with_config("cleanup.policy", "compact")
                .with_config("segment.ms", "3600000"),
            TopicSpec::new(self.events(), n, rf),
            TopicSpec::new(self.inbox(runtime), n, rf),
            // Co-partitioned with the inbox: state of partition p lives in partition p.
            TopicSpec::new(self.state(runtime), n, rf).with_config("cleanup.policy", "compact"),
            TopicSpec::new(self.dlq(runtime), n, rf),
            // Only the latest record of a task matters.
            TopicSpec::new(self.tasks(runtime), n, rf).with_config("cleanup.policy", "compact"),
        ]
    }

    /// The reply channel of process `instance`: one partition and a short retention,
    /// since replies matter only while someone waits.
    pub fn reply_spec(&self, instance: &str, replication_factor: Option<i32>) -> TopicSpec {
        TopicSpec::new(self.reply(instance), 1, replication_factor.unwrap_or(-1))
            .with_config("retention.ms", "3600000")
    }
}

/// A topic as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full topic name.
    pub name: String,
    /// Desired partition count (grown to, never shrunk from).
    pub partitions: i32,
    /// Replication factor used when creating.
    pub replication_factor: i32,
    /// Topic configs used when creating (e.g. `cleanup.policy=compact`).
    pub config: BTreeMap<String, String>,
}

impl TopicSpec {
    /// A topic with `partitions` and replication factor `replication_factor`, no configs.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor,
            config: BTreeMap::new(),
        }
    }

    /// Adds one topic config.
    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// What every default instance id of runtime `runtime` starts with (`<runtime>.`),
/// so that the reply channel and restore group of a process can be granted by prefix
/// to its runtime alone.
pub fn instance_prefix(runtime: &str) -> String {
    format!("{runtime}.")
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A prefix must be a valid Kafka topic name that leaves room for our suffixes.
pub fn validate_prefix(prefix: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| Err(ConfigError::invalid("topicPrefix", prefix, reason));
    if prefix.is_empty() {
        return bad("must not be empty");
    }
    if !prefix.chars().all(is_topic_char) {
        return bad("may contain only [A-Za-z0-9._-]");
    }
    if prefix.starts_with('.') || prefix.ends_with('.') {
        return bad("must not start or end with '.'");
    }
    if prefix.len() + LONGEST_RUNTIME_SUFFIX > MAX_TOPIC_LEN {
        return bad("is too long: topic names are limited to 249 characters");
    }
    Ok(())
}

/// A runtime name is a DNS label: it names Kubernetes objects and Kafka topics.
pub fn validate_runtime_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "runtime.name",
            name,
            "must be a DNS label: 1-63 of [a-z0-9-], starting and ending alphanumeric",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design_table() {
        let t = TopicNames::new("switchboard.default").unwrap();
        assert_eq!(t.registry(), "switchboard.default.registry");
        assert_eq!(t.events(), "switchboard.default.events");
        assert_eq!(t.inbox("rt1"), "switchboard.default.rt1.inbox");
        assert_eq!(t.state("rt1"), "switchboard.default.rt1.state");
        assert_eq!(t.dlq("rt1"), "switchboard.default.rt1.dlq");
        assert_eq!(t.tasks("rt1"), "switchboard.default.rt1.tasks");
        assert_eq!(t.reply("rt1-ab12"), "switchboard.default.reply.rt1-ab12");
    }

    #[test]
    fn a_runtime_s_own_names_share_its_prefixes_and_no_other_runtime_s_do() {
        let t = TopicNames::new("sb.team").unwrap();
        let instance = format!("{}0123456789", instance_prefix("rt"));
        let own = t.runtime_prefix("rt");
        for name in t.per_runtime("rt").into_iter().chain([
            t.inbox_group("rt"),
            t.events_group("rt"),
            t.registry_group("rt", &instance),
            t.reply_group("rt", &instance),
            t.tasks_group("rt", &instance),
        ]) {
            assert!(name.starts_with(&own), "{name} outside {own}");
            assert!(!name.starts_with(&t.runtime_prefix("rt-b")), "{name}");
        }
        assert!(
            t.reply(&instance)
                .starts_with(&t.runtime_replies_prefix("rt"))
        );
        assert!(t.reply(&instance).starts_with(&t.replies_prefix()));
        assert!(
            t.restore_group(&instance)
                .starts_with(&t.runtime_restore_groups_prefix("rt"))
        );
        // A runtime whose name extends another's gets none of its names.
        let other = format!("{}0123456789", instance_prefix("rt-b"));
        assert!(!t.reply(&other).starts_with(&t.runtime_replies_prefix("rt")));
        assert!(!t.inbox("rt-b").starts_with(&own));
    }

    #[test]
    fn bad_prefixes_are_rejected_with_the_field_named() {
        for p in ["", "a/b", ".a", "a.", &"x".repeat(200)] {
            let err = TopicNames::new(p).unwrap_err();
            assert!(err.to_string().starts_with("topicPrefix"), "{err}");
        }
    }

    #[test]
    fn runtime_names_are_dns_labels() {
        assert!(validate_runtime_name("rt-1").is_ok());
        for n in ["", "RT", "rt_1", "-rt", "rt-", &"a".repeat(64)] {
            assert!(validate_runtime_name(n).is_err(), "{n}");
        }
    }
}
