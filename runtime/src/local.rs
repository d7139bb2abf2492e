//! Agents hosted by this process: registration rules, activation, and per-agent
//! mailboxes that run one message at a time per agent. Shared by both runtimes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use crate::agent::{Agent, AgentFactory, SharedAgent};
use crate::error::RuntimeError;
use crate::ids::AgentId;

/// How an agent type is registered in this process.
#[derive(Clone)]
enum TypeEntry {
    Factory(AgentFactory),
    Instances { class: &'static str },
}

impl TypeEntry {
    fn describe(&self) -> String {
        match self {
            Self::Factory(f) => format!("a factory of {}", f.class()),
            Self::Instances { class } => format!("instances of {class}"),
        }
    }
}

/// One active agent.
struct Slot {
    agent: SharedAgent,
    class: &'static str,
    /// The inbox partition that owns it (Kafka runtime), if known.
    partition: Option<i32>,
    /// Hash of the state last persisted, to skip writing unchanged state.
    state_hash: Option<u64>,
}

/// The agent types and agents of this process.
#[derive(Default)]
pub(crate) struct LocalAgents {
    types: HashMap<String, TypeEntry>,
    agents: HashMap<AgentId, Slot>,
}

impl LocalAgents {
    /// Whether `agent_type` is registered here.
    pub(crate) fn hosts(&self, agent_type: &str) -> bool {
        self.types.contains_key(agent_type)
    }

    /// The registered types.
    pub(crate) fn types(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }

    /// Checks that a factory may be registered for `agent_type`.
    pub(crate) fn check_factory(
        &self,
        agent_type: &str,
        factory: &AgentFactory,
    ) -> Result<(), RuntimeError> {
        match self.types.get(agent_type) {
            None => Ok(()),
            Some(TypeEntry::Factory(_)) => {
                Err(RuntimeError::DuplicateAgentType(agent_type.to_owned()))
            }
            Some(existing) => Err(RuntimeError::AgentTypeConflict {
                agent_type: agent_type.to_owned(),
                existing: existing.describe(),
                attempted: TypeEntry::Factory(factory.clone()).describe(),
            }),
        }
    }

    /// Registers a factory (after [`LocalAgents::check_factory`]).
    pub(crate) fn add_factory(&mut self, agent_type: &str, factory: AgentFactory) {
        self.types
            .insert(agent_type.to_owned(), TypeEntry::Factory(factory));
    }

    /// Checks that an instance of `class` may be registered as `id`; returns whether
    /// its type is new to this process (and so must be claimed).
    pub(crate) fn check_instance(
        &self,
        id: &AgentId,
        class: &'static str,
    ) -> Result<bool, RuntimeError> {
        if self.agents.contains_key(id) {
            return Err(RuntimeError::DuplicateAgentInstance(id.clone()));
        }
        match self.types.get(id.agent_type()) {
            None => Ok(true),
            Some(TypeEntry::Instances { class: c }) if *c == class => Ok(false),
            Some(existing) => Err(RuntimeError::AgentTypeConflict {
                agent_type: id.agent_type().to_owned(),
                existing: existing.describe(),
                attempted: TypeEntry::Instances { class }.describe(),
            }),
        }
    }

    /// Registers an instance (after [`LocalAgents::check_instance`]).
    pub(crate) fn add_instance(&mut self, id: AgentId, agent: Box<dyn Agent>, class: &'static str) {
        self.types
            .insert(id.agent_type().to_owned(), TypeEntry::Instances { class });
        let agent = Arc::new(tokio::sync::Mutex::new(agent));
        self.agents.insert(
            id,
            Slot {
                agent,
                class,
                partition: None,
                state_hash: None,
            },
        );
    }

    /// Forgets a type (a failed claim) and its instances.
    pub(crate) fn remove_type(&mut self, agent_type: &str) {
        self.types.remove(agent_type);
        self.agents.retain(|id, _| id.agent_type() != agent_type);
    }

    /// The agent `id`, made by its factory if not active yet. The flag is true when it
    /// was just made (so its saved state must be loaded before its first message).
    pub(crate) fn activate(
        &mut self,
        id: &AgentId,
        partition: Option<i32>,
    ) -> Result<(SharedAgent, &'static str, bool), RuntimeError> {
        if let Some(slot) = self.agents.get_mut(id) {
            if slot.partition.is_none() {
                slot.partition = partition;
            }
            return Ok((Arc::clone(&slot.agent), slot.class, false));
        }
        match self.types.get(id.agent_type()) {
            Some(TypeEntry::Factory(factory)) => {
                let agent = Arc::new(tokio::sync::Mutex::new(factory.make(id)));
                let class = factory.class();
                self.agents.insert(
                    id.clone(),
                    Slot {
                        agent: Arc::clone(&agent),
                        class,
                        partition,
                        state_hash: None,
                    },
                );
                Ok((agent, class, true))
            }
            // Registered instances live where they were registered; another key of an
            // instance-registered type does not exist.
            Some(TypeEntry::Instances { .. }) | None => Err(RuntimeError::NotLocal(id.clone())),
        }
    }

    /// The class of an active agent, or of the factory that would make it.
    pub(crate) fn class_of(&self, id: &AgentId) -> Option<&'static str> {
        self.agents
            .get(id)
            .map(|s| s.class)
            .or_else(|| match self.types.get(id.agent_type())? {
                TypeEntry::Factory(f) => Some(f.class()),
                TypeEntry::Instances { .. } => None,
            })
    }

    /// The inbox partition owning active agent `id`, if known.
    pub(crate) fn partition_of(&self, id: &AgentId) -> Option<i32> {
        self.agents.get(id).and_then(|s| s.partition)
    }

