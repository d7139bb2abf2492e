//! A slow, then a cut connection between one replica and the broker, through a real
//! TCP fault proxy (Toxiproxy): three replica processes of one runtime handle a stream
//! of events; replica 0 reaches the broker only through the proxy (the broker
//! advertises the proxy's address on that listener, so every connection of replica 0
//! stays behind it). Latency first (it keeps its partitions and keeps handling), then a
//! black hole: the other replicas take its partitions over, no event is lost, and the
//! events handled twice stay within the at-least-once bound of docs/protocol.md.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_e2e::binary::free_port;
use switchboard_e2e::env::unique_name;
use switchboard_e2e::faults::{OwnBroker, Toxiproxy};
use switchboard_e2e::net::TestNet;
use switchboard_e2e::wait::poll_until;
use switchboard_runtime::{AgentRuntime, Payload, TopicId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const KEYS: u64 = 12;
/// At one event per key every 40 ms, 10 s of publishing: the cut (a fifth handled,
/// then 4 s slow, about 5-6 s in) must fall well inside it, or nothing is left for the
/// other replicas to take over (120 per key failed on a quiet machine, where the
/// publishing ended before the cut).
const PER_KEY: u64 = 250;
/// Round-trip latency added in the slow phase, per direction.
const LATENCY_MS: u64 = 250;
/// The runtime's offset commit interval (`defaults::COMMIT_INTERVAL`).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Who handled an event when: [(replica, when)].
type Handlings = Vec<(usize, Instant)>;
/// Every handling of every event, by (key, seq).
type Handled = Arc<Mutex<HashMap<(String, u64), Handlings>>>;

async fn spawn_replica(bootstrap: &str, prefix: &str, n: usize, handled: Handled) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_replica"))
        .args([bootstrap, prefix, "pool"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
        .await
        .expect("replica ready in time")
        .unwrap();
    assert_eq!(first.as_deref(), Some("ready"));
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut parts = line.split_whitespace().skip(1);
            if let (Some(key), Some(seq)) =
                (parts.next(), parts.next().and_then(|s| s.parse().ok()))
            {
                handled
                    .lock()
                    .unwrap()
                    .entry((key.to_owned(), seq))
                    .or_default()
                    .push((n, Instant::now()));
            }
        }
    });
    child
}

