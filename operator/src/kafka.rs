//! The operator's view of Kafka: topics (create, grow, configs, delete) and registry
//! records, behind a trait so reconcile can be tested without a broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use switchboard_runtime::access::{AccessCheck, AccessError};
use switchboard_runtime::kafka::producer::{GuardedProducer, Record};
use switchboard_runtime::protocol::registry::RegistryRecord;
use switchboard_runtime::{KafkaConfig, TopicNames};

use crate::reply_gc::LastBeat;
use switchboard_runtime::admin::{TopicAdmin, TopicChange, TopicSpec};

use crate::error::{Error, Result};

/// How long one Kafka request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// How the operator connects to one Kafka cluster (credentials included; never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConnection {
    /// Servers, security and credentials.
    pub config: KafkaConfig,
    /// PEM of the CA, read from the TLS Secret.
    pub ca_pem: Option<String>,
    /// PEM of the client certificate and of its private key (mTLS), from their Secret.
    pub client_cert_pem: Option<(String, String)>,
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // KafkaConfig's Debug already redacts the SASL password.
        f.debug_struct("KafkaConnection")
            .field("config", &self.config)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|_| "<pem>"),
            )
            .finish()
    }
}

impl KafkaConnection {
    /// Plaintext, no credentials.
    pub fn plaintext(bootstrap_servers: &str) -> Self {
        Self {
            config: KafkaConfig::new(bootstrap_servers),
            ca_pem: None,
            client_cert_pem: None,
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = self.config.base_client_config();
        self.add_pems(&mut c);
        c
    }

    /// The operator's identity and the PEMs read from Secrets (never files).
    fn add_pems(&self, c: &mut ClientConfig) {
        for (k, v) in self.pem_properties() {
            c.set(k, v);
        }
    }

    fn pem_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![("client.id".to_owned(), "switchboard-operator".to_owned())];
        if let Some(pem) = &self.ca_pem {
            props.push(("ssl.ca.pem".to_owned(), pem.clone()));
        }
        if let Some((cert, key)) = &self.client_cert_pem {
            props.push(("ssl.certificate.pem".to_owned(), cert.clone()));
            props.push(("ssl.key.pem".to_owned(), key.clone()));
        }
        props
    }

    /// A key for caching clients; a digest so credentials are not kept in clear twice.
    fn cache_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.config.bootstrap_servers.as_bytes());
        h.update([0]);
        h.update(self.config.security_protocol.as_kafka().as_bytes());
        if let Some(s) = &self.config.sasl {
            for part in [s.mechanism.as_kafka(), &s.username, &s.password] {
                h.update([0]);
                h.update(part.as_bytes());
            }
        }
        if let Some(pem) = &self.ca_pem {
            h.update([0]);
            h.update(pem.as_bytes());
        }
        if let Some((cert, key)) = &self.client_cert_pem {
            for part in [cert, key] {
                h.update([1]);
                h.update(part.as_bytes());
            }
        }
        format!("{:x}", h.finalize())
    }
}

/// What the operator found and did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    /// Topic name.
    pub name: String,
    /// Partitions it has now.
    pub partitions: i32,
    /// Created, grown, unchanged, or too many partitions.
    pub change: TopicChange,
    /// Its configs were changed to match the spec.
    pub config_changed: bool,
}

