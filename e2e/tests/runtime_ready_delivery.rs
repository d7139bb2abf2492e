//! Once `switchboard-runtime run` answers `/readyz` with 200, an event published to
//! any topic its config file subscribes to is delivered: readiness must not come
//! before the configured subscriptions are in effect (an event that finds no
//! subscription is not for this runtime, and is passed over for good).

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_e2e::binary::{RuntimeProcess, free_port};
use switchboard_e2e::env::{kafka_bootstrap, unique_name};

/// Enough subscriptions that writing them (each read back from the registry before
/// the next) takes longer than joining the consumer groups.
const TOPICS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_as_soon_as_ready_reach_every_configured_subscription() {
    let bootstrap = kafka_bootstrap();
    let prefix = unique_name("ready");
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut yaml = format!(
        r#"
kafka: {{ bootstrapServers: "{bootstrap}", topicPrefix: {prefix} }}
runtime: {{ name: rt-ready, partitions: 2 }}
agents:
  - {{ type: counter, builtin: counter }}
http: {{ listen: "{http}" }}
subscriptions:
"#
    );
    for i in 0..TOPICS {
        writeln!(yaml, "  - {{ topicType: t{i}, agentType: counter }}").unwrap();
    }
    let mut rt = RuntimeProcess::spawn("rt-ready", &yaml, http);
    rt.wait_ready(Duration::from_secs(60)).await;

    // One event per subscribed topic type, each from its own source: counter/k{i}.
    let client = reqwest::Client::new();
    for i in 0..TOPICS {
        let r = client
            .post(format!("{}/v1/topics/t{i}/k{i}", rt.url()))
            .header("ce-type", "demo.Alert")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    // Delivery is bounded only so a lost event fails the test instead of hanging it.
    let wanted: BTreeSet<String> = (0..TOPICS).map(|i| format!("counter/k{i}")).collect();
    let url = format!("{}/v1/agents", rt.url());
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let agents: serde_json::Value =
            client.get(&url).send().await.unwrap().json().await.unwrap();
        let active: BTreeSet<String> = agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = wanted.difference(&active).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        missing.is_empty(),
        "events published after /readyz never arrived at {missing:?}; log:\n{}",
        rt.log_text()
    );

    rt.terminate();
    let exit = rt.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.success(), "{exit}; log:\n{}", rt.log_text());
}
