//! One container's life: start the process, probe it, restart it per the pod's
//! `restartPolicy` with kubelet's exponential back-off, stop it when told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Stats;
use super::probe::{HttpProbe, ProbeResult};
use super::process::{Exit, Process, ProcessSpec};
use super::status::{ContainerState, ContainerView, PodView, Terminated, now};

/// `restartPolicy` of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit.
    Always,
    /// Restart after a failure.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// From the spec's string (`Always` when unset or unknown).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    fn restarts(self, exit: Exit) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit.code != 0,
            Self::Never => false,
        }
    }
}

/// The stop request a container gets: `Some(grace)` once the pod is going away.
pub type StopSignal = watch::Receiver<Option<Duration>>;

/// Everything one container needs to run.
pub struct ContainerRun {
    /// Position in [`PodView::containers`].
    pub index: usize,
    /// Namespace/name of the pod, for logs.
    pub pod: String,
    /// What to start.
    pub spec: ProcessSpec,
    /// Readiness probe, if any (without one the container is ready while running).
    pub readiness: Option<HttpProbe>,
    /// Liveness probe, if any.
    pub liveness: Option<HttpProbe>,
    /// When a failed process is started again.
    pub restart_policy: RestartPolicy,
    /// Grace of a restart after a failed liveness probe.
    pub grace: Duration,
    /// First and longest restart delays.
    pub backoff: (Duration, Duration),
    /// The pod's shared view; changes are announced on `changed`.
    pub view: Arc<Mutex<PodView>>,
    /// Wakes the pod's status writer.
    pub changed: Arc<Notify>,
    /// Probe client.
    pub http: reqwest::Client,
    /// Where exits are recorded.
    pub stats: Arc<Stats>,
}

enum Outcome {
    Exited(Exit),
    Unhealthy(Exit),
    Stopped(Exit),
}

impl ContainerRun {
    fn update(&self, f: impl FnOnce(&mut ContainerView)) {
        let mut view = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut view.containers[self.index]);
        drop(view);
        self.changed.notify_one();
    }

    /// Runs until `stop` asks for the end, then stops the process within the grace.
    pub async fn run(self, mut stop: StopSignal) {
        let mut failures = 0;
        loop {
            let started_at = now();
            let started = Instant::now();
            let mut process = match Process::spawn(&self.spec) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(pod = %self.pod, error = format!("{e:#}"), "cannot start container");
                    self.update(|c| {
                        c.state = ContainerState::Waiting {
                            reason: "RunContainerError",
                            message: Some(format!("{e:#}")),
                        };
                    });
                    failures += 1;
                    if wait_or_stop(self.delay_after(failures), &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            let pid = process.pid();
            tracing::info!(pod = %self.pod, pid, program = %self.spec.program.display(), "container started");
            self.update(|c| {
                c.state = ContainerState::Running { pid, started_at };
                c.ready = self.readiness.is_none();
            });
            let outcome = self.supervise(&mut process, &mut stop).await;
            let (exit, stopped, unhealthy) = match outcome {
                Outcome::Exited(e) => (e, false, false),
                Outcome::Unhealthy(e) => (e, false, true),
                Outcome::Stopped(e) => (e, true, false),
            };
            tracing::info!(pod = %self.pod, pid, code = exit.code, signal = ?exit.signal, stopped, unhealthy, "container exited");
            self.stats.record_exit(&self.pod, pid, exit, stopped);
            let terminated = Terminated {
                exit_code: exit.code,
                signal: exit.signal,
                reason: if exit.code == 0 { "Completed" } else { "Error" },
                started_at,
                finished_at: now(),
                pid,
            };
            if stopped || !(unhealthy || self.restart_policy.restarts(exit)) {
                self.update(|c| {
                    c.state = ContainerState::Terminated(terminated);
                    c.ready = false;
                });
                if !stopped {
                    wait_or_stop(Duration::MAX, &mut stop).await;
                }
                return;
            }
            // Kubelet forgets the back-off of a container that ran long enough.
            if started.elapsed() > self.backoff.1 * 2 {
                failures = 0;
            }
            failures += 1;
            let delay = self.delay_after(failures);
            self.update(|c| {
                c.state = ContainerState::Waiting {
                    reason: "CrashLoopBackOff",
                    message: Some(format!("back-off {delay:?} restarting failed container")),
                };
                c.ready = false;
                c.last_terminated = Some(terminated);
                c.restart_count += 1;
            });
            if wait_or_stop(delay, &mut stop).await {
                return;
            }
        }
    }

    /// The delay before the next start after `failures` failures in a row: none for
    /// the first (as kubelet), then the initial back-off, doubling up to the cap.
    fn delay_after(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(failures - 2);
        self.backoff.0.saturating_mul(factor).min(self.backoff.1)
    }

    async fn supervise(&self, process: &mut Process, stop: &mut StopSignal) -> Outcome {
        let mut ready_ticks = self.readiness.as_ref().map(ticker);
        let mut live_ticks = self.liveness.as_ref().map(ticker);
        let mut ready = self.readiness.as_ref().map(|p| ProbeResult::new(false, p));
        let mut live = self.liveness.as_ref().map(|p| ProbeResult::new(true, p));
        loop {
            tokio::select! {
                exit = process.wait() => return Outcome::Exited(exit),
                grace = stop_requested(stop) => return Outcome::Stopped(process.stop(grace).await),
                () = tick(&mut ready_ticks) => {
                    if let (Some(probe), Some(result)) = (&self.readiness, &mut ready) {
                        let was = result.passing();
                        let now_ready = result.record(probe.check(&self.http).await);
                        if was != now_ready {
                            tracing::info!(pod = %self.pod, ready = now_ready, "readiness changed");
                            self.update(|c| c.ready = now_ready);
                        }
                    }
                }
                () = tick(&mut live_ticks) => {
                    if let (Some(probe), Some(result)) = (&self.liveness, &mut live)
                        && !result.record(probe.check(&self.http).await)
                    {
                        tracing::info!(pod = %self.pod, url = %probe.url, "liveness probe failed; restarting");
                        return Outcome::Unhealthy(process.stop(self.grace).await);
                    }
                }
            }
        }
    }
}

fn ticker(p: &HttpProbe) -> Interval {
    let mut i = tokio::time::interval_at(Instant::now() + p.initial_delay, p.period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

async fn tick(i: &mut Option<Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves with the grace once a stop is requested (a dropped sender means stop now).
async fn stop_requested(stop: &mut StopSignal) -> Duration {
    loop {
        if let Some(grace) = *stop.borrow_and_update() {
            return grace;
        }
        if stop.changed().await.is_err() {
            return Duration::ZERO;
        }
    }
}

/// Sleeps `delay`; true when a stop came first.
async fn wait_or_stop(delay: Duration, stop: &mut StopSignal) -> bool {
    tokio::select! {
        () = sleep(delay) => false,
        _ = stop_requested(stop) => true,
    }
}

async fn sleep(d: Duration) {
    match Instant::now().checked_add(d) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
