//! The agent's main loop: watch pods, bind the ones it may run, give each of its pods
//! a task, and stop them all when told.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ipam::PodIps;
use super::pod::{PodContext, run_pod};
use super::registration::NodeHandle;
use super::{NodeAgentConfig, Stats};

/// Extra time, beyond the pods' shutdown grace, the agent waits for its pod tasks.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// A node agent; see the [module docs](super).
pub struct NodeAgent {
    client: Client,
    config: Arc<NodeAgentConfig>,
    stats: Arc<Stats>,
}

struct Supervised {
    updates: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
}

impl NodeAgent {
    /// An agent for `config`, not started.
    pub fn new(client: Client, config: NodeAgentConfig) -> Self {
        Self {
            client,
            config: Arc::new(config),
            stats: Arc::default(),
        }
    }

    /// Counters of what it did (shared; readable while it runs).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Registers the node and runs pods until `shutdown` is cancelled; then stops every
    /// pod's processes, marks the node NotReady and returns.
    ///
    /// # Errors
    /// When the node cannot be registered or the pod watch ends.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut node = NodeHandle::register(self.client.clone(), &self.config).await?;
        // The node is kept alive until every pod task has ended, so pods are never
        // seen on an unreachable node while they stop.
        let result = tokio::select! {
            result = self.watch_pods(shutdown) => result,
            never = node.keep_alive(&self.config) => match never {},
        };
        if let Err(e) = node.mark_not_ready().await {
            tracing::warn!(error = format!("{e:#}"), "cannot mark the node NotReady");
        }
        tracing::info!(
            node = %self.config.node_name,
            status_writes = self.stats.status_writes(),
            "node agent stopped"
        );
        result
    }

    async fn watch_pods(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pods_stop = CancellationToken::new();
        let api: Api<Pod> = match self.config.namespaces.as_slice() {
            [one] => Api::namespaced(self.client.clone(), one),
            _ => Api::all(self.client.clone()),
        };
        let ctx = Arc::new(PodContext {
            client: self.client.clone(),
            config: self.config.clone(),
            ips: PodIps::new(self.config.pod_cidr),
            http: reqwest::Client::new(),
            stats: self.stats.clone(),
        });
        let (reader, writer) = reflector::store();
        let events = reflector::reflector(
            writer,
            watcher::watcher(api.clone(), watcher::Config::default()),
        )
        .default_backoff();
        tokio::pin!(events);
        let (done_tx, mut done_rx) = mpsc::channel::<String>(64);
        let mut pods: HashMap<String, Supervised> = HashMap::new();
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                Some(uid) = done_rx.recv() => { pods.remove(&uid); }
                event = events.next() => match event {
                    None => break Err(anyhow::anyhow!("the pod watch ended")),
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch error (retrying)"),
                    Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                        self.on_pod(pod, &mut pods, &ctx, &done_tx, &pods_stop).await;
                    }
                    Some(Ok(Event::Delete(pod))) => gone(&mut pods, &pod.uid().unwrap_or_default()),
                    Some(Ok(Event::InitDone)) => forget_vanished(&mut pods, &reader),
                    Some(Ok(Event::Init)) => {}
                },
            }
        };
        pods_stop.cancel();
        let limit = self.config.shutdown_grace + SHUTDOWN_SLACK;
        // The senders stay alive until the tasks end: a closed channel means "pod gone".
        let (senders, tasks): (Vec<_>, Vec<_>) =
            pods.into_values().map(|s| (s.updates, s.task)).unzip();
        if tokio::time::timeout(limit, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!(?limit, "pods still stopping after the shutdown limit");
        }
        drop(senders);
        result
    }

    /// Binds `pod` if it is ours to take, or hands it to its task.
    async fn on_pod(
        &self,
        pod: Pod,
        pods: &mut HashMap<String, Supervised>,
        ctx: &Arc<PodContext>,
        done: &mpsc::Sender<String>,
        pods_stop: &CancellationToken,
    ) {
        if !self.takes(&pod) {
            return;
        }
        let uid = pod.uid().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        match node {
            None if pod.metadata.deletion_timestamp.is_none() => self.bind(&pod).await,
            Some(n) if n == self.config.node_name => {
                if let Some(s) = pods.get(&uid) {
                    s.updates.send_replace(Some(Arc::new(pod)));
                    return;
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Succeeded" | "Failed"))
                    && pod.metadata.deletion_timestamp.is_none()
                {
                    return;
                }
                let (updates, rx) = watch::channel(Some(Arc::new(pod)));
                let (ctx, done, stop) = (ctx.clone(), done.clone(), pods_stop.clone());
                let task_uid = uid.clone();
                let task = tokio::spawn(async move {
                    run_pod(ctx, rx, stop).await;
                    let _ = done.send(task_uid).await;
                });
                pods.insert(uid, Supervised { updates, task });
            }
            _ => {}
        }
    }

    /// Whether this agent runs `pod`: namespace served, every image matching, and no
    /// init containers (not supported).
    fn takes(&self, pod: &Pod) -> bool {
        let Some(spec) = &pod.spec else { return false };
        self.config
            .serves_namespace(&pod.namespace().unwrap_or_default())
            && !spec.containers.is_empty()
            && spec.init_containers.as_ref().is_none_or(Vec::is_empty)
            && spec.containers.iter().all(|c| {
                c.image
                    .as_deref()
                    .is_some_and(|i| self.config.runs_image(i))
            })
    }

    async fn bind(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": { "name": pod.name_any(), "namespace": ns, "uid": pod.uid() },
            "target": { "apiVersion": "v1", "kind": "Node", "name": self.config.node_name },
        });
        let result: Result<serde_json::Value, _> = api
            .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
            .await
            .context("binding");
        match result {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{}", pod.name_any()), node = %self.config.node_name, "pod bound")
            }
            // Another agent (or an earlier event) bound it first.
            Err(e) => {
                tracing::debug!(pod = %pod.name_any(), error = format!("{e:#}"), "cannot bind")
            }
        }
    }
}

/// The pod left the API: its task stops the processes.
fn gone(pods: &mut HashMap<String, Supervised>, uid: &str) {
    if let Some(s) = pods.get(uid) {
        s.updates.send_replace(None);
    }
}

/// After a re-list: pods deleted while the watch was down are gone too.
fn forget_vanished(pods: &mut HashMap<String, Supervised>, reader: &Store<Pod>) {
    let present: HashSet<String> = reader.state().iter().filter_map(|p| p.uid()).collect();
    let vanished: Vec<String> = pods
        .keys()
        .filter(|uid| !present.contains(*uid))
        .cloned()
        .collect();
    for uid in vanished {
        gone(pods, &uid);
    }
}
