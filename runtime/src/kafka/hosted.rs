//! The agents this process hosts: their instances, mailboxes (one message at a time
//! per agent, bounded concurrency) and the inbox partitions this replica owns, which
//! decide where each agent lives.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::metrics::Metrics;
use super::turn::Work;
use crate::ids::AgentId;
use crate::local::{LocalAgents, Mailboxes};
use crate::protocol::partitioner::partition_for;

/// Agents, mailboxes and owned partitions of this process.
pub(crate) struct Hosted {
    agents: Mutex<LocalAgents>,
    mailboxes: OnceLock<Mailboxes<Work>>,
    /// Inbox partitions this replica owns now.
    owned: Mutex<BTreeSet<i32>>,
    /// Partition count of this runtime's inbox (read from Kafka at start).
    inbox_partitions: AtomicI32,
}

impl Default for Hosted {
    fn default() -> Self {
        Self {
            agents: Mutex::default(),
            mailboxes: OnceLock::new(),
            owned: Mutex::default(),
            inbox_partitions: AtomicI32::new(1),
        }
    }
}

impl Hosted {
    /// Sets the mailboxes once, at build time (they run turns, which need the runtime).
    pub(crate) fn set_mailboxes(&self, mailboxes: Mailboxes<Work>) {
        let _ = self.mailboxes.set(mailboxes);
    }

    /// The registered types and active instances.
    pub(crate) fn agents(&self) -> MutexGuard<'_, LocalAgents> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `work` in `recipient`'s mailbox, counted as in flight until its turn ends.
    pub(crate) fn push(&self, metrics: &Metrics, recipient: AgentId, work: Work) {
        if let Some(m) = self.mailboxes.get() {
            metrics.in_flight.fetch_add(1, Ordering::Relaxed);
            m.push(recipient, work);
        }
    }

    /// Records the inbox partition count read from Kafka.
    pub(crate) fn set_partition_count(&self, partitions: i32) {
        self.inbox_partitions.store(partitions, Ordering::SeqCst);
    }

    /// The inbox partition count.
    pub(crate) fn partition_count(&self) -> i32 {
        self.inbox_partitions.load(Ordering::SeqCst)
    }

    /// The inbox partition that owns agent `id`: where it was activated, else where
    /// its key maps to.
    pub(crate) fn partition_of(&self, id: &AgentId) -> i32 {
        self.agents()
            .partition_of(id)
            .unwrap_or_else(|| partition_for(id.key().as_bytes(), self.partition_count()))
    }

    /// Inbox partitions owned now.
    pub(crate) fn owned(&self) -> Vec<i32> {
        self.owned_set().iter().copied().collect()
    }

    /// `partitions` were assigned to this replica.
    pub(crate) fn assigned(&self, partitions: &[i32]) {
        self.owned_set().extend(partitions);
    }

    /// `partitions` were revoked: their agents are dropped (their state is saved).
    pub(crate) fn revoked(&self, partitions: &[i32]) {
        self.owned_set().retain(|p| !partitions.contains(p));
        let mut agents = self.agents();
        for p in partitions {
            agents.drop_partition(*p);
        }
    }

    fn owned_set(&self) -> MutexGuard<'_, BTreeSet<i32>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}
