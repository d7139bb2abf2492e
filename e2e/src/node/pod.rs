//! One pod on this node: its directory, IP and volumes, one task per container, its
//! status, and its end (graceful deletion, force deletion, or the agent stopping).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::container::{ContainerRun, RestartPolicy};
use super::env::{Sources, container_env, expand, rewrite_mount_path};
use super::ipam::{PodIp, PodIps};
use super::probe::HttpProbe;
use super::process::{DEFAULT_PATH, ProcessSpec};
use super::status::{ContainerState, ContainerView, PodView, StatusWriter, now, scheduled_at};
use super::volumes::{materialise, mounts};
use super::{NodeAgentConfig, Stats};

/// The command a container image's entrypoint maps to on this machine.
const RUNTIME_COMMAND: &str = "switchboard-runtime";
/// Kubelet's default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Retry delay of a failed status write.
const STATUS_RETRY: Duration = Duration::from_secs(5);

/// What every pod task shares.
pub struct PodContext {
    /// API client.
    pub client: Client,
    /// The agent's settings.
    pub config: Arc<NodeAgentConfig>,
    /// Pod IPs.
    pub ips: PodIps,
    /// Probe client.
    pub http: reqwest::Client,
    /// Counters.
    pub stats: Arc<Stats>,
}

/// The latest pod object (`None` once it is gone from the API).
pub type PodUpdates = watch::Receiver<Option<Arc<Pod>>>;

enum End {
    /// `deletionTimestamp` set: stop, then remove the object.
    Deleted(Duration),
    /// The object is gone (force-deleted): stop.
    Gone(Duration),
    /// The agent stops: stop, keep the object.
    Shutdown(Duration),
}

/// `<state_dir>/pods/<ns>_<name>_<uid>`.
pub fn pod_dir(config: &NodeAgentConfig, pod: &Pod) -> PathBuf {
    config.state_dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod.metadata.deletion_grace_period_seconds.or(pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds));
    secs.map_or(DEFAULT_GRACE, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    })
}

/// Runs `pod` until it is deleted, gone, or `shutdown` is cancelled.
pub async fn run_pod(ctx: Arc<PodContext>, mut updates: PodUpdates, shutdown: CancellationToken) {
    let Some(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let dir = pod_dir(&ctx.config, &pod);
    let mut writer = StatusWriter::new(api.clone(), &pod.name_any(), ctx.stats.writes.clone());
    let end = if pod.metadata.deletion_timestamp.is_some() {
        // Terminating before this agent ran it (e.g. while the agent was down).
        End::Deleted(Duration::ZERO)
    } else if let Some(ip) = ctx.ips.allocate() {
        run_containers(&ctx, &pod, ip, &dir, &mut writer, &mut updates, &shutdown).await
    } else {
        tracing::error!(pod = %key, range = %ctx.config.pod_cidr, "no free pod IP");
        wait_for_end(&mut updates, &shutdown, &ctx.config).await
    };
    match end {
        End::Deleted(_) => {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&pod.name_any(), &dp).await {
                Ok(_) => tracing::info!(pod = %key, "pod deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %key, error = %e, "cannot finish deleting the pod"),
            }
            remove_dir(&dir);
        }
        End::Gone(_) => remove_dir(&dir),
        End::Shutdown(_) => {}
    }
}

fn remove_dir(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove pod directory");
    }
}

async fn wait_for_end(
    updates: &mut PodUpdates,
    shutdown: &CancellationToken,
    config: &NodeAgentConfig,
) -> End {
    loop {
        let current = updates.borrow_and_update().clone();
        match current {
            None => return End::Gone(DEFAULT_GRACE),
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                return End::Deleted(grace_of(&p));
            }
            Some(_) => {}
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return End::Shutdown(config.shutdown_grace),
            changed = updates.changed() => if changed.is_err() {
                return End::Gone(DEFAULT_GRACE);
            },
        }
    }
}

