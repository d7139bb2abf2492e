//! The CRDs install on the real API server and its CEL rules reject invalid objects
//! with our messages (one test per rule).

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

mod operator_support;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchboard_crds::{AgentRuntime, AgentSubscription};
use switchboard_e2e::crds::{FIELD_MANAGER, install_crds};
use switchboard_e2e::env;

fn runtime(spec: Value) -> AgentRuntime {
    serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": "rt" }, "spec": spec,
    }))
    .unwrap()
}

fn spec() -> Value {
    json!({ "kafka": { "bootstrapServers": "kafka:9092" }, "agents": [{ "type": "echo", "builtin": "echo" }] })
}

/// Creates (dry run) and returns the API server's rejection message.
async fn rejected(ar: AgentRuntime) -> String {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let api: Api<AgentRuntime> = Api::namespaced(client, "default");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&pp, &ar).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            s.message
        }
        other => panic!("expected a 422 rejection, got {other:?}"),
    }
}

/// Creates (dry run) and fails unless the API server accepts it.
async fn accepted(ar: AgentRuntime) {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let api: Api<AgentRuntime> = Api::namespaced(client, "default");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&pp, &ar).await.unwrap();
}

#[tokio::test]
async fn a_valid_runtime_is_accepted() {
    accepted(runtime(spec())).await;
}

#[tokio::test]
async fn replicas_and_autoscaling_are_mutually_exclusive() {
    let mut s = spec();
    s["replicas"] = json!(2);
    s["autoscaling"] = json!({ "minReplicas": 1, "maxReplicas": 3 });
    let msg = rejected(runtime(s)).await;
    assert!(
        msg.contains("replicas and autoscaling are mutually exclusive"),
        "{msg}"
    );
}

