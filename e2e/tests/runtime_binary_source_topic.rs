//! A source topic declared in the runtime binary's config file
//! (`subscriptions[].source`), against the real broker: plain records with a header
//! key reach the builtin counter of `switchboard-runtime run`.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_e2e::binary::{RuntimeProcess, cli, free_port};
use switchboard_e2e::env::{kafka_bootstrap, unique_name};
use switchboard_runtime::KafkaConfig;
use switchboard_runtime::admin::{TopicAdmin, TopicSpec};

/// Whether `group` has committed offsets on every partition of `topic`.
fn group_reads(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> bool {
    let consumer: BaseConsumer = KafkaConfig::new(bootstrap)
        .consumer_config(group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    (0..partitions).all(|p| {
        matches!(
            committed.find_partition(topic, p).map(|e| e.offset()),
            Some(Offset::Offset(_))
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_topic_in_the_config_file_feeds_the_builtin_counter() {
    let bootstrap = kafka_bootstrap();
    let prefix = unique_name("binsrc");
    let topic = format!("{prefix}.orders");
    let kafka = KafkaConfig::new(&bootstrap);
    let admin = TopicAdmin::new(&kafka, Duration::from_secs(30)).unwrap();
    admin
        .ensure_topics(&[TopicSpec::new(topic.clone(), 2, 1)])
        .await
        .unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = format!(
        r#"
kafka: {{ bootstrapServers: "{bootstrap}", topicPrefix: {prefix} }}
runtime: {{ name: rt }}
agents:
  - {{ type: counter, builtin: counter }}
subscriptions:
  - {{ topicType: orders, agentType: counter, source: {{ kafkaTopic: {topic}, keyFrom: "header:tenant" }} }}
http: {{ listen: "{http}" }}
"#
    );
    let rt = RuntimeProcess::start("binsrc", &yaml, http, Duration::from_secs(60)).await;
    let group = format!("{prefix}.rt.events");
    let start = Instant::now();
    while !group_reads(&bootstrap, &group, &topic, 2) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the runtime did not start reading {topic}: {}",
            rt.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    for i in 0..3 {
        let headers = OwnedHeaders::new().insert(Header {
            key: "tenant",
            value: Some(b"acme".as_slice()),
        });
        let value = format!(r#"{{"order":{i}}}"#);
        producer
            .send(
                FutureRecord::<[u8], [u8]>::to(&topic)
                    .payload(value.as_bytes())
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    // The three records are handled, then this RPC: the counter of key `acme` says 4.
    let series = r#"switchboard_messages_handled_total{agent_type="counter"}"#;
    let start = Instant::now();
    loop {
        if rt.metric(series).await.unwrap_or(0.0) >= 3.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "records never reached the counter: {}",
            rt.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let args = [
        "send",
        "--bootstrap",
        &bootstrap,
        "--prefix",
        &prefix,
        "--to",
        "counter/acme",
        "--type",
        "demo.Count",
        "--data",
        "{}",
    ];
    let out = cli(&args, Duration::from_secs(40)).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), r#"{"count":4}"#),
        "{out:?}"
    );
    rt.terminate();
}
