//! The registry topic: who hosts which agent type, the subscriptions, and runtime
//! heartbeats. Compacted; every runtime reads it fully before it is ready, then tails
//! it. This module is the pure part: the view built by applying records (their keys
//! and values are `protocol::registry`) in log order.
//!
//! It is over 500 lines, 240 of them tests: the view and the questions asked of it
//! (owners, liveness, recipients, source bindings) share one state.
//!
//! A tombstone (no value) removes the key. One agent type, one runtime: among the
//! live claims of a type the one earliest in the log wins, so concurrent claimants
//! agree without coordination. A runtime is live while any of its replicas'
//! heartbeats is younger than the liveness timeout; claims and subscriptions of a
//! dead runtime are ignored (the operator and graceful stops also tombstone them).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::protocol::registry::{Claim, OPERATOR_OWNER, RegistryRecord, SubscriptionRecord};
use crate::subscription::{KeyFrom, Subscription};

/// The registry as read so far.
#[derive(Debug, Default, Clone)]
pub struct RegistryView {
    /// Per agent type: live claim records by their log position.
    claims: HashMap<String, BTreeMap<(i32, i64), Claim>>,
    subscriptions: BTreeMap<String, SubscriptionRecord>,
    /// Per runtime, per replica: last heartbeat time.
    /// Per runtime, per replica: the last heartbeat and how long it holds.
    heartbeats: HashMap<String, HashMap<String, (u64, Option<u64>)>>,
    /// Records applied so far (tells caches the view changed).
    generation: u64,
}

impl RegistryView {
    /// Applies one record found at `(partition, offset)`.
    pub fn apply(&mut self, position: (i32, i64), record: RegistryRecord) {
        self.generation += 1;
        match record {
            RegistryRecord::Claim {
                agent_type,
                runtime,
                claim,
            } => {
                let claims = self.claims.entry(agent_type.clone()).or_default();
                // A runtime has at most one claim per type: the newest record replaces
                // the older one, but keeps the older position (re-asserting a claim
                // must not lose it its place in the queue).
                let old = claims
                    .iter()
                    .find(|(_, c)| c.runtime == runtime)
                    .map(|(p, _)| *p);
                match (claim, old) {
                    (Some(c), Some(p)) => {
                        claims.insert(p, c);
                    }
                    (Some(c), None) => {
                        claims.insert(position, c);
                    }
                    (None, Some(p)) => {
                        claims.remove(&p);
                    }
                    (None, None) => {}
                }
                if claims.is_empty() {
                    self.claims.remove(&agent_type);
                }
            }
            RegistryRecord::Subscription { id, record } => match record {
                Some(r) => {
                    self.subscriptions.insert(id, r);
                }
                None => {
                    self.subscriptions.remove(&id);
                }
            },
            RegistryRecord::Heartbeat {
                runtime,
                instance,
                heartbeat,
            } => match heartbeat {
                Some(h) => {
                    self.heartbeats
                        .entry(runtime)
                        .or_default()
                        .insert(instance, (h.at_ms, h.valid_ms));
                }
                None => {
                    if let Some(r) = self.heartbeats.get_mut(&runtime) {
                        r.remove(&instance);
                        if r.is_empty() {
                            self.heartbeats.remove(&runtime);
                        }
                    }
                }
            },
            // A client hosts nothing and routes nothing: only the operator's reply-
            // channel GC reads these (operator/src/reply_gc.rs).
            RegistryRecord::ClientHeartbeat { .. } => {}
        }
    }

    /// Whether `runtime` has a replica that beat within `liveness_ms` of `now_ms`.
    pub fn is_live(&self, runtime: &str, now_ms: u64, liveness_ms: u64) -> bool {
        self.heartbeats
            .get(runtime)
            .is_some_and(|r| r.values().any(|&beat| alive(beat, now_ms, liveness_ms)))
    }

