//! Reconciling an AgentRuntime: dereference (Secrets) -> validate + build (pure, in
//! [`build`]) -> Kafka topics -> apply owned objects -> status, written once.

pub mod autoscale;
pub mod build;
pub mod llm_build;
mod status;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use switchboard_crds::AgentRuntime;
use switchboard_runtime::admin::TopicChange;
use switchboard_runtime::config::SaslCredentials;
use switchboard_runtime::protocol::registry::claim_key;
use switchboard_runtime::{KafkaConfig, TopicNames};
use tracing::{info, instrument, warn};

use crate::apply::{Writer, apply_owned, delete_if_present, with_timeout};
use crate::conditions;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kafka::{KafkaConnection, TopicReport};
use build::{FIELD_MANAGER, build, build_with_replicas, topic_prefix};
pub use status::{Outcome, compute_status};

/// Controller name (metrics label).
pub const CONTROLLER: &str = "agentruntime";
/// Finalizer present only with `deletionPolicy: Delete`: deletes the topics and
/// releases the registry claims before the object goes.
pub const FINALIZER: &str = "switchboard.dev/delete-topics";

/// Reconciles one AgentRuntime.
#[instrument(skip_all, fields(namespace = ar.namespace().unwrap_or_default(), name = ar.name_any()))]
pub async fn reconcile(ar: Arc<AgentRuntime>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = reconcile_inner(&ar, &ctx).await;
    if let Err(e) = &result {
        ctx.metrics.failure(CONTROLLER, e);
        warn!(error = %e, class = e.metric_label(), "reconcile failed");
    }
    result
}

/// Requeues by error class.
pub fn error_policy(_ar: Arc<AgentRuntime>, error: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(error.backoff())
}

fn writer(ctx: &Context) -> Writer<'_> {
    Writer {
        metrics: &ctx.metrics,
        controller: CONTROLLER,
    }
}

