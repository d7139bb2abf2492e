//! What the runtime counts, for `/metrics`: messages by agent type and outcome, RPC
//! latency as seen by callers in this process, work in flight, dead letters, and
//! consumer lag per inbox partition (read from Kafka when `/metrics` is scraped).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the RPC latency histogram buckets.
pub const RPC_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Live counters; cheap to update from any thread.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    by_type: Mutex<HashMap<String, (u64, u64)>>,
    rpc_buckets: [AtomicU64; RPC_LATENCY_BUCKETS.len()],
    rpc_count: AtomicU64,
    rpc_sum_micros: AtomicU64,
    rpc_failed: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) delivered_locally: AtomicU64,
    /// Reads of a state partition that failed (its partition then waits; see
    /// `state_store`).
    pub(crate) state_restore_failures: AtomicU64,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Metrics {
    /// One message handled by an agent of `agent_type`.
    pub(crate) fn handled(&self, agent_type: &str, ok: bool) {
        let mut m = self.by_type.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by &str first: the key is allocated once per type, not per message.
        if !m.contains_key(agent_type) {
            m.insert(agent_type.to_owned(), (0, 0));
        }
        if let Some(entry) = m.get_mut(agent_type) {
            if ok {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }

    /// One RPC sent from this process ended after `elapsed`.
    pub(crate) fn rpc(&self, elapsed: Duration, ok: bool) {
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in RPC_LATENCY_BUCKETS.iter().zip(&self.rpc_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.rpc_count.fetch_add(1, Ordering::Relaxed);
        self.rpc_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            self.rpc_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Replaces the lag figures of `topic` (just read from Kafka).
    pub(crate) fn set_lag(&self, topic: &str, lags: impl IntoIterator<Item = (i32, i64)>) {
        let mut m = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(t, _), _| t != topic);
        for (p, lag) in lags {
            m.insert((topic.to_owned(), p), lag);
        }
    }

    /// A consistent-enough copy of everything.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let by_type = self.by_type.lock().unwrap_or_else(|e| e.into_inner());
        MetricsSnapshot {
            handled: by_type
                .iter()
                .map(|(t, (ok, _))| (t.clone(), *ok))
                .collect(),
            failed: by_type
                .iter()
                .map(|(t, (_, failed))| (t.clone(), *failed))
                .collect(),
            rpc_latency_buckets: RPC_LATENCY_BUCKETS
                .iter()
                .zip(&self.rpc_buckets)
                .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
                .collect(),
            rpc_count: self.rpc_count.load(Ordering::Relaxed),
            rpc_latency_sum_seconds: self.rpc_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            rpc_failed: self.rpc_failed.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0) as u64,
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            events_delivered_locally: self.delivered_locally.load(Ordering::Relaxed),
            state_restore_failures: self.state_restore_failures.load(Ordering::Relaxed),
            // Known to the runtime, not to the counters: filled in by its `metrics`.
            partitions_awaiting_state: 0,
            consumer_lag: self.lag.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// A copy of the runtime's metrics at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Messages handled successfully, by agent type.
    pub handled: BTreeMap<String, u64>,
    /// Messages whose handler failed, by agent type.
    pub failed: BTreeMap<String, u64>,
    /// Cumulative RPC latency histogram: (upper bound in seconds, count).
    pub rpc_latency_buckets: Vec<(f64, u64)>,
    /// RPCs sent from this process.
    pub rpc_count: u64,
    /// Sum of their latencies, seconds.
    pub rpc_latency_sum_seconds: f64,
    /// RPCs that ended in an error (handler error, timeout, ...).
    pub rpc_failed: u64,
    /// Messages queued or being handled now.
    pub in_flight: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Events put into a mailbox by the events consumer itself, not via the inbox.
    pub events_delivered_locally: u64,
    /// Reads of a state partition that failed (the partition's messages wait).
    pub state_restore_failures: u64,
    /// Inbox partitions this replica owns whose state is not restored yet (their
    /// messages wait until it is).
    pub partitions_awaiting_state: u64,
    /// Consumer lag (records) by (topic, partition), as of the last
    /// `KafkaAgentRuntime::refresh_consumer_lag` (each `/metrics` scrape).
    pub consumer_lag: BTreeMap<(String, i32), i64>,
}
