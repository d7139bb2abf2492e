//! `switchboard-operator run`: wires configuration, telemetry, leader election and
//! shutdown; all logic lives in the library.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use switchboard_operator::agent_runtime::build::BuildSettings;
use switchboard_operator::cli::{self, Command, RunArgs};
use switchboard_operator::context::Timing;
use switchboard_operator::kafka::RdKafka;
use switchboard_operator::leader::LeaderOptions;
use switchboard_operator::metrics::Metrics;
use switchboard_operator::run::{RunOptions, run};
use switchboard_operator::{client, http};
use tokio::sync::watch;
use tracing::{error, info};

fn main() -> anyhow::Result<()> {
    // Arguments that are not UTF-8 cannot name a flag; lossy text keeps them visible
    // in the error.
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let args = match cli::parse(args, &|var| std::env::var(var).ok()) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Print(text)) => {
            print!("{text}");
            return Ok(());
        }
        Err(e) => {
            eprintln!("error: {e}\n\nFor more information, try '--help'.");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run_operator(args))
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
            reply_gc_grace: (args.reply_gc_grace_seconds > 0)
                .then(|| Duration::from_secs(args.reply_gc_grace_seconds)),
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
