//! When an event may skip the inbox topic: the route state machine of local delivery
//! (DESIGN.md §3 "local delivery is an optimisation that must keep the one-owner
//! rule"). Pure: no Kafka, no tokio; what it decides is carried out through
//! [`HandoffIo`] (see `local_delivery` for the Kafka side), so the rules below are unit
//! tested here.
//!
//! When this replica owns the inbox partition an event's key maps to, the events
//! consumer can put the event straight into the agent's mailbox instead of forwarding
//! it through the inbox topic. Owning the partition is not enough for per-key order:
//! forwards made earlier, by this replica or by an earlier owner of the event's events
//! partition, may still sit unread in the inbox partition, and a local delivery would
//! overtake them. So each owned inbox partition starts in *forward* mode and switches
//! like this:
//! 1. The first event for it sends a *marker* record into the inbox partition (after
//!    every forward this producer enqueued before, same partition, so the log has it
//!    after them) and holds that event and the ones after it.
//! 2. When the inbox consumer reads the marker, everything before it is in the
//!    mailboxes already; the held events follow in order and the partition is *local*.
//! 3. A new events-partition assignment may bring an earlier owner's unread forwards,
//!    so every partition goes back to step 1. Losing the inbox partition forwards what
//!    is held, and revocation waits for local deliveries like for inbox records.
//! 4. An event for an agent type not registered in this replica (yet: a program may
//!    register its types after `start`) is forwarded, and its partition goes back to
//!    forward mode (what it held forwarded first): its turn may wait in the inbox for
//!    the registration, a local delivery may not (the events record is not the
//!    inbox's to hand to the next owner), and no later local delivery may overtake it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What the state machine asks for. Called with the machine's lock held, so that a
/// marker being read or a partition being revoked on another thread cannot reorder
/// deliveries: implementations only enqueue (never block on the broker).
pub(crate) trait HandoffIo<E> {
    /// Forward `event` through the inbox topic.
    fn forward(&self, event: E);
    /// Put `event` into the mailboxes of its agents in inbox partition `owner`.
    fn deliver(&self, owner: i32, event: E);
    /// Enqueue marker record `marker` into inbox partition `partition`.
    fn send_marker(&self, partition: i32, marker: &str);
}

enum Route<E> {
    /// Owned, not switched yet: the next event starts the switch.
    Forward,
    /// A marker is on its way; events wait here until the inbox consumer reads it.
    Switching { marker: String, held: Vec<E> },
    /// Events go to the mailboxes directly.
    Local,
}

/// Per inbox partition this replica owns: how events for it are delivered, and how
/// many local deliveries are still running (revocation waits for them).
pub(crate) struct Handoff<E> {
    /// Names this process's markers, so a marker written by another replica (or an
    /// earlier switch of this one) is never taken for the one awaited.
    instance: String,
    routes: Mutex<HashMap<i32, Route<E>>>,
    busy: Mutex<HashMap<i32, usize>>,
    markers: AtomicU64,
}

