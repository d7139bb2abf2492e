//! What every reconcile gets: the client, the event recorder, metrics, Kafka, settings.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::agent_runtime::build::{BuildSettings, FIELD_MANAGER};
use crate::kafka::KafkaBackend;
use crate::metrics::Metrics;

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
        }
    }
}
