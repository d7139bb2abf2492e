//! The end-to-end suite: the whole system driven through Kubernetes, as a user would
//! drive it: apply -> Ready -> RPC through a runtime pod's port -> publish reaches the
//! subscribers -> scale 1 -> 3 -> 1 under a steady RPC stream -> a config change rolls
//! the pods -> delete with `deletionPolicy: Delete` removes topics and processes; and
//! bad resources applied with kubectl show the API server's message.
//!
//! Cluster-agnostic: it needs a kubeconfig (`KUBECONFIG`) and a Kafka address
//! (`SWITCHBOARD_TEST_KAFKA`) that both the runtime pods and this process can reach.
//! By default (`make test`) it starts the operator binary and the node agent (pods as
//! local processes, each on its own loopback address) itself, both scoped to the
//! suite's namespace. With `SWITCHBOARD_E2E_EXTERNAL=1` (kind: e2e/kind/) the operator
//! installed by the chart and real kubelets do that work, and pods are reached
//! through the API server's pod proxy; `SWITCHBOARD_E2E_IMAGE` names the runtime image.

#![allow(clippy::unwrap_used)]

mod operator_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use switchboard_crds::{AgentRuntime, AgentSubscription};
use switchboard_e2e::binary::{free_port, operator_binary, runtime_binary};
use switchboard_e2e::env;
use switchboard_e2e::node::{NodeAgent, NodeAgentConfig};
use switchboard_e2e::wait::wait_for;
use switchboard_runtime::admin::TopicAdmin;
use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::topics::TopicNames;
use switchboard_runtime::{
    AgentId, AgentRuntime as _, KafkaAgentRuntime, Payload, SendOptions, WorkerConfig,
};
use tokio_util::sync::CancellationToken;

/// Waits for pods, rollouts and topic deletion (image pulls on kind take longer).
const LONG: Duration = Duration::from_secs(240);
const RUNTIME: &str = "e2e";
const PORT: u16 = 8080;
const LOCAL_IMAGE: &str = "ghcr.io/switchboard-dev/switchboard-runtime:e2e";

/// The system under test: cluster access plus, locally, the operator process and the
/// node agent this suite started.
struct System {
    client: Client,
    ns: String,
    prefix: String,
    bootstrap: String,
    http: reqwest::Client,
    local: Option<Local>,
}

