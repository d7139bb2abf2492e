//! Reconciling an AgentSubscription: check the runtime and agent type (pure), write
//! the subscription to the registry topic, tombstone it on delete (finalizer).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use serde_json::json;
use switchboard_crds::agent_subscription::{AgentSubscriptionStatus, RegistryLocation};
use switchboard_crds::{AgentRuntime, AgentSubscription};
use switchboard_runtime::protocol::registry::{
    OPERATOR_OWNER, SubscriptionRecord, subscription_key,
};
use switchboard_runtime::subscription::SubscriptionSource;
use switchboard_runtime::{Subscription, TopicNames};
use tracing::{info, instrument, warn};

use crate::agent_runtime::build::{FIELD_MANAGER, topic_prefix};
use crate::agent_runtime::{connection_for, set_finalizer};
use crate::apply::{Writer, with_timeout};
use crate::conditions::{self, Desired, reason};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kafka::SourceRead;

/// Controller name (metrics label).
pub const CONTROLLER: &str = "agentsubscription";
/// Tombstones the registry record before the object goes.
pub const FINALIZER: &str = "switchboard.dev/registry";

/// Why a subscription is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// CamelCase reason.
    pub reason: &'static str,
    /// Detail for humans.
    pub message: String,
}

/// Checks `sub` against its runtime (None: not found) and builds the registry
/// subscription, whose id is the object's uid, and its source topic binding. Pure.
pub fn validate(
    sub: &AgentSubscription,
    runtime: Option<&AgentRuntime>,
) -> Result<(Subscription, Option<SubscriptionSource>), Rejection> {
    let subscription = validate_route(sub, runtime)?;
    let Some(source) = &sub.spec.source else {
        return Ok((subscription, None));
    };
    let invalid = |m: String| Rejection {
        reason: reason::INVALID_SPEC,
        message: format!("spec.source.{m}"),
    };
    let source = SubscriptionSource::new(&source.kafka_topic, source.key_from.as_deref())
        .map_err(invalid)?;
    source.check(&subscription).map_err(|m| Rejection {
        reason: reason::INVALID_SPEC,
        message: format!("spec.source: {m}"),
    })?;
    Ok((subscription, Some(source)))
}

fn validate_route(
    sub: &AgentSubscription,
    runtime: Option<&AgentRuntime>,
) -> Result<Subscription, Rejection> {
    let reject = |reason, message: String| Rejection { reason, message };
    let name = &sub.spec.runtime_ref.name;
    let runtime = runtime.ok_or_else(|| {
        reject(
            reason::RUNTIME_NOT_FOUND,
            format!("AgentRuntime {name:?} does not exist in this namespace"),
        )
    })?;
    let agent_type = &sub.spec.agent_type;
    if !runtime
        .spec
        .agents
        .iter()
        .any(|a| &a.agent_type == agent_type)
    {
        return Err(reject(
            reason::UNKNOWN_AGENT_TYPE,
            format!("AgentRuntime {name:?} does not host agent type {agent_type:?}"),
        ));
    }
    let id = sub
        .uid()
        .ok_or_else(|| reject(reason::INVALID_SPEC, "object has no uid".into()))?;
    let invalid = |e: switchboard_runtime::IdError| reject(reason::INVALID_SPEC, e.to_string());
    match (&sub.spec.topic_type, &sub.spec.topic_type_prefix) {
        (Some(t), None) => {
            Subscription::for_type(t, agent_type).map_err(invalid)?;
            Ok(Subscription::Type {
                id,
                topic_type: t.clone(),
                agent_type: agent_type.clone(),
            })
        }
        (None, Some(p)) => {
            Subscription::for_prefix(p, agent_type).map_err(invalid)?;
            Ok(Subscription::TypePrefix {
                id,
                prefix: p.clone(),
                agent_type: agent_type.clone(),
            })
        }
        _ => Err(reject(
            reason::INVALID_SPEC,
            "exactly one of topicType and topicTypePrefix is required".into(),
        )),
    }
}

