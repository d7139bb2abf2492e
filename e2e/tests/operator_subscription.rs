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
