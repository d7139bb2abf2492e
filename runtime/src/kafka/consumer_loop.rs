//! A group consumer on a dedicated thread that commits only what is done.
//!
//! librdkafka's rebalance callbacks run inside `poll`, on the polling thread, and
//! revocation must wait for in-flight work (DESIGN.md §3): so the poll loop gets its
//! own OS thread, never an async worker thread. Work runs on tokio; each record
//! reports back through [`DoneSender`] once its outputs are acknowledged.
//! Per partition the committed offset is the lowest not yet done; a partition with
//! too much in flight is paused until it drains. Its consumer lag is read on demand
//! ([`ConsumerLoop::lag_reader`]). Commits are made by [`Committer`], which sees the
//! result of each one.
//!
//! A commit can fail while the group rebalances; with the classic protocol an
//! ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID answer makes librdkafka drop the whole
//! assignment as *lost*. What was handled but not committed is kept then (`unsaved`)
//! and committed with the new generation when a partition comes back to this member,
//! before it is fetched again, so this member never handles those records twice.
//! Only a partition that goes to another member meanwhile is read again from its last
//! commit (docs/protocol.md, "Redelivery bound").
//!
//! librdkafka (2.10 and later, 2.12.1 here) drops every broker a metadata response does
//! not list, bootstrap servers included; a broker that is shutting down or starting
//! answers with no brokers but its topics (librdkafka issue #5301), and the client is
//! left with no broker to connect to, for good: its group never rejoins (seen as
//! hundreds of events not delivered minutes after a single-broker restart). Such an
//! *orphaned* consumer is recognised from its statistics (no configured or learned
//! broker left) and replaced by a new one on the same settings: its partitions are
//! given up as lost (their positions kept as above) and the new consumer joins the
//! group again (the detection is the process-wide `guard`).
//!
//! Rebalance handling is in `rebalance`, what the statistics say about the brokers
//! (readiness, orphaned consumers) in `brokers`, partitions kept paused until the
//! worker is ready for them (state not restored) in `held`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use tokio::sync::watch;

mod brokers;
mod held;
mod rebalance;

use self::brokers::replace_orphan;
use self::held::release_ready;
use super::committer::{CommitResult, Commits, Committer};
use super::guard::{self, BrokerWatch, ClientKind};
use super::lag::LagReader;
use super::offsets::OffsetTracker;

/// A record finished: `(partition, offset)`.
pub(crate) type Done = (i32, i64);

/// Reports finished records to the poll thread.
#[derive(Clone)]
pub(crate) struct DoneSender(Sender<Done>);

impl DoneSender {
    /// A sender whose reports go nowhere (for side outputs of a record that is
    /// reported done elsewhere).
    pub(crate) fn discard() -> Self {
        Self(channel().0)
    }

    /// Marks `(partition, offset)` done. After shutdown the loop is gone; nothing to do.
    pub(crate) fn done(&self, partition: i32, offset: i64) {
        let _ = self.0.send((partition, offset));
    }
}

/// What dispatching one record did.
pub(crate) enum Dispatched {
    /// Finished already (e.g. nothing to do).
    Done,
    /// Work was started; it reports through the [`DoneSender`].
    Pending,
}

/// What a consumer loop does with records and partitions.
pub(crate) trait PartitionWorker: Send + Sync + 'static {
    /// Starts work for one record.
    fn dispatch(&self, message: &BorrowedMessage<'_>, done: &DoneSender) -> Dispatched;
    /// Partitions were assigned; called before any of their records is dispatched.
    fn assigned(&self, _partitions: &[i32]) {}
    /// Of `partitions` (assigned), those not to be dispatched yet (e.g. their agents'
    /// state could not be read): the loop keeps them paused and asks again each poll.
    fn not_ready(&self, _partitions: &[i32]) -> Vec<i32> {
        Vec::new()
    }
    /// Held `partitions` became ready; called before their records are dispatched.
    fn ready(&self, _partitions: &[i32]) {}
    /// Partitions are being revoked (or the loop stops): called before waiting for
    /// their work, so that the worker starts no more of it elsewhere.
    fn revoking(&self, _partitions: &[i32]) {}
    /// Work for `partitions` started outside this loop's records, not finished yet;
    /// revocation and shutdown wait for it too.
    fn busy(&self, _partitions: &[i32]) -> usize {
        0
    }
    /// Partitions were revoked; their work has finished (or the drain deadline passed).
    fn revoked(&self, _partitions: &[i32]) {}
    /// Offsets of `topic` were committed: `(partition, position)`, everything before
    /// `position` is done for good. May be called more than once for a position, on
    /// the committing thread.
    fn committed(&self, _topic: &str, _commits: &[(i32, i64)]) {}
}

