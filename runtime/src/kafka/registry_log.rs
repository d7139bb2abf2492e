//! Reading the registry topic: loaded to its end before the runtime is ready, then
//! tailed, so registrations and subscriptions change without restarts (by a [`Tail`],
//! which replaces an orphaned consumer and goes on where it was).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::guard::ClientKind;
use super::registry::RegistryView;
use super::tailing::{CurrentConsumer, Tail};
use crate::config::KafkaConfig;
use crate::error::RuntimeError;
use crate::protocol::registry::RegistryRecord;

/// The registry as this process has read it, kept current by a tail task.
pub(crate) struct RegistryLog {
    consumer: CurrentConsumer,
    topic: String,
    timeout: Duration,
    view: Arc<RwLock<RegistryView>>,
    /// Per partition: the next offset to apply.
    applied: watch::Receiver<HashMap<i32, i64>>,
    task: JoinHandle<()>,
}

impl RegistryLog {
    /// Reads `topic` from the beginning to its current end, then keeps tailing it
    /// until `shutdown`.
    pub(crate) async fn load(
        kafka: &KafkaConfig,
        topic: &str,
        group_id: &str,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> Result<Self, RuntimeError> {
        let mut tail = Tail::create(
            &kafka.consumer_config(group_id),
            ClientKind::Registry,
            topic,
        )?;
        let (partitions, ends) = {
            let c = tail.current().get();
            let topic = topic.to_owned();
            // Metadata and watermark calls block: keep them off the async threads.
            tokio::task::spawn_blocking(move || {
                super::tailing::retry_blocking(timeout, |attempt| -> Result<(Vec<i32>, HashMap<i32, i64>), RuntimeError> {
                    let md = c.fetch_metadata(Some(&topic), attempt)?;
                    let t = md.topics().iter().find(|t| t.name() == topic && t.error().is_none()).ok_or_else(|| {
                        RuntimeError::Unavailable(format!(
                            "registry topic {topic} does not exist (create it, or start a runtime with createTopics)"
                        ))
                    })?;
                    let parts: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    let mut ends = HashMap::new();
                    for p in &parts {
                        let (_, high) = c.fetch_watermarks(&topic, *p, attempt)?;
                        ends.insert(*p, high);
                    }
                    Ok((parts, ends))
                })
            })
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))??
        };
        let starts: Vec<(i32, Offset)> =
            partitions.iter().map(|p| (*p, Offset::Beginning)).collect();
        tail.assign(&starts)?;

        let view = Arc::new(RwLock::new(RegistryView::default()));
        let (applied_tx, applied_rx) = watch::channel(HashMap::new());
        let consumer = tail.current();
        let applying = Arc::clone(&view);
        let task = tokio::spawn(tail.run(shutdown, move |m| apply(&applying, &applied_tx, m)));
        let log = Self {
            consumer,
            topic: topic.to_owned(),
            timeout,
            view,
            applied: applied_rx,
            task,
        };
        for (p, end) in ends {
            if end > 0 && !log.wait_applied(p, end - 1, timeout).await {
                return Err(RuntimeError::Unavailable(format!(
                    "registry topic {topic} partition {p} not read to its end ({end}) within {timeout:?}"
                )));
            }
        }
        Ok(log)
    }

    /// The current view.
    pub(crate) fn view(&self) -> RwLockReadGuard<'_, RegistryView> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the record at `(partition, offset)` has been applied.
    pub(crate) async fn wait_applied(
        &self,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> bool {
        let mut rx = self.applied.clone();
        let reached = rx.wait_for(|m| m.get(&partition).is_some_and(|next| *next > offset));
        tokio::time::timeout(timeout, reached)
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until everything written to the registry before this call has been
    /// applied: read-your-writes across processes, for lookups that miss.
    pub(crate) async fn catch_up(&self) -> Result<(), RuntimeError> {
        let consumer = self.consumer.get();
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        let ends = tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64)>, RuntimeError> {
            let assignment = consumer.assignment()?;
            let mut ends = Vec::new();
            for e in assignment.elements_for_topic(&topic) {
                let (_, high) = consumer.fetch_watermarks(&topic, e.partition(), timeout)?;
                ends.push((e.partition(), high));
            }
            Ok(ends)
        })
        .await
        .map_err(|e| RuntimeError::Task(e.to_string()))??;
        for (p, end) in ends {
            if end > 0 && !self.wait_applied(p, end - 1, self.timeout).await {
                return Err(RuntimeError::Unavailable(format!(
                    "registry not caught up within {:?}",
                    self.timeout
                )));
            }
        }
        Ok(())
    }

    /// Stops tailing.
    pub(crate) fn abort(&self) {
        self.task.abort();
    }
}

/// Applies one registry record to the view.
fn apply(
    view: &RwLock<RegistryView>,
    applied: &watch::Sender<HashMap<i32, i64>>,
    message: &BorrowedMessage<'_>,
) {
    let position = (message.partition(), message.offset());
    match message
        .key()
        .map(|k| RegistryRecord::decode(k, message.payload()))
    {
        Some(Ok(record)) => view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(position, record),
        Some(Err(e)) => {
            tracing::warn!(offset = position.1, error = %e, "skipping bad registry record")
        }
        None => tracing::warn!(offset = position.1, "skipping registry record without key"),
    }
    applied.send_modify(|m| {
        m.insert(position.0, position.1 + 1);
    });
}
