//! Source topics: existing Kafka topics bound by subscriptions' `source`, read in the
//! runtime's events consumer group (one consumer loop per topic, same group id), their
//! records mapped to events (`source_records`) and forwarded into the inbox keyed by
//! the topic source, so the owning replica handles them one at a time in order. A
//! record is committed once its forwards (or its dead letter) are acknowledged.
//!
//! Which topics: the subscriptions in the registry that bind a topic to an agent type
//! this runtime hosts. A watcher compares them with the running loops every
//! [`CHECK_INTERVAL`], starts a loop when its topic exists (the first time a group
//! reads a topic it starts at the end, as for the events topic) and stops loops whose
//! last subscription went.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;

use super::Inner;
use super::consumer_loop::{ConsumerLoop, Dispatched, DoneSender, LoopSettings, PartitionWorker};
use super::original::Original;
use super::outputs;
use super::source_records::{SourceRecord, deliveries};
use crate::admin::TopicAdmin;
use crate::protocol::wire::now_ms;

/// How often the bound topics are compared with the running loops.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait before looking for a missing topic again.
const MISSING_RETRY: Duration = Duration::from_secs(5);
/// Metadata and offset calls of the watcher.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// The running source loops, by topic; `None` once the runtime stops (no new ones).
pub(crate) type SourceLoops = Option<BTreeMap<String, ConsumerLoop>>;

/// Maps the records of one source topic and forwards them into the inbox.
struct SourceWorker {
    inner: Arc<Inner>,
    topic: String,
    tokio: tokio::runtime::Handle,
}

impl PartitionWorker for SourceWorker {
    fn dispatch(&self, message: &BorrowedMessage<'_>, done: &DoneSender) -> Dispatched {
        let bindings = self.inner.registry.source_bindings(&self.topic, now_ms());
        if bindings.is_empty() {
            return Dispatched::Done;
        }
        let (p, o) = (message.partition(), message.offset());
        let original = Original::new(message);
        let record = SourceRecord {
            topic: &self.topic,
            partition: p,
            offset: o,
            key: original.key(),
            headers: original.headers().collect(),
            value: original.payload_bytes(),
            timestamp_ms: message
                .timestamp()
                .to_millis()
                .and_then(|t| u64::try_from(t).ok()),
        };
        let mapped = deliveries(&record, &bindings);
        drop(record);
        let inner = Arc::clone(&self.inner);
        let done = done.clone();
        match mapped {
            Ok(ds) if ds.is_empty() => Dispatched::Done,
            Ok(ds) => {
                let inbox = inner.names.inbox(&inner.config.runtime_name);
                // Enqueued now, in record order: deliveries of one key keep their order.
                let queued: Vec<_> = ds
                    .iter()
                    .map(|d| inner.outputs.enqueue_envelope(&inbox, &d.key, &d.envelope))
                    .collect();
                let task = async move {
                    for q in queued {
                        if let Err(e) = outputs::acknowledged(&inbox, q).await {
                            tracing::error!(topic = %original.topic(), partition = p, offset = o, error = %e, "forwarding a source record failed; it stays uncommitted");
                            return;
                        }
                    }
                    done.done(p, o);
                };
                self.inner.tasks.spawn_on(task, &self.tokio);
                Dispatched::Pending
            }
            Err(reason) => {
                tracing::warn!(%reason, "source record dead-lettered");
                let task = async move {
                    match inner.outputs.dead_letter(&original, &reason).await {
                        Ok(()) => done.done(p, o),
                        Err(e) => {
                            tracing::error!(error = %e, "dead-lettering failed; the record stays uncommitted")
                        }
                    }
                };
                self.inner.tasks.spawn_on(task, &self.tokio);
                Dispatched::Pending
            }
        }
    }
}

/// Keeps one loop per bound topic until the runtime stops.
pub(crate) async fn watch(inner: Weak<Inner>) {
    let mut missing: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let shutdown = strong.shutdown.clone();
        if !sync(&strong, &mut missing).await {
            return;
        }
        drop(strong);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}

