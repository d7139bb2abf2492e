//! The Kafka runtime: agents across many processes over Apache Kafka (DESIGN.md §2-4).
//!
//! One [`KafkaAgentRuntime`] per process. Processes with the same runtime name are
//! replicas: they share the runtime's inbox through a consumer group, so each agent
//! lives on exactly one replica at a time (the owner of its inbox partition).
//!
//! # Layout (in reading order)
//! - this file: the facade: build, [`KafkaAgentRuntime::start`], [`crate::AgentRuntime::stop`]
//!   (in `agent_runtime`), readiness and counters; `Inner` holds the parts below,
//!   each owning its state.
//! - `agent_runtime`: the [`crate::AgentRuntime`] API (registration, subscriptions, state).
//! - `rpc`: sending RPCs and publishing events (the `Transport` of every context).
//! - `registry_client`: what this process writes to the registry (claims, heartbeats,
//!   subscriptions, release on stop); `registry` is the pure view, `registry_log`
//!   reads the topic; `replies` is the reply channel.
//! - `consumer_loop` + `offsets`: one consumer thread per group, commit when done;
//!   `lag`: its consumer lag, read when `/metrics` asks.
//! - `inbox`: inbox records into agent mailboxes; `events`: the events topic;
//!   `classify`: what a record of either is (pure, fuzzed by `record_fuzz`);
//!   `sources`: existing topics bound by subscriptions (`source_records` maps their
//!   records); `delivery`: one event into its recipients' mailboxes.
//! - `handoff`: the pure route state machine of local delivery; `local_delivery`:
//!   its Kafka side (markers, forwards).
//! - `hosted`: the agents of this process, their mailboxes and inbox partitions.
//! - `turn`: running one message to completion; `state_store`: agent state snapshots;
//!   `journal`: results of durable steps, beside the state, until their input is committed.
//! - `guard`: every long-lived client replaced when librdkafka leaves it without a
//!   broker (docs/protocol.md, "Orphaned clients"); `producer` is the guarded producer,
//!   `tailing` the guarded tails (registry, reply channel, A2A tasks).
//! - helpers: `outputs` (what the runtime produces), `original` (a consumed record kept
//!   for dead letters), `metrics`, `worker_config`.
//!
//! This file is over 500 lines: the facade builds and starts every part above, and
//! its start-up sequence reads best in one place (source topics and readiness from the
//! broker connection grew it; the counters and readiness are the part to move next).

mod agent_runtime;
mod classify;
mod committer;
mod consumer_loop;
mod delivery;
mod events;
pub(crate) mod guard;
mod handoff;
mod hosted;
mod inbox;
mod journal;
mod lag;
mod local_delivery;
mod metrics;
mod offsets;
mod original;
mod outputs;
pub mod producer;
#[cfg(test)]
mod record_fuzz;
mod registry;
mod registry_client;
mod registry_log;
mod replies;
mod rpc;
pub mod source_records;
mod sources;
mod state_store;
pub(crate) mod tailing;
mod turn;
mod worker_config;

pub use metrics::{MetricsSnapshot, RPC_LATENCY_BUCKETS};
pub use worker_config::WorkerConfig;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::TopicAdmin;
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::local::Mailboxes;
use crate::protocol::topics::TopicNames;
use crate::protocol::wire::now_ms;
use consumer_loop::{ConsumerLoop, LoopSettings};
use handoff::Handoff;
use hosted::Hosted;
use lag::LagReader;
use local_delivery::Held;
use metrics::Metrics;
use outputs::Outputs;
use registry_client::RegistryClient;
use replies::ReplyChannel;
use state_store::StateStore;

/// How long start-up steps (metadata, registry load, group join) may take.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A snapshot of the runtime's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Messages whose handler succeeded.
    pub handled: u64,
    /// Messages whose handler failed.
    pub failed: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Events this replica delivered to its own agents without the inbox topic.
    pub events_delivered_locally: u64,
    /// Agents active in this process.
    pub active_agents: usize,
    /// RPCs this process waits on.
    pub waiting_rpcs: usize,
    /// Offset commits of the inbox and events groups that failed (each is sent
    /// again), while the runtime runs.
    pub offset_commit_failures: u64,
    /// Kafka clients of this process (any runtime in it) replaced because librdkafka
    /// left them without a broker to connect to (docs/protocol.md, "Orphaned clients").
    pub orphaned_clients_replaced: u64,
}