/// Kafka operations the reconcilers need.
#[async_trait::async_trait]
pub trait KafkaBackend: Send + Sync {
    /// Creates missing topics, grows partitions (never shrinks) and sets configs.
    async fn ensure_topics(
        &self,
        conn: &KafkaConnection,
        specs: &[TopicSpec],
    ) -> Result<Vec<TopicReport>>;
    /// Deletes topics; missing ones count as deleted.
    async fn delete_topics(&self, conn: &KafkaConnection, names: &[String]) -> Result<()>;
    /// Consumer lag of `group` on `topic` (partitions `0..partitions`), as defined by
    /// [`lag_of`].
    async fn consumer_lag(
        &self,
        conn: &KafkaConnection,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<i64>;
    /// Whether `topic` exists and `group` has committed offsets on all its partitions
    /// (a runtime commits its start position the first time it reads a topic).
    async fn source_read(
        &self,
        conn: &KafkaConnection,
        group: &str,
        topic: &str,
    ) -> Result<SourceRead>;
    /// The reply-channel topics of `names`' prefix (`P.reply.*`) and the last
    /// heartbeat of every instance in its registry (instances whose heartbeat was
    /// tombstoned, a graceful stop, are left out).
    async fn reply_channels(
        &self,
        conn: &KafkaConnection,
        names: &TopicNames,
    ) -> Result<(Vec<String>, HashMap<String, LastBeat>)>;
    /// Writes one registry record (`None`: a tombstone) and waits for the broker's ack.
    async fn write_record(
        &self,
        conn: &KafkaConnection,
        topic: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<()>;
    /// After a failed request: why the brokers refuse `conn` on `topics` (wrong
    /// password, untrusted CA, missing ACL), if that is the cause.
    async fn diagnose(&self, _conn: &KafkaConnection, _topics: &[String]) -> Option<AccessError> {
        None
    }
}

/// The last heartbeat of every instance in `registry` (read from the beginning to the
/// end offsets at the start of the read, bounded by [`REGISTRY_READ_TIMEOUT`]).
fn read_heartbeats(
    consumer: &BaseConsumer,
    registry: &str,
    partitions: &[i32],
) -> Result<HashMap<String, LastBeat>> {
    let kafka = |e: rdkafka::error::KafkaError| Error::Kafka(format!("reading {registry}: {e}"));
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(registry, *p, KAFKA_TIMEOUT)
            .map_err(kafka)?;
        if high > low {
            ends.insert(*p, high);
            tpl.add_partition_offset(registry, *p, Offset::Beginning)
                .map_err(kafka)?;
        }
    }
    let mut beats = HashMap::new();
    if ends.is_empty() {
        return Ok(beats);
    }
    consumer.assign(&tpl).map_err(kafka)?;
    let deadline = std::time::Instant::now() + REGISTRY_READ_TIMEOUT;
    while !ends.is_empty() {
        if std::time::Instant::now() >= deadline {
            return Err(Error::Kafka(format!(
                "reading {registry}: not at its end after {REGISTRY_READ_TIMEOUT:?}"
            )));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(kafka)?;
        if m.offset() + 1 >= ends.get(&m.partition()).copied().unwrap_or(0) {
            ends.remove(&m.partition());
        }
        let Some(key) = m.key() else { continue };
        if !key.starts_with(b"hb/") && !key.starts_with(b"client/") {
            continue;
        }
        // A replica's heartbeat, or a client's (`start_client`, the CLI): a client's
        // reply channel is collected like a replica's once its beats stop. `None` for a
        // tombstone.
        let (instance, beat) = match RegistryRecord::decode(key, m.payload()) {
            Ok(RegistryRecord::Heartbeat {
                instance,
                heartbeat,
                ..
            }) => (
                instance,
                heartbeat.map(|h| LastBeat {
                    at_ms: h.at_ms,
                    valid_ms: h.valid_ms,
                }),
            ),
            Ok(RegistryRecord::ClientHeartbeat {
                instance,
                heartbeat,
            }) => (
                instance,
                heartbeat.map(|h| LastBeat {
                    at_ms: h.at_ms,
                    valid_ms: Some(h.valid_ms),
                }),
            ),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "skipping a registry record");
                continue;
            }
        };
        match beat {
            Some(beat) => beats.insert(instance, beat),
            None => beats.remove(&instance),
        };
    }
    Ok(beats)
}

