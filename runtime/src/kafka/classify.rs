//! What a consumed inbox or events record is, decided from the record alone (pure: no
//! I/O, the clock and the hosted types passed in). The inbox and events workers act on
//! the verdict; `record_fuzz` feeds these functions random records, so every record a
//! broker can hand us is shown to end in one of the verdicts below, without a panic.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;

use super::delivery::LocalEvent;
use super::original::Original;
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::message::Payload;
use crate::protocol::wire::{self, Body, Envelope};
use crate::trace::TraceContext;

/// An RPC request answered with an error by this replica instead of a handler.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) trace: Option<TraceContext>,
    pub(crate) reply_to: String,
    pub(crate) request_id: String,
    pub(crate) error: RuntimeError,
}

/// An RPC request for a hosted agent type, for its handler.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) message_id: String,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) request_id: String,
    pub(crate) recipient: AgentId,
    pub(crate) sender: Option<AgentId>,
    pub(crate) reply_to: String,
    pub(crate) deadline_ms: u64,
    pub(crate) payload: Payload,
}

/// What an inbox record is.
#[allow(
    clippy::large_enum_variant,
    reason = "one per record, matched at once, never stored"
)]
pub(crate) enum InboxRecord<'m> {
    /// A local-delivery handoff marker (its one header's value).
    Marker(&'m [u8]),
    /// An event delivered into the inbox, for its recipient types' agents.
    Event(LocalEvent, Arc<Original>),
    /// An RPC request for a handler.
    Request(Request, Arc<Original>),
    /// An RPC request this replica answers with an error (expired, type not hosted).
    Reject(Rejection, Arc<Original>),
    /// Goes to the dead-letter topic with `reason`; a request's caller also hears
    /// `rejection` rather than waiting for its timeout.
    DeadLetter {
        original: Arc<Original>,
        reason: String,
        rejection: Option<Rejection>,
    },
}

/// Decides what inbox record `message` is: records larger than `max_message_bytes`
/// and records that do not decode are dead letters; requests past their deadline at
/// `now_ms` or for a type `hosts` says no to are rejected.
pub(crate) fn inbox_record<'m, M: Message>(
    message: &'m M,
    max_message_bytes: usize,
    now_ms: u64,
    hosts: impl Fn(&str) -> bool,
) -> InboxRecord<'m> {
    if let Some(marker) = wire::handoff_marker(message.headers()) {
        return InboxRecord::Marker(marker);
    }
    let original = Arc::new(Original::new(message));
    // From the copy's headers: librdkafka is not asked for each header again.
    let envelope = match Envelope::decode_pairs(original.headers(), original.payload_bytes()) {
        Ok(e) => e,
        Err(e) => {
            return InboxRecord::DeadLetter {
                original,
                reason: format!("undecodable record: {e}"),
                rejection: None,
            };
        }
    };
    let size = original.payload().map_or(0, <[u8]>::len);
    if size > max_message_bytes {
        let reason =
            format!("record of {size} bytes exceeds maxMessageBytes ({max_message_bytes})");
        let rejection = match &envelope.body {
            Body::Request {
                request_id,
                recipient,
                reply_to,
                ..
            } => Some(Rejection {
                trace: envelope.trace.clone(),
                reply_to: reply_to.clone(),
                request_id: request_id.clone(),
                error: RuntimeError::Rejected {
                    agent: recipient.to_string(),
                    reason: reason.clone(),
                },
            }),
            _ => None,
        };
        return InboxRecord::DeadLetter {
            original,
            reason,
            rejection,
        };
    }
    let Envelope {
        id: message_id,
        trace,
        body,
        ..
    } = envelope;
    match body {
        Body::Event {
            topic,
            sender,
            recipient_types,
            payload,
        } => {
            let event = LocalEvent {
                message_id,
                trace,
                topic,
                sender,
                recipient_types,
                payload,
            };
            InboxRecord::Event(event, original)
        }
        Body::Request {
            request_id,
            recipient,
            sender,
            reply_to,
            deadline_ms,
            payload,
        } => {
            let error = if deadline_ms < now_ms {
                Some(RuntimeError::Timeout {
                    agent: recipient.clone(),
                    after: Duration::ZERO,
                })
            } else if !hosts(recipient.agent_type()) {
                Some(RuntimeError::UnknownAgentType(
                    recipient.agent_type().to_owned(),
                ))
            } else {
                None
            };
            if let Some(error) = error {
                let rejection = Rejection {
                    trace,
                    reply_to,
                    request_id,
                    error,
                };
                return InboxRecord::Reject(rejection, original);
            }
            let request = Request {
                message_id,
                trace,
                request_id,
                recipient,
                sender,
                reply_to,
                deadline_ms,
                payload,
            };
            InboxRecord::Request(request, original)
        }
        Body::Response { .. } | Body::Error { .. } => InboxRecord::DeadLetter {
            original,
            reason: "an RPC reply does not belong in an inbox".to_owned(),
            rejection: None,
        },
    }
}

/// What an events-topic record is.
#[allow(
    clippy::large_enum_variant,
    reason = "one per record, matched at once, never stored"
)]
pub(crate) enum EventsRecord {
    /// No agent type of this runtime receives it (most events are for other runtimes).
    NotOurs,
    /// Another kind of record than an event: skipped with a warning.
    NotAnEvent,
    /// Goes to the dead-letter topic with `reason`.
    DeadLetter {
        original: Arc<Original>,
        reason: String,
    },
    /// The delivery for this runtime's `recipient_types` (filled in), keyed by the
    /// topic source.
    Deliver {
        original: Arc<Original>,
        delivery: Envelope,
        key: Vec<u8>,
    },
}

/// Decides what events record `message` is; `recipient_types` are this runtime's agent
/// types subscribed to a topic type.
pub(crate) fn events_record<M: Message>(
    message: &M,
    recipient_types: impl Fn(&str) -> Vec<String>,
) -> EventsRecord {
    // Most events are for other runtimes: look at the type header before decoding.
    let early = wire::event_topic_type(message.headers()).map(&recipient_types);
    if early.as_ref().is_some_and(Vec::is_empty) {
        return EventsRecord::NotOurs;
    }
    // One copy of the record, decoded from its headers (librdkafka is not asked for
    // each header again) and kept for a local delivery's dead letters and spans; the
    // payload shares its buffer.
    let original = Arc::new(Original::new(message));
    let envelope = match Envelope::decode_pairs(original.headers(), original.payload_bytes()) {
        Ok(e) => e,
        Err(e) => {
            return EventsRecord::DeadLetter {
                original,
                reason: format!("undecodable event: {e}"),
            };
        }
    };
    let Envelope {
        id,
        source,
        time_ms,
        trace,
        body,
    } = envelope;
    let Body::Event {
        topic,
        sender,
        payload,
        ..
    } = body
    else {
        return EventsRecord::NotAnEvent;
    };
    let recipient_types = early.unwrap_or_else(|| recipient_types(topic.topic_type()));
    if recipient_types.is_empty() {
        return EventsRecord::NotOurs;
    }
    let key = topic.source().as_bytes().to_vec();
    let delivery = Envelope {
        id,
        source,
        time_ms,
        trace,
        body: Body::Event {
            topic,
            sender,
            recipient_types,
            payload,
        },
    };
    EventsRecord::Deliver {
        original,
        delivery,
        key,
    }
}
