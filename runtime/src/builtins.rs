//! Built-in agents of the runtime binary, for demos and tests (DESIGN.md §5):
//!
//! - `echo` replies to every message with the same message (type and data).
//! - `counter` counts every message it gets, RPC or event, per key (so per agent
//!   id), in its agent state; an RPC is counted before the reply, which is
//!   `{"count": n}` of type [`COUNT_TYPE`]. Ten events then one RPC reply `{"count":11}`.
//! - `relay` publishes every message it gets, unchanged, to topic
//!   `relay.publish.topicType` with source = its own key; it replies nothing.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{Agent, AgentError, AgentFactory, HandlerResult};
use crate::config_file::Builtin;
use crate::context::MessageContext;
use crate::ids::TopicId;
use crate::message::Payload;

/// Message type of the counter's replies.
pub const COUNT_TYPE: &str = "switchboard.builtin.Count";

/// The factory of a built-in agent; `relay_topic_type` is required for `relay`.
pub fn factory(builtin: Builtin, relay_topic_type: Option<&str>) -> Result<AgentFactory, String> {
    Ok(match builtin {
        Builtin::Echo => AgentFactory::new(|_| Echo),
        Builtin::Counter => AgentFactory::new(|_| Counter::default()),
        Builtin::Relay => {
            let topic_type = relay_topic_type
                .ok_or("the relay builtin needs relay.publish.topicType")?
                .to_owned();
            // Fails here, at start, rather than on every message.
            TopicId::new(&topic_type, "_").map_err(|e| e.to_string())?;
            AgentFactory::new(move |_| Relay {
                topic_type: topic_type.clone(),
            })
        }
    })
}

/// Replies with what it got.
#[derive(Debug, Default)]
pub struct Echo;

#[async_trait]
impl Agent for Echo {
    async fn on_message(&mut self, message: Payload, _ctx: &MessageContext) -> HandlerResult {
        Ok(Some(message))
    }
}

/// The counter's state and its RPC reply.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Messages received so far, this one included.
    pub count: u64,
}

/// Counts every message per key, persisted in agent state.
#[derive(Debug, Default)]
pub struct Counter {
    state: Count,
}

#[async_trait]
impl Agent for Counter {
    async fn on_message(&mut self, _message: Payload, _ctx: &MessageContext) -> HandlerResult {
        self.state.count += 1;
        let reply = serde_json::to_value(self.state).map_err(AgentError::new)?;
        Ok(Some(Payload::json(COUNT_TYPE, &reply)))
    }

    async fn save_state(&mut self) -> Result<Option<Value>, AgentError> {
        serde_json::to_value(self.state)
            .map(Some)
            .map_err(AgentError::new)
    }

    async fn load_state(&mut self, state: Value) -> Result<(), AgentError> {
        self.state = serde_json::from_value(state).map_err(AgentError::new)?;
        Ok(())
    }
}

/// Republishes every message to one topic type, with its key as source.
#[derive(Debug)]
pub struct Relay {
    topic_type: String,
}

#[async_trait]
impl Agent for Relay {
    async fn on_message(&mut self, message: Payload, ctx: &MessageContext) -> HandlerResult {
        let topic = TopicId::new(&self.topic_type, ctx.recipient.key())?;
        ctx.publish_payload(message, &topic).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentRuntime, SendOptions};
    use crate::ids::AgentId;
    use crate::memory::InMemoryRuntime;
    use crate::subscription::Subscription;
    use serde_json::json;

    #[tokio::test]
    async fn echo_counter_and_relay_behave_as_documented() {
        let rt = InMemoryRuntime::default();
        for (t, b) in [
            ("echo", Builtin::Echo),
            ("counter", Builtin::Counter),
            ("relay", Builtin::Relay),
        ] {
            rt.register_factory(t, factory(b, Some("out")).unwrap())
                .await
                .unwrap();
        }
        let data = json!({"hello": [1, 2]});
        let reply = rt
            .send_payload(
                Payload::json("demo.Hi", &data),
                &AgentId::new("echo", "a").unwrap(),
                SendOptions::default(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.type_name, "demo.Hi");
        assert_eq!(reply.decode_json::<Value>().unwrap(), data);

        // The relay republishes to out/<its key>; the counter subscribed to out counts.
        rt.add_subscription(Subscription::for_type("out", "counter").unwrap())
            .await
            .unwrap();
        rt.add_subscription(Subscription::for_type("in", "relay").unwrap())
            .await
            .unwrap();
        for _ in 0..3 {
            rt.publish_payload(
                Payload::json("demo.Any", &json!(1)),
                &TopicId::new("in", "k1").unwrap(),
                None,
            )
            .await
            .unwrap();
        }
        let counter = AgentId::new("counter", "k1").unwrap();
        let mut last = Value::Null;
        for _ in 0..100 {
            last = rt.agent_save_state(&counter).await.unwrap_or(Value::Null);
            if last == json!({"count": 3}) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(last, json!({"count": 3}), "three relayed events counted");
        let reply = rt
            .send_payload(
                Payload::json("demo.Any", &json!(null)),
                &counter,
                SendOptions::default(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.type_name, COUNT_TYPE);
        assert_eq!(&reply.data[..], br#"{"count":4}"#, "the RPC counts too");
    }

    #[test]
    fn relay_needs_a_valid_topic_type() {
        assert!(factory(Builtin::Relay, None).is_err());
        assert!(factory(Builtin::Relay, Some("bad type")).is_err());
    }
}
