//! Records of a source topic (an existing Kafka topic bound by a subscription's
//! `source`) as event deliveries. Pure: `sources` does the Kafka side.
//!
//! A record with a `ce_specversion` header is a CloudEvent and is read as on the
//! events topic (`ce_type` is the topic type, `ce_source` the topic source); one
//! written by another CloudEvents producer may leave out our `ce_agmsgkind` (then it
//! is a publish) and `ce_dataschema` (then the message type is `ce_type`). Any other
//! record is plain: its topic type is the subscription's `topicType`, or the Kafka
//! topic name for a `topicTypePrefix` subscription; its topic source is the record key
//! or a header (`keyFrom`); its value is the message, JSON when it parses as JSON (or
//! its `content-type` header says so), bytes otherwise.

use bytes::Bytes;

use crate::ids::TopicId;
use crate::message::{JSON, Payload, is_json};
use crate::protocol::wire::{Body, Envelope, header, kind};
use crate::subscription::{KeyFrom, Subscription};
use crate::trace::TraceContext;

/// Message type of a plain record whose value is JSON.
pub const PLAIN_JSON_TYPE: &str = "switchboard.kafka.JsonRecord";
/// Message type of a plain record whose value is not JSON.
pub const PLAIN_BYTES_TYPE: &str = "switchboard.kafka.BytesRecord";
/// Content type of a plain record whose value is not JSON.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// One record of a source topic, as read.
pub(crate) struct SourceRecord<'a> {
    /// The Kafka topic.
    pub(crate) topic: &'a str,
    /// Where it was read.
    pub(crate) partition: i32,
    /// Where it was read.
    pub(crate) offset: i64,
    /// The record key.
    pub(crate) key: Option<&'a [u8]>,
    /// Header names and values, in record order.
    pub(crate) headers: Vec<(&'a str, Option<&'a [u8]>)>,
    /// The value (empty when none).
    pub(crate) value: Bytes,
    /// The record's timestamp, Unix ms.
    pub(crate) timestamp_ms: Option<u64>,
}

/// One event for the inbox: the recipients' key and the delivery (recipient types set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceDelivery {
    /// The inbox key (the topic source).
    pub(crate) key: Vec<u8>,
    /// The event, addressed to its recipient types.
    pub(crate) envelope: Envelope,
}

impl SourceRecord<'_> {
    /// How the record is named in dead-letter reasons and logs.
    fn name(&self) -> String {
        format!("record {}[{}]@{}", self.topic, self.partition, self.offset)
    }

    /// The last value of header `name` (as `Envelope::decode` reads headers).
    fn header(&self, name: &str) -> Option<Option<&[u8]>> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// The deliveries of `record` to `bindings` (the subscriptions reading its topic,
/// each with its `keyFrom`): one per distinct topic, naming every matching agent
/// type. Empty when no binding matches. The error says why the record cannot be
/// mapped, naming it (it is dead-lettered).
pub(crate) fn deliveries(
    record: &SourceRecord<'_>,
    bindings: &[(Subscription, KeyFrom)],
) -> Result<Vec<SourceDelivery>, String> {
    if bindings.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<SourceDelivery> = Vec::new();
    let mut add = |envelope: &Envelope, topic: &TopicId, agent_type: &str| {
        if let Some(d) = out.iter_mut().find(|d| match &d.envelope.body {
            Body::Event { topic: t, .. } => t == topic,
            _ => false,
        }) {
            if let Body::Event {
                recipient_types, ..
            } = &mut d.envelope.body
                && !recipient_types.iter().any(|t| t == agent_type)
            {
                recipient_types.push(agent_type.to_owned());
            }
            return;
        }
        let mut envelope = envelope.clone();
        if let Body::Event {
            recipient_types, ..
        } = &mut envelope.body
        {
            *recipient_types = vec![agent_type.to_owned()];
        }
        out.push(SourceDelivery {
            key: topic.source().as_bytes().to_vec(),
            envelope,
        });
    };
    if record.header(header::SPECVERSION).is_some() {
        let envelope = cloud_event(record)?;
        let Body::Event { topic, .. } = &envelope.body else {
            unreachable!("cloud_event returns events only")
        };
        for (sub, _) in bindings {
            if sub.matches(topic.topic_type()) {
                add(&envelope, topic, sub.agent_type());
            }
        }
    } else {
        let payload = plain_payload(record);
        for (sub, key_from) in bindings {
            let topic_type = match sub {
                Subscription::Type { topic_type, .. } => topic_type.as_str(),
                Subscription::TypePrefix { .. } => record.topic,
            };
            if !sub.matches(topic_type) {
                continue;
            }
            let source = topic_source(record, key_from)?;
            let topic = TopicId::new(topic_type, source.as_str())
                .map_err(|e| format!("{}: {e}", record.name()))?;
            let envelope = plain_envelope(record, &topic, payload.clone());
            add(&envelope, &topic, sub.agent_type());
        }
    }
    for d in &mut out {
        if let Body::Event {
            recipient_types, ..
        } = &mut d.envelope.body
        {
            recipient_types.sort();
        }
    }
    Ok(out)
}