/// What the suite runs itself when no real cluster manages pods.
struct Local {
    operator: tokio::process::Child,
    operator_log: PathBuf,
    node_stop: CancellationToken,
    node_task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl System {
    async fn start() -> Self {
        let client = env::kube_client().await;
        let bootstrap = env::kafka_bootstrap();
        let external = env::external_cluster();
        if !external {
            operator_support::install_crds(&client).await;
        }
        let ns = operator_support::namespace(&client, "e2e").await;
        let local = if external {
            None
        } else {
            Some(Local::start(&client, &ns).await)
        };
        Self {
            client,
            prefix: env::unique_name("e2e"),
            ns,
            bootstrap,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            local,
        }
    }

    fn runtimes(&self) -> Api<AgentRuntime> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn image(&self) -> String {
        std::env::var("SWITCHBOARD_E2E_IMAGE").unwrap_or_else(|_| LOCAL_IMAGE.to_owned())
    }

    fn agents(extra: &[Value]) -> Value {
        let mut agents = vec![
            json!({ "type": "echo", "builtin": "echo" }),
            json!({ "type": "counter", "builtin": "counter" }),
            json!({ "type": "relay", "builtin": "relay",
                    "relay": { "publish": { "topicType": "alerts" } } }),
        ];
        agents.extend_from_slice(extra);
        Value::Array(agents)
    }

    async fn apply(&self, kind: &str, name: &str, spec: Value) {
        let object = json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": kind,
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        let pp = PatchParams::apply("switchboard-e2e-suite");
        let result = match kind {
            "AgentRuntime" => self
                .runtimes()
                .patch(name, &pp, &Patch::Apply(&object))
                .await
                .map(|_| ()),
            _ => Api::<AgentSubscription>::namespaced(self.client.clone(), &self.ns)
                .patch(name, &pp, &Patch::Apply(&object))
                .await
                .map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }

    async fn condition(&self, type_: &str) -> Option<String> {
        let ar = self.runtimes().get(RUNTIME).await.ok()?;
        ar.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status)
    }

    async fn wait_ready_replicas(&self, n: i32) {
        wait_for(
            &format!("{n} ready replicas of {RUNTIME}"),
            LONG,
            || async {
                let ar = self.runtimes().get(RUNTIME).await.ok()?;
                let st = ar.status?;
                let pods = self.serving_pods().await;
                let all = self.runtime_pods().await.len();
                (st.ready_replicas == n && pods.len() == n as usize && all == n as usize)
                    .then_some(())
            },
        )
        .await;
    }

    /// Every pod of the runtime, terminating ones included.
    async fn runtime_pods(&self) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={RUNTIME}"));
        self.pods()
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Pods that are Running and Ready and not being deleted.
    async fn serving_pods(&self) -> Vec<Pod> {
        self.runtime_pods()
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.phase.as_deref() == Some("Running")
                        && s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .collect()
    }

    /// POST `body` to `path` of a pod's HTTP API (directly on its address locally,
    /// through the API server's pod proxy on a real cluster): (status, body).
    async fn pod_post(&self, pod: &Pod, path: &str, ce_type: &str, body: &Value) -> (u16, String) {
        let body = serde_json::to_vec(body).unwrap();
        if self.local.is_some() {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
            let resp = self
                .http
                .post(format!("http://{ip}:{PORT}{path}"))
                .header("ce-type", ce_type)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {path} to pod {}: {e}", pod.name_any()));
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        } else {
            let uri = format!(
                "/api/v1/namespaces/{}/pods/{}:{PORT}/proxy{path}",
                self.ns,
                pod.name_any()
            );
            let req = http::Request::post(uri)
                .header("ce-type", ce_type)
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
            match self.client.request_text(req).await {
                Ok(text) => (200, text),
                Err(kube::Error::Api(e)) => (e.code, e.message),
                Err(e) => panic!("pod proxy POST {path}: {e}"),
            }
        }
    }

    /// An RPC through the HTTP gateway of the first serving pod.
    async fn rpc(&self, agent: &str, ce_type: &str, data: Value) -> Value {
        let pods = self.serving_pods().await;
        let pod = pods.first().expect("a serving runtime pod");
        let (status, body) = self
            .pod_post(pod, &format!("/v1/agents/{agent}"), ce_type, &data)
            .await;
        assert_eq!(
            status,
            200,
            "RPC to {agent} via pod {}: {body}",
            pod.name_any()
        );
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("reply of {agent} is not JSON ({e}): {body}"))
    }

    async fn publish(&self, topic: &str, data: Value) {
        let pods = self.serving_pods().await;
        let pod = pods.first().expect("a serving runtime pod");
        let (status, body) = self
            .pod_post(pod, &format!("/v1/topics/{topic}"), "e2e.Event", &data)
            .await;
        assert_eq!(status, 202, "publish to {topic}: {body}");
    }

    /// Polls counter `key` by RPC until `events` events have reached it. Each RPC counts
    /// as well, so the events delivered are the count minus the RPCs made so far.
    async fn wait_counted(&self, key: &str, events: u64) {
        let mut polls = 0;
        wait_for(
            &format!("{events} events counted by counter/{key}"),
            LONG,
            || {
                polls += 1;
                let polls = polls;
                async move {
                    let reply = self
                        .rpc(&format!("counter/{key}"), "e2e.Query", json!({}))
                        .await;
                    let delivered = reply["count"].as_u64().unwrap() - polls;
                    assert!(
                        delivered <= events,
                        "counter/{key} got {delivered} events, more than the {events} published"
                    );
                    (delivered == events).then_some(())
                }
            },
        )
        .await;
    }

    fn topic_names(&self) -> TopicNames {
        TopicNames::new(&self.prefix).unwrap()
    }

    async fn stop(mut self) {
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        if let Some(local) = self.local.take() {
            local.stop().await;
        }
    }
}

impl Local {
    async fn start(client: &Client, ns: &str) -> Self {
        let metrics = format!("127.0.0.1:{}", free_port());
        let operator_log = std::env::temp_dir().join(env::unique_name("e2e-operator-log"));
        let operator = tokio::process::Command::new(operator_binary())
            .arg("run")
            .arg("--kubeconfig")
            .arg(env::kubeconfig_path())
            .args(["--namespace", ns, "--runtime-image", LOCAL_IMAGE])
            .args(["--metrics-addr", &metrics])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&operator_log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard-operator");
        let state_dir = std::env::temp_dir().join(env::unique_name("e2e-node"));
        let mut config = NodeAgentConfig::new(
            env::unique_name("e2e-node"),
            "127.0.2.0/24",
            runtime_binary(),
            state_dir,
        )
        .unwrap();
        config.namespaces = vec![ns.to_owned()];
        let node_stop = CancellationToken::new();
        let node_task = tokio::spawn(NodeAgent::new(client.clone(), config).run(node_stop.clone()));
        Self {
            operator,
            operator_log,
            node_stop,
            node_task,
        }
    }

