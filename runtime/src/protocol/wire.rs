//! The wire format: CloudEvents 1.0 in Kafka binary content mode (DESIGN.md §4).
//!
//! Attributes travel in `ce_*` headers, the data is the record value, its media type
//! is the `content-type` header. Extension names follow AutoGen's CloudEvent mapping
//! (`agmsgkind`, `agagentsendertype`, `agagentsenderkey`) so its tooling can read our
//! events; RPC adds `agrecipienttype`/`agrecipientkey`, `agrequestid`, `agreplyto`,
//! `agdeadline`. Every record also carries W3C `traceparent` (and `tracestate`).
//! `docs/protocol.md` shows each record kind; a test keeps it true.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::ids::{AgentId, TopicId};
use crate::message::{JSON, Payload};
use crate::trace::TraceContext;

/// Header names.
pub mod header {
    /// CloudEvents spec version (always `1.0`).
    pub const SPECVERSION: &str = "ce_specversion";
    /// Unique event id.
    pub const ID: &str = "ce_id";
    /// Event source.
    pub const SOURCE: &str = "ce_source";
    /// Event type.
    pub const TYPE: &str = "ce_type";
    /// Event time (RFC 3339, UTC).
    pub const TIME: &str = "ce_time";
    /// Message type name of the data.
    pub const DATASCHEMA: &str = "ce_dataschema";
    /// Media type of the data (Kafka binding: `content-type`, not `ce_datacontenttype`).
    pub const CONTENT_TYPE: &str = "content-type";
    /// `publish`, `rpc_request`, `rpc_response` or `error` (AutoGen).
    pub const MSGKIND: &str = "ce_agmsgkind";
    /// Sending agent's type (AutoGen).
    pub const SENDER_TYPE: &str = "ce_agagentsendertype";
    /// Sending agent's key (AutoGen).
    pub const SENDER_KEY: &str = "ce_agagentsenderkey";
    /// RPC recipient's type.
    pub const RECIPIENT_TYPE: &str = "ce_agrecipienttype";
    /// RPC recipient's key.
    pub const RECIPIENT_KEY: &str = "ce_agrecipientkey";
    /// Event delivery into an inbox: the recipient agent types, comma-separated.
    pub const RECIPIENT_TYPES: &str = "ce_agrecipienttypes";
    /// RPC request id, echoed by the response.
    pub const REQUEST_ID: &str = "ce_agrequestid";
    /// Topic the response goes to (the caller's reply channel).
    pub const REPLY_TO: &str = "ce_agreplyto";
    /// When the caller stops waiting, Unix milliseconds.
    pub const DEADLINE: &str = "ce_agdeadline";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// Dead letters: why the record was dead-lettered.
    pub const DLQ_REASON: &str = "switchboard_dlq_reason";
    /// Dead letters: topic, partition and offset the record came from.
    pub const DLQ_ORIGIN: &str = "switchboard_dlq_origin";
    /// The one header of an inbox marker (a record without key or value) a replica
    /// writes before it delivers that partition's events locally; the header's value
    /// names the replica and the marker.
    pub const HANDOFF: &str = "switchboard_handoff";

    /// Every header name decoding reads, in the order of its lookup slots.
    pub const DECODED: [&str; 18] = [
        SPECVERSION,
        ID,
        SOURCE,
        TYPE,
        TIME,
        DATASCHEMA,
        CONTENT_TYPE,
        MSGKIND,
        SENDER_TYPE,
        SENDER_KEY,
        RECIPIENT_TYPE,
        RECIPIENT_KEY,
        RECIPIENT_TYPES,
        REQUEST_ID,
        REPLY_TO,
        DEADLINE,
        TRACEPARENT,
        TRACESTATE,
    ];
}

/// `ce_agmsgkind` values.
pub mod kind {
    /// A published event (also its delivery into an inbox).
    pub const PUBLISH: &str = "publish";
    /// An RPC request.
    pub const RPC_REQUEST: &str = "rpc_request";
    /// An RPC response.
    pub const RPC_RESPONSE: &str = "rpc_response";
    /// An RPC that failed.
    pub const ERROR: &str = "error";
}

