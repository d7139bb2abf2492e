//! The journal of durable steps (`crate::durable`) in the state topic.
//!
//! A completed step of message `m` handled by agent `type/key` is one record in the
//! agent's state partition (so it moves with the agent, like its state), keyed
//! `type/key#step/<m>/<name>/<n>`, value `{"value": <result>, "input": {"topic",
//! "partition", "offset"}}`: the result, and the input record it belongs to. It is
//! read back with the agent states when an inbox partition is assigned
//! (`state_store`), and tombstoned once the offset commit of its input record passes
//! it: from then on that input is never handled again, so its steps are never
//! looked up again. Until then it may be replayed any number of times.
//!
//! The pure bookkeeping (what is journaled, what to tombstone when a commit lands)
//! is [`Journal`]; [`TurnJournal`] is one message's view, writing through the
//! producer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Inner;
use crate::durable::StepJournal;
use crate::error::RuntimeError;
use crate::ids::AgentId;

/// What separates the agent id from the step in a journal key.
const MARK: &str = "#step/";

/// The journal key of step `name` number `n` of `message_id` handled by `agent`.
pub(crate) fn journal_key(agent: &AgentId, message_id: &str, name: &str, n: u32) -> String {
    format!("{agent}{MARK}{message_id}/{name}/{n}")
}

/// Whether a state topic key is a journal entry rather than an agent's state.
pub(crate) fn is_journal_key(key: &str) -> bool {
    key.contains(MARK)
}

/// The input record a step belongs to: where it was consumed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct InputRef {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// A journal record's value.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    value: Value,
    input: InputRef,
}

/// Journal keys waiting for their input's commit: by input topic and partition, then
/// input offset; each with its state partition.
type Pending = HashMap<(String, i32), BTreeMap<i64, BTreeSet<(i32, String)>>>;

/// Journaled step results of this process's agents, and what to drop when.
#[derive(Default)]
pub(crate) struct Journal {
    /// Results by state partition, then journal key.
    entries: Mutex<HashMap<i32, HashMap<String, Value>>>,
    pending: Mutex<Pending>,
}

impl Journal {
    fn entries(&self) -> MutexGuard<'_, HashMap<i32, HashMap<String, Value>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expect_commit(&self, input: &InputRef, partition: i32, key: &str) {
        self.pending()
            .entry((input.topic.clone(), input.partition))
            .or_default()
            .entry(input.offset)
            .or_default()
            .insert((partition, key.to_owned()));
    }

    /// A journal record read back from state partition `partition`, in log order
    /// (`None`: a tombstone). An undecodable one is skipped: its step runs again.
    pub(crate) fn restore(&self, partition: i32, key: &str, value: Option<&[u8]>) {
        let Some(bytes) = value else {
            if let Some(m) = self.entries().get_mut(&partition) {
                m.remove(key);
            }
            return;
        };
        match serde_json::from_slice::<Entry>(bytes) {
            Ok(entry) => {
                // If its input was committed already, the next commit of that input
                // partition passes it and drops it.
                self.expect_commit(&entry.input, partition, key);
                self.entries()
                    .entry(partition)
                    .or_default()
                    .insert(key.to_owned(), entry.value);
            }
            Err(e) => tracing::warn!(key, error = %e, "skipping an undecodable journal entry"),
        }
    }

    fn get(&self, partition: i32, key: &str) -> Option<Value> {
        self.entries().get(&partition)?.get(key).cloned()
    }

    fn insert(&self, partition: i32, key: &str, value: Value) {
        self.entries()
            .entry(partition)
            .or_default()
            .insert(key.to_owned(), value);
    }

    /// Offsets of `topic` were committed (`(partition, position)`: everything before
    /// `position` is done): returns the journal entries to tombstone, by state
    /// partition, and forgets them.
    pub(crate) fn committed(&self, topic: &str, commits: &[(i32, i64)]) -> Vec<(i32, String)> {
        let mut dropped = Vec::new();
        {
            let mut pending = self.pending();
            for (p, pos) in commits {
                let Some(by_offset) = pending.get_mut(&(topic.to_owned(), *p)) else {
                    continue;
                };
                let later = by_offset.split_off(pos);
                let done = std::mem::replace(by_offset, later);
                dropped.extend(done.into_values().flatten());
            }
            pending.retain(|_, by_offset| !by_offset.is_empty());
        }
        if !dropped.is_empty() {
            let mut entries = self.entries();
            for (p, key) in &dropped {
                if let Some(m) = entries.get_mut(p) {
                    m.remove(key);
                }
            }
        }
        dropped
    }

    /// Whether committing `commits` of `topic` would let entries be dropped.
    #[cfg(test)]
    pub(crate) fn awaits(&self, topic: &str, commits: &[(i32, i64)]) -> bool {
        let pending = self.pending();
        commits.iter().any(|(p, pos)| {
            pending
                .get(&(topic.to_owned(), *p))
                .and_then(|by_offset| by_offset.keys().next())
                .is_some_and(|first| first < pos)
        })
    }

    /// State partitions revoked: their entries belong to the next owner now.
    pub(crate) fn drop_partitions(&self, partitions: &[i32]) {
        let mut entries = self.entries();
        for p in partitions {
            entries.remove(p);
        }
        drop(entries);
        let mut pending = self.pending();
        for by_offset in pending.values_mut() {
            for keys in by_offset.values_mut() {
                keys.retain(|(p, _)| !partitions.contains(p));
            }
            by_offset.retain(|_, keys| !keys.is_empty());
        }
        pending.retain(|_, by_offset| !by_offset.is_empty());
    }

    /// Partitions of input topic `topic` were revoked: their commits are no longer
    /// seen here, so what waited for them is forgotten (the entries stay in the topic
    /// until the next owner of their state partition drops them).
    pub(crate) fn forget_inputs(&self, topic: &str, partitions: &[i32]) {
        self.pending()
            .retain(|(t, p), _| t != topic || !partitions.contains(p));
    }

    /// Entries held in memory (for tests and metrics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().values().map(HashMap::len).sum()
    }
}

