//! Runs both controllers until shutdown.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use switchboard_crds::{AgentRuntime, AgentSubscription};
use tokio::sync::watch;
use tracing::debug;

use crate::agent_runtime;
use crate::context::Context;
use crate::subscription;

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Resolves when `shutdown` turns true (or its sender is dropped).
pub async fn signalled(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Reconciles AgentRuntimes and AgentSubscriptions in `namespace` (all when `None`)
/// until `shutdown` turns true; in-flight reconciles finish first.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: watch::Receiver<bool>) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=switchboard-operator");
    let runtimes = Controller::new(
        scoped::<AgentRuntime>(&client, ns),
        watcher::Config::default(),
    )
    .owns(scoped::<Deployment>(&client, ns), owned.clone())
    .owns(scoped::<ConfigMap>(&client, ns), owned.clone())
    .owns(scoped::<Service>(&client, ns), owned.clone())
    .owns(scoped::<ServiceAccount>(&client, ns), owned.clone())
    .owns(scoped::<PodDisruptionBudget>(&client, ns), owned)
    .graceful_shutdown_on(signalled(shutdown.clone()))
    .run(
        agent_runtime::reconcile,
        agent_runtime::error_policy,
        Arc::clone(&ctx),
    )
    .for_each(|r| {
        if let Err(e) = r {
            debug!(error = %e, "agentruntime controller");
        }
        futures::future::ready(())
    });
    let subs = Controller::new(
        scoped::<AgentSubscription>(&client, ns),
        watcher::Config::default(),
    );
    let store = subs.store();
    let subs = subs
        .watches(
            scoped::<AgentRuntime>(&client, ns),
            watcher::Config::default(),
            move |rt| {
                // A runtime appearing or changing its agents re-checks its subscriptions.
                store
                    .state()
                    .into_iter()
                    .filter(|s| {
                        s.namespace() == rt.namespace() && s.spec.runtime_ref.name == rt.name_any()
                    })
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(signalled(shutdown))
        .run(subscription::reconcile, subscription::error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                debug!(error = %e, "agentsubscription controller");
            }
            futures::future::ready(())
        });
    futures::join!(runtimes, subs);
}