/// The parts of one process's runtime. Each part keeps its own state behind its own
/// methods; this struct only ties them together for the consumer threads and tasks.
pub(crate) struct Inner {
    config: WorkerConfig,
    names: TopicNames,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// Tasks that finish one record's outputs (acknowledgements, dead letters) and the
    /// heartbeats: stop waits for them.
    tasks: TaskTracker,
    hosted: Hosted,
    state: StateStore,
    /// Journaled results of durable steps (`crate::durable`).
    journal: journal::Journal,
    /// Turns in flight, by message id, for [`KafkaAgentRuntime::interrupt`].
    interrupts: turn::Interrupts,
    /// How events reach the mailboxes of owned inbox partitions.
    handoff: Handoff<Held>,
    registry: RegistryClient,
    replies: OnceLock<ReplyChannel>,
    loops: Mutex<Vec<ConsumerLoop>>,
    /// Consumer loops of bound source topics (`sources`).
    sources: Mutex<sources::SourceLoops>,
    /// Reads the inbox consumer's lag for `/metrics` (set once the loop started).
    inbox_lag: OnceLock<LagReader>,
    started: AtomicBool,
    stopped: AtomicBool,
    /// Sends and publishes only: no inbox, no agent types; client heartbeats only.
    client_only: bool,
}

/// An agent runtime over Kafka. Cheap to clone; clones share the process's runtime.
#[derive(Clone)]
pub struct KafkaAgentRuntime {
    inner: Arc<Inner>,
}

impl KafkaAgentRuntime {
    /// Validates `config` and prepares a runtime; nothing touches Kafka until
    /// [`KafkaAgentRuntime::start`]. Factories may be registered before starting.
    pub fn new(config: WorkerConfig) -> Result<Self, RuntimeError> {
        Self::build(config, false)
    }

    /// A started runtime that only sends RPCs and publishes (CLIs, gateways, tests):
    /// it reads the registry and opens a reply channel, but joins no consumer group,
    /// owns no topics besides its reply channel and hosts no agents.
    pub async fn start_client(config: WorkerConfig) -> Result<Self, RuntimeError> {
        let rt = Self::build(config, true)?;
        rt.start().await?;
        Ok(rt)
    }

    fn build(config: WorkerConfig, client_only: bool) -> Result<Self, RuntimeError> {
        let names = config.checked_names()?;
        let producer =
            producer::GuardedProducer::create(&config.kafka.producer_config(), names.prefix())
                .map_err(|e| RuntimeError::kafka("creating the producer", e))?;
        let metrics = Arc::new(Metrics::default());
        let dlq = names.dlq(&config.runtime_name);
        let inner = Arc::new(Inner {
            outputs: Outputs::new(producer, dlq, Arc::clone(&metrics)),
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            hosted: Hosted::default(),
            state: StateStore::default(),
            journal: journal::Journal::default(),
            interrupts: turn::Interrupts::default(),
            handoff: Handoff::new(config.instance_id.clone()),
            registry: RegistryClient::new(&config, &names, client_only),
            replies: OnceLock::new(),
            loops: Mutex::default(),
            sources: Mutex::new(Some(BTreeMap::new())),
            inbox_lag: OnceLock::new(),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            client_only,
            names,
            config,
        });
        let weak = Arc::downgrade(&inner);
        inner.hosted.set_mailboxes(Mailboxes::new(
            inner.config.max_concurrency,
            move |id, work| {
                let weak = weak.clone();
                Box::pin(async move {
                    if let Some(inner) = weak.upgrade() {
                        turn::run(inner, id, work).await;
                    }
                })
            },
        ));
        Ok(Self { inner })
    }

    /// Builds and starts a runtime.
    pub async fn start_with(config: WorkerConfig) -> Result<Self, RuntimeError> {
        let rt = Self::new(config)?;
        rt.start().await?;
        Ok(rt)
    }

