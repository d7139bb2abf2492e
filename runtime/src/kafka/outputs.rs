//! Records the runtime produces: replies, dead letters, state snapshots, registry
//! entries, forwards and handoff markers. The async calls return once the broker
//! acknowledged the record, which is what lets an input offset be committed only
//! after its outputs are safe; the `enqueue_*` calls hand a record to the producer at
//! once (keeping call order per partition) and [`acknowledged`] waits for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};

use super::metrics::Metrics;
use super::original::Original;
use super::producer::{DeliveryFuture, GuardedProducer, Record};
use crate::error::RuntimeError;
use crate::protocol::wire::{Envelope, header};

/// The process's one producer (idempotent: order per partition is kept; replaced
/// when librdkafka orphans it, see `producer`), with the runtime's dead-letter topic.
pub(crate) struct Outputs {
    producer: GuardedProducer,
    dlq: String,
    metrics: Arc<Metrics>,
}

impl Outputs {
    /// Outputs through `producer`; dead letters go to `dlq` and are counted in `metrics`.
    pub(crate) fn new(producer: GuardedProducer, dlq: String, metrics: Arc<Metrics>) -> Self {
        Self {
            producer,
            dlq,
            metrics,
        }
    }

    /// Produces one record and waits for the broker's acknowledgement.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(i32, i64), RuntimeError> {
        produce(&self.producer, topic, partition, key, None, value).await
    }

    /// Produces an envelope keyed by `key` and waits for the acknowledgement.
    pub(crate) async fn produce_envelope(
        &self,
        topic: &str,
        key: &[u8],
        envelope: &Envelope,
    ) -> Result<(i32, i64), RuntimeError> {
        let (headers, value) = envelope.encode();
        produce(
            &self.producer,
            topic,
            None,
            key,
            Some(headers),
            Some(&value),
        )
        .await
    }

    /// Hands an envelope to the producer at once; see [`acknowledged`].
    pub(crate) fn enqueue_envelope(&self, topic: &str, key: &[u8], envelope: &Envelope) -> Queued {
        let (headers, value) = envelope.encode();
        let record = Record {
            topic,
            key: Some(key),
            value: Some(value.as_ref()),
            headers: Some(headers),
            ..Record::default()
        };
        self.producer
            .send_now(record)
            .map_err(|e| RuntimeError::kafka(format!("producing to {topic}"), e))
    }

    /// Hands a handoff marker (no key, no value) for `partition` to the producer.
    pub(crate) fn enqueue_marker(&self, topic: &str, partition: i32, marker: &str) -> Queued {
        let headers = OwnedHeaders::new().insert(Header {
            key: header::HANDOFF,
            value: Some(marker.as_bytes()),
        });
        let record = Record {
            topic,
            partition: Some(partition),
            headers: Some(headers),
            ..Record::default()
        };
        self.producer
            .send_now(record)
            .map_err(|e| RuntimeError::kafka(format!("producing to {topic}"), e))
    }

    /// Copies `original` to the dead-letter topic with its headers, adding the reason
    /// and where it came from; counted once acknowledged.
    pub(crate) async fn dead_letter(
        &self,
        original: &Original,
        reason: &str,
    ) -> Result<(), RuntimeError> {
        dead_letter(&self.producer, &self.dlq, original, reason).await?;
        self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits up to `timeout` for everything queued to be acknowledged.
    pub(crate) async fn flush(&self, timeout: Duration) -> Result<(), RuntimeError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))?
            .map_err(|e| RuntimeError::kafka("flushing the producer", e))
    }
}

/// How long a record may wait in the producer queue (broker down) before failing.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

async fn produce(
    producer: &GuardedProducer,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    headers: Option<OwnedHeaders>,
    value: Option<&[u8]>,
) -> Result<(i32, i64), RuntimeError> {
    let record = Record {
        topic,
        partition,
        key: Some(key),
        value,
        headers,
    };
    producer
        .send(record, QUEUE_TIMEOUT)
        .await
        .map_err(|e| RuntimeError::kafka(format!("producing to {topic}"), e))
}

async fn dead_letter(
    producer: &GuardedProducer,
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
pub(crate) type Queued = Result<DeliveryFuture, RuntimeError>;

/// Waits for the broker to acknowledge a record handed to the producer.
pub(crate) async fn acknowledged(topic: &str, queued: Queued) -> Result<(i32, i64), RuntimeError> {
    queued?
        .await
        .map_err(|e| RuntimeError::kafka(format!("producing to {topic}"), e))
}
