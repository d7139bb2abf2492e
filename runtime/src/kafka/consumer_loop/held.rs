//! Partitions a consumer loop holds: assigned, but kept paused because the worker is
//! not ready for them ([`PartitionWorker::not_ready`]: the inbox's agents' state could
//! not be read). Asked again each poll; resumed once ready. A record of a held partition
//! fetched before the pause took effect is rewound by the poll loop, never dispatched.

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{LoopContext, PartitionWorker, Shared, partition_list};

/// Pauses `partitions` until the worker is ready for them (see [`release_ready`]).
pub(super) fn hold<W: PartitionWorker>(
    consumer: &BaseConsumer<LoopContext<W>>,
    shared: &Shared<W>,
    partitions: &[i32],
) {
    let topic = &shared.settings.topic;
    // Kept as held even if the pause fails: `poll_loop` rewinds what it fetches.
    if let Err(e) = consumer.pause(&partition_list(topic, partitions)) {
        tracing::warn!(%topic, ?partitions, error = %e, "could not pause partitions the worker is not ready for");
    }
    shared.held().extend(partitions);
    tracing::warn!(%topic, ?partitions, "partitions held: not dispatched until the worker is ready");
}

/// Resumes held partitions the worker is ready for now (not those paused for
/// backpressure meanwhile: `apply_backpressure` resumes them).
pub(super) fn release_ready<W: PartitionWorker>(
    consumer: &BaseConsumer<LoopContext<W>>,
    shared: &Shared<W>,
) {
    let held: Vec<i32> = shared.held().iter().copied().collect();
    if held.is_empty() {
        return;
    }
    let waiting = shared.worker.not_ready(&held);
    let ready: Vec<i32> = held.into_iter().filter(|p| !waiting.contains(p)).collect();
    if ready.is_empty() {
        return;
    }
    shared.worker.ready(&ready);
    let resume: Vec<i32> = {
        let paused = shared.paused.lock().unwrap_or_else(|e| e.into_inner());
        ready
            .iter()
            .copied()
            .filter(|p| !paused.contains(p))
            .collect()
    };
    let topic = &shared.settings.topic;
    if !resume.is_empty()
        && let Err(e) = consumer.resume(&partition_list(topic, &resume))
    {
        tracing::warn!(%topic, partitions = ?resume, error = %e, "could not resume ready partitions");
        return;
    }
    shared.held().retain(|p| !ready.contains(p));
    tracing::info!(%topic, partitions = ?ready, "held partitions ready: dispatching again");
}
