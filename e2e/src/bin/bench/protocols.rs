//! `protocols-rpc`: one echo RPC through each of the runtime's HTTP front doors, in the
//! same run and the same rounds: the `/v1` gateway, A2A `SendMessage` (blocking, so a
//! task written `working` and `completed` to the tasks topic and read back), and MCP
//! `tools/call`. Each is HTTP -> gateway -> Kafka -> echo agent in another runtime
//! process -> Kafka -> gateway -> HTTP answer; the A2A figure adds the task records.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use switchboard_runtime::admin::TopicAdmin;
use switchboard_runtime::config_file::{AgentEntry, Builtin};
use switchboard_runtime::gateway::Gateway;
use switchboard_runtime::gateway::catalog::AgentInfo;
use switchboard_runtime::{AgentRuntime, KafkaAgentRuntime, KafkaConfig, TopicNames, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::host::Host;
use crate::scenarios::{ROUNDS, latency_run};
use crate::stats::{CpuTicks, medians, round3};

const WARMUP: usize = 100;
const CALLS: usize = 1_000;

/// The three routes' requests for call `i`: (path, ce-type header, body).
fn request(route: &str, i: usize) -> (&'static str, Option<&'static str>, String) {
    match route {
        "v1" => (
            "/v1/agents/echo/k1",
            Some("bench.Ping"),
            format!("{{\"n\":{i}}}"),
        ),
        "a2a" => (
            "/a2a/echo",
            None,
            json!({"jsonrpc": "2.0", "id": i, "method": "SendMessage", "params": {"message": {
                "messageId": format!("m{i}"), "role": "ROLE_USER", "contextId": "k1",
                "parts": [{"data": {"n": i}}]}}})
            .to_string(),
        ),
        _ => (
            "/mcp",
            None,
            json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                "name": "echo", "arguments": {"message": {"n": i}, "key": "k1"}}})
            .to_string(),
        ),
    }
}

pub async fn protocols_rpc(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    let host = Host::start(kafka, prefix, "host").await?;
    let client =
        KafkaAgentRuntime::start_client(WorkerConfig::new(kafka.clone(), prefix, "gateway"))
            .await?;
    // The gateway's own tasks topic (a client runtime creates no runtime topics).
    let names = TopicNames::new(prefix)?;
    let tasks = names
        .runtime_specs("gateway", 1, None)
        .into_iter()
        .filter(|s| s.name == names.tasks("gateway"))
        .collect::<Vec<_>>();
    TopicAdmin::new(kafka, Duration::from_secs(30))?
        .ensure_topics(&tasks)
        .await?;
    let stopping = CancellationToken::new();
    // The gateway offers echo (hosted by the other process; RPCs find it in the registry).
    let echo = AgentInfo::from_entry(&AgentEntry {
        agent_type: "echo".into(),
        builtin: Some(Builtin::Echo),
        ..AgentEntry::default()
    });
    let gateway = Gateway::new(client.clone(), None, stopping.clone()).with_agents(vec![echo]);
    gateway
        .load_tasks(
            switchboard_runtime::defaults::TASK_RETENTION,
            stopping.clone(),
        )
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = {
        let stopping = stopping.clone();
        tokio::spawn(
            axum::serve(listener, gateway.router())
                .with_graceful_shutdown(async move { stopping.cancelled().await })
                .into_future(),
        )
    };
    let http = reqwest::Client::new();
    let post = async |route: &str, i: usize| -> anyhow::Result<()> {
        let (path, ce_type, body) = request(route, i);
        let mut req = http
            .post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = ce_type {
            req = req.header("ce-type", t);
        }
        let answer = req.send().await?;
        anyhow::ensure!(answer.status().is_success(), "{route}: {}", answer.status());
        let bytes = answer.bytes().await?;
        // A JSON-RPC error is HTTP 200: make sure each call really succeeded.
        if route != "v1" {
            let v: Value = serde_json::from_slice(&bytes).context("JSON-RPC answer")?;
            anyhow::ensure!(v.get("error").is_none(), "{route}: {v}");
            if route == "a2a" {
                anyhow::ensure!(
                    v["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED",
                    "{v}"
                );
            }
        }
        Ok(())
    };
    let pids: Vec<u32> = host.pid().into_iter().collect();
    let timed = async |route: &str| -> anyhow::Result<Value> {
        for i in 0..WARMUP {
            post(route, i).await?;
        }
        let cpu = CpuTicks::now_with(pids.clone());
        let mut samples = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let started = Instant::now();
            post(route, i).await?;
            samples.push(started.elapsed());
        }
        Ok(latency_run(&mut samples, &cpu))
    };
    let (mut v1, mut a2a, mut mcp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        v1.push(timed("v1").await?);
        a2a.push(timed("a2a").await?);
        mcp.push(timed("mcp").await?);
    }
    stopping.cancel();
    let _ = server.await;
    client.stop().await?;
    host.stop().await?;
    let (v1m, a2am, mcpm) = (medians(&v1), medians(&a2a), medians(&mcp));
    let ratio = |x: &Value| match (x["p50_ms"].as_f64(), v1m["p50_ms"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(round3(a / b)),
        _ => Value::Null,
    };
    Ok(json!({
        "p50_ms": a2am["p50_ms"],
        "p99_ms": a2am["p99_ms"],
        "a2a_send_message": { "runs": a2a, "vs_v1_p50": ratio(&a2am), "medians": a2am },
        "mcp_tools_call": { "runs": mcp, "vs_v1_p50": ratio(&mcpm), "medians": mcpm },
        "v1_gateway": { "runs": v1, "medians": v1m },
        "config": {
            "calls": CALLS, "warmup": WARMUP, "rounds": ROUNDS,
            "figures": "medians of the rounds; top-level p50/p99 are A2A SendMessage",
            "routes": ["POST /v1/agents/echo/k1", "POST /a2a/echo SendMessage (blocking)", "POST /mcp tools/call echo"],
            "gateway": "client runtime in the bench process", "callee": "echo agent in another runtime process",
            "cpu": "gateway and callee processes",
        },
    }))
}