async fn reconcile_inner(ar: &AgentRuntime, ctx: &Context) -> Result<Action> {
    let ns = ar.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<AgentRuntime> = Api::namespaced(ctx.client.clone(), &ns);
    if ar.meta().deletion_timestamp.is_some() {
        return cleanup(ar, &api, ctx).await;
    }
    let wants_finalizer =
        ar.spec.deletion_policy == switchboard_crds::agent_runtime::DeletionPolicy::Delete;
    set_finalizer(ar, &api, FINALIZER, wants_finalizer, writer(ctx)).await?;

    // Validate and build (pure) before touching anything.
    let desired = match build(ar, &ctx.settings) {
        Ok(d) => d,
        Err(e) => {
            write_status(ar, &api, ctx, Outcome::Invalid(e.to_string()), None, None).await?;
            return Ok(Action::await_change());
        }
    };
    // Dereference: credentials for the operator's own Kafka client, and the API key
    // Secrets of `llm` agents (a pod whose env names a missing Secret never starts).
    let dereferenced = match llm_api_keys(ar, ctx).await {
        Ok(()) => connection(ar, ctx).await,
        Err(e) => Err(e),
    };
    let conn = match dereferenced {
        Ok(c) => c,
        Err(e @ Error::Secret { .. }) => {
            write_status(
                ar,
                &api,
                ctx,
                Outcome::SecretMissing(e.to_string()),
                None,
                None,
            )
            .await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    // Topics first: pods started before their topics exist would only crash-loop.
    let reports = match ctx.kafka.ensure_topics(&conn, &desired.topics).await {
        Ok(r) => r,
        Err(e) => {
            // Name the cause when the brokers refuse us (credentials, CA, ACLs):
            // librdkafka reports those only as timeouts of the request itself.
            let names: Vec<String> = desired.topics.iter().map(|t| t.name.clone()).collect();
            let outcome = match ctx.kafka.diagnose(&conn, &names).await {
                Some(refusal) => Outcome::KafkaRefused(refusal),
                None => Outcome::KafkaUnavailable(e.to_string()),
            };
            write_status(ar, &api, ctx, outcome, None, None).await?;
            return Err(e);
        }
    };
    for r in &reports {
        if r.change != TopicChange::Unchanged || r.config_changed {
            info!(topic = %r.name, change = ?r.change, config_changed = r.config_changed, "topic reconciled");
        }
    }
    let lag = inbox_lag(ar, &desired, &conn, &reports, ctx).await;
    let desired = match &ar.spec.autoscaling {
        Some(spec) => {
            let replicas = autoscaled_replicas(ar, spec, lag, &desired, &reports, ctx).await?;
            match build_with_replicas(ar, &ctx.settings, Some(replicas)) {
                Ok(d) => d,
                Err(e) => {
                    write_status(ar, &api, ctx, Outcome::Invalid(e.to_string()), None, lag).await?;
                    return Ok(Action::await_change());
                }
            }
        }
        None => desired,
    };
    let deployment = apply_objects(&ns, &desired, ctx).await?;
    let outcome = topics_outcome(&desired.owned_topics, reports);
    write_status(
        ar,
        &api,
        ctx,
        outcome,
        Some((&desired.selector, &deployment)),
        lag,
    )
    .await?;
    Ok(Action::requeue(if ar.spec.autoscaling.is_some() {
        ctx.timing.autoscale_interval
    } else {
        ctx.timing.resync
    }))
}

/// The Deployment's replicas under `spec.autoscaling`: the lag's recommendation
/// ([`autoscale::recommend`]), applied now when higher and after the stabilization
/// window when lower ([`autoscale::decide`]). An unread lag keeps the current size.
async fn autoscaled_replicas(
    ar: &AgentRuntime,
    spec: &switchboard_crds::agent_runtime::AutoscalingSpec,
    lag: Option<i64>,
    desired: &build::DesiredRuntime,
    reports: &[TopicReport],
    ctx: &Context,
) -> Result<i32> {
    let ns = ar.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = ar.name_any();
    let current = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await?
        .and_then(|d| d.spec.and_then(|s| s.replicas));
    let inbox = desired.names.inbox(&name);
    let partitions = reports
        .iter()
        .find(|r| r.name == inbox)
        .map_or(ar.spec.topics.partitions, |r| r.partitions);
    let Some(lag) = lag else {
        return Ok(current.unwrap_or(desired.replicas));
    };
    let recommended = autoscale::recommend(spec, lag, partitions);
    let key = format!("{ns}/{name}");
    let mut pending = ctx.scale_downs.lock().unwrap_or_else(|e| e.into_inner());
    let (replicas, still) = autoscale::decide(
        current,
        recommended,
        pending.get(&key).copied(),
        std::time::Instant::now(),
        ctx.timing.scale_down_window,
    );
    match still {
        Some(p) => pending.insert(key, p),
        None => pending.remove(&key),
    };
    if current.is_some_and(|c| c != replicas) {
        info!(
            lag,
            from = current,
            to = replicas,
            "autoscaling the runtime"
        );
    }
    Ok(replicas)
}

/// The runtime's consumer lag on its inbox, or `None` when Kafka did not answer (the
/// status keeps the last figure; the reconcile goes on: lag is informational).
async fn inbox_lag(
    ar: &AgentRuntime,
    desired: &build::DesiredRuntime,
    conn: &KafkaConnection,
    reports: &[TopicReport],
    ctx: &Context,
) -> Option<i64> {
    let name = ar.name_any();
    let inbox = desired.names.inbox(&name);
    let report = reports.iter().find(|r| r.name == inbox)?;
    if report.change == TopicChange::Created {
        // Nothing can be in an inbox created just now: no lag read (each one is a
        // short-lived Kafka client), which matters when many runtimes are applied
        // at once.
        return Some(0);
    }
    let partitions = report.partitions;
    let group = desired.names.inbox_group(&name);
    match ctx
        .kafka
        .consumer_lag(conn, &group, &inbox, partitions)
        .await
    {
        Ok(lag) => Some(lag),
        Err(e) => {
            warn!(error = %e, "reading the inbox lag failed");
            None
        }
    }
}

/// Only the runtime's own topics must match exactly; the shared events topic may
/// have more partitions (another runtime of the prefix asked for more).
pub(crate) fn topics_outcome(owned: &[String], reports: Vec<TopicReport>) -> Outcome {
    let shrink: Vec<String> = reports
        .iter()
        .filter_map(|r| match r.change {
            TopicChange::CannotShrink { existing } if owned.contains(&r.name) => {
                Some(format!("{} has {existing} partitions", r.name))
            }
            _ => None,
        })
        .collect();
    if shrink.is_empty() {
        Outcome::Topics(reports)
    } else {
        Outcome::CannotShrink(reports, shrink.join("; "))
    }
}

async fn apply_objects(
    ns: &str,
    desired: &build::DesiredRuntime,
    ctx: &Context,
) -> Result<Deployment> {
    let c = &ctx.client;
    let w = writer(ctx);
    apply_owned(
        &Api::<ServiceAccount>::namespaced(c.clone(), ns),
        desired.service_account.clone(),
        "ServiceAccount",
        w,
    )
    .await?;
    apply_owned(
        &Api::<ConfigMap>::namespaced(c.clone(), ns),
        desired.config_map.clone(),
        "ConfigMap",
        w,
    )
    .await?;
    apply_owned(
        &Api::<Service>::namespaced(c.clone(), ns),
        desired.service.clone(),
        "Service",
        w,
    )
    .await?;
    let deployment = apply_owned(
        &Api::<Deployment>::namespaced(c.clone(), ns),
        desired.deployment.clone(),
        "Deployment",
        w,
    )
    .await?;
    let pdbs = Api::<PodDisruptionBudget>::namespaced(c.clone(), ns);
    match &desired.pdb {
        Some(pdb) => {
            apply_owned(&pdbs, pdb.clone(), "PodDisruptionBudget", w).await?;
        }
        None => {
            delete_if_present(
                &pdbs,
                &desired.deployment.name_any(),
                "PodDisruptionBudget",
                w,
            )
            .await?
        }
    }
    Ok(deployment)
}

/// Reads the SASL and CA Secrets the operator's own Kafka client needs.
pub async fn connection(ar: &AgentRuntime, ctx: &Context) -> Result<KafkaConnection> {
    let ns = ar.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    connection_for(&ns, &ar.spec.kafka, ctx).await
}

/// [`connection`] for Kafka settings `kafka` whose Secrets live in `ns`.
pub async fn connection_for(
    ns: &str,
    kafka: &switchboard_crds::agent_runtime::KafkaSpec,
    ctx: &Context,
) -> Result<KafkaConnection> {
    let mut config = KafkaConfig::new(kafka.bootstrap_servers.clone());
    let mut ca_pem = None;
    let mut client_cert_pem = None;
    if let Some(sec) = &kafka.security {
        config.security_protocol = build::security_protocol(sec.protocol);
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        if let Some(sasl) = &sec.sasl {
            let r = &sasl.secret_ref;
            let username = secret_value(
                &secrets,
                &r.name,
                r.username_key.as_deref().unwrap_or("username"),
            )
            .await?;
            let password = secret_value(
                &secrets,
                &r.name,
                r.password_key.as_deref().unwrap_or("password"),
            )
            .await?;
            config.sasl = Some(SaslCredentials {
                mechanism: build::sasl_mechanism(sasl.mechanism),
                username,
                password,
            });
        }
        if let Some(tls) = &sec.tls {
            let r = &tls.ca_secret_ref;
            ca_pem =
                Some(secret_value(&secrets, &r.name, r.key.as_deref().unwrap_or("ca.crt")).await?);
        }
        if let Some(r) = build::client_cert(sec) {
            let cert = secret_value(
                &secrets,
                &r.name,
                r.cert_key.as_deref().unwrap_or("tls.crt"),
            )
            .await?;
            let key =
                secret_value(&secrets, &r.name, r.key_key.as_deref().unwrap_or("tls.key")).await?;
            client_cert_pem = Some((cert, key));
        }
    }
    Ok(KafkaConnection {
        config,
        ca_pem,
        client_cert_pem,
    })
}

/// Checks that the API key Secret of every `llm` agent, and the token Secret of every
/// MCP server, has its key (the value is not kept: the pods read it from their
/// environment).
async fn llm_api_keys(ar: &AgentRuntime, ctx: &Context) -> Result<()> {
    let ns = ar.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    for a in &ar.spec.agents {
        if let Some(r) = a
            .llm
            .as_ref()
            .and_then(|l| l.model.api_key_secret_ref.as_ref())
        {
            let key = r.key.as_deref().unwrap_or(llm_build::DEFAULT_API_KEY_KEY);
            secret_value(&secrets, &r.name, key).await?;
        }
    }
    for r in ar
        .spec
        .mcp_servers
        .iter()
        .filter_map(|m| m.secret_ref.as_ref())
    {
        secret_value(&secrets, &r.name, r.key.as_deref().unwrap_or("token")).await?;
    }
    Ok(())
}

async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> Result<String> {
    let missing = |reason: String| Error::Secret {
        name: name.to_owned(),
        reason,
    };
    let secret = secrets
        .get_opt(name)
        .await?
        .ok_or_else(|| missing("not found".into()))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| missing(format!("has no key {key:?}")))?;
    String::from_utf8(bytes.0.clone()).map_err(|_| missing(format!("key {key:?} is not UTF-8")))
}

/// Adds (`present`) or removes our finalizer, guarded by the resourceVersion so a
/// concurrent change fails instead of being overwritten.
pub async fn set_finalizer<K>(
    obj: &K,
    api: &Api<K>,
    finalizer: &str,
    present: bool,
    w: Writer<'_>,
) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let current = obj.finalizers();
    let has = current.iter().any(|f| f == finalizer);
    if has == present {
        return Ok(());
    }
    let mut next: Vec<String> = current
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    if present {
        next.push(finalizer.to_owned());
    }
    let rv = obj
        .resource_version()
        .ok_or(Error::MissingMetadata("resourceVersion"))?;
    // A merge patch carrying the resourceVersion fails with 409 on a concurrent change.
    let patch = json!({ "metadata": { "resourceVersion": rv, "finalizers": next } });
    w.metrics.write(w.controller, "finalizer", "patch");
    with_timeout(
        "finalizer patch",
        api.patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ),
    )
    .await?;
    Ok(())
}

