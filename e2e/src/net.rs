//! An agent network on the test broker: a fresh topic prefix per test, and runtimes
//! with test-friendly timings (fast heartbeats and liveness).

use std::time::Duration;

use switchboard_runtime::{KafkaAgentRuntime, KafkaConfig, RuntimeError, WorkerConfig};

use crate::env;

/// One agent network (topic prefix) on the test broker.
pub struct TestNet {
    /// The broker's bootstrap address.
    pub bootstrap: String,
    /// The network's topic prefix, unique per test.
    pub prefix: String,
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl TestNet {
    /// A new network with a unique prefix. Logs go to the test output, filtered
    /// by `RUST_LOG` (default: warnings).
    pub fn new() -> Self {
        env::init_test_logs();
        Self {
            bootstrap: env::kafka_bootstrap(),
            prefix: env::unique_name("t"),
        }
    }

    /// Settings for runtime `name` on this network.
    pub fn config(&self, name: &str) -> WorkerConfig {
        let mut cfg = WorkerConfig::new(KafkaConfig::new(&self.bootstrap), &self.prefix, name);
        cfg.heartbeat_interval = Duration::from_millis(500);
        cfg.liveness_timeout = Duration::from_secs(3);
        cfg.drain_timeout = Duration::from_secs(10);
        cfg.rpc_timeout = Duration::from_secs(20);
        cfg
    }

    /// A runtime named `name`, not started yet.
    pub fn runtime(&self, name: &str) -> KafkaAgentRuntime {
        KafkaAgentRuntime::new(self.config(name)).expect("test config is valid")
    }

    /// A started runtime named `name`.
    pub async fn start(&self, name: &str) -> Result<KafkaAgentRuntime, RuntimeError> {
        KafkaAgentRuntime::start_with(self.config(name)).await
    }
}