impl<E> Handoff<E> {
    /// No partition owned yet; markers are named `<instance>/<n>`.
    pub(crate) fn new(instance: impl Into<String>) -> Self {
        Self {
            instance: instance.into(),
            routes: Mutex::default(),
            busy: Mutex::default(),
            markers: AtomicU64::new(0),
        }
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<i32, Route<E>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn busy_map(&self) -> MutexGuard<'_, HashMap<i32, usize>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers `event` for inbox partition `owner`: delivered locally, held for the
    /// switch (both through `hold`, which is only called then), or handed back when
    /// this replica does not own `owner` or cannot handle the event here
    /// (`handles_here` false, asked only when it owns `owner`), for the caller to
    /// forward. Only the events consumer offers, one event at a time, so forwarding a
    /// handed-back event after this returns keeps its order.
    pub(crate) fn offer<O>(
        &self,
        io: &impl HandoffIo<E>,
        owner: i32,
        event: O,
        handles_here: impl FnOnce(&O) -> bool,
        hold: impl FnOnce(O) -> E,
    ) -> Option<O> {
        let mut routes = self.routes();
        match routes.get_mut(&owner) {
            None => return Some(event),
            Some(route) if !handles_here(&event) => {
                // Rule 4: what was held goes ahead of it, later events switch again.
                if let Route::Switching { held, .. } = std::mem::replace(route, Route::Forward) {
                    for e in held {
                        io.forward(e);
                    }
                }
                return Some(event);
            }
            Some(Route::Local) => io.deliver(owner, hold(event)),
            Some(Route::Switching { held, .. }) => held.push(hold(event)),
            Some(route @ Route::Forward) => {
                let marker = self.next_marker();
                io.send_marker(owner, &marker);
                *route = Route::Switching {
                    marker,
                    held: vec![hold(event)],
                };
            }
        }
        None
    }

    /// The inbox consumer read a marker in `partition`: if it is the one this replica
    /// waits for, the held events go to the mailboxes and the partition is local.
    pub(crate) fn marker_read(&self, io: &impl HandoffIo<E>, partition: i32, marker: &[u8]) {
        let mut routes = self.routes();
        for event in end_switch(&mut routes, partition, marker, Route::Local) {
            io.deliver(partition, event);
        }
    }

    /// Marker `marker` could not be written: what it held is forwarded, and the next
    /// event starts a new switch.
    pub(crate) fn marker_failed(&self, io: &impl HandoffIo<E>, partition: i32, marker: &str) {
        let mut routes = self.routes();
        for event in end_switch(&mut routes, partition, marker.as_bytes(), Route::Forward) {
            io.forward(event);
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
    pub(crate) fn inbox_revoking(&self, io: &impl HandoffIo<E>, partitions: &[i32]) {
        let mut routes = self.routes();
        for p in partitions {
            if let Some(Route::Switching { held, .. }) = routes.remove(p) {
                for event in held {
                    io.forward(event);
                }
            }
        }
    }

    /// Events partitions were assigned: an earlier owner's forwards may be unread in
    /// any inbox partition, so every partition switches again (a held partition waits
    /// for a new marker).
    pub(crate) fn events_assigned(&self, io: &impl HandoffIo<E>) {
        let mut routes = self.routes();
        for (p, route) in routes.iter_mut() {
            match route {
                Route::Local => *route = Route::Forward,
                Route::Switching { marker, .. } => {
                    *marker = self.next_marker();
                    io.send_marker(*p, marker);
                }
                Route::Forward => {}
            }
        }
    }

    /// `n` local deliveries to agents of inbox partition `owner` are about to start
    /// (called before they are pushed: a handler may finish before the push returns).
    pub(crate) fn reserve(&self, owner: i32, n: usize) {
        *self.busy_map().entry(owner).or_default() += n;
    }

    /// One local delivery to an agent of inbox partition `owner` finished.
    pub(crate) fn finished(&self, owner: i32) {
        if let Some(n) = self.busy_map().get_mut(&owner) {
            *n = n.saturating_sub(1);
        }
    }

    /// Local deliveries of `partitions` not finished yet.
    pub(crate) fn busy(&self, partitions: &[i32]) -> usize {
        let busy = self.busy_map();
        partitions.iter().filter_map(|p| busy.get(p)).sum()
    }

    fn next_marker(&self) -> String {
        let n = self.markers.fetch_add(1, Ordering::Relaxed);
        format!("{}/{n}", self.instance)
    }
}

/// If `partition` is switching and waits for `marker`, puts it in state `next` and
/// returns the events it held (in order); otherwise nothing changes.
fn end_switch<E>(
    routes: &mut HashMap<i32, Route<E>>,
    partition: i32,
    marker: &[u8],
    next: Route<E>,
) -> Vec<E> {
    let awaited = matches!(
        routes.get(&partition),
        Some(Route::Switching { marker: m, .. }) if m.as_bytes() == marker
    );
    if !awaited {
        return Vec::new();
    }
    match routes.insert(partition, next) {
        Some(Route::Switching { held, .. }) => held,
        Some(Route::Forward | Route::Local) | None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Did {
        Forward(u32),
        Deliver(i32, u32),
        Marker(i32, String),
    }

    #[derive(Default)]
    struct Recorder(RefCell<Vec<Did>>);

    impl HandoffIo<u32> for Recorder {
        fn forward(&self, event: u32) {
            self.0.borrow_mut().push(Did::Forward(event));
        }
        fn deliver(&self, owner: i32, event: u32) {
            self.0.borrow_mut().push(Did::Deliver(owner, event));
        }
        fn send_marker(&self, partition: i32, marker: &str) {
            self.0
                .borrow_mut()
                .push(Did::Marker(partition, marker.to_owned()));
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<Did> {
            std::mem::take(&mut self.0.borrow_mut())
        }
    }

    fn offer(h: &Handoff<u32>, io: &Recorder, owner: i32, event: u32) -> Option<u32> {
        h.offer(io, owner, event, |_| true, |e| e)
    }

    /// Offers `event` as one this replica cannot handle (its type not registered).
    fn offer_unhandled(h: &Handoff<u32>, io: &Recorder, owner: i32, event: u32) -> Option<u32> {
        h.offer(io, owner, event, |_| false, |e| e)
    }

    #[test]
    fn events_for_partitions_not_owned_are_handed_back_unheld() {
        let (h, io) = (Handoff::new("r1"), Recorder::default());
        let mut held = false;
        assert_eq!(
            h.offer(
                &io,
                0,
                7,
                |_| true,
                |e| {
                    held = true;
                    e
                }
            ),
            Some(7)
        );
        assert!(!held, "an event to forward pays for no copy");
        assert!(io.take().is_empty());
    }

    #[test]
    fn a_switch_holds_events_until_its_marker_is_read_then_delivers_them_in_order() {
        let (h, io) = (Handoff::new("r1"), Recorder::default());
        h.inbox_assigned(&[2]);
        assert_eq!(offer(&h, &io, 2, 1), None);
        assert_eq!(offer(&h, &io, 2, 2), None);
        assert_eq!(io.take(), vec![Did::Marker(2, "r1/0".into())]);

        // Another replica's marker, or one in another partition, changes nothing.
        h.marker_read(&io, 2, b"r2/0");
        h.marker_read(&io, 3, b"r1/0");
        assert!(io.take().is_empty());

        h.marker_read(&io, 2, b"r1/0");
        assert_eq!(io.take(), vec![Did::Deliver(2, 1), Did::Deliver(2, 2)]);
        assert_eq!(offer(&h, &io, 2, 3), None);
        assert_eq!(io.take(), vec![Did::Deliver(2, 3)]);
        // A marker read twice (a replay) delivers nothing again.
        h.marker_read(&io, 2, b"r1/0");
        assert!(io.take().is_empty());
    }

    #[test]
    fn a_new_events_assignment_switches_every_partition_again() {
        let (h, io) = (Handoff::new("r1"), Recorder::default());
        h.inbox_assigned(&[0, 1]);
        offer(&h, &io, 0, 1);
        h.marker_read(&io, 0, b"r1/0");
        offer(&h, &io, 1, 2);
        io.take();

        h.events_assigned(&io);
        // Partition 1 was switching: it waits for a new marker, the old one is stale.
        assert_eq!(io.take(), vec![Did::Marker(1, "r1/2".into())]);
        h.marker_read(&io, 1, b"r1/1");
        assert!(io.take().is_empty());
        h.marker_read(&io, 1, b"r1/2");
        assert_eq!(io.take(), vec![Did::Deliver(1, 2)]);

        // Partition 0 was local: its next event starts a new switch.
        offer(&h, &io, 0, 3);
        assert_eq!(io.take(), vec![Did::Marker(0, "r1/3".into())]);
        h.marker_read(&io, 0, b"r1/3");
        assert_eq!(io.take(), vec![Did::Deliver(0, 3)]);
    }

    #[test]
    fn revocation_forwards_held_events_in_order_and_ends_ownership() {
        let (h, io) = (Handoff::new("r1"), Recorder::default());
        h.inbox_assigned(&[0, 1]);
        for e in [1, 2, 3] {
            offer(&h, &io, 0, e);
        }
        io.take();
        h.inbox_revoking(&io, &[0]);
        assert_eq!(
            io.take(),
            vec![Did::Forward(1), Did::Forward(2), Did::Forward(3)]
        );
        assert_eq!(offer(&h, &io, 0, 4), Some(4));
        // The late marker of the revoked partition delivers nothing.
        h.marker_read(&io, 0, b"r1/0");
        assert!(io.take().is_empty());
        // Partition 1 is still owned.
        assert_eq!(offer(&h, &io, 1, 5), None);
    }

    #[test]
    fn a_failed_marker_forwards_what_it_held_and_the_next_event_retries() {
        let (h, io) = (Handoff::new("r1"), Recorder::default());
        h.inbox_assigned(&[0]);
        offer(&h, &io, 0, 1);
        offer(&h, &io, 0, 2);
        io.take();
        h.marker_failed(&io, 0, "r1/9");
        assert!(io.take().is_empty(), "not the awaited marker");
        h.marker_failed(&io, 0, "r1/0");
        assert_eq!(io.take(), vec![Did::Forward(1), Did::Forward(2)]);
        offer(&h, &io, 0, 3);
        assert_eq!(io.take(), vec![Did::Marker(0, "r1/1".into())]);
    }

    #[test]
    fn an_event_this_replica_cannot_handle_is_forwarded_behind_what_was_held() {
        let (h, io) = (Handoff::new("r1"), Recorder::default());
        h.inbox_assigned(&[0, 1]);
        // Partition 0 local, partition 1 switching with two events held.
        offer(&h, &io, 0, 1);
        h.marker_read(&io, 0, b"r1/0");
        offer(&h, &io, 1, 2);
        offer(&h, &io, 1, 3);
        io.take();

        // Handed back for the caller to forward, after the held events.
        assert_eq!(offer_unhandled(&h, &io, 1, 4), Some(4));
        assert_eq!(io.take(), vec![Did::Forward(2), Did::Forward(3)]);
        assert_eq!(offer_unhandled(&h, &io, 0, 5), Some(5));
        assert!(io.take().is_empty());
        // The stale marker of partition 1 delivers nothing.
        h.marker_read(&io, 1, b"r1/1");
        assert!(io.take().is_empty());

        // Later events do not overtake the forwarded ones: both partitions switch again.
        assert_eq!(offer(&h, &io, 0, 6), None);
        assert_eq!(offer(&h, &io, 1, 7), None);
        assert_eq!(
            io.take(),
            vec![Did::Marker(0, "r1/2".into()), Did::Marker(1, "r1/3".into())]
        );
        h.marker_read(&io, 0, b"r1/2");
        assert_eq!(io.take(), vec![Did::Deliver(0, 6)]);
        // A partition not owned is handed back without asking.
        assert_eq!(h.offer(&io, 9, 8, |_| panic!("not asked"), |e| e), Some(8));
    }

    #[test]
    fn busy_counts_reserved_local_deliveries_until_they_finish() {
        let h: Handoff<u32> = Handoff::new("r1");
        h.reserve(0, 2);
        h.reserve(1, 1);
        assert_eq!(h.busy(&[0, 1]), 3);
        h.finished(0);
        assert_eq!(h.busy(&[0]), 1);
        h.finished(0);
        h.finished(0);
        assert_eq!(h.busy(&[0]), 0, "never below zero");
        assert_eq!(h.busy(&[1, 5]), 1);
    }
}
