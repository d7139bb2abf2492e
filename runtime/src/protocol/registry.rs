//! Records of the registry topic `P.registry` (compacted; DESIGN.md §3 and §8): keys
//! and values, written by runtimes and the operator, read by every runtime.
//!
//! Keys: `claim/<agentType>/<runtime>`, `sub/<id>`, `hb/<runtime>/<instance>`,
//! `client/<instance>`.
//! A tombstone (no value) removes the key. How the records are read into a view is
//! `kafka::registry`.

use serde::{Deserialize, Serialize};

use crate::subscription::{Subscription, SubscriptionSource};

/// Owner name of subscriptions written by the operator (never expire).
pub const OPERATOR_OWNER: &str = "operator";

/// A runtime's claim on an agent type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// The claimed type.
    pub agent_type: String,
    /// The claiming runtime.
    pub runtime: String,
    /// The replica that wrote the claim.
    pub instance: String,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// A subscription and who added it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRecord {
    /// The subscription.
    pub subscription: Subscription,
    /// Runtime that added it, or [`OPERATOR_OWNER`].
    pub owner: String,
    /// The Kafka topic it reads instead of the events topic (absent: the events topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SubscriptionSource>,
}

/// A replica's liveness signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The runtime.
    pub runtime: String,
    /// The replica.
    pub instance: String,
    /// When, Unix ms.
    pub at_ms: u64,
    /// How long after `at_ms` the replica counts as alive: the writer's own liveness
    /// timeout, so every reader agrees whatever its settings (absent in records from
    /// older runtimes: readers then use their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_ms: Option<u64>,
}

/// A client process's liveness signal (`start_client`: CLIs, callers without a
/// gateway). Clients host nothing, so this says nothing about any runtime; it lets
/// the operator tell a crashed client's reply channel from a live one's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientHeartbeat {
    /// The client process (its reply channel is `P.reply.<instance>`).
    pub instance: String,
    /// When, Unix ms.
    pub at_ms: u64,
    /// How long after `at_ms` the client counts as alive (its liveness timeout).
    pub valid_ms: u64,
}

/// One registry record, decoded from its key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryRecord {
    /// `claim/<type>/<runtime>`; `None` releases it.
    Claim {
        /// Type and runtime from the key.
        agent_type: String,
        /// Runtime from the key.
        runtime: String,
        /// The claim, or `None` for a tombstone.
        claim: Option<Claim>,
    },
    /// `sub/<id>`; `None` removes it.
    Subscription {
        /// Id from the key.
        id: String,
        /// The subscription, or `None` for a tombstone.
        record: Option<SubscriptionRecord>,
    },
    /// `hb/<runtime>/<instance>`; `None`: the replica stopped.
    Heartbeat {
        /// Runtime from the key.
        runtime: String,
        /// Replica from the key.
        instance: String,
        /// The heartbeat, or `None` for a tombstone.
        heartbeat: Option<Heartbeat>,
    },
    /// `client/<instance>`; `None`: the client stopped.
    ClientHeartbeat {
        /// Client process from the key.
        instance: String,
        /// The heartbeat, or `None` for a tombstone.
        heartbeat: Option<ClientHeartbeat>,
    },
}

/// Key of a claim record.
pub fn claim_key(agent_type: &str, runtime: &str) -> String {
    format!("claim/{agent_type}/{runtime}")
}

/// Key of a subscription record.
pub fn subscription_key(id: &str) -> String {
    format!("sub/{id}")
}

/// Key of a heartbeat record.
pub fn heartbeat_key(runtime: &str, instance: &str) -> String {
    format!("hb/{runtime}/{instance}")
}

/// Key of a client's heartbeat record.
pub fn client_heartbeat_key(instance: &str) -> String {
    format!("client/{instance}")
}

impl RegistryRecord {
    /// Decodes a record; the error names what is wrong.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, String> {
        let key = std::str::from_utf8(key).map_err(|_| "registry key is not UTF-8".to_owned())?;
        let json = |what: &str| -> Result<Option<serde_json::Value>, String> {
            value
                .map(|v| {
                    serde_json::from_slice(v).map_err(|e| format!("registry {what} {key:?}: {e}"))
                })
                .transpose()
        };
        let mut parts = key.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("claim"), Some(t), Some(r)) => Ok(Self::Claim {
                agent_type: t.to_owned(),
                runtime: r.to_owned(),
                claim: json("claim")?
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| e.to_string())?,
            }),
            (Some("sub"), Some(id), None) => Ok(Self::Subscription {
                id: id.to_owned(),
                record: json("subscription")?
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| e.to_string())?,
            }),
            (Some("hb"), Some(r), Some(i)) => Ok(Self::Heartbeat {
                runtime: r.to_owned(),
                instance: i.to_owned(),
                heartbeat: json("heartbeat")?
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| e.to_string())?,
            }),
            (Some("client"), Some(i), None) if !i.is_empty() => Ok(Self::ClientHeartbeat {
                instance: i.to_owned(),
                heartbeat: json("client heartbeat")?
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| format!("registry client heartbeat {key:?}: {e}"))?,
            }),
            _ => Err(format!("unknown registry key {key:?}")),
        }
    }
}

/// The JSON value of a registry record (`what` names it in the error).
pub fn encode_value<T: Serialize>(
    what: &str,
    record: &T,
) -> Result<Vec<u8>, crate::message::CodecError> {
    serde_json::to_vec(record).map_err(|e| crate::message::CodecError::Invalid {
        type_name: what.to_owned(),
        reason: e.to_string(),
    })
}
