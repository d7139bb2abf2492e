//! Agents and messages used by the runtime's integration tests and benchmarks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_runtime::Agent;
use switchboard_runtime::{
    AgentError, AgentId, AgentRuntime, AgentRuntimeExt, Handler, HandlerResult, KafkaAgentRuntime,
    Message, MessageContext, Payload, Routes, RuntimeError, Subscription, TopicId, WorkerConfig,
};

/// A request carrying a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// The number.
    pub n: u64,
}
impl Message for Ping {
    const TYPE_NAME: &'static str = "test.Ping";
}

/// The answer to a [`Ping`]: the same number, and who answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    /// The number pinged.
    pub n: u64,
    /// `type/key` of the answering agent.
    pub by: String,
}
impl Message for Pong {
    const TYPE_NAME: &'static str = "test.Pong";
}

/// What a [`Recorder`] saw of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The handling agent.
    pub recipient: AgentId,
    /// `ctx.sender`.
    pub sender: Option<AgentId>,
    /// `ctx.topic`.
    pub topic: Option<TopicId>,
    /// `ctx.is_rpc`.
    pub is_rpc: bool,
    /// `ctx.message_id`.
    pub message_id: String,
    /// The message's type name.
    pub type_name: String,
    /// The message as JSON (`Null` when it is not JSON).
    pub data: Value,
    /// The message's content type.
    pub content_type: String,
    /// The message's bytes.
    pub raw: Vec<u8>,
}

/// A shared log of what recorders saw.
pub type SeenLog = Arc<Mutex<Vec<Seen>>>;

/// Records every message with its context, then answers `Ping` with `Pong` and
/// anything else with nothing.
pub struct Recorder {
    id: AgentId,
    log: SeenLog,
}

impl Recorder {
    /// A recorder writing to `log`.
    pub fn new(id: &AgentId, log: SeenLog) -> Self {
        Self {
            id: id.clone(),
            log,
        }
    }
}

#[async_trait]
impl Agent for Recorder {
    async fn on_message(&mut self, msg: Payload, ctx: &MessageContext) -> HandlerResult {
        let data = msg.decode_json::<Value>().unwrap_or(Value::Null);
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                recipient: ctx.recipient.clone(),
                sender: ctx.sender.clone(),
                topic: ctx.topic.clone(),
                is_rpc: ctx.is_rpc,
                message_id: ctx.message_id.clone(),
                type_name: msg.type_name.clone(),
                data,
                content_type: msg.content_type.clone(),
                raw: msg.data.to_vec(),
            });
        if msg.type_name == Ping::TYPE_NAME {
            let ping: Ping = msg.decode()?;
            return Ok(Some(Payload::encode(&Pong {
                n: ping.n,
                by: self.id.to_string(),
            })?));
        }
        Ok(None)
    }
}

/// Answers `Ping` with `Pong` (typed routes); fails on `Fail`; replies nothing to `Quiet`;
/// sleeps on `Sleep`.
pub struct Responder {
    id: AgentId,
}

impl Responder {
    /// A responder for `id`.
    pub fn new(id: &AgentId) -> Self {
        Self { id: id.clone() }
    }
}

/// Makes the handler fail with `reason`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    /// The error text.
    pub reason: String,
}
impl Message for Fail {
    const TYPE_NAME: &'static str = "test.Fail";
}

/// Handled without a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quiet;
impl Message for Quiet {
    const TYPE_NAME: &'static str = "test.Quiet";
}

/// Makes the handler sleep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sleep {
    /// Milliseconds.
    pub ms: u64,
}
impl Message for Sleep {
    const TYPE_NAME: &'static str = "test.Sleep";
}

#[async_trait]
impl Handler<Ping> for Responder {
    type Reply = Pong;
    async fn handle(&mut self, ping: Ping, _ctx: &MessageContext) -> Result<Pong, AgentError> {
        Ok(Pong {
            n: ping.n,
            by: self.id.to_string(),
        })
    }
}

#[async_trait]
impl Handler<Fail> for Responder {
    type Reply = ();
    async fn handle(&mut self, fail: Fail, _ctx: &MessageContext) -> Result<(), AgentError> {
        Err(AgentError::new(fail.reason))
    }
}