/// A CloudEvents record, with our defaults for what other producers leave out.
fn cloud_event(record: &SourceRecord<'_>) -> Result<Envelope, String> {
    let ce_type = record.header(header::TYPE).flatten().unwrap_or_default();
    let mut extra: Vec<(&str, Option<&[u8]>)> = Vec::new();
    if record.header(header::MSGKIND).is_none() {
        extra.push((header::MSGKIND, Some(kind::PUBLISH.as_bytes())));
    }
    if record.header(header::DATASCHEMA).is_none() {
        extra.push((header::DATASCHEMA, Some(ce_type)));
    }
    let pairs = extra.into_iter().chain(record.headers.iter().copied());
    let envelope = Envelope::decode_pairs(pairs, record.value.clone())
        .map_err(|e| format!("{}: undecodable CloudEvent: {e}", record.name()))?;
    match envelope.body {
        Body::Event { .. } => Ok(envelope),
        _ => Err(format!(
            "{}: a CloudEvent that is not a publish ({} is not {:?})",
            record.name(),
            header::MSGKIND,
            kind::PUBLISH
        )),
    }
}

/// The topic source of a plain record, from its key or a header.
fn topic_source(record: &SourceRecord<'_>, key_from: &KeyFrom) -> Result<String, String> {
    let (bytes, what) = match key_from {
        KeyFrom::Key => (record.key, "key".to_owned()),
        KeyFrom::Header(name) => (record.header(name).flatten(), format!("header {name:?}")),
    };
    let bytes = bytes.filter(|b| !b.is_empty()).ok_or_else(|| {
        format!(
            "{}: no {what} (keyFrom {key_from}) to take the topic source from",
            record.name()
        )
    })?;
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| {
        format!(
            "{}: {what} (keyFrom {key_from}) is not UTF-8",
            record.name()
        )
    })
}

/// The message of a plain record: JSON when its content type says so or (without
/// one) when it parses as JSON; bytes otherwise.
fn plain_payload(record: &SourceRecord<'_>) -> Payload {
    let content_type = record
        .header(header::CONTENT_TYPE)
        .flatten()
        .and_then(|c| std::str::from_utf8(c).ok());
    let json = match content_type {
        Some(c) => is_json(c),
        None => {
            !record.value.is_empty()
                && serde_json::from_slice::<serde::de::IgnoredAny>(&record.value).is_ok()
        }
    };
    Payload {
        type_name: if json {
            PLAIN_JSON_TYPE
        } else {
            PLAIN_BYTES_TYPE
        }
        .to_owned(),
        content_type: content_type
            .unwrap_or(if json { JSON } else { OCTET_STREAM })
            .to_owned(),
        data: record.value.clone(),
    }
}

