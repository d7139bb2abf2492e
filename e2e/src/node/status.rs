//! A pod's status as this node sees it, rendered the way kubelet reports it, and
//! written only when it changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// Now, to the second (what the API stores; keeps rendered statuses comparable).
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn time(t: Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

/// How a process ended, as `state.terminated` / `lastState.terminated` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// Exit code (`128 + signal` when signalled).
    pub exit_code: i32,
    /// Signal that killed it.
    pub signal: Option<i32>,
    /// `Completed` or `Error`.
    pub reason: &'static str,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Its pid.
    pub pid: u32,
}

impl Terminated {
    fn render(&self) -> Value {
        let mut v = json!({
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": time(self.started_at),
            "finishedAt": time(self.finished_at),
            "containerID": format!("process://{}", self.pid),
        });
        if let Some(s) = self.signal {
            v["signal"] = json!(s);
        }
        v
    }
}

/// A container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not running: `ContainerCreating`, `CrashLoopBackOff`, `CreateContainerConfigError`...
    Waiting {
        /// Kubelet's reason word.
        reason: &'static str,
        /// Details.
        message: Option<String>,
    },
    /// Running as `pid` since `started_at`.
    Running {
        /// Its pid.
        pid: u32,
        /// When it started.
        started_at: Timestamp,
    },
    /// Ended for good (the restart policy starts it no more).
    Terminated(Terminated),
}

/// One container of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Image as the spec names it.
    pub image: String,
    /// What really runs for the image (`process://<program>`).
    pub image_id: String,
    /// Current state.
    pub state: ContainerState,
    /// The previous run's end.
    pub last_terminated: Option<Terminated>,
    /// Passing its readiness probe (or running, without one).
    pub ready: bool,
    /// Restarts so far.
    pub restart_count: i32,
}

impl ContainerView {
    /// A container about to be created.
    pub fn new(name: &str, image: &str, image_id: String) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id,
            state: ContainerState::Waiting {
                reason: "ContainerCreating",
                message: None,
            },
            last_terminated: None,
            ready: false,
            restart_count: 0,
        }
    }

    fn render(&self) -> Value {
        let (state, id, started) = match &self.state {
            ContainerState::Waiting { reason, message } => {
                let mut w = json!({ "reason": reason });
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                (json!({ "waiting": w }), None, false)
            }
            ContainerState::Running { pid, started_at } => (
                json!({ "running": { "startedAt": time(*started_at) } }),
                Some(*pid),
                true,
            ),
            ContainerState::Terminated(t) => {
                (json!({ "terminated": t.render() }), Some(t.pid), false)
            }
        };
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": state,
            "lastState": self.last_terminated.as_ref().map_or(json!({}), |t| json!({ "terminated": t.render() })),
            "ready": self.ready,
            "started": started,
            "restartCount": self.restart_count,
        });
        if let Some(pid) = id {
            v["containerID"] = json!(format!("process://{pid}"));
        }
        v
    }
}

