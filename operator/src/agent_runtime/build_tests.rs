use super::*;
use serde_json::json;
use switchboard_runtime::config_file::RuntimeConfigFile;

fn runtime(spec: serde_json::Value) -> AgentRuntime {
    serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "AgentRuntime",
        "metadata": { "name": "rt1", "namespace": "team-a", "uid": "u-1", "generation": 1 },
        "spec": spec,
    }))
    .unwrap()
}

fn basic() -> serde_json::Value {
    json!({
        "kafka": { "bootstrapServers": "kafka:9092" },
        "agents": [{ "type": "echo", "builtin": "echo" }, { "type": "counter", "builtin": "counter" }],
    })
}

/// The Secret `(name, key)` the runtime container's env var `name` is read from;
/// fails when the variable is missing or has a literal value.
pub(crate) fn env_secret(d: &DesiredRuntime, name: &str) -> (String, String) {
    let pod = d
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let var = pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no env var {name}"));
    assert!(var.value.is_none(), "{name} has a literal value");
    let key = var
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap_or_else(|| panic!("{name} is not from a Secret"));
    (key.name.clone(), key.key.clone())
}

fn settings() -> BuildSettings {
    BuildSettings {
        default_image: "img:1".into(),
    }
}

#[test]
fn topics_are_the_runtime_librarys_with_spec_partitions_and_configs() {
    let mut spec = basic();
    spec["topics"] = json!({ "partitions": 6, "replicationFactor": 1, "config": { "retention.ms": "60000", "cleanup.policy": "delete" } });
    let d = build(&runtime(spec), &settings()).unwrap();
    let by_name = |n: &str| d.topics.iter().find(|t| t.name == n).unwrap().clone();
    let reg = by_name("switchboard.team-a.registry");
    assert_eq!(
        reg.partitions, 1,
        "registry keeps one partition (log order decides claims)"
    );
    assert_eq!(
        reg.config["cleanup.policy"], "compact",
        "compaction cannot be overridden"
    );
    let inbox = by_name("switchboard.team-a.rt1.inbox");
    assert_eq!((inbox.partitions, inbox.replication_factor), (6, 1));
    assert_eq!(inbox.config["retention.ms"], "60000");
    assert_eq!(
        by_name("switchboard.team-a.rt1.state").config["cleanup.policy"],
        "compact"
    );
    assert_eq!(
        by_name("switchboard.team-a.rt1.tasks").config["cleanup.policy"],
        "compact"
    );
    assert_eq!(d.topics.len(), 6);
    assert_eq!(
        d.owned_topics,
        vec![
            "switchboard.team-a.rt1.inbox".to_owned(),
            "switchboard.team-a.rt1.state".to_owned(),
            "switchboard.team-a.rt1.dlq".to_owned(),
            "switchboard.team-a.rt1.tasks".to_owned(),
        ]
    );
}

#[test]
fn config_map_holds_a_valid_runtime_config_without_topic_creation() {
    let d = build(&runtime(basic()), &settings()).unwrap();
    let text = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    let cfg = RuntimeConfigFile::from_yaml(text).unwrap();
    cfg.validate().unwrap();
    assert!(!cfg.runtime.create_topics);
    assert_eq!(cfg.runtime.name, "rt1");
    assert_eq!(cfg.kafka.topic_prefix, "switchboard.team-a");
    assert_eq!(cfg.agents.len(), 2);
    assert_eq!(
        cfg.kafka.group_protocol, None,
        "the runtime's default applies"
    );
}

#[test]
fn group_protocol_and_assignor_reach_the_runtime_config() {
    let mut spec = basic();
    spec["kafka"]["groupProtocol"] = json!("consumer");
    spec["kafka"]["groupRemoteAssignor"] = json!("range");
    let d = build(&runtime(spec), &settings()).unwrap();
    let text = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    let kafka = RuntimeConfigFile::from_yaml(text)
        .unwrap()
        .worker_config(|_| None)
        .unwrap()
        .kafka;
    assert_eq!(
        kafka.group_protocol,
        switchboard_runtime::GroupProtocol::Consumer
    );
    let group = kafka.group_consumer_config("g");
    assert_eq!(group.get("group.protocol"), Some("consumer"));
    assert_eq!(group.get("group.remote.assignor"), Some("range"));
}

