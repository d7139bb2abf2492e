//! The system under test of the end-to-end suite (`tests/e2e_suite.rs`): cluster
//! access, the requests a user makes (through the runtime's Service or to one pod) and
//! the waits on what Kubernetes reports; locally also the operator process and the node
//! agent it starts ([`local`]), and a steady RPC stream over Kafka ([`rpc_stream`]).
//!
//! Everything here panics with a message on failure, as the test body would.

mod endpoints;
mod local;
mod rpc_stream;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use switchboard_crds::{AgentRuntime, AgentSubscription};

pub use local::process_ids;
pub use rpc_stream::{RpcStream, StreamResult};

use crate::crds::{FIELD_MANAGER, install_crds};
use crate::env;
use crate::wait::wait_for;
use endpoints::{is_ready, pod_ip};
use local::Local;

/// Bound of every wait for pods, rollouts and topic deletion (image pulls on kind
/// take longer than local processes).
pub const LONG: Duration = Duration::from_secs(240);
/// Bound of one call of the RPC stream: a call not answered by then counts as hung.
pub const CALL_BOUND: Duration = Duration::from_secs(30);
/// Name of the suite's AgentRuntime (and of its Deployment, Service and ConfigMap stem).
pub const RUNTIME: &str = "e2e";
/// Port of the runtime's HTTP API.
pub const PORT: u16 = 8080;
/// Runtime image the local operator is told to use (the node agent runs the binary).
pub const LOCAL_IMAGE: &str = "ghcr.io/switchboard-dev/switchboard-runtime:e2e";

/// Where a request goes: the runtime's Service, or one pod.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// The runtime's Service.
    Service,
    /// One pod.
    Pod(&'a Pod),
}

/// The system under test: cluster access plus, locally, the operator process and the
/// node agent this suite started.
pub struct System {
    /// Client of the cluster.
    pub client: Client,
    /// The suite's namespace.
    pub ns: String,
    /// Topic prefix of the suite's AgentRuntime.
    pub prefix: String,
    /// Kafka bootstrap address (reachable from the runtime pods and from here).
    pub bootstrap: String,
    http: reqwest::Client,
    local: Option<Local>,
    started: Instant,
}

impl System {
    /// Connects to the cluster, installs the CRDs and creates a namespace; locally
    /// also starts the operator and a node agent (see [`env::external_cluster`]).
    pub async fn start() -> Self {
        env::init_test_logs();
        let client = env::kube_client().await;
        let bootstrap = env::kafka_bootstrap();
        let external = env::external_cluster();
        if !external {
            install_crds(&client, FIELD_MANAGER)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
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
                .expect("an HTTP client with a timeout"),
            local,
            started: Instant::now(),
        }
    }

    /// Logs a finished phase with the time since the start.
    pub fn phase(&self, what: &str) {
        eprintln!(
            "[e2e {:>6.1}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// The API of `K` in the suite's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The runtime image an AgentRuntime names on a real cluster:
    /// `SWITCHBOARD_E2E_IMAGE`, else [`LOCAL_IMAGE`].
    pub fn image() -> String {
        std::env::var("SWITCHBOARD_E2E_IMAGE").unwrap_or_else(|_| LOCAL_IMAGE.to_owned())
    }

    /// The agents of the suite's AgentRuntime (echo, counter, relay) plus `extra`.
    pub fn agents(extra: &[Value]) -> Value {
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
    pub async fn apply(&self, kind: &str, name: &str, spec: Value) {
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

    /// Status of condition `type_` of the suite's AgentRuntime.
    pub async fn runtime_condition(&self, type_: &str) -> Option<String> {
        let ar = self.api::<AgentRuntime>().get(RUNTIME).await.ok()?;
        ar.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status)
    }

    /// The registry id of subscription `name` once it is Ready.
    pub async fn subscription_id(&self, name: &str) -> Option<String> {
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
    pub async fn settled(&self, n: usize) -> Option<Vec<Pod>> {
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
    pub async fn wait_ready_replicas(&self, n: usize) -> Vec<Pod> {
        wait_for(
            &format!("{n} ready replicas of {RUNTIME} behind its Service"),
            LONG,
            || self.settled(n),
        )
        .await
    }

    /// Every pod of the runtime, terminating ones included.
    pub async fn runtime_pods(&self) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={RUNTIME}"));
        self.api::<Pod>()
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Pods that are Running and Ready and not being deleted.
    pub async fn serving_pods(&self) -> Vec<Pod> {
        self.runtime_pods()
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect()
    }

    /// A request to the runtime's HTTP API: (status, body). Locally straight to the
    /// address (a ready endpoint of the Service, or the pod's IP); on a real cluster
    /// through the API server's service or pod proxy.
    pub async fn request(
        &self,
        target: Target<'_>,
        method: http::Method,
        path: &str,
        ce_type: &str,
        body: Option<&Value>,
    ) -> (u16, String) {
        let body = body.map(|b| serde_json::to_vec(b).expect("a JSON value serialises"));
        if self.local.is_some() {
            let addr = match target {
                Target::Service => {
                    let endpoints = self.service_endpoints().await;
                    endpoints
                        .first()
                        .unwrap_or_else(|| panic!("Service {RUNTIME} has no ready endpoint"))
                        .clone()
                }
                Target::Pod(p) => format!(
                    "{}:{PORT}",
                    pod_ip(p).unwrap_or_else(|| panic!("pod {} has no IP", p.name_any()))
                ),
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
                .uri(uri.as_str())
                .header("ce-type", ce_type)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(body.unwrap_or_default()))
                .unwrap_or_else(|e| panic!("a request to {uri}: {e}"));
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
    pub async fn rpc(&self, agent: &str, ce_type: &str, data: Value) -> Value {
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
    pub async fn publish(&self, topic: &str, data: Value) {
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
    pub async fn pod_get(&self, pod: &Pod, path: &str) -> Value {
        let (status, body) = self
            .request(Target::Pod(pod), http::Method::GET, path, "", None)
            .await;
        assert_eq!(status, 200, "GET {path} on pod {}: {body}", pod.name_any());
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// Polls counter `key` by RPC until `events` events have reached it. Each RPC counts
    /// as well, so the events delivered are the count minus the RPCs made so far.
    pub async fn wait_counted(&self, key: &str, events: u64) {
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
                    let count = reply["count"].as_u64().unwrap_or_else(|| {
                        panic!("counter/{key} replied without a count: {reply}")
                    });
                    let delivered = count - polls;
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

    /// Sets the AgentRuntime's replicas through its scale subresource.
    pub async fn scale(&self, replicas: i32) {
        self.api::<AgentRuntime>()
            .patch_scale(
                RUNTIME,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .unwrap_or_else(|e| panic!("scale {RUNTIME} to {replicas}: {e}"));
    }

    /// Waits until none of `pids` runs any more (local mode; nothing to check on a
    /// real cluster, where the kubelet owns the containers).
    pub async fn wait_processes_gone(&self, pids: &[u32], what: &str) {
        for pid in pids {
            wait_for(&format!("{what}: process {pid} gone"), LONG, || async {
                (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
            })
            .await;
        }
    }

    /// Whether the suite runs the operator and the node agent itself (no external
    /// cluster).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Deletes the namespace; locally stops the node agent and the operator (both
    /// must stop cleanly).
    pub async fn stop(mut self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        if let Some(local) = self.local.take() {
            local.stop().await;
        }
    }
}