/// The whole pod as this node sees it.
#[derive(Debug, Clone)]
pub struct PodView {
    /// The pod's loopback IP.
    pub pod_ip: String,
    /// When this node took the pod.
    pub start_time: Timestamp,
    /// Its containers, in spec order.
    pub containers: Vec<ContainerView>,
    conditions: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl PodView {
    /// A pod just taken; `scheduled_at` is its `PodScheduled` transition (set by the
    /// Binding), kept so the condition does not appear to change.
    pub fn new(pod_ip: String, containers: Vec<ContainerView>, scheduled_at: Timestamp) -> Self {
        let now = now();
        let conditions = BTreeMap::from([
            ("PodScheduled", (true, scheduled_at)),
            ("PodReadyToStartContainers", (true, now)),
            ("Initialized", (true, now)),
            ("ContainersReady", (false, now)),
            ("Ready", (false, now)),
        ]);
        Self {
            pod_ip,
            start_time: now,
            containers,
            conditions,
        }
    }

    /// `Pending`, `Running`, `Succeeded` or `Failed`, by kubelet's rules.
    pub fn phase(&self) -> &'static str {
        let all_done = self
            .containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Terminated(_)));
        if all_done {
            let all_ok = self
                .containers
                .iter()
                .all(|c| matches!(&c.state, ContainerState::Terminated(t) if t.exit_code == 0));
            return if all_ok { "Succeeded" } else { "Failed" };
        }
        let started = self.containers.iter().any(|c| {
            matches!(c.state, ContainerState::Running { .. }) || c.last_terminated.is_some()
        });
        if started { "Running" } else { "Pending" }
    }

    /// The status to report, conditions' transition times updated.
    pub fn render(&mut self) -> Value {
        let ready = self.phase() == "Running" && self.containers.iter().all(|c| c.ready);
        let now = now();
        for kind in ["ContainersReady", "Ready"] {
            let entry = self.conditions.entry(kind).or_insert((ready, now));
            if entry.0 != ready {
                *entry = (ready, now);
            }
        }
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|(kind, (status, at))| {
                json!({
                    "type": kind,
                    "status": if *status { "True" } else { "False" },
                    "lastProbeTime": null,
                    "lastTransitionTime": time(*at),
                })
            })
            .collect();
        json!({
            "phase": self.phase(),
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{ "ip": "127.0.0.1" }],
            "podIP": self.pod_ip,
            "podIPs": [{ "ip": self.pod_ip }],
            "startTime": time(self.start_time),
            "containerStatuses": self.containers.iter().map(ContainerView::render).collect::<Vec<_>>(),
        })
    }
}

/// `lastTransitionTime` of the pod's `PodScheduled` condition, if set.
pub fn scheduled_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Writes a pod's status through the status subresource, skipping unchanged ones.
pub struct StatusWriter {
    api: Api<Pod>,
    name: String,
    last: Option<Value>,
    writes: Arc<AtomicU64>,
}

impl StatusWriter {
    /// A writer for pod `name`; every write counts in `writes`.
    pub fn new(api: Api<Pod>, name: &str, writes: Arc<AtomicU64>) -> Self {
        Self {
            api,
            name: name.to_owned(),
            last: None,
            writes,
        }
    }

    /// Writes `status` unless it is what was last written. Returns false when the
    /// write failed (the caller retries later).
    pub async fn write(&mut self, status: Value) -> bool {
        if self.last.as_ref() == Some(&status) {
            return true;
        }
        let patch = Patch::Merge(json!({ "status": status }));
        self.writes.fetch_add(1, Ordering::Relaxed);
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %self.name, phase = %status["phase"], "status written");
                self.last = Some(status);
                true
            }
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "cannot write pod status");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: ContainerState, last: bool) -> PodView {
        let mut c = ContainerView::new("runtime", "img", "process:///bin/x".into());
        c.state = state;
        if last {
            c.last_terminated = Some(Terminated {
                exit_code: 1,
                signal: None,
                reason: "Error",
                started_at: now(),
                finished_at: now(),
                pid: 7,
            });
        }
        PodView::new("127.0.1.2".into(), vec![c], now())
    }

    #[test]
    fn phase_follows_kubelet() {
        let waiting = ContainerState::Waiting {
            reason: "CrashLoopBackOff",
            message: None,
        };
        assert_eq!(view(waiting.clone(), false).phase(), "Pending");
        assert_eq!(view(waiting, true).phase(), "Running");
        let done = |code| {
            ContainerState::Terminated(Terminated {
                exit_code: code,
                signal: None,
                reason: "Completed",
                started_at: now(),
                finished_at: now(),
                pid: 1,
            })
        };
        assert_eq!(view(done(0), false).phase(), "Succeeded");
        assert_eq!(view(done(2), false).phase(), "Failed");
    }

    #[test]
    fn ready_needs_running_ready_containers_and_renders_stably() {
        let running = ContainerState::Running {
            pid: 42,
            started_at: now(),
        };
        let mut v = view(running, false);
        let first = v.render();
        assert!(first["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Initialized" && c["status"] == "True")
        }));
        assert!(first["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "False")
        }));
        assert_eq!(
            v.render(),
            first,
            "an unchanged pod renders the same status"
        );
        v.containers[0].ready = true;
        let ready = v.render();
        assert_eq!(ready["containerStatuses"][0]["containerID"], "process://42");
        assert!(
            ready["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["status"] == "True"))
        );
    }
}
