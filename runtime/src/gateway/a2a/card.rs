//! A2A agent cards (v1.0 fields). The runtime's card at `/.well-known/agent-card.json`
//! has one skill per hosted agent type and the JSON-RPC interface `/a2a` (the agent
//! type named by the message's `metadata.agentType`, or the only one hosted); each type
//! also has its own card at `/a2a/{type}/.well-known/agent-card.json` whose interface,
//! `/a2a/{type}`, needs no naming.

use serde_json::{Value, json};

use crate::gateway::catalog::AgentInfo;

/// The modes every Switchboard agent takes and gives: text parts and JSON data parts.
const MODES: [&str; 2] = ["text/plain", "application/json"];

/// What a card is built from.
pub struct CardContext<'a> {
    /// The runtime's name.
    pub runtime: &'a str,
    /// `scheme://host[:port]` the client reached us at.
    pub base_url: &'a str,
    /// Whether a bearer token is required.
    pub bearer: bool,
}

fn skill(agent: &AgentInfo) -> Value {
    let mut description = agent.description.clone();
    if !agent.message_types.is_empty() {
        let names: Vec<&str> = agent
            .message_types
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        description.push_str(&format!(" Accepts message types: {}.", names.join(", ")));
    }
    json!({
        "id": agent.agent_type,
        "name": agent.agent_type,
        "description": description,
        "tags": ["switchboard", agent.kind],
        "inputModes": MODES,
        "outputModes": MODES,
    })
}

fn card(
    ctx: &CardContext<'_>,
    name: &str,
    description: String,
    path: &str,
    skills: Vec<Value>,
) -> Value {
    let mut card = json!({
        "name": name,
        "description": description,
        "supportedInterfaces": [{
            "url": format!("{}{path}", ctx.base_url),
            "protocolBinding": "JSONRPC",
            "protocolVersion": "1.0",
        }],
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": {
            "streaming": true,
            "pushNotifications": false,
            "extendedAgentCard": false,
        },
        "defaultInputModes": MODES,
        "defaultOutputModes": MODES,
        "skills": skills,
    });
    if ctx.bearer {
        card["securitySchemes"] = json!({
            "bearer": { "httpAuthSecurityScheme": { "scheme": "Bearer" } }
        });
        card["securityRequirements"] = json!([{ "schemes": { "bearer": { "list": [] } } }]);
    }
    card
}

/// The runtime's card: one skill per agent type.
pub fn runtime_card(ctx: &CardContext<'_>, agents: &[AgentInfo]) -> Value {
    let types: Vec<&str> = agents.iter().map(|a| a.agent_type.as_str()).collect();
    card(
        ctx,
        ctx.runtime,
        format!(
            "Switchboard runtime {} hosting agent types {}. Name the type in the message's \
             metadata.agentType, or use the per-type card at /a2a/<type>/.well-known/agent-card.json.",
            ctx.runtime,
            types.join(", ")
        ),
        "/a2a",
        agents.iter().map(skill).collect(),
    )
}

/// The card of one agent type.
pub fn agent_card(ctx: &CardContext<'_>, agent: &AgentInfo) -> Value {
    card(
        ctx,
        &agent.agent_type,
        agent.description.clone(),
        &format!("/a2a/{}", agent.agent_type),
        vec![skill(agent)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::{AgentEntry, Builtin};

    #[test]
    fn cards_have_the_v1_fields_and_a_skill_per_type() {
        let agents: Vec<AgentInfo> = [("echo", Builtin::Echo), ("counter", Builtin::Counter)]
            .into_iter()
            .map(|(t, b)| {
                AgentInfo::from_entry(&AgentEntry {
                    agent_type: t.into(),
                    builtin: Some(b),
                    ..AgentEntry::default()
                })
            })
            .collect();
        let ctx = CardContext {
            runtime: "rt1",
            base_url: "http://127.0.0.1:8080",
            bearer: true,
        };
        let c = runtime_card(&ctx, &agents);
        for field in [
            "name",
            "description",
            "supportedInterfaces",
            "version",
            "capabilities",
            "defaultInputModes",
            "defaultOutputModes",
            "skills",
        ] {
            assert!(c.get(field).is_some(), "{field}");
        }
        assert_eq!(
            c["supportedInterfaces"][0]["url"],
            "http://127.0.0.1:8080/a2a"
        );
        assert_eq!(c["supportedInterfaces"][0]["protocolBinding"], "JSONRPC");
        assert_eq!(c["capabilities"]["streaming"], true);
        assert_eq!(c["skills"].as_array().unwrap().len(), 2);
        assert_eq!(c["skills"][1]["id"], "counter");
        assert!(c["securitySchemes"]["bearer"].is_object());
        let one = agent_card(&ctx, &agents[0]);
        assert_eq!(
            one["supportedInterfaces"][0]["url"],
            "http://127.0.0.1:8080/a2a/echo"
        );
    }
}
