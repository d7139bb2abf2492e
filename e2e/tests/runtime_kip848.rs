//! The KIP-848 consumer group protocol (`kafka.groupProtocol: consumer`) beside the
//! classic one, on the real broker: RPCs and events are delivered, every call is
//! answered while the runtime scales 1 -> 3 -> 1, and rapid join/leave churn hands
//! events twice no more than docs/protocol.md ("Redelivery bound") allows.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::sync::Arc;
use std::time::Duration;

use switchboard_e2e::agents::{Ping, Pong, Recorder, Responder, SeenLog};
use switchboard_e2e::membership::{churn, scale_1_3_1};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{
    AgentId, AgentRuntime, AgentRuntimeExt, GroupProtocol, KafkaAgentRuntime, Subscription,
    TopicId, WorkerConfig,
};

fn config(net: &TestNet, protocol: GroupProtocol) -> impl Fn(&str) -> WorkerConfig + '_ {
    move |name| {
        let mut cfg = net.config(name);
        cfg.kafka.group_protocol = protocol;
        cfg
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_replicas_deliver_rpcs_and_events() {
    let net = TestNet::new();
    let cfg = config(&net, GroupProtocol::Consumer);
    let host = KafkaAgentRuntime::start_with(cfg("host")).await.unwrap();
    host.register("responder", Responder::new).await.unwrap();
    let seen = SeenLog::default();
    let log = Arc::clone(&seen);
    host.register("recorder", move |id: &AgentId| {
        Recorder::new(id, log.clone())
    })
    .await
    .unwrap();
    host.add_subscription(Subscription::for_type("alerts", "recorder").unwrap())
        .await
        .unwrap();
    assert!(
        host.wait_ready(Duration::from_secs(60)).await,
        "host joined its groups"
    );
    let caller = KafkaAgentRuntime::start_with(cfg("caller")).await.unwrap();
    for n in 0..20 {
        let to = AgentId::new("responder", format!("k{n}")).unwrap();
        let pong = caller
            .send_message(&Ping { n }, &to)
            .await
            .unwrap()
            .unwrap()
            .decode::<Pong>()
            .unwrap();
        assert_eq!(
            pong,
            Pong {
                n,
                by: to.to_string()
            }
        );
    }
    for n in 0..10 {
        let topic = TopicId::new("alerts", format!("s{n}")).unwrap();
        caller.publish_message(&Ping { n }, &topic).await.unwrap();
    }
    switchboard_e2e::wait::wait_for("10 events recorded", Duration::from_secs(30), || async {
        (seen.lock().unwrap().len() >= 10).then_some(())
    })
    .await;
    assert_eq!(seen.lock().unwrap().len(), 10, "each event handled once");
    caller.stop().await.unwrap();
    host.stop().await.unwrap();
}

async fn scale_answers_every_call(protocol: GroupProtocol) {
    let net = TestNet::new();
    let cfg = config(&net, protocol);
    let report = scale_1_3_1(&cfg).await.unwrap();
    println!("{protocol:?}: {report:?}");
    assert!(
        report.failures.is_empty(),
        "{protocol:?}: {:#?}",
        report.failures
    );
    assert_eq!(report.answered, report.calls);
    assert!(report.calls >= 500, "{protocol:?}: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_scale_1_3_1_answers_every_call_consumer_protocol() {
    scale_answers_every_call(GroupProtocol::Consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_scale_1_3_1_answers_every_call_classic_protocol() {
    scale_answers_every_call(GroupProtocol::Classic).await;
}

async fn churn_replays_within_bound(protocol: GroupProtocol) {
    let net = TestNet::new();
    let cfg = config(&net, protocol);
    let publisher = net.start("publisher").await.unwrap();
    let report = churn(&cfg, &publisher).await.unwrap();
    println!("{protocol:?}: {report:?}");
    assert!(
        report.violations.is_empty(),
        "{protocol:?}: {:#?}",
        report.violations
    );
    assert_eq!(
        report.handled - report.replays,
        report.published,
        "{protocol:?}: every event handled"
    );
    // docs/protocol.md, "Redelivery bound": only a partition that changes hands
    // without its final commit is read again from its last commit; replicas leave
    // gracefully here, so that needs a commit failing at the wrong moment.
    assert!(
        report.replays <= REPLAY_BOUND,
        "{protocol:?}: {} events handled twice (bound {REPLAY_BOUND}): {report:?}",
        report.replays
    );
    publisher.stop().await.unwrap();
}

/// Events handled twice allowed in one churn run: up to two commit intervals (100 ms)
/// of the publish rate (24 keys x 200/s) per membership change that could lose a
/// commit (5).
const REPLAY_BOUND: usize = 5 * 2 * 480;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_churn_replays_within_bound_consumer_protocol() {
    churn_replays_within_bound(GroupProtocol::Consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_churn_replays_within_bound_classic_protocol() {
    churn_replays_within_bound(GroupProtocol::Classic).await;
}
