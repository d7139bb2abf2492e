//! The scenarios. Each returns one JSON object: figures under snake_case names with
//! units, `config`, and `baseline` (raw rdkafka) where one applies.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_runtime::gateway::Gateway;
use switchboard_runtime::{
    Agent, AgentId, AgentRuntime, AgentRuntimeExt, HandlerResult, KafkaAgentRuntime, KafkaConfig,
    MessageContext, Payload, SendOptions, Subscription, TopicId, WorkerConfig,
};

use tokio_util::sync::CancellationToken;

use crate::host::Host;
use crate::raw;
use crate::stats::{CpuTicks, latency_ms, medians, round3};

/// Runs scenario `name` with the clients `kafka` describes (its broker and settings).
pub async fn run(name: &str, kafka: &KafkaConfig) -> anyhow::Result<Value> {
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut result = match name {
        "rpc-latency" => rpc_latency(kafka, &prefix).await?,
        "gateway-rpc" => gateway_rpc(kafka, &prefix).await?,
        "protocols-rpc" => crate::protocols::protocols_rpc(kafka, &prefix).await?,
        "rpc-throughput" => rpc_throughput(kafka, &prefix).await?,
        "publish-throughput" => publish_throughput(kafka, &prefix).await?,
        "fanout" => fanout(kafka, &prefix).await?,
        "agents-memory" => agents_memory(kafka, &prefix).await?,
        "llm-overhead" => crate::llm::llm_overhead(kafka, &prefix).await?,
        "group-protocol" => crate::group_protocol::group_protocol(kafka, &prefix).await?,
        other => bail!("unknown scenario {other}"),
    };
    result["scenario"] = json!(name);
    result["config"]["bootstrap"] = json!(kafka.bootstrap_servers);
    // The producer settings every client of the run used: the runtime's defaults
    // (docs/tuning.md) with what --set changed.
    let producer = kafka.producer_config();
    let mut shown = json!({});
    for k in [
        "acks",
        "enable.idempotence",
        "linger.ms",
        "max.in.flight.requests.per.connection",
    ]
    .into_iter()
    .chain(kafka.producer.keys().map(String::as_str))
    {
        shown[k] = json!(producer.get(k));
    }
    result["config"]["producer"] = shown;
    if !kafka.consumer.is_empty() {
        result["config"]["consumer"] = json!(kafka.consumer);
    }
    Ok(result)
}

/// Whether subscriber runtimes deliver events locally (`--no-local-delivery`: no).
pub(crate) static LOCAL_DELIVERY: AtomicBool = AtomicBool::new(true);

async fn runtime(
    kafka: &KafkaConfig,
    prefix: &str,
    name: &str,
) -> anyhow::Result<KafkaAgentRuntime> {
    let rt = KafkaAgentRuntime::start_with(WorkerConfig::new(kafka.clone(), prefix, name)).await?;
    rt.wait_ready(Duration::from_secs(60)).await;
    Ok(rt)
}

fn ping(n: u64) -> Payload {
    Payload::json("bench.Ping", &json!({ "n": n }))
}

/// Rounds of each latency scenario; ours and the raw baseline alternate, so a burst
/// of load from elsewhere on the machine hits both, and medians are reported.
pub(crate) const ROUNDS: usize = 3;

/// Latency figures of `samples` plus CPU per call since `cpu`.
pub(crate) fn latency_run(samples: &mut [Duration], cpu: &CpuTicks) -> Value {
    let mut run = latency_ms(samples);
    merge(&mut run, cpu.per(samples.len(), "call"));
    run
}

/// `{medians of the runs' figures..., runs}` for ours, the same under `baseline`.
fn rounds_result(ours: Vec<Value>, raw: Vec<Value>) -> Value {
    let mut result = medians(&ours);
    result["runs"] = json!(ours);
    result["baseline"] = medians(&raw);
    result["baseline"]["runs"] = json!(raw);
    result
}

