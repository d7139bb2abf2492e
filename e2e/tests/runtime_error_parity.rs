//! The in-memory runtime promises the Kafka runtime's semantics, so a user's unit test
//! sees the errors production would: the same failing agents run on both, against
//! the real broker, and every error the caller gets is compared.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::time::Duration;

use serde_json::json;
use switchboard_e2e::agents::{Fail, Responder};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{
    AgentId, AgentRuntime, AgentRuntimeExt, InMemoryRuntime, Payload, RuntimeError, SendOptions,
};

/// The calls whose errors are compared: (what, payload, recipient).
fn failing_calls() -> Vec<(&'static str, Payload, AgentId)> {
    let responder = AgentId::new("responder", "r1").unwrap();
    vec![
        (
            "handler error",
            Payload::encode(&Fail {
                reason: "no luck".into(),
            })
            .unwrap(),
            responder.clone(),
        ),
        (
            "unknown message type",
            Payload::json("test.Nobody", &json!({})),
            responder.clone(),
        ),
        (
            "body that does not decode into the handler's type",
            Payload::json("test.Ping", &json!({"n": "not a number"})),
            responder,
        ),
        (
            "unknown agent type",
            Payload::json("test.Ping", &json!({"n": 1})),
            AgentId::new("nobody", "k").unwrap(),
        ),
    ]
}

async fn errors_of(rt: &impl AgentRuntime) -> Vec<(&'static str, RuntimeError)> {
    let mut errors = Vec::new();
    for (what, payload, to) in failing_calls() {
        let options = SendOptions {
            timeout: Some(Duration::from_secs(20)),
            ..SendOptions::default()
        };
        match rt.send_payload(payload, &to, options).await {
            Ok(reply) => panic!("{what}: expected an error, got {reply:?}"),
            Err(e) => errors.push((what, e)),
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_failures_reach_the_caller_as_the_same_errors_on_both_runtimes() {
    let memory = InMemoryRuntime::default();
    memory.register("responder", Responder::new).await.unwrap();
    let in_memory = errors_of(&memory).await;

    let net = TestNet::new();
    let host = net.start("host").await.unwrap();
    host.register("responder", Responder::new).await.unwrap();
    let caller = net.start("caller").await.unwrap();
    let over_kafka = errors_of(&caller).await;

    for ((what, mem), (_, kafka)) in in_memory.iter().zip(&over_kafka) {
        assert_eq!(kafka, mem, "{what}: Kafka runtime vs in-memory runtime");
    }
    // The decode failure names the type it could not decode, once.
    assert!(
        matches!(&in_memory[2].1, RuntimeError::Codec(e) if e.to_string().matches("test.Ping").count() == 1),
        "{}",
        in_memory[2].1
    );
    caller.stop().await.unwrap();
    host.stop().await.unwrap();
}
