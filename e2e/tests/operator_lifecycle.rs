//! The operator process around the reconcilers: malformed objects do not stop the
//! watch, a gracefully stopped leader hands over at once, /metrics and /healthz.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

mod operator_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use operator_support::{Operator, WAIT, namespace, runtime, runtime_condition, wait_topics_ready};
use serde_json::json;
use switchboard_crds::{AgentRuntime, AgentSubscription};
use switchboard_e2e::crds::{FIELD_MANAGER, install_crds};
use switchboard_e2e::env;
use switchboard_e2e::wait::wait_for;
use switchboard_operator::agent_runtime::build::BuildSettings;
use switchboard_operator::context::Timing;
use switchboard_operator::kafka::RdKafka;
use switchboard_operator::leader::LeaderOptions;
use switchboard_operator::metrics::Metrics;
use switchboard_operator::run::{RunOptions, run};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One operator process, in-process: `run` with its own metrics and HTTP port.
struct Instance {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Instance {
    async fn start(client: &Client, ns: &str, leader: Option<LeaderOptions>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let (stop, rx) = watch::channel(false);
        let opts = RunOptions {
            namespace: Some(ns.to_owned()),
            settings: BuildSettings {
                default_image: "switchboard-runtime:test".into(),
            },
            timing: Timing::default(),
            leader,
        };
        let task = tokio::spawn(run(
            client.clone(),
            Arc::new(RdKafka::default()),
            Arc::clone(&metrics),
            listener,
            opts,
            rx,
        ));
        Self {
            addr,
            metrics,
            stop,
            task,
        }
    }

    /// SIGTERM's equivalent; waits (bounded) for the process to finish.
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("operator stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_object_is_reported_and_the_others_are_reconciled() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-guard").await;
    let prefix = env::unique_name("opguard");
    // The API server accepts an int-or-string port above i32::MAX (the schema of
    // `x-kubernetes-int-or-string` bounds nothing), the operator's types do not: like
    // an object written before a schema change. It is stored before the operator lists.
    let dynamic: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<AgentRuntime>(&()),
    );
    let broken: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": "broken" },
        "spec": {
            "kafka": { "bootstrapServers": env::kafka_bootstrap(), "topicPrefix": prefix },
            "agents": [{ "type": "h", "builtin": "echo" }],
            "template": { "sidecars": [{ "name": "s", "image": "x",
                "readinessProbe": { "httpGet": { "port": 5_000_000_000_u64 } } }] },
        },
    }))
    .unwrap();
    dynamic
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    let runtimes: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    assert!(
        runtimes.get("broken").await.is_err(),
        "the object must not deserialize for this test to mean anything"
    );
    runtimes
        .create(&PostParams::default(), &runtime("good", &prefix, json!({})))
        .await
        .unwrap();
    let subs: Api<AgentSubscription> = Api::namespaced(client.clone(), &ns);
    let sub: AgentSubscription = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentSubscription",
        "metadata": { "name": "s" },
        "spec": { "runtimeRef": { "name": "good" }, "agentType": format!("{prefix}-echo"), "topicType": "alerts" },
    }))
    .unwrap();
    subs.create(&PostParams::default(), &sub).await.unwrap();

    let op = Operator::start(&client, &ns).await;
    wait_topics_ready(&runtimes, "good").await;
    wait_for("the subscription is Accepted", WAIT, || async {
        let st = subs.get("s").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True")
            .then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let note = wait_for("a Warning event InvalidObject on broken", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            (e.involved_object.name.as_deref() == Some("broken")
                && e.reason.as_deref() == Some("InvalidObject")
                && e.type_.as_deref() == Some("Warning"))
            .then(|| e.message.unwrap_or_default())
        })
    })
    .await;
    assert!(
        note.contains("5000000000") || note.contains("i32"),
        "{note}"
    );
    let text = op.metrics.encode().unwrap();
    assert!(text.contains("error=\"invalid_object\""), "{text}");
    op.stop().await;
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_leader_hands_over_before_its_lease_expires() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-leader").await;
    let prefix = env::unique_name("opleader");
    let lease_name = "switchboard-operator".to_owned();
    // A lease far longer than the wait below: only an explicit release lets the
    // standby lead in time.
    let leader = |identity: &str| {
        Some(LeaderOptions {
            lease_name: lease_name.clone(),
            namespace: ns.clone(),
            identity: identity.to_owned(),
            lease_duration_secs: 300,
        })
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let a = Instance::start(&client, &ns, leader("op-a")).await;
    wait_for("op-a holds the Lease", WAIT, || async {
        (holder(&leases, &lease_name).await? == "op-a").then_some(())
    })
    .await;
    let b = Instance::start(&client, &ns, leader("op-b")).await;
    let runtimes: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    runtimes
        .create(
            &PostParams::default(),
            &runtime("first", &prefix, json!({})),
        )
        .await
        .unwrap();
    wait_topics_ready(&runtimes, "first").await;
    assert_eq!(
        b.metrics.reconciles_total("agentruntime"),
        0,
        "the standby must not reconcile"
    );

    a.stop().await;
    runtimes
        .create(
            &PostParams::default(),
            &runtime("second", &prefix, json!({})),
        )
        .await
        .unwrap();
    // Bounded by operator_support::WAIT (60 s), far below the 300 s lease.
    wait_topics_ready(&runtimes, "second").await;
    assert_eq!(holder(&leases, &lease_name).await.as_deref(), Some("op-b"));
    assert!(b.metrics.reconciles_total("agentruntime") > 0);
    b.stop().await;
}

