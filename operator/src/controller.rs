//! Runs both controllers until shutdown.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::{self as kube_controller, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use switchboard_crds::{AgentRuntime, AgentSubscription};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::agent_runtime;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::subscription;

/// A watched object that does not deserialize (e.g. written before a schema change)
/// is reported, once per change of it, and skipped; the watch goes on for the others.
async fn report_invalid<K>(
    obj: &DeserializeGuard<K>,
    invalid: &InvalidObject,
    controller: &'static str,
    ctx: &Context,
) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let err = Error::InvalidObject(invalid.error.clone());
    ctx.metrics.failure(controller, &err);
    warn!(
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        error = %invalid.error,
        "skipping an object that does not match the operator's schema"
    );
    ctx.metrics.write(controller, "Event", "create");
    let ev = Event {
        type_: EventType::Warning,
        reason: "InvalidObject".to_owned(),
        note: Some(format!(
            "the operator cannot read this object: {}; fix or re-apply it",
            invalid.error
        )),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        warn!(error = %e, "publishing an event failed");
    }
    Action::await_change()
}

async fn reconcile_runtime(
    obj: Arc<DeserializeGuard<AgentRuntime>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    match &obj.0 {
        Ok(ar) => agent_runtime::reconcile(Arc::new(ar.clone()), ctx).await,
        Err(invalid) => Ok(report_invalid(&obj, invalid, agent_runtime::CONTROLLER, &ctx).await),
    }
}

fn runtime_error_policy(
    _obj: Arc<DeserializeGuard<AgentRuntime>>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    Action::requeue(error.backoff())
}

async fn reconcile_subscription(
    obj: Arc<DeserializeGuard<AgentSubscription>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    match &obj.0 {
        Ok(sub) => subscription::reconcile(Arc::new(sub.clone()), ctx).await,
        Err(invalid) => Ok(report_invalid(&obj, invalid, subscription::CONTROLLER, &ctx).await),
    }
}

fn subscription_error_policy(
    _obj: Arc<DeserializeGuard<AgentSubscription>>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    Action::requeue(error.backoff())
}

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

/// Reconciles running at once per controller. Unbounded, hundreds of runtimes applied
/// together swamp the API server (applies time out, reconciles back off and retry);
/// a bound keeps each reconcile quick.
pub const CONCURRENCY: u16 = 16;

/// Reconciles AgentRuntimes and AgentSubscriptions in `namespace` (all when `None`)
/// and collects dead processes' reply channels (`reply_gc`, every resync) until
/// `shutdown` turns true; in-flight reconciles finish first. Both watch their
/// resources through [`DeserializeGuard`]: one malformed object cannot stop the watch.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: watch::Receiver<bool>) {
    let client = ctx.client.clone();
    let reply_gc = crate::reply_gc::run(
        Arc::clone(&ctx),
        namespace.clone(),
        ctx.timing.resync,
        ctx.timing.reply_gc_grace,
        shutdown.clone(),
    );
    let ns = namespace.as_deref();
    let owned =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=switchboard-operator");
    let config = || kube_controller::Config::default().concurrency(CONCURRENCY);
    let runtimes = Controller::new(
        scoped::<DeserializeGuard<AgentRuntime>>(&client, ns),
        watcher::Config::default(),
    )
    .with_config(config())
    .owns(scoped::<Deployment>(&client, ns), owned.clone())
    .owns(scoped::<ConfigMap>(&client, ns), owned.clone())
    .owns(scoped::<Service>(&client, ns), owned.clone())
    .owns(scoped::<ServiceAccount>(&client, ns), owned.clone())
    .owns(scoped::<PodDisruptionBudget>(&client, ns), owned)
    .graceful_shutdown_on(signalled(shutdown.clone()))
    .run(reconcile_runtime, runtime_error_policy, Arc::clone(&ctx))
    .for_each(|r| {
        if let Err(e) = r {
            debug!(error = %e, "agentruntime controller");
        }
        futures::future::ready(())
    });
    let subs = Controller::new(
        scoped::<DeserializeGuard<AgentSubscription>>(&client, ns),
        watcher::Config::default(),
    )
    .with_config(config());
    let store = subs.store();
    let subs = subs
        .watches(
            scoped::<DeserializeGuard<AgentRuntime>>(&client, ns),
            watcher::Config::default(),
            move |rt| {
                // A runtime appearing, changing its agents or going re-checks its
                // subscriptions.
                store
                    .state()
                    .into_iter()
                    .filter(|s| {
                        s.0.as_ref().is_ok_and(|sub| {
                            sub.namespace() == rt.namespace()
                                && sub.spec.runtime_ref.name == rt.name_any()
                        })
                    })
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(signalled(shutdown))
        .run(reconcile_subscription, subscription_error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                debug!(error = %e, "agentsubscription controller");
            }
            futures::future::ready(())
        });
    futures::join!(runtimes, subs, reply_gc);
}
