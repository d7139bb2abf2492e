//! Sending RPCs and publishing events: the `Transport` behind every message context
//! and behind [`super::KafkaAgentRuntime`]'s own `send_message`/`publish_message`.
//! An RPC looks the recipient type up in the registry, produces the request into the
//! hosting runtime's inbox keyed by the agent key, and waits on this process's reply
//! channel until the reply, the handler's error, the deadline or a cancellation.

use async_trait::async_trait;

use super::Inner;
use crate::context::{OutgoingEvent, OutgoingRpc, Transport};
use crate::error::RuntimeError;
use crate::message::Payload;
use crate::protocol::registry::Claim;
use crate::protocol::wire::{Body, Envelope, now_ms};

impl Inner {
    /// The runtime hosting `agent_type`, reading the registry to its end once if the
    /// type is not known yet (it may have been registered a moment ago).
    async fn owner_of(&self, agent_type: &str) -> Result<Claim, RuntimeError> {
        if let Some(owner) = self.registry.owner_of(agent_type, now_ms()) {
            return Ok(owner);
        }
        self.registry.log()?.catch_up().await.map_err(|e| {
            RuntimeError::Unavailable(format!(
                "looking up the runtime of agent type {agent_type}: {e}"
            ))
        })?;
        if let Some(owner) = self.registry.owner_of(agent_type, now_ms()) {
            return Ok(owner);
        }
        // Claimed, but its runtime's heartbeats lapsed (crashed, or cut off from the
        // broker, e.g. during an outage): not the same as a type nobody hosts.
        Err(match self.registry.first_claimant(agent_type) {
            Some(runtime) => RuntimeError::Unavailable(format!(
                "agent type {agent_type} is hosted by runtime {runtime}, which has no live \
                 replica (no heartbeat within the liveness timeout)"
            )),
            None => RuntimeError::UnknownAgentType(agent_type.to_owned()),
        })
    }
}

#[async_trait]
impl Transport for Inner {
    async fn send(&self, rpc: OutgoingRpc) -> Result<Option<Payload>, RuntimeError> {
        if self.shutdown.is_cancelled() {
            return Err(RuntimeError::Stopped);
        }
        if let Some(id) = &rpc.message_id {
            crate::ids::validate_message_id(id)?;
        }
        let recipient = rpc.recipient;
        let timeout = rpc.timeout.unwrap_or(self.config.rpc_timeout);
        // The timeout covers the whole call: a registry lookup that has to read the
        // registry (a type not known yet, or a cluster that is unreachable) counts too.
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let deadline_ms = now_ms() + timeout.as_millis() as u64;
        let timed_out = || RuntimeError::Timeout {
            agent: recipient.clone(),
            after: timeout,
        };
        let owner = tokio::time::timeout_at(deadline, self.owner_of(recipient.agent_type()))
            .await
            .map_err(|_| timed_out())??;
        let replies = self.replies()?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let source = rpc.sender.as_ref().map_or_else(
            || format!("client/{}", self.config.instance_id),
            ToString::to_string,
        );
        let mut envelope = Envelope::new(
            source,
            rpc.trace,
            Body::Request {
                request_id: request_id.clone(),
                recipient: recipient.clone(),
                sender: rpc.sender,
                reply_to: replies.topic().to_owned(),
                deadline_ms,
                payload: rpc.payload,
            },
        );
        if let Some(id) = rpc.message_id {
            envelope.id = id;
        }
        let reply = replies.expect(&request_id, &recipient);
        let inbox = self.names.inbox(&owner.runtime);
        let cancel = rpc.cancellation.unwrap_or_default();
        let outcome = tokio::select! {
            sent = self.outputs.produce_envelope(&inbox, recipient.key().as_bytes(), &envelope) => match sent {
                Err(e) => Err(e),
                Ok(_) => tokio::select! {
                    r = reply => r.unwrap_or(Err(RuntimeError::Stopped)),
                    () = tokio::time::sleep_until(deadline) => Err(timed_out()),
                    () = cancel.cancelled() => Err(RuntimeError::Cancelled(recipient.clone())),
                },
            },
            () = tokio::time::sleep_until(deadline) => Err(timed_out()),
            () = cancel.cancelled() => Err(RuntimeError::Cancelled(recipient.clone())),
        };
        if outcome.is_err() {
            replies.forget(&request_id);
        }
        self.metrics.rpc(started.elapsed(), outcome.is_ok());
        // A timeout reported by the responder carries its own elapsed time; the
        // caller's is the one it set.
        match outcome {
            Err(RuntimeError::Timeout { agent, .. }) => Err(RuntimeError::Timeout {
                agent,
                after: timeout,
            }),
            other => other,
        }
    }

    async fn publish(&self, event: OutgoingEvent) -> Result<(), RuntimeError> {
        if self.shutdown.is_cancelled() {
            return Err(RuntimeError::Stopped);
        }
        if let Some(id) = &event.message_id {
            crate::ids::validate_message_id(id)?;
        }
        let key = event.topic.source().as_bytes().to_vec();
        let mut envelope = Envelope::new(
            event.topic.source().to_owned(),
            event.trace,
            Body::Event {
                topic: event.topic,
                sender: event.sender,
                recipient_types: Vec::new(),
                payload: event.payload,
            },
        );
        if let Some(id) = event.message_id {
            envelope.id = id;
        }
        self.outputs
            .produce_envelope(&self.names.events(), &key, &envelope)
            .await
            .map(|_| ())
    }
}
