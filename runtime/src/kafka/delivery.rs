//! One event into the mailboxes of its recipients in this process: each hosted
//! recipient type's agent keyed by the topic source. Used for events forwarded
//! through the inbox and for local deliveries alike, so both follow the same rules.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::Inner;
use super::consumer_loop::{Dispatched, DoneSender};
use super::original::Original;
use super::turn::Work;
use crate::context::Delivery;
use crate::ids::{AgentId, TopicId};
use crate::message::Payload;
use crate::protocol::wire::{Body, Envelope};
use crate::trace::TraceContext;

/// An event for this runtime's agent types, decoded.
pub(crate) struct LocalEvent {
    pub(crate) message_id: String,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) topic: TopicId,
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
/// in (an inbox record, or the event itself for a `local` delivery, which the handoff
/// counts); it is reported done through `done` once every recipient handled it.
pub(crate) fn deliver_event(
    inner: &Inner,
    owner: i32,
    event: LocalEvent,
    original: Arc<Original>,
    done: &DoneSender,
    local: bool,
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
        let agents = inner.hosted.agents();
        // The types were named by this runtime's registry: one not registered here
        // (yet) gets a turn that waits for the registration or fails into the
        // dead-letter topic (`turn`); skipping it would lose the event. Local
        // deliveries are only made for registered types (`handoff`).
        recipient_types
            .iter()
            .filter(|t| !local || agents.hosts(t))
            .filter_map(|t| AgentId::new(t.as_str(), topic.source()).ok())
            .collect()
    };
    if recipients.is_empty() {
        return Dispatched::Done;
    }
    let fanout = (recipients.len() > 1).then(|| Arc::new(AtomicUsize::new(recipients.len())));
    let (partition, offset) = (original.partition(), original.offset());
    if local {
        // Before the push: a handler may finish before this function returns.
        inner.handoff.reserve(owner, recipients.len());
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
            local,
            original: Arc::clone(&original),
            done: done.clone(),
        };
        inner.hosted.push(&inner.metrics, recipient, work);
    }
    Dispatched::Pending
}