/// With our finalizer: release the registry claims, delete the runtime's topics
/// (missing ones count as deleted), then let the object go.
async fn cleanup(ar: &AgentRuntime, api: &Api<AgentRuntime>, ctx: &Context) -> Result<Action> {
    if !ar.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    match connection(ar, ctx).await {
        Ok(conn) => {
            if let Ok(names) = TopicNames::new(topic_prefix(ar)) {
                let name = ar.name_any();
                for agent in &ar.spec.agents {
                    ctx.kafka
                        .write_record(
                            &conn,
                            &names.registry(),
                            &claim_key(&agent.agent_type, &name),
                            None,
                        )
                        .await?;
                }
                ctx.kafka
                    .delete_topics(&conn, &names.per_runtime(&name))
                    .await?;
                info!("released registry claims and deleted the runtime's topics");
            }
        }
        // The Secret went first (e.g. the whole namespace is being deleted): do not
        // keep the namespace stuck in Terminating; say what was left behind.
        Err(e @ Error::Secret { .. }) => {
            publish(
                ctx,
                ar,
                EventType::Warning,
                "TopicsNotDeleted",
                e.to_string(),
            )
            .await;
        }
        Err(e) => return Err(e),
    }
    set_finalizer(ar, api, FINALIZER, false, writer(ctx)).await?;
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, ar: &AgentRuntime, type_: EventType, reason: &str, note: String) {
    ctx.metrics.write(CONTROLLER, "Event", "create");
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &ar.object_ref(&())).await {
        warn!(error = %e, "publishing an event failed");
    }
}

