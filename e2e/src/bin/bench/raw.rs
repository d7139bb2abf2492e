//! Kafka's own ceiling: the same traffic with plain rdkafka clients, same settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use switchboard_runtime::KafkaConfig;
use switchboard_runtime::admin::{TopicAdmin, TopicSpec};

use crate::stats::CpuTicks;

fn assigned_consumer(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = kafka.consumer_config(group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

async fn topics(kafka: &KafkaConfig, specs: &[TopicSpec]) -> anyhow::Result<()> {
    let admin = TopicAdmin::new(kafka, Duration::from_secs(30))?;
    admin.ensure_topics(specs).await?;
    Ok(())
}

/// Round trips: produce to `ping`, a responder consumes it and produces to `pong`,
/// the caller consumes `pong`. Each call waits for the broker's ack of its request,
/// as the runtime's RPC does. Set up once, then measured in rounds.
pub struct PingPong {
    producer: FutureProducer,
    replies: StreamConsumer,
    ping: String,
    responder: tokio::task::JoinHandle<()>,
}

impl PingPong {
    /// Creates the two topics and starts the responder.
    pub async fn start(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Self> {
        let (ping, pong) = (format!("{prefix}.raw.ping"), format!("{prefix}.raw.pong"));
        topics(
            kafka,
            &[TopicSpec::new(&ping, 1, -1), TopicSpec::new(&pong, 1, -1)],
        )
        .await?;
        let producer: FutureProducer = kafka.producer_config().create()?;
        let responder = assigned_consumer(kafka, &format!("{prefix}.raw.responder"), &ping, 1)?;
        let replies = assigned_consumer(kafka, &format!("{prefix}.raw.caller"), &pong, 1)?;
        let rp = producer.clone();
        let responder = tokio::spawn(async move {
            while let Ok(m) = responder.recv().await {
                let record = FutureRecord::to(&pong)
                    .key(m.key().unwrap_or_default())
                    .payload(m.payload().unwrap_or_default());
                if rp.send(record, Duration::from_secs(10)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            producer,
            replies,
            ping,
            responder,
        })
    }

    /// `warmup` untimed calls, then the durations of `calls` timed ones.
    pub async fn calls(&self, warmup: usize, calls: usize) -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(calls);
        for i in 0..warmup + calls {
            let payload = format!("{{\"n\":{i}}}");
            let started = Instant::now();
            self.producer
                .send(
                    FutureRecord::to(&self.ping).key("k").payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
            tokio::time::timeout(Duration::from_secs(10), self.replies.recv())
                .await
                .context("raw reply timed out")??;
            if i >= warmup {
                samples.push(started.elapsed());
            }
        }
        Ok(samples)
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.responder.abort();
    }
}

/// Figures of one produce -> consume run.
pub struct Flow {
    pub produced_per_s: f64,
    pub consumed_per_s: f64,
    pub latencies: Vec<Duration>,
    /// CPU per record while producing and consuming (see [`CpuTicks::per_event`]).
    pub cpu: serde_json::Value,
}

/// Produces `count` records of `size` bytes (256 in flight, as the publish
/// benchmark does) while one consumer reads them; end-to-end latency per record.
pub async fn produce_consume(
    kafka: &KafkaConfig,
    prefix: &str,
    partitions: i32,
    count: usize,
    size: usize,
) -> anyhow::Result<Flow> {
    let topic = format!("{prefix}.raw.flow");
    topics(kafka, &[TopicSpec::new(&topic, partitions, -1)]).await?;
    let producer: FutureProducer = kafka.producer_config().create()?;
    let consumer = assigned_consumer(
        kafka,
        &format!("{prefix}.raw.flow-reader"),
        &topic,
        partitions,
    )?;
    let cpu = CpuTicks::now();
    let start = Instant::now();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let reader = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count);
        while latencies.len() < count {
            let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await
            else {
                break;
            };
            let sent_us = m
                .payload()
                .and_then(|p| p.get(..16))
                .and_then(|p| std::str::from_utf8(p).ok()?.parse::<u64>().ok());
            if let Some(us) = sent_us {
                latencies.push(start.elapsed().saturating_sub(Duration::from_micros(us)));
            }
            s.fetch_add(1, Ordering::Relaxed);
        }
        (latencies, start.elapsed())
    });
    let results: Vec<bool> = futures::stream::iter(0..count)
        .map(|i| {
            let producer = producer.clone();
            let topic = topic.clone();
            async move {
                let mut value = format!("{:016}", start.elapsed().as_micros());
                value.push_str(&"x".repeat(size.saturating_sub(16)));
                let key = format!("k{}", i % 64);
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let produced = start.elapsed();
    anyhow::ensure!(results.iter().all(|ok| *ok), "raw produce failed");
    let (latencies, consumed) = reader.await?;
    anyhow::ensure!(
        latencies.len() == count,
        "raw consumer saw {} of {count}",
        seen.load(Ordering::Relaxed)
    );
    Ok(Flow {
        produced_per_s: count as f64 / produced.as_secs_f64(),
        consumed_per_s: count as f64 / consumed.as_secs_f64(),
        latencies,
        cpu: cpu.per_event(count),
    })
}
