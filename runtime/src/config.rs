//! Kafka connection settings: one struct, validated once, errors naming the field.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rdkafka::ClientConfig;

/// A configuration value that was rejected; names the field and the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason} (got {value:?})")]
pub struct ConfigError {
    /// Dotted path of the field, as written in the config file.
    pub field: String,
    /// The offending value (secrets are never put here).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// Builds an error for `field` holding `value`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// How clients talk to the brokers (Kafka's `security.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS without SASL.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's spelling.
    pub fn as_kafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// The runtime config file's spelling (`PLAINTEXT`, `SASL_SSL`, ...).
    pub fn as_config(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

impl FromStr for SecurityProtocol {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            _ => Err(ConfigError::invalid(
                "kafka.security.protocol",
                s,
                "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
            )),
        }
    }
}

/// SASL mechanisms supported without extra system libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// Username and password sent as is (use with TLS).
    Plain,
    /// SCRAM with SHA-256.
    ScramSha256,
    /// SCRAM with SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// Kafka's spelling.
    pub fn as_kafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            _ => Err(ConfigError::invalid(
                "kafka.security.sasl.mechanism",
                s,
                "must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
            )),
        }
    }
}

/// SASL credentials. The password never appears in `Debug` output or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// Which SASL mechanism.
    pub mechanism: SaslMechanism,
    /// SASL username.
    pub username: String,
    /// SASL password.
    pub password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Which consumer group protocol the inbox and events groups speak
/// (`kafka.groupProtocol`; Kafka's `group.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupProtocol {
    /// The classic protocol: client-side cooperative-sticky assignment, session and
    /// heartbeat timeouts set by the client, group-wide JoinGroup/SyncGroup rounds.
    #[default]
    Classic,
    /// KIP-848 (Kafka 4.0+, librdkafka 2.12+): the broker assigns, each member
    /// reconciles on its own heartbeat; no group-wide barrier on join or leave
    /// (docs/tuning.md has the measured difference).
    Consumer,
}

impl GroupProtocol {
    /// librdkafka's and the config file's spelling.
    pub fn as_kafka(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Consumer => "consumer",
        }
    }
}

impl FromStr for GroupProtocol {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(Self::Classic),
            "consumer" => Ok(Self::Consumer),
            _ => Err(ConfigError::invalid(
                "kafka.groupProtocol",
                s,
                "must be classic or consumer",
            )),
        }
    }
}

/// The broker-side assignors of the consumer protocol (`group.remote.assignor`).
pub const REMOTE_ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Client properties the consumer protocol forbids on the client (librdkafka refuses
/// to create the consumer): the broker owns assignment and liveness there.
const CLASSIC_ONLY_PROPERTIES: [&str; 4] = [
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
];

/// Connection settings shared by every Kafka client of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// `client.id` reported to the brokers.
    pub client_id: String,
    /// Transport security.
    pub security_protocol: SecurityProtocol,
    /// Required for the SASL protocols, forbidden otherwise.
    pub sasl: Option<SaslCredentials>,
    /// PEM file with the CA that signed the brokers' certificates (TLS protocols).
    pub ssl_ca_location: Option<String>,
    /// PEM file with this client's certificate, for mTLS (with `ssl_key_location`).
    pub ssl_certificate_location: Option<String>,
    /// PEM file with this client's private key, for mTLS (with `ssl_certificate_location`).
    pub ssl_key_location: Option<String>,
    /// librdkafka properties applied to producers (e.g. `linger.ms`), last wins.
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties applied to consumers (e.g. `fetch.wait.max.ms`), last wins.
    pub consumer: BTreeMap<String, String>,
    /// Group protocol of the inbox and events groups.
    pub group_protocol: GroupProtocol,
    /// Broker-side assignor with [`GroupProtocol::Consumer`] (`uniform`, `range`);
    /// `None`: the broker's default (`uniform`).
    pub group_remote_assignor: Option<String>,
}

