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

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

mod operator_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use switchboard_crds::{AgentRuntime, AgentSubscription};
use switchboard_e2e::binary::{operator_binary, runtime_binary};
use switchboard_e2e::env;
use switchboard_e2e::node::{NodeAgent, NodeAgentConfig, test_pod_cidr};
use switchboard_e2e::wait::wait_for;
use switchboard_runtime::admin::TopicAdmin;
use switchboard_runtime::{
    AgentId, AgentRuntime as _, KafkaAgentRuntime, KafkaConfig, Payload, SendOptions, TopicNames,
    WorkerConfig,
};
use tokio_util::sync::CancellationToken;

/// Bound of every wait for pods, rollouts and topic deletion (image pulls on kind
/// take longer than local processes).
const LONG: Duration = Duration::from_secs(240);
/// Bound of one call of the RPC stream: a call not answered by then counts as hung.
const CALL_BOUND: Duration = Duration::from_secs(30);
const RUNTIME: &str = "e2e";
const PORT: u16 = 8080;
const LOCAL_IMAGE: &str = "ghcr.io/switchboard-dev/switchboard-runtime:e2e";
const SUBSCRIPTIONS: [&str; 2] = ["alerts-to-counter", "team-to-relay"];

/// Where a request goes: the runtime's Service, or one pod.
#[derive(Clone, Copy)]
enum Target<'a> {
    Service,
    Pod(&'a Pod),
}

