//! Shared by the operator tests: CRD install, a namespace per test, an in-process
//! operator watching only that namespace, polling helpers, registry reading.

#![allow(clippy::unwrap_used, dead_code)] // test helpers fail loudly

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use switchboard_e2e::env;
use switchboard_operator::Context;
use switchboard_operator::agent_runtime::build::BuildSettings;
use switchboard_operator::kafka::RdKafka;
use switchboard_operator::metrics::Metrics;
use tokio::sync::watch;

pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` every 250 ms until it returns `Some`, failing after `WAIT`.
pub async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    switchboard_e2e::wait::wait_for(what, WAIT, check).await
}

/// Installs (server-side applies) the CRDs and waits until they are established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in switchboard_crds::all() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("switchboard-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        wait_for(&format!("CRD {name} established"), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let c = crds.get(&name).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

/// A fresh namespace.
pub async fn namespace(client: &Client, stem: &str) -> String {
    let name = env::unique_name(stem);
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

/// An operator running in this process, watching one namespace; stops on drop.
pub struct Operator {
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    pub async fn start(client: &Client, ns: &str) -> Self {
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(Context::new(
            client.clone(),
            Arc::new(RdKafka::default()),
            Arc::clone(&metrics),
            BuildSettings {
                default_image: "switchboard-runtime:test".into(),
            },
        ));
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