impl KafkaConfig {
    /// Plaintext settings for `bootstrap_servers` with defaults elsewhere.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "switchboard".to_owned(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            group_protocol: GroupProtocol::default(),
            group_remote_assignor: None,
        }
    }

    /// Reads `SWITCHBOARD_BOOTSTRAP_SERVERS` (required), `SWITCHBOARD_CLIENT_ID`, the
    /// security variables of [`KafkaConfig::security_from_lookup`] and
    /// `SWITCHBOARD_GROUP_PROTOCOL`, `SWITCHBOARD_GROUP_REMOTE_ASSIGNOR`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`KafkaConfig::from_env`], reading variables through `get` (testable).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bootstrap = get("SWITCHBOARD_BOOTSTRAP_SERVERS").ok_or_else(|| {
            ConfigError::invalid("SWITCHBOARD_BOOTSTRAP_SERVERS", "", "is required")
        })?;
        let mut cfg = Self::new(bootstrap);
        if let Some(id) = get("SWITCHBOARD_CLIENT_ID") {
            cfg.client_id = id;
        }
        cfg.security_from_lookup(&get)?;
        cfg.apply_group_env(&get)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets the security fields from `SWITCHBOARD_SECURITY_PROTOCOL`,
    /// `SWITCHBOARD_SASL_MECHANISM`, `SWITCHBOARD_SASL_USERNAME`, `SWITCHBOARD_SASL_PASSWORD`,
    /// `SWITCHBOARD_SSL_CA_LOCATION`, `SWITCHBOARD_SSL_CERTIFICATE_LOCATION` and
    /// `SWITCHBOARD_SSL_KEY_LOCATION`, where set (the CLI's `send` and `publish` use it).
    pub fn security_from_lookup(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(p) = get("SWITCHBOARD_SECURITY_PROTOCOL") {
            self.security_protocol = p.parse()?;
        }
        if let Some(m) = get("SWITCHBOARD_SASL_MECHANISM") {
            self.sasl = Some(SaslCredentials {
                mechanism: m.parse()?,
                username: get("SWITCHBOARD_SASL_USERNAME").unwrap_or_default(),
                password: get("SWITCHBOARD_SASL_PASSWORD").unwrap_or_default(),
            });
        }
        let set = |slot: &mut Option<String>, var: &str| {
            if let Some(v) = get(var) {
                *slot = Some(v);
            }
        };
        set(&mut self.ssl_ca_location, "SWITCHBOARD_SSL_CA_LOCATION");
        set(
            &mut self.ssl_certificate_location,
            "SWITCHBOARD_SSL_CERTIFICATE_LOCATION",
        );
        set(&mut self.ssl_key_location, "SWITCHBOARD_SSL_KEY_LOCATION");
        Ok(())
    }

    /// Applies `SWITCHBOARD_GROUP_PROTOCOL` and `SWITCHBOARD_GROUP_REMOTE_ASSIGNOR`.
    pub fn apply_group_env(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(p) = get("SWITCHBOARD_GROUP_PROTOCOL") {
            self.group_protocol = p.parse().map_err(|e: ConfigError| ConfigError {
                field: "SWITCHBOARD_GROUP_PROTOCOL".into(),
                ..e
            })?;
        }
        if let Some(a) = get("SWITCHBOARD_GROUP_REMOTE_ASSIGNOR") {
            self.group_remote_assignor = Some(a);
        }
        Ok(())
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_group()?;
        let servers = self.bootstrap_servers.trim();
        if servers.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrapServers",
                servers,
                "must not be empty",
            ));
        }
        for server in servers.split(',') {
            let server = server.trim();
            let port = server.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            if !matches!(port, Some((h, Ok(p))) if !h.is_empty() && p != 0) {
                return Err(ConfigError::invalid(
                    "kafka.bootstrapServers",
                    server,
                    "each entry must be HOST:PORT",
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.clientId",
                "",
                "must not be empty",
            ));
        }
        match (&self.sasl, self.security_protocol.uses_sasl()) {
            (None, true) => {
                return Err(ConfigError::invalid(
                    "kafka.security.sasl",
                    self.security_protocol.as_kafka(),
                    "is required for SASL_PLAINTEXT and SASL_SSL",
                ));
            }
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    "kafka.security.sasl",
                    self.security_protocol.as_kafka(),
                    "is only allowed with SASL_PLAINTEXT or SASL_SSL",
                ));
            }
            (Some(s), true) if s.username.is_empty() => {
                return Err(ConfigError::invalid(
                    "kafka.security.sasl.username",
                    "",
                    "must not be empty",
                ));
            }
            _ => {}
        }
        if self.ssl_ca_location.is_some() && !self.security_protocol.uses_tls() {
            return Err(ConfigError::invalid(
                "kafka.security.tls.caLocation",
                self.security_protocol.as_kafka(),
                "is only allowed with SSL or SASL_SSL",
            ));
        }
        match (&self.ssl_certificate_location, &self.ssl_key_location) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "kafka.security.tls.keyLocation",
                    "",
                    "is required with tls.certLocation (client certificate and key go together)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "kafka.security.tls.certLocation",
                    "",
                    "is required with tls.keyLocation (client certificate and key go together)",
                ));
            }
            (Some(_), Some(_)) if !self.security_protocol.uses_tls() => {
                return Err(ConfigError::invalid(
                    "kafka.security.tls.certLocation",
                    self.security_protocol.as_kafka(),
                    "a client certificate is only allowed with SSL or SASL_SSL",
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn validate_group(&self) -> Result<(), ConfigError> {
        match (self.group_protocol, &self.group_remote_assignor) {
            (GroupProtocol::Classic, Some(a)) => {
                return Err(ConfigError::invalid(
                    "kafka.groupRemoteAssignor",
                    a,
                    "is only allowed with groupProtocol consumer",
                ));
            }
            (GroupProtocol::Consumer, Some(a)) if !REMOTE_ASSIGNORS.contains(&a.as_str()) => {
                return Err(ConfigError::invalid(
                    "kafka.groupRemoteAssignor",
                    a,
                    "must be uniform or range",
                ));
            }
            _ => {}
        }
        if self.group_protocol == GroupProtocol::Consumer
            && let Some(k) = CLASSIC_ONLY_PROPERTIES
                .iter()
                .find(|k| self.consumer.contains_key(**k))
        {
            return Err(ConfigError::invalid(
                format!("kafka.consumer.{k}"),
                &self.consumer[*k],
                "is not allowed with groupProtocol consumer: the broker assigns partitions and \
                 sets the session (group.consumer.session.timeout.ms, \
                 group.consumer.heartbeat.interval.ms)",
            ));
        }
        Ok(())
    }

    /// Settings common to every client: servers, identity, security.
    pub fn base_client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            .set("security.protocol", self.security_protocol.as_kafka());
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanism", s.mechanism.as_kafka())
                .set("sasl.username", &s.username)
                .set("sasl.password", &s.password);
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca);
        }
        if let Some(cert) = &self.ssl_certificate_location {
            c.set("ssl.certificate.location", cert);
        }
        if let Some(key) = &self.ssl_key_location {
            c.set("ssl.key.location", key);
        }
        c
    }

    /// Producer settings: idempotent (no duplicates or reordering on retry), acks=all,
    /// no lingering, then the user's passthrough properties.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base_client_config();
        // murmur2_random is the Java client's partitioner: keys land where Java
        // producers and the runtime's own ownership computation expect them.
        // Latency-first without losing throughput (docs/tuning.md, measured):
        // linger.ms 0 sends an RPC's request and reply at once (1 ms cost ~2.5 ms
        // per RPC on loopback); one produce request in flight per broker makes
        // records that arrive meanwhile wait for it and leave together in the next
        // one, so batches grow with load by themselves (at 5 in flight and linger 0,
        // concurrent RPCs ran a third slower than at linger 1).
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("max.in.flight.requests.per.connection", "1")
            .set("partitioner", "murmur2_random");
        for (k, v) in &self.producer {
            c.set(k, v);
        }
        c
    }

    /// Consumer settings for `group_id`: manual offset commits only (we commit what
    /// is done, never what was merely fetched), then the user's passthrough properties.
    /// For consumers that assign partitions themselves or join a classic group; the
    /// inbox and events groups use [`KafkaConfig::group_consumer_config`].
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        self.consumer_config_for(group_id, GroupProtocol::Classic)
    }

    /// Settings of a subscribing group member (the inbox and events groups) in the
    /// configured [`GroupProtocol`]: classic members assign cooperative-sticky on the
    /// client; consumer-protocol members leave assignment and liveness to the broker.
    pub fn group_consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.consumer_config_for(group_id, self.group_protocol);
        match self.group_protocol {
            GroupProtocol::Classic => {
                if !self.consumer.contains_key("partition.assignment.strategy") {
                    c.set("partition.assignment.strategy", "cooperative-sticky");
                }
            }
            GroupProtocol::Consumer => {
                c.set("group.protocol", "consumer");
                if let Some(a) = &self.group_remote_assignor {
                    c.set("group.remote.assignor", a);
                }
            }
        }
        c
    }

    fn consumer_config_for(&self, group_id: &str, protocol: GroupProtocol) -> ClientConfig {
        let mut c = self.base_client_config();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        if protocol == GroupProtocol::Classic {
            // A crashed replica's agents move after 10 s rather than Kafka's default
            // 45 s; a 1 s heartbeat makes joins and scale-outs quick. (The consumer
            // protocol takes both from the broker: group.consumer.session.timeout.ms,
            // 45 s by default, and group.consumer.heartbeat.interval.ms, 5 s.)
            c.set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000");
        }
        for (k, v) in &self.consumer {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn from_env_reads_sasl_settings() {
        let cfg = KafkaConfig::from_lookup(lookup(&[
            ("SWITCHBOARD_BOOTSTRAP_SERVERS", "k1:9093,k2:9093"),
            ("SWITCHBOARD_SECURITY_PROTOCOL", "SASL_SSL"),
            ("SWITCHBOARD_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("SWITCHBOARD_SASL_USERNAME", "alice"),
            ("SWITCHBOARD_SASL_PASSWORD", "s3cret"),
        ]))
        .unwrap();
        assert_eq!(cfg.security_protocol, SecurityProtocol::SaslSsl);
        let client = cfg.producer_config();
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("enable.idempotence"), Some("true"));
        assert!(
            !format!("{cfg:?}").contains("s3cret"),
            "password leaked into Debug"
        );
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let err = KafkaConfig::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(err.field, "SWITCHBOARD_BOOTSTRAP_SERVERS");

        let err = KafkaConfig::new("localhost").validate().unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.value.as_str()),
            ("kafka.bootstrapServers", "localhost")
        );

        let err = "TLS".parse::<SecurityProtocol>().unwrap_err();
        assert_eq!(err.field, "kafka.security.protocol");

        let mut cfg = KafkaConfig::new("k:1");
        cfg.security_protocol = SecurityProtocol::SaslPlaintext;
        assert_eq!(cfg.validate().unwrap_err().field, "kafka.security.sasl");
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_tls() {
        let mut cfg = KafkaConfig::new("k:1");
        cfg.security_protocol = SecurityProtocol::Ssl;
        cfg.ssl_certificate_location = Some("/tls/tls.crt".into());
        assert_eq!(
            cfg.validate().unwrap_err().field,
            "kafka.security.tls.keyLocation"
        );
        cfg.ssl_key_location = Some("/tls/tls.key".into());
        cfg.validate().unwrap();
        let c = cfg.base_client_config();
        assert_eq!(c.get("ssl.certificate.location"), Some("/tls/tls.crt"));
        assert_eq!(c.get("ssl.key.location"), Some("/tls/tls.key"));
        cfg.security_protocol = SecurityProtocol::SaslPlaintext;
        cfg.sasl = Some(SaslCredentials {
            mechanism: SaslMechanism::ScramSha512,
            username: "u".into(),
            password: "p".into(),
        });
        assert_eq!(
            cfg.validate().unwrap_err().field,
            "kafka.security.tls.certLocation"
        );
    }

    #[test]
    fn producer_defaults_are_latency_first_and_durable() {
        let c = KafkaConfig::new("k:1").producer_config();
        assert_eq!(c.get("linger.ms"), Some("0"), "RPCs must not linger");
        assert_eq!(c.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn group_protocol_switches_the_group_settings() {
        let mut cfg = KafkaConfig::new("k:1");
        cfg.group_protocol = GroupProtocol::Classic;
        let c = cfg.group_consumer_config("g");
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(c.get("session.timeout.ms"), Some("10000"));
        assert_eq!(c.get("group.protocol"), None);

        cfg.group_protocol = GroupProtocol::Consumer;
        cfg.group_remote_assignor = Some("range".into());
        cfg.validate().unwrap();
        let c = cfg.group_consumer_config("g");
        assert_eq!(c.get("group.protocol"), Some("consumer"));
        assert_eq!(c.get("group.remote.assignor"), Some("range"));
        for k in CLASSIC_ONLY_PROPERTIES {
            assert_eq!(
                c.get(k),
                None,
                "{k} must not be set with the consumer protocol"
            );
        }
        // Assign-only consumers (registry, replies, state) keep the classic settings.
        assert_eq!(cfg.consumer_config("g").get("group.protocol"), None);
    }

    #[test]
    fn group_protocol_errors_name_the_field() {
        let cfg = KafkaConfig::from_lookup(lookup(&[
            ("SWITCHBOARD_BOOTSTRAP_SERVERS", "k:1"),
            ("SWITCHBOARD_GROUP_PROTOCOL", "new"),
        ]))
        .unwrap_err();
        assert_eq!(
            (cfg.field.as_str(), cfg.value.as_str()),
            ("SWITCHBOARD_GROUP_PROTOCOL", "new")
        );
        let cfg = KafkaConfig::from_lookup(lookup(&[
            ("SWITCHBOARD_BOOTSTRAP_SERVERS", "k:1"),
            ("SWITCHBOARD_GROUP_PROTOCOL", "classic"),
            ("SWITCHBOARD_GROUP_REMOTE_ASSIGNOR", "uniform"),
        ]))
        .unwrap_err();
        assert_eq!(cfg.field, "kafka.groupRemoteAssignor");

        let mut cfg = KafkaConfig::new("k:1");
        cfg.group_protocol = GroupProtocol::Consumer;
        cfg.group_remote_assignor = Some("sticky".into());
        assert_eq!(
            cfg.validate().unwrap_err().field,
            "kafka.groupRemoteAssignor"
        );
        cfg.group_remote_assignor = None;
        cfg.consumer
            .insert("session.timeout.ms".into(), "6000".into());
        let err = cfg.validate().unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.value.as_str()),
            ("kafka.consumer.session.timeout.ms", "6000")
        );
        cfg.group_protocol = GroupProtocol::Classic;
        cfg.validate().unwrap();
        assert_eq!(
            cfg.group_consumer_config("g").get("session.timeout.ms"),
            Some("6000")
        );
    }

    #[test]
    fn passthrough_properties_override_defaults() {
        let mut cfg = KafkaConfig::new("k:1");
        cfg.producer.insert("linger.ms".into(), "20".into());
        cfg.consumer.insert("fetch.wait.max.ms".into(), "10".into());
        assert_eq!(cfg.producer_config().get("linger.ms"), Some("20"));
        assert_eq!(
            cfg.consumer_config("g").get("fetch.wait.max.ms"),
            Some("10")
        );
        assert_eq!(
            cfg.consumer_config("g").get("enable.auto.commit"),
            Some("false")
        );
    }
}
