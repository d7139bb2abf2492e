//! `group-protocol`: the classic and the KIP-848 consumer group protocol on the same
//! broker in the same run (alternating, `ROUNDS` each): the longest RPC while the
//! runtime scales 1 -> 3 -> 1, the time a new replica takes to own inbox partitions,
//! and the events handled twice under rapid join/leave churn
//! (`switchboard_e2e::membership`).

use serde_json::{Value, json};
use switchboard_e2e::membership::{churn, scale_1_3_1};
use switchboard_runtime::{
    AgentRuntime as _, GroupProtocol, KafkaAgentRuntime, KafkaConfig, WorkerConfig,
};

/// Runs per protocol.
const ROUNDS: usize = 3;

async fn one_run(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    let config = |name: &str| WorkerConfig::new(kafka.clone(), prefix, name);
    let scale = scale_1_3_1(config).await?;
    let publisher = KafkaAgentRuntime::start_with(config("publisher")).await?;
    let churned = churn(config, &publisher).await;
    publisher.stop().await?;
    let churned = churned?;
    let takes = &scale.take_partitions_ms;
    Ok(json!({
        "slowest_rpc_during_scale_ms": scale.slowest_rpc_ms,
        "median_rpc_during_scale_ms": scale.median_rpc_ms,
        "rpc_calls": scale.calls,
        "rpc_failures": scale.failures.len(),
        "take_partitions_ms": takes.iter().copied().fold(0.0, f64::max),
        "take_partitions_each_ms": takes,
        "scale_1_3_1_ms": scale.scale_ms,
        "churn_published": churned.published,
        "churn_replays": churned.replays,
        "churn_lost": churned.published.saturating_sub(churned.handled - churned.replays),
        "churn_order_violations": churned.violations.len(),
        "churn_commit_failures": churned.commit_failures,
    }))
}

fn median(runs: &[Value], key: &str) -> Value {
    let mut xs: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).map_or(Value::Null, |x| json!(x))
}

/// Both protocols, alternating, `ROUNDS` runs each; medians and every run.
pub async fn group_protocol(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Value> {
    let protocols = [GroupProtocol::Classic, GroupProtocol::Consumer];
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); protocols.len()];
    for round in 0..ROUNDS {
        for (i, protocol) in protocols.iter().enumerate() {
            let mut kafka = kafka.clone();
            kafka.group_protocol = *protocol;
            let name = protocol.as_kafka();
            eprintln!("bench: group-protocol round {round}: {name}");
            runs[i].push(one_run(&kafka, &format!("{prefix}-{name}-{round}")).await?);
        }
    }
    let mut result = json!({});
    for (protocol, runs) in protocols.iter().zip(runs) {
        let mut figures = json!({});
        for key in [
            "slowest_rpc_during_scale_ms",
            "median_rpc_during_scale_ms",
            "take_partitions_ms",
            "scale_1_3_1_ms",
            "churn_replays",
            "churn_lost",
            "churn_commit_failures",
        ] {
            figures[key] = median(&runs, key);
        }
        figures["runs"] = json!(runs);
        result[protocol.as_kafka()] = figures;
    }
    result["config"]["rounds"] = json!(ROUNDS);
    // The broker's group settings decide the consumer protocol's figures: say which
    // (e2e/infra/kafka.sh takes the same variable).
    result["config"]["broker_props"] = json!(
        std::env::var("SWITCHBOARD_KAFKA_BROKER_PROPS")
            .unwrap_or_else(|_| "defaults (group.consumer.heartbeat.interval.ms=5000, group.consumer.session.timeout.ms=45000)".to_owned())
    );
    Ok(result)
}