    /// Connects: creates topics (if `create_topics`), reads the registry to its end,
    /// announces this replica, claims the agent types registered so far, opens the
    /// reply channel and joins the inbox and events consumer groups. Returns when
    /// the runtime can serve.
    pub async fn start(&self) -> Result<(), RuntimeError> {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let inner = &self.inner;
        let (cfg, names) = (&inner.config, &inner.names);
        let admin = TopicAdmin::new(&cfg.kafka, STARTUP_TIMEOUT)?;
        // A process creates its reply channel only after its first heartbeat (a client
        // too, with its client heartbeat): the operator deletes reply channels whose
        // process's heartbeat expired, and a restart under a fixed instance id must not
        // look dead meanwhile.
        let reply_spec = names.reply_spec(&cfg.instance_id, cfg.replication_factor);
        let mut topics = Vec::new();
        if cfg.create_topics && !inner.client_only {
            topics.extend(names.runtime_specs(
                &cfg.runtime_name,
                cfg.partitions,
                cfg.replication_factor,
            ));
        }
        if !topics.is_empty() {
            admin.ensure_topics_within(&topics, STARTUP_TIMEOUT).await?;
        }
        if !inner.client_only {
            self.read_inbox_partitions().await?;
        }

        inner
            .registry
            .load(
                &cfg.kafka,
                names,
                inner.shutdown.child_token(),
                STARTUP_TIMEOUT,
            )
            .await?;
        inner.registry.beat(&inner.outputs).await?;
        inner
            .tasks
            .spawn(registry_client::heartbeats(Arc::downgrade(inner)));
        if inner.client_only {
            admin
                .ensure_topics_within(std::slice::from_ref(&reply_spec), STARTUP_TIMEOUT)
                .await?;
        } else {
            let types = inner.hosted.agents().types();
            for t in types {
                if let Err(e) = inner.registry.claim(&inner.outputs, &t).await {
                    inner.hosted.agents().remove_type(&t);
                    return Err(e);
                }
            }
            admin
                .ensure_topics_within(std::slice::from_ref(&reply_spec), STARTUP_TIMEOUT)
                .await?;
        }

        let replies = ReplyChannel::open(
            &cfg.kafka,
            &names.reply(&cfg.instance_id),
            &names.reply_group(&cfg.runtime_name, &cfg.instance_id),
            STARTUP_TIMEOUT,
            inner.shutdown.child_token(),
        )
        .await?;
        let _ = inner.replies.set(replies);
        if inner.client_only {
            tracing::info!(instance = %cfg.instance_id, prefix = %names.prefix(), "client connected");
            return Ok(());
        }

        let settings = |topic: String, what: &str| LoopSettings {
            topic,
            max_in_flight_per_partition: cfg.max_in_flight_per_partition,
            commit_interval: cfg.commit_interval,
            drain_timeout: cfg.drain_timeout,
            thread_name: format!("sb-{what}"),
            start_at_end: false,
        };
        // No `statistics.interval.ms`: lag is read when /metrics asks
        // (`refresh_consumer_lag`), not computed every few seconds for nobody.
        let inbox_cfg = cfg
            .kafka
            .group_consumer_config(&names.inbox_group(&cfg.runtime_name));
        let inbox = ConsumerLoop::start(
            &inbox_cfg,
            settings(names.inbox(&cfg.runtime_name), "inbox"),
            Arc::new(inbox::InboxWorker::new(Arc::clone(inner))),
        )?;
        let events_group = names.events_group(&cfg.runtime_name);
        events::start_at_end_if_new(&cfg.kafka, &names.events(), &events_group, STARTUP_TIMEOUT)
            .await?;
        let events_cfg = cfg.kafka.group_consumer_config(&events_group);
        let events = ConsumerLoop::start(
            &events_cfg,
            settings(names.events(), "events"),
            Arc::new(events::EventsWorker::new(Arc::clone(inner))),
        )?;
        // Not waiting for the group joins here: records wait in Kafka, and the events
        // group's start position is committed above. `wait_ready` waits for them.
        let _ = inner.inbox_lag.set(inbox.lag_reader());
        inner.loops().extend([inbox, events]);
        inner.tasks.spawn(sources::watch(Arc::downgrade(inner)));
        tracing::info!(runtime = %cfg.runtime_name, instance = %cfg.instance_id, prefix = %names.prefix(), "runtime started");
        Ok(())
    }

    /// Whether this replica has joined its inbox and events consumer groups (it has
    /// read the registry and opened its reply channel once `start` returned) and is
    /// connected to a broker: false while the cluster is unreachable (librdkafka's
    /// statistics of its consumers tell, within about a second), true again once one
    /// of them is connected.
    pub fn is_ready(&self) -> bool {
        if self.inner.client_only {
            return self.inner.replies.get().is_some();
        }
        let loops = self.inner.loops();
        !loops.is_empty()
            && loops.iter().all(ConsumerLoop::has_joined)
            && loops.iter().any(ConsumerLoop::connected)
    }

    /// Adds (or replaces) a subscription whose events come from an existing Kafka
    /// topic instead of the events topic (see `kafka::source_records` for how its
    /// records become events). Every runtime hosting the agent type reads the topic.
    pub async fn add_source_subscription(
        &self,
        subscription: crate::Subscription,
        source: crate::subscription::SubscriptionSource,
    ) -> Result<(), RuntimeError> {
        source.check(&subscription).map_err(|reason| {
            RuntimeError::Config(crate::ConfigError::invalid(
                "source",
                &source.kafka_topic,
                reason,
            ))
        })?;
        self.inner
            .registry
            .add_subscription(&self.inner.outputs, subscription, Some(source))
            .await
    }