/// Reconciles one AgentSubscription.
#[instrument(skip_all, fields(namespace = sub.namespace().unwrap_or_default(), name = sub.name_any()))]
pub async fn reconcile(sub: Arc<AgentSubscription>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = reconcile_inner(&sub, &ctx).await;
    if let Err(e) = &result {
        ctx.metrics.failure(CONTROLLER, e);
        warn!(error = %e, class = e.metric_label(), "reconcile failed");
    }
    result
}

/// Requeues by error class.
pub fn error_policy(_sub: Arc<AgentSubscription>, error: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(error.backoff())
}

fn writer(ctx: &Context) -> Writer<'_> {
    Writer {
        metrics: &ctx.metrics,
        controller: CONTROLLER,
    }
}

fn is_registered(sub: &AgentSubscription) -> bool {
    sub.status.as_ref().is_some_and(|s| {
        s.observed_generation == sub.metadata.generation
            && s.subscription_id.is_some()
            && s.conditions
                .iter()
                .any(|c| c.type_ == conditions::ACCEPTED && c.status == "True")
    })
}

async fn reconcile_inner(sub: &AgentSubscription, ctx: &Context) -> Result<Action> {
    let ns = sub.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<AgentSubscription> = Api::namespaced(ctx.client.clone(), &ns);
    let runtimes: Api<AgentRuntime> = Api::namespaced(ctx.client.clone(), &ns);
    let runtime = runtimes.get_opt(&sub.spec.runtime_ref.name).await?;
    let uid = sub.uid().ok_or(Error::MissingMetadata("uid"))?;

    // Where the record is: as stored at accept time, else where the runtime says.
    let location = sub
        .status
        .as_ref()
        .and_then(|s| s.registry.clone())
        .or_else(|| runtime.as_ref().and_then(location_of));

    if sub.metadata.deletion_timestamp.is_some() {
        if sub.finalizers().iter().any(|f| f == FINALIZER) {
            // Not registered (any more): nothing to take back.
            let registered = sub
                .status
                .as_ref()
                .is_some_and(|s| s.subscription_id.is_some());
            match location.as_ref().filter(|_| registered) {
                Some(loc) => match tombstone(&ns, loc, &uid, ctx).await {
                    Ok(()) => {}
                    // The Secret went first (namespace deletion): do not block the
                    // deletion; say what was left behind.
                    Err(e @ Error::Secret { .. }) => {
                        publish(ctx, sub, "RecordNotTombstoned", e.to_string()).await;
                    }
                    Err(e) => return Err(e),
                },
                None if registered => warn!(
                    "no registry location known; registry record sub/{uid} left for the runtimes to ignore"
                ),
                None => {}
            }
            set_finalizer(sub, &api, FINALIZER, false, writer(ctx)).await?;
        }
        return Ok(Action::await_change());
    }

    let checked = validate(sub, runtime.as_ref());
    let (accepted, ready) = match (&checked, &runtime) {
        (Ok((subscription, source)), Some(rt)) => {
            set_finalizer(sub, &api, FINALIZER, true, writer(ctx)).await?;
            if !is_registered(sub) {
                let ns = rt.namespace().ok_or(Error::MissingMetadata("namespace"))?;
                let conn = connection_for(&ns, &rt.spec.kafka, ctx).await?;
                let names =
                    TopicNames::new(topic_prefix(rt)).map_err(|e| Error::Kafka(e.to_string()))?;
                let record = SubscriptionRecord {
                    subscription: subscription.clone(),
                    owner: OPERATOR_OWNER.to_owned(),
                    source: source.clone(),
                };
                let value = serde_json::to_vec(&record).map_err(|source| Error::Serialize {
                    what: "subscription record",
                    source,
                })?;
                ctx.kafka
                    .write_record(
                        &conn,
                        &names.registry(),
                        &subscription_key(&uid),
                        Some(&value),
                    )
                    .await?;
                info!(id = %uid, "subscription written to the registry");
            }
            let accepted = Desired::new(
                conditions::ACCEPTED,
                true,
                reason::ACCEPTED,
                "runtime and agent type exist",
            );
            let ready = match source {
                Some(source) => source_ready(rt, source, ctx).await?,
                None => Desired::new(
                    conditions::READY,
                    true,
                    reason::REGISTERED,
                    format!("in the registry as sub/{uid}"),
                ),
            };
            (accepted, ready)
        }
        _ => {
            let rej = match &checked {
                Err(r) => r.clone(),
                Ok(_) => Rejection {
                    reason: reason::RUNTIME_NOT_FOUND,
                    message: "runtime not found".into(),
                },
            };
            // It was registered before (type removed from the runtime, or the runtime
            // deleted): take the record back.
            let was_registered = sub
                .status
                .as_ref()
                .is_some_and(|s| s.subscription_id.is_some());
            if let (Some(loc), true) = (&location, was_registered) {
                tombstone(&ns, loc, &uid, ctx).await?;
            }
            (
                Desired::new(conditions::ACCEPTED, false, rej.reason, rej.message.clone()),
                Desired::new(conditions::READY, false, rej.reason, rej.message),
            )
        }
    };
    let registered = accepted.status;
    let ready_now = ready.status;
    let before = sub.status.clone().unwrap_or_default();
    let after = AgentSubscriptionStatus {
        observed_generation: sub.metadata.generation,
        subscription_id: registered.then(|| uid.clone()),
        registry: if registered {
            runtime.as_ref().and_then(location_of)
        } else {
            None
        },
        conditions: conditions::merge(
            &before.conditions,
            &[accepted, ready],
            sub.metadata.generation,
            Timestamp::now(),
        ),
    };
    if after != before {
        let patch = json!({
            "apiVersion": "switchboard.dev/v1alpha1",
            "kind": "AgentSubscription",
            "status": after,
        });
        ctx.metrics
            .write(CONTROLLER, "AgentSubscription/status", "apply");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        with_timeout(
            "status apply",
            api.patch_status(&sub.name_any(), &params, &Patch::Apply(&patch)),
        )
        .await?;
    }
    Ok(if registered && !ready_now {
        // Waiting for the source topic to appear or the runtime to read it.
        Action::requeue(SOURCE_RECHECK)
    } else if registered {
        Action::requeue(Duration::from_secs(300))
    } else {
        // The runtime may appear or gain the type; runtimes are also watched.
        Action::requeue(Duration::from_secs(60))
    })
}

