//! Topic administration: create missing topics, grow partitions, delete.
//!
//! Used by the runtime when `createTopics` is on and by the operator. Partitions are
//! never shrunk (Kafka cannot, and re-keying would break agent ownership); a request
//! to do so is reported, not applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;
use crate::kafka::guard::{self, BrokerWatch, ClientKind, GuardContext};
pub use crate::protocol::topics::TopicSpec;

/// What `ensure_topics` did to one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicChange {
    /// It did not exist and was created.
    Created,
    /// It had fewer partitions and was grown.
    Grown {
        /// Partitions before.
        from: i32,
    },
    /// It already matched.
    Unchanged,
    /// It has more partitions than asked for; left as is.
    CannotShrink {
        /// Partitions it has.
        existing: i32,
    },
}

/// Why a topic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The client could not be built or the request not sent.
    #[error("kafka admin request failed: {0}")]
    Kafka(#[from] KafkaError),
    /// The broker refused the operation for one topic.
    #[error("topic {topic}: {code}")]
    Topic {
        /// The topic concerned.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// A blocking metadata call could not complete.
    #[error("metadata request task failed: {0}")]
    Join(String),
}

/// A thin async wrapper around librdkafka's admin client, watched by the orphaned-client
/// guard (`kafka::guard`): whoever caches one asks [`TopicAdmin::orphaned`] and builds a
/// new one when it says so.
#[derive(Clone)]
pub struct TopicAdmin {
    client: Arc<AdminClient<GuardContext>>,
    watch: Arc<BrokerWatch>,
    timeout: Duration,
}

impl TopicAdmin {
    /// Connects with `cfg`; every request waits at most `timeout`.
    pub fn new(cfg: &KafkaConfig, timeout: Duration) -> Result<Self, AdminError> {
        Self::from_client_config(&cfg.base_client_config(), timeout)
    }

    /// Connects with librdkafka properties built by the caller (e.g. the operator adds
    /// `ssl.ca.pem` read from a Secret); every request waits at most `timeout`.
    pub fn from_client_config(
        config: &ClientConfig,
        timeout: Duration,
    ) -> Result<Self, AdminError> {
        let watch = BrokerWatch::new(ClientKind::Admin, "topics");
        let client =
            guard::with_statistics(config).create_with_context(GuardContext::new(&watch))?;
        Ok(Self {
            client: Arc::new(client),
            watch,
            timeout,
        })
    }

    /// Whether librdkafka left this client without any broker to connect to for the
    /// guard's grace (issue #5301): it will never recover and is to be replaced by a new
    /// one on the same settings (then call [`TopicAdmin::replaced`]).
    pub fn orphaned(&self) -> bool {
        self.watch.orphaned()
    }

    /// Says this orphaned client is being replaced (log line and count) and stops its
    /// statistics from counting.
    pub fn replaced(&self) {
        self.watch.replacing();
        self.client.inner().context().retire();
        guard::replaced(ClientKind::Admin, self.watch.what());
    }

    /// The configs set on each named topic (dynamic topic configs only: values the
    /// topic has because someone set them, not broker defaults).
    pub async fn topic_configs(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, BTreeMap<String, String>>, AdminError> {
        let specifiers: Vec<ResourceSpecifier<'_>> = names
            .iter()
            .map(|n| ResourceSpecifier::Topic(n.as_str()))
            .collect();
        let mut out = HashMap::with_capacity(names.len());
        let results = self
            .client
            .describe_configs(&specifiers, &self.options())
            .await?;
        for (name, result) in names.iter().zip(results) {
            let resource = result.map_err(|code| AdminError::Topic {
                topic: name.clone(),
                code,
            })?;
            let set = resource
                .entries
                .iter()
                .filter(|e| matches!(e.source, ConfigSource::DynamicTopic))
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                .collect();
            out.insert(name.clone(), set);
        }
        Ok(out)
    }

    /// Replaces the dynamic configs of `topic` with exactly `config` (Kafka's
    /// AlterConfigs: configs not listed return to the broker default).
    pub async fn set_topic_config(
        &self,
        topic: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        let alter = config.iter().fold(
            AlterConfig::new(ResourceSpecifier::Topic(topic)),
            |a, (k, v)| a.set(k, v),
        );
        for result in self.client.alter_configs([&alter], &self.options()).await? {
            if let Err((_, code)) = result {
                return Err(AdminError::Topic {
                    topic: topic.to_owned(),
                    code,
                });
            }
        }
        Ok(())
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout))
    }

    /// Partition counts of the named topics that exist (absent ones are left out).
    pub async fn partition_counts(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, i32>, AdminError> {
        let client = Arc::clone(&self.client);
        let timeout = self.timeout;
        // librdkafka's metadata call blocks; keep it off the async worker threads.
        let metadata =
            tokio::task::spawn_blocking(move || client.inner().fetch_metadata(None, timeout))
                .await
                .map_err(|e| AdminError::Join(e.to_string()))??;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && names.iter().any(|n| n == t.name()))
            .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
            .collect())
    }

    /// Waits until every named topic exists and each partition has a leader: a topic
    /// just created is not usable at once (metadata propagates asynchronously).
    pub async fn wait_usable(&self, names: &[String]) -> Result<(), AdminError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let client = Arc::clone(&self.client);
            let timeout = self.timeout;
            let metadata =
                tokio::task::spawn_blocking(move || client.inner().fetch_metadata(None, timeout))
                    .await
                    .map_err(|e| AdminError::Join(e.to_string()))?;
            let missing = match &metadata {
                Ok(md) => names
                    .iter()
                    .find(|n| {
                        !md.topics().iter().any(|t| {
                            t.name() == n.as_str()
                                && t.error().is_none()
                                && !t.partitions().is_empty()
                                && t.partitions()
                                    .iter()
                                    .all(|p| p.error().is_none() && p.leader() >= 0)
                        })
                    })
                    .cloned(),
                Err(e) => Some(e.to_string()),
            };
            match missing {
                None => return Ok(()),
                Some(what) if tokio::time::Instant::now() >= deadline => {
                    return Err(AdminError::Topic {
                        topic: what,
                        code: RDKafkaErrorCode::LeaderNotAvailable,
                    });
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Creates missing topics and grows those with too few partitions, then waits
    /// until they are usable.
    pub async fn ensure_topics(
        &self,
        specs: &[TopicSpec],
    ) -> Result<Vec<(String, TopicChange)>, AdminError> {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let existing = self.partition_counts(&names).await?;
        let mut changes = Vec::with_capacity(specs.len());
        let mut to_create = Vec::new();
        let mut to_grow = Vec::new();
        for spec in specs {
            match existing.get(&spec.name) {
                None => to_create.push(spec),
                Some(&n) if n < spec.partitions => {
                    to_grow.push(spec);
                    changes.push((spec.name.clone(), TopicChange::Grown { from: n }));
                }
                Some(&n) if n > spec.partitions => {
                    changes.push((spec.name.clone(), TopicChange::CannotShrink { existing: n }));
                }
                Some(_) => changes.push((spec.name.clone(), TopicChange::Unchanged)),
            }
        }
        if !to_create.is_empty() {
            let new_topics: Vec<NewTopic<'_>> = to_create
                .iter()
                .map(|s| {
                    s.config.iter().fold(
                        NewTopic::new(
                            &s.name,
                            s.partitions,
                            TopicReplication::Fixed(s.replication_factor),
                        ),
                        |t, (k, v)| t.set(k, v),
                    )
                })
                .collect();
            for result in self
                .client
                .create_topics(&new_topics, &self.options())
                .await?
            {
                match result {
                    // Another runtime or the operator created it first: fine.
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => return Err(AdminError::Topic { topic, code }),
                }
            }
            changes.extend(
                to_create
                    .iter()
                    .map(|s| (s.name.clone(), TopicChange::Created)),
            );
        }
        if !to_grow.is_empty() {
            let grow: Vec<NewPartitions<'_>> = to_grow
                .iter()
                .map(|s| NewPartitions::new(&s.name, s.partitions as usize))
                .collect();
            for result in self
                .client
                .create_partitions(&grow, &self.options())
                .await?
            {
                if let Err((topic, code)) = result {
                    return Err(AdminError::Topic { topic, code });
                }
            }
        }
        Ok(changes)
    }

    /// [`TopicAdmin::ensure_topics`], tried again for up to `within` while the cluster
    /// cannot take it yet: a broker that is starting has, for a moment, no registered
    /// broker (`INVALID_REPLICATION_FACTOR`), no controller or no leader, or does not
    /// answer (a replica started during a broker restart failed creating its reply
    /// channel). A replication factor the cluster can never satisfy is reported after
    /// `within`.
    pub async fn ensure_topics_within(
        &self,
        specs: &[TopicSpec],
        within: Duration,
    ) -> Result<Vec<(String, TopicChange)>, AdminError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.ensure_topics(specs).await {
                Err(e) if cluster_starting(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "creating topics failed; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                done => return done,
            }
        }
    }

    /// Deletes topics; topics that do not exist count as deleted.
    pub async fn delete_topics(&self, names: &[String]) -> Result<(), AdminError> {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for result in self.client.delete_topics(&refs, &self.options()).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => return Err(AdminError::Topic { topic, code }),
            }
        }
        Ok(())
    }
}

/// Errors of a cluster that is starting (or restarting), which pass on their own.
fn cluster_starting(error: &AdminError) -> bool {
    match error {
        AdminError::Topic { code, .. } => broker_restarting(Some(*code)),
        AdminError::Kafka(e) => broker_restarting(e.rdkafka_error_code()),
        AdminError::Join(_) => false,
    }
}

/// The one list of error codes a broker that is starting or restarting gives, for a
/// while and then no more: no broker, no controller, no leader, partitions or topics
/// its metadata does not list yet, requests that time out, too few brokers for the
/// replication factor. Start-up steps and registry writes retry these within their
/// bound. Not `MessageTimedOut`: librdkafka gives that only after
/// `message.timeout.ms` (300 s by default), long past any retry window.
pub(crate) fn broker_restarting(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        code,
        Some(
            Code::InvalidReplicationFactor
                | Code::BrokerNotAvailable
                | Code::LeaderNotAvailable
                | Code::NotController
                | Code::NotLeaderForPartition
                | Code::UnknownPartition
                | Code::UnknownTopicOrPartition
                | Code::UnknownTopic
                | Code::RequestTimedOut
                | Code::OperationTimedOut
                | Code::BrokerTransportFailure
                | Code::AllBrokersDown
        )
    )
}
