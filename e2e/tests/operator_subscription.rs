//! AgentSubscriptions become registry records (and tombstones on delete); bad
//! references are reported in conditions.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

mod operator_support;

use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use operator_support::{Operator, WAIT, namespace, read_all};
use serde_json::{Value, json};
use switchboard_crds::{AgentRuntime, AgentSubscription};
use switchboard_e2e::crds::{FIELD_MANAGER, install_crds};
use switchboard_e2e::env;
use switchboard_e2e::wait::wait_for;

fn subscription(name: &str, runtime: &str, agent_type: &str) -> AgentSubscription {
    serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentSubscription",
        "metadata": { "name": name },
        "spec": { "runtimeRef": { "name": runtime }, "agentType": agent_type, "topicType": "alerts" },
    }))
    .unwrap()
}

async fn accepted(api: &Api<AgentSubscription>, name: &str) -> Option<(String, String)> {
    let st = api.get(name).await.ok()?.status?;
    st.conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_registered_tombstoned_and_bad_references_reported() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-sub").await;
    let op = Operator::start(&client, &ns).await;
    let prefix = env::unique_name("opsub");
    let agent = format!("{prefix}-counter");
    let runtimes: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    let rt: AgentRuntime = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": "host" },
        "spec": {
            "kafka": { "bootstrapServers": env::kafka_bootstrap(), "topicPrefix": prefix },
            "agents": [{ "type": agent, "builtin": "counter" }],
        },
    }))
    .unwrap();
    runtimes.create(&PostParams::default(), &rt).await.unwrap();
    let subs: Api<AgentSubscription> = Api::namespaced(client.clone(), &ns);
    let good = subs
        .create(
            &PostParams::default(),
            &subscription("good", "host", &agent),
        )
        .await
        .unwrap();
    subs.create(
        &PostParams::default(),
        &subscription("orphan", "nope", &agent),
    )
    .await
    .unwrap();
    subs.create(
        &PostParams::default(),
        &subscription("wrongtype", "host", "missing"),
    )
    .await
    .unwrap();

    let uid = good.uid().unwrap();
    wait_for("good is Accepted", WAIT, || async {
        (accepted(&subs, "good").await?.0 == "True").then_some(())
    })
    .await;
    let registry = format!("{prefix}.registry");
    let key = format!("sub/{uid}");
    let record: Value = wait_for("sub record in the registry", WAIT, || {
        let registry = registry.clone();
        let key = key.clone();
        async move {
            let records = tokio::task::spawn_blocking(move || read_all(&registry))
                .await
                .ok()?;
            let (_, v) = records.into_iter().rev().find(|(k, _)| *k == key)?;
            serde_json::from_slice(&v?).ok()
        }
    })
    .await;
    assert_eq!(record["owner"], "operator", "{record}");
    assert_eq!(record["subscription"]["topic_type"], "alerts", "{record}");
    assert_eq!(
        record["subscription"]["agent_type"],
        agent.as_str(),
        "{record}"
    );

    assert_eq!(
        wait_for("orphan reported", WAIT, || async {
            accepted(&subs, "orphan").await
        })
        .await,
        ("False".to_owned(), "RuntimeNotFound".to_owned())
    );
    assert_eq!(
        wait_for("wrongtype reported", WAIT, || async {
            accepted(&subs, "wrongtype").await
        })
        .await,
        ("False".to_owned(), "UnknownAgentType".to_owned())
    );

    subs.delete("good", &DeleteParams::default()).await.unwrap();
    wait_for("good deleted", WAIT, || async {
        subs.get_opt("good").await.ok()?.is_none().then_some(())
    })
    .await;
    let records = tokio::task::spawn_blocking(move || read_all(&registry))
        .await
        .unwrap();
    let last = records.into_iter().rev().find(|(k, _)| *k == key).unwrap();
    assert!(last.1.is_none(), "the last record of {key} is a tombstone");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_outliving_its_runtime_still_tombstones_its_record() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-sub-orphaned").await;
    let op = Operator::start(&client, &ns).await;
    let prefix = env::unique_name("opsuborph");
    let agent = format!("{prefix}-counter");
    let runtimes: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    let rt: AgentRuntime = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": "host" },
        "spec": {
            "kafka": { "bootstrapServers": env::kafka_bootstrap(), "topicPrefix": prefix },
            "agents": [{ "type": agent, "builtin": "counter" }],
            "deletionPolicy": "Retain",
        },
    }))
    .unwrap();
    runtimes.create(&PostParams::default(), &rt).await.unwrap();
    let subs: Api<AgentSubscription> = Api::namespaced(client.clone(), &ns);
    let sub = subs
        .create(&PostParams::default(), &subscription("s", "host", &agent))
        .await
        .unwrap();
    let key = format!("sub/{}", sub.uid().unwrap());
    let registry = format!("{prefix}.registry");
    wait_for("s is Accepted", WAIT, || async {
        (accepted(&subs, "s").await?.0 == "True").then_some(())
    })
    .await;
    let last_record = |registry: String, key: String| async move {
        let records = tokio::task::spawn_blocking(move || read_all(&registry))
            .await
            .ok()?;
        records.into_iter().rev().find(|(k, _)| *k == key)
    };
    wait_for("the record is in the registry", WAIT, || {
        last_record(registry.clone(), key.clone())
    })
    .await;

    // The runtime goes first; its Kafka settings go with it.
    runtimes
        .delete("host", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("host deleted", WAIT, || async {
        runtimes.get_opt("host").await.ok()?.is_none().then_some(())
    })
    .await;
    subs.delete("s", &DeleteParams::default()).await.unwrap();
    wait_for("s deleted", WAIT, || async {
        subs.get_opt("s").await.ok()?.is_none().then_some(())
    })
    .await;
    let last = last_record(registry, key.clone()).await.unwrap();
    assert!(
        last.1.is_none(),
        "the last record of {key} is a tombstone, not the live subscription"
    );
    op.stop().await;
}

