//! The Switchboard operator: reconciles `AgentRuntime` and `AgentSubscription`
//! resources into Kafka topics and runtime pods.

pub mod client;
