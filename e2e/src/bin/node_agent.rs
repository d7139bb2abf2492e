//! `switchboard-node-agent`: plays the kubelet of the local test cluster, running
//! `switchboard-runtime` pods as local processes (see `switchboard_e2e::node`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchboard_e2e::node::{
    DEFAULT_IMAGE_PATTERN, ImagePattern, ImageRoot, NodeAgent, NodeAgentConfig,
};
use tokio_util::sync::CancellationToken;

/// Runs the pods bound to one Node as local processes.
#[derive(Debug, Parser)]
#[command(name = "switchboard-node-agent", version)]
struct Args {
    /// Kubeconfig of the cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long)]
    node_name: String,
    /// Loopback range of pod IPs, e.g. 127.0.1.0/24.
    #[arg(long)]
    pod_cidr: String,
    /// Program run for `switchboard-runtime` containers.
    #[arg(long)]
    runtime_bin: PathBuf,
    /// Directory of the per-pod directories.
    #[arg(long)]
    state_dir: PathBuf,
    /// Take pods of these namespaces only (repeatable or comma-separated; default all).
    #[arg(long = "namespace", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Take pods whose images' repository matches this glob.
    #[arg(long, default_value = DEFAULT_IMAGE_PATTERN)]
    image_pattern: String,
    /// Also take pods of images matching PATTERN, run from DIR standing in for the
    /// image's filesystem (`PATTERN=DIR`, repeatable; see `node::ImageRoot`).
    #[arg(long = "image-root")]
    image_roots: Vec<String>,
    /// Write the agent's pid here (removed at exit).
    #[arg(long)]
    pid_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "node agent failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = NodeAgentConfig::new(
        args.node_name,
        &args.pod_cidr,
        args.runtime_bin,
        args.state_dir,
    )?;
    config.namespaces = args
        .namespaces
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    config.image_pattern = ImagePattern::new(args.image_pattern);
    config.image_roots = args
        .image_roots
        .iter()
        .map(|r| ImageRoot::parse(r))
        .collect::<anyhow::Result<_>>()?;
    if !config.runtime_bin.is_file() {
        anyhow::bail!(
            "--runtime-bin: {} is not a file",
            config.runtime_bin.display()
        );
    }
    let client = switchboard_operator::client::from_kubeconfig(Some(&args.kubeconfig)).await?;
    if let Some(pid_file) = &args.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))?;
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; stopping pods");
        on_signal.cancel();
    });
    let result = NodeAgent::new(client, config).run(shutdown).await;
    if let Some(pid_file) = &args.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
