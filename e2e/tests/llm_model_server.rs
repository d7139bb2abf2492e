//! The test model server speaks the Chat Completions wire format: JSON completions
//! with tool calls, SSE chunks ending in `[DONE]`, scripted errors with `Retry-After`,
//! and it counts every request by conversation position.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use serde_json::{Value, json};
use switchboard_e2e::model_server::{ModelServer, Reply, Rule};

async fn post(server: &ModelServer, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", server.endpoint()))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn llm_model_server_answers_in_the_chat_completions_format() {
    let server = ModelServer::start(vec![
        Rule::at(
            "weather",
            0,
            Reply::ToolCalls(vec![("lookup".into(), json!({"city": "Oslo"}))]),
        ),
        Rule::at("weather", 1, Reply::Text("Sunny in Oslo".into())),
    ])
    .await;
    let first = json!({
        "model": "m", "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    });
    let r: Value = post(&server, first).await.json().await.unwrap();
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");
    let call = &r["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Oslo"}));
    assert_eq!(r["usage"]["total_tokens"], 15);

    // The next request carries the assistant's tool call and the tool's result.
    let second = json!({
        "model": "m", "stream": true,
        "messages": [
            {"role": "user", "content": "weather?"},
            r["choices"][0]["message"].clone(),
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"sky\":\"clear\"}"},
        ],
    });
    let resp = post(&server, second).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let content: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "Sunny in Oslo");
    assert_eq!(
        (server.count_at("weather", 0), server.count_at("weather", 1)),
        (1, 1)
    );
    assert_eq!(
        server.seen()[0].authorization.as_deref(),
        Some("Bearer sk-test")
    );
}

#[tokio::test]
async fn llm_model_server_scripts_errors_and_rejects_bad_requests() {
    let server = ModelServer::start(vec![Rule::always("", Reply::Text("ok".into()))]).await;
    server.fail_first(1, Reply::Status(429, Some(2)));
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&server, body.clone()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(post(&server, body).await.status(), 200);
    let r = post(&server, json!({"messages": []})).await;
    assert_eq!(r.status(), 400, "model is required");
    assert_eq!(server.count(), 2, "only well-formed requests are counted");
}

#[tokio::test]
async fn llm_model_server_scripts_load_from_json_and_quote_tool_results() {
    let script = json!([
        {"user": "count", "step": 0, "toolCalls": [{"name": "counter", "arguments": {}}]},
        {"user": "count", "step": 1, "text": "The counter says {{tool_results}}."},
    ]);
    let rules = switchboard_e2e::model_server::rules_from_script(&script).unwrap();
    let server = ModelServer::start(rules).await;
    let r: Value = post(
        &server,
        json!({"model": "m", "messages": [{"role": "user", "content": "count me"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        r["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "counter"
    );
    let r: Value = post(&server, json!({"model": "m", "messages": [
        {"role": "user", "content": "count me"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0_0", "type": "function",
            "function": {"name": "counter", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0_0", "content": "{\"count\":3}"},
    ]}))
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        r["choices"][0]["message"]["content"],
        "The counter says {\"count\":3}."
    );
    let bad = json!([{"user": "x", "text": "a", "toolCalls": []}]);
    let e = switchboard_e2e::model_server::rules_from_script(&bad).unwrap_err();
    assert!(e.contains("script[0]"), "{e}");
}