/// Value of the sample `name` (exact name and labels) in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reconciles_failures_by_class_and_durations_and_healthz_answers() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-metrics").await;
    let prefix = env::unique_name("opmetrics");
    let op = Instance::start(&client, &ns, None).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", op.addr);

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let runtimes: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    runtimes
        .create(&PostParams::default(), &runtime("good", &prefix, json!({})))
        .await
        .unwrap();
    let no_secret = runtime(
        "nosecret",
        &prefix,
        json!({ "kafka": {
            "bootstrapServers": env::kafka_bootstrap(), "topicPrefix": prefix,
            "security": { "protocol": "SASL_PLAINTEXT",
                          "sasl": { "mechanism": "PLAIN", "secretRef": { "name": "missing" } } },
        }}),
    );
    runtimes
        .create(&PostParams::default(), &no_secret)
        .await
        .unwrap();
    wait_topics_ready(&runtimes, "good").await;
    wait_for("nosecret reports SecretNotFound", WAIT, || async {
        (runtime_condition(&runtimes, "nosecret", "TopicsReady")
            .await?
            .1
            == "SecretNotFound")
            .then_some(())
    })
    .await;

    let text = wait_for("a failure counted as secret in /metrics", WAIT, || {
        let http = http.clone();
        let url = format!("{base}/metrics");
        async move {
            let resp = http.get(url).send().await.ok()?;
            assert_eq!(resp.status(), 200);
            let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
            let text = resp.text().await.ok()?;
            sample(
                &text,
                "switchboard_operator_reconcile_failures_total{controller=\"agentruntime\",error=\"secret\"}",
            )
            .filter(|n| *n >= 1.0)
            .map(|_| text)
        }
    })
    .await;
    let reconciles = sample(
        &text,
        "switchboard_operator_reconciles_total{controller=\"agentruntime\"}",
    )
    .unwrap();
    assert!(reconciles >= 2.0, "one per runtime at least: {text}");
    let count = sample(
        &text,
        "switchboard_operator_reconcile_duration_seconds_count{controller=\"agentruntime\"}",
    )
    .unwrap();
    assert!(count >= 2.0 && count <= reconciles, "{text}");
    let inf = sample(
        &text,
        "switchboard_operator_reconcile_duration_seconds_bucket{le=\"+Inf\",controller=\"agentruntime\"}",
    )
    .unwrap();
    assert!((inf - count).abs() < f64::EPSILON, "{text}");
    assert!(
        sample(
            &text,
            "switchboard_operator_api_writes_total{controller=\"agentruntime\",kind=\"AgentRuntime/status\",verb=\"apply\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(
        !text.contains("error=\"kafka\""),
        "no Kafka failure expected: {text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    op.stop().await;
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "/healthz stops with the operator"
    );
}
