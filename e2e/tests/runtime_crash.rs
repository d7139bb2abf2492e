//! At-least-once across a crash: SIGKILL one of three replica processes while events
//! stream in; once the group has recovered, every event was handled at least once.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_e2e::net::TestNet;
use switchboard_runtime::{AgentRuntime, Payload, TopicId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const KEYS: u64 = 20;
const PER_KEY: u64 = 100;

type Handled = Arc<Mutex<HashMap<(String, u64), usize>>>;

async fn spawn_replica(net: &TestNet, handled: Handled) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_replica"))
        .args([&net.bootstrap, &net.prefix, "crashy"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut parts = line.split_whitespace().skip(1);
            if let (Some(key), Some(seq)) =
                (parts.next(), parts.next().and_then(|s| s.parse().ok()))
            {
                *handled
                    .lock()
                    .unwrap()
                    .entry((key.to_owned(), seq))
                    .or_default() += 1;
            }
        }
    });
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_replica_loses_no_event() {
    let net = TestNet::new();
    let handled: Handled = Arc::default();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(spawn_replica(&net, handled.clone()).await);
    }
    let publisher = net.start("publisher").await.unwrap();
    // Let the three replicas settle their partitions before the stream starts.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let sends = (0..KEYS).map(|k| {
        let publisher = publisher.clone();
        async move {
            let topic = TopicId::new("stream", format!("key{k}")).unwrap();
            for n in 0..PER_KEY {
                let event = Payload::json("test.Seq", &serde_json::json!({ "n": n }));
                publisher
                    .publish_payload(event, &topic, None)
                    .await
                    .unwrap();
            }
        }
    });
    let kill_midway = async {
        let total = (KEYS * PER_KEY) as usize;
        while handled.lock().unwrap().len() < total / 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let victim = replicas[0].id().unwrap();
        // SIGKILL: no graceful stop, no commit, no group leave.
        std::process::Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap();
    };
    tokio::join!(futures::future::join_all(sends), kill_midway);

    let started = Instant::now();
    let missing = loop {
        let missing: Vec<(u64, u64)> = {
            let seen = handled.lock().unwrap();
            (0..KEYS)
                .flat_map(|k| (0..PER_KEY).map(move |n| (k, n)))
                .filter(|(k, n)| !seen.contains_key(&(format!("key{k}"), *n)))
                .collect()
        };
        // The killed member's partitions move after its session times out (10 s).
        if missing.is_empty() || started.elapsed() > Duration::from_secs(60) {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "{} events never handled, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicates = handled.lock().unwrap().values().filter(|c| **c > 1).count();
    eprintln!(
        "all {} events handled; {duplicates} handled more than once (redelivered after the crash)",
        KEYS * PER_KEY
    );

    publisher.stop().await.unwrap();
    for mut r in replicas.drain(1..) {
        let pid = r.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), r.wait()).await;
        assert!(
            status.unwrap().unwrap().success(),
            "a replica stops cleanly on SIGTERM"
        );
    }
}
