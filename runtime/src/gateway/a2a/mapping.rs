//! An A2A message as a Switchboard message, and a Switchboard reply as an A2A artifact
//! (docs/a2a-mcp.md, "Messages"):
//!
//! - the message type is `metadata.messageType` of the message, else the agent's only
//!   declared type, else [`TEXT_TYPE`] for text-only messages and [`DATA_TYPE`] otherwise;
//! - the data is the single data part's data, else `{"text": "<text parts, joined by
//!   newlines>"}` for text-only messages, else `{"parts": [<v1.0 parts>]}`; file parts
//!   are refused (content type not supported);
//! - a reply `{"text": s}` or a JSON string becomes a text part, other JSON a data part,
//!   non-JSON UTF-8 a text part with its media type; the reply's type is in the
//!   artifact's `metadata.messageType`.

use serde_json::{Value, json};

use super::model::{A2aMessage, Artifact, Content, Dialect, Part};
use super::render::render_part;
use crate::gateway::catalog::{AgentInfo, DATA_TYPE, TEXT_TYPE};
use crate::message::{Payload, is_json};

/// Why a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A part's content type is not supported.
    ContentType(String),
    /// The message is not one the agent accepts.
    Invalid(String),
}

/// The payload sent to `agent` for `message`.
pub fn payload_of(message: &A2aMessage, agent: &AgentInfo) -> Result<Payload, Refusal> {
    if let Some(p) = message
        .parts
        .iter()
        .find(|p| matches!(p.content, Content::Url(_) | Content::Raw(_)))
    {
        return Err(Refusal::ContentType(format!(
            "file parts ({}) are not supported: send text or data parts",
            p.media_type.as_deref().unwrap_or("no media type")
        )));
    }
    let texts: Vec<&str> = message
        .parts
        .iter()
        .filter_map(|p| match &p.content {
            Content::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let datas: Vec<&Value> = message
        .parts
        .iter()
        .filter_map(|p| match &p.content {
            Content::Data(d) => Some(d),
            _ => None,
        })
        .collect();
    let (fallback, data) = match (texts.as_slice(), datas.as_slice()) {
        ([], [one]) => (DATA_TYPE, (*one).clone()),
        (_, []) => (TEXT_TYPE, json!({ "text": texts.join("\n") })),
        _ => (
            DATA_TYPE,
            json!({ "parts": message.parts.iter().map(|p| render_part(p, Dialect::V1)).collect::<Vec<_>>() }),
        ),
    };
    let named = message
        .metadata
        .as_ref()
        .and_then(|m| m.get("messageType"))
        .and_then(Value::as_str);
    let type_name = named.unwrap_or_else(|| agent.default_type(fallback));
    if !agent.accepts(type_name) {
        let accepted: Vec<&str> = agent
            .message_types
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        return Err(Refusal::Invalid(format!(
            "agent type {} does not accept message type {type_name:?} (it accepts {}): \
             name one in message.metadata.messageType",
            agent.agent_type,
            accepted.join(", ")
        )));
    }
    Ok(Payload::json(type_name, &data))
}

/// The artifact of reply `reply` to task `task_id`; `Err` when it cannot be shown.
pub fn artifact_of(task_id: &str, reply: &Payload) -> Result<Artifact, String> {
    let part = if is_json(&reply.content_type) {
        let value: Value = serde_json::from_slice(&reply.data)
            .map_err(|e| format!("the agent's reply is not valid JSON: {e}"))?;
        match value {
            Value::String(s) => Part::text(s),
            Value::Object(ref o) if o.len() == 1 && o.get("text").is_some_and(Value::is_string) => {
                Part::text(o["text"].as_str().unwrap_or_default())
            }
            other => {
                let mut p = Part::data(other);
                p.media_type = Some("application/json".into());
                p
            }
        }
    } else {
        let text = std::str::from_utf8(&reply.data).map_err(|_| {
            format!(
                "the agent's reply ({}) is binary, which A2A text and data parts cannot carry",
                reply.content_type
            )
        })?;
        let mut p = Part::text(text);
        p.media_type = Some(reply.content_type.clone());
        p
    };
    Ok(Artifact {
        artifact_id: format!("{task_id}-reply"),
        name: Some("reply".into()),
        parts: vec![part],
        metadata: Some(json!({ "messageType": reply.type_name })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::{AgentEntry, Builtin, MessageTypeEntry};
    use crate::gateway::a2a::model::{Role, parse_message};

    fn agent(types: &[&str]) -> AgentInfo {
        AgentInfo::from_entry(&AgentEntry {
            agent_type: "a".into(),
            builtin: Some(Builtin::Echo),
            description: None,
            message_types: types
                .iter()
                .map(|t| MessageTypeEntry {
                    name: (*t).into(),
                    schema: None,
                })
                .collect(),
            ..AgentEntry::default()
        })
    }

    fn message(parts: Value, metadata: Option<Value>) -> A2aMessage {
        let mut m = json!({"messageId": "m", "role": "ROLE_USER", "parts": parts});
        if let Some(md) = metadata {
            m["metadata"] = md;
        }
        parse_message(&m).unwrap()
    }

    #[test]
    fn messages_become_payloads_as_documented() {
        let any = agent(&[]);
        let p = payload_of(&message(json!([{"text": "a"}, {"text": "b"}]), None), &any).unwrap();
        assert_eq!(
            (p.type_name.as_str(), &p.data[..]),
            (TEXT_TYPE, &br#"{"text":"a\nb"}"#[..])
        );
        let p = payload_of(&message(json!([{"data": {"n": 1}}]), None), &any).unwrap();
        assert_eq!(
            (p.type_name.as_str(), &p.data[..]),
            (DATA_TYPE, &br#"{"n":1}"#[..])
        );
        let p = payload_of(
            &message(json!([{"data": 1}]), Some(json!({"messageType": "demo.N"}))),
            &any,
        )
        .unwrap();
        assert_eq!(p.type_name, "demo.N");
        let p = payload_of(&message(json!([{"text": "q"}, {"data": 2}]), None), &any).unwrap();
        assert_eq!(
            p.decode_json::<Value>().unwrap()["parts"][1],
            json!({"data": 2})
        );

        let typed = agent(&["demo.Ask"]);
        assert_eq!(
            payload_of(&message(json!([{"text": "q"}]), None), &typed)
                .unwrap()
                .type_name,
            "demo.Ask"
        );
        let wrong = message(
            json!([{"text": "q"}]),
            Some(json!({"messageType": "demo.No"})),
        );
        assert!(matches!(
            payload_of(&wrong, &typed),
            Err(Refusal::Invalid(_))
        ));
        let file = message(
            json!([{"url": "http://x/f.png", "mediaType": "image/png"}]),
            None,
        );
        assert!(matches!(
            payload_of(&file, &any),
            Err(Refusal::ContentType(_))
        ));
        assert_eq!(file.role, Role::User);
    }

    #[test]
    fn replies_become_artifacts_as_documented() {
        let text = artifact_of("t", &Payload::json("x.T", &json!({"text": "hi"}))).unwrap();
        assert_eq!(text.parts[0], Part::text("hi"));
        assert_eq!(text.metadata, Some(json!({"messageType": "x.T"})));
        let data = artifact_of("t", &Payload::json("x.C", &json!({"count": 2}))).unwrap();
        assert_eq!(data.parts[0].content, Content::Data(json!({"count": 2})));
        let plain = Payload {
            type_name: "x.P".into(),
            content_type: "text/plain".into(),
            data: bytes::Bytes::from_static(b"plain"),
        };
        assert_eq!(
            artifact_of("t", &plain).unwrap().parts[0]
                .media_type
                .as_deref(),
            Some("text/plain")
        );
        let binary = Payload {
            data: bytes::Bytes::from_static(&[0xff, 0xfe]),
            ..plain
        };
        assert!(artifact_of("t", &binary).is_err());
    }
}
