//! Existing Kafka topics as event sources (a subscription's `source`), against the
//! real broker: plain JSON and bytes records, `keyFrom: header:<name>`, CloudEvents
//! records, order per key, and a record that cannot be mapped going to the
//! dead-letter topic with a reason naming it.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use switchboard_e2e::agents::{Quiet, Recorder, Seen, SeenLog};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::admin::{TopicAdmin, TopicSpec};
use switchboard_runtime::kafka::source_records::{PLAIN_BYTES_TYPE, PLAIN_JSON_TYPE};
use switchboard_runtime::subscription::SubscriptionSource;
use switchboard_runtime::{
    AgentId, AgentRuntime, AgentRuntimeExt, KafkaAgentRuntime, KafkaConfig, Subscription, TopicId,
};

/// Polls `check` until true or `limit`; returns whether it became true.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// A runtime hosting a recorder `rec`, reading a new source topic of `partitions`
/// through `subscription` (built for the topic's name) with `key_from`.
struct Source {
    net: TestNet,
    topic: String,
    rt: KafkaAgentRuntime,
    log: SeenLog,
    producer: FutureProducer,
}

impl Source {
    async fn start(
        partitions: i32,
        subscription: impl FnOnce(&str) -> Subscription,
        key_from: Option<&str>,
    ) -> Self {
        let net = TestNet::new();
        let topic = format!("{}.external", net.prefix);
        let kafka = KafkaConfig::new(&net.bootstrap);
        let admin = TopicAdmin::new(&kafka, Duration::from_secs(30)).unwrap();
        admin
            .ensure_topics(&[TopicSpec::new(topic.clone(), partitions, 1)])
            .await
            .unwrap();
        admin
            .wait_usable(std::slice::from_ref(&topic))
            .await
            .unwrap();
        let rt = net.start("host").await.unwrap();
        let log: SeenLog = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        rt.register("rec", move |id: &AgentId| Recorder::new(id, l.clone()))
            .await
            .unwrap();
        let source = SubscriptionSource::new(&topic, key_from).unwrap();
        rt.add_source_subscription(subscription(&topic), source)
            .await
            .unwrap();
        // Records written before the runtime reads the topic are not its events.
        assert!(
            eventually(Duration::from_secs(30), || rt
                .source_topics_read()
                .contains(&topic))
            .await,
            "the runtime reads {topic}"
        );
        let producer = kafka.producer_config().create().unwrap();
        Self {
            net,
            topic,
            rt,
            log,
            producer,
        }
    }

