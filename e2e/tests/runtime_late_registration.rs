//! A replica whose program registers its agent types after `start` (as AutoGen
//! programs do: `start_with`, then `register`). It owns inbox (and events) partitions
//! from `start` on; what reaches it for a type of its runtime before the type is
//! registered here must wait for the registration, not be skipped. Until 2026-12
//! events were marked done without a handler (lost: the soak's "key1: got #83
//! expected #81 (on r3)", a replica joining during churn) and RPCs were refused with
//! `unknown agent type`. Here the window is held open on purpose: the late replica
//! registers a few seconds after it owns partitions.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use switchboard_e2e::agents::{Ping, Pong, Responder, TurnChecker, TurnLog, publish_turns};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::protocol::partitioner::partition_for;
use switchboard_runtime::{AgentId, AgentRuntime, AgentRuntimeExt, KafkaAgentRuntime};

const KEYS: u64 = 24;
/// How long the late replica owns partitions before it registers its type.
const LATE_BY: Duration = Duration::from_secs(3);

async fn owns_a_partition(rt: &KafkaAgentRuntime, name: &str) {
    let started = Instant::now();
    while rt.inbox_partitions().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} owns no inbox partition"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_for_a_type_registered_after_start_are_all_handled_in_order() {
    let net = TestNet::new();
    let log = Arc::new(TurnLog::default());
    let r1 = TurnChecker::start_replica(net.config("pool"), "r1", &log)
        .await
        .unwrap();
    owns_a_partition(&r1, "r1").await;
    let publisher = net.start("publisher").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sends = (0..KEYS).map(|k| {
        let (publisher, stop) = (publisher.clone(), Arc::clone(&stop));
        async move {
            publish_turns(&publisher, &format!("key{k}"), &stop)
                .await
                .unwrap()
        }
    });
    let membership = async {
        log.handled_more(500).await;
        // r2 joins both groups with no type registered yet...
        let r2 = net.start("pool").await.unwrap();
        owns_a_partition(&r2, "r2").await;
        let owned_early = r2.inbox_partitions();
        tokio::time::sleep(LATE_BY).await;
        // ...and registers `turns` only now.
        let late_log = Arc::clone(&log);
        r2.register("turns", move |id: &AgentId| {
            TurnChecker::new(id, "r2", Arc::clone(&late_log))
        })
        .await
        .unwrap();
        log.handled_more(1_000).await;
        stop.store(true, Ordering::SeqCst);
        (r2, owned_early)
    };
    let (published, (r2, owned_early)) = tokio::join!(join_all(sends), membership);
    let total: usize = published.iter().sum();
    let first_time = || log.handled.load(Ordering::SeqCst) - log.replays.load(Ordering::SeqCst);
    let started = Instant::now();
    while first_time() < total && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let by_replica = log.by_replica.lock().unwrap().clone();
    println!(
        "{total} published, {} handled for the first time, {} again; r2 owned {owned_early:?} \
         {LATE_BY:?} before registering; handled per replica {by_replica:?}",
        first_time(),
        log.replays.load(Ordering::SeqCst)
    );
    let violations = log.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(first_time(), total, "every event handled");
    assert!(
        by_replica.get("r2").copied().unwrap_or(0) > 0,
        "the late replica handled events: {by_replica:?}"
    );
    publisher.stop().await.unwrap();
    r1.stop().await.unwrap();
    r2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_rpc_to_a_type_registered_after_start_waits_for_it() {
    let net = TestNet::new();
    let r1 = net.start("pool").await.unwrap();
    r1.register("responder", Responder::new).await.unwrap();
    owns_a_partition(&r1, "r1").await;
    let r2 = net.start("pool").await.unwrap();
    owns_a_partition(&r2, "r2").await;
    let caller = KafkaAgentRuntime::start_client(net.config("caller"))
        .await
        .unwrap();
    // A key whose inbox partition the late replica owns.
    let partitions = net.config("pool").partitions;
    let owned = r2.inbox_partitions();
    let key = (0..)
        .map(|k| format!("k{k}"))
        .find(|k| owned.contains(&partition_for(k.as_bytes(), partitions)))
        .unwrap();
    let to = AgentId::new("responder", key.as_str()).unwrap();
    let call = {
        let (caller, to) = (caller.clone(), to.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = caller.send_message(&Ping { n: 7 }, &to).await;
            (reply, started.elapsed())
        })
    };
    tokio::time::sleep(LATE_BY).await;
    assert_eq!(r2.inbox_partitions(), owned, "r2 kept its partitions");
    r2.register("responder", Responder::new).await.unwrap();
    let (reply, took) = call.await.unwrap();
    let pong: Pong = reply.unwrap().unwrap().decode().unwrap();
    assert_eq!(
        pong,
        Pong {
            n: 7,
            by: to.to_string()
        }
    );
    assert!(took >= LATE_BY, "answered after the registration, {took:?}");
    caller.stop().await.unwrap();
    r1.stop().await.unwrap();
    r2.stop().await.unwrap();
}
