//! The events topic, as seen by one runtime: every replica consumes it in the
//! runtime's own consumer group, finds the runtime's agent types subscribed to each
//! event's topic type, and forwards one delivery into the runtime's inbox keyed by
//! the topic source — so the agent's owner handles it (one owner, in order). When this
//! replica is that owner the event goes to the mailbox directly (see `handoff` and
//! `local_delivery`).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::Inner;
use super::classify::{self, EventsRecord};
use super::consumer_loop::{Dispatched, DoneSender, PartitionWorker, partition_list};
use super::local_delivery::{self, KafkaIo, Outgoing};
use crate::config::KafkaConfig;
use crate::error::RuntimeError;
use crate::protocol::partitioner::partition_for;
use crate::protocol::wire::now_ms;

/// Forwards events to the inbox.
pub(crate) struct EventsWorker {
    inner: Arc<Inner>,
    tokio: tokio::runtime::Handle,
}

impl EventsWorker {
    /// A worker for `inner`; must be created inside the tokio runtime.
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self {
            inner,
            tokio: tokio::runtime::Handle::current(),
        }
    }
}

impl EventsWorker {
    /// Agent types of this runtime that receive events of `topic_type`.
    fn recipient_types(&self, topic_type: &str) -> Vec<String> {
        self.inner.registry.recipient_types(topic_type, now_ms())
    }
}

impl PartitionWorker for EventsWorker {
    fn revoked(&self, partitions: &[i32]) {
        self.inner
            .journal
            .forget_inputs(&self.inner.names.events(), partitions);
    }

    fn committed(&self, topic: &str, commits: &[(i32, i64)]) {
        // Events delivered locally journal their steps against the events record.
        let dropped = self.inner.journal.committed(topic, commits);
        super::journal::tombstone(&self.inner, dropped, &self.tokio);
    }

    fn assigned(&self, _partitions: &[i32]) {
        let _entered = self.tokio.enter();
        self.inner.handoff.events_assigned(&KafkaIo(&self.inner));
    }

    fn dispatch(&self, message: &BorrowedMessage<'_>, done: &DoneSender) -> Dispatched {
        let (p, o) = (message.partition(), message.offset());
        match classify::events_record(message, |t| self.recipient_types(t)) {
            EventsRecord::NotOurs => Dispatched::Done,
            EventsRecord::NotAnEvent => {
                // Only events belong here; other kinds are ignored rather than forwarded.
                tracing::warn!(
                    partition = p,
                    offset = o,
                    "non-event record on the events topic"
                );
                Dispatched::Done
            }
            EventsRecord::DeadLetter { original, reason } => {
                let inner = Arc::clone(&self.inner);
                let done = done.clone();
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
            EventsRecord::Deliver {
                original,
                delivery,
                key,
            } => {
                let owner = partition_for(&key, self.inner.hosted.partition_count());
                let event = Outgoing {
                    delivery,
                    key,
                    at: (p, o),
                    done: done.clone(),
                };
                let _entered = self.tokio.enter();
                local_delivery::offer(&self.inner, owner, event, original);
                Dispatched::Pending
            }
        }
    }
}

/// A runtime sees events published after it first joined, not the topic's history:
/// when its group has no committed offsets yet, commit the current end offsets.
/// (A group that already exists keeps its position.)
pub(crate) async fn start_at_end_if_new(
    kafka: &KafkaConfig,
    topic: &str,
    group: &str,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let consumer: BaseConsumer = kafka.consumer_config(group).create()?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        super::tailing::retry_blocking(timeout, |attempt| start_at_end(&consumer, &topic, attempt))
    })
    .await
    .map_err(|e| RuntimeError::Task(e.to_string()))?
}

fn start_at_end(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let committed = consumer.committed_offsets(partition_list(topic, &partitions), timeout)?;
        let mut to_commit = TopicPartitionList::new();
        for e in committed.elements() {
            if matches!(e.offset(), Offset::Invalid) {
                let (_, high) = consumer.fetch_watermarks(topic, e.partition(), timeout)?;
                to_commit.add_partition_offset(topic, e.partition(), Offset::Offset(high))?;
            }
        }
        if to_commit.count() > 0
            && let Err(e) = consumer.commit(&to_commit, CommitMode::Sync)
        {
            // Another replica is in the group already and will have committed.
            tracing::debug!(error = %e, "initial events offset commit refused");
        }
        Ok(())
    }
}
