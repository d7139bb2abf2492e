//! The AgentRuntime status as a pure function of what the reconcile observed.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use switchboard_crds::AgentRuntime;
use switchboard_crds::agent_runtime::{AgentRuntimeStatus, TopicStatus};

use crate::conditions::{self, Desired, reason};
use crate::kafka::TopicReport;

/// What the reconcile got to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The spec is invalid (message names the field).
    Invalid(String),
    /// A referenced Secret is missing.
    SecretMissing(String),
    /// Kafka did not answer or refused.
    KafkaUnavailable(String),
    /// The brokers refuse the connection's credentials, certificate or ACLs.
    KafkaRefused(switchboard_runtime::access::AccessError),
    /// Topics reconciled.
    Topics(Vec<TopicReport>),
    /// Topics reconciled except some that have more partitions than asked for.
    CannotShrink(Vec<TopicReport>, String),
}

/// The condition reason of a refusal by the brokers.
pub fn refusal_reason(refusal: &switchboard_runtime::access::AccessError) -> &'static str {
    use switchboard_runtime::access::AccessError as E;
    match refusal {
        E::Authentication { .. } => reason::KAFKA_AUTHENTICATION_FAILED,
        E::Tls { .. } => reason::KAFKA_TLS_HANDSHAKE_FAILED,
        E::TopicAuthorization { .. } => reason::KAFKA_TOPIC_AUTHORIZATION_FAILED,
        E::GroupAuthorization { .. } => reason::KAFKA_GROUP_AUTHORIZATION_FAILED,
        E::Unreachable { .. } => reason::KAFKA_UNAVAILABLE,
    }
}