/// The event of a plain record. Its id names the record, so a redelivery (after a
/// crash before the commit) has the same message id.
fn plain_envelope(record: &SourceRecord<'_>, topic: &TopicId, payload: Payload) -> Envelope {
    let text = |name| {
        record
            .header(name)
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let trace = text(header::TRACEPARENT)
        .and_then(|tp| TraceContext::parse(tp, text(header::TRACESTATE)))
        .unwrap_or_else(TraceContext::new_root);
    Envelope {
        id: format!("{}/{}/{}", record.topic, record.partition, record.offset),
        source: topic.source().to_owned(),
        time_ms: record.timestamp_ms,
        trace: Some(trace),
        body: Body::Event {
            topic: topic.clone(),
            sender: None,
            recipient_types: Vec::new(),
            payload,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        key: Option<&'a [u8]>,
        headers: Vec<(&'a str, Option<&'a [u8]>)>,
        value: &'static [u8],
    ) -> SourceRecord<'a> {
        SourceRecord {
            topic: "orders",
            partition: 2,
            offset: 7,
            key,
            headers,
            value: Bytes::from_static(value),
            timestamp_ms: Some(1_000),
        }
    }

    fn exact(agent_type: &str, topic_type: &str, key_from: KeyFrom) -> (Subscription, KeyFrom) {
        let mut s = Subscription::for_type(topic_type, agent_type).unwrap();
        if let Subscription::Type { id, .. } = &mut s {
            *id = agent_type.into();
        }
        (s, key_from)
    }

    fn event(d: &SourceDelivery) -> (&TopicId, &Vec<String>, &Payload) {
        match &d.envelope.body {
            Body::Event {
                topic,
                recipient_types,
                payload,
                ..
            } => (topic, recipient_types, payload),
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn plain_json_and_bytes_records_take_the_key_and_the_topic_name() {
        let prefix = (
            Subscription::for_prefix("ord", "counter").unwrap(),
            KeyFrom::Key,
        );
        let r = record(Some(b"k1"), vec![], br#"{"n":1}"#);
        let ds = deliveries(&r, std::slice::from_ref(&prefix)).unwrap();
        assert_eq!(ds.len(), 1);
        let (topic, types, payload) = event(&ds[0]);
        assert_eq!((topic.topic_type(), topic.source()), ("orders", "k1"));
        assert_eq!(types, &vec!["counter".to_owned()]);
        assert_eq!(payload.type_name, PLAIN_JSON_TYPE);
        assert_eq!(payload.content_type, JSON);
        assert_eq!(ds[0].key, b"k1");
        assert_eq!(ds[0].envelope.id, "orders/2/7");
        let r = record(Some(b"k1"), vec![], b"\x00\xffnot json");
        let ds = deliveries(&r, &[prefix]).unwrap();
        let (_, _, payload) = event(&ds[0]);
        assert_eq!(
            (payload.type_name.as_str(), payload.content_type.as_str()),
            (PLAIN_BYTES_TYPE, OCTET_STREAM)
        );
        assert_eq!(payload.data.as_ref(), b"\x00\xffnot json");
    }

    #[test]
    fn header_key_from_and_the_topic_type_override() {
        let b = exact("relay", "order.created", KeyFrom::Header("tenant".into()));
        let r = record(
            Some(b"ignored"),
            vec![("tenant", Some(b"acme".as_slice()))],
            b"{}",
        );
        let ds = deliveries(&r, std::slice::from_ref(&b)).unwrap();
        let (topic, _, _) = event(&ds[0]);
        assert_eq!(
            (topic.topic_type(), topic.source()),
            ("order.created", "acme")
        );
        // Missing header: an error naming the record and the header.
        let r = record(Some(b"k"), vec![], b"{}");
        let e = deliveries(&r, &[b]).unwrap_err();
        assert!(e.contains("orders[2]@7") && e.contains("tenant"), "{e}");
        // No key with keyFrom key.
        let r = record(None, vec![], b"{}");
        let e = deliveries(&r, &[exact("c", "t", KeyFrom::Key)]).unwrap_err();
        assert!(e.contains("no key"), "{e}");
    }

    #[test]
    fn cloud_events_keep_their_own_type_and_source() {
        let h: Vec<(&str, Option<&[u8]>)> = vec![
            ("ce_specversion", Some(b"1.0".as_slice())),
            ("ce_id", Some(b"e1".as_slice())),
            ("ce_source", Some(b"acme".as_slice())),
            ("ce_type", Some(b"order.created".as_slice())),
        ];
        let r = record(Some(b"unused"), h.clone(), br#"{"n":1}"#);
        let bindings = [
            exact("a", "order.created", KeyFrom::Key),
            exact("b", "order.created", KeyFrom::Header("x".into())),
            exact("c", "other", KeyFrom::Key),
        ];
        let ds = deliveries(&r, &bindings).unwrap();
        assert_eq!(ds.len(), 1, "one delivery for both matching types");
        let (topic, types, payload) = event(&ds[0]);
        assert_eq!(
            (topic.topic_type(), topic.source()),
            ("order.created", "acme")
        );
        assert_eq!(types, &vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(payload.type_name, "order.created");
        assert_eq!(ds[0].envelope.id, "e1");
        // A CloudEvent missing its id is dead-lettered with a reason.
        let r = record(None, h[..1].to_vec(), b"{}");
        let e = deliveries(&r, &bindings).unwrap_err();
        assert!(e.contains("CloudEvent") && e.contains("ce_id"), "{e}");
    }

    #[test]
    fn records_nobody_matches_are_skipped() {
        let r = record(Some(b"k"), vec![], b"{}");
        assert!(deliveries(&r, &[]).unwrap().is_empty());
        let p = (Subscription::for_prefix("pay", "c").unwrap(), KeyFrom::Key);
        assert!(deliveries(&r, &[p]).unwrap().is_empty());
    }
}
