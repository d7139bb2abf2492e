//! The node agent makes the test control plane run operator-shaped runtime pods as
//! local processes: bound, started with their ConfigMap, Ready by their probe, at their
//! own pod IP, replaced and stopped gracefully, never evicted, and no status storm.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use switchboard_e2e::binary::runtime_binary;
use switchboard_e2e::env;
use switchboard_e2e::node::{NodeAgent, NodeAgentConfig, test_pod_cidr};
use switchboard_e2e::wait::wait_for;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(120);
/// Longer than the controller-manager's node-monitor grace period (50 s): a node whose
/// lease were not renewed would be NotReady, tainted and its pods marked by now.
const NODE_GRACE: Duration = Duration::from_secs(70);
const SELECTOR: &str = "app.kubernetes.io/name=switchboard-runtime";

fn runtime_config(prefix: &str) -> String {
    format!(
        "kafka: {{ bootstrapServers: \"{}\", topicPrefix: {prefix} }}\n\
         runtime: {{ name: echo-rt, createTopics: true, partitions: 2 }}\n\
         agents:\n  - {{ type: echo, builtin: echo }}\n\
         http: {{ listen: \"0.0.0.0:8080\" }}\n",
        env::kafka_bootstrap()
    )
}

/// The operator's Deployment shape (operator/src/agent_runtime/build.rs), with faster
/// probe periods so the test spends less time waiting.
fn deployment() -> Deployment {
    let labels = json!({ "app.kubernetes.io/name": "switchboard-runtime", "app.kubernetes.io/instance": "echo-rt" });
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": "http" }, "periodSeconds": 2, "failureThreshold": 3 });
    serde_json::from_value(json!({
        "metadata": { "name": "echo-rt", "labels": labels },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "containers": [{
                        "name": "runtime",
                        "image": "ghcr.io/switchboard-dev/switchboard-runtime:test",
                        "command": ["switchboard-runtime"],
                        "args": ["run", "--config", "/etc/switchboard/runtime.yaml"],
                        "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
                        "env": [
                            { "name": "RUST_LOG", "value": "info" },
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "SWITCHBOARD_RUNTIME_NAME", "value": "echo-rt" },
                        ],
                        "volumeMounts": [
                            { "name": "config", "mountPath": "/etc/switchboard", "readOnly": true },
                            { "name": "tmp", "mountPath": "/tmp" },
                        ],
                        "livenessProbe": probe("/healthz"),
                        "readinessProbe": probe("/readyz"),
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": "echo-rt-config" } },
                        { "name": "tmp", "emptyDir": {} },
                    ],
                },
            },
        },
    }))
    .unwrap()
}