/// Limits of a consumer loop.
#[derive(Debug, Clone)]
pub(crate) struct LoopSettings {
    /// Topic consumed.
    pub(crate) topic: String,
    /// Pause a partition at this many records in flight.
    pub(crate) max_in_flight_per_partition: usize,
    /// How often done offsets are committed.
    pub(crate) commit_interval: Duration,
    /// How long revocation and shutdown wait for in-flight work.
    pub(crate) drain_timeout: Duration,
    /// Name of the thread (shows in `top -H`, debuggers).
    pub(crate) thread_name: String,
    /// On assignment (before it takes effect), commit the end offset of partitions the
    /// group never committed, as the member that owns them: the group starts reading
    /// there, and the commit records that it does (set with `auto.offset.reset=latest`
    /// as the fallback when the commit fails).
    pub(crate) start_at_end: bool,
}

struct Shared<W> {
    worker: Arc<W>,
    settings: LoopSettings,
    tracker: Mutex<OffsetTracker>,
    done_rx: Mutex<Receiver<Done>>,
    /// Paused for backpressure.
    paused: Mutex<HashSet<i32>>,
    /// Paused because the worker is not ready for them ([`PartitionWorker::not_ready`]).
    held: Mutex<HashSet<i32>>,
    assignments: watch::Sender<u64>,
    committer: Mutex<Option<Committer>>,
    /// Positions of partitions given up without a successful commit (lost, or the
    /// final commit failed): everything before them was handled here.
    unsaved: Mutex<HashMap<i32, i64>>,
    /// Offset commits that failed.
    commit_failures: Arc<AtomicU64>,
    /// Whether the consumer has a connection to a broker and since when it has none
    /// to connect to, from librdkafka's statistics; readiness follows it.
    brokers: Arc<BrokerWatch>,
}

impl<W: PartitionWorker> Shared<W> {
    fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies completions that arrived, waiting up to `wait` for the first.
    fn collect_done(&self, wait: Duration) {
        let rx = self.done_rx.lock().unwrap_or_else(|e| e.into_inner());
        let first = if wait.is_zero() {
            rx.try_recv().ok()
        } else {
            rx.recv_timeout(wait).ok()
        };
        let mut tracker = self.tracker();
        for (p, o) in first.into_iter().chain(rx.try_iter()) {
            tracker.done(p, o);
        }
    }

    /// Waits until `partitions` have nothing in flight, or the drain deadline.
    fn drain(&self, partitions: &[i32]) -> usize {
        let deadline = Instant::now() + self.settings.drain_timeout;
        loop {
            let left: usize = {
                let t = self.tracker();
                partitions.iter().map(|p| t.in_flight(*p)).sum::<usize>()
            } + self.worker.busy(partitions);
            let now = Instant::now();
            if left == 0 || now >= deadline {
                return left;
            }
            self.collect_done((deadline - now).min(Duration::from_millis(50)));
        }
    }

    fn held(&self) -> MutexGuard<'_, HashSet<i32>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn committer(&self) -> MutexGuard<'_, Option<Committer>> {
        self.committer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unsaved(&self) -> MutexGuard<'_, HashMap<i32, i64>> {
        self.unsaved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a commit of what moved since the last commit.
    fn commit(&self) {
        let commits = self.tracker().take_commits();
        if commits.is_empty() {
            return;
        }
        let queued = self
            .committer()
            .as_ref()
            .is_some_and(|c| c.commit_later(commits.clone()));
        if !queued {
            let mut tracker = self.tracker();
            for (p, _) in &commits {
                tracker.commit_failed(*p);
            }
        }
    }

    /// What the committing thread reports.
    fn commit_done(&self, commits: &Commits, result: &CommitResult) {
        match result {
            Ok(()) => self.worker.committed(&self.settings.topic, commits),
            Err(error) => {
                self.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.settings.topic, %error, ?commits, "offset commit failed; it is sent again with the next commit");
                let mut tracker = self.tracker();
                for (p, _) in commits {
                    tracker.commit_failed(*p);
                }
            }
        }
    }
}

