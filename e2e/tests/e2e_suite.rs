//! The end-to-end suite: the whole system driven through Kubernetes, as a user would
//! drive it: apply -> Ready -> RPC through the runtime's Service -> publish reaches the
//! subscribers -> scale 1 -> 3 -> 1 under a steady RPC stream -> a config change rolls
//! the pods -> delete with `deletionPolicy: Delete` removes topics and processes; and
//! bad resources applied with kubectl show the API server's message.
//!
//! Cluster-agnostic: it needs a kubeconfig (`KUBECONFIG`) and a Kafka address
//! (`SWITCHBOARD_TEST_KAFKA`) that both the runtime pods and this process can reach.
//! By default (`make test`) it starts the operator binary and the node agent (pods as
//! local processes, each on its own loopback address) itself, both scoped to the
//! suite's namespace; the Service is then reached at one of the ready pods its selector
//! and `targetPort` resolve to (the API server refuses loopback pod addresses in
//! EndpointSlices, so the endpoint-slice controller cannot list them). With `SWITCHBOARD_E2E_EXTERNAL=1` (kind: e2e/kind/) the
//! operator installed by the chart and real kubelets do that work, and the Service and
//! pods are reached through the API server's proxy; `SWITCHBOARD_E2E_IMAGE` names the
//! runtime image.
//!
//! The harness (`System`, `RpcStream`) is `switchboard_e2e::system`.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use switchboard_crds::AgentRuntime;
use switchboard_e2e::crds::{FIELD_MANAGER, install_crds};
use switchboard_e2e::env;
use switchboard_e2e::system::{LONG, RUNTIME, RpcStream, System, process_ids};
use switchboard_e2e::wait::wait_for;
use switchboard_runtime::admin::TopicAdmin;
use switchboard_runtime::{KafkaConfig, TopicNames};

