//! Latency percentiles.

use std::time::Duration;

/// p50/p90/p99/max in milliseconds of `samples` (sorted here).
pub fn latency_ms(samples: &mut [Duration]) -> serde_json::Value {
    samples.sort();
    let at = |p: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        round3(samples[i].as_secs_f64() * 1e3)
    };
    serde_json::json!({ "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0) })
}

/// The median of `values` (the mean of the middle two for an even count); 0 if empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One object with the median of every numeric field of `runs` (the fields of the
/// first run; objects inside are left out).
pub fn medians(runs: &[serde_json::Value]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(first) = runs.first().and_then(|r| r.as_object()) {
        for key in first.keys() {
            let values: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
            if values.len() == runs.len() {
                out.insert(key.clone(), serde_json::json!(round3(median(values))));
            }
        }
    }
    serde_json::Value::Object(out)
}

/// Rounds to three decimals for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The broker's process id, when given (`--broker-pid`): its CPU time is reported too.
pub static BROKER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// CPU time (user + system) used so far by this process and by the broker, in clock
/// ticks. A rate on a shared 2-core machine swings ±30% run to run; CPU per event is
/// the steadier figure for comparing two builds.
/// `others` are processes of ours besides this one (e.g. a `bench_host`): their CPU
/// counts as the process's.
#[derive(Debug, Clone)]
pub struct CpuTicks {
    process: u64,
    broker: Option<u64>,
    others: Vec<u32>,
}

impl CpuTicks {
    /// Reads both clocks now.
    pub fn now() -> Self {
        Self::now_with(Vec::new())
    }

    /// Reads the clocks now, counting processes `others` with this one.
    pub fn now_with(others: Vec<u32>) -> Self {
        let process = ticks("self").unwrap_or(0)
            + others
                .iter()
                .filter_map(|p| ticks(&p.to_string()))
                .sum::<u64>();
        Self {
            process,
            broker: BROKER_PID.get().and_then(|p| ticks(&p.to_string())),
            others,
        }
    }

    /// `process_cpu_us_per_event` (and `broker_cpu_us_per_event`) since `self`.
    pub fn per_event(&self, events: usize) -> serde_json::Value {
        self.per(events, "event")
    }

    /// `process_cpu_us_per_{unit}` (and `broker_cpu_us_per_{unit}`) since `self`.
    pub fn per(&self, count: usize, unit: &str) -> serde_json::Value {
        let later = Self::now_with(self.others.clone());
        // USER_HZ is 100 on Linux: one tick is 10 ms.
        let us = |t: u64| round3(t as f64 * 10_000.0 / count.max(1) as f64);
        let mut v = serde_json::json!({
            format!("process_cpu_us_per_{unit}"): us(later.process.saturating_sub(self.process)),
        });
        if let (Some(a), Some(b)) = (self.broker, later.broker) {
            v[format!("broker_cpu_us_per_{unit}")] = serde_json::json!(us(b.saturating_sub(a)));
        }
        v
    }
}

/// utime + stime of `/proc/<pid>/stat` (fields 14 and 15; the command name, field 2,
/// may hold spaces, so count from its closing parenthesis).
fn ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(utime + stime)
}
