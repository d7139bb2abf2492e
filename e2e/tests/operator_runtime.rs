//! The operator against the real API server, controller-manager and Kafka broker:
//! topics, owned objects, scaling, quiet steady state, deletion policies.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

mod operator_support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use operator_support::{Operator, WAIT, namespace, runtime};
use serde_json::json;
use switchboard_crds::AgentRuntime;
use switchboard_e2e::crds::{FIELD_MANAGER, install_crds};
use switchboard_e2e::env;
use switchboard_e2e::wait::wait_for;
use switchboard_runtime::KafkaConfig;
use switchboard_runtime::admin::TopicAdmin;

fn admin() -> TopicAdmin {
    TopicAdmin::new(
        &KafkaConfig::new(env::kafka_bootstrap()),
        Duration::from_secs(10),
    )
    .unwrap()
}

async fn condition(api: &Api<AgentRuntime>, name: &str, type_: &str) -> Option<(String, String)> {
    let ar = api.get(name).await.ok()?;
    let st = ar.status?;
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_topics_ready(api: &Api<AgentRuntime>, name: &str) {
    wait_for(&format!("{name} TopicsReady=True"), WAIT, || async {
        (condition(api, name, "TopicsReady").await?.0 == "True").then_some(())
    })
    .await;
}

async fn setup(stem: &str) -> (Client, String, Operator) {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, stem).await;
    let op = Operator::start(&client, &ns).await;
    (client, ns, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_gets_its_topics_and_owned_objects_and_partitions_grow() {
    let (client, ns, op) = setup("op-topics").await;
    let prefix = env::unique_name("optopics");
    let api: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    let ar = runtime(
        "rt1",
        &prefix,
        json!({ "topics": { "partitions": 3, "config": { "retention.ms": "3600000" } } }),
    );
    let created = api.create(&PostParams::default(), &ar).await.unwrap();
    let uid = created.uid().unwrap();
    wait_topics_ready(&api, "rt1").await;

    let admin = admin();
    let names: Vec<String> = [
        "registry",
        "events",
        "rt1.inbox",
        "rt1.state",
        "rt1.dlq",
        "rt1.tasks",
    ]
    .iter()
    .map(|s| format!("{prefix}.{s}"))
    .collect();
    let counts = admin.partition_counts(&names).await.unwrap();
    assert_eq!(counts[&names[0]], 1, "registry has one partition");
    for n in &names[1..] {
        assert_eq!(counts[n], 3, "{n}");
    }
    let configs = admin.topic_configs(&names).await.unwrap();
    assert_eq!(configs[&names[3]]["cleanup.policy"], "compact");
    assert_eq!(configs[&names[2]]["retention.ms"], "3600000");

    let owned_by_us =
        |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.unwrap_or_default()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        };
    let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("rt1")
        .await
        .unwrap();
    assert!(owned_by_us(dep.metadata.owner_references.clone()));
    assert_eq!(dep.spec.as_ref().unwrap().replicas, Some(1));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("rt1-config")
        .await
        .unwrap();
    assert!(owned_by_us(cm.metadata.owner_references.clone()));
    assert!(cm.data.unwrap()["runtime.yaml"].contains("createTopics: false"));
    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get("rt1")
        .await
        .unwrap();
    assert!(owned_by_us(svc.metadata.owner_references));
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("rt1")
        .await
        .unwrap();
    assert!(owned_by_us(sa.metadata.owner_references));
    let hash_before = dep
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()["switchboard.dev/config-hash"]
        .clone();

    let grow = json!({ "spec": { "topics": { "partitions": 6 } } });
    api.patch("rt1", &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .unwrap();
    wait_for("inbox grown to 6 in Kafka", WAIT, || async {
        let counts = admin.partition_counts(&names).await.ok()?;
        names[1..]
            .iter()
            .all(|n| counts.get(n) == Some(&6))
            .then_some(())
    })
    .await;
    wait_for("status.topics reports 6 partitions", WAIT, || async {
        let st = api.get("rt1").await.ok()?.status?;
        st.topics
            .iter()
            .any(|t| t.name == names[2] && t.partitions == 6)
            .then_some(())
    })
    .await;
    // The config file carries the partitions: the pods roll.
    let deps = Api::<Deployment>::namespaced(client.clone(), &ns);
    wait_for("config hash changes", WAIT, || async {
        let d = deps.get("rt1").await.ok()?;
        let h = d.spec?.template.metadata?.annotations?["switchboard.dev/config-hash"].clone();
        (h != hash_before).then_some(())
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_flows_to_the_deployment_and_a_steady_state_makes_no_writes() {
    let (client, ns, op) = setup("op-scale").await;
    let prefix = env::unique_name("opscale");
    let api: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &runtime("rt", &prefix, json!({ "replicas": 2 })),
    )
    .await
    .unwrap();
    wait_topics_ready(&api, "rt").await;
    let replicas = |want: i32| {
        let deps = deps.clone();
        async move {
            wait_for(&format!("Deployment replicas {want}"), WAIT, || async {
                (deps.get("rt").await.ok()?.spec?.replicas == Some(want)).then_some(())
            })
            .await
        }
    };
    replicas(2).await;
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .get("rt")
        .await
        .unwrap();

    // Real kubectl through the scale subresource.
    let out = std::process::Command::new(env::kubectl())
        .args(["scale", "agentruntime/rt", "--replicas=4", "-n", &ns])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl scale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    replicas(4).await;

    // An HPA-style writer of /scale: the operator never writes spec, so it stays.
    let scale = json!({ "spec": { "replicas": 5 } });
    api.patch_scale("rt", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    replicas(5).await;

    // Steady state: wait until the status settles, then count writes for 30 s.
    let mut last = op.metrics.writes_total();
    let mut stable_since = std::time::Instant::now();
    while stable_since.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = op.metrics.writes_total();
        if now != last {
            last = now;
            stable_since = std::time::Instant::now();
        }
    }
    let reconciles_before = op.metrics.reconciles_total("agentruntime");
    // Touching metadata (no spec change) makes the operator reconcile: it must
    // find nothing to write.
    let touch = json!({ "metadata": { "annotations": { "e2e/touched": "yes" } } });
    api.patch("rt", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        op.metrics.writes_total(),
        last,
        "the operator wrote during a quiet period:\n{}",
        op.metrics.encode().unwrap()
    );
    assert_eq!(
        api.get("rt").await.unwrap().spec.replicas,
        Some(5),
        "the /scale writer was overwritten"
    );
    assert_eq!(
        deps.get("rt").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );
    assert!(
        op.metrics.reconciles_total("agentruntime") > reconciles_before,
        "the quiet period must include reconciles, or it proves nothing"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policy_removes_topics_retain_keeps_them_and_owned_objects_are_collected() {
    let (client, ns, op) = setup("op-delete").await;
    let prefix = env::unique_name("opdel");
    let api: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &runtime("gone", &prefix, json!({ "deletionPolicy": "Delete" })),
    )
    .await
    .unwrap();
    let mut kept = runtime("kept", &prefix, json!({ "deletionPolicy": "Retain" }));
    kept.spec.agents[0].agent_type = format!("{prefix}-other");
    api.create(&PostParams::default(), &kept).await.unwrap();
    wait_topics_ready(&api, "gone").await;
    wait_topics_ready(&api, "kept").await;
    wait_for("finalizer on the Delete runtime", WAIT, || async {
        api.get("gone")
            .await
            .ok()?
            .finalizers()
            .iter()
            .any(|f| f == "switchboard.dev/delete-topics")
            .then_some(())
    })
    .await;
    assert!(
        api.get("kept").await.unwrap().finalizers().is_empty(),
        "Retain needs no finalizer"
    );

    let admin = admin();
    let gone: Vec<String> = ["inbox", "state", "dlq", "tasks"]
        .iter()
        .map(|s| format!("{prefix}.gone.{s}"))
        .collect();
    let kept_topics: Vec<String> = ["inbox", "state", "dlq", "tasks"]
        .iter()
        .map(|s| format!("{prefix}.kept.{s}"))
        .collect();
    assert_eq!(admin.partition_counts(&gone).await.unwrap().len(), 4);

    api.delete("gone", &DeleteParams::default()).await.unwrap();
    api.delete("kept", &DeleteParams::default()).await.unwrap();
    for name in ["gone", "kept"] {
        wait_for(&format!("{name} deleted"), WAIT, || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    wait_for("Delete runtime's topics removed", WAIT, || async {
        admin
            .partition_counts(&gone)
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        admin.partition_counts(&kept_topics).await.unwrap().len(),
        4,
        "Retain keeps the topics"
    );
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for("owned Deployments garbage-collected", WAIT, || async {
        let a = deps.get_opt("gone").await.ok()?;
        let b = deps.get_opt("kept").await.ok()?;
        (a.is_none() && b.is_none()).then_some(())
    })
    .await;
    op.stop().await;
}
