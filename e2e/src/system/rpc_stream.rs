//! A steady stream of RPCs over Kafka while the runtime scales.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_runtime::{
    AgentId, AgentRuntime as _, KafkaAgentRuntime, KafkaConfig, Payload, SendOptions, WorkerConfig,
};

use super::{CALL_BOUND, LONG, System};
use crate::wait::wait_for;

/// A steady stream of sequential RPCs to echo agents over Kafka (not through a pod,
/// which may be the one being removed) while the runtime scales: every call must be
/// answered with its own data within [`CALL_BOUND`].
pub struct RpcStream {
    issued: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Duration>,
}

/// What a finished [`RpcStream`] saw.
pub struct StreamResult {
    /// Calls made.
    pub issued: usize,
    /// Calls answered with their own data in time.
    pub answered: usize,
    /// Every other call: what it got, after how long.
    pub failures: Vec<String>,
    /// The longest call.
    pub slowest: Duration,
}

impl RpcStream {
    /// Starts a Kafka client on the suite's prefix and the stream of calls.
    pub async fn start(system: &System) -> Self {
        let cfg = WorkerConfig::new(
            KafkaConfig::new(system.bootstrap.clone()),
            system.prefix.clone(),
            "e2e-caller",
        );
        let caller = KafkaAgentRuntime::start_client(cfg)
            .await
            .unwrap_or_else(|e| panic!("start the RPC stream's client: {e}"));
        let issued = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (issued, answered, failures, stop) = (
                Arc::clone(&issued),
                Arc::clone(&answered),
                Arc::clone(&failures),
                Arc::clone(&stop),
            );
            async move {
                let mut slowest = Duration::ZERO;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let to = AgentId::new("echo", format!("k{}", i % 32))
                        .expect("echo/kN is a valid agent id");
                    let data = json!({ "i": i });
                    let options = SendOptions {
                        timeout: Some(CALL_BOUND),
                        ..SendOptions::default()
                    };
                    issued.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    // The runtime's own timeout ends a call at CALL_BOUND; the outer
                    // one only guards against a send that never returns at all.
                    let result = tokio::time::timeout(
                        CALL_BOUND + Duration::from_secs(5),
                        caller.send_payload(Payload::json("e2e.Ping", &data), &to, options),
                    )
                    .await;
                    slowest = slowest.max(started.elapsed());
                    match result {
                        Ok(Ok(Some(reply)))
                            if reply.decode_json::<Value>().ok().as_ref() == Some(&data) =>
                        {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures
                            .lock()
                            .expect("no thread panicked holding the list")
                            .push(format!(
                                "call {i} to {to} after {:?}: {other:?}",
                                started.elapsed()
                            )),
                    }
                }
                let _ = caller.stop().await;
                slowest
            }
        });
        Self {
            issued,
            answered,
            failures,
            stop,
            task,
        }
    }

    /// Waits until `n` more calls have been answered.
    pub async fn wait_more(&self, n: usize, what: &str) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        wait_for(what, LONG, || async {
            (self.answered.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    /// Stops after the call in flight and reports what the stream saw.
    pub async fn finish(self) -> StreamResult {
        self.stop.store(true, Ordering::Relaxed);
        let slowest = tokio::time::timeout(CALL_BOUND * 2, self.task)
            .await
            .expect("the stream's last call ends within its bound")
            .expect("the stream's task did not panic");
        let failures = self
            .failures
            .lock()
            .expect("no thread panicked holding the list")
            .clone();
        StreamResult {
            issued: self.issued.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            failures,
            slowest,
        }
    }
}