/// `ce_type` of an RPC response without a reply.
pub const EMPTY_RESPONSE_TYPE: &str = "switchboard.rpc.empty";
/// `ce_type` of an RPC error.
pub const ERROR_TYPE: &str = "switchboard.rpc.error";

/// Why a record could not be decoded; becomes the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A required header is absent.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header has a bad value.
    #[error("invalid header {name}: {reason}")]
    Invalid {
        /// The header.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// How an RPC failed, as carried by an `error` record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RpcFailure {
    /// `handler`, `decode`, `unknown_message_type`, `unknown_agent_type`, `not_local`,
    /// `expired`, `rejected`, `stopped`.
    pub kind: String,
    /// Human-readable message.
    pub error: String,
    /// `decode`: the message type the handler could not decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
}

/// The body of a record, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// An event on a topic. `recipient_types` is empty on the events topic and names
    /// the receiving agent types when the event is delivered into an inbox.
    Event {
        /// Where it was published.
        topic: TopicId,
        /// Who published it.
        sender: Option<AgentId>,
        /// Agent types to deliver to (inbox deliveries only).
        recipient_types: Vec<String>,
        /// The message.
        payload: Payload,
    },
    /// An RPC request.
    Request {
        /// Echoed by the response.
        request_id: String,
        /// Who handles it.
        recipient: AgentId,
        /// Who calls.
        sender: Option<AgentId>,
        /// The caller's reply channel.
        reply_to: String,
        /// Unix ms after which the caller no longer waits.
        deadline_ms: u64,
        /// The message.
        payload: Payload,
    },
    /// A successful RPC response; `None` when the handler returned nothing.
    Response {
        /// The request answered.
        request_id: String,
        /// The reply.
        payload: Option<Payload>,
    },
    /// A failed RPC.
    Error {
        /// The request answered.
        request_id: String,
        /// What failed.
        failure: RpcFailure,
    },
}