/// The system under test: cluster access plus, locally, the operator process and the
/// node agent this suite started.
struct System {
    client: Client,
    ns: String,
    prefix: String,
    bootstrap: String,
    http: reqwest::Client,
    local: Option<Local>,
    started: Instant,
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
        env::init_test_logs();
        let client = env::kube_client().await;
        let bootstrap = env::kafka_bootstrap();
        let external = env::external_cluster();
        if !external {
            operator_support::install_crds(&client).await;
        }
        let ns = env::create_namespace(&client, "e2e").await;
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
            started: Instant::now(),
        }
    }

    /// Logs a finished phase with the time since the start.
    fn phase(&self, what: &str) {
        eprintln!(
            "[e2e {:>6.1}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn image() -> String {
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

    /// Server-side applies a Switchboard resource.
    async fn apply(&self, kind: &str, name: &str, spec: Value) {
        let object = json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": kind,
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        let pp = PatchParams::apply("switchboard-e2e-suite");
        let result = match kind {
            "AgentRuntime" => self
                .api::<AgentRuntime>()
                .patch(name, &pp, &Patch::Apply(&object))
                .await
                .map(|_| ()),
            _ => self
                .api::<AgentSubscription>()
                .patch(name, &pp, &Patch::Apply(&object))
                .await
                .map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }

    async fn runtime_condition(&self, type_: &str) -> Option<String> {
        let ar = self.api::<AgentRuntime>().get(RUNTIME).await.ok()?;
        ar.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status)
    }

    /// The registry id of subscription `name` once it is Ready.
    async fn subscription_id(&self, name: &str) -> Option<String> {
        let st = self
            .api::<AgentSubscription>()
            .get(name)
            .await
            .ok()?
            .status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())?;
        st.subscription_id
    }

    /// The runtime's pods when it has exactly `n`, all Running and Ready, the
    /// AgentRuntime reports them ready and the Service has exactly their `n` ready
    /// endpoints.
    async fn settled(&self, n: usize) -> Option<Vec<Pod>> {
        let st = self.api::<AgentRuntime>().get(RUNTIME).await.ok()?.status?;
        let serving = self.serving_pods().await;
        let all = self.runtime_pods().await.len();
        let endpoints: BTreeSet<String> = self.service_endpoints().await.into_iter().collect();
        let addresses: BTreeSet<String> = serving
            .iter()
            .filter_map(|p| Some(format!("{}:{PORT}", pod_ip(p)?)))
            .collect();
        (usize::try_from(st.ready_replicas).ok()? == n
            && serving.len() == n
            && all == n
            && endpoints == addresses)
            .then_some(serving)
    }

    /// Waits until [`System::settled`] with `n` pods and returns them.
    async fn wait_ready_replicas(&self, n: usize) -> Vec<Pod> {
        wait_for(
            &format!("{n} ready replicas of {RUNTIME} behind its Service"),
            LONG,
            || self.settled(n),
        )
        .await
    }

    /// Every pod of the runtime, terminating ones included.
    async fn runtime_pods(&self) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={RUNTIME}"));
        self.api::<Pod>()
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
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect()
    }

    /// Ready addresses behind the runtime's Service on its `http` port, as `IP:PORT`.
    ///
    /// On a real cluster: its EndpointSlices, kept by the endpoint-slice controller.
    /// Locally the API server refuses loopback addresses in EndpointSlices ("may not
    /// be in the loopback range"), so the controller cannot publish the pods' 127.x
    /// addresses; the suite resolves the Service as that controller would: the ready
    /// pods its selector matches, at the container port its `targetPort` names.
    async fn service_endpoints(&self) -> Vec<String> {
        let service = self.api::<Service>().get_opt(RUNTIME).await.ok().flatten();
        let Some(service) = service else {
            return Vec::new();
        };
        if self.local.is_some() {
            return self.selected_endpoints(&service).await;
        }
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={RUNTIME}"));
        let slices = self
            .api::<EndpointSlice>()
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        slices
            .iter()
            .filter(|s| {
                s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Service" && Some(&o.uid) == service.metadata.uid.as_ref())
            })
            .flat_map(|s| {
                let port = s
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some("http"))
                    .and_then(|p| p.port);
                s.endpoints
                    .iter()
                    .flatten()
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .flat_map(move |e| {
                        e.addresses
                            .iter()
                            .filter_map(move |a| port.map(|p| format!("{a}:{p}")))
                    })
            })
            .collect()
    }

    /// `IP:PORT` of the ready pods `service` selects, at the port its `http` port
    /// targets (by container port name or number).
    async fn selected_endpoints(&self, service: &Service) -> Vec<String> {
        let spec = service.spec.clone().unwrap_or_default();
        let Some(selector) = spec.selector.filter(|s| !s.is_empty()) else {
            return Vec::new();
        };
        let Some(target) = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"))
            .map(|p| p.target_port.clone())
        else {
            return Vec::new();
        };
        let labels = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&labels))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        pods.iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .filter_map(|p| {
                let port = match &target {
                    Some(IntOrString::Int(n)) => *n,
                    Some(IntOrString::String(name)) => {
                        p.spec
                            .as_ref()?
                            .containers
                            .iter()
                            .flat_map(|c| c.ports.iter().flatten())
                            .find(|cp| cp.name.as_deref() == Some(name.as_str()))?
                            .container_port
                    }
                    None => return None,
                };
                Some(format!("{}:{port}", pod_ip(p)?))
            })
            .collect()
    }

    /// A request to the runtime's HTTP API: (status, body). Locally straight to the
    /// address (a ready endpoint of the Service, or the pod's IP); on a real cluster
    /// through the API server's service or pod proxy.
    async fn request(
        &self,
        target: Target<'_>,
        method: http::Method,
        path: &str,
        ce_type: &str,
        body: Option<&Value>,
    ) -> (u16, String) {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        if self.local.is_some() {
            let addr = match target {
                Target::Service => {
                    let endpoints = self.service_endpoints().await;
                    endpoints
                        .first()
                        .unwrap_or_else(|| panic!("Service {RUNTIME} has no ready endpoint"))
                        .clone()
                }
                Target::Pod(p) => format!("{}:{PORT}", pod_ip(p).unwrap()),
            };
            let mut req = self
                .http
                .request(method, format!("http://{addr}{path}"))
                .header("ce-type", ce_type);
            if let Some(body) = body {
                req = req.header("content-type", "application/json").body(body);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path} at {addr}: {e}"));
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        } else {
            let resource = match target {
                Target::Service => format!("services/{RUNTIME}:http"),
                Target::Pod(p) => format!("pods/{}:{PORT}", p.name_any()),
            };
            let uri = format!("/api/v1/namespaces/{}/{resource}/proxy{path}", self.ns);
            let req = http::Request::builder()
                .method(method)
                .uri(uri)
                .header("ce-type", ce_type)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(body.unwrap_or_default()))
                .unwrap();
            let resp = self
                .client
                .send(req)
                .await
                .unwrap_or_else(|e| panic!("{path} through the API server proxy: {e}"));
            let status = resp.status().as_u16();
            let text = resp.into_body().collect_bytes().await.unwrap_or_default();
            (status, String::from_utf8_lossy(&text).into_owned())
        }
    }

    /// An RPC through the runtime's Service.
    async fn rpc(&self, agent: &str, ce_type: &str, data: Value) -> Value {
        let (status, body) = self
            .request(
                Target::Service,
                http::Method::POST,
                &format!("/v1/agents/{agent}"),
                ce_type,
                Some(&data),
            )
            .await;
        assert_eq!(status, 200, "RPC to {agent} via the Service: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("reply of {agent} is not JSON ({e}): {body}"))
    }

    /// A publish through the runtime's Service.
    async fn publish(&self, topic: &str, data: Value) {
        let (status, body) = self
            .request(
                Target::Service,
                http::Method::POST,
                &format!("/v1/topics/{topic}"),
                "e2e.Event",
                Some(&data),
            )
            .await;
        assert_eq!(status, 202, "publish to {topic}: {body}");
    }

    /// A GET of `path` on one pod, as JSON.
    async fn pod_get(&self, pod: &Pod, path: &str) -> Value {
        let (status, body) = self
            .request(Target::Pod(pod), http::Method::GET, path, "", None)
            .await;
        assert_eq!(status, 200, "GET {path} on pod {}: {body}", pod.name_any());
        serde_json::from_str(&body).unwrap()
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

    async fn scale(&self, replicas: i32) {
        self.api::<AgentRuntime>()
            .patch_scale(
                RUNTIME,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .unwrap();
    }

    /// Waits until none of `pids` runs any more (local mode; nothing to check on a
    /// real cluster, where the kubelet owns the containers).
    async fn wait_processes_gone(&self, pids: &[u32], what: &str) {
        for pid in pids {
            wait_for(&format!("{what}: process {pid} gone"), LONG, || async {
                (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
            })
            .await;
        }
    }

    async fn stop(mut self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        if let Some(local) = self.local.take() {
            local.stop().await;
        }
    }
}

impl Local {
    async fn start(client: &Client, ns: &str) -> Self {
        let operator_log = std::env::temp_dir().join(env::unique_name("e2e-operator-log"));
        let operator = tokio::process::Command::new(operator_binary())
            .arg("run")
            .arg("--kubeconfig")
            .arg(env::kubeconfig_path())
            .args(["--namespace", ns, "--runtime-image", LOCAL_IMAGE])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&operator_log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard-operator");
        let state_dir = std::env::temp_dir().join(env::unique_name("e2e-node"));
        let mut config = NodeAgentConfig::new(
            env::unique_name("e2e-node"),
            &test_pod_cidr(),
            runtime_binary(),
            &state_dir,
        )
        .unwrap();
        config.namespaces = vec![ns.to_owned()];
        eprintln!(
            "[e2e] namespace {ns}; operator log {}; pods under {} ({})",
            operator_log.display(),
            state_dir.join("pods").display(),
            config.pod_cidr
        );
        let node_stop = CancellationToken::new();
        let node_task = tokio::spawn(NodeAgent::new(client.clone(), config).run(node_stop.clone()));
        Self {
            operator,
            operator_log,
            node_stop,
            node_task,
        }
    }

    /// Stops the node agent (it must return Ok) and the operator (SIGTERM, exit 0).
    async fn stop(mut self) {
        self.node_stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), self.node_task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the node agent did not stop cleanly: {result:?}"
        );
        let pid = self.operator.id().expect("the operator still runs");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.operator.wait()).await;
        assert!(
            matches!(exit, Ok(Ok(s)) if s.success()),
            "operator did not exit 0 on SIGTERM: {exit:?}\n{}",
            std::fs::read_to_string(&self.operator_log).unwrap_or_default()
        );
    }
}

