//! Can this process use the broker? Checked before a runtime starts, so that a wrong
//! password, an untrusted CA or a missing ACL is reported by its cause (and retried
//! with backoff by `serve`) instead of surfacing as a start-up timeout.
//!
//! librdkafka reports authentication and TLS failures only through its error
//! callback (requests just time out), so a client context keeps the first such
//! error; authorization failures come back per topic (metadata) and per group
//! (committed offsets).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;

/// Why the broker cannot be used, by cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// SASL authentication was refused (wrong user name or password, or mechanism).
    #[error(
        "SASL authentication failed for user {user:?}: {detail} (check the username and \
         password: SWITCHBOARD_SASL_USERNAME/SWITCHBOARD_SASL_PASSWORD, the AgentRuntime's \
         kafka.security.sasl.secretRef)"
    )]
    Authentication {
        /// The SASL user name.
        user: String,
        /// librdkafka's message.
        detail: String,
    },
    /// The TLS handshake failed (untrusted broker certificate, or the broker refused
    /// the client certificate).
    #[error(
        "TLS handshake with the broker failed: {detail} (is kafka.security.tls the CA that \
         signed the brokers' certificates, and is the client certificate one the brokers trust?)"
    )]
    Tls {
        /// librdkafka's message.
        detail: String,
    },
    /// No ACL allows this principal to use the topic.
    #[error(
        "not authorized for topic {topic} (TOPIC_AUTHORIZATION_FAILED: missing ACL; see \
         `switchboard-runtime acls`)"
    )]
    TopicAuthorization {
        /// The topic.
        topic: String,
    },
    /// No ACL allows this principal to use the consumer group.
    #[error(
        "not authorized for consumer group {group} (GROUP_AUTHORIZATION_FAILED: missing ACL; \
         see `switchboard-runtime acls`)"
    )]
    GroupAuthorization {
        /// The group.
        group: String,
    },
    /// The brokers did not answer (down, wrong address, or a problem librdkafka did
    /// not report).
    #[error("kafka brokers {servers} unreachable: {detail}")]
    Unreachable {
        /// The bootstrap servers.
        servers: String,
        /// What failed.
        detail: String,
    },
}

impl AccessError {
    /// A CamelCase reason for conditions and metrics (bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Authentication { .. } => "KafkaAuthenticationFailed",
            Self::Tls { .. } => "KafkaTlsHandshakeFailed",
            Self::TopicAuthorization { .. } => "KafkaTopicAuthorizationFailed",
            Self::GroupAuthorization { .. } => "KafkaGroupAuthorizationFailed",
            Self::Unreachable { .. } => "KafkaUnreachable",
        }
    }

    /// Classifies an error librdkafka's error callback reported (`None`: not an
    /// authentication or TLS problem).
    pub fn from_client_error(
        cfg: &KafkaConfig,
        code: RDKafkaErrorCode,
        reason: &str,
    ) -> Option<Self> {
        let detail = reason.to_owned();
        match code {
            RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
                Some(Self::Authentication {
                    user: cfg
                        .sasl
                        .as_ref()
                        .map(|s| s.username.clone())
                        .unwrap_or_default(),
                    detail,
                })
            }
            RDKafkaErrorCode::SSL => Some(Self::Tls { detail }),
            // A broker that closes the connection during the TLS handshake (e.g. it
            // rejects our certificate) shows up as a transport error mentioning SSL.
            _ if reason.contains("SSL") && cfg_uses_tls(cfg) => Some(Self::Tls { detail }),
            _ => None,
        }
    }
}

fn cfg_uses_tls(cfg: &KafkaConfig) -> bool {
    matches!(
        cfg.security_protocol,
        crate::config::SecurityProtocol::Ssl | crate::config::SecurityProtocol::SaslSsl
    )
}

/// Keeps the first authentication or TLS error librdkafka reports.
struct ProblemContext {
    config: KafkaConfig,
    problem: Arc<Mutex<Option<AccessError>>>,
}

impl ClientContext for ProblemContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        tracing::debug!(%error, reason, "kafka client error during the access check");
        if let Some(p) = code.and_then(|c| AccessError::from_client_error(&self.config, c, reason))
        {
            let mut slot = self.problem.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(p);
        }
    }
}

impl ConsumerContext for ProblemContext {}

/// What to check: topics this process reads or writes, groups it uses.
#[derive(Debug, Clone, Default)]
pub struct AccessCheck {
    /// Topics that must be described (any ACL on a topic allows Describe).
    pub topics: Vec<String>,
    /// Consumer groups whose committed offsets must be readable, each with a topic
    /// it reads.
    pub groups: Vec<(String, String)>,
}

/// Connects with `cfg` and checks `what`; blocking (run it off the async threads).
pub fn check_blocking(
    cfg: &KafkaConfig,
    what: &AccessCheck,
    timeout: Duration,
) -> Result<(), AccessError> {
    check_blocking_with(cfg, &[], what, timeout)
}

