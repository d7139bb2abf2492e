//! Switchboard benchmarks, with Kafka's own ceiling measured in the same run.
//!
//! `bench SCENARIO [--bootstrap HOST:PORT] [--broker-pid PID] [--set producer.K=V]...`
//! prints one JSON object with the figures, the configuration used and, where one
//! applies, `baseline`: the same figures for raw rdkafka on the same broker with the
//! same client settings. `--set` (also `consumer.K=V`) applies a librdkafka setting to
//! every client, ours and the raw baseline's, to measure a tuning knob; with
//! `--broker-pid` (a local broker) CPU figures include the broker's share;
//! `--no-local-delivery` makes every event take the inbox topic. `bench all`
//! prints a JSON array of every runtime scenario; `bench table FILE` prints such a
//! file as a short table (ours, raw, ratio). It starts no broker: pass its
//! address (or set SWITCHBOARD_BOOTSTRAP_SERVERS). Figures are read by people, not
//! asserted. Latency and publish figures are medians of rounds in which ours and the
//! raw baseline alternate.

mod group_protocol;
mod host;
mod llm;
mod operator;
mod protocols;
mod raw;
mod scenarios;
mod stats;
mod table;

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use serde_json::Value;

/// The runtime binary's allocator, so figures match what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCENARIOS: [&str; 8] = [
    "rpc-latency",
    "gateway-rpc",
    "protocols-rpc",
    "rpc-throughput",
    "publish-throughput",
    "fanout",
    "agents-memory",
    "llm-overhead",
];

/// Scenarios not in `all` (they take minutes): `bench group-protocol`.
const SLOW_SCENARIOS: [&str; 1] = ["group-protocol"];

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("table") {
        let Some(path) = args.get(1).filter(|_| args.len() == 2) else {
            eprintln!("bench: usage: bench table FILE");
            return ExitCode::from(2);
        };
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
        return match parsed {
            Ok(v) => {
                print!("{}", table::render(&v));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench: {path}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut scenario = None;
    let mut bootstrap = std::env::var("SWITCHBOARD_BOOTSTRAP_SERVERS").ok();
    let mut kubeconfig = std::env::var_os("KUBECONFIG").map(std::path::PathBuf::from);
    let mut runtimes = 200;
    let mut settings = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bootstrap" => bootstrap = it.next().cloned(),
            "--kubeconfig" => kubeconfig = it.next().map(Into::into),
            "--runtimes" => runtimes = it.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            "--set" => match it.next() {
                Some(s) => settings.push(s.clone()),
                None => {
                    eprintln!("bench: --set needs producer.KEY=VALUE or consumer.KEY=VALUE");
                    return ExitCode::from(2);
                }
            },
            "--broker-pid" => match it.next().and_then(|n| n.parse().ok()) {
                Some(pid) => _ = stats::BROKER_PID.set(pid),
                None => {
                    eprintln!("bench: --broker-pid needs a process id");
                    return ExitCode::from(2);
                }
            },
            "--no-local-delivery" => scenarios::LOCAL_DELIVERY.store(false, Ordering::Relaxed),
            "--json" => {}
            "-h" | "--help" => {
                println!(
                    "usage: bench [{}|all|group-protocol] [--bootstrap HOST:PORT] [--broker-pid PID] [--set producer.K=V|consumer.K=V]... [--no-local-delivery] [--json]\n       \
                     bench operator-scale --kubeconfig FILE [--bootstrap HOST:PORT] [--runtimes N]\n       \
                     bench table FILE",
                    SCENARIOS.join("|")
                );
                return ExitCode::SUCCESS;
            }
            s if scenario.is_none() => scenario = Some(s.to_owned()),
            other => {
                eprintln!("bench: unexpected argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(bootstrap) = bootstrap else {
        eprintln!("bench: pass --bootstrap HOST:PORT or set SWITCHBOARD_BOOTSTRAP_SERVERS");
        return ExitCode::from(2);
    };
    let scenario = scenario.unwrap_or_else(|| "all".to_owned());
    if scenario == "operator-scale" {
        // Not part of `all`: it needs a Kubernetes API server (make bench-operator).
        let Some(kubeconfig) = kubeconfig else {
            eprintln!("bench: operator-scale needs --kubeconfig FILE (or KUBECONFIG)");
            return ExitCode::from(2);
        };
        let prefix = format!(
            "bench-op-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        return match operator::operator_scale(&bootstrap, &kubeconfig, &prefix, runtimes).await {
            Ok(mut v) => {
                v["scenario"] = serde_json::json!("operator-scale");
                v["config"]["bootstrap"] = serde_json::json!(bootstrap);
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench: operator-scale failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let names: Vec<&str> = if scenario == "all" {
        SCENARIOS.to_vec()
    } else if SCENARIOS.contains(&scenario.as_str()) || SLOW_SCENARIOS.contains(&scenario.as_str())
    {
        vec![scenario.as_str()]
    } else {
        eprintln!(
            "bench: unknown scenario {scenario:?}; one of {} or all",
            SCENARIOS.join(", ")
        );
        return ExitCode::from(2);
    };
    let mut kafka = switchboard_runtime::KafkaConfig::new(&bootstrap);
    for s in &settings {
        if let Err(e) = switchboard_e2e::client_settings::apply(&mut kafka, s) {
            eprintln!("bench: --set {e}");
            return ExitCode::from(2);
        }
    }
    let mut results = Vec::new();
    for name in &names {
        eprintln!("bench: running {name}");
        match scenarios::run(name, &kafka).await {
            Ok(v) => {
                eprintln!("bench: {name}: {v}");
                results.push(v);
            }
            Err(e) => {
                eprintln!("bench: {name} failed: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let out = if scenario == "all" {
        Value::Array(results)
    } else {
        results.remove(0)
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    ExitCode::SUCCESS
}
