//! The Kafka side of local delivery (the rules are `handoff`'s): forwarding events
//! through the inbox topic, writing handoff markers, and putting held events into the
//! mailboxes. A local delivery is a record of the events topic: it is committed there
//! once its handlers finished and their outputs were acknowledged, as for inbox records.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Inner;
use super::consumer_loop::{Dispatched, DoneSender};
use super::delivery::{LocalEvent, deliver_event};
use super::handoff::HandoffIo;
use super::original::Original;
use super::outputs;
use crate::protocol::wire::{Body, Envelope};

/// An event for one inbox partition, decoded and addressed to this runtime's types.
pub(crate) struct Outgoing {
    /// The delivery as it would be forwarded (recipient types filled in).
    pub(crate) delivery: Envelope,
    /// The recipients' key (the topic source).
    pub(crate) key: Vec<u8>,
    /// Partition and offset of the events record it came in.
    pub(crate) at: (i32, i64),
    /// Reports the events record done.
    pub(crate) done: DoneSender,
}

/// An event kept for local delivery, with the copy of its events record it was decoded
/// from (for dead letters and spans).
pub(crate) struct Held {
    event: Outgoing,
    original: Arc<Original>,
}

/// Carries out the handoff's decisions for `inner`'s runtime.
pub(crate) struct KafkaIo<'a>(pub(crate) &'a Arc<Inner>);

/// Delivers `event` (read as `original`) for inbox partition `owner`: locally, held
/// for the switch, or forwarded through the inbox topic when this replica does not
/// own `owner` (or local delivery is off).
pub(crate) fn offer(inner: &Arc<Inner>, owner: i32, event: Outgoing, original: Arc<Original>) {
    let hold = |event| Held { event, original };
    let handles_here = |event: &Outgoing| registers_every_recipient(inner, &event.delivery);
    if let Some(event) = inner
        .handoff
        .offer(&KafkaIo(inner), owner, event, handles_here, hold)
    {
        forward(inner, event);
    }
}

/// Whether every recipient type of `delivery` is registered in this replica (its
/// program may register them after `start`): only then may it skip the inbox.
fn registers_every_recipient(inner: &Inner, delivery: &Envelope) -> bool {
    match &delivery.body {
        Body::Event {
            recipient_types, ..
        } => {
            let agents = inner.hosted.agents();
            recipient_types.iter().all(|t| agents.hosts(t))
        }
        _ => false,
    }
}

impl HandoffIo<Held> for KafkaIo<'_> {
    fn forward(&self, held: Held) {
        forward(self.0, held.event);
    }

    fn deliver(&self, owner: i32, held: Held) {
        let inner = self.0;
        let Held {
            event:
                Outgoing {
                    delivery,
                    at: (p, o),
                    done,
                    ..
                },
            original,
        } = held;
        let pushed = match LocalEvent::from_envelope(delivery) {
            Ok(event) => deliver_event(inner, owner, event, original, &done, true),
            // The events consumer holds nothing else.
            Err(_) => Dispatched::Done,
        };
        match pushed {
            Dispatched::Pending => {
                inner
                    .metrics
                    .delivered_locally
                    .fetch_add(1, Ordering::Relaxed);
            }
            Dispatched::Done => done.done(p, o),
        }
    }

    fn send_marker(&self, partition: i32, marker: &str) {
        let inner = self.0;
        let topic = inner.names.inbox(&inner.config.runtime_name);
        let queued = inner.outputs.enqueue_marker(&topic, partition, marker);
        let weak = Arc::downgrade(inner);
        let marker = marker.to_owned();
        inner.tasks.spawn(async move {
            if let Err(e) = outputs::acknowledged(&topic, queued).await
                && let Some(inner) = weak.upgrade()
            {
                tracing::warn!(partition, error = %e, "handoff marker not written; forwarding held events");
                inner
                    .handoff
                    .marker_failed(&KafkaIo(&inner), partition, &marker);
            }
        });
    }
}

/// Forwards `event` into this runtime's inbox keyed by the topic source; the events
/// record is done once the broker acknowledged it.
fn forward(inner: &Inner, event: Outgoing) {
    let Outgoing {
        delivery,
        key,
        at: (p, o),
        done,
    } = event;
    let inbox = inner.names.inbox(&inner.config.runtime_name);
    // Enqueued now, so deliveries of one key keep their order (the idempotent
    // producer keeps it from here on); only the acknowledgement is awaited.
    let queued = inner.outputs.enqueue_envelope(&inbox, &key, &delivery);
    inner.tasks.spawn(async move {
        match outputs::acknowledged(&inbox, queued).await {
            Ok(_) => done.done(p, o),
            Err(e) => {
                tracing::error!(error = %e, "forwarding an event failed; it stays uncommitted")
            }
        }
    });
}
