//! Agent state in the runtime's compacted state topic, co-partitioned with the inbox:
//! the state of inbox partition p's agents lives in state partition p. Restored when
//! a partition is assigned, before it is dispatched; written after a handler that
//! changed it (unchanged state is not written again). Journal entries of durable
//! steps share the topic (`journal`); they are handed to the journal on restore.
//!
//! A partition whose state cannot be read (the read keeps failing past its bound: the
//! broker refuses it, the topic is gone) is *awaiting* its state: the inbox loop keeps
//! it paused, so no message is handled against empty state (which would also write
//! that empty state over the saved one), and the read is retried in the background
//! until it succeeds or the partition is revoked. Counted in
//! `switchboard_state_restore_failures_total`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use super::{Inner, journal};
use crate::agent::{Agent, SharedAgent};
use crate::error::RuntimeError;
use crate::ids::AgentId;

/// The first wait before a failed state read is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two tries of a failed state read.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Saved state of agents not active yet, by inbox partition (restored on assign).
#[derive(Default)]
pub(crate) struct StateStore {
    restored: Mutex<HashMap<i32, HashMap<AgentId, Value>>>,
    /// Assigned partitions whose state could not be read yet, by the number of the
    /// failed restore that retries them (a revocation and a new assignment start
    /// another, and the old one's result must not count for the new assignment).
    awaiting: Mutex<HashMap<i32, u64>>,
    failed_restores: AtomicU64,
}

impl StateStore {
    fn restored(&self) -> MutexGuard<'_, HashMap<i32, HashMap<AgentId, Value>>> {
        self.restored.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn awaiting(&self) -> MutexGuard<'_, HashMap<i32, u64>> {
        self.awaiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the state of `partitions` (blocking: called on the inbox consumer thread
    /// during assignment). When that fails, they await their state (see the module
    /// doc) and a background task reads again until it succeeds.
    pub(crate) fn restore_partitions(&self, inner: &Arc<Inner>, partitions: &[i32]) {
        let topic = inner.names.state(&inner.config.runtime_name);
        match read_state(inner, &topic, partitions) {
            Ok(restored) => self.restored().extend(restored),
            Err(e) => {
                inner
                    .metrics
                    .state_restore_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(%topic, ?partitions, error = %e, "restoring agent state failed; the partitions' messages wait (not handled) while the read is retried");
                let n = self.failed_restores.fetch_add(1, Ordering::Relaxed);
                self.awaiting().extend(partitions.iter().map(|p| (*p, n)));
                retry_restore(inner, partitions.to_vec(), n);
            }
        }
    }

    /// Those of `partitions` whose state is not restored yet.
    pub(crate) fn awaiting_of(&self, partitions: &[i32]) -> Vec<i32> {
        let awaiting = self.awaiting();
        partitions
            .iter()
            .copied()
            .filter(|p| awaiting.contains_key(p))
            .collect()
    }

    /// How many assigned partitions await their state.
    pub(crate) fn awaiting_count(&self) -> usize {
        self.awaiting().len()
    }

    /// Takes the state read by retry `n`, for the partitions that still wait for it.
    fn restored_by_retry(&self, n: u64, restored: HashMap<i32, HashMap<AgentId, Value>>) {
        // Lock order: awaiting, then restored (as in `drop_partitions`), so a
        // revocation in between cannot leave state behind for a partition not owned.
        let mut awaiting = self.awaiting();
        let mut into = self.restored();
        for (p, states) in restored {
            if awaiting.get(&p) == Some(&n) {
                awaiting.remove(&p);
                into.insert(p, states);
            }
        }
    }

    /// Forgets what was restored (or was still awaited) for revoked `partitions`.
    pub(crate) fn drop_partitions(&self, partitions: &[i32]) {
        let mut awaiting = self.awaiting();
        let mut restored = self.restored();
        for p in partitions {
            awaiting.remove(p);
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

/// Reads the state of `partitions` again (restore number `n`) until it succeeds, they
/// are revoked, or the runtime stops; waits [`RETRY_FIRST`] doubling to [`RETRY_MAX`]
/// in between. The inbox loop resumes them once they no longer await their state.
fn retry_restore(inner: &Arc<Inner>, partitions: Vec<i32>, n: u64) {
    let weak = Arc::downgrade(inner);
    let shutdown = inner.shutdown.clone();
    inner.tasks.spawn(async move {
        let mut wait = RETRY_FIRST;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY_MAX);
            let Some(inner) = weak.upgrade() else { return };
            let still: Vec<i32> = {
                let awaiting = inner.state.awaiting();
                partitions
                    .iter()
                    .copied()
                    .filter(|p| awaiting.get(p) == Some(&n))
                    .collect()
            };
            if still.is_empty() {
                return;
            }
            let reader = Arc::clone(&inner);
            let read = tokio::task::spawn_blocking(move || {
                let topic = reader.names.state(&reader.config.runtime_name);
                read_state(&reader, &topic, &still)
            })
            .await;
            match read {
                Ok(Ok(restored)) => {
                    tracing::info!(partitions = ?restored.keys().collect::<Vec<_>>(), "agent state restored after failed reads; the partitions are handled again");
                    inner.state.restored_by_retry(n, restored);
                    return;
                }
                Ok(Err(e)) => {
                    inner
                        .metrics
                        .state_restore_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(?partitions, error = %e, retry_in = ?wait, "restoring agent state failed again");
                }
                Err(e) => tracing::warn!(error = %e, "the state read task failed"),
            }
        }
    });
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
        let (low, high) = super::tailing::retry_blocking(timeout, |attempt| {
            consumer
                .fetch_watermarks(topic, *p, attempt)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_retry_restores_only_partitions_still_awaiting_it() {
        let store = StateStore::default();
        let id: AgentId = "counter/k".parse().unwrap();
        store.awaiting().extend([(0, 1), (1, 1), (2, 1)]);
        // Partition 1 was revoked and assigned again (a newer restore waits for it);
        // partition 2 was revoked for good.
        store.drop_partitions(&[1, 2]);
        store.awaiting().insert(1, 2);
        let read = HashMap::from([
            (
                0,
                HashMap::from([(id.clone(), serde_json::json!({"count": 3}))]),
            ),
            (1, HashMap::new()),
            (2, HashMap::new()),
        ]);
        store.restored_by_retry(1, read);
        assert_eq!(store.awaiting_of(&[0, 1, 2]), vec![1]);
        assert_eq!(store.awaiting_count(), 1);
        let restored = store.restored();
        assert_eq!(restored[&0][&id], serde_json::json!({"count": 3}));
        assert!(!restored.contains_key(&1) && !restored.contains_key(&2));
    }
}