/// The status for `ar`, keeping transition times of conditions that did not flip.
/// Fields the reconcile could not observe this time (deployment, lag: `None`) keep
/// their previous values.
pub fn compute_status(
    ar: &AgentRuntime,
    outcome: &Outcome,
    deployment: Option<(&String, &Deployment)>,
    lag: Option<i64>,
    now: Timestamp,
) -> AgentRuntimeStatus {
    let before = ar.status.clone().unwrap_or_default();
    let generation = ar.metadata.generation;
    let (topics_cond, problem) = match outcome {
        Outcome::Invalid(m) => (
            Desired::new(
                conditions::TOPICS_READY,
                false,
                reason::INVALID_SPEC,
                m.clone(),
            ),
            Some((reason::INVALID_SPEC, m.clone())),
        ),
        Outcome::SecretMissing(m) => (
            Desired::new(
                conditions::TOPICS_READY,
                false,
                reason::SECRET_NOT_FOUND,
                m.clone(),
            ),
            Some((reason::SECRET_NOT_FOUND, m.clone())),
        ),
        Outcome::KafkaUnavailable(m) => (
            Desired::new(
                conditions::TOPICS_READY,
                false,
                reason::KAFKA_UNAVAILABLE,
                m.clone(),
            ),
            Some((reason::KAFKA_UNAVAILABLE, m.clone())),
        ),
        Outcome::KafkaRefused(refusal) => {
            let why = refusal_reason(refusal);
            (
                Desired::new(conditions::TOPICS_READY, false, why, refusal.to_string()),
                Some((why, refusal.to_string())),
            )
        }
        Outcome::CannotShrink(_, m) => {
            let m = format!(
                "Kafka cannot remove partitions: {m}; raise spec.topics.partitions to match"
            );
            (
                Desired::new(
                    conditions::TOPICS_READY,
                    false,
                    reason::PARTITIONS_CANNOT_SHRINK,
                    m.clone(),
                ),
                Some((reason::PARTITIONS_CANNOT_SHRINK, m)),
            )
        }
        Outcome::Topics(r) => (
            Desired::new(
                conditions::TOPICS_READY,
                true,
                reason::TOPICS_READY,
                format!("{} topics match the spec", r.len()),
            ),
            None,
        ),
    };
    let topics = match outcome {
        Outcome::Topics(r) | Outcome::CannotShrink(r, _) => r
            .iter()
            .map(|t| TopicStatus {
                name: t.name.clone(),
                partitions: t.partitions,
            })
            .collect(),
        _ => before.topics.clone(),
    };
    let (replicas, ready, selector, available, progressing) = match deployment {
        Some((selector, d)) => {
            let st = d.status.clone().unwrap_or_default();
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = st.ready_replicas.unwrap_or(0);
            let available = st
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            let rolled_out = d.metadata.generation.is_some()
                && st.observed_generation == d.metadata.generation
                && st.updated_replicas.unwrap_or(0) >= want
                && st.replicas.unwrap_or(0) == want;
            let available = Desired::new(
                conditions::AVAILABLE,
                available,
                if available {
                    reason::REPLICAS_READY
                } else {
                    reason::REPLICAS_UNAVAILABLE
                },
                format!("{ready}/{want} runtime pods ready"),
            );
            let progressing = Desired::new(
                conditions::PROGRESSING,
                !rolled_out,
                if rolled_out {
                    reason::ROLLED_OUT
                } else {
                    reason::ROLLING_OUT
                },
                format!(
                    "Deployment {}: {} of {want} pods updated",
                    d.name_any(),
                    st.updated_replicas.unwrap_or(0)
                ),
            );
            (
                st.replicas.unwrap_or(0),
                ready,
                Some(selector.clone()),
                available,
                progressing,
            )
        }
        None => {
            let why = problem.as_ref().map(|p| p.1.clone()).unwrap_or_default();
            (
                before.replicas,
                before.ready_replicas,
                before.selector.clone(),
                Desired::new(
                    conditions::AVAILABLE,
                    false,
                    problem
                        .as_ref()
                        .map_or(reason::REPLICAS_UNAVAILABLE, |p| p.0),
                    why.clone(),
                ),
                Desired::new(
                    conditions::PROGRESSING,
                    false,
                    problem.as_ref().map_or(reason::ROLLED_OUT, |p| p.0),
                    why,
                ),
            )
        }
    };
    let degraded = match &problem {
        Some((r, m)) => Desired::new(conditions::DEGRADED, true, r, m.clone()),
        None => Desired::new(conditions::DEGRADED, false, reason::AS_EXPECTED, ""),
    };
    let is_ready = topics_cond.status && available.status;
    let ready_cond = Desired::new(
        conditions::READY,
        is_ready,
        if !topics_cond.status {
            topics_cond.reason
        } else if is_ready {
            reason::REPLICAS_READY
        } else {
            available.reason
        },
        if is_ready {
            "topics and runtime pods are ready".to_owned()
        } else if !topics_cond.status {
            topics_cond.message.clone()
        } else {
            available.message.clone()
        },
    );
    let desired = [ready_cond, topics_cond, available, progressing, degraded];
    AgentRuntimeStatus {
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        selector,
        topics,
        lag: lag.or(before.lag),
        conditions: conditions::merge(&before.conditions, &desired, generation, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_runtime::topics_outcome;
    use serde_json::json;
    use switchboard_runtime::admin::TopicChange;

    fn ar() -> AgentRuntime {
        serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
            "metadata": { "name": "rt1", "namespace": "ns", "uid": "u", "generation": 4 },
            "spec": { "kafka": { "bootstrapServers": "k:9092" }, "agents": [{ "type": "echo", "builtin": "echo" }] },
        }))
        .unwrap()
    }

    fn report(name: &str, change: TopicChange) -> TopicReport {
        TopicReport {
            name: name.into(),
            partitions: 6,
            change,
            config_changed: false,
        }
    }

    fn cond(st: &AgentRuntimeStatus, t: &str) -> (String, String) {
        let c = st.conditions.iter().find(|c| c.type_ == t).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn an_own_topic_with_too_many_partitions_is_reported_not_a_shared_one() {
        let owned = vec!["p.rt1.inbox".to_owned()];
        let shrink = TopicChange::CannotShrink { existing: 6 };
        let shared_only = topics_outcome(&owned, vec![report("p.events", shrink)]);
        let st = compute_status(&ar(), &shared_only, None, None, Timestamp::now());
        assert_eq!(
            cond(&st, "TopicsReady"),
            ("True".into(), "TopicsReady".into())
        );

        let own = topics_outcome(&owned, vec![report("p.rt1.inbox", shrink)]);
        let st = compute_status(&ar(), &own, None, None, Timestamp::now());
        assert_eq!(
            cond(&st, "TopicsReady"),
            ("False".into(), "PartitionsCannotShrink".into())
        );
        assert_eq!(
            cond(&st, "Degraded"),
            ("True".into(), "PartitionsCannotShrink".into())
        );
        assert_eq!(cond(&st, "Ready").0, "False");
        assert_eq!(st.observed_generation, Some(4));
        assert!(
            st.conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }

    #[test]
    fn a_refusing_broker_is_named_in_topics_ready_and_degraded() {
        use switchboard_runtime::access::AccessError;
        let refused = Outcome::KafkaRefused(AccessError::Authentication {
            user: "op".into(),
            detail: "SASL authentication error: Authentication failed".into(),
        });
        let st = compute_status(&ar(), &refused, None, None, Timestamp::now());
        assert_eq!(
            cond(&st, "TopicsReady"),
            ("False".into(), "KafkaAuthenticationFailed".into())
        );
        assert_eq!(
            cond(&st, "Degraded"),
            ("True".into(), "KafkaAuthenticationFailed".into())
        );
        let acl = Outcome::KafkaRefused(AccessError::TopicAuthorization {
            topic: "p.rt1.inbox".into(),
        });
        let st = compute_status(&ar(), &acl, None, None, Timestamp::now());
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == "TopicsReady")
            .unwrap();
        assert_eq!(c.reason, "KafkaTopicAuthorizationFailed");
        assert!(c.message.contains("p.rt1.inbox"), "{}", c.message);
    }

    #[test]
    fn the_same_observation_gives_the_same_status_so_nothing_is_written() {
        let outcome = Outcome::Topics(vec![report("p.rt1.inbox", TopicChange::Unchanged)]);
        let mut obj = ar();
        let first = compute_status(
            &obj,
            &outcome,
            None,
            Some(5),
            Timestamp::from_second(10).unwrap(),
        );
        obj.status = Some(first.clone());
        let second = compute_status(
            &obj,
            &outcome,
            None,
            Some(5),
            Timestamp::from_second(99).unwrap(),
        );
        assert_eq!(first, second);
    }

    #[test]
    fn lag_is_reported_and_kept_when_it_could_not_be_read() {
        let outcome = Outcome::Topics(vec![report("p.rt1.inbox", TopicChange::Unchanged)]);
        let mut obj = ar();
        let st = compute_status(&obj, &outcome, None, Some(42), Timestamp::now());
        assert_eq!(st.lag, Some(42));
        obj.status = Some(st);
        let unread = compute_status(&obj, &outcome, None, None, Timestamp::now());
        assert_eq!(unread.lag, Some(42), "an unread lag keeps the last figure");
        let drained = compute_status(&obj, &outcome, None, Some(0), Timestamp::now());
        assert_eq!(drained.lag, Some(0));
    }
}
