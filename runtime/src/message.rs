//! Messages: serde types with a stable name on the wire, and their encoded form.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Content type of JSON-encoded messages (the default).
pub const JSON: &str = "application/json";

/// A message type. `TYPE_NAME` is what goes on the wire (`ce_dataschema`), so it
/// must stay stable when the Rust type is renamed or moved.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use switchboard_runtime::Message;
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping { n: u32 }
/// impl Message for Ping { const TYPE_NAME: &'static str = "example.Ping"; }
/// ```
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable wire name of this message type.
    const TYPE_NAME: &'static str;
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The payload holds another message type than the one asked for.
    #[error("expected message type {expected:?}, got {actual:?}")]
    WrongType {
        /// The type asked for.
        expected: &'static str,
        /// The type the payload carries.
        actual: String,
    },
    /// The content type is not one we decode.
    #[error("unsupported content type {0:?} (only application/json is decoded)")]
    ContentType(String),
    /// The bytes are not valid for the message type.
    #[error("message of type {type_name:?} is not valid JSON for it: {reason}")]
    Invalid {
        /// The message type.
        type_name: String,
        /// The decoder's complaint.
        reason: String,
    },
}

/// An encoded message: its type name, content type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Stable message type name ([`Message::TYPE_NAME`]).
    pub type_name: String,
    /// MIME type of `data`.
    pub content_type: String,
    /// The encoded message.
    pub data: Bytes,
}

impl Payload {
    /// Encodes `message` as JSON.
    pub fn encode<M: Message>(message: &M) -> Result<Self, CodecError> {
        let data = serde_json::to_vec(message).map_err(|e| CodecError::Invalid {
            type_name: M::TYPE_NAME.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            type_name: M::TYPE_NAME.to_owned(),
            content_type: JSON.to_owned(),
            data: data.into(),
        })
    }

    /// A JSON payload of a dynamically named type (HTTP agents, the CLI).
    pub fn json(type_name: impl Into<String>, value: &serde_json::Value) -> Self {
        Self {
            type_name: type_name.into(),
            content_type: JSON.to_owned(),
            data: Bytes::from(value.to_string()),
        }
    }

    /// Decodes into `M`, checking the type name first.
    pub fn decode<M: Message>(&self) -> Result<M, CodecError> {
        if self.type_name != M::TYPE_NAME {
            return Err(CodecError::WrongType {
                expected: M::TYPE_NAME,
                actual: self.type_name.clone(),
            });
        }
        self.decode_json()
    }

    /// Decodes the JSON body into any serde type, ignoring the type name.
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        if !is_json(&self.content_type) {
            return Err(CodecError::ContentType(self.content_type.clone()));
        }
        serde_json::from_slice(&self.data).map_err(|e| CodecError::Invalid {
            type_name: self.type_name.clone(),
            reason: e.to_string(),
        })
    }
}

/// `application/json`, with or without parameters such as `charset`.
pub fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(JSON))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }
    impl Message for Ping {
        const TYPE_NAME: &'static str = "test.Ping";
    }

    #[test]
    fn payloads_round_trip_and_check_their_type() {
        let p = Payload::encode(&Ping { n: 7 }).unwrap();
        assert_eq!(p.type_name, "test.Ping");
        assert_eq!(p.decode::<Ping>().unwrap(), Ping { n: 7 });
        let other = Payload::json("test.Pong", &serde_json::json!({"n": 1}));
        assert!(matches!(
            other.decode::<Ping>(),
            Err(CodecError::WrongType { .. })
        ));
        let garbage = Payload {
            data: Bytes::from_static(b"\xff\x00"),
            ..p.clone()
        };
        let err = garbage.decode::<Ping>().unwrap_err();
        assert!(err.to_string().contains("test.Ping"), "{err}");
        assert!(is_json("application/json; charset=utf-8"));
    }
}
