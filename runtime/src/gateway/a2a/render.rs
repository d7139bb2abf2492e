//! Writing A2A objects in the caller's dialect: v1.0 (proto JSON: `{"text": ..}` parts,
//! `TASK_STATE_COMPLETED`, `ROLE_USER`, `SendMessage` results wrapped as `{"task": ..}`,
//! stream events `{"statusUpdate": ..}`) or v0.3 (`kind`-tagged parts and objects,
//! `completed`, `user`, bare results, `status-update` events with `final`).

use serde_json::{Map, Value, json};

use super::model::{A2aMessage, Artifact, Content, Dialect, Part, Role, Task};

fn insert_opt(object: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        object.insert(key.to_owned(), v);
    }
}

/// A part in `dialect`.
pub fn render_part(part: &Part, dialect: Dialect) -> Value {
    let mut out = Map::new();
    match dialect {
        Dialect::V1 => {
            match &part.content {
                Content::Text(t) => out.insert("text".into(), json!(t)),
                Content::Data(d) => out.insert("data".into(), d.clone()),
                Content::Url(u) => out.insert("url".into(), json!(u)),
                Content::Raw(r) => out.insert("raw".into(), json!(r)),
            };
            insert_opt(
                &mut out,
                "mediaType",
                part.media_type.as_ref().map(|m| json!(m)),
            );
            insert_opt(
                &mut out,
                "filename",
                part.filename.as_ref().map(|f| json!(f)),
            );
        }
        Dialect::V03 => match &part.content {
            Content::Text(t) => {
                out.insert("kind".into(), json!("text"));
                out.insert("text".into(), json!(t));
            }
            // v0.3 data parts hold an object; other JSON is wrapped.
            Content::Data(d) => {
                out.insert("kind".into(), json!("data"));
                let data = if d.is_object() {
                    d.clone()
                } else {
                    json!({ "value": d })
                };
                out.insert("data".into(), data);
            }
            Content::Url(_) | Content::Raw(_) => {
                let mut file = Map::new();
                match &part.content {
                    Content::Url(u) => file.insert("uri".into(), json!(u)),
                    _ => file.insert(
                        "bytes".into(),
                        json!(match &part.content {
                            Content::Raw(r) => r.as_str(),
                            _ => "",
                        }),
                    ),
                };
                insert_opt(
                    &mut file,
                    "mimeType",
                    part.media_type.as_ref().map(|m| json!(m)),
                );
                insert_opt(&mut file, "name", part.filename.as_ref().map(|f| json!(f)));
                out.insert("kind".into(), json!("file"));
                out.insert("file".into(), Value::Object(file));
            }
        },
    }
    insert_opt(&mut out, "metadata", part.metadata.clone());
    Value::Object(out)
}

fn render_parts(parts: &[Part], dialect: Dialect) -> Value {
    Value::Array(parts.iter().map(|p| render_part(p, dialect)).collect())
}

/// A message in `dialect`.
pub fn render_message(m: &A2aMessage, dialect: Dialect) -> Value {
    let mut out = Map::new();
    if dialect == Dialect::V03 {
        out.insert("kind".into(), json!("message"));
    }
    out.insert("messageId".into(), json!(m.message_id));
    insert_opt(
        &mut out,
        "contextId",
        m.context_id.as_ref().map(|c| json!(c)),
    );
    insert_opt(&mut out, "taskId", m.task_id.as_ref().map(|t| json!(t)));
    let role = match (m.role, dialect) {
        (Role::User, Dialect::V1) => "ROLE_USER",
        (Role::Agent, Dialect::V1) => "ROLE_AGENT",
        (Role::User, Dialect::V03) => "user",
        (Role::Agent, Dialect::V03) => "agent",
    };
    out.insert("role".into(), json!(role));
    out.insert("parts".into(), render_parts(&m.parts, dialect));
    insert_opt(&mut out, "metadata", m.metadata.clone());
    Value::Object(out)
}

/// An artifact in `dialect`.
pub fn render_artifact(a: &Artifact, dialect: Dialect) -> Value {
    let mut out = Map::new();
    out.insert("artifactId".into(), json!(a.artifact_id));
    insert_opt(&mut out, "name", a.name.as_ref().map(|n| json!(n)));
    out.insert("parts".into(), render_parts(&a.parts, dialect));
    insert_opt(&mut out, "metadata", a.metadata.clone());
    Value::Object(out)
}

