//! Garbage collection of reply channels: a process's reply channel
//! (`P.reply.<instance>`) is deleted by the process itself when it stops; one that
//! crashed leaves it behind. Every resync the operator reads, per topic prefix of its
//! AgentRuntimes, the registry's heartbeats and the prefix's topics, and deletes the
//! reply channels of instances whose last heartbeat expired more than the grace
//! period ago.
//!
//! Safe by construction ([`select`] is pure and tested): a topic is only a candidate
//! when its name is exactly `P.reply.<instance>` for an instance that has a heartbeat
//! record in `P.registry`, and only deleted when that heartbeat's validity (its
//! `validMs`, else [`DEFAULT_VALID_MS`]) ended `grace` ago. Clients (`start_client`)
//! write client heartbeats (`client/<instance>`), read here like a replica's. A live
//! process (valid heartbeat), a process that never wrote a heartbeat (a client older
//! than client heartbeats) and any other topic are never touched.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, ResourceExt};
use switchboard_crds::AgentRuntime;
use switchboard_runtime::TopicNames;
use switchboard_runtime::defaults::LIVENESS_TIMEOUT;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::agent_runtime::build::topic_prefix;
use crate::agent_runtime::connection_for;
use crate::context::Context;
use crate::controller::signalled;
use crate::error::{Error, Result};

/// How long a heartbeat without `validMs` (written by an older runtime) holds.
pub const DEFAULT_VALID_MS: u64 = LIVENESS_TIMEOUT.as_millis() as u64;

/// The last heartbeat of one instance: when, and how long it holds (`validMs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastBeat {
    /// Unix ms.
    pub at_ms: u64,
    /// The writer's validity span, if it gave one.
    pub valid_ms: Option<u64>,
}

/// A reply channel to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collectable {
    /// The topic.
    pub topic: String,
    /// Its process.
    pub instance: String,
    /// How long ago its last heartbeat stopped holding, ms.
    pub dead_for_ms: u64,
}

/// The reply channels among `topics` whose process's last heartbeat (in `beats`, by
/// instance) expired at least `grace` before `now_ms`. Pure.
pub fn select(
    names: &TopicNames,
    topics: &[String],
    beats: &HashMap<String, LastBeat>,
    now_ms: u64,
    grace: Duration,
) -> Vec<Collectable> {
    let reply_prefix = names.reply("");
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let mut out: Vec<Collectable> = topics
        .iter()
        .filter_map(|topic| {
            let instance = topic.strip_prefix(&reply_prefix)?;
            // The name must be exactly this instance's reply channel.
            if instance.is_empty() || names.reply(instance) != *topic {
                return None;
            }
            let beat = beats.get(instance)?;
            let until = beat
                .at_ms
                .saturating_add(beat.valid_ms.unwrap_or(DEFAULT_VALID_MS));
            let dead_for_ms = now_ms.checked_sub(until)?;
            (dead_for_ms >= grace_ms).then(|| Collectable {
                topic: topic.clone(),
                instance: instance.to_owned(),
                dead_for_ms,
            })
        })
        .collect();
    out.sort_by(|a, b| a.topic.cmp(&b.topic));
    out
}

/// Collects reply channels every `interval` until `shutdown`; `grace` of `None`
/// disables collection.
pub async fn run(
    ctx: std::sync::Arc<Context>,
    namespace: Option<String>,
    interval: Duration,
    grace: Option<Duration>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(grace) = grace else {
        info!("reply-channel garbage collection is off");
        return;
    };
    let stop = signalled(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(interval) => {}
        }
        let pass = collect_once(&ctx, namespace.as_deref(), grace);
        tokio::select! {
            () = &mut stop => return,
            r = pass => if let Err(e) = r {
                warn!(error = %e, "reply-channel garbage collection failed; retrying next interval");
            }
        }
    }
}

/// One pass over every topic prefix of the watched AgentRuntimes.
pub async fn collect_once(ctx: &Context, namespace: Option<&str>, grace: Duration) -> Result<()> {
    let api: Api<AgentRuntime> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let runtimes = api.list(&ListParams::default()).await?;
    // One pass per (cluster, prefix): many runtimes share a prefix.
    let mut prefixes: BTreeMap<(String, String), AgentRuntime> = BTreeMap::new();
    for rt in runtimes {
        let key = (rt.spec.kafka.bootstrap_servers.clone(), topic_prefix(&rt));
        prefixes.entry(key).or_insert(rt);
    }
    for ((_, prefix), rt) in prefixes {
        if let Err(e) = collect_prefix(ctx, &rt, &prefix, grace).await {
            warn!(%prefix, error = %e, "reply-channel garbage collection of a prefix failed");
        }
    }
    Ok(())
}

async fn collect_prefix(
    ctx: &Context,
    rt: &AgentRuntime,
    prefix: &str,
    grace: Duration,
) -> Result<()> {
    let ns = rt.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let conn = connection_for(&ns, &rt.spec.kafka, ctx).await?;
    let names = TopicNames::new(prefix).map_err(|e| Error::Kafka(e.to_string()))?;
    let (topics, beats) = ctx.kafka.reply_channels(&conn, &names).await?;
    let now_ms = switchboard_runtime::protocol::wire::now_ms();
    for c in select(&names, &topics, &beats, now_ms, grace) {
        ctx.kafka
            .delete_topics(&conn, std::slice::from_ref(&c.topic))
            .await?;
        ctx.metrics.reply_channel_deleted();
        info!(topic = %c.topic, instance = %c.instance, dead_for_s = c.dead_for_ms / 1000, "deleted the reply channel of a process whose heartbeat stopped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn only_reply_channels_of_long_dead_heartbeats_are_selected() {
        let names = TopicNames::new("p").unwrap();
        let topics: Vec<String> = [
            "p.reply.dead-1",   // heartbeat expired 10 min ago
            "p.reply.recent-1", // expired 1 min ago: within the grace
            "p.reply.live-1",   // valid heartbeat
            "p.reply.client-1", // no heartbeat at all (an old client)
            "p.reply.old-1",    // no validMs: default span
            "p.registry",
            "p.events",
            "p.rt.inbox",
            "q.reply.dead-1", // another prefix
            "p.reply.",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let now = 100 * MIN;
        let beat = |at_ms, valid_ms| LastBeat { at_ms, valid_ms };
        let beats: HashMap<String, LastBeat> = [
            ("dead-1", beat(now - 10 * MIN - 15_000, Some(15_000))),
            ("recent-1", beat(now - MIN - 15_000, Some(15_000))),
            // Beat long ago but holds for an hour (a writer with a long span).
            ("live-1", beat(now - 30 * MIN, Some(60 * MIN))),
            ("old-1", beat(now - 6 * MIN - DEFAULT_VALID_MS, None)),
        ]
        .into_iter()
        .map(|(i, b)| (i.to_owned(), b))
        .collect();
        let picked = select(&names, &topics, &beats, now, Duration::from_secs(300));
        let picked: Vec<(&str, u64)> = picked
            .iter()
            .map(|c| (c.topic.as_str(), c.dead_for_ms))
            .collect();
        assert_eq!(
            picked,
            vec![("p.reply.dead-1", 10 * MIN), ("p.reply.old-1", 6 * MIN)]
        );
        // A clock behind the heartbeat deletes nothing.
        assert!(select(&names, &topics, &beats, 0, Duration::ZERO).is_empty());
    }
}
