//! The inbox: RPC requests and event deliveries for this runtime's agents.
//!
//! Each record goes to its agent's mailbox (one message at a time per agent, in
//! arrival order). A record is done when its handler finished and everything it
//! produced — reply, dead letter, state snapshot, and whatever the handler sent or
//! published through its context — was acknowledged. State of an inbox partition is
//! restored from the co-partitioned state topic before the partition is dispatched.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tracing::Instrument as _;

use super::Inner;
use super::consumer_loop::{Dispatched, DoneSender, PartitionWorker};
use super::handoff::Handoff;
use super::original::Original;
use super::outputs;
use super::replies::error_to_failure;
use crate::agent::{Agent, AgentErrorKind, SharedAgent};
use crate::context::{Delivery, MessageContext, Transport};
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::message::Payload;
use crate::partitioner::partition_for;
use crate::trace::{self, TraceContext};
use crate::wire::{Body, Envelope, now_ms};

/// One message for one agent.
pub(crate) struct Work {
    /// Where the record was read (the inbox, or the events topic for a local delivery):
    /// reported done there.
    partition: i32,
    offset: i64,
    /// The inbox partition that owns the recipient (its state partition).
    owner: i32,
    payload: Payload,
    delivery: Delivery,
    /// RPC: where the reply goes and its request id.
    reply: Option<(String, String)>,
    deadline_ms: Option<u64>,
    /// Event deliveries to several agent types: the record is done when all are.
    fanout: Option<Arc<AtomicUsize>>,
    /// Delivered from the events topic directly (see `handoff`).
    local: bool,
    original: Arc<Original>,
    done: DoneSender,
}

/// Dispatches inbox records into agent mailboxes.
pub(crate) struct InboxWorker {
    inner: Arc<Inner>,
    tokio: tokio::runtime::Handle,
}

impl InboxWorker {
    /// A worker for `inner`; must be created inside the tokio runtime.
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self {
            inner,
            tokio: tokio::runtime::Handle::current(),
        }
    }

    fn dead_letter(
        &self,
        original: Arc<Original>,
        reason: String,
        done: &DoneSender,
    ) -> Dispatched {
        let inner = Arc::clone(&self.inner);
        let done = done.clone();
        self.tokio.spawn(async move {
            let dlq = inner.names.dlq(&inner.config.runtime_name);
            match outputs::dead_letter(&inner.producer, &dlq, &original, &reason).await {
                Ok(()) => {
                    inner.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    done.done(original.partition(), original.offset());
                }
                Err(e) => tracing::error!(error = %e, "dead-lettering failed; the record stays uncommitted"),
            }
        });
        Dispatched::Pending
    }

    fn reject_request(
        &self,
        trace: Option<TraceContext>,
        reply_to: &str,
        request_id: &str,
        error: RuntimeError,
        original: &Original,
        done: &DoneSender,
    ) -> Dispatched {
        let inner = Arc::clone(&self.inner);
        let body = Body::Error {
            request_id: request_id.to_owned(),
            failure: error_to_failure(&error),
        };
        let reply = Envelope::new(inner.config.instance_id.clone(), trace, body);
        let (topic, key) = (reply_to.to_owned(), request_id.to_owned());
        let (p, o) = (original.partition(), original.offset());
        let done = done.clone();
        self.tokio.spawn(async move {
            match outputs::produce_envelope(&inner.producer, &topic, key.as_bytes(), &reply).await {
                Ok(_) => done.done(p, o),
                Err(e) => tracing::error!(error = %e, "could not send an RPC error reply; the request stays uncommitted"),
            }
        });
        Dispatched::Pending
    }
}

