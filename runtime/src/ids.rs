//! Agent and topic identifiers, with AutoGen's validation rules.

use std::fmt;
use std::str::FromStr;

/// Why an identifier was rejected; names the part and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// An identifier string without the `/` separating its two parts.
    #[error("{what} {value:?} must have the form TYPE/{second}")]
    MissingSeparator {
        /// `agent id` or `topic id`.
        what: &'static str,
        /// Name of the second part (`KEY` or `SOURCE`).
        second: &'static str,
        /// The rejected input.
        value: String,
    },
    /// A part that breaks its character rules.
    #[error("{what} {value:?} is invalid: {rule}")]
    Invalid {
        /// Which part: `agent type`, `agent key`, `topic type`, `topic source`,
        /// `message id`.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// Agent types are word characters, `-` and `.` (AutoGen's rule); they also appear
/// in Kafka topic names and Kubernetes objects, so the set is deliberately small.
fn check_agent_type(value: &str) -> Result<(), IdError> {
    if !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Ok(())
    } else {
        Err(IdError::Invalid {
            what: "agent type",
            value: value.to_owned(),
            rule: "1-63 characters of [A-Za-z0-9_.-]",
        })
    }
}

/// Keys and topic sources are printable ASCII (AutoGen's rule), 1-255 characters.
fn check_printable(what: &'static str, value: &str) -> Result<(), IdError> {
    if !value.is_empty() && value.len() <= 255 && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
    {
        Ok(())
    } else {
        Err(IdError::Invalid {
            what,
            value: value.to_owned(),
            rule: "1-255 printable ASCII characters",
        })
    }
}

/// Topic types also allow `:` and `=` (AutoGen's rule).
fn check_topic_type(value: &str) -> Result<(), IdError> {
    if !value.is_empty()
        && value.len() <= 255
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '='))
    {
        Ok(())
    } else {
        Err(IdError::Invalid {
            what: "topic type",
            value: value.to_owned(),
            rule: "1-255 characters of [A-Za-z0-9_.:=-]",
        })
    }
}

/// Validates an agent type name on its own (used for registrations and CRDs).
pub fn validate_agent_type(value: &str) -> Result<(), IdError> {
    check_agent_type(value)
}

/// Identifies one agent instance: its type and a key within the type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId {
    agent_type: String,
    key: String,
}

impl AgentId {
    /// Builds an id, validating both parts.
    pub fn new(agent_type: impl Into<String>, key: impl Into<String>) -> Result<Self, IdError> {
        let (agent_type, key) = (agent_type.into(), key.into());
        check_agent_type(&agent_type)?;
        check_printable("agent key", &key)?;
        Ok(Self { agent_type, key })
    }

    /// The agent's type.
    pub fn agent_type(&self) -> &str {
        &self.agent_type
    }

    /// The agent's key within its type.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.agent_type, self.key)
    }
}

impl FromStr for AgentId {
    type Err = IdError;

    /// Parses `type/key`; the key may itself contain `/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (t, k) = s.split_once('/').ok_or_else(|| IdError::MissingSeparator {
            what: "agent id",
            second: "KEY",
            value: s.to_owned(),
        })?;
        Self::new(t, k)
    }
}

/// Identifies a topic events are published to: its type and a source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId {
    topic_type: String,
    source: String,
}

impl TopicId {
    /// Builds a topic id, validating both parts.
    pub fn new(topic_type: impl Into<String>, source: impl Into<String>) -> Result<Self, IdError> {
        let (topic_type, source) = (topic_type.into(), source.into());
        check_topic_type(&topic_type)?;
        check_printable("topic source", &source)?;
        Ok(Self { topic_type, source })
    }

    /// The topic's type (what subscriptions match on).
    pub fn topic_type(&self) -> &str {
        &self.topic_type
    }

    /// The topic's source (becomes the recipient agent's key).
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic_type, self.source)
    }
}

impl FromStr for TopicId {
    type Err = IdError;

    /// Parses `type/source`; the source may itself contain `/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (t, src) = s.split_once('/').ok_or_else(|| IdError::MissingSeparator {
            what: "topic id",
            second: "SOURCE",
            value: s.to_owned(),
        })?;
        Self::new(t, src)
    }
}

/// Longest message id a caller may give (CloudEvents `id`, a Kafka header).
pub const MAX_MESSAGE_ID_LEN: usize = 256;

/// Checks a caller-given message id: 1-256 bytes of printable ASCII, so it travels
/// unchanged as the CloudEvents `id` header and in logs.
///
/// # Errors
/// [`IdError::Invalid`] naming the rule.
pub fn validate_message_id(id: &str) -> Result<(), IdError> {
    let invalid = |rule| IdError::Invalid {
        what: "message id",
        value: id.to_owned(),
        rule,
    };
    if id.is_empty() || id.len() > MAX_MESSAGE_ID_LEN {
        return Err(invalid("must be 1-256 bytes"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(invalid("must be printable ASCII"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_printable_and_bounded() {
        validate_message_id("msg-1 from: alice").unwrap();
        validate_message_id(&"x".repeat(MAX_MESSAGE_ID_LEN)).unwrap();
        for bad in [
            String::new(),
            "x".repeat(MAX_MESSAGE_ID_LEN + 1),
            "a\nb".into(),
            "é".into(),
        ] {
            let e = validate_message_id(&bad).unwrap_err();
            assert!(e.to_string().starts_with("message id"), "{e}");
        }
    }

    #[test]
    fn agent_id_round_trips_through_its_string_form() {
        let id: AgentId = "echo/user/42".parse().unwrap();
        assert_eq!(id.agent_type(), "echo");
        assert_eq!(id.key(), "user/42");
        assert_eq!(id.to_string(), "echo/user/42");
    }

    #[test]
    fn agent_id_errors_name_the_part() {
        let err = "echo".parse::<AgentId>().unwrap_err();
        assert!(err.to_string().contains("TYPE/KEY"), "{err}");
        let err = AgentId::new("bad type", "k").unwrap_err();
        assert!(err.to_string().contains("agent type \"bad type\""), "{err}");
        let err = AgentId::new("echo", "").unwrap_err();
        assert!(err.to_string().contains("agent key"), "{err}");
        let err = AgentId::new("echo", "tab\there").unwrap_err();
        assert!(err.to_string().contains("printable"), "{err}");
    }

    #[test]
    fn topic_types_allow_colon_and_equals_but_agent_types_do_not() {
        assert!(TopicId::new("a:b=c", "src").is_ok());
        assert!(AgentId::new("a:b", "k").is_err());
        let err = "alerts".parse::<TopicId>().unwrap_err();
        assert!(err.to_string().contains("TYPE/SOURCE"), "{err}");
    }
}