async fn rpc_latency(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    const WARMUP: usize = 100;
    const CALLS: usize = 2_000;
    let host = Host::start(kafka, prefix, "host").await?;
    let caller = runtime(kafka, prefix, "caller").await?;
    let raw = raw::PingPong::start(kafka, prefix).await?;
    let to = AgentId::new("echo", "k1")?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for i in 0..WARMUP {
            caller
                .send_payload(ping(i as u64), &to, SendOptions::default())
                .await?;
        }
        let cpu = CpuTicks::now_with(host.pid().into_iter().collect());
        let mut samples = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let started = Instant::now();
            caller
                .send_payload(ping(i as u64), &to, SendOptions::default())
                .await?;
            samples.push(started.elapsed());
        }
        ours.push(latency_run(&mut samples, &cpu));
        let cpu = CpuTicks::now();
        theirs.push(latency_run(&mut raw.calls(WARMUP, CALLS).await?, &cpu));
    }
    drop(raw);
    caller.stop().await?;
    host.stop().await?;
    let mut result = rounds_result(ours, theirs);
    result["config"] = json!({ "calls": CALLS, "warmup": WARMUP, "rounds": ROUNDS, "figures": "medians of the rounds", "callee": "echo agent in another runtime process", "cpu": "caller and callee processes" });
    Ok(result)
}

/// RPC through the runtime's HTTP API: HTTP -> gateway -> Kafka -> echo agent in
/// another runtime process -> Kafka -> gateway -> HTTP answer. Baselines: raw
/// rdkafka ping-pong, and the same HTTP client against a bare HTTP echo (the HTTP
/// hop's own cost).
async fn gateway_rpc(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    const WARMUP: usize = 100;
    const CALLS: usize = 2_000;
    let host = Host::start(kafka, prefix, "host").await?;
    let client =
        KafkaAgentRuntime::start_client(WorkerConfig::new(kafka.clone(), prefix, "gateway"))
            .await?;
    let stopping = CancellationToken::new();
    let gateway = Gateway::new(client.clone(), None, stopping.clone());
    let echo = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: axum::body::Bytes| async move { body }),
    );
    let serve = |router: axum::Router| async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stopping = stopping.clone();
        let server = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopping.cancelled().await })
                .into_future(),
        );
        anyhow::Ok((addr, server))
    };
    let (gw_addr, gw_server) = serve(gateway.router()).await?;
    let (echo_addr, echo_server) = serve(echo).await?;
    let raw = raw::PingPong::start(kafka, prefix).await?;
    // One client, one kept-alive connection per address, as a service calling us would.
    let http = reqwest::Client::new();
    let post = async |url: &str, i: usize| -> anyhow::Result<()> {
        let answer = http
            .post(url)
            .header("ce-type", "bench.Ping")
            .header("content-type", "application/json")
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await?;
        anyhow::ensure!(answer.status().is_success(), "{url}: {}", answer.status());
        answer.bytes().await?;
        Ok(())
    };
    let timed = async |url: &str, others: Vec<u32>| -> anyhow::Result<Value> {
        for i in 0..WARMUP {
            post(url, i).await?;
        }
        let cpu = CpuTicks::now_with(others);
        let mut samples = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let started = Instant::now();
            post(url, i).await?;
            samples.push(started.elapsed());
        }
        Ok(latency_run(&mut samples, &cpu))
    };
    let gw_url = format!("http://{gw_addr}/v1/agents/echo/k1");
    let echo_url = format!("http://{echo_addr}/echo");
    let (mut ours, mut theirs, mut http_only) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(timed(&gw_url, host.pid().into_iter().collect()).await?);
        let cpu = CpuTicks::now();
        theirs.push(latency_run(&mut raw.calls(WARMUP, CALLS).await?, &cpu));
        http_only.push(timed(&echo_url, Vec::new()).await?);
    }
    drop(raw);
    stopping.cancel();
    let _ = tokio::join!(gw_server, echo_server);
    client.stop().await?;
    host.stop().await?;
    let mut result = rounds_result(ours, theirs);
    result["http_echo"] = medians(&http_only);
    result["http_echo"]["runs"] = json!(http_only);
    result["config"] = json!({ "calls": CALLS, "warmup": WARMUP, "rounds": ROUNDS, "figures": "medians of the rounds", "route": "POST /v1/agents/echo/k1", "gateway": "client runtime in the bench process", "callee": "echo agent in another runtime process", "http_echo": "the same HTTP client against a bare axum echo route", "cpu": "gateway and callee processes" });
    Ok(result)
}

