//! A2A's data model (messages, parts, tasks, artifacts) as the server keeps it, and
//! reading messages a client sent in either JSON dialect (v1.0 proto JSON or v0.3
//! `kind`-tagged objects); [`super::render`] writes answers in the caller's [`Dialect`].
//!
//! The serde form of these types is the stored form (the tasks topic, docs/protocol.md);
//! it happens to match v1.0 for parts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The JSON shapes a caller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// A2A 1.0.
    V1,
    /// A2A 0.3 (the `message/send` family of method names).
    V03,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskState {
    /// Accepted, not started.
    Submitted,
    /// The RPC is in the agent's inbox or its handler runs.
    Working,
    /// The agent needs more input (not produced by Switchboard agents yet).
    InputRequired,
    /// The agent replied.
    Completed,
    /// The agent's handler failed, or the RPC timed out.
    Failed,
    /// Canceled by a client.
    Canceled,
    /// The agent refused it.
    Rejected,
    /// Authentication is needed (not produced by Switchboard agents yet).
    AuthRequired,
}

impl TaskState {
    const ALL: [TaskState; 8] = [
        Self::Submitted,
        Self::Working,
        Self::InputRequired,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
        Self::Rejected,
        Self::AuthRequired,
    ];

    /// No further change: completed, failed, canceled, rejected.
    /// Whether an RPC of the task is in flight (`submitted`, `working`).
    pub fn is_running(self) -> bool {
        matches!(self, Self::Submitted | Self::Working)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Canceled | Self::Rejected
        )
    }

    /// The v1.0 name, e.g. `TASK_STATE_COMPLETED`.
    pub fn v1_name(self) -> &'static str {
        match self {
            Self::Submitted => "TASK_STATE_SUBMITTED",
            Self::Working => "TASK_STATE_WORKING",
            Self::InputRequired => "TASK_STATE_INPUT_REQUIRED",
            Self::Completed => "TASK_STATE_COMPLETED",
            Self::Failed => "TASK_STATE_FAILED",
            Self::Canceled => "TASK_STATE_CANCELED",
            Self::Rejected => "TASK_STATE_REJECTED",
            Self::AuthRequired => "TASK_STATE_AUTH_REQUIRED",
        }
    }

    /// The v0.3 name, e.g. `completed`.
    pub fn v03_name(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Working => "working",
            Self::InputRequired => "input-required",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Rejected => "rejected",
            Self::AuthRequired => "auth-required",
        }
    }

    /// Reads a state in either dialect.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.v1_name() == text || s.v03_name() == text)
    }

    /// The name in `dialect`.
    pub fn name(self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::V1 => self.v1_name(),
            Dialect::V03 => self.v03_name(),
        }
    }
}

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The client.
    User,
    /// The agent.
    Agent,
}

/// What a part carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Content {
    /// Text.
    Text(String),
    /// Structured JSON.
    Data(Value),
    /// A file by URL.
    Url(String),
    /// File bytes, base64.
    Raw(String),
}

/// One part of a message or artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Its content.
    #[serde(flatten)]
    pub content: Content,
    /// Media type, e.g. `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// File name of a file part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            content: Content::Text(text.into()),
            media_type: None,
            filename: None,
            metadata: None,
        }
    }

    /// A data part.
    pub fn data(data: Value) -> Self {
        Self {
            content: Content::Data(data),
            media_type: None,
            filename: None,
            metadata: None,
        }
    }
}

/// A message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct A2aMessage {
    /// Its id, chosen by the sender.
    pub message_id: String,
    /// The conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// The task it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Sender.
    pub role: Role,
    /// Content.
    pub parts: Vec<Part>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// An output of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Its id.
    pub artifact_id: String,
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Content.
    pub parts: Vec<Part>,
    /// Free-form metadata (the reply's message type is in `messageType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// A task: one RPC into an agent's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Its id (a UUID chosen by the server).
    pub id: String,
    /// The conversation (= the agent key).
    pub context_id: String,
    /// Current state.
    pub state: TaskState,
    /// Why it is in that state (a failure's reason, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// When the state was set, RFC 3339.
    pub timestamp: String,
    /// Outputs.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The messages exchanged.
    #[serde(default)]
    pub history: Vec<A2aMessage>,
}

