//! The [`AgentRuntime`] API of [`KafkaAgentRuntime`]: registering agent types (and
//! claiming them in the registry once started), subscriptions, metadata, state, stop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use serde_json::Value;

use super::{Inner, KafkaAgentRuntime};
use crate::agent::{Agent, AgentFactory, SharedAgent};
use crate::api::{AgentMetadata, AgentRuntime};
use crate::config::ConfigError;
use crate::context::Transport;
use crate::error::RuntimeError;
use crate::ids::AgentId;
use crate::protocol::wire::now_ms;
use crate::subscription::Subscription;

impl Inner {
    /// Clients host no agents: registering one is a usage error.
    fn hosts_agents(&self, agent_type: &str) -> Result<(), RuntimeError> {
        if self.client_only {
            return Err(RuntimeError::Config(ConfigError::invalid(
                "agentType",
                agent_type,
                "a client runtime (start_client) hosts no agents",
            )));
        }
        Ok(())
    }

    /// Claims a type registered after start; on failure the registration is undone.
    async fn claim_if_started(&self, agent_type: &str) -> Result<(), RuntimeError> {
        if !self.started.load(Ordering::SeqCst) {
            return Ok(());
        }
        let claimed = self.registry.claim(&self.outputs, agent_type).await;
        if claimed.is_err() {
            self.hosted.agents().remove_type(agent_type);
        }
        claimed
    }
}

#[async_trait]
impl AgentRuntime for KafkaAgentRuntime {
    async fn register_factory(
        &self,
        agent_type: &str,
        factory: AgentFactory,
    ) -> Result<(), RuntimeError> {
        self.inner.hosts_agents(agent_type)?;
        crate::ids::validate_agent_type(agent_type)?;
        {
            let mut agents = self.inner.hosted.agents();
            agents.check_factory(agent_type, &factory)?;
            agents.add_factory(agent_type, factory);
        }
        self.inner.hosted.type_registered(agent_type);
        self.inner.claim_if_started(agent_type).await
    }

    async fn register_agent_instance_boxed(
        &self,
        agent: Box<dyn Agent>,
        class: &'static str,
        id: AgentId,
    ) -> Result<(), RuntimeError> {
        self.inner.hosts_agents(id.agent_type())?;
        let new_type = {
            let mut agents = self.inner.hosted.agents();
            let new_type = agents.check_instance(&id, class)?;
            agents.add_instance(id.clone(), agent, class);
            new_type
        };
        self.inner.hosted.type_registered(id.agent_type());
        if new_type {
            self.inner.claim_if_started(id.agent_type()).await?;
        }
        Ok(())
    }

    async fn add_subscription(&self, subscription: Subscription) -> Result<(), RuntimeError> {
        self.inner
            .registry
            .add_subscription(&self.inner.outputs, subscription, None)
            .await
    }

    async fn remove_subscription(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner
            .registry
            .remove_subscription(&self.inner.outputs, id)
            .await
    }

    async fn subscriptions(&self) -> Vec<Subscription> {
        self.inner.registry.subscriptions(now_ms()).await
    }

    fn transport(&self) -> &dyn Transport {
        &*self.inner
    }

    async fn agent_metadata(&self, id: &AgentId) -> Result<AgentMetadata, RuntimeError> {
        let owner = self
            .inner
            .registry
            .owner_of(id.agent_type(), now_ms())
            .ok_or_else(|| RuntimeError::UnknownAgentType(id.agent_type().to_owned()))?;
        let agents = self.inner.hosted.agents();
        Ok(AgentMetadata {
            id: id.clone(),
            local: agents.active().contains(id),
            class: agents.class_of(id).unwrap_or_default().to_owned(),
            runtime: owner.runtime,
        })
    }

    async fn agent_load_state(&self, id: &AgentId, state: Value) -> Result<(), RuntimeError> {
        let (agent, _) = self.local_agent(id).await?;
        let mut guard = agent.lock().await;
        guard
            .load_state(state.clone())
            .await
            .map_err(|e| RuntimeError::Handler {
                agent: id.to_string(),
                message: e.to_string(),
            })?;
        self.inner
            .state
            .persist(&self.inner, id, None, &mut **guard)
            .await
    }

    async fn local_agent(&self, id: &AgentId) -> Result<(SharedAgent, String), RuntimeError> {
        // Made now, it would start empty and its next save overwrite the saved state.
        let partition = self.inner.hosted.partition_of(id);
        if !self.inner.state.awaiting_of(&[partition]).is_empty() {
            return Err(RuntimeError::Unavailable(format!(
                "the state of {id} (inbox partition {partition}) is not restored yet"
            )));
        }
        let activated = self.inner.hosted.agents().activate(id, None);
        let (agent, class, created) = activated?;
        if created {
            self.inner.state.restore_into(&self.inner, id, &agent).await;
        }
        Ok((agent, class.to_owned()))
    }

    async fn stop(&self) -> Result<(), RuntimeError> {
        if self.inner.stopped.swap(true, Ordering::SeqCst)
            || !self.inner.started.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        Arc::clone(&self.inner).stop().await
    }
}