async fn rpc_throughput(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    const CALLERS: usize = 64;
    const KEYS: u64 = 256;
    const CALLS: usize = 20_000;
    let hosts = [
        Host::start(kafka, prefix, "host").await?,
        Host::start(kafka, prefix, "host").await?,
    ];
    // Let the two replicas settle their partitions.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let caller = runtime(kafka, prefix, "caller").await?;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = CpuTicks::now_with(hosts.iter().filter_map(Host::pid).collect());
    let started = Instant::now();
    let workers = (0..CALLERS).map(|_| {
        let (caller, next) = (caller.clone(), next.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CALLS {
                    return Ok::<_, switchboard_runtime::RuntimeError>(samples);
                }
                let to = AgentId::new("echo", format!("k{}", i as u64 % KEYS))?;
                let t = Instant::now();
                caller
                    .send_payload(ping(i as u64), &to, SendOptions::default())
                    .await?;
                samples.push(t.elapsed());
            }
        })
    });
    let mut samples = Vec::with_capacity(CALLS);
    for w in futures::future::join_all(workers).await {
        samples.extend(w??);
    }
    let elapsed = started.elapsed();
    let cpu = cpu.per(CALLS, "call");
    caller.stop().await?;
    for h in hosts {
        h.stop().await?;
    }
    let lat = latency_ms(&mut samples);
    let mut result = json!({
        "calls_per_s": round3(CALLS as f64 / elapsed.as_secs_f64()),
        "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
        "config": { "calls": CALLS, "callers": CALLERS, "keys": KEYS, "replicas": 2, "cpu": "caller and both callee processes" },
    });
    merge(&mut result, cpu);
    Ok(result)
}

