//! Agent state in the runtime's compacted state topic, co-partitioned with the inbox:
//! the state of inbox partition p's agents lives in state partition p. Restored when
//! a partition is assigned, before it is dispatched; written after a handler that
//! changed it (unchanged state is not written again). Journal entries of durable
//! steps share the topic (`journal`); they are handed to the journal on restore.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use super::{Inner, journal};
use crate::agent::{Agent, SharedAgent};
use crate::error::RuntimeError;
use crate::ids::AgentId;

/// Saved state of agents not active yet, by inbox partition (restored on assign).
#[derive(Default)]
pub(crate) struct StateStore {
    restored: Mutex<HashMap<i32, HashMap<AgentId, Value>>>,
}

impl StateStore {
    fn restored(&self) -> MutexGuard<'_, HashMap<i32, HashMap<AgentId, Value>>> {
        self.restored.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the state of `partitions` (blocking: called on the inbox consumer thread
    /// during assignment). A failure is logged and the agents start empty.
    pub(crate) fn restore_partitions(&self, inner: &Inner, partitions: &[i32]) {
        let topic = inner.names.state(&inner.config.runtime_name);
        match read_state(inner, &topic, partitions) {
            Ok(restored) => self.restored().extend(restored),
            Err(e) => {
                tracing::error!(%topic, error = %e, "restoring agent state failed; agents start empty")
            }
        }
    }

    /// Forgets what was restored for revoked `partitions`.
    pub(crate) fn drop_partitions(&self, partitions: &[i32]) {
        let mut restored = self.restored();
        for p in partitions {
            restored.remove(p);
        }
    }

    /// Loads the restored state of a just-activated agent, if any was saved.
    pub(crate) async fn restore_into(&self, inner: &Inner, id: &AgentId, agent: &SharedAgent) {
        let partition = inner.hosted.partition_of(id);
        let state = self
            .restored()
            .get_mut(&partition)
            .and_then(|m| m.remove(id));
        let Some(state) = state else { return };
        let hash = state_hash(state.to_string().as_bytes());
        match agent.lock().await.load_state(state).await {
            Ok(()) => inner.hosted.agents().set_state_hash(id, hash),
            Err(e) => {
                tracing::error!(agent = %id, error = %e, "load_state failed; the agent starts empty")
            }
        }
    }

    /// Writes the agent's state to the state topic if it changed since last written.
    pub(crate) async fn persist(
        &self,
        inner: &Inner,
        id: &AgentId,
        partition: Option<i32>,
        agent: &mut dyn Agent,
    ) -> Result<(), RuntimeError> {
        let state = agent
            .save_state()
            .await
            .map_err(|e| RuntimeError::Handler {
                agent: id.to_string(),
                message: format!("save_state: {e}"),
            })?;
        let Some(state) = state else { return Ok(()) };
        let bytes = state.to_string().into_bytes();
        let hash = state_hash(&bytes);
        if inner.hosted.agents().state_hash(id) == Some(hash) {
            return Ok(());
        }
        let partition = partition.unwrap_or_else(|| inner.hosted.partition_of(id));
        let topic = inner.names.state(&inner.config.runtime_name);
        inner
            .outputs
            .produce(
                &topic,
                Some(partition),
                id.to_string().as_bytes(),
                Some(&bytes),
            )
            .await?;
        inner.hosted.agents().set_state_hash(id, hash);
        Ok(())
    }
}

/// Reads `partitions` of the state topic to their end: the latest state per agent.
fn read_state(
    inner: &Inner,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, HashMap<AgentId, Value>>, RuntimeError> {
    let mut result: HashMap<i32, HashMap<AgentId, Value>> =
        partitions.iter().map(|p| (*p, HashMap::new())).collect();
    if partitions.is_empty() {
        return Ok(result);
    }
    let group = inner.names.restore_group(&inner.config.instance_id);
    let consumer: BaseConsumer = inner.config.kafka.consumer_config(&group).create()?;
    let timeout = Duration::from_secs(10);
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        // Retried: right after the topic is created (or a leader moves) the broker
        // answers "not leader" for a moment, and giving up here would start the
        // partition's agents empty and overwrite their saved state.
        let (low, high) = super::tailing::retry_blocking(timeout, || {
            consumer
                .fetch_watermarks(topic, *p, timeout)
                .map_err(|e| RuntimeError::kafka(format!("reading offsets of {topic}"), e))
        })?;
        if high > low {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
    }
    if ends.is_empty() {
        return Ok(result);
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + inner.config.drain_timeout;
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(RuntimeError::Unavailable(format!(
                "state topic {topic} not read to its end in time"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.map_err(|e| RuntimeError::kafka(format!("reading {topic}"), e))?;
        let p = message.partition();
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        if let Some(key) = key.filter(|k| journal::is_journal_key(k)) {
            inner.journal.restore(p, key, message.payload());
            if ends.get(&p).is_some_and(|end| message.offset() + 1 >= *end) {
                ends.remove(&p);
            }
            continue;
        }
        let id = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.parse::<AgentId>().ok());
        if let (Some(id), Some(states)) = (id, result.get_mut(&p)) {
            match message.payload().map(serde_json::from_slice::<Value>) {
                Some(Ok(v)) => {
                    states.insert(id, v);
                }
                None => {
                    states.remove(&id);
                }
                Some(Err(e)) => {
                    tracing::warn!(agent = %id, error = %e, "skipping undecodable state snapshot")
                }
            }
        }
        if ends.get(&p).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&p);
        }
    }
    Ok(result)
}

fn state_hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}
