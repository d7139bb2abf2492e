//! Rebalance handling of a consumer loop: what happens to a partition's progress when
//! it is revoked, lost or assigned (the final commit with its retries, positions kept
//! for lost partitions and committed when they come back, the start at the end of a
//! topic the group never read). See the parent module's doc.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};

use super::{LoopContext, PartitionWorker, Shared};
use crate::kafka::committer::Commits;

/// How long a commit that must land before a partition changes hands may take.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long such a commit is retried while the group is between generations.
const FINAL_COMMIT_RETRIES: Duration = Duration::from_secs(3);

/// How long a stopping consumer keeps polling for partitions it lost with records
/// handled but not committed: sticky assignment usually hands them back at its next
/// join, and then what it handled is committed (`restore_unsaved`) instead of being
/// handled again by the next reader.
const LOST_RETURN_WAIT: Duration = Duration::from_secs(3);

/// Commit errors that a retry a moment later can overcome.
fn retriable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::RebalanceInProgress
                | Code::IllegalGeneration
                | Code::StaleMemberEpoch
                | Code::NotCoordinator
                | Code::CoordinatorNotAvailable
                | Code::CoordinatorLoadInProgress
                | Code::RequestTimedOut
        )
    )
}

impl<W: PartitionWorker> Shared<W> {
    /// Commits the positions of `partitions` and waits for it, moved or not (an
    /// earlier commit may have failed, and after this the partitions are gone).
    /// Positions that could not be committed are kept in `unsaved`.
    pub(super) fn commit_final(&self, partitions: &[i32]) {
        let commits = self.tracker().positions(partitions);
        if commits.is_empty() {
            return;
        }
        // A commit refused because the group is between JoinGroup and SyncGroup
        // (classic) or the member epoch moved on is accepted a moment later, with the
        // generation librdkafka has then; giving the partitions up uncommitted would
        // make their next owner handle again what was done here.
        let deadline = Instant::now() + FINAL_COMMIT_RETRIES;
        loop {
            let result = match self.committer().as_ref() {
                Some(c) => c.commit_now(commits.clone(), FINAL_COMMIT_TIMEOUT),
                None => Err(rdkafka::error::KafkaError::Canceled),
            };
            match result {
                Ok(()) => return,
                Err(e) if retriable(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => {
                    tracing::warn!(topic = %self.settings.topic, %error, ?commits, "final offset commit failed; the next owner may handle these partitions' last records again");
                    self.unsaved().extend(commits);
                    return;
                }
            }
        }
    }

    /// Gives up `partitions` without a commit: this generation is over (a commit would
    /// be refused) and another member may own them already, so what was handled is
    /// kept for when they come back (see the module doc).
    pub(super) fn give_up_lost(&self, partitions: &[i32]) {
        self.worker.revoking(partitions);
        tracing::warn!(topic = %self.settings.topic, ?partitions, "partitions lost; their handled positions are kept until they come back");
        let commits = self.tracker().positions(partitions);
        self.unsaved().extend(commits);
        self.forget(partitions);
    }

    /// Before a stopping consumer leaves: while partitions it lost are kept in
    /// `unsaved`, polls (up to [`LOST_RETURN_WAIT`]) so the group can hand them back and
    /// their positions get committed. Records that polling returns now are not
    /// dispatched, nor tracked, so nothing of them is committed.
    pub(super) fn wait_for_lost<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        let deadline = Instant::now() + LOST_RETURN_WAIT;
        while !self.unsaved().is_empty() && Instant::now() < deadline {
            let _ = consumer.poll(Duration::from_millis(20));
        }
        let unsaved: Vec<(i32, i64)> = self.unsaved().drain().collect();
        if !unsaved.is_empty() {
            tracing::warn!(topic = %self.settings.topic, ?unsaved, "stopping with positions of lost partitions not committed; their next reader handles those records again");
        }
    }

