//! A container as a local process: its own process group (so the whole tree is
//! signalled together), `PR_SET_PDEATHSIG=SIGKILL` (so a crashed agent leaves nothing
//! behind), a clean environment, stdout and stderr appended to its log file.
//!
//! The parent-death signal is set by `setpriv --pdeathsig KILL` (util-linux), which
//! then execs the program: the pid is the program's own, and the workspace forbids the
//! `unsafe` a `pre_exec` hook would need.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// The `PATH` a container gets when its image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment (nothing is inherited from the agent).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub dir: PathBuf,
    /// File stdout and stderr are appended to.
    pub log: PathBuf,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; `128 + signal` when killed by a signal, as a container runtime reports.
    pub code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
}

impl From<ExitStatus> for Exit {
    fn from(s: ExitStatus) -> Self {
        match (s.code(), s.signal()) {
            (Some(code), _) => Self { code, signal: None },
            (None, Some(sig)) => Self {
                code: 128 + sig,
                signal: Some(sig),
            },
            (None, None) => Self {
                code: 255,
                signal: None,
            },
        }
    }
}

/// A running container process.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pid: u32,
}

impl Process {
    /// Starts `spec`.
    ///
    /// # Errors
    /// When the log cannot be opened or the program cannot be started.
    pub fn spawn(spec: &ProcessSpec) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"])
            .arg(&spec.program)
            .args(&spec.args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", spec.program.display()))?;
        let pid = child.id().context("a just-started process has a pid")?;
        Ok(Self { child, pid })
    }

    /// Its pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for it to exit, then kills whatever it left in its group.
    pub async fn wait(&mut self) -> Exit {
        let exit = match self.child.wait().await {
            Ok(status) => status.into(),
            Err(_) => Exit {
                code: 255,
                signal: None,
            },
        };
        signal_group(self.pid, "KILL").await;
        exit
    }

    /// SIGTERM to the group, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        signal_group(self.pid, "TERM").await;
        if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
            return exit;
        }
        tracing::info!(
            pid = self.pid,
            ?grace,
            "still running after its grace period; SIGKILL"
        );
        signal_group(self.pid, "KILL").await;
        self.wait().await
    }
}

/// Sends `signal` (a name such as `TERM`) to process group `pgid`; a group that is
/// already gone is not an error.
async fn signal_group(pgid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(e) = status {
        tracing::warn!(pgid, signal, error = %e, "cannot run kill");
    }
}
