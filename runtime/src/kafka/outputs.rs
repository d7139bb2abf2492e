//! Records the runtime produces: replies, dead letters, state snapshots, registry
//! entries. Each call returns once the broker acknowledged the record, which is what
//! lets an input offset be committed only after its outputs are safe.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::original::Original;
use crate::error::RuntimeError;
use crate::wire::{Envelope, header};

/// How long a record may wait in the producer queue (broker down) before failing.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Produces one record and waits for the broker's acknowledgement.
pub(crate) async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    headers: Option<OwnedHeaders>,
    value: Option<&[u8]>,
) -> Result<(i32, i64), RuntimeError> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    match producer.send(record, QUEUE_TIMEOUT).await {
        Ok(d) => Ok((d.partition, d.offset)),
        Err((e, _)) => Err(RuntimeError::Kafka(format!("producing to {topic}: {e}"))),
    }
}

/// Produces an envelope keyed by `key`.
pub(crate) async fn produce_envelope(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    envelope: &Envelope,
) -> Result<(i32, i64), RuntimeError> {
    let (headers, value) = envelope.encode();
    produce(producer, topic, None, key, Some(headers), Some(&value)).await
}

/// Copies `original` to the dead-letter topic with its headers, adding the reason and
/// where it came from.
pub(crate) async fn dead_letter(
    producer: &FutureProducer,
    dlq_topic: &str,
    original: &Original,
    reason: &str,
) -> Result<(), RuntimeError> {
    let origin = format!(
        "{}/{}/{}",
        original.topic(),
        original.partition(),
        original.offset()
    );
    let mut headers = OwnedHeaders::new();
    for (key, value) in original.headers() {
        headers = headers.insert(Header { key, value });
    }
    headers = headers
        .insert(Header {
            key: header::DLQ_REASON,
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: header::DLQ_ORIGIN,
            value: Some(origin.as_bytes()),
        });
    let key = original.key().unwrap_or_default();
    tracing::warn!(%origin, %reason, "dead-lettering record");
    produce(
        producer,
        dlq_topic,
        None,
        key,
        Some(headers),
        original.payload(),
    )
    .await
    .map(|_| ())
}

/// A record handed to the producer, not yet acknowledged.
pub(crate) type Queued = Result<rdkafka::producer::DeliveryFuture, RuntimeError>;

/// Hands an envelope to the producer at once (keeping call order per partition);
/// await [`acknowledged`] for the broker's answer.
pub(crate) fn enqueue_envelope(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    envelope: &Envelope,
) -> Queued {
    let (headers, value) = envelope.encode();
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .key(key)
        .payload(value.as_ref())
        .headers(headers);
    producer
        .send_result(record)
        .map_err(|(e, _)| RuntimeError::Kafka(format!("producing to {topic}: {e}")))
}

/// Waits for the broker to acknowledge a record from [`enqueue_envelope`].
pub(crate) async fn acknowledged(topic: &str, queued: Queued) -> Result<(i32, i64), RuntimeError> {
    match queued?.await {
        Ok(Ok(d)) => Ok((d.partition, d.offset)),
        Ok(Err((e, _))) => Err(RuntimeError::Kafka(format!("producing to {topic}: {e}"))),
        Err(_) => Err(RuntimeError::Kafka(format!(
            "producing to {topic}: producer dropped"
        ))),
    }
}
