//! The operator reads the runtime's consumer lag from Kafka into `status.lag` and,
//! with `spec.autoscaling`, sizes the Deployment from it. (No kubelet runs here, so
//! no runtime pod consumes: the lag is what the test makes.)

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

mod operator_support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use operator_support::{Operator, WAIT, commit_to_end, namespace, produce, runtime};
use serde_json::json;
use switchboard_crds::AgentRuntime;
use switchboard_e2e::crds::{FIELD_MANAGER, install_crds};
use switchboard_e2e::env;
use switchboard_e2e::wait::wait_for;
use switchboard_operator::context::Timing;

/// Short intervals so a test sees lag changes within seconds.
fn fast() -> Timing {
    Timing {
        resync: Duration::from_secs(1),
        autoscale_interval: Duration::from_secs(1),
        scale_down_window: Duration::from_secs(3),
        ..Timing::default()
    }
}

async fn lag(api: &Api<AgentRuntime>, name: &str) -> Option<i64> {
    api.get(name).await.ok()?.status?.lag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lag_counts_inbox_records_the_runtime_has_not_committed() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-lag").await;
    let op = Operator::start_with(&client, &ns, fast()).await;
    let prefix = env::unique_name("oplag");
    let api: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &runtime("rt1", &prefix, json!({ "topics": { "partitions": 3 } })),
    )
    .await
    .unwrap();
    // A fresh group with no commits and an empty inbox: lag 0.
    wait_for("status.lag = 0", WAIT, || async {
        (lag(&api, "rt1").await? == 0).then_some(())
    })
    .await;

    // No group offsets yet: every retained record counts (the runtime's consumers
    // start from the earliest offset).
    let inbox = format!("{prefix}.rt1.inbox");
    produce(&inbox, 7).await;
    wait_for("status.lag = 7", WAIT, || async {
        (lag(&api, "rt1").await? == 7).then_some(())
    })
    .await;

    // The runtime's group commits everything: lag back to 0.
    let group = format!("{prefix}.rt1.inbox");
    let t = inbox.clone();
    tokio::task::spawn_blocking(move || commit_to_end(&group, &t))
        .await
        .unwrap();
    produce(&inbox, 2).await;
    wait_for(
        "status.lag = 2 after the commit and 2 more records",
        WAIT,
        || async { (lag(&api, "rt1").await? == 2).then_some(()) },
    )
    .await;

    // An idle runtime (lag unchanged) makes no writes although it is resynced.
    let before = op.metrics.writes_total();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        op.metrics.writes_total(),
        before,
        "resyncs with an unchanged lag wrote to the API"
    );
    op.stop().await;
}

async fn deployment_replicas(api: &Api<Deployment>, name: &str) -> Option<i32> {
    api.get(name).await.ok()?.spec?.replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_follows_the_lag_within_partitions_and_scales_down_after_the_window() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-autoscale").await;
    let op = Operator::start_with(&client, &ns, fast()).await;
    let prefix = env::unique_name("opauto");
    let api: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &runtime(
            "auto",
            &prefix,
            json!({
                "topics": { "partitions": 3 },
                "autoscaling": { "minReplicas": 1, "maxReplicas": 5, "lagPerReplica": 10 },
            }),
        ),
    )
    .await
    .unwrap();
    wait_for(
        "an idle autoscaled runtime runs minReplicas",
        WAIT,
        || async { (deployment_replicas(&deployments, "auto").await? == 1).then_some(()) },
    )
    .await;

    let inbox = format!("{prefix}.auto.inbox");
    produce(&inbox, 15).await;
    wait_for("lag 15 -> ceil(15/10) = 2 replicas", WAIT, || async {
        (deployment_replicas(&deployments, "auto").await? == 2).then_some(())
    })
    .await;
    produce(&inbox, 100).await;
    wait_for(
        "lag 115 -> 12 wanted, capped by the 3 partitions",
        WAIT,
        || async { (deployment_replicas(&deployments, "auto").await? == 3).then_some(()) },
    )
    .await;
    // Still 3 once the lag figure is in the status (not more: maxReplicas 5 but
    // only 3 partitions).
    wait_for("status.lag = 115", WAIT, || async {
        (lag(&api, "auto").await? == 115).then_some(())
    })
    .await;
    assert_eq!(deployment_replicas(&deployments, "auto").await, Some(3));

    let group = inbox.clone();
    let t = inbox.clone();
    tokio::task::spawn_blocking(move || commit_to_end(&group, &t))
        .await
        .unwrap();
    wait_for(
        "lag 0 -> back to minReplicas after the window",
        WAIT,
        || async { (deployment_replicas(&deployments, "auto").await? == 1).then_some(()) },
    )
    .await;
    assert_eq!(lag(&api, "auto").await, Some(0));
    op.stop().await;
}