/// Writes tombstones for journal entries whose input was committed, in the
/// background (a lost tombstone leaves an entry nobody looks up; the next owner of
/// the partition drops it after its first commit there).
pub(crate) fn tombstone(
    inner: &Arc<Inner>,
    dropped: Vec<(i32, String)>,
    tokio: &tokio::runtime::Handle,
) {
    if dropped.is_empty() {
        return;
    }
    let inner2 = Arc::clone(inner);
    let task = async move {
        let topic = inner2.names.state(&inner2.config.runtime_name);
        for (p, key) in dropped {
            if let Err(e) = inner2
                .outputs
                .produce(&topic, Some(p), key.as_bytes(), None)
                .await
            {
                tracing::warn!(%topic, key, error = %e, "could not drop a journal entry");
            }
        }
    };
    inner.tasks.spawn_on(task, tokio);
}

/// The journal as one message's handler sees it.
pub(crate) struct TurnJournal {
    pub(crate) inner: Arc<Inner>,
    pub(crate) agent: AgentId,
    pub(crate) message_id: String,
    /// The agent's state partition.
    pub(crate) partition: i32,
    pub(crate) input: InputRef,
}

#[async_trait]
impl StepJournal for TurnJournal {
    fn lookup(&self, name: &str, n: u32) -> Option<Value> {
        let key = journal_key(&self.agent, &self.message_id, name, n);
        let value = self.inner.journal.get(self.partition, &key)?;
        // Redelivered by another path (inbox vs. local delivery): drop it with this input too.
        self.inner
            .journal
            .expect_commit(&self.input, self.partition, &key);
        Some(value)
    }

    async fn record(&self, name: &str, n: u32, value: &Value) -> Result<(), RuntimeError> {
        let key = journal_key(&self.agent, &self.message_id, name, n);
        let entry = Entry {
            value: value.clone(),
            input: self.input.clone(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| RuntimeError::Handler {
            agent: self.agent.to_string(),
            message: format!("journal entry of step {name}/{n}: {e}"),
        })?;
        let topic = self.inner.names.state(&self.inner.config.runtime_name);
        self.inner
            .outputs
            .produce(&topic, Some(self.partition), key.as_bytes(), Some(&bytes))
            .await?;
        self.inner
            .journal
            .insert(self.partition, &key, value.clone());
        self.inner
            .journal
            .expect_commit(&self.input, self.partition, &key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(offset: i64) -> InputRef {
        InputRef {
            topic: "p.rt.inbox".into(),
            partition: 0,
            offset,
        }
    }

    fn record(j: &Journal, key: &str, offset: i64) {
        let bytes = serde_json::to_vec(&Entry {
            value: json!(offset),
            input: input(offset),
        })
        .unwrap();
        j.restore(3, key, Some(&bytes));
    }

    #[test]
    fn keys_name_agent_message_step_and_number() {
        let a = AgentId::new("assistant", "alice").unwrap();
        let k = journal_key(&a, "m-1", "model", 2);
        assert_eq!(k, "assistant/alice#step/m-1/model/2");
        assert!(is_journal_key(&k));
        assert!(!is_journal_key("assistant/alice"));
    }

    #[test]
    fn entries_are_dropped_once_the_commit_passes_their_input() {
        let j = Journal::default();
        record(&j, "a/k#step/m5/s/0", 5);
        record(&j, "a/k#step/m5/s/1", 5);
        record(&j, "a/k#step/m7/s/0", 7);
        assert_eq!(j.get(3, "a/k#step/m5/s/1"), Some(json!(5)));
        assert!(j.committed("other.topic", &[(0, 100)]).is_empty());
        assert!(j.committed("p.rt.inbox", &[(1, 100)]).is_empty());
        assert!(
            j.committed("p.rt.inbox", &[(0, 5)]).is_empty(),
            "5 not committed yet"
        );
        assert!(!j.awaits("p.rt.inbox", &[(0, 5)]));
        assert!(j.awaits("p.rt.inbox", &[(0, 6)]));
        let mut dropped = j.committed("p.rt.inbox", &[(0, 6)]);
        dropped.sort();
        assert_eq!(
            dropped,
            [
                (3, "a/k#step/m5/s/0".to_owned()),
                (3, "a/k#step/m5/s/1".to_owned())
            ]
        );
        assert_eq!(j.len(), 1);
        assert_eq!(j.get(3, "a/k#step/m7/s/0"), Some(json!(7)));
        // A tombstone read back removes the entry.
        j.restore(3, "a/k#step/m7/s/0", None);
        assert_eq!(j.get(3, "a/k#step/m7/s/0"), None);
    }

    #[test]
    fn revoked_partitions_are_forgotten_without_tombstones() {
        let j = Journal::default();
        record(&j, "a/k#step/m5/s/0", 5);
        j.restore(3, "a/k#step/bad/s/0", Some(b"not json"));
        assert_eq!(j.len(), 1, "undecodable entries are skipped");
        j.forget_inputs("p.rt.inbox", &[1]);
        assert!(
            j.awaits("p.rt.inbox", &[(0, 100)]),
            "other partitions are kept"
        );
        j.forget_inputs("p.rt.inbox", &[0]);
        assert!(!j.awaits("p.rt.inbox", &[(0, 100)]));
        j.drop_partitions(&[3]);
        assert_eq!(j.len(), 0);
        assert!(j.committed("p.rt.inbox", &[(0, 100)]).is_empty());
    }
}
