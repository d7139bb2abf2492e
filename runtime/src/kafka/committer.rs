//! Offset commits made off the poll thread, each with its result.
//!
//! librdkafka drops the result of an asynchronous `rd_kafka_commit` when no
//! `offset_commit_cb` is set, and rdkafka sets none (it uses the event API, whose
//! OFFSET_COMMIT events carry automatic commits only): so with `CommitMode::Async` a
//! failed commit was never seen, never retried, and `commit_callback` never ran.
//! Here every commit is synchronous, on a thread of its own: the poll thread never
//! waits for the broker for a periodic commit, each result comes back (a failed
//! partition is sent again with the next commit), and commits reach the broker in the
//! order they were asked for, so an older position never overwrites a newer one.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// Positions to commit: `(partition, offset)`.
pub(crate) type Commits = Vec<(i32, i64)>;

/// What happened to one commit.
pub(crate) type CommitResult = Result<(), KafkaError>;

struct Request {
    commits: Commits,
    /// Set for a commit the caller waits for.
    reply: Option<SyncSender<CommitResult>>,
}

/// The committing thread of one consumer.
pub(crate) struct Committer {
    tx: Option<SyncSender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// Periodic commits queued at most; a full queue means the broker is slow, and the
/// next periodic commit carries the newer positions anyway.
const QUEUE: usize = 4;

impl Committer {
    /// Starts committing offsets of `topic` through `consumer`; `report` sees every
    /// result (on the committing thread).
    pub(crate) fn start<C, F>(
        consumer: Arc<BaseConsumer<C>>,
        topic: String,
        thread_name: String,
        report: F,
    ) -> std::io::Result<Self>
    where
        C: ConsumerContext + 'static,
        F: Fn(&Commits, &CommitResult) + Send + 'static,
    {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || commit_loop(&consumer, &topic, &rx, &report))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a commit; `false` when the queue is full (the caller sends the
    /// positions again later).
    pub(crate) fn commit_later(&self, commits: Commits) -> bool {
        let Some(tx) = &self.tx else { return false };
        tx.try_send(Request {
            commits,
            reply: None,
        })
        .is_ok()
    }

    /// Commits after everything queued before, and waits (up to `timeout`) for the
    /// result.
    pub(crate) fn commit_now(&self, commits: Commits, timeout: Duration) -> CommitResult {
        let gone = || KafkaError::Canceled;
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        let (reply, result) = sync_channel(1);
        tx.send(Request {
            commits,
            reply: Some(reply),
        })
        .map_err(|_| gone())?;
        result.recv_timeout(timeout).map_err(|_| gone())?
    }

    /// Lets the thread finish what is queued and end on its own, without waiting for
    /// it (a commit through a consumer without brokers may wait long): for a consumer
    /// that is being replaced. The thread holds the consumer until then.
    pub(crate) fn detach(mut self) {
        self.tx = None;
        drop(self.thread.take());
    }

    /// Finishes what is queued and stops the thread (it holds the consumer).
    pub(crate) fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("offset commit thread panicked");
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn commit_loop<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    rx: &Receiver<Request>,
    report: &dyn Fn(&Commits, &CommitResult),
) {
    while let Ok(Request { commits, reply }) = rx.recv() {
        let result = commit(consumer, topic, &commits);
        report(&commits, &result);
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    commits: &Commits,
) -> CommitResult {
    if commits.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(commits.len());
    for (p, o) in commits {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)
}