/// One record: CloudEvent id, source, time, trace context and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `ce_id`: unique per record (the handler's `ctx.message_id`).
    pub id: String,
    /// `ce_source`.
    pub source: String,
    /// `ce_time` as Unix ms.
    pub time_ms: Option<u64>,
    /// `traceparent` / `tracestate`.
    pub trace: Option<TraceContext>,
    /// What the record carries.
    pub body: Body,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl Envelope {
    /// A new envelope with a fresh id, the current time and `trace` (or a new trace).
    pub fn new(source: impl Into<String>, trace: Option<TraceContext>, body: Body) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            source: source.into(),
            time_ms: Some(now_ms()),
            trace: Some(trace.unwrap_or_else(TraceContext::new_root)),
            body,
        }
    }

    /// Kafka headers and value for this envelope.
    pub fn encode(&self) -> (OwnedHeaders, Bytes) {
        // Values borrow from the envelope where they can: this runs for every record
        // produced, and librdkafka copies each header anyway.
        // Time and deadline are formatted into these (no `format!`, no allocation).
        let (mut time_buf, mut deadline_buf) = ([0u8; RFC3339_LEN], [0u8; 20]);
        let mut h = Vec::<(&'static str, Cow<'_, str>)>::with_capacity(14);
        h.push((header::SPECVERSION, Cow::Borrowed("1.0")));
        h.push((header::ID, Cow::Borrowed(&self.id)));
        // AutoGen maps an event's topic to type = topic type, source = topic source.
        let source = match &self.body {
            Body::Event { topic, .. } => topic.source(),
            _ => self.source.as_str(),
        };
        h.push((header::SOURCE, Cow::Borrowed(source)));
        if let Some(t) = self.time_ms {
            h.push((header::TIME, rfc3339_into(t, &mut time_buf)));
        }
        if let Some(trace) = &self.trace {
            h.push((header::TRACEPARENT, Cow::Owned(trace.traceparent())));
            if let Some(ts) = &trace.tracestate {
                h.push((header::TRACESTATE, Cow::Borrowed(ts)));
            }
        }
        fn push_sender<'a>(h: &mut Vec<(&'static str, Cow<'a, str>)>, sender: &'a Option<AgentId>) {
            if let Some(s) = sender {
                h.push((header::SENDER_TYPE, Cow::Borrowed(s.agent_type())));
                h.push((header::SENDER_KEY, Cow::Borrowed(s.key())));
            }
        }
        fn push_payload<'a>(h: &mut Vec<(&'static str, Cow<'a, str>)>, p: &'a Payload) {
            h.push((header::DATASCHEMA, Cow::Borrowed(&p.type_name)));
            h.push((header::CONTENT_TYPE, Cow::Borrowed(&p.content_type)));
        }
        let value = match &self.body {
            Body::Event {
                topic,
                sender,
                recipient_types,
                payload,
            } => {
                h.push((header::MSGKIND, Cow::Borrowed(kind::PUBLISH)));
                h.push((header::TYPE, Cow::Borrowed(topic.topic_type())));
                push_sender(&mut h, sender);
                if !recipient_types.is_empty() {
                    h.push((
                        header::RECIPIENT_TYPES,
                        Cow::Owned(recipient_types.join(",")),
                    ));
                }
                push_payload(&mut h, payload);
                payload.data.clone()
            }
            Body::Request {
                request_id,
                recipient,
                sender,
                reply_to,
                deadline_ms,
                payload,
            } => {
                h.push((header::MSGKIND, Cow::Borrowed(kind::RPC_REQUEST)));
                h.push((header::TYPE, Cow::Borrowed(&payload.type_name)));
                h.push((
                    header::RECIPIENT_TYPE,
                    Cow::Borrowed(recipient.agent_type()),
                ));
                h.push((header::RECIPIENT_KEY, Cow::Borrowed(recipient.key())));
                push_sender(&mut h, sender);
                h.push((header::REQUEST_ID, Cow::Borrowed(request_id)));
                h.push((header::REPLY_TO, Cow::Borrowed(reply_to)));
                h.push((
                    header::DEADLINE,
                    Cow::Borrowed(decimal_into(*deadline_ms, &mut deadline_buf)),
                ));
                push_payload(&mut h, payload);
                payload.data.clone()
            }
            Body::Response {
                request_id,
                payload,
            } => {
                h.push((header::MSGKIND, Cow::Borrowed(kind::RPC_RESPONSE)));
                h.push((header::REQUEST_ID, Cow::Borrowed(request_id)));
                match payload {
                    Some(p) => {
                        h.push((header::TYPE, Cow::Borrowed(&p.type_name)));
                        push_payload(&mut h, p);
                        p.data.clone()
                    }
                    None => {
                        h.push((header::TYPE, Cow::Borrowed(EMPTY_RESPONSE_TYPE)));
                        Bytes::new()
                    }
                }
            }
            Body::Error {
                request_id,
                failure,
            } => {
                h.push((header::MSGKIND, Cow::Borrowed(kind::ERROR)));
                h.push((header::TYPE, Cow::Borrowed(ERROR_TYPE)));
                h.push((header::REQUEST_ID, Cow::Borrowed(request_id)));
                h.push((header::CONTENT_TYPE, Cow::Borrowed(JSON)));
                // Serialising a struct of two strings cannot fail.
                Bytes::from(serde_json::to_vec(failure).unwrap_or_default())
            }
        };
        let headers = h
            .iter()
            .fold(OwnedHeaders::new_with_capacity(h.len()), |acc, (k, v)| {
                acc.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            });
        (headers, value)
    }

    /// Decodes a record from its headers and value.
    pub fn decode(headers: Option<&impl Headers>, value: Option<&[u8]>) -> Result<Self, WireError> {
        Self::decode_shared(headers, Bytes::copy_from_slice(value.unwrap_or_default()))
    }

    /// [`Envelope::decode`] of a value already in a [`Bytes`]: the payload shares it.
    pub fn decode_shared(headers: Option<&impl Headers>, data: Bytes) -> Result<Self, WireError> {
        let pairs = headers
            .into_iter()
            .flat_map(|h| h.iter().map(|h| (h.key, h.value)));
        Self::decode_view(&HeaderView::new(pairs), data)
    }

    /// [`Envelope::decode_shared`] of headers already read out of the record, as
    /// `(name, value)` in record order: a caller that copied the record's headers
    /// (`kafka::original::Original::headers`) decodes from that copy instead of asking
    /// librdkafka for each header again (a C call, `strlen` and UTF-8 check per header).
    pub fn decode_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
        data: Bytes,
    ) -> Result<Self, WireError> {
        Self::decode_view(&HeaderView::new(pairs), data)
    }

    fn decode_view(found: &HeaderView<'_>, data: Bytes) -> Result<Self, WireError> {
        let spec = found.required(header::SPECVERSION)?;
        if spec != "1.0" {
            return Err(WireError::Invalid {
                name: header::SPECVERSION,
                reason: format!("unsupported version {spec:?}"),
            });
        }
        let id = found.required(header::ID)?.to_owned();
        let source = found.required(header::SOURCE)?.to_owned();
        let time_ms = found.get(header::TIME).and_then(parse_rfc3339);
        let trace = found
            .get(header::TRACEPARENT)
            .and_then(|tp| TraceContext::parse(tp, found.get(header::TRACESTATE)));
        let payload = |f: &HeaderView<'_>| -> Result<Payload, WireError> {
            Ok(Payload {
                type_name: f.required(header::DATASCHEMA)?.to_owned(),
                content_type: f.get(header::CONTENT_TYPE).unwrap_or(JSON).to_owned(),
                data: data.clone(),
            })
        };
        let sender = agent_id(found, header::SENDER_TYPE, header::SENDER_KEY)?;
        let body = match found.required(header::MSGKIND)? {
            kind::PUBLISH => {
                let topic_type = found.required(header::TYPE)?;
                let topic =
                    TopicId::new(topic_type, source.as_str()).map_err(|e| WireError::Invalid {
                        name: header::TYPE,
                        reason: e.to_string(),
                    })?;
                let recipient_types = found
                    .get(header::RECIPIENT_TYPES)
                    .map(|t| {
                        t.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                Body::Event {
                    topic,
                    sender,
                    recipient_types,
                    payload: payload(found)?,
                }
            }
            kind::RPC_REQUEST => Body::Request {
                request_id: found.required(header::REQUEST_ID)?.to_owned(),
                recipient: agent_id(found, header::RECIPIENT_TYPE, header::RECIPIENT_KEY)?
                    .ok_or(WireError::Missing(header::RECIPIENT_TYPE))?,
                sender,
                reply_to: found.required(header::REPLY_TO)?.to_owned(),
                deadline_ms: found.required(header::DEADLINE)?.parse().map_err(|e| {
                    WireError::Invalid {
                        name: header::DEADLINE,
                        reason: format!("not Unix milliseconds: {e}"),
                    }
                })?,
                payload: payload(found)?,
            },
            kind::RPC_RESPONSE => Body::Response {
                request_id: found.required(header::REQUEST_ID)?.to_owned(),
                payload: match found.get(header::DATASCHEMA) {
                    Some(_) => Some(payload(found)?),
                    None => None,
                },
            },
            kind::ERROR => Body::Error {
                request_id: found.required(header::REQUEST_ID)?.to_owned(),
                failure: serde_json::from_slice(&data).unwrap_or_else(|_| RpcFailure {
                    kind: "handler".to_owned(),
                    error: String::from_utf8_lossy(&data).into_owned(),
                    message_type: None,
                }),
            },
            other => {
                return Err(WireError::Invalid {
                    name: header::MSGKIND,
                    reason: format!("unknown kind {other:?}"),
                });
            }
        };
        Ok(Self {
            id,
            source,
            time_ms,
            trace,
            body,
        })
    }
}

