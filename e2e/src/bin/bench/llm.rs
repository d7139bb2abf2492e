//! `llm-overhead`: what the `llm` agent and durable steps add, with a zero-latency
//! model server (`switchboard_e2e::model_server`) on loopback. Sequential RPCs from a
//! client runtime to agents in one host runtime (another `KafkaAgentRuntime` in this
//! process), p50/p99 of each:
//! - `echo`: no state, no step (the floor);
//! - `counter`: one plain state write per message;
//! - `stepper`: one durable step (one journal write) per message;
//! - `assistant` answering at once: one model call (a step);
//! - `assistant` with one tool call to `echo`: two model calls, one tool RPC (3 steps);
//! - the model server called directly over HTTP (the model call's own cost).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use switchboard_e2e::model_server::{ModelServer, Reply, Rule};
use switchboard_runtime::config_file::Builtin;
use switchboard_runtime::llm_config::LlmSettings;
use switchboard_runtime::{
    Agent, AgentError, AgentId, AgentRuntime, HandlerResult, KafkaAgentRuntime, KafkaConfig,
    MessageContext, Payload, SendOptions, WorkerConfig,
};

use crate::stats::{latency_ms, round3};

const WARMUP: usize = 20;
const CALLS: usize = 300;

/// One durable step per message, then echoes.
struct Stepper;

#[async_trait]
impl Agent for Stepper {
    async fn on_message(&mut self, message: Payload, ctx: &MessageContext) -> HandlerResult {
        let n: u64 = ctx.step("work", async { Ok::<_, AgentError>(1) }).await?;
        debug_assert_eq!(n, 1);
        Ok(Some(message))
    }
}

/// Rounds: the targets take turns, so load from elsewhere on the machine hits all.
const ROUNDS: usize = 5;

/// `CALLS / ROUNDS` sequential RPCs to `to` (after `WARMUP` unmeasured ones in the
/// first round), appended to `samples`.
async fn round(
    caller: &KafkaAgentRuntime,
    to: &AgentId,
    payload: &Payload,
    warmup: usize,
    samples: &mut Vec<Duration>,
) -> anyhow::Result<()> {
    for i in 0..warmup + CALLS / ROUNDS {
        let started = Instant::now();
        caller
            .send_payload(payload.clone(), to, SendOptions::default())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no reply from {to}"))?;
        if i >= warmup {
            samples.push(started.elapsed());
        }
    }
    Ok(())
}

/// The scenario.
pub async fn llm_overhead(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    let model = ModelServer::start(vec![
        Rule::always("plain", Reply::Text("ok".into())),
        Rule::at(
            "tool",
            0,
            Reply::ToolCalls(vec![("echo".into(), json!({"x": 1}))]),
        ),
        Rule::at("tool", 1, Reply::Text("ok".into())),
    ])
    .await;
    let settings: LlmSettings = serde_json::from_value(json!({
        "model": {"endpoint": model.endpoint(), "model": "bench"},
        "tools": [{"agent": "echo"}],
        "memory": {"maxMessages": 4},
    }))?;
    let host = KafkaAgentRuntime::new(WorkerConfig::new(kafka.clone(), prefix, "llm-host"))?;
    let http = switchboard_runtime::http_agent::client()?;
    host.register_factory(
        "echo",
        switchboard_runtime::builtins::factory(Builtin::Echo, None).map_err(anyhow::Error::msg)?,
    )
    .await?;
    host.register_factory(
        "counter",
        switchboard_runtime::builtins::factory(Builtin::Counter, None)
            .map_err(anyhow::Error::msg)?,
    )
    .await?;
    host.register_factory(
        "stepper",
        switchboard_runtime::AgentFactory::new(|_| Stepper),
    )
    .await?;
    host.register_factory(
        "assistant",
        switchboard_runtime::llm::factory(
            http.clone(),
            "assistant",
            settings.clone(),
            None,
            switchboard_runtime::llm::Tools::new(&http, &settings, &[], &[]),
            Default::default(),
        ),
    )
    .await?;
    host.start().await?;
    host.wait_ready(Duration::from_secs(60)).await;
    let caller =
        KafkaAgentRuntime::start_client(WorkerConfig::new(kafka.clone(), prefix, "llm-caller"))
            .await?;
    let ping = Payload::json("bench.Ping", &json!({"n": 1}));
    let targets = [
        (AgentId::new("echo", "k1")?, ping.clone()),
        (AgentId::new("counter", "k1")?, ping.clone()),
        (AgentId::new("stepper", "k1")?, ping),
        (
            AgentId::new("assistant", "k1")?,
            Payload::json("bench.Ask", &json!("plain")),
        ),
        (
            AgentId::new("assistant", "k2")?,
            Payload::json("bench.Ask", &json!("tool")),
        ),
    ];
    let mut samples: Vec<Vec<Duration>> = targets.iter().map(|_| Vec::new()).collect();
    for r in 0..ROUNDS {
        for ((to, payload), s) in targets.iter().zip(samples.iter_mut()) {
            round(&caller, to, payload, if r == 0 { WARMUP } else { 0 }, s).await?;
        }
    }
    let mut figures = samples.iter_mut().map(|s| latency_ms(s));
    let mut next = || figures.next().unwrap_or(Value::Null);
    let (echo, counter, stepper, plain, tool) = (next(), next(), next(), next(), next());
    let mut direct = Vec::with_capacity(CALLS);
    let body = json!({"model": "bench", "messages": [{"role": "user", "content": "plain"}]});
    for i in 0..WARMUP + CALLS {
        let started = Instant::now();
        http.post(format!("{}/chat/completions", model.endpoint()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?
            .bytes()
            .await?;
        if i >= WARMUP {
            direct.push(started.elapsed());
        }
    }
    let direct = latency_ms(&mut direct);
    caller.stop().await?;
    host.stop().await?;
    let p50 = |v: &Value| v["p50_ms"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "echo": echo, "counter_state_write": counter, "stepper_durable_step": stepper,
        "llm_one_model_call": plain, "llm_one_tool_call": tool, "model_server_direct": direct,
        "derived_p50_ms": {
            "durable_step": round3(p50(&stepper) - p50(&echo)),
            "plain_state_write": round3(p50(&counter) - p50(&echo)),
            "llm_added_per_model_call": round3(p50(&plain) - p50(&echo) - p50(&direct)),
            "llm_added_per_tool_call": round3(p50(&tool) - p50(&plain) - p50(&direct) - p50(&echo)),
        },
        "config": {"calls": CALLS, "warmup": WARMUP, "rounds": ROUNDS, "model_server": "loopback, zero latency",
                   "derived": "differences of p50s: durable_step = stepper - echo; plain_state_write = counter - echo; per model call = assistant(plain) - echo - direct; per tool call = assistant(tool) - assistant(plain) - direct - echo"},
    }))
}
