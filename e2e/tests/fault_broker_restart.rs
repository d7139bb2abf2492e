//! The broker restarts (controlled shutdown, data kept) while two `switchboard-runtime
//! run` replicas serve a stream of RPCs and publishes: no event whose publish was
//! acknowledged is lost, no RPC outlives its timeout, and `/readyz` drops while the
//! broker is away and comes back after. The broker is the test's own (`OwnBroker`):
//! the suite's broker is shared with other tests and stays up.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_e2e::agents::{Recorder, SeenLog};
use switchboard_e2e::binary::{RuntimeProcess, free_port};
use switchboard_e2e::env::unique_name;
use switchboard_e2e::faults::OwnBroker;
use switchboard_e2e::net::TestNet;
use switchboard_e2e::wait::{poll_until, wait_for};
use switchboard_runtime::{
    AgentId, AgentRuntime, AgentRuntimeExt, KafkaAgentRuntime, Subscription,
};

/// Partitions of every topic, the sink's and the replicas' alike: a runtime with more
/// grows the shared events topic, and other runtimes' consumers only see a new
/// partition at their next metadata refresh (librdkafka: every 5 minutes).
const PARTITIONS: i32 = 4;
/// Each RPC's own timeout (`?timeoutMs=`).
const RPC_TIMEOUT: Duration = Duration::from_secs(4);
/// How far past its timeout an RPC may answer (scheduling on a loaded 2-core box).
const RPC_SLACK: Duration = Duration::from_secs(2);
/// Publishes wait for the broker's acknowledgement, up to the producer's 30 s queue
/// timeout; past this the HTTP call counts as hung.
const PUBLISH_LIMIT: Duration = Duration::from_secs(45);

fn config(bootstrap: &str, prefix: &str, http: SocketAddr) -> String {
    format!(
        r#"
kafka: {{ bootstrapServers: "{bootstrap}", topicPrefix: {prefix} }}
runtime: {{ name: rt1, partitions: {PARTITIONS}, rpcTimeoutMs: 4000 }}
agents:
  - {{ type: echo, builtin: echo }}
http: {{ listen: "{http}" }}
"#
    )
}

/// What the load saw.
#[derive(Default)]
struct Load {
    /// Sequence numbers whose publish was acknowledged (202).
    acked: BTreeSet<u64>,
    /// Publishes that failed (not acknowledged), with the answer.
    publish_failed: Vec<String>,
    rpc_ok: usize,
    /// RPCs that failed within their timeout, by HTTP status.
    rpc_failed: BTreeMap<u16, usize>,
    /// Each failed RPC: when it ended and the answer.
    rpc_errors: Vec<(Instant, String)>,
    /// RPCs that answered after their timeout + slack, or never (client error).
    rpc_late: Vec<String>,
    rpc_slowest: Duration,
    /// Failed answers that were not a JSON error naming what happened.
    unclear_errors: Vec<String>,
}

