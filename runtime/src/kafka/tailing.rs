//! Reading a topic outside a consumer loop (the registry, the reply channel, the A2A
//! tasks topic): a [`Tail`] reads assigned partitions from where it was told, waits
//! consumer errors out, and when librdkafka orphans its consumer (`guard`) replaces it
//! with a new one that resumes at the next offset of each partition, so nothing is
//! skipped or read twice. Also: start-up calls retried while a just-created topic
//! settles.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::guard::{self, BrokerWatch, ClientKind, GuardContext};
use crate::error::RuntimeError;

/// The consumer of a [`Tail`].
pub(crate) type TailConsumer = StreamConsumer<GuardContext>;

/// The consumer a [`Tail`] reads with right now, for metadata and watermark calls
/// beside the reading (it changes when the tail replaces an orphan).
#[derive(Clone)]
pub(crate) struct CurrentConsumer(Arc<RwLock<Arc<TailConsumer>>>);

impl CurrentConsumer {
    /// The consumer now.
    pub(crate) fn get(&self) -> Arc<TailConsumer> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, consumer: Arc<TailConsumer>) -> Arc<TailConsumer> {
        std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|e| e.into_inner()),
            consumer,
        )
    }
}

/// A consumer of assigned partitions of one topic that survives being orphaned.
pub(crate) struct Tail {
    config: ClientConfig,
    topic: String,
    watch: Arc<BrokerWatch>,
    current: CurrentConsumer,
    /// Per partition: where reading goes on (the next offset once one was read).
    positions: HashMap<i32, Offset>,
}

/// How often a tail that reads nothing looks at its watch.
const WATCH_TICK: Duration = Duration::from_millis(500);

impl Tail {
    /// A tail of `topic` on consumer settings `config`; nothing assigned yet.
    pub(crate) fn create(
        config: &ClientConfig,
        kind: ClientKind,
        topic: &str,
    ) -> Result<Self, KafkaError> {
        let config = guard::with_statistics(config);
        let watch = BrokerWatch::new(kind, topic);
        let consumer: TailConsumer = config.create_with_context(GuardContext::new(&watch))?;
        Ok(Self {
            config,
            topic: topic.to_owned(),
            watch,
            current: CurrentConsumer(Arc::new(RwLock::new(Arc::new(consumer)))),
            positions: HashMap::new(),
        })
    }

    /// The consumer now (see [`CurrentConsumer`]).
    pub(crate) fn current(&self) -> CurrentConsumer {
        self.current.clone()
    }

    /// Starts reading each `(partition, offset)` there.
    pub(crate) fn assign(&mut self, positions: &[(i32, Offset)]) -> Result<(), KafkaError> {
        self.positions.extend(positions.iter().copied());
        self.current.get().assign(&self.assignment()?)
    }

    fn assignment(&self) -> Result<TopicPartitionList, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &self.positions {
            tpl.add_partition_offset(&self.topic, *p, *o)?;
        }
        Ok(tpl)
    }

    /// Reads until `shutdown`, calling `on_record` with each record in order.
    /// Consumer errors (broker restarts, a topic not there yet) are logged and waited
    /// out; an orphaned consumer is replaced.
    pub(crate) async fn run(
        mut self,
        shutdown: CancellationToken,
        mut on_record: impl FnMut(&BorrowedMessage<'_>),
    ) {
        let what = self.topic.clone();
        loop {
            let consumer = self.current.get();
            let mut tick = tokio::time::interval(WATCH_TICK);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => if self.watch.orphaned() { break },
                    m = consumer.recv() => match m {
                        Ok(m) => {
                            self.positions.insert(m.partition(), Offset::Offset(m.offset() + 1));
                            on_record(&m);
                        }
                        Err(e) => tracing::warn!(topic = %what, error = %e, "consumer error"),
                    },
                }
            }
            self.replace();
        }
    }

    /// Replaces the orphaned consumer by one assigned at the positions reached; keeps
    /// it (and retries after another grace) when a new one cannot be made.
    fn replace(&mut self) {
        self.watch.replacing();
        let new = self
            .config
            .create_with_context(GuardContext::new(&self.watch));
        let new: TailConsumer = match new {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(topic = %self.topic, %error, "cannot create a consumer to replace the orphaned one; retrying");
                return;
            }
        };
        if let Err(error) = self.assignment().and_then(|tpl| new.assign(&tpl)) {
            tracing::error!(topic = %self.topic, %error, "cannot assign the consumer replacing the orphaned one; retrying");
            return;
        }
        let old = self.current.set(Arc::new(new));
        old.context().retire();
        // Closing a client without brokers may wait for its requests to time out.
        let closing = std::thread::Builder::new()
            .name("sb-tail-close".to_owned())
            .spawn(move || drop(old));
        if let Err(e) = closing {
            tracing::warn!(topic = %self.topic, error = %e, "cannot start a thread to close the orphaned consumer; it is leaked");
        }
        guard::replaced(self.watch.kind(), &self.topic);
    }
}

/// How long one attempt of [`retry_blocking`] may wait: a broker that is restarting
/// times a request out, and an attempt given the whole bound would leave no time to
/// ask again once it is back.
const ATTEMPT: Duration = Duration::from_secs(5);

/// Runs a blocking Kafka call until it succeeds or `timeout` passes, giving each
/// attempt at most [`ATTEMPT`] (and no more than is left) as its own timeout. A topic
/// created a moment ago can answer "unknown topic" or "not leader" for a short while,
/// and a restarting broker times requests out.
pub(crate) fn retry_blocking<T>(
    timeout: Duration,
    mut call: impl FnMut(Duration) -> Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match call(left.clamp(Duration::from_millis(100), ATTEMPT)) {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "retrying a Kafka call");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ATTEMPT, retry_blocking};
    use crate::error::RuntimeError;

    #[test]
    fn each_attempt_gets_a_share_of_the_bound_and_failures_are_retried() {
        let mut asked = Vec::new();
        let got = retry_blocking(Duration::from_secs(30), |attempt| {
            asked.push(attempt);
            if asked.len() < 3 {
                Err(RuntimeError::Unavailable("broker restarting".into()))
            } else {
                Ok(asked.len())
            }
        });
        assert_eq!(got.ok(), Some(3));
        // Not the whole 30 s: a timed-out attempt must leave time to ask again.
        assert!(asked.iter().all(|a| *a <= ATTEMPT), "{asked:?}");
        let last = retry_blocking(Duration::from_millis(150), |_| -> Result<(), _> {
            Err(RuntimeError::Unavailable("down".into()))
        });
        assert!(last.is_err(), "gives up once the bound has passed");
    }
}