impl PartitionWorker for InboxWorker {
    fn dispatch(&self, message: &BorrowedMessage<'_>, done: &DoneSender) -> Dispatched {
        let _entered = self.tokio.enter();
        let (partition, offset) = (message.partition(), message.offset());
        if let Some(marker) = crate::wire::handoff_marker(message.headers()) {
            self.inner
                .handoff
                .marker_read(&self.inner, partition, marker);
            return Dispatched::Done;
        }
        let original = Arc::new(Original::new(message));
        let envelope = match Envelope::decode_shared(message.headers(), original.payload_bytes()) {
            Ok(e) => e,
            Err(e) => return self.dead_letter(original, format!("undecodable record: {e}"), done),
        };
        let size = message.payload_len();
        if size > self.inner.config.max_message_bytes {
            let reason = format!(
                "record of {size} bytes exceeds maxMessageBytes ({})",
                self.inner.config.max_message_bytes
            );
            // A caller waiting for this request hears why instead of timing out.
            if let Body::Request {
                request_id,
                recipient,
                reply_to,
                ..
            } = &envelope.body
            {
                let err = RuntimeError::Rejected {
                    agent: recipient.to_string(),
                    reason: reason.clone(),
                };
                self.reject_request(
                    envelope.trace.clone(),
                    reply_to,
                    request_id,
                    err,
                    &original,
                    &DoneSender::discard(),
                );
            }
            return self.dead_letter(original, reason, done);
        }
        let envelope = match LocalEvent::from_envelope(envelope) {
            Ok(event) => return deliver_event(&self.inner, partition, event, original, done, None),
            Err(other) => other,
        };
        let Envelope {
            id: message_id,
            trace,
            body,
            ..
        } = envelope;
        match body {
            Body::Request {
                request_id,
                recipient,
                sender,
                reply_to,
                deadline_ms,
                payload,
            } => {
                let rejection = if deadline_ms < now_ms() {
                    Some(RuntimeError::Timeout {
                        agent: recipient.clone(),
                        after: Duration::ZERO,
                    })
                } else if !self.inner.agents().hosts(recipient.agent_type()) {
                    Some(RuntimeError::UnknownAgentType(
                        recipient.agent_type().to_owned(),
                    ))
                } else {
                    None
                };
                if let Some(err) = rejection {
                    let (reply_to, request_id) = (&reply_to, &request_id);
                    return self.reject_request(trace, reply_to, request_id, err, &original, done);
                }
                let delivery = Delivery {
                    recipient: recipient.clone(),
                    sender,
                    topic: None,
                    is_rpc: true,
                    message_id,
                    trace,
                };
                let work = Work {
                    partition,
                    offset,
                    owner: partition,
                    payload,
                    delivery,
                    reply: Some((reply_to, request_id)),
                    deadline_ms: Some(deadline_ms),
                    fanout: None,
                    local: false,
                    original,
                    done: done.clone(),
                };
                push(&self.inner, recipient, work);
                Dispatched::Pending
            }
            // Delivered above.
            Body::Event { .. } => Dispatched::Done,
            Body::Response { .. } | Body::Error { .. } => self.dead_letter(
                original,
                "an RPC reply does not belong in an inbox".to_owned(),
                done,
            ),
        }
    }

    fn assigned(&self, partitions: &[i32]) {
        self.inner
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(partitions);
        let topic = self.inner.names.state(&self.inner.config.runtime_name);
        match read_state(&self.inner, &topic, partitions) {
            Ok(restored) => {
                let mut r = self
                    .inner
                    .restored
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                for (p, states) in restored {
                    r.insert(p, states);
                }
            }
            Err(e) => {
                tracing::error!(%topic, error = %e, "restoring agent state failed; agents start empty")
            }
        }
        if self.inner.config.local_delivery {
            self.inner.handoff.inbox_assigned(partitions);
        }
    }

    fn revoking(&self, partitions: &[i32]) {
        let _entered = self.tokio.enter();
        self.inner.handoff.inbox_revoking(&self.inner, partitions);
    }

    fn busy(&self, partitions: &[i32]) -> usize {
        self.inner.handoff.busy(partitions)
    }

    fn report_lag(&self, topic: &str, lags: Vec<(i32, i64)>) {
        self.inner.metrics.set_lag(topic, lags);
    }

    fn revoked(&self, partitions: &[i32]) {
        self.inner
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !partitions.contains(p));
        let mut agents = self.inner.agents();
        let mut restored = self
            .inner
            .restored
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for p in partitions {
            agents.drop_partition(*p);
            restored.remove(p);
        }
    }
}

fn push(inner: &Inner, recipient: AgentId, work: Work) {
    if let Some(m) = inner.mailboxes.get() {
        inner.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        m.push(recipient, work);
    }
}

/// An event for this runtime's agent types, decoded.
pub(crate) struct LocalEvent {
    pub(crate) message_id: String,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) topic: crate::ids::TopicId,
    pub(crate) sender: Option<AgentId>,
    pub(crate) recipient_types: Vec<String>,
    pub(crate) payload: Payload,
}

impl LocalEvent {
    /// The event an envelope carries; other envelopes come back unchanged.
    #[allow(
        clippy::result_large_err,
        reason = "moved once per record, not propagated with ?"
    )]
    pub(crate) fn from_envelope(envelope: Envelope) -> Result<Self, Envelope> {
        match envelope.body {
            Body::Event {
                topic,
                sender,
                recipient_types,
                payload,
            } => Ok(Self {
                message_id: envelope.id,
                trace: envelope.trace,
                topic,
                sender,
                recipient_types,
                payload,
            }),
            body => Err(Envelope { body, ..envelope }),
        }
    }
}

