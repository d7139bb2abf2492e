//! An in-process runtime with the same API as the Kafka runtime, for unit-testing
//! agents without a broker. Same semantics: one message at a time per agent, RPC
//! timeouts, subscriptions; no persistence beyond the process.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentErrorKind, AgentFactory, SharedAgent};
use crate::api::{AgentMetadata, AgentRuntime, SendOptions};
use crate::context::{Delivery, MessageContext, OutgoingEvent, OutgoingRpc, Transport};
use crate::error::RuntimeError;
use crate::ids::{AgentId, TopicId};
use crate::local::{LocalAgents, Mailboxes};
use crate::message::Payload;
use crate::subscription::Subscription;

/// Name reported as the hosting runtime of in-memory agents.
const RUNTIME_NAME: &str = "in-memory";

type Reply = oneshot::Sender<Result<Option<Payload>, RuntimeError>>;

struct Work {
    payload: Payload,
    delivery: Delivery,
    reply: Option<Reply>,
}

struct Inner {
    agents: Mutex<LocalAgents>,
    subscriptions: Mutex<Vec<Subscription>>,
    mailboxes: std::sync::OnceLock<Mailboxes<Work>>,
    default_timeout: Duration,
    in_flight: AtomicUsize,
    idle: Notify,
    failed_events: AtomicUsize,
    stopped: AtomicBool,
    shutdown: CancellationToken,
}

/// An in-process agent runtime.
#[derive(Clone)]
pub struct InMemoryRuntime {
    inner: Arc<Inner>,
}

impl Default for InMemoryRuntime {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl InMemoryRuntime {
    /// A runtime whose RPCs time out after `default_timeout` unless told otherwise.
    pub fn new(default_timeout: Duration) -> Self {
        let inner = Arc::new(Inner {
            agents: Mutex::default(),
            subscriptions: Mutex::default(),
            mailboxes: std::sync::OnceLock::new(),
            default_timeout,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            failed_events: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&inner);
        let mailboxes = Mailboxes::new(256, move |id, work: Work| {
            let weak = weak.clone();
            Box::pin(async move {
                if let Some(inner) = weak.upgrade() {
                    Inner::run(&inner, id, work).await;
                }
            })
        });
        // Set once, right here, before any clone of `inner` escapes.
        let _ = inner.mailboxes.set(mailboxes);
        Self { inner }
    }

    /// Waits until no message is queued or being handled (published events included).
    pub async fn run_until_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Events whose handler failed (the Kafka runtime dead-letters these).
    pub fn failed_events(&self) -> usize {
        self.inner.failed_events.load(Ordering::SeqCst)
    }
}

impl Inner {
    fn agents(&self) -> MutexGuard<'_, LocalAgents> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscriptions(&self) -> MutexGuard<'_, Vec<Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, recipient: AgentId, work: Work) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Some(m) = self.mailboxes.get() {
            m.push(recipient, work);
        }
    }

