//! The one definition of every Kafka topic name Switchboard uses (DESIGN.md §3).
//!
//! A prefix `P` names one agent network; runtimes sharing a prefix on one cluster see
//! each other's agents.

use crate::config::ConfigError;

/// Kafka's own limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;
/// Longest suffix a runtime topic gets: `.<runtime>.inbox` with a 63-char runtime name.
const LONGEST_RUNTIME_SUFFIX: usize = 1 + 63 + 6;

/// Topic names for one prefix.
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

    /// Dead letters of one runtime.
    pub fn dlq(&self, runtime: &str) -> String {
        format!("{}.{runtime}.dlq", self.prefix)
    }

    /// The reply channel of one process (never shared with another process).
    pub fn reply(&self, instance: &str) -> String {
        format!("{}.reply.{instance}", self.prefix)
    }

    /// The topics shared by every runtime of the prefix.
    pub fn shared(&self) -> [String; 2] {
        [self.registry(), self.events()]
    }

    /// The topics owned by one runtime.
    pub fn per_runtime(&self, runtime: &str) -> [String; 3] {
        [self.inbox(runtime), self.state(runtime), self.dlq(runtime)]
    }
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
        assert_eq!(t.reply("rt1-ab12"), "switchboard.default.reply.rt1-ab12");
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
