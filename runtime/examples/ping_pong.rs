//! Two runtimes talking over Kafka: RPCs to a typed agent, and events fanned out to
//! a subscriber. Prints RPC latency percentiles and event throughput.
//!
//! ```sh
//! e2e/infra/kafka.sh start
//! SWITCHBOARD_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --release -p switchboard-runtime --example ping_pong
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard_runtime::{
    Agent, AgentError, AgentId, AgentRuntime, AgentRuntimeExt, Handler, HandlerResult,
    KafkaAgentRuntime, KafkaConfig, Message, MessageContext, Payload, Routes, Subscription,
    TopicId, WorkerConfig,
};

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u64,
}
impl Message for Ping {
    const TYPE_NAME: &'static str = "example.Ping";
}

#[derive(Serialize, Deserialize)]
struct Pong {
    n: u64,
    by: String,
}
impl Message for Pong {
    const TYPE_NAME: &'static str = "example.Pong";
}

#[derive(Serialize, Deserialize)]
struct Greeting {
    text: String,
}
impl Message for Greeting {
    const TYPE_NAME: &'static str = "example.Greeting";
}

/// Answers pings; counts greetings it receives through its subscription.
struct Ponger {
    id: AgentId,
    greetings: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler<Ping> for Ponger {
    type Reply = Pong;
    async fn handle(&mut self, ping: Ping, _ctx: &MessageContext) -> Result<Pong, AgentError> {
        Ok(Pong {
            n: ping.n,
            by: self.id.to_string(),
        })
    }
}

#[async_trait]
impl Handler<Greeting> for Ponger {
    type Reply = ();
    async fn handle(&mut self, _g: Greeting, _ctx: &MessageContext) -> Result<(), AgentError> {
        self.greetings.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

static ROUTES: LazyLock<Routes<Ponger>> =
    LazyLock::new(|| Routes::new().handle::<Ping>().handle::<Greeting>());

#[async_trait]
impl Agent for Ponger {
    async fn on_message(&mut self, msg: Payload, ctx: &MessageContext) -> HandlerResult {
        ROUTES.dispatch(self, msg, ctx).await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap =
        std::env::var("SWITCHBOARD_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let prefix = format!(
        "example-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let config = |name: &str| WorkerConfig::new(KafkaConfig::new(&bootstrap), &prefix, name);

    let greetings = Arc::new(AtomicUsize::new(0));
    let ponger = KafkaAgentRuntime::new(config("ponger"))?;
    let g = greetings.clone();
    ponger
        .register("ponger", move |id: &AgentId| Ponger {
            id: id.clone(),
            greetings: g.clone(),
        })
        .await?;
    ponger.start().await?;
    ponger
        .add_subscription(Subscription::for_type("greetings", "ponger")?)
        .await?;
    let pinger = KafkaAgentRuntime::start_with(config("pinger")).await?;
    ponger.wait_ready(Duration::from_secs(30)).await;

    let to = AgentId::new("ponger", "p1")?;
    let pong: Pong = pinger
        .send_message(&Ping { n: 1 }, &to)
        .await?
        .ok_or("no reply")?
        .decode()?;
    println!("rpc: {to} answered pong {} (by {})", pong.n, pong.by);

    let mut latencies = Vec::with_capacity(1_000);
    for n in 0..1_000 {
        let started = Instant::now();
        pinger.send_message(&Ping { n }, &to).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "rpc latency over 1000 sequential calls: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );

    const EVENTS: usize = 10_000;
    let started = Instant::now();
    let results: Vec<Result<(), switchboard_runtime::RuntimeError>> =
        futures::stream::iter(0..EVENTS)
            .map(|i| {
                let pinger = pinger.clone();
                async move {
                    let topic = TopicId::new("greetings", format!("p{}", i % 64))?;
                    pinger
                        .publish_message(
                            &Greeting {
                                text: format!("hello #{i}"),
                            },
                            &topic,
                        )
                        .await
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
    for r in results {
        r?;
    }
    let published = started.elapsed();
    while greetings.load(Ordering::Relaxed) < EVENTS && started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let handled = started.elapsed();
    println!(
        "events: {EVENTS} published in {:.2} s ({:.0}/s), all handled after {:.2} s ({:.0}/s end to end)",
        published.as_secs_f64(),
        EVENTS as f64 / published.as_secs_f64(),
        handled.as_secs_f64(),
        greetings.load(Ordering::Relaxed) as f64 / handled.as_secs_f64()
    );
    pinger.stop().await?;
    ponger.stop().await?;
    Ok(())
}
