//! One guard for every long-lived Kafka client of the process against librdkafka's
//! orphaned clients.
//!
//! librdkafka (2.10 and later, 2.12.1 here) drops every broker a metadata response does
//! not list, bootstrap servers included; a broker that is shutting down or starting
//! answers with no brokers but its topics (librdkafka issue #5301), and the client is
//! left with no broker to connect to, for good. Each client's statistics (every
//! [`STATS_INTERVAL`]) show whether a configured or learned broker is left; after
//! [`ORPHAN_GRACE`] without one its owner replaces it with a new client on the same
//! settings, keeping its own semantics: the group consumers give their partitions up as
//! lost and join again (`consumer_loop::brokers`), the tails resume where they were
//! (`tailing`), the producer hands what it had queued to its successor in order
//! (`producer`). This module is the part they share: reading the statistics and
//! telling when the grace has passed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;

/// How often librdkafka reports statistics to a guarded client (unless the user's
/// settings choose otherwise): the lag of readiness behind a lost broker.
pub(crate) const STATS_INTERVAL: &str = "1000";

/// How long a client may have no broker to connect to before it is replaced.
/// librdkafka's own re-bootstrap, when it happens, adds the bootstrap servers back
/// within this; a few statistics intervals.
pub(crate) const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// Lists the client kinds (`group`, `producer`, `replies`, `registry`, `tail`, `admin`, or
/// `all`) whose orphans are *not* replaced: only for tests that prove a guard matters.
const GUARD_OFF_ENV: &str = "SWITCHBOARD_ORPHAN_GUARD_OFF";

/// Which client a guard watches (log lines, metrics, [`GUARD_OFF_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    /// A group consumer (inbox, events, source topics).
    Group,
    /// The process's producer.
    Producer,
    /// The reply-channel consumer.
    Replies,
    /// The registry tail.
    Registry,
    /// Another tail (the A2A tasks topic).
    Tail,
    /// A topic admin client (`admin::TopicAdmin`, cached by the operator).
    Admin,
}

impl ClientKind {
    /// The kind's name in logs and in [`GUARD_OFF_ENV`].
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Producer => "producer",
            Self::Replies => "replies",
            Self::Registry => "registry",
            Self::Tail => "tail",
            Self::Admin => "admin",
        }
    }

    fn guarded(self) -> bool {
        static OFF: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let off = OFF.get_or_init(|| {
            std::env::var(GUARD_OFF_ENV)
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        });
        !off.iter().any(|k| k == "all" || k == self.name())
    }
}

/// Clients replaced so far in this process (for logs and tests).
static REPLACED: AtomicU64 = AtomicU64::new(0);

/// How many orphaned clients this process replaced so far.
pub(crate) fn clients_replaced() -> u64 {
    REPLACED.load(Ordering::Relaxed)
}

/// Counts a replacement and says so (the log line tests and operators look for).
pub(crate) fn replaced(kind: ClientKind, what: &str) {
    REPLACED.fetch_add(1, Ordering::Relaxed);
    tracing::info!(client = kind.name(), %what, "replaced the orphaned client");
}

/// `config` with statistics on (at [`STATS_INTERVAL`] unless set): the guard reads them.
pub(crate) fn with_statistics(config: &ClientConfig) -> ClientConfig {
    let mut config = config.clone();
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", STATS_INTERVAL);
    }
    config
}

/// What one client's statistics said last: connected or not, orphaned since when.
/// Owned by whoever owns the client, and kept across its replacements.
pub(crate) struct BrokerWatch {
    kind: ClientKind,
    /// What the client is for (a topic), in log lines.
    what: String,
    connected: AtomicBool,
    orphaned_since: Mutex<Option<Instant>>,
}

impl BrokerWatch {
    /// A watch of a client of `kind` for `what`; connected until statistics say not.
    pub(crate) fn new(kind: ClientKind, what: &str) -> Arc<Self> {
        Arc::new(Self {
            kind,
            what: what.to_owned(),
            connected: AtomicBool::new(true),
            orphaned_since: Mutex::new(None),
        })
    }