/// The topic type of a record on the events topic, read from its headers alone: a
/// runtime passes over the events it has no subscription for without decoding them.
/// `None` when the record does not say it is a publish with a type (decode it to find
/// out what is wrong).
pub(crate) fn event_topic_type<H: Headers>(headers: Option<&H>) -> Option<&str> {
    let (mut msgkind, mut topic_type) = (None, None);
    // Last occurrence wins, as in `Envelope::decode`.
    for h in headers?.iter() {
        match h.key {
            header::MSGKIND => msgkind = h.value,
            header::TYPE => topic_type = h.value,
            _ => {}
        }
    }
    if msgkind? != kind::PUBLISH.as_bytes() {
        return None;
    }
    std::str::from_utf8(topic_type?).ok()
}

/// The marker id if the record is a handoff marker (see [`header::HANDOFF`]): its
/// first header is [`header::HANDOFF`]. Runs for every inbox record, so it reads one
/// header, not all of them (the marker's is its only one; an envelope starts with
/// `ce_specversion`).
pub(crate) fn handoff_marker<H: Headers>(headers: Option<&H>) -> Option<&[u8]> {
    headers?
        .try_get(0)
        .filter(|h| h.key == header::HANDOFF)
        .and_then(|h| h.value)
}

/// The headers decoding reads, found in one pass over the record's headers (last
/// occurrence wins); others are skipped. No allocation, one lookup per name.
struct HeaderView<'a> {
    values: [Option<&'a [u8]>; KNOWN],
}

