//! Local delivery of events: when this replica owns the inbox partition an event's
//! key maps to, the events consumer puts the event straight into the agent's mailbox
//! instead of forwarding it through the inbox topic (DESIGN.md §3: one record trip
//! per event instead of two, and one fewer produce, fetch and decode).
//!
//! Owning the partition is not enough for per-key order: forwards made earlier, by
//! this replica or by an earlier owner of the event's events partition, may still sit
//! unread in the inbox partition, and a local delivery would overtake them. So each
//! owned inbox partition starts in *forward* mode and switches like this:
//! 1. The first event for it produces a *marker* record into the inbox partition
//!    (after every forward this producer enqueued before, same partition, so the
//!    log has it after them) and holds that event and the ones after it.
//! 2. When the inbox consumer reads the marker, everything before it is in the
//!    mailboxes already; the held events follow in order and the partition is *local*.
//! 3. A new events-partition assignment may bring an earlier owner's unread forwards,
//!    so every partition goes back to step 1. Losing the inbox partition forwards what
//!    is held, and revocation waits for local deliveries like for inbox records.
//!
//! A local delivery is a record of the events topic: it is committed there once its
//! handlers finished and their outputs were acknowledged, as for inbox records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::Inner;
use super::consumer_loop::{Dispatched, DoneSender};
use super::inbox::{self, LocalEvent};
use super::original::Original;
use super::outputs;
use crate::wire::{Envelope, header};

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

/// An event kept for local delivery, with a copy of its events record (for dead
/// letters and spans); only events that may be delivered locally pay for the copy.
struct Held {
    event: Outgoing,
    original: Arc<Original>,
}

enum Route {
    /// Owned, not switched yet: the next event starts the switch.
    Forward,
    /// A marker is on its way; events wait here until the inbox consumer reads it.
    Switching { marker: String, held: Vec<Held> },
    /// Events go to the mailboxes directly.
    Local,
}

/// Per inbox partition this replica owns: how events for it are delivered.
#[derive(Default)]
pub(crate) struct Handoff {
    routes: Mutex<HashMap<i32, Route>>,
    /// Local deliveries not finished yet, per inbox partition (revocation waits).
    busy: Mutex<HashMap<i32, usize>>,
    markers: AtomicU64,
}

impl Handoff {
    fn routes(&self) -> MutexGuard<'_, HashMap<i32, Route>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn busy_map(&self) -> MutexGuard<'_, HashMap<i32, usize>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `event` (read as `message`) for inbox partition `owner`: locally, held
    /// for the switch, or forwarded through the inbox topic when this replica does not
    /// own `owner`.
    pub(crate) fn offer(
        &self,
        inner: &Arc<Inner>,
        owner: i32,
        event: Outgoing,
        message: &BorrowedMessage<'_>,
    ) {
        let held = |event| Held {
            event,
            original: Arc::new(Original::new(message)),
        };
        // Everything happens under the lock so that a marker being read or the
        // partition being revoked on another thread cannot reorder deliveries.
        let mut routes = self.routes();
        match routes.get_mut(&owner) {
            None => forward(inner, event),
            Some(Route::Local) => self.deliver(inner, owner, held(event)),
            Some(Route::Switching { held: h, .. }) => h.push(held(event)),
            Some(route @ Route::Forward) => {
                let marker = self.send_marker(inner, owner);
                *route = Route::Switching {
                    marker,
                    held: vec![held(event)],
                };
            }
        }
    }

    /// The inbox consumer read a marker in `partition`: if it is the one this replica
    /// waits for, the held events go to the mailboxes and the partition is local.
    pub(crate) fn marker_read(&self, inner: &Inner, partition: i32, marker: &[u8]) {
        let mut routes = self.routes();
        for held in end_switch(&mut routes, partition, marker, Route::Local) {
            self.deliver(inner, partition, held);
        }
    }

    /// Inbox partitions were assigned (their state restored): they start switching
    /// with their next event.
    pub(crate) fn inbox_assigned(&self, partitions: &[i32]) {
        let mut routes = self.routes();
        for p in partitions {
            routes.insert(*p, Route::Forward);
        }
    }

