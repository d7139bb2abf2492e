//! An in-process runtime with the same API as the Kafka runtime, for unit-testing
//! agents without a broker. Same semantics: one message at a time per agent, RPC
//! timeouts, subscriptions; no persistence beyond the process, so durable steps
//! (`ctx.step`) are not journaled here: every step runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::agent::{Agent, AgentFactory, SharedAgent};
use crate::api::{AgentMetadata, AgentRuntime};
use crate::context::{Delivery, MessageContext, OutgoingEvent, OutgoingRpc, Transport};
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::local::{LocalAgents, Mailboxes};
use crate::message::Payload;
use crate::subscription::Subscription;
use crate::trace::TraceContext;

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
        Self::new(crate::defaults::RPC_TIMEOUT)
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
        let mailboxes = Mailboxes::new(crate::defaults::MAX_CONCURRENCY, move |id, work: Work| {
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
        let span = delivery.handling_span(&payload.type_name);
        let trace = crate::trace::start_span(&span, delivery.trace.as_ref());
        let result = self
            .handle(&id, payload, delivery, trace)
            .instrument(span.clone())
            .await;
        crate::trace::record_outcome(&span, result.as_ref().err(), true);
        // Closed before the caller hears back, so the span precedes the reply.
        drop(span);
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
        trace: TraceContext,
    ) -> Result<Option<Payload>, RuntimeError> {
        let activated = self.agents().activate(id, None);
        let (agent, _, _) = activated?;
        let transport: Arc<dyn Transport> = Arc::clone(self) as Arc<dyn Transport>;
        let ctx =
            MessageContext::with_trace(delivery, self.shutdown.child_token(), transport, trace);
        let mut agent = agent.lock().await;
        let message_type = payload.type_name.clone();
        agent
            .on_message(payload, &ctx)
            .await
            .map_err(|e| e.to_runtime_error(id, &message_type))
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
        if let Some(id) = &rpc.message_id {
            crate::ids::validate_message_id(id)?;
        }
        let (tx, rx) = oneshot::channel();
        let delivery = Delivery {
            recipient: rpc.recipient.clone(),
            sender: rpc.sender,
            topic: None,
            is_rpc: true,
            message_id: rpc
                .message_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
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
        if let Some(id) = &event.message_id {
            crate::ids::validate_message_id(id)?;
        }
        let message_id = event
            .message_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
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

    fn transport(&self) -> &dyn Transport {
        &*self.inner
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

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::agent::{AgentError, Handler, HandlerResult, Routes};
    use crate::api::{AgentRuntimeExt, SendOptions};
    use crate::ids::TopicId;
    use crate::message::Message;

    #[derive(Debug, Serialize, Deserialize)]
    struct Add {
        n: u64,
    }
    impl Message for Add {
        const TYPE_NAME: &'static str = "test.Add";
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Total {
        total: u64,
        seen: Vec<u64>,
    }
    impl Message for Total {
        const TYPE_NAME: &'static str = "test.Total";
    }
    #[derive(Debug, Serialize, Deserialize)]
    struct CallSelf;
    impl Message for CallSelf {
        const TYPE_NAME: &'static str = "test.CallSelf";
    }

    /// Sums what it is sent, remembering the order.
    #[derive(Default)]
    struct Adder {
        seen: Vec<u64>,
    }

    #[async_trait]
    impl Handler<Add> for Adder {
        type Reply = Total;
        async fn handle(&mut self, add: Add, _ctx: &MessageContext) -> Result<Total, AgentError> {
            if add.n == 13 {
                return Err(AgentError::new("unlucky"));
            }
            // Yield so that concurrent deliveries would interleave if allowed to.
            tokio::task::yield_now().await;
            self.seen.push(add.n);
            Ok(Total {
                total: self.seen.iter().sum(),
                seen: self.seen.clone(),
            })
        }
    }

    #[async_trait]
    impl Handler<CallSelf> for Adder {
        type Reply = ();
        async fn handle(&mut self, _: CallSelf, ctx: &MessageContext) -> Result<(), AgentError> {
            ctx.send_message(&Add { n: 1 }, &ctx.recipient).await?;
            Ok(())
        }
    }

    static ROUTES: LazyLock<Routes<Adder>> =
        LazyLock::new(|| Routes::new().handle::<Add>().handle::<CallSelf>());

    #[async_trait]
    impl Agent for Adder {
        async fn on_message(&mut self, msg: Payload, ctx: &MessageContext) -> HandlerResult {
            ROUTES.dispatch(self, msg, ctx).await
        }
    }

    fn id(key: &str) -> AgentId {
        AgentId::new("adder", key).unwrap()
    }

    #[tokio::test]
    async fn typed_rpc_errors_and_unknown_types() {
        let rt = InMemoryRuntime::default();
        rt.register("adder", |_: &AgentId| Adder::default())
            .await
            .unwrap();
        let total = rt
            .send_message(&Add { n: 2 }, &id("a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            total.decode::<Total>().unwrap(),
            Total {
                total: 2,
                seen: vec![2]
            }
        );
        let err = rt.send_message(&Add { n: 13 }, &id("a")).await.unwrap_err();
        assert_eq!(
            err,
            RuntimeError::Handler {
                agent: "adder/a".into(),
                message: "unlucky".into()
            }
        );
        let unknown = Payload::json("test.Nope", &serde_json::json!({}));
        let err = rt
            .send_payload(unknown, &id("a"), SendOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RuntimeError::UnknownMessageType { .. }),
            "{err:?}"
        );
        let err = rt
            .send_message(&Add { n: 1 }, &AgentId::new("nobody", "x").unwrap())
            .await
            .unwrap_err();
        assert_eq!(err, RuntimeError::UnknownAgentType("nobody".into()));
        let err = rt.send_message(&CallSelf, &id("a")).await.unwrap_err();
        assert!(
            err.to_string().contains("cannot send an RPC to itself"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn published_events_arrive_in_order_one_at_a_time() {
        let rt = InMemoryRuntime::default();
        rt.register("adder", |_: &AgentId| Adder::default())
            .await
            .unwrap();
        rt.add_subscription(Subscription::for_type("numbers", "adder").unwrap())
            .await
            .unwrap();
        let topic = TopicId::new("numbers", "k").unwrap();
        for n in 0..50 {
            rt.publish_message(&Add { n }, &topic).await.unwrap();
        }
        rt.run_until_idle().await;
        let adder = rt
            .try_get_underlying_agent_instance::<Adder>(&id("k"))
            .await
            .unwrap();
        // 13 fails (the Kafka runtime would dead-letter it); the rest arrive in order.
        assert_eq!(adder.seen, (0..50).filter(|n| *n != 13).collect::<Vec<_>>());
        assert_eq!(rt.failed_events(), 1);
    }

    #[tokio::test]
    async fn rpcs_time_out_and_can_be_cancelled() {
        struct Stuck;
        #[async_trait]
        impl Agent for Stuck {
            async fn on_message(&mut self, _: Payload, _: &MessageContext) -> HandlerResult {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(None)
            }
        }
        let rt = InMemoryRuntime::new(Duration::from_millis(50));
        rt.register("stuck", |_: &AgentId| Stuck).await.unwrap();
        let to = AgentId::new("stuck", "s").unwrap();
        let err = rt.send_message(&Add { n: 1 }, &to).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Timeout { .. }), "{err:?}");
        let cancel = CancellationToken::new();
        let opts = SendOptions {
            timeout: Some(Duration::from_secs(10)),
            cancellation: Some(cancel.clone()),
            ..SendOptions::default()
        };
        let other = AgentId::new("stuck", "t").unwrap();
        let call = rt.send_payload(Payload::encode(&Add { n: 1 }).unwrap(), &other, opts);
        cancel.cancel();
        assert!(matches!(call.await, Err(RuntimeError::Cancelled(_))));
    }

    /// Collects finished spans.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collect {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// `front/k` forwards what it gets to `back/k`, which echoes it.
    struct Forward;

    #[async_trait]
    impl Agent for Forward {
        async fn on_message(&mut self, msg: Payload, ctx: &MessageContext) -> HandlerResult {
            if ctx.recipient.agent_type() == "back" {
                return Ok(Some(msg));
            }
            let back = AgentId::new("back", ctx.recipient.key()).unwrap();
            ctx.send_payload(msg, &back, None)
                .await
                .map_err(AgentError::new)
        }
    }

    #[tokio::test]
    async fn messages_sent_by_a_handler_continue_its_span() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let spans = Collect::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        // The test runtime is single-threaded: the mailbox tasks see this subscriber.
        let _default = tracing::subscriber::set_default(subscriber);

        let rt = InMemoryRuntime::default();
        rt.register("front", |_: &AgentId| Forward).await.unwrap();
        rt.register("back", |_: &AgentId| Forward).await.unwrap();
        let caller = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        )
        .unwrap();
        let opts = SendOptions {
            trace: Some(caller.clone()),
            ..SendOptions::default()
        };
        let to = AgentId::new("front", "k").unwrap();
        let reply = rt
            .send_payload(Payload::encode(&Add { n: 7 }).unwrap(), &to, opts)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.decode::<Add>().unwrap().n, 7);

        let spans = spans.0.lock().unwrap().clone();
        let handled = |agent_type: &str| {
            spans
                .iter()
                .find(|s| {
                    s.name == "switchboard.handle"
                        && s.attributes.iter().any(|kv| {
                            kv.key.as_str() == "switchboard.agent.type"
                                && kv.value.as_str() == agent_type
                        })
                })
                .unwrap_or_else(|| panic!("no span for {agent_type} in {spans:#?}"))
        };
        let (front, back) = (handled("front"), handled("back"));
        let trace_id = opentelemetry::trace::TraceId::from_bytes(caller.trace_id);
        assert_eq!(front.span_context.trace_id(), trace_id);
        assert_eq!(back.span_context.trace_id(), trace_id);
        // caller -> front's handler -> the RPC it sent -> back's handler.
        assert_eq!(front.parent_span_id.to_bytes(), caller.span_id);
        assert!(front.parent_span_is_remote);
        assert_eq!(back.parent_span_id, front.span_context.span_id());
    }
}
