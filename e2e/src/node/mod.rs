//! A node agent: "pods as processes" for the test and demo cluster.
//!
//! The cluster `e2e/infra/cluster.sh` starts is a real etcd, kube-apiserver and
//! kube-controller-manager, with no kubelet, scheduler or container runtime. This
//! module plays the node: it registers a Node, keeps it alive, binds the pods it can
//! run, runs each as local processes, and reports their status like kubelet. The
//! operator's Deployments then behave as on a real cluster: pods become Ready, the
//! Deployment reports available replicas, rollouts and deletions complete.
//!
//! # What it does
//! - **Node**: `--node-name`, `spec.podCIDR`, capacity, InternalIP 127.0.0.1, a Ready
//!   condition whose heartbeat is refreshed, and a Lease in `kube-node-lease` renewed
//!   every 10 s, so the node lifecycle controller never taints it unreachable.
//! - **Scheduling**: the agent binds pending pods itself (Binding subresource) instead
//!   of running kube-scheduler. It takes only pods whose every container image matches
//!   the [`ImagePattern`] (default `*switchboard-runtime`: any registry and tag) and, if
//!   namespaces are given, only in those. Why: there is one node, so there is nothing to
//!   choose; it avoids building and running another component; and filtering by
//!   namespace lets several agents (one per test) share a cluster without touching each
//!   other's pods. Pods with other images stay Pending and unbound. Images other than
//!   the runtime's can be run from an [`ImageRoot`], a directory standing in for the
//!   image's filesystem (`--image-root PATTERN=DIR`: `DIR/bin` first in `PATH`,
//!   `/app/...` paths rewritten to `DIR/app/...`); their containers need a `command`.
//! - **Containers**: `command[0] == "switchboard-runtime"` (or no command: the image's
//!   entrypoint) runs [`NodeAgentConfig::runtime_bin`]; args as given. The environment
//!   is built like kubelet's (`envFrom`, `env` with `value`, `configMapKeyRef`,
//!   `secretKeyRef`, `fieldRef` on `metadata.name|namespace|uid`, `status.podIP|hostIP`,
//!   `spec.nodeName`; `$(VAR)` expansion) and nothing is inherited from the agent
//!   except a default `PATH`. Stdout and stderr go to `<pod dir>/<container>.log`.
//! - **Volumes**: ConfigMap and Secret volumes are written to
//!   `<state-dir>/pods/<ns>_<name>_<uid>/volumes/<volume>/` when the pod starts (not
//!   synced afterwards), emptyDir is an empty directory there. There is no mount
//!   namespace, so **any argument or env value that starts with a `mountPath` is
//!   rewritten** to the materialised directory (`/etc/switchboard/runtime.yaml` becomes
//!   `<pod dir>/volumes/config/runtime.yaml`); a mount at `/tmp` also sets `TMPDIR`.
//!   Paths inside files (for example a CA path in the config) are not rewritten.
//! - **Networking**: each pod gets its own loopback address from `--pod-cidr` (Linux
//!   routes all of 127/8 to `lo`), reported as `status.podIP`; the runtime is told to
//!   bind there with `SWITCHBOARD_HTTP_LISTEN=<podIP>:<port named http>`. So a pod is
//!   reachable at `podIP:8080` from this machine, like a real pod IP.
//! - **Status**: Pending -> Running with container statuses (`containerID` is
//!   `process://<pid>`), PodScheduled/Initialized/ContainersReady/Ready conditions;
//!   readiness from the `httpGet` readiness probe (period and thresholds honoured, at
//!   least 1 s initial delay), liveness failures restart the container. Written with
//!   the status subresource only when it changed ([`Stats::status_writes`] counts).
//! - **Restarts** per `restartPolicy`, first at once, then with exponential back-off
//!   ([`NodeAgentConfig::backoff_initial`] doubling to `backoff_max`).
//! - **Deletion**: on `deletionTimestamp`, SIGTERM to the process group, SIGKILL after
//!   `deletionGracePeriodSeconds`, then the pod is deleted with grace 0 (kubelet's last
//!   step) and its directory removed. Pods that vanish (force-deleted) are stopped too.
//! - **Its own end**: when the token passed to [`NodeAgent::run`] is cancelled (the
//!   binary: SIGTERM/SIGINT) every pod's processes get SIGTERM (bounded by
//!   [`NodeAgentConfig::shutdown_grace`]), the Node is marked NotReady, and `run`
//!   returns. Processes run in their own process group with `PR_SET_PDEATHSIG=SIGKILL`,
//!   so even a crashed agent leaves none behind.
//!
//! # Use
//! ```no_run
//! # async fn demo(client: kube::Client) -> anyhow::Result<()> {
//! use switchboard_e2e::node::{NodeAgent, NodeAgentConfig};
//! let mut config = NodeAgentConfig::new("node-1", "127.0.1.0/24", "/path/switchboard-runtime", "/tmp/node-1")?;
//! config.namespaces = vec!["demo".into()];
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let agent = NodeAgent::new(client, config);
//! let stats = agent.stats();
//! agent.run(shutdown.clone()).await?; // until `shutdown.cancel()`
//! # let _ = stats; Ok(()) }
//! ```
//! The binary is `switchboard-node-agent --kubeconfig F --node-name N --pod-cidr CIDR
//! --runtime-bin PATH --state-dir DIR [--namespace NS]... [--image-pattern P]
//! [--image-root PATTERN=DIR]... [--pid-file F]`.

mod agent;
mod config;
mod container;
mod env;
mod ipam;
mod pod;
mod probe;
mod process;
mod registration;
mod status;
mod volumes;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use agent::NodeAgent;
pub use config::{DEFAULT_IMAGE_PATTERN, ImagePattern, ImageRoot, NodeAgentConfig, test_pod_cidr};
pub use process::Exit;

/// How many exits [`Stats`] remembers.
const EXITS_KEPT: usize = 256;

/// What the agent did, for tests and logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Pod status writes made (each a PATCH of the status subresource).
    writes: std::sync::Arc<AtomicU64>,
    exits: Mutex<Vec<ContainerExit>>,
}

/// One ended container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerExit {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The process id.
    pub pid: u32,
    /// How it ended.
    pub exit: Exit,
    /// True when the agent stopped it (pod deleted, agent stopping), false when it
    /// exited or failed its liveness probe on its own.
    pub stopped: bool,
}

impl Stats {
    /// Status writes so far.
    pub fn status_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The last exits, oldest first.
    pub fn exits(&self) -> Vec<ContainerExit> {
        self.exits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record_exit(&self, pod: &str, pid: u32, exit: Exit, stopped: bool) {
        let mut exits = self
            .exits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if exits.len() == EXITS_KEPT {
            exits.remove(0);
        }
        exits.push(ContainerExit {
            pod: pod.to_owned(),
            pid,
            exit,
            stopped,
        });
    }
}