#[test]
fn task_retention_reaches_the_runtime_config() {
    let config = |spec| {
        let d = build(&runtime(spec), &settings()).unwrap();
        RuntimeConfigFile::from_yaml(&d.config_map.data.as_ref().unwrap()[CONFIG_KEY]).unwrap()
    };
    assert_eq!(
        config(basic()).runtime.task_retention_ms,
        switchboard_runtime::defaults::TASK_RETENTION.as_millis() as u64
    );
    let mut spec = basic();
    spec["topics"]["taskRetentionSeconds"] = json!(600);
    assert_eq!(config(spec).runtime.task_retention_ms, 600_000);
}

#[test]
fn sasl_credentials_come_from_the_secret_into_env_never_into_the_config_map() {
    let mut spec = basic();
    spec["kafka"]["security"] = json!({ "protocol": "SASL_SSL",
        "sasl": { "mechanism": "SCRAM-SHA-512", "secretRef": { "name": "kafka-creds", "passwordKey": "pw" } } });
    let d = build(&runtime(spec), &settings()).unwrap();
    let text = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    assert!(
        text.contains("SCRAM-SHA-512") && !text.contains("kafka-creds"),
        "{text}"
    );
    assert_eq!(
        env_secret(&d, "SWITCHBOARD_SASL_PASSWORD"),
        ("kafka-creds".to_owned(), "pw".to_owned())
    );
}

#[test]
fn an_mtls_client_certificate_is_mounted_from_its_secret_and_only_paths_reach_the_config() {
    let mut spec = basic();
    spec["kafka"]["security"] = json!({ "protocol": "SSL", "tls": {
        "caSecretRef": { "name": "kafka-ca" },
        "certSecretRef": { "name": "rt1-client", "keyKey": "private.pem" } } });
    let d = build(&runtime(spec), &settings()).unwrap();
    let text = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    let cfg = RuntimeConfigFile::from_yaml(text).unwrap();
    let sec = cfg.kafka.security.as_ref().unwrap();
    assert_eq!(
        (sec.cert_location.as_deref(), sec.key_location.as_deref()),
        (
            Some("/etc/switchboard/tls-client/tls.crt"),
            Some("/etc/switchboard/tls-client/tls.key")
        )
    );
    assert!(!text.contains("rt1-client"), "{text}");
    let pod = serde_json::to_value(d.deployment.spec.as_ref().unwrap().template.clone()).unwrap();
    let vol = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "kafka-client-cert")
        .expect("a client certificate volume");
    assert_eq!(vol["secret"]["secretName"], "rt1-client");
    assert_eq!(
        vol["secret"]["items"][1],
        json!({ "key": "private.pem", "path": "tls.key" })
    );
    assert_eq!(vol["secret"]["defaultMode"], 0o440);
    let mounts = &pod["spec"]["containers"][0]["volumeMounts"];
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "kafka-client-cert" && m["mountPath"] == CLIENT_CERT_DIR),
        "{mounts}"
    );
    // Nothing of the certificate goes into the environment.
    let env = pod["spec"]["containers"][0]["env"].to_string();
    assert!(!env.contains("rt1-client"), "{env}");
}

#[test]
fn deployment_is_restricted_probed_owned_and_sized_from_spec_replicas() {
    let mut spec = basic();
    spec["replicas"] = json!(3);
    let d = build(&runtime(spec), &settings()).unwrap();
    let dep = &d.deployment;
    let owner = &dep.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("AgentRuntime", "u-1", Some(true))
    );
    let ds = dep.spec.as_ref().unwrap();
    assert_eq!(ds.replicas, Some(3));
    let pod = ds.template.spec.as_ref().unwrap();
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("img:1"));
    assert_eq!(
        c.args.as_ref().unwrap(),
        &["run", "--config", "/etc/switchboard/runtime.yaml"]
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
        &["ALL"]
    );
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (live.path.as_deref(), ready.path.as_deref()),
        (Some("/healthz"), Some("/readyz"))
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    assert!(d.pdb.is_some(), "3 replicas get a PodDisruptionBudget");
    assert_eq!(
        d.selector,
        "app.kubernetes.io/instance=rt1,app.kubernetes.io/name=switchboard-runtime"
    );
}

#[test]
fn one_replica_has_no_pdb_and_autoscaling_starts_at_its_minimum() {
    assert!(build(&runtime(basic()), &settings()).unwrap().pdb.is_none());
    let mut spec = basic();
    spec["autoscaling"] = json!({ "minReplicas": 2, "maxReplicas": 5 });
    assert_eq!(build(&runtime(spec), &settings()).unwrap().replicas, 2);
}