/// How many header names [`slot`] knows.
const KNOWN: usize = header::DECODED.len();

/// Where [`HeaderView`] keeps header `name`, if decoding reads it: its index in
/// [`header::DECODED`] (a `match`, which is faster than searching the array; a test
/// checks the two agree).
fn slot(name: &str) -> Option<usize> {
    Some(match name {
        header::SPECVERSION => 0,
        header::ID => 1,
        header::SOURCE => 2,
        header::TYPE => 3,
        header::TIME => 4,
        header::DATASCHEMA => 5,
        header::CONTENT_TYPE => 6,
        header::MSGKIND => 7,
        header::SENDER_TYPE => 8,
        header::SENDER_KEY => 9,
        header::RECIPIENT_TYPE => 10,
        header::RECIPIENT_KEY => 11,
        header::RECIPIENT_TYPES => 12,
        header::REQUEST_ID => 13,
        header::REPLY_TO => 14,
        header::DEADLINE => 15,
        header::TRACEPARENT => 16,
        header::TRACESTATE => 17,
        _ => return None,
    })
}

impl<'a> HeaderView<'a> {
    fn new(pairs: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        let mut values = [None; KNOWN];
        for (name, value) in pairs {
            if let Some(i) = slot(name) {
                values[i] = Some(value.unwrap_or_default());
            }
        }
        Self { values }
    }

    fn raw(&self, name: &'static str) -> Option<&'a [u8]> {
        slot(name).and_then(|i| self.values[i])
    }

    fn get(&self, name: &'static str) -> Option<&'a str> {
        self.raw(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn required(&self, name: &'static str) -> Result<&'a str, WireError> {
        match self.raw(name) {
            None => Err(WireError::Missing(name)),
            Some(v) => std::str::from_utf8(v).map_err(|_| WireError::Invalid {
                name,
                reason: "not UTF-8".to_owned(),
            }),
        }
    }
}

fn agent_id(
    found: &HeaderView<'_>,
    type_header: &'static str,
    key_header: &'static str,
) -> Result<Option<AgentId>, WireError> {
    match (found.get(type_header), found.get(key_header)) {
        (None, None) => Ok(None),
        (Some(t), Some(k)) => AgentId::new(t, k)
            .map(Some)
            .map_err(|e| WireError::Invalid {
                name: type_header,
                reason: e.to_string(),
            }),
        (Some(_), None) => Err(WireError::Missing(key_header)),
        (None, Some(_)) => Err(WireError::Missing(type_header)),
    }
}

/// Formats Unix ms as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    rfc3339_into(ms, &mut [0; RFC3339_LEN]).into_owned()
}

/// Length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const RFC3339_LEN: usize = 24;

/// [`rfc3339`] written into `buf` (runs for every record produced); years past 9999
/// (five digits) are formatted the slow way.
fn rfc3339_into(ms: u64, buf: &mut [u8; RFC3339_LEN]) -> Cow<'_, str> {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    if !(0..=9999).contains(&y) {
        return Cow::Owned(format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            ms % 1000
        ));
    }
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(d));
    put(11, 2, rem / 3600);
    put(14, 2, (rem % 3600) / 60);
    put(17, 2, rem % 60);
    put(20, 3, ms % 1000);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[at] = c;
    }
    // Only ASCII digits and separators were written.
    Cow::Borrowed(std::str::from_utf8(buf).unwrap_or_default())
}

