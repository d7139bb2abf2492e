//! A runtime replica as its own process, for tests that kill processes.
//!
//! `replica BOOTSTRAP PREFIX RUNTIME` hosts agent type `sink`, subscribed to topic
//! type `stream`; each event handled prints `handled KEY SEQ` on stdout (flushed per
//! line, so a SIGKILL loses nothing already printed). `replica BOOTSTRAP PREFIX NAME
//! client` is a client process instead (`start_client`: a reply channel and client
//! heartbeats, nothing hosted). Either prints `ready` once started; SIGTERM stops it
//! gracefully.

use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_runtime::{
    Agent, AgentId, AgentRuntime, AgentRuntimeExt, HandlerResult, KafkaAgentRuntime, KafkaConfig,
    MessageContext, Payload, Subscription, WorkerConfig,
};

struct Sink {
    key: String,
}

#[async_trait]
impl Agent for Sink {
    async fn on_message(&mut self, msg: Payload, _ctx: &MessageContext) -> HandlerResult {
        let seq = msg.decode_json::<serde_json::Value>()?["n"]
            .as_u64()
            .unwrap_or(u64::MAX);
        let mut out = std::io::stdout().lock();
        writeln!(out, "handled {} {seq}", self.key)?;
        out.flush()?;
        Ok(None)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bootstrap, prefix, runtime, client) = match args.as_slice() {
        [b, p, r] => (b, p, r, false),
        [b, p, r, mode] if mode == "client" => (b, p, r, true),
        _ => return Err("usage: replica BOOTSTRAP PREFIX RUNTIME [client]".into()),
    };
    let mut cfg = WorkerConfig::new(KafkaConfig::new(bootstrap), prefix, runtime);
    cfg.heartbeat_interval = Duration::from_millis(500);
    cfg.liveness_timeout = Duration::from_secs(30);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if client {
        let rt = KafkaAgentRuntime::start_client(cfg).await?;
        println!("ready");
        term.recv().await;
        rt.stop().await?;
        return Ok(());
    }
    let rt = KafkaAgentRuntime::new(cfg)?;
    rt.register("sink", |id: &AgentId| Sink {
        key: id.key().to_owned(),
    })
    .await?;
    rt.start().await?;
    rt.add_subscription(Subscription::for_type("stream", "sink")?)
        .await?;
    println!("ready");
    term.recv().await;
    rt.stop().await?;
    Ok(())
}
