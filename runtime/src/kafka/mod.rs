//! The Kafka runtime: agents across many processes over Apache Kafka (DESIGN.md §2-4).
//!
//! One [`KafkaAgentRuntime`] per process. Processes with the same runtime name are
//! replicas: they share the runtime's inbox through a consumer group, so each agent
//! lives on exactly one replica at a time (the owner of its inbox partition).

mod consumer_loop;
mod events;
mod handoff;
mod inbox;
mod metrics;
mod offsets;
mod original;
mod outputs;
pub mod registry;
mod registry_log;
mod replies;
mod worker_config;

pub use metrics::{MetricsSnapshot, RPC_LATENCY_BUCKETS};
pub use worker_config::WorkerConfig;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::producer::{FutureProducer, Producer};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{TopicAdmin, TopicSpec};
use crate::agent::{Agent, AgentFactory, SharedAgent};
use crate::api::{AgentMetadata, AgentRuntime};
use crate::context::{OutgoingEvent, OutgoingRpc, Transport};
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::local::{LocalAgents, Mailboxes};
use crate::message::Payload;
use crate::subscription::Subscription;
use crate::topics::TopicNames;
use crate::wire::{Body, Envelope, now_ms};
use consumer_loop::{ConsumerLoop, LoopSettings};
use handoff::Handoff;
use metrics::Metrics;
use registry::{
    Claim, Heartbeat, OPERATOR_OWNER, RecipientCache, SubscriptionRecord, claim_key, heartbeat_key,
    subscription_key,
};
use registry_log::RegistryLog;
use replies::ReplyChannel;

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
}

pub(crate) struct Inner {
    pub(crate) config: WorkerConfig,
    pub(crate) names: TopicNames,
    pub(crate) producer: FutureProducer,
    pub(crate) agents: Mutex<LocalAgents>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Metrics,
    /// Saved state of agents not active yet, by inbox partition (restored on assign).
    pub(crate) restored: Mutex<HashMap<i32, HashMap<AgentId, Value>>>,
    pub(crate) mailboxes: OnceLock<Mailboxes<inbox::Work>>,
    /// Partition count of this runtime's inbox (read from Kafka at start).
    pub(crate) inbox_partitions: std::sync::atomic::AtomicI32,
    /// Inbox partitions this replica owns now.
    pub(crate) owned: Mutex<std::collections::BTreeSet<i32>>,
    /// How events reach the mailboxes of owned inbox partitions.
    pub(crate) handoff: Handoff,
    registry: OnceLock<RegistryLog>,
    /// Recipient types per topic type, for the events consumer.
    recipients: Mutex<RecipientCache>,
    replies: OnceLock<ReplyChannel>,
    loops: Mutex<Vec<ConsumerLoop>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    started: AtomicBool,
    stopped: AtomicBool,
    /// Sends and publishes only: no inbox, no heartbeats, no agent types.
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
        config.validate()?;
        let names = TopicNames::new(&config.topic_prefix)?;
        let producer: FutureProducer = config.kafka.producer_config().create()?;
        let inner = Arc::new(Inner {
            names,
            producer,
            agents: Mutex::default(),
            shutdown: CancellationToken::new(),
            metrics: Metrics::default(),
            restored: Mutex::default(),
            mailboxes: OnceLock::new(),
            owned: Mutex::default(),
            handoff: Handoff::default(),
            inbox_partitions: std::sync::atomic::AtomicI32::new(1),
            registry: OnceLock::new(),
            recipients: Mutex::default(),
            replies: OnceLock::new(),
            loops: Mutex::default(),
            tasks: Mutex::default(),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            client_only,
            config,
        });
        let weak = Arc::downgrade(&inner);
        let mailboxes = Mailboxes::new(inner.config.max_concurrency, move |id, work| {
            let weak = weak.clone();
            Box::pin(async move {
                if let Some(inner) = weak.upgrade() {
                    inbox::run_work(inner, id, work).await;
                }
            })
        });
        let _ = inner.mailboxes.set(mailboxes);
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
        let cfg = &inner.config;
        let names = &inner.names;
        let admin = TopicAdmin::new(&cfg.kafka, STARTUP_TIMEOUT)
            .map_err(|e| RuntimeError::Kafka(e.to_string()))?;
        let reply_topic = names.reply(&cfg.instance_id);
        let mut topics = vec![
            // A short retention: replies matter only while someone waits.
            TopicSpec::new(reply_topic.clone(), 1, cfg.replication_factor.unwrap_or(-1))
                .with_config("retention.ms", "3600000"),
        ];
        if cfg.create_topics && !inner.client_only {
            topics.extend(topic_specs(cfg, names));
        }
        admin
            .ensure_topics(&topics)
            .await
            .map_err(|e| RuntimeError::Kafka(e.to_string()))?;
        if !inner.client_only {
            self.read_inbox_partitions(&admin).await?;
        }

