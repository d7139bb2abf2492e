//! Condition types and reasons (CamelCase), and the merge that keeps
//! `lastTransitionTime` unless a condition's status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The resource does what its spec asks.
pub const READY: &str = "Ready";
/// Every Kafka topic exists with the wanted partitions and configs.
pub const TOPICS_READY: &str = "TopicsReady";
/// At least one runtime pod is ready.
pub const AVAILABLE: &str = "Available";
/// A rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Something needs a human: invalid spec, missing Secret, Kafka refusing.
pub const DEGRADED: &str = "Degraded";
/// The subscription's references check out.
pub const ACCEPTED: &str = "Accepted";

/// Reasons.
pub mod reason {
    /// Topics match the spec.
    pub const TOPICS_READY: &str = "TopicsReady";
    /// A topic has more partitions than asked for; Kafka cannot shrink.
    pub const PARTITIONS_CANNOT_SHRINK: &str = "PartitionsCannotShrink";
    /// The Kafka cluster did not answer or refused.
    pub const KAFKA_UNAVAILABLE: &str = "KafkaUnavailable";
    /// The brokers refused the SASL credentials (wrong user name or password).
    pub const KAFKA_AUTHENTICATION_FAILED: &str = "KafkaAuthenticationFailed";
    /// The TLS handshake failed (CA does not match the brokers, or client cert refused).
    pub const KAFKA_TLS_HANDSHAKE_FAILED: &str = "KafkaTlsHandshakeFailed";
    /// No ACL allows the operator's principal on a topic.
    pub const KAFKA_TOPIC_AUTHORIZATION_FAILED: &str = "KafkaTopicAuthorizationFailed";
    /// No ACL allows the operator's principal on a consumer group.
    pub const KAFKA_GROUP_AUTHORIZATION_FAILED: &str = "KafkaGroupAuthorizationFailed";
    /// The spec fails validation.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A referenced Secret is missing or lacks a key.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// Every desired pod is ready.
    pub const REPLICAS_READY: &str = "ReplicasReady";
    /// Some desired pods are not ready.
    pub const REPLICAS_UNAVAILABLE: &str = "ReplicasUnavailable";
    /// The Deployment rolls out a new revision.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// The Deployment runs its latest revision.
    pub const ROLLED_OUT: &str = "RolledOut";
    /// Nothing is wrong.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// The referenced AgentRuntime does not exist.
    pub const RUNTIME_NOT_FOUND: &str = "RuntimeNotFound";
    /// The referenced runtime does not host the agent type.
    pub const UNKNOWN_AGENT_TYPE: &str = "UnknownAgentType";
    /// The references check out.
    pub const ACCEPTED: &str = "Accepted";
    /// The subscription is in the registry topic.
    pub const REGISTERED: &str = "Registered";
    /// The Kafka topic named by `spec.source.kafkaTopic` does not exist.
    pub const SOURCE_TOPIC_NOT_FOUND: &str = "SourceTopicNotFound";
    /// The source topic exists but the runtime has not started reading it yet.
    pub const SOURCE_NOT_READ: &str = "SourceNotRead";
    /// The runtime's events group reads the source topic.
    pub const READING_SOURCE: &str = "ReadingSource";
    /// Some earlier condition is not met.
    pub const NOT_ACCEPTED: &str = "NotAccepted";
}

/// A condition as computed by a reconcile, before timestamps are merged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Condition type.
    pub type_: &'static str,
    /// True or false.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl Desired {
    /// A condition with `status`.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Builds metav1 conditions from `desired`, keeping `lastTransitionTime` from
/// `existing` when the status did not flip; `now` stamps the flipped ones.
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status);
            let last_transition_time = existing
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.to_owned(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Conditions whose status differs from (or is absent in) `before`: the transitions
/// worth a Kubernetes Event.
pub fn transitions<'a>(before: &[Condition], after: &'a [Condition]) -> Vec<&'a Condition> {
    after
        .iter()
        .filter(|c| {
            !before
                .iter()
                .any(|b| b.type_ == c.type_ && b.status == c.status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let first = merge(&[], &[Desired::new(READY, false, "A", "a")], Some(1), t0);
        let same = merge(&first, &[Desired::new(READY, false, "B", "b")], Some(2), t1);
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].reason, "B");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, &[Desired::new(READY, true, "C", "c")], Some(2), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(transitions(&same, &flipped).len(), 1);
        assert!(transitions(&flipped, &flipped).is_empty());
    }
}
