//! What every reconcile gets: the client, the event recorder, metrics, Kafka, settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::agent_runtime::build::{BuildSettings, FIELD_MANAGER};
use crate::kafka::KafkaBackend;
use crate::metrics::Metrics;

/// Default of [`Timing::reply_gc_grace`].
pub const DEFAULT_REPLY_GC_GRACE: Duration = Duration::from_secs(300);

/// How often the operator looks again without being told (lag, Kafka-side drift).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Requeue interval of every AgentRuntime: refreshes `status.lag` and repairs
    /// Kafka-side drift (reads only; a steady state writes nothing).
    pub resync: Duration,
    /// Requeue interval of AgentRuntimes with `spec.autoscaling` (lag is sampled this
    /// often).
    pub autoscale_interval: Duration,
    /// How long a lower replica recommendation must hold before scaling down.
    pub scale_down_window: Duration,
    /// How long after a process's last heartbeat expired its reply channel is deleted
    /// (`None`: never). Collection runs every `resync`.
    pub reply_gc_grace: Option<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(60),
            autoscale_interval: Duration::from_secs(15),
            scale_down_window: Duration::from_secs(300),
            reply_gc_grace: Some(DEFAULT_REPLY_GC_GRACE),
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Kubernetes Events on condition transitions.
    pub recorder: Recorder,
    /// Reconcile and write counters.
    pub metrics: Arc<Metrics>,
    /// Kafka topics and registry records.
    pub kafka: Arc<dyn KafkaBackend>,
    /// Defaults for the build step.
    pub settings: BuildSettings,
    /// Resync and autoscaling intervals.
    pub timing: Timing,
    /// Pending scale-downs of autoscaled runtimes, by `namespace/name` (in memory: a
    /// restarted operator starts the stabilization window again, which only delays).
    pub scale_downs: Mutex<HashMap<String, crate::agent_runtime::autoscale::ScaleDown>>,
}

impl Context {
    /// A context whose events are reported by `switchboard-operator`.
    pub fn new(
        client: Client,
        kafka: Arc<dyn KafkaBackend>,
        metrics: Arc<Metrics>,
        settings: BuildSettings,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            kafka,
            settings,
            timing: Timing::default(),
            scale_downs: Mutex::new(HashMap::new()),
        }
    }

    /// The same context with other intervals (tests shorten them).
    #[must_use]
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }
}
