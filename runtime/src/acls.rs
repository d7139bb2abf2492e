//! The Kafka ACLs a runtime (or the operator) needs, derived from the one definition
//! of topic and group names ([`crate::protocol::topics`]), never a second list:
//! `switchboard-runtime acls` prints them as `kafka-acls` arguments or JSON.
//!
//! Pure: no broker here. The e2e test `kafka_security` runs a runtime under exactly
//! this set on a broker with `allow.everyone.if.no.acl.found=false`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::ConfigError;
use crate::protocol::topics::{TopicNames, validate_runtime_name};

/// A Kafka resource type that ACLs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatternType {
    /// Exactly this name.
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// A Kafka ACL operation (the ones Switchboard needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Consume, commit offsets, join a group.
    Read,
    /// Produce.
    Write,
    /// Metadata, offsets, group state.
    Describe,
    /// Create topics.
    Create,
    /// Delete topics.
    Delete,
    /// Add partitions.
    Alter,
    /// Read topic configs.
    DescribeConfigs,
    /// Change topic configs.
    AlterConfigs,
}

impl Operation {
    /// `kafka-acls --operation` spelling.
    pub fn as_cli(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
            Self::Describe => "Describe",
            Self::Create => "Create",
            Self::Delete => "Delete",
            Self::Alter => "Alter",
            Self::DescribeConfigs => "DescribeConfigs",
            Self::AlterConfigs => "AlterConfigs",
        }
    }
}

/// One ALLOW rule: `principal` may do `operations` on the matching resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AclEntry {
    /// Topic or group.
    pub resource_type: ResourceType,
    /// Literal or prefixed.
    pub pattern_type: PatternType,
    /// The resource name or prefix.
    pub name: String,
    /// `User:<name>`.
    pub principal: String,
    /// Allowed operations.
    pub operations: Vec<Operation>,
    /// What the code does with it.
    pub why: String,
}

impl AclEntry {
    fn new(
        resource_type: ResourceType,
        pattern_type: PatternType,
        name: String,
        principal: &str,
        mut operations: Vec<Operation>,
        why: &str,
    ) -> Self {
        operations.sort();
        operations.dedup();
        Self {
            resource_type,
            pattern_type,
            name,
            principal: principal.to_owned(),
            operations,
            why: why.to_owned(),
        }
    }

    /// The arguments of one `kafka-acls` call adding this rule (after
    /// `--bootstrap-server ... --command-config ...`).
    pub fn kafka_acls_args(&self) -> Vec<String> {
        let mut args = vec![
            "--add".to_owned(),
            "--allow-principal".to_owned(),
            self.principal.clone(),
            "--resource-pattern-type".to_owned(),
            match self.pattern_type {
                PatternType::Literal => "literal",
                PatternType::Prefixed => "prefixed",
            }
            .to_owned(),
            match self.resource_type {
                ResourceType::Topic => "--topic",
                ResourceType::Group => "--group",
            }
            .to_owned(),
            self.name.clone(),
        ];
        for op in &self.operations {
            args.push("--operation".to_owned());
            args.push(op.as_cli().to_owned());
        }
        args
    }
}

/// What a runtime does beyond its own topics, which widens its ACL set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeAccess {
    /// Runtimes whose agents this one sends RPCs to (Write on their inboxes).
    pub calls: Vec<String>,
    /// The runtime creates its topics itself (`runtime.createTopics: true`, no
    /// operator): Create and Alter on them.
    pub create_topics: bool,
}

/// Checks `principal` is `User:<name>` with no whitespace (one shell word).
pub fn validate_principal(principal: &str) -> Result<(), ConfigError> {
    let ok = principal
        .strip_prefix("User:")
        .is_some_and(|n| !n.is_empty() && !n.chars().any(char::is_whitespace));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "--principal",
            principal,
            "must be User:<name> without whitespace",
        ))
    }
}