fn is_ready(p: &Pod) -> bool {
    let status = p.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pid_of(p: &Pod) -> u32 {
    let id = p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    id.strip_prefix("process://").unwrap().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits for `n` Running+Ready runtime pods (none terminating) and returns them.
async fn ready_pods(pods: &Api<Pod>, n: usize) -> Vec<Pod> {
    wait_for(&format!("{n} ready runtime pods"), WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .ok()?;
        let live: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        (live.len() == n && live.iter().all(is_ready)).then_some(live)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_agent_runs_runtime_pods_as_processes() {
    env::init_test_logs();
    let client = env::kube_client().await;
    let ns = env::create_namespace(&client, "node-agent").await;
    let node_name = env::unique_name("node");
    let state_dir = std::env::temp_dir().join(env::unique_name("node-agent"));
    let mut config =
        NodeAgentConfig::new(&node_name, &test_pod_cidr(), runtime_binary(), &state_dir).unwrap();
    config.namespaces = vec![ns.clone()];
    let agent = NodeAgent::new(client.clone(), config);
    let stats = agent.stats();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let agent_task = tokio::spawn(agent.run(shutdown.clone()));

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let nodes: Api<Node> = Api::all(client.clone());
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "echo-rt-config" },
        "data": { "runtime.yaml": runtime_config(&env::unique_name("node")) },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    deployments
        .create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let web: Pod = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "containers": [{ "name": "web", "image": "nginx" }] },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &web).await.unwrap();

    // Both replicas run, Ready by their probe, each at its own pod IP.
    let running = ready_pods(&pods, 2).await;
    let ips: BTreeSet<String> = running
        .iter()
        .map(|p| p.status.as_ref().unwrap().pod_ip.clone().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "distinct pod IPs: {ips:?}");
    let http = reqwest::Client::new();
    for ip in &ips {
        let r = http
            .get(format!("http://{ip}:8080/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET http://{ip}:8080/healthz: {e}"));
        assert!(r.status().is_success(), "healthz at {ip}: {}", r.status());
    }
    wait_for(
        "the Deployment to report 2 available replicas",
        WAIT,
        || async {
            let d = deployments.get("echo-rt").await.ok()?;
            (d.status?.available_replicas == Some(2)).then_some(())
        },
    )
    .await;

    // The nginx pod is not the agent's to run: unbound and Pending.
    let web = pods.get("web").await.unwrap();
    assert_eq!(
        web.spec.as_ref().unwrap().node_name,
        None,
        "nginx pod was bound"
    );
    assert_eq!(
        web.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    // Deleting a pod: its process gets SIGTERM and exits 0, the object goes away, the
    // ReplicaSet's replacement comes up.
    let victim = &running[0];
    let victim_pid = pid_of(victim);
    let victim_key = format!("{ns}/{}", victim.name_any());
    pods.delete(&victim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the deleted pod object to be gone", WAIT, || async {
        pods.get_opt(&victim.name_any())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let exit = stats
        .exits()
        .into_iter()
        .find(|e| e.pid == victim_pid)
        .unwrap_or_else(|| panic!("no exit recorded for pid {victim_pid}: {:?}", stats.exits()));
    assert_eq!(exit.pod, victim_key);
    assert!(exit.stopped, "the agent stopped it: {exit:?}");
    assert_eq!(
        (exit.exit.code, exit.exit.signal),
        (0, None),
        "graceful exit on SIGTERM"
    );
    assert!(!alive(victim_pid), "pid {victim_pid} still alive");
    let replaced = ready_pods(&pods, 2).await;
    assert!(replaced.iter().all(|p| p.uid() != victim.uid()));

    // Steady state past the node-monitor grace period: the node stays Ready and
    // untainted, no pod is evicted or restarted, and nothing is rewritten.
    let writes = stats.status_writes();
    if let Some(rest) = NODE_GRACE.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest.max(Duration::from_secs(10))).await;
    }
    let node = nodes.get(&node_name).await.unwrap();
    let ready = node.status.unwrap().conditions.unwrap();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "node conditions after {NODE_GRACE:?}: {ready:?}"
    );
    let taints = node.spec.unwrap().taints.unwrap_or_default();
    assert!(taints.is_empty(), "node tainted: {taints:?}");
    let still = ready_pods(&pods, 2).await;
    let uids = |ps: &[Pod]| ps.iter().map(|p| p.uid().unwrap()).collect::<BTreeSet<_>>();
    assert_eq!(uids(&still), uids(&replaced), "pods replaced while steady");
    for p in &still {
        let restarts = p
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .restart_count;
        assert_eq!(restarts, 0, "{} restarted", p.name_any());
    }
    assert_eq!(
        stats.status_writes(),
        writes,
        "status writes while nothing changed"
    );

    // Scaling to zero leaves no process behind.
    let pids: Vec<u32> = still.iter().map(pid_of).collect();
    deployments
        .patch(
            "echo-rt",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .unwrap();
    wait_for("no runtime pods", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived scaling to 0");
    }
    println!(
        "node agent: {} pod status writes for 3 runtime pods over {:?}",
        stats.status_writes(),
        started.elapsed()
    );

    // Its own stop: the node is marked NotReady.
    shutdown.cancel();
    tokio::time::timeout(WAIT, agent_task)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
    let node = nodes.get(&node_name).await.unwrap();
    let conditions = node.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False")
    );

    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
    let _ = nodes.delete(&node_name, &DeleteParams::default()).await;
    let _ = std::fs::remove_dir_all(&state_dir);
}
