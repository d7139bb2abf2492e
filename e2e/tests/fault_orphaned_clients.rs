//! librdkafka's orphaned clients (librdkafka issue #5301), made on demand: a runtime
//! and a client reach the test's own broker only through a Kafka protocol proxy
//! (`metadata_proxy`) that, for a few seconds, answers every Metadata request with no
//! brokers, as a broker that shuts down or starts does. librdkafka 2.12 then drops every
//! broker it knows and never connects again. Afterwards an RPC from the client to the
//! runtime must still succeed (the caller's producer and reply consumer, the host's
//! inbox group consumer and producer were orphaned and replaced), and a registration
//! made elsewhere must still reach the client's registry tail. Last, records queued in
//! an orphaned producer are all written, in the order they were queued.
//!
//! Each guard can be turned off (`SWITCHBOARD_ORPHAN_GUARD_OFF=group|producer|replies|
//! registry`): with any of them off this test fails, which is how it was checked.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::time::Duration;

use switchboard_e2e::agents::{Ping, Pong, Responder};
use switchboard_e2e::env::{init_test_logs, unique_name};
use switchboard_e2e::faults::OwnBroker;
use switchboard_e2e::metadata_proxy::BoundProxy;
use switchboard_e2e::net::TestNet;
use switchboard_e2e::wait::wait_for;
use switchboard_runtime::kafka::producer::{GuardedProducer, Record};
use switchboard_runtime::{
    AgentId, AgentRuntime, AgentRuntimeExt, KafkaAgentRuntime, TopicNames, WorkerConfig,
};

/// Clients behind the proxy refresh metadata this often (librdkafka's default is 5
/// minutes): each asks the proxy several times while it lists no brokers.
const METADATA_REFRESH_MS: &str = "500";
/// How long the proxy answers Metadata with no brokers.
const ORPHANING: Duration = Duration::from_secs(3);
/// RPC timeout: the guard's 3 s grace, a new inbox member's rejoin (up to the classic
/// session timeout of 10 s while the orphaned member is still in the group), and slack
/// for a loaded machine. Without the guards the RPC never succeeds.
const RPC_TIMEOUT: Duration = Duration::from_secs(40);
/// Records queued while the producer is orphaned.
const QUEUED: usize = 200;

fn behind_proxy(net: &TestNet, name: &str) -> WorkerConfig {
    let mut cfg = net.config(name);
    for settings in [&mut cfg.kafka.producer, &mut cfg.kafka.consumer] {
        settings.insert(
            "topic.metadata.refresh.interval.ms".to_owned(),
            METADATA_REFRESH_MS.to_owned(),
        );
    }
    // Heartbeats stop while the producer is orphaned: the host must not look dead.
    cfg.liveness_timeout = Duration::from_secs(120);
    cfg.rpc_timeout = RPC_TIMEOUT;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphaned_clients_are_replaced_and_rpcs_and_registry_changes_go_on() {
    init_test_logs();
    let bound = BoundProxy::bind().await;
    let broker = OwnBroker::start("orphans", Some(&bound.address()));
    let proxy = bound.forward_to(&format!("127.0.0.1:{}", broker.proxied_port.unwrap()));
    let prefix = unique_name("orphans");
    let proxied = TestNet {
        bootstrap: proxy.address().to_owned(),
        prefix: prefix.clone(),
    };
    let direct = TestNet {
        bootstrap: broker.bootstrap.clone(),
        prefix,
    };

    let host = KafkaAgentRuntime::start_with(behind_proxy(&proxied, "host"))
        .await
        .unwrap();
    host.register("responder", Responder::new).await.unwrap();
    let caller = KafkaAgentRuntime::start_client(behind_proxy(&proxied, "caller"))
        .await
        .unwrap();
    let to = AgentId::new("responder", "r1").unwrap();
    let ping = |n| {
        let (caller, to) = (caller.clone(), to.clone());
        async move {
            caller
                .send_message(&Ping { n }, &to)
                .await
                .map(|r| r.unwrap().decode::<Pong>().unwrap().n)
        }
    };
    assert_eq!(ping(1).await.unwrap(), 1, "an RPC before the orphaning");

    let replaced_before = caller.stats().orphaned_clients_replaced;
    proxy.set_zero_brokers(true);
    tokio::time::sleep(ORPHANING).await;
    proxy.set_zero_brokers(false);
    assert!(
        proxy.rewritten() > 0,
        "no Metadata response went through the proxy while it listed no brokers"
    );

    // The caller's producer and reply consumer, the host's inbox consumer and producer.
    let after = ping(2).await;
    assert_eq!(
        after.as_ref().ok(),
        Some(&2),
        "an RPC after the clients were orphaned: {after:?}"
    );

    // The caller's registry tail: a type registered through the broker directly.
    let late = direct.start("late").await.unwrap();
    late.register("latecomer", Responder::new).await.unwrap();
    wait_for(
        "the caller's registry to show the type registered after the orphaning",
        Duration::from_secs(30),
        || {
            let seen = caller
                .agent_types()
                .iter()
                .any(|(t, rt)| t == "latecomer" && rt == "late");
            async move { seen.then_some(()) }
        },
    )
    .await;
    let replaced = caller.stats().orphaned_clients_replaced - replaced_before;
    // Caller: producer, replies, registry; host: producer, registry, replies, inbox
    // and events consumers. Each may be replaced more than once (a replacement made
    // while the proxy still listed no brokers is orphaned again).
    assert!(
        replaced >= 4,
        "only {replaced} orphaned clients were replaced"
    );

    for rt in [&late, &caller, &host] {
        rt.stop().await.unwrap();
    }

    // The producer hands what its orphan had queued to its successor, in order.
    let kafka = &behind_proxy(&proxied, "order").kafka;
    let producer = GuardedProducer::create(&kafka.producer_config(), "order").unwrap();
    let topic = TopicNames::new(&direct.prefix).unwrap().dlq("late");
    let record = |value: &'static [u8]| Record {
        topic: &topic,
        key: Some(b"k"),
        value: Some(value),
        ..Record::default()
    };
    producer
        .send(record(b"first"), Duration::from_secs(10))
        .await
        .unwrap();
    let replaced_before = caller.stats().orphaned_clients_replaced;
    proxy.set_zero_brokers(true);
    // Past a few metadata refreshes: the producer has dropped its brokers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queued: Vec<_> = (0..QUEUED)
        .map(|_| producer.send_now(record(b"queued")).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set_zero_brokers(false);
    let acks = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(queued))
        .await
        .expect("the records queued in the orphaned producer are acknowledged");
    let offsets: Vec<i64> = acks.into_iter().map(|a| a.unwrap().1).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "written in the order queued: {offsets:?}"
    );
    assert!(
        caller.stats().orphaned_clients_replaced > replaced_before,
        "the producer was not replaced"
    );
    drop(producer);
    drop(proxy);
    drop(broker);
}