#[test]
fn a_config_change_changes_the_pod_annotation_hash() {
    let hash = |spec| {
        build(&runtime(spec), &settings())
            .unwrap()
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let mut more = basic();
    more["agents"].as_array_mut().unwrap().push(json!({ "type": "relay", "builtin": "relay", "relay": { "publish": { "topicType": "out" } } }));
    assert_eq!(hash(basic()), hash(basic()));
    assert_ne!(hash(basic()), hash(more));
}

#[test]
fn invalid_specs_name_the_field() {
    let mut spec = basic();
    spec["agents"] =
        json!([{ "type": "echo", "builtin": "echo" }, { "type": "echo", "builtin": "counter" }]);
    let e = build(&runtime(spec), &settings()).unwrap_err();
    assert_eq!(e.field, "agents[1].type", "{e}");
    let mut spec = basic();
    spec["kafka"]["topicPrefix"] = json!("bad/prefix");
    assert_eq!(
        build(&runtime(spec), &settings()).unwrap_err().field,
        "kafka.topicPrefix"
    );
    let mut spec = basic();
    spec["kafka"]["security"] = json!({ "protocol": "SASL_SSL" });
    assert_eq!(
        build(&runtime(spec), &settings()).unwrap_err().field,
        "kafka.security.sasl"
    );
}

#[test]
fn a_program_hosting_code_agents_gets_its_command_and_the_config_path() {
    let mut spec = basic();
    spec["agents"] =
        json!([{ "type": "echo", "builtin": "echo" }, { "type": "planner", "code": {} }]);
    let e = build(&runtime(spec.clone()), &settings()).unwrap_err();
    assert_eq!(e.field, "agents[1].code", "{e}");

    spec["image"] = json!("team:1");
    spec["template"] = json!({ "command": ["python", "-m", "switchboard", "serve"], "args": ["--agents", "team:register"] });
    let d = build(&runtime(spec), &settings()).unwrap();
    let cfg = RuntimeConfigFile::from_yaml(&d.config_yaml).unwrap();
    assert!(cfg.agents[1].is_code(), "{}", d.config_yaml);
    assert_eq!(d.agent_types, ["echo", "planner"]);
    let pod = d.deployment.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("team:1"));
    assert_eq!(
        c.command.as_ref().unwrap(),
        &["python", "-m", "switchboard", "serve"]
    );
    assert_eq!(c.args.as_ref().unwrap(), &["--agents", "team:register"]);
    let env = c.env.as_ref().unwrap();
    assert_eq!(env[0].name, CONFIG_ENV);
    assert_eq!(
        env[0].value.as_deref(),
        Some("/etc/switchboard/runtime.yaml")
    );
}

#[test]
fn args_alone_keep_the_runtime_command() {
    let mut spec = basic();
    spec["template"] = json!({ "args": ["run", "--config", "$(SWITCHBOARD_CONFIG)"] });
    let d = build(&runtime(spec), &settings()).unwrap();
    let pod = d.deployment.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.command.as_ref().unwrap(), &[RUNTIME_COMMAND]);
    assert_eq!(
        c.args.as_ref().unwrap(),
        &["run", "--config", "$(SWITCHBOARD_CONFIG)"]
    );
}

#[test]
fn a2a_and_mcp_agents_get_their_tokens_from_their_secrets_and_their_fields_reach_the_config() {
    let mut spec = basic();
    spec["agents"] = json!([
        { "type": "echo", "builtin": "echo", "description": "says it back",
          "messageTypes": [{ "name": "demo.Ask", "schema": { "type": "object" } }] },
        { "type": "researcher", "a2a": { "url": "http://remote:8080/a2a/r",
          "secretRef": { "name": "remote-token" }, "timeoutSeconds": 5 } },
        { "type": "weather", "mcp": { "url": "http://tools:8000/mcp", "tool": "forecast",
          "secretRef": { "name": "tools-token", "key": "t" } } },
    ]);
    let d = build(&runtime(spec), &settings()).unwrap();
    let text = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    let cfg = RuntimeConfigFile::from_yaml(text).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.agents[0].description.as_deref(), Some("says it back"));
    assert_eq!(cfg.agents[0].message_types[0].name, "demo.Ask");
    let remote = cfg.agents[1].a2a.as_ref().unwrap();
    assert_eq!(
        (
            remote.url.as_str(),
            remote.token_env.as_deref(),
            remote.timeout_ms
        ),
        (
            "http://remote:8080/a2a/r",
            Some("SWITCHBOARD_A2A_TOKEN_1"),
            5000
        )
    );
    assert_eq!(
        env_secret(&d, "SWITCHBOARD_A2A_TOKEN_1"),
        ("remote-token".to_owned(), "token".to_owned())
    );
    assert!(
        !text.contains("remote-token"),
        "the Secret's name stays out of the ConfigMap"
    );
}
