//! Replicas joining and leaving under load, with what users notice measured: the
//! longest RPC while the runtime scales 1 -> 3 -> 1, how long a new replica takes to
//! own inbox partitions, and how many events are handled twice when replicas join and
//! leave in quick succession. The `kip848` tests assert on these (both group
//! protocols); `bench group-protocol` prints them side by side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::join_all;
use switchboard_runtime::{
    AgentId, AgentRuntime, AgentRuntimeExt, KafkaAgentRuntime, WorkerConfig,
};

use crate::agents::{Ping, Pong, Responder, TurnChecker, TurnLog, publish_turns};

/// Longest any step may take before the run fails (every wait here is bounded).
const STEP_BOUND: Duration = Duration::from_secs(90);

/// What the RPC stream saw while the runtime scaled 1 -> 3 -> 1.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleReport {
    /// Calls made.
    pub calls: usize,
    /// Calls answered by the right agent with their own data.
    pub answered: usize,
    /// Every other call.
    pub failures: Vec<String>,
    /// The longest call, milliseconds.
    pub slowest_rpc_ms: f64,
    /// Median call, milliseconds.
    pub median_rpc_ms: f64,
    /// Per joining replica: from its start to owning an inbox partition, milliseconds.
    pub take_partitions_ms: Vec<f64>,
    /// Whole scale-out and scale-in, milliseconds.
    pub scale_ms: f64,
}

