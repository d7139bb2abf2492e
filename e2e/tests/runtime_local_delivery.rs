//! Local delivery (`runtime/src/kafka/handoff.rs`): a replica that owns an event's
//! inbox partition hands the event to the agent directly. The promises stay those of
//! the inbox while replicas join and leave: per key in publish order, one handler at a
//! time, every event handled (at least once).

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use switchboard_e2e::agents::{TurnChecker, TurnLog, publish_turns};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{AgentRuntime, KafkaAgentRuntime};

const KEYS: u64 = 24;
/// Events handled between two membership changes.
const STEP: usize = 1_000;

async fn replica(net: &TestNet, name: &str, log: &Arc<TurnLog>, local: bool) -> KafkaAgentRuntime {
    let mut cfg = net.config("pool");
    cfg.local_delivery = local;
    TurnChecker::start_replica(cfg, name, log).await.unwrap()
}

/// Publishes events for KEYS keys (each key in order) while r2 joins, r1 leaves and r3
/// joins, each step after events were handled in the step before; returns the events
/// each replica delivered locally.
async fn run(local: bool) -> Vec<u64> {
    let net = TestNet::new();
    let log = Arc::new(TurnLog::default());
    let r1 = replica(&net, "r1", &log, local).await;
    let started = Instant::now();
    while r1.inbox_partitions().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "r1 owns no partition"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let publisher = net.start("publisher").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sends = (0..KEYS).map(|k| {
        let (publisher, stop) = (publisher.clone(), stop.clone());
        async move {
            publish_turns(&publisher, &format!("key{k}"), &stop)
                .await
                .unwrap()
        }
    });
    let membership = async {
        log.handled_more(STEP).await;
        let r2 = replica(&net, "r2", &log, local).await;
        log.handled_more(STEP).await;
        let r1_local = r1.stats().events_delivered_locally;
        r1.stop().await.unwrap();
        log.handled_more(STEP).await;
        let r3 = replica(&net, "r3", &log, local).await;
        log.handled_more(STEP).await;
        stop.store(true, Ordering::SeqCst);
        (r1_local, r2, r3)
    };
    let (published, (r1_local, r2, r3)) = tokio::join!(join_all(sends), membership);

    let total: usize = published.iter().sum();
    let started = Instant::now();
    let first_time = || log.handled.load(Ordering::SeqCst) - log.replays.load(Ordering::SeqCst);
    while first_time() < total && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let violations = log.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "order or one-at-a-time broken (local delivery {local}): {violations:#?}"
    );
    // A commit that fails while the group rebalances (the next step can start before
    // the last rebalance settled) lets the next owner replay what was handled since
    // the last commit: at-least-once. Nothing may be missing.
    let replays = log.replays.load(Ordering::SeqCst);
    println!("local delivery {local}: {total} events, {replays} handled again");
    assert_eq!(
        log.handled.load(Ordering::SeqCst) - replays,
        total,
        "every event handled (local delivery {local})"
    );
    let locally = vec![
        r1_local,
        r2.stats().events_delivered_locally,
        r3.stats().events_delivered_locally,
    ];
    publisher.stop().await.unwrap();
    r2.stop().await.unwrap();
    r3.stop().await.unwrap();
    locally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_delivery_keeps_order_while_replicas_join_and_leave() {
    let locally = run(true).await;
    // r1 alone owned every partition of both topics at first. Later replicas deliver
    // locally only where they got an events partition and its inbox partition (the
    // two groups assign independently), so their counts may be 0.
    println!("events delivered locally by r1, r2, r3: {locally:?}");
    assert!(locally[0] > 0, "r1 delivered locally: {locally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_local_delivery_every_event_takes_the_inbox() {
    let locally = run(false).await;
    assert_eq!(locally, vec![0, 0, 0]);
}