/// The ACLs runtime `runtime` on `names`'s prefix needs, for `principal`.
pub fn runtime_acls(
    names: &TopicNames,
    runtime: &str,
    principal: &str,
    access: &RuntimeAccess,
) -> Result<Vec<AclEntry>, ConfigError> {
    use Operation::{Alter, Create, Delete, Describe, Read, Write};
    use PatternType::{Literal, Prefixed};
    use ResourceType::{Group, Topic};
    validate_runtime_name(runtime)?;
    validate_principal(principal)?;
    let create: &[Operation] = if access.create_topics {
        &[Create, Alter]
    } else {
        &[]
    };
    let with_create = |ops: &[Operation]| [ops, create].concat();
    let mut acls = vec![
        AclEntry::new(
            Topic,
            Prefixed,
            names.runtime_prefix(runtime),
            principal,
            with_create(&[Read, Write, Describe]),
            "its inbox, state, dlq and tasks topics: consume, produce (replies to itself, \
             forwarded events, state, dead letters)",
        ),
        AclEntry::new(
            Topic,
            Literal,
            names.registry(),
            principal,
            with_create(&[Read, Write, Describe]),
            "the registry: read it all at start and tail it; write claims, heartbeats, \
             subscriptions",
        ),
        AclEntry::new(
            Topic,
            Literal,
            names.events(),
            principal,
            with_create(&[Read, Write, Describe]),
            "the events topic: publish_message, and its events consumer group reads it",
        ),
        AclEntry::new(
            Topic,
            Prefixed,
            names.runtime_replies_prefix(runtime),
            principal,
            vec![Read, Describe, Create, Delete],
            "its processes' reply channels: created at start, read, deleted at stop",
        ),
        AclEntry::new(
            Topic,
            Prefixed,
            names.replies_prefix(),
            principal,
            vec![Write],
            "answering RPCs: a reply goes to the caller's reply channel, whichever \
             runtime the caller is",
        ),
        AclEntry::new(
            Group,
            Prefixed,
            names.runtime_prefix(runtime),
            principal,
            vec![Read, Describe],
            "its inbox and events groups and its processes' registry, reply and tasks \
             groups",
        ),
        AclEntry::new(
            Group,
            Prefixed,
            names.runtime_restore_groups_prefix(runtime),
            principal,
            vec![Read, Describe],
            "its processes' state-restore readers",
        ),
    ];
    for callee in &access.calls {
        validate_runtime_name(callee).map_err(|e| ConfigError {
            field: "--calls".into(),
            ..e
        })?;
        if callee != runtime {
            acls.push(AclEntry::new(
                Topic,
                Literal,
                names.inbox(callee),
                principal,
                vec![Write],
                "RPCs to that runtime's agents go to its inbox",
            ));
        }
    }
    Ok(acls)
}

/// The ACLs the operator needs on `names`'s prefix, for `principal`.
pub fn operator_acls(names: &TopicNames, principal: &str) -> Result<Vec<AclEntry>, ConfigError> {
    use Operation::{Alter, AlterConfigs, Create, Delete, Describe, DescribeConfigs, Read, Write};
    validate_principal(principal)?;
    Ok(vec![
        AclEntry::new(
            ResourceType::Topic,
            PatternType::Prefixed,
            format!("{}.", names.prefix()),
            principal,
            vec![
                Create,
                Describe,
                Alter,
                DescribeConfigs,
                AlterConfigs,
                Delete,
            ],
            "every runtime's topics and the shared ones: create, grow partitions, set \
             configs, delete (deletionPolicy: Delete); offsets for lag",
        ),
        AclEntry::new(
            ResourceType::Topic,
            PatternType::Literal,
            names.registry(),
            principal,
            vec![Read, Write],
            "releasing a deleted AgentRuntime's registry claims; reading heartbeats \
             (reply-channel garbage collection)",
        ),
        AclEntry::new(
            ResourceType::Group,
            PatternType::Literal,
            format!("{}.operator.reply-gc", names.prefix()),
            principal,
            vec![Read],
            "the registry reader of reply-channel garbage collection (assigned, never joined)",
        ),
        AclEntry::new(
            ResourceType::Group,
            PatternType::Prefixed,
            format!("{}.", names.prefix()),
            principal,
            vec![Describe],
            "committed offsets of the inbox groups (lag, autoscaling) and of the events \
             groups (an AgentSubscription source topic is Ready once read)",
        ),
    ])
}

