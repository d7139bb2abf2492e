//! Reply-channel garbage collection by the operator, against the real broker and API
//! server: the reply channels of a SIGKILLed runtime process and of a SIGKILLed client
//! process (`start_client`, which writes client heartbeats) are deleted once their
//! heartbeats expired and the grace period passed; a live process's, a live client's,
//! one without any heartbeat and other topics of the prefix are kept.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

mod operator_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::PostParams;
use operator_support::{Operator, namespace};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use switchboard_crds::AgentRuntime;
use switchboard_e2e::crds::{FIELD_MANAGER, install_crds};
use switchboard_e2e::env;
use switchboard_e2e::net::TestNet;
use switchboard_operator::context::Timing;
use switchboard_runtime::admin::{TopicAdmin, TopicSpec};
use switchboard_runtime::{AgentRuntime as _, KafkaConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const GRACE: Duration = Duration::from_secs(4);
/// `validMs` of the `replica` binary's heartbeats (its liveness timeout).
const VALID: Duration = Duration::from_secs(30);

/// Topics of the broker whose names start with `prefix`.
fn topics_with(bootstrap: &str, prefix: &str) -> Vec<String> {
    let consumer: BaseConsumer = KafkaConfig::new(bootstrap)
        .consumer_config("reply-gc-test-metadata")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut names: Vec<String> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && t.name().starts_with(prefix))
        .map(|t| t.name().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_channel_of_a_killed_process_is_deleted_after_the_grace_and_live_ones_kept() {
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-reply-gc").await;
    let net = TestNet::new();
    let op = Operator::start_with(
        &client,
        &ns,
        Timing {
            resync: Duration::from_secs(1),
            reply_gc_grace: Some(GRACE),
            ..Timing::default()
        },
    )
    .await;
    // The operator collects the prefixes of the AgentRuntimes it watches.
    let runtimes: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    let rt: AgentRuntime = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": "host" },
        "spec": {
            "kafka": { "bootstrapServers": net.bootstrap, "topicPrefix": net.prefix },
            "agents": [{ "type": "echo", "builtin": "echo" }],
        },
    }))
    .unwrap();
    runtimes.create(&PostParams::default(), &rt).await.unwrap();

    let reply_prefix = format!("{}.reply.", net.prefix);
    // A process that will crash: it beats every 0.5 s, each heartbeat valid 30 s (its
    // liveness timeout, `validMs`).
    let mut crashy = Command::new(env!("CARGO_BIN_EXE_replica"))
        .args([&net.bootstrap, &net.prefix, "crashy"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(crashy.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    // A client that will crash (same beat and validity), and one that stays.
    let mut crashy_client = Command::new(env!("CARGO_BIN_EXE_replica"))
        .args([&net.bootstrap, &net.prefix, "crashycli", "client"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut client_lines = BufReader::new(crashy_client.stdout.take().unwrap()).lines();
    assert_eq!(
        client_lines.next_line().await.unwrap().as_deref(),
        Some("ready")
    );
    let live_client = switchboard_runtime::KafkaAgentRuntime::start_client(net.config("livecli"))
        .await
        .unwrap();
    // A live process, and a reply-channel-like topic no heartbeat speaks for.
    let alive = net.start("alive").await.unwrap();
    let orphan = format!("{reply_prefix}nobody-0123456789");
    let admin =
        TopicAdmin::new(&KafkaConfig::new(&net.bootstrap), Duration::from_secs(30)).unwrap();
    admin
        .ensure_topics(&[TopicSpec::new(orphan.clone(), 1, 1)])
        .await
        .unwrap();
    let find = |stem: &str| {
        topics_with(&net.bootstrap, &format!("{reply_prefix}{stem}."))
            .pop()
            .unwrap_or_else(|| panic!("a reply channel of {stem}"))
    };
    let (crashy_reply, alive_reply) = (find("crashy"), find("alive"));
    let (crashy_client_reply, live_client_reply) = (find("crashycli"), find("livecli"));

    crashy.start_kill().unwrap();
    crashy_client.start_kill().unwrap();
    crashy.wait().await.unwrap();
    crashy_client.wait().await.unwrap();
    let killed = Instant::now();
    // Their last heartbeats hold for 30 s, then the grace: not deleted yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for topic in [&crashy_reply, &crashy_client_reply] {
        assert!(
            topics_with(&net.bootstrap, topic).contains(topic),
            "{topic} deleted before its heartbeat expired and the grace passed"
        );
    }
    let deadline = killed + VALID + Duration::from_secs(60);
    let mut deleted_after: Vec<(&String, Duration)> = Vec::new();
    while deleted_after.len() < 2 {
        for topic in [&crashy_reply, &crashy_client_reply] {
            if deleted_after.iter().all(|(t, _)| *t != topic)
                && !topics_with(&net.bootstrap, topic).contains(topic)
            {
                deleted_after.push((topic, killed.elapsed()));
            }
        }
        assert!(
            Instant::now() < deadline,
            "still there {:?} after the kill: {:?}",
            VALID + Duration::from_secs(60),
            [&crashy_reply, &crashy_client_reply]
                .iter()
                .filter(|t| deleted_after.iter().all(|(d, _)| d != *t))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (topic, after) in &deleted_after {
        println!(
            "{topic} deleted {:.1} s after SIGKILL (heartbeat valid {VALID:?}, grace {GRACE:?}, resync 1 s)",
            after.as_secs_f64()
        );
        // The last beat was at most 0.5 s (+ scheduling) before the kill.
        let earliest = VALID + GRACE - Duration::from_secs(1);
        assert!(
            *after >= earliest,
            "{topic} deleted {after:?} after the kill: the heartbeat (valid {VALID:?}) plus the {GRACE:?} grace had not passed"
        );
    }
    assert_eq!(op.metrics.reply_channels_deleted(), 2);

    // More passes later: the live process's channel and the orphan are still there.
    tokio::time::sleep(GRACE + Duration::from_secs(2)).await;
    let left = topics_with(&net.bootstrap, &reply_prefix);
    assert!(left.contains(&alive_reply), "live channel kept: {left:?}");
    assert!(
        left.contains(&live_client_reply),
        "live client's channel kept: {left:?}"
    );
    assert!(
        left.contains(&orphan),
        "no heartbeat, not ours to judge: {left:?}"
    );
    assert!(
        topics_with(&net.bootstrap, &format!("{}.registry", net.prefix)).len() == 1,
        "other topics of the prefix untouched"
    );
    assert_eq!(op.metrics.reply_channels_deleted(), 2);
    alive.stop().await.unwrap();
    // A client that stops gracefully deletes its own channel and tombstones its beat.
    live_client.stop().await.unwrap();
    assert!(
        !topics_with(&net.bootstrap, &live_client_reply).contains(&live_client_reply),
        "a stopped client deletes its reply channel"
    );
    admin.delete_topics(&[orphan]).await.unwrap();
    op.stop().await;
}