    /// Inbox partitions are being revoked: nothing more is delivered locally; what is
    /// held is forwarded to the next owner (after this replica's earlier forwards).
    pub(crate) fn inbox_revoking(&self, inner: &Inner, partitions: &[i32]) {
        let mut routes = self.routes();
        for p in partitions {
            if let Some(Route::Switching { held, .. }) = routes.remove(p) {
                for h in held {
                    forward(inner, h.event);
                }
            }
        }
    }

    /// Events partitions were assigned: an earlier owner's forwards may be unread in
    /// any inbox partition, so every partition switches again (a held partition waits
    /// for a new marker).
    pub(crate) fn events_assigned(&self, inner: &Arc<Inner>) {
        let mut routes = self.routes();
        for (p, route) in routes.iter_mut() {
            match route {
                Route::Local => *route = Route::Forward,
                Route::Switching { marker, .. } => *marker = self.send_marker(inner, *p),
                Route::Forward => {}
            }
        }
    }

    /// Local deliveries of `partitions` not finished yet.
    pub(crate) fn busy(&self, partitions: &[i32]) -> usize {
        let busy = self.busy_map();
        partitions.iter().filter_map(|p| busy.get(p)).sum()
    }

    /// One local delivery to an agent of inbox partition `owner` finished.
    pub(crate) fn finished(&self, owner: i32) {
        if let Some(n) = self.busy_map().get_mut(&owner) {
            *n = n.saturating_sub(1);
        }
    }

    fn deliver(&self, inner: &Inner, owner: i32, held: Held) {
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
            Ok(event) => inbox::deliver_event(inner, owner, event, original, &done, Some(self)),
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

    /// `n` local deliveries to agents of inbox partition `owner` are about to start.
    pub(crate) fn reserve(&self, owner: i32, n: usize) {
        *self.busy_map().entry(owner).or_default() += n;
    }

    /// Enqueues a marker for `partition`; returns its id. If it cannot be written, the
    /// held events are forwarded instead.
    fn send_marker(&self, inner: &Arc<Inner>, partition: i32) -> String {
        let n = self.markers.fetch_add(1, Ordering::Relaxed);
        let marker = format!("{}/{n}", inner.config.instance_id);
        let topic = inner.names.inbox(&inner.config.runtime_name);
        let headers = OwnedHeaders::new().insert(Header {
            key: header::HANDOFF,
            value: Some(marker.as_bytes()),
        });
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
            .partition(partition)
            .headers(headers);
        let queued = inner.producer.send_result(record).map_err(|(e, _)| {
            crate::error::RuntimeError::Kafka(format!("producing to {topic}: {e}"))
        });
        let weak = Arc::downgrade(inner);
        let id = marker.clone();
        tokio::spawn(async move {
            if let Err(e) = outputs::acknowledged(&topic, queued).await
                && let Some(inner) = weak.upgrade()
            {
                tracing::warn!(partition, error = %e, "handoff marker not written; forwarding held events");
                inner.handoff.marker_failed(&inner, partition, &id);
            }
        });
        marker
    }

    fn marker_failed(&self, inner: &Inner, partition: i32, marker: &str) {
        let mut routes = self.routes();
        for held in end_switch(&mut routes, partition, marker.as_bytes(), Route::Forward) {
            forward(inner, held.event);
        }
    }
}

/// If `partition` is switching and waits for `marker`, puts it in state `next` and
/// returns the events it held (in order); otherwise nothing changes.
fn end_switch(
    routes: &mut HashMap<i32, Route>,
    partition: i32,
    marker: &[u8],
    next: Route,
) -> Vec<Held> {
    match routes.get_mut(&partition) {
        Some(route @ Route::Switching { .. }) => match std::mem::replace(route, next) {
            Route::Switching { marker: m, held } if m.as_bytes() == marker => held,
            other => {
                *route = other;
                Vec::new()
            }
        },
        _ => Vec::new(),
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
    let queued = outputs::enqueue_envelope(&inner.producer, &inbox, &key, &delivery);
    tokio::spawn(async move {
        match outputs::acknowledged(&inbox, queued).await {
            Ok(_) => done.done(p, o),
            Err(e) => {
                tracing::error!(error = %e, "forwarding an event failed; it stays uncommitted")
            }
        }
    });
}