/// The rdkafka context: rebalance hooks with access to the loop's state.
pub(crate) struct LoopContext<W> {
    shared: Arc<Shared<W>>,
    /// Set on a consumer that was replaced (`brokers`): its callbacks while it closes
    /// on its own thread must not touch the loop's state, which the new consumer owns.
    retired: AtomicBool,
}

/// A running consumer loop.
pub(crate) struct ConsumerLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    assignments: watch::Receiver<u64>,
    lag: LagReader,
    commit_failures: Arc<AtomicU64>,
    brokers: Arc<BrokerWatch>,
}

impl ConsumerLoop {
    /// Subscribes to `settings.topic` with `config` and starts polling on a new thread.
    pub(crate) fn start<W: PartitionWorker>(
        config: &ClientConfig,
        settings: LoopSettings,
        worker: Arc<W>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let (done_tx, done_rx) = channel();
        let (assign_tx, assign_rx) = watch::channel(0);
        let brokers = BrokerWatch::new(ClientKind::Group, &settings.topic);
        let config = guard::with_statistics(config);
        let shared = Arc::new(Shared {
            worker,
            settings: settings.clone(),
            tracker: Mutex::default(),
            done_rx: Mutex::new(done_rx),
            paused: Mutex::default(),
            held: Mutex::default(),
            assignments: assign_tx,
            committer: Mutex::default(),
            unsaved: Mutex::default(),
            commit_failures: Arc::default(),
            brokers: Arc::clone(&brokers),
        });
        let consumer = subscribed_consumer(&config, &shared)?;
        let commit_failures = Arc::clone(&shared.commit_failures);
        let current = Arc::new(std::sync::RwLock::new(Arc::downgrade(&consumer)));
        let lag = LagReader::follow(&settings.topic, Arc::clone(&current));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(settings.thread_name.clone())
            .spawn(move || {
                poll_loop(
                    consumer,
                    &config,
                    &current,
                    shared,
                    DoneSender(done_tx),
                    stop_flag,
                );
            })
            .map_err(|e| {
                rdkafka::error::KafkaError::Subscription(format!(
                    "cannot start consumer thread: {e}"
                ))
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            assignments: assign_rx,
            lag,
            commit_failures,
            brokers,
        })
    }

    /// Offset commits that failed so far (each is sent again).
    pub(crate) fn commit_failures(&self) -> u64 {
        self.commit_failures.load(Ordering::Relaxed)
    }

    /// Reads this loop's consumer lag when asked (see [`LagReader`]).
    pub(crate) fn lag_reader(&self) -> LagReader {
        self.lag.clone()
    }

    /// Whether the group has handed this member an assignment yet.
    pub(crate) fn has_joined(&self) -> bool {
        *self.assignments.borrow() > 0
    }

    /// Whether the consumer is connected to a broker (as of its last statistics).
    pub(crate) fn connected(&self) -> bool {
        self.brokers.connected()
    }

    /// Stops dispatching, lets in-flight work finish (bounded), commits, leaves the
    /// group. Blocks: call from a blocking context.
    pub(crate) fn stop_blocking(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("consumer thread panicked");
        }
    }
}

impl Drop for ConsumerLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A consumer of `shared`'s loop with its committing thread, subscribed to the topic.
fn subscribed_consumer<W: PartitionWorker>(
    config: &ClientConfig,
    shared: &Arc<Shared<W>>,
) -> Result<Arc<BaseConsumer<LoopContext<W>>>, rdkafka::error::KafkaError> {
    let consumer: Arc<BaseConsumer<LoopContext<W>>> =
        Arc::new(config.create_with_context(LoopContext {
            shared: Arc::clone(shared),
            retired: AtomicBool::new(false),
        })?);
    let report = Arc::downgrade(shared);
    let committer = Committer::start(
        Arc::clone(&consumer),
        shared.settings.topic.clone(),
        format!("{}-commit", shared.settings.thread_name),
        move |commits, result| {
            if let Some(shared) = Weak::upgrade(&report) {
                shared.commit_done(commits, result);
            }
        },
    )
    .map_err(|e| {
        rdkafka::error::KafkaError::Subscription(format!("cannot start commit thread: {e}"))
    })?;
    *shared.committer() = Some(committer);
    consumer.subscribe(&[&shared.settings.topic])?;
    Ok(consumer)
}

