//! The Node object and its liveness: registration, the Lease in `kube-node-lease`
//! renewed every few seconds, and the Ready condition's heartbeat. Without them the
//! controller-manager's node lifecycle controller marks the node unreachable, taints it
//! and evicts its pods.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::NodeAgentConfig;
use super::status::now;

/// Field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "switchboard-node-agent";
/// Namespace of node leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Lease duration kubelet uses.
const LEASE_SECONDS: i32 = 40;
/// Pods a node admits (kubelet's default).
const MAX_PODS: &str = "110";

/// The registered node; keeps the Ready condition's transition time stable.
pub struct NodeHandle {
    nodes: Api<Node>,
    leases: Api<Lease>,
    name: String,
    uid: String,
    ready_since: Timestamp,
}

impl NodeHandle {
    /// Creates or updates the Node (labels, `spec.podCIDR`), marks it Ready and takes
    /// its Lease.
    ///
    /// # Errors
    /// When the API refuses (for instance an existing node with another podCIDR).
    pub async fn register(client: Client, config: &NodeAgentConfig) -> anyhow::Result<Self> {
        let nodes: Api<Node> = Api::all(client.clone());
        let name = config.node_name.clone();
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": arch(),
                    "switchboard.dev/node-agent": "true",
                },
            },
            "spec": { "podCIDR": config.pod_cidr.to_string(), "podCIDRs": [config.pod_cidr.to_string()] },
        });
        let applied = nodes
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&node),
            )
            .await
            .map_err(|e| anyhow::anyhow!("registering node {name}: {e}"))?;
        let mut handle = Self {
            nodes,
            leases: Api::namespaced(client, LEASE_NAMESPACE),
            uid: applied.uid().unwrap_or_default(),
            name,
            ready_since: now(),
        };
        handle
            .write_status(true, "node agent is posting ready status")
            .await?;
        handle.renew_lease().await?;
        tracing::info!(node = %handle.name, pod_cidr = %config.pod_cidr, "node registered");
        Ok(handle)
    }

    /// Renews the Lease and refreshes the heartbeat, forever (the caller drops it);
    /// API errors are logged and retried at the next tick.
    pub async fn keep_alive(&mut self, config: &NodeAgentConfig) -> std::convert::Infallible {
        let mut lease = tokio::time::interval(config.lease_interval);
        let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
        loop {
            tokio::select! {
                _ = lease.tick() => if let Err(e) = self.renew_lease().await {
                    tracing::warn!(node = %self.name, error = format!("{e:#}"), "cannot renew the node lease");
                },
                _ = heartbeat.tick() => if let Err(e) = self.write_status(true, "node agent is posting ready status").await {
                    tracing::warn!(node = %self.name, error = format!("{e:#}"), "cannot refresh the node status");
                },
            }
        }
    }

    /// Marks the node NotReady (the agent stops).
    ///
    /// # Errors
    /// When the API refuses.
    pub async fn mark_not_ready(&mut self) -> anyhow::Result<()> {
        self.ready_since = now();
        self.write_status(false, "node agent stopped").await
    }

    async fn renew_lease(&self) -> anyhow::Result<()> {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": LEASE_NAMESPACE,
                "ownerReferences": [{ "apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid }],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": serde_json::to_value(MicroTime(Timestamp::now()))?,
            },
        });
        self.leases
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await?;
        Ok(())
    }

    async fn write_status(&mut self, ready: bool, message: &str) -> anyhow::Result<()> {
        let capacity = json!({ "cpu": cpus(), "memory": memory(), "pods": MAX_PODS });
        let status = json!({
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [{
                    "type": "Ready",
                    "status": if ready { "True" } else { "False" },
                    "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
                    "message": message,
                    "lastHeartbeatTime": serde_json::to_value(Time(now()))?,
                    "lastTransitionTime": serde_json::to_value(Time(self.ready_since))?,
                }],
                "addresses": [
                    { "type": "InternalIP", "address": "127.0.0.1" },
                    { "type": "Hostname", "address": self.name },
                ],
                "daemonEndpoints": { "kubeletEndpoint": { "Port": 0 } },
                "nodeInfo": node_info(),
            },
        });
        self.nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn cpus() -> String {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .to_string()
}

fn memory() -> String {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_else(|| "0".into());
    format!("{kib}Ki")
}

fn node_info() -> Value {
    json!({
        "architecture": arch(),
        "operatingSystem": "linux",
        "osImage": "local processes",
        "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "containerRuntimeVersion": "process://switchboard-node-agent",
        "kubeletVersion": format!("v{}-switchboard-node-agent", env!("CARGO_PKG_VERSION")),
        "kubeProxyVersion": "",
        "machineID": "",
        "systemUUID": "",
        "bootID": "",
    })
}