#[async_trait]
impl Handler<Quiet> for Responder {
    type Reply = ();
    async fn handle(&mut self, _: Quiet, _ctx: &MessageContext) -> Result<(), AgentError> {
        Ok(())
    }
}

#[async_trait]
impl Handler<Sleep> for Responder {
    type Reply = ();
    async fn handle(&mut self, s: Sleep, _ctx: &MessageContext) -> Result<(), AgentError> {
        tokio::time::sleep(Duration::from_millis(s.ms)).await;
        Ok(())
    }
}

static RESPONDER_ROUTES: LazyLock<Routes<Responder>> = LazyLock::new(|| {
    Routes::new()
        .handle::<Ping>()
        .handle::<Fail>()
        .handle::<Quiet>()
        .handle::<Sleep>()
});

#[async_trait]
impl Agent for Responder {
    async fn on_message(&mut self, msg: Payload, ctx: &MessageContext) -> HandlerResult {
        RESPONDER_ROUTES.dispatch(self, msg, ctx).await
    }
}

/// One round of a cascade.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cascade {
    /// Round number, from 1.
    pub round: u32,
}
impl Message for Cascade {
    const TYPE_NAME: &'static str = "test.Cascade";
}

/// Counts the rounds it handles; when `republish_to` is set, publishes the next
/// round there until `max_rounds`.
pub struct CascadingAgent {
    /// Rounds handled, shared so the test can read it.
    pub calls: Arc<AtomicUsize>,
    max_rounds: u32,
    republish_to: Option<String>,
}

impl CascadingAgent {
    /// A cascading agent.
    pub fn new(calls: Arc<AtomicUsize>, max_rounds: u32, republish_to: Option<&str>) -> Self {
        Self {
            calls,
            max_rounds,
            republish_to: republish_to.map(str::to_owned),
        }
    }
}

#[async_trait]
impl Handler<Cascade> for CascadingAgent {
    type Reply = ();
    async fn handle(&mut self, c: Cascade, ctx: &MessageContext) -> Result<(), AgentError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(topic_type) = &self.republish_to
            && c.round < self.max_rounds
        {
            let topic = TopicId::new(topic_type.as_str(), ctx.recipient.key())?;
            ctx.publish_message(&Cascade { round: c.round + 1 }, &topic)
                .await?;
        }
        Ok(())
    }
}

static CASCADE_ROUTES: LazyLock<Routes<CascadingAgent>> =
    LazyLock::new(|| Routes::new().handle::<Cascade>());

#[async_trait]
impl Agent for CascadingAgent {
    async fn on_message(&mut self, msg: Payload, ctx: &MessageContext) -> HandlerResult {
        CASCADE_ROUTES.dispatch(self, msg, ctx).await
    }
}

/// Counts every message in its state; answers RPCs with `{"count": n}`.
#[derive(Default)]
pub struct Counter {
    count: u64,
}

#[async_trait]
impl Agent for Counter {
    async fn on_message(&mut self, _msg: Payload, ctx: &MessageContext) -> HandlerResult {
        self.count += 1;
        Ok(ctx
            .is_rpc
            .then(|| Payload::json("test.Count", &json!({ "count": self.count }))))
    }

    async fn save_state(&mut self) -> Result<Option<Value>, AgentError> {
        Ok(Some(json!({ "count": self.count })))
    }

    async fn load_state(&mut self, state: Value) -> Result<(), AgentError> {
        self.count = state.get("count").and_then(Value::as_u64).unwrap_or(0);
        Ok(())
    }
}

/// The `n`-th message sent to one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seq {
    /// Position in the key's send order, from 0.
    pub n: u64,
}
impl Message for Seq {
    const TYPE_NAME: &'static str = "test.Seq";
}

