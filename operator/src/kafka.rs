//! The operator's view of Kafka: topics (create, grow, configs, delete) and registry
//! records, behind a trait so reconcile can be tested without a broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::{Digest, Sha256};
use switchboard_runtime::KafkaConfig;
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
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // KafkaConfig's Debug already redacts the SASL password.
        f.debug_struct("KafkaConnection")
            .field("config", &self.config)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

impl KafkaConnection {
    /// Plaintext, no credentials.
    pub fn plaintext(bootstrap_servers: &str) -> Self {
        Self {
            config: KafkaConfig::new(bootstrap_servers),
            ca_pem: None,
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = self.config.base_client_config();
        c.set("client.id", "switchboard-operator");
        if let Some(pem) = &self.ca_pem {
            c.set("ssl.ca.pem", pem);
        }
        c
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
    /// Writes one registry record (`None`: a tombstone) and waits for the broker's ack.
    async fn write_record(
        &self,
        conn: &KafkaConnection,
        topic: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<()>;
}

/// The real backend: librdkafka clients cached per connection.
#[derive(Default)]
pub struct RdKafka {
    admins: Mutex<HashMap<String, TopicAdmin>>,
    producers: Mutex<HashMap<String, FutureProducer>>,
}

impl RdKafka {
    fn admin(&self, conn: &KafkaConnection) -> Result<TopicAdmin> {
        let mut admins = self.admins.lock().unwrap_or_else(|e| e.into_inner());
        let key = conn.cache_key();
        if let Some(a) = admins.get(&key) {
            return Ok(a.clone());
        }
        let admin = TopicAdmin::from_client_config(&conn.client_config(), KAFKA_TIMEOUT)?;
        admins.insert(key, admin.clone());
        Ok(admin)
    }

    fn producer(&self, conn: &KafkaConnection) -> Result<FutureProducer> {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let key = conn.cache_key();
        if let Some(p) = producers.get(&key) {
            return Ok(p.clone());
        }
        let mut cfg = conn.config.producer_config();
        cfg.set("client.id", "switchboard-operator");
        if let Some(pem) = &conn.ca_pem {
            cfg.set("ssl.ca.pem", pem);
        }
        let producer: FutureProducer = cfg.create().map_err(|e| Error::Kafka(e.to_string()))?;
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

    async fn write_record(
        &self,
        conn: &KafkaConnection,
        topic: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let producer = self.producer(conn)?;
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        producer
            .send(record, KAFKA_TIMEOUT)
            .await
            .map_err(|(e, _)| Error::Kafka(format!("writing {key} to {topic}: {e}")))?;
        Ok(())
    }
}