/// How long one read of a registry may take.
const REGISTRY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`KafkaBackend::source_read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRead {
    /// No such topic.
    Missing,
    /// The topic exists; the group has no committed offset on some of its partitions.
    Unread,
    /// The group has committed offsets on every partition of the topic.
    Read,
}

/// Offsets of one partition, as read for a lag measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Earliest retained offset.
    pub low: i64,
    /// End offset (next offset to be written).
    pub high: i64,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
}

/// Records the group has yet to process, summed over partitions. A partition the
/// group never committed counts from its earliest retained offset (the runtime's
/// consumers start there: `auto.offset.reset=earliest`), so records waiting for a
/// runtime that has not run yet count as lag. A committed offset below the earliest
/// retained one (retention deleted unread records) counts from the earliest, too.
pub fn lag_of(partitions: &[PartitionOffsets]) -> i64 {
    partitions
        .iter()
        .map(|p| {
            let from = p.committed.map_or(p.low, |c| c.max(p.low));
            (p.high - from).max(0)
        })
        .sum()
}

/// The partitions of `topic` in `md` (none when it is missing or has an error).
fn partitions_of(md: &rdkafka::metadata::Metadata, topic: &str) -> Vec<i32> {
    md.topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// How a group read reports a Kafka error (with what it was reading).
type KafkaErr<'a> = &'a dyn Fn(rdkafka::error::KafkaError) -> Error;

/// The committed offset of `consumer`'s group on each of `partitions` of `topic`, in
/// their order (`None` where the group has none).
fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    kafka: KafkaErr<'_>,
) -> Result<Vec<Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, KAFKA_TIMEOUT)
        .map_err(kafka)?;
    Ok(partitions
        .iter()
        .map(
            |p| match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect())
}

/// Lag reads running at once: each creates a short-lived librdkafka client (threads,
/// connections), so a burst of reconciles (hundreds of runtimes applied at once) must
/// not create hundreds of them together.
const CONCURRENT_LAG_READS: usize = 4;

/// The real backend: librdkafka clients cached per connection.
pub struct RdKafka {
    /// Replaced when librdkafka orphans them (`TopicAdmin::orphaned`).
    admins: Mutex<HashMap<String, TopicAdmin>>,
    /// Replaced when librdkafka orphans them (`switchboard_runtime::kafka::producer`).
    producers: Mutex<HashMap<String, GuardedProducer>>,
    lag_reads: tokio::sync::Semaphore,
}

impl Default for RdKafka {
    fn default() -> Self {
        Self {
            admins: Mutex::default(),
            producers: Mutex::default(),
            lag_reads: tokio::sync::Semaphore::new(CONCURRENT_LAG_READS),
        }
    }
}

impl RdKafka {
    /// Runs `read` on a short-lived consumer of `group` (it never joins the group nor
    /// commits), off the async threads and within the [`CONCURRENT_LAG_READS`] bound;
    /// Kafka errors read `what: error`.
    async fn read_as_group<T: Send + 'static>(
        &self,
        conn: &KafkaConnection,
        group: &str,
        what: String,
        read: impl FnOnce(&BaseConsumer, KafkaErr<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut cfg = conn.client_config();
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false");
        let _permit = self
            .lag_reads
            .acquire()
            .await
            .map_err(|e| Error::Kafka(e.to_string()))?;
        let task = format!("{what} (task)");
        let kafka = move |e: rdkafka::error::KafkaError| Error::Kafka(format!("{what}: {e}"));
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = cfg.create().map_err(&kafka)?;
            read(&consumer, &kafka)
        })
        .await
        .map_err(|e| Error::Kafka(format!("{task}: {e}")))?
    }

    fn admin(&self, conn: &KafkaConnection) -> Result<TopicAdmin> {
        let mut admins = self.admins.lock().unwrap_or_else(|e| e.into_inner());
        let key = conn.cache_key();
        if let Some(a) = admins.get(&key) {
            if !a.orphaned() {
                return Ok(a.clone());
            }
            // librdkafka dropped every broker (#5301): this client never recovers.
            a.replaced();
        }
        let admin = TopicAdmin::from_client_config(&conn.client_config(), KAFKA_TIMEOUT)?;
        admins.insert(key, admin.clone());
        Ok(admin)
    }

    fn producer(&self, conn: &KafkaConnection) -> Result<GuardedProducer> {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let key = conn.cache_key();
        if let Some(p) = producers.get(&key) {
            return Ok(p.clone());
        }
        let mut cfg = conn.config.producer_config();
        conn.add_pems(&mut cfg);
        let producer =
            GuardedProducer::create(&cfg, "operator").map_err(|e| Error::Kafka(e.to_string()))?;
        producers.insert(key, producer.clone());
        Ok(producer)
    }
}

#[async_trait::async_trait]
impl KafkaBackend for RdKafka {
    async fn ensure_topics(
        &self,
        conn: &KafkaConnection,
        specs: &[TopicSpec],
    ) -> Result<Vec<TopicReport>> {
        let admin = self.admin(conn)?;
        let changes = admin.ensure_topics(specs).await?;
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        if changes
            .iter()
            .any(|(_, c)| matches!(c, TopicChange::Created | TopicChange::Grown { .. }))
        {
            admin.wait_usable(&names).await?;
        }
        let counts = admin.partition_counts(&names).await?;
        let with_config: Vec<String> = specs
            .iter()
            .filter(|s| !s.config.is_empty())
            .map(|s| s.name.clone())
            .collect();
        let current = if with_config.is_empty() {
            HashMap::new()
        } else {
            admin.topic_configs(&with_config).await?
        };
        let mut reports = Vec::with_capacity(specs.len());
        for spec in specs {
            let change = changes
                .iter()
                .find(|(n, _)| *n == spec.name)
                .map(|(_, c)| *c)
                .unwrap_or(TopicChange::Unchanged);
            let empty = BTreeMap::new();
            let have = current.get(&spec.name).unwrap_or(&empty);
            let config_changed = spec.config.iter().any(|(k, v)| have.get(k) != Some(v));
            if config_changed {
                // AlterConfigs replaces the whole set: keep unrelated configs someone set.
                let mut merged = have.clone();
                merged.extend(spec.config.iter().map(|(k, v)| (k.clone(), v.clone())));
                admin.set_topic_config(&spec.name, &merged).await?;
            }
            reports.push(TopicReport {
                name: spec.name.clone(),
                partitions: counts.get(&spec.name).copied().unwrap_or(spec.partitions),
                change,
                config_changed,
            });
        }
        Ok(reports)
    }

    async fn delete_topics(&self, conn: &KafkaConnection, names: &[String]) -> Result<()> {
        Ok(self.admin(conn)?.delete_topics(names).await?)
    }

    async fn consumer_lag(
        &self,
        conn: &KafkaConnection,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<i64> {
        let topic = topic.to_owned();
        let what = "reading lag".to_owned();
        self.read_as_group(conn, group, what, move |consumer, kafka| {
            let ids: Vec<i32> = (0..partitions).collect();
            let committed = committed_offsets(consumer, &topic, &ids, kafka)?;
            let mut offsets = Vec::with_capacity(ids.len());
            for (p, committed) in ids.into_iter().zip(committed) {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, KAFKA_TIMEOUT)
                    .map_err(kafka)?;
                offsets.push(PartitionOffsets {
                    low,
                    high,
                    committed,
                });
            }
            Ok(lag_of(&offsets))
        })
        .await
    }

    async fn source_read(
        &self,
        conn: &KafkaConnection,
        group: &str,
        topic: &str,
    ) -> Result<SourceRead> {
        let topic = topic.to_owned();
        let what = format!("reading source topic {topic:?}");
        self.read_as_group(conn, group, what, move |consumer, kafka| {
            let md = consumer
                .fetch_metadata(Some(&topic), KAFKA_TIMEOUT)
                .map_err(kafka)?;
            let partitions = partitions_of(&md, &topic);
            if partitions.is_empty() {
                return Ok(SourceRead::Missing);
            }
            let committed = committed_offsets(consumer, &topic, &partitions, kafka)?;
            Ok(if committed.iter().all(Option::is_some) {
                SourceRead::Read
            } else {
                SourceRead::Unread
            })
        })
        .await
    }

    async fn reply_channels(
        &self,
        conn: &KafkaConnection,
        names: &TopicNames,
    ) -> Result<(Vec<String>, HashMap<String, LastBeat>)> {
        let (reply_prefix, registry) = (names.reply(""), names.registry());
        // librdkafka wants a group for `assign`; this one never joins or commits.
        let group = format!("{}.operator.reply-gc", names.prefix());
        let what = "reading reply channels".to_owned();
        self.read_as_group(conn, &group, what, move |consumer, kafka| {
            let md = consumer
                .fetch_metadata(None, KAFKA_TIMEOUT)
                .map_err(kafka)?;
            let topics: Vec<String> = md
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && t.name().starts_with(&reply_prefix))
                .map(|t| t.name().to_owned())
                .collect();
            let beats = if topics.is_empty() {
                HashMap::new()
            } else {
                read_heartbeats(consumer, &registry, &partitions_of(&md, &registry))?
            };
            Ok((topics, beats))
        })
        .await
    }

    async fn write_record(
        &self,
        conn: &KafkaConnection,
        topic: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let producer = self.producer(conn)?;
        let record = Record {
            topic,
            key: Some(key.as_bytes()),
            value,
            ..Record::default()
        };
        producer
            .send(record, KAFKA_TIMEOUT)
            .await
            .map_err(|e| Error::Kafka(format!("writing {key} to {topic}: {e}")))?;
        Ok(())
    }

    async fn diagnose(&self, conn: &KafkaConnection, topics: &[String]) -> Option<AccessError> {
        let what = AccessCheck {
            topics: topics.to_vec(),
            groups: Vec::new(),
        };
        switchboard_runtime::access::check_with(
            &conn.config,
            conn.pem_properties(),
            what,
            KAFKA_TIMEOUT,
        )
        .await
        .err()
        .filter(|e| !matches!(e, AccessError::Unreachable { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(low: i64, high: i64, committed: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            low,
            high,
            committed,
        }
    }

    #[test]
    fn lag_counts_from_the_commit_or_the_earliest_retained_record() {
        assert_eq!(lag_of(&[]), 0);
        // Never committed: everything retained is still to be read.
        assert_eq!(lag_of(&[p(0, 7, None), p(3, 5, None)]), 9);
        // Committed: what follows the commit.
        assert_eq!(lag_of(&[p(0, 7, Some(4)), p(0, 5, Some(5))]), 3);
        // Retention removed records below the commit point: count from the earliest.
        assert_eq!(lag_of(&[p(10, 12, Some(2))]), 2);
    }
}