    /// Replicas of `runtime` that beat within `liveness_ms`.
    pub fn live_replicas(&self, runtime: &str, now_ms: u64, liveness_ms: u64) -> Vec<String> {
        self.heartbeats
            .get(runtime)
            .map(|r| {
                r.iter()
                    .filter(|(_, beat)| alive(**beat, now_ms, liveness_ms))
                    .map(|(i, _)| i.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The runtimes claiming `agent_type`, live or not, earliest claim first.
    pub fn claimants(&self, agent_type: &str) -> Vec<&str> {
        self.claims
            .get(agent_type)
            .map(|cs| cs.values().map(|c| c.runtime.as_str()).collect())
            .unwrap_or_default()
    }

    /// The runtime hosting `agent_type`: the earliest live claim.
    pub fn owner(&self, agent_type: &str, now_ms: u64, liveness_ms: u64) -> Option<&Claim> {
        self.claims
            .get(agent_type)?
            .values()
            .find(|c| self.is_live(&c.runtime, now_ms, liveness_ms))
    }

    /// Every type with a live owner, and the owner.
    pub fn owners(&self, now_ms: u64, liveness_ms: u64) -> BTreeMap<String, String> {
        self.claims
            .keys()
            .filter_map(|t| {
                Some((
                    t.clone(),
                    self.owner(t, now_ms, liveness_ms)?.runtime.clone(),
                ))
            })
            .collect()
    }

    /// Types claimed by `runtime` (live or not).
    pub fn claimed_by(&self, runtime: &str) -> Vec<String> {
        self.claims
            .iter()
            .filter(|(_, cs)| cs.values().any(|c| c.runtime == runtime))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Subscriptions in effect: the operator's, and those of live runtimes.
    pub fn subscriptions(&self, now_ms: u64, liveness_ms: u64) -> Vec<&SubscriptionRecord> {
        self.subscriptions
            .values()
            .filter(|r| r.owner == OPERATOR_OWNER || self.is_live(&r.owner, now_ms, liveness_ms))
            .collect()
    }

    /// Subscriptions in effect that are bound to a source topic, with the source.
    #[cfg(feature = "server")]
    pub fn source_subscriptions(
        &self,
        now_ms: u64,
        liveness_ms: u64,
    ) -> Vec<(&Subscription, &crate::subscription::SubscriptionSource)> {
        self.subscriptions(now_ms, liveness_ms)
            .into_iter()
            .filter_map(|r| Some((&r.subscription, r.source.as_ref()?)))
            .collect()
    }

    /// Ids of subscriptions added by `owner`.
    pub fn subscriptions_of(&self, owner: &str) -> Vec<String> {
        self.subscriptions
            .iter()
            .filter(|(_, r)| r.owner == owner)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether a subscription with `id` exists (whoever owns it).
    pub fn has_subscription(&self, id: &str) -> bool {
        self.subscriptions.contains_key(id)
    }

    /// Subscriptions in effect whose agent type `runtime` hosts now.
    fn hosted_by<'a>(
        &'a self,
        runtime: &'a str,
        now_ms: u64,
        liveness_ms: u64,
    ) -> impl Iterator<Item = &'a SubscriptionRecord> + 'a {
        self.subscriptions(now_ms, liveness_ms)
            .into_iter()
            .filter(move |r| {
                self.owner(r.subscription.agent_type(), now_ms, liveness_ms)
                    .is_some_and(|c| c.runtime == runtime)
            })
    }

    /// Kafka topics bound as event sources by subscriptions to agent types of `runtime`.
    pub fn source_topics(&self, runtime: &str, now_ms: u64, liveness_ms: u64) -> BTreeSet<String> {
        self.hosted_by(runtime, now_ms, liveness_ms)
            .filter_map(|r| r.source.as_ref().map(|s| s.kafka_topic.clone()))
            .collect()
    }

    /// The subscriptions to agent types of `runtime` that read `kafka_topic`, with
    /// where each takes a plain record's topic source from.
    pub fn source_bindings(
        &self,
        runtime: &str,
        kafka_topic: &str,
        now_ms: u64,
        liveness_ms: u64,
    ) -> Vec<(Subscription, KeyFrom)> {
        self.hosted_by(runtime, now_ms, liveness_ms)
            .filter_map(|r| {
                let s = r.source.as_ref().filter(|s| s.kafka_topic == kafka_topic)?;
                Some((r.subscription.clone(), s.key_from.clone()))
            })
            .collect()
    }

    /// Agent types of `runtime` that receive events of `topic_type` from the events topic
    /// (deduplicated; subscriptions bound to a source topic receive from it only), as
    /// `runtime` itself sees it: it is running, so it counts as live even when its own
    /// heartbeats lapsed in the log (after an outage longer than the liveness timeout,
    /// its events must not be skipped until its next heartbeat is read back: that
    /// lost acknowledged events in `fault_broker_restart`). Should another runtime
    /// have claimed one of its types meanwhile, both deliver: duplicates, not loss.
    pub fn recipient_types(
        &self,
        runtime: &str,
        topic_type: &str,
        now_ms: u64,
        liveness_ms: u64,
    ) -> Vec<String> {
        let live = |r: &str| r == runtime || self.is_live(r, now_ms, liveness_ms);
        let mut types: Vec<String> = self
            .subscriptions
            .values()
            .filter(|r| r.owner == OPERATOR_OWNER || live(&r.owner))
            .filter(|r| r.source.is_none())
            .map(|r| &r.subscription)
            .filter(|s| s.matches(topic_type))
            .filter(|s| {
                self.claims
                    .get(s.agent_type())
                    .and_then(|cs| cs.values().find(|c| live(&c.runtime)))
                    .is_some_and(|c| c.runtime == runtime)
            })
            .map(|s| s.agent_type().to_owned())
            .collect();
        types.sort();
        types.dedup();
        types
    }
}

/// How long a cached answer of [`RecipientCache`] may be used: liveness is decided at
/// this granularity (next to a liveness timeout of seconds).
const RECIPIENTS_TTL_MS: u64 = 1_000;

/// Most topic types remembered (an external producer may write any number of them).
const RECIPIENTS_MAX: usize = 1_024;

/// [`RegistryView::recipient_types`] per topic type, remembered until the view changes
/// or [`RECIPIENTS_TTL_MS`] passed: the events consumer asks for every event, and the
/// answer walks every subscription and checks liveness.
#[derive(Debug, Default)]
pub(crate) struct RecipientCache {
    generation: u64,
    since_ms: u64,
    types: HashMap<String, Vec<String>>,
}

impl RecipientCache {
    /// Agent types of `runtime` that receive events of `topic_type`.
    pub(crate) fn get(
        &mut self,
        view: &RegistryView,
        runtime: &str,
        topic_type: &str,
        now_ms: u64,
        liveness_ms: u64,
    ) -> Vec<String> {
        if self.generation != view.generation
            || now_ms.saturating_sub(self.since_ms) >= RECIPIENTS_TTL_MS
            || now_ms < self.since_ms
            || self.types.len() >= RECIPIENTS_MAX
        {
            self.types.clear();
            (self.generation, self.since_ms) = (view.generation, now_ms);
        }
        if let Some(types) = self.types.get(topic_type) {
            return types.clone();
        }
        let types = view.recipient_types(runtime, topic_type, now_ms, liveness_ms);
        self.types.insert(topic_type.to_owned(), types.clone());
        types
    }
}

/// Whether a heartbeat `(at, valid)` holds at `now`: for the writer's `valid` span if
/// it gave one, else the reader's `liveness_ms`.
fn alive((at, valid): (u64, Option<u64>), now_ms: u64, liveness_ms: u64) -> bool {
    at + valid.unwrap_or(liveness_ms) >= now_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::registry::{ClientHeartbeat, Heartbeat};
    use crate::subscription::Subscription;

    const LIVE: u64 = 30_000;

    fn claim(t: &str, r: &str) -> RegistryRecord {
        RegistryRecord::Claim {
            agent_type: t.into(),
            runtime: r.into(),
            claim: Some(Claim {
                agent_type: t.into(),
                runtime: r.into(),
                instance: "i".into(),
                at_ms: 0,
            }),
        }
    }

    fn beat(r: &str, at: u64) -> RegistryRecord {
        RegistryRecord::Heartbeat {
            runtime: r.into(),
            instance: "i".into(),
            heartbeat: Some(Heartbeat {
                runtime: r.into(),
                instance: "i".into(),
                at_ms: at,
                valid_ms: None,
            }),
        }
    }

    #[test]
    fn earliest_live_claim_wins_and_dead_owners_lose_their_types() {
        let mut v = RegistryView::default();
        v.apply((0, 1), beat("rt1", 1_000));
        v.apply((0, 2), beat("rt2", 1_000));
        v.apply((0, 3), claim("echo", "rt2"));
        v.apply((0, 4), claim("echo", "rt1"));
        assert_eq!(v.owner("echo", 2_000, LIVE).unwrap().runtime, "rt2");
        // rt2 re-asserts its claim later: it keeps its place.
        v.apply((0, 9), claim("echo", "rt2"));
        assert_eq!(v.owner("echo", 2_000, LIVE).unwrap().runtime, "rt2");
        // rt2 stops beating; rt1 keeps beating: rt1 takes over.
        v.apply((0, 10), beat("rt1", 40_000));
        assert_eq!(v.owner("echo", 40_000, LIVE).unwrap().runtime, "rt1");
        // A tombstone releases.
        v.apply(
            (0, 11),
            RegistryRecord::Claim {
                agent_type: "echo".into(),
                runtime: "rt1".into(),
                claim: None,
            },
        );
        assert!(v.owner("echo", 40_000, LIVE).is_none());
        // rt2 still claims it, not live: an RPC can say so instead of "unknown type".
        assert_eq!(v.claimants("echo"), ["rt2"]);
        assert!(v.claimants("nobody").is_empty());
    }

    #[test]
    fn a_heartbeat_holds_as_long_as_its_writer_says() {
        let mut v = RegistryView::default();
        let RegistryRecord::Heartbeat {
            heartbeat: Some(mut hb),
            ..
        } = beat("rt1", 1_000)
        else {
            unreachable!()
        };
        // The writer beats every 3 s and holds for 15 s; a reader set for 3 s (fast
        // failover among its own replicas) must not take it for dead between beats.
        hb.valid_ms = Some(15_000);
        v.apply(
            (0, 1),
            RegistryRecord::Heartbeat {
                runtime: "rt1".into(),
                instance: "i".into(),
                heartbeat: Some(hb),
            },
        );
        assert!(v.is_live("rt1", 5_000, 3_000));
        assert!(v.is_live("rt1", 16_000, 3_000));
        assert!(
            !v.is_live("rt1", 16_001, 60_000),
            "the writer's span, not the reader's"
        );
        // Without a span (an older writer) the reader's own timeout applies.
        v.apply((0, 2), beat("rt2", 1_000));
        assert!(v.is_live("rt2", 4_000, 3_000));
        assert!(!v.is_live("rt2", 4_001, 3_000));
    }

    #[test]
    fn subscriptions_route_to_the_owning_runtime_only_once() {
        let mut v = RegistryView::default();
        v.apply((0, 1), beat("rt1", 0));
        v.apply((0, 2), claim("counter", "rt1"));
        for (i, id) in ["a", "b"].iter().enumerate() {
            let sub = Subscription::Type {
                id: (*id).into(),
                topic_type: "alerts".into(),
                agent_type: "counter".into(),
            };
            v.apply(
                (0, 3 + i as i64),
                RegistryRecord::Subscription {
                    id: (*id).into(),
                    record: Some(SubscriptionRecord {
                        subscription: sub,
                        owner: "rt1".into(),
                        source: None,
                    }),
                },
            );
        }
        assert_eq!(
            v.recipient_types("rt1", "alerts", 0, LIVE),
            vec!["counter".to_owned()]
        );
        assert!(v.recipient_types("rt2", "alerts", 0, LIVE).is_empty());
        assert!(v.recipient_types("rt1", "other", 0, LIVE).is_empty());
        // The owner dies: its subscriptions stop counting.
        assert!(v.subscriptions(LIVE + 1, LIVE).is_empty());
    }

    #[test]
    fn source_subscriptions_read_their_topic_only_for_their_owner() {
        use crate::subscription::SubscriptionSource;
        let mut v = RegistryView::default();
        v.apply((0, 1), beat("rt1", 0));
        v.apply((0, 2), claim("counter", "rt1"));
        let sub = |id: &str, source: Option<SubscriptionSource>| RegistryRecord::Subscription {
            id: id.into(),
            record: Some(SubscriptionRecord {
                subscription: Subscription::Type {
                    id: id.into(),
                    topic_type: "orders".into(),
                    agent_type: "counter".into(),
                },
                owner: OPERATOR_OWNER.into(),
                source,
            }),
        };
        let src = SubscriptionSource::new("orders", Some("header:tenant")).unwrap();
        v.apply((0, 3), sub("a", Some(src)));
        // Bound to its topic: not a recipient of `orders` events on the events topic.
        assert!(v.recipient_types("rt1", "orders", 0, LIVE).is_empty());
        assert_eq!(
            v.source_topics("rt1", 0, LIVE)
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["orders".to_owned()]
        );
        let bindings = v.source_bindings("rt1", "orders", 0, LIVE);
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].1, KeyFrom::Header("tenant".into()));
        assert!(v.source_bindings("rt1", "other", 0, LIVE).is_empty());
        assert!(v.source_topics("rt2", 0, LIVE).is_empty());
        // An unbound subscription of the same type still gets events-topic events.
        v.apply((0, 4), sub("b", None));
        assert_eq!(v.recipient_types("rt1", "orders", 0, LIVE), vec!["counter"]);
        // The owner dies: nobody reads the topic.
        assert!(v.source_topics("rt1", LIVE + 1, LIVE).is_empty());
    }

    #[test]
    fn cached_recipients_follow_the_view_and_the_clock() {
        let mut v = RegistryView::default();
        v.apply((0, 1), beat("rt1", 0));
        v.apply((0, 2), claim("counter", "rt1"));
        let sub = |id: &str, agent_type: &str| RegistryRecord::Subscription {
            id: id.into(),
            record: Some(SubscriptionRecord {
                subscription: Subscription::Type {
                    id: id.into(),
                    topic_type: "alerts".into(),
                    agent_type: agent_type.into(),
                },
                owner: "rt1".into(),
                source: None,
            }),
        };
        v.apply((0, 3), sub("a", "counter"));
        let mut cache = RecipientCache::default();
        let counter = vec!["counter".to_owned()];
        assert_eq!(cache.get(&v, "rt1", "alerts", 10, LIVE), counter);
        assert!(cache.get(&v, "rt1", "other", 10, LIVE).is_empty());
        // A new record is seen at once.
        v.apply((0, 4), claim("relay", "rt1"));
        v.apply((0, 5), sub("b", "relay"));
        assert_eq!(
            cache.get(&v, "rt1", "alerts", 20, LIVE),
            vec!["counter".to_owned(), "relay".to_owned()]
        );
        // The asking runtime is running: its own lapsed heartbeat (after an outage)
        // does not drop its events.
        assert_eq!(cache.get(&v, "rt1", "alerts", 2 * LIVE, LIVE).len(), 2);
        // Another runtime's earlier claim wins while it is live; its heartbeat expires
        // at 4 * LIVE, seen within the cache's lifetime.
        v.apply((0, 0), claim("relay", "rt2"));
        v.apply((0, 6), beat("rt2", 3 * LIVE));
        assert_eq!(cache.get(&v, "rt1", "alerts", 3 * LIVE + 10, LIVE), counter);
        let asked = 4 * LIVE - 10;
        assert_eq!(cache.get(&v, "rt1", "alerts", asked, LIVE), counter);
        assert_eq!(cache.get(&v, "rt1", "alerts", 4 * LIVE + 1, LIVE), counter);
        let later = asked + RECIPIENTS_TTL_MS;
        assert_eq!(cache.get(&v, "rt1", "alerts", later, LIVE).len(), 2);
    }

    #[test]
    fn records_decode_from_keys_and_json() {
        let r = RegistryRecord::decode(
            b"hb/rt1/abc",
            Some(br#"{"runtime":"rt1","instance":"abc","atMs":5}"#),
        )
        .unwrap();
        assert!(matches!(
            r,
            RegistryRecord::Heartbeat {
                heartbeat: Some(Heartbeat { at_ms: 5, .. }),
                ..
            }
        ));
        let r = RegistryRecord::decode(
            b"client/cli.x1",
            Some(br#"{"instance":"cli.x1","atMs":7,"validMs":30000}"#),
        )
        .unwrap();
        assert_eq!(
            r,
            RegistryRecord::ClientHeartbeat {
                instance: "cli.x1".into(),
                heartbeat: Some(ClientHeartbeat {
                    instance: "cli.x1".into(),
                    at_ms: 7,
                    valid_ms: 30_000
                }),
            }
        );
        assert!(matches!(
            RegistryRecord::decode(b"client/cli.x1", None).unwrap(),
            RegistryRecord::ClientHeartbeat {
                heartbeat: None,
                ..
            }
        ));
        // A client heartbeat names its validity; the error names the record.
        let e =
            RegistryRecord::decode(b"client/c", Some(br#"{"instance":"c","atMs":7}"#)).unwrap_err();
        assert!(e.contains("client/c") && e.contains("validMs"), "{e}");
        assert!(RegistryRecord::decode(b"client/", None).is_err());
        assert!(matches!(
            RegistryRecord::decode(b"sub/x", None).unwrap(),
            RegistryRecord::Subscription { record: None, .. }
        ));
        assert!(
            RegistryRecord::decode(b"bogus", None)
                .unwrap_err()
                .contains("bogus")
        );
        assert!(RegistryRecord::decode(b"claim/a/b", Some(b"{")).is_err());
    }
}
