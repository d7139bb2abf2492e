//! Prometheus metrics of the operator: reconciles, failures by class, reconcile
//! duration, and API writes (the no-hot-loop promise is checked against these).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming the controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `agentruntime` or `agentsubscription`.
    pub controller: &'static str,
}

/// Labels of a failure: controller and error class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `agentruntime` or `agentsubscription`.
    pub controller: &'static str,
    /// [`crate::Error::metric_label`].
    pub error: &'static str,
}

/// Labels of an API write: controller, kind of object, verb.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `agentruntime` or `agentsubscription`.
    pub controller: &'static str,
    /// Kind written (`Deployment`, `AgentRuntime/status`, `Event`, ...).
    pub kind: &'static str,
    /// `apply`, `patch`, `delete`, `create`.
    pub verb: &'static str,
}

/// Every metric of the operator, registered in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    writes: Family<WriteLabels, Counter>,
    writes_total: AtomicU64,
    reply_channels_deleted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchboard_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error class",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        registry.register(
            "api_writes",
            "Write requests sent to the Kubernetes API",
            writes.clone(),
        );
        let reply_channels_deleted = Counter::default();
        registry.register(
            "reply_channels_deleted",
            "Reply-channel topics of crashed processes deleted after the grace period",
            reply_channels_deleted.clone(),
        );
        Self {
            registry,
            reply_channels_deleted,
            reconciles,
            failures,
            duration,
            writes,
            writes_total: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one reply channel deleted by the garbage collector.
    pub fn reply_channel_deleted(&self) {
        self.reply_channels_deleted.inc();
    }

    /// Reply channels deleted so far.
    pub fn reply_channels_deleted(&self) -> u64 {
        self.reply_channels_deleted.get()
    }

    /// Starts timing one reconcile of `controller`; the guard records the duration.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile by class.
    pub fn failure(&self, controller: &'static str, error: &crate::Error) {
        self.failures
            .get_or_create(&FailureLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Counts one write request to the API server.
    pub fn write(&self, controller: &'static str, kind: &'static str, verb: &'static str) {
        self.writes
            .get_or_create(&WriteLabels {
                controller,
                kind,
                verb,
            })
            .inc();
        self.writes_total.fetch_add(1, Ordering::Relaxed);
    }

    /// All write requests sent so far.
    pub fn writes_total(&self) -> u64 {
        self.writes_total.load(Ordering::Relaxed)
    }

    /// Reconciles run so far by `controller`.
    pub fn reconciles_total(&self, controller: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .get()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_reconciles_failures_and_durations() {
        let m = Metrics::default();
        drop(m.reconcile("agentruntime"));
        m.failure("agentruntime", &crate::Error::Kafka("down".into()));
        m.write("agentruntime", "Deployment", "apply");
        let text = m.encode().unwrap();
        assert!(
            text.contains("switchboard_operator_reconciles_total{controller=\"agentruntime\"} 1"),
            "{text}"
        );
        assert!(text.contains("error=\"kafka\""), "{text}");
        assert!(
            text.contains("switchboard_operator_reconcile_duration_seconds_count"),
            "{text}"
        );
        assert_eq!(m.writes_total(), 1);
    }
}