/// How often a subscription whose source topic is not read yet is looked at again.
const SOURCE_RECHECK: Duration = Duration::from_secs(5);

/// Ready when the source topic exists and the runtime's events group has committed
/// offsets on all its partitions: a runtime replica commits its start position there
/// when it starts reading the topic (and later what it handled).
async fn source_ready(
    rt: &AgentRuntime,
    source: &SubscriptionSource,
    ctx: &Context,
) -> Result<Desired> {
    let ns = rt.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let conn = connection_for(&ns, &rt.spec.kafka, ctx).await?;
    let names = TopicNames::new(topic_prefix(rt)).map_err(|e| Error::Kafka(e.to_string()))?;
    let group = names.events_group(&rt.name_any());
    let topic = &source.kafka_topic;
    Ok(match ctx.kafka.source_read(&conn, &group, topic).await? {
        SourceRead::Missing => Desired::new(
            conditions::READY,
            false,
            reason::SOURCE_TOPIC_NOT_FOUND,
            format!("source Kafka topic {topic:?} does not exist"),
        ),
        SourceRead::Unread => Desired::new(
            conditions::READY,
            false,
            reason::SOURCE_NOT_READ,
            format!(
                "source Kafka topic {topic:?} exists; AgentRuntime {:?} (consumer group {group}) has not started reading it",
                rt.name_any()
            ),
        ),
        SourceRead::Read => Desired::new(
            conditions::READY,
            true,
            reason::READING_SOURCE,
            format!("consumer group {group} reads Kafka topic {topic:?}"),
        ),
    })
}

