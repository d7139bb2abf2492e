//! A group consumer on a dedicated thread that commits only what is done.
//!
//! librdkafka's rebalance callbacks run inside `poll`, on the polling thread, and
//! revocation must wait for in-flight work (DESIGN.md §3): so the poll loop gets its
//! own OS thread, never an async worker thread. Work runs on tokio; each record
//! reports back through [`DoneSender`] once its outputs are acknowledged.
//! Per partition the committed offset is the lowest not yet done; a partition with
//! too much in flight is paused until it drains. Its consumer lag is read on demand
//! ([`ConsumerLoop::lag_reader`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

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
    /// `position` is done for good. May be called more than once for a position.
    fn committed(&self, _topic: &str, _commits: &[(i32, i64)]) {}
    /// Whether [`PartitionWorker::committed`] has something to do for these commits
    /// (then they are made synchronously, so it is called once they are durable).
    fn awaits_commit(&self, _topic: &str, _commits: &[(i32, i64)]) -> bool {
        false
    }
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
    paused: Mutex<HashSet<i32>>,
    assignments: watch::Sender<u64>,
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

    /// Commits what moved since the last commit.
    fn commit<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, mode: CommitMode) {
        let commits = self.tracker().take_commits();
        // A commit the worker waits for (to drop journal entries) is made synchronously:
        // the results of asynchronous commits were not seen reaching `commit_callback`
        // (rdkafka 0.39), and acting before the commit is durable would be wrong.
        let mode = if self.worker.awaits_commit(&self.settings.topic, &commits) {
            CommitMode::Sync
        } else {
            mode
        };
        self.send_commits(consumer, &commits, mode);
    }

    /// Commits the positions of `partitions` synchronously, moved or not: an earlier
    /// asynchronous commit may have failed, and after this the partitions are gone.
    fn commit_final<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, partitions: &[i32]) {
        let commits = self.tracker().positions(partitions);
        self.send_commits(consumer, &commits, CommitMode::Sync);
    }

    fn send_commits<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        commits: &[(i32, i64)],
        mode: CommitMode,
    ) {
        if commits.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(commits.len());
        for (p, o) in commits {
            if tpl
                .add_partition_offset(&self.settings.topic, *p, Offset::Offset(*o))
                .is_err()
            {
                tracing::warn!(partition = p, offset = o, "invalid commit offset");
            }
        }
        match consumer.commit(&tpl, mode) {
            Err(e) => self.commit_failed(&tpl, &e),
            // An asynchronous commit reports in `commit_callback`.
            Ok(()) if matches!(mode, CommitMode::Sync) => {
                self.worker.committed(&self.settings.topic, commits);
            }
            Ok(()) => {}
        }
    }

    fn commit_failed(&self, tpl: &TopicPartitionList, error: &rdkafka::error::KafkaError) {
        tracing::warn!(topic = %self.settings.topic, %error, "offset commit failed; it is retried with the next commit");
        let mut tracker = self.tracker();
        for e in tpl.elements_for_topic(&self.settings.topic) {
            tracker.commit_failed(e.partition());
        }
    }
}

/// The rdkafka context: rebalance hooks with access to the loop's state.
pub(crate) struct LoopContext<W> {
    shared: Arc<Shared<W>>,
}

impl<W: PartitionWorker> ClientContext for LoopContext<W> {}

impl<W: PartitionWorker> ConsumerContext for LoopContext<W> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        let tpl = match rebalance {
            Rebalance::Revoke(tpl) => tpl,
            // Before the assignment takes effect, so the fetcher finds the commit.
            Rebalance::Assign(tpl) if shared.settings.start_at_end => {
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&shared.settings.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                if !partitions.is_empty() {
                    commit_end_if_uncommitted(consumer, &shared.settings.topic, &partitions);
                }
                return;
            }
            _ => return,
        };
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&shared.settings.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        if partitions.is_empty() {
            return;
        }
        shared.worker.revoking(&partitions);
        if consumer.assignment_lost() {
            // Another member may own these already: committing would be wrong.
            tracing::warn!(topic = %shared.settings.topic, ?partitions, "partitions lost; dropping their work uncommitted");
        } else {
            let left = shared.drain(&partitions);
            if left > 0 {
                tracing::warn!(topic = %shared.settings.topic, ?partitions, left, "drain deadline passed during revocation");
            }
            shared.commit_final(consumer, &partitions);
        }
        {
            let mut t = shared.tracker();
            for p in &partitions {
                t.revoke(*p);
            }
        }
        shared
            .paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !partitions.contains(p));
        shared.worker.revoked(&partitions);
        tracing::info!(topic = %shared.settings.topic, ?partitions, "partitions revoked");
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        // Asynchronous commits report here; a failed one is sent again.
        match result {
            Err(e) => self.shared.commit_failed(offsets, &e),
            Ok(()) => {
                let topic = &self.shared.settings.topic;
                let commits: Vec<(i32, i64)> = offsets
                    .elements_for_topic(topic)
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect();
                self.shared.worker.committed(topic, &commits);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&shared.settings.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                {
                    let mut t = shared.tracker();
                    for p in &partitions {
                        t.assign(*p);
                    }
                }
                shared.worker.assigned(&partitions);
                tracing::info!(topic = %shared.settings.topic, ?partitions, "partitions assigned");
                shared.assignments.send_modify(|n| *n += 1);
            }
            Rebalance::Revoke(_) => shared.assignments.send_modify(|n| *n += 1),
            Rebalance::Error(e) => {
                tracing::warn!(topic = %shared.settings.topic, error = %e, "rebalance error")
            }
        }
    }
}