fn handled_by(handled: &Handled, replica: usize) -> usize {
    handled
        .lock()
        .unwrap()
        .values()
        .filter(|v| v.iter().any(|(r, _)| *r == replica))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_proxy_slow_then_cut_replica_hands_its_partitions_over() {
    let toxiproxy = Toxiproxy::start();
    let proxy_at = format!("127.0.0.1:{}", free_port());
    let broker = OwnBroker::start("fault-proxy", Some(&proxy_at));
    let proxied = format!("127.0.0.1:{}", broker.proxied_port.unwrap());
    toxiproxy.create("kafka", &proxy_at, &proxied).await;
    let net = TestNet {
        bootstrap: broker.bootstrap.clone(),
        prefix: unique_name("t"),
    };
    switchboard_e2e::env::init_test_logs();

    let handled: Handled = Arc::default();
    let mut replicas = vec![spawn_replica(&proxy_at, &net.prefix, 0, handled.clone()).await];
    for n in 1..3 {
        replicas.push(spawn_replica(&net.bootstrap, &net.prefix, n, handled.clone()).await);
    }
    let publisher = net.start("publisher").await.unwrap();
    // Let the three replicas settle their partitions before the stream starts.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let sends = (0..KEYS).map(|k| {
        let publisher = publisher.clone();
        async move {
            let topic = TopicId::new("stream", format!("key{k}")).unwrap();
            for n in 0..PER_KEY {
                let event = Payload::json("test.Seq", &json!({ "n": n }));
                publisher
                    .publish_payload(event, &topic, None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });
    let total = (KEYS * PER_KEY) as usize;
    let faults = async {
        // Slow: replica 0 keeps its partitions and keeps handling, only later.
        poll_until(
            "a fifth of the events handled",
            Duration::from_secs(60),
            || {
                let n = handled.lock().unwrap().len();
                async move { (n >= total / 5).then_some(()) }
            },
        )
        .await
        .unwrap();
        let before_slow = handled_by(&handled, 0);
        assert!(
            before_slow > 0,
            "replica 0 handled nothing before the faults"
        );
        toxiproxy
            .add_toxic(
                "kafka",
                "slow",
                "latency",
                json!({ "latency": LATENCY_MS, "jitter": 50 }),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let during_slow = handled_by(&handled, 0) - before_slow;
        // Cut: a black hole (nothing gets through, connections stay open).
        toxiproxy.remove_toxic("kafka", "slow").await;
        toxiproxy
            .add_toxic("kafka", "cut", "timeout", json!({ "timeout": 0 }))
            .await;
        (before_slow, during_slow, Instant::now())
    };
    let ((before_slow, during_slow, cut_at), _) =
        tokio::join!(faults, futures::future::join_all(sends));
    let handled_by_0_at_cut = handled_by(&handled, 0);

    // Everything is handled, replica 0's share by the others once its session expires.
    let all = poll_until("every event handled", Duration::from_secs(90), || {
        let n = handled.lock().unwrap().len();
        async move { (n == total).then_some(()) }
    })
    .await;
    let missing: Vec<(String, u64)> = {
        let seen = handled.lock().unwrap();
        (0..KEYS)
            .flat_map(|k| (0..PER_KEY).map(move |n| (format!("key{k}"), n)))
            .filter(|e| !seen.contains_key(e))
            .collect()
    };
    assert!(
        all.is_ok() && missing.is_empty(),
        "{} events never handled, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let handover = cut_at.elapsed();

    // Heal, and give what replica 0 queued while cut off the time to arrive.
    toxiproxy.remove_toxic("kafka", "cut").await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let seen = handled.lock().unwrap().clone();
    // Keys replica 0 handled before the cut were handled by the others after it.
    let taken_over = seen
        .iter()
        .filter(|(_, hs)| {
            hs.iter()
                .any(|(r, t)| *r != 0 && *t > cut_at + Duration::from_secs(1))
        })
        .filter(|((key, _), _)| {
            seen.iter()
                .any(|((k, _), hs)| k == key && hs.iter().any(|(r, t)| *r == 0 && *t < cut_at))
        })
        .count();
    assert!(
        taken_over > 0,
        "no key of replica 0 was handled by another replica after the cut"
    );
    // The at-least-once bound (docs/protocol.md): an event is handled twice only when
    // its partition changed owner before its offset was committed, so only an event the
    // old owner read after its last successful commit, which is at most a commit
    // interval plus a round trip of its (slow) link before the cut. An event whose
    // first handling is older than that must never come back.
    let window = COMMIT_INTERVAL + Duration::from_millis(4 * LATENCY_MS) + Duration::from_secs(1);
    let duplicates: Vec<(&(String, u64), &Handlings)> =
        seen.iter().filter(|(_, hs)| hs.len() > 1).collect();
    let replayed_from_before: Vec<_> = duplicates
        .iter()
        .filter(|(_, hs)| {
            hs.iter()
                .map(|(_, t)| *t)
                .min()
                .is_some_and(|first| first + window < cut_at)
        })
        .map(|(e, hs)| {
            (
                e,
                hs.iter()
                    .map(|(r, t)| (*r, t.saturating_duration_since(cut_at)))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let zombie = seen
        .values()
        .filter(|hs| hs.iter().any(|(r, t)| *r == 0 && *t >= cut_at))
        .count();
    println!(
        "{}",
        json!({
            "fault_proxy": {
                "events": total,
                "replica0_before_slow": before_slow,
                "replica0_during_slow": during_slow,
                "replica0_at_cut": handled_by_0_at_cut,
                "handed_over_after_s": handover.as_secs_f64(),
                "taken_over_events": taken_over,
                "duplicates": duplicates.len(),
                "duplicates_handled_first_before_the_window": replayed_from_before.len(),
                "window_s": window.as_secs_f64(),
                "replica0_after_cut": zombie,
            }
        })
    );
    assert!(
        during_slow > 0,
        "replica 0 handled nothing while its link was slow (it should keep its partitions)"
    );
    assert!(
        replayed_from_before.is_empty(),
        "{} events handled again though first handled more than {window:?} before the cut \
         (committed offsets replayed), e.g. {:?}",
        replayed_from_before.len(),
        &replayed_from_before[..replayed_from_before.len().min(3)]
    );

    publisher.stop().await.unwrap();
    for mut r in replicas {
        let pid = r.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), r.wait()).await;
        assert!(
            status
                .expect("a replica stops within 60 s of SIGTERM")
                .unwrap()
                .success(),
            "a replica stops cleanly on SIGTERM"
        );
    }
    drop(broker);
    drop(toxiproxy);
}