/// `n` in decimal, written into the end of `buf` (20 digits hold any u64).
fn decimal_into(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

/// Parses the RFC 3339 form [`rfc3339`] writes (UTC, optional fraction).
fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Milliseconds: the first three fraction digits, missing ones as zeros.
    let mut millis = 0;
    for i in 0..3 {
        let digit = frac
            .as_bytes()
            .get(i)
            .map_or(Some(0), |&c| char::from(c).to_digit(10).map(u64::from))?;
        millis = millis * 10 + digit;
    }
    // Fields out of range, and times before 1970 (Unix ms are unsigned), are not a time
    // we can carry: dropped rather than overflowing (found by `record_fuzz`).
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(y, m, day)).ok()?;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + millis)
}

// Howard Hinnant's civil calendar algorithms (public domain), for dates after 1970.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decoded_header_has_its_own_slot() {
        for (i, name) in header::DECODED.iter().enumerate() {
            assert_eq!(slot(name), Some(i), "{name}");
        }
        assert_eq!(slot(header::HANDOFF), None);
        assert_eq!(slot(header::DLQ_REASON), None);
    }

    fn round_trip(env: &Envelope) -> Envelope {
        let (headers, value) = env.encode();
        Envelope::decode(Some(&headers), Some(&value)).unwrap()
    }

    fn payload() -> Payload {
        Payload::json("demo.Ping", &serde_json::json!({"n": 1}))
    }

    #[test]
    fn every_kind_round_trips() {
        let sender = Some(AgentId::new("caller", "c1").unwrap());
        let bodies = vec![
            Body::Event {
                topic: TopicId::new("alerts", "k1").unwrap(),
                sender: sender.clone(),
                recipient_types: vec!["counter".into(), "relay".into()],
                payload: payload(),
            },
            Body::Request {
                request_id: "r1".into(),
                recipient: AgentId::new("echo", "a/b").unwrap(),
                sender,
                reply_to: "p.reply.x".into(),
                deadline_ms: 1_700_000_000_000,
                payload: payload(),
            },
            Body::Response {
                request_id: "r1".into(),
                payload: Some(payload()),
            },
            Body::Response {
                request_id: "r2".into(),
                payload: None,
            },
            Body::Error {
                request_id: "r3".into(),
                failure: RpcFailure {
                    kind: "handler".into(),
                    error: "boom".into(),
                    message_type: None,
                },
            },
        ];
        for body in bodies {
            let source = match &body {
                Body::Event { topic, .. } => topic.source().to_owned(),
                _ => "caller/c1".to_owned(),
            };
            let env = Envelope::new(source, None, body);
            assert_eq!(round_trip(&env), env);
        }
    }

    #[test]
    fn an_events_topic_type_is_read_from_the_headers_alone() {
        let event = Envelope::new(
            "k1",
            None,
            Body::Event {
                topic: TopicId::new("alerts", "k1").unwrap(),
                sender: None,
                recipient_types: Vec::new(),
                payload: payload(),
            },
        );
        let (headers, _) = event.encode();
        assert_eq!(event_topic_type(Some(&headers)), Some("alerts"));
        let request = Envelope::new(
            "caller/c1",
            None,
            Body::Request {
                request_id: "r1".into(),
                recipient: AgentId::new("echo", "a").unwrap(),
                sender: None,
                reply_to: "p.reply.x".into(),
                deadline_ms: 1,
                payload: payload(),
            },
        );
        let (headers, _) = request.encode();
        assert_eq!(event_topic_type(Some(&headers)), None);
        let no_type = OwnedHeaders::new().insert(Header {
            key: header::MSGKIND,
            value: Some(kind::PUBLISH),
        });
        assert_eq!(event_topic_type(Some(&no_type)), None);
        assert_eq!(event_topic_type::<OwnedHeaders>(None), None);
    }

    #[test]
    fn missing_and_bad_headers_are_named() {
        let (headers, value) = Envelope::new(
            "s",
            None,
            Body::Response {
                request_id: "r".into(),
                payload: None,
            },
        )
        .encode();
        let no_headers: Option<&OwnedHeaders> = None;
        assert_eq!(
            Envelope::decode(no_headers, Some(&value)),
            Err(WireError::Missing(header::SPECVERSION))
        );
        let bad = headers.insert(Header {
            key: header::MSGKIND,
            value: Some("gossip"),
        });
        let err = Envelope::decode(Some(&bad), Some(&value)).unwrap_err();
        assert!(err.to_string().contains("ce_agmsgkind"), "{err}");
    }

    #[test]
    fn numbers_format_without_fmt() {
        for n in [0, 7, 10, 1_795_000_030_123, u64::MAX] {
            assert_eq!(decimal_into(n, &mut [0; 20]), n.to_string());
        }
        // Past year 9999 the fast path steps aside.
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn decoding_from_copied_headers_matches_decoding_from_the_record() {
        let env = Envelope::new(
            "caller/c1",
            None,
            Body::Request {
                request_id: "r1".into(),
                recipient: AgentId::new("echo", "a").unwrap(),
                sender: Some(AgentId::new("caller", "c1").unwrap()),
                reply_to: "p.reply.x".into(),
                deadline_ms: 1_795_000_030_123,
                payload: payload(),
            },
        );
        let (headers, value) = env.encode();
        let pairs: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
        let decoded = Envelope::decode_pairs(pairs, value.clone()).unwrap();
        assert_eq!(decoded, env);
        assert_eq!(Envelope::decode(Some(&headers), Some(&value)).unwrap(), env);
    }

    #[test]
    fn a_handoff_marker_is_told_by_its_first_header() {
        let marker = OwnedHeaders::new().insert(Header {
            key: header::HANDOFF,
            value: Some("rt1-a/3"),
        });
        assert_eq!(handoff_marker(Some(&marker)), Some(&b"rt1-a/3"[..]));
        let (envelope, _) = Envelope::new(
            "s",
            None,
            Body::Response {
                request_id: "r".into(),
                payload: None,
            },
        )
        .encode();
        assert_eq!(handoff_marker(Some(&envelope)), None);
        assert_eq!(handoff_marker::<OwnedHeaders>(None), None);
        assert_eq!(handoff_marker(Some(&OwnedHeaders::new())), None);
    }

    #[test]
    fn time_formats_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(
            parse_rfc3339("2026-11-18T11:06:40.123Z"),
            Some(1_795_000_000_123)
        );
        // Other producers' precision: none, less or more than milliseconds.
        let at = |t: &str| parse_rfc3339(&format!("2026-11-18T11:06:{t}Z"));
        assert_eq!(at("40"), Some(1_795_000_000_000));
        assert_eq!(at("40.5"), Some(1_795_000_000_500));
        assert_eq!(at("40.123456"), Some(1_795_000_000_123));
        // Not a time (and no panic on a multi-byte character).
        assert_eq!(at("40.1x3"), None);
        assert_eq!(at("40.é"), None);
        // Not a time we can carry, and no overflow: before 1970, fields out of range.
        for t in [
            "1969-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00Z",
            "99999999999-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-18T18446744073709551615:00:00Z",
            "2026-11-18T11:06:99Z",
        ] {
            assert_eq!(parse_rfc3339(t), None, "{t}");
        }
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59.999Z"),
            Some(253_402_300_799_999)
        );
    }
}

