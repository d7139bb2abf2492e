//! The pure part of reconciling an AgentRuntime: validate the spec and build every
//! desired object (topics, ConfigMap, ServiceAccount, Service, Deployment, PDB).
//! No I/O here; this is where most tests live.

use std::collections::BTreeMap;

use super::llm_build::{api_key_env_vars, llm_settings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_crds::agent_runtime::{
    AgentRuntime, BuiltinAgent, GroupProtocol, RemoteAssignor, SaslMechanism, SecurityProtocol,
};
use switchboard_runtime::config_file::{
    A2aAgentSettings, AgentEntry, Builtin, CodeAgent, HttpAgentSettings, HttpSection, KafkaSection,
    McpAgentSettings, MessageTypeEntry, RelayPublish, RelaySettings, RuntimeConfigFile,
    RuntimeSection, SecuritySection,
};
use switchboard_runtime::defaults;
use switchboard_runtime::protocol::topics::{TopicNames, TopicSpec, validate_runtime_name};
use switchboard_runtime::{
    GroupProtocol as RtGroupProtocol, SaslMechanism as RtMechanism, SecurityProtocol as RtProtocol,
};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "switchboard-operator";
/// Pod annotation holding the digest of the runtime config: a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "switchboard.dev/config-hash";
/// Annotation holding the digest of what the operator applied to an owned object.
pub const APPLIED_HASH_ANNOTATION: &str = "switchboard.dev/applied-hash";
/// Where the runtime config is mounted in the pod.
pub const CONFIG_DIR: &str = "/etc/switchboard";
/// Key of the config file in the ConfigMap.
pub const CONFIG_KEY: &str = "runtime.yaml";
/// Environment variable holding the config file's path in the runtime container.
pub const CONFIG_ENV: &str = "SWITCHBOARD_CONFIG";
/// The runtime container's command unless `template.command` names another program.
pub const RUNTIME_COMMAND: &str = "switchboard-runtime";
/// Where the CA bundle is mounted (TLS only).
pub const CA_DIR: &str = "/etc/switchboard/tls";
/// Where the client certificate and key are mounted (mTLS only).
pub const CLIENT_CERT_DIR: &str = "/etc/switchboard/tls-client";

/// The client certificate Secret of `security`, if mTLS is configured.
pub fn client_cert(
    security: &switchboard_crds::agent_runtime::KafkaSecurity,
) -> Option<&switchboard_crds::agent_runtime::ClientCertSecretRef> {
    security
        .tls
        .as_ref()
        .and_then(|t| t.cert_secret_ref.as_ref())
}
/// The runtime's HTTP port (API, /healthz, /readyz, /metrics).
pub const HTTP_PORT: i32 = 8080;
/// Name of the runtime container.
pub const CONTAINER: &str = "runtime";

/// A spec the operator cannot act on; names the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {reason}")]
pub struct SpecError {
    /// Path under `spec`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Operator-wide defaults the build step needs.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Image used when `spec.image` is unset.
    pub default_image: String,
}

/// Everything an AgentRuntime should produce.
#[derive(Debug, Clone)]
pub struct DesiredRuntime {
    /// Topic names of the runtime's prefix.
    pub names: TopicNames,
    /// Every topic the runtime uses, with partitions and configs.
    pub topics: Vec<TopicSpec>,
    /// The runtime's own topics (deleted with `deletionPolicy: Delete`).
    pub owned_topics: Vec<String>,
    /// Agent types the runtime claims in the registry.
    pub agent_types: Vec<String>,
    /// The runtime config file, as mounted.
    pub config_yaml: String,
    /// ServiceAccount of the pods.
    pub service_account: ServiceAccount,
    /// ConfigMap with the runtime config.
    pub config_map: ConfigMap,
    /// Service for the HTTP API and metrics.
    pub service: Service,
    /// The runtime Deployment.
    pub deployment: Deployment,
    /// PDB when more than one replica is wanted.
    pub pdb: Option<PodDisruptionBudget>,
    /// Label selector of the pods, as a string (status and /scale).
    pub selector: String,
    /// Replicas the Deployment gets.
    pub replicas: i32,
}

/// Labels of every owned object.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(name);
    l.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    l
}

/// Labels selecting the runtime's pods.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "switchboard-runtime".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), name.to_owned()),
    ])
}

/// The topic prefix: `spec.kafka.topicPrefix`, else `switchboard.<namespace>`.
pub fn topic_prefix(ar: &AgentRuntime) -> String {
    ar.spec
        .kafka
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("switchboard.{}", ar.namespace().unwrap_or_default()))
}

