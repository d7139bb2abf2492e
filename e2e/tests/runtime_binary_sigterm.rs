//! SIGTERM of one `switchboard-runtime run` replica during a stream of RPCs: the
//! other replica takes its agents over and no RPC is lost or hangs.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchboard_e2e::binary::{RuntimeProcess, cli, free_port};
use switchboard_e2e::env::{kafka_bootstrap, unique_name};

const RPC_TIMEOUT_MS: u64 = 20_000;
/// A request with no answer this long after its RPC timeout is a hang.
const HANG: Duration = Duration::from_millis(RPC_TIMEOUT_MS + 15_000);
const KEYS: usize = 24;

fn config(prefix: &str, http: SocketAddr) -> String {
    format!(
        r#"
kafka: {{ bootstrapServers: "{}", topicPrefix: {prefix} }}
runtime: {{ name: rt1, partitions: 6, rpcTimeoutMs: {RPC_TIMEOUT_MS} }}
agents:
  - {{ type: echo, builtin: echo }}
  - {{ type: counter, builtin: counter }}
http: {{ listen: "{http}" }}
"#,
        kafka_bootstrap()
    )
}

/// Outcomes of one client's RPCs.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    timed_out: usize,
    other: Vec<String>,
}

/// Sends echo RPCs through `gateway` to rotating keys until `stop`; checks each reply.
async fn stream(gateway: String, client: usize, stop: Arc<AtomicBool>) -> Tally {
    let http = reqwest::Client::builder().timeout(HANG).build().unwrap();
    let mut tally = Tally::default();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let key = (client * 7 + i) % KEYS;
        let body = format!(r#"{{"client":{client},"i":{i}}}"#);
        let sent = http
            .post(format!("{gateway}/v1/agents/echo/k{key}"))
            .header("ce-type", "demo.Hi")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => {
                let text = r.text().await.unwrap();
                if text == body {
                    tally.ok += 1;
                } else {
                    tally
                        .other
                        .push(format!("k{key}: wrong reply {text} for {body}"));
                }
            }
            Ok(r) if r.status() == 504 => tally.timed_out += 1,
            Ok(r) => tally.other.push(format!(
                "k{key}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => tally.other.push(format!("k{key}: no answer: {e}")),
        }
        i += 1;
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_one_replica_during_rpcs_loses_none() {
    let bootstrap = kafka_bootstrap();
    let prefix = unique_name("bin-term");
    let (a, b) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let mut survivor = RuntimeProcess::spawn("rt1-survivor", &config(&prefix, a), a);
    let mut leaving = RuntimeProcess::spawn("rt1-leaving", &config(&prefix, b), b);
    survivor.wait_ready(Duration::from_secs(60)).await;
    leaving.wait_ready(Duration::from_secs(60)).await;

    // Warm every key, so both replicas host agents before the stream.
    let http = reqwest::Client::new();
    for k in 0..KEYS {
        let r = http
            .post(format!("{}/v1/agents/echo/k{k}", survivor.url()))
            .header("ce-type", "demo.Hi")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "warm-up of k{k}");
    }
    let on_leaving: serde_json::Value = http
        .get(format!("{}/v1/agents", leaving.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let moved = on_leaving["agents"].as_array().unwrap().len();
    assert!(
        moved > 0,
        "the leaving replica hosts some agents: {on_leaving}"
    );

    // Four gateway clients and three `send` processes run while the replica leaves.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| tokio::spawn(stream(survivor.url(), c, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sends: Vec<_> = (0..3)
        .map(|n| {
            let (bootstrap, prefix) = (bootstrap.clone(), prefix.clone());
            tokio::spawn(async move {
                let to = format!("echo/k{}", n * 5);
                let data = format!(r#"{{"send":{n}}}"#);
                let args = [
                    "send",
                    "--bootstrap",
                    &bootstrap,
                    "--prefix",
                    &prefix,
                    "--to",
                    &to,
                    "--type",
                    "demo.Hi",
                    "--data",
                    &data,
                    "--timeout",
                    "20s",
                ];
                (data.clone(), cli(&args, HANG).await)
            })
        })
        .collect();
    let terminated = Instant::now();
    leaving.terminate();
    let status = leaving.wait_exit(Duration::from_secs(60)).await;
    let stop_took = terminated.elapsed();
    assert!(
        status.success(),
        "exit 0 after SIGTERM: {status}; log:\n{}",
        leaving.log_text()
    );
    // Keep streaming a while after the handover.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);

    let mut total = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        total.ok += t.ok;
        total.timed_out += t.timed_out;
        total.other.extend(t.other);
    }
    for s in sends {
        let (data, out) = s.await.unwrap();
        match out.code {
            Some(0) => assert_eq!(out.stdout.trim(), data, "{out:?}"),
            Some(3) => total.timed_out += 1,
            _ => panic!("send failed: {out:?}"),
        }
    }
    eprintln!(
        "figure: {{\"rpcs_ok\": {}, \"rpcs_timed_out\": {}, \"agents_moved\": {moved}, \"sigterm_to_exit_ms\": {}}}",
        total.ok,
        total.timed_out,
        stop_took.as_millis()
    );
    assert!(
        total.other.is_empty(),
        "RPCs lost or failed: {:?}",
        total.other
    );
    assert!(total.ok > 20, "the stream ran: {total:?}");
    assert_eq!(
        total.timed_out, 0,
        "a graceful handover should not even time out"
    );

    // Every key answers from the survivor alone.
    for k in 0..KEYS {
        let r = http
            .post(format!("{}/v1/agents/echo/k{k}", survivor.url()))
            .header("ce-type", "demo.Hi")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "k{k} after the handover");
    }
    survivor.terminate();
    let status = survivor.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status}");
    let log = survivor.log_text();
    assert!(
        log.contains("\"runtime stopped\""),
        "the last replica stopped gracefully:\n{log}"
    );
}
