//! The `switchboard-runtime` program as users run it: two `run` replicas with the
//! documented config, the `send` and `publish` verbs, the HTTP API and the Python
//! HTTP agent, against the real broker.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_e2e::binary::{PythonAgent, RuntimeProcess, cli, free_port};
use switchboard_e2e::env::{kafka_bootstrap, unique_name};

const READY: Duration = Duration::from_secs(60);
const CLI_LIMIT: Duration = Duration::from_secs(40);
const TOKEN: &str = "s3cret";

/// The issue's example config on this test's prefix, with loopback addresses.
fn example_config(prefix: &str, http: SocketAddr, py_url: &str) -> String {
    format!(
        r#"
kafka: {{ bootstrapServers: "{bootstrap}", topicPrefix: {prefix} }}
runtime: {{ name: rt1, createTopics: true, maxConcurrency: 256, rpcTimeoutMs: 20000 }}
agents:
  - {{ type: echo,    builtin: echo }}
  - {{ type: counter, builtin: counter }}
  - {{ type: relay,   builtin: relay, relay: {{ publish: {{ topicType: out }} }} }}
  - {{ type: py,      http: {{ url: "{py_url}/agents/py", timeoutMs: 5000, retries: 2 }} }}
subscriptions:
  - {{ topicType: alerts, agentType: counter }}
  - {{ topicTypePrefix: "team.", agentType: relay }}
http: {{ listen: "{http}", bearerToken: {TOKEN} }}
"#,
        bootstrap = kafka_bootstrap()
    )
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

async fn two_replicas(prefix: &str, py_url: &str) -> (RuntimeProcess, RuntimeProcess) {
    let (a, b) = (loopback(), loopback());
    // Started together, as a Deployment would; each waits for its own readiness.
    let mut p1 = RuntimeProcess::spawn("rt1-a", &example_config(prefix, a, py_url), a);
    let mut p2 = RuntimeProcess::spawn("rt1-b", &example_config(prefix, b, py_url), b);
    p1.wait_ready(READY).await;
    p2.wait_ready(READY).await;
    (p1, p2)
}

fn net_args<'a>(bootstrap: &'a str, prefix: &'a str) -> Vec<&'a str> {
    vec!["--bootstrap", bootstrap, "--prefix", prefix]
}

/// Sum of `name{agent_type="..."}` over the processes' `/metrics`.
async fn metric_sum(procs: &[&RuntimeProcess], series: &str) -> u64 {
    let mut total = 0.0;
    for p in procs {
        total += p.metric(series).await.unwrap_or(0.0);
    }
    // Counters of messages: whole numbers.
    total as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_serve_echo_counter_and_the_python_agent() {
    let bootstrap = kafka_bootstrap();
    let prefix = unique_name("bin");
    let mut py = PythonAgent::start().await;
    let (p1, p2) = two_replicas(&prefix, &py.url).await;
    let net = net_args(&bootstrap, &prefix);

    // send --to echo/a returns the data.
    let data = r#"{"hello":"world","n":[1,2,3]}"#;
    let mut args = net.clone();
    args.extend(["--to", "echo/a", "--type", "demo.Hi", "--data", data]);
    let out = cli(
        &["send"].iter().chain(&args).copied().collect::<Vec<_>>(),
        CLI_LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        serde_json::from_str::<Value>(out.stdout.trim()).unwrap(),
        serde_json::from_str::<Value>(data).unwrap()
    );
    eprintln!(
        "figure: one `send` process (start, RPC, stop) took {:?}",
        out.took
    );

    // publish alerts/k1 ten times, then send to counter/k1: 10 events + the RPC.
    let publishes = (0..10).map(|i| {
        let data = format!(r#"{{"alert":{i}}}"#);
        let mut args = vec!["publish".to_owned()];
        args.extend(net.iter().map(ToString::to_string));
        args.extend(["--topic", "alerts/k1", "--type", "demo.Alert", "--data"].map(String::from));
        args.push(data);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args, CLI_LIMIT).await
        }
    });
    for out in futures::future::join_all(publishes).await {
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let http = reqwest::Client::new();
    let handled = r#"switchboard_messages_handled_total{agent_type="counter"}"#;
    let start = Instant::now();
    while metric_sum(&[&p1, &p2], handled).await < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the counter did not get the 10 events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut args = vec!["send"];
    args.extend(&net);
    args.extend(["--to", "counter/k1", "--type", "demo.Count", "--data", "{}"]);
    let out = cli(&args, CLI_LIMIT).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), r#"{"count":11}"#),
        "{out:?}"
    );

    // The Python HTTP agent answers an RPC through the runtime: CLI and gateway.
    let mut args = vec!["send"];
    args.extend(&net);
    args.extend([
        "--to",
        "py/alice",
        "--type",
        "demo.Greet",
        "--data",
        r#"{"name":"Alice"}"#,
    ]);
    let out = cli(&args, CLI_LIMIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let reply: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(reply["greeting"], "hello Alice");
    assert_eq!(reply["agent"], "py/alice");

    let mut args = vec!["send"];
    args.extend(&net);
    args.extend([
        "--to",
        "py/alice",
        "--type",
        "demo.Fail",
        "--data",
        r#""boom""#,
    ]);
    let out = cli(&args, CLI_LIMIT).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("422") && out.stderr.contains("refuses"),
        "handler error with status and body: {out:?}"
    );

    let rpc = |url: String| {
        http.post(url)
            .bearer_auth(TOKEN)
            .header("ce-type", "demo.Greet")
            .body(r#"{"name":"Bob"}"#)
    };
    let r = rpc(format!("{}/v1/agents/py/bob", p2.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ce-type"], "demo.Greeting");
    assert_eq!(r.json::<Value>().await.unwrap()["greeting"], "hello Bob");
    assert!(py.is_running());

    // Gateway errors: auth, bad input, unknown type, handler error.
    let url = format!("{}/v1/agents/echo/a", p1.url());
    let r = http
        .post(&url)
        .header("ce-type", "x")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("ce-type"));
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .header("ce-type", "x")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = rpc(format!("{}/v1/agents/nobody/a", p1.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{}/v1/agents/py/carol", p1.url()))
        .bearer_auth(TOKEN)
        .header("ce-type", "demo.Fail")
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("422"));

    // Publish through the gateway reaches the counter of k2 (in one of the replicas).
    let r = http
        .post(format!("{}/v1/topics/alerts/k2", p1.url()))
        .bearer_auth(TOKEN)
        .header("ce-type", "demo.Alert")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Registry and active agents.
    let reg: Value = http
        .get(format!("{}/v1/registry", p1.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for t in ["echo", "counter", "relay", "py"] {
        assert!(
            reg["agentTypes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == t && e["runtime"] == "rt1"),
            "{t} in {reg}"
        );
    }
    let subs = reg["subscriptions"].as_array().unwrap();
    assert!(
        subs.iter()
            .any(|s| s["topicType"] == "alerts" && s["agentType"] == "counter"),
        "{reg}"
    );
    assert!(
        subs.iter()
            .any(|s| s["topicTypePrefix"] == "team." && s["agentType"] == "relay"),
        "{reg}"
    );
    let mut active = Vec::new();
    for p in [&p1, &p2] {
        let v: Value = http
            .get(format!("{}/v1/agents", p.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        active.extend(
            v["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned()),
        );
    }
    for id in ["echo/a", "counter/k1", "py/alice"] {
        assert_eq!(
            active.iter().filter(|a| *a == id).count(),
            1,
            "{id} active exactly once in {active:?}"
        );
    }

    // A figure: RPC latency through the gateway (sequential, echo, warm agent).
    let mut took = Vec::new();
    for i in 0..50 {
        let start = Instant::now();
        let r = http
            .post(format!("{}/v1/agents/echo/a", p1.url()))
            .bearer_auth(TOKEN)
            .header("ce-type", "demo.Hi")
            .body(format!(r#"{{"i":{i}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        took.push(start.elapsed());
    }
    took.sort();
    eprintln!(
        "figure: {{\"gateway_rpc_echo_ms\": {{\"p50\": {:.1}, \"p90\": {:.1}, \"max\": {:.1}}}}}",
        took[25].as_secs_f64() * 1e3,
        took[45].as_secs_f64() * 1e3,
        took[49].as_secs_f64() * 1e3
    );
    // Consumer lag is read from Kafka on each scrape, for the inbox partitions with a
    // committed offset (the 100 ms commit timer may not have run for the last RPCs yet).
    let start = Instant::now();
    let metrics = loop {
        let metrics = http
            .get(format!("{}/metrics", p1.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("switchboard_consumer_lag{topic=")
            || start.elapsed() > Duration::from_secs(15)
        {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        metrics.contains("switchboard_rpc_latency_seconds_bucket{le=\"+Inf\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_consumer_lag{topic="),
        "{metrics}"
    );
    // Every RPC above was answered, so what is left unhandled in the inbox is at most
    // the last few records not committed yet: a count, never negative or huge.
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("switchboard_consumer_lag{") {
            let lag: i64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
            assert!((0..=50).contains(&lag), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_exit_non_zero_naming_the_field() {
    let good = example_config("bad-configs", loopback(), "http://127.0.0.1:1");
    for (broken, names) in [
        (
            good.replace("builtin: echo", "builtin: ech0"),
            vec!["agents[0]", "ech0"],
        ),
        (
            good.replace("http://127.0.0.1:1/agents/py", "127.0.0.1:1/agents/py"),
            vec!["agents[3].http.url", "127.0.0.1:1/agents/py"],
        ),
        (good.replace("name: rt1, ", ""), vec!["runtime.name"]),
        (
            good.replace(", relay: { publish: { topicType: out } }", ""),
            vec!["agents[2].relay.publish.topicType"],
        ),
        (
            good.lines()
                .filter(|l| !l.starts_with("kafka:"))
                .collect::<Vec<_>>()
                .join("\n"),
            vec!["missing field", "kafka"],
        ),
    ] {
        assert_ne!(broken, good, "the edit applies");
        let path = switchboard_e2e::binary::temp_file("bad-config.yaml", &broken);
        let out = cli(
            &["run", "--config", path.to_str().unwrap()],
            Duration::from_secs(20),
        )
        .await;
        assert!(matches!(out.code, Some(c) if c != 0), "{out:?}");
        for n in names {
            assert!(out.stderr.contains(n), "stderr names {n:?}: {}", out.stderr);
        }
    }
    let out = cli(
        &["run", "--config", "/nonexistent/config.yaml"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/config.yaml"), "{out:?}");
}

#[tokio::test]
async fn help_and_version() {
    let out = cli(&["--version"], Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.starts_with("switchboard-runtime "), "{out:?}");
    for (verb, flags) in [
        ("run", vec!["--config", "--log-format"]),
        (
            "send",
            vec![
                "--bootstrap",
                "--prefix",
                "--to",
                "--type",
                "--data",
                "--timeout",
            ],
        ),
        (
            "publish",
            vec!["--bootstrap", "--prefix", "--topic", "--type", "--data"],
        ),
    ] {
        let out = cli(&[verb, "--help"], Duration::from_secs(20)).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        for f in flags {
            assert!(
                out.stdout.contains(f),
                "{verb} --help mentions {f}: {}",
                out.stdout
            );
        }
    }
    let out = cli(
        &[
            "send",
            "--bootstrap",
            "127.0.0.1:1",
            "--prefix",
            "p",
            "--to",
            "nokey",
            "--type",
            "t",
            "--data",
            "{}",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--to"), "{out:?}");
}
