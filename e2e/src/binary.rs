//! The `switchboard-runtime` binary as a subprocess, for tests of the program itself.
//!
//! Finding the binary: `SWITCHBOARD_RUNTIME_BIN` when set (CI may build once and point
//! at it); otherwise the test asks the same cargo that built it to build the binary
//! (`cargo build -p switchboard-e2e -p switchboard-runtime --bin switchboard-runtime
//! --message-format=json`) and takes the executable path from cargo's own report. That
//! follows `CARGO_TARGET_DIR`, `build.target-dir` and the workspace layout without
//! guessing paths, and never runs a stale binary. (`CARGO_BIN_EXE_*` exists only for
//! tests of the crate that owns the binary.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Variable naming a prebuilt `switchboard-runtime` binary.
pub const BIN_VAR: &str = "SWITCHBOARD_RUNTIME_BIN";

/// Variable naming a prebuilt `switchboard-operator` binary.
pub const OPERATOR_BIN_VAR: &str = "SWITCHBOARD_OPERATOR_BIN";

/// The path of the `switchboard-runtime` binary, built on first use.
///
/// # Panics
/// When the build fails.
pub fn runtime_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_binary("switchboard-runtime", "switchboard-runtime", BIN_VAR))
}

/// The path of the `switchboard-operator` binary, built on first use.
///
/// # Panics
/// When the build fails.
pub fn operator_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "switchboard-operator",
            "switchboard-operator",
            OPERATOR_BIN_VAR,
        )
    })
}

/// `$var` when set, else builds `bin` of `package` with the cargo that runs the tests
/// and returns the executable cargo reports.
fn workspace_binary(package: &str, bin: &str, var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let mut cargo = std::process::Command::new(env!("CARGO"));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_the_test) {
            cargo.env_remove(name);
        }
    }
    let out = cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            // With this package selected too, features unify as in `cargo test
            // -p switchboard-e2e`, so the binary is not rebuilt on every run.
            "-p",
            "switchboard-e2e",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {bin}: {e}"));
    assert!(out.status.success(), "building {bin} failed (or set {var})");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no {bin} executable"))
}

/// Whether `name` is one of the variables cargo sets for the test process itself
/// (`CARGO_PKG_NAME=switchboard-e2e`, `CARGO_MANIFEST_DIR`, ...). The nested cargo must
/// not inherit them: build scripts such as ring's declare `rerun-if-env-changed` on
/// exactly these, so an inherited value marks them dirty and rebuilds ring, rustls,
/// kube and everything above them, and the next plain `cargo test` rebuilds them back.
/// Settings a user exports (`CARGO_TARGET_DIR`, `CARGO_HOME`, `CARGO_BUILD_*`, ...)
/// are kept.
fn set_by_cargo_for_the_test(name: &str) -> bool {
    const PREFIXES: [&str; 3] = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_"];
    const NAMES: [&str; 6] = [
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// A free loopback port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A file in the temp dir, unique to this run.
pub fn temp_file(stem: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(crate::env::unique_name(stem));
    std::fs::write(&path, contents).expect("write a temp file");
    path
}

/// A `switchboard-runtime run` process. Killed when dropped (tests that want a
/// graceful end call [`RuntimeProcess::terminate`]).
pub struct RuntimeProcess {
    child: Child,
    /// Where its HTTP API listens.
    pub http: SocketAddr,
    /// Its stderr (logs), for failure messages.
    pub log: PathBuf,
    /// The config file it runs with.
    pub config: PathBuf,
}

impl RuntimeProcess {
    /// Starts `run --config` with `yaml`, logs as JSON to a temp file; does not wait.
    pub fn spawn(name: &str, yaml: &str, http: SocketAddr) -> Self {
        Self::spawn_with_env(name, yaml, http, &[])
    }

    /// [`RuntimeProcess::spawn`] with extra environment variables.
    pub fn spawn_with_env(name: &str, yaml: &str, http: SocketAddr, env: &[(&str, &str)]) -> Self {
        let config = temp_file(&format!("{name}-config.yaml"), yaml);
        let log = std::env::temp_dir().join(crate::env::unique_name(&format!("{name}-log")));
        let stderr = std::fs::File::create(&log).expect("create a log file");
        let child = Command::new(runtime_binary())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard-runtime run");
        Self {
            child,
            http,
            log,
            config,
        }
    }

    /// Starts it and waits until `/readyz` answers 200.
    ///
    /// # Panics
    /// When it exits or is not ready within `limit`, with its log.
    pub async fn start(name: &str, yaml: &str, http: SocketAddr, limit: Duration) -> Self {
        let mut p = Self::spawn(name, yaml, http);
        p.wait_ready(limit).await;
        p
    }

    /// Waits for `/readyz` to answer 200.
    ///
    /// # Panics
    /// When the process exits or `limit` passes first, with its log.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.url());
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("runtime exited early ({status}); log:\n{}", self.log_text());
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "runtime not ready after {limit:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://IP:PORT` of its API.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The value of sample `series` (`name{labels}`, exactly as exposed) in one scrape
    /// of its `/metrics`; `None` when the series is not there or the scrape failed.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGKILL (by pid) and reaps the process: no graceful stop, no commit.
    pub async fn kill_hard(&mut self) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid} failed");
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM (by pid).
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the exit, up to `limit`.
    ///
    /// # Panics
    /// When it does not exit in time, with its log.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for the runtime: {e}"),
            Err(_) => panic!(
                "runtime still running {limit:?} after SIGTERM; log:\n{}",
                self.log_text()
            ),
        }
    }
}

/// What a CLI invocation did.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
    /// How long it ran.
    pub took: Duration,
}

/// Runs `switchboard-runtime ARGS`; a run longer than `limit` is a hang and panics.
pub async fn cli(args: &[&str], limit: Duration) -> CliOutput {
    let start = Instant::now();
    let child = Command::new(runtime_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard-runtime");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("switchboard-runtime {args:?} hung for {limit:?}"))
        .expect("wait for switchboard-runtime");
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// The example Python HTTP agent (`examples/http-agent/agent.py`) on a free port.
pub struct PythonAgent {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl PythonAgent {
    /// Starts it and reads the address from its first line.
    ///
    /// # Panics
    /// When python3 is missing or the agent does not start.
    pub async fn start() -> Self {
        use tokio::io::AsyncBufReadExt;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/http-agent/agent.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3 examples/http-agent/agent.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::BufReader::new(stdout).read_line(&mut first),
        )
        .await
        .expect("agent.py printed its address in time")
        .expect("read agent.py's stdout");
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from agent.py: {first:?}"))
            .to_owned();
        Self { child, url }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

#[cfg(test)]
mod tests {
    use super::set_by_cargo_for_the_test;

    #[test]
    fn the_nested_cargo_drops_the_test_process_package_variables_only() {
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_EXE_switchboard-node-agent",
        ] {
            assert!(set_by_cargo_for_the_test(name), "{name} is dropped");
        }
        for name in [
            "CARGO_TARGET_DIR",
            "CARGO_HOME",
            "CARGO_BUILD_JOBS",
            "CARGO_PROFILE_DEV_DEBUG",
            "CARGO_INCREMENTAL",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!set_by_cargo_for_the_test(name), "{name} is kept");
        }
    }
}
