//! The operator's one error type, with a bounded metric label per class.

use std::time::Duration;

use switchboard_runtime::admin::AdminError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API request failed.
    #[error("kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// A Kafka admin or produce request failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A referenced Secret is missing or lacks a key.
    #[error("secret {name}: {reason}")]
    Secret {
        /// Secret name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An object could not be (de)serialised.
    #[error("serialising {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
    /// An API write did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// A watched object does not deserialize into the operator's types.
    #[error("object does not match the schema: {0}")]
    InvalidObject(String),
    /// The object lacks metadata the API server always sets (name, namespace, uid).
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
}

impl From<AdminError> for Error {
    fn from(e: AdminError) -> Self {
        Self::Kafka(e.to_string())
    }
}

impl Error {
    /// A bounded label for the failure class (never an object name).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => "kube_conflict",
            Self::Kube(kube::Error::Api(s)) if s.code >= 500 => "kube_server",
            Self::Kube(kube::Error::Api(s)) if s.code == 404 => "kube_not_found",
            Self::Kube(_) => "kube",
            Self::Kafka(_) => "kafka",
            Self::Secret { .. } => "secret",
            Self::Serialize { .. } => "serialize",
            Self::Timeout(_) => "timeout",
            Self::MissingMetadata(_) => "missing_metadata",
            Self::InvalidObject(_) => "invalid_object",
        }
    }

    /// How long to wait before retrying, by class: conflicts are retried at once
    /// (someone else wrote first), server errors soon, Kafka and Secrets later.
    pub fn backoff(&self) -> Duration {
        match self.metric_label() {
            "kube_conflict" => Duration::from_millis(500),
            "kube_server" | "kube" | "timeout" => Duration::from_secs(5),
            "kafka" => Duration::from_secs(10),
            "secret" => Duration::from_secs(30),
            _ => Duration::from_secs(60),
        }
    }
}

/// Result of the operator's fallible steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::Kube(kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "y").with_code(code),
        )))
    }

    #[test]
    fn labels_and_backoff_follow_the_error_class() {
        assert_eq!(api(409).metric_label(), "kube_conflict");
        assert_eq!(api(503).metric_label(), "kube_server");
        assert_eq!(api(403).metric_label(), "kube");
        assert!(api(409).backoff() < api(500).backoff());
        assert!(api(500).backoff() < Error::Kafka("down".into()).backoff());
    }
}