    /// Adds the source subscriptions the network does not have yet (same route and
    /// same source, whatever the id), so restarts and replicas do not pile up copies.
    /// Returns how many were added.
    #[cfg(feature = "server")]
    pub async fn ensure_source_subscriptions(
        &self,
        wanted: Vec<(crate::Subscription, crate::subscription::SubscriptionSource)>,
    ) -> Result<usize, RuntimeError> {
        if wanted.is_empty() {
            return Ok(0);
        }
        let log = self.inner.registry.log()?;
        log.catch_up().await?;
        let existing: Vec<_> = log
            .view()
            .source_subscriptions(now_ms(), self.inner.registry.liveness_ms())
            .into_iter()
            .map(|(s, src)| (s.clone(), src.clone()))
            .collect();
        let mut added = 0;
        for (sub, src) in wanted {
            let known = existing
                .iter()
                .any(|(s, e)| *e == src && crate::serve::same_route(s, &sub));
            if !known {
                self.add_source_subscription(sub, src).await?;
                added += 1;
            }
        }
        Ok(added)
    }

    /// Source topics this replica reads (its consumer joined the events group on them).
    pub fn source_topics_read(&self) -> Vec<String> {
        self.inner.sources_read()
    }

    /// The inbox partitions this replica owns (so the agents it hosts).
    pub fn inbox_partitions(&self) -> Vec<i32> {
        self.inner.hosted.owned()
    }