/// Puts `event` into the mailbox of each hosted recipient type's agent keyed by the
/// topic source, owned by inbox partition `owner`. `original` is the record it came
/// in (an inbox record, or the event itself for a local delivery, which `handoff`
/// counts); it is reported done through `done` once every recipient handled it.
pub(crate) fn deliver_event(
    inner: &Inner,
    owner: i32,
    event: LocalEvent,
    original: Arc<Original>,
    done: &DoneSender,
    handoff: Option<&Handoff>,
) -> Dispatched {
    let LocalEvent {
        message_id,
        trace,
        topic,
        sender,
        recipient_types,
        payload,
    } = event;
    let recipients: Vec<AgentId> = {
        let agents = inner.agents();
        recipient_types
            .iter()
            .filter(|t| agents.hosts(t))
            .filter_map(|t| AgentId::new(t.as_str(), topic.source()).ok())
            .collect()
    };
    if recipients.is_empty() {
        return Dispatched::Done;
    }
    let fanout = (recipients.len() > 1).then(|| Arc::new(AtomicUsize::new(recipients.len())));
    let (partition, offset) = (original.partition(), original.offset());
    if let Some(h) = handoff {
        // Before the push: a handler may finish before this function returns.
        h.reserve(owner, recipients.len());
    }
    for recipient in recipients {
        let delivery = Delivery {
            recipient: recipient.clone(),
            sender: sender.clone(),
            topic: Some(topic.clone()),
            is_rpc: false,
            message_id: message_id.clone(),
            trace: trace.clone(),
        };
        let work = Work {
            partition,
            offset,
            owner,
            payload: payload.clone(),
            delivery,
            reply: None,
            deadline_ms: None,
            fanout: fanout.clone(),
            local: handoff.is_some(),
            original: Arc::clone(&original),
            done: done.clone(),
        };
        push(inner, recipient, work);
    }
    Dispatched::Pending
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
    let group = format!(
        "{}.restore.{}",
        inner.names.prefix(),
        inner.config.instance_id
    );
    let consumer: BaseConsumer = inner.config.kafka.consumer_config(&group).create()?;
    let timeout = Duration::from_secs(10);
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
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
            return Err(RuntimeError::Kafka(format!(
                "state topic {topic} not read to its end in time"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let p = message.partition();
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

fn partition_of(inner: &Inner, id: &AgentId) -> i32 {
    inner.agents().partition_of(id).unwrap_or_else(|| {
        let partitions = inner.inbox_partitions.load(Ordering::SeqCst);
        partition_for(id.key().as_bytes(), partitions)
    })
}

/// Loads the restored state of a just-activated agent, if any was saved.
pub(crate) async fn restore_into(inner: &Inner, id: &AgentId, agent: &SharedAgent) {
    let partition = partition_of(inner, id);
    let state = inner
        .restored
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&partition)
        .and_then(|m| m.remove(id));
    let Some(state) = state else { return };
    let hash = state_hash(state.to_string().as_bytes());
    match agent.lock().await.load_state(state).await {
        Ok(()) => inner.agents().set_state_hash(id, hash),
        Err(e) => {
            tracing::error!(agent = %id, error = %e, "load_state failed; the agent starts empty")
        }
    }
}

/// Writes the agent's state to the state topic if it changed since last written.
pub(crate) async fn persist_state(
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
    if inner.agents().state_hash(id) == Some(hash) {
        return Ok(());
    }
    let partition = partition.unwrap_or_else(|| partition_of(inner, id));
    let topic = inner.names.state(&inner.config.runtime_name);
    outputs::produce(
        &inner.producer,
        &topic,
        Some(partition),
        id.to_string().as_bytes(),
        None,
        Some(&bytes),
    )
    .await?;
    inner.agents().set_state_hash(id, hash);
    Ok(())
}

/// Runs one message to completion: handler, state, reply, dead letter, then done;
/// inside a span whose parent is the record's `traceparent`.
pub(crate) async fn run_work(inner: Arc<Inner>, id: AgentId, work: Work) {
    let span = trace::handling_span(&work.delivery, &work.payload.type_name);
    if !span.is_disabled() {
        span.record("messaging.system", "kafka");
        span.record("messaging.destination.name", work.original.topic());
        span.record("messaging.destination.partition.id", work.partition);
        span.record("messaging.kafka.offset", work.offset);
    }
    let trace = trace::start_span(&span, work.delivery.trace.as_ref());
    let (error, done) = run_traced(&inner, &id, &work, trace)
        .instrument(span.clone())
        .await;
    trace::record_outcome(&span, error.as_ref(), done);
    if done {
        let last = work
            .fanout
            .as_ref()
            .is_none_or(|n| n.fetch_sub(1, Ordering::AcqRel) == 1);
        if last {
            work.done.done(work.partition, work.offset);
        }
    }
    if work.local {
        inner.handoff.finished(work.owner);
    }
}

/// Handles `work` with `trace` as the handler's context; returns the error it ended
/// with and whether the record is done (everything it produced was acknowledged).
async fn run_traced(
    inner: &Arc<Inner>,
    id: &AgentId,
    work: &Work,
    trace: TraceContext,
) -> (Option<RuntimeError>, bool) {
    let (result, mut outputs_ok) = handle(inner, id, work, trace.clone()).await;
    inner.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    inner.metrics.handled(id.agent_type(), result.is_ok());
    if let Some((reply_to, request_id)) = &work.reply {
        let body = match &result {
            Ok(payload) => Body::Response {
                request_id: request_id.clone(),
                payload: payload.clone(),
            },
            Err(e) => Body::Error {
                request_id: request_id.clone(),
                failure: error_to_failure(e),
            },
        };
        let reply = Envelope::new(id.to_string(), Some(trace), body);
        if let Err(e) =
            outputs::produce_envelope(&inner.producer, reply_to, request_id.as_bytes(), &reply)
                .await
        {
            tracing::error!(agent = %id, error = %e, "could not send the RPC reply");
            outputs_ok = false;
        }
    }
    if let Err(e) = &result {
        // Events have no caller to tell, so any failure is dead-lettered; an RPC's
        // caller got the error, so only input that can never succeed is kept.
        let poison = matches!(
            e,
            RuntimeError::UnknownMessageType { .. } | RuntimeError::Codec(_)
        );
        if work.reply.is_none() || poison {
            let dlq = inner.names.dlq(&inner.config.runtime_name);
            match outputs::dead_letter(&inner.producer, &dlq, &work.original, &e.to_string()).await
            {
                Ok(()) => {
                    inner.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(agent = %id, error = %e, "dead-lettering failed");
                    outputs_ok = false;
                }
            }
        }
    }
    // Not done when an output failed: the offset stays uncommitted and the record is
    // redelivered after the next rebalance or restart (at-least-once).
    (result.err(), outputs_ok)
}

/// Runs the handler and persists changed state; the flag is false when the state
/// could not be written (the record must then not count as done).
async fn handle(
    inner: &Arc<Inner>,
    id: &AgentId,
    work: &Work,
    trace: TraceContext,
) -> (Result<Option<Payload>, RuntimeError>, bool) {
    let activated = inner.agents().activate(id, Some(work.owner));
    let (agent, _, created) = match activated {
        Ok(a) => a,
        Err(e) => return (Err(e), true),
    };
    if created {
        restore_into(inner, id, &agent).await;
    }
    let cancel = inner.shutdown.child_token();
    let transport: Arc<dyn Transport> = Arc::clone(inner) as Arc<dyn Transport>;
    // What the handler sends or publishes is a child of this message's span.
    let ctx = MessageContext::with_trace(work.delivery.clone(), cancel.clone(), transport, trace);
    let mut guard = agent.lock().await;
    let result = {
        let handler = guard.on_message(work.payload.clone(), &ctx);
        tokio::pin!(handler);
        match work.deadline_ms {
            None => handler.await,
            Some(deadline) => {
                let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
                tokio::select! {
                    r = &mut handler => r,
                    () = tokio::time::sleep(wait) => {
                        // The caller gave up: tell the handler, but let it finish so
                        // its state stays consistent.
                        cancel.cancel();
                        handler.await
                    }
                }
            }
        }
    };
    let result = result.map_err(|e| match e.kind() {
        AgentErrorKind::UnknownMessageType => RuntimeError::UnknownMessageType {
            agent: id.to_string(),
            message_type: work.payload.type_name.clone(),
        },
        AgentErrorKind::Decode => RuntimeError::Codec(crate::message::CodecError::Invalid {
            type_name: work.payload.type_name.clone(),
            reason: e.message().to_owned(),
        }),
        AgentErrorKind::Handler => RuntimeError::Handler {
            agent: id.to_string(),
            message: e.message().to_owned(),
        },
    });
    let persisted = persist_state(inner, id, Some(work.owner), &mut **guard).await;
    drop(guard);
    match persisted {
        Ok(()) => (result, true),
        Err(e) => {
            tracing::error!(agent = %id, error = %e, "could not persist agent state");
            (Err(e), false)
        }
    }
}
