//! Shared by the operator tests: a namespace per test, an in-process operator
//! watching only that namespace, Kafka and status helpers. CRD install and polling
//! are the library's (`switchboard_e2e::crds`, `switchboard_e2e::wait`).

#![allow(clippy::unwrap_used, dead_code)] // test helpers fail loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::{Api, Client};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use switchboard_e2e::env;
use switchboard_e2e::wait::wait_for;
use switchboard_operator::Context;
use switchboard_operator::agent_runtime::build::BuildSettings;
use switchboard_operator::context::Timing;
use switchboard_operator::kafka::RdKafka;
use switchboard_operator::metrics::Metrics;
use tokio::sync::watch;

/// The bound of the operator tests' waits.
pub const WAIT: Duration = Duration::from_secs(60);

/// A fresh namespace.
pub async fn namespace(client: &Client, stem: &str) -> String {
    env::create_namespace(client, stem).await
}

/// An operator running in this process, watching one namespace; stops on drop.
pub struct Operator {
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    pub async fn start(client: &Client, ns: &str) -> Self {
        Self::start_with(client, ns, Timing::default()).await
    }

    /// An operator with other resync/autoscaling intervals.
    pub async fn start_with(client: &Client, ns: &str, timing: Timing) -> Self {
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(
            Context::new(
                client.clone(),
                Arc::new(RdKafka::default()),
                Arc::clone(&metrics),
                BuildSettings {
                    default_image: "switchboard-runtime:test".into(),
                },
            )
            .with_timing(timing),
        );
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(switchboard_operator::controller::run(
            ctx,
            Some(ns.to_owned()),
            rx,
        ));
        Self {
            metrics,
            stop,
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Every record of `topic` (one partition) from the beginning: (key, value).
pub fn read_all(topic: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env::kafka_bootstrap())
        .set("group.id", env::unique_name("op-e2e-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = -1;
    while last + 1 < high && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            last = m.offset();
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, m.payload().map(<[u8]>::to_vec)));
        }
    }
    out
}

/// Produces `count` records with distinct keys to `topic` and waits for the acks.
pub async fn produce(topic: &str, count: usize) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", env::kafka_bootstrap())
        .create()
        .unwrap();
    for i in 0..count {
        let key = format!("k{i}");
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload("{}"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// Commits `group`'s offsets on `topic` at the end of every partition (as if the
/// runtime had processed everything).
pub fn commit_to_end(group: &str, topic: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env::kafka_bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))
            .unwrap();
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
}

/// An AgentRuntime on the test broker with one echo agent; `extra` overrides spec keys.
pub fn runtime(
    name: &str,
    prefix: &str,
    extra: serde_json::Value,
) -> switchboard_crds::AgentRuntime {
    let mut spec = json!({
        "kafka": { "bootstrapServers": env::kafka_bootstrap(), "topicPrefix": prefix },
        "agents": [{ "type": format!("{prefix}-echo"), "builtin": "echo" }],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": name }, "spec": spec,
    }))
    .unwrap()
}

/// Status and reason of condition `type_` of a stored AgentRuntime.
pub async fn runtime_condition(
    api: &Api<switchboard_crds::AgentRuntime>,
    name: &str,
    type_: &str,
) -> Option<(String, String)> {
    let st = api.get(name).await.ok()?.status?;
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Waits until `name` reports TopicsReady=True.
pub async fn wait_topics_ready(api: &Api<switchboard_crds::AgentRuntime>, name: &str) {
    wait_for(&format!("{name} TopicsReady=True"), WAIT, || async {
        (runtime_condition(api, name, "TopicsReady").await?.0 == "True").then_some(())
    })
    .await;
}
