//! `switchboard-operator run`: wires configuration, telemetry, leader election and
//! shutdown; all logic lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard_operator::agent_runtime::build::BuildSettings;
use switchboard_operator::context::Timing;
use switchboard_operator::kafka::RdKafka;
use switchboard_operator::leader::LeaderOptions;
use switchboard_operator::metrics::Metrics;
use switchboard_operator::run::{RunOptions, run};
use switchboard_operator::{client, http};
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "switchboard-operator",
    version,
    about = "Kubernetes operator for Switchboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile AgentRuntimes and AgentSubscriptions until SIGTERM.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file (default: in-cluster, then KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SWITCHBOARD_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Image of the runtime pods when an AgentRuntime sets no spec.image.
    #[arg(
        long,
        env = "SWITCHBOARD_RUNTIME_IMAGE",
        default_value = "ghcr.io/switchboard-dev/switchboard-runtime:latest"
    )]
    runtime_image: String,
    /// Hold a Lease before reconciling, so several operator replicas are safe.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "switchboard-operator")]
    lease_name: String,
    /// Seconds the Lease stays valid without renewal: how long a standby waits after
    /// a leader crashed (a gracefully stopped leader releases it at once).
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds between resyncs of every AgentRuntime (status.lag refresh, Kafka drift).
    #[arg(long, default_value_t = 60)]
    resync_seconds: u64,
    /// Seconds between lag samples of autoscaled AgentRuntimes.
    #[arg(long, default_value_t = 15)]
    autoscale_interval_seconds: u64,
    /// Seconds a lower replica recommendation must hold before an autoscaled
    /// runtime scales down.
    #[arg(long, default_value_t = 300)]
    scale_down_window_seconds: u64,
    /// Address of /metrics and /healthz.
    #[arg(long, default_value = "0.0.0.0:8081")]
    metrics_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Command::Run(args) = Cli::parse().command;
    run_operator(args).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    error!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    let client = client::from_kubeconfig(args.kubeconfig.as_deref()).await?;
    let listener = http::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "serving /metrics and /healthz");
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "switchboard-operator".into()),
            std::process::id()
        )
    });
    let opts = RunOptions {
        namespace: args.namespace,
        settings: BuildSettings {
            default_image: args.runtime_image,
        },
        timing: Timing {
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            autoscale_interval: Duration::from_secs(args.autoscale_interval_seconds.max(1)),
            scale_down_window: Duration::from_secs(args.scale_down_window_seconds),
        },
        leader: args.leader_elect.then(|| LeaderOptions {
            lease_name: args.lease_name,
            namespace: args.lease_namespace,
            identity,
            lease_duration_secs: args.lease_duration_seconds.max(2),
        }),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        let _ = stop_tx.send(true);
    });
    run(
        client,
        Arc::new(RdKafka::default()),
        Arc::new(Metrics::default()),
        listener,
        opts,
        stop_rx,
    )
    .await
}
