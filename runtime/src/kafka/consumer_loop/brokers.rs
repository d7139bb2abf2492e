//! A consumer loop's brokers, from librdkafka's statistics: whether it is connected
//! (readiness follows it) and whether librdkafka left it without any broker to connect
//! to, in which case the consumer is replaced (see the parent module's doc).

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{LoopContext, PartitionWorker, Shared, subscribed_consumer};

impl<W: PartitionWorker> ClientContext for LoopContext<W> {
    fn stats_raw(&self, statistics: &[u8]) {
        if self.retired.load(Ordering::SeqCst) {
            return;
        }
        let Some(BrokerView { up, orphaned }) = broker_view(statistics) else {
            return;
        };
        {
            let mut since = self
                .shared
                .orphaned_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match (orphaned, *since) {
                (true, None) => *since = Some(Instant::now()),
                (false, Some(_)) => *since = None,
                _ => {}
            }
        }
        let was = self.shared.connected.swap(up, Ordering::SeqCst);
        if was != up {
            let topic = &self.shared.settings.topic;
            if up {
                tracing::info!(%topic, "connected to the broker again");
            } else {
                tracing::warn!(%topic, "no connection to any broker; not ready until one is back");
            }
        }
    }
}

/// How often librdkafka reports statistics to a loop's consumer (unless the user's
/// consumer settings choose otherwise): the lag of readiness behind a lost broker.
pub(super) const STATS_INTERVAL: &str = "1000";

/// How long a consumer may have no broker to connect to before it is replaced (see
/// the module doc). librdkafka's own re-bootstrap, when it happens, adds the bootstrap
/// servers back within this; a few statistics intervals.
const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// What a consumer's statistics say about its brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BrokerView {
    /// Connected to at least one broker (state `UP`).
    up: bool,
    /// No broker left that it could connect to: none configured (bootstrap) or
    /// learned from metadata, only the internal and logical (coordinator) handles.
    orphaned: bool,
}

/// Reads librdkafka's statistics JSON; `None` when it cannot be read. Only the fields
/// needed are decoded, not rdkafka's whole `Statistics`.
fn broker_view(statistics: &[u8]) -> Option<BrokerView> {
    #[derive(serde::Deserialize)]
    struct Stats {
        brokers: std::collections::HashMap<String, Broker>,
    }
    #[derive(serde::Deserialize)]
    struct Broker {
        state: String,
        #[serde(default)]
        source: Option<String>,
    }
    let stats: Stats = serde_json::from_slice(statistics).ok()?;
    let reachable = |b: &Broker| match b.source.as_deref() {
        Some(s) => s == "configured" || s == "learned",
        // Older statistics without `source`: do not take the consumer for orphaned.
        None => true,
    };
    Some(BrokerView {
        up: stats.brokers.values().any(|b| b.state == "UP"),
        orphaned: !stats.brokers.values().any(reachable),
    })
}

/// Whether the consumer has had no broker to connect to for [`ORPHAN_GRACE`].
pub(super) fn orphaned<W>(shared: &Shared<W>) -> bool {
    shared
        .orphaned_since
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|t| t.elapsed() >= ORPHAN_GRACE)
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
    tracing::warn!(%topic, after = ?ORPHAN_GRACE, "the consumer has no broker left to connect to (librdkafka dropped them all after a metadata response without brokers); replacing it");
    let partitions = shared.tracker().partitions();
    if !partitions.is_empty() {
        shared.give_up_lost(&partitions);
    }
    old.context().retired.store(true, Ordering::SeqCst);
    if let Some(committer) = shared.committer().take() {
        committer.detach();
    }
    *shared
        .orphaned_since
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = None;
    match subscribed_consumer(config, shared) {
        Ok(new) => {
            *current.write().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&new);
            let closing = std::thread::Builder::new()
                .name(format!("{}-close", shared.settings.thread_name))
                .spawn(move || drop(old));
            if let Err(e) = closing {
                tracing::warn!(%topic, error = %e, "cannot start a thread to close the orphaned consumer; it is leaked");
            }
            tracing::info!(%topic, "replaced the orphaned consumer; it joins the group again");
            new
        }
        Err(error) => {
            tracing::error!(%topic, %error, "cannot create a consumer to replace the orphaned one; retrying");
            old
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BrokerView, broker_view};

    fn stats(brokers: &[(&str, &str)]) -> String {
        let brokers: Vec<String> = brokers
            .iter()
            .enumerate()
            .map(|(i, (state, source))| {
                format!(r#""b{i}": {{"nodeid": {i}, "state": "{state}", "source": "{source}", "rtt": {{}}}}"#)
            })
            .collect();
        format!(r#"{{"name": "c", "brokers": {{{}}}}}"#, brokers.join(","))
    }

    fn view(brokers: &[(&str, &str)]) -> Option<BrokerView> {
        broker_view(stats(brokers).as_bytes())
    }

    #[test]
    fn a_consumer_is_connected_while_one_broker_is_up() {
        let up = |v: Option<BrokerView>| v.map(|v| v.up);
        assert_eq!(up(view(&[("UP", "learned")])), Some(true));
        assert_eq!(
            up(view(&[("DOWN", "learned"), ("UP", "configured")])),
            Some(true)
        );
        assert_eq!(
            up(view(&[("DOWN", "learned"), ("CONNECT", "configured")])),
            Some(false)
        );
        assert_eq!(up(view(&[])), Some(false));
        assert_eq!(broker_view(b"not json"), None);
    }

    #[test]
    fn a_consumer_with_only_internal_and_coordinator_handles_is_orphaned() {
        let orphaned = |v: Option<BrokerView>| v.map(|v| v.orphaned);
        // What librdkafka leaves after a metadata response without brokers (#5301).
        assert_eq!(
            orphaned(view(&[("UP", "internal"), ("DOWN", "logical")])),
            Some(true)
        );
        // A coordinator connection that is up does not make up for it.
        assert_eq!(
            orphaned(view(&[("UP", "internal"), ("UP", "logical")])),
            Some(true)
        );
        assert_eq!(
            orphaned(view(&[("UP", "internal"), ("DOWN", "learned")])),
            Some(false),
            "a learned broker that is down is reconnected by librdkafka"
        );
        assert_eq!(
            orphaned(view(&[("INIT", "configured")])),
            Some(false),
            "bootstrap servers (also a re-bootstrap) can be connected to"
        );
        // Statistics without `source` never count as orphaned.
        assert_eq!(
            broker_view(br#"{"brokers": {"b": {"state": "DOWN"}}}"#).map(|v| v.orphaned),
            Some(false)
        );
    }
}