async fn publish_stream(
    gateway: String,
    first: u64,
    stop: Arc<AtomicBool>,
    load: Arc<Mutex<Load>>,
) {
    let http = reqwest::Client::builder()
        .timeout(PUBLISH_LIMIT)
        .build()
        .unwrap();
    let mut seq = first;
    while !stop.load(Ordering::SeqCst) {
        let sent = http
            .post(format!("{gateway}/v1/topics/tick/s{}", seq % 8))
            .header("ce-type", "test.Seq")
            .body(json!({ "seq": seq }).to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => {
                load.lock().unwrap().acked.insert(seq);
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let mut l = load.lock().unwrap();
                if serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .is_none()
                {
                    l.unclear_errors.push(format!("publish {status}: {text}"));
                }
                l.publish_failed.push(format!("{status} {text}"));
            }
            Err(e) => load
                .lock()
                .unwrap()
                .publish_failed
                .push(format!("client: {e}")),
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn rpc_stream(gateway: String, client: usize, stop: Arc<AtomicBool>, load: Arc<Mutex<Load>>) {
    let http = reqwest::Client::builder()
        .timeout(RPC_TIMEOUT + RPC_SLACK + Duration::from_secs(10))
        .build()
        .unwrap();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let body = json!({ "client": client, "i": i }).to_string();
        let started = Instant::now();
        let sent = http
            .post(format!(
                "{gateway}/v1/agents/echo/k{}?timeoutMs={}",
                i % 16,
                RPC_TIMEOUT.as_millis()
            ))
            .header("ce-type", "demo.Hi")
            .body(body.clone())
            .send()
            .await;
        let answer = match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                Ok((status, r.text().await.unwrap_or_default()))
            }
            Err(e) => Err(e.to_string()),
        };
        let took = started.elapsed();
        {
            let mut l = load.lock().unwrap();
            l.rpc_slowest = l.rpc_slowest.max(took);
            match answer {
                _ if took > RPC_TIMEOUT + RPC_SLACK => {
                    l.rpc_late
                        .push(format!("rpc {client}/{i} took {took:?}: {answer:?}"));
                }
                Ok((200, text)) => {
                    assert_eq!(text, body, "an RPC got someone else's reply");
                    l.rpc_ok += 1;
                }
                Ok((status, text)) => {
                    *l.rpc_failed.entry(status).or_default() += 1;
                    l.rpc_errors
                        .push((Instant::now(), format!("{status} {text}")));
                    let named = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .is_some_and(|v| v["error"].is_string() && v["kind"].is_string());
                    if !named {
                        l.unclear_errors.push(format!("rpc {status}: {text}"));
                    }
                }
                Err(e) => l
                    .rpc_late
                    .push(format!("rpc {client}/{i}: client error {e}")),
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/readyz` samples of one process: (when, ready).
type Readiness = Arc<Mutex<Vec<(Instant, bool)>>>;

async fn watch_readiness(gateway: String, stop: Arc<AtomicBool>, samples: Readiness) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while !stop.load(Ordering::SeqCst) {
        let ready = http
            .get(format!("{gateway}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        samples.lock().unwrap().push((Instant::now(), ready));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_under_publish_and_rpc_load_loses_no_acknowledged_event() {
    let broker = OwnBroker::start("broker-restart", None);
    let net = TestNet {
        bootstrap: broker.bootstrap.clone(),
        prefix: unique_name("t"),
    };
    switchboard_e2e::env::init_test_logs();

    // The subscriber: an in-process runtime recording every `tick` event.
    let mut sink_cfg = net.config("sink");
    sink_cfg.partitions = PARTITIONS;
    let sink = KafkaAgentRuntime::start_with(sink_cfg).await.unwrap();
    let seen: SeenLog = Arc::default();
    let log = seen.clone();
    sink.register("sink", move |id: &AgentId| Recorder::new(id, log.clone()))
        .await
        .unwrap();
    sink.add_subscription(Subscription::for_type("tick", "sink").unwrap())
        .await
        .unwrap();

    let mut replicas = Vec::new();
    for n in 0..2 {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let yaml = config(&broker.bootstrap, &net.prefix, http);
        let mut p = RuntimeProcess::spawn(&format!("restart-{n}"), &yaml, http);
        p.wait_ready(Duration::from_secs(90)).await;
        replicas.push(p);
    }
    let gateways: Vec<String> = replicas.iter().map(RuntimeProcess::url).collect();

    // The subscription is in effect end to end before the load starts.
    let probe = reqwest::Client::new();
    let delivered = |seq: u64| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.data["seq"].as_u64() == Some(seq))
    };
    wait_for(
        "a probe event reaches the sink",
        Duration::from_secs(60),
        || {
            let (probe, gateway) = (probe.clone(), gateways[0].clone());
            let done = delivered(u64::MAX);
            async move {
                if done {
                    return Some(());
                }
                let sent = probe
                    .post(format!("{gateway}/v1/topics/tick/probe"))
                    .header("ce-type", "test.Seq")
                    .body(json!({ "seq": u64::MAX }).to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {}
                    Ok(r) => eprintln!(
                        "probe: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(e) => eprintln!("probe: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            }
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Mutex::new(Load::default()));
    let readiness: Vec<Readiness> = gateways.iter().map(|_| Readiness::default()).collect();
    let mut tasks = Vec::new();
    for (n, gateway) in gateways.iter().enumerate() {
        let (g, s, l) = (gateway.clone(), stop.clone(), load.clone());
        tasks.push(tokio::spawn(publish_stream(g, n as u64 * 1_000_000, s, l)));
        let (g, s, l) = (gateway.clone(), stop.clone(), load.clone());
        tasks.push(tokio::spawn(rpc_stream(g, n, s, l)));
        let (g, s, r) = (gateway.clone(), stop.clone(), readiness[n].clone());
        tasks.push(tokio::spawn(watch_readiness(g, s, r)));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = load.lock().unwrap().acked.len();
    assert!(before > 0, "no publish acknowledged before the restart");

    // The restart: stop (controlled shutdown), stay down a while, start on the same data.
    let down_at = Instant::now();
    tokio::task::block_in_place(|| broker.stop());
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| broker.start_again());
    let up_at = Instant::now();
    let outage = up_at - down_at;

    for (n, gateway) in gateways.iter().enumerate() {
        let http = reqwest::Client::new();
        let back = poll_until(
            &format!("replica {n} ready again after the restart"),
            Duration::from_secs(60),
            || {
                let req = http.get(format!("{gateway}/readyz")).send();
                async move { req.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
            },
        )
        .await;
        if let Err(e) = back {
            let log = replicas[n].log_text();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("librdkafka") && !l.contains("rdkafka::client"))
                .collect();
            panic!(
                "{e}; its log ends:\n{}",
                tail[tail.len().saturating_sub(40)..].join("\n")
            );
        }
    }
    let ready_again = up_at.elapsed();
    let acked_at_recovery = load.lock().unwrap().acked.len();
    let rpc_ok_at_recovery = load.lock().unwrap().rpc_ok;
    // Load goes on after recovery: both paths must work again.
    let first_ok = poll_until(
        "an RPC answered after the restart",
        Duration::from_secs(60),
        || {
            let ok = load.lock().unwrap().rpc_ok > rpc_ok_at_recovery;
            async move { ok.then_some(()) }
        },
    )
    .await;
    let rpcs_back_after = up_at.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        tokio::time::timeout(PUBLISH_LIMIT + Duration::from_secs(5), t)
            .await
            .expect("a load task ended")
            .unwrap();
    }
    let load = Arc::try_unwrap(load).ok().unwrap().into_inner().unwrap();
    let errors_after: Vec<&String> = load
        .rpc_errors
        .iter()
        .filter(|(t, _)| *t > up_at)
        .map(|(_, e)| e)
        .collect();
    assert!(
        first_ok.is_ok(),
        "no RPC answered within 60 s of the broker's return; {} failed since, first: {:?}",
        errors_after.len(),
        errors_after.first()
    );
    assert!(
        load.acked.len() > acked_at_recovery,
        "no publish acknowledged after the broker came back"
    );
    assert!(
        load.rpc_ok > rpc_ok_at_recovery,
        "no RPC answered after the broker came back"
    );

    // No acknowledged event is lost.
    let got = || -> BTreeSet<u64> {
        let seen = seen.lock().unwrap();
        seen.iter().filter_map(|s| s.data["seq"].as_u64()).collect()
    };
    let all_there = poll_until(
        "every acknowledged event at the sink",
        Duration::from_secs(90),
        || {
            let done = load.acked.is_subset(&got());
            async move { done.then_some(()) }
        },
    )
    .await;
    if all_there.is_err() {
        let missing: Vec<u64> = load.acked.difference(&got()).copied().collect();
        panic!(
            "{} of {} acknowledged events never delivered, e.g. {:?}",
            missing.len(),
            load.acked.len(),
            &missing[..missing.len().min(10)]
        );
    }
    let deliveries = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| {
            s.data["seq"]
                .as_u64()
                .is_some_and(|q| load.acked.contains(&q))
        })
        .count();
    let duplicates = deliveries - load.acked.len();

    // No RPC past its timeout; failures name their cause.
    assert!(
        load.rpc_late.is_empty(),
        "RPCs past their timeout: {:?}",
        load.rpc_late
    );
    assert!(
        load.unclear_errors.is_empty(),
        "errors without a cause: {:?}",
        &load.unclear_errors[..load.unclear_errors.len().min(5)]
    );

    // Readiness dropped while the broker was away, for every replica.
    let mut not_ready = Vec::new();
    for (n, samples) in readiness.iter().enumerate() {
        let samples = samples.lock().unwrap();
        let during: Vec<bool> = samples
            .iter()
            .filter(|(t, _)| *t >= down_at && *t <= up_at)
            .map(|(_, r)| *r)
            .collect();
        let down = samples.iter().filter(|(_, r)| !r).count() as f64 * 0.2;
        assert!(
            during.iter().any(|r| !r),
            "replica {n} stayed ready while the broker was down ({} samples)",
            during.len()
        );
        not_ready.push(down);
    }
    println!(
        "{}",
        json!({
            "broker_restart": {
                "outage_s": outage.as_secs_f64(),
                "ready_again_after_s": ready_again.as_secs_f64(),
                "rpcs_answered_again_after_s": rpcs_back_after.as_secs_f64(),
                "rpc_failures_after_return": errors_after.len(),
                "not_ready_s_per_replica": not_ready,
                "publishes_acked": load.acked.len(),
                "publishes_failed": load.publish_failed.len(),
                "events_delivered_twice": duplicates,
                "rpc_ok": load.rpc_ok,
                "rpc_failed_by_status": load.rpc_failed,
                "rpc_slowest_s": load.rpc_slowest.as_secs_f64(),
            }
        })
    );

    sink.stop().await.unwrap();
    for mut p in replicas {
        p.terminate();
        let status = p.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "a replica stops cleanly on SIGTERM");
    }
    drop(broker);
}
