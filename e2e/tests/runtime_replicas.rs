//! Promises that need several replicas of one runtime: no cross-talk, one owner and
//! turn-based handling, state that moves with its agent, poison input dead-lettered.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use switchboard_e2e::agents::{Counter, Ping, Pong, Responder, Seq, TurnChecker, TurnLog};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{
    AgentId, AgentRuntime, AgentRuntimeExt, KafkaAgentRuntime, KafkaConfig, Payload, RuntimeError,
    SendOptions, TopicId, TopicNames,
};

async fn replica_with_responders(net: &TestNet) -> KafkaAgentRuntime {
    let rt = net.start("pool").await.unwrap();
    rt.register("responder", Responder::new).await.unwrap();
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rpcs_from_two_callers_to_three_replicas_get_their_own_replies() {
    let net = TestNet::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica_with_responders(&net).await);
    }
    let callers = [
        net.start("caller1").await.unwrap(),
        net.start("caller2").await.unwrap(),
    ];
    let calls = callers.iter().enumerate().flat_map(|(c, caller)| {
        (0..100u64).map(move |i| async move {
            let n = c as u64 * 1_000 + i;
            let key = format!("k{}", n % 50);
            let to = AgentId::new("responder", key.as_str()).unwrap();
            let reply = caller.send_message(&Ping { n }, &to).await;
            (n, key, reply)
        })
    });
    let results = join_all(calls).await;
    assert_eq!(results.len(), 200);
    for (n, key, reply) in results {
        let pong = reply
            .unwrap_or_else(|e| panic!("call {n} failed: {e}"))
            .unwrap()
            .decode::<Pong>()
            .unwrap();
        assert_eq!(
            pong,
            Pong {
                n,
                by: format!("responder/{key}")
            },
            "cross-talk or wrong agent"
        );
    }
    for rt in callers.iter().chain(&replicas) {
        rt.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_owner_and_turn_based_across_replicas_and_a_rebalance() {
    const KEYS: u64 = 20;
    const PER_KEY: u64 = 50;
    let net = TestNet::new();
    let log = Arc::new(TurnLog::default());
    let start_replica = |name: String| {
        let (log, net_cfg) = (log.clone(), net.config("pool"));
        async move {
            TurnChecker::start_replica(net_cfg, &name, &log)
                .await
                .unwrap()
        }
    };
    let mut replicas = vec![
        start_replica("r1".into()).await,
        start_replica("r2".into()).await,
    ];
    let started = Instant::now();
    while replicas.iter().any(|r| r.inbox_partitions().is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "both replicas should own partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let publisher = net.start("publisher").await.unwrap();

    // 20 keys published concurrently, each key's 50 messages in order; a third
    // replica joins midway, so partitions move while messages flow.
    let sends = (0..KEYS).map(|k| {
        let publisher = publisher.clone();
        async move {
            let topic = TopicId::new("turns", format!("key{k}")).unwrap();
            for n in 0..PER_KEY {
                publisher.publish_message(&Seq { n }, &topic).await.unwrap();
            }
        }
    });
    let (_, third) = tokio::join!(join_all(sends), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        start_replica("r3".into()).await
    });
    replicas.push(third);

    let started = Instant::now();
    while log.handled.load(Ordering::SeqCst) < (KEYS * PER_KEY) as usize
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let violations = log.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "turn-based promise broken: {violations:#?}"
    );
    assert_eq!(
        log.handled.load(Ordering::SeqCst),
        (KEYS * PER_KEY) as usize,
        "every message exactly once"
    );
    let by_replica = log.by_replica.lock().unwrap().clone();
    assert!(
        by_replica.len() >= 2,
        "work was shared by the replicas: {by_replica:?}"
    );
    publisher.stop().await.unwrap();
    for rt in replicas {
        rt.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_partition_move_and_a_restart_of_all_replicas() {
    let net = TestNet::new();
    let counter = AgentId::new("counter", "c1").unwrap();
    let start = || async {
        let rt = net.start("stateful").await.unwrap();
        rt.register("counter", |_: &AgentId| Counter::default())
            .await
            .unwrap();
        rt
    };
    let count = |rt: KafkaAgentRuntime| {
        let counter = counter.clone();
        async move {
            let reply = rt
                .send_message(&Ping { n: 0 }, &counter)
                .await
                .unwrap()
                .unwrap();
            reply.decode_json::<serde_json::Value>().unwrap()["count"]
                .as_u64()
                .unwrap()
        }
    };
    let a = start().await;
    for expected in 1..=3 {
        assert_eq!(count(a.clone()).await, expected);
    }
    // B joins, A leaves: every partition (and the counter) moves to B.
    let b = start().await;
    a.stop().await.unwrap();
    assert_eq!(count(b.clone()).await, 4, "state moved with the partition");
    assert_eq!(
        b.agent_save_state(&counter).await.unwrap(),
        json!({ "count": 4 })
    );
    // All replicas restart.
    b.stop().await.unwrap();
    let c = start().await;
    assert_eq!(count(c.clone()).await, 5, "state survived a full restart");
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_the_runtime_keeps_serving() {
    let net = TestNet::new();
    let mut cfg = net.config("poisoned");
    cfg.max_message_bytes = 2_048;
    let rt = KafkaAgentRuntime::start_with(cfg).await.unwrap();
    rt.register("responder", Responder::new).await.unwrap();
    let to = AgentId::new("responder", "r").unwrap();
    let names = TopicNames::new(&net.prefix).unwrap();
    let kafka = KafkaConfig::new(&net.bootstrap);
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let serving = |n: u64| {
        let (rt, to) = (rt.clone(), to.clone());
        async move {
            let pong = rt
                .send_message(&Ping { n }, &to)
                .await
                .unwrap()
                .unwrap()
                .decode::<Pong>()
                .unwrap();
            assert_eq!(pong.n, n);
        }
    };
    let inbox = names.inbox("poisoned");
    let raw = |value: &'static [u8], headers: Option<OwnedHeaders>| {
        let (producer, inbox) = (producer.clone(), inbox.clone());
        async move {
            let mut record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(&inbox).key("r").payload(value);
            if let Some(h) = headers {
                record = record.headers(h);
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap();
        }
    };

    serving(1).await;
    raw(b"\xff\xfe garbage", None).await;
    serving(2).await;
    let no_kind = OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some("x"),
        })
        .insert(Header {
            key: "ce_source",
            value: Some("test"),
        });
    raw(b"{}", Some(no_kind)).await;
    serving(3).await;
    let unknown = Payload::json("test.Unknown", &json!({}));
    let err = rt
        .send_payload(unknown, &to, SendOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::UnknownMessageType { .. }),
        "{err:?}"
    );
    serving(4).await;
    let big = Payload::json("test.Ping", &json!({ "n": 5, "pad": "x".repeat(4_000) }));
    let err = rt
        .send_payload(big, &to, SendOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Rejected { .. }),
        "oversized requests are refused, not timed out: {err:?}"
    );
    serving(6).await;

    let dlq: StreamConsumer = kafka
        .consumer_config(&format!("{}-dlq-reader", net.prefix))
        .create()
        .unwrap();
    dlq.subscribe(&[&names.dlq("poisoned")]).unwrap();
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while letters.len() < 4 && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), dlq.recv()).await {
            let headers: Vec<(String, String)> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                            (h.key.to_owned(), v.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            letters.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                headers,
            ));
        }
    }
    let reasons: Vec<&str> = letters
        .iter()
        .map(|(_, _, headers)| {
            headers
                .iter()
                .find(|(k, _)| k == "switchboard_dlq_reason")
                .map(|(_, v)| v.as_str())
                .expect("every dead letter says why")
        })
        .collect();
    assert_eq!(
        reasons.len(),
        4,
        "four poison records dead-lettered: {reasons:#?}"
    );
    assert!(
        reasons[0].contains("undecodable") && reasons[0].contains("ce_specversion"),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("ce_agmsgkind"), "{}", reasons[1]);
    assert!(reasons[2].contains("test.Unknown"), "{}", reasons[2]);
    assert!(
        reasons[3].contains("exceeds maxMessageBytes"),
        "{}",
        reasons[3]
    );
    // Dead letters keep the record as it came: key, value, headers in order.
    let (key, value, headers) = &letters[1];
    assert_eq!(key.as_deref(), Some(&b"r"[..]));
    assert_eq!(value.as_deref(), Some(&b"{}"[..]));
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "switchboard_dlq_reason",
            "switchboard_dlq_origin"
        ]
    );
    assert_eq!(headers[1].1, "x");
    assert!(
        headers[4].1.starts_with(&format!("{inbox}/")),
        "origin names the inbox: {}",
        headers[4].1
    );
    assert_eq!(letters[0].1.as_deref(), Some(&b"\xff\xfe garbage"[..]));
    assert_eq!(rt.stats().dead_lettered, 4);
    rt.stop().await.unwrap();
}