async fn condition(
    api: &Api<AgentSubscription>,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let st = api.get(name).await.ok()?.status?;
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_topic_status_names_a_missing_topic_and_is_ready_once_the_runtime_reads_it() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use switchboard_e2e::agents::{Recorder, SeenLog};
    use switchboard_runtime::admin::{TopicAdmin, TopicSpec};
    use switchboard_runtime::{AgentId, AgentRuntime as _, AgentRuntimeExt, KafkaAgentRuntime};
    use switchboard_runtime::{KafkaConfig, WorkerConfig};

    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-sub-source").await;
    let op = Operator::start(&client, &ns).await;
    let prefix = env::unique_name("opsubsrc");
    let agent = format!("{prefix}-rec");
    let topic = format!("{prefix}.orders");
    let runtimes: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    let rt: AgentRuntime = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": "host" },
        "spec": {
            "kafka": { "bootstrapServers": env::kafka_bootstrap(), "topicPrefix": prefix },
            "agents": [{ "type": agent, "builtin": "counter" }],
        },
    }))
    .unwrap();
    runtimes.create(&PostParams::default(), &rt).await.unwrap();
    let subs: Api<AgentSubscription> = Api::namespaced(client.clone(), &ns);
    let with_source = |name: &str, key_from: &str| -> AgentSubscription {
        serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentSubscription",
            "metadata": { "name": name },
            "spec": {
                "runtimeRef": { "name": "host" }, "agentType": agent, "topicType": "orders",
                "source": { "kafkaTopic": topic, "keyFrom": key_from },
            },
        }))
        .unwrap()
    };
    subs.create(&PostParams::default(), &with_source("src", "header:tenant"))
        .await
        .unwrap();
    subs.create(&PostParams::default(), &with_source("badkey", "value"))
        .await
        .unwrap();

    let (_, reason, message) = wait_for("Ready=False, topic missing", WAIT, || async {
        condition(&subs, "src", "Ready")
            .await
            .filter(|c| c.1 == "SourceTopicNotFound")
    })
    .await;
    assert_eq!(reason, "SourceTopicNotFound");
    assert!(message.contains(&topic), "names the topic: {message}");
    assert_eq!(accepted(&subs, "src").await.unwrap().0, "True");
    let (status, reason, message) = wait_for("badkey rejected", WAIT, || async {
        condition(&subs, "badkey", "Accepted").await
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("keyFrom"), "{message}");

    // The registry record carries the binding for the runtimes.
    let registry = format!("{prefix}.registry");
    let uid = subs.get("src").await.unwrap().uid().unwrap();
    let key = format!("sub/{uid}");
    let records = tokio::task::spawn_blocking(move || read_all(&registry))
        .await
        .unwrap();
    let (_, value) = records.into_iter().rev().find(|(k, _)| *k == key).unwrap();
    let record: Value = serde_json::from_slice(&value.unwrap()).unwrap();
    assert_eq!(
        record["source"],
        json!({"kafkaTopic": topic, "keyFrom": "header:tenant"}),
        "{record}"
    );

    // The topic appears: not Ready until the runtime reads it.
    let kafka = KafkaConfig::new(env::kafka_bootstrap());
    let admin = TopicAdmin::new(&kafka, Duration::from_secs(30)).unwrap();
    admin
        .ensure_topics(&[TopicSpec::new(topic.clone(), 2, 1)])
        .await
        .unwrap();
    wait_for("Ready=False, not read", WAIT, || async {
        condition(&subs, "src", "Ready")
            .await
            .filter(|c| c.0 == "False" && c.1 == "SourceNotRead")
    })
    .await;

    // A replica of `host` (in this process; no node here) reads it.
    let mut cfg = WorkerConfig::new(kafka.clone(), &prefix, "host");
    cfg.heartbeat_interval = Duration::from_millis(500);
    cfg.liveness_timeout = Duration::from_secs(3);
    let replica = KafkaAgentRuntime::new(cfg).unwrap();
    let log: SeenLog = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    replica
        .register(&agent, move |id: &AgentId| Recorder::new(id, l.clone()))
        .await
        .unwrap();
    replica.start().await.unwrap();
    let (_, reason, _) = wait_for("Ready=True", WAIT, || async {
        condition(&subs, "src", "Ready")
            .await
            .filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(reason, "ReadingSource");

    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let headers = OwnedHeaders::new().insert(Header {
        key: "tenant",
        value: Some(b"acme".as_slice()),
    });
    producer
        .send(
            FutureRecord::<[u8], [u8]>::to(&topic)
                .payload(br#"{"n":1}"#.as_slice())
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    wait_for("the record reaches the agent", WAIT, || async {
        log.lock()
            .unwrap()
            .iter()
            .any(|s| s.recipient.key() == "acme")
            .then_some(())
    })
    .await;
    replica.stop().await.unwrap();
    op.stop().await;
}