/// A running consumer loop.
pub(crate) struct ConsumerLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    assignments: watch::Receiver<u64>,
    lag: LagReader,
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
        let shared = Arc::new(Shared {
            worker,
            settings: settings.clone(),
            tracker: Mutex::default(),
            done_rx: Mutex::new(done_rx),
            paused: Mutex::default(),
            assignments: assign_tx,
        });
        let consumer: Arc<BaseConsumer<LoopContext<W>>> =
            Arc::new(config.create_with_context(LoopContext {
                shared: Arc::clone(&shared),
            })?);
        consumer.subscribe(&[&settings.topic])?;
        let lag = LagReader::new(&settings.topic, Arc::downgrade(&consumer));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(settings.thread_name.clone())
            .spawn(move || poll_loop(consumer, shared, DoneSender(done_tx), stop_flag))
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
        })
    }

    /// Reads this loop's consumer lag when asked (see [`LagReader`]).
    pub(crate) fn lag_reader(&self) -> LagReader {
        self.lag.clone()
    }

    /// Whether the group has handed this member an assignment yet.
    pub(crate) fn has_joined(&self) -> bool {
        *self.assignments.borrow() > 0
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

fn poll_loop<W: PartitionWorker>(
    consumer: Arc<BaseConsumer<LoopContext<W>>>,
    shared: Arc<Shared<W>>,
    done: DoneSender,
    stop: Arc<AtomicBool>,
) {
    let topic = shared.settings.topic.clone();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        shared.collect_done(Duration::ZERO);
        if last_commit.elapsed() >= shared.settings.commit_interval {
            shared.commit(&consumer, CommitMode::Async);
            last_commit = Instant::now();
        }
        apply_backpressure(&consumer, &shared);
        match consumer.poll(Duration::from_millis(20)) {
            None => {}
            Some(Err(e)) => tracing::warn!(%topic, error = %e, "consumer error"),
            Some(Ok(message)) => {
                let (p, o) = (
                    rdkafka::Message::partition(&message),
                    rdkafka::Message::offset(&message),
                );
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
    shared.commit_final(&consumer, &partitions);
    // Dropping closes the consumer, which leaves the group at once (no session timeout);
    // a lag read holding it (bounded by its timeout) delays that until it returns.
    drop(consumer);
    tracing::info!(%topic, "consumer stopped");
}

/// Commits the end offsets of those `partitions` the group has no committed offset
/// for. Runs in the rebalance callback, as their new owner, before they are assigned;
/// failures are logged (the consumer then starts at the end through
/// `auto.offset.reset` anyway).
fn commit_end_if_uncommitted<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = match consumer.committed_offsets(tpl, TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%topic, error = %e, "reading committed offsets failed");
            return;
        }
    };
    let mut to_commit = TopicPartitionList::new();
    for e in committed.elements_for_topic(topic) {
        if !matches!(e.offset(), Offset::Invalid) {
            continue;
        }
        match consumer.fetch_watermarks(topic, e.partition(), TIMEOUT) {
            Ok((_, high)) => {
                if let Err(err) =
                    to_commit.add_partition_offset(topic, e.partition(), Offset::Offset(high))
                {
                    tracing::warn!(%topic, error = %err, "invalid start offset");
                }
            }
            Err(err) => {
                tracing::warn!(%topic, partition = e.partition(), error = %err, "reading the end offset failed")
            }
        }
    }
    if to_commit.count() > 0 {
        match consumer.commit(&to_commit, CommitMode::Sync) {
            Ok(()) => {
                tracing::info!(%topic, partitions = to_commit.count(), "first read of the topic by this group: starting at its end")
            }
            Err(e) => tracing::warn!(%topic, error = %e, "committing the start offsets failed"),
        }
    }
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
        let resume = paused
            .iter()
            .copied()
            .filter(|p| t.in_flight(*p) <= max / 2)
            .collect();
        (pause, resume)
    };
    let list = |ps: &[i32]| {
        let mut tpl = TopicPartitionList::new();
        for p in ps {
            tpl.add_partition(&shared.settings.topic, *p);
        }
        tpl
    };
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