/// One `kafka-acls` argument list per line.
pub fn to_kafka_acls(acls: &[AclEntry]) -> String {
    let mut out = String::new();
    for a in acls {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}", a.kafka_acls_args().join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(acls: &[AclEntry], rt: ResourceType, name: &str, op: Operation) -> bool {
        acls.iter().any(|a| {
            a.resource_type == rt
                && a.operations.contains(&op)
                && match a.pattern_type {
                    PatternType::Literal => a.name == name,
                    PatternType::Prefixed => name.starts_with(&a.name),
                }
        })
    }

    #[test]
    fn a_runtime_gets_its_own_names_and_not_another_runtime_s() {
        let names = TopicNames::new("sb.team").unwrap();
        let acls = runtime_acls(&names, "rt", "User:rt", &RuntimeAccess::default()).unwrap();
        let instance = format!("{}abc", crate::protocol::topics::instance_prefix("rt"));
        use Operation::{Read, Write};
        use ResourceType::{Group, Topic};
        for t in names.per_runtime("rt") {
            assert!(
                covers(&acls, Topic, &t, Read) && covers(&acls, Topic, &t, Write),
                "{t}"
            );
        }
        for t in names.shared() {
            assert!(
                covers(&acls, Topic, &t, Read) && covers(&acls, Topic, &t, Write),
                "{t}"
            );
        }
        assert!(covers(&acls, Topic, &names.reply(&instance), Read));
        for g in [
            names.inbox_group("rt"),
            names.events_group("rt"),
            names.registry_group("rt", &instance),
            names.reply_group("rt", &instance),
            names.tasks_group("rt", &instance),
            names.restore_group(&instance),
        ] {
            assert!(covers(&acls, Group, &g, Read), "{g}");
        }
        let other = format!("{}abc", crate::protocol::topics::instance_prefix("rt-b"));
        for t in [names.inbox("rt-b"), names.state("rt-b")] {
            assert!(
                !covers(&acls, Topic, &t, Read) && !covers(&acls, Topic, &t, Write),
                "{t}"
            );
        }
        assert!(!covers(&acls, Topic, &names.reply(&other), Read));
        assert!(!covers(&acls, Group, &names.inbox_group("rt-b"), Read));
        assert!(!covers(&acls, Group, &names.restore_group(&other), Read));
        // Without --calls it cannot send RPCs to another runtime's agents.
        assert!(!covers(&acls, Topic, &names.inbox("rt-b"), Write));
        let calling = RuntimeAccess {
            calls: vec!["rt-b".into()],
            create_topics: false,
        };
        let acls = runtime_acls(&names, "rt", "User:rt", &calling).unwrap();
        assert!(covers(&acls, Topic, &names.inbox("rt-b"), Write));
        assert!(!covers(&acls, Topic, &names.inbox("rt-b"), Read));
    }

    #[test]
    fn kafka_acls_lines_are_one_call_each() {
        let names = TopicNames::new("p").unwrap();
        let acls = runtime_acls(&names, "rt", "User:x", &RuntimeAccess::default()).unwrap();
        let text = to_kafka_acls(&acls);
        assert_eq!(text.lines().count(), acls.len());
        assert!(text.lines().next().unwrap().starts_with(
            "--add --allow-principal User:x --resource-pattern-type prefixed --topic p.rt. \
             --operation Read --operation Write --operation Describe"
        ));
        assert!(validate_principal("alice").is_err());
        assert!(validate_principal("User:a b").is_err());
    }
}
