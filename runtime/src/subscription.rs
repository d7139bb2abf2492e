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
}