fn poll_loop<W: PartitionWorker>(
    mut consumer: Arc<BaseConsumer<LoopContext<W>>>,
    config: &ClientConfig,
    current: &std::sync::RwLock<Weak<BaseConsumer<LoopContext<W>>>>,
    shared: Arc<Shared<W>>,
    done: DoneSender,
    stop: Arc<AtomicBool>,
) {
    let topic = shared.settings.topic.clone();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if shared.brokers.orphaned() {
            consumer = replace_orphan(consumer, config, current, &shared);
        }
        shared.collect_done(Duration::ZERO);
        if last_commit.elapsed() >= shared.settings.commit_interval {
            shared.commit();
            last_commit = Instant::now();
        }
        apply_backpressure(&consumer, &shared);
        release_ready(&consumer, &shared);
        match consumer.poll(Duration::from_millis(20)) {
            None => {}
            Some(Err(e)) => tracing::warn!(%topic, error = %e, "consumer error"),
            Some(Ok(message)) => {
                let (p, o) = (
                    rdkafka::Message::partition(&message),
                    rdkafka::Message::offset(&message),
                );
                if shared.held().contains(&p) {
                    // Fetched before the pause took effect: read it again from here
                    // once the partition is ready.
                    if let Err(e) = consumer.seek(
                        &topic,
                        p,
                        rdkafka::Offset::Offset(o),
                        Duration::from_secs(1),
                    ) {
                        tracing::warn!(%topic, partition = p, offset = o, error = %e, "could not rewind a held partition");
                    }
                    continue;
                }
                shared.tracker().dispatched(p, o);
                if let Dispatched::Done = shared.worker.dispatch(&message, &done) {
                    shared.tracker().done(p, o);
                }
            }
        }
    }
    // Graceful stop: nothing new is dispatched; finish, commit, leave the group.
    let partitions = shared.tracker().partitions();
    shared.worker.revoking(&partitions);
    let left = shared.drain(&partitions);
    if left > 0 {
        tracing::warn!(%topic, left, "shutdown deadline passed with work in flight; it will be redelivered");
    }
    shared.commit_final(&partitions);
    shared.wait_for_lost(&consumer);
    {
        // Done with them: the revocation that closing the consumer triggers finds
        // nothing left to commit.
        let mut t = shared.tracker();
        for p in &partitions {
            t.revoke(*p);
        }
    }
    // The committing thread holds the consumer too: it goes first.
    let committer = shared.committer().take();
    drop(committer);
    // Dropping closes the consumer, which leaves the group at once (no session timeout);
    // a lag read holding it (bounded by its timeout) delays that until it returns.
    drop(consumer);
    tracing::info!(%topic, "consumer stopped");
}

/// The list of `partitions` of `topic`.
pub(super) fn partition_list(topic: &str, partitions: &[i32]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    tpl
}

fn apply_backpressure<W: PartitionWorker>(
    consumer: &BaseConsumer<LoopContext<W>>,
    shared: &Shared<W>,
) {
    let max = shared.settings.max_in_flight_per_partition;
    let (to_pause, to_resume): (Vec<i32>, Vec<i32>) = {
        let t = shared.tracker();
        let paused = shared.paused.lock().unwrap_or_else(|e| e.into_inner());
        let pause = t
            .partitions()
            .into_iter()
            .filter(|p| !paused.contains(p) && t.in_flight(*p) >= max)
            .collect();
        let held = shared.held();
        let resume = paused
            .iter()
            .copied()
            .filter(|p| t.in_flight(*p) <= max / 2 && !held.contains(p))
            .collect();
        (pause, resume)
    };
    let list = |ps: &[i32]| partition_list(&shared.settings.topic, ps);
    let mut paused = shared.paused.lock().unwrap_or_else(|e| e.into_inner());
    if !to_pause.is_empty() && consumer.pause(&list(&to_pause)).is_ok() {
        paused.extend(&to_pause);
    }
    if !to_resume.is_empty() && consumer.resume(&list(&to_resume)).is_ok() {
        for p in &to_resume {
            paused.remove(p);
        }
    }
}
