//! One turn: running one message to completion on its agent. The handler runs inside
//! a span whose parent is the record's `traceparent`; then the agent's state is
//! written if it changed, the reply (or error) goes to the caller's reply channel and
//! failed input goes to the dead-letter topic. Only when all of that was acknowledged
//! is the record reported done, so its offset can be committed (DESIGN.md §2
//! "at-least-once, nothing lost").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use tracing::Instrument as _;

use super::Inner;
use super::consumer_loop::DoneSender;
use super::journal::{InputRef, TurnJournal};
use super::original::Original;
use super::replies::error_to_failure;
use crate::agent::AgentError;
use crate::context::{Delivery, MessageContext, Transport};
use crate::durable::Steps;
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::message::Payload;
use crate::protocol::wire::{Body, Envelope, now_ms};
use crate::trace::{self, TraceContext};

/// RPC turns in flight by message id, so a caller can interrupt one from outside
/// ([`super::KafkaAgentRuntime::interrupt`]: an A2A `CancelTask`). An interrupt that
/// comes before its turn started is remembered until its deadline, and the turn then
/// starts with its context already cancelled.
#[derive(Default)]
pub(crate) struct Interrupts {
    next: AtomicU64,
    inner: Mutex<InterruptsInner>,
}

#[derive(Default)]
struct InterruptsInner {
    /// Message id -> (turn number, the turn's cancellation).
    running: HashMap<String, (u64, CancellationToken)>,
    /// Interrupted before their turn started: message id -> until when (ms) to remember.
    early: HashMap<String, u64>,
}

/// Most early interrupts remembered; the ones with the nearest deadline go first.
const MAX_EARLY_INTERRUPTS: usize = 10_000;

impl Interrupts {
    fn lock(&self) -> std::sync::MutexGuard<'_, InterruptsInner> {
        // Every change is one map call: a poisoned lock still holds consistent maps.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cancels the turn of `message_id` if it runs here (true), else remembers the
    /// interrupt until `until_ms` in case the turn starts later.
    pub(crate) fn interrupt(&self, message_id: &str, until_ms: u64) -> bool {
        let mut inner = self.lock();
        if let Some((_, token)) = inner.running.get(message_id) {
            token.cancel();
            return true;
        }
        let now = now_ms();
        if until_ms > now {
            inner.early.retain(|_, until| *until > now);
            if inner.early.len() >= MAX_EARLY_INTERRUPTS
                && let Some(first) = inner
                    .early
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(id, _)| id.clone())
            {
                inner.early.remove(&first);
            }
            inner.early.insert(message_id.to_owned(), until_ms);
        }
        false
    }

    /// A turn of `message_id` starts with `token`; the returned number ends it.
    fn start(&self, message_id: &str, token: &CancellationToken) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        if inner.early.remove(message_id).is_some() {
            token.cancel();
        }
        inner
            .running
            .insert(message_id.to_owned(), (n, token.clone()));
        n
    }

    /// Turn `n` of `message_id` ended (a redelivered copy may have replaced it).
    fn end(&self, message_id: &str, n: u64) {
        let mut inner = self.lock();
        if inner.running.get(message_id).is_some_and(|(m, _)| *m == n) {
            inner.running.remove(message_id);
        }
    }
}

/// One message for one agent.
pub(crate) struct Work {
    /// Where the record was read (the inbox, or the events topic for a local delivery):
    /// reported done there.
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The inbox partition that owns the recipient (its state partition).
    pub(crate) owner: i32,
    pub(crate) payload: Payload,
    pub(crate) delivery: Delivery,
    /// RPC: where the reply goes and its request id.
    pub(crate) reply: Option<(String, String)>,
    pub(crate) deadline_ms: Option<u64>,
    /// Event deliveries to several agent types: the record is done when all are.
    pub(crate) fanout: Option<Arc<AtomicUsize>>,
    /// Delivered from the events topic directly (see `handoff`).
    pub(crate) local: bool,
    pub(crate) original: Arc<Original>,
    pub(crate) done: DoneSender,
}

/// Runs `work` on agent `id` to completion and reports it done when it is.
pub(crate) async fn run(inner: Arc<Inner>, id: AgentId, work: Work) {
    let span = work.delivery.handling_span(&work.payload.type_name);
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
    let (result, mut outputs_ok, keep_input) = handle(inner, id, work, trace.clone()).await;
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
        if let Err(e) = inner
            .outputs
            .produce_envelope(reply_to, request_id.as_bytes(), &reply)
            .await
        {
            tracing::error!(agent = %id, error = %e, "could not send the RPC reply");
            outputs_ok = false;
        }
    }
    if let Err(e) = &result {
        // Events have no caller to tell, so any failure is dead-lettered; an RPC's
        // caller got the error, so only input that can never succeed is kept.
        let poison = keep_input
            || matches!(
                e,
                RuntimeError::UnknownMessageType { .. } | RuntimeError::Codec(_)
            );
        if (work.reply.is_none() || poison)
            && let Err(e) = inner
                .outputs
                .dead_letter(&work.original, &e.to_string())
                .await
        {
            tracing::error!(agent = %id, error = %e, "dead-lettering failed");
            outputs_ok = false;
        }
    }
    // Not done when an output failed: the offset stays uncommitted and the record is
    // redelivered after the next rebalance or restart (at-least-once).
    (result.err(), outputs_ok)
}

/// Runs the handler and persists changed state; the first flag is false when the state
/// could not be written (the record must then not count as done), the second asks for
/// the input to be dead-lettered ([`AgentError::keep_input`]).
async fn handle(
    inner: &Arc<Inner>,
    id: &AgentId,
    work: &Work,
    trace: TraceContext,
) -> (Result<Option<Payload>, RuntimeError>, bool, bool) {
    let activated = inner.hosted.agents().activate(id, Some(work.owner));
    let (agent, _, created) = match activated {
        Ok(a) => a,
        Err(e) => return (Err(e), true, false),
    };
    if created {
        inner.state.restore_into(inner, id, &agent).await;
    }
    let cancel = inner.shutdown.child_token();
    // Only RPCs can be interrupted (an A2A task is one); events skip the bookkeeping.
    let turn = work
        .reply
        .is_some()
        .then(|| inner.interrupts.start(&work.delivery.message_id, &cancel));
    let transport: Arc<dyn Transport> = Arc::clone(inner) as Arc<dyn Transport>;
    // What the handler sends or publishes is a child of this message's span.
    let ctx = MessageContext::with_trace(work.delivery.clone(), cancel.clone(), transport, trace);
    let ctx = if inner.config.durable_steps {
        ctx.with_steps(Steps::journaled(Arc::new(TurnJournal {
            inner: Arc::clone(inner),
            agent: id.clone(),
            message_id: work.delivery.message_id.clone(),
            partition: work.owner,
            input: InputRef {
                topic: work.original.topic().to_owned(),
                partition: work.partition,
                offset: work.offset,
            },
        })))
    } else {
        ctx
    };
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
    if let Some(turn) = turn {
        inner.interrupts.end(&work.delivery.message_id, turn);
    }
    let keep_input = result.as_ref().is_err_and(AgentError::keeps_input);
    let result = result.map_err(|e| e.to_runtime_error(id, &work.payload.type_name));
    let persisted = inner
        .state
        .persist(inner, id, Some(work.owner), &mut **guard)
        .await;
    drop(guard);
    match persisted {
        Ok(()) => (result, true, keep_input),
        Err(e) => {
            tracing::error!(agent = %id, error = %e, "could not persist agent state");
            (Err(e), false, keep_input)
        }
    }
}