    async fn produce(&self, key: Option<&[u8]>, headers: &[(&str, &[u8])], value: &[u8]) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).payload(value).headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }

    async fn seen(&self, n: usize) -> Vec<Seen> {
        let log = &self.log;
        let got = eventually(Duration::from_secs(30), || log.lock().unwrap().len() >= n).await;
        let seen = log.lock().unwrap().clone();
        assert!(got, "{n} messages expected, saw {}: {seen:#?}", seen.len());
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_topic_plain_json_and_bytes_records_reach_the_keyed_agent() {
    // Under a prefix subscription the Kafka topic name is the topic type.
    let src = Source::start(
        2,
        |topic| Subscription::for_prefix(topic, "rec").unwrap(),
        None,
    )
    .await;
    src.produce(Some(b"k1"), &[], br#"{"n":1}"#).await;
    src.produce(Some(b"k2"), &[], b"\x00\x01binary").await;
    let seen = src.seen(2).await;
    let by_key = |k: &str| seen.iter().find(|s| s.recipient.key() == k).unwrap();
    let json = by_key("k1");
    assert_eq!(
        json.topic,
        Some(TopicId::new(&src.topic, "k1").unwrap()),
        "topic type = Kafka topic, source = key"
    );
    assert_eq!(json.type_name, PLAIN_JSON_TYPE);
    assert_eq!(json.data, json!({"n": 1}));
    assert!(!json.is_rpc && json.sender.is_none());
    let bytes = by_key("k2");
    assert_eq!(bytes.type_name, PLAIN_BYTES_TYPE);
    assert_eq!(bytes.content_type, "application/octet-stream");
    assert_eq!(bytes.raw, b"\x00\x01binary");

    // Bound to its topic: the same topic type published on the events topic is not
    // delivered to it.
    src.rt
        .publish_message(&Quiet, &TopicId::new(&src.topic, "k3").unwrap())
        .await
        .unwrap();
    src.produce(Some(b"k4"), &[], b"{}").await;
    let seen = src.seen(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys: Vec<String> = src
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.recipient.key().to_owned())
        .collect();
    assert_eq!(keys.len(), 3, "{seen:#?}");
    assert!(!keys.contains(&"k3".to_owned()));
    src.rt.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_topic_header_key_from_and_topic_type_override() {
    let src = Source::start(
        1,
        |_| Subscription::for_type("order.created", "rec").unwrap(),
        Some("header:tenant"),
    )
    .await;
    src.produce(Some(b"not-this"), &[("tenant", b"acme")], br#"{"id":7}"#)
        .await;
    let seen = src.seen(1).await;
    assert_eq!(seen[0].recipient, AgentId::new("rec", "acme").unwrap());
    assert_eq!(
        seen[0].topic,
        Some(TopicId::new("order.created", "acme").unwrap())
    );
    assert_eq!(seen[0].data, json!({"id": 7}));
    src.rt.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_topic_cloudevents_records_keep_their_type_and_source() {
    let src = Source::start(
        1,
        |_| Subscription::for_type("news", "rec").unwrap(),
        // keyFrom applies to plain records only.
        Some("header:absent"),
    )
    .await;
    // A CloudEvent from another producer: no ce_agmsgkind, no ce_dataschema.
    src.produce(
        Some(b"ignored"),
        &[
            ("ce_specversion", b"1.0"),
            ("ce_id", b"ev-1"),
            ("ce_source", b"desk1"),
            ("ce_type", b"news"),
            ("content-type", b"application/json"),
        ],
        br#"{"headline":"hi"}"#,
    )
    .await;
    // One written by a Switchboard producer names its message type.
    src.produce(
        None,
        &[
            ("ce_specversion", b"1.0"),
            ("ce_id", b"ev-2"),
            ("ce_source", b"desk2"),
            ("ce_type", b"news"),
            ("ce_agmsgkind", b"publish"),
            ("ce_dataschema", b"test.Story"),
        ],
        br#"{"headline":"ho"}"#,
    )
    .await;
    // Another type: no subscription matches it, nothing is delivered.
    src.produce(
        None,
        &[
            ("ce_specversion", b"1.0"),
            ("ce_id", b"ev-3"),
            ("ce_source", b"desk3"),
            ("ce_type", b"sports"),
        ],
        b"{}",
    )
    .await;
    let seen = src.seen(2).await;
    let one = seen.iter().find(|s| s.message_id == "ev-1").unwrap();
    assert_eq!(one.recipient, AgentId::new("rec", "desk1").unwrap());
    assert_eq!(one.topic, Some(TopicId::new("news", "desk1").unwrap()));
    assert_eq!(one.type_name, "news");
    assert_eq!(one.data, json!({"headline": "hi"}));
    let two = seen.iter().find(|s| s.message_id == "ev-2").unwrap();
    assert_eq!(two.recipient, AgentId::new("rec", "desk2").unwrap());
    assert_eq!(two.type_name, "test.Story");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(src.log.lock().unwrap().len(), 2);
    assert_eq!(src.rt.stats().dead_lettered, 0);
    src.rt.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_topic_records_of_one_key_arrive_in_order() {
    let src = Source::start(3, |_| Subscription::for_type("seq", "rec").unwrap(), None).await;
    const KEYS: [&str; 4] = ["a", "b", "c", "d"];
    const PER_KEY: u64 = 40;
    // Interleaved across keys, sent without waiting so batches form.
    let sends = (0..PER_KEY).flat_map(|i| {
        KEYS.iter().map(move |k| {
            let value = serde_json::to_vec(&json!({"seq": i})).unwrap();
            (k.as_bytes().to_vec(), value)
        })
    });
    let mut pending = Vec::new();
    for (k, v) in sends {
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&src.topic)
            .key(k.as_slice())
            .payload(v.as_slice());
        pending.push(
            src.producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    let total = KEYS.len() * PER_KEY as usize;
    let seen = src.seen(total).await;
    for k in KEYS {
        let seqs: Vec<u64> = seen
            .iter()
            .filter(|s| s.recipient.key() == k)
            .map(|s| s.data["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (0..PER_KEY).collect::<Vec<_>>(),
            "key {k} in order, once"
        );
    }
    src.rt.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_topic_record_that_cannot_be_mapped_is_dead_lettered() {
    let src = Source::start(
        1,
        |_| Subscription::for_type("orders", "rec").unwrap(),
        Some("header:tenant"),
    )
    .await;
    src.produce(Some(b"k"), &[("other", b"x")], br#"{"bad":true}"#)
        .await;
    src.produce(Some(b"k"), &[("tenant", b"t1")], br#"{"good":true}"#)
        .await;
    let seen = src.seen(1).await;
    assert_eq!(
        seen[0].data,
        json!({"good": true}),
        "the next record still flows"
    );
    assert!(
        eventually(Duration::from_secs(10), || src.rt.stats().dead_lettered
            == 1)
        .await,
        "one dead letter"
    );

    let kafka = KafkaConfig::new(&src.net.bootstrap);
    let dlq: StreamConsumer = kafka
        .consumer_config(&format!("{}-dlq-reader", src.net.prefix))
        .create()
        .unwrap();
    let names = switchboard_runtime::TopicNames::new(&src.net.prefix).unwrap();
    dlq.subscribe(&[&names.dlq("host")]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
        .await
        .expect("a dead letter within 30 s")
        .unwrap();
    assert_eq!(
        m.payload(),
        Some(&br#"{"bad":true}"#[..]),
        "the record as it came"
    );
    assert_eq!(m.key(), Some(&b"k"[..]));
    let reason = m
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "switchboard_dlq_reason")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("the dead letter says why");
    assert!(
        reason.contains(&format!("{}[0]@0", src.topic)) && reason.contains("\"tenant\""),
        "the reason names the record and the missing header: {reason}"
    );
    assert_eq!(
        src.log.lock().unwrap().len(),
        1,
        "the bad record reached nobody"
    );
    src.rt.stop().await.unwrap();
}
