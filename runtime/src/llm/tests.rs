use super::*;

fn m(role: &str) -> ChatMessage {
    ChatMessage::text(role, role)
}

#[test]
fn memory_drops_whole_turns_from_the_front() {
    let conv = vec![
        m("user"),
        m("assistant"),
        m("tool"),
        m("assistant"),
        m("user"),
        m("assistant"),
    ];
    let roles = |v: Vec<ChatMessage>| v.into_iter().map(|m| m.role).collect::<Vec<_>>();
    assert_eq!(roles(truncate(conv.clone(), 10)).len(), 6);
    assert_eq!(
        roles(truncate(conv.clone(), 3)),
        ["user", "assistant"],
        "never starts at a tool message"
    );
    assert_eq!(roles(truncate(conv.clone(), 1)), Vec::<String>::new());
    assert!(truncate(conv, 0).is_empty());
}

#[test]
fn user_text_accepts_strings_objects_and_raw_text() {
    assert_eq!(user_text(&Payload::json("t", &json!("hi"))), "hi");
    assert_eq!(
        user_text(&Payload::json("t", &json!({"content": "yo"}))),
        "yo"
    );
    assert_eq!(
        user_text(&Payload::json("t", &json!({"a": 1}))),
        r#"{"a":1}"#
    );
    let raw = Payload {
        type_name: "t".into(),
        content_type: "text/plain".into(),
        data: bytes::Bytes::from_static(b"plain"),
    };
    assert_eq!(user_text(&raw), "plain");
}