/// The runtime's security protocol for the CRD's: the one mapping, used for the
/// runtime's config file and for the operator's own Kafka client.
pub fn security_protocol(p: SecurityProtocol) -> RtProtocol {
    match p {
        SecurityProtocol::Plaintext => RtProtocol::Plaintext,
        SecurityProtocol::Ssl => RtProtocol::Ssl,
        SecurityProtocol::SaslPlaintext => RtProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl => RtProtocol::SaslSsl,
    }
}

/// The runtime's group protocol for the CRD's (see [`security_protocol`]).
pub fn group_protocol(p: GroupProtocol) -> RtGroupProtocol {
    match p {
        GroupProtocol::Classic => RtGroupProtocol::Classic,
        GroupProtocol::Consumer => RtGroupProtocol::Consumer,
    }
}

/// The runtime's SASL mechanism for the CRD's (see [`security_protocol`]).
pub fn sasl_mechanism(m: SaslMechanism) -> RtMechanism {
    match m {
        SaslMechanism::Plain => RtMechanism::Plain,
        SaslMechanism::ScramSha256 => RtMechanism::ScramSha256,
        SaslMechanism::ScramSha512 => RtMechanism::ScramSha512,
    }
}

/// Replicas the Deployment should run: `spec.replicas` (also what /scale writes),
/// else the autoscaling minimum, else 1.
pub fn desired_replicas(ar: &AgentRuntime) -> i32 {
    ar.spec
        .replicas
        .or(ar.spec.autoscaling.as_ref().map(|a| a.min_replicas))
        .unwrap_or(1)
}

/// Topic specs of a runtime: the protocol's own list (so names, partition rules and
/// compaction never diverge), with the spec's partitions, replication factor and
/// extra configs. Compaction of registry and state cannot be overridden.
pub fn topics_for(ar: &AgentRuntime, names: &TopicNames) -> Vec<TopicSpec> {
    names
        .runtime_specs(
            &ar.name_any(),
            ar.spec.topics.partitions,
            ar.spec.topics.replication_factor,
        )
        .into_iter()
        .map(|mut t| {
            for (k, v) in &ar.spec.topics.config {
                if !(k == "cleanup.policy" && t.config.contains_key(k)) {
                    t.config.insert(k.clone(), v.clone());
                }
            }
            t
        })
        .collect()
}