const SUBSCRIPTIONS: [&str; 2] = ["alerts-to-counter", "team-to-relay"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_serve_scale_update_delete() {
    let system = System::start().await;
    let mut spec = json!({
        "replicas": 1,
        "kafka": { "bootstrapServers": system.bootstrap, "topicPrefix": system.prefix },
        "topics": { "partitions": 6 },
        "agents": System::agents(&[]),
        "deletionPolicy": "Delete",
    });
    if env::external_cluster() {
        spec["image"] = json!(System::image());
    }

    // Apply -> Ready: the AgentRuntime's condition, one Running+Ready pod behind the
    // Service, both subscriptions Ready and known to the runtime.
    system.apply("AgentRuntime", RUNTIME, spec.clone()).await;
    let subscriptions = [
        json!({ "topicType": "alerts", "agentType": "counter" }),
        json!({ "topicTypePrefix": "team.", "agentType": "relay" }),
    ];
    for (name, mut sub) in SUBSCRIPTIONS.into_iter().zip(subscriptions) {
        sub["runtimeRef"] = json!({ "name": RUNTIME });
        system.apply("AgentSubscription", name, sub).await;
    }
    wait_for("AgentRuntime Ready=True", LONG, || async {
        (system.runtime_condition("Ready").await.as_deref() == Some("True")).then_some(())
    })
    .await;
    let pods = system.wait_ready_replicas(1).await;
    let mut ids = BTreeSet::new();
    for name in SUBSCRIPTIONS {
        ids.insert(
            wait_for(&format!("subscription {name} Ready"), LONG, || {
                system.subscription_id(name)
            })
            .await,
        );
    }
    wait_for("the runtime to know both subscriptions", LONG, || async {
        let registry = system.pod_get(&pods[0], "/v1/registry").await;
        let known: BTreeSet<String> = registry["subscriptions"]
            .as_array()?
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        ids.is_subset(&known).then_some(())
    })
    .await;
    system.phase("applied: Ready, 1 pod behind the Service, subscriptions registered");

    // RPC through the runtime's Service.
    let reply = system
        .rpc("echo/a", "e2e.Hello", json!({ "hello": "world" }))
        .await;
    assert_eq!(reply, json!({ "hello": "world" }));
    system.phase("RPC through the Service answered");

    // Publish reaches the subscribers: directly (alerts -> counter), and through the
    // prefix subscription (team.* -> relay, which republishes to alerts -> counter).
    for i in 0..3 {
        system.publish("alerts/k1", json!({ "n": i })).await;
    }
    for i in 0..2 {
        system.publish("team.ops/k2", json!({ "n": i })).await;
    }
    system.wait_counted("k1", 3).await;
    system.wait_counted("k2", 2).await;
    system.phase("published events counted by the subscribers");

    // Scale 1 -> 3 -> 1 with a steady RPC stream: no call lost, none hung; the new
    // pods take part (they host echo agents), the removed pods' processes end.
    let stream = RpcStream::start(&system).await;
    stream.wait_more(20, "20 RPCs before scaling").await;
    system.scale(3).await;
    let three = system.wait_ready_replicas(3).await;
    let deployment = system.api::<Deployment>().get(RUNTIME).await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(3));
    stream.wait_more(20, "20 RPCs with 3 replicas").await;
    for pod in &three {
        wait_for(
            &format!("pod {} to host echo agents", pod.name_any()),
            LONG,
            || async {
                let active = system.pod_get(pod, "/v1/agents").await;
                active["agents"]
                    .as_array()?
                    .iter()
                    .any(|a| a.as_str().is_some_and(|a| a.starts_with("echo/")))
                    .then_some(())
            },
        )
        .await;
    }
    system.phase("scaled to 3: every pod hosts echo agents");
    system.scale(1).await;
    let one = system.wait_ready_replicas(1).await;
    stream
        .wait_more(20, "20 RPCs after scaling back to 1")
        .await;
    let result = stream.finish().await;
    assert!(
        result.failures.is_empty(),
        "{} of {} RPCs failed or hung during scaling: {:#?}",
        result.failures.len(),
        result.issued,
        result.failures
    );
    assert_eq!(
        result.answered, result.issued,
        "every call issued was answered"
    );
    let kept = process_ids(&one);
    let removed: Vec<u32> = process_ids(&three)
        .into_iter()
        .filter(|p| !kept.contains(p))
        .collect();
    if system.is_local() {
        assert_eq!(removed.len(), 2, "two of the three processes were removed");
    }
    system
        .wait_processes_gone(&removed, "scaled-down pod")
        .await;
    system.phase(&format!(
        "scaled 3 -> 1: {} RPCs issued, all answered, slowest {:?}",
        result.issued, result.slowest
    ));

    // A config change (a new agent type) rolls the pods: a new pod with a new config
    // replaces the old one (whose process ends), and the new type answers.
    let before = one[0].name_any();
    let before_config = system
        .api::<ConfigMap>()
        .get(&format!("{RUNTIME}-config"))
        .await
        .unwrap();
    spec["agents"] = System::agents(&[json!({ "type": "echo2", "builtin": "echo" })]);
    system.apply("AgentRuntime", RUNTIME, spec.clone()).await;
    let rolled = wait_for("pod replaced after the config change", LONG, || async {
        let pods = system.settled(1).await?;
        (pods[0].name_any() != before).then_some(pods)
    })
    .await;
    let after_config = system
        .api::<ConfigMap>()
        .get(&format!("{RUNTIME}-config"))
        .await
        .unwrap();
    assert_ne!(before_config.data, after_config.data, "the config changed");
    system
        .wait_processes_gone(&process_ids(&one), "rolled-out pod")
        .await;
    let reply = system
        .rpc("echo2/x", "e2e.Hello", json!({ "new": "type" }))
        .await;
    assert_eq!(reply, json!({ "new": "type" }));
    system.phase("config change rolled the pod; the new agent type answers");

    // Delete with deletionPolicy: Delete: the resource, its objects, its topics and
    // its processes go away.
    let pids = process_ids(&rolled);
    if system.is_local() {
        assert_eq!(pids.len(), 1, "the node agent reports the process id");
    }
    let names = TopicNames::new(&system.prefix).unwrap();
    let owned = vec![
        names.inbox(RUNTIME),
        names.state(RUNTIME),
        names.dlq(RUNTIME),
    ];
    let admin = TopicAdmin::new(
        &KafkaConfig::new(system.bootstrap.clone()),
        Duration::from_secs(10),
    )
    .unwrap();
    let existing = admin.partition_counts(&owned).await.unwrap();
    assert_eq!(
        existing.len(),
        owned.len(),
        "the runtime's topics exist before the delete: {existing:?}"
    );
    system
        .api::<AgentRuntime>()
        .delete(RUNTIME, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the AgentRuntime, its Deployment and pods gone",
        LONG,
        || async {
            let ar = system.api::<AgentRuntime>().get_opt(RUNTIME).await.ok()?;
            let deployment = system.api::<Deployment>().get_opt(RUNTIME).await.ok()?;
            let service = system.api::<Service>().get_opt(RUNTIME).await.ok()?;
            (ar.is_none()
                && deployment.is_none()
                && service.is_none()
                && system.runtime_pods().await.is_empty())
            .then_some(())
        },
    )
    .await;
    wait_for("the runtime's topics deleted", LONG, || async {
        admin
            .partition_counts(&owned)
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    system.wait_processes_gone(&pids, "deleted runtime").await;
    system.phase("deleted: resource, objects, topics and processes gone");
    system.stop().await;
}

/// kubectl's output for `yaml` applied with server-side dry run.
fn kubectl_apply(yaml: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env::kubectl())
        .arg("--kubeconfig")
        .arg(env::kubeconfig_path())
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn bad_resources_show_the_api_servers_message() {
    let client = env::kube_client().await;
    if !env::external_cluster() {
        install_crds(&client, FIELD_MANAGER).await.unwrap();
    }
    let ns = env::create_namespace(&client, "e2e-bad").await;
    let runtime = |spec: &str| {
        format!(
            "apiVersion: switchboard.dev/v1alpha1\nkind: AgentRuntime\n\
             metadata: {{name: bad, namespace: {ns}}}\nspec:\n{spec}"
        )
    };
    let cases = [
        (
            runtime(
                "  replicas: 2\n  autoscaling: {minReplicas: 1, maxReplicas: 3}\n  \
                 kafka: {bootstrapServers: 'k:9092'}\n  agents: [{type: echo, builtin: echo}]\n",
            ),
            "replicas and autoscaling are mutually exclusive",
        ),
        (
            runtime(
                "  kafka: {bootstrapServers: 'k:9092'}\n  agents: [{type: 'no/slash', builtin: echo}]\n",
            ),
            "agent type must be 1-63 characters of [A-Za-z0-9_.-]",
        ),
        (
            format!(
                "apiVersion: switchboard.dev/v1alpha1\nkind: AgentSubscription\n\
                 metadata: {{name: bad, namespace: {ns}}}\n\
                 spec: {{runtimeRef: {{name: rt}}, agentType: echo, topicType: a, topicTypePrefix: b}}\n"
            ),
            "exactly one of topicType and topicTypePrefix is required",
        ),
    ];
    // The same resource without its mistake passes the same dry run: the message is
    // about the mistake, not about something else in the test's YAML.
    let good = kubectl_apply(&runtime(
        "  kafka: {bootstrapServers: 'k:9092'}\n  agents: [{type: echo, builtin: echo}]\n",
    ));
    assert!(
        good.status.success(),
        "a valid AgentRuntime was refused: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    for (yaml, message) in cases {
        let out = kubectl_apply(&yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "kubectl accepted:\n{yaml}");
        assert!(
            stderr.contains(message),
            "kubectl's error does not carry the API server's message {message:?}:\n{stderr}"
        );
    }
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}