/// Publishes `Seq { n }` for n = 0, 1, ... to topic `turns/<key>` from `publisher`,
/// one every 5 ms, until `stop` is set; returns how many it published.
pub async fn publish_turns(
    publisher: &KafkaAgentRuntime,
    key: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<usize, RuntimeError> {
    let topic = TopicId::new("turns", key)?;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        publisher.publish_message(&Seq { n }, &topic).await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(n as usize)
}

/// What [`TurnChecker`]s observed, shared across replicas in one process.
#[derive(Default)]
pub struct TurnLog {
    running: Mutex<std::collections::HashSet<String>>,
    /// Per key: the last sequence number handled for the first time.
    last: Mutex<std::collections::HashMap<String, u64>>,
    /// Message ids handled.
    seen: Mutex<std::collections::HashSet<String>>,
    /// Broken promises: overlapping turns, messages handled for the first time out of
    /// order or after a gap.
    pub violations: Mutex<Vec<String>>,
    /// Messages handled again (same message id): redeliveries, which at-least-once
    /// allows after a failed commit. Also counted in `handled`.
    pub replays: AtomicUsize,
    /// Messages handled (replays included).
    pub handled: AtomicUsize,
    /// Per replica, messages handled.
    pub by_replica: Mutex<std::collections::HashMap<String, usize>>,
}

impl TurnLog {
    /// Waits until `n` more messages are handled (panics after 60 s: handling stopped).
    pub async fn handled_more(&self, n: usize) {
        let target = self.handled.load(Ordering::SeqCst) + n;
        let started = std::time::Instant::now();
        while self.handled.load(Ordering::SeqCst) < target {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "events stopped being handled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks the turn-based promise: per key, never two handlers at once (on any
/// replica), and messages in send order; counts messages handled again.
pub struct TurnChecker {
    key: String,
    replica: String,
    log: Arc<TurnLog>,
}

impl TurnChecker {
    /// A checker for `id` on `replica`.
    pub fn new(id: &AgentId, replica: &str, log: Arc<TurnLog>) -> Self {
        Self {
            key: id.key().to_owned(),
            replica: replica.to_owned(),
            log,
        }
    }
}

#[async_trait]
impl Handler<Seq> for TurnChecker {
    type Reply = ();
    async fn handle(&mut self, seq: Seq, ctx: &MessageContext) -> Result<(), AgentError> {
        let log = &self.log;
        let violation = |v: String| {
            log.violations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(v)
        };
        if !log
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.key.clone())
        {
            violation(format!(
                "{}: two handlers at once (one on {})",
                self.key, self.replica
            ));
        }
        {
            let mut last = log.last.lock().unwrap_or_else(|e| e.into_inner());
            let first = log
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ctx.message_id.clone());
            if first {
                let expected = last.get(&self.key).map_or(0, |n| n + 1);
                if seq.n != expected {
                    violation(format!(
                        "{}: got #{} expected #{expected} (on {})",
                        self.key, seq.n, self.replica
                    ));
                }
                last.insert(self.key.clone(), seq.n);
            } else {
                log.replays.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Hold the turn a little so overlaps would show.
        tokio::time::sleep(Duration::from_millis(1)).await;
        log.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        log.handled.fetch_add(1, Ordering::SeqCst);
        *log.by_replica
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.replica.clone())
            .or_default() += 1;
        Ok(())
    }
}

static TURN_ROUTES: LazyLock<Routes<TurnChecker>> = LazyLock::new(|| Routes::new().handle::<Seq>());

#[async_trait]
impl Agent for TurnChecker {
    async fn on_message(&mut self, msg: Payload, ctx: &MessageContext) -> HandlerResult {
        TURN_ROUTES.dispatch(self, msg, ctx).await
    }
}

impl TurnChecker {
    /// Starts a replica hosting `turns` checkers (named `replica` in `log`) subscribed
    /// to topic type `turns`.
    pub async fn start_replica(
        config: WorkerConfig,
        replica: &str,
        log: &Arc<TurnLog>,
    ) -> Result<KafkaAgentRuntime, RuntimeError> {
        let rt = KafkaAgentRuntime::start_with(config).await?;
        let (replica, log) = (replica.to_owned(), Arc::clone(log));
        rt.register("turns", move |id: &AgentId| {
            TurnChecker::new(id, &replica, log.clone())
        })
        .await?;
        rt.add_subscription(Subscription::for_type("turns", "turns")?)
            .await?;
        Ok(rt)
    }
}
