//! The operator process minus its command line: HTTP endpoints, leader election,
//! both controllers, and an orderly stop (tests run it in-process).

use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use tokio::sync::watch;
use tracing::{error, info};

use crate::agent_runtime::build::BuildSettings;
use crate::context::{Context, Timing};
use crate::controller::{self, signalled};
use crate::http;
use crate::kafka::KafkaBackend;
use crate::leader::{self, LeaderOptions};
use crate::metrics::Metrics;

/// What one operator instance does.
pub struct RunOptions {
    /// Watch one namespace (`None`: all).
    pub namespace: Option<String>,
    /// Build defaults (runtime image).
    pub settings: BuildSettings,
    /// Resync and autoscaling intervals.
    pub timing: Timing,
    /// Hold this Lease before reconciling (`None`: no leader election).
    pub leader: Option<LeaderOptions>,
}

/// Serves `/metrics` and `/healthz` on `listener`, waits for leadership (if asked),
/// reconciles until `shutdown` turns true, then lets in-flight reconciles finish and
/// releases the Lease. Fails when leadership is lost (a restart rejoins the election
/// rather than risking two writers).
pub async fn run(
    client: Client,
    kafka: Arc<dyn KafkaBackend>,
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    opts: RunOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let server = tokio::spawn(http::serve(
        listener,
        Arc::clone(&metrics),
        shutdown.clone(),
    ));
    let mut leadership = None;
    if let Some(lo) = &opts.leader {
        info!(lease = %lo.lease_name, identity = %lo.identity, "waiting for leadership");
        match leader::acquire(&client, lo, shutdown.clone())
            .await
            .context("leader election")?
        {
            Some(l) => leadership = Some(l),
            None => {
                server.await.context("http task")??;
                return Ok(());
            }
        }
        info!("leading");
    }
    let ctx =
        Arc::new(Context::new(client, kafka, metrics, opts.settings).with_timing(opts.timing));
    // The controllers stop on shutdown or on lost leadership, whichever comes first.
    let (stop_tx, stop_rx) = watch::channel(false);
    let controllers = tokio::spawn(controller::run(ctx, opts.namespace, stop_rx));
    let lost = async {
        match &mut leadership {
            Some(l) => l.lost().await,
            None => futures::future::pending::<()>().await,
        }
    };
    let lost_leadership = tokio::select! {
        () = signalled(shutdown) => { info!("shutting down"); false }
        () = lost => { error!("lost leadership; stopping"); true }
    };
    let _ = stop_tx.send(true);
    controllers.await.context("controllers task")?;
    if let Some(l) = leadership {
        l.release().await;
    }
    server.abort();
    if lost_leadership {
        anyhow::bail!("lost leadership");
    }
    Ok(())
}