/// Computes the status and writes it (server-side apply, status subresource) only
/// when it differs from the stored one; publishes an Event per condition flip.
async fn write_status(
    ar: &AgentRuntime,
    api: &Api<AgentRuntime>,
    ctx: &Context,
    outcome: Outcome,
    deployment: Option<(&String, &Deployment)>,
    lag: Option<i64>,
) -> Result<()> {
    let before = ar.status.clone().unwrap_or_default();
    let after = compute_status(
        ar,
        &outcome,
        deployment,
        lag,
        k8s_openapi::jiff::Timestamp::now(),
    );
    if after == before {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "AgentRuntime",
        "status": after,
    });
    ctx.metrics
        .write(CONTROLLER, "AgentRuntime/status", "apply");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    with_timeout(
        "status apply",
        api.patch_status(&ar.name_any(), &params, &Patch::Apply(&patch)),
    )
    .await?;
    for c in conditions::transitions(&before.conditions, &after.conditions) {
        if ![
            conditions::READY,
            conditions::TOPICS_READY,
            conditions::DEGRADED,
        ]
        .contains(&c.type_.as_str())
        {
            continue;
        }
        let good = (c.status == "True") != (c.type_ == conditions::DEGRADED);
        let type_ = if good {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(
            ctx,
            ar,
            type_,
            &c.reason,
            format!("{} is {}: {}", c.type_, c.status, c.message),
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod fake_api_tests;
