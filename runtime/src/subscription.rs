//! Subscriptions: which agent type receives events of which topic type.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, IdError, TopicId, validate_agent_type};

/// Routes events to an agent type; the recipient's key is the event's topic source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subscription {
    /// Events whose topic type equals `topic_type` (AutoGen's `TypeSubscription`).
    Type {
        /// Unique id (used to remove it).
        id: String,
        /// The topic type matched exactly.
        topic_type: String,
        /// The receiving agent type.
        agent_type: String,
    },
    /// Events whose topic type starts with `prefix` (AutoGen's `TypePrefixSubscription`).
    TypePrefix {
        /// Unique id (used to remove it).
        id: String,
        /// The topic type prefix.
        prefix: String,
        /// The receiving agent type.
        agent_type: String,
    },
}

impl Subscription {
    /// A `Type` subscription with a fresh id.
    pub fn for_type(topic_type: &str, agent_type: &str) -> Result<Self, IdError> {
        validate_agent_type(agent_type)?;
        TopicId::new(topic_type, "_")?;
        Ok(Self::Type {
            id: new_id(),
            topic_type: topic_type.to_owned(),
            agent_type: agent_type.to_owned(),
        })
    }

    /// A `TypePrefix` subscription with a fresh id.
    pub fn for_prefix(prefix: &str, agent_type: &str) -> Result<Self, IdError> {
        validate_agent_type(agent_type)?;
        TopicId::new(prefix, "_")?;
        Ok(Self::TypePrefix {
            id: new_id(),
            prefix: prefix.to_owned(),
            agent_type: agent_type.to_owned(),
        })
    }

    /// AutoGen's `DefaultSubscription`: topic type `default` to `agent_type`.
    pub fn default_for(agent_type: &str) -> Result<Self, IdError> {
        Self::for_type("default", agent_type)
    }

    /// The subscription's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Type { id, .. } | Self::TypePrefix { id, .. } => id,
        }
    }

    /// The receiving agent type.
    pub fn agent_type(&self) -> &str {
        match self {
            Self::Type { agent_type, .. } | Self::TypePrefix { agent_type, .. } => agent_type,
        }
    }

    /// Whether an event on `topic` is for this subscription.
    pub fn matches(&self, topic_type: &str) -> bool {
        match self {
            Self::Type { topic_type: t, .. } => t == topic_type,
            Self::TypePrefix { prefix, .. } => topic_type.starts_with(prefix.as_str()),
        }
    }

    /// The recipient of an event on `topic`: this agent type, keyed by the topic source.
    pub fn recipient(&self, topic: &TopicId) -> Result<AgentId, IdError> {
        AgentId::new(self.agent_type(), topic.source())
    }
}

/// An existing Kafka topic bound as the event source of a subscription: its records
/// are read in the runtime's events consumer group and delivered to the
/// subscription's agent type (see `kafka::sources`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSource {
    /// The Kafka topic read.
    pub kafka_topic: String,
    /// Where a plain record's topic source (the recipient's key) comes from.
    #[serde(default)]
    pub key_from: KeyFrom,
}

/// Where a plain (non-CloudEvents) record's topic source comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeyFrom {
    /// The record key (`key`).
    #[default]
    Key,
    /// The value of a record header (`header:<name>`).
    Header(String),
}

impl std::str::FromStr for KeyFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("header:") {
            _ if s == "key" => Ok(Self::Key),
            Some(name) if !name.is_empty() => Ok(Self::Header(name.to_owned())),
            _ => Err(format!(
                "keyFrom {s:?} is neither \"key\" nor \"header:<name>\""
            )),
        }
    }
}

impl TryFrom<String> for KeyFrom {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<KeyFrom> for String {
    fn from(k: KeyFrom) -> Self {
        k.to_string()
    }
}

impl std::fmt::Display for KeyFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key => f.write_str("key"),
            Self::Header(name) => write!(f, "header:{name}"),
        }
    }
}

impl SubscriptionSource {
    /// A source reading `kafka_topic`, with the topic source from `key_from`
    /// (`key` or `header:<name>`; `None`: the key). Errors name the field.
    pub fn new(kafka_topic: &str, key_from: Option<&str>) -> Result<Self, String> {
        validate_kafka_topic(kafka_topic).map_err(|e| format!("kafkaTopic: {e}"))?;
        Ok(Self {
            kafka_topic: kafka_topic.to_owned(),
            key_from: key_from.map(str::parse).transpose()?.unwrap_or_default(),
        })
    }

    /// Checks that `subscription` can match what this source delivers: plain records
    /// carry the Kafka topic name as topic type unless the subscription names an exact
    /// `topicType`, so a prefix must be a prefix of the topic name.
    pub fn check(&self, subscription: &Subscription) -> Result<(), String> {
        match subscription {
            Subscription::TypePrefix { prefix, .. }
                if !self.kafka_topic.starts_with(prefix.as_str()) =>
            {
                Err(format!(
                    "topicTypePrefix {prefix:?} does not match the source's kafkaTopic {:?} (the topic type of its plain records); use topicType to name the type instead",
                    self.kafka_topic
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Kafka's rules for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_kafka_topic(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 || name == "." || name == ".." {
        return Err(format!(
            "{name:?} is not a valid Kafka topic name (1-249 characters, not . or ..)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} is not a valid Kafka topic name ({c:?} is not one of [a-zA-Z0-9._-])"
        ));
    }
    Ok(())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_and_prefix_subscriptions_match_as_autogen_does() {
        let exact = Subscription::for_type("alerts", "counter").unwrap();
        assert!(exact.matches("alerts"));
        assert!(!exact.matches("alerts.high"));
        let prefix = Subscription::for_prefix("team.", "relay").unwrap();
        assert!(prefix.matches("team.a"));
        assert!(!prefix.matches("teams"));
        let topic = TopicId::new("team.a", "k1").unwrap();
        assert_eq!(prefix.recipient(&topic).unwrap().to_string(), "relay/k1");
        assert_ne!(exact.id(), prefix.id());
        assert!(Subscription::for_type("alerts", "bad type").is_err());
    }

    #[test]
    fn sources_parse_key_from_and_check_their_subscription() {
        let s = SubscriptionSource::new("orders.v1", Some("header:tenant")).unwrap();
        assert_eq!(s.key_from, KeyFrom::Header("tenant".into()));
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"kafkaTopic": "orders.v1", "keyFrom": "header:tenant"})
        );
        let back: SubscriptionSource =
            serde_json::from_value(serde_json::json!({"kafkaTopic": "t"})).unwrap();
        assert_eq!(back.key_from, KeyFrom::Key);
        for bad in ["header:", "value", ""] {
            let e = SubscriptionSource::new("t", Some(bad)).unwrap_err();
            assert!(e.contains("keyFrom"), "{e}");
        }
        let e = SubscriptionSource::new("no spaces", None).unwrap_err();
        assert!(e.contains("kafkaTopic"), "{e}");
        let prefix = Subscription::for_prefix("orders.", "relay").unwrap();
        assert!(s.check(&prefix).is_ok());
        let other = Subscription::for_prefix("payments.", "relay").unwrap();
        assert!(s.check(&other).unwrap_err().contains("topicTypePrefix"));
        assert!(
            s.check(&Subscription::for_type("x", "relay").unwrap())
                .is_ok()
        );
    }
}