/// The runtime config file for `ar` (`createTopics: false`: the operator owns topics).
pub fn runtime_config(ar: &AgentRuntime, prefix: &str) -> RuntimeConfigFile {
    let security = ar.spec.kafka.security.as_ref().map(|s| SecuritySection {
        protocol: security_protocol(s.protocol).as_config().to_owned(),
        sasl_mechanism: s
            .sasl
            .as_ref()
            .map(|sasl| sasl_mechanism(sasl.mechanism).as_kafka().to_owned()),
        ca_location: s.tls.as_ref().map(|_| format!("{CA_DIR}/ca.crt")),
        cert_location: client_cert(s).map(|_| format!("{CLIENT_CERT_DIR}/tls.crt")),
        key_location: client_cert(s).map(|_| format!("{CLIENT_CERT_DIR}/tls.key")),
    });
    RuntimeConfigFile {
        kafka: KafkaSection {
            bootstrap_servers: ar.spec.kafka.bootstrap_servers.clone(),
            topic_prefix: prefix.to_owned(),
            client_id: Some(format!("switchboard-{}", ar.name_any())),
            security,
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            group_protocol: ar
                .spec
                .kafka
                .group_protocol
                .map(|p| group_protocol(p).as_kafka().to_owned()),
            group_remote_assignor: ar.spec.kafka.group_remote_assignor.map(|a| {
                match a {
                    RemoteAssignor::Uniform => "uniform",
                    RemoteAssignor::Range => "range",
                }
                .to_owned()
            }),
        },
        runtime: RuntimeSection {
            name: ar.name_any(),
            create_topics: false,
            max_concurrency: defaults::MAX_CONCURRENCY,
            partitions: ar.spec.topics.partitions,
            replication_factor: ar.spec.topics.replication_factor,
            rpc_timeout_ms: defaults::RPC_TIMEOUT.as_millis() as u64,
            task_retention_ms: ar.spec.topics.task_retention_seconds.map_or(
                defaults::TASK_RETENTION.as_millis() as u64,
                |s| {
                    // The schema's minimum is 1.
                    u64::try_from(s).unwrap_or(1).saturating_mul(1000)
                },
            ),
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            local_delivery: true,
            durable_steps: true,
        },
        agents: ar
            .spec
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| AgentEntry {
                agent_type: a.agent_type.clone(),
                builtin: a.builtin.map(|b| match b {
                    BuiltinAgent::Echo => Builtin::Echo,
                    BuiltinAgent::Counter => Builtin::Counter,
                    BuiltinAgent::Relay => Builtin::Relay,
                }),
                relay: a.relay.as_ref().map(|r| RelaySettings {
                    publish: RelayPublish {
                        topic_type: r.publish.topic_type.clone(),
                    },
                }),
                http: a.http.as_ref().map(|h| HttpAgentSettings {
                    url: h.url.clone(),
                    timeout_ms: u64::try_from(h.timeout_seconds.unwrap_or(30)).unwrap_or(30) * 1000,
                    retries: 2,
                }),
                code: a.code.as_ref().map(|_| CodeAgent {}),
                llm: a.llm.as_ref().map(|l| llm_settings(&a.agent_type, l)),
                a2a: a.a2a.as_ref().map(|r| A2aAgentSettings {
                    url: r.url.clone(),
                    token_env: r.secret_ref.as_ref().map(|_| token_env("A2A", i)),
                    timeout_ms: u64::try_from(r.timeout_seconds.unwrap_or(30)).unwrap_or(30) * 1000,
                }),
                mcp: a.mcp.as_ref().map(|m| McpAgentSettings {
                    url: m.url.clone(),
                    tool: m.tool.clone(),
                    token_env: m.secret_ref.as_ref().map(|_| token_env("MCP", i)),
                    timeout_ms: u64::try_from(m.timeout_seconds.unwrap_or(30)).unwrap_or(30) * 1000,
                }),
                description: a.description.clone(),
                message_types: a
                    .message_types
                    .iter()
                    .map(|m| MessageTypeEntry {
                        name: m.name.clone(),
                        schema: m.schema.clone(),
                    })
                    .collect(),
            })
            .collect(),
        subscriptions: Vec::new(),
        mcp_servers: super::llm_build::mcp_servers(&ar.spec.mcp_servers),
        http: HttpSection {
            listen: format!("0.0.0.0:{HTTP_PORT}"),
            bearer_token: None,
        },
    }
}

/// The environment variable holding the bearer token of agent `i`'s remote (`kind`:
/// `A2A` or `MCP`).
fn token_env(kind: &str, i: usize) -> String {
    format!("SWITCHBOARD_{kind}_TOKEN_{i}")
}