    async fn run(self: &Arc<Self>, id: AgentId, work: Work) {
        let Work {
            payload,
            delivery,
            reply,
        } = work;
        let result = self.handle(&id, payload, delivery).await;
        match reply {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::warn!(agent = %id, error = %e, "event handler failed");
                    self.failed_events.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn handle(
        self: &Arc<Self>,
        id: &AgentId,
        payload: Payload,
        delivery: Delivery,
    ) -> Result<Option<Payload>, RuntimeError> {
        let activated = self.agents().activate(id, None);
        let (agent, _, _) = activated?;
        let transport: Arc<dyn Transport> = Arc::clone(self) as Arc<dyn Transport>;
        let ctx = MessageContext::new(delivery, self.shutdown.child_token(), transport);
        let mut agent = agent.lock().await;
        agent
            .on_message(payload, &ctx)
            .await
            .map_err(|e| match e.kind() {
                AgentErrorKind::UnknownMessageType => RuntimeError::UnknownMessageType {
                    agent: id.to_string(),
                    message_type: e.message().to_owned(),
                },
                _ => RuntimeError::Handler {
                    agent: id.to_string(),
                    message: e.message().to_owned(),
                },
            })
    }
}

#[async_trait]
impl Transport for Inner {
    async fn send(&self, rpc: OutgoingRpc) -> Result<Option<Payload>, RuntimeError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(RuntimeError::Stopped);
        }
        if !self.agents().hosts(rpc.recipient.agent_type()) {
            return Err(RuntimeError::UnknownAgentType(
                rpc.recipient.agent_type().to_owned(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let delivery = Delivery {
            recipient: rpc.recipient.clone(),
            sender: rpc.sender,
            topic: None,
            is_rpc: true,
            message_id: uuid::Uuid::new_v4().to_string(),
            trace: rpc.trace,
        };
        self.enqueue(
            rpc.recipient.clone(),
            Work {
                payload: rpc.payload,
                delivery,
                reply: Some(tx),
            },
        );
        let timeout = rpc.timeout.unwrap_or(self.default_timeout);
        let cancel = rpc.cancellation.unwrap_or_default();
        tokio::select! {
            r = rx => r.unwrap_or(Err(RuntimeError::Stopped)),
            () = tokio::time::sleep(timeout) => Err(RuntimeError::Timeout { agent: rpc.recipient, after: timeout }),
            () = cancel.cancelled() => Err(RuntimeError::Cancelled(rpc.recipient)),
        }
    }

    async fn publish(&self, event: OutgoingEvent) -> Result<(), RuntimeError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(RuntimeError::Stopped);
        }
        let recipients: Vec<AgentId> = {
            let subs = self.subscriptions();
            let mut r: Vec<AgentId> = subs
                .iter()
                .filter(|s| s.matches(event.topic.topic_type()))
                .map(|s| s.recipient(&event.topic))
                .collect::<Result<_, _>>()?;
            r.sort();
            r.dedup();
            r
        };
        let message_id = uuid::Uuid::new_v4().to_string();
        for recipient in recipients {
            let delivery = Delivery {
                recipient: recipient.clone(),
                sender: event.sender.clone(),
                topic: Some(event.topic.clone()),
                is_rpc: false,
                message_id: message_id.clone(),
                trace: event.trace.clone(),
            };
            self.enqueue(
                recipient,
                Work {
                    payload: event.payload.clone(),
                    delivery,
                    reply: None,
                },
            );
        }
        Ok(())
    }
}

#[async_trait]
impl AgentRuntime for InMemoryRuntime {
    async fn register_factory(
        &self,
        agent_type: &str,
        factory: AgentFactory,
    ) -> Result<(), RuntimeError> {
        crate::ids::validate_agent_type(agent_type)?;
        let mut agents = self.inner.agents();
        agents.check_factory(agent_type, &factory)?;
        agents.add_factory(agent_type, factory);
        Ok(())
    }

    async fn register_agent_instance_boxed(
        &self,
        agent: Box<dyn Agent>,
        class: &'static str,
        id: AgentId,
    ) -> Result<(), RuntimeError> {
        let mut agents = self.inner.agents();
        agents.check_instance(&id, class)?;
        agents.add_instance(id, agent, class);
        Ok(())
    }

    async fn add_subscription(&self, subscription: Subscription) -> Result<(), RuntimeError> {
        let mut subs = self.inner.subscriptions();
        if !subs.iter().any(|s| s.id() == subscription.id()) {
            subs.push(subscription);
        }
        Ok(())
    }

    async fn remove_subscription(&self, id: &str) -> Result<(), RuntimeError> {
        let mut subs = self.inner.subscriptions();
        let before = subs.len();
        subs.retain(|s| s.id() != id);
        if subs.len() == before {
            return Err(RuntimeError::UnknownSubscription(id.to_owned()));
        }
        Ok(())
    }

    async fn subscriptions(&self) -> Vec<Subscription> {
        self.inner.subscriptions().clone()
    }

    async fn send_payload(
        &self,
        payload: Payload,
        recipient: &AgentId,
        options: SendOptions,
    ) -> Result<Option<Payload>, RuntimeError> {
        self.inner
            .send(OutgoingRpc {
                payload,
                recipient: recipient.clone(),
                sender: options.sender,
                timeout: options.timeout,
                cancellation: options.cancellation,
                trace: None,
            })
            .await
    }

    async fn publish_payload(
        &self,
        payload: Payload,
        topic: &TopicId,
        sender: Option<AgentId>,
    ) -> Result<(), RuntimeError> {
        self.inner
            .publish(OutgoingEvent {
                payload,
                topic: topic.clone(),
                sender,
                trace: None,
            })
            .await
    }

    async fn agent_metadata(&self, id: &AgentId) -> Result<AgentMetadata, RuntimeError> {
        let agents = self.inner.agents();
        let class = agents
            .class_of(id)
            .ok_or_else(|| RuntimeError::UnknownAgentType(id.agent_type().to_owned()))?;
        Ok(AgentMetadata {
            id: id.clone(),
            runtime: RUNTIME_NAME.to_owned(),
            class: class.to_owned(),
            local: true,
        })
    }

    async fn agent_save_state(&self, id: &AgentId) -> Result<Value, RuntimeError> {
        let (agent, _) = self.local_agent(id).await?;
        let state = agent.lock().await.save_state().await;
        state
            .map(|s| s.unwrap_or(Value::Null))
            .map_err(|e| RuntimeError::Handler {
                agent: id.to_string(),
                message: e.to_string(),
            })
    }

    async fn agent_load_state(&self, id: &AgentId, state: Value) -> Result<(), RuntimeError> {
        let (agent, _) = self.local_agent(id).await?;
        let loaded = agent.lock().await.load_state(state).await;
        loaded.map_err(|e| RuntimeError::Handler {
            agent: id.to_string(),
            message: e.to_string(),
        })
    }

    async fn local_agent(&self, id: &AgentId) -> Result<(SharedAgent, String), RuntimeError> {
        let (agent, class, _) = self.inner.agents().activate(id, None)?;
        Ok((agent, class.to_owned()))
    }

    async fn stop(&self) -> Result<(), RuntimeError> {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.run_until_idle().await;
        self.inner.shutdown.cancel();
        Ok(())
    }
}
