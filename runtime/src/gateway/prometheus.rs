//! `/metrics` in the Prometheus text exposition format (version 0.0.4), rendered from
//! a [`MetricsSnapshot`]. Labels are agent types, topics and partitions: bounded by
//! the configuration, never by message or agent keys.

use std::fmt::Write;

use crate::kafka::MetricsSnapshot;

/// Gauges of the process that the snapshot does not hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessGauges {
    /// Agents active in this process.
    pub active_agents: usize,
    /// Whether the runtime is ready (groups joined, registry loaded, configured
    /// subscriptions in effect, not stopping).
    pub ready: bool,
}

/// Renders everything as Prometheus text.
pub fn render(m: &MetricsSnapshot, gauges: ProcessGauges) -> String {
    let mut out = String::with_capacity(2048);
    family(
        &mut out,
        "switchboard_messages_handled_total",
        "counter",
        "Messages whose handler succeeded, by agent type.",
    );
    for (agent_type, n) in &m.handled {
        sample(
            &mut out,
            "switchboard_messages_handled_total",
            &[("agent_type", agent_type)],
            *n,
        );
    }
    family(
        &mut out,
        "switchboard_messages_failed_total",
        "counter",
        "Messages whose handler failed, by agent type.",
    );
    for (agent_type, n) in &m.failed {
        sample(
            &mut out,
            "switchboard_messages_failed_total",
            &[("agent_type", agent_type)],
            *n,
        );
    }
    family(
        &mut out,
        "switchboard_rpc_latency_seconds",
        "histogram",
        "Latency of RPCs sent from this process, until reply, error or timeout.",
    );
    for (bound, n) in &m.rpc_latency_buckets {
        sample(
            &mut out,
            "switchboard_rpc_latency_seconds_bucket",
            &[("le", &bound.to_string())],
            *n,
        );
    }
    sample(
        &mut out,
        "switchboard_rpc_latency_seconds_bucket",
        &[("le", "+Inf")],
        m.rpc_count,
    );
    let _ = writeln!(
        out,
        "switchboard_rpc_latency_seconds_sum {}",
        m.rpc_latency_sum_seconds
    );
    sample(
        &mut out,
        "switchboard_rpc_latency_seconds_count",
        &[],
        m.rpc_count,
    );
    family(
        &mut out,
        "switchboard_rpc_failed_total",
        "counter",
        "RPCs sent from this process that ended in an error or timeout.",
    );
    sample(&mut out, "switchboard_rpc_failed_total", &[], m.rpc_failed);
    family(
        &mut out,
        "switchboard_messages_in_flight",
        "gauge",
        "Messages queued or being handled now.",
    );
    sample(&mut out, "switchboard_messages_in_flight", &[], m.in_flight);
    family(
        &mut out,
        "switchboard_dead_letters_total",
        "counter",
        "Records sent to the dead-letter topic.",
    );
    sample(
        &mut out,
        "switchboard_dead_letters_total",
        &[],
        m.dead_lettered,
    );
    family(
        &mut out,
        "switchboard_events_delivered_locally_total",
        "counter",
        "Events delivered to this replica's agents without a trip through the inbox topic.",
    );
    sample(
        &mut out,
        "switchboard_events_delivered_locally_total",
        &[],
        m.events_delivered_locally,
    );
    family(
        &mut out,
        "switchboard_state_restore_failures_total",
        "counter",
        "Reads of a state partition that failed; its inbox partition waits and the read is retried.",
    );
    sample(
        &mut out,
        "switchboard_state_restore_failures_total",
        &[],
        m.state_restore_failures,
    );
    family(
        &mut out,
        "switchboard_inbox_partitions_awaiting_state",
        "gauge",
        "Owned inbox partitions whose agent state is not restored yet (not handled until it is).",
    );
    sample(
        &mut out,
        "switchboard_inbox_partitions_awaiting_state",
        &[],
        m.partitions_awaiting_state,
    );
    family(
        &mut out,
        "switchboard_consumer_lag",
        "gauge",
        "Records not consumed yet, by topic and partition.",
    );
    for ((topic, partition), lag) in &m.consumer_lag {
        let _ = writeln!(
            out,
            "switchboard_consumer_lag{{topic=\"{}\",partition=\"{partition}\"}} {lag}",
            escape(topic)
        );
    }
    family(
        &mut out,
        "switchboard_active_agents",
        "gauge",
        "Agents active in this process.",
    );
    sample(
        &mut out,
        "switchboard_active_agents",
        &[],
        gauges.active_agents as u64,
    );
    family(
        &mut out,
        "switchboard_ready",
        "gauge",
        "1 when the runtime serves (group joined, registry loaded, not stopping).",
    );
    sample(&mut out, "switchboard_ready", &[], u64::from(gauges.ready));
    out
}

pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Escapes a label value: backslash, double quote and newline.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_labels_and_a_cumulative_histogram() {
        let mut m = MetricsSnapshot::default();
        m.handled.insert("echo".into(), 3);
        m.failed.insert("py\"x".into(), 1);
        m.rpc_latency_buckets = vec![(0.005, 1), (0.5, 2)];
        m.rpc_count = 3;
        m.rpc_latency_sum_seconds = 1.25;
        m.in_flight = 4;
        m.dead_lettered = 2;
        m.events_delivered_locally = 6;
        m.state_restore_failures = 8;
        m.partitions_awaiting_state = 1;
        m.consumer_lag.insert(("demo.rt1.inbox".into(), 2), 7);
        let text = render(
            &m,
            ProcessGauges {
                active_agents: 5,
                ready: true,
            },
        );
        for line in [
            "switchboard_messages_handled_total{agent_type=\"echo\"} 3",
            "switchboard_messages_failed_total{agent_type=\"py\\\"x\"} 1",
            "switchboard_rpc_latency_seconds_bucket{le=\"0.005\"} 1",
            "switchboard_rpc_latency_seconds_bucket{le=\"0.5\"} 2",
            "switchboard_rpc_latency_seconds_bucket{le=\"+Inf\"} 3",
            "switchboard_rpc_latency_seconds_sum 1.25",
            "switchboard_rpc_latency_seconds_count 3",
            "switchboard_messages_in_flight 4",
            "switchboard_dead_letters_total 2",
            "switchboard_events_delivered_locally_total 6",
            "switchboard_state_restore_failures_total 8",
            "switchboard_inbox_partitions_awaiting_state 1",
            "switchboard_consumer_lag{topic=\"demo.rt1.inbox\",partition=\"2\"} 7",
            "switchboard_active_agents 5",
            "switchboard_ready 1",
            "# TYPE switchboard_rpc_latency_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
