//! Durable steps of an HTTP agent (`switchboard-steps` URL, runtime/src/http_steps.rs)
//! in real `switchboard-runtime run` processes on the real broker: the agent (an HTTP
//! server in this test) journals step `a`, then waits in step `b`; the runtime is
//! SIGKILLed there, and after redelivery to a new process step `a` comes from the
//! journal, so it ran once. With `durableSteps: false` it runs twice (the test can
//! fail). Bad step requests get clear HTTP errors.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use switchboard_e2e::binary::{RuntimeProcess, free_port};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{AgentId, AgentRuntime, KafkaAgentRuntime, Payload, SendOptions};
use tokio::sync::Notify;

const READY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Agent {
    a_runs: AtomicU32,
    b_runs: AtomicU32,
    /// Set once the first run of step b waits (the moment to kill the runtime).
    b_waiting: Notify,
    bad_requests: std::sync::Mutex<Vec<(u16, String)>>,
}

/// One step through the runtime: the journaled value, or `work()` journaled.
async fn step(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    work: impl FnOnce() -> Value,
) -> Value {
    let started: Value = http
        .post(format!("{url}/{name}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if started["done"] == true {
        return started["value"].clone();
    }
    let value = work();
    let put = http
        .put(format!("{url}/{name}/{}", started["n"]))
        .json(&value)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204, "{:?}", put.text().await);
    value
}

async fn handle(State(agent): State<Arc<Agent>>, headers: HeaderMap) -> Response {
    let url = headers["switchboard-steps"].to_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    // Misuse is answered clearly (and the real steps still work afterwards).
    let bad = http
        .put(format!("{url}/never-started/0"))
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    let unknown = http.post(format!("{url}x/a")).send().await.unwrap();
    let answers = [
        (bad.status().as_u16(), bad.text().await.unwrap()),
        (unknown.status().as_u16(), unknown.text().await.unwrap()),
    ];
    agent.bad_requests.lock().unwrap().extend(answers);
    let a = step(&http, &url, "a", || {
        json!(agent.a_runs.fetch_add(1, Ordering::SeqCst) + 1)
    })
    .await;
    let first_b = agent.b_runs.load(Ordering::SeqCst) == 0;
    if first_b {
        agent.b_runs.fetch_add(1, Ordering::SeqCst);
        agent.b_waiting.notify_one();
        // Held until the runtime that sent this dies (bounded).
        tokio::time::sleep(Duration::from_secs(90)).await;
    }
    let b = step(&http, &url, "b", || {
        json!(agent.b_runs.fetch_add(1, Ordering::SeqCst) + 1)
    })
    .await;
    (
        [("ce-type", "demo.Done")],
        axum::Json(json!({ "a": a, "b": b })),
    )
        .into_response()
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn config(net: &TestNet, durable: bool, agent: SocketAddr, http: SocketAddr) -> String {
    let extra = if durable { "" } else { ", durableSteps: false" };
    format!(
        "kafka: {{ bootstrapServers: \"{}\", topicPrefix: {} }}\n\
         runtime: {{ name: steps, partitions: 2, rpcTimeoutMs: 120000{extra} }}\n\
         agents:\n  - {{ type: worker, http: {{ url: \"http://{agent}/work\", timeoutMs: 120000 }} }}\n\
         http: {{ listen: \"{http}\" }}\n",
        net.bootstrap, net.prefix
    )
}

/// (runs of step a, the reply)
async fn crash_in_step_b(durable: bool) -> (u32, Value, Vec<(u16, String)>) {
    let net = TestNet::new();
    let agent = Arc::new(Agent::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/work", post(handle))
        .with_state(Arc::clone(&agent));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = addr();
    let mut first =
        RuntimeProcess::spawn("steps-1", &config(&net, durable, agent_addr, http), http);
    first.wait_ready(READY).await;
    let caller = KafkaAgentRuntime::start_client(net.config("caller"))
        .await
        .unwrap();
    let call = {
        let caller = caller.clone();
        tokio::spawn(async move {
            caller
                .send_payload(
                    Payload::json("demo.Work", &json!({})),
                    &AgentId::new("worker", "k1").unwrap(),
                    SendOptions {
                        timeout: Some(Duration::from_secs(120)),
                        ..SendOptions::default()
                    },
                )
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(30), agent.b_waiting.notified())
        .await
        .unwrap_or_else(|_| panic!("step b never started; log:\n{}", first.log_text()));
    assert_eq!(agent.a_runs.load(Ordering::SeqCst), 1);
    first.kill_hard().await;
    let http2 = addr();
    let mut second =
        RuntimeProcess::spawn("steps-2", &config(&net, durable, agent_addr, http2), http2);
    second.wait_ready(READY).await;
    let started = Instant::now();
    let reply = call
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "{e} after {:?}; log:\n{}",
                started.elapsed(),
                second.log_text()
            )
        })
        .unwrap();
    let reply: Value = reply.decode_json().unwrap();
    caller.stop().await.unwrap();
    second.terminate();
    second.wait_exit(Duration::from_secs(60)).await;
    server.abort();
    let bad = agent.bad_requests.lock().unwrap().clone();
    (agent.a_runs.load(Ordering::SeqCst), reply, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_steps_of_an_http_agent_are_not_repeated_after_a_sigkill() {
    let (a_runs, reply, bad) = crash_in_step_b(true).await;
    assert_eq!(a_runs, 1, "step a came from the journal after redelivery");
    assert_eq!(reply, json!({"a": 1, "b": 2}));
    assert!(
        bad.iter()
            .any(|(s, t)| *s == 400 && t.contains("was not started")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|(s, t)| *s == 404 && t.contains("no HTTP agent request")),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_steps_disabled_repeat_the_http_agents_completed_step() {
    let (a_runs, reply, _) = crash_in_step_b(false).await;
    assert_eq!(a_runs, 2, "without the journal step a ran again");
    assert_eq!(reply, json!({"a": 2, "b": 2}));
}
