//! Leader election with a Lease (kube-lease-manager), with a fast handover: the
//! leader releases the Lease on graceful shutdown, and a standby watches the Lease so
//! it takes over as soon as it is released, not when the lease duration runs out.

use std::pin::pin;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::controller::signalled;

/// Where and how to hold the Lease.
#[derive(Debug, Clone)]
pub struct LeaderOptions {
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This instance's identity (holderIdentity).
    pub identity: String,
    /// Seconds a Lease stays valid without renewal (a crashed leader's successor
    /// waits this long; a gracefully stopped one's does not).
    pub lease_duration_secs: u64,
}

/// The Lease, held until [`Leadership::release`] (or until the process dies: then
/// it expires after the lease duration).
pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Resolves when leadership is lost (renewal failed, another holder took over).
    pub async fn lost(&mut self) {
        let _ = self.leading.wait_for(|l| !*l).await;
    }

    /// Releases the Lease so a standby takes over at once.
    pub async fn release(self) {
        // Closing the channel makes the manager's task release the Lease and return.
        drop(self.leading);
        match self.task.await {
            Ok(Ok(_released)) => info!("released the leader Lease"),
            Ok(Err(e)) => debug!(error = %e, "lease manager ended with an error"),
            Err(e) => debug!(error = %e, "lease manager task failed"),
        }
    }
}

/// What the Lease watch tells the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseEvent {
    /// The watch (re)listed the Lease.
    Listed,
    /// The Lease is free: released by its holder, or deleted.
    Free,
}

fn lease_events(api: Api<Lease>, name: &str) -> impl Stream<Item = LeaseEvent> + Send {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, cfg).filter_map(|ev| async move {
        match ev {
            Ok(watcher::Event::InitDone) => Some(LeaseEvent::Listed),
            Ok(watcher::Event::Apply(l)) => l
                .spec
                .is_none_or(|s| s.holder_identity.is_none())
                .then_some(LeaseEvent::Free),
            Ok(watcher::Event::Delete(_)) => Some(LeaseEvent::Free),
            Ok(_) => None,
            Err(e) => {
                debug!(error = %e, "lease watch");
                None
            }
        }
    })
}

/// Waits until this instance holds the Lease (`None` when `shutdown` comes first).
pub async fn acquire(
    client: &Client,
    opts: &LeaderOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &opts.namespace);
    // Watch first, then read the Lease (in the manager): a release in between is an
    // event of the watch, never missed.
    let mut events = pin!(lease_events(api, &opts.lease_name));
    let mut stop = pin!(signalled(shutdown));
    loop {
        tokio::select! {
            e = events.next() => if e == Some(LeaseEvent::Listed) { break } else if e.is_none() { return Ok(None) },
            () = &mut stop => return Ok(None),
        }
    }
    loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &opts.lease_name)
            .with_namespace(&opts.namespace)
            .with_identity(&opts.identity)
            .with_duration(opts.lease_duration_secs)
            .with_grace((opts.lease_duration_secs / 6).max(1))
            .build()
            .await?;
        let outcome = tokio::select! {
            r = manager.changed() => Some(r?),
            // The holder let go (or the watch relisted): a fresh manager reads the
            // Lease again and takes it if it is free.
            _ = events.next() => None,
            () = &mut stop => return Ok(None),
        };
        if outcome == Some(true) {
            let (leading, task) = manager.watch().await;
            return Ok(Some(Leadership { leading, task }));
        }
    }
}