/// The registry a subscription of `runtime` is written to.
fn location_of(runtime: &AgentRuntime) -> Option<RegistryLocation> {
    let names = TopicNames::new(topic_prefix(runtime)).ok()?;
    Some(RegistryLocation {
        topic: names.registry(),
        kafka: runtime.spec.kafka.clone(),
    })
}

async fn tombstone(ns: &str, loc: &RegistryLocation, uid: &str, ctx: &Context) -> Result<()> {
    let conn = connection_for(ns, &loc.kafka, ctx).await?;
    ctx.kafka
        .write_record(&conn, &loc.topic, &subscription_key(uid), None)
        .await?;
    info!(id = %uid, topic = %loc.topic, "subscription tombstoned in the registry");
    Ok(())
}

async fn publish(ctx: &Context, sub: &AgentSubscription, reason: &str, note: String) {
    ctx.metrics.write(CONTROLLER, "Event", "create");
    let ev = Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &sub.object_ref(&())).await {
        warn!(error = %e, "publishing an event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> AgentRuntime {
        serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
            "metadata": { "name": "host", "namespace": "ns" },
            "spec": {
                "kafka": { "bootstrapServers": "127.0.0.1:9092" },
                "agents": [{ "type": "rec", "builtin": "counter" }],
            },
        }))
        .unwrap()
    }

    fn sub(route: serde_json::Value, source: serde_json::Value) -> AgentSubscription {
        let mut spec =
            json!({ "runtimeRef": { "name": "host" }, "agentType": "rec", "source": source });
        for (k, v) in route.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentSubscription",
            "metadata": { "name": "s", "namespace": "ns", "uid": "u1" },
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn sources_are_validated_and_carried_into_the_record() {
        let rt = runtime();
        let ok = sub(
            json!({"topicType": "orders"}),
            json!({"kafkaTopic": "shop.orders", "keyFrom": "header:tenant"}),
        );
        let (route, source) = validate(&ok, Some(&rt)).unwrap();
        assert_eq!(route.id(), "u1");
        let source = source.unwrap();
        assert_eq!(source.kafka_topic, "shop.orders");
        assert_eq!(source.key_from.to_string(), "header:tenant");

        let bad_key = sub(
            json!({"topicType": "orders"}),
            json!({"kafkaTopic": "shop.orders", "keyFrom": "value"}),
        );
        let rej = validate(&bad_key, Some(&rt)).unwrap_err();
        assert_eq!(rej.reason, reason::INVALID_SPEC);
        assert!(
            rej.message.contains("spec.source.keyFrom"),
            "{}",
            rej.message
        );

        let bad_topic = sub(json!({"topicType": "orders"}), json!({"kafkaTopic": "a b"}));
        let rej = validate(&bad_topic, Some(&rt)).unwrap_err();
        assert!(
            rej.message.contains("spec.source.kafkaTopic"),
            "{}",
            rej.message
        );

        // Plain records carry the topic name as type: the prefix must match it.
        let mismatch = sub(
            json!({"topicTypePrefix": "payments."}),
            json!({"kafkaTopic": "shop.orders"}),
        );
        let rej = validate(&mismatch, Some(&rt)).unwrap_err();
        assert!(rej.message.contains("topicTypePrefix"), "{}", rej.message);
        let matching = sub(
            json!({"topicTypePrefix": "shop."}),
            json!({"kafkaTopic": "shop.orders"}),
        );
        assert!(validate(&matching, Some(&rt)).unwrap().1.is_some());
    }
}
