//! A producer that librdkafka cannot orphan for good (`guard`): when its statistics
//! show no broker left for [`guard::ORPHAN_GRACE`], a successor is created on the same
//! settings and everything the orphan had queued is handed to it, in queue order,
//! before any new record: nothing is lost and, per partition, nothing overtakes an
//! older record. Callers keep the future of their record; it completes with the
//! successor's acknowledgement.
//!
//! How: records carry their acknowledgement sender as librdkafka's delivery opaque.
//! The orphan is retired and purged; librdkafka reports each purged record to the
//! orphan's delivery callback (on its polling thread, in queue order), which produces
//! it again to the successor with the same sender. Sends wait on a write lock meanwhile
//! (a few ms, only while replacing); the send path otherwise takes an uncontended read
//! lock, nothing else beside what `FutureProducer` does.
//!
//! A purged record that was in flight may have been written already: it is written
//! again (at least once, like any retry after a lost acknowledgement). With no broker
//! connection left, nothing is normally in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use tokio::sync::oneshot;

use super::guard::{self, BrokerWatch, ClientKind};

/// Where a record was written: `(partition, offset)`.
pub type Ack = Result<(i32, i64), KafkaError>;

type Client = ThreadedProducer<Context>;

/// A record to produce. Borrowed: nothing is copied before librdkafka copies it.
#[derive(Default)]
pub struct Record<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Destination partition; `None`: the partitioner's choice for the key.
    pub partition: Option<i32>,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value, if any.
    pub value: Option<&'a [u8]>,
    /// The headers, if any.
    pub headers: Option<OwnedHeaders>,
}

/// The broker's acknowledgement of one record, once it comes.
pub struct DeliveryFuture(oneshot::Receiver<Ack>);

impl Future for DeliveryFuture {
    type Output = Ack;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Ack> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(KafkaError::Canceled)))
    }
}

/// The process's producer, replaced when orphaned. Cheap to clone.
#[derive(Clone)]
pub struct GuardedProducer {
    shared: Arc<Shared>,
}

struct Shared {
    config: ClientConfig,
    watch: Arc<BrokerWatch>,
    current: RwLock<Arc<Client>>,
}

/// The delivery callbacks of one producer.
struct Context {
    watch: Arc<BrokerWatch>,
    retired: AtomicBool,
    /// Set when this producer was orphaned: its purged records go there.
    successor: OnceLock<Arc<Client>>,
}

/// How often the guard thread looks at the watch; the orphan is replaced within
/// [`guard::ORPHAN_GRACE`] plus this.
const GUARD_TICK: Duration = Duration::from_millis(500);

/// How long new sends may wait for the orphan's records to move to its successor.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

impl GuardedProducer {
    /// A producer on `config` (statistics turned on for the guard), guarded by a
    /// thread of its own that ends once the producer is dropped.
    pub fn create(config: &ClientConfig, what: &str) -> Result<Self, KafkaError> {
        let config = guard::with_statistics(config);
        let watch = BrokerWatch::new(ClientKind::Producer, what);
        let client = create_client(&config, &watch)?;
        let shared = Arc::new(Shared {
            config,
            watch,
            current: RwLock::new(client),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("sb-producer-guard".to_owned())
            .spawn(move || guard_thread(&weak))
            .map_err(|e| {
                KafkaError::ClientCreation(format!("cannot start the producer's guard thread: {e}"))
            })?;
        Ok(Self { shared })
    }

    fn current(&self) -> RwLockReadGuard<'_, Arc<Client>> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `record` to the producer at once (keeping call order per partition);
    /// the future completes with the broker's acknowledgement.
    pub fn send_now(&self, record: Record<'_>) -> Result<DeliveryFuture, KafkaError> {
        self.try_send(record).map_err(|(e, _)| e)
    }

    /// [`GuardedProducer::send_now`], giving a refused record back (so a retry need
    /// not copy its headers).
    #[allow(
        clippy::result_large_err,
        reason = "returned to the caller's retry loop at once, not propagated with ?"
    )]
    fn try_send<'a>(&self, record: Record<'a>) -> Result<DeliveryFuture, (KafkaError, Record<'a>)> {
        let (tx, rx) = oneshot::channel();
        match self.current().send(base_record(record, Box::new(tx))) {
            Ok(()) => Ok(DeliveryFuture(rx)),
            Err((e, back)) => Err((
                e,
                Record {
                    topic: back.topic,
                    partition: back.partition,
                    key: back.key,
                    value: back.payload,
                    headers: back.headers,
                },
            )),
        }
    }

    /// Produces `record`, waiting up to `queue_timeout` while the local queue is full,
    /// then for the acknowledgement.
    pub async fn send(&self, record: Record<'_>, queue_timeout: Duration) -> Ack {
        let deadline = tokio::time::Instant::now() + queue_timeout;
        let mut record = record;
        loop {
            match self.try_send(record) {
                Ok(delivery) => return delivery.await,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if tokio::time::Instant::now() < deadline =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits up to `timeout` for everything queued to be acknowledged. Blocks.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let client = Arc::clone(&self.current());
        client.flush(timeout)
    }
}

fn create_client(
    config: &ClientConfig,
    watch: &Arc<BrokerWatch>,
) -> Result<Arc<Client>, KafkaError> {
    let context = Context {
        watch: Arc::clone(watch),
        retired: AtomicBool::new(false),
        successor: OnceLock::new(),
    };
    Ok(Arc::new(Client::from_config_and_context(config, context)?))
}

fn base_record<'a>(
    record: Record<'a>,
    ack: Box<oneshot::Sender<Ack>>,
) -> BaseRecord<'a, [u8], [u8], Box<oneshot::Sender<Ack>>> {
    BaseRecord {
        topic: record.topic,
        partition: record.partition,
        payload: record.value,
        key: record.key,
        timestamp: None,
        headers: record.headers,
        delivery_opaque: ack,
    }
}

