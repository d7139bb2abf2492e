//! Runtime processes hosting the benchmark agents (`bench_host`), watched through
//! their stdout.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use switchboard_e2e::client_settings;
use switchboard_runtime::KafkaConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One `bench_host` process.
pub struct Host {
    child: Child,
    handled: Arc<AtomicU64>,
}

impl Host {
    /// Starts a host of runtime `runtime` and waits until it serves.
    pub async fn start(kafka: &KafkaConfig, prefix: &str, runtime: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?.with_file_name("bench_host");
        let mut child = Command::new(&exe)
            .args([&kafka.bootstrap_servers, prefix, runtime])
            .args(client_settings::to_args(kafka))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it: cargo build --release -p switchboard-e2e)",
                    exe.display()
                )
            })?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        match tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await {
            Ok(Ok(Some(l))) if l == "ready" => {}
            other => bail!("bench_host did not become ready: {other:?}"),
        }
        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(n) = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()) {
                    h.store(n, Ordering::Relaxed);
                }
            }
        });
        Ok(Self { child, handled })
    }

    /// Messages the host reported handled.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// The host's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident memory of the host process, KiB.
    pub fn rss_kib(&self) -> u64 {
        switchboard_e2e::wait::rss_kib(self.child.id())
    }

    /// SIGTERM, then wait (bounded) for a graceful exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.start_kill()?;
                bail!("bench_host ignored SIGTERM for 30 s")
            }
        }
    }
}