/// Renders a record as `docs/protocol.md` shows it: the key, each header on its own
/// line (`name: value`), then the value.
pub fn render_record(key: &str, envelope: &Envelope) -> String {
    let (headers, value) = envelope.encode();
    let mut out = format!("key: {key}\n");
    for h in headers.iter() {
        let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
        out.push_str(&format!("{}: {v}\n", h.key));
    }
    let value = if value.is_empty() {
        "(empty)".into()
    } else {
        String::from_utf8_lossy(&value)
    };
    out.push_str(&format!("value: {value}\n"));
    out
}

#[cfg(test)]
mod protocol_doc {
    use super::*;

    /// The records `docs/protocol.md` shows, with fixed ids, times and trace ids.
    fn golden() -> Vec<(&'static str, String, Envelope)> {
        let trace = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        );
        let at = Some(1_795_000_000_123);
        let payload = Payload::json("demo.Ping", &serde_json::json!({"n": 1}));
        let env = |id: &str, source: &str, body: Body| Envelope {
            id: id.to_owned(),
            source: source.to_owned(),
            time_ms: at,
            trace: trace.clone(),
            body,
        };
        let caller = AgentId::new("planner", "p1").ok();
        let echo = AgentId::new("echo", "a").expect("valid id");
        let topic = TopicId::new("alerts", "k1").expect("valid topic");
        vec![
            (
                "publish",
                "k1".into(),
                env(
                    "6f1c",
                    "k1",
                    Body::Event {
                        topic: topic.clone(),
                        sender: caller.clone(),
                        recipient_types: vec![],
                        payload: payload.clone(),
                    },
                ),
            ),
            (
                "delivery",
                "k1".into(),
                env(
                    "6f1c",
                    "k1",
                    Body::Event {
                        topic,
                        sender: caller.clone(),
                        recipient_types: vec!["counter".into(), "relay".into()],
                        payload: payload.clone(),
                    },
                ),
            ),
            (
                "rpc_request",
                "a".into(),
                env(
                    "9a7e",
                    "planner/p1",
                    Body::Request {
                        request_id: "0d9b2c1e-5d3a-4a86-9a0e-6a1f4d2c8b11".into(),
                        recipient: echo,
                        sender: caller,
                        reply_to: "demo.reply.rt1-3f2a9c0d1e".into(),
                        deadline_ms: 1_795_000_030_123,
                        payload: payload.clone(),
                    },
                ),
            ),
            (
                "rpc_response",
                "0d9b2c1e-5d3a-4a86-9a0e-6a1f4d2c8b11".into(),
                env(
                    "b3c4",
                    "echo/a",
                    Body::Response {
                        request_id: "0d9b2c1e-5d3a-4a86-9a0e-6a1f4d2c8b11".into(),
                        payload: Some(payload),
                    },
                ),
            ),
            (
                "rpc_response_empty",
                "0d9b2c1e-5d3a-4a86-9a0e-6a1f4d2c8b11".into(),
                env(
                    "b3c5",
                    "echo/a",
                    Body::Response {
                        request_id: "0d9b2c1e-5d3a-4a86-9a0e-6a1f4d2c8b11".into(),
                        payload: None,
                    },
                ),
            ),
            (
                "error",
                "0d9b2c1e-5d3a-4a86-9a0e-6a1f4d2c8b11".into(),
                env(
                    "b3c6",
                    "echo/a",
                    Body::Error {
                        request_id: "0d9b2c1e-5d3a-4a86-9a0e-6a1f4d2c8b11".into(),
                        failure: RpcFailure {
                            kind: "handler".into(),
                            error: "boom".into(),
                            message_type: None,
                        },
                    },
                ),
            ),
        ]
    }

    /// Blocks of the form ```` ```record NAME ```` ... ```` ``` ```` in the doc.
    fn doc_blocks(doc: &str) -> Vec<(String, String)> {
        let mut blocks = Vec::new();
        let mut lines = doc.lines();
        while let Some(line) = lines.next() {
            if let Some(name) = line.strip_prefix("```record ") {
                let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
                blocks.push((name.trim().to_owned(), body.join("\n") + "\n"));
            }
        }
        blocks
    }

    #[test]
    fn docs_protocol_md_shows_exactly_what_the_encoder_writes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
        let doc = std::fs::read_to_string(path).expect("docs/protocol.md exists");
        let blocks = doc_blocks(&doc);
        let golden = golden();
        let rendered: Vec<(String, String)> = golden
            .iter()
            .map(|(name, key, env)| ((*name).to_owned(), render_record(key, env)))
            .collect();
        if std::env::var_os("SWITCHBOARD_PRINT_GOLDEN").is_some() {
            for (name, text) in &rendered {
                println!("```record {name}\n{text}```\n");
            }
        }
        assert_eq!(
            blocks.len(),
            rendered.len(),
            "docs/protocol.md must show every record kind"
        );
        for ((doc_name, doc_text), (name, text)) in blocks.iter().zip(&rendered) {
            assert_eq!(doc_name, name);
            assert_eq!(
                doc_text, text,
                "docs/protocol.md block `{name}` differs from the encoder"
            );
            // And the documented record decodes back to the same envelope.
        }
        for (_, _, env) in &golden {
            let (h, v) = env.encode();
            assert_eq!(&Envelope::decode(Some(&h), Some(&v)).expect("decodes"), env);
        }
    }
}
