//! The short human summary of a `bench all` result: ours against raw rdkafka.

use serde_json::Value;

/// One line of the table: what, ours, raw (if measured), unit.
struct Row {
    what: String,
    ours: f64,
    raw: Option<f64>,
    unit: &'static str,
}

/// What the table shows: scenario, label, where the figure is (`http_echo.p50_ms`
/// for a nested one), unit, and whether the raw baseline has it too.
const LINES: &[(&str, &str, &str, &str, bool)] = &[
    ("rpc-latency", "rpc-latency p50", "p50_ms", "ms", true),
    ("rpc-latency", "rpc-latency p99", "p99_ms", "ms", true),
    (
        "rpc-latency",
        "rpc-latency CPU/call",
        "process_cpu_us_per_call",
        "µs",
        true,
    ),
    ("gateway-rpc", "gateway-rpc p50", "p50_ms", "ms", true),
    ("gateway-rpc", "gateway-rpc p99", "p99_ms", "ms", true),
    (
        "gateway-rpc",
        "  bare HTTP echo p50",
        "http_echo.p50_ms",
        "ms",
        false,
    ),
    (
        "protocols-rpc",
        "A2A SendMessage p50",
        "a2a_send_message.medians.p50_ms",
        "ms",
        false,
    ),
    (
        "protocols-rpc",
        "A2A SendMessage p99",
        "a2a_send_message.medians.p99_ms",
        "ms",
        false,
    ),
    (
        "protocols-rpc",
        "MCP tools/call p50",
        "mcp_tools_call.medians.p50_ms",
        "ms",
        false,
    ),
    (
        "protocols-rpc",
        "  /v1 gateway p50 (same run)",
        "v1_gateway.medians.p50_ms",
        "ms",
        false,
    ),
    (
        "publish-throughput",
        "publish delivered/s",
        "delivered_events_per_s",
        "ev/s",
        true,
    ),
    (
        "publish-throughput",
        "publish CPU/event",
        "process_cpu_us_per_event",
        "µs",
        true,
    ),
    (
        "publish-throughput",
        "publish broker CPU/event",
        "broker_cpu_us_per_event",
        "µs",
        true,
    ),
    (
        "publish-throughput",
        "publish delivery p99",
        "delivery_p99_ms",
        "ms",
        true,
    ),
    (
        "rpc-throughput",
        "rpc-throughput",
        "calls_per_s",
        "calls/s",
        false,
    ),
    (
        "rpc-throughput",
        "rpc-throughput p50",
        "p50_ms",
        "ms",
        false,
    ),
    (
        "rpc-throughput",
        "rpc-throughput CPU/call",
        "process_cpu_us_per_call",
        "µs",
        false,
    ),
    (
        "rpc-throughput",
        "  broker CPU/call",
        "broker_cpu_us_per_call",
        "µs",
        false,
    ),
    (
        "fanout",
        "fan-out 50 types p50",
        "all_handled_p50_ms",
        "ms",
        false,
    ),
    ("agents-memory", "idle RSS", "idle_rss_mib", "MiB", false),
    (
        "agents-memory",
        "memory per agent",
        "bytes_per_agent",
        "B",
        false,
    ),
];

fn rows(results: &[Value]) -> Vec<Row> {
    let at = |v: &Value, path: &str| path.split('.').fold(v, |v, k| &v[k]).as_f64();
    let mut rows = Vec::new();
    for v in results {
        let scenario = v["scenario"].as_str().unwrap_or_default();
        for (_, what, path, unit, raw) in LINES.iter().filter(|l| l.0 == scenario) {
            let Some(ours) = at(v, path) else { continue };
            rows.push(Row {
                what: (*what).to_owned(),
                ours,
                raw: raw.then(|| at(&v["baseline"], path)).flatten(),
                unit,
            });
        }
    }
    rows
}

fn number(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The table for `results` (one scenario object or an array of them).
pub fn render(results: &Value) -> String {
    let list = match results {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    let linger = list
        .iter()
        .find_map(|v| {
            v["config"]["producer"]["linger.ms"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".to_owned());
    let mut out = format!(
        "{:<32} {:>12} {:>12} {:>7}  (raw = rdkafka at the same settings; linger.ms={linger})\n",
        "figure", "ours", "raw", "ratio"
    );
    for r in rows(&list) {
        let (raw, ratio) = match r.raw {
            Some(raw) if raw > 0.0 => (number(raw), format!("{:.2}x", r.ours / raw)),
            _ => ("-".to_owned(), String::new()),
        };
        out.push_str(&format!(
            "{:<32} {:>12} {:>12} {:>7}\n",
            format!("{} ({})", r.what, r.unit),
            number(r.ours),
            raw,
            ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_ours_over_raw() {
        let results = serde_json::json!([
            { "scenario": "rpc-latency", "p50_ms": 0.6, "p99_ms": 1.2,
              "baseline": { "p50_ms": 0.4, "p99_ms": 1.0 },
              "config": { "producer": { "linger.ms": "0" } } },
            { "scenario": "rpc-throughput", "calls_per_s": 12000.0 }
        ]);
        let table = render(&results);
        assert!(table.contains("linger.ms=0"), "{table}");
        let p50 = table
            .lines()
            .find(|l| l.starts_with("rpc-latency p50"))
            .unwrap();
        assert!(p50.contains("1.50x"), "{p50}");
        let tp = table
            .lines()
            .find(|l| l.starts_with("rpc-throughput ("))
            .unwrap();
        assert!(tp.contains("12000") && tp.contains(" - "), "{tp}");
    }
}