/// Counts deliveries and records publish-to-handler latency from the event's `t`.
struct Subscriber {
    start: Instant,
    delivered: Arc<AtomicUsize>,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl Agent for Subscriber {
    async fn on_message(&mut self, msg: Payload, _ctx: &MessageContext) -> HandlerResult {
        let t = msg.decode_json::<Value>()?["t"].as_u64().unwrap_or(0);
        let latency = self
            .start
            .elapsed()
            .saturating_sub(Duration::from_micros(t));
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(latency);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
}

async fn publish_throughput(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    const EVENTS: usize = 200_000;
    const SIZE: usize = 200;
    const IN_FLIGHT: usize = 256;
    // A broker that just started serves its first records slowly (its JVM compiles
    // as it goes), and ours runs first: a first untimed round through the same path
    // warms it up.
    const WARMUP: usize = 50_000;
    let start = Instant::now();
    let delivered = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(EVENTS * 2)));
    let mut config = WorkerConfig::new(kafka.clone(), prefix, "subscribers");
    config.local_delivery = LOCAL_DELIVERY.load(Ordering::Relaxed);
    let subs = KafkaAgentRuntime::new(config)?;
    for t in ["sub_a", "sub_b"] {
        let (d, l) = (delivered.clone(), latencies.clone());
        subs.register(t, move |_: &AgentId| Subscriber {
            start,
            delivered: d.clone(),
            latencies: l.clone(),
        })
        .await?;
    }
    subs.start().await?;
    subs.wait_ready(Duration::from_secs(60)).await;
    for t in ["sub_a", "sub_b"] {
        subs.add_subscription(Subscription::for_type("load", t)?)
            .await?;
    }
    // Hosts no agents, so a client: like the raw baseline's producer, it reads no
    // events (a full runtime would read all of them and skip them).
    let publisher =
        KafkaAgentRuntime::start_client(WorkerConfig::new(kafka.clone(), prefix, "publisher"))
            .await?;
    let pad = "x".repeat(SIZE - 30);
    // Publishes `count` events; returns when they were published and when handled.
    let round = async |count: usize| -> anyhow::Result<(Duration, Duration)> {
        let started = Instant::now();
        let until = delivered.load(Ordering::Relaxed) + count * 2;
        let results: Vec<Result<(), switchboard_runtime::RuntimeError>> =
            futures::stream::iter(0..count)
                .map(|i| {
                    let (publisher, pad) = (publisher.clone(), pad.clone());
                    async move {
                        let topic = TopicId::new("load", format!("s{}", i % 64))?;
                        let event = Payload::json(
                            "bench.Load",
                            &json!({ "t": start.elapsed().as_micros() as u64, "pad": pad }),
                        );
                        publisher.publish_payload(event, &topic, None).await
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
        let published = started.elapsed();
        for r in results {
            r?;
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while delivered.load(Ordering::Relaxed) < until {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} deliveries after 300 s",
                    delivered.load(Ordering::Relaxed),
                    until
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((published, started.elapsed()))
    };
    round(WARMUP).await?;
    // Rounds of ours and of the raw baseline alternate (see ROUNDS).
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        latencies.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let cpu = CpuTicks::now();
        let (published, handled) = round(EVENTS).await?;
        let cpu = cpu.per_event(EVENTS);
        let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
        let mut run = json!({
            "events_per_s": round3(EVENTS as f64 / published.as_secs_f64()),
            "deliveries_per_s": round3((EVENTS * 2) as f64 / handled.as_secs_f64()),
            "delivered_events_per_s": round3(EVENTS as f64 / handled.as_secs_f64()),
            "delivery_p99_ms": latency_ms(&mut lat)["p99_ms"],
        });
        merge(&mut run, cpu);
        ours.push(run);
        let mut flow =
            raw::produce_consume(kafka, &format!("{prefix}.r{r}"), 3, EVENTS, SIZE).await?;
        let mut run = json!({
            "events_per_s": round3(flow.produced_per_s),
            "delivered_events_per_s": round3(flow.consumed_per_s),
            "delivery_p99_ms": latency_ms(&mut flow.latencies)["p99_ms"],
        });
        merge(&mut run, flow.cpu);
        theirs.push(run);
    }
    publisher.stop().await?;
    subs.stop().await?;
    let mut result = rounds_result(ours, theirs);
    result["config"] = json!({ "events": EVENTS, "event_bytes": SIZE, "subscribed_agent_types": 2, "in_flight": IN_FLIGHT, "partitions": 3, "local_delivery": subs.config().local_delivery, "publisher": "client", "warmup_events": WARMUP, "rounds": ROUNDS, "figures": "medians of the rounds" });
    Ok(result)
}

/// Adds the fields of object `from` to object `into`.
fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// Counts its deliveries into a shared counter.
struct Tally(Arc<AtomicUsize>);

#[async_trait]
impl Agent for Tally {
    async fn on_message(&mut self, _msg: Payload, _ctx: &MessageContext) -> HandlerResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
}

async fn fanout(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    const TYPES: usize = 50;
    const ROUNDS: usize = 20;
    let count = Arc::new(AtomicUsize::new(0));
    let mut config = WorkerConfig::new(kafka.clone(), prefix, "fan");
    config.local_delivery = LOCAL_DELIVERY.load(Ordering::Relaxed);
    let rt = KafkaAgentRuntime::new(config)?;
    for i in 0..TYPES {
        let c = count.clone();
        rt.register(&format!("t{i}"), move |_: &AgentId| Tally(c.clone()))
            .await?;
    }
    rt.start().await?;
    rt.wait_ready(Duration::from_secs(60)).await;
    for i in 0..TYPES {
        rt.add_subscription(Subscription::for_type("fan", &format!("t{i}"))?)
            .await?;
    }
    let mut samples = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let before = count.load(Ordering::Relaxed);
        let started = Instant::now();
        rt.publish_payload(ping(round as u64), &TopicId::new("fan", "s")?, None)
            .await?;
        while count.load(Ordering::Relaxed) < before + TYPES {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("fan-out round {round} incomplete after 30 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(started.elapsed());
    }
    rt.stop().await?;
    let lat = latency_ms(&mut samples);
    Ok(json!({
        "all_handled_p50_ms": lat["p50_ms"], "all_handled_max_ms": lat["max_ms"],
        "config": { "subscribed_agent_types": TYPES, "rounds": ROUNDS, "local_delivery": rt.config().local_delivery },
    }))
}

async fn agents_memory(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    const AGENTS: usize = 100_000;
    let host = Host::start(kafka, prefix, "host").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_kib = host.rss_kib();
    let driver = runtime(kafka, prefix, "driver").await?;
    driver
        .add_subscription(Subscription::for_type("mem", "small")?)
        .await?;
    let results: Vec<Result<(), switchboard_runtime::RuntimeError>> =
        futures::stream::iter(0..AGENTS)
            .map(|i| {
                let driver = driver.clone();
                async move {
                    let topic = TopicId::new("mem", format!("agent-{i}"))?;
                    driver
                        .publish_payload(Payload::json("bench.Touch", &json!({})), &topic, None)
                        .await
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
    for r in results {
        r?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while host.handled() < AGENTS as u64 {
        if Instant::now() > deadline {
            bail!("host handled {} of {AGENTS} after 300 s", host.handled());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let producer and fetch buffers drain before reading memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let loaded_kib = host.rss_kib();
    driver.stop().await?;
    host.stop().await.context("stopping the host")?;
    Ok(json!({
        "idle_rss_mib": round3(idle_kib as f64 / 1024.0),
        "loaded_rss_mib": round3(loaded_kib as f64 / 1024.0),
        "bytes_per_agent": round3(loaded_kib.saturating_sub(idle_kib) as f64 * 1024.0 / AGENTS as f64),
        "config": { "agents": AGENTS, "state": "{\"n\":1} per agent" },
    }))
}