/// What rapid join/leave churn did to event delivery.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChurnReport {
    /// Events published.
    pub published: usize,
    /// Events handled, replays included.
    pub handled: usize,
    /// Events handled a second time (same message id).
    pub replays: usize,
    /// Broken order or overlapping turns.
    pub violations: Vec<String>,
    /// Offset commits that failed in the replicas (each was sent again).
    pub commit_failures: u64,
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !ok() {
        if started.elapsed() > STEP_BOUND {
            bail!("{what}: not within {STEP_BOUND:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn responder_replica(config: WorkerConfig) -> anyhow::Result<KafkaAgentRuntime> {
    let rt = KafkaAgentRuntime::start_with(config).await?;
    rt.register("responder", Responder::new).await?;
    Ok(rt)
}

/// Starts a replica of `responder` agents and returns it with the time it took to own
/// an inbox partition.
async fn join(config: WorkerConfig) -> anyhow::Result<(KafkaAgentRuntime, Duration)> {
    let started = Instant::now();
    let rt = responder_replica(config).await?;
    until("the new replica owns an inbox partition", || {
        !rt.inbox_partitions().is_empty()
    })
    .await?;
    Ok((rt, started.elapsed()))
}

/// Sequential RPCs from a client (`caller`) to 32 responders while replicas of
/// runtime `pool` (configs from `config`) go 1 -> 3 -> 1; each step waits for calls to
/// be answered after the membership settled.
pub async fn scale_1_3_1(config: impl Fn(&str) -> WorkerConfig) -> anyhow::Result<ScaleReport> {
    let (first, _) = join(config("pool")).await?;
    let caller = KafkaAgentRuntime::start_client(config("caller")).await?;
    let caller = &caller;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
        async move {
            let (mut samples, mut failures) = (Vec::new(), Vec::new());
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let to = AgentId::new("responder", format!("k{}", n % 32))?;
                let started = Instant::now();
                let reply = caller.send_message(&Ping { n }, &to).await;
                samples.push(started.elapsed());
                match reply.map(|r| r.map(|p| p.decode::<Pong>())) {
                    Ok(Some(Ok(pong))) if pong.n == n && pong.by == to.to_string() => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failures.push(format!(
                        "call {n} to {to} after {:?}: {other:?}",
                        started.elapsed()
                    )),
                }
            }
            anyhow::Ok((samples, failures))
        }
    };
    let answered_more = |k: usize| {
        let answered = Arc::clone(&answered);
        async move {
            let target = answered.load(Ordering::SeqCst) + k;
            until("RPCs answered", || {
                answered.load(Ordering::SeqCst) >= target
            })
            .await
        }
    };
    let membership = async {
        answered_more(100).await?;
        let started = Instant::now();
        let (second, t2) = join(config("pool")).await?;
        answered_more(100).await?;
        let (third, t3) = join(config("pool")).await?;
        answered_more(100).await?;
        third.stop().await?;
        answered_more(100).await?;
        second.stop().await?;
        answered_more(100).await?;
        let scale = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        anyhow::Ok((vec![t2, t3], scale))
    };
    let (stream, membership) = tokio::join!(stream, membership);
    stop.store(true, Ordering::SeqCst);
    caller.stop().await?;
    first.stop().await?;
    let (mut samples, failures) = stream?;
    let (takes, scale) = membership?;
    samples.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    Ok(ScaleReport {
        calls: samples.len(),
        answered: answered.load(Ordering::SeqCst),
        failures,
        slowest_rpc_ms: samples.last().copied().map_or(0.0, ms),
        median_rpc_ms: samples.get(samples.len() / 2).copied().map_or(0.0, ms),
        take_partitions_ms: takes.into_iter().map(ms).collect(),
        scale_ms: ms(scale),
    })
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Keys events are published for (each key in order).
const KEYS: u64 = 24;
/// Events handled between two membership changes.
const STEP: usize = 500;

/// Publishes events for [`KEYS`] keys from `publisher` while replicas of runtime
/// `pool` churn: r2 joins, r1 leaves, r3 joins, r2 leaves, r4 joins, each step after
/// [`STEP`] events were handled in the step before (the next change starts while the
/// last rebalance may still settle). Counts events handled twice.
pub async fn churn(
    config: impl Fn(&str) -> WorkerConfig,
    publisher: &KafkaAgentRuntime,
) -> anyhow::Result<ChurnReport> {
    churn_round(config, publisher, &Arc::new(TurnLog::default()), "key").await
}

/// [`churn`] as one round of several on the same runtime: `log` is shared by the
/// rounds and the keys are named `<keys>0`, `<keys>1`, ... A round may hand the next
/// one records of its own that were handled but not committed (a replica whose
/// assignment was lost stops before the partition comes back to it): with the log
/// shared they count as what they are, events handled again, and with keys of their
/// own per round they never look like a key's sequence starting over. The report
/// counts this round only.
pub async fn churn_round(
    config: impl Fn(&str) -> WorkerConfig,
    publisher: &KafkaAgentRuntime,
    log: &Arc<TurnLog>,
    keys: &str,
) -> anyhow::Result<ChurnReport> {
    let handled_before = log.handled.load(Ordering::SeqCst);
    let replays_before = log.replays.load(Ordering::SeqCst);
    let violations_before = log
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    let replica = |name: &'static str| TurnChecker::start_replica(config("pool"), name, log);
    let r1 = replica("r1").await?;
    until("r1 owns an inbox partition", || {
        !r1.inbox_partitions().is_empty()
    })
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sends = (0..KEYS).map(|k| {
        let stop = Arc::clone(&stop);
        async move { publish_turns(publisher, &format!("{keys}{k}"), &stop).await }
    });
    let handled_more = |n: usize| {
        let log = Arc::clone(log);
        async move {
            let target = log.handled.load(Ordering::SeqCst) + n;
            until("events handled", || {
                log.handled.load(Ordering::SeqCst) >= target
            })
            .await
        }
    };
    let mut commit_failures = 0;
    let membership = async {
        // The publishers stop when membership ends, whether it succeeded or not (a
        // failed step must not leave them publishing and the join below waiting).
        let _stop_publishing = StopOnDrop(Arc::clone(&stop));
        handled_more(STEP).await?;
        let r2 = replica("r2").await?;
        handled_more(STEP).await?;
        commit_failures += r1.stats().offset_commit_failures;
        r1.stop().await?;
        handled_more(STEP).await?;
        let r3 = replica("r3").await?;
        handled_more(STEP).await?;
        commit_failures += r2.stats().offset_commit_failures;
        r2.stop().await?;
        handled_more(STEP).await?;
        let r4 = replica("r4").await?;
        handled_more(STEP).await?;
        stop.store(true, Ordering::SeqCst);
        anyhow::Ok([r3, r4])
    };
    let (published, remaining) = tokio::join!(join_all(sends), membership);
    stop.store(true, Ordering::SeqCst);
    let remaining = remaining?;
    let mut total = 0;
    for p in published {
        total += p?;
    }
    let handled = || log.handled.load(Ordering::SeqCst) - handled_before;
    let replays = || log.replays.load(Ordering::SeqCst) - replays_before;
    let first_time = || handled() - replays();
    let started = Instant::now();
    while first_time() < total && started.elapsed() < STEP_BOUND {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late redeliveries would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for rt in &remaining {
        commit_failures += rt.stats().offset_commit_failures;
        rt.stop().await.context("stop a replica")?;
    }
    let violations = log
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(violations_before..)
        .unwrap_or_default()
        .to_vec();
    Ok(ChurnReport {
        published: total,
        handled: handled(),
        replays: replays(),
        violations,
        commit_failures,
    })
}