/// Reading a message a client sent; the error says what is wrong.
pub fn parse_message(value: &Value) -> Result<A2aMessage, String> {
    let object = value.as_object().ok_or("message must be an object")?;
    let text = |k: &str| object.get(k).and_then(Value::as_str).map(str::to_owned);
    let message_id = text("messageId").ok_or("message.messageId is required")?;
    let role = match object.get("role").and_then(Value::as_str) {
        Some("ROLE_USER" | "user") | None => Role::User,
        Some("ROLE_AGENT" | "agent") => Role::Agent,
        Some(other) => return Err(format!("message.role {other:?} is not a role")),
    };
    let parts = object
        .get("parts")
        .and_then(Value::as_array)
        .ok_or("message.parts must be a list")?
        .iter()
        .enumerate()
        .map(|(i, p)| parse_part(p).map_err(|e| format!("message.parts[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if parts.is_empty() {
        return Err("message.parts must not be empty".into());
    }
    Ok(A2aMessage {
        message_id,
        context_id: text("contextId").filter(|c| !c.is_empty()),
        task_id: text("taskId").filter(|t| !t.is_empty()),
        role,
        parts,
        metadata: object.get("metadata").filter(|m| m.is_object()).cloned(),
    })
}

/// Reading one part in either dialect; the error says what is wrong.
pub fn parse_part(value: &Value) -> Result<Part, String> {
    let object = value.as_object().ok_or("a part must be an object")?;
    let text = |k: &str| object.get(k).and_then(Value::as_str).map(str::to_owned);
    let metadata = object.get("metadata").filter(|m| m.is_object()).cloned();
    // v0.3: {"kind": "text" | "data" | "file", ...}; v1.0: the member present says.
    let (content, media_type, filename) = match object.get("kind").and_then(Value::as_str) {
        Some("text") => (
            Content::Text(text("text").ok_or("a text part needs text")?),
            None,
            None,
        ),
        Some("data") => (
            Content::Data(
                object
                    .get("data")
                    .cloned()
                    .ok_or("a data part needs data")?,
            ),
            None,
            None,
        ),
        Some("file") => {
            let file = object
                .get("file")
                .and_then(Value::as_object)
                .ok_or("a file part needs file")?;
            let f = |k: &str| file.get(k).and_then(Value::as_str).map(str::to_owned);
            let content = match (f("uri"), f("bytes")) {
                (Some(u), _) => Content::Url(u),
                (None, Some(b)) => Content::Raw(b),
                (None, None) => return Err("a file part needs file.uri or file.bytes".into()),
            };
            (content, f("mimeType"), f("name"))
        }
        Some(other) => return Err(format!("part kind {other:?} is unknown")),
        None => {
            let content = if let Some(t) = text("text") {
                Content::Text(t)
            } else if let Some(d) = object.get("data") {
                Content::Data(d.clone())
            } else if let Some(u) = text("url") {
                Content::Url(u)
            } else if let Some(r) = text("raw") {
                Content::Raw(r)
            } else {
                return Err("a part needs one of text, data, url, raw".into());
            };
            (content, text("mediaType"), text("filename"))
        }
    };
    Ok(Part {
        content,
        media_type,
        filename,
        metadata,
    })
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days: the proleptic Gregorian date of day `days`.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_of_both_dialects_read_alike() {
        let v1 = json!({"messageId": "m1", "role": "ROLE_USER", "contextId": "c",
                        "parts": [{"text": "hi"}, {"data": {"n": 1}, "mediaType": "application/json"}]});
        let v03 = json!({"kind": "message", "messageId": "m1", "role": "user", "contextId": "c",
                         "parts": [{"kind": "text", "text": "hi"}, {"kind": "data", "data": {"n": 1}}]});
        let (a, b) = (parse_message(&v1).unwrap(), parse_message(&v03).unwrap());
        assert_eq!(a.parts[0], b.parts[0]);
        assert_eq!(a.parts[1].content, b.parts[1].content);
        assert_eq!(a.context_id.as_deref(), Some("c"));
        for bad in [
            json!({"role": "user", "parts": [{"text": "x"}]}),
            json!({"messageId": "m", "parts": []}),
            json!({"messageId": "m", "parts": [{"kind": "video"}]}),
            json!({"messageId": "m", "parts": [{"nothing": 1}]}),
            json!({"messageId": "m", "role": "boss", "parts": [{"text": "x"}]}),
        ] {
            assert!(parse_message(&bad).is_err(), "{bad}");
        }
    }

    /// A completed task with one text artifact (also the render tests' fixture).
    pub(crate) fn task() -> Task {
        Task {
            id: "t1".into(),
            context_id: "c1".into(),
            state: TaskState::Completed,
            status_message: None,
            timestamp: rfc3339(0),
            artifacts: vec![Artifact {
                artifact_id: "a1".into(),
                name: None,
                parts: vec![Part::text("hello")],
                metadata: None,
            }],
            history: Vec::new(),
        }
    }

    #[test]
    fn stored_form_round_trips() {
        let t = task();
        let text = serde_json::to_string(&t).unwrap();
        assert!(text.contains(r#""parts":[{"text":"hello"}]"#), "{text}");
        assert_eq!(serde_json::from_str::<Task>(&text).unwrap(), t);
    }

    #[test]
    fn states_parse_in_both_dialects() {
        assert_eq!(
            TaskState::parse("TASK_STATE_CANCELED"),
            Some(TaskState::Canceled)
        );
        assert_eq!(
            TaskState::parse("input-required"),
            Some(TaskState::InputRequired)
        );
        assert_eq!(TaskState::parse("done"), None);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_607_445_123), "2025-12-01T16:44:05.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