/// A task's status in `dialect`.
pub fn render_status(task: &Task, dialect: Dialect) -> Value {
    let mut status = json!({
        "state": task.state.name(dialect),
        "timestamp": task.timestamp,
    });
    if let Some(reason) = &task.status_message {
        let message = A2aMessage {
            message_id: format!("{}-status", task.id),
            context_id: Some(task.context_id.clone()),
            task_id: Some(task.id.clone()),
            role: Role::Agent,
            parts: vec![Part::text(reason)],
            metadata: None,
        };
        status["message"] = render_message(&message, dialect);
    }
    status
}

/// What of a task to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// At most this many history messages (the latest); `None`: all.
    pub history_length: Option<usize>,
    /// Include artifacts.
    pub artifacts: bool,
}

impl View {
    /// Everything.
    pub const FULL: View = View {
        history_length: None,
        artifacts: true,
    };
}

/// A task in `dialect`.
pub fn render_task(task: &Task, dialect: Dialect, view: View) -> Value {
    let mut out = Map::new();
    if dialect == Dialect::V03 {
        out.insert("kind".into(), json!("task"));
    }
    out.insert("id".into(), json!(task.id));
    out.insert("contextId".into(), json!(task.context_id));
    out.insert("status".into(), render_status(task, dialect));
    if view.artifacts && !task.artifacts.is_empty() {
        out.insert(
            "artifacts".into(),
            Value::Array(
                task.artifacts
                    .iter()
                    .map(|a| render_artifact(a, dialect))
                    .collect(),
            ),
        );
    }
    let skip = view
        .history_length
        .map_or(0, |n| task.history.len().saturating_sub(n));
    let history: Vec<Value> = task.history[skip..]
        .iter()
        .map(|m| render_message(m, dialect))
        .collect();
    if !history.is_empty() {
        out.insert("history".into(), Value::Array(history));
    }
    Value::Object(out)
}

/// The result of `SendMessage`: v1.0 wraps the task (`{"task": ..}`), v0.3 does not.
pub fn send_result(task: &Task, dialect: Dialect, view: View) -> Value {
    let t = render_task(task, dialect, view);
    match dialect {
        Dialect::V1 => json!({ "task": t }),
        Dialect::V03 => t,
    }
}

/// Stream events (`SendStreamingMessage`, `SubscribeToTask`) in `dialect`.
pub mod event {
    use super::*;

    /// The task as it is now (the first event of a stream).
    pub fn task(task: &Task, dialect: Dialect) -> Value {
        send_result(task, dialect, View::FULL)
    }

    /// A status change; v0.3 marks the last with `final`.
    pub fn status(task: &Task, dialect: Dialect) -> Value {
        let mut e = json!({
            "taskId": task.id,
            "contextId": task.context_id,
            "status": render_status(task, dialect),
        });
        match dialect {
            Dialect::V1 => json!({ "statusUpdate": e }),
            Dialect::V03 => {
                e["kind"] = json!("status-update");
                e["final"] = json!(task.state.is_terminal());
                e
            }
        }
    }

    /// One whole artifact (never chunked).
    pub fn artifact(task: &Task, artifact: &Artifact, dialect: Dialect) -> Value {
        let mut e = json!({
            "taskId": task.id,
            "contextId": task.context_id,
            "artifact": render_artifact(artifact, dialect),
            "lastChunk": true,
        });
        match dialect {
            Dialect::V1 => json!({ "artifactUpdate": e }),
            Dialect::V03 => {
                e["kind"] = json!("artifact-update");
                e
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::a2a::model::tests::task;

    #[test]
    fn tasks_render_in_the_callers_dialect() {
        let t = task();
        let v1 = send_result(&t, Dialect::V1, View::FULL);
        assert_eq!(v1["task"]["status"]["state"], "TASK_STATE_COMPLETED");
        assert_eq!(
            v1["task"]["artifacts"][0]["parts"][0],
            json!({"text": "hello"})
        );
        assert!(v1["task"].get("kind").is_none());
        let v03 = send_result(&t, Dialect::V03, View::FULL);
        assert_eq!(v03["kind"], "task");
        assert_eq!(v03["status"]["state"], "completed");
        assert_eq!(
            v03["artifacts"][0]["parts"][0],
            json!({"kind": "text", "text": "hello"})
        );
        let e = event::status(&t, Dialect::V03);
        assert_eq!(
            (e["kind"].clone(), e["final"].clone()),
            (json!("status-update"), json!(true))
        );
        assert!(event::status(&t, Dialect::V1)["statusUpdate"]["status"].is_object());
        let hidden = render_task(
            &t,
            Dialect::V1,
            View {
                history_length: Some(0),
                artifacts: false,
            },
        );
        assert!(hidden.get("artifacts").is_none());
    }
}