/// Replaces the producer whenever the watch says it is orphaned, until dropped.
fn guard_thread(shared: &Weak<Shared>) {
    loop {
        std::thread::sleep(GUARD_TICK);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.watch.orphaned() {
            replace(&shared);
        }
    }
}

/// See the module doc.
fn replace(shared: &Shared) {
    shared.watch.replacing();
    let what = shared.watch.what().to_owned();
    let new = match create_client(&shared.config, &shared.watch) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%what, %error, "cannot create a producer to replace the orphaned one; retrying");
            return;
        }
    };
    let mut current = shared.current.write().unwrap_or_else(|e| e.into_inner());
    let old = Arc::clone(&current);
    old.context().retired.store(true, Ordering::SeqCst);
    // A fresh context: `set` cannot fail. Checked anyway, never unwrapped.
    if old.context().successor.set(Arc::clone(&new)).is_err() {
        tracing::error!(%what, "the orphaned producer has a successor already");
        return;
    }
    old.purge(PurgeConfig::default().queue().inflight());
    // Purged records reach the successor on the orphan's polling thread; new sends
    // wait for them (this lock) so that none overtakes an older one.
    let deadline = Instant::now() + HANDOVER_TIMEOUT;
    while old.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = old.in_flight_count();
    *current = new;
    drop(current);
    if left > 0 {
        tracing::warn!(%what, left, "records of the orphaned producer still not handed over; they follow when purged");
    }
    // Closing it waits for its polling thread: not on the guard's.
    let closing = std::thread::Builder::new()
        .name("sb-producer-close".to_owned())
        .spawn(move || drop(old));
    if let Err(e) = closing {
        tracing::warn!(%what, error = %e, "cannot start a thread to close the orphaned producer; it is leaked");
    }
    guard::replaced(ClientKind::Producer, &what);
}

impl ClientContext for Context {
    fn stats_raw(&self, statistics: &[u8]) {
        if !self.retired.load(Ordering::SeqCst) {
            self.watch.observe(statistics);
        }
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<oneshot::Sender<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((KafkaError::MessageProduction(code), m)) if purged(*code) => {
                match self.successor.get() {
                    Some(next) => return hand_over(next, m, ack),
                    None => Err(KafkaError::MessageProduction(*code)),
                }
            }
            Err((e, _)) => Err(e.clone()),
        };
        // The caller may have stopped waiting: nothing to do then.
        let _ = ack.send(outcome);
    }
}

fn purged(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
    )
}

/// Produces a purged record of the orphan again, to its successor, with its sender.
fn hand_over(
    next: &Client,
    m: &rdkafka::message::BorrowedMessage<'_>,
    ack: Box<oneshot::Sender<Ack>>,
) {
    let headers = m.headers().map(rdkafka::message::BorrowedHeaders::detach);
    let record = Record {
        topic: m.topic(),
        // Partitioned already (or not yet: -1): the same partitioner decides again.
        partition: (m.partition() >= 0).then(|| m.partition()),
        key: m.key(),
        value: m.payload(),
        headers,
    };
    if let Err((e, record)) = next.send(base_record(record, ack)) {
        let _ = record.delivery_opaque.send(Err(e));
    }
}