/// Running, with the Ready condition True.
fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
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

/// A steady stream of sequential RPCs to echo agents over Kafka (not through a pod,
/// which may be the one being removed) while the runtime scales: every call must be
/// answered with its own data within [`CALL_BOUND`].
struct RpcStream {
    issued: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Duration>,
}

/// What a finished [`RpcStream`] saw.
struct StreamResult {
    issued: usize,
    answered: usize,
    failures: Vec<String>,
    slowest: Duration,
}

impl RpcStream {
    async fn start(system: &System) -> Self {
        let cfg = WorkerConfig::new(
            KafkaConfig::new(system.bootstrap.clone()),
            system.prefix.clone(),
            "e2e-caller",
        );
        let caller = KafkaAgentRuntime::start_client(cfg).await.unwrap();
        let issued = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (issued, answered, failures, stop) = (
                Arc::clone(&issued),
                Arc::clone(&answered),
                Arc::clone(&failures),
                Arc::clone(&stop),
            );
            async move {
                let mut slowest = Duration::ZERO;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let to = AgentId::new("echo", format!("k{}", i % 32)).unwrap();
                    let data = json!({ "i": i });
                    let options = SendOptions {
                        timeout: Some(CALL_BOUND),
                        ..SendOptions::default()
                    };
                    issued.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    // The runtime's own timeout ends a call at CALL_BOUND; the outer
                    // one only guards against a send that never returns at all.
                    let result = tokio::time::timeout(
                        CALL_BOUND + Duration::from_secs(5),
                        caller.send_payload(Payload::json("e2e.Ping", &data), &to, options),
                    )
                    .await;
                    slowest = slowest.max(started.elapsed());
                    match result {
                        Ok(Ok(Some(reply)))
                            if reply.decode_json::<Value>().ok().as_ref() == Some(&data) =>
                        {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.lock().unwrap().push(format!(
                            "call {i} to {to} after {:?}: {other:?}",
                            started.elapsed()
                        )),
                    }
                }
                let _ = caller.stop().await;
                slowest
            }
        });
        Self {
            issued,
            answered,
            failures,
            stop,
            task,
        }
    }

    /// Waits until `n` more calls have been answered.
    async fn wait_more(&self, n: usize, what: &str) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        wait_for(what, LONG, || async {
            (self.answered.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    async fn finish(self) -> StreamResult {
        self.stop.store(true, Ordering::Relaxed);
        let slowest = tokio::time::timeout(CALL_BOUND * 2, self.task)
            .await
            .expect("the stream's last call ends within its bound")
            .unwrap();
        let failures = self.failures.lock().unwrap().clone();
        StreamResult {
            issued: self.issued.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            failures,
            slowest,
        }
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
    if system.local.is_some() {
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
    if system.local.is_some() {
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
        operator_support::install_crds(&client).await;
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
