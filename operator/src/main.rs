//! `switchboard-operator run`: wires configuration, telemetry, leader election and
//! shutdown; all logic lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube_lease_manager::LeaseManagerBuilder;
use switchboard_operator::agent_runtime::build::BuildSettings;
use switchboard_operator::kafka::RdKafka;
use switchboard_operator::metrics::Metrics;
use switchboard_operator::{Context, client, controller, http};
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
    run(args).await
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

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = client::from_kubeconfig(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = http::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "serving /metrics and /healthz");
    let server = tokio::spawn(http::serve(listener, Arc::clone(&metrics), stop_rx.clone()));

    // Leadership: wait for the Lease; losing it stops the process (a restart rejoins
    // the election) rather than risking two writers.
    let mut lease = None;
    if args.leader_elect {
        let manager = LeaseManagerBuilder::new(client.clone(), "switchboard-operator")
            .with_namespace(&args.lease_namespace)
            .build()
            .await
            .context("creating the leader-election lease manager")?;
        let (mut leading, task) = manager.watch().await;
        info!("waiting for leadership");
        let terminated = tokio::select! {
            r = leading.wait_for(|l| *l) => { r.context("lease manager stopped")?; false }
            _ = termination() => true,
        };
        if terminated {
            drop(leading);
            let _ = task.await;
            return Ok(());
        }
        info!("leading");
        lease = Some((leading, task));
    }

    let kafka = Arc::new(RdKafka::default());
    let settings = BuildSettings {
        default_image: args.runtime_image,
    };
    let ctx = Arc::new(Context::new(client, kafka, Arc::clone(&metrics), settings));
    let controllers = tokio::spawn(controller::run(ctx, args.namespace, stop_rx));
    let lost = async {
        match &mut lease {
            Some((leading, _)) => {
                let _ = leading.wait_for(|l| !*l).await;
            }
            None => futures::future::pending::<()>().await,
        }
    };
    let lost_leadership = tokio::select! {
        _ = termination() => { info!("shutting down"); false }
        _ = lost => { error!("lost leadership; stopping"); true }
    };
    let _ = stop_tx.send(true);
    controllers.await.context("controllers task")?;
    server.await.context("http task")??;
    if let Some((leading, task)) = lease {
        // Closing the channel makes the manager release the Lease.
        drop(leading);
        if let Ok(Ok(manager)) = task.await {
            let _ = manager.release().await;
        }
    }
    if lost_leadership {
        anyhow::bail!("lost leadership");
    }
    Ok(())
}