fn digest(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn typed<T: serde::de::DeserializeOwned>(what: &'static str, v: Value) -> Result<T, SpecError> {
    serde_json::from_value(v).map_err(|e| SpecError::new(what, format!("cannot be built: {e}")))
}

/// Validates `ar` and builds what it should produce. Pure.
pub fn build(ar: &AgentRuntime, settings: &BuildSettings) -> Result<DesiredRuntime, SpecError> {
    build_with_replicas(ar, settings, None)
}

/// [`build`] with the Deployment's replicas decided by the caller (the autoscaler);
/// `None`: [`desired_replicas`]. Pure.
pub fn build_with_replicas(
    ar: &AgentRuntime,
    settings: &BuildSettings,
    replicas: Option<i32>,
) -> Result<DesiredRuntime, SpecError> {
    let name = ar.name_any();
    let namespace = ar.namespace().unwrap_or_default();
    validate_runtime_name(&name).map_err(|e| SpecError::new("metadata.name", e.reason))?;
    let prefix = topic_prefix(ar);
    let names =
        TopicNames::new(&prefix).map_err(|e| SpecError::new("kafka.topicPrefix", e.reason))?;
    if let (Some(_), Some(_)) = (ar.spec.replicas, ar.spec.autoscaling.as_ref()) {
        return Err(SpecError::new(
            "replicas",
            "replicas and autoscaling are mutually exclusive",
        ));
    }
    if let Some(sec) = &ar.spec.kafka.security {
        let sasl_protocol = matches!(
            sec.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        let tls_protocol = matches!(
            sec.protocol,
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
        );
        if sasl_protocol != sec.sasl.is_some() {
            return Err(SpecError::new(
                "kafka.security.sasl",
                "is required with SASL_PLAINTEXT/SASL_SSL and forbidden otherwise",
            ));
        }
        if sec.tls.is_some() && !tls_protocol {
            return Err(SpecError::new(
                "kafka.security.tls",
                "is only allowed with SSL or SASL_SSL",
            ));
        }
    }
    let has_program = ar
        .spec
        .template
        .as_ref()
        .is_some_and(|t| !t.command.is_empty());
    if let Some(i) = ar.spec.agents.iter().position(|a| a.code.is_some())
        && !has_program
    {
        return Err(SpecError::new(
            format!("agents[{i}].code"),
            "is registered by the runtime's program: set template.command to run it",
        ));
    }
    let config = runtime_config(ar, &prefix);
    config
        .validate()
        .map_err(|e| SpecError::new(e.field, format!("{} (got {:?})", e.reason, e.value)))?;
    let config_yaml = config
        .to_yaml()
        .map_err(|e| SpecError::new("agents", e.reason))?;
    let owner: OwnerReference = ar
        .controller_owner_ref(&())
        .ok_or_else(|| SpecError::new("metadata.uid", "is not set (object not stored yet)"))?;
    let replicas = replicas.unwrap_or_else(|| desired_replicas(ar));
    let labels = labels(&name);
    let selector = selector_labels(&name);
    let selector_string = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let meta = |obj_name: &str| {
        json!({
            "name": obj_name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        })
    };

    let service_account = typed(
        "serviceAccount",
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": meta(&name),
            "automountServiceAccountToken": false,
        }),
    )?;
    let config_map = typed(
        "configMap",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(&format!("{name}-config")),
            "data": { CONFIG_KEY: config_yaml },
        }),
    )?;
    let service = typed(
        "service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(&name),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{ "name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP" }],
            },
        }),
    )?;

    let template = ar.spec.template.clone().unwrap_or_default();
    let config_path = format!("{CONFIG_DIR}/{CONFIG_KEY}");
    // First, so `$(SWITCHBOARD_CONFIG)` expands in the user's command, args and env.
    let mut env = vec![
        json!({ "name": CONFIG_ENV, "value": config_path }),
        // Where HTTP agents reach this pod for their durable steps (`http_steps`).
        json!({ "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }),
    ];
    if let Some(sasl) = ar
        .spec
        .kafka
        .security
        .as_ref()
        .and_then(|s| s.sasl.as_ref())
    {
        let r = &sasl.secret_ref;
        for (var, key) in [
            (
                "SWITCHBOARD_SASL_USERNAME",
                r.username_key.as_deref().unwrap_or("username"),
            ),
            (
                "SWITCHBOARD_SASL_PASSWORD",
                r.password_key.as_deref().unwrap_or("password"),
            ),
        ] {
            env.push(json!({ "name": var, "valueFrom": { "secretKeyRef": { "name": r.name, "key": key } } }));
        }
    }
    let keys = api_key_env_vars(&ar.spec.agents).map_err(|(i, other)| {
        SpecError::new(
            format!("agents[{i}].type"),
            format!("its API key variable would be the same as agent type {other:?}'s"),
        )
    })?;
    env.extend(keys);
    // Each a2a and mcp agent's token, from its Secret, under the name its config
    // entry reads.
    for (i, a) in ar.spec.agents.iter().enumerate() {
        let refs = [
            ("A2A", a.a2a.as_ref().and_then(|r| r.secret_ref.as_ref())),
            ("MCP", a.mcp.as_ref().and_then(|m| m.secret_ref.as_ref())),
        ];
        for (kind, r) in refs {
            if let Some(r) = r {
                let key = r.key.as_deref().unwrap_or("token");
                env.push(json!({ "name": token_env(kind, i), "valueFrom": { "secretKeyRef": { "name": r.name, "key": key } } }));
            }
        }
    }
    env.extend(super::llm_build::mcp_server_token_env_vars(
        &ar.spec.mcp_servers,
    ));
    for e in &template.env {
        env.push(
            serde_json::to_value(e).map_err(|e| SpecError::new("template.env", e.to_string()))?,
        );
    }
    let mut volumes = vec![
        json!({ "name": "config", "configMap": { "name": format!("{name}-config") } }),
        json!({ "name": "tmp", "emptyDir": {} }),
    ];
    let mut mounts = vec![
        json!({ "name": "config", "mountPath": CONFIG_DIR, "readOnly": true }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    if let Some(tls) = ar.spec.kafka.security.as_ref().and_then(|s| s.tls.as_ref()) {
        let key = tls.ca_secret_ref.key.as_deref().unwrap_or("ca.crt");
        volumes.push(json!({ "name": "kafka-ca", "secret": {
            "secretName": tls.ca_secret_ref.name,
            "items": [{ "key": key, "path": "ca.crt" }],
        }}));
        mounts.push(json!({ "name": "kafka-ca", "mountPath": CA_DIR, "readOnly": true }));
    }
    if let Some(r) = ar.spec.kafka.security.as_ref().and_then(client_cert) {
        volumes.push(json!({ "name": "kafka-client-cert", "secret": {
            "secretName": r.name,
            // Not world-readable: it holds a private key (the pod's fsGroup reads it).
            "defaultMode": 0o440,
            "items": [
                { "key": r.cert_key.as_deref().unwrap_or("tls.crt"), "path": "tls.crt" },
                { "key": r.key_key.as_deref().unwrap_or("tls.key"), "path": "tls.key" },
            ],
        }}));
        mounts.push(
            json!({ "name": "kafka-client-cert", "mountPath": CLIENT_CERT_DIR, "readOnly": true }),
        );
    }
    let probe = |path: &str| {
        json!({
            "httpGet": { "path": path, "port": "http" },
            "periodSeconds": 10,
            "failureThreshold": 3,
        })
    };
    let (command, args) = if template.command.is_empty() {
        let args = if template.args.is_empty() {
            vec!["run".to_owned(), "--config".to_owned(), config_path.clone()]
        } else {
            template.args.clone()
        };
        (vec![RUNTIME_COMMAND.to_owned()], args)
    } else {
        (template.command.clone(), template.args.clone())
    };
    let mut container = json!({
        "name": CONTAINER,
        "image": ar.spec.image.clone().unwrap_or_else(|| settings.default_image.clone()),
        "command": command,
        "args": args,
        "ports": [{ "name": "http", "containerPort": HTTP_PORT, "protocol": "TCP" }],
        "volumeMounts": mounts,
        "livenessProbe": probe("/healthz"),
        "readinessProbe": probe("/readyz"),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    });
    container["env"] = Value::Array(env);
    if let Some(res) = &template.resources {
        container["resources"] = serde_json::to_value(res)
            .map_err(|e| SpecError::new("template.resources", e.to_string()))?;
    }
    let mut containers = vec![container];
    for s in &template.sidecars {
        containers.push(
            serde_json::to_value(s)
                .map_err(|e| SpecError::new("template.sidecars", e.to_string()))?,
        );
    }
    let mut pod_annotations = template.annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.into(), digest(&config_yaml));
    let mut pod_spec = json!({
        "serviceAccountName": name,
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "containers": containers,
        "volumes": volumes,
    });
    if !template.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(template.node_selector);
    }
    if !template.tolerations.is_empty() {
        pod_spec["tolerations"] = serde_json::to_value(&template.tolerations)
            .map_err(|e| SpecError::new("template.tolerations", e.to_string()))?;
    }
    if let Some(a) = &template.affinity {
        pod_spec["affinity"] = serde_json::to_value(a)
            .map_err(|e| SpecError::new("template.affinity", e.to_string()))?;
    }
    let deployment = typed(
        "deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(&name),
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": selector },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
                "template": {
                    "metadata": { "labels": labels, "annotations": pod_annotations },
                    "spec": pod_spec,
                },
            },
        }),
    )?;
    let pdb = if replicas > 1 {
        Some(typed(
            "podDisruptionBudget",
            json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": meta(&name),
                "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector } },
            }),
        )?)
    } else {
        None
    };
    let topics = topics_for(ar, &names);
    Ok(DesiredRuntime {
        owned_topics: names.per_runtime(&name).to_vec(),
        agent_types: ar
            .spec
            .agents
            .iter()
            .map(|a| a.agent_type.clone())
            .collect(),
        names,
        topics,
        config_yaml,
        service_account,
        config_map,
        service,
        deployment,
        pdb,
        selector: selector_string,
        replicas,
    })
}

/// Digest of an object as the operator applies it (stored in
/// [`APPLIED_HASH_ANNOTATION`] to recognise objects that need no write).
pub fn applied_hash<T: serde::Serialize>(obj: &T) -> String {
    digest(&serde_json::to_string(obj).unwrap_or_default())
}

#[cfg(test)]
#[path = "build_tests.rs"]
pub(crate) mod tests;