    /// Which client it watches.
    pub(crate) fn kind(&self) -> ClientKind {
        self.kind
    }

    /// What the client is for.
    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// Applies one statistics report (unreadable ones are ignored).
    pub(crate) fn observe(&self, statistics: &[u8]) {
        let Some(BrokerView { up, orphaned }) = broker_view(statistics) else {
            return;
        };
        {
            let mut since = self.since();
            match (orphaned, *since) {
                (true, None) => *since = Some(Instant::now()),
                (false, Some(_)) => *since = None,
                _ => {}
            }
        }
        let was = self.connected.swap(up, Ordering::SeqCst);
        if was != up {
            let (client, what) = (self.kind.name(), &self.what);
            if up {
                tracing::info!(client, %what, "connected to the broker again");
            } else {
                tracing::warn!(client, %what, "no connection to any broker");
            }
        }
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.orphaned_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the client is connected to a broker (as of its last statistics).
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Whether the client has had no broker to connect to for [`ORPHAN_GRACE`] and
    /// is to be replaced (false for kinds turned off by [`GUARD_OFF_ENV`]).
    pub(crate) fn orphaned(&self) -> bool {
        self.since().is_some_and(|t| t.elapsed() >= ORPHAN_GRACE) && self.kind.guarded()
    }

    /// Says why the client is replaced and forgets the orphaned state: the next one
    /// starts afresh.
    pub(crate) fn replacing(&self) {
        tracing::warn!(client = self.kind.name(), what = %self.what, after = ?ORPHAN_GRACE, "the client has no broker left to connect to (librdkafka dropped them all after a metadata response without brokers); replacing it");
        *self.since() = None;
    }
}

/// The context of a guarded client that needs no other callbacks (the tails): feeds
/// its statistics to its owner's [`BrokerWatch`] until it is retired.
pub(crate) struct GuardContext {
    watch: Arc<BrokerWatch>,
    /// Set on a client that was replaced: its last statistics, while it closes, are
    /// not its successor's.
    retired: AtomicBool,
}

impl GuardContext {
    /// A context reporting to `watch`.
    pub(crate) fn new(watch: &Arc<BrokerWatch>) -> Self {
        Self {
            watch: Arc::clone(watch),
            retired: AtomicBool::new(false),
        }
    }

    /// Stops reporting (the client was replaced).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    /// Feeds `statistics` to the watch unless retired.
    pub(crate) fn observe(&self, statistics: &[u8]) {
        if !self.retired.load(Ordering::SeqCst) {
            self.watch.observe(statistics);
        }
    }
}

impl ClientContext for GuardContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.observe(statistics);
    }
}

impl ConsumerContext for GuardContext {}

/// What a client's statistics say about its brokers.
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
        // Older statistics without `source`: do not take the client for orphaned.
        None => true,
    };
    Some(BrokerView {
        up: stats.brokers.values().any(|b| b.state == "UP"),
        orphaned: !stats.brokers.values().any(reachable),
    })
}

#[cfg(test)]
mod tests {
    use super::{BrokerView, BrokerWatch, ClientKind, broker_view};

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
    fn a_client_is_connected_while_one_broker_is_up() {
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
    fn a_client_with_only_internal_and_coordinator_handles_is_orphaned() {
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

    #[test]
    fn a_watch_is_orphaned_only_after_the_grace_and_forgets_it_when_replacing() {
        let watch = BrokerWatch::new(ClientKind::Replies, "t");
        let orphan = stats(&[("DOWN", "logical")]);
        watch.observe(orphan.as_bytes());
        assert!(!watch.orphaned(), "not before the grace");
        assert!(!watch.connected(), "no broker up");
        // Pretend the grace passed.
        *watch.since() = Some(std::time::Instant::now() - super::ORPHAN_GRACE);
        assert!(watch.orphaned());
        watch.replacing();
        assert!(!watch.orphaned(), "the replacement starts afresh");
        watch.observe(stats(&[("UP", "learned")]).as_bytes());
        assert!(watch.connected());
    }
}
