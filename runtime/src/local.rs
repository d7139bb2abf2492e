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
pub(crate) struct Mailboxes<W: Send + 'static> {
    queues: Arc<Mutex<HashMap<AgentId, VecDeque<W>>>>,
    permits: Arc<Semaphore>,
    run: Arc<dyn Fn(AgentId, W) -> BoxFuture<'static, ()> + Send + Sync>,
}

impl<W: Send + 'static> Clone for Mailboxes<W> {
    fn clone(&self) -> Self {
        Self {
            queues: Arc::clone(&self.queues),
            permits: Arc::clone(&self.permits),
            run: Arc::clone(&self.run),
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
            queues: Arc::default(),
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
            run: Arc::new(run),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AgentId, VecDeque<W>>> {
        // A poisoned lock means a panic while pushing or popping a VecDeque, which
        // leaves the map consistent; carry on rather than wedge every agent.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` for `id`; starts a drain task when the agent was idle.
    pub(crate) fn push(&self, id: AgentId, item: W) {
        let mut queues = self.lock();
        match queues.get_mut(&id) {
            // A queue exists while its drain task runs: it will take the item.
            Some(q) => q.push_back(item),
            None => {
                queues.insert(id.clone(), VecDeque::new());
                drop(queues);
                let this = self.clone();
                tokio::spawn(async move { this.drain(id, item).await });
            }
        }
    }

    async fn drain(self, id: AgentId, first: W) {
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
