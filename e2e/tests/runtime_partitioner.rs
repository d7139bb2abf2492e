//! The runtime computes which inbox partition owns an agent (for state co-partitioning)
//! with Kafka's murmur2; it must agree with where librdkafka actually puts the key.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard_e2e::env;
use switchboard_runtime::KafkaConfig;
use switchboard_runtime::admin::{TopicAdmin, TopicSpec};
use switchboard_runtime::protocol::partitioner::partition_for;

#[tokio::test]
async fn computed_partitions_match_the_producer() {
    let cfg = KafkaConfig::new(env::kafka_bootstrap());
    let topic = env::unique_name("partitioner");
    let admin = TopicAdmin::new(&cfg, Duration::from_secs(10)).unwrap();
    admin
        .ensure_topics(&[TopicSpec::new(&topic, 7, 1)])
        .await
        .unwrap();
    let producer: FutureProducer = cfg.producer_config().create().unwrap();
    for i in 0..200 {
        let key = format!("agent-key-{i}");
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(
            delivery.partition,
            partition_for(key.as_bytes(), 7),
            "key {key}"
        );
    }
    admin.delete_topics(&[topic]).await.unwrap();
}