/// [`check_blocking`] with librdkafka properties set on top of `cfg`'s (the operator
/// adds `ssl.ca.pem` and the client certificate it read from Secrets).
pub fn check_blocking_with(
    cfg: &KafkaConfig,
    extra: &[(String, String)],
    what: &AccessCheck,
    timeout: Duration,
) -> Result<(), AccessError> {
    let consumer_config = |group: &str| {
        let mut c = cfg.consumer_config(group);
        for (k, v) in extra {
            c.set(k, v);
        }
        c
    };
    let problem = Arc::new(Mutex::new(None));
    let context = ProblemContext {
        config: cfg.clone(),
        problem: Arc::clone(&problem),
    };
    let group = what
        .groups
        .first()
        .map_or("switchboard-access-check", |(g, _)| g.as_str());
    let unreachable = |detail: String| AccessError::Unreachable {
        servers: cfg.bootstrap_servers.clone(),
        detail,
    };
    let consumer: BaseConsumer<ProblemContext> = consumer_config(group)
        .create_with_context(context)
        .map_err(|e| unreachable(e.to_string()))?;
    // Error events reach the context only while the client is polled.
    let taken = || {
        for _ in 0..10 {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(20))
                && let Some(p) = e
                    .rdkafka_error_code()
                    .and_then(|c| AccessError::from_client_error(cfg, c, &e.to_string()))
            {
                problem
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(p);
            }
        }
        problem.lock().unwrap_or_else(|e| e.into_inner()).take()
    };
    // Short attempts: a refused login is known after the first one, not at `timeout`.
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.fetch_metadata(None, left.min(Duration::from_secs(1))) {
            Ok(_) => break,
            Err(e) => {
                if let Some(p) = taken() {
                    return Err(p);
                }
                if Instant::now() >= deadline {
                    return Err(unreachable(e.to_string()));
                }
            }
        }
    }
    if let Some(p) = taken() {
        return Err(p);
    }
    for topic in &what.topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| taken().unwrap_or_else(|| unreachable(e.to_string())))?;
        for t in md.topics() {
            if t.error().map(RDKafkaErrorCode::from)
                == Some(RDKafkaErrorCode::TopicAuthorizationFailed)
            {
                return Err(AccessError::TopicAuthorization {
                    topic: topic.clone(),
                });
            }
        }
    }
    for (group, topic) in &what.groups {
        // One consumer per group: the group is part of the client's configuration.
        let consumer: BaseConsumer = consumer_config(group)
            .create()
            .map_err(|e| unreachable(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        match consumer.committed_offsets(tpl, timeout) {
            Ok(_) => {}
            Err(e) => match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                    return Err(AccessError::GroupAuthorization {
                        group: group.clone(),
                    });
                }
                Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                    return Err(AccessError::TopicAuthorization {
                        topic: topic.clone(),
                    });
                }
                // A topic that does not exist yet is not an access problem.
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {}
                // librdkafka retries a refused coordinator look-up until the timeout
                // and queues the refusal as a consumer error.
                Some(RDKafkaErrorCode::OperationTimedOut)
                    if (0..10).any(|_| {
                        matches!(consumer.poll(Duration::from_millis(50)),
                            Some(Err(e)) if e.rdkafka_error_code()
                                == Some(RDKafkaErrorCode::GroupAuthorizationFailed))
                    }) =>
                {
                    return Err(AccessError::GroupAuthorization {
                        group: group.clone(),
                    });
                }
                _ => return Err(unreachable(format!("committed offsets of {group}: {e}"))),
            },
        }
    }
    Ok(())
}

/// [`check_blocking`] on a blocking thread.
pub async fn check(
    cfg: &KafkaConfig,
    what: AccessCheck,
    timeout: Duration,
) -> Result<(), AccessError> {
    check_with(cfg, Vec::new(), what, timeout).await
}

/// [`check_blocking_with`] on a blocking thread.
pub async fn check_with(
    cfg: &KafkaConfig,
    extra: Vec<(String, String)>,
    what: AccessCheck,
    timeout: Duration,
) -> Result<(), AccessError> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || check_blocking_with(&cfg, &extra, &what, timeout))
        .await
        .unwrap_or_else(|e| {
            Err(AccessError::Unreachable {
                servers: String::new(),
                detail: format!("access check task failed: {e}"),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SaslCredentials, SaslMechanism, SecurityProtocol};

    #[test]
    fn client_errors_are_classified_by_cause() {
        let mut cfg = KafkaConfig::new("k:1");
        cfg.security_protocol = SecurityProtocol::SaslSsl;
        cfg.sasl = Some(SaslCredentials {
            mechanism: SaslMechanism::ScramSha512,
            username: "alice".into(),
            password: "secret-pw".into(),
        });
        let auth = AccessError::from_client_error(
            &cfg,
            RDKafkaErrorCode::Authentication,
            "SASL authentication error: Authentication failed",
        )
        .unwrap();
        assert_eq!(auth.reason(), "KafkaAuthenticationFailed");
        let text = auth.to_string();
        assert!(
            text.contains("\"alice\"") && !text.contains("secret-pw"),
            "{text}"
        );
        let tls = AccessError::from_client_error(
            &cfg,
            RDKafkaErrorCode::SSL,
            "SSL handshake failed: certificate verify failed",
        )
        .unwrap();
        assert_eq!(tls.reason(), "KafkaTlsHandshakeFailed");
        assert!(
            AccessError::from_client_error(&cfg, RDKafkaErrorCode::AllBrokersDown, "down")
                .is_none()
        );
    }
}
