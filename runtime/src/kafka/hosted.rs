//! The agents this process hosts: their instances, mailboxes (one message at a time
//! per agent, bounded concurrency) and the inbox partitions this replica owns, which
//! decide where each agent lives.
//!
//! A replica joins its consumer groups in `start`, and a program may register its
//! agent types after that (`start_with`, then `register`, as AutoGen programs do): its
//! first inbox records can name a type of this runtime that is not registered here
//! yet. Their turns wait for the registration (`turn`); this module tells them when a
//! type was registered or a partition is leaving, and which types waited in vain.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tokio::sync::watch;

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
    /// Bumped when a type is registered or partitions are revoked: wakes the turns
    /// that wait for a type.
    changes: watch::Sender<u64>,
    /// Types a turn waited for in vain (until they are registered): their messages no
    /// longer wait.
    never_registered: Mutex<HashSet<String>>,
}

impl Default for Hosted {
    fn default() -> Self {
        Self {
            agents: Mutex::default(),
            mailboxes: OnceLock::new(),
            owned: Mutex::default(),
            inbox_partitions: AtomicI32::new(1),
            changes: watch::Sender::new(0),
            never_registered: Mutex::default(),
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

    /// Whether inbox partition `partition` is owned (and not being revoked).
    pub(crate) fn owns(&self, partition: i32) -> bool {
        self.owned_set().contains(&partition)
    }

    /// `partitions` are being revoked: turns waiting for a type stop waiting for them.
    pub(crate) fn revoking(&self, partitions: &[i32]) {
        self.owned_set().retain(|p| !partitions.contains(p));
        self.changes.send_modify(|n| *n += 1);
    }

    /// `partitions` were revoked: their agents are dropped (their state is saved).
    pub(crate) fn revoked(&self, partitions: &[i32]) {
        self.revoking(partitions);
        let mut agents = self.agents();
        for p in partitions {
            agents.drop_partition(*p);
        }
    }

    /// `agent_type` was registered here: the turns waiting for it go on.
    pub(crate) fn type_registered(&self, agent_type: &str) {
        self.never_registered().remove(agent_type);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Whether a message for `agent_type` (of this runtime, not registered here) should
    /// wait for its registration: not once a turn waited for it in vain.
    pub(crate) fn may_wait_for(&self, agent_type: &str) -> bool {
        !self.never_registered().contains(agent_type)
    }

    /// A turn waited for `agent_type` in vain: later messages for it fail at once.
    pub(crate) fn gave_up_on(&self, agent_type: &str) {
        self.never_registered().insert(agent_type.to_owned());
    }

    /// Wakes when a type is registered or partitions are revoked (see
    /// [`Hosted::type_registered`], [`Hosted::revoking`]).
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn never_registered(&self) -> MutexGuard<'_, HashSet<String>> {
        self.never_registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn owned_set(&self) -> MutexGuard<'_, BTreeSet<i32>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}