    /// Waits up to `timeout` for [`KafkaAgentRuntime::is_ready`].
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Reads the inbox partition count: ownership of an agent follows its key's inbox
    /// partition, and the count comes from Kafka, not from config (the operator may
    /// have grown it). Waits, within the start-up bound, for the topic to be usable
    /// (metadata right after creation can briefly omit it, and partitions have no
    /// leader for a moment after a broker restart), asking through a new client after
    /// each failed attempt: a client that read a restarting broker's answer listing no
    /// brokers has none left to ask (librdkafka issue #5301; a replica started right
    /// after a restart failed here with its first client).
    async fn read_inbox_partitions(&self) -> Result<(), RuntimeError> {
        /// How long one attempt (one client) may take.
        const ATTEMPT: Duration = Duration::from_secs(5);
        let cfg = &self.inner.config;
        let inbox_topic = self.inner.names.inbox(&cfg.runtime_name);
        let inbox = std::slice::from_ref(&inbox_topic);
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        let inbox_partitions = loop {
            let admin = TopicAdmin::new(&cfg.kafka, ATTEMPT)?;
            let attempt = async {
                admin.wait_usable(inbox).await.ok()?;
                admin
                    .partition_counts(inbox)
                    .await
                    .ok()?
                    .get(&inbox_topic)
                    .copied()
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Ok(Some(n)) = tokio::time::timeout(left.min(ATTEMPT * 2), attempt).await {
                break Some(n);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let inbox_partitions = inbox_partitions.ok_or_else(|| {
            RuntimeError::Unavailable(format!(
                "inbox topic {inbox_topic} is not usable after {STARTUP_TIMEOUT:?} (does it \
                 exist? createTopics is {})",
                cfg.create_topics
            ))
        })?;
        self.inner.hosted.set_partition_count(inbox_partitions);
        Ok(())
    }

    /// Cancels the context of the turn handling message `message_id` in this process
    /// (true if one runs); if none runs yet, a turn of it starting before `until_ms`
    /// (ms since the epoch, the message's deadline) starts cancelled. The handler sees
    /// `ctx.cancellation` fire; what it does then is its own (the built-in HTTP and
    /// `llm` agents stop their call).
    pub fn interrupt(&self, message_id: &str, until_ms: u64) -> bool {
        self.inner.interrupts.interrupt(message_id, until_ms)
    }

    /// This runtime's configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }

    /// Counters and gauges of this process.
    pub fn stats(&self) -> RuntimeStats {
        let m = self.inner.metrics.snapshot();
        RuntimeStats {
            handled: m.handled.values().sum(),
            failed: m.failed.values().sum(),
            dead_lettered: m.dead_lettered,
            events_delivered_locally: m.events_delivered_locally,
            active_agents: self.inner.hosted.agents().active_count(),
            waiting_rpcs: self.inner.replies.get().map_or(0, ReplyChannel::waiting),
            offset_commit_failures: self
                .inner
                .loops()
                .iter()
                .map(ConsumerLoop::commit_failures)
                .sum(),
            orphaned_clients_replaced: guard::clients_replaced(),
        }
    }

    /// Everything counted, for `/metrics`. Consumer lag is as of the last
    /// [`KafkaAgentRuntime::refresh_consumer_lag`].
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut m = self.inner.metrics.snapshot();
        m.partitions_awaiting_state = self.inner.state.awaiting_count() as u64;
        m
    }

    /// Reads the inbox consumer lag from Kafka now (the group's committed offsets and
    /// the partitions' end offsets, waiting at most `timeout` for each) and keeps it
    /// for [`KafkaAgentRuntime::metrics`]. `/metrics` calls this on every scrape: a
    /// runtime nobody scrapes spends nothing on lag. On failure the last figures stay.
    pub async fn refresh_consumer_lag(&self, timeout: Duration) {
        let Some(reader) = self.inner.inbox_lag.get().cloned() else {
            return; // a client, or not started: no inbox
        };
        let read = tokio::task::spawn_blocking(move || {
            let lags = reader.read(timeout);
            (reader, lags)
        })
        .await;
        match read {
            Ok((reader, Ok(lags))) => self.inner.metrics.set_lag(reader.topic(), lags),
            Ok((_, Err(e))) => tracing::debug!(error = %e, "reading consumer lag failed"),
            Err(e) => tracing::debug!(error = %e, "reading consumer lag failed"),
        }
    }

    /// Agent types with their hosting runtime, as the registry says now.
    pub fn agent_types(&self) -> Vec<(String, String)> {
        self.inner.registry.owners(now_ms())
    }

    /// Agent types registered in this process (factories and instances).
    pub fn hosted_types(&self) -> Vec<String> {
        self.inner.hosted.agents().types()
    }

    /// Ids of the agents active in this process.
    pub fn active_agents(&self) -> Vec<AgentId> {
        self.inner.hosted.agents().active()
    }
}

impl Inner {
    fn loops(&self) -> MutexGuard<'_, Vec<ConsumerLoop>> {
        self.loops.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn replies(&self) -> Result<&ReplyChannel, RuntimeError> {
        self.replies.get().ok_or(RuntimeError::Stopped)
    }

    /// Stops this process's part of the runtime: consumers first (no new work;
    /// in-flight work finishes and is committed), then the registry records of this
    /// replica, the reply channel, owned tasks and the producer. Every step runs even
    /// when an earlier one failed, and each failure is logged; only a consumer thread
    /// that could not be stopped is returned (its uncommitted records are replayed).
    async fn stop(self: &Arc<Self>) -> Result<(), RuntimeError> {
        let failed = |what: &str, e: RuntimeError| {
            tracing::warn!(error = %e, "stopping: {what} failed");
        };
        let mut loops: Vec<ConsumerLoop> = self.loops().drain(..).collect();
        // `None`: the source watcher starts no more.
        loops.extend(
            self.sources()
                .take()
                .into_iter()
                .flat_map(BTreeMap::into_values),
        );
        let consumers = tokio::task::spawn_blocking(move || {
            for l in &mut loops {
                l.stop_blocking();
            }
        })
        .await
        .map_err(|e| RuntimeError::Task(e.to_string()));
        if let Err(e) = &consumers {
            failed("stopping the consumers", e.clone());
        }
        if let Err(e) = self.registry.release(&self.outputs, now_ms()).await {
            failed("releasing registry records", e);
        }
        if let Ok(replies) = self.replies() {
            replies.close();
        }
        self.shutdown.cancel();
        self.registry.abort();
        if let Err(e) = self.outputs.flush(Duration::from_secs(10)).await {
            failed("flushing the producer", e);
        }
        self.tasks.close();
        if tokio::time::timeout(self.config.drain_timeout, self.tasks.wait())
            .await
            .is_err()
        {
            failed(
                "waiting for output tasks",
                RuntimeError::Unavailable(format!(
                    "{} output tasks still waiting for the broker after {:?}",
                    self.tasks.len(),
                    self.config.drain_timeout
                )),
            );
        }
        match TopicAdmin::new(&self.config.kafka, Duration::from_secs(10)) {
            Ok(admin) => {
                let reply_topic = self.names.reply(&self.config.instance_id);
                if let Err(e) = admin.delete_topics(&[reply_topic]).await {
                    failed("deleting the reply channel", e.into());
                }
            }
            Err(e) => failed("deleting the reply channel", e.into()),
        }
        tracing::info!(runtime = %self.config.runtime_name, instance = %self.config.instance_id, "runtime stopped");
        consumers
    }
}
