//! What this process reads from and writes to the registry topic: agent type claims
//! (the earliest live claim in the log wins), heartbeats, subscriptions, and their
//! release when the last replica of a runtime stops. A client process (`start_client`)
//! writes only its client heartbeat (`client/<instance>`), which no runtime reads: it
//! tells the operator's reply-channel GC that the client's reply channel is in use.
//! Every write waits until this process has read it back, so a caller sees its own
//! writes in the view.

use std::sync::{Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::outputs::Outputs;
use super::registry::RecipientCache;
use super::registry_log::RegistryLog;
use super::{Inner, WorkerConfig};
use crate::config::KafkaConfig;
use crate::error::RuntimeError;
use crate::protocol::registry::{
    Claim, ClientHeartbeat, Heartbeat, SubscriptionRecord, claim_key, client_heartbeat_key,
    encode_value, heartbeat_key, subscription_key,
};
use crate::protocol::topics::TopicNames;
use crate::protocol::wire::now_ms;
use crate::subscription::{KeyFrom, Subscription, SubscriptionSource};

/// How long a registry write may take to be read back.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a registry write is retried after errors a broker restart causes
/// ([`transient`]): for a few seconds after a restart the broker's metadata can lack
/// the registry's partitions or leaders.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(20);
const WRITE_RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// Whether a failed produce is worth retrying: an error of a broker restarting or just
/// restarted (`admin::broker_restarting`, the one list), e.g. the partition or its
/// leader not known yet.
fn transient(e: &RuntimeError) -> bool {
    let RuntimeError::Kafka { source, .. } = e else {
        return false;
    };
    crate::admin::broker_restarting(source.rdkafka_error_code())
}

/// Writes of one claim before [`RegistryClient::claim`] gives up on a claim that does
/// not hold (see there).
const CLAIM_ATTEMPTS: usize = 3;

/// This process's registry reader and writer.
pub(crate) struct RegistryClient {
    log: OnceLock<RegistryLog>,
    /// Recipient types per topic type, for the events consumer.
    recipients: Mutex<RecipientCache>,
    topic: String,
    runtime: String,
    instance: String,
    liveness_ms: u64,
    /// A client process: beats as a client, hosts nothing.
    client: bool,
}

impl RegistryClient {
    /// Not reading yet; [`RegistryClient::load`] starts. `client`: this process only
    /// sends and publishes (see the module doc).
    pub(crate) fn new(config: &WorkerConfig, names: &TopicNames, client: bool) -> Self {
        Self {
            client,
            log: OnceLock::new(),
            recipients: Mutex::default(),
            topic: names.registry(),
            runtime: config.runtime_name.clone(),
            instance: config.instance_id.clone(),
            liveness_ms: config.liveness_timeout.as_millis() as u64,
        }
    }

    /// Reads the registry to its end, then tails it until `shutdown`.
    pub(crate) async fn load(
        &self,
        kafka: &KafkaConfig,
        names: &TopicNames,
        shutdown: CancellationToken,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let group = names.registry_group(&self.runtime, &self.instance);
        let log = RegistryLog::load(kafka, &self.topic, &group, timeout, shutdown).await?;
        let _ = self.log.set(log);
        Ok(())
    }

    /// The registry as read so far.
    pub(crate) fn log(&self) -> Result<&RegistryLog, RuntimeError> {
        self.log.get().ok_or(RuntimeError::Stopped)
    }

    /// Stops tailing.
    pub(crate) fn abort(&self) {
        if let Some(log) = self.log.get() {
            log.abort();
        }
    }

    /// The live claim on `agent_type`, if any.
    /// The runtime that claimed `agent_type` first, live or not (for error messages).
    pub(crate) fn first_claimant(&self, agent_type: &str) -> Option<String> {
        let log = self.log.get()?;
        let view = log.view();
        view.claimants(agent_type).first().map(|r| (*r).to_owned())
    }

    pub(crate) fn owner_of(&self, agent_type: &str, now_ms: u64) -> Option<Claim> {
        self.log
            .get()?
            .view()
            .owner(agent_type, now_ms, self.liveness_ms)
            .cloned()
    }

    /// Every agent type with its hosting runtime.
    pub(crate) fn owners(&self, now_ms: u64) -> Vec<(String, String)> {
        self.log
            .get()
            .map(|r| {
                r.view()
                    .owners(now_ms, self.liveness_ms)
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Agent types of this runtime that receive events of `topic_type`.
    pub(crate) fn recipient_types(&self, topic_type: &str, now_ms: u64) -> Vec<String> {
        self.log
            .get()
            .map(|r| {
                self.recipients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(
                        &r.view(),
                        &self.runtime,
                        topic_type,
                        now_ms,
                        self.liveness_ms,
                    )
            })
            .unwrap_or_default()
    }

    /// The liveness timeout this process judges heartbeats by.
    #[cfg(feature = "server")]
    pub(crate) fn liveness_ms(&self) -> u64 {
        self.liveness_ms
    }

    /// Kafka topics this runtime reads as event sources.
    pub(crate) fn source_topics(&self, now_ms: u64) -> std::collections::BTreeSet<String> {
        self.log
            .get()
            .map(|r| {
                r.view()
                    .source_topics(&self.runtime, now_ms, self.liveness_ms)
            })
            .unwrap_or_default()
    }

    /// Subscriptions of this runtime reading `kafka_topic`, with their `keyFrom`.
    pub(crate) fn source_bindings(
        &self,
        kafka_topic: &str,
        now_ms: u64,
    ) -> Vec<(Subscription, KeyFrom)> {
        self.log
            .get()
            .map(|r| {
                r.view()
                    .source_bindings(&self.runtime, kafka_topic, now_ms, self.liveness_ms)
            })
            .unwrap_or_default()
    }

    /// The live subscriptions of the prefix, read to the registry's end first.
    pub(crate) async fn subscriptions(&self, now_ms: u64) -> Vec<Subscription> {
        let Ok(log) = self.log() else {
            return Vec::new();
        };
        if let Err(e) = log.catch_up().await {
            tracing::warn!(error = %e, "listing subscriptions from a registry view that may lag");
        }
        log.view()
            .subscriptions(now_ms, self.liveness_ms)
            .into_iter()
            .map(|r| r.subscription.clone())
            .collect()
    }

    /// Writes a registry record and waits until this process has read it back.
    async fn write(
        &self,
        outputs: &Outputs,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), RuntimeError> {
        let retry_until = std::time::Instant::now() + WRITE_RETRY_FOR;
        let (p, o) = loop {
            match outputs
                .produce(&self.topic, None, key.as_bytes(), value)
                .await
            {
                Ok(at) => break at,
                Err(e) if transient(&e) && std::time::Instant::now() < retry_until => {
                    tracing::debug!(%key, error = %e, "registry write failed; retrying");
                    tokio::time::sleep(WRITE_RETRY_BACKOFF).await;
                }
                Err(e) => return Err(e),
            }
        };
        if self.log()?.wait_applied(p, o, READ_BACK_TIMEOUT).await {
            Ok(())
        } else {
            Err(RuntimeError::Unavailable(format!(
                "registry record {key} not read back within {READ_BACK_TIMEOUT:?}"
            )))
        }
    }

    /// Writes this replica's heartbeat (a client's heartbeat for a client).
    pub(crate) async fn beat(&self, outputs: &Outputs) -> Result<(), RuntimeError> {
        if self.client {
            let hb = ClientHeartbeat {
                instance: self.instance.clone(),
                at_ms: now_ms(),
                valid_ms: self.liveness_ms,
            };
            let value = encode_value("registry client heartbeat", &hb)?;
            return self
                .write(outputs, &client_heartbeat_key(&self.instance), Some(&value))
                .await;
        }
        let hb = Heartbeat {
            runtime: self.runtime.clone(),
            instance: self.instance.clone(),
            at_ms: now_ms(),
            valid_ms: Some(self.liveness_ms),
        };
        let value = encode_value("registry heartbeat", &hb)?;
        self.write(
            outputs,
            &heartbeat_key(&hb.runtime, &hb.instance),
            Some(&value),
        )
        .await
    }

    /// Claims `agent_type` for this runtime: the earliest live claim in the log wins.
    pub(crate) async fn claim(
        &self,
        outputs: &Outputs,
        agent_type: &str,
    ) -> Result<(), RuntimeError> {
        let runtime = &self.runtime;
        if let Some(owner) = self.owner_of(agent_type, now_ms())
            && owner.runtime != *runtime
        {
            return Err(RuntimeError::AgentTypeTaken {
                agent_type: agent_type.to_owned(),
                owner: owner.runtime,
            });
        }
        let key = claim_key(agent_type, runtime);
        for _ in 0..CLAIM_ATTEMPTS {
            let claim = Claim {
                agent_type: agent_type.to_owned(),
                runtime: runtime.clone(),
                instance: self.instance.clone(),
                at_ms: now_ms(),
            };
            let value = encode_value("registry claim", &claim)?;
            self.write(outputs, &key, Some(&value)).await?;
            match self.owner_of(agent_type, now_ms()) {
                Some(owner) if owner.runtime == *runtime => return Ok(()),
                Some(owner) => {
                    // Lost the race: take our claim back so it never shadows the winner.
                    self.write(outputs, &key, None).await?;
                    return Err(RuntimeError::AgentTypeTaken {
                        agent_type: agent_type.to_owned(),
                        owner: owner.runtime,
                    });
                }
                // No live claim at all: our claim was released by a replica of this
                // runtime stopping at the same moment (it took the others for gone,
                // e.g. after a broker outage), or our own heartbeat has lapsed. Beat and
                // claim again.
                None => {
                    tracing::warn!(
                        %agent_type,
                        "a claim did not hold (released by a stopping replica?); claiming again"
                    );
                    self.beat(outputs).await?;
                }
            }
        }
        Err(RuntimeError::Unavailable(format!(
            "the claim of agent type {agent_type:?} did not hold after {CLAIM_ATTEMPTS} writes"
        )))
    }

    /// Claims again each of `types` (hosted here) that the log no longer has a claim of
    /// this runtime for. A replica that stops while the others' heartbeats look lapsed
    /// (after a broker outage every beat is late) takes itself for the runtime's last
    /// replica and releases the runtime's claims; the replicas still running restore
    /// them at their next heartbeat.
    pub(crate) async fn restore_claims(
        &self,
        outputs: &Outputs,
        types: &[String],
    ) -> Result<(), RuntimeError> {
        let missing: Vec<&String> = {
            let log = self.log()?;
            let view = log.view();
            types
                .iter()
                .filter(|t| !view.claimants(t).contains(&self.runtime.as_str()))
                .collect()
        };
        for t in missing {
            tracing::warn!(
                agent_type = %t,
                "this runtime's claim was released while it hosts the type; claiming it again"
            );
            self.claim(outputs, t).await?;
        }
        Ok(())
    }

    /// Adds (or replaces) a subscription owned by this runtime.
    pub(crate) async fn add_subscription(
        &self,
        outputs: &Outputs,
        subscription: Subscription,
        source: Option<SubscriptionSource>,
    ) -> Result<(), RuntimeError> {
        let record = SubscriptionRecord {
            owner: self.runtime.clone(),
            subscription,
            source,
        };
        let value = encode_value("registry subscription", &record)?;
        let key = subscription_key(record.subscription.id());
        self.write(outputs, &key, Some(&value)).await
    }

    /// Removes subscription `id` (of any owner).
    pub(crate) async fn remove_subscription(
        &self,
        outputs: &Outputs,
        id: &str,
    ) -> Result<(), RuntimeError> {
        let log = self.log()?;
        log.catch_up().await?;
        if !log.view().has_subscription(id) {
            return Err(RuntimeError::UnknownSubscription(id.to_owned()));
        }
        self.write(outputs, &subscription_key(id), None).await
    }

    /// Removes this replica's heartbeat; the last live replica of the runtime also
    /// releases its types and subscriptions, so a stopped runtime leaves nothing behind
    /// (others keep serving them). Every record is attempted; the first failure is
    /// returned.
    pub(crate) async fn release(&self, outputs: &Outputs, now_ms: u64) -> Result<(), RuntimeError> {
        if self.client {
            return self
                .write(outputs, &client_heartbeat_key(&self.instance), None)
                .await;
        }
        let (others, types, subs) = {
            let view = self.log()?.view();
            let others = view
                .live_replicas(&self.runtime, now_ms, self.liveness_ms)
                .into_iter()
                .any(|i| i != self.instance);
            (
                others,
                view.claimed_by(&self.runtime),
                view.subscriptions_of(&self.runtime),
            )
        };
        let mut keys = Vec::new();
        if !others {
            keys.extend(types.iter().map(|t| claim_key(t, &self.runtime)));
            keys.extend(subs.iter().map(|id| subscription_key(id)));
        }
        keys.push(heartbeat_key(&self.runtime, &self.instance));
        let mut first = Ok(());
        for key in keys {
            if let Err(e) = self.write(outputs, &key, None).await {
                tracing::warn!(%key, error = %e, "could not release a registry record");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// Writes this replica's heartbeat every `heartbeat_interval` until the runtime stops,
/// and restores its claims when another replica released them ([`RegistryClient::restore_claims`]).
pub(crate) async fn heartbeats(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let (interval, shutdown) = (strong.config.heartbeat_interval, strong.shutdown.clone());
        drop(strong);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        // A beat in progress when the runtime stops is dropped: stop writes the
        // heartbeat's tombstone itself, and nothing reads the registry back after it.
        tokio::select! {
            () = shutdown.cancelled() => return,
            beat = strong.registry.beat(&strong.outputs) => {
                if let Err(e) = beat {
                    tracing::warn!(error = %e, "heartbeat failed");
                    continue;
                }
            }
        }
        if strong.client_only {
            continue;
        }
        let types = strong.hosted.agents().types();
        tokio::select! {
            () = shutdown.cancelled() => return,
            restored = strong.registry.restore_claims(&strong.outputs, &types) => {
                if let Err(e) = restored {
                    tracing::warn!(error = %e, "could not restore this runtime's claims");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn only_errors_of_a_restarting_broker_are_retried() {
        let produce = |code| RuntimeError::kafka("producing", KafkaError::MessageProduction(code));
        assert!(transient(&produce(RDKafkaErrorCode::UnknownPartition)));
        assert!(transient(&produce(RDKafkaErrorCode::NotLeaderForPartition)));
        assert!(!transient(&produce(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(!transient(&produce(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(!transient(&produce(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!transient(&RuntimeError::Unavailable("x".into())));
        // One list with the topic admin's: a metadata timeout of a restarting broker
        // is retried here too, and an unknown partition there.
        assert!(transient(&produce(RDKafkaErrorCode::OperationTimedOut)));
        assert!(crate::admin::broker_restarting(Some(
            RDKafkaErrorCode::UnknownPartition
        )));
        assert!(!crate::admin::broker_restarting(Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(!crate::admin::broker_restarting(None));
    }
}