async fn run_containers(
    ctx: &PodContext,
    pod: &Pod,
    ip: PodIp,
    dir: &std::path::Path,
    writer: &mut StatusWriter,
    updates: &mut PodUpdates,
    shutdown: &CancellationToken,
) -> End {
    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let spec = pod.spec.clone().unwrap_or_default();
    let image_id = |image: &str| {
        let dir = ctx
            .config
            .image_root(image)
            .map_or(&ctx.config.runtime_bin, |r| &r.dir);
        format!("process://{}", dir.display())
    };
    // A pod that ran before (the agent restarted) keeps counting its restarts.
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let views = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.as_deref().unwrap_or_default();
            let mut view = ContainerView::new(&c.name, image, image_id(image));
            if let Some(p) = previous.iter().find(|p| p.name == c.name) {
                let ran = p.container_id.is_some()
                    || p.last_state
                        .as_ref()
                        .is_some_and(|l| l.terminated.is_some());
                view.restart_count = p.restart_count + i32::from(ran);
            }
            view
        })
        .collect();
    let view = Arc::new(Mutex::new(PodView::new(
        ip.addr().to_string(),
        views,
        scheduled_at(pod).unwrap_or_else(now),
    )));
    let changed = Arc::new(Notify::new());
    let render = |view: &Mutex<PodView>| {
        view.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .render()
    };
    writer.write(render(&view)).await;

    // Set up until it works (a ConfigMap may be created after the pod), like kubelet's
    // CreateContainerConfigError retries.
    let specs = loop {
        match prepare(ctx, pod, &ip, dir).await {
            Ok(specs) => break specs,
            Err(e) => {
                tracing::warn!(pod = %key, error = format!("{e:#}"), "cannot set the pod up");
                {
                    let mut v = view
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for c in &mut v.containers {
                        c.state = ContainerState::Waiting {
                            reason: "CreateContainerConfigError",
                            message: Some(format!("{e:#}")),
                        };
                    }
                }
                writer.write(render(&view)).await;
                tokio::select! {
                    () = tokio::time::sleep(ctx.config.backoff_initial) => {}
                    end = wait_for_end(updates, shutdown, &ctx.config) => return end,
                }
            }
        }
    };

    let (stop_tx, stop_rx) = watch::channel(None);
    let policy = RestartPolicy::parse(spec.restart_policy.as_deref());
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (container, process)) in spec.containers.iter().zip(specs).enumerate() {
        let ports = container.ports.clone().unwrap_or_default();
        let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| HttpProbe::resolve(p, ip.addr(), &ports))
        };
        let run = ContainerRun {
            index,
            pod: key.clone(),
            spec: process,
            readiness: probe(&container.readiness_probe),
            liveness: probe(&container.liveness_probe),
            restart_policy: policy,
            grace: grace_of(pod),
            backoff: (ctx.config.backoff_initial, ctx.config.backoff_max),
            view: view.clone(),
            changed: changed.clone(),
            http: ctx.http.clone(),
            stats: ctx.stats.clone(),
        };
        tasks.spawn(run.run(stop_rx.clone()));
    }

    let mut retry = false;
    let end = loop {
        tokio::select! {
            () = changed.notified() => retry = !writer.write(render(&view)).await,
            () = tokio::time::sleep(STATUS_RETRY), if retry => retry = !writer.write(render(&view)).await,
            end = wait_for_end(updates, shutdown, &ctx.config) => break end,
        }
    };
    let grace = match &end {
        End::Deleted(g) | End::Gone(g) => *g,
        End::Shutdown(g) => (*g).min(grace_of(pod)),
    };
    tracing::info!(pod = %key, ?grace, "stopping the pod's containers");
    stop_tx.send_replace(Some(grace));
    while tasks.join_next().await.is_some() {}
    if matches!(end, End::Shutdown(_)) {
        // Not a terminal phase: a restarted agent runs the pod again (as kubelet does
        // after a reboot) instead of the ReplicaSet replacing a "completed" pod.
        let status = {
            let mut v = view
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for c in &mut v.containers {
                if let ContainerState::Terminated(t) = &c.state {
                    c.last_terminated = Some(t.clone());
                }
                c.state = ContainerState::Waiting {
                    reason: "NodeAgentStopped",
                    message: Some(
                        "the node agent stopped; the pod runs again when it starts".into(),
                    ),
                };
                c.ready = false;
            }
            v.render()
        };
        writer.write(status).await;
    }
    end
}