#[tokio::test]
async fn min_replicas_must_not_exceed_max_replicas() {
    let mut s = spec();
    s["autoscaling"] = json!({ "minReplicas": 4, "maxReplicas": 3 });
    let msg = rejected(runtime(s)).await;
    assert!(
        msg.contains("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
        "{msg}"
    );
}

#[tokio::test]
async fn topic_prefix_must_be_a_kafka_topic_name() {
    let mut s = spec();
    s["kafka"]["topicPrefix"] = json!("team/a.");
    let msg = rejected(runtime(s)).await;
    assert!(
        msg.contains("topicPrefix must be a Kafka topic name"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_remote_assignor_needs_the_consumer_group_protocol() {
    let mut s = spec();
    s["kafka"]["groupRemoteAssignor"] = json!("range");
    let msg = rejected(runtime(s.clone())).await;
    assert!(
        msg.contains("groupRemoteAssignor is only allowed with groupProtocol consumer"),
        "{msg}"
    );
    s["kafka"]["groupProtocol"] = json!("classic");
    rejected(runtime(s.clone())).await;
    s["kafka"]["groupProtocol"] = json!("consumer");
    accepted(runtime(s)).await;
}

#[tokio::test]
async fn agent_type_names_are_validated() {
    let mut s = spec();
    s["agents"] = json!([{ "type": "no spaces", "builtin": "echo" }]);
    let msg = rejected(runtime(s)).await;
    assert!(
        msg.contains("agent type must be 1-63 characters of [A-Za-z0-9_.-]"),
        "{msg}"
    );
}

#[tokio::test]
async fn agent_types_are_unique() {
    let mut s = spec();
    s["agents"] =
        json!([{ "type": "echo", "builtin": "echo" }, { "type": "echo", "builtin": "counter" }]);
    let msg = rejected(runtime(s)).await;
    assert!(
        msg.contains("agent types must be unique within an AgentRuntime"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_agent_has_exactly_one_kind() {
    for agent in [
        json!({ "type": "echo", "builtin": "echo", "http": { "url": "http://127.0.0.1:1/x" } }),
        json!({ "type": "echo", "builtin": "echo", "code": {} }),
        json!({ "type": "echo", "http": { "url": "http://127.0.0.1:1/x" }, "a2a": { "url": "http://127.0.0.1:1/a2a" } }),
        json!({ "type": "echo", "builtin": "echo", "mcp": { "url": "http://127.0.0.1:1/mcp", "tool": "t" } }),
        json!({ "type": "echo" }),
    ] {
        let mut s = spec();
        s["agents"] = json!([agent]);
        s["template"] = json!({ "command": ["python"] });
        let msg = rejected(runtime(s)).await;
        assert!(
            msg.contains("exactly one of builtin, http, code, llm, a2a and mcp is required"),
            "{agent}: {msg}"
        );
    }
}

#[tokio::test]
async fn relay_settings_go_with_the_relay_builtin() {
    let mut s = spec();
    s["agents"] = json!([{ "type": "echo", "builtin": "echo", "relay": { "publish": { "topicType": "t" } } }]);
    let msg = rejected(runtime(s)).await;
    assert!(
        msg.contains("relay settings are only for the relay builtin"),
        "{msg}"
    );
    let mut s = spec();
    s["agents"] = json!([{ "type": "relay", "builtin": "relay" }]);
    let msg = rejected(runtime(s)).await;
    assert!(
        msg.contains("the relay builtin needs relay.publish.topicType"),
        "{msg}"
    );
}

#[tokio::test]
async fn code_agents_need_the_program_that_registers_them() {
    let mut s = spec();
    s["agents"] = json!([{ "type": "planner", "code": {} }]);
    let msg = rejected(runtime(s.clone())).await;
    assert!(
        msg.contains(
            "agents with code: {} are registered by the runtime's program: set template.command"
        ),
        "{msg}"
    );
    // With the program named, the same spec is accepted.
    s["image"] = json!("example.com/team:1");
    s["template"] = json!({ "command": ["python", "-m", "switchboard", "serve"], "args": ["--agents", "team:register"] });
    accepted(runtime(s)).await;
}

#[tokio::test]
async fn llm_tools_have_one_kind_and_mcp_tools_a_declared_server() {
    let llm = |tools: Value| {
        let mut s = spec();
        s["agents"] = json!([{ "type": "assistant", "llm": {
            "model": { "endpoint": "http://127.0.0.1:1/v1", "model": "m" }, "tools": tools } }]);
        s
    };
    let msg = rejected(runtime(llm(
        json!([{ "agent": "echo", "publish": { "topicType": "t" } }]),
    )))
    .await;
    assert!(
        msg.contains("a tool is exactly one of agent, mcp and publish"),
        "{msg}"
    );
    let msg = rejected(runtime(llm(json!([{}])))).await;
    assert!(
        msg.contains("a tool is exactly one of agent, mcp and publish"),
        "{msg}"
    );
    let mcp = json!([{ "mcp": { "server": "docs", "tool": "lookup" } }]);
    let msg = rejected(runtime(llm(mcp.clone()))).await;
    assert!(
        msg.contains("an llm tool's mcp.server must be the name of an entry of mcpServers"),
        "{msg}"
    );
    let mut s = llm(mcp);
    s["mcpServers"] = json!([{ "name": "docs", "url": "http://127.0.0.1:1/mcp" }]);
    accepted(runtime(s.clone())).await;
    s["mcpServers"] = json!([
        { "name": "docs", "url": "http://127.0.0.1:1/mcp" },
        { "name": "docs", "url": "http://127.0.0.1:2/mcp" },
    ]);
    let msg = rejected(runtime(s.clone())).await;
    assert!(msg.contains("mcpServers names must be unique"), "{msg}");
    s["mcpServers"] = json!([{ "name": "docs", "url": "127.0.0.1:1/mcp" }]);
    let msg = rejected(runtime(s)).await;
    assert!(
        msg.contains("mcpServers[].url must be an http(s) URL"),
        "{msg}"
    );
}

/// Every AgentRuntime in examples/ (what users copy first) is valid as written.
#[tokio::test]
async fn the_example_agent_runtimes_are_accepted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let mut v: Value = serde::Deserialize::deserialize(doc).unwrap();
                if v["kind"] != "AgentRuntime" {
                    continue;
                }
                // Dry runs in `default`: the examples' own namespaces may not exist here.
                v["metadata"]["namespace"] = json!("default");
                let ar: AgentRuntime =
                    serde_json::from_value(v).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                accepted(ar).await;
                checked.push(path.display().to_string());
            }
        }
    }
    assert!(checked.len() >= 4, "found only {checked:?}");
}

#[tokio::test]
async fn partitions_never_decrease() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = operator_support::namespace(&client, "cel-part").await;
    let api: Api<AgentRuntime> = Api::namespaced(client, &ns);
    let mut s = spec();
    s["topics"] = json!({ "partitions": 6 });
    api.create(&PostParams::default(), &runtime(s))
        .await
        .unwrap();
    let shrink = json!({ "spec": { "topics": { "partitions": 3 } } });
    let err = api
        .patch("rt", &PatchParams::default(), &Patch::Merge(&shrink))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!(s.code, 422, "{s:?}");
    assert!(
        s.message
            .contains("topics.partitions may grow but never shrink"),
        "{}",
        s.message
    );
    let grow = json!({ "spec": { "topics": { "partitions": 8 } } });
    api.patch("rt", &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_subscription_has_exactly_one_of_topic_type_and_prefix() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let api: Api<AgentSubscription> = Api::namespaced(client, "default");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for spec in [
        json!({ "runtimeRef": { "name": "rt" }, "agentType": "echo" }),
        json!({ "runtimeRef": { "name": "rt" }, "agentType": "echo", "topicType": "a", "topicTypePrefix": "b" }),
    ] {
        let sub: AgentSubscription = serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentSubscription",
            "metadata": { "name": "s" }, "spec": spec,
        }))
        .unwrap();
        let Err(kube::Error::Api(s)) = api.create(&pp, &sub).await else {
            panic!("accepted {sub:?}")
        };
        assert!(
            s.message
                .contains("exactly one of topicType and topicTypePrefix is required"),
            "{}",
            s.message
        );
    }
}