    /// Hash of the state last persisted for `id`.
    pub(crate) fn state_hash(&self, id: &AgentId) -> Option<u64> {
        self.agents.get(id).and_then(|s| s.state_hash)
    }

    /// Records the hash of the state just persisted (or restored) for `id`.
    pub(crate) fn set_state_hash(&mut self, id: &AgentId, hash: u64) {
        if let Some(s) = self.agents.get_mut(id) {
            s.state_hash = Some(hash);
        }
    }

    /// Ids of active agents.
    pub(crate) fn active(&self) -> Vec<AgentId> {
        self.agents.keys().cloned().collect()
    }

    /// Number of active agents.
    pub(crate) fn active_count(&self) -> usize {
        self.agents.len()
    }

    /// Drops factory-made agents owned by `partition` (it was revoked); registered
    /// instances stay.
    pub(crate) fn drop_partition(&mut self, partition: i32) {
        let types = &self.types;
        self.agents.retain(|id, slot| {
            slot.partition != Some(partition)
                || matches!(
                    types.get(id.agent_type()),
                    Some(TypeEntry::Instances { .. })
                )
        });
    }
}

/// Runs work for agents: one item at a time per agent, in arrival order; different
/// agents concurrently, at most `permits` at once. Idle agents cost no task.
///
/// Work pushed from a Kafka consumer thread spawns its agent's task from there (the
/// thread has entered the tokio runtime): one wake of a worker, the least an idle
/// runtime needs, and the handler starts on its first poll. A starter task in between
/// (tried before) was meant to batch those wakes under load; it put a second task hop
/// on every message's way, and neither its gain nor the hop's cost showed in the
/// benchmarks (docs/tuning.md), so the simpler path stays.
pub(crate) struct Mailboxes<W: Send + 'static> {
    shared: Arc<Shared<W>>,
}

struct Shared<W> {
    queues: Mutex<HashMap<AgentId, VecDeque<W>>>,
    permits: Semaphore,
    run: Box<dyn Fn(AgentId, W) -> BoxFuture<'static, ()> + Send + Sync>,
}

impl<W: Send + 'static> Clone for Mailboxes<W> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<W: Send + 'static> Mailboxes<W> {
    /// Mailboxes running `run` for each item, at most `max_concurrency` at once.
    pub(crate) fn new(
        max_concurrency: usize,
        run: impl Fn(AgentId, W) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                queues: Mutex::default(),
                permits: Semaphore::new(max_concurrency.max(1)),
                run: Box::new(run),
            }),
        }
    }

    /// Queues `item` for `id`; starts a drain task when the agent was idle. Call from
    /// within the tokio runtime (a task, or a thread that entered it).
    pub(crate) fn push(&self, id: AgentId, item: W) {
        let mut queues = self.shared.lock();
        match queues.get_mut(&id) {
            // A queue exists while its drain task runs: it will take the item.
            Some(q) => q.push_back(item),
            None => {
                // Inserted before the task exists: the next push for `id` queues
                // behind this item, whichever thread it comes from.
                queues.insert(id.clone(), VecDeque::new());
                drop(queues);
                tokio::spawn(Arc::clone(&self.shared).drain(id, item));
            }
        }
    }
}

impl<W: Send + 'static> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, HashMap<AgentId, VecDeque<W>>> {
        // A poisoned lock means a panic while pushing or popping a VecDeque, which
        // leaves the map consistent; carry on rather than wedge every agent.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn drain(self: Arc<Self>, id: AgentId, first: W) {
        let mut next = Some(first);
        while let Some(item) = next {
            // The semaphore is never closed, so acquire cannot fail.
            let permit = self.permits.acquire().await.ok();
            (self.run)(id.clone(), item).await;
            drop(permit);
            let mut queues = self.lock();
            next = queues.get_mut(&id).and_then(VecDeque::pop_front);
            if next.is_none() {
                queues.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Records `(agent key, item)` in handling order; each handler yields first, so
    /// that overtaking would show.
    fn recorder(log: Arc<Mutex<Vec<(String, u32)>>>) -> Mailboxes<u32> {
        Mailboxes::new(4, move |id, n| {
            let log = Arc::clone(&log);
            Box::pin(async move {
                tokio::task::yield_now().await;
                log.lock().unwrap().push((id.key().to_owned(), n));
            })
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushes_from_threads_and_tasks_keep_per_agent_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let boxes = recorder(Arc::clone(&log));
        let ids: Vec<AgentId> = (0..8)
            .map(|k| AgentId::new("t", format!("k{k}")).unwrap())
            .collect();
        // A consumer thread (outside any task) and a task push to the same agents.
        let handle = tokio::runtime::Handle::current();
        let (b, i) = (boxes.clone(), ids.clone());
        let thread = std::thread::spawn(move || {
            let _entered = handle.enter();
            for n in 0..500 {
                b.push(i[n as usize % 8].clone(), n);
            }
        });
        thread.join().unwrap();
        let (b, i) = (boxes.clone(), ids.clone());
        tokio::spawn(async move {
            for n in 500..1000 {
                b.push(i[n as usize % 8].clone(), n);
            }
        })
        .await
        .unwrap();
        for _ in 0..500 {
            if log.lock().unwrap().len() == 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1000, "every item handled");
        for id in &ids {
            let got: Vec<u32> = log
                .iter()
                .filter(|(k, _)| k == id.key())
                .map(|(_, n)| *n)
                .collect();
            assert!(got.is_sorted(), "{id}: {got:?}");
            assert_eq!(got.len(), 125);
        }
    }
}
