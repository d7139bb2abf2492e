//! A runtime process for benchmarks: `bench_host BOOTSTRAP PREFIX RUNTIME`.
//!
//! Hosts `echo` (replies with what it got) and `small` (keeps a tiny state per key).
//! Prints `ready` once serving, then `handled N` whenever the count of handled
//! messages changed (at most every 250 ms), and `rss_kib N` on each such line's
//! heels, so a benchmark can watch progress and memory from outside.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use switchboard_runtime::{
    Agent, AgentError, AgentId, AgentRuntime, AgentRuntimeExt, HandlerResult, KafkaAgentRuntime,
    KafkaConfig, MessageContext, Payload, WorkerConfig,
};

/// The runtime binary's allocator, so memory figures match what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Echo(Arc<AtomicU64>);

#[async_trait]
impl Agent for Echo {
    async fn on_message(&mut self, msg: Payload, _ctx: &MessageContext) -> HandlerResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Some(msg))
    }
}

/// One small counter of state per key.
struct Small {
    handled: Arc<AtomicU64>,
    n: u64,
}

#[async_trait]
impl Agent for Small {
    async fn on_message(&mut self, _msg: Payload, _ctx: &MessageContext) -> HandlerResult {
        self.n += 1;
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    async fn save_state(&mut self) -> Result<Option<Value>, AgentError> {
        Ok(Some(json!({ "n": self.n })))
    }

    async fn load_state(&mut self, state: Value) -> Result<(), AgentError> {
        self.n = state["n"].as_u64().unwrap_or(0);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, prefix, runtime, settings @ ..] = args.as_slice() else {
        return Err(
            "usage: bench_host BOOTSTRAP PREFIX RUNTIME [producer.K=V|consumer.K=V ...]".into(),
        );
    };
    let mut kafka = KafkaConfig::new(bootstrap);
    for s in settings {
        switchboard_e2e::client_settings::apply(&mut kafka, s)?;
    }
    let rt = KafkaAgentRuntime::new(WorkerConfig::new(kafka, prefix, runtime))?;
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    rt.register("echo", move |_: &AgentId| Echo(h.clone()))
        .await?;
    let h = handled.clone();
    rt.register("small", move |_: &AgentId| Small {
        handled: h.clone(),
        n: 0,
    })
    .await?;
    rt.start().await?;
    rt.wait_ready(Duration::from_secs(60)).await;
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last = u64::MAX;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let now = handled.load(Ordering::Relaxed);
        if now != last {
            last = now;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "handled {now} rss_kib {}",
                switchboard_e2e::wait::rss_kib(None)
            )?;
            out.flush()?;
        }
    }
    rt.stop().await?;
    Ok(())
}