        let group = |what: &str| format!("{}.{}.{what}", names.prefix(), cfg.runtime_name);
        let registry = RegistryLog::load(
            &cfg.kafka,
            &names.registry(),
            &format!("{}.{}", group("registry"), cfg.instance_id),
            STARTUP_TIMEOUT,
            inner.shutdown.child_token(),
        )
        .await?;
        let _ = inner.registry.set(registry);
        if !inner.client_only {
            self.beat().await?;
            self.spawn(heartbeats(Arc::downgrade(&self.inner)));
            let types = inner.agents().types();
            for t in types {
                if let Err(e) = self.claim(&t).await {
                    inner.agents().remove_type(&t);
                    return Err(e);
                }
            }
        }

        let replies = ReplyChannel::open(
            &cfg.kafka,
            &reply_topic,
            &format!("{}.{}", group("reply"), cfg.instance_id),
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
        };
        let mut inbox_cfg = cfg.kafka.consumer_config(&group("inbox"));
        inbox_cfg
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("statistics.interval.ms", "5000");
        let inbox = ConsumerLoop::start(
            &inbox_cfg,
            settings(names.inbox(&cfg.runtime_name), "inbox"),
            Arc::new(inbox::InboxWorker::new(Arc::clone(inner))),
        )?;
        let events_group = group("events");
        events::start_at_end_if_new(&cfg.kafka, &names.events(), &events_group, STARTUP_TIMEOUT)
            .await?;
        let mut events_cfg = cfg.kafka.consumer_config(&events_group);
        events_cfg
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("statistics.interval.ms", "5000");
        let events = ConsumerLoop::start(
            &events_cfg,
            settings(names.events(), "events"),
            Arc::new(events::EventsWorker::new(Arc::clone(inner))),
        )?;
        // Not waiting for the group joins here: records wait in Kafka, and the events
        // group's start position is committed above. `wait_ready` waits for them.
        inner.loops().extend([inbox, events]);
        tracing::info!(runtime = %cfg.runtime_name, instance = %cfg.instance_id, prefix = %names.prefix(), "runtime started");
        Ok(())
    }

    /// Whether this replica has joined its inbox and events consumer groups (it has
    /// read the registry and opened its reply channel once `start` returned).
    pub fn is_ready(&self) -> bool {
        if self.inner.client_only {
            return self.inner.replies.get().is_some();
        }
        let loops = self.inner.loops();
        !loops.is_empty() && loops.iter().all(ConsumerLoop::has_joined)
    }

    /// The inbox partitions this replica owns (so the agents it hosts).
    pub fn inbox_partitions(&self) -> Vec<i32> {
        self.inner
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
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
    /// have grown it).
    async fn read_inbox_partitions(&self, admin: &TopicAdmin) -> Result<(), RuntimeError> {
        let (inner, cfg, names) = (&self.inner, &self.inner.config, &self.inner.names);
        // Ownership of an agent follows its key's inbox partition; the count comes
        // from Kafka, not from config, since the operator may have grown it.
        // Metadata right after creation can briefly omit a topic: wait until usable.
        let inbox_topic = names.inbox(&cfg.runtime_name);
        let inbox = std::slice::from_ref(&inbox_topic);
        let mut inbox_partitions = None;
        for _ in 0..50 {
            // wait_usable itself waits up to the start-up timeout: give up if it does.
            if admin.wait_usable(inbox).await.is_err() {
                break;
            }
            if let Ok(counts) = admin.partition_counts(inbox).await {
                inbox_partitions = counts.get(&inbox_topic).copied();
            }
            if inbox_partitions.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let inbox_partitions = inbox_partitions.ok_or_else(|| {
            RuntimeError::Kafka(format!(
                "inbox topic {inbox_topic} is not usable (does it exist? createTopics is {})",
                cfg.create_topics
            ))
        })?;
        inner
            .inbox_partitions
            .store(inbox_partitions, Ordering::SeqCst);
        Ok(())
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
            active_agents: self.inner.agents().active_count(),
            waiting_rpcs: self.inner.replies.get().map_or(0, ReplyChannel::waiting),
        }
    }

    /// Everything counted, for `/metrics`.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Agent types with their hosting runtime, as the registry says now.
    pub fn agent_types(&self) -> Vec<(String, String)> {
        let cfg = &self.inner.config;
        self.inner
            .registry
            .get()
            .map(|r| {
                r.view()
                    .owners(now_ms(), cfg.liveness_timeout.as_millis() as u64)
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ids of the agents active in this process.
    pub fn active_agents(&self) -> Vec<AgentId> {
        self.inner.agents().active()
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    async fn beat(&self) -> Result<(), RuntimeError> {
        self.inner.beat().await
    }

    /// Claims `agent_type` for this runtime: the earliest live claim in the log wins.
    async fn claim(&self, agent_type: &str) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let runtime = inner.config.runtime_name.clone();
        if let Some(owner) = inner.owner_of(agent_type)
            && owner.runtime != runtime
        {
            return Err(RuntimeError::AgentTypeTaken {
                agent_type: agent_type.to_owned(),
                owner: owner.runtime,
            });
        }
        let claim = Claim {
            agent_type: agent_type.to_owned(),
            runtime: runtime.clone(),
            instance: inner.config.instance_id.clone(),
            at_ms: now_ms(),
        };
        let value = serde_json::to_vec(&claim).map_err(|e| RuntimeError::Kafka(e.to_string()))?;
        inner
            .write_registry(&claim_key(agent_type, &runtime), Some(&value))
            .await?;
        match inner.owner_of(agent_type) {
            Some(owner) if owner.runtime == runtime => Ok(()),
            other => {
                // Lost the race: take our claim back so it never shadows the winner.
                inner
                    .write_registry(&claim_key(agent_type, &runtime), None)
                    .await?;
                Err(RuntimeError::AgentTypeTaken {
                    agent_type: agent_type.to_owned(),
                    owner: other.map_or_else(|| "unknown".to_owned(), |c| c.runtime),
                })
            }
        }
    }
}

/// The topics a runtime needs, as created when `create_topics` is on.
pub fn topic_specs(cfg: &WorkerConfig, names: &TopicNames) -> Vec<TopicSpec> {
    let rf = cfg.replication_factor.unwrap_or(-1);
    let n = cfg.partitions;
    let runtime = &cfg.runtime_name;
    vec![
        // One partition: a total order decides concurrent claims.
        // Hourly segments let compaction drop old heartbeats, keeping start-up reads short.
        TopicSpec::new(names.registry(), 1, rf)
            .with_config("cleanup.policy", "compact")
            .with_config("segment.ms", "3600000"),
        TopicSpec::new(names.events(), n, rf),
        TopicSpec::new(names.inbox(runtime), n, rf),
        // Co-partitioned with the inbox: state of partition p lives in partition p.
        TopicSpec::new(names.state(runtime), n, rf).with_config("cleanup.policy", "compact"),
        TopicSpec::new(names.dlq(runtime), n, rf),
    ]
}

impl Inner {
    pub(crate) fn agents(&self) -> MutexGuard<'_, LocalAgents> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn loops(&self) -> MutexGuard<'_, Vec<ConsumerLoop>> {
        self.loops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clients host no agents: registering one is a usage error.
    fn hosts_agents(&self, agent_type: &str) -> Result<(), RuntimeError> {
        if self.client_only {
            return Err(RuntimeError::Config(crate::config::ConfigError::invalid(
                "agentType",
                agent_type,
                "a client runtime (start_client) hosts no agents",
            )));
        }
        Ok(())
    }

    fn liveness_ms(&self) -> u64 {
        self.config.liveness_timeout.as_millis() as u64
    }

    fn registry(&self) -> Result<&RegistryLog, RuntimeError> {
        self.registry.get().ok_or(RuntimeError::Stopped)
    }

    fn owner_of(&self, agent_type: &str) -> Option<Claim> {
        self.registry
            .get()?
            .view()
            .owner(agent_type, now_ms(), self.liveness_ms())
            .cloned()
    }

    /// Agent types of this runtime that receive events of `topic_type`.
    pub(crate) fn recipient_types(&self, topic_type: &str) -> Vec<String> {
        self.registry
            .get()
            .map(|r| {
                self.recipients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(
                        &r.view(),
                        &self.config.runtime_name,
                        topic_type,
                        now_ms(),
                        self.liveness_ms(),
                    )
            })
            .unwrap_or_default()
    }

    /// Writes a registry record and waits until this process has read it back.
    async fn write_registry(&self, key: &str, value: Option<&[u8]>) -> Result<(), RuntimeError> {
        let topic = self.names.registry();
        let (p, o) =
            outputs::produce(&self.producer, &topic, None, key.as_bytes(), None, value).await?;
        if self.registry()?.wait_applied(p, o, STARTUP_TIMEOUT).await {
            Ok(())
        } else {
            Err(RuntimeError::Kafka(format!(
                "registry record {key} not read back within {STARTUP_TIMEOUT:?}"
            )))
        }
    }

    async fn beat(&self) -> Result<(), RuntimeError> {
        let hb = Heartbeat {
            runtime: self.config.runtime_name.clone(),
            instance: self.config.instance_id.clone(),
            at_ms: now_ms(),
        };
        let value = serde_json::to_vec(&hb).map_err(|e| RuntimeError::Kafka(e.to_string()))?;
        self.write_registry(&heartbeat_key(&hb.runtime, &hb.instance), Some(&value))
            .await
    }

    fn replies(&self) -> Result<&ReplyChannel, RuntimeError> {
        self.replies.get().ok_or(RuntimeError::Stopped)
    }
}

/// The next record of a tailing consumer, or `None` once `shutdown` fires. Consumer
/// errors (broker restarts, rebalances) are logged and waited out.
pub(crate) async fn next_record<'a>(
    consumer: &'a rdkafka::consumer::StreamConsumer,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<rdkafka::message::BorrowedMessage<'a>> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            m = consumer.recv() => match m {
                Ok(m) => return Some(m),
                Err(e) => tracing::warn!(error = %e, "{what} consumer error"),
            },
        }
    }
}

/// Runs a blocking Kafka call until it succeeds or `timeout` passes. A topic created
/// a moment ago can answer "unknown topic" or "not leader" for a short while.
pub(crate) fn retry_blocking<T>(
    timeout: Duration,
    mut call: impl FnMut() -> Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "retrying a Kafka call");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

async fn heartbeats(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let (interval, shutdown) = (strong.config.heartbeat_interval, strong.shutdown.clone());
        drop(strong);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Err(e) = strong.beat().await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

#[async_trait]
impl Transport for Inner {
    async fn send(&self, rpc: OutgoingRpc) -> Result<Option<Payload>, RuntimeError> {
        if self.shutdown.is_cancelled() {
            return Err(RuntimeError::Stopped);
        }
        let recipient = rpc.recipient;
        let owner = match self.owner_of(recipient.agent_type()) {
            Some(owner) => owner,
            None => {
                // Maybe registered a moment ago: read the registry to its end once.
                self.registry()?.catch_up().await?;
                self.owner_of(recipient.agent_type()).ok_or_else(|| {
                    RuntimeError::UnknownAgentType(recipient.agent_type().to_owned())
                })?
            }
        };
        let replies = self.replies()?;
        let timeout = rpc.timeout.unwrap_or(self.config.rpc_timeout);
        let request_id = uuid::Uuid::new_v4().to_string();
        let source = rpc.sender.as_ref().map_or_else(
            || format!("client/{}", self.config.instance_id),
            ToString::to_string,
        );
        let envelope = Envelope::new(
            source,
            rpc.trace,
            Body::Request {
                request_id: request_id.clone(),
                recipient: recipient.clone(),
                sender: rpc.sender,
                reply_to: replies.topic().to_owned(),
                deadline_ms: now_ms() + timeout.as_millis() as u64,
                payload: rpc.payload,
            },
        );
        let reply = replies.expect(&request_id, &recipient);
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let inbox = self.names.inbox(&owner.runtime);
        let cancel = rpc.cancellation.unwrap_or_default();
        let outcome = tokio::select! {
            sent = outputs::produce_envelope(&self.producer, &inbox, recipient.key().as_bytes(), &envelope) => match sent {
                Err(e) => Err(e),
                Ok(_) => tokio::select! {
                    r = reply => r.unwrap_or(Err(RuntimeError::Stopped)),
                    () = tokio::time::sleep_until(deadline) => Err(RuntimeError::Timeout { agent: recipient.clone(), after: timeout }),
                    () = cancel.cancelled() => Err(RuntimeError::Cancelled(recipient.clone())),
                },
            },
            () = tokio::time::sleep_until(deadline) => Err(RuntimeError::Timeout { agent: recipient.clone(), after: timeout }),
            () = cancel.cancelled() => Err(RuntimeError::Cancelled(recipient.clone())),
        };
        if outcome.is_err() {
            replies.forget(&request_id);
        }
        self.metrics.rpc(started.elapsed(), outcome.is_ok());
        match outcome {
            Err(RuntimeError::Timeout { agent, .. }) => Err(RuntimeError::Timeout {
                agent,
                after: timeout,
            }),
            other => other,
        }
    }

    async fn publish(&self, event: OutgoingEvent) -> Result<(), RuntimeError> {
        if self.shutdown.is_cancelled() {
            return Err(RuntimeError::Stopped);
        }
        let key = event.topic.source().as_bytes().to_vec();
        let envelope = Envelope::new(
            event.topic.source().to_owned(),
            event.trace,
            Body::Event {
                topic: event.topic,
                sender: event.sender,
                recipient_types: Vec::new(),
                payload: event.payload,
            },
        );
        outputs::produce_envelope(&self.producer, &self.names.events(), &key, &envelope)
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl AgentRuntime for KafkaAgentRuntime {
    async fn register_factory(
        &self,
        agent_type: &str,
        factory: AgentFactory,
    ) -> Result<(), RuntimeError> {
        self.inner.hosts_agents(agent_type)?;
        crate::ids::validate_agent_type(agent_type)?;
        {
            let mut agents = self.inner.agents();
            agents.check_factory(agent_type, &factory)?;
            agents.add_factory(agent_type, factory);
        }
        if self.inner.started.load(Ordering::SeqCst)
            && let Err(e) = self.claim(agent_type).await
        {
            self.inner.agents().remove_type(agent_type);
            return Err(e);
        }
        Ok(())
    }

    async fn register_agent_instance_boxed(
        &self,
        agent: Box<dyn Agent>,
        class: &'static str,
        id: AgentId,
    ) -> Result<(), RuntimeError> {
        self.inner.hosts_agents(id.agent_type())?;
        let new_type = {
            let mut agents = self.inner.agents();
            let new_type = agents.check_instance(&id, class)?;
            agents.add_instance(id.clone(), agent, class);
            new_type
        };
        if new_type
            && self.inner.started.load(Ordering::SeqCst)
            && let Err(e) = self.claim(id.agent_type()).await
        {
            self.inner.agents().remove_type(id.agent_type());
            return Err(e);
        }
        Ok(())
    }

    async fn add_subscription(&self, subscription: Subscription) -> Result<(), RuntimeError> {
        let record = SubscriptionRecord {
            owner: self.inner.config.runtime_name.clone(),
            subscription,
        };
        let value = serde_json::to_vec(&record).map_err(|e| RuntimeError::Kafka(e.to_string()))?;
        self.inner
            .write_registry(&subscription_key(record.subscription.id()), Some(&value))
            .await
    }

    async fn remove_subscription(&self, id: &str) -> Result<(), RuntimeError> {
        let registry = self.inner.registry()?;
        registry.catch_up().await?;
        if !registry.view().has_subscription(id) {
            return Err(RuntimeError::UnknownSubscription(id.to_owned()));
        }
        self.inner.write_registry(&subscription_key(id), None).await
    }

    async fn subscriptions(&self) -> Vec<Subscription> {
        let Ok(registry) = self.inner.registry() else {
            return Vec::new();
        };
        if let Err(e) = registry.catch_up().await {
            tracing::warn!(error = %e, "listing subscriptions from a registry view that may lag");
        }
        let view = registry.view();
        view.subscriptions(now_ms(), self.inner.liveness_ms())
            .into_iter()
            .map(|r| r.subscription.clone())
            .collect()
    }

    fn transport(&self) -> &dyn Transport {
        &*self.inner
    }

    async fn agent_metadata(&self, id: &AgentId) -> Result<AgentMetadata, RuntimeError> {
        let owner = self
            .inner
            .owner_of(id.agent_type())
            .ok_or_else(|| RuntimeError::UnknownAgentType(id.agent_type().to_owned()))?;
        let agents = self.inner.agents();
        Ok(AgentMetadata {
            id: id.clone(),
            local: agents.active().contains(id),
            class: agents.class_of(id).unwrap_or_default().to_owned(),
            runtime: owner.runtime,
        })
    }

    async fn agent_load_state(&self, id: &AgentId, state: Value) -> Result<(), RuntimeError> {
        let (agent, _) = self.local_agent(id).await?;
        let mut guard = agent.lock().await;
        guard
            .load_state(state.clone())
            .await
            .map_err(|e| RuntimeError::Handler {
                agent: id.to_string(),
                message: e.to_string(),
            })?;
        inbox::persist_state(&self.inner, id, None, &mut **guard).await
    }

    async fn local_agent(&self, id: &AgentId) -> Result<(SharedAgent, String), RuntimeError> {
        let activated = self.inner.agents().activate(id, None);
        let (agent, class, created) = activated?;
        if created {
            inbox::restore_into(&self.inner, id, &agent).await;
        }
        Ok((agent, class.to_owned()))
    }

    async fn stop(&self) -> Result<(), RuntimeError> {
        if self.inner.stopped.swap(true, Ordering::SeqCst)
            || !self.inner.started.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        // Consumers first: no new work; in-flight work finishes and is committed.
        let mut loops: Vec<ConsumerLoop> = inner.loops().drain(..).collect();
        tokio::task::spawn_blocking(move || {
            for l in &mut loops {
                l.stop_blocking();
            }
        })
        .await
        .map_err(|e| RuntimeError::Kafka(e.to_string()))?;
        let cfg = &inner.config;
        if let (false, Ok(registry)) = (inner.client_only, inner.registry()) {
            // The last live replica releases the runtime's types and subscriptions, so
            // a stopped runtime leaves nothing behind (others keep serving them).
            let (others, types, subs) = {
                let view = registry.view();
                let others: Vec<String> = view
                    .live_replicas(&cfg.runtime_name, now_ms(), inner.liveness_ms())
                    .into_iter()
                    .filter(|i| *i != cfg.instance_id)
                    .collect();
                (
                    others,
                    view.claimed_by(&cfg.runtime_name),
                    view.subscriptions_of(&cfg.runtime_name),
                )
            };
            if others.is_empty() {
                for t in types {
                    let _ = inner
                        .write_registry(&claim_key(&t, &cfg.runtime_name), None)
                        .await;
                }
                for id in subs {
                    let _ = inner.write_registry(&subscription_key(&id), None).await;
                }
            }
            let _ = inner
                .write_registry(&heartbeat_key(&cfg.runtime_name, &cfg.instance_id), None)
                .await;
        }
        if let Ok(replies) = inner.replies() {
            replies.close();
        }
        inner.shutdown.cancel();
        for t in inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        if let Some(r) = inner.registry.get() {
            r.abort();
        }
        let producer = inner.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        if let Ok(admin) = TopicAdmin::new(&cfg.kafka, Duration::from_secs(10)) {
            let reply_topic = inner.names.reply(&cfg.instance_id);
            if let Err(e) = admin.delete_topics(&[reply_topic]).await {
                tracing::warn!(error = %e, "could not delete the reply channel");
            }
        }
        tracing::info!(runtime = %cfg.runtime_name, instance = %cfg.instance_id, "runtime stopped");
        Ok(())
    }
}

/// Owner name for operator-written subscriptions (re-exported for the operator).
pub const SUBSCRIPTION_OWNER_OPERATOR: &str = OPERATOR_OWNER;