/// Starts and stops loops to match the bound topics; false once the runtime stops.
async fn sync(inner: &Arc<Inner>, missing: &mut BTreeMap<String, tokio::time::Instant>) -> bool {
    let wanted = inner.registry.source_topics(now_ms());
    let (stale, new): (Vec<(String, ConsumerLoop)>, Vec<String>) = {
        let mut loops = inner.sources();
        let Some(loops) = loops.as_mut() else {
            return false;
        };
        let gone: Vec<String> = loops
            .keys()
            .filter(|t| !wanted.contains(*t))
            .cloned()
            .collect();
        let stale = gone
            .into_iter()
            .filter_map(|t| loops.remove(&t).map(|l| (t, l)))
            .collect();
        let new = wanted
            .iter()
            .filter(|t| !loops.contains_key(*t))
            .cloned()
            .collect();
        (stale, new)
    };
    if !stale.is_empty() {
        stop_loops(stale).await;
    }
    missing.retain(|t, _| wanted.contains(t));
    let now = tokio::time::Instant::now();
    let due: Vec<String> = new
        .into_iter()
        .filter(|t| missing.get(t).is_none_or(|at| now >= *at))
        .collect();
    if due.is_empty() {
        return true;
    }
    let existing = match existing_topics(inner, &due).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read source topic metadata; retrying");
            return true;
        }
    };
    for topic in due {
        if !existing.contains(&topic) {
            if missing.insert(topic.clone(), now + MISSING_RETRY).is_none() {
                tracing::warn!(%topic, "source topic does not exist; waiting for it");
            }
            continue;
        }
        missing.remove(&topic);
        match start_loop(inner, &topic).await {
            Ok(l) => {
                // The runtime stopped meanwhile: this loop is its own to stop.
                let late = match inner.sources().as_mut() {
                    Some(loops) => {
                        loops.insert(topic.clone(), l);
                        tracing::info!(%topic, "reading source topic");
                        None
                    }
                    None => Some(l),
                };
                if let Some(l) = late {
                    stop_loops(vec![(topic, l)]).await;
                    return false;
                }
            }
            Err(e) => {
                tracing::warn!(%topic, error = %e, "cannot read source topic; retrying");
                missing.insert(topic, now + MISSING_RETRY);
            }
        }
    }
    true
}

async fn existing_topics(
    inner: &Inner,
    topics: &[String],
) -> Result<BTreeSet<String>, crate::admin::AdminError> {
    let admin = TopicAdmin::new(&inner.config.kafka, KAFKA_TIMEOUT)?;
    Ok(admin
        .partition_counts(topics)
        .await?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, _)| t)
        .collect())
}

async fn start_loop(inner: &Arc<Inner>, topic: &str) -> Result<ConsumerLoop, String> {
    let (cfg, names) = (&inner.config, &inner.names);
    let group = names.events_group(&cfg.runtime_name);
    let mut consumer = cfg.kafka.consumer_config(&group);
    consumer.set("partition.assignment.strategy", "cooperative-sticky");
    // The events group has members already (its events-topic consumers), so the start
    // position cannot be committed from outside as for the events topic: the loop
    // commits it as the partitions' owner (`start_at_end`).
    consumer.set("auto.offset.reset", "latest");
    let settings = LoopSettings {
        topic: topic.to_owned(),
        max_in_flight_per_partition: cfg.max_in_flight_per_partition,
        commit_interval: cfg.commit_interval,
        drain_timeout: cfg.drain_timeout,
        thread_name: "sb-source".to_owned(),
        start_at_end: true,
    };
    let worker = SourceWorker {
        inner: Arc::clone(inner),
        topic: topic.to_owned(),
        tokio: tokio::runtime::Handle::current(),
    };
    ConsumerLoop::start(&consumer, settings, Arc::new(worker)).map_err(|e| e.to_string())
}

/// Stops loops (their in-flight records finish and are committed), off the async threads.
pub(crate) async fn stop_loops(loops: Vec<(String, ConsumerLoop)>) {
    let stopped = tokio::task::spawn_blocking(move || {
        for (topic, mut l) in loops {
            l.stop_blocking();
            tracing::info!(%topic, "stopped reading source topic");
        }
    })
    .await;
    if let Err(e) = stopped {
        tracing::warn!(error = %e, "stopping source topic consumers failed");
    }
}

impl Inner {
    /// The running source loops.
    pub(crate) fn sources(&self) -> std::sync::MutexGuard<'_, SourceLoops> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Source topics this replica has joined the events group for.
    pub(crate) fn sources_read(&self) -> Vec<String> {
        self.sources()
            .iter()
            .flatten()
            .filter(|(_, l)| l.has_joined())
            .map(|(t, _)| t.clone())
            .collect()
    }
}
