//! The inbox: RPC requests and event deliveries for this runtime's agents.
//!
//! Each record goes to its agent's mailbox (one message at a time per agent, in
//! arrival order); `turn` runs it. A record is done when its handler finished and
//! everything it produced — reply, dead letter, state snapshot, and whatever the
//! handler sent or published through its context — was acknowledged. State of an
//! inbox partition is restored from the co-partitioned state topic (`state_store`)
//! before the partition is dispatched; a partition whose state cannot be read is held
//! (paused) until it can. Records that cannot reach a handler (not
//! decodable, too large, expired, for a type not hosted here) are answered or
//! dead-lettered here.

use std::sync::Arc;

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;

use super::Inner;
use super::classify::{self, InboxRecord, Rejection, Request};
use super::consumer_loop::{Dispatched, DoneSender, PartitionWorker};
use super::delivery::deliver_event;
use super::local_delivery::KafkaIo;
use super::original::Original;
use super::replies::error_to_failure;
use super::turn::Work;
use crate::context::Delivery;
use crate::protocol::wire::{Body, Envelope, now_ms};

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
        self.inner.tasks.spawn_on(
            async move {
                match inner.outputs.dead_letter(&original, &reason).await {
                    Ok(()) => done.done(original.partition(), original.offset()),
                    Err(e) => tracing::error!(error = %e, "dead-lettering failed; the record stays uncommitted"),
                }
            },
            &self.tokio,
        );
        Dispatched::Pending
    }

    fn reject_request(
        &self,
        rejection: Rejection,
        original: &Original,
        done: &DoneSender,
    ) -> Dispatched {
        let inner = Arc::clone(&self.inner);
        let Rejection {
            trace,
            reply_to: topic,
            request_id: key,
            error,
        } = rejection;
        let body = Body::Error {
            request_id: key.clone(),
            failure: error_to_failure(&error),
        };
        let reply = Envelope::new(inner.config.instance_id.clone(), trace, body);
        let (p, o) = (original.partition(), original.offset());
        let done = done.clone();
        let task = async move {
            match inner
                .outputs
                .produce_envelope(&topic, key.as_bytes(), &reply)
                .await
            {
                Ok(_) => done.done(p, o),
                Err(e) => {
                    tracing::error!(error = %e, "could not send an RPC error reply; the request stays uncommitted")
                }
            }
        };
        self.inner.tasks.spawn_on(task, &self.tokio);
        Dispatched::Pending
    }
}

impl InboxWorker {
    /// Whether an RPC for `agent_type`, not registered here, waits for its
    /// registration: the registry says this runtime hosts it (a replica's program may
    /// register its types after `start`; see `turn`).
    fn awaits(&self, agent_type: &str) -> bool {
        self.inner.hosted.may_wait_for(agent_type)
            && self
                .inner
                .registry
                .owner_of(agent_type, now_ms())
                .is_some_and(|claim| claim.runtime == self.inner.config.runtime_name)
    }
}

impl PartitionWorker for InboxWorker {
    fn dispatch(&self, message: &BorrowedMessage<'_>, done: &DoneSender) -> Dispatched {
        let _entered = self.tokio.enter();
        let partition = message.partition();
        let record = classify::inbox_record(
            message,
            self.inner.config.max_message_bytes,
            now_ms(),
            |t| self.inner.hosted.agents().hosts(t) || self.awaits(t),
        );
        match record {
            InboxRecord::Marker(marker) => {
                self.inner
                    .handoff
                    .marker_read(&KafkaIo(&self.inner), partition, marker);
                Dispatched::Done
            }
            InboxRecord::Event(event, original) => {
                deliver_event(&self.inner, partition, event, original, done, false)
            }
            InboxRecord::Reject(rejection, original) => {
                self.reject_request(rejection, &original, done)
            }
            InboxRecord::DeadLetter {
                original,
                reason,
                rejection,
            } => {
                // A caller waiting for this request hears why instead of timing out.
                if let Some(rejection) = rejection {
                    self.reject_request(rejection, &original, &DoneSender::discard());
                }
                self.dead_letter(original, reason, done)
            }
            InboxRecord::Request(request, original) => {
                let Request {
                    message_id,
                    trace,
                    request_id,
                    recipient,
                    sender,
                    reply_to,
                    deadline_ms,
                    payload,
                } = request;
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
                    offset: original.offset(),
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
                self.inner.hosted.push(&self.inner.metrics, recipient, work);
                Dispatched::Pending
            }
        }
    }

    fn assigned(&self, partitions: &[i32]) {
        // A failed restore starts its retry task from this (consumer) thread.
        let _entered = self.tokio.enter();
        self.inner.hosted.assigned(partitions);
        self.inner.state.restore_partitions(&self.inner, partitions);
        // Partitions awaiting their state get local delivery once they are ready.
        let waiting = self.inner.state.awaiting_of(partitions);
        let ready: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !waiting.contains(p))
            .collect();
        self.ready(&ready);
    }

    fn not_ready(&self, partitions: &[i32]) -> Vec<i32> {
        self.inner.state.awaiting_of(partitions)
    }

    fn ready(&self, partitions: &[i32]) {
        if self.inner.config.local_delivery && !partitions.is_empty() {
            self.inner.handoff.inbox_assigned(partitions);
        }
    }

    fn revoking(&self, partitions: &[i32]) {
        self.inner.hosted.revoking(partitions);
        let _entered = self.tokio.enter();
        self.inner
            .handoff
            .inbox_revoking(&KafkaIo(&self.inner), partitions);
    }

    fn busy(&self, partitions: &[i32]) -> usize {
        self.inner.handoff.busy(partitions)
    }

    fn revoked(&self, partitions: &[i32]) {
        self.inner.hosted.revoked(partitions);
        self.inner.state.drop_partitions(partitions);
        self.inner.journal.drop_partitions(partitions);
    }

    fn committed(&self, topic: &str, commits: &[(i32, i64)]) {
        let dropped = self.inner.journal.committed(topic, commits);
        super::journal::tombstone(&self.inner, dropped, &self.tokio);
    }
}