/// Materialises the volumes and builds each container's process.
async fn prepare(
    ctx: &PodContext,
    pod: &Pod,
    ip: &PodIp,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<ProcessSpec>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut sources = Sources::new(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    materialise(pod, &ip.addr().to_string(), dir, &mut sources).await?;
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut specs = Vec::new();
    for c in &containers {
        specs.push(process_spec(ctx, pod, c, ip, dir, &mut sources).await?);
    }
    Ok(specs)
}

async fn process_spec(
    ctx: &PodContext,
    pod: &Pod,
    c: &Container,
    ip: &PodIp,
    dir: &std::path::Path,
    sources: &mut Sources,
) -> anyhow::Result<ProcessSpec> {
    let image = c.image.as_deref().unwrap_or_default();
    let root = ctx.config.image_root(image);
    let mut mounts = mounts(c, dir);
    if let Some(root) = root {
        mounts.extend(root.mounts());
    }
    let mut env = container_env(pod, c, &ip.addr().to_string(), sources).await?;
    let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
    argv.extend(c.args.clone().unwrap_or_default());
    let argv: Vec<String> = argv
        .iter()
        .map(|a| rewrite_mount_path(&expand(a, &env), &mounts))
        .collect();
    let has_command = c.command.as_ref().is_some_and(|cmd| !cmd.is_empty());
    if root.is_some() && !has_command {
        anyhow::bail!(
            "container {}: image {image} runs from an image root here, which has no entrypoint: set command",
            c.name
        );
    }
    let (program, args) = match argv.split_first() {
        // No command: the image's entrypoint, which is the runtime.
        _ if !has_command => (ctx.config.runtime_bin.clone(), argv.clone()),
        Some((first, rest))
            if root.is_none()
                && (first == RUNTIME_COMMAND || first.ends_with("/switchboard-runtime")) =>
        {
            (ctx.config.runtime_bin.clone(), rest.to_vec())
        }
        Some((first, rest)) => (PathBuf::from(first), rest.to_vec()),
        None => (ctx.config.runtime_bin.clone(), Vec::new()),
    };
    for (_, value) in &mut env {
        *value = rewrite_mount_path(value, &mounts);
    }
    // After the rewriting: the root is a path on this machine, not in the container
    // (a root under /tmp would otherwise be taken for the pod's /tmp volume).
    if let Some(root) = root
        && !env.iter().any(|(k, _)| k == "PATH")
    {
        env.insert(
            0,
            (
                "PATH".into(),
                format!("{}:{DEFAULT_PATH}", root.dir.join("bin").display()),
            ),
        );
    }
    if let Some(port) = http_port(c) {
        env.retain(|(k, _)| k != "SWITCHBOARD_HTTP_LISTEN");
        env.push((
            "SWITCHBOARD_HTTP_LISTEN".into(),
            format!("{}:{port}", ip.addr()),
        ));
    }
    if let Some((_, tmp)) = mounts
        .iter()
        .find(|(m, _)| m.trim_end_matches('/') == "/tmp")
    {
        env.push(("TMPDIR".into(), tmp.display().to_string()));
    }
    env.push(("HOSTNAME".into(), pod.name_any()));
    Ok(ProcessSpec {
        program,
        args,
        env,
        dir: dir.to_path_buf(),
        log: dir.join(format!("{}.log", c.name)),
    })
}

/// The container port the runtime's HTTP API gets: the one named `http`, else the first.
fn http_port(c: &Container) -> Option<i32> {
    let ports = c.ports.as_deref()?;
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| ports.first())
        .map(|p| p.container_port)
}