    async fn stop(mut self) {
        self.node_stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), self.node_task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the node agent did not stop cleanly: {result:?}"
        );
        if let Some(pid) = self.operator.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let exit = tokio::time::timeout(Duration::from_secs(30), self.operator.wait()).await;
        assert!(
            matches!(exit, Ok(Ok(s)) if s.success()),
            "operator did not exit 0 on SIGTERM: {exit:?}\n{}",
            std::fs::read_to_string(&self.operator_log).unwrap_or_default()
        );
    }
}

/// Local mode: the process ids the node agent reports (`process://PID`).
fn process_ids(pods: &[Pod]) -> Vec<u32> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter_map(|c| {
            c.container_id
                .as_deref()?
                .strip_prefix("process://")?
                .parse()
                .ok()
        })
        .collect()
}

/// A steady stream of sequential RPCs over Kafka (not through a pod, which may be the
/// one being removed) while the runtime scales: every call must be answered with its
/// own data.
struct RpcStream {
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Duration>,
}

impl RpcStream {
    async fn start(system: &System) -> Self {
        let cfg = WorkerConfig::new(
            KafkaConfig::new(system.bootstrap.clone()),
            system.prefix.clone(),
            "e2e-caller",
        );
        let caller = KafkaAgentRuntime::start_client(cfg).await.unwrap();
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok2, failures2, stop2) = (Arc::clone(&ok), Arc::clone(&failures), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                i += 1;
                let to = AgentId::new("echo", format!("k{}", i % 32)).unwrap();
                let data = json!({ "i": i });
                let options = SendOptions {
                    timeout: Some(Duration::from_secs(60)),
                    ..SendOptions::default()
                };
                let started = Instant::now();
                let result = caller
                    .send_payload(Payload::json("e2e.Ping", &data), &to, options)
                    .await;
                slowest = slowest.max(started.elapsed());
                match result {
                    Ok(Some(reply)) if reply.decode_json::<Value>().ok() == Some(data.clone()) => {
                        ok2.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures2
                        .lock()
                        .unwrap()
                        .push(format!("call {i} to {to}: {other:?}")),
                }
            }
            let _ = caller.stop().await;
            slowest
        });
        Self {
            ok,
            failures,
            stop,
            task,
        }
    }

    /// Waits until `n` more calls have been answered.
    async fn wait_more(&self, n: usize, what: &str) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        wait_for(what, LONG, || async {
            (self.ok.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    async fn finish(self) -> (usize, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let slowest = tokio::time::timeout(Duration::from_secs(90), self.task)
            .await
            .expect("the last call of the stream ends within its timeout")
            .unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures, slowest)
    }
}

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
        spec["image"] = json!(system.image());
    }

    // Apply -> Ready.
    system.apply("AgentRuntime", RUNTIME, spec.clone()).await;
    for (name, sub) in [
        (
            "alerts-to-counter",
            json!({ "topicType": "alerts", "agentType": "counter" }),
        ),
        (
            "team-to-relay",
            json!({ "topicTypePrefix": "team.", "agentType": "relay" }),
        ),
    ] {
        let mut sub = sub;
        sub["runtimeRef"] = json!({ "name": RUNTIME });
        system.apply("AgentSubscription", name, sub).await;
    }
    wait_for("AgentRuntime Ready=True", LONG, || async {
        (system.condition("Ready").await.as_deref() == Some("True")).then_some(())
    })
    .await;
    system.wait_ready_replicas(1).await;

    // RPC through the runtime's port.
    let reply = system
        .rpc("echo/a", "e2e.Hello", json!({ "hello": "world" }))
        .await;
    assert_eq!(reply, json!({ "hello": "world" }));

    // Publish reaches the subscribers: directly, and through the relay's prefix.
    for i in 0..3 {
        system.publish("alerts/k1", json!({ "n": i })).await;
    }
    for i in 0..2 {
        system.publish("team.ops/k2", json!({ "n": i })).await;
    }
    system.wait_counted("k1", 3).await;
    system.wait_counted("k2", 2).await;

    // Scale 1 -> 3 -> 1 with a steady RPC stream: no call lost, none hung.
    let stream = RpcStream::start(&system).await;
    stream.wait_more(20, "20 RPCs before scaling").await;
    let scale = |n: i32| {
        let api = system.runtimes();
        async move {
            api.patch_scale(
                RUNTIME,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": n } })),
            )
            .await
            .unwrap();
        }
    };
    scale(3).await;
    system.wait_ready_replicas(3).await;
    let deployment = Api::<Deployment>::namespaced(system.client.clone(), &system.ns)
        .get(RUNTIME)
        .await
        .unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(3));
    stream.wait_more(20, "20 RPCs with 3 replicas").await;
    scale(1).await;
    system.wait_ready_replicas(1).await;
    stream
        .wait_more(20, "20 RPCs after scaling back to 1")
        .await;
    let (answered, failures, slowest) = stream.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} RPCs failed during scaling: {failures:#?}",
        failures.len(),
        answered + failures.len()
    );
    eprintln!("scale 1->3->1: {answered} RPCs answered, none failed, slowest {slowest:?}");

    // A config change (a new agent type) rolls the pods.
    let before: BTreeSet<String> = system
        .runtime_pods()
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    spec["replicas"] = json!(1);
    spec["agents"] = System::agents(&[json!({ "type": "echo2", "builtin": "echo" })]);
    system.apply("AgentRuntime", RUNTIME, spec.clone()).await;
    wait_for("pods replaced after the config change", LONG, || async {
        let pods = system.serving_pods().await;
        let all = system.runtime_pods().await;
        (pods.len() == 1 && all.len() == 1 && !before.contains(&pods[0].name_any())).then_some(())
    })
    .await;
    let reply = system
        .rpc("echo2/x", "e2e.Hello", json!({ "new": "type" }))
        .await;
    assert_eq!(reply, json!({ "new": "type" }));

    // Delete with deletionPolicy: Delete: topics and processes go away.
    let pids = process_ids(&system.runtime_pods().await);
    if system.local.is_some() {
        assert!(!pids.is_empty(), "the node agent reports process ids");
    }
    system
        .runtimes()
        .delete(RUNTIME, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the AgentRuntime and its pods gone", LONG, || async {
        let gone = system.runtimes().get_opt(RUNTIME).await.ok()?.is_none();
        (gone && system.runtime_pods().await.is_empty()).then_some(())
    })
    .await;
    let names = system.topic_names();
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
    wait_for("the runtime's topics deleted", LONG, || async {
        admin
            .partition_counts(&owned)
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    for pid in pids {
        wait_for(&format!("runtime process {pid} gone"), LONG, || async {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        })
        .await;
    }
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
        operator_support::install_crds(&client).await;
    }
    let ns = operator_support::namespace(&client, "e2e-bad").await;
    let cases = [
        (
            format!(
                "apiVersion: switchboard.dev/v1alpha1\nkind: AgentRuntime\nmetadata: {{name: bad, namespace: {ns}}}\n\
                 spec:\n  replicas: 2\n  autoscaling: {{minReplicas: 1, maxReplicas: 3}}\n  kafka: {{bootstrapServers: 'k:9092'}}\n  agents: [{{type: echo, builtin: echo}}]\n"
            ),
            "replicas and autoscaling are mutually exclusive",
        ),
        (
            format!(
                "apiVersion: switchboard.dev/v1alpha1\nkind: AgentRuntime\nmetadata: {{name: bad, namespace: {ns}}}\n\
                 spec:\n  kafka: {{bootstrapServers: 'k:9092'}}\n  agents: [{{type: 'no/slash', builtin: echo}}]\n"
            ),
            "agent type must be 1-63 characters of [A-Za-z0-9_.-]",
        ),
        (
            format!(
                "apiVersion: switchboard.dev/v1alpha1\nkind: AgentSubscription\nmetadata: {{name: bad, namespace: {ns}}}\n\
                 spec: {{runtimeRef: {{name: rt}}, agentType: echo, topicType: a, topicTypePrefix: b}}\n"
            ),
            "exactly one of topicType and topicTypePrefix is required",
        ),
    ];
    for (yaml, message) in cases {
        let out = kubectl_apply(&yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "kubectl accepted:\n{yaml}");
        assert!(
            stderr.contains(message),
            "kubectl's error does not carry the API server's message {message:?}:\n{stderr}"
        );
    }
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}
