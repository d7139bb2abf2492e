//! Registration rules of the Kafka runtime (AutoGen's worker-runtime scenarios),
//! against the real broker.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::sync::{Arc, Mutex};

use switchboard_e2e::agents::{Counter, Ping, Pong, Recorder, Responder};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{AgentId, AgentRuntime, AgentRuntimeExt, RuntimeError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_types_are_unique_within_and_across_runtimes() {
    let net = TestNet::new();
    let rt1 = net.start("rt1").await.unwrap();
    let rt2 = net.start("rt2").await.unwrap();

    rt1.register("echo", Responder::new).await.unwrap();
    let again = rt1.register("echo", Responder::new).await.unwrap_err();
    assert_eq!(again, RuntimeError::DuplicateAgentType("echo".into()));

    let across = rt2.register("echo", Responder::new).await.unwrap_err();
    assert_eq!(
        across,
        RuntimeError::AgentTypeTaken {
            agent_type: "echo".into(),
            owner: "rt1".into()
        }
    );
    assert!(
        across
            .to_string()
            .contains("already hosted by runtime \"rt1\""),
        "{across}"
    );

    // The loser hosts nothing: RPCs still reach rt1's agent.
    let reply = rt2
        .send_message(&Ping { n: 1 }, &AgentId::new("echo", "a").unwrap())
        .await
        .unwrap();
    assert_eq!(reply.unwrap().decode::<Pong>().unwrap().by, "echo/a");

    rt2.stop().await.unwrap();
    rt1.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_type_have_exactly_one_winner() {
    let net = TestNet::new();
    let (a, b) = (
        net.start("rta").await.unwrap(),
        net.start("rtb").await.unwrap(),
    );
    let (ra, rb) = tokio::join!(
        a.register("contested", Responder::new),
        b.register("contested", Responder::new)
    );
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one claim must win: {ra:?} / {rb:?}"
    );
    let winner = if ra.is_ok() { "rta" } else { "rtb" };
    assert_eq!(
        a.agent_types(),
        vec![("contested".to_owned(), winner.to_owned())]
    );
    assert_eq!(
        b.agent_types(),
        vec![("contested".to_owned(), winner.to_owned())]
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_agent_instance_rules() {
    let net = TestNet::new();
    let rt = net.start("rt").await.unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let id1 = AgentId::new("inst", "k1").unwrap();
    let id2 = AgentId::new("inst", "k2").unwrap();

    rt.register_agent_instance(Recorder::new(&id1, log.clone()), id1.clone())
        .await
        .unwrap();
    let dup = rt
        .register_agent_instance(Recorder::new(&id1, log.clone()), id1.clone())
        .await
        .unwrap_err();
    assert_eq!(dup, RuntimeError::DuplicateAgentInstance(id1.clone()));

    // Two keys of one type: fine.
    rt.register_agent_instance(Recorder::new(&id2, log.clone()), id2.clone())
        .await
        .unwrap();

    // A different agent class under the same type: rejected.
    let other_class = rt
        .register_agent_instance(Counter::default(), AgentId::new("inst", "k3").unwrap())
        .await;
    assert!(
        matches!(other_class, Err(RuntimeError::AgentTypeConflict { .. })),
        "{other_class:?}"
    );

    // A factory for a type registered by instance: rejected.
    let factory = rt.register("inst", Responder::new).await.unwrap_err();
    assert!(
        matches!(factory, RuntimeError::AgentTypeConflict { .. }),
        "{factory:?}"
    );

    // The registered instance is the one handed back, and it is the one answering.
    let reply = rt
        .send_message(&Ping { n: 7 }, &id2)
        .await
        .unwrap()
        .unwrap()
        .decode::<Pong>()
        .unwrap();
    assert_eq!(
        reply,
        Pong {
            n: 7,
            by: "inst/k2".into()
        }
    );
    {
        let agent = rt
            .try_get_underlying_agent_instance::<Recorder>(&id2)
            .await
            .unwrap();
        drop(agent);
    }
    let wrong = rt
        .try_get_underlying_agent_instance::<Counter>(&id2)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(wrong, RuntimeError::WrongAgentClass { .. }),
        "{wrong:?}"
    );
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "exactly the one RPC reached the instance"
    );
    assert_eq!(log.lock().unwrap()[0].recipient, id2);
    rt.stop().await.unwrap();
}

/// A replica that stops while its peers' heartbeats look lapsed (after a broker outage
/// every beat is late) takes itself for the runtime's last replica and tombstones the
/// runtime's claims. A replica still hosting the type writes its claim again at its
/// next heartbeat, and RPCs reach the type again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_claim_of_a_hosted_type_is_restored() {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::{Duration, Instant};
    use switchboard_runtime::protocol::registry::claim_key;
    use switchboard_runtime::{KafkaConfig, TopicNames};

    let net = TestNet::new();
    let host = net.start("hosting").await.unwrap();
    host.register("echo", Responder::new).await.unwrap();
    let caller = net.start("calling").await.unwrap();
    let to = AgentId::new("echo", "a").unwrap();
    caller.send_message(&Ping { n: 1 }, &to).await.unwrap();

    // What a stopping replica's release writes: the tombstone of the runtime's claim.
    let kafka = KafkaConfig::new(&net.bootstrap);
    let registry = TopicNames::new(&net.prefix).unwrap().registry();
    let key = claim_key("echo", "hosting");
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let (partition, offset) = producer
        .send(
            FutureRecord::<str, [u8]>::to(&registry).key(&key),
            Duration::from_secs(10),
        )
        .await
        .map(|d| (d.partition, d.offset))
        .unwrap();

    // The claim is written again after the tombstone.
    let consumer: BaseConsumer = kafka
        .consumer_config(&format!("{}.test-reader", net.prefix))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&registry, partition, Offset::Offset(offset + 1))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let restored = loop {
        assert!(
            Instant::now() < deadline,
            "no claim of echo written within 20 s of its tombstone"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        if m.key() == Some(key.as_bytes()) && m.payload().is_some_and(|p| !p.is_empty()) {
            break m.offset();
        }
    };
    assert!(restored > offset);

    // And RPCs reach the type again (the caller's view has the claim back).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match caller.send_message(&Ping { n: 2 }, &to).await {
            Ok(reply) => {
                assert_eq!(reply.unwrap().decode::<Pong>().unwrap().by, "echo/a");
                break;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "echo unreachable after its claim was restored: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    caller.stop().await.unwrap();
    host.stop().await.unwrap();
}
