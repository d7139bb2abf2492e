//! Proves the test control plane is a real Kubernetes: the controller-manager turns
//! a Deployment into a ReplicaSet and Pods, and the garbage collector removes them.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::json;
use switchboard_e2e::env;
use switchboard_e2e::wait::wait_for;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn controller_manager_runs_deployments_and_garbage_collects_them() {
    let client = env::kube_client().await;
    let ns_name = env::unique_name("smoke");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(ns_name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns_name);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns_name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns_name);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "example.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    let created = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let deployment_uid = created.metadata.uid.unwrap();

    let lp = ListParams::default().labels("app=web");
    let rs_name = wait_for("a ReplicaSet owned by the Deployment", WAIT, || async {
        let list = replica_sets.list(&lp).await.unwrap();
        list.items.into_iter().find_map(|rs| {
            let owned = rs
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .any(|o| o.uid == deployment_uid);
            owned.then(|| rs.metadata.name.clone()).flatten()
        })
    })
    .await;
    let pod_count = wait_for("2 Pods created by the ReplicaSet", WAIT, || async {
        let list = pods.list(&lp).await.unwrap();
        let owned = list
            .items
            .iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.name == rs_name)
            })
            .count();
        (owned == 2).then_some(owned)
    })
    .await;
    assert_eq!(pod_count, 2);

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        "the garbage collector to remove the ReplicaSet and Pods",
        WAIT,
        || async {
            let rs_left = replica_sets.list(&lp).await.unwrap().items.len();
            let pods_left = pods.list(&lp).await.unwrap().items.len();
            (rs_left == 0 && pods_left == 0).then_some(())
        },
    )
    .await;

    namespaces
        .delete(&ns_name, &DeleteParams::default())
        .await
        .unwrap();
}
