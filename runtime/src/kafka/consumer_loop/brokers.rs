//! A consumer loop's brokers, from librdkafka's statistics (`guard`): whether it is
//! connected (readiness follows it) and whether librdkafka left it without any broker
//! to connect to, in which case the consumer is replaced (see the parent module's doc)
//! and joins the group again.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, Weak};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{LoopContext, PartitionWorker, Shared, subscribed_consumer};
use crate::kafka::guard::{self, ClientKind};

impl<W: PartitionWorker> ClientContext for LoopContext<W> {
    fn stats_raw(&self, statistics: &[u8]) {
        if !self.retired.load(Ordering::SeqCst) {
            self.shared.brokers.observe(statistics);
        }
    }
}

/// Replaces an orphaned consumer (see the module doc): its partitions are given up as
/// lost, its committing thread and the consumer itself are let go on their own
/// threads (closing a client without brokers may wait for its requests to time out),
/// and a new consumer subscribes. Returns the old one when the new one cannot be made.
pub(super) fn replace_orphan<W: PartitionWorker>(
    old: Arc<BaseConsumer<LoopContext<W>>>,
    config: &ClientConfig,
    current: &RwLock<Weak<BaseConsumer<LoopContext<W>>>>,
    shared: &Arc<Shared<W>>,
) -> Arc<BaseConsumer<LoopContext<W>>> {
    let topic = &shared.settings.topic;
    shared.brokers.replacing();
    let partitions = shared.tracker().partitions();
    if !partitions.is_empty() {
        shared.give_up_lost(&partitions);
    }
    old.context().retired.store(true, Ordering::SeqCst);
    if let Some(committer) = shared.committer().take() {
        committer.detach();
    }
    match subscribed_consumer(config, shared) {
        Ok(new) => {
            *current.write().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&new);
            let closing = std::thread::Builder::new()
                .name(format!("{}-close", shared.settings.thread_name))
                .spawn(move || drop(old));
            if let Err(e) = closing {
                tracing::warn!(%topic, error = %e, "cannot start a thread to close the orphaned consumer; it is leaked");
            }
            guard::replaced(ClientKind::Group, topic);
            new
        }
        Err(error) => {
            tracing::error!(%topic, %error, "cannot create a consumer to replace the orphaned one; retrying");
            old
        }
    }
}