    /// Stops tracking revoked `partitions`.
    fn forget(&self, partitions: &[i32]) {
        {
            let mut t = self.tracker();
            for p in partitions {
                t.revoke(*p);
            }
        }
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !partitions.contains(p));
        self.held().retain(|p| !partitions.contains(p));
        self.worker.revoked(partitions);
        tracing::info!(topic = %self.settings.topic, ?partitions, "partitions revoked");
        self.assignments.send_modify(|n| *n += 1);
    }

    /// Before `partitions` are fetched again: commits what this member handled of
    /// them before it lost them, where that is ahead of the group's committed offset.
    fn restore_unsaved<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, partitions: &[i32]) {
        let kept: Vec<(i32, i64)> = {
            let mut unsaved = self.unsaved();
            partitions
                .iter()
                .filter_map(|p| unsaved.remove(p).map(|o| (*p, o)))
                .collect()
        };
        if kept.is_empty() {
            return;
        }
        let topic = &self.settings.topic;
        let kept_partitions: Vec<i32> = kept.iter().map(|(p, _)| *p).collect();
        let tpl = super::partition_list(topic, &kept_partitions);
        let committed = match consumer.committed_offsets(tpl, FINAL_COMMIT_TIMEOUT) {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%topic, %error, "cannot read committed offsets; records handled before the partitions were lost will be handled again");
                return;
            }
        };
        let ahead: Commits = kept
            .into_iter()
            .filter(|(p, o)| {
                !matches!(
                    committed.find_partition(topic, *p).map(|e| e.offset()),
                    Some(Offset::Offset(c)) if c >= *o
                )
            })
            .collect();
        if ahead.is_empty() {
            return;
        }
        let result = match self.committer().as_ref() {
            Some(c) => c.commit_now(ahead.clone(), FINAL_COMMIT_TIMEOUT),
            None => Err(rdkafka::error::KafkaError::Canceled),
        };
        match result {
            Ok(()) => {
                tracing::info!(%topic, ?ahead, "committed what was handled before the partitions were lost")
            }
            Err(error) => {
                tracing::warn!(%topic, %error, ?ahead, "commit of partitions handled before they were lost failed; they will be handled again")
            }
        }
    }
}

impl<W: PartitionWorker> ConsumerContext for LoopContext<W> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if self.retired.load(Ordering::SeqCst) {
            return;
        }
        let shared = &self.shared;
        let tpl = match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partitions_of(tpl, &shared.settings.topic);
                // Before librdkafka reads the committed offsets to fetch from.
                shared.restore_unsaved(consumer, &partitions);
                // Before the assignment takes effect, so the fetcher finds the commit.
                if shared.settings.start_at_end && !partitions.is_empty() {
                    commit_end_if_uncommitted(consumer, &shared.settings.topic, &partitions);
                }
                return;
            }
            Rebalance::Revoke(tpl) => tpl,
            Rebalance::Error(_) => return,
        };
        let partitions = partitions_of(tpl, &shared.settings.topic);
        if partitions.is_empty() {
            return;
        }
        if consumer.assignment_lost() {
            shared.give_up_lost(&partitions);
            return;
        }
        shared.worker.revoking(&partitions);
        let left = shared.drain(&partitions);
        if left > 0 {
            tracing::warn!(topic = %shared.settings.topic, ?partitions, left, "drain deadline passed during revocation");
        }
        shared.commit_final(&partitions);
        shared.forget(&partitions);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if self.retired.load(Ordering::SeqCst) {
            return;
        }
        let shared = &self.shared;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partitions_of(tpl, &shared.settings.topic);
                {
                    let mut t = shared.tracker();
                    for p in &partitions {
                        t.assign(*p);
                    }
                }
                shared.worker.assigned(&partitions);
                let not_ready = shared.worker.not_ready(&partitions);
                if !not_ready.is_empty() {
                    super::held::hold(consumer, shared, &not_ready);
                }
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
    let committed =
        match consumer.committed_offsets(super::partition_list(topic, partitions), TIMEOUT) {
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
        match consumer.commit(&to_commit, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => {
                tracing::info!(%topic, partitions = to_commit.count(), "first read of the topic by this group: starting at its end")
            }
            Err(e) => tracing::warn!(%topic, error = %e, "committing the start offsets failed"),
        }
    }
}

/// The partitions of `topic` in a rebalance's list.
fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}
