//! What the open protocols (A2A skills, MCP tools) show of the agent types a runtime
//! hosts: a description and the message types each accepts, from the config file
//! (`agents[].description`, `agents[].messageTypes`) or, for built-ins, their own.

use serde_json::{Value, json};

use crate::config_file::{AgentEntry, Builtin};

/// Message type of a message made from A2A text parts: `{"text": "..."}`.
pub const TEXT_TYPE: &str = "switchboard.a2a.Text";
/// Message type of a message made from other A2A parts.
pub const DATA_TYPE: &str = "switchboard.a2a.Data";
/// Reply type by which an agent asks an A2A client for more input: the task becomes
/// `input-required` with the reply's `{"text": ...}` as its status message.
pub const INPUT_REQUIRED_TYPE: &str = "switchboard.a2a.InputRequired";

/// One accepted message type.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageType {
    /// Its name (the `ce-type` of the message).
    pub name: String,
    /// JSON Schema of its data, when declared.
    pub schema: Option<Value>,
}

/// One hosted agent type.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentInfo {
    /// The agent type.
    pub agent_type: String,
    /// What it does.
    pub description: String,
    /// The message types it accepts; empty: any.
    pub message_types: Vec<MessageType>,
    /// Its kind (`builtin:echo`, `http`, ...), for tags.
    pub kind: String,
}

impl AgentInfo {
    /// The entry as the protocols show it.
    pub fn from_entry(entry: &AgentEntry) -> Self {
        let kind = match (&entry.builtin, &entry.http, &entry.a2a) {
            (Some(b), _, _) => format!("builtin:{}", builtin_name(*b)),
            (None, Some(_), _) => "http".to_owned(),
            (None, None, Some(_)) => "a2a".to_owned(),
            (None, None, None) if entry.mcp.is_some() => "mcp".to_owned(),
            (None, None, None) => "code".to_owned(),
        };
        let description = entry
            .description
            .clone()
            .unwrap_or_else(|| match entry.builtin {
                Some(Builtin::Echo) => {
                    "Replies with the message it gets (same type, same data).".into()
                }
                Some(Builtin::Counter) => {
                    "Counts the messages it gets per conversation and replies {\"count\": n}."
                        .into()
                }
                Some(Builtin::Relay) => {
                    "Publishes every message it gets to a topic; replies nothing.".into()
                }
                None => match &entry.mcp {
                    Some(m) => format!("Calls MCP tool {} of {}.", m.tool, m.url),
                    None => format!("Switchboard agent type {}.", entry.agent_type),
                },
            });
        Self {
            agent_type: entry.agent_type.clone(),
            description,
            message_types: entry
                .message_types
                .iter()
                .map(|m| MessageType {
                    name: m.name.clone(),
                    schema: m.schema.clone(),
                })
                .collect(),
            kind,
        }
    }

    /// The message type used when a caller names none: the only declared one, else
    /// `fallback`.
    pub fn default_type<'a>(&'a self, fallback: &'a str) -> &'a str {
        match self.message_types.as_slice() {
            [only] => &only.name,
            _ => fallback,
        }
    }

    /// Whether `name` may be sent (any type when none is declared).
    pub fn accepts(&self, name: &str) -> bool {
        self.message_types.is_empty() || self.message_types.iter().any(|m| m.name == name)
    }

    /// The MCP tool input schema: `message` (the data, by the declared schema when
    /// there is one type with a schema), `messageType` (enum of the declared types),
    /// `key` (the agent key, i.e. the conversation).
    pub fn input_schema(&self) -> Value {
        let message = match self.message_types.as_slice() {
            [
                MessageType {
                    schema: Some(s), ..
                },
            ] => s.clone(),
            _ => {
                let schemas: Vec<Value> = self
                    .message_types
                    .iter()
                    .filter_map(|m| m.schema.clone())
                    .collect();
                if schemas.is_empty() {
                    json!({ "description": "the message data (any JSON)" })
                } else {
                    json!({ "anyOf": schemas })
                }
            }
        };
        let mut message_type = json!({
            "type": "string",
            "description": "the message type (its ce-type)",
        });
        if !self.message_types.is_empty() {
            let names: Vec<&str> = self.message_types.iter().map(|m| m.name.as_str()).collect();
            message_type["enum"] = json!(names);
            message_type["default"] = json!(names[0]);
        }
        json!({
            "type": "object",
            "properties": {
                "message": message,
                "messageType": message_type,
                "key": {
                    "type": "string",
                    "description": "the agent key: calls with one key reach one agent instance \
                                    (its state, its conversation); default \"default\"",
                },
            },
            "required": ["message"],
            "additionalProperties": false,
        })
    }
}

fn builtin_name(b: Builtin) -> &'static str {
    match b {
        Builtin::Echo => "echo",
        Builtin::Counter => "counter",
        Builtin::Relay => "relay",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::{AgentEntry, MessageTypeEntry};

    fn entry(types: Vec<MessageTypeEntry>) -> AgentEntry {
        AgentEntry {
            agent_type: "py".into(),
            builtin: None,
            description: Some("does things".into()),
            message_types: types,
            ..AgentEntry::default()
        }
    }

    #[test]
    fn declared_types_shape_the_input_schema() {
        let schema = json!({"type": "object", "properties": {"q": {"type": "string"}}});
        let one = AgentInfo::from_entry(&entry(vec![MessageTypeEntry {
            name: "demo.Ask".into(),
            schema: Some(schema.clone()),
        }]));
        assert_eq!(one.default_type(TEXT_TYPE), "demo.Ask");
        assert!(one.accepts("demo.Ask") && !one.accepts("demo.Other"));
        let s = one.input_schema();
        assert_eq!(s["properties"]["message"], schema);
        assert_eq!(s["properties"]["messageType"]["enum"], json!(["demo.Ask"]));

        let any = AgentInfo::from_entry(&entry(Vec::new()));
        assert_eq!(any.default_type(TEXT_TYPE), TEXT_TYPE);
        assert!(any.accepts("whatever"));
        assert!(
            any.input_schema()["properties"]["messageType"]
                .get("enum")
                .is_none()
        );
        assert_eq!(any.description, "does things");
    }
}
